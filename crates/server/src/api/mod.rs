//! The client HTTP API: a thin translator over [`crate::service`]. Each handler parses the
//! request into a service request, calls the service, and renders the response; `error` is
//! the one place a service error becomes a status code and a body.
//!
//! - `root`: the seed's API — `PUT`/`GET /<key>`, `POST`/`DELETE /<id>`.
//! - `kv`: `/v1/kv/<key>` with revisions and conditions, prefix reads and deletes,
//!   `/v1/txn`, and `/v1/watch/<key>` (Server-Sent Events).
//! - `members`: `/v1/members` — list, add (voter or learner), promote, remove.
//! - `ops`: `/health`, `/v1/status`, `/metrics`.
//! - `error`: `ApiError` and the mapping of [`crate::service::ServiceError`] to HTTP.
//! - `serve`: the accept loop (connection cap, header and idle timeouts, graceful drain),
//!   HTTP/1.1 and HTTP/2, gRPC requests to `grpc`; `coalesce` gathers an HTTP/2
//!   connection's writes.
//! - `grpc`: etcd's v3 gRPC API, the second front-end.
//!
//! Every error is a status code and a one-line reason (JSON under `/v1`, plain text on the
//! root API). Writes that time out after reaching raft say "outcome unknown" (504); writes
//! refused before reaching raft say they were not applied (503).

mod coalesce;
mod error;
pub mod grpc;
mod kv;
mod lease;
mod members;
mod ops;
#[cfg(test)]
mod proptests;
mod range;
mod root;
pub mod serve;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub(crate) use error::{bad_request, v1, ApiError};

use crate::metrics::METRICS;

use crate::service::Services;

/// What the API is built from.
#[derive(Clone)]
pub struct ApiState {
    pub services: Services,
    pub max_value_size: usize,
}

/// What every handler holds: the services, and the limits of the HTTP front-end.
pub(crate) struct Rest {
    pub(crate) services: Services,
    /// Largest value a `PUT` body may carry (`--max-value-size`).
    pub(crate) max_value_size: usize,
}

/// The handlers' state: shared, so a request clones one pointer.
pub(crate) type RestState = Arc<Rest>;

/// Header carrying the store revision.
pub(crate) const REVISION: &str = "x-coordinate-revision";

/// One service for both front-ends: a request whose content type is `application/grpc` (any
/// variant: `+proto`, ...) goes to `grpc`, everything else to the REST `rest`. By content
/// type, not path, so a REST key that looks like a gRPC method is still a key.
pub fn both(rest: Router, grpc: Router) -> Router {
    use tower::ServiceExt;
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let is_grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let service = if is_grpc { grpc.clone() } else { rest.clone() };
        service.oneshot(req)
    }))
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let rest = Arc::new(Rest {
        services: state.services,
        max_value_size: state.max_value_size,
    });
    Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/v1/status", get(ops::status))
        .route("/v1/members", get(members::list).post(members::add))
        .route("/v1/members/{id}", axum::routing::delete(members::remove))
        .route("/v1/members/{id}/promote", post(members::promote))
        .route("/v1/kv", get(kv::get).delete(kv::delete))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/kv/", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/txn", post(kv::txn))
        .route("/v1/lease", get(lease::list).post(lease::grant))
        .route(
            "/v1/lease/{id}",
            get(lease::time_to_live).delete(lease::revoke),
        )
        .route("/v1/lease/{id}/keep-alive", post(lease::keep_alive))
        .route("/v1/compact", post(lease::compact))
        .route("/v1/alarms", get(lease::alarms).delete(lease::disarm))
        .route("/v1/watch/{*key}", get(watch::watch))
        .route("/v1/watch/", get(watch::watch))
        .fallback(root::handle)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(record))
        .layer(DefaultBodyLimit::disable())
        .with_state(rest)
}

/// A method an endpoint does not take. A PUT there is a write to a reserved key name.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    let err = if method == Method::PUT {
        bad_request(format!(
            "{path} is an operator endpoint; keys named like it are reserved (store them under /v1/kv/)"
        ))
    } else {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} does not take {method}"),
        )
    };
    if path.starts_with("/v1") {
        err.json()
    } else {
        err
    }
}

/// Route names: a small fixed set, so metric labels stay bounded.
const ROUTES: [&str; 17] = [
    "health",
    "metrics",
    "status",
    "members",
    "txn",
    "watch",
    "kv_get",
    "kv_put",
    "kv_delete",
    "lease",
    "maintenance",
    "v1_other",
    "get",
    "put",
    "member_add",
    "member_remove",
    "other",
];

/// Statuses whose counters are resolved once; others are looked up per request.
const COMMON_STATUSES: [u16; 10] = [200, 201, 204, 400, 404, 409, 412, 413, 503, 504];

/// Each route's histogram and common counters, resolved once instead of per request.
struct RouteMetrics {
    seconds: prometheus::Histogram,
    by_status: Vec<prometheus::IntCounter>,
}

static ROUTE_METRICS: std::sync::LazyLock<Vec<RouteMetrics>> = std::sync::LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|route| RouteMetrics {
            seconds: METRICS.request_seconds.with_label_values(&[route]),
            by_status: COMMON_STATUSES
                .iter()
                .map(|s| {
                    METRICS
                        .requests
                        .with_label_values(&[*route, s.to_string().as_str()])
                })
                .collect(),
        })
        .collect()
});

/// Counts requests by route and status, and times them.
async fn record(req: Request, next: Next) -> Response {
    let route = route_index(req.method(), req.uri().path());
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &ROUTE_METRICS[route];
    m.seconds.observe(started.elapsed().as_secs_f64());
    let status = resp.status().as_u16();
    match COMMON_STATUSES.iter().position(|&s| s == status) {
        Some(i) => m.by_status[i].inc(),
        None => METRICS
            .requests
            .with_label_values(&[ROUTES[route], resp.status().as_str()])
            .inc(),
    }
    resp
}

/// The index in [`ROUTES`] of a request's route.
fn route_index(method: &Method, path: &str) -> usize {
    let label = route_label(method, path);
    ROUTES
        .iter()
        .position(|r| *r == label)
        .unwrap_or(ROUTES.len() - 1)
}

/// The route name of a request.
fn route_label(method: &Method, path: &str) -> &'static str {
    let v1 = |p: &str| path.starts_with(p);
    match (method, path) {
        (_, "/health") => "health",
        (_, "/metrics") => "metrics",
        (_, "/v1/status") => "status",
        _ if v1("/v1/members") => "members",
        _ if v1("/v1/txn") => "txn",
        _ if v1("/v1/watch") => "watch",
        _ if v1("/v1/lease") => "lease",
        _ if v1("/v1/compact") || v1("/v1/alarms") => "maintenance",
        (&Method::GET, _) if v1("/v1/kv") => "kv_get",
        (&Method::PUT, _) if v1("/v1/kv") => "kv_put",
        (&Method::DELETE, _) if v1("/v1/kv") => "kv_delete",
        _ if v1("/v1/") => "v1_other",
        (&Method::GET, _) => "get",
        (&Method::PUT, _) => "put",
        (&Method::POST, _) => "member_add",
        (&Method::DELETE, _) => "member_remove",
        _ => "other",
    }
}

/// Time a client has to send a request's body once its headers arrived (408 after it): a
/// client dribbling a body must not hold a handler and a connection slot forever.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body of at most `limit` bytes (413 above it; 408 if it is not complete
/// within [`BODY_READ_TIMEOUT`]).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        ));
    };
    read.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over || e.to_string().contains("length limit") {
            too_large()
        } else {
            bad_request(format!("reading the request body: {e}"))
        }
    })
}

/// Decodes `%XX` escapes; the result must be UTF-8. With `plus_is_space`, `+` is a space (query
/// strings).
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly (`from_str_radix` alone would take "%+5").
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad_request("malformed percent-encoding"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad_request("not valid UTF-8 after percent-decoding"))
}

/// The decoded query parameters.
pub(crate) fn query_params(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k, true)?, percent_decode(v, true)?);
    }
    Ok(out)
}

/// A boolean query parameter (`true`/`false`, `1`/`0`; absent is false).
pub(crate) fn flag(params: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(bad_request(format!("?{name}={other}: expected true or false")).json()),
    }
}

pub(crate) fn header_value(v: u64) -> HeaderValue {
    HeaderValue::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("a%20b/c", false).ok().as_deref(),
            Some("a b/c")
        );
        assert_eq!(percent_decode("a+b", false).ok().as_deref(), Some("a+b"));
        assert_eq!(percent_decode("a+b", true).ok().as_deref(), Some("a b"));
        assert_eq!(
            percent_decode("%E2%9C%93", false).ok().as_deref(),
            Some("✓")
        );
        assert!(percent_decode("bad%2", false).is_err());
        assert!(percent_decode("bad%zz", false).is_err());
        assert!(percent_decode("%ff", false).is_err());
        assert!(percent_decode("%+5", false).is_err());
        assert!(percent_decode("%-1", false).is_err());
    }

    #[test]
    fn query_parsing() {
        let uri: Uri = "/v1/kv/a?prefix=true&start_after=a%2Fb&limit=5&x"
            .parse()
            .unwrap();
        let q = query_params(&uri).unwrap();
        assert_eq!(q["start_after"], "a/b");
        assert_eq!(q["limit"], "5");
        assert!(flag(&q, "prefix").unwrap());
        assert!(flag(&q, "x").unwrap());
        assert!(!flag(&q, "missing").unwrap());
    }

    #[test]
    fn route_labels_are_bounded() {
        assert_eq!(
            route_label(&Method::GET, "/v1/kv/anything/at/all"),
            "kv_get"
        );
        assert_eq!(route_label(&Method::PUT, "/some/key"), "put");
        assert_eq!(route_label(&Method::GET, "/v1/watch/x"), "watch");
        assert_eq!(route_label(&Method::PATCH, "/x"), "other");
        // Every label has its precomputed metrics.
        for (m, p) in [
            (Method::GET, "/health"),
            (Method::GET, "/metrics"),
            (Method::GET, "/v1/status"),
            (Method::POST, "/v1/members"),
            (Method::POST, "/v1/txn"),
            (Method::GET, "/v1/watch/k"),
            (Method::GET, "/v1/kv/k"),
            (Method::PUT, "/v1/kv/k"),
            (Method::DELETE, "/v1/kv/k"),
            (Method::POST, "/v1/lease/grant"),
            (Method::POST, "/v1/compact"),
            (Method::GET, "/v1/alarms"),
            (Method::GET, "/v1/other"),
            (Method::GET, "/k"),
            (Method::PUT, "/k"),
            (Method::POST, "/4"),
            (Method::DELETE, "/4"),
            (Method::PATCH, "/k"),
        ] {
            let label = route_label(&m, p);
            assert_eq!(ROUTES[route_index(&m, p)], label, "{m} {p}");
        }
        assert_eq!(ROUTE_METRICS.len(), ROUTES.len());
    }
}
