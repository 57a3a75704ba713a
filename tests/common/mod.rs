//! Test harness: real `coordinate` processes on loopback.
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

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

mod membership;
pub mod peer;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_coordinate");

/// Per-request timeout of the default client: comfortably above the server's 5 s
/// request timeout, so a slow answer is observed as a status, not as a client timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a cluster may take to agree on a leader, a node to stop, etc.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of each node's log printed on failure.
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// Ports are handed out from [PORT_LOW, PORT_HIGH), below Linux's default ephemeral range
/// (32768..61000) so outgoing connections never grab a port between allocation and bind.
const PORT_LOW: u16 = 20_000;
const PORT_HIGH: u16 = 32_000;
/// Each process starts at its own block (derived from its pid), so test processes running
/// in parallel (nextest) walk disjoint ranges; a test binary uses far fewer than this many.
const PORT_BLOCK: u16 = 50;
/// Ports a developer's own node may be using (the seed's defaults); never handed out.
const RESERVED_PORTS: &[u16] = &[12379, 12380, 22379, 22380, 32379, 32380, 42379, 42380];

struct PortState {
    next: u16,
    handed_out: HashSet<u16>,
}

static PORTS: Mutex<Option<PortState>> = Mutex::new(None);

/// A loopback TCP port that nobody is listening on and that this process has not handed out
/// before. Checked by binding it (on 127.0.0.1 and on all interfaces) and releasing it.
pub fn free_port() -> u16 {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let state = guard.get_or_insert_with(|| {
        let blocks = (PORT_HIGH - PORT_LOW) / PORT_BLOCK;
        let block = (std::process::id() % u32::from(blocks)) as u16;
        PortState {
            next: PORT_LOW + block * PORT_BLOCK,
            handed_out: HashSet::new(),
        }
    });
    for _ in 0..(PORT_HIGH - PORT_LOW) {
        let port = state.next;
        state.next = if port + 1 >= PORT_HIGH {
            PORT_LOW
        } else {
            port + 1
        };
        if RESERVED_PORTS.contains(&port) || state.handed_out.contains(&port) {
            continue;
        }
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("0.0.0.0", port)).is_ok();
        if free {
            state.handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {PORT_LOW}..{PORT_HIGH}");
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `cond` until it returns true (-> true) or `timeout` passes (-> false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a child to exit, up to `timeout`. `None` if it is still running.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait on a child");
        status.is_some()
    });
    status
}

/// Sends SIGTERM to a child we have not reaped yet (so the pid cannot have been reused).
pub fn sigterm(child: &Child) {
    // If the child exited on its own just now, `kill` fails; the caller's wait tells.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a file (or a note that it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// A blocking HTTP client for a cluster's client ports. Cheap to clone and `Send`, so writer
/// threads can own one while the test thread keeps `&mut Cluster` for kills and restarts.
///
/// Keys are put into the URL path verbatim: the caller percent-encodes what needs it.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// Client base URL of node `id` at index `id - 1`.
    urls: Vec<String>,
}

impl Client {
    pub fn new(urls: Vec<String>, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            // 4xx/5xx are answers we assert on, not errors.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // No pooling: a pooled connection to a killed or restarted node would turn into a
            // spurious error on the next request.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build();
        Client {
            agent: config.into(),
            urls,
        }
    }

    pub fn url(&self, id: u64) -> &str {
        &self.urls[(id - 1) as usize]
    }

    /// `PUT /<key>`; the status code.
    pub fn put(&self, id: u64, key: &str, value: &[u8]) -> Result<u16, ureq::Error> {
        self.put_with_body(id, key, value).map(|(status, _)| status)
    }

    /// `PUT /<key>`; the status code and the response body.
    pub fn put_with_body(
        &self,
        id: u64,
        key: &str,
        value: &[u8],
    ) -> Result<(u16, Vec<u8>), ureq::Error> {
        let mut resp = self
            .agent
            .put(format!("{}/{key}", self.url(id)))
            .send(value)?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_vec()?;
        Ok((status, body))
    }

    /// `GET /<path>`; the status code and the body.
    pub fn get(&self, id: u64, key: &str) -> Result<(u16, Vec<u8>), ureq::Error> {
        let mut resp = self.agent.get(format!("{}/{key}", self.url(id))).call()?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_vec()?;
        Ok((status, body))
    }

    /// `GET /v1/status`, parsed; `None` on any failure (not up yet, not JSON, ...).
    pub fn try_status(&self, id: u64) -> Option<serde_json::Value> {
        match self.get(id, "v1/status") {
            Ok((200, body)) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }
}

/// A numeric field of a `/v1/status` document; panics with the document if absent.
pub fn field(status: &serde_json::Value, name: &str) -> u64 {
    status
        .get(name)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("/v1/status has no numeric `{name}`: {status}"))
}

/// The `role` of a `/v1/status` document.
pub fn role(status: &serde_json::Value) -> &str {
    status
        .get("role")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("/v1/status has no string `role`: {status}"))
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

struct Node {
    id: u64,
    client_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// `n` coordinate processes on loopback, node `i` with `--id i`, its own data dir and log.
pub struct Cluster {
    nodes: Vec<Node>,
    peer_urls: Vec<String>,
    extra_args: Vec<String>,
    /// Arguments for one node only (e.g. `--join`).
    extra_for: std::collections::HashMap<u64, Vec<String>>,
    client: Client,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Spawns `n` nodes (ids 1..=n) with `extra_args` appended to each command line.
    /// Does not wait for them: call [`Cluster::wait_for_leader`].
    pub fn start(n: usize, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("coordinate-test-")
            .tempdir()
            .expect("create temp dir");
        let peer_urls: Vec<String> = (0..n)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let nodes: Vec<Node> = (1..=n as u64)
            .map(|id| Node {
                id,
                client_port: free_port(),
                data_dir: dir.path().join(format!("node-{id}")),
                log_path: dir.path().join(format!("node-{id}.log")),
                child: None,
                starts: 0,
            })
            .collect();
        let urls = nodes
            .iter()
            .map(|node| format!("http://127.0.0.1:{}", node.client_port))
            .collect();
        let mut cluster = Cluster {
            nodes,
            peer_urls,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_for: Default::default(),
            client: Client::new(urls, REQUEST_TIMEOUT),
            dir: Some(dir),
        };
        for id in 1..=n as u64 {
            cluster.spawn(id);
        }
        cluster
    }

    /// [`Cluster::start`], then wait until the nodes agree on a leader; returns the cluster
    /// and the leader's id.
    pub fn start_with_leader(n: usize, extra_args: &[&str]) -> (Cluster, u64) {
        let mut cluster = Cluster::start(n, extra_args);
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
            .filter(|n| n.child.is_some())
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
        Client::new(self.client.urls.clone(), timeout)
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
        let cwd = self.dir().to_path_buf();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open node log");
        writeln!(
            log,
            "=== harness: start #{} of node {id}: {BIN} {}",
            node.starts,
            args.join(" ")
        )
        .expect("write node log");
        let stderr = log.try_clone().expect("clone log handle");
        let child = Command::new(BIN)
            .args(&args)
            .current_dir(&cwd)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        node.child = Some(child);
    }

    /// Starts node `id` again with the same command line and data dir.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
    }

    /// SIGTERM to node `id`, then waits for it to exit; returns its exit status.
    pub fn stop(&mut self, id: u64) -> ExitStatus {
        let mut child = self
            .node_mut(id)
            .child
            .take()
            .unwrap_or_else(|| panic!("stop: node {id} is not running"));
        sigterm(&child);
        match wait_exit(&mut child, WAIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "node {id} did not exit within {WAIT_TIMEOUT:?} of SIGTERM (killed it)"
                ));
            }
        }
    }

    /// SIGKILL to node `id` (by pid), then reaps it.
    pub fn kill(&mut self, id: u64) {
        let mut child = self
            .node_mut(id)
            .child
            .take()
            .unwrap_or_else(|| panic!("kill: node {id} is not running"));
        let _ = child.kill();
        child.wait().expect("wait for killed node");
    }

    /// Panics if a node this cluster believes is running has exited.
    pub fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait().expect("try_wait on a node") {
                    dead.push(format!("node {} exited unexpectedly: {status}", node.id));
                    node.child = None;
                }
            }
        }
        if !dead.is_empty() {
            self.fail(&dead.join("; "));
        }
    }

    pub fn put(&self, id: u64, key: &str, value: &[u8]) -> Result<u16, ureq::Error> {
        self.client.put(id, key, value)
    }

    pub fn get(&self, id: u64, key: &str) -> Result<(u16, Vec<u8>), ureq::Error> {
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
                let last_seen = statuses
                    .iter()
                    .map(|(id, s)| match s {
                        Some(s) => format!("node {id}: {s}"),
                        None => format!("node {id}: no status"),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                self.fail(&format!(
                    "no agreed leader among {live:?} within {WAIT_TIMEOUT:?}; last statuses:\n{last_seen}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
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
            out.push_str(&format!(
                "\n----- node {} log ({}), last {LOG_TAIL_LINES} lines -----\n{}\n",
                node.id,
                node.log_path.display(),
                tail(&node.log_path, LOG_TAIL_LINES)
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
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

/// A value for an assertion message: text if it is short UTF-8, else its length.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.len() <= 200 => s.to_string(),
        _ => format!("<{} bytes>", bytes.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP (for answers a server may give before reading the request body)
// ---------------------------------------------------------------------------------------------

/// `PUT` of a `len`-byte body over a raw connection with `Expect: 100-continue`, so a server
/// that rejects the request from its headers (413) can answer without reading the body; if it
/// asks for the body (or ignores `Expect`), the body is written from another thread while this
/// one reads the answer, so an answer sent before the body is consumed is not lost.
/// Returns the final status code.
pub fn raw_put_status(addr: &str, path: &str, len: usize) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .expect("set write timeout");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .expect("send request head");

    // A bounded wait for an interim or final answer before sending the body (a server that
    // ignores `Expect` sends nothing until it has the body).
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set read timeout");
    let mut buf = Vec::new();
    if let Some(status) = read_status_line(&mut stream, &mut buf) {
        if status != 100 {
            return status;
        }
        let end = read_head_end(&mut stream, &mut buf).expect("end of 100 Continue head");
        buf.drain(..end);
    }
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("set read timeout");

    let mut writer = stream.try_clone().expect("clone stream");
    let sender = std::thread::spawn(move || {
        // The server may answer and close before reading all of it; the answer is what counts.
        let _ = writer.write_all(&vec![b'x'; len]);
    });
    let status = loop {
        match read_status_line(&mut stream, &mut buf) {
            Some(100) => {
                let end = read_head_end(&mut stream, &mut buf).expect("end of 100 Continue head");
                buf.drain(..end);
            }
            Some(status) => break status,
            None => panic!(
                "PUT {path} on {addr}: no response status; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    // Unblock the sender if the server stopped reading.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sender.join().expect("body sender thread");
    status
}

/// Reads until `buf` holds a full response head; the offset just past it.
fn read_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            return Some(end + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads until `buf` holds a full status line; its code, or `None` on timeout/EOF/garbage.
fn read_status_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    loop {
        if let Some(end) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).to_string();
            // "HTTP/1.1 413 Payload Too Large"
            return line.split_whitespace().nth(1)?.parse().ok();
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Single invocations (bad flags)
// ---------------------------------------------------------------------------------------------

/// Runs the binary with `args` in `dir`, expecting it to exit by itself within the wait
/// timeout; returns its exit status and its stderr. Kills it and panics if it keeps running.
pub fn run_to_exit(dir: &Path, args: &[String]) -> (ExitStatus, String) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stderr_path = dir.join(format!("run-{run}.stderr"));
    let stderr = File::create(&stderr_path).expect("create stderr file");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
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
