//! A synchronous [`Connection`](crate::Connection) for callers without an async runtime
//! (the end-to-end tests, scripts): each call runs the async one to completion on a
//! private single-threaded runtime.
//!
//! Between calls nothing drives the connection; that is harmless for HTTP/1.1 (an idle
//! connection the server closed meanwhile is noticed and replaced before the next request).

use std::time::Duration;

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};

use crate::conn::{Request, Response, ERROR_BODY_LIMIT};
use crate::error::ClientError;
use crate::sse::Event;

/// One keep-alive connection to one node, blocking.
pub struct Connection {
    runtime: tokio::runtime::Runtime,
    inner: crate::Connection,
}

impl Connection {
    /// A connection to `addr` (`host:port`); it connects lazily.
    pub fn new(addr: impl Into<String>, timeout: Duration) -> std::io::Result<Connection> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Connection {
            runtime,
            inner: crate::Connection::new(addr, timeout),
        })
    }

    /// The same connection, speaking TLS (`Some`) or plain HTTP (`None`).
    pub fn with_tls(mut self, tls: Option<crate::ClientTls>) -> Connection {
        self.inner = self.inner.with_tls(tls);
        self
    }

    /// The `host:port` this connection talks to.
    pub fn addr(&self) -> &str {
        self.inner.addr()
    }

    /// See [`crate::Connection::request`].
    pub fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        self.runtime
            .block_on(self.inner.request(method, path, body))
    }

    /// See [`crate::Connection::send`].
    pub fn send(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.runtime.block_on(self.inner.send(req))
    }

    /// `PUT /<key>` on the root API.
    pub fn put(&mut self, key: &str, value: Bytes) -> Result<Response, ClientError> {
        self.runtime.block_on(self.inner.put(key, value))
    }

    /// `GET /<key>` on the root API.
    pub fn get(&mut self, key: &str) -> Result<Response, ClientError> {
        self.runtime.block_on(self.inner.get(key))
    }

    /// Sends `req` and returns once the answer's head is in (a watch); see
    /// [`crate::Connection::open`].
    pub fn open(&mut self, req: &Request) -> Result<Stream<'_>, ClientError> {
        let inner = self.runtime.block_on(self.inner.open(req))?;
        Ok(Stream {
            runtime: &self.runtime,
            timeout: self.inner.timeout(),
            inner,
        })
    }
}

/// An answer whose body is read as it arrives, blocking.
pub struct Stream<'a> {
    runtime: &'a tokio::runtime::Runtime,
    timeout: Duration,
    inner: crate::Stream,
}

impl<'a> Stream<'a> {
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.inner.headers
    }

    /// The whole body of a refused stream (an error answer, at most [`ERROR_BODY_LIMIT`]
    /// bytes), as a [`Response`].
    pub fn into_response(mut self) -> Response {
        let body = self
            .runtime
            .block_on(self.inner.read_rest(ERROR_BODY_LIMIT, self.timeout));
        Response {
            status: self.inner.status,
            headers: std::mem::take(&mut self.inner.headers),
            body,
        }
    }

    /// The body as Server-Sent Events.
    pub fn events(self) -> Events<'a> {
        Events {
            runtime: self.runtime,
            events: self.inner.events(),
        }
    }
}

/// A watch's events, blocking: an iterator that ends when the stream does.
pub struct Events<'a> {
    runtime: &'a tokio::runtime::Runtime,
    events: crate::sse::Events,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.events.next()).transpose()
    }
}
