//! Disk faults on the real write and fsync calls (injected with `COORDINATE_FAILPOINT`, see
//! `coordinate_raft::storage::failpoint`): a WAL write or fsync that fails — an I/O error, a
//! full disk, a write that stops halfway — stops the node (fail-stop, like etcd: retrying a
//! failed fsync is not safe) with a log line naming the file and the error, and after a
//! restart on the same disk every acknowledged write is there and the node writes again. A
//! snapshot file that fails the same ways costs nothing but log space: it is retried with
//! backoff while the node serves.

mod common;

use common::{field, wait_until, Cluster, WAIT_TIMEOUT};

const FAILPOINT: &str = "COORDINATE_FAILPOINT";

/// Starts one node with `spec` injected, writes until it stops, and checks how it stopped
/// and that a restart without the fault has every acknowledged write.
fn wal_fault_stops_the_node_and_loses_nothing(spec: &str, logged: &[&str]) {
    let (mut c, _) = Cluster::start_with_leader(1, &[]);
    c.stop(1);
    c.restart_with_env(1, &[(FAILPOINT, spec)]);
    c.wait_for_leader();
    let mut acked = Vec::new();
    for i in 0..100_000 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        match c.put(1, &k, v.as_bytes()) {
            Ok(204) => acked.push((k, v)),
            // Not acknowledged: the node is stopping.
            _ => break,
        }
    }
    assert!(!acked.is_empty(), "the fault hit before any write");
    let Some(status) = c.wait_exit_of(1, WAIT_TIMEOUT) else {
        c.fail(&format!("{spec}: the node did not stop"));
    };
    assert!(!status.success(), "{spec}: exited with {status}");
    let log = c.log_text(1);
    for want in [
        "the log writer failed; stopping the node",
        "raft loop failed",
    ]
    .iter()
    .chain(logged)
    {
        assert!(log.contains(want), "{spec}: no {want:?} in the log:\n{log}");
    }

    c.restart_with_env(1, &[]);
    c.wait_for_leader();
    for (k, v) in &acked {
        c.assert_value(1, k, v.as_bytes());
    }
    c.put_ok(1, "after", b"the disk is back");
    c.check_alive();
}

#[test]
fn a_failed_wal_fsync_stops_the_node_and_loses_nothing() {
    wal_fault_stops_the_node_and_loses_nothing("wal-sync:40:eio", &["fsync", "Input/output error"]);
}

#[test]
fn a_full_disk_under_the_wal_stops_the_node_and_loses_nothing() {
    wal_fault_stops_the_node_and_loses_nothing(
        "wal-write:40:enospc",
        &["writing", "No space left on device"],
    );
}

#[test]
fn a_short_wal_write_stops_the_node_and_loses_nothing() {
    // Half a batch reaches the file: the restart cuts it as a torn tail (it was never
    // acknowledged) and keeps everything before it.
    wal_fault_stops_the_node_and_loses_nothing(
        "wal-write:40:short",
        &["writing", "No space left on device"],
    );
}

#[test]
fn a_failed_snapshot_fsync_is_retried_while_the_node_serves() {
    let (mut c, _) = Cluster::start_with_leader(1, &["--snapshot-count", "20"]);
    c.stop(1);
    c.restart_with_env(1, &[(FAILPOINT, "snapshot-sync:1:eio")]);
    c.wait_for_leader();
    let mut keys = Vec::new();
    let mut i = 0;
    let retried = wait_until(WAIT_TIMEOUT, || {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        c.put_ok(1, &k, v.as_bytes());
        keys.push((k, v));
        i += 1;
        c.log_text(1)
            .contains("writing a snapshot failed; serving on")
    });
    assert!(retried, "no failed snapshot:\n{}", c.log_text(1));
    assert!(c.log_text(1).contains("Input/output error"));
    c.check_alive();
    // Nothing was compacted, and everything is there after a restart without the fault.
    let status = c.status(1);
    assert_eq!(field(&status, "snapshot_index"), 1, "{status}");
    c.stop(1);
    c.restart_with_env(1, &[]);
    c.wait_for_leader();
    for (k, v) in &keys {
        c.assert_value(1, k, v.as_bytes());
    }
}
