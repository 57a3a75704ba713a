//! What the raft node accepts from the peer port, decided before raft-rs sees a message.
//!
//! raft-rs trusts its peers: a message it is stepped is assumed to come from a correct member
//! of the cluster, and several impossible values make it panic (`fatal!`) or corrupt its state
//! for good. The peer port has no authentication yet (TLS comes in its own issue), so anyone who
//! can reach it can hand-encode a message with any `from`, term and index. This module refuses,
//! with a reason, every message that **no honest peer can send**:
//!
//! * a kind a peer never sends (local-only kinds, a proposal to a follower, a leadership
//!   timeout from someone other than this node's leader, ...);
//! * a sender that is not a current member (or, on a `--join` node not yet initialized, not one
//!   of the `--cluster` ids), this node itself, or 0;
//! * a term that would wrap or that jumps further than elections ever move it, or a term of 0
//!   where raft-rs would then treat the message as local and skip every term check;
//! * a second leader in one term (Raft's election safety: one leader per term);
//! * indexes and commits past what this node holds, where raft-rs panics (`to_commit ... is out
//!   of range`, `entry ... conflict with committed entry`) or believes a follower holds entries
//!   this leader never had;
//! * snapshot metadata raft-rs would `fatal!` on (`unable to restore config`, `invalid
//!   restore`), or that does not name this node.
//!
//! What it cannot refuse: a well-formed, plausible message under a real member's id (a
//! heartbeat "from the leader" at the right term and index, a snapshot "from a new leader").
//! Telling those apart from the real thing needs authenticated peers, which is the TLS issue.
//! The checks that need the state machine — a received snapshot's data, and the commands of a
//! proposal forwarded to this leader — are made by the node (see `Node::on_peer_message`);
//! [`check_proposal_entry`] is the pure part of the latter.
//!
//! Every rule is a line in [`check_peer_message`] with its reason beside it; each has a unit
//! test below, and a property test feeds random hostile messages through the guard into a real
//! `RawNode` and asserts it never panics.

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType};

/// Largest term accepted from a peer. A node's term only grows by one per election round
/// (pre-vote keeps a partitioned node from raising it alone), and a round takes at least an
/// election timeout (one second here): a century of back-to-back elections stays below 2^32.
/// raft-rs computes `term + 1` (campaigning, stepping down), so a term near `u64::MAX` wraps to 0
/// and panics every node on every restart; 2^62 leaves room for any `term + MAX_TERM_JUMP`.
pub const MAX_TERM: u64 = 1 << 62;

/// Largest step above this node's own term accepted from a peer. A node that was down or cut
/// off misses at most one term per election round it did not see (about one per second at
/// worst, in a cluster that keeps losing its leader): 2^20 covers twelve days of continuous
/// elections, far more than any honest gap. It bounds how fast forged messages can push the
/// terms toward [`MAX_TERM`] (2^42 accepted forgeries). A node further behind than this
/// refuses its leader (logged with the reason) and must be re-added with an empty data dir.
/// Not applied on a `--join` node that has no state yet: its term is 0 and any cluster's is
/// higher.
pub const MAX_TERM_JUMP: u64 = 1 << 20;

/// Largest log index accepted from a peer: a million entries a second for 146,000 years. It
/// keeps every `index + n` raft-rs computes far from overflow.
pub const MAX_INDEX: u64 = 1 << 62;

/// Length of a proposal's context: proposer id, incarnation, sequence (see `Node`).
pub const PROPOSAL_CONTEXT_LEN: usize = 24;

/// What the node knows of itself when a peer message arrives.
#[derive(Clone, Debug)]
pub struct PeerView<'a> {
    /// This node's id.
    pub id: u64,
    /// This node's current term.
    pub term: u64,
    /// The last index of this node's log (stable or not).
    pub last_index: u64,
    /// This node's commit index.
    pub committed: u64,
    /// The leader this node follows in `term` (0: none known).
    pub leader: u64,
    /// This node leads `term`.
    pub is_leader: bool,
    /// Current voters and learners.
    pub voters: &'a [u64],
    pub learners: &'a [u64],
    /// This node has a membership (bootstrapped, or received its first snapshot). A `--join`
    /// node starts without one and hears only from the `--cluster` ids.
    pub initialized: bool,
    /// The `--cluster` ids (consulted only while not initialized).
    pub cluster_ids: &'a [u64],
}

impl PeerView<'_> {
    fn is_member(&self, id: u64) -> bool {
        if self.initialized {
            self.voters.contains(&id) || self.learners.contains(&id)
        } else {
            self.cluster_ids.contains(&id)
        }
    }
}

/// Why a peer message was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0:?} is never sent by a peer")]
    Kind(MessageType),
    #[error("addressed to node {0}, not this node")]
    WrongRecipient(u64),
    #[error("sender {0} is not a member")]
    NotMember(u64),
    #[error("term {term} is out of range (this node is at term {own})")]
    Term { term: u64, own: u64 },
    #[error("{0:?} must carry no term (raft-rs forwards it untermed)")]
    TermOnForward(MessageType),
    #[error("node {from} claims to lead term {term}, which node {leader} leads")]
    SecondLeader { from: u64, term: u64, leader: u64 },
    #[error("{what} {value} is past this node's log (last index {last})")]
    PastLog {
        what: &'static str,
        value: u64,
        last: u64,
    },
    #[error("{0} is out of range")]
    Range(&'static str),
    #[error("append entries are not contiguous from index {0} with terms in order")]
    Entries(u64),
    #[error("{0:?} is accepted only from this node's leader at its current term")]
    NotFromLeader(MessageType),
    #[error("{0:?} is accepted only by the leader")]
    NotLeader(MessageType),
    #[error("malformed snapshot: {0}")]
    Snapshot(String),
    #[error("malformed forwarded proposal: {0}")]
    Proposal(String),
    #[error("a forwarded proposal this node already received (or an older one of its sender)")]
    Duplicate,
}

impl Refusal {
    /// A short fixed label for the refusal metric (a bounded set).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Kind(_) => "kind",
            Refusal::WrongRecipient(_) => "recipient",
            Refusal::NotMember(_) => "not_member",
            Refusal::Term { .. } | Refusal::TermOnForward(_) => "term",
            Refusal::SecondLeader { .. } | Refusal::NotFromLeader(_) => "not_leader_sender",
            Refusal::NotLeader(_) => "not_leader",
            Refusal::PastLog { .. } | Refusal::Range(_) | Refusal::Entries(_) => "index",
            Refusal::Snapshot(_) => "snapshot",
            Refusal::Proposal(_) => "proposal",
            Refusal::Duplicate => "duplicate",
        }
    }
}

/// Decides whether a peer message may be stepped. Pure: the node fills `view`.
pub fn check_peer_message(view: &PeerView, m: &Message) -> Result<(), Refusal> {
    use MessageType::*;
    let kind = m.get_msg_type();
    // Local-only kinds are generated by raft-rs itself (ticks, transport reports); a peer
    // sending one could trigger elections or fake snapshot and reachability reports.
    if matches!(
        kind,
        MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum
    ) {
        return Err(Refusal::Kind(kind));
    }
    // The transport checks this too; a message for another node is never stepped here.
    if m.to != view.id {
        return Err(Refusal::WrongRecipient(m.to));
    }
    // Only current members take part; raft-rs adopts any sender of a heartbeat as its leader.
    // This node never sends to itself over the network, and 0 is raft-rs's "nobody".
    if m.from == 0 || m.from == view.id || !view.is_member(m.from) {
        return Err(Refusal::NotMember(m.from));
    }
    check_term(view, m)?;
    // This cluster never sets a priority or requests a snapshot (`request_snapshot`) — the
    // latter would make the leader ship snapshots on demand.
    if m.priority != 0 || m.deprecated_priority != 0 {
        return Err(Refusal::Range("priority"));
    }
    if m.request_snapshot != 0 {
        return Err(Refusal::Range("request_snapshot"));
    }
    // Ceilings, so raft-rs's index arithmetic never comes near overflow.
    for (what, v) in [
        ("index", m.index),
        ("commit", m.commit),
        ("reject_hint", m.reject_hint),
    ] {
        if v > MAX_INDEX {
            return Err(Refusal::Range(what));
        }
    }
    // A term recorded in a log never exceeds the term of the message that reports it.
    if m.log_term > m.term || m.commit_term > m.term {
        return Err(Refusal::Range("log_term"));
    }
    check_kind(view, m)
}

/// The rules of each kind of message.
fn check_kind(view: &PeerView, m: &Message) -> Result<(), Refusal> {
    use MessageType::*;
    let kind = m.get_msg_type();
    match kind {
        MsgAppend => {
            check_one_leader(view, m)?;
            check_append(m)
        }
        MsgHeartbeat => {
            check_one_leader(view, m)?;
            // A leader sends min(its commit, the follower's match): never past the follower's
            // log. raft-rs panics on anything beyond it.
            past_log("heartbeat commit", m.commit, view.last_index)
        }
        MsgSnapshot => {
            check_one_leader(view, m)?;
            check_snapshot_meta(view, m)
        }
        MsgAppendResponse => {
            // A follower acknowledges or rejects what this node sent it: never past its log.
            past_log("append response index", m.index, view.last_index)?;
            past_log("reject hint", m.reject_hint, view.last_index)
        }
        MsgHeartbeatResponse
        | MsgRequestVote
        | MsgRequestPreVote
        | MsgRequestVoteResponse
        | MsgRequestPreVoteResponse => Ok(()),
        MsgTransferLeader => {
            // raft-rs names the transferee in `from`; a follower forwards only its own request
            // (see `check_change`), to the leader, in the leader's term.
            if !view.is_leader {
                return Err(Refusal::NotLeader(kind));
            }
            if m.term != view.term || !view.voters.contains(&m.from) {
                return Err(Refusal::NotFromLeader(kind));
            }
            Ok(())
        }
        MsgTimeoutNow => {
            // Only the leader starts a transfer, and only to a follower of its own term: from
            // anyone else it would force elections at will.
            if view.is_leader || view.leader != m.from || m.term != view.term {
                return Err(Refusal::NotFromLeader(kind));
            }
            Ok(())
        }
        MsgReadIndexResp => {
            if view.is_leader || view.leader != m.from || m.term != view.term {
                return Err(Refusal::NotFromLeader(kind));
            }
            // raft-rs reads exactly one entry (the request context).
            if m.entries.len() != 1 {
                return Err(Refusal::Range("read index response entries"));
            }
            Ok(())
        }
        MsgReadIndex => {
            // Followers forward reads to the leader; raft-rs indexes `entries[0]` (panics on
            // none) and a follower would only forward it again.
            if !view.is_leader {
                return Err(Refusal::NotLeader(kind));
            }
            if m.entries.len() != 1 {
                return Err(Refusal::Range("read index entries"));
            }
            Ok(())
        }
        MsgPropose => {
            // A follower would forward it to the leader unchecked; the leader checks every
            // command (`check_proposal_entry`). raft-rs panics on an empty proposal.
            if !view.is_leader {
                return Err(Refusal::NotLeader(kind));
            }
            if m.entries.is_empty() {
                return Err(Refusal::Proposal("no entries".into()));
            }
            Ok(())
        }
        MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
            Err(Refusal::Kind(kind))
        }
    }
}

/// Terms: raft-rs sends proposals and read requests untermed (it forwards them), everything
/// else with the sender's term. A term of 0 on anything else makes raft-rs treat the message as
/// local and skip every term check; a term near `u64::MAX` wraps on the next `term + 1`.
fn check_term(view: &PeerView, m: &Message) -> Result<(), Refusal> {
    let kind = m.get_msg_type();
    if matches!(kind, MessageType::MsgPropose | MessageType::MsgReadIndex) {
        return match m.term {
            0 => Ok(()),
            _ => Err(Refusal::TermOnForward(kind)),
        };
    }
    let ceiling = if view.initialized {
        view.term.saturating_add(MAX_TERM_JUMP).min(MAX_TERM)
    } else {
        MAX_TERM
    };
    if m.term == 0 || m.term > ceiling {
        return Err(Refusal::Term {
            term: m.term,
            own: view.term,
        });
    }
    Ok(())
}

/// Election safety: at most one leader per term. A message only a leader sends, at this node's
/// term, from someone other than the leader it knows (or when it leads that term itself), is
/// forged; raft-rs would adopt the sender as its leader.
fn check_one_leader(view: &PeerView, m: &Message) -> Result<(), Refusal> {
    if m.term == view.term && view.leader != 0 && m.from != view.leader {
        return Err(Refusal::SecondLeader {
            from: m.from,
            term: m.term,
            leader: view.leader,
        });
    }
    Ok(())
}

fn past_log(what: &'static str, value: u64, last: u64) -> Result<(), Refusal> {
    if value > last {
        return Err(Refusal::PastLog { what, value, last });
    }
    Ok(())
}

/// An append's entries follow `index` one by one, with terms that never go down, that start at
/// or above the term at `index` and never exceed the leader's term. Every log in this cluster
/// starts with the bootstrap snapshot at index 1, term 1, so an honest append is anchored at
/// index ≥ 1 with a term ≥ 1; raft-rs would match an anchor of term 0 past its log and panic
/// committing past it, and non-contiguous entries make it find a "conflict" with a committed
/// entry and panic.
fn check_append(m: &Message) -> Result<(), Refusal> {
    if m.index == 0 || m.log_term == 0 || m.log_term > m.term {
        return Err(Refusal::Range("append anchor"));
    }
    let mut prev_term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        let want = m.index.checked_add(1 + i as u64);
        if want != Some(e.index) || e.index > MAX_INDEX || e.term < prev_term || e.term > m.term {
            return Err(Refusal::Entries(m.index));
        }
        prev_term = e.term;
    }
    Ok(())
}

/// Snapshot metadata raft-rs can restore without a `fatal!`, naming this node, no newer than
/// the message that carries it.
fn check_snapshot_meta(view: &PeerView, m: &Message) -> Result<(), Refusal> {
    let bad = |why: &str| Err(Refusal::Snapshot(why.to_string()));
    let Some(snap) = m.snapshot.as_ref() else {
        return bad("no snapshot");
    };
    let meta = snap.get_metadata();
    if meta.index == 0 || meta.index > MAX_INDEX {
        return bad("index out of range");
    }
    if meta.term == 0 || meta.term > m.term {
        return bad("term out of range");
    }
    check_conf_state(meta.get_conf_state(), view.id).map_err(Refusal::Snapshot)
}

/// A membership this cluster can be in: voters only and learners, no joint configuration
/// (never proposed here), no duplicates, no overlap, no id 0, and `me` among them. raft-rs
/// `fatal!`s restoring an inconsistent one, and ignores one without `me`.
pub fn check_conf_state(cs: &ConfState, me: u64) -> Result<(), String> {
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return Err("joint configuration".into());
    }
    if cs.voters.is_empty() {
        return Err("no voters".into());
    }
    let mut ids: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
    ids.sort_unstable();
    if ids.first() == Some(&0) {
        return Err("node id 0".into());
    }
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err("a node listed twice".into());
    }
    if !ids.contains(&me) {
        return Err(format!("node {me} is not a member"));
    }
    Ok(())
}

/// The proposer a proposal's context names (its first word), if it has the right length.
pub fn proposer(context: &[u8]) -> Option<u64> {
    proposal_origin(context).map(|o| o.node)
}

/// Who proposed an entry: the node, its run (incarnation), and the proposal's sequence number
/// in that run (increasing in the order the node hands proposals to raft).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub node: u64,
    pub incarnation: u64,
    pub seq: u64,
}

/// The origin an entry's context names, if it is a proposal context.
pub fn proposal_origin(context: &[u8]) -> Option<Origin> {
    if context.len() != PROPOSAL_CONTEXT_LEN {
        return None;
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&context[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    Some(Origin {
        node: word(0),
        incarnation: word(1),
        seq: word(2),
    })
}

/// The newest forwarded proposal taken from each peer's recent runs: a forwarded proposal is
/// stepped at most once. Raft-rs appends every `MsgPropose` it steps, so a copy of one (a
/// network that duplicates, a sender that resends) would be applied twice — a write
/// acknowledged as done once, then done again after later writes, or a compare-and-set
/// answered "failed" and then applied. A node hands raft its proposals in sequence order and
/// the transport keeps a link's messages in order, so a proposal of a run not newer than the
/// last one taken from that run is a copy: refused, like a lost message. Runs are told apart
/// by incarnation only, never ordered by it (it is a clock reading, which may step back
/// between runs); the last [`RUNS_KEPT`] runs of each peer are remembered.
#[derive(Debug, Default)]
pub struct ForwardedSeen {
    runs: std::collections::BTreeMap<u64, std::collections::VecDeque<(u64, u64)>>,
}

/// Runs of one peer whose newest forwarded proposal is remembered.
pub const RUNS_KEPT: usize = 4;

impl ForwardedSeen {
    /// Takes a forwarded message's entries (their origins, in order) if each is newer than
    /// what was taken from its run before; refuses the whole message otherwise.
    pub fn take(&mut self, origins: &[Origin]) -> Result<(), Refusal> {
        let newest = |seen: &Self, o: &Origin| {
            seen.runs.get(&o.node).and_then(|runs| {
                runs.iter()
                    .find(|(inc, _)| *inc == o.incarnation)
                    .map(|&(_, seq)| seq)
            })
        };
        let mut last: Option<Origin> = None;
        for o in origins {
            let before = match last {
                Some(l) if (l.node, l.incarnation) == (o.node, o.incarnation) => Some(l.seq),
                _ => newest(self, o),
            };
            if before.is_some_and(|seq| o.seq <= seq) {
                return Err(Refusal::Duplicate);
            }
            last = Some(*o);
        }
        for o in origins {
            let runs = self.runs.entry(o.node).or_default();
            match runs.iter_mut().find(|(inc, _)| *inc == o.incarnation) {
                Some(run) => run.1 = run.1.max(o.seq),
                None => {
                    if runs.len() == RUNS_KEPT {
                        runs.pop_front();
                    }
                    runs.push_back((o.incarnation, o.seq));
                }
            }
        }
        Ok(())
    }
}

/// One entry of a proposal forwarded by peer `from`: proposed by `from` itself (its context
/// names it), and, for a command, one `check_command` accepts — what this node's own front-end
/// would have proposed (the state machine decides). Membership changes need the node's state
/// and are checked by `Node::check_forwarded_conf_change`; joint changes are never proposed.
pub fn check_proposal_entry<E: std::fmt::Display>(
    e: &Entry,
    from: u64,
    check_command: impl Fn(&Bytes) -> Result<(), E>,
) -> Result<(), Refusal> {
    let bad = |why: String| Err(Refusal::Proposal(why));
    if proposer(&e.context) != Some(from) {
        return bad(format!("the context does not name node {from} as proposer"));
    }
    match e.get_entry_type() {
        EntryType::EntryNormal => check_command(&e.data).or_else(|err| bad(err.to_string())),
        EntryType::EntryConfChange => Ok(()),
        EntryType::EntryConfChangeV2 => bad("joint membership changes are not supported".into()),
    }
}

/// How often a line about refused peer messages is logged at most.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Rate limit for refusal log lines: a flood of forged messages costs one line per interval.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    /// Records a refusal at `now`; returns `Some(n)` if a line should be logged now, `n` being
    /// the refusals not logged since the previous line.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < REFUSAL_LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests;
