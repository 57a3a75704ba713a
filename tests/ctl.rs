//! `coordinatectl` against a real node: outputs and exit codes of every subcommand, a watch
//! followed from a past revision, and failover from a dead endpoint to a live one.
//!
//! Exit codes under test: 0 success, 1 refused (not found, precondition failed), 2 usage
//! error, 3 unavailable or outcome unknown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{free_port, wait_exit, Cluster, WAIT_TIMEOUT};
use serde_json::Value;

const CTL: &str = env!("CARGO_BIN_EXE_coordinatectl");

/// What one `coordinatectl` run did.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.out()))
    }
}

/// Runs `coordinatectl <args>` (with `stdin` as its input), waiting at most the harness's
/// timeout; kills it (by pid) and panics if it does not exit by then.
fn ctl_with_stdin(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(CTL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {CTL}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let status = match wait_exit(&mut child, WAIT_TIMEOUT) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("coordinatectl {args:?} still running after {WAIT_TIMEOUT:?}");
        }
    };
    writer.join().expect("stdin writer");
    let stdout = stdout.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned();
    Run {
        code: status
            .code()
            .unwrap_or_else(|| panic!("coordinatectl {args:?} killed by a signal: {status}")),
        stdout,
        stderr,
    }
}

fn ctl(args: &[&str]) -> Run {
    ctl_with_stdin(args, b"")
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// `coordinatectl --endpoints <endpoints> <args>` that must exit with `code`.
fn expect(endpoints: &str, args: &[&str], code: i32) -> Run {
    let mut all = vec!["--endpoints", endpoints];
    all.extend_from_slice(args);
    let run = ctl(&all);
    assert_eq!(
        run.code,
        code,
        "coordinatectl {all:?}: exit {}, want {code}\nstdout: {}\nstderr: {}",
        run.code,
        run.out(),
        run.stderr
    );
    run
}

/// A loopback endpoint nobody listens on.
fn dead_endpoint() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn put_get_del_and_conditions() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let ep = c.client_url(1);
    let ep = ep.as_str();

    let put = expect(ep, &["put", "config/db", "postgres://db1"], 0);
    assert!(
        put.out().starts_with("wrote config/db at revision "),
        "{}",
        put.out()
    );
    // Piped stdout: the raw value, byte for byte.
    assert_eq!(
        expect(ep, &["get", "config/db"], 0).stdout,
        b"postgres://db1"
    );

    let got = expect(ep, &["--json", "get", "config/db"], 0).json();
    assert_eq!(got["key"], "config/db");
    assert_eq!(got["value"], "postgres://db1");
    assert_eq!(got["version"], 1);
    let rev = got["mod_revision"].as_u64().expect("mod_revision");
    assert_eq!(got["create_revision"].as_u64(), Some(rev));
    assert!(got["revision"].as_u64().expect("revision") >= rev);
    // The same through a serializable read.
    assert_eq!(
        expect(ep, &["get", "config/db", "--serializable"], 0).stdout,
        b"postgres://db1"
    );

    // Conditions: the refusal says why and exits 1.
    let refused = expect(ep, &["put", "config/db", "x", "--if-absent"], 1);
    assert!(
        refused.stderr.contains("precondition failed"),
        "{}",
        refused.stderr
    );
    let stale = rev + 100;
    let refused = expect(
        ep,
        &[
            "--json",
            "put",
            "config/db",
            "x",
            "--if-match",
            &stale.to_string(),
        ],
        1,
    );
    assert_eq!(refused.json()["current_revision"].as_u64(), Some(rev));
    let put = expect(
        ep,
        &[
            "--json",
            "put",
            "config/db",
            "postgres://db2",
            "--if-match",
            &rev.to_string(),
        ],
        0,
    );
    let rev2 = put.json()["revision"].as_u64().expect("revision");
    assert!(rev2 > rev);
    assert_eq!(
        expect(ep, &["get", "config/db"], 0).stdout,
        b"postgres://db2"
    );
    expect(ep, &["put", "fresh", "v", "--if-absent"], 0);

    // A value from stdin, binary included; a value that looks like a flag.
    let binary: Vec<u8> = (0..=255u8).collect();
    let mut args = vec!["--endpoints", ep, "put", "bin", "-"];
    let run = ctl_with_stdin(&args, &binary);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(expect(ep, &["get", "bin"], 0).stdout, binary);
    let got = expect(ep, &["--json", "get", "bin"], 0).json();
    assert_eq!(got["encoding"], "base64");
    args[3] = "dash";
    args[4] = "-n";
    assert_eq!(ctl(&args).code, 0);
    assert_eq!(expect(ep, &["get", "dash"], 0).stdout, b"-n");

    // Not found is exit 1 with the reason.
    let missing = expect(ep, &["get", "never-written"], 1);
    assert!(
        missing.stderr.contains("key not found"),
        "{}",
        missing.stderr
    );
    assert!(missing.stdout.is_empty());

    // Deletes: a stale condition, then for real, then again.
    expect(ep, &["del", "config/db", "--if-match", &rev.to_string()], 1);
    let del = expect(
        ep,
        &["del", "config/db", "--if-match", &rev2.to_string()],
        0,
    );
    assert!(
        del.out().starts_with("deleted config/db at revision "),
        "{}",
        del.out()
    );
    let again = expect(ep, &["del", "config/db"], 1);
    assert!(again.stderr.contains("key not found"), "{}", again.stderr);
    expect(ep, &["get", "config/db"], 1);
}

#[test]
fn ls_pages_through_every_key_and_del_prefix() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let ep = c.client_url(1);
    let ep = ep.as_str();
    let keys: Vec<String> = (0..7).map(|i| format!("p/{i:02}")).collect();
    for k in &keys {
        c.put_ok(1, k, format!("value of {k}").as_bytes());
    }
    c.put_ok(1, "q", b"outside the prefix");

    // Pages of 2: every key, once, in order.
    let listed = expect(ep, &["--json", "ls", "p/", "--page-size", "2"], 0).json();
    let got: Vec<&str> = listed["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| kv["key"].as_str().expect("key"))
        .collect();
    assert_eq!(got, keys.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(listed["more"], false);
    assert_eq!(listed["kvs"][3]["value"], "value of p/03");

    // The table: a header, then one aligned row per key.
    let table = expect(ep, &["ls", "p/", "--page-size", "3"], 0).out();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 8, "{table}");
    assert!(lines[0].starts_with("KEY "), "{table}");
    assert!(
        lines[1].starts_with("p/00 ") && lines[1].ends_with("value of p/00"),
        "{table}"
    );
    let value_column = lines[0].find("VALUE").expect("VALUE column");
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.find("value of") == Some(value_column)),
        "{table}"
    );

    // A limit stops early and says there is more.
    let limited = expect(
        ep,
        &["--json", "ls", "p/", "--limit", "3", "--page-size", "2"],
        0,
    )
    .json();
    assert_eq!(limited["kvs"].as_array().map(Vec::len), Some(3));
    assert_eq!(limited["more"], true);
    // No prefix: everything.
    let all = expect(ep, &["--json", "ls"], 0).json();
    assert_eq!(all["kvs"].as_array().map(Vec::len), Some(8));

    let del = expect(ep, &["del", "p/", "--prefix"], 0);
    assert!(
        del.out().starts_with("deleted 7 keys with prefix \"p/\""),
        "{}",
        del.out()
    );
    assert!(expect(ep, &["ls", "p/"], 0).stdout.is_empty());
    assert_eq!(expect(ep, &["get", "q"], 0).stdout, b"outside the prefix");
}

#[test]
fn members_status_and_health() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let ep = c.client_url(1);
    let ep = ep.as_str();
    let peer = &c.peer_urls()[0];

    let members = expect(ep, &["members"], 0).out();
    let lines: Vec<&str> = members.lines().collect();
    assert!(lines[0].starts_with("ID  ROLE"), "{members}");
    assert!(
        lines[1].starts_with("1 ") && lines[1].contains("voter"),
        "{members}"
    );
    assert!(
        lines[1].contains(peer.as_str()) && lines[1].contains("yes"),
        "{members}"
    );
    let json = expect(ep, &["--json", "members"], 0).json();
    assert_eq!(json[0]["peer_url"], peer.as_str());

    let status = expect(ep, &["status"], 0).out();
    let row = |name: &str| {
        status
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    };
    assert_eq!(row("role").as_deref(), Some("leader"), "{status}");
    assert_eq!(row("compact_revision").as_deref(), Some("0"), "{status}");
    assert!(status.contains("\nmembers:\n"), "{status}");
    let json = expect(ep, &["--json", "status"], 0).json();
    assert_eq!(json["id"], 1);
    assert_eq!(json["leader"], 1);

    let health = expect(ep, &["health"], 0).out();
    assert!(health.contains("is healthy (leader 1)"), "{health}");

    // Every endpoint: a dead one is reported, and the answer is exit 3.
    let dead = dead_endpoint();
    let both = format!("{ep},{dead}");
    let all = expect(&both, &["status", "--all"], 3);
    assert!(all.out().contains("leader"), "{}", all.out());
    assert!(
        all.out()
            .contains(&format!("{dead}  error: cannot connect")),
        "{}",
        all.out()
    );
    let health = expect(&both, &["--json", "health"], 3).json();
    assert_eq!(health[0]["health"], "ok");
    assert_eq!(health[1]["health"], "unreachable");

    // A refused membership change: exit 1 with the server's reason.
    let refused = expect(ep, &["member", "remove", "7"], 1);
    assert!(
        refused.stderr.contains("remove member 7"),
        "{}",
        refused.stderr
    );
}

/// A running `coordinatectl watch`, its stdout lines arriving through a reader thread.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn spawn(args: &[&str]) -> Watch {
        let mut child = Command::new(CTL)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CTL}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The next `n` lines, within the harness's timeout (else the watch is killed: panic).
    fn read(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let mut lines = Vec::new();
        while lines.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => panic!("watch printed {lines:?}, want {n} lines within {WAIT_TIMEOUT:?}"),
            }
        }
        lines
    }

    /// Stops it by pid; panics if it had exited by itself (a watch runs until stopped).
    fn stop(mut self) {
        let early = self.child.try_wait().expect("try_wait on the watch");
        let _ = self.child.kill();
        self.child.wait().expect("reap the watch");
        assert!(early.is_none(), "the watch exited by itself: {early:?}");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("reader thread");
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Already reaped by `stop`, or a failed test: make sure it is not left running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_follows_from_a_past_revision() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let ep = c.client_url(1);
    let ep = ep.as_str();
    c.put_ok(1, "before", b"not watched");
    let first = expect(ep, &["--json", "put", "w/1", "a"], 0).json()["revision"]
        .as_u64()
        .expect("revision");
    c.put_ok(1, "elsewhere", b"not watched");
    expect(ep, &["put", "w/2", "b"], 0);

    let from = first.to_string();
    let mut watch = Watch::spawn(&[
        "--endpoints",
        ep,
        "--json",
        "watch",
        "w/",
        "--prefix",
        "--from-revision",
        &from,
    ]);

    // The backlog from `first`, then live changes, in order; other keys are not shown.
    let backlog = watch.read(2);
    expect(ep, &["put", "unrelated", "x"], 0);
    expect(ep, &["del", "w/1"], 0);
    let live = watch.read(1);

    let events: Vec<Value> = backlog
        .iter()
        .chain(&live)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or(""),
                e["key"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![("put", "w/1"), ("put", "w/2"), ("delete", "w/1")]
    );
    assert_eq!(events[0]["revision"].as_u64(), Some(first));
    assert_eq!(events[1]["value"], "b");
    let revs: Vec<u64> = events
        .iter()
        .filter_map(|e| e["revision"].as_u64())
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    // It runs until stopped.
    watch.stop();

    // Human output; revision 1 is still in the window.
    let mut watch = Watch::spawn(&["--endpoints", ep, "watch", "w/2", "--from-revision", "1"]);
    let line = &watch.read(1)[0];
    assert!(line.starts_with("put w/2 = b (revision "), "{line}");
    watch.stop();
}

#[test]
fn watch_before_the_compaction_point_is_refused() {
    let (c, _) = Cluster::start_with_leader(1, &["--watch-window", "2"]);
    let ep = c.client_url(1);
    let ep = ep.as_str();
    for i in 0..5 {
        c.put_ok(1, &format!("k{i}"), b"v");
    }
    let compacted = expect(ep, &["compact", "4"], 0);
    assert_eq!(compacted.out(), "compacted the history before revision 4\n");
    let gone = expect(ep, &["--json", "watch", "k0", "--from-revision", "1"], 1);
    assert!(
        gone.stderr.contains("no longer available"),
        "{}",
        gone.stderr
    );
    assert_eq!(gone.json()["oldest_revision"].as_u64(), Some(4));
}

#[test]
fn failover_skips_a_dead_endpoint() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let live = c.client_url(1);
    let dead = dead_endpoint();
    let both = format!("{dead},{live}");

    expect(&both, &["put", "k", "through the second endpoint"], 0);
    assert_eq!(
        expect(&both, &["get", "k"], 0).stdout,
        b"through the second endpoint"
    );
    expect(&both, &["status"], 0);

    // Only dead endpoints: unavailable, and every one is named.
    let other_dead = dead_endpoint();
    let run = expect(&format!("{dead},{other_dead}"), &["put", "k", "v"], 3);
    assert!(
        run.stderr.contains(&dead) && run.stderr.contains(&other_dead),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
    expect(&dead, &["get", "k"], 3);
    assert_eq!(
        expect(&live, &["get", "k"], 0).stdout,
        b"through the second endpoint"
    );
}

#[test]
fn lost_quorum_exits_3() {
    let (mut c, _) = Cluster::start_with_leader(3, &["--request-timeout-ms", "1000"]);
    let ep = c.client_url(1);
    let ep = ep.as_str();
    // Two of three voters gone: node 1 alone has no quorum.
    c.kill(2);
    c.kill(3);
    let run = expect(ep, &["put", "k", "v"], 3);
    assert!(
        run.stderr.contains("outcome unknown") || run.stderr.contains("not applied"),
        "{}",
        run.stderr
    );
    expect(ep, &["get", "k"], 3);
    // A serializable read is still served by this node alone.
    expect(ep, &["get", "k", "--serializable"], 1);

    // A 503 moves on to the next endpoint. (A second, healthy cluster stands in for a healthy
    // node here: only the client's choice is under test.)
    let (healthy, _) = Cluster::start_with_leader(1, &[]);
    healthy.put_ok(1, "k", b"from the next endpoint");
    let both = format!("{ep},{}", healthy.client_url(1));
    let run = expect(&both, &["get", "k"], 0);
    assert_eq!(run.stdout, b"from the next endpoint");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["put", "k"][..],
        &["put", "k", "v", "--if-match", "1", "--if-absent"],
        &["--endpoints", "not-an-endpoint", "health"],
        &["get", ""],
        &["frobnicate"],
    ] {
        let run = ctl(args);
        assert_eq!(run.code, 2, "coordinatectl {args:?}: {}", run.stderr);
        assert!(
            !run.stderr.is_empty(),
            "coordinatectl {args:?} said nothing"
        );
    }
    assert_eq!(ctl(&["--help"]).code, 0);
}
