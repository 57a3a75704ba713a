//! gRPC call metrics: every call counted by method and status code, unary calls timed. The
//! method label is one of a fixed set (etcd's methods, `Auth` for the whole refused Auth
//! service, `other` for any other path), so a client cannot grow the label space.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::METRICS;

/// etcd's methods (and the health service's): path, label, and whether it is a stream (whose
/// duration is the stream's life, not a call's latency).
const METHODS: [(&str, &str, bool); 26] = [
    ("/etcdserverpb.KV/Range", "KV/Range", false),
    ("/etcdserverpb.KV/Put", "KV/Put", false),
    ("/etcdserverpb.KV/DeleteRange", "KV/DeleteRange", false),
    ("/etcdserverpb.KV/Txn", "KV/Txn", false),
    ("/etcdserverpb.KV/Compact", "KV/Compact", false),
    ("/etcdserverpb.Watch/Watch", "Watch/Watch", true),
    ("/etcdserverpb.Lease/LeaseGrant", "Lease/LeaseGrant", false),
    (
        "/etcdserverpb.Lease/LeaseRevoke",
        "Lease/LeaseRevoke",
        false,
    ),
    (
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "Lease/LeaseKeepAlive",
        true,
    ),
    (
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "Lease/LeaseTimeToLive",
        false,
    ),
    (
        "/etcdserverpb.Lease/LeaseLeases",
        "Lease/LeaseLeases",
        false,
    ),
    (
        "/etcdserverpb.Cluster/MemberAdd",
        "Cluster/MemberAdd",
        false,
    ),
    (
        "/etcdserverpb.Cluster/MemberRemove",
        "Cluster/MemberRemove",
        false,
    ),
    (
        "/etcdserverpb.Cluster/MemberUpdate",
        "Cluster/MemberUpdate",
        false,
    ),
    (
        "/etcdserverpb.Cluster/MemberList",
        "Cluster/MemberList",
        false,
    ),
    (
        "/etcdserverpb.Cluster/MemberPromote",
        "Cluster/MemberPromote",
        false,
    ),
    (
        "/etcdserverpb.Maintenance/Alarm",
        "Maintenance/Alarm",
        false,
    ),
    (
        "/etcdserverpb.Maintenance/Status",
        "Maintenance/Status",
        false,
    ),
    (
        "/etcdserverpb.Maintenance/Defragment",
        "Maintenance/Defragment",
        false,
    ),
    ("/etcdserverpb.Maintenance/Hash", "Maintenance/Hash", false),
    (
        "/etcdserverpb.Maintenance/HashKV",
        "Maintenance/HashKV",
        false,
    ),
    (
        "/etcdserverpb.Maintenance/Snapshot",
        "Maintenance/Snapshot",
        true,
    ),
    (
        "/etcdserverpb.Maintenance/MoveLeader",
        "Maintenance/MoveLeader",
        false,
    ),
    (
        "/etcdserverpb.Maintenance/Downgrade",
        "Maintenance/Downgrade",
        false,
    ),
    ("/grpc.health.v1.Health/Check", "Health/Check", false),
    ("/grpc.health.v1.Health/Watch", "Health/Watch", true),
];

/// The label of a call's path, and whether it is a stream.
fn method_label(path: &str) -> (&'static str, bool) {
    if path.starts_with("/etcdserverpb.Auth/") {
        return ("Auth", false);
    }
    METHODS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map_or(("other", false), |&(_, label, stream)| (label, stream))
}

/// The gRPC status of an answer, by its code's name. A call that failed before sending
/// anything carries its status in the headers ("trailers-only"); a call that answered ends
/// with `OK` in its trailers, which a middleware does not wait for.
fn status_code(resp: &Response) -> String {
    match resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(code) => format!("{:?}", tonic::Code::from_i32(code)),
        None => "OK".to_string(),
    }
}

/// Counts and times one gRPC call.
pub async fn record(req: Request, next: Next) -> Response {
    let (method, stream) = method_label(req.uri().path());
    let started = Instant::now();
    let resp = next.run(req).await;
    if !stream {
        METRICS
            .grpc_seconds
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }
    METRICS
        .grpc_requests
        .with_label_values(&[method, status_code(&resp).as_str()])
        .inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_get_short_bounded_labels() {
        assert_eq!(method_label("/etcdserverpb.KV/Range"), ("KV/Range", false));
        assert_eq!(
            method_label("/etcdserverpb.Lease/LeaseKeepAlive"),
            ("Lease/LeaseKeepAlive", true)
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            ("Health/Check", false)
        );
        assert_eq!(method_label("/etcdserverpb.Auth/UserAdd"), ("Auth", false));
        // Unknown methods of known services, and unknown services, share one label.
        assert_eq!(method_label("/etcdserverpb.KV/Rangeeee"), ("other", false));
        assert_eq!(method_label("/etcdserverpb.KV/"), ("other", false));
        assert_eq!(method_label("/x.Y/Z"), ("other", false));
    }

    #[test]
    fn status_comes_from_a_trailers_only_answer() {
        let mut resp = Response::new(axum::body::Body::empty());
        assert_eq!(status_code(&resp), "OK");
        resp.headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static("14"));
        assert_eq!(status_code(&resp), "Unavailable");
        resp.headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static("9"));
        assert_eq!(status_code(&resp), "FailedPrecondition");
    }
}
