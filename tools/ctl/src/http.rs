//! The CLI's HTTP/1.1 transport: one lazily opened keep-alive connection per endpoint,
//! requests with headers, answers with headers, and a streaming body for watches.
//!
//! [`crate::client::Connection`] answers status and body only; the CLI also needs request
//! headers (`If-Match`), answer headers (`ETag`, `X-Coordinate-Revision`) and a body it can
//! read as it arrives (Server-Sent Events), so it has this small sibling.
//!
//! What matters most here is telling *how* a request failed, because that decides whether
//! another endpoint may be tried: [`Failure::Connect`] means the request never left this
//! process; [`Failure::Lost`] and [`Failure::Timeout`] mean it may have reached the server,
//! so a write's outcome is unknown.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request, as the failover loop hands it to each endpoint in turn.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// Path and query, already percent-encoded.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// True if repeating it is harmless (reads): then an answer lost in flight may be
    /// retried on another endpoint. Writes and membership changes are not.
    pub idempotent: bool,
}

impl Request {
    /// A read.
    pub fn get(path: impl Into<String>) -> Request {
        Request {
            method: Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            idempotent: true,
        }
    }

    /// A write (not idempotent) with a body.
    pub fn write(method: Method, path: impl Into<String>, body: Bytes) -> Request {
        Request {
            method,
            path: path.into(),
            headers: Vec::new(),
            body,
            idempotent: false,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Request {
        self.headers.push((name, value));
        self
    }
}

/// A complete answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A numeric header (`X-Coordinate-Revision`), or an `ETag` such as `"42"`.
    pub fn number(&self, name: &str) -> Option<u64> {
        let text = self.headers.get(name)?.to_str().ok()?;
        text.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .ok()
    }

    /// The server's one-line reason: `error` (or `reason`) of a JSON body, else the text.
    pub fn reason(&self) -> String {
        if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(&self.body) {
            for field in ["error", "reason"] {
                if let Some(serde_json::Value::String(s)) = obj.get(field) {
                    return s.clone();
                }
            }
        }
        let text = String::from_utf8_lossy(&self.body).trim().to_string();
        if text.is_empty() {
            self.status.to_string()
        } else {
            text
        }
    }

    /// True if the body is a JSON document.
    pub fn is_json(&self) -> bool {
        serde_json::from_slice::<serde_json::Value>(&self.body).is_ok()
    }
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made (or an idle one was found closed before sending):
    /// the request was certainly not sent.
    Connect(String),
    /// The connection broke after the request may have been sent.
    Lost(String),
    /// No answer within the timeout; the request may have been received.
    Timeout(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Lost(e) => write!(f, "connection lost: {e}"),
            Failure::Timeout(t) => write!(f, "no answer within {t:?}"),
        }
    }
}

/// One endpoint: `host:port`, with a connection opened on first use and kept alive.
pub struct Conn {
    addr: String,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: impl Into<String>, timeout: Duration) -> Conn {
        Conn {
            addr: addr.into(),
            timeout,
            sender: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A ready sender, connecting if there is none (or the old one was closed).
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        let usable = match self.sender.as_mut() {
            Some(sender) => !sender.is_closed() && sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = None;
            let connect = async {
                let stream = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| Failure::Connect(e.to_string()))?;
                let _ = stream.set_nodelay(true);
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| Failure::Connect(e.to_string()))?;
                tokio::spawn(async move {
                    // The connection's fate is seen by the requests on it.
                    let _ = conn.await;
                });
                Ok::<_, Failure>(sender)
            };
            let sender = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| {
                    Failure::Connect(format!("no connection within {:?}", self.timeout))
                })??;
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| Failure::Connect("internal: no connection".into()))
    }

    fn build(&self, req: &Request) -> Result<hyper::Request<Full<Bytes>>, Failure> {
        let mut builder = hyper::Request::builder()
            .method(req.method.clone())
            .uri(req.path.as_str())
            .header(HOST, self.addr.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        // A request that cannot be built was never sent.
        builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| Failure::Connect(format!("building the request: {e}")))
    }

    /// Sends `req` and reads the whole answer within the timeout.
    pub async fn send(&mut self, req: &Request) -> Result<Reply, Failure> {
        let request = self.build(req)?;
        let timeout = self.timeout;
        let sender = self.ready().await?;
        let exchange = async {
            let resp = sender.send_request(request).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Reply {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.sender = None;
                Err(Failure::Lost(e.to_string()))
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout(timeout))
            }
        }
    }

    /// Sends `req` and waits (within the timeout) for the answer's head only; the body is
    /// returned unread, to be consumed as it arrives. The connection is given to the stream.
    pub async fn open(
        &mut self,
        req: &Request,
    ) -> Result<(StatusCode, HeaderMap, Incoming), Failure> {
        let request = self.build(req)?;
        let timeout = self.timeout;
        let sender = self.ready().await?;
        let result = tokio::time::timeout(timeout, sender.send_request(request)).await;
        // Streaming occupies the connection: the next request opens a new one.
        self.sender = None;
        match result {
            Ok(Ok(resp)) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                Ok((status, headers, resp.into_body()))
            }
            Ok(Err(e)) => Err(Failure::Lost(e.to_string())),
            Err(_) => Err(Failure::Timeout(timeout)),
        }
    }
}

/// Reads the next chunk of a streamed body: `Ok(None)` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, Failure> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(Failure::Lost(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
                // Trailers: nothing for us.
            }
        }
    }
}

/// Reads the rest of a streamed body (an error answer), up to `limit` bytes, within `timeout`.
pub async fn read_rest(body: &mut Incoming, limit: usize, timeout: Duration) -> Bytes {
    let read = async {
        let mut out = Vec::new();
        while let Ok(Some(chunk)) = next_chunk(body).await {
            out.extend_from_slice(&chunk);
            if out.len() >= limit {
                break;
            }
        }
        Bytes::from(out)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_default()
}

/// Parses an endpoint as given on the command line: `host:port`, optionally written as
/// `http://host:port` (with or without a trailing `/`). Returns `host:port`.
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    let trimmed = s.trim();
    if trimmed.starts_with("https://") {
        return Err(format!(
            "endpoint {s:?}: https is not supported (coordinate serves plain HTTP)"
        ));
    }
    let bare = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err(format!("endpoint {s:?}: expected host:port"));
    };
    if host.is_empty() || bare.contains('/') {
        return Err(format!("endpoint {s:?}: expected host:port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(bare.to_string()),
        _ => Err(format!("endpoint {s:?}: {port:?} is not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("127.0.0.1:12380").unwrap(),
            "127.0.0.1:12380"
        );
        assert_eq!(
            parse_endpoint("http://127.0.0.1:12380/").unwrap(),
            "127.0.0.1:12380"
        );
        assert_eq!(parse_endpoint(" localhost:1 ").unwrap(), "localhost:1");
        assert_eq!(parse_endpoint("[::1]:80").unwrap(), "[::1]:80");
        assert!(parse_endpoint("127.0.0.1").is_err());
        assert!(parse_endpoint(":80").is_err());
        assert!(parse_endpoint("host:0").is_err());
        assert!(parse_endpoint("host:http").is_err());
        assert!(parse_endpoint("https://host:443").is_err());
        assert!(parse_endpoint("http://host:80/v1").is_err());
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn reasons_and_numbers() {
        assert_eq!(
            reply(404, r#"{"error":"key not found"}"#).reason(),
            "key not found"
        );
        assert_eq!(
            reply(
                503,
                r#"{"health":"unhealthy","reason":"no leader is known"}"#
            )
            .reason(),
            "no leader is known"
        );
        assert_eq!(reply(503, "no leader\n").reason(), "no leader");
        assert_eq!(reply(405, "").reason(), "405 Method Not Allowed");
        let mut r = reply(200, "v");
        r.headers.insert("etag", HeaderValue::from_static("\"42\""));
        r.headers
            .insert("x-coordinate-revision", HeaderValue::from_static("43"));
        assert_eq!(r.number("etag"), Some(42));
        assert_eq!(r.number("x-coordinate-revision"), Some(43));
        assert_eq!(r.number("x-coordinate-version"), None);
    }
}
