//! The membership fault: `DELETE /<id>` of the leader or a random node through another
//! member; the node exits by itself once it applies its removal. Healing empties its data dir,
//! adds it back (`POST /<id>` with its peer URL) and starts it with `--join`.
//!
//! An unacknowledged removal may still be applied later: the node is then marked
//! `removal_unsure`, its exit 0 is not a crash, and it is added back before the next fault.

use std::time::{Duration, Instant};

use coordinate_client::ClientError;

use super::Nemesis;
use crate::cluster::Cluster;
use crate::interrupt::interrupted;
use crate::workload::short;

/// How long an unacknowledged removal is looked for in the members lists (a lagging node
/// may not have applied it yet).
const REMOVAL_LOOKUP: Duration = Duration::from_secs(10);
/// How long a removed node may take to notice its removal and exit.
const REMOVED_EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long adding a node back is retried.
const ADD_BACK_RETRY: Duration = Duration::from_secs(30);

impl Nemesis<'_> {
    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.args.client_timeout_ms)
    }

    /// `DELETE /<target>` through another member; then waits for the target to exit by itself
    /// (it shuts down once it applies its removal), or kills it after 10 s (a removed node that
    /// never hears of its removal keeps running: not a bug). `Err`: it is still a member.
    pub(super) fn remove_member(
        &mut self,
        cluster: &mut Cluster,
        target: u64,
    ) -> Result<(), String> {
        let timeout = self.request_timeout();
        cluster.check_exits(self.now());
        let others: Vec<u64> = cluster
            .serving()
            .into_iter()
            .filter(|&id| id != target)
            .collect();
        let Some(&via) = others.get(self.rng.below(others.len().max(1) as u64) as usize) else {
            return Err("no other member to ask".into());
        };
        let path = format!("/{target}");
        let answer = cluster.request(via, hyper::Method::DELETE, &path, "", timeout);
        if let Err(e @ ClientError::Connect { .. }) = &answer {
            // Nothing was sent.
            return Err(format!("DELETE via node {via}: {}", short(&e.to_string())));
        }
        if !matches!(answer, Ok((204, _))) && still_a_member(cluster, target) {
            // It may still be applied later: then the node exits by itself, which is
            // not a crash, and it is added back before the next fault.
            cluster.node(target).removal_unsure = true;
            return Err(match answer {
                Ok((status, body)) => format!("DELETE via node {via}: {status} {body}"),
                Err(e) => format!("DELETE via node {via}: {}", short(&e.to_string())),
            });
        }
        cluster.node(target).removed = true;
        cluster.node(target).removal_unsure = false;
        self.await_exit_of_removed(cluster, target);
        Ok(())
    }

    /// Waits for a removed node to exit by itself; kills it (with a note) if it does not.
    fn await_exit_of_removed(&mut self, cluster: &mut Cluster, target: u64) {
        let deadline = Instant::now() + REMOVED_EXIT_WAIT;
        while cluster.node(target).is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            cluster.check_exits(self.now());
        }
        if cluster.node(target).is_running() {
            cluster.notes.push(format!(
                "node {target} was still running 10 s after its removal (killed)"
            ));
            cluster.kill(target);
        }
    }

    /// Adds back the nodes whose unacknowledged removal was applied after all.
    pub(super) fn readd_late_removals(&mut self, cluster: &mut Cluster) {
        cluster.check_exits(self.now());
        for id in cluster.ids() {
            let node = cluster.node(id);
            if node.removed && !node.is_running() {
                if let Err(e) = self.add_member_back(cluster, id) {
                    self.findings.fail(format!("add node {id} back: {e}"));
                }
            }
        }
    }

    /// Empties the data dir of a removed node, adds it back (`POST /<id>` with its peer URL,
    /// retried for up to 30 s), and starts it with `--join`.
    pub(super) fn add_member_back(&mut self, cluster: &mut Cluster, id: u64) -> Result<(), String> {
        if cluster.node(id).is_running() {
            cluster.kill(id);
        }
        let dir = cluster.node(id).data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("empty {}: {e}", dir.display()))?;
        }
        self.post_member(cluster, id)?;
        let node = cluster.node(id);
        node.removed = false;
        node.join = true;
        cluster.spawn(id).map_err(|e| e.to_string())
    }

    /// `POST /<id>` with its peer URL through a random serving member, until it is a member.
    fn post_member(&mut self, cluster: &mut Cluster, id: u64) -> Result<(), String> {
        let timeout = self.request_timeout();
        let url = cluster.node(id).peer_url.clone();
        let deadline = Instant::now() + ADD_BACK_RETRY;
        loop {
            let serving = cluster.serving();
            let last = if serving.is_empty() {
                "no member is serving".to_string()
            } else {
                let via = serving[self.rng.below(serving.len() as u64) as usize];
                let path = format!("/{id}");
                let last = match cluster.request(via, hyper::Method::POST, &path, &url, timeout) {
                    Ok((204, _)) => return Ok(()),
                    Ok((status, body)) => format!("POST via node {via}: {status} {body}"),
                    Err(e) => format!("POST via node {via}: {}", short(&e.to_string())),
                };
                // An unacknowledged add may still have happened.
                if cluster.members(via).is_some_and(|m| m.contains(&id)) {
                    return Ok(());
                }
                last
            };
            if Instant::now() >= deadline || interrupted() {
                return Err(format!(
                    "not a member again after 30 s; last answer: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// After an unacknowledged removal: whether `target` is still a member, as far as the other
/// members tell within [`REMOVAL_LOOKUP`].
fn still_a_member(cluster: &Cluster, target: u64) -> bool {
    let deadline = Instant::now() + REMOVAL_LOOKUP;
    loop {
        let members = cluster.members_any(target);
        if members.as_ref().is_some_and(|m| !m.contains(&target)) {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
