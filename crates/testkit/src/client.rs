//! A blocking client of a cluster's client ports (`coordinate_client::blocking`, the one client
//! every tool uses), and the small helpers tests use to read `/v1/status` documents and show
//! values in assertion messages.

use std::time::Duration;

use bytes::Bytes;
use coordinate_client::blocking::Connection;
use coordinate_client::{ClientError, ClientTls};
use hyper::Method;

/// Per-request timeout of the default client: comfortably above the server's 5 s
/// request timeout, so a slow answer is observed as a status, not as a client timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking client for a cluster's client ports. Cheap to clone and `Send`, so writer
/// threads can own one while the test thread keeps `&mut Cluster` for kills and restarts.
///
/// Every request opens a connection of its own: a kept connection to a killed or restarted
/// node would turn into a spurious error on the next request. Keys are put into the URL path
/// verbatim: the caller percent-encodes what needs it.
#[derive(Clone)]
pub struct Client {
    timeout: Duration,
    /// Client base URL of node `id` at index `id - 1`.
    pub(crate) urls: Vec<String>,
    /// TLS, for a cluster whose client ports speak it (`https://` URLs).
    pub(crate) tls: Option<ClientTls>,
}

impl Client {
    pub fn new(urls: Vec<String>, timeout: Duration) -> Client {
        Client {
            timeout,
            urls,
            tls: None,
        }
    }

    /// The same client, speaking TLS (`Some`) or plain HTTP (`None`).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Client {
        self.tls = tls;
        self
    }

    pub fn url(&self, id: u64) -> &str {
        &self.urls[(id - 1) as usize]
    }

    /// `method path` on node `id`; the status code and the body.
    pub fn request(
        &self,
        id: u64,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let url = self.url(id);
        let addr = url.split_once("://").map_or(url, |(_, rest)| rest);
        let mut conn = Connection::new(addr, self.timeout)
            .map_err(|e| ClientError::Connect {
                addr: addr.to_string(),
                source: e,
            })?
            .with_tls(self.tls.clone());
        let resp = conn.request(method, path, body)?;
        Ok((resp.status.as_u16(), resp.body.to_vec()))
    }

    /// `PUT /<key>`; the status code.
    pub fn put(&self, id: u64, key: &str, value: &[u8]) -> Result<u16, ClientError> {
        self.put_with_body(id, key, value).map(|(status, _)| status)
    }

    /// `PUT /<key>`; the status code and the response body.
    pub fn put_with_body(
        &self,
        id: u64,
        key: &str,
        value: &[u8],
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let body = Bytes::copy_from_slice(value);
        self.request(id, Method::PUT, &format!("/{key}"), body)
    }

    /// `GET /<path>`; the status code and the body.
    pub fn get(&self, id: u64, key: &str) -> Result<(u16, Vec<u8>), ClientError> {
        self.request(id, Method::GET, &format!("/{key}"), Bytes::new())
    }

    /// `GET /v1/status`, parsed; `None` on any failure (not up yet, not JSON, ...).
    pub fn try_status(&self, id: u64) -> Option<serde_json::Value> {
        match self.get(id, "v1/status") {
            Ok((200, body)) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }
}

/// A numeric field of a `/v1/status` document; panics with the document if absent.
pub fn field(status: &serde_json::Value, name: &str) -> u64 {
    status
        .get(name)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("/v1/status has no numeric `{name}`: {status}"))
}

/// The `role` of a `/v1/status` document.
pub fn role(status: &serde_json::Value) -> &str {
    status
        .get("role")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("/v1/status has no string `role`: {status}"))
}

/// A value for an assertion message: text if it is short UTF-8, else its length.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.len() <= 200 => s.to_string(),
        _ => format!("<{} bytes>", bytes.len()),
    }
}
