//! Disk accidents on real processes: a WAL that went backwards or was damaged (also in the last
//! batch before a clean stop) makes the node refuse to start, naming the file or the reason,
//! while the rest of the cluster keeps every acknowledged key and goes on writing; a snapshot
//! file that cannot be written is retried while the node serves; large writes trigger
//! snapshots and compaction by bytes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{field, run_to_exit, wait_until, Cluster, WAIT_TIMEOUT};

/// The WAL's record header: length u32 + CRC u32 (see `storage::wal`).
const HEADER: usize = 8;
const ENTRY_KIND: u8 = 1;
const SECTOR: usize = 512;

/// The WAL segments of a data dir, oldest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    out.sort();
    out
}

/// Offsets of the entry records in a segment's bytes.
fn entry_records(raw: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + HEADER < raw.len() {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        if raw[pos + HEADER] == ENTRY_KIND {
            out.push(pos);
        }
        pos += HEADER + len;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every acknowledged key is readable with its value on every live node.
fn assert_all_keys(c: &Cluster, keys: &[(String, Vec<u8>)]) {
    for id in c.live_ids() {
        for (k, v) in keys {
            c.assert_value(id, k, v);
        }
    }
}

/// One damage: `damage` is applied to the stopped node's data dir; the node must refuse to
/// start with `expect` in its error; the others keep every key and still write. The data dir
/// is then restored and the node rejoins, so the next case starts from a whole cluster.
fn damaged_node_refuses(
    c: &mut Cluster,
    victim: u64,
    keys: &mut Vec<(String, Vec<u8>)>,
    case: &str,
    damage: impl FnOnce(&Path) -> String,
) {
    // Many small acknowledged writes, each its own fsync batch on every node.
    let writer = c.live_ids()[0];
    for i in 0..150 {
        let (k, v) = (
            format!("{case}-{i}"),
            format!("value {i} of {case}").into_bytes(),
        );
        c.put_ok(writer, &k, &v);
        keys.push((k, v));
    }
    c.wait_caught_up();
    c.stop(victim);
    let data_dir = c.data_dir(victim).to_path_buf();
    let backup = c.dir().join(format!("backup-{case}"));
    copy_dir(&data_dir, &backup);

    let expect = damage(&data_dir);
    let (status, stderr) = run_to_exit(c.dir(), &c.args(victim));
    assert!(
        !status.success(),
        "{case}: the node started on a damaged data dir: {stderr}"
    );
    assert!(
        stderr.contains(&expect),
        "{case}: stderr does not name {expect:?}: {stderr}"
    );
    assert!(stderr.contains("refusing to start"), "{case}: {stderr}");

    // The rest of the cluster lost nothing and still writes.
    c.check_alive();
    assert_all_keys(c, keys);
    let (k, v) = (
        format!("{case}-after"),
        b"written while one node refused".to_vec(),
    );
    c.put_ok(c.live_ids()[0], &k, &v);
    keys.push((k, v));

    // The undamaged copy starts and catches up.
    fs::remove_dir_all(&data_dir).unwrap();
    copy_dir(&backup, &data_dir);
    c.restart(victim);
    c.wait_caught_up();
    assert_all_keys(c, keys);
}

#[test]
fn a_wal_that_went_backwards_or_was_damaged_is_refused() {
    let (mut c, leader) = Cluster::start_with_leader(3, &[]);
    let victim = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let mut keys = Vec::new();

    damaged_node_refuses(&mut c, victim, &mut keys, "last-segment", |dir| {
        let newest = segments(dir).pop().unwrap();
        fs::remove_file(&newest).unwrap();
        format!(
            "{} is missing",
            newest.file_name().unwrap().to_string_lossy()
        )
    });

    damaged_node_refuses(&mut c, victim, &mut keys, "wal-dir", |dir| {
        fs::remove_dir_all(dir.join("wal")).unwrap();
        "the WAL directory is missing".to_string()
    });

    damaged_node_refuses(&mut c, victim, &mut keys, "zero-block", |dir| {
        let newest = segments(dir).pop().unwrap();
        let mut raw = fs::read(&newest).unwrap();
        let records = entry_records(&raw);
        assert!(records.len() > 100, "too few records to damage");
        // A sector in the middle of the log: dozens of later synced batches follow it.
        let start = (records[records.len() / 2] / SECTOR) * SECTOR;
        raw[start..start + SECTOR].fill(0);
        fs::write(&newest, &raw).unwrap();
        newest.display().to_string()
    });

    // The last batch before a clean stop: the stop sealed the log with a trailing sync point,
    // so even this is known to have been durable.
    damaged_node_refuses(&mut c, victim, &mut keys, "last-batch", |dir| {
        let newest = segments(dir).pop().unwrap();
        let mut raw = fs::read(&newest).unwrap();
        let last = *entry_records(&raw).last().unwrap();
        raw[last..last + HEADER].fill(0);
        fs::write(&newest, &raw).unwrap();
        newest.display().to_string()
    });

    c.check_alive();
}

/// The node's log file (the harness names it after the node).
fn node_log(c: &Cluster, id: u64) -> String {
    fs::read_to_string(c.dir().join(format!("node-{id}.log"))).unwrap_or_default()
}

/// A snapshot file that cannot be written (here the snapshot directory is replaced by a plain
/// file, so creating the temp file fails with ENOTDIR — also as root) does not stop the node:
/// it keeps serving, logs the failure once, retries with backoff, and takes the snapshot once
/// the directory is back.
#[test]
fn a_failed_snapshot_write_is_retried_while_the_node_serves() {
    let (mut c, _) = Cluster::start_with_leader(
        1,
        &[
            "--snapshot-count",
            "20",
            "--log-level",
            "info,coordinate_raft::node=debug",
        ],
    );
    let mut keys = Vec::new();
    let snap = c.data_dir(1).join("snap");
    let away = c.data_dir(1).join("snap.away");
    fs::rename(&snap, &away).unwrap();
    fs::write(&snap, b"not a directory").unwrap();
    let before = field(&c.status(1), "snapshot_index");

    // Enough writes for a snapshot to be due, then more while it fails and is retried.
    let mut i = 0;
    let mut put = |c: &Cluster, keys: &mut Vec<(String, Vec<u8>)>| {
        let (k, v) = (format!("k{i}"), format!("v{i}").into_bytes());
        c.put_ok(1, &k, &v);
        keys.push((k, v));
        i += 1;
    };
    for _ in 0..30 {
        put(&c, &mut keys);
    }
    let retried = wait_until(WAIT_TIMEOUT, || {
        put(&c, &mut keys);
        node_log(&c, 1).contains("writing a snapshot failed again")
    });
    assert!(retried, "no retry seen:\n{}", node_log(&c, 1));
    c.check_alive();
    assert_eq!(field(&c.status(1), "snapshot_index"), before);
    let log = node_log(&c, 1);
    assert_eq!(
        log.matches("writing a snapshot failed; serving on").count(),
        1,
        "the failure must be logged once at warn:\n{log}"
    );
    assert_all_keys(&c, &keys);

    // The problem goes away: the next retry takes the snapshot.
    fs::remove_file(&snap).unwrap();
    fs::rename(&away, &snap).unwrap();
    let taken = wait_until(WAIT_TIMEOUT * 3, || {
        field(&c.status(1), "snapshot_index") > before
    });
    assert!(taken, "no snapshot after the directory came back");
    assert!(
        node_log(&c, 1).contains("snapshot written after failed attempts"),
        "{}",
        node_log(&c, 1)
    );
    put(&c, &mut keys);
    c.check_alive();
    // It restarts from that snapshot with everything.
    c.stop(1);
    c.restart(1);
    c.wait_for_leader();
    assert_all_keys(&c, &keys);
}

/// With a small `--snapshot-bytes`, a run of large PUTs triggers snapshots and compaction
/// though `--snapshot-count` is far away; after a restart every value is still there.
#[test]
fn large_writes_trigger_snapshots_by_bytes() {
    let (mut c, _) = Cluster::start_with_leader(
        1,
        &["--snapshot-count", "1000000", "--snapshot-bytes", "2097152"],
    );
    let start = c.status(1);
    let (snap0, first0) = (
        field(&start, "snapshot_index"),
        field(&start, "first_index"),
    );
    let mut latest = std::collections::BTreeMap::new();
    // 60 PUTs of 128 KiB over 4 keys: 7.5 MiB of log, a state of 512 KiB.
    for i in 0..60u32 {
        let key = format!("big{}", i % 4);
        let value = vec![b'a' + (i % 26) as u8; 128 << 10];
        c.put_ok(1, &key, &value);
        latest.insert(key, value);
    }
    let grew = wait_until(WAIT_TIMEOUT, || {
        let s = c.status(1);
        field(&s, "snapshot_index") > snap0 + 20 && field(&s, "first_index") > first0 + 20
    });
    let status = c.status(1);
    assert!(grew, "no snapshot or compaction by bytes: {status}");
    // The catch-up log kept behind the snapshot is bounded by bytes (a quarter of 2 MiB:
    // about 4 entries of 128 KiB), not by the 5,000 entries of the count bound.
    assert!(
        field(&status, "snapshot_index") - field(&status, "first_index") < 10,
        "{status}"
    );
    c.stop(1);
    c.restart(1);
    c.wait_for_leader();
    for (k, v) in &latest {
        c.assert_value(1, k, v);
    }
}
