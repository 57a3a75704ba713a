//! The nodes as chaos drives them: real `coordinate` processes, each in its own network
//! namespace (`ip netns exec`) or all on loopback, started, killed, paused and resumed by
//! pid, asked for their status over the client API, and watched for exits nobody caused.
//!
//! A node's process and log are a `coordinate_testkit::NodeProcess` (the tests' harness uses
//! the same); what is chaos's own is the rest of its state: paused, removed from the
//! membership (its exit 0 is then expected), removal unsure, started with `--join`.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coordinate_check::{self as check, Time};
use coordinate_client::{ClientError, ClientTls, Connection};
use coordinate_testkit::certs::Certs;
use coordinate_testkit::log::last_lines;
use coordinate_testkit::process::{NodeProcess, Signal, SpawnError};

use crate::args::Args;
use crate::interrupt::interrupted;
use crate::netns::{self, Namespaces};
use crate::workload::short_line;

/// Names chaos in the node logs' marker lines.
const STARTER: &str = "chaos";
/// How long a status query may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a members query may take.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node may take to exit after SIGTERM at the end of a run.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between two looks at the statuses while converging.
const CONVERGE_POLL: Duration = Duration::from_millis(100);
/// Characters of a crashed node's last log line in its crash report.
const LAST_WORDS_CHARS: usize = 200;

/// Where the nodes listen: peer URLs and client addresses of node `i + 1` at index `i`.
pub(crate) struct Layout {
    pub peer_urls: Vec<String>,
    pub client_addrs: Vec<String>,
    /// `--listen-host` of every node.
    pub listen: &'static str,
}

impl Layout {
    /// Every node in its own namespace, on the same ports (`scheme`: `https` for peer TLS).
    pub fn namespaces(n: usize, scheme: &str) -> Layout {
        Layout {
            peer_urls: (1..=n as u64)
                .map(|id| format!("{scheme}://{}:{}", netns::node_ip(id), netns::PEER_PORT))
                .collect(),
            client_addrs: (1..=n as u64)
                .map(|id| format!("{}:{}", netns::node_ip(id), netns::CLIENT_PORT))
                .collect(),
            listen: "0.0.0.0",
        }
    }

    /// Every node on loopback, on ports of its own.
    pub fn loopback(n: usize, scheme: &str) -> Result<Layout, String> {
        let ports = coordinate_testkit::free_ports(2 * n).map_err(|_| "no free loopback ports")?;
        Ok(Layout {
            peer_urls: ports[..n]
                .iter()
                .map(|p| format!("{scheme}://127.0.0.1:{p}"))
                .collect(),
            client_addrs: ports[n..]
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            listen: "127.0.0.1",
        })
    }
}

pub(crate) struct Node {
    pub id: u64,
    /// The command: program and arguments.
    cmd: Vec<String>,
    pub client_addr: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    process: NodeProcess,
    pub paused: bool,
    /// Removed from the membership: its exit is expected.
    pub removed: bool,
    /// Its removal was asked for but not acknowledged, and it was still a member when last
    /// looked at: the removal may still be applied (then it exits 0 by itself).
    pub removal_unsure: bool,
    /// Added back to the cluster: starts with `--join` from now on.
    pub join: bool,
}

impl Node {
    /// Node `id` of `layout` (`bin` after the words of `cmd`), its data dir and log in `dir`,
    /// not started.
    fn new(
        id: u64,
        layout: &Layout,
        dir: &Path,
        cmd: Vec<String>,
        bin: &str,
        args: &Args,
        certs: Option<&Certs>,
    ) -> Node {
        let i = id as usize - 1;
        let data_dir = dir.join(format!("node-{id}"));
        let port = layout.client_addrs[i]
            .rsplit(':')
            .next()
            .unwrap_or("0")
            .to_string();
        let mut cmd = cmd;
        cmd.extend([
            bin.to_string(),
            "--id".into(),
            id.to_string(),
            "--cluster".into(),
            layout.peer_urls.join(","),
            "--port".into(),
            port,
            "--listen-host".into(),
            layout.listen.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--snapshot-count".into(),
            args.snapshot_count.to_string(),
            "--request-timeout-ms".into(),
            args.request_timeout_ms.to_string(),
            "--log-level".into(),
            args.log_level.clone(),
        ]);
        if let Some(certs) = certs {
            cmd.extend(certs.member_args(id));
        }
        Node {
            id,
            cmd,
            client_addr: layout.client_addrs[i].clone(),
            peer_url: layout.peer_urls[i].clone(),
            data_dir,
            process: NodeProcess::new(id, dir.join(format!("node-{id}.log")), STARTER),
            paused: false,
            removed: false,
            removal_unsure: false,
            join: false,
        }
    }

    /// Started and not seen to exit.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }
}

pub(crate) struct Cluster {
    pub nodes: Vec<Node>,
    /// Exits nobody caused.
    pub crashes: Vec<String>,
    /// Things worth reporting that are not failures.
    pub notes: Vec<String>,
    /// For status queries from the controlling thread.
    pub rt: tokio::runtime::Runtime,
    /// TLS for every client connection (`--tls`).
    pub tls: Option<ClientTls>,
}

impl Cluster {
    /// The nodes of `layout` (in `net`'s namespaces if any), none started yet.
    pub fn new(
        layout: &Layout,
        net: Option<&Namespaces>,
        bin: &Path,
        dir: &Path,
        args: &Args,
    ) -> Result<Cluster, String> {
        let bin = bin.display().to_string();
        let certs = args.tls.then(|| Certs::new(&dir.join("certs")));
        if let Some(certs) = &certs {
            for (i, url) in layout.peer_urls.iter().enumerate() {
                certs.issue_member(i as u64 + 1, url);
            }
        }
        let nodes = (1..=layout.peer_urls.len() as u64)
            .map(|id| {
                let prefix = net.map(|net| net.exec_prefix(id)).unwrap_or_default();
                Node::new(id, layout, dir, prefix, &bin, args, certs.as_ref())
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        Ok(Cluster {
            nodes,
            crashes: Vec::new(),
            notes: Vec::new(),
            rt,
            tls: certs.as_ref().map(Certs::client_tls),
        })
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Starts node `id` (with `--join` once it was added back), in its own process group:
    /// a Ctrl-C on the terminal reaches chaos, which stops the nodes itself, instead of
    /// killing nodes mid-run.
    pub fn spawn(&mut self, id: u64) -> Result<(), SpawnError> {
        let node = self.node(id);
        let mut cmd = Command::new(&node.cmd[0]);
        cmd.args(&node.cmd[1..])
            .args(node.join.then_some("--join"))
            .process_group(0);
        node.process.start(cmd, &node.cmd.join(" "))?;
        node.paused = false;
        Ok(())
    }

    /// kill -9 and reap.
    pub fn kill(&mut self, id: u64) {
        let node = self.node(id);
        let _ = node.process.kill();
        node.paused = false;
    }

    pub fn pause(&mut self, id: u64) {
        self.node(id).process.signal(Signal::Stop);
        self.node(id).paused = true;
    }

    pub fn resume(&mut self, id: u64) {
        self.node(id).process.signal(Signal::Cont);
        self.node(id).paused = false;
    }

    /// Records (and reaps) nodes that exited without the nemesis killing them.
    pub fn check_exits(&mut self, now: Time) {
        for node in &mut self.nodes {
            let Ok(Some(status)) = node.process.try_exit() else {
                continue;
            };
            let at = check::history::secs(now);
            let last_words = node
                .process
                .log_text()
                .lines()
                .last()
                .map(|l| short_line(l, LAST_WORDS_CHARS))
                .unwrap_or_default();
            if node.removal_unsure && status.success() {
                say!(
                    "  node {} exited 0 at {at}: its unacknowledged removal was applied late",
                    node.id
                );
                node.removed = true;
                node.removal_unsure = false;
            }
            let crash = if !node.removed {
                Some(format!(
                    "node {} exited by itself at {at}: {status}",
                    node.id
                ))
            } else if !status.success() {
                Some(format!(
                    "node {}, removed from the cluster, exited at {at} with {status} (want 0)",
                    node.id
                ))
            } else {
                None
            };
            if let Some(crash) = crash {
                let crash = format!("{crash}; its log ends: {last_words}");
                say!("  {crash}");
                self.crashes.push(crash);
            }
        }
    }

    /// `/v1/status` of node `id`, if it answers within a second.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let node = &self.nodes[id as usize - 1];
        if !node.is_running() || node.paused {
            return None;
        }
        let mut conn =
            Connection::new(node.client_addr.clone(), STATUS_TIMEOUT).with_tls(self.tls.clone());
        let resp = self
            .rt
            .block_on(conn.request(hyper::Method::GET, "/v1/status", Bytes::new()))
            .ok()?;
        if resp.status.as_u16() != 200 {
            return None;
        }
        serde_json::from_slice(&resp.body).ok()
    }

    /// One request to node `id`: the status and the body, or why there was no answer.
    pub fn request(
        &self,
        id: u64,
        method: hyper::Method,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<(u16, String), ClientError> {
        let node = &self.nodes[id as usize - 1];
        let mut conn =
            Connection::new(node.client_addr.clone(), timeout).with_tls(self.tls.clone());
        let body = Bytes::from(body.to_string());
        let r = self.rt.block_on(conn.request(method, path, body))?;
        Ok((
            r.status.as_u16(),
            String::from_utf8_lossy(&r.body).trim().to_string(),
        ))
    }

    /// The member ids node `via` knows, if it answers.
    pub fn members(&self, via: u64) -> Option<BTreeSet<u64>> {
        let (status, body) = self
            .request(via, hyper::Method::GET, "/v1/members", "", MEMBERS_TIMEOUT)
            .ok()?;
        if status != 200 {
            return None;
        }
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        list.as_array()?
            .iter()
            .map(|m| m.get("id")?.as_u64())
            .collect()
    }

    /// The member ids that any serving node other than `exclude` reports.
    pub fn members_any(&self, exclude: u64) -> Option<BTreeSet<u64>> {
        self.serving()
            .into_iter()
            .filter(|&id| id != exclude)
            .find_map(|id| self.members(id))
    }

    /// Running nodes that are members and not paused.
    pub fn serving(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && !n.paused && !n.removed)
            .map(|n| n.id)
            .collect()
    }

    /// The node that says it leads in the highest term, if any answers so.
    pub fn leader(&self) -> Option<u64> {
        self.ids()
            .into_iter()
            .filter_map(|id| {
                let s = self.status(id)?;
                (s.get("role")?.as_str()? == "leader").then_some((s.get("term")?.as_u64()?, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Waits until every node runs, names the same leader, and has applied the same index as
    /// every other has committed. Returns that index.
    pub fn converge(&mut self, timeout: Duration, epoch: Instant) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_exits(epoch.elapsed().as_nanos() as Time);
            let statuses: Vec<Option<serde_json::Value>> =
                self.ids().into_iter().map(|id| self.status(id)).collect();
            if let Some(index) = converged(&statuses) {
                return Ok(index);
            }
            if Instant::now() < deadline && !interrupted() {
                std::thread::sleep(CONVERGE_POLL);
                continue;
            }
            let last = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| match s {
                    Some(s) => format!("node {}: {s}", i + 1),
                    None => format!("node {}: no answer", i + 1),
                })
                .collect::<Vec<_>>()
                .join("\n    ");
            return Err(format!(
                "the cluster did not converge within {timeout:?}; last statuses:\n    {last}"
            ));
        }
    }

    /// SIGCONT for paused nodes, then SIGTERM to every node, waiting up to 10 s each (then
    /// kill -9). Returns the nodes that did not exit cleanly.
    pub fn stop_all(&mut self) -> Vec<String> {
        let mut unclean = Vec::new();
        for id in self.ids() {
            if self.node(id).paused {
                self.resume(id);
            }
            self.node(id).process.signal(Signal::Term);
        }
        for node in &mut self.nodes {
            if !node.is_running() {
                continue;
            }
            match node.process.wait_exit(STOP_TIMEOUT) {
                Ok(Some(s)) if s.success() => {}
                Ok(Some(s)) => unclean.push(format!("node {}: SIGTERM -> {s}", node.id)),
                Ok(None) | Err(_) => {
                    let _ = node.process.kill();
                    unclean.push(format!(
                        "node {}: still running 10 s after SIGTERM (killed)",
                        node.id
                    ));
                }
            }
        }
        unclean
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!(
                "----- node {} ({}), last {lines} lines -----\n{}\n",
                node.id,
                node.process.log_path().display(),
                last_lines(&node.process.log_text(), lines)
            ));
        }
        out
    }
}

/// The applied index, if every node answered, names the same leader (which says it leads),
/// and has committed and applied the same index.
fn converged(statuses: &[Option<serde_json::Value>]) -> Option<u64> {
    let num = |s: &serde_json::Value, f: &str| s.get(f).and_then(|v| v.as_u64());
    let all: Vec<(u64, u64, u64)> = statuses
        .iter()
        .map(|s| {
            let s = s.as_ref()?;
            Some((
                num(s, "leader")?,
                num(s, "commit_index")?,
                num(s, "applied_index")?,
            ))
        })
        .collect::<Option<_>>()?;
    let (leader, commit, _) = all[0];
    let leader_says = statuses
        .get(leader.wrapping_sub(1) as usize)
        .and_then(|s| s.as_ref())
        .and_then(|s| s.get("role"))
        .and_then(|r| r.as_str())
        == Some("leader");
    let agreed = all
        .iter()
        .all(|&(l, c, a)| l == leader && c == commit && a == commit);
    (leader != 0 && leader_says && agreed).then_some(commit)
}
