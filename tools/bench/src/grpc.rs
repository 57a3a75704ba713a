//! The gRPC connection of the `grpc` target: etcd's v3 KV service through the generated
//! client of `coordinate-etcd-api`, the same client against coordinate and against etcd. Each
//! worker has one request in flight; workers share `--grpc-conns` channels (HTTP/2
//! connections, requests multiplexed on each, as an etcd client process does), one per worker
//! by default, as each HTTP worker has its own keep-alive connection.

use std::time::Duration;

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

use crate::workload::{OpKind, Outcome, Request};
use crate::ReadMode;

/// One worker's channel.
pub struct GrpcConnection {
    kv: KvClient<Channel>,
    serializable: bool,
}

/// A channel to `addr` (host:port), connected on first use; every call times out after
/// `timeout`.
pub fn channel(addr: &str, timeout: Duration) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("endpoint {addr:?}: {e}"))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

impl GrpcConnection {
    /// A worker's client over `channel` (shared with other workers, or its own).
    pub fn new(channel: Channel, mode: ReadMode) -> GrpcConnection {
        GrpcConnection {
            kv: KvClient::new(channel),
            serializable: mode == ReadMode::Serializable,
        }
    }

    /// Sends `req` (a put of `body` to the key `path`, or a range read of it) and says how it
    /// went: a gRPC error is counted by its code (`grpc Unavailable`).
    pub async fn execute(&mut self, req: &Request<'_>) -> Outcome {
        let key = req.path.as_bytes().to_vec();
        let result = match req.kind {
            OpKind::Put => self
                .kv
                .put(pb::PutRequest {
                    key,
                    value: req.body.to_vec(),
                    ..Default::default()
                })
                .await
                .map(|_| Outcome::Ok),
            OpKind::Get => self
                .kv
                .range(pb::RangeRequest {
                    key,
                    serializable: self.serializable,
                    ..Default::default()
                })
                .await
                .map(|r| match r.into_inner().kvs.is_empty() {
                    true => Outcome::NotFound,
                    false => Outcome::Ok,
                }),
        };
        result.unwrap_or_else(|status| Outcome::Error(format!("grpc {:?}", status.code())))
    }
}
