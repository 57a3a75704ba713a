//! # coordinate-raft
//!
//! The replication layer: one raft-rs `RawNode` driven by one task ([`node`]), the log writer
//! thread that makes entries durable with one fsync per batch ([`persist`]), the peer transport
//! ([`transport`]), and the durable raft state: WAL, snapshot files and the data dir
//! ([`storage`]). Front-ends reach it through the cloneable [`NodeHandle`].
//!
//! It knows nothing about keys, HTTP or the command line. What is replicated is opaque bytes,
//! applied to a [`StateMachine`] the embedding server supplies: the node hands it committed
//! commands in log order, asks it to answer reads once they are linearizable, to serialize
//! itself (a slice at a time) for snapshots and to restore from a leader's snapshot; the
//! state machine also keeps the member list (id → peer URL), because that list must be in
//! every snapshot.
//!
//! ## Arrows
//! `handle` → `node` → {`persist`, `transport`, `storage`}. The leaves never name the node's
//! input type: the transport reports [`transport::TransportEvent`]s and the log writer
//! [`persist::LogEvent`], and the node converts them into its own inputs.
//!
//! ## Errors
//! [`Error`] is what stops a node (disk, corruption, a removed member starting again);
//! [`RequestError`] is what a request gets back (not applied, outcome unknown, or rejected for
//! a reason of its own, [`Rejection`]). The two never mix: a failing disk is never reported to
//! a client as a bad request.

pub mod error;
pub mod handle;
pub mod logger;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod persist;
pub mod state_machine;
pub mod storage;
pub mod transport;

pub use error::{Error, Result};
pub use handle::{MemberRefusal, NodeHandle, Published, Rejection, RequestError};
pub use state_machine::StateMachine;
