//! Leases, locks and elections through `coordinatectl`, against real nodes: the lease
//! commands' round trip; a lock holder killed with `kill -9` loses the lock to a waiter once
//! its lease expires; a lost lease ends a hold and kills its command; a held lock survives a
//! leader kill; contenders running `lock -- cmd` on a 3-node cluster never hold the lock
//! together; an observer sees each new leader of an election.
//!
//! Every `coordinatectl` process is a [`Ctl`], killed by pid (and reaped) when dropped. No
//! test asserts on timing: each wait is a condition with a deadline.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{wait_exit, wait_until, Cluster, WAIT_TIMEOUT};
use serde_json::Value;

const CTL: &str = env!("CARGO_BIN_EXE_coordinatectl");

/// The shortest lease TTL the server grants: a killed holder's lock is free again soonest.
const TTL: &str = "2";

/// A `coordinatectl` process whose stdout lines arrive on a channel.
struct Ctl {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Ctl {
    fn spawn(args: &[&str]) -> Ctl {
        let mut child = Command::new(CTL)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CTL}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ctl {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, waiting at most `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// SIGKILL, by pid.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT, by pid (the child is not reaped yet, so the pid is still its own).
    fn interrupt(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with our unreaped child's pid touches no memory of ours.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }

    /// Waits for the process to exit; its status and stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        let status = wait_exit(&mut self.child, WAIT_TIMEOUT)
            .unwrap_or_else(|| panic!("coordinatectl still running after {WAIT_TIMEOUT:?}"));
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        (status, stderr.join().unwrap_or_default())
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `coordinatectl <args>` to its end: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let mut ctl = Ctl::spawn(args);
    let mut out = String::new();
    while let Ok(line) = ctl.lines.recv_timeout(WAIT_TIMEOUT) {
        out.push_str(&line);
        out.push('\n');
    }
    let status = wait_exit(&mut ctl.child, WAIT_TIMEOUT).expect("coordinatectl exits");
    let stderr = std::mem::replace(&mut ctl.stderr, std::thread::spawn(String::new));
    let err = stderr.join().unwrap_or_default();
    (status.code().unwrap_or(-1), out, err)
}

/// `coordinatectl --endpoints <ep> <args>` that must exit with `code`; its stdout.
fn expect(ep: &str, args: &[&str], code: i32) -> String {
    let mut all = vec!["--endpoints", ep];
    all.extend_from_slice(args);
    let (got, out, err) = run(&all);
    assert_eq!(
        got, code,
        "{all:?}: exit {got}\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// The keys under `prefix`.
fn keys(ep: &str, prefix: &str) -> Vec<String> {
    let out = expect(ep, &["--json", "ls", prefix], 0);
    let listed: Value = serde_json::from_str(&out).expect("ls --json");
    listed["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| kv["key"].as_str().expect("key").to_string())
        .collect()
}

#[test]
fn lease_commands_round_trip() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let ep = c.client_url(1);
    let ep = ep.as_str();

    let id = expect(ep, &["lease", "grant", "60"], 0).trim().to_string();
    assert!(id.parse::<i64>().is_ok_and(|i| i > 0), "{id:?}");
    expect(
        ep,
        &["put", "svc/web-1", "http://10.0.0.5", "--lease", &id],
        0,
    );
    expect(
        ep,
        &["put", "svc/web-2", "http://10.0.0.6", "--lease", &id],
        0,
    );

    let ttl: Value =
        serde_json::from_str(&expect(ep, &["--json", "lease", "ttl", &id, "--keys"], 0))
            .expect("ttl --json");
    assert_eq!(ttl["granted_ttl"], 60);
    assert!(
        ttl["ttl"].as_i64().is_some_and(|t| t > 0 && t <= 60),
        "{ttl}"
    );
    assert_eq!(ttl["keys"], serde_json::json!(["svc/web-1", "svc/web-2"]));
    let text = expect(ep, &["lease", "ttl", &id, "--keys"], 0);
    assert!(
        text.contains("of 60 s granted") && text.contains("  svc/web-2"),
        "{text}"
    );

    assert_eq!(expect(ep, &["lease", "list"], 0), format!("{id}\n"));
    let kept = expect(ep, &["lease", "keep-alive", &id, "--once"], 0);
    assert_eq!(kept, format!("lease {id} kept alive with TTL 60\n"));

    let revoked = expect(ep, &["lease", "revoke", &id], 0);
    assert!(
        revoked.starts_with(&format!("revoked lease {id}: deleted 2 keys")),
        "{revoked}"
    );
    assert!(keys(ep, "svc/").is_empty());
    assert_eq!(expect(ep, &["lease", "list"], 0), "");
    // Gone: every lease command says so with exit 1.
    expect(ep, &["lease", "ttl", &id], 1);
    expect(ep, &["lease", "keep-alive", &id], 1);
    expect(ep, &["lease", "revoke", &id], 1);
    expect(ep, &["put", "svc/web-3", "x", "--lease", &id], 1);

    // A read at a past revision, then compacted away.
    let put = expect(ep, &["put", "cfg", "v1"], 0);
    let rev: u64 = put
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|r| r.parse().ok())
        .expect("rev");
    expect(ep, &["put", "cfg", "v2"], 0);
    assert_eq!(
        expect(ep, &["get", "cfg", "--rev", &rev.to_string()], 0),
        "v1\n"
    );
    expect(ep, &["compact", &(rev + 1).to_string()], 0);
    expect(ep, &["get", "cfg", "--rev", &rev.to_string()], 1);
    assert_eq!(expect(ep, &["get", "cfg"], 0), "v2\n");
    assert_eq!(expect(ep, &["alarm", "list"], 0), "");
}

#[test]
fn a_killed_holder_loses_the_lock_to_a_waiter() {
    let (c, _) = Cluster::start_with_leader(3, &[]);
    let eps = format!(
        "{},{},{}",
        c.client_url(1),
        c.client_url(2),
        c.client_url(3)
    );
    let ep1 = c.client_url(1);

    let mut holder = Ctl::spawn(&["--endpoints", &eps, "lock", "jobs", "--ttl", TTL]);
    let held = holder
        .line(WAIT_TIMEOUT)
        .expect("the holder prints its key");
    assert!(held.starts_with("jobs/"), "{held}");

    // The waiter queues up behind the holder, and does not get the lock while it lives.
    let waiter = Ctl::spawn(&["--endpoints", &eps, "lock", "jobs", "--ttl", TTL]);
    assert!(
        wait_until(WAIT_TIMEOUT, || keys(&ep1, "jobs/").len() == 2),
        "the waiter never queued"
    );
    // Several keep-alives of the holder pass (TTL/3 each) without the waiter getting it.
    assert_eq!(waiter.line(Duration::from_secs(3)), None);

    let killed_at = Instant::now();
    holder.kill9();
    let got = waiter.line(WAIT_TIMEOUT).expect("the waiter gets the lock");
    eprintln!(
        "the waiter got the lock {:?} after the kill",
        killed_at.elapsed()
    );
    assert!(
        got.starts_with("jobs/") && got != held,
        "{got} after {held}"
    );
    assert_eq!(keys(&ep1, "jobs/"), vec![got.clone()]);

    // Interrupted, the waiter releases: its lease and key are gone.
    waiter.interrupt();
    let (status, stderr) = waiter.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(keys(&ep1, "jobs/").is_empty());
    assert_eq!(expect(&ep1, &["lease", "list"], 0), "");
}

/// Runs of `lock -- sh -c` per contender.
const RUNS: usize = 6;

#[test]
fn contenders_never_hold_the_lock_together() {
    let (c, _) = Cluster::start_with_leader(3, &[]);
    let log = c.dir().join("critical-sections");
    // Each contender starts at a different node: followers forward to the leader.
    let orders = [
        format!(
            "{},{},{}",
            c.client_url(1),
            c.client_url(2),
            c.client_url(3)
        ),
        format!(
            "{},{},{}",
            c.client_url(3),
            c.client_url(1),
            c.client_url(2)
        ),
    ];
    let script = format!(
        "echo \"start $$\" >> '{0}'; sleep 0.05; echo \"end $$\" >> '{0}'",
        log.display()
    );
    let contenders: Vec<_> = orders
        .into_iter()
        .map(|eps| {
            let script = script.clone();
            std::thread::spawn(move || {
                for _ in 0..RUNS {
                    let args = [
                        "--endpoints",
                        &eps,
                        "lock",
                        "crit",
                        "--",
                        "sh",
                        "-c",
                        &script,
                    ];
                    let (code, out, err) = run(&args);
                    assert_eq!(code, 0, "lock -- sh: stdout {out}, stderr {err}");
                }
            })
        })
        .collect();
    for contender in contenders {
        contender.join().expect("a contender failed");
    }

    let text = std::fs::read_to_string(&log).expect("the critical sections' log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * 2 * RUNS, "{text}");
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ");
        let end = pair[1].strip_prefix("end ");
        assert!(
            start.is_some() && start == end,
            "two critical sections overlapped:\n{text}"
        );
    }
    assert!(keys(&c.client_url(1), "crit/").is_empty());
}

#[test]
fn an_observer_sees_each_leader() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let ep = c.client_url(1);
    let observer = Ctl::spawn(&["--endpoints", &ep, "elect", "db", "--listen"]);
    let first = Ctl::spawn(&["--endpoints", &ep, "elect", "db", "node-a", "--ttl", TTL]);
    assert_eq!(first.line(WAIT_TIMEOUT).as_deref(), Some("node-a"));
    assert_eq!(observer.line(WAIT_TIMEOUT).as_deref(), Some("node-a"));
    let second = Ctl::spawn(&["--endpoints", &ep, "elect", "db", "node-b", "--ttl", TTL]);
    assert!(wait_until(WAIT_TIMEOUT, || keys(&ep, "db/").len() == 2));

    // The leader resigns (SIGINT): the next campaigner leads, the observer sees it.
    first.interrupt();
    let (status, stderr) = first.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(second.line(WAIT_TIMEOUT).as_deref(), Some("node-b"));
    assert_eq!(observer.line(WAIT_TIMEOUT).as_deref(), Some("node-b"));
    second.interrupt();
    assert!(second.finish().0.success());
    observer.interrupt();
    assert!(observer.finish().0.success());
}

/// The lease id in a lock key (`<name>/<lease id in hex>`), in decimal.
fn lease_of(key: &str) -> String {
    let hex = key.rsplit('/').next().expect("a lock key");
    i64::from_str_radix(hex, 16)
        .expect("hex lease id")
        .to_string()
}

#[test]
fn a_lost_lease_ends_the_hold_and_kills_the_command() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let ep = c.client_url(1);

    // Without a command: the holder exits non-zero, saying it lost the lock.
    let holder = Ctl::spawn(&["--endpoints", &ep, "lock", "a", "--ttl", "30"]);
    let key = holder
        .line(WAIT_TIMEOUT)
        .expect("the holder prints its key");
    expect(&ep, &["lease", "revoke", &lease_of(&key)], 0);
    let (status, stderr) = holder.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost the lock"), "{stderr}");

    // With a command: it is killed, and the lock's exit says why.
    let pid_file = c.dir().join("command.pid");
    let script = format!("echo $$ > '{}'; exec sleep 60", pid_file.display());
    let holder = Ctl::spawn(&[
        "--endpoints",
        &ep,
        "lock",
        "b",
        "--ttl",
        "30",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let mut pid = String::new();
    assert!(
        wait_until(WAIT_TIMEOUT, || {
            pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
            pid.ends_with('\n')
        }),
        "the command never started"
    );
    let key = keys(&ep, "b/").pop().expect("the holder's key");
    expect(&ep, &["lease", "revoke", &lease_of(&key)], 0);
    let (status, stderr) = holder.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("killed the command"), "{stderr}");
    // The command was killed and reaped by coordinatectl: its pid is gone.
    let proc_dir = format!("/proc/{}", pid.trim());
    assert!(
        !std::path::Path::new(&proc_dir).exists(),
        "{proc_dir} still exists"
    );

    // A command that fails: its exit status is the lock's, and the lock is released.
    let (code, _, _) = run(&["--endpoints", &ep, "lock", "c", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    assert!(keys(&ep, "c/").is_empty());
    assert_eq!(expect(&ep, &["lease", "list"], 0), "");
}

#[test]
fn a_held_lock_survives_a_leader_kill() {
    let (mut c, leader) = Cluster::start_with_leader(3, &[]);
    let eps = format!(
        "{},{},{}",
        c.client_url(1),
        c.client_url(2),
        c.client_url(3)
    );
    // A TTL well above an election plus one request's wait for a leader.
    let holder = Ctl::spawn(&["--endpoints", &eps, "lock", "jobs", "--ttl", "6"]);
    let key = holder
        .line(WAIT_TIMEOUT)
        .expect("the holder prints its key");

    c.kill(leader);
    let new_leader = c.wait_for_leader();
    let ep = c.client_url(new_leader);
    // Keep-alives reach the new leader: after a few of them (TTL/3 each), the holder still
    // holds the lock and says nothing, and a second locker has to wait.
    let waiter = Ctl::spawn(&["--endpoints", &ep, "lock", "jobs", "--ttl", "6"]);
    assert!(
        wait_until(WAIT_TIMEOUT, || keys(&ep, "jobs/").len() == 2),
        "the waiter never queued"
    );
    assert_eq!(holder.line(Duration::from_secs(3)), None);
    assert_eq!(waiter.line(Duration::from_millis(100)), None);
    assert!(keys(&ep, "jobs/").contains(&key));

    // Released, it passes to the waiter at once.
    holder.interrupt();
    let (status, stderr) = holder.finish();
    assert!(status.success(), "{status}: {stderr}");
    let got = waiter.line(WAIT_TIMEOUT).expect("the waiter gets the lock");
    assert_ne!(got, key);
}
