//! The cluster's additions for membership tests: growing a cluster by one node, moving one to
//! another peer port, waiting for a node to exit on its own, and raw requests to the
//! membership endpoints.

use std::process::ExitStatus;
use std::time::Duration;

use super::{Cluster, Node};
use crate::ports::free_port;

/// Per-request timeout of [`Cluster::request`] (above the server's 5 s request timeout).
const MEMBERSHIP_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Allocates ports and a data dir for one more node (the next id) without starting it.
    /// Returns its id and its peer URL. Its command line lists every peer URL, like the
    /// seed's walkthrough; start it with [`Cluster::start_joining`].
    pub fn add_node_slot(&mut self) -> (u64, String) {
        let id = self.nodes.len() as u64 + 1;
        let scheme = self.scheme();
        let peer_url = format!("{}://127.0.0.1:{}", self.peer_scheme(), free_port());
        if let Some(certs) = &self.certs {
            certs.issue_member(id, &peer_url);
        }
        self.peer_urls.push(peer_url.clone());
        let client_port = free_port();
        self.client
            .urls
            .push(format!("{scheme}://127.0.0.1:{client_port}"));
        let node = Node::new(id, client_port, self.dir());
        self.nodes.push(node);
        (id, peer_url)
    }

    /// Gives node `id` a peer URL on a fresh port, in every node's `--cluster` list from their
    /// next start on; returns it. The running cluster must be told too (etcd's MemberUpdate),
    /// and the node restarted to listen there.
    pub fn move_peer(&mut self, id: u64) -> String {
        let peer_url = format!("{}://127.0.0.1:{}", self.peer_scheme(), free_port());
        if let Some(certs) = &self.certs {
            certs.issue_member(id, &peer_url);
        }
        let slot = (id - 1) as usize;
        assert!(slot < self.peer_urls.len(), "no node {id}");
        self.peer_urls[slot] = peer_url.clone();
        peer_url
    }

    /// Starts node `id` with `--join` (on top of its usual command line).
    pub fn start_joining(&mut self, id: u64) {
        self.extra_for.insert(id, vec!["--join".to_string()]);
        self.spawn(id);
    }

    /// Waits for node `id` to exit by itself (e.g. after its removal); returns its status.
    pub fn wait_exit_of(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        self.node_mut(id)
            .process
            .wait_exit(timeout)
            .expect("wait for a node")
    }

    /// Deletes node `id`'s data dir (the node must be stopped).
    pub fn wipe_data_dir(&mut self, id: u64) {
        assert!(!self.node(id).process.is_running(), "node {id} is running");
        let dir = self.node(id).data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove data dir");
        }
    }

    /// Sends `method` to `path` on node `id` with `body`; returns status and body text.
    pub fn request(&self, id: u64, method: &str, path: &str, body: &str) -> (u16, String) {
        let method = match method {
            "GET" => hyper::Method::GET,
            "DELETE" => hyper::Method::DELETE,
            "POST" => hyper::Method::POST,
            "PUT" => hyper::Method::PUT,
            other => panic!("unsupported method {other}"),
        };
        let client = self.client_with_timeout(MEMBERSHIP_REQUEST_TIMEOUT);
        let body = bytes::Bytes::copy_from_slice(body.as_bytes());
        match client.request(id, method.clone(), path, body) {
            Ok((status, text)) => (status, String::from_utf8_lossy(&text).into_owned()),
            Err(e) => self.fail(&format!("{method} {path} on node {id}: {e}")),
        }
    }

    /// The parsed `GET /v1/members` of node `id`.
    pub fn members(&self, id: u64) -> Vec<serde_json::Value> {
        let (status, body) = self.request(id, "GET", "/v1/members", "");
        assert_eq!(status, 200, "GET /v1/members on node {id}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("members JSON {body:?}: {e}"))
    }
}
