//! Network namespaces, for faults a loopback cluster cannot have: partitions.
//!
//! A [`Net`] is a hub namespace holding a bridge (`br0`, 10.77.0.1/24), and one namespace per
//! node with a veth (`eth0`, [`node_ip`]) to the bridge. Nodes run inside their namespace
//! (`ip netns exec`, see [`Net::exec_prefix`]); a client thread enters the hub ([`Net::enter_hub`])
//! to reach them all. A cut link is a pair of blackhole routes, one in each node's namespace
//! (packets are dropped silently, like a dead network); healing flushes them. Dropping a `Net`
//! deletes its namespaces, and with them the veths and the bridge; namespaces left behind by
//! a process that no longer exists are found by [`stale`].
//!
//! Everything here needs root and `ip` from iproute2 ([`available`] finds out).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// The hub's address on its bridge; nodes are in the same /24.
const HUB_ADDR: &str = "10.77.0.1/24";
/// Node `id` is at 10.77.0.(NODE_HOST_BASE + id).
const NODE_HOST_BASE: u64 = 10;

/// Why a namespace operation failed; the text is what `ip` said.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("ip {command}: {detail}")]
    Ip { command: String, detail: String },
    #[error("open namespace {ns}: {source}")]
    Open { ns: String, source: io::Error },
    #[error("setns into {ns}: {source}")]
    Enter { ns: String, source: io::Error },
    #[error("no hub namespace")]
    NoHub,
}

/// Moves the calling thread (and the threads and processes it starts afterwards) into the
/// network namespace `file` refers to.
pub fn enter(file: &File) -> io::Result<()> {
    // SAFETY: setns reads the descriptor, which `file` keeps open for the duration of the
    // call, and changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's current network namespace (to come back to).
pub fn current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// Runs `ip` with `args`; an error carries its stderr.
pub fn ip(args: &[&str]) -> Result<(), NetError> {
    let failed = |detail: String| NetError::Ip {
        command: args.join(" "),
        detail,
    };
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Whether this process can create network namespaces (tries one, named
/// `<prefix><pid>-probe`).
pub fn available(prefix: &str) -> bool {
    let name = format!("{prefix}{}-probe", std::process::id());
    let ok = ip(&["netns", "add", &name]).is_ok();
    if ok {
        let _ = ip(&["netns", "delete", &name]);
    }
    ok
}

/// A namespace named `<prefix><pid>-...` whose creating process no longer exists.
#[derive(Debug)]
pub struct StaleNamespace {
    pub name: String,
    /// The process that created it.
    pub pid: u32,
}

/// The namespaces named `<prefix><pid>-...` whose process `pid` no longer exists.
pub fn stale(prefix: &str) -> Vec<StaleNamespace> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            let pid = name.strip_prefix(prefix)?.split('-').next()?.parse().ok()?;
            let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
            gone.then(|| StaleNamespace {
                name: name.to_string(),
                pid,
            })
        })
        .collect()
}

impl StaleNamespace {
    /// Kills the processes still running inside (nodes that outlived their creator, which
    /// was killed), then deletes the namespace. Best effort.
    pub fn remove(&self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if p.parse::<u32>().is_ok() {
                    let _ = Command::new("kill").args(["-KILL", p]).status();
                }
            }
        }
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// Address of node `id` inside the namespaces.
pub fn node_ip(id: u64) -> String {
    format!("10.77.0.{}", NODE_HOST_BASE + id)
}

/// A hub namespace holding a bridge (and the clients), and one namespace per node with a
/// veth to the bridge. Dropping it deletes them all.
pub struct Net {
    pub hub: String,
    /// Namespace of node `i + 1`.
    pub nodes: Vec<String>,
    hub_file: Option<File>,
    created: Vec<String>,
    /// Cut links (a < b, node ids).
    pub cut: Vec<(u64, u64)>,
}

impl Net {
    /// Namespaces `<tag>-hub` and `<tag>-n1` .. `<tag>-n<n>`, wired to the hub's bridge.
    pub fn create(tag: &str, n: usize) -> Result<Net, NetError> {
        let mut net = Net {
            hub: format!("{tag}-hub"),
            nodes: (1..=n).map(|i| format!("{tag}-n{i}")).collect(),
            hub_file: None,
            created: Vec::new(),
            cut: Vec::new(),
        };
        net.create_hub()?;
        for id in 1..=n as u64 {
            net.create_node(id)?;
        }
        let hub = &net.hub;
        net.hub_file = Some(
            File::open(format!("/run/netns/{hub}"))
                .or_else(|_| File::open(format!("/var/run/netns/{hub}")))
                .map_err(|source| NetError::Open {
                    ns: hub.clone(),
                    source,
                })?,
        );
        Ok(net)
    }

    /// The hub namespace with its bridge up.
    fn create_hub(&mut self) -> Result<(), NetError> {
        let hub = self.hub.clone();
        ip(&["netns", "add", &hub])?;
        self.created.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "addr", "add", HUB_ADDR, "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])
    }

    /// Node `id`'s namespace, its veth on the hub's bridge and its address.
    fn create_node(&mut self, id: u64) -> Result<(), NetError> {
        let (hub, ns) = (self.hub.clone(), self.nodes[id as usize - 1].clone());
        let veth = format!("v{id}");
        ip(&["netns", "add", &ns])?;
        self.created.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &hub, "link", "set", &veth, "master", "br0"])?;
        ip(&["-n", &hub, "link", "set", &veth, "up"])?;
        let addr = format!("{}/24", node_ip(id));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])
    }

    /// The words that run a command inside node `id`'s namespace.
    pub fn exec_prefix(&self, id: u64) -> Vec<String> {
        ["ip", "netns", "exec", &self.nodes[id as usize - 1]]
            .map(String::from)
            .to_vec()
    }

    /// Moves the calling thread into the hub namespace.
    pub fn enter_hub(&self) -> Result<(), NetError> {
        let file = self.hub_file.as_ref().ok_or(NetError::NoHub)?;
        enter(file).map_err(|source| NetError::Enter {
            ns: self.hub.clone(),
            source,
        })
    }

    /// Drops every packet between nodes `a` and `b` (both directions).
    pub fn cut(&mut self, a: u64, b: u64) -> Result<(), NetError> {
        let (a, b) = (a.min(b), a.max(b));
        if self.cut.contains(&(a, b)) {
            return Ok(());
        }
        let to_b = format!("{}/32", node_ip(b));
        let to_a = format!("{}/32", node_ip(a));
        let (ns_a, ns_b) = (&self.nodes[a as usize - 1], &self.nodes[b as usize - 1]);
        ip(&["-n", ns_a, "route", "add", "blackhole", &to_b])?;
        ip(&["-n", ns_b, "route", "add", "blackhole", &to_a])?;
        self.cut.push((a, b));
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), NetError> {
        let mut result = Ok(());
        for ns in &self.nodes {
            if let Err(e) = ip(&["-n", ns, "route", "flush", "type", "blackhole"]) {
                result = Err(e);
            }
        }
        if result.is_ok() {
            self.cut.clear();
        }
        result
    }

    /// Deletes every namespace created, newest first; returns what could not be deleted.
    /// Dropping the `Net` does the same, silently.
    pub fn remove(&mut self) -> Vec<NetError> {
        let mut errors = Vec::new();
        while let Some(ns) = self.created.pop() {
            if let Err(e) = ip(&["netns", "delete", &ns]) {
                errors.push(e);
            }
        }
        errors
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
