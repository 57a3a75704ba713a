//! Attacks on the peer port of a 3-node cluster, through raw sockets: strangers, forged
//! senders, impostors with the wrong data-dir identity, memory exhaustion, connection floods,
//! and a member whose whole data directory was deleted. After each: every acknowledged key is
//! still on every node, nothing was injected, no node exited, the cluster still writes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::peer::{frame, identity_of, peer_addr_of, RawPeer, MESSAGES, SNAP_DATA};
use common::{field, wait_until, Cluster, WAIT_TIMEOUT};
use coordinate_server::kv::{Command, Kv};
use raft::eraftpb::{Entry, Message, MessageType};

/// The key every forged write tries to create.
const INJECTED: &str = "injected";
/// `MAX_SNAPSHOT` of the transport.
const MAX_SNAPSHOT: u64 = 8 << 30;
/// `MAX_PEER_CONNECTIONS` of the transport.
const MAX_PEER_CONNECTIONS: usize = 64;
/// Generous bound on how much a node's peak RSS may grow under the memory attack; without
/// bounds the attack below costs it well over a gigabyte.
const RSS_GROWTH_BOUND_KB: u64 = 320 << 10;
/// How long a raw connection waits to see the node hang up.
const CLOSE_WAIT: Duration = Duration::from_secs(15);

/// A 3-node cluster with a few acknowledged keys written through every node.
fn cluster_with_keys() -> (Cluster, Vec<(String, String)>) {
    let (mut c, _) = Cluster::start_with_leader(3, &[]);
    let mut acked = Vec::new();
    for i in 0..12u64 {
        let (key, value) = (format!("k-{i}"), format!("v-{i}"));
        c.put_ok(i % 3 + 1, &key, value.as_bytes());
        acked.push((key, value));
    }
    c.wait_caught_up();
    (c, acked)
}

/// A follower of the current leader.
fn a_follower(c: &mut Cluster) -> u64 {
    let leader = c.wait_for_leader();
    c.ids().into_iter().find(|&id| id != leader).unwrap()
}

/// Every acknowledged key on every node, nothing injected, no node exited, writes still work.
fn assert_unharmed(c: &mut Cluster, acked: &[(String, String)]) {
    c.check_alive();
    c.wait_for_leader();
    for id in c.ids() {
        for (key, value) in acked {
            c.assert_value(id, key, value.as_bytes());
        }
        let (status, body) = c.get(id, INJECTED).expect("GET");
        assert_eq!(status, 404, "node {id} holds the injected key: {body:?}");
    }
    for id in c.ids() {
        c.put_ok(id, &format!("after-{id}"), b"still writes");
    }
    for id in c.ids() {
        for w in c.ids() {
            c.assert_value(id, &format!("after-{w}"), b"still writes");
        }
    }
    c.check_alive();
}

fn message(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn injected_entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: Command::put(INJECTED.into(), "evil".into()).encode(),
        ..Default::default()
    }
}

/// What the probe sent, as node `from` to node `to`: heartbeats with an absurd term
/// and commit, an append of a bogus write, a proposal, a forced election.
fn forged_messages(c: &Cluster, from: u64, to: u64) -> Vec<Message> {
    let status = c.status(to);
    let (term, last) = (field(&status, "term"), field(&status, "last_index"));
    let mut msgs = Vec::new();
    let mut hb = message(MessageType::MsgHeartbeat, from, to, u64::MAX);
    hb.commit = u64::MAX;
    msgs.push(hb);
    let mut hb = message(MessageType::MsgHeartbeat, from, to, term + 1);
    hb.commit = last + 1000;
    msgs.push(hb);
    let mut append = message(MessageType::MsgAppend, from, to, term + 1);
    append.index = last;
    append.log_term = term;
    append.commit = last + 1;
    append
        .mut_entries()
        .push(injected_entry(last + 1, term + 1));
    msgs.push(append);
    let mut propose = message(MessageType::MsgPropose, from, to, 0);
    propose.mut_entries().push(injected_entry(0, 0));
    msgs.push(propose);
    msgs.push(message(MessageType::MsgTimeoutNow, from, to, term + 1));
    msgs
}

/// A snapshot, from `from` to `to`, far ahead of the cluster, holding a valid state machine
/// whose only key is the injected one.
fn forged_snapshot(c: &Cluster, from: u64, to: u64) -> Message {
    let status = c.status(to);
    let (term, commit) = (field(&status, "term"), field(&status, "commit_index"));
    let members: BTreeMap<u64, String> = c
        .ids()
        .into_iter()
        .map(|id| (id, c.peer_urls()[(id - 1) as usize].clone()))
        .collect();
    let mut kv = Kv::with_members(members);
    kv.apply(
        1,
        Command::put(INJECTED.into(), "evil".into()),
        &mut Vec::new(),
    );
    let mut m = message(MessageType::MsgSnapshot, from, to, term + 10);
    let snap = m.mut_snapshot();
    snap.mut_metadata().index = commit + 1000;
    snap.mut_metadata().term = term + 10;
    snap.mut_metadata().mut_conf_state().voters = c.ids();
    snap.data = kv.snapshot();
    m
}

/// The forged messages and snapshot as node `from`, over `peer`; errors are expected (the
/// node may hang up at any point).
fn attack(c: &Cluster, peer: &mut RawPeer, from: u64, to: u64) {
    for m in forged_messages(c, from, to) {
        let _ = peer.send(&[m]);
    }
    let _ = peer.send_snapshot(&forged_snapshot(c, from, to));
}

/// a) A stranger (non-member 99) says hello and sends heartbeats, appends, a proposal and a
/// snapshot: its connection is closed, and so is one that sends the same without a hello.
#[test]
fn a_non_member_is_dropped() {
    let (mut c, acked) = cluster_with_keys();
    let target = a_follower(&mut c);
    let addr = peer_addr_of(&c, target);

    let mut stranger = RawPeer::connect(&addr, 99, target, 0x5eed).expect("connect");
    attack(&c, &mut stranger, 99, target);
    assert!(
        stranger.closed_within(CLOSE_WAIT),
        "the stranger's connection stays open"
    );

    // The same without a hello (what worked before hellos existed).
    let mut rude = RawPeer::connect_silent(&addr).expect("connect");
    let mut bytes = Vec::new();
    for m in forged_messages(&c, 99, target) {
        bytes.extend_from_slice(&common::peer::messages_frame(&[m]));
    }
    let _ = rude.send_raw(&bytes);
    let _ = rude.send_snapshot(&forged_snapshot(&c, 99, target));
    assert!(
        rude.closed_within(CLOSE_WAIT),
        "a connection without a hello stays open"
    );

    assert_unharmed(&mut c, &acked);
}

/// b) A connection that introduced itself as a member (with that member's real identity)
/// is dropped at the first message whose `from` is someone else.
#[test]
fn messages_from_another_sender_than_the_hello_are_dropped() {
    let (mut c, acked) = cluster_with_keys();
    let target = a_follower(&mut c);
    let member = c.ids().into_iter().find(|&id| id != target).unwrap();
    let addr = peer_addr_of(&c, target);
    for forged_from in [99, 6 - target - member] {
        let mut peer =
            RawPeer::connect(&addr, member, target, identity_of(&c, member)).expect("connect");
        attack(&c, &mut peer, forged_from, target);
        assert!(
            peer.closed_within(CLOSE_WAIT),
            "messages from {forged_from} on {member}'s connection did not close it"
        );
    }
    assert_unharmed(&mut c, &acked);
}

/// c) A member id presenting another data-dir identity is refused before any message is
/// read, and the log says why.
#[test]
fn a_member_with_a_wrong_identity_is_refused() {
    let (mut c, acked) = cluster_with_keys();
    let target = a_follower(&mut c);
    let member = c.ids().into_iter().find(|&id| id != target).unwrap();
    let addr = peer_addr_of(&c, target);
    let wrong = identity_of(&c, member) ^ 0x8000_0000_0000_0001;
    let mut peer = RawPeer::connect(&addr, member, target, wrong).expect("connect");
    let mut propose = message(MessageType::MsgPropose, member, target, 0);
    propose.mut_entries().push(injected_entry(0, 0));
    let _ = peer.send(&[propose]);
    attack(&c, &mut peer, member, target);
    assert!(
        peer.closed_within(CLOSE_WAIT),
        "the impostor's connection stays open"
    );
    let why = format!("peer {member} presents data-dir identity {wrong:016x}");
    if !wait_until(WAIT_TIMEOUT, || c.log_text(target).contains(&why)) {
        c.fail(&format!("node {target}'s log does not say {why:?}"));
    }
    assert!(c.log_text(target).contains(&format!("DELETE /{member}")));
    assert_unharmed(&mut c, &acked);
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// Opens a connection (with a hello as `hello` = (from, identity), or none), announces a
/// 32 MiB MESSAGES frame and sends all of it but its last byte, then holds the connection
/// until `stop`.
fn hog(
    addr: String,
    to: u64,
    hello: Option<(u64, u64)>,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        const FRAME: usize = 32 << 20;
        let peer = match hello {
            Some((from, identity)) => RawPeer::connect(&addr, from, to, identity),
            None => RawPeer::connect_silent(&addr),
        };
        if let Ok(mut peer) = peer {
            let mut head = Vec::new();
            head.extend_from_slice(&(FRAME as u32).to_le_bytes());
            head.extend_from_slice(&0u32.to_le_bytes());
            head.push(MESSAGES);
            let chunk = vec![0u8; 1 << 20];
            let mut ok = peer.send_raw(&head).is_ok();
            let mut sent = 1;
            while ok && sent + chunk.len() < FRAME {
                ok = peer.send_raw(&chunk).is_ok();
                sent += chunk.len();
            }
            if ok {
                let _ = peer.send_raw(&chunk[..FRAME - sent - 1]);
            }
            done.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
        } else {
            done.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// d) 40 connections (half with a member's hello, half without) each announcing a 32 MiB
/// frame and sending all but its last byte, plus a snapshot stream announcing MAX_SNAPSHOT,
/// do not grow the node's peak RSS beyond a generous bound.
#[test]
fn memory_attacks_on_the_peer_port_are_bounded() {
    const HOGS: usize = 40;
    const SNAPSHOT_SENT: usize = 96 << 20;
    let (mut c, acked) = cluster_with_keys();
    let target = 2;
    let addr = peer_addr_of(&c, target);
    let pid = c.pid(target).expect("node 2 runs");
    let before = peak_rss_kb(pid);

    // A snapshot stream as member 3, announcing the largest snapshot, 96 MiB of it sent.
    let mut snap = RawPeer::connect(&addr, 3, target, identity_of(&c, 3)).expect("connect");
    let mut m = message(MessageType::MsgSnapshot, 3, target, 1);
    m.mut_snapshot().mut_metadata().index = 1;
    let _ = snap.send_raw(&common::peer::snap_head_frame(&m, MAX_SNAPSHOT, 0));
    let chunk = frame(SNAP_DATA, &vec![7u8; 1 << 20]);
    for _ in 0..SNAPSHOT_SENT >> 20 {
        if snap.send_raw(&chunk).is_err() {
            break;
        }
    }

    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..HOGS)
        .map(|i| {
            let hello = (i % 2 == 0).then(|| (1, identity_of(&c, 1)));
            hog(addr.clone(), target, hello, done.clone(), stop.clone())
        })
        .collect();
    let all_sent = wait_until(WAIT_TIMEOUT, || done.load(Ordering::SeqCst) == HOGS);
    let after = peak_rss_kb(pid);
    stop.store(true, Ordering::SeqCst);
    for h in hogs {
        h.join().expect("hog thread");
    }
    drop(snap);
    eprintln!("node {target} peak RSS: {before} kB before, {after} kB after the attack");
    assert!(all_sent, "the attack threads did not finish");
    assert!(
        after.saturating_sub(before) < RSS_GROWTH_BOUND_KB,
        "node {target}'s peak RSS grew from {before} kB to {after} kB under the memory attack"
    );
    assert_unharmed(&mut c, &acked);
}

/// e) Connections beyond the cap are closed at once; the cluster keeps working while the
/// peer port is full, and after.
#[test]
fn connections_over_the_cap_are_closed() {
    const FLOOD: usize = MAX_PEER_CONNECTIONS + 40;
    let (mut c, acked) = cluster_with_keys();
    let target = 2;
    let addr = peer_addr_of(&c, target);
    let mut flood: Vec<RawPeer> = (0..FLOOD)
        .filter_map(|_| RawPeer::connect_silent(&addr).ok())
        .collect();
    // At least the excess is closed before any hello timeout could have closed the rest.
    let mut closed = 0;
    for p in flood.iter_mut() {
        if p.closed_within(Duration::from_millis(50)) {
            closed += 1;
        }
    }
    assert!(
        closed >= FLOOD - MAX_PEER_CONNECTIONS,
        "only {closed} of {FLOOD} connections were closed (cap {MAX_PEER_CONNECTIONS})"
    );
    // While the port is full, the established peer connections carry on.
    c.put_ok(target, "during-flood", b"yes");
    for id in c.ids() {
        c.assert_value(id, "during-flood", b"yes");
    }
    // The rest are closed by the hello timeout.
    for p in flood.iter_mut() {
        assert!(
            p.closed_within(WAIT_TIMEOUT),
            "a silent connection stays open"
        );
    }
    assert_unharmed(&mut c, &acked);
}

/// Node 3 stopped, its whole data directory deleted, restarted: it comes back with a new
/// data-dir identity, and nodes 1 and 2 refuse it (saying why) instead of letting a member
/// with a rolled-back vote and log take part. Their data is intact and they still write.
#[test]
fn a_member_whose_data_dir_was_deleted_is_refused() {
    let (mut c, acked) = cluster_with_keys();
    let old = identity_of(&c, 3);
    c.stop(3);
    std::fs::remove_dir_all(c.data_dir(3)).expect("delete node 3's data dir");
    c.restart(3);
    let new_dir = wait_until(WAIT_TIMEOUT, || c.data_dir(3).join("IDENTITY").exists());
    assert!(new_dir, "node 3 did not create a new identity");
    let new = identity_of(&c, 3);
    assert_ne!(new, old);
    let why = format!(
        "peer 3 presents data-dir identity {new:016x} but this cluster knows node 3 as {old:016x}"
    );
    for id in [1, 2] {
        if !wait_until(WAIT_TIMEOUT, || c.log_text(id).contains(&why)) {
            c.fail(&format!("node {id}'s log does not say {why:?}"));
        }
    }
    // Node 3 itself may or may not survive what it hears (that is the node's business); the
    // survivors must be unharmed.
    c.kill(3);
    let leader = c.wait_for_leader();
    for id in [1, 2] {
        for (key, value) in &acked {
            c.assert_value(id, key, value.as_bytes());
        }
    }
    c.put_ok(leader, "after-loss", b"yes");
    for id in [1, 2] {
        c.assert_value(id, "after-loss", b"yes");
    }
    c.check_alive();
}
