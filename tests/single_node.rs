//! One `coordinate` process: the HTTP contract, flag validation, shutdown and recovery.

mod common;

use std::net::TcpListener;

use common::{field, free_port, raw_put_status, role, run_to_exit, Cluster};

const MIB: usize = 1 << 20;

#[test]
fn put_then_get_returns_the_value() {
    let (c, leader) = Cluster::start_with_leader(1, &[]);
    assert_eq!(leader, 1);
    c.put_ok(1, "hello", b"world");
    c.assert_value(1, "hello", b"world");
}

#[test]
fn missing_key_is_404() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let (status, _) = c.get(1, "never-written").expect("GET");
    assert_eq!(status, 404, "GET of a key never written");
    // Writing another key does not make this one appear.
    c.put_ok(1, "other", b"x");
    let (status, _) = c.get(1, "never-written").expect("GET");
    assert_eq!(
        status, 404,
        "GET of a key never written, after another write"
    );
}

#[test]
fn overwrite_returns_latest_value() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    c.put_ok(1, "k", b"first");
    c.assert_value(1, "k", b"first");
    c.put_ok(1, "k", b"second, longer value");
    c.assert_value(1, "k", b"second, longer value");
    c.put_ok(1, "k", b"3");
    c.assert_value(1, "k", b"3");
}

#[test]
fn keys_with_slashes_and_percent_encoding() {
    let (c, _) = Cluster::start_with_leader(1, &[]);

    // "a b/c": the key is the percent-decoded path after the first '/'.
    c.put_ok(1, "a%20b/c", b"spaced");
    c.assert_value(1, "a%20b/c", b"spaced");
    // The same key, encoded differently, is the same key.
    c.assert_value(1, "a%20b%2Fc", b"spaced");
    // "a%20b/c" literally (the '%' encoded) is another key.
    let (status, _) = c.get(1, "a%2520b/c").expect("GET");
    assert_eq!(status, 404, "key \"a%20b/c\" was never written");
    // Prefixes and extensions of a key are other keys.
    for other in ["a%20b", "a%20b/c/d", "a%20b/"] {
        let (status, _) = c.get(1, other).expect("GET");
        assert_eq!(status, 404, "GET /{other} must not find key \"a b/c\"");
    }

    // Deep paths and UTF-8 ("é" = %C3%A9).
    c.put_ok(1, "x/y/z/%C3%A9t%C3%A9", b"summer");
    c.assert_value(1, "x/y/z/%C3%A9t%C3%A9", b"summer");
    // A key that merely starts like a reserved name is an ordinary key.
    c.put_ok(1, "healthy", b"yes");
    c.assert_value(1, "healthy", b"yes");
}

#[test]
fn empty_and_binary_values_round_trip() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    c.put_ok(1, "empty", b"");
    c.assert_value(1, "empty", b"");

    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    c.put_ok(1, "binary", &binary);
    c.assert_value(1, "binary", &binary);

    // An empty value is a value: overwriting with it does not delete the key.
    c.put_ok(1, "binary", b"");
    c.assert_value(1, "binary", b"");
}

#[test]
fn value_limit_is_one_mib() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let exactly = vec![b'v'; MIB];
    c.put_ok(1, "big", &exactly);
    c.assert_value(1, "big", &exactly);

    let addr = c.client_url(1).trim_start_matches("http://").to_string();
    let status = raw_put_status(&addr, "/too-big", MIB + 1);
    assert_eq!(status, 413, "PUT of 1 MiB + 1 byte");
    let (status, _) = c.get(1, "too-big").expect("GET");
    assert_eq!(status, 404, "a rejected write must not be stored");

    // The node still works after rejecting a request mid-body.
    c.put_ok(1, "after", b"ok");
    c.assert_value(1, "after", b"ok");
}

#[test]
fn reserved_keys_are_rejected_on_write() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    // The design says 400; a router may answer /v1/... with 404 or 405 instead. Any 4xx
    // with the write not applied satisfies the contract that these keys are not addressable.
    for key in ["health", "metrics", "v1/x", "v1/status"] {
        let status = c.put(1, key, b"nope").expect("PUT");
        assert!(
            (400..500).contains(&status),
            "PUT /{key} answered {status}, want 4xx"
        );
    }
    // None of them was written: the status endpoint still serves status.
    let status = c.status(1);
    assert_eq!(
        field(&status, "id"),
        1,
        "/v1/status after PUT /v1/status: {status}"
    );
}

#[test]
fn status_reports_a_consistent_single_node_leader() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    c.put_ok(1, "k", b"v");
    let s = c.status(1);
    assert_eq!(field(&s, "id"), 1, "{s}");
    assert_eq!(role(&s), "leader", "{s}");
    assert_eq!(field(&s, "leader"), 1, "{s}");
    assert!(field(&s, "term") >= 1, "{s}");
    let (commit, applied) = (field(&s, "commit_index"), field(&s, "applied_index"));
    let (first, last) = (field(&s, "first_index"), field(&s, "last_index"));
    let snapshot = field(&s, "snapshot_index");
    // The acknowledged PUT is applied, so at least one entry is committed and applied.
    assert!(applied >= 1, "{s}");
    assert!(applied <= commit, "applied beyond commit: {s}");
    assert!(commit <= last, "commit beyond the log: {s}");
    assert!(snapshot <= applied, "snapshot beyond applied: {s}");
    assert!(first >= 1 && first <= last + 1, "{s}");
}

#[test]
fn sigterm_exits_zero_and_restart_keeps_data() {
    let (mut c, _) = Cluster::start_with_leader(1, &[]);
    for i in 0..20 {
        c.put_ok(1, &format!("key-{i}"), format!("value-{i}").as_bytes());
    }
    c.put_ok(1, "key-0", b"overwritten");
    let status = c.stop(1);
    assert!(
        status.success(),
        "SIGTERM must exit with status 0, got {status}"
    );

    c.restart(1);
    c.wait_for_leader();
    c.assert_value(1, "key-0", b"overwritten");
    for i in 1..20 {
        c.assert_value(1, &format!("key-{i}"), format!("value-{i}").as_bytes());
    }
    // And it still takes writes.
    c.put_ok(1, "after-restart", b"yes");
    c.assert_value(1, "after-restart", b"yes");
}

#[test]
fn kill_9_keeps_acknowledged_writes() {
    let (mut c, _) = Cluster::start_with_leader(1, &[]);
    for i in 0..20 {
        c.put_ok(1, &format!("key-{i}"), format!("value-{i}").as_bytes());
    }
    c.kill(1);
    c.restart(1);
    c.wait_for_leader();
    for i in 0..20 {
        c.assert_value(1, &format!("key-{i}"), format!("value-{i}").as_bytes());
    }
}

#[test]
fn snapshots_compact_the_log_and_survive_restart() {
    let (mut c, _) = Cluster::start_with_leader(1, &["--snapshot-count", "10"]);
    for i in 0..60 {
        c.put_ok(1, &format!("key-{i}"), format!("value-{i}").as_bytes());
    }
    c.put_ok(1, "key-0", b"overwritten");
    let s = c.status(1);
    assert!(
        field(&s, "snapshot_index") > 0,
        "no snapshot after 61 writes with --snapshot-count 10: {s}"
    );
    assert!(
        field(&s, "first_index") > 1,
        "log not compacted after a snapshot: {s}"
    );

    // Recovery from snapshot + the WAL after it, after a crash.
    c.kill(1);
    c.restart(1);
    c.wait_for_leader();
    c.assert_value(1, "key-0", b"overwritten");
    for i in 1..60 {
        c.assert_value(1, &format!("key-{i}"), format!("value-{i}").as_bytes());
    }
}

/// `--version` names the release and the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coordinate"))
        .arg("--version")
        .output()
        .expect("run coordinate --version");
    assert!(out.status.success(), "coordinate --version: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let prefix = concat!("coordinate ", env!("CARGO_PKG_VERSION"), " (commit ");
    let commit = text
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`coordinate --version` printed {text:?}"));
    // In a git checkout it is the checkout's commit (tests are built from the tree they test).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) if std::env::var_os("COORDINATE_COMMIT").is_none() => {
            assert_eq!(commit, head, "`coordinate --version` printed {text:?}")
        }
        _ => assert!(
            !commit.is_empty(),
            "`coordinate --version` printed {text:?}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Bad flags: exit non-zero with a clear line on stderr.
// ---------------------------------------------------------------------------------------------

fn assert_rejected(what: &str, args: Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = args;
    args.push("--data-dir".to_string());
    args.push(dir.path().join("data").display().to_string());
    let (status, stderr) = run_to_exit(dir.path(), &args);
    assert!(
        !status.success(),
        "{what}: `coordinate {}` exited with {status}, want non-zero; stderr:\n{stderr}",
        args.join(" ")
    );
    assert!(
        !stderr.trim().is_empty(),
        "{what}: `coordinate {}` exited with {status} and an empty stderr",
        args.join(" ")
    );
    assert!(
        !stderr.contains("panicked"),
        "{what}: a bad flag must be reported, not panic; stderr:\n{stderr}"
    );
}

fn peer_urls(n: usize) -> String {
    (0..n)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect::<Vec<_>>()
        .join(",")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rejects_id_zero() {
    let port = free_port().to_string();
    assert_rejected(
        "--id 0",
        args(&["--id", "0", "--cluster", &peer_urls(3), "--port", &port]),
    );
}

#[test]
fn rejects_id_beyond_cluster() {
    let port = free_port().to_string();
    assert_rejected(
        "--id 4 with 3 URLs",
        args(&["--id", "4", "--cluster", &peer_urls(3), "--port", &port]),
    );
}

#[test]
fn rejects_malformed_cluster_url() {
    let port = free_port().to_string();
    assert_rejected(
        "--cluster not-a-url",
        args(&["--id", "1", "--cluster", "not-a-url", "--port", &port]),
    );
}

#[test]
fn rejects_client_port_in_use() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener
        .local_addr()
        .expect("local addr")
        .port()
        .to_string();
    assert_rejected(
        "client port in use",
        args(&["--id", "1", "--cluster", &peer_urls(1), "--port", &port]),
    );
    drop(listener);
}

#[test]
fn rejects_peer_port_in_use() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let port = free_port().to_string();
    assert_rejected(
        "peer port in use",
        args(&["--id", "1", "--cluster", &peer, "--port", &port]),
    );
    drop(listener);
}
