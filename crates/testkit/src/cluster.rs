//! The tests' cluster: real `coordinate` processes on loopback.
//!
//! Every test starts its own [`Cluster`] in its own temporary directory, with ports from
//! [`free_port`], and stops every process it started by pid (the [`Drop`] impl kills whatever
//! is still running). Nothing here sleeps and hopes: every wait is a poll of a condition with a
//! deadline ([`wait_until`]), and a timeout panics with the tail of every node's log, which is
//! also printed whenever a test panics while a cluster is alive.
//!
//! Each node's stdout and stderr go to `<tmp>/node-<id>.log` (appended across restarts, with a
//! marker line per start). Set `COORDINATE_TEST_KEEP_DIR=1` to keep the temporary directory of
//! a failed test, and `COORDINATE_TEST_LOG_LEVEL=debug` to pass `--log-level` to every node.
//!
//! This is a test harness: a failure panics (with logs), it is never returned.

mod membership;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::certs::Certs;
use crate::client::{field, show, Client, REQUEST_TIMEOUT};
use crate::log::tail;
use crate::ports::free_port;
use crate::process::{NodeProcess, Signal};
use crate::wait::{wait_exit, wait_until, POLL_INTERVAL, WAIT_TIMEOUT};

/// Lines of each node's log printed on failure.
const LOG_TAIL_LINES: usize = 60;

/// Names the harness in the node logs' marker lines.
const STARTER: &str = "harness";

struct Node {
    id: u64,
    client_port: u16,
    data_dir: PathBuf,
    process: NodeProcess,
}

impl Node {
    fn new(id: u64, client_port: u16, dir: &Path) -> Node {
        Node {
            id,
            client_port,
            data_dir: dir.join(format!("node-{id}")),
            process: NodeProcess::new(id, dir.join(format!("node-{id}.log")), STARTER),
        }
    }
}

/// `n` coordinate processes on loopback, node `i` with `--id i`, its own data dir and log.
pub struct Cluster {
    /// The `coordinate` binary.
    bin: PathBuf,
    nodes: Vec<Node>,
    peer_urls: Vec<String>,
    extra_args: Vec<String>,
    /// Arguments for one node only (e.g. `--join`).
    extra_for: HashMap<u64, Vec<String>>,
    /// Environment variables for one node's next starts (e.g. an injected disk fault).
    env_for: HashMap<u64, Vec<(String, String)>>,
    client: Client,
    /// With TLS on both ports: the cluster's CA and certificates.
    certs: Option<Certs>,
    dir: Option<tempfile::TempDir>,
}

/// How a cluster's ports speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP between peers, plain HTTP on the client ports.
    Plain,
    /// Peer mTLS with a certificate per member, client TLS requiring client certificates.
    Tls,
    /// `--peer-auto-tls`: peers encrypt with self-signed certificates, verifying nothing;
    /// plain HTTP on the client ports.
    PeerAutoTls,
}

impl Cluster {
    /// Spawns `n` nodes (ids 1..=n) of `bin` with `extra_args` appended to each command line.
    /// Does not wait for them: call [`Cluster::wait_for_leader`].
    pub fn start(bin: impl Into<PathBuf>, n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_as(Security::Plain, bin, n, extra_args)
    }

    /// [`Cluster::start`] with the ports speaking as `security` says.
    pub fn start_as(
        security: Security,
        bin: impl Into<PathBuf>,
        n: usize,
        extra_args: &[&str],
    ) -> Cluster {
        let mut cluster = Cluster::prepare_as(security, bin, n, extra_args);
        for id in 1..=n as u64 {
            cluster.spawn(id);
        }
        cluster
    }

    /// [`Cluster::start_as`] without starting any node: its ports, peer URLs, certificates
    /// and data directories are chosen, for a test to prepare (e.g. restore a backup into)
    /// before [`Cluster::start_node`].
    pub fn prepare_as(
        security: Security,
        bin: impl Into<PathBuf>,
        n: usize,
        extra_args: &[&str],
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("coordinate-test-")
            .tempdir()
            .expect("create temp dir");
        let certs = (security == Security::Tls).then(|| Certs::new(&dir.path().join("certs")));
        let scheme = match certs {
            Some(_) => "https",
            None => "http",
        };
        let peer_scheme = match security {
            Security::Plain => "http",
            Security::Tls | Security::PeerAutoTls => "https",
        };
        let peer_urls: Vec<String> = (0..n)
            .map(|_| format!("{peer_scheme}://127.0.0.1:{}", free_port()))
            .collect();
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        if security == Security::PeerAutoTls {
            extra_args.push("--peer-auto-tls".into());
        }
        if let Some(certs) = &certs {
            for (i, url) in peer_urls.iter().enumerate() {
                certs.issue_member(i as u64 + 1, url);
            }
        }
        let nodes: Vec<Node> = (1..=n as u64)
            .map(|id| Node::new(id, free_port(), dir.path()))
            .collect();
        let urls = nodes
            .iter()
            .map(|node| format!("{scheme}://127.0.0.1:{}", node.client_port))
            .collect();
        let client =
            Client::new(urls, REQUEST_TIMEOUT).with_tls(certs.as_ref().map(Certs::client_tls));
        Cluster {
            bin: bin.into(),
            nodes,
            peer_urls,
            extra_args,
            extra_for: Default::default(),
            env_for: Default::default(),
            client,
            certs,
            dir: Some(dir),
        }
    }

    /// Starts node `id` of a prepared cluster (or a stopped one: as [`Cluster::restart`]).
    pub fn start_node(&mut self, id: u64) {
        self.spawn(id);
    }

    /// [`Cluster::start`], then wait until the nodes agree on a leader; returns the cluster
    /// and the leader's id.
    pub fn start_with_leader(
        bin: impl Into<PathBuf>,
        n: usize,
        extra_args: &[&str],
    ) -> (Cluster, u64) {
        let mut cluster = Cluster::start(bin, n, extra_args);
        let leader = cluster.wait_for_leader();
        (cluster, leader)
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Ids of the nodes whose process this cluster started and has not stopped.
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_running())
            .map(|n| n.id)
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    pub fn client_url(&self, id: u64) -> String {
        self.client.url(id).to_string()
    }

    pub fn peer_urls(&self) -> &[String] {
        &self.peer_urls
    }

    /// A client for this cluster's nodes (with the default timeout).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client for this cluster's nodes with another per-request timeout.
    pub fn client_with_timeout(&self, timeout: Duration) -> Client {
        Client::new(self.client.urls.clone(), timeout).with_tls(self.client.tls.clone())
    }

    /// The cluster's CA and certificates, if its ports speak TLS.
    pub fn certs(&self) -> Option<&Certs> {
        self.certs.as_ref()
    }

    /// `"https"` if the cluster's client ports speak TLS, else `"http"`.
    pub fn scheme(&self) -> &'static str {
        match self.certs {
            Some(_) => "https",
            None => "http",
        }
    }

    /// The scheme of the cluster's peer URLs.
    pub fn peer_scheme(&self) -> &str {
        self.peer_urls
            .first()
            .and_then(|u| u.split_once("://"))
            .map_or("http", |(scheme, _)| scheme)
    }

    /// The command line of node `id` (without the binary).
    pub fn args(&self, id: u64) -> Vec<String> {
        let node = self.node(id);
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--cluster".to_string(),
            self.peer_urls.join(","),
            "--port".to_string(),
            node.client_port.to_string(),
            "--data-dir".to_string(),
            node.data_dir.display().to_string(),
        ];
        if let Ok(level) = std::env::var("COORDINATE_TEST_LOG_LEVEL") {
            args.push("--log-level".to_string());
            args.push(level);
        }
        if let Some(certs) = &self.certs {
            args.extend(certs.member_args(id));
        }
        args.extend(self.extra_args.iter().cloned());
        if let Some(extra) = self.extra_for.get(&id) {
            args.extend(extra.iter().cloned());
        }
        args
    }

    fn node(&self, id: u64) -> &Node {
        assert!(
            id >= 1 && id as usize <= self.nodes.len(),
            "no node {id} in a cluster of {}",
            self.nodes.len()
        );
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        assert!(
            id >= 1 && id as usize <= self.nodes.len(),
            "no node {id} in a cluster of {}",
            self.nodes.len()
        );
        &mut self.nodes[(id - 1) as usize]
    }

    fn spawn(&mut self, id: u64) {
        let args = self.args(id);
        let mut cmd = Command::new(&self.bin);
        cmd.args(&args).current_dir(self.dir());
        let env = self.env_for.get(&id).cloned().unwrap_or_default();
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let shown: String = env
            .iter()
            .map(|(k, v)| format!("{k}={v} "))
            .chain([format!("{} {}", self.bin.display(), args.join(" "))])
            .collect();
        let node = self.node_mut(id);
        assert!(!node.process.is_running(), "node {id} is already running");
        if let Err(e) = node.process.start(cmd, &shown) {
            panic!("{e}");
        }
    }

    /// Starts node `id` again with the same command line and data dir.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
    }

    /// Starts node `id` again with `env` added to its environment, for this start and the
    /// next ones (an empty `env` clears what was set).
    pub fn restart_with_env(&mut self, id: u64, env: &[(&str, &str)]) {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.env_for.insert(id, env);
        self.spawn(id);
    }

    /// SIGTERM to node `id`, then waits for it to exit; returns its exit status.
    pub fn stop(&mut self, id: u64) -> ExitStatus {
        let process = &mut self.node_mut(id).process;
        assert!(process.is_running(), "stop: node {id} is not running");
        process.signal(Signal::Term);
        match process.wait_exit(WAIT_TIMEOUT).expect("wait for a node") {
            Some(status) => status,
            None => {
                let _ = process.kill();
                self.fail(&format!(
                    "node {id} did not exit within {WAIT_TIMEOUT:?} of SIGTERM (killed it)"
                ));
            }
        }
    }

    /// SIGKILL to node `id` (by pid), then reaps it.
    pub fn kill(&mut self, id: u64) {
        let process = &mut self.node_mut(id).process;
        assert!(process.is_running(), "kill: node {id} is not running");
        process.kill().expect("wait for killed node");
    }

    /// The pid of node `id`'s process, if it is running.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).process.pid()
    }

    /// The log file of node `id`, as text so far.
    pub fn log_text(&self, id: u64) -> String {
        self.node(id).process.log_text()
    }

    /// Panics if a node this cluster believes is running has exited.
    pub fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for node in &mut self.nodes {
            if let Some(status) = node.process.try_exit().expect("try_wait on a node") {
                dead.push(format!("node {} exited unexpectedly: {status}", node.id));
            }
        }
        if !dead.is_empty() {
            self.fail(&dead.join("; "));
        }
    }

    pub fn put(
        &self,
        id: u64,
        key: &str,
        value: &[u8],
    ) -> Result<u16, coordinate_client::ClientError> {
        self.client.put(id, key, value)
    }

    pub fn get(
        &self,
        id: u64,
        key: &str,
    ) -> Result<(u16, Vec<u8>), coordinate_client::ClientError> {
        self.client.get(id, key)
    }

    /// `PUT` that must be acknowledged (204); panics with logs otherwise.
    pub fn put_ok(&self, id: u64, key: &str, value: &[u8]) {
        match self.put(id, key, value) {
            Ok(204) => {}
            Ok(status) => self.fail(&format!(
                "PUT /{key} on node {id}: status {status}, want 204"
            )),
            Err(e) => self.fail(&format!("PUT /{key} on node {id}: {e}")),
        }
    }

    /// `GET` that must answer 200 with `want`; panics with logs otherwise.
    pub fn assert_value(&self, id: u64, key: &str, want: &[u8]) {
        match self.get(id, key) {
            Ok((200, body)) if body == want => {}
            Ok((status, body)) => self.fail(&format!(
                "GET /{key} on node {id}: status {status}, body {:?}; want 200 with {:?}",
                show(&body),
                show(want)
            )),
            Err(e) => self.fail(&format!("GET /{key} on node {id}: {e}")),
        }
    }

    /// `/v1/status` of node `id`; panics with logs if it does not answer.
    pub fn status(&self, id: u64) -> serde_json::Value {
        self.client
            .try_status(id)
            .unwrap_or_else(|| self.fail(&format!("GET /v1/status on node {id} failed")))
    }

    /// Polls `/v1/status` of every live node until all of them name the same live leader,
    /// and that leader says it is the leader. Returns its id; panics with logs on timeout
    /// or if a node exits.
    pub fn wait_for_leader(&mut self) -> u64 {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            self.check_alive();
            let live = self.live_ids();
            assert!(!live.is_empty(), "wait_for_leader: no node is running");
            let statuses: Vec<(u64, Option<serde_json::Value>)> = live
                .iter()
                .map(|&id| (id, self.client.try_status(id)))
                .collect();
            if let Some(leader) = agreed_leader(&statuses) {
                return leader;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no agreed leader among {live:?} within {WAIT_TIMEOUT:?}; last statuses:\n{}",
                    show_statuses(&statuses)
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until every live node has applied everything the leader had committed when this
    /// was called. Returns the leader's id.
    pub fn wait_caught_up(&mut self) -> u64 {
        let leader = self.wait_for_leader();
        let target = field(&self.status(leader), "commit_index");
        for id in self.live_ids() {
            let caught_up = wait_until(WAIT_TIMEOUT, || {
                self.client
                    .try_status(id)
                    .map(|s| field(&s, "applied_index") >= target)
                    .unwrap_or(false)
            });
            if !caught_up {
                self.fail(&format!(
                    "node {id} did not apply up to {target} within {WAIT_TIMEOUT:?}: {:?}",
                    self.client.try_status(id)
                ));
            }
        }
        leader
    }

    /// The tail of every node's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let path = node.process.log_path();
            out.push_str(&format!(
                "\n----- node {} log ({}), last {LOG_TAIL_LINES} lines -----\n{}\n",
                node.id,
                path.display(),
                tail(path, LOG_TAIL_LINES)
            ));
        }
        out
    }

    /// Panics with `msg`; [`Drop`] prints the log tails while unwinding.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}");
    }
}

/// The leader every status names, if they all name the same one and it confirms.
fn agreed_leader(statuses: &[(u64, Option<serde_json::Value>)]) -> Option<u64> {
    let mut leader = None;
    for (_, status) in statuses {
        let named = status.as_ref()?.get("leader")?.as_u64()?;
        if named == 0 || leader.is_some_and(|l| l != named) {
            return None;
        }
        leader = Some(named);
    }
    let leader = leader?;
    let (_, status) = statuses.iter().find(|(id, _)| *id == leader)?;
    let status = status.as_ref()?;
    (status.get("role")?.as_str()? == "leader").then_some(leader)
}

/// One line per node: its last status, or that it gave none.
fn show_statuses(statuses: &[(u64, Option<serde_json::Value>)]) -> String {
    statuses
        .iter()
        .map(|(id, s)| match s {
            Some(s) => format!("node {id}: {s}"),
            None => format!("node {id}: no status"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.process.kill();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
            if std::env::var_os("COORDINATE_TEST_KEEP_DIR").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("kept test dir {}", dir.keep().display());
                }
            } else if let Some(dir) = self.dir.as_ref() {
                eprintln!(
                    "(test dir {} is removed; set COORDINATE_TEST_KEEP_DIR=1 to keep it)",
                    dir.path().display()
                );
            }
        }
    }
}

/// Runs `bin` with `args` in `dir`, expecting it to exit by itself within the wait timeout;
/// returns its exit status and its stderr. Kills it and panics if it keeps running.
pub fn run_to_exit(bin: impl AsRef<Path>, dir: &Path, args: &[String]) -> (ExitStatus, String) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let bin = bin.as_ref();
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stderr_path = dir.join(format!("run-{run}.stderr"));
    let stderr = File::create(&stderr_path).expect("create stderr file");
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    match wait_exit(&mut child, WAIT_TIMEOUT) {
        Some(status) => {
            let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            (status, text)
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`coordinate {}` was still running after {WAIT_TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                tail(&stderr_path, LOG_TAIL_LINES)
            );
        }
    }
}
