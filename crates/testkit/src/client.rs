//! A blocking HTTP client of a cluster's client ports (ureq), and the small helpers tests use
//! to read `/v1/status` documents and show values in assertion messages.

use std::time::Duration;

/// Per-request timeout of the default client: comfortably above the server's 5 s
/// request timeout, so a slow answer is observed as a status, not as a client timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking HTTP client for a cluster's client ports. Cheap to clone and `Send`, so writer
/// threads can own one while the test thread keeps `&mut Cluster` for kills and restarts.
///
/// Keys are put into the URL path verbatim: the caller percent-encodes what needs it.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// Client base URL of node `id` at index `id - 1`.
    pub(crate) urls: Vec<String>,
}

impl Client {
    pub fn new(urls: Vec<String>, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            // 4xx/5xx are answers we assert on, not errors.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // No pooling: a pooled connection to a killed or restarted node would turn into a
            // spurious error on the next request.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build();
        Client {
            agent: config.into(),
            urls,
        }
    }

    pub fn url(&self, id: u64) -> &str {
        &self.urls[(id - 1) as usize]
    }

    /// `PUT /<key>`; the status code.
    pub fn put(&self, id: u64, key: &str, value: &[u8]) -> Result<u16, ureq::Error> {
        self.put_with_body(id, key, value).map(|(status, _)| status)
    }

    /// `PUT /<key>`; the status code and the response body.
    pub fn put_with_body(
        &self,
        id: u64,
        key: &str,
        value: &[u8],
    ) -> Result<(u16, Vec<u8>), ureq::Error> {
        let mut resp = self
            .agent
            .put(format!("{}/{key}", self.url(id)))
            .send(value)?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_vec()?;
        Ok((status, body))
    }

    /// `GET /<path>`; the status code and the body.
    pub fn get(&self, id: u64, key: &str) -> Result<(u16, Vec<u8>), ureq::Error> {
        let mut resp = self.agent.get(format!("{}/{key}", self.url(id))).call()?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_vec()?;
        Ok((status, body))
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
