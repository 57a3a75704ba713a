//! One HTTP exchange with a node of a test cluster, for the tests of the `/v1` API.

use std::time::Duration;

use bytes::Bytes;
use coordinate_client::{blocking, Request};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;
use serde_json::Value;

use super::Cluster;

/// One HTTP exchange: status, selected headers, body.
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub revision: Option<u64>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection of its own to node `id` (a kept one could outlive a killed node).
pub fn connect(c: &Cluster, id: u64, timeout: Duration) -> blocking::Connection {
    let url = c.client_url(id);
    let addr = url.strip_prefix("http://").unwrap_or(&url).to_string();
    blocking::Connection::new(addr, timeout).unwrap_or_else(|e| panic!("a client runtime: {e}"))
}

pub fn call(
    c: &Cluster,
    id: u64,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{method}: {e}"));
    let mut req = Request::write(method.clone(), path, Bytes::copy_from_slice(body));
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{k}: {e}"));
        let value = HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        req = req.header(name, value);
    }
    let resp = connect(c, id, Duration::from_secs(15))
        .send(&req)
        .unwrap_or_else(|e| c.fail(&format!("{method} {path} on node {id}: {e}")));
    let header = |name: &str| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Answer {
        status: resp.status.as_u16(),
        etag: header("etag"),
        revision: header("x-coordinate-revision").and_then(|r| r.parse().ok()),
        body: resp.body.to_vec(),
    }
}
