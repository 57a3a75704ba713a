//! Messages from peers: each goes through the [`guard`](super::guard) before raft-rs sees it,
//! then through the checks that need this node's state:
//!
//! * a **snapshot** is parsed into a state machine (and its member list compared with its
//!   membership) before it is stepped, so nothing of a malformed or inconsistent snapshot is
//!   ever made durable or replaces anything; the parsed state is kept for `handle_ready`, which
//!   installs it without parsing twice;
//! * a **proposal** forwarded to this leader must hold only commands the HTTP API would have
//!   accepted, proposed by the sender itself, and membership changes that pass the same checks
//!   as one requested here; and it must be newer than the last one taken from the sender
//!   (a copy would be applied twice: see [`ForwardedSeen`](super::guard::ForwardedSeen)).
//!
//! A refused message is dropped, counted (`coordinate_peer_messages_refused_total{reason}`) and
//! logged at most once per [`REFUSAL_LOG_INTERVAL`](super::guard::REFUSAL_LOG_INTERVAL).

use std::time::Instant;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, EntryType, Message, MessageType, Snapshot};
use raft::StateRole;

use super::guard::{check_peer_message, check_proposal_entry, proposal_origin, PeerView, Refusal};
use super::{Io, Node};
use crate::metrics::METRICS;
use crate::state_machine::StateMachine;

/// A received snapshot whose data parsed: what `handle_ready` installs if raft-rs takes it.
pub(super) struct VerifiedSnapshot<S: StateMachine> {
    pub(super) index: u64,
    pub(super) term: u64,
    /// The data it was parsed from (shared, not copied).
    pub(super) data: Bytes,
    pub(super) state: S::Snapshot,
}

impl<S: StateMachine> VerifiedSnapshot<S> {
    /// True if `snap` is the very snapshot this was parsed from (not merely one at the same
    /// index: a second message may carry other data under the same metadata).
    pub(super) fn is_of(&self, snap: &Snapshot) -> bool {
        let meta = snap.get_metadata();
        let same_buffer =
            self.data.as_ptr() == snap.data.as_ptr() && self.data.len() == snap.data.len();
        self.index == meta.index
            && self.term == meta.term
            && (same_buffer || self.data == snap.data)
    }
}

impl<S: StateMachine, I: Io> Node<S, I> {
    /// Checks a peer message and steps it, or drops it with a (rate-limited) log line.
    pub(super) fn on_peer_message(&mut self, m: Message) {
        let verdict = self.check_inbound(&m);
        if let Err(refusal) = verdict {
            self.refused(&m, &refusal);
            return;
        }
        if m.get_msg_type() == MessageType::MsgHeartbeatResponse {
            self.telemetry
                .heartbeat_answered(m.from, std::time::Instant::now());
        }
        let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "raft rejected a peer message");
        }
        if is_snapshot {
            // Keep the parsed state only for the snapshot raft-rs is about to install.
            let pending = self.raw.raft.raft_log.unstable_snapshot().as_ref();
            let keep = pending.is_some_and(|snap| {
                self.verified_snapshot
                    .as_ref()
                    .is_some_and(|v| v.is_of(snap))
            });
            if !keep {
                self.verified_snapshot = None;
            }
        }
    }

    fn check_inbound(&mut self, m: &Message) -> Result<(), Refusal> {
        {
            let raft = &self.raw.raft;
            let view = PeerView {
                id: self.cfg.id,
                term: raft.term,
                last_index: raft.raft_log.last_index(),
                committed: raft.raft_log.committed,
                leader: raft.leader_id,
                is_leader: raft.state == StateRole::Leader,
                voters: &self.conf_state.voters,
                learners: &self.conf_state.learners,
                initialized: !self.conf_state.voters.is_empty()
                    || !self.conf_state.learners.is_empty(),
                cluster_ids: &self.cfg.cluster_ids,
            };
            check_peer_message(&view, m)?;
        }
        match m.get_msg_type() {
            MessageType::MsgSnapshot => self.verify_snapshot(m),
            MessageType::MsgPropose => self.check_forwarded_proposal(m),
            _ => Ok(()),
        }
    }

    /// Parses a snapshot's data before raft-rs sees it: a snapshot that does not restore, or
    /// whose member list lacks a member of its membership, is refused. One raft-rs will ignore
    /// (older than the commit index) is not parsed.
    fn verify_snapshot(&mut self, m: &Message) -> Result<(), Refusal> {
        let snap = m.get_snapshot();
        let meta = snap.get_metadata();
        if meta.index < self.raw.raft.raft_log.committed {
            return Ok(());
        }
        let data = snap.data.clone();
        let state = tokio::task::block_in_place(|| self.sm.parse_snapshot(data))
            .map_err(|e| Refusal::Snapshot(e.to_string()))?;
        let members = S::snapshot_members(&state);
        let cs = meta.get_conf_state();
        if let Some(id) = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .find(|id| !members.contains_key(id))
        {
            return Err(Refusal::Snapshot(format!(
                "member {id} of its membership is missing from its member list"
            )));
        }
        self.verified_snapshot = Some(VerifiedSnapshot {
            index: meta.index,
            term: meta.term,
            data: snap.data.clone(),
            state,
        });
        Ok(())
    }

    /// A proposal a follower forwarded to this leader: every entry must be proposed by the
    /// sender and be what this node's own API would accept. Any bad entry refuses the whole
    /// message (a follower forwards a membership change in a message of its own).
    fn check_forwarded_proposal(&mut self, m: &Message) -> Result<(), Refusal> {
        let mut conf_changes = 0;
        for e in m.entries.iter() {
            check_proposal_entry(e, m.from, |command| self.sm.check_proposal(command))?;
            if e.get_entry_type() != EntryType::EntryConfChange {
                continue;
            }
            conf_changes += 1;
            if conf_changes > 1 {
                return Err(Refusal::Proposal("more than one membership change".into()));
            }
            let cc = ConfChange::parse_from_bytes(&e.data)
                .map_err(|err| Refusal::Proposal(format!("membership change: {err}")))?;
            self.check_forwarded_conf_change(&cc)
                .map_err(|err| Refusal::Proposal(format!("membership change: {err}")))?;
        }
        // Every entry names its origin: `check_proposal_entry` checked the context.
        let origins: Vec<_> = m
            .entries
            .iter()
            .filter_map(|e| proposal_origin(&e.context))
            .collect();
        self.forwarded_seen.take(&origins)
    }

    fn refused(&mut self, m: &Message, refusal: &Refusal) {
        METRICS
            .peer_refused
            .with_label_values(&[refusal.label()])
            .inc();
        if let Some(suppressed) = self.refusals.note(Instant::now()) {
            tracing::warn!(
                from = m.from,
                kind = ?m.get_msg_type(),
                term = m.term,
                reason = %refusal,
                suppressed,
                "refused a peer message"
            );
        }
    }
}
