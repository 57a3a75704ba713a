//! Three `coordinate` processes on loopback: replication, linearizable reads from any node,
//! leader crash, snapshot catch-up, whole-cluster restart, loss of quorum and garbage on the
//! peer port. Every test runs twice: in clear (`plain::`), and with peer mTLS and client TLS
//! requiring client certificates (`tls::`), a certificate per member from a CA of its own.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{field, show, wait_until, Client, Cluster, Security, WAIT_TIMEOUT};

crate::plain_and_tls!(
    writes_on_any_node_are_immediately_readable_on_every_node,
    leader_crash_under_writes_loses_no_acknowledged_write,
    lagging_follower_catches_up_by_snapshot,
    whole_cluster_restart_keeps_data,
    quorum_loss_leader_survives,
    quorum_loss_follower_survives,
    garbage_on_the_peer_port_is_survived
);

/// Every key written through every node is readable, with its value, from every node at
/// once: reads are linearizable, so no waiting for replication is allowed or needed.
/// (The nodes run two event-loop threads here; every other test runs the default one.)
fn writes_on_any_node_are_immediately_readable_on_every_node(security: Security) {
    let (c, _) = Cluster::start_with_leader_as(security, 3, &["--threads", "2"]);
    for id in c.ids() {
        c.put_ok(
            id,
            &format!("from-{id}"),
            format!("written via {id}").as_bytes(),
        );
    }
    for key_node in c.ids() {
        for read_node in c.ids() {
            c.assert_value(
                read_node,
                &format!("from-{key_node}"),
                format!("written via {key_node}").as_bytes(),
            );
        }
    }
    // An overwrite through one node is seen by the next read through another.
    let ids = c.ids();
    for (i, &writer) in ids.iter().enumerate() {
        let reader = ids[(i + 1) % ids.len()];
        let value = format!("overwritten via {writer}");
        c.put_ok(writer, "shared", value.as_bytes());
        c.assert_value(reader, "shared", value.as_bytes());
    }
    for id in c.ids() {
        let (status, _) = c.get(id, "never-written").expect("GET");
        assert_eq!(status, 404, "node {id}: GET of a key never written");
    }
}

/// What the writer thread saw.
#[derive(Default)]
struct WriteLog {
    /// Keys acknowledged with 204, with their values.
    acked: Vec<(String, String)>,
    /// Answers outside the contract (anything but 204, 503, 504 or a transport error).
    unexpected: Vec<String>,
}

/// kill -9 of the leader while a client writes through every node: a new leader takes over,
/// writes continue, and no acknowledged write is lost, on any node, once the old leader is back.
fn leader_crash_under_writes_loses_no_acknowledged_write(security: Security) {
    const BEFORE_KILL: usize = 20;
    const AFTER_KILL: usize = 20;

    let (mut c, old_leader) = Cluster::start_with_leader_as(security, 3, &[]);
    let n = c.size() as u64;
    let log = Arc::new(Mutex::new(WriteLog::default()));
    let dead = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let (client, log, dead, stop) = (c.client(), log.clone(), dead.clone(), stop.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let node = i % n + 1;
                let key = format!("w-{i}");
                let value = format!("value-{i}");
                i += 1;
                if node == dead.load(Ordering::SeqCst) {
                    continue;
                }
                match client.put(node, &key, value.as_bytes()) {
                    Ok(204) => log.lock().unwrap().acked.push((key, value)),
                    // No leader or no quorum in time: allowed, outcome unknown, not recorded.
                    Ok(503) | Ok(504) => {}
                    Ok(status) => log
                        .lock()
                        .unwrap()
                        .unexpected
                        .push(format!("PUT /{key} via node {node}: status {status}")),
                    // Connection refused/reset (the killed node) or a client timeout.
                    Err(_) => {}
                }
            }
        })
    };
    let acked = |log: &Arc<Mutex<WriteLog>>| log.lock().unwrap().acked.len();

    if !wait_until(WAIT_TIMEOUT, || acked(&log) >= BEFORE_KILL) {
        stop.store(true, Ordering::SeqCst);
        c.fail(&format!(
            "only {} writes acknowledged before the kill",
            acked(&log)
        ));
    }

    dead.store(old_leader, Ordering::SeqCst);
    c.kill(old_leader);
    let at_kill = acked(&log);

    let new_leader = c.wait_for_leader();
    assert_ne!(
        new_leader, old_leader,
        "the killed node cannot be the leader"
    );

    if !wait_until(WAIT_TIMEOUT * 2, || acked(&log) >= at_kill + AFTER_KILL) {
        stop.store(true, Ordering::SeqCst);
        c.fail(&format!(
            "only {} writes acknowledged after the kill of leader {old_leader} (new leader {new_leader})",
            acked(&log) - at_kill
        ));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread");

    c.restart(old_leader);
    c.wait_caught_up();

    let log = log.lock().unwrap();
    eprintln!(
        "leader {old_leader} killed after {at_kill} acknowledged writes; new leader {new_leader}; \
         {} acknowledged in all",
        log.acked.len()
    );
    assert!(
        log.unexpected.is_empty(),
        "answers outside the contract (want 204, 503 or 504):\n{}",
        log.unexpected.join("\n")
    );
    for id in c.ids() {
        for (key, value) in &log.acked {
            c.assert_value(id, key, value.as_bytes());
        }
    }
}

/// A follower that was down while the leader compacted its log past the follower's last entry
/// is caught up by a snapshot, and serves every key afterwards.
fn lagging_follower_catches_up_by_snapshot(security: Security) {
    const KEYS: usize = 300;

    let (mut c, leader) = Cluster::start_with_leader_as(security, 3, &["--snapshot-count", "50"]);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != follower).collect();

    c.put_ok(follower, "before-stop", b"seen by all");
    c.wait_caught_up();
    let before = c.status(follower);
    let last_before = field(&before, "last_index");
    let snap_dir = c.data_dir(follower).join("snap");
    let files_before = snapshot_files(&snap_dir);
    assert!(
        !files_before.is_empty(),
        "follower {follower} has no snapshot file (not even its bootstrap one) before it stops"
    );
    let status = c.stop(follower);
    assert!(
        status.success(),
        "SIGTERM must exit with status 0, got {status}"
    );

    // Write through the two live nodes, a few writers at a time to keep this quick.
    let client = c.client();
    thread::scope(|s| {
        for w in 0..3 {
            let (client, others) = (&client, &others);
            s.spawn(move || {
                for i in (w..KEYS).step_by(3) {
                    let node = others[i % others.len()];
                    let status = client
                        .put(node, &format!("snap-{i}"), format!("value-{i}").as_bytes())
                        .unwrap_or_else(|e| panic!("PUT /snap-{i} via node {node}: {e}"));
                    assert_eq!(status, 204, "PUT /snap-{i} via node {node}");
                }
            });
        }
    });

    let leader = c.wait_for_leader();
    let leader_status = c.status(leader);
    let target = field(&leader_status, "commit_index");
    assert!(
        field(&leader_status, "first_index") > 1,
        "leader log not compacted after {KEYS} writes with --snapshot-count 50: {leader_status}"
    );
    assert!(
        field(&leader_status, "first_index") > last_before + 1,
        "the leader still has the entries the stopped follower needs (follower's last index \
         {last_before}), so this test would not exercise snapshot catch-up: {leader_status}"
    );

    c.restart(follower);
    let caught_up = wait_until(WAIT_TIMEOUT, || {
        c.client()
            .try_status(follower)
            .is_some_and(|s| field(&s, "applied_index") >= target)
    });
    if !caught_up {
        c.fail(&format!(
            "restarted follower {follower} did not apply up to {target}: {:?}",
            c.client().try_status(follower)
        ));
    }
    let after = c.status(follower);
    eprintln!("follower {follower} before stop: {before}");
    eprintln!("leader after the writes: {leader_status}");
    eprintln!("follower after catch-up: {after}");
    assert!(
        field(&after, "snapshot_index") > 0 && field(&after, "snapshot_index") > last_before,
        "follower {follower} (last index {last_before} before it stopped) caught up without \
         a snapshot: {after}"
    );
    // The snapshot it installed replaces its older snapshot files once its marker is durable.
    let installed = field(&after, "snapshot_index");
    let replaced = wait_until(WAIT_TIMEOUT, || {
        snapshot_files(&snap_dir).iter().all(|&i| i >= installed)
    });
    assert!(
        replaced,
        "follower {follower} kept snapshot files older than the one it installed (index \
         {installed}): before it stopped {files_before:?}, now {:?}",
        snapshot_files(&snap_dir)
    );

    c.wait_for_leader();
    c.assert_value(follower, "before-stop", b"seen by all");
    for i in 0..KEYS {
        c.assert_value(
            follower,
            &format!("snap-{i}"),
            format!("value-{i}").as_bytes(),
        );
    }
}

/// SIGTERM every node (each exits 0), start them all again: everything written is still there.
fn whole_cluster_restart_keeps_data(security: Security) {
    const KEYS: usize = 30;

    let (mut c, _) = Cluster::start_with_leader_as(security, 3, &[]);
    let ids = c.ids();
    for i in 0..KEYS {
        let node = ids[i % ids.len()];
        c.put_ok(node, &format!("r-{i}"), format!("value-{i}").as_bytes());
    }
    for id in c.ids() {
        let status = c.stop(id);
        assert!(
            status.success(),
            "node {id}: SIGTERM must exit with status 0, got {status}"
        );
    }
    for id in c.ids() {
        c.restart(id);
    }
    c.wait_for_leader();
    for id in c.ids() {
        for i in 0..KEYS {
            c.assert_value(id, &format!("r-{i}"), format!("value-{i}").as_bytes());
        }
    }
    // And the restarted cluster takes writes.
    c.put_ok(ids[0], "after-restart", b"yes");
    for id in c.ids() {
        c.assert_value(id, "after-restart", b"yes");
    }
}

/// With two of three nodes killed, the survivor neither acknowledges a write nor serves a
/// read: it answers 503/504 within its request timeout, and a write's answer says whether it
/// may still happen: "outcome unknown" once the write was handed to raft (always so for 504),
/// or that it was "not applied" when no leader ever took it.
fn assert_survivor_unavailable(c: &Cluster, survivor: u64) {
    // Longer than the server's 5 s timeout, so its answer arrives before ours expires.
    let slow: Client = c.client_with_timeout(Duration::from_secs(15));
    let (status, body) = slow
        .put_with_body(survivor, "after-quorum-loss", b"maybe")
        .unwrap_or_else(|e| c.fail(&format!("PUT on survivor {survivor}: no answer: {e}")));
    assert!(
        status == 503 || status == 504,
        "PUT without quorum on node {survivor}: status {status}, want 503 or 504; body {:?}",
        show(&body)
    );
    let text = String::from_utf8_lossy(&body);
    eprintln!(
        "PUT without quorum on node {survivor}: {status} {:?}",
        text.trim()
    );
    let says = if status == 504 {
        text.contains("outcome unknown")
    } else {
        text.contains("outcome unknown") || text.contains("not applied")
    };
    assert!(
        says,
        "PUT without quorum on node {survivor}: {status} with body {:?}, which does not say \
         whether the write may still happen (\"outcome unknown\" or \"not applied\")",
        show(&body)
    );

    let (status, body) = slow
        .get(survivor, "before-quorum-loss")
        .unwrap_or_else(|e| c.fail(&format!("GET on survivor {survivor}: no answer: {e}")));
    assert!(
        status == 503 || status == 504,
        "GET without quorum on node {survivor}: status {status} (body {:?}), want 503 or 504: \
         a minority must not serve a possibly stale read",
        show(&body)
    );
}

fn quorum_loss_leader_survives(security: Security) {
    let (mut c, leader) = Cluster::start_with_leader_as(security, 3, &[]);
    c.put_ok(leader, "before-quorum-loss", b"committed");
    for id in c.ids().into_iter().filter(|&id| id != leader) {
        c.kill(id);
    }
    assert_survivor_unavailable(&c, leader);
}

fn quorum_loss_follower_survives(security: Security) {
    let (mut c, leader) = Cluster::start_with_leader_as(security, 3, &[]);
    c.put_ok(leader, "before-quorum-loss", b"committed");
    let survivor = c.ids().into_iter().find(|&id| id != leader).unwrap();
    for id in c.ids().into_iter().filter(|&id| id != survivor) {
        c.kill(id);
    }
    assert_survivor_unavailable(&c, survivor);
}

/// Garbage on the peer port — random bytes, a frame claiming 4 GiB, a valid frame header with
/// a bad checksum, a half frame then a hang-up — costs those connections and nothing else.
fn garbage_on_the_peer_port_is_survived(security: Security) {
    use std::io::Write;
    use std::net::TcpStream;

    let (c, _) = Cluster::start_with_leader_as(security, 3, &[]);
    c.put_ok(1, "before", b"garbage");
    let peer = c.peer_urls()[1].split_once("://").unwrap().1.to_string();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = vec![0u8; 64 << 10];
    for b in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let mut huge = Vec::new();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&0u32.to_le_bytes());
    let mut bad_crc = Vec::new();
    bad_crc.extend_from_slice(&16u32.to_le_bytes());
    bad_crc.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    bad_crc.extend_from_slice(&[1u8; 16]);
    let mut half = Vec::new();
    half.extend_from_slice(&1000u32.to_le_bytes());
    half.extend_from_slice(&0u32.to_le_bytes());
    half.extend_from_slice(&[1u8; 10]);
    for payload in [&noise, &huge, &bad_crc, &half] {
        let mut s = TcpStream::connect(&peer).expect("connect to the peer port");
        // The node may hang up before reading everything: that is the point.
        let _ = s.write_all(payload);
    }
    c.put_ok(2, "after", b"garbage");
    for id in c.ids() {
        c.assert_value(id, "before", b"garbage");
        c.assert_value(id, "after", b"garbage");
    }
}

/// The indexes of the snapshot files (`<index>-<term>.snap`, hexadecimal) in `dir`.
fn snapshot_files(dir: &std::path::Path) -> Vec<u64> {
    let mut indexes: Vec<u64> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".snap")?;
            u64::from_str_radix(stem.split('-').next()?, 16).ok()
        })
        .collect();
    indexes.sort_unstable();
    indexes
}
