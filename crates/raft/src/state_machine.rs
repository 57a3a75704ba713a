//! The contract between the raft loop and the replicated state machine it drives.
//!
//! The node owns one value implementing [`StateMachine`] and is its only caller, on the raft
//! loop's task. What it promises the state machine:
//! * [`apply`](StateMachine::apply) sees every committed normal entry exactly once, in log
//!   order, with its index; an index is never applied twice, also not across a restart
//!   (recovery restores the newest snapshot, then replays only what follows it);
//! * [`query`](StateMachine::query) for a linearizable read runs only once everything
//!   committed before the read started has been applied;
//! * a snapshot is taken as of one applied index: after
//!   [`begin_snapshot`](StateMachine::begin_snapshot) the node calls
//!   [`snapshot_step`](StateMachine::snapshot_step) between other work until it returns the
//!   data, while it may go on applying (what is captured must not change meanwhile);
//! * a snapshot from the leader is parsed ([`parse_snapshot`](StateMachine::parse_snapshot))
//!   before anything of it is durable, and installed only if raft-rs takes it.
//!
//! What the state machine promises the node: `apply` is deterministic — the same entries give
//! the same state and the same outputs on every replica, and a command it cannot apply fails
//! identically everywhere (in its `Output`, never by panicking). The member list it keeps is
//! changed only by the node, through the membership calls, when it applies a configuration
//! change.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

/// A replicated state machine the raft loop applies committed commands to.
pub trait StateMachine: Send + 'static {
    /// What applying one command returns to the request that proposed it.
    type Output: Send + 'static;
    /// A read.
    type Query: Send + 'static;
    /// The answer to a read.
    type Read: Send + 'static;
    /// What the state machine reports in the node's status.
    type Status: Send + 'static;
    /// A leader's snapshot, parsed and checked, not yet installed.
    type Snapshot: Send + 'static;
    /// Why a snapshot or a forwarded command is malformed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies the committed command at log `index`, deterministically.
    fn apply(&mut self, index: u64, command: &Bytes) -> Self::Output;

    /// Called once after a batch of entries has been applied (e.g. to notify watchers).
    fn applied(&mut self, index: u64);

    /// Answers a read from the current state.
    fn query(&self, query: &Self::Query) -> Self::Read;

    /// Whether a command a follower forwarded to this leader is one this node's own front-end
    /// would have proposed (it decodes and is within every size limit); the reason if not.
    fn check_proposal(&self, command: &Bytes) -> Result<(), Self::Error>;

    /// The members' peer URLs, by id.
    fn members(&self) -> &BTreeMap<u64, String>;

    /// Records member `id`, with its peer URL if the change carried one.
    fn add_member(&mut self, id: u64, url: Option<String>);

    /// Removes member `id` and remembers that it was removed.
    fn remove_member(&mut self, id: u64);

    /// The ids removed from the cluster and not added back (a removed id is never added back
    /// silently, and its hellos are answered so it learns it was removed).
    fn removed(&self) -> &BTreeSet<u64>;

    /// Bytes of state a snapshot would write (the node snapshots less often as it grows).
    fn data_bytes(&self) -> u64;

    /// Starts capturing the state as of now for a snapshot.
    fn begin_snapshot(&mut self);

    /// Serializes up to `budget` more units of the snapshot begun last; returns the complete
    /// snapshot data once done.
    fn snapshot_step(&mut self, budget: usize) -> Option<Bytes>;

    /// Whether a snapshot is being serialized (the loop then does not sleep between steps).
    fn is_snapshotting(&self) -> bool;

    /// Parses a snapshot's data; the reason if it is malformed.
    fn parse_snapshot(&self, data: Bytes) -> Result<Self::Snapshot, Self::Error>;

    /// The member list a parsed snapshot carries.
    fn snapshot_members(snapshot: &Self::Snapshot) -> &BTreeMap<u64, String>;

    /// Replaces the whole state with a parsed snapshot.
    fn install(&mut self, snapshot: Self::Snapshot);

    /// What to report in the node's status.
    fn status(&self) -> Self::Status;
}

/// A minimal state machine for the crate's own tests: it counts applied commands and keeps
/// the member list, and its snapshot is the count.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Malformed(pub String);

    #[derive(Default)]
    pub struct Counter {
        pub applied: u64,
        pub members: BTreeMap<u64, String>,
        pub removed: BTreeSet<u64>,
        snapshot: Option<Bytes>,
    }

    impl StateMachine for Counter {
        type Output = u64;
        type Query = ();
        type Read = u64;
        type Status = u64;
        type Snapshot = u64;
        type Error = Malformed;

        fn apply(&mut self, _index: u64, _command: &Bytes) -> u64 {
            self.applied += 1;
            self.applied
        }
        fn applied(&mut self, _index: u64) {}
        fn query(&self, _query: &()) -> u64 {
            self.applied
        }
        fn check_proposal(&self, _command: &Bytes) -> Result<(), Malformed> {
            Ok(())
        }
        fn members(&self) -> &BTreeMap<u64, String> {
            &self.members
        }
        fn add_member(&mut self, id: u64, url: Option<String>) {
            self.members.insert(id, url.unwrap_or_default());
        }
        fn remove_member(&mut self, id: u64) {
            self.members.remove(&id);
            self.removed.insert(id);
        }
        fn removed(&self) -> &BTreeSet<u64> {
            &self.removed
        }
        fn data_bytes(&self) -> u64 {
            8
        }
        fn begin_snapshot(&mut self) {
            self.snapshot = Some(Bytes::copy_from_slice(&self.applied.to_le_bytes()));
        }
        fn snapshot_step(&mut self, _budget: usize) -> Option<Bytes> {
            self.snapshot.take()
        }
        fn is_snapshotting(&self) -> bool {
            self.snapshot.is_some()
        }
        fn parse_snapshot(&self, data: Bytes) -> Result<u64, Malformed> {
            let bytes: [u8; 8] = data[..]
                .try_into()
                .map_err(|_| Malformed(format!("{} bytes, not 8", data.len())))?;
            Ok(u64::from_le_bytes(bytes))
        }
        fn snapshot_members(_snapshot: &u64) -> &BTreeMap<u64, String> {
            static NONE: BTreeMap<u64, String> = BTreeMap::new();
            &NONE
        }
        fn install(&mut self, snapshot: u64) {
            self.applied = snapshot;
        }
        fn status(&self) -> u64 {
            self.applied
        }
    }
}
