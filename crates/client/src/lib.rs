//! A minimal HTTP/1.1 client for coordinate's API over one keep-alive connection, used by the
//! load generator and the fault-injection workload (not by the server itself).
//!
//! One [`Connection`] is one TCP connection; requests on it are sequential. Callers that want
//! concurrency open several connections. Every request has a deadline; a request that fails
//! or times out closes the connection (its state is unknown), and the next request reconnects.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("request failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One keep-alive connection to one node.
pub struct Connection {
    addr: String,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection to `addr` (`host:port`); it connects lazily.
    pub fn new(addr: impl Into<String>, timeout: Duration) -> Connection {
        Connection {
            addr: addr.into(),
            timeout,
            sender: None,
        }
    }

    /// The `host:port` this connection talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream =
                TcpStream::connect(&self.addr)
                    .await
                    .map_err(|source| ClientError::Connect {
                        addr: self.addr.clone(),
                        source,
                    })?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        match self.sender.as_mut() {
            Some(s) => Ok(s),
            None => unreachable!("sender set above"),
        }
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.send(method, path, body)).await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let host = self.addr.clone();
        let sender = self.sender().await?;
        sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .body(Full::new(body))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response { status, body })
    }

    /// `PUT /<key>`.
    pub async fn put(&mut self, key: &str, value: Bytes) -> Result<Response, ClientError> {
        self.request(Method::PUT, &key_path(key), value).await
    }

    /// `GET /<key>`.
    pub async fn get(&mut self, key: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, &key_path(key), Bytes::new())
            .await
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
    let mut out = String::with_capacity(key.len() + 1);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
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
}
