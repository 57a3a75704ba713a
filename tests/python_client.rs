//! A second language's etcd client unchanged against coordinate: python-etcd3 (PyPI's
//! `etcd3`, which `.ci/run` installs) runs `tests/python/etcd3_client.py` — keys,
//! transactions, leases, watches, a lock, members, compaction, maintenance, a snapshot —
//! against a follower of a three-node cluster.

mod common;

use std::process::Command;

use common::Cluster;

#[test]
fn python_etcd3_works_unchanged() {
    let (c, leader) = Cluster::start_with_leader(3, &[]);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/etcd3_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(c.endpoint(follower))
        .arg(c.size().to_string())
        // The library's generated protobuf modules predate protobuf 4's C++ parser; the pure
        // Python one reads them (python-etcd3's own advice).
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .expect("run python3 (python-etcd3: pip install etcd3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        c.fail(&format!("python-etcd3 failed:\n{stdout}\n{stderr}"));
    }
    assert!(stdout.contains("every check passed"), "{stdout}\n{stderr}");
}
