//! Scenarios a unit test must force: three in-process nodes over an [`Io`] that delivers
//! every message at once and makes every write durable at once, driven step by step.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, HardState, Message, Snapshot};
use raft::StateRole;

use super::*;
use crate::state_machine::testing::Counter;
use crate::storage::snapshot::SnapshotFiles;
use crate::storage::wal::{Recovered as Replayed, SnapshotMarker};

/// Snapshot files in memory.
#[derive(Default)]
struct Files(Mutex<BTreeMap<u64, Snapshot>>);

impl SnapshotFiles for Files {
    fn save(&self, snap: &Snapshot) -> Result<()> {
        let mut files = self.0.lock().unwrap_or_else(|p| p.into_inner());
        files.insert(snap.get_metadata().index, snap.clone());
        Ok(())
    }
    fn load(&self, index: u64, _term: u64) -> Result<Snapshot> {
        let files = self.0.lock().unwrap_or_else(|p| p.into_inner());
        files
            .get(&index)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no snapshot {index}")))
    }
    fn prune(&self, _index: u64) -> Result<()> {
        Ok(())
    }
}

/// Everything durable at once, every message sent at once.
#[derive(Default)]
struct Instant0 {
    outbox: Vec<Message>,
    persisted: u64,
}

impl Io for Instant0 {
    fn send(&mut self, msgs: Vec<Message>) -> Vec<Message> {
        self.outbox.extend(msgs);
        Vec::new()
    }
    fn set_peers(&mut self, _peers: HashMap<u64, String>, _removed: Vec<u64>) {}
    fn forget_identity(&mut self, _id: u64) {}
    fn scheme(&self) -> &'static str {
        "http"
    }
    fn is_connected(&self, _id: u64) -> bool {
        true
    }
    fn append(
        &mut self,
        number: u64,
        _entries: Vec<Entry>,
        _hard_state: Option<HardState>,
        messages: Vec<Message>,
    ) -> Result<()> {
        self.persisted = number;
        self.outbox.extend(messages);
        Ok(())
    }
    fn mark_snapshot(&mut self, _marker: SnapshotMarker, _discard_log: bool) -> Result<()> {
        Ok(())
    }
    fn compact(&mut self, _index: u64, _prune: u64, _freed: VecDeque<Entry>) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
    fn persisted(&self) -> u64 {
        self.persisted
    }
    fn failure(&self) -> Option<Arc<Error>> {
        None
    }
    fn wal_bytes(&self) -> u64 {
        0
    }
    fn save_snapshot(&mut self, _snap: Snapshot, _compact_to: u64) -> Result<()> {
        // Never reported saved: the node simply does not snapshot again.
        Ok(())
    }
    fn mark_removed(&mut self) -> Result<()> {
        Ok(())
    }
}

type TestNode = Node<Counter, Instant0>;

fn node(id: u64) -> TestNode {
    let snap = crate::storage::founding_snapshot(vec![1, 2, 3], Bytes::from_static(&[0; 8]));
    let files = Arc::new(Files::default());
    files.save(&snap).unwrap();
    let rec = Replayed {
        hard_state: HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        },
        snapshot: Some(SnapshotMarker { index: 1, term: 1 }),
        entries: Vec::new(),
    };
    let storage = RaftStorage::recover(rec, Some(&snap), files);
    let mut state = Counter::default();
    for m in 1..=3 {
        state.members.insert(m, format!("http://127.0.0.{m}:2380"));
    }
    let cfg = NodeConfig {
        id,
        snapshot_count: 1_000_000,
        snapshot_bytes: 1 << 30,
        catch_up_entries: 0,
        catch_up_bytes: 0,
        request_timeout: Duration::from_secs(10),
        cluster_ids: vec![1, 2, 3],
        // Node 1 times out first, so it leads.
        election_ticks: (10 + id as usize * 5, 11 + id as usize * 5),
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let recovered = Recovered {
        storage,
        state,
        applied: 1,
    };
    let mut n = Node::with_io(
        cfg,
        recovered,
        Instant0::default(),
        Arc::default(),
        id,
        &logger,
    )
    .unwrap();
    n.start();
    n
}

/// Lets every node act; returns what they sent.
fn round(nodes: &mut BTreeMap<u64, TestNode>) -> Vec<Message> {
    let mut sent = Vec::new();
    for n in nodes.values_mut() {
        n.advance().unwrap();
        sent.append(&mut n.io_mut().outbox);
    }
    sent
}

/// Delivers `msgs` (but, with `cut`, none from or to node 1).
fn deliver(nodes: &mut BTreeMap<u64, TestNode>, msgs: Vec<Message>, cut: bool) {
    for m in msgs {
        if cut && (m.from == 1 || m.to == 1) {
            continue;
        }
        if let Some(n) = nodes.get_mut(&m.to) {
            let share = crate::transport::InboundShare::default();
            n.handle(Input::Transport(TransportEvent::Message(
                Box::new(m),
                share,
            )))
            .unwrap();
        }
    }
}

/// Lets every node act and delivers what they sent, until nothing moves; `cut` drops what
/// node 1 sends and receives.
fn settle(nodes: &mut BTreeMap<u64, TestNode>, cut: bool) {
    for _ in 0..100 {
        let sent = round(nodes);
        if sent.is_empty() {
            return;
        }
        deliver(nodes, sent, cut);
    }
}
fn tick_all(nodes: &mut BTreeMap<u64, TestNode>, ticks: usize, cut: bool) {
    for _ in 0..ticks {
        for n in nodes.values_mut() {
            n.tick();
        }
        settle(nodes, cut);
    }
}

fn leader(nodes: &BTreeMap<u64, TestNode>) -> Option<u64> {
    nodes
        .iter()
        .find(|(_, n)| n.raw().raft.state == StateRole::Leader)
        .map(|(&id, _)| id)
}

#[test]
fn a_leader_that_applies_its_own_removal_steps_down() {
    let mut nodes: BTreeMap<u64, TestNode> = (1..=3).map(|id| (id, node(id))).collect();
    tick_all(&mut nodes, 30, false);
    assert_eq!(leader(&nodes), Some(1));
    // The leader commits its own removal (the API refuses to ask for it, but a follower
    // removed while its removal was uncommitted can win an election and get here), with
    // another entry behind it, sent in an append of its own.
    let n1 = nodes.get_mut(&1).unwrap();
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::RemoveNode);
    cc.node_id = 1;
    n1.raw.propose_conf_change(Vec::new(), cc).unwrap();
    let appends = round(&mut nodes);
    deliver(&mut nodes, appends, false);
    let acks = round(&mut nodes);
    nodes
        .get_mut(&1)
        .unwrap()
        .raw
        .propose(Vec::new(), b"behind".to_vec())
        .unwrap();
    let second = round(&mut nodes);
    // The removal commits and is applied; then the entry behind it is acknowledged. Had node 1
    // stayed leader, raft-rs would panic committing it (its own progress is gone:
    // `Raft::maybe_commit` unwraps it).
    deliver(&mut nodes, acks, false);
    let applied = round(&mut nodes);
    assert!(!nodes[&1].conf_state.voters.contains(&1));
    assert_ne!(nodes[&1].raw().raft.state, StateRole::Leader);
    deliver(&mut nodes, second, false);
    deliver(&mut nodes, applied, false);
    settle(&mut nodes, false);
    // The remaining voters elect a leader of their own and commit without node 1.
    tick_all(&mut nodes, 40, true);
    let new = leader(&nodes).expect("a new leader");
    assert_ne!(new, 1);
    let committed = nodes[&new].raw().raft.raft_log.committed;
    nodes
        .get_mut(&new)
        .unwrap()
        .raw
        .propose(Vec::new(), b"x".to_vec())
        .unwrap();
    tick_all(&mut nodes, 3, true);
    assert!(nodes[&new].raw().raft.raft_log.committed > committed);
}
