//! One keep-alive HTTP/1.1 connection to one node: [`Connection`], the bottom layer every
//! tool's requests go through.
//!
//! Requests on a connection are sequential; callers that want concurrency open several
//! (`coordinate-bench` opens one per simulated client). The connection is opened on first
//! use and reopened after any failure.
//!
//! **Deadline.** Each request has one deadline, `timeout` after it starts, covering the
//! connect (if one is needed), the send and the whole answer. Expiring while connecting is a
//! [`ClientError::Connect`] (nothing was sent); expiring later is [`ClientError::Timeout`]
//! (it may have been received). A request that fails or times out drops the connection (its
//! state is unknown) and the next one reconnects.
//!
//! **Stale connections.** A server closes idle keep-alive connections (and a restarted node
//! closes all of them). Before reusing one, the connection checks it is still ready; if not,
//! it reconnects — the request was not sent on the dead one, so this is not a retry.
//!
//! **Hot path.** `coordinate-bench`'s throughput rides on [`Connection::request`]: it builds
//! one `hyper::Request` (the `Host` header is computed once per connection), arms one timer,
//! and moves the answer's parts out without copying them.

use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::error::ClientError;
use crate::tls::ClientTls;
use coordinate_tls::server_name;

/// One request, with headers and whether repeating it is harmless.
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

/// A complete answer: status, headers and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// An answer without headers (for tests and hand-made answers).
    pub fn new(status: StatusCode, body: Bytes) -> Response {
        Response {
            status,
            headers: HeaderMap::new(),
            body,
        }
    }

    /// A numeric header (`X-Coordinate-Revision`), or an `ETag` such as `"42"`.
    pub fn number(&self, name: &str) -> Option<u64> {
        let text = self.headers.get(name)?.to_str().ok()?;
        text.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .ok()
    }

    /// The server's one-line reason: `error` (or `reason`) of a JSON body, else the text,
    /// else the status line.
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

/// Most bytes of a refused stream's answer (an error, not events) worth reading.
pub const ERROR_BODY_LIMIT: usize = 64 << 10;

/// An answer whose body is read as it arrives (a watch's event stream).
#[derive(Debug)]
pub struct Stream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
}

impl Stream {
    /// The next chunk of the body: `Ok(None)` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Http(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing for us.
                }
            }
        }
    }

    /// The rest of the body (an error answer), up to about `limit` bytes, within `timeout`;
    /// what arrived before an error or the timeout is dropped.
    pub async fn read_rest(&mut self, limit: usize, timeout: Duration) -> Bytes {
        let read = async {
            let mut out = Vec::new();
            while let Ok(Some(chunk)) = self.next_chunk().await {
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

    /// The stream as Server-Sent Events.
    pub fn events(self) -> crate::sse::Events {
        crate::sse::Events::new(self)
    }
}

/// One keep-alive connection to one node (see the module docs).
pub struct Connection {
    addr: String,
    /// `Host:` of every request, built once (`None` if `addr` is not a valid header value:
    /// then building each request fails, as it should).
    host: Option<HeaderValue>,
    timeout: Duration,
    /// TLS for every (re)connection, if the node's port speaks it.
    tls: Option<ClientTls>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection to `addr` (`host:port`); it connects lazily.
    pub fn new(addr: impl Into<String>, timeout: Duration) -> Connection {
        let addr = addr.into();
        Connection {
            host: HeaderValue::from_str(&addr).ok(),
            addr,
            timeout,
            tls: None,
            sender: None,
        }
    }

    /// The same connection, speaking TLS (`Some`) or plain HTTP (`None`).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Connection {
        self.tls = tls;
        self
    }

    /// The `host:port` this connection talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True if a TCP connection is open and not known to be closed by the server (the next
    /// request reuses it, after checking it is still ready).
    pub fn is_open(&self) -> bool {
        self.sender.as_ref().is_some_and(|s| !s.is_closed())
    }

    /// The per-request deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        self.exchange(method, path, &[], body).await
    }

    /// Sends `req` (with its headers) and reads the whole answer.
    pub async fn send(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.exchange(
            req.method.clone(),
            &req.path,
            &req.headers,
            req.body.clone(),
        )
        .await
    }

    /// `PUT /<key>` on the root API.
    pub async fn put(&mut self, key: &str, value: Bytes) -> Result<Response, ClientError> {
        self.request(Method::PUT, &key_path(key), value).await
    }

    /// `GET /<key>` on the root API.
    pub async fn get(&mut self, key: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, &key_path(key), Bytes::new())
            .await
    }

    /// Sends `req` and waits (within the timeout) for the answer's head only; the body is
    /// left to be read as it arrives. The TCP connection goes with the stream: the next
    /// request on this `Connection` opens a new one.
    pub async fn open(&mut self, req: &Request) -> Result<Stream, ClientError> {
        let request = self.build(
            req.method.clone(),
            &req.path,
            &req.headers,
            req.body.clone(),
        )?;
        let deadline = Instant::now() + self.timeout;
        let sender = self.ready(deadline).await?;
        let result = timeout_at(deadline, sender.send_request(request)).await;
        self.sender = None;
        match result {
            Ok(Ok(resp)) => {
                let (parts, body) = resp.into_parts();
                Ok(Stream {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            }
            Ok(Err(e)) => Err(ClientError::Http(e)),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let request = self.build(method, path, headers, body)?;
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let sender = self.ready(deadline).await?;
        let exchange = async {
            let (parts, body) = sender.send_request(request).await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match timeout_at(deadline, exchange).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(ClientError::Http(e))
            }
            Err(_) => {
                self.sender = None;
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let builder = hyper::Request::builder().method(method).uri(path);
        let mut builder = match &self.host {
            Some(host) => builder.header(HOST, host.clone()),
            None => builder.header(HOST, self.addr.as_str()),
        };
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        Ok(builder.body(Full::new(body))?)
    }

    /// A sender ready for a request before `deadline`: the open connection if it is still
    /// usable, else a new one. Every error here means the request was not sent.
    async fn ready(
        &mut self,
        deadline: Instant,
    ) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        let usable = match self.sender.as_mut() {
            Some(sender) if !sender.is_closed() => {
                // Usually ready at once: look without arming a timer (the hot path has one,
                // the exchange's); wait within the deadline only if it is not.
                let now = std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await;
                match now {
                    Poll::Ready(ready) => ready.is_ok(),
                    Poll::Pending => {
                        matches!(timeout_at(deadline, sender.ready()).await, Ok(Ok(())))
                    }
                }
            }
            _ => false,
        };
        if !usable {
            self.sender = None;
            let mut sender = timeout_at(deadline, self.connect())
                .await
                .map_err(|_| self.connect_timed_out())??;
            match timeout_at(deadline, sender.ready()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.not_connected(e.to_string())),
                Err(_) => return Err(self.connect_timed_out()),
            }
            self.sender = Some(sender);
        }
        match self.sender.as_mut() {
            Some(sender) => Ok(sender),
            // Disjoint fields: `self.sender` is borrowed, `self.addr` is not.
            None => Err(ClientError::Connect {
                addr: self.addr.clone(),
                source: std::io::Error::other("internal: no connection"),
            }),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream =
            TcpStream::connect(&self.addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
        // Requests are small and answered at once: do not wait to fill a segment.
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => self.handshake(stream).await,
            Some(tls) => {
                let name = server_name(&self.addr).map_err(|e| self.not_connected(e))?;
                let stream = tls
                    .connector()
                    .connect(name, stream)
                    .await
                    .map_err(|e| self.not_connected(format!("TLS: {e}")))?;
                self.handshake(stream).await
            }
        }
    }

    /// HTTP/1.1 on an open stream.
    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.not_connected(e.to_string()))?;
        tokio::spawn(async move {
            // The connection's fate is seen by the requests on it.
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn not_connected(&self, why: String) -> ClientError {
        ClientError::Connect {
            addr: self.addr.clone(),
            source: std::io::Error::other(why),
        }
    }

    fn connect_timed_out(&self) -> ClientError {
        ClientError::Connect {
            addr: self.addr.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", self.timeout),
            ),
        }
    }
}

/// The root-API path of a key, percent-encoding everything but unreserved characters and `/`.
///
/// ```
/// use coordinate_client::key_path;
/// assert_eq!(key_path("config/db"), "/config/db");
/// assert_eq!(key_path("a b?"), "/a%20b%3F");
/// ```
pub fn key_path(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len() + 1);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_are_encoded() {
        assert_eq!(key_path("a/b"), "/a/b");
        assert_eq!(key_path("a b?"), "/a%20b%3F");
        assert_eq!(key_path("✓"), "/%E2%9C%93");
    }

    fn reply(status: u16, body: &str) -> Response {
        Response::new(
            StatusCode::from_u16(status).unwrap(),
            Bytes::from(body.to_string()),
        )
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

    #[tokio::test]
    async fn a_refused_connection_was_not_sent() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut conn = Connection::new(dead, Duration::from_secs(2));
        let err = conn.get("k").await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert!(!err.was_sent());
    }
}
