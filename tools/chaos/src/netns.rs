//! chaos's network namespaces: named `coordchaos-<pid>-<run>-...` (so parallel chaos processes
//! never collide, and those of a dead one are found and removed), each node listening on the
//! same ports inside its own namespace. The namespaces themselves are
//! `coordinate_testkit::netns`; this adds chaos's names, its messages and its cleanup report.

use coordinate_testkit::netns::{self, Net, NetError};

/// Every namespace this binary creates starts with this, then `<pid>-`.
pub(crate) const PREFIX: &str = "coordchaos-";

/// Client port of every node (each node has its own namespace, so they never collide).
pub(crate) const CLIENT_PORT: u16 = 2379;
/// Peer port of every node.
pub(crate) const PEER_PORT: u16 = 2380;

pub(crate) use coordinate_testkit::netns::{current, enter, node_ip};

/// Whether this process can create network namespaces (tries one).
pub(crate) fn available() -> bool {
    netns::available(PREFIX)
}

/// Deletes namespaces (and the nodes still running in them) left behind by chaos processes
/// that no longer exist.
pub(crate) fn remove_stale() {
    for stale in netns::stale(PREFIX) {
        eprintln!(
            "chaos: removing namespace {} left by process {}",
            stale.name, stale.pid
        );
        stale.remove();
    }
}

/// A run's namespaces; dropping it deletes them, reporting what could not be deleted.
pub(crate) struct Namespaces {
    net: Net,
}

impl Namespaces {
    /// The hub and `n` node namespaces, named after `tag`.
    pub fn create(tag: &str, n: usize) -> Result<Namespaces, NetError> {
        Net::create(tag, n).map(|net| Namespaces { net })
    }

    /// Moves the calling thread into the hub namespace, where every node is reachable.
    pub fn enter_hub(&self) -> Result<(), NetError> {
        self.net.enter_hub()
    }

    /// The words that run a command in node `id`'s namespace.
    pub fn exec_prefix(&self, id: u64) -> Vec<String> {
        self.net.exec_prefix(id)
    }

    /// Drops every packet between nodes `a` and `b`.
    pub fn cut(&mut self, a: u64, b: u64) -> Result<(), NetError> {
        self.net.cut(a, b)
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), NetError> {
        self.net.heal()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for e in self.net.remove() {
            eprintln!("chaos: cleanup: {e}");
        }
    }
}
