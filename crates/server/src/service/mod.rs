//! The typed service layer between the front-ends and the raft node.
//!
//! Every client command is a method taking one request type and returning one response type
//! or a [`ServiceError`]: [`KvService`] (put, get, range, delete, delete-range, txn, compact; a put or
//! delete with a [`crate::kv::Precondition`] is the compare-and-swap), [`MembersService`]
//! (list, add, remove, promote, update, publish), [`StatusService`] (status, health) and [`WatchService`]
//! (a stream of changes). Log commands are encoded here, what applying one did is decoded
//! here, once per command, and the node's errors are sorted into kinds here, once, in
//! `node.rs` — the only file that calls the raft node.
//!
//! A front-end is a thin translator: parse its wire format into a request, call a service,
//! render the response, and map [`ServiceError`] to its own status codes in one place. The
//! REST API (`crate::api`) is the first; etcd's v3 gRPC API will be a second translator over
//! the same services and nothing more. Syntax and wire limits (body sizes, percent-decoding,
//! the texts that name a URL) belong to each front-end; what a command means, and how it
//! fails, belongs here.
//!
//! ```text
//! api (REST) ─┐                    ┌─ node.rs ──▶ raft::NodeHandle (propose/read/members/status)
//!             ├─▶ Services ─ kv ───┤
//! grpc (later)┘    members, status └─ watch ───▶ watch::WatchHub (the change history)
//! ```

mod error;
mod kv;
mod lease;
mod members;
mod node;
mod status;
mod watch;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use error::{Internal, MemberRefusal, Rejection, ServiceError, Unavailable};
pub use kv::{
    DeleteRangeResponse, DeleteResponse, GetRequest, GetResponse, KvService, PutResponse,
    RangeRequest, MAX_PAGE_BYTES,
};
pub use lease::{GrantResponse, LeaseService, RevokeResponse, TimeToLive};
pub use members::{
    AddMemberRequest, AddMemberResponse, ListMembersResponse, MembersService, PromoteMemberRequest,
    PromoteMemberResponse, RemoveMemberRequest, RemoveMemberResponse, UpdateMemberRequest,
};
pub use node::{Consistency, MemberInfo, NodeStatus};
pub use status::{Health, StatusResponse, StatusService};
pub use watch::{Position, WatchItem, WatchRequest, WatchService, Watcher, WATCH_YIELD_BYTES};

use coordinate_raft::NodeHandle;

use crate::lessor::Lessor;
use crate::quota::Quota;
use crate::state::Store;
use crate::watch::WatchHub;

/// Every service, over one node and its watch history. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub kv: KvService,
    pub lease: LeaseService,
    pub members: MembersService,
    pub status: StatusService,
    pub watch: WatchService,
}

/// What the services share with the state machine: the lessor's deadlines and the quota.
#[derive(Clone)]
pub struct Shared {
    /// This node's member id.
    pub member: u64,
    pub lessor: Arc<Lessor>,
    pub quota: Arc<Quota>,
    pub hub: Arc<WatchHub>,
    /// The cluster's id, as response headers carry it (the state machine keeps it current).
    pub cluster: Arc<AtomicU64>,
}

impl Services {
    pub fn new(node: NodeHandle<Store>, shared: Shared) -> Services {
        let raft = node::Raft::new(node);
        Services {
            kv: KvService::new(raft.clone(), shared.quota.clone(), shared.member),
            lease: LeaseService::new(raft.clone(), shared.lessor.clone(), shared.member),
            members: MembersService::new(raft.clone(), shared.member, shared.cluster.clone()),
            status: StatusService::new(raft.clone()),
            watch: WatchService::new(shared.hub, raft),
        }
    }
}
