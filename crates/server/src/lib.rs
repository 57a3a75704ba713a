//! # coordinate
//!
//! A small, strongly consistent key-value store. Every node runs one Raft instance (raft-rs)
//! and an in-memory multi-version store (every revision kept until compacted, leases,
//! alarms) as its state machine, and serves an HTTP API.
//!
//! ## A PUT, end to end
//! 1. [`api`] decodes the key and value into a [`kv::Put`];
//!    [`service::KvService::put`] encodes the log command and calls
//!    [`coordinate_raft::NodeHandle::propose`].
//! 2. The handle queues an `Input::Propose` for the raft loop (`coordinate_raft::node`) and
//!    awaits a
//!    oneshot reply.
//! 3. The raft loop batches every queued proposal into one raft append. On the leader the
//!    entries go to followers (`coordinate_raft::transport`) while the log writer thread
//!    (`coordinate_raft::persist`) writes them to the WAL (`coordinate_raft::storage::wal`) with one fsync for
//!    everything queued; a follower forwards proposals to the leader through raft itself.
//! 4. Once a quorum has the entries durably, they are committed; every node applies them to
//!    [`kv`] in log order. The node that proposed an entry recognises it by the context it
//!    attached and answers the waiting request: 204.
//!
//! ## A GET
//! Reads queued together share one ReadIndex round: the leader confirms with a quorum
//! (heartbeat) that it is still leader and returns its commit index; the read waits until this
//! node has applied that index, then reads the store (at the current revision, or a past one
//! still held). Followers do the same through the leader,
//! so a GET on any node sees every write acknowledged before it started.
//!
//! ## Durability
//! Entries and hard state reach the WAL and are fsynced before this node acknowledges,
//! votes or counts itself in a quorum. Every `--snapshot-count` applied entries (or
//! `--snapshot-bytes` of log, so the log is bounded by size too) the store, history included,
//! is serialized, a slice per loop iteration, as of one applied index, written to a snapshot
//! file
//! (`coordinate_raft::storage::snapshot`) by a helper thread, and the log before it compacted.
//!
//! ## Hostile input
//! Every input is bounded and checked before it can do harm: peer connections identify
//! themselves once (`coordinate_raft::transport`), raft messages no honest peer can send are refused
//! before raft-rs sees them (`coordinate_raft::node::guard`), received snapshots are verified before they
//! are durable, and a data dir whose durable state went backwards refuses to start
//! (`coordinate_raft::storage::datadir`). docs/SECURITY.md says what still gets through.
//!
//! ## Time
//! The state machine reads no clock. Leases expire by the leader's clock ([`lessor`],
//! [`maintenance`]), through Raft, as a command conditional on the last renewal the leader
//! saw; compaction is a command the leader proposes by policy.
//!
//! ## Deliberately missing
//! No TLS or authentication on either port yet; reads always go through ReadIndex (no
//! leader leases for reads); the state machine lives in memory (bounded by RAM and by
//! `--quota-backend-bytes`, like etcd's working set).

pub mod api;
pub mod backup;
pub mod config;
pub mod error;
pub mod kv;
pub mod lessor;
pub mod maintenance;
pub mod metrics;
pub mod quota;
pub mod server;
pub mod service;
pub mod state;
pub mod watch;
