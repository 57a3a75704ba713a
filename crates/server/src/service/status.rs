//! [`StatusService`]: the node's view of itself — its raft status, whether it is healthy
//! (knows a leader and has applied everything it knows is committed), and a backup of its
//! state.

use bytes::Bytes;

use super::error::ServiceError;
use super::kv::unexpected_read;
use super::node::{Consistency, NodeStatus, Query, Raft, ReadResult};

/// Reports this node's status.
#[derive(Clone)]
pub struct StatusService {
    raft: Raft,
}

/// This node's status: ids, role, indexes, sizes, members.
pub type StatusResponse = NodeStatus;

/// Whether this node can serve requests now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// It knows a leader and has applied everything it knows is committed.
    Ok { leader: u64 },
    /// It cannot serve now, and why.
    Unhealthy { reason: String },
}

impl StatusService {
    pub(super) fn new(raft: Raft) -> StatusService {
        StatusService { raft }
    }

    /// The raft term as of the raft loop's last turn, without asking it (for response
    /// headers).
    pub fn term(&self) -> u64 {
        self.raft.term()
    }

    /// The leader as of the raft loop's last turn (0: none known), without asking it.
    pub fn leader(&self) -> u64 {
        self.raft.leader()
    }

    /// Moves leadership to voter `to`; this node must lead. Returns once `to` leads.
    pub async fn move_leader(&self, to: u64) -> Result<(), ServiceError> {
        self.raft.transfer_leader(to).await
    }

    /// A backup of the store: the state machine's snapshot data, as of a moment after every
    /// write acknowledged before the call (a linearizable read first, then a snapshot).
    pub async fn backup(&self) -> Result<Bytes, ServiceError> {
        match self
            .raft
            .read(Query::CompactRevision, Consistency::Linearizable)
            .await?
        {
            ReadResult::CompactRevision(_) => {}
            other => return Err(unexpected_read("a read barrier", other)),
        }
        self.raft.backup().await
    }

    pub async fn status(&self) -> Result<StatusResponse, ServiceError> {
        self.raft.status().await
    }

    /// The node's health; a node that cannot report its status is unhealthy, saying why.
    pub async fn health(&self) -> Health {
        match self.raft.status().await {
            Ok(status) => health_of(&status),
            Err(e) => Health::Unhealthy {
                reason: e.to_string(),
            },
        }
    }
}

/// Healthy if a leader is known and everything known to be committed is applied.
fn health_of(status: &NodeStatus) -> Health {
    if status.leader == 0 {
        return Health::Unhealthy {
            reason: "no leader is known".to_string(),
        };
    }
    if status.applied_index < status.commit_index {
        return Health::Unhealthy {
            reason: format!(
                "catching up: applied {} of {} committed entries",
                status.applied_index, status.commit_index
            ),
        };
    }
    Health::Ok {
        leader: status.leader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: u64, commit_index: u64, applied_index: u64) -> NodeStatus {
        NodeStatus {
            id: 1,
            role: "follower",
            leader,
            term: 2,
            commit_index,
            applied_index,
            snapshot_index: 0,
            first_index: 1,
            last_index: commit_index,
            state: crate::state::StoreStatus {
                keys: 0,
                data_bytes: 0,
                total_bytes: 0,
                revision: 0,
                compact_revision: 0,
                leases: 0,
            },
            wal_bytes: 0,
            voters: vec![1],
            members: Vec::new(),
        }
    }

    #[test]
    fn healthy_only_with_a_leader_and_nothing_left_to_apply() {
        assert_eq!(health_of(&status(2, 10, 10)), Health::Ok { leader: 2 });
        assert_eq!(
            health_of(&status(0, 10, 10)),
            Health::Unhealthy {
                reason: "no leader is known".into()
            }
        );
        assert_eq!(
            health_of(&status(2, 10, 8)),
            Health::Unhealthy {
                reason: "catching up: applied 8 of 10 committed entries".into()
            }
        );
    }
}
