//! etcd's v3 gRPC API on the client port: a second front-end over [`crate::service`], beside
//! the REST one. Each service module translates etcd's requests into the services' and their
//! answers back, with etcd's response header and etcd's error codes and texts (`status`).
//!
//! - `kv`: Range, Put, DeleteRange, Txn, Compact.
//! - `lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive (a stream), LeaseTimeToLive,
//!   LeaseLeases.
//! - `auth`: every call refused with one clear message (no users or roles yet).
//! - `cluster`: MemberList, MemberAdd, MemberRemove, MemberPromote, MemberUpdate.
//! - `watch`: Watch, many watchers on one bidirectional stream; `watch_wire` serves it,
//!   sending each event encoded once for all its watchers.
//! - `maintenance`: Status, Alarm, MoveLeader, HashKV, Hash, Snapshot, Defragment (a no-op:
//!   there is no file to defragment).
//! - `health`: the standard `grpc.health.v1` service.
//! - `status`: service errors as gRPC statuses.
//! - `metrics`: every call counted by method and code, unary ones timed.
//!
//! Served on the same port as REST (`api::serve` sends a request whose content type is
//! `application/grpc` here), in clear as HTTP/2 with prior knowledge (h2c, what etcd's
//! `http://` endpoints speak) or under the port's TLS.

mod auth;
mod cluster;
mod health;
mod kv;
mod lease;
mod maintenance;
mod metrics;
mod status;
mod watch;
mod watch_wire;

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::auth_server::AuthServer;
use coordinate_etcd_api::etcdserverpb::cluster_server::ClusterServer;
use coordinate_etcd_api::etcdserverpb::kv_server::KvServer;
use coordinate_etcd_api::etcdserverpb::lease_server::LeaseServer;
use coordinate_etcd_api::etcdserverpb::maintenance_server::MaintenanceServer;

use crate::kv::MemberAttributes;
use crate::service::Services;

pub use kv::MAX_TXN_OPS;

/// etcd's default progress-notification interval (`--experimental-watch-progress-notify-interval`).
const DEFAULT_PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// What every gRPC handler holds.
#[derive(Clone)]
pub struct Grpc {
    services: Services,
    /// This member's id (etcd's member_id).
    member: u64,
    /// This member's name and client URLs, as MemberList shows them until it has published
    /// them.
    attributes: MemberAttributes,
    /// Idle time after which a watcher that asked for progress notifications gets one.
    progress_interval: std::time::Duration,
}

impl Grpc {
    pub fn new(services: Services, member: u64, attributes: MemberAttributes) -> Grpc {
        Grpc {
            services,
            member,
            attributes,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
        }
    }

    /// Watchers asking for progress notifications get one after `interval` without events.
    pub fn with_progress_interval(self, interval: std::time::Duration) -> Grpc {
        Grpc {
            progress_interval: interval,
            ..self
        }
    }

    /// The header of an answer that read or changed no key: at the revision this node has
    /// applied.
    fn current_header(&self) -> pb::ResponseHeader {
        self.header(self.services.watch.applied_revision())
    }

    /// The header of an answer given at store revision `revision`.
    fn header(&self, revision: u64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.services.members.cluster_id(),
            member_id: self.member,
            revision: revision as i64,
            raft_term: self.services.status.term(),
        }
    }
}

/// The gRPC services, as one router.
pub fn router(grpc: Grpc) -> axum::Router {
    let mut routes = tonic::service::Routes::builder();
    routes.add_service(KvServer::new(grpc.clone()));
    routes.add_service(LeaseServer::new(grpc.clone()));
    routes.add_service(watch_wire::WatchServer::new(grpc.clone()));
    routes.add_service(ClusterServer::new(grpc.clone()));
    routes.add_service(AuthServer::new(grpc.clone()));
    routes.add_service(health::service(&grpc));
    routes.add_service(MaintenanceServer::new(grpc));
    routes
        .routes()
        .into_axum_router()
        .layer(axum::middleware::from_fn(metrics::record))
}
