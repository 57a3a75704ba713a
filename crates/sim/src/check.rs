//! The safety properties checked after every step of a run (the client history's
//! linearizability is checked once, at the end, by `coordinate-check`):
//! - **election safety**: at most one leader per term;
//! - **log matching and leader completeness**: an entry committed at an index is the same
//!   entry (term and data) in every log that holds that index, and a leader's log holds every
//!   entry committed before its term began;
//! - **state-machine safety**: no two nodes apply different commands at one index, and
//!   what a node applies was committed.

use std::collections::BTreeMap;

use bytes::Bytes;
use coordinate_raft::node::Node;

use crate::io::SimIo;
use crate::state::SimState;
use crate::world::{entry_at, is_leader};

#[derive(Default)]
pub struct Checks {
    pub violations: Vec<String>,
    /// The leader seen in each term.
    leaders: BTreeMap<u64, u64>,
    /// Committed entries: index → (term, data).
    committed: BTreeMap<u64, (u64, Bytes)>,
    /// Commands applied: index → command.
    applied: BTreeMap<u64, Bytes>,
    /// Per node: the highest commit index checked and how much of its applied list was.
    seen: BTreeMap<u64, (u64, usize)>,
}

impl Checks {
    /// Node `id` started a new run: its applied list starts over, its commit index may be
    /// lower than before.
    pub fn restarted(&mut self, id: u64) {
        self.seen.remove(&id);
    }

    pub fn observe(&mut self, id: u64, node: &Node<SimState, SimIo>) {
        let raft = &node.raw().raft;
        let term = raft.term;
        if is_leader(node) {
            match self.leaders.get(&term) {
                Some(&other) if other != id => self.violations.push(format!(
                    "election safety: n{other} and n{id} both lead term {term}"
                )),
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    self.check_leader_complete(id, node, term);
                }
            }
        }
        let commit = raft.raft_log.committed;
        let (checked, applied_seen) = self.seen.get(&id).copied().unwrap_or((0, 0));
        for index in checked.max(raft.raft_log.first_index().saturating_sub(1)) + 1..=commit {
            let Some((t, data)) = entry_at(node, index) else {
                continue;
            };
            match self.committed.get(&index) {
                Some((ct, cd)) if (*ct, cd) != (t, &data) => self.violations.push(format!(
                    "log matching: n{id} holds entry {index} of term {t} as committed, but \
                     the entry committed there is of term {ct}{}",
                    if *ct == t { " with other data" } else { "" }
                )),
                Some(_) => {}
                None => {
                    self.committed.insert(index, (t, data));
                }
            }
        }
        let list = &node.state_machine().applied;
        for (index, command) in list.iter().skip(applied_seen) {
            match self.applied.get(index) {
                Some(other) if other != command => self.violations.push(format!(
                    "state-machine safety: n{id} applied a different command at {index}"
                )),
                Some(_) => {}
                None => {
                    self.applied.insert(*index, command.clone());
                }
            }
            if let Some((_, data)) = self.committed.get(index) {
                if data != command {
                    self.violations.push(format!(
                        "state-machine safety: n{id} applied at {index} a command that is not \
                         the one committed there"
                    ));
                }
            }
        }
        self.seen.insert(id, (commit.max(checked), list.len()));
    }

    /// A new leader must hold the newest entry committed before its term (and so, by log
    /// matching, every one before it).
    fn check_leader_complete(&mut self, id: u64, node: &Node<SimState, SimIo>, term: u64) {
        let Some((&index, (t, _))) = self.committed.iter().next_back() else {
            return;
        };
        if *t >= term {
            return;
        }
        let log = &node.raw().raft.raft_log;
        if log.last_index() < index {
            self.violations.push(format!(
                "leader completeness: n{id} leads term {term} but its log ends at {}, before \
                 committed entry {index}",
                log.last_index()
            ));
            return;
        }
        if let Some((lt, _)) = entry_at(node, index) {
            if lt != *t {
                self.violations.push(format!(
                    "leader completeness: n{id} leads term {term} with entry {index} of term \
                     {lt}, but the committed one is of term {t}"
                ));
            }
        }
    }
}
