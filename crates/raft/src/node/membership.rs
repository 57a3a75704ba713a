//! Membership changes: validating a requested change against this node's view, proposing it,
//! applying committed changes (raft's configuration, the replicated member list, the
//! transport's peers), and listing members.
//!
//! Like etcd's strict reconfiguration check (on by default there), a change that would leave
//! fewer reachable voters than a quorum is refused up front: adding voters that nobody runs
//! (a phantom URL, a typo) would otherwise cost the fault tolerance and then the leader, for
//! good. "Reachable" is this node's view: itself, and the peers its transport holds an open
//! connection to.
//!
//! Only one change is in flight at a time (raft-rs would silently turn a second one into an
//! empty entry, so it is refused up front with the reason). Removing the leader first moves
//! leadership away: a leader that commits its own removal keeps leading a configuration it is
//! no longer part of.

use raft::eraftpb::{ConfChange, ConfChangeType, EntryType};
use raft::{StateRole, Storage as _};

use std::sync::Arc;

use super::{Io, Node, Pending};
use crate::error::Error;
use crate::handle::{Declined, MemberRefusal, Rejection, Reply};
use crate::peers::{canonical_peer_url, peer_addr, MAX_NODE_ID};
use crate::state_machine::StateMachine;

/// A learner within this many entries of the leader's commit index counts as caught up.
pub const LEARNER_CATCH_UP_SLACK: u64 = 100;

/// A membership change, as requested through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a node (a voter, or a non-voting learner) with its peer URL.
    Add { id: u64, url: String, learner: bool },
    /// Remove a node; it shuts itself down once it applies this.
    Remove { id: u64 },
    /// Make a caught-up learner a voter.
    Promote { id: u64 },
    /// Move a member to another peer URL (etcd's MemberUpdate). Its role stays; the member
    /// must then be restarted listening there.
    Update { id: u64, url: String },
}

/// One member as `GET /v1/members` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberInfo {
    pub id: u64,
    pub peer_url: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    pub is_leader: bool,
    /// Whether this node reaches it: itself, or a peer its transport holds a connection to.
    pub reachable: bool,
    /// The leader's view of how far this member's log matches (only on the leader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_index: Option<u64>,
}

/// Why a configuration would have no reachable quorum.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct QuorumShortfall {
    pub voters: usize,
    pub quorum: usize,
    pub reachable: usize,
    pub unreachable: Vec<u64>,
}

/// etcd's strict reconfiguration rule as a pure function: the voters of the configuration
/// after a change, of which `reachable` says which this node can reach, must include a
/// majority. A new voter that is not running yet counts as unreachable, so a cluster with one
/// member down cannot add another voter until that member is back (etcd's
/// `isReadyToAddVotingMember` / `isReadyToRemoveVotingMember`).
pub(super) fn reachable_quorum(
    voters_after: &[u64],
    reachable: impl Fn(u64) -> bool,
) -> std::result::Result<(), QuorumShortfall> {
    let quorum = voters_after.len() / 2 + 1;
    let unreachable: Vec<u64> = voters_after
        .iter()
        .copied()
        .filter(|&v| !reachable(v))
        .collect();
    let count = voters_after.len() - unreachable.len();
    if count >= quorum {
        return Ok(());
    }
    Err(QuorumShortfall {
        voters: voters_after.len(),
        quorum,
        reachable: count,
        unreachable,
    })
}

/// The change that adds `id` at `url` as a voter or a learner (for a member already there in
/// that role, the move of it to `url`).
fn adding(id: u64, url: &str, learner: bool) -> ConfChange {
    let mut cc = ConfChange::default();
    cc.set_change_type(if learner {
        ConfChangeType::AddLearnerNode
    } else {
        ConfChangeType::AddNode
    });
    cc.node_id = id;
    cc.context = url.as_bytes().to_vec().into();
    cc
}

impl<S: StateMachine, I: Io> Node<S, I> {
    /// Applies a committed membership change. A change raft refuses is refused identically on
    /// every node, so it is reported, not fatal.
    pub(super) fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<(), Declined> {
        let cs = self.raw.apply_conf_change(cc).map_err(|e| {
            Declined::Rejected(Rejection::Conflict(format!(
                "membership change refused: {e}"
            )))
        })?;
        let id = cc.node_id;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let url = (!cc.context.is_empty())
                    .then(|| String::from_utf8_lossy(&cc.context).into_owned());
                if self.sm.removed().contains(&id) {
                    // Added back, normally with an empty data dir: trust the data-dir identity
                    // it presents next (see `storage::identity`).
                    self.io.forget_identity(id);
                }
                self.sm.add_member(id, url);
                if id == self.cfg.id {
                    // Added back after an earlier removal (replayed from an older snapshot).
                    self.removed_at = None;
                }
            }
            ConfChangeType::RemoveNode => {
                self.sm.remove_member(id);
                if id == self.cfg.id {
                    tracing::info!(
                        "this node's removal is applied; stopping unless it is added back"
                    );
                    self.removed_at = Some(self.ticks);
                }
            }
        }
        tracing::info!(
            change = ?cc.get_change_type(),
            node = id,
            voters = ?cs.voters,
            learners = ?cs.learners,
            "membership changed"
        );
        // raft-rs keeps a leader that applied its own removal leading, then panics counting
        // its own progress toward a commit (`Raft::maybe_commit` unwraps it) at the next
        // append answer. A follower removed while its removal was uncommitted can get there:
        // it wins an election with the entry in its log, then commits it. A configuration
        // this node is not a voter of is not its to lead: it steps down, and the voters
        // elect a leader among themselves.
        if self.raw.raft.state == StateRole::Leader && !cs.voters.contains(&self.cfg.id) {
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
            tracing::warn!(term, "this leader is no longer a voter; stepping down");
        }
        self.raw.mut_store().set_conf_state(cs.clone());
        self.conf_state = cs;
        self.sync_peers();
        Ok(())
    }

    /// Points the transport at the replicated member list (the flags' list until this node
    /// has one: a `--join` node before its first snapshot).
    pub(super) fn sync_peers(&mut self) {
        if self.sm.members().is_empty() {
            return;
        }
        let peers = self
            .sm
            .members()
            .iter()
            .filter(|(&id, _)| id != self.cfg.id)
            .filter_map(|(&id, url)| match peer_addr(url) {
                Ok(addr) => Some((id, addr)),
                Err(e) => {
                    tracing::warn!(node = id, url, error = %e, "member has an unusable peer URL");
                    None
                }
            })
            .collect();
        let removed = self.sm.removed().iter().copied().collect();
        self.io.set_peers(peers, removed);
    }

    /// Validates a change against this node's view and proposes it.
    pub(super) fn change_members(&mut self, change: MemberChange, reply: Reply<()>) {
        let cc = match self.check_change(&change) {
            Ok(cc) => cc,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        // Keep proposals in arrival order.
        self.flush_proposals();
        let seq = self.next_seq;
        self.next_seq += 1;
        let ctx = self.proposal_context(seq).to_vec();
        match self.raw.propose_conf_change(ctx, cc) {
            Ok(()) => {
                self.proposals.insert(seq, Pending::Membership(reply));
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(Declined::NoLeader));
            }
            Err(e) => {
                let _ = reply.send(Err(Declined::Internal(Arc::new(Error::Raft(e)))));
            }
        }
    }

    pub(super) fn check_change(&mut self, change: &MemberChange) -> Result<ConfChange, Declined> {
        let leader = self.raw.raft.leader_id;
        if leader == raft::INVALID_ID {
            return Err(Declined::NoLeader);
        }
        // A leader elected in this term turns a membership change into an empty entry — the
        // request would never be answered — until it has applied the entries of earlier
        // terms. Once this node has applied an entry of the current term, so has the leader: it
        // applies an entry in the same step in which it first tells followers it is committed,
        // before it looks at any new input. Refused as retryable: the handle tries again.
        let raft = &self.raw.raft;
        if raft.raft_log.term(self.applied).ok() != Some(raft.term) {
            return Err(Declined::LeaderSettling);
        }
        if let Some(index) = self.pending_conf_change() {
            return Err(Declined::Rejected(Rejection::Conflict(format!(
                "another membership change (log index {index}) is not applied yet; retry once it is"
            ))));
        }
        match change {
            MemberChange::Add { id, url, learner } => self.check_add(*id, url, *learner),
            MemberChange::Remove { id } => self.check_remove(*id, leader),
            MemberChange::Promote { id } => self.check_promote(*id, leader),
            MemberChange::Update { id, url } => self.check_update(*id, url),
        }
    }

    fn is_member(&self, id: u64) -> bool {
        self.conf_state.voters.contains(&id) || self.conf_state.learners.contains(&id)
    }

    /// Adding `id` at `url`, as a voter or a learner.
    fn check_add(&mut self, id: u64, url: &String, learner: bool) -> Result<ConfChange, Declined> {
        let voters = &self.conf_state.voters;
        if id == 0 {
            return Err(Declined::Rejected(Rejection::Invalid(
                "node id 0 is not valid".into(),
            )));
        }
        if id > MAX_NODE_ID {
            return Err(Declined::Rejected(Rejection::Invalid(format!(
                "node id {id} is above {MAX_NODE_ID}: no node could be started with it"
            ))));
        }
        self.check_peer_url(url)?;
        if self.is_member(id) {
            return Err(Declined::Rejected(Rejection::Member(
                MemberRefusal::IdTaken,
                format!("node {id} is already a member"),
            )));
        }
        if !learner {
            let after: Vec<u64> = voters.iter().copied().chain([id]).collect();
            self.check_reachable_quorum(&after, &format!("adding voter {id}"))?;
        }
        self.check_url_free(id, url)?;
        Ok(adding(id, url, learner))
    }

    /// A peer URL in canonical form, in this cluster's scheme.
    fn check_peer_url(&self, url: &String) -> Result<(), Declined> {
        let scheme = self.io.scheme();
        if canonical_peer_url(url).as_ref() == Ok(url) && url.starts_with(&format!("{scheme}://")) {
            return Ok(());
        }
        Err(Declined::Rejected(Rejection::Invalid(format!(
            "invalid peer URL {url:?}: expected {scheme}://host:port (this cluster's peers \
             speak {})",
            if scheme == "https" {
                "TLS"
            } else {
                "plain TCP"
            }
        ))))
    }

    /// Refuses `url` if a member other than `id` has it.
    fn check_url_free(&self, id: u64, url: &String) -> Result<(), Declined> {
        match self
            .sm
            .members()
            .iter()
            .find(|(&m, u)| m != id && *u == url)
        {
            Some((other, _)) => Err(Declined::Rejected(Rejection::Member(
                MemberRefusal::PeerUrlTaken,
                format!("peer URL {url} is already used by node {other}"),
            ))),
            None => Ok(()),
        }
    }

    /// Moving member `id` to `url`: the change that adds it, in its current role, with the new
    /// URL. raft leaves the configuration as it is (the member is already there in that
    /// role); applying it records the URL and points the transport there. An older build
    /// applies such an entry the same way.
    fn check_update(&mut self, id: u64, url: &String) -> Result<ConfChange, Declined> {
        if !self.is_member(id) {
            return Err(Declined::Rejected(Rejection::Member(
                MemberRefusal::NotMember,
                format!("node {id} is not a member"),
            )));
        }
        self.check_peer_url(url)?;
        self.check_url_free(id, url)?;
        Ok(adding(id, url, self.conf_state.learners.contains(&id)))
    }

    /// Removing `id`; the leader's removal first moves leadership away.
    fn check_remove(&mut self, id: u64, leader: u64) -> Result<ConfChange, Declined> {
        let voters = &self.conf_state.voters;
        let mut cc = ConfChange::default();
        if !self.is_member(id) {
            return Err(Declined::Rejected(Rejection::Member(
                MemberRefusal::NotMember,
                format!("node {id} is not a member"),
            )));
        }
        if voters.len() == 1 && voters[0] == id {
            return Err(Declined::Rejected(Rejection::Conflict(format!(
                "node {id} is the last voter; removing it would leave no cluster"
            ))));
        }
        if id == leader {
            // Move leadership first: a leader that commits its own removal keeps
            // leading a configuration it is not part of.
            let transferee = if id != self.cfg.id && voters.contains(&self.cfg.id) {
                Some(self.cfg.id)
            } else if id == self.cfg.id {
                self.best_transferee(id)
            } else {
                // A follower can ask for leadership only for itself: raft-rs names the
                // transferee as the request's sender, and peers accept it only from
                // that node (see `guard`). A learner cannot take it.
                return Err(Declined::Rejected(Rejection::Misdirected(format!(
                    "node {id} leads: removing it needs leadership moved first, which only the leader or a voter can start; send this to the leader (node {id}) or a voter"
                ))));
            };
            if let Some(t) = transferee {
                tracing::info!(
                    from = id,
                    to = t,
                    "moving leadership before removing the leader"
                );
                self.raw.transfer_leader(t);
            }
            return Err(Declined::LeaderMoving);
        }
        let after: Vec<u64> = voters.iter().copied().filter(|&v| v != id).collect();
        self.check_reachable_quorum(&after, &format!("removing node {id}"))?;
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = id;
        Ok(cc)
    }

    /// Promoting learner `id`, once the leader sees it caught up.
    fn check_promote(&mut self, id: u64, leader: u64) -> Result<ConfChange, Declined> {
        let voters = &self.conf_state.voters;
        let learners = &self.conf_state.learners;
        let mut cc = ConfChange::default();
        if voters.contains(&id) {
            return Err(Declined::Rejected(Rejection::Member(
                MemberRefusal::NotLearner,
                format!("node {id} is already a voter"),
            )));
        }
        if !learners.contains(&id) {
            return Err(Declined::Rejected(Rejection::Member(
                MemberRefusal::NotMember,
                format!("node {id} is not a learner"),
            )));
        }
        if self.raw.raft.state != StateRole::Leader {
            return Err(Declined::Rejected(Rejection::Misdirected(format!(
                "only the leader can tell whether learner {id} has caught up; send this to the leader (node {leader})"
            ))));
        }
        let matched = self.raw.raft.prs().get(id).map_or(0, |p| p.matched);
        let commit = self.raw.raft.raft_log.committed;
        // A learner that never replicated anything is not caught up, however young
        // the log is: promoting it could cost the quorum.
        if matched == 0 || matched + LEARNER_CATCH_UP_SLACK < commit {
            return Err(Declined::Rejected(Rejection::Member(
                MemberRefusal::LearnerBehind,
                format!(
                    "learner {id} has not caught up yet (match index {matched}, commit index \
                     {commit}); retry later"
                ),
            )));
        }
        let after: Vec<u64> = voters.iter().copied().chain([id]).collect();
        self.check_reachable_quorum(&after, &format!("promoting learner {id}"))?;
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = id;
        Ok(cc)
    }

    /// Refuses a change after which the voters this node reaches would not be a quorum.
    fn check_reachable_quorum(&self, voters_after: &[u64], what: &str) -> Result<(), Declined> {
        let me = self.cfg.id;
        reachable_quorum(voters_after, |v| v == me || self.io.is_connected(v)).map_err(|short| {
            Declined::Rejected(Rejection::Member(
                MemberRefusal::QuorumAtRisk,
                format!(
                    "{what} would leave {} of {} voters reachable from node {me}, and a quorum \
                     needs {}; unreachable: {:?} (start them, or remove them first)",
                    short.reachable, short.voters, short.quorum, short.unreachable
                ),
            ))
        })
    }

    /// Checks a membership change that a follower forwarded to this leader as it would check
    /// the request that produced it, made here: the follower checked it against its own view,
    /// which may be stale, and the peer port is not authenticated. A removal of this leader is
    /// refused outright: a follower moves leadership first and never forwards one, and checking
    /// it here would start a leadership transfer.
    pub(super) fn check_forwarded_conf_change(&mut self, cc: &ConfChange) -> Result<(), Declined> {
        let id = cc.node_id;
        let change = match cc.get_change_type() {
            ConfChangeType::AddNode if cc.context.is_empty() => MemberChange::Promote { id },
            kind @ (ConfChangeType::AddNode | ConfChangeType::AddLearnerNode) => {
                // `check_change` refuses a URL not in its canonical `http://host:port` form.
                let url = std::str::from_utf8(&cc.context).map_err(|_| {
                    Declined::Rejected(Rejection::Invalid(format!(
                        "node {id}'s peer URL is not UTF-8"
                    )))
                })?;
                // An addition of a member is a move to another URL (`check_update`). A
                // follower forwards an addition only of an id it does not know; if this
                // leader knows it, the two raced, and the later one moves it.
                match self.is_member(id) {
                    true => MemberChange::Update {
                        id,
                        url: url.to_string(),
                    },
                    false => MemberChange::Add {
                        id,
                        url: url.to_string(),
                        learner: kind == ConfChangeType::AddLearnerNode,
                    },
                }
            }
            ConfChangeType::RemoveNode => {
                if id == self.cfg.id || id == self.raw.raft.leader_id {
                    return Err(Declined::Rejected(Rejection::Conflict(format!(
                        "a forwarded removal of the leader (node {id})"
                    ))));
                }
                MemberChange::Remove { id }
            }
        };
        let expected = self.check_change(&change)?;
        if expected.get_change_type() != cc.get_change_type()
            || expected.node_id != id
            || expected.context != cc.context
        {
            return Err(Declined::Rejected(Rejection::Invalid(format!(
                "membership change for node {id} does not match the request it stands for"
            ))));
        }
        Ok(())
    }

    /// The voter other than `except` whose log matches the leader's furthest.
    pub(super) fn best_transferee(&self, except: u64) -> Option<u64> {
        let prs = self.raw.raft.prs();
        self.conf_state
            .voters
            .iter()
            .filter(|&&v| v != except)
            .max_by_key(|&&v| prs.get(v).map_or(0, |p| p.matched))
            .copied()
    }

    /// The index of a membership change proposed or in the log but not applied yet.
    pub(super) fn pending_conf_change(&self) -> Option<u64> {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader && raft.pending_conf_index > self.applied {
            return Some(raft.pending_conf_index);
        }
        let store = self.raw.store();
        let last = store.last_index();
        if last <= self.applied {
            return None;
        }
        let from = (self.applied + 1).max(store.first_index());
        let entries = store
            .entries(from, last + 1, None, raft::GetEntriesContext::empty(false))
            .ok()?;
        entries
            .iter()
            .find(|e| e.get_entry_type() != EntryType::EntryNormal)
            .map(|e| e.index)
    }

    pub(super) fn members(&self) -> Vec<MemberInfo> {
        let raft = &self.raw.raft;
        let is_leader = raft.state == StateRole::Leader;
        let mut out = Vec::new();
        for (list, role) in [
            (&self.conf_state.voters, "voter"),
            (&self.conf_state.learners, "learner"),
        ] {
            for &id in list {
                out.push(MemberInfo {
                    id,
                    peer_url: self.sm.members().get(&id).cloned().unwrap_or_default(),
                    role,
                    is_leader: id == raft.leader_id,
                    reachable: id == self.cfg.id || self.io.is_connected(id),
                    match_index: if is_leader {
                        raft.prs().get(id).map(|p| p.matched)
                    } else {
                        None
                    },
                });
            }
        }
        out.sort_by_key(|m| m.id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_needs_a_reachable_quorum_afterwards() {
        let up = |v: u64| v <= 3;
        // Three up: a fourth and a fifth voter may be added (3 of 5 is a quorum)...
        assert_eq!(reachable_quorum(&[1, 2, 3, 4], up), Ok(()));
        assert_eq!(reachable_quorum(&[1, 2, 3, 4, 5], up), Ok(()));
        // ...a sixth that nobody runs would leave 3 of 6: no quorum.
        let short = reachable_quorum(&[1, 2, 3, 4, 5, 6], up).unwrap_err();
        assert_eq!(
            short,
            QuorumShortfall {
                voters: 6,
                quorum: 4,
                reachable: 3,
                unreachable: vec![4, 5, 6],
            }
        );
        // With node 3 down, adding a voter to a three-node cluster is refused; removing the
        // dead one is fine, removing a live one is not.
        let two_up = |v: u64| v <= 2;
        assert!(reachable_quorum(&[1, 2, 3, 4], two_up).is_err());
        assert_eq!(reachable_quorum(&[1, 2], two_up), Ok(()));
        assert!(reachable_quorum(&[1, 3], two_up).is_err());
        // A lone voter always reaches itself.
        assert_eq!(reachable_quorum(&[1], |v| v == 1), Ok(()));
    }
}
