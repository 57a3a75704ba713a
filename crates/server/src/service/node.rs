//! The one seam between the services and the raft node: every call to
//! [`coordinate_raft::NodeHandle`], every log-command encoding, and the one conversion of the
//! node's errors into [`ServiceError`] live here. When the node's interface changes, this
//! file changes and the services above it do not.

use coordinate_raft::{NodeHandle, Rejection as NodeRejection, RequestError};

use super::error::{Internal, Rejection, ServiceError, Unavailable};
use crate::kv::{Command, Outcome};
use crate::state::{Store, StoreStatus};

pub(super) use crate::state::{Query, ReadResult};
pub(super) use coordinate_raft::node::MemberChange;
pub use coordinate_raft::node::MemberInfo;

/// The node's status, with what the store adds to it.
pub type NodeStatus = coordinate_raft::node::NodeStatus<StoreStatus>;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the read started (ReadIndex, then wait for
    /// apply).
    Linearizable,
    /// This node's applied state, without a quorum round: fast, possibly stale.
    Serializable,
}

/// The raft node as the services see it: typed commands in, typed errors out.
#[derive(Clone)]
pub(super) struct Raft {
    handle: NodeHandle<Store>,
}

impl Raft {
    pub(super) fn new(handle: NodeHandle<Store>) -> Raft {
        Raft { handle }
    }

    /// The raft term as of the loop's last turn (no round trip).
    pub(super) fn term(&self) -> u64 {
        self.handle.published().term()
    }

    /// The leader as of the loop's last turn (0: none known; no round trip).
    pub(super) fn leader(&self) -> u64 {
        self.handle.published().leader()
    }

    /// Moves leadership to voter `to` (this node must lead).
    pub(super) async fn transfer_leader(&self, to: u64) -> Result<(), ServiceError> {
        self.handle
            .transfer_leader(to)
            .await
            .map_err(ServiceError::from)
    }

    /// Replicates a command; returns what applying it did on this node.
    pub(super) async fn propose(&self, cmd: &Command) -> Result<Outcome, ServiceError> {
        let applied = self
            .handle
            .propose(cmd.encode())
            .await
            .map_err(ServiceError::from)?;
        // A command this node encoded always decodes; if it did not, the bug is here.
        match applied.map_err(|e| ServiceError::from(Internal::Node(Box::new(e))))? {
            Outcome::Refused(refusal) => Err(Rejection::Refused(refusal).into()),
            Outcome::PreconditionFailed { current, revision } => {
                Err(Rejection::PreconditionFailed { current, revision }.into())
            }
            outcome => Ok(outcome),
        }
    }

    pub(super) async fn read(
        &self,
        query: Query,
        consistency: Consistency,
    ) -> Result<ReadResult, ServiceError> {
        let linearizable = consistency == Consistency::Linearizable;
        self.handle
            .read(query, linearizable)
            .await
            .map_err(ServiceError::from)
    }

    pub(super) async fn change_members(&self, change: MemberChange) -> Result<(), ServiceError> {
        self.handle
            .change_members(change)
            .await
            .map_err(ServiceError::from)
    }

    pub(super) async fn members(&self) -> Result<Vec<MemberInfo>, ServiceError> {
        self.handle.members().await.map_err(ServiceError::from)
    }

    /// The state machine's snapshot data as of this node's applied state now.
    pub(super) async fn backup(&self) -> Result<bytes::Bytes, ServiceError> {
        self.handle.backup().await.map_err(ServiceError::from)
    }

    pub(super) async fn status(&self) -> Result<NodeStatus, ServiceError> {
        self.handle.status().await.map_err(ServiceError::from)
    }
}

/// The node's errors by kind: the only place that knows how the node reports a failure.
impl From<RequestError> for ServiceError {
    fn from(e: RequestError) -> ServiceError {
        match e {
            RequestError::NoLeader => Unavailable::NoLeader.into(),
            RequestError::Timeout => Unavailable::Timeout.into(),
            RequestError::ReadTimeout => Unavailable::ReadTimeout.into(),
            RequestError::Shutdown => Unavailable::Shutdown.into(),
            RequestError::Rejected(r) => match r {
                NodeRejection::Invalid(m) => Rejection::Invalid(m).into(),
                NodeRejection::NotFound(m) => Rejection::NotFound(m).into(),
                NodeRejection::Conflict(m) => Rejection::Conflict(m).into(),
                NodeRejection::Misdirected(m) => Rejection::Misdirected(m).into(),
                NodeRejection::Member(why, m) => Rejection::Member(why, m).into(),
            },
            // raft-rs or a broken invariant: this node's failure, never the client's.
            RequestError::Internal(e) => Internal::Node(Box::new(e)).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn kind(e: RequestError) -> ServiceError {
        ServiceError::from(e)
    }

    #[test]
    fn a_raft_error_is_internal_not_invalid() {
        let e = kind(RequestError::Internal(Arc::new(
            coordinate_raft::Error::Raft(::raft::Error::ProposalDropped),
        )));
        assert!(
            matches!(e, ServiceError::Internal(Internal::Node(_))),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "internal error: raft: raft: proposal dropped"
        );
    }

    #[test]
    fn node_rejections_keep_their_kind_and_text() {
        let rejected = |r| kind(RequestError::Rejected(r));
        let e = rejected(NodeRejection::Conflict("node 4 is already a member".into()));
        assert!(matches!(e, ServiceError::Rejected(Rejection::Conflict(_))));
        assert_eq!(e.to_string(), "node 4 is already a member");
        let e = rejected(NodeRejection::Invalid("bad".into()));
        assert!(matches!(e, ServiceError::Rejected(Rejection::Invalid(_))));
        assert_eq!(e.to_string(), "invalid request: bad");
        let e = rejected(NodeRejection::NotFound("gone".into()));
        assert!(matches!(e, ServiceError::Rejected(Rejection::NotFound(_))));
        let e = rejected(NodeRejection::Misdirected("ask 2".into()));
        assert!(matches!(
            e,
            ServiceError::Rejected(Rejection::Misdirected(_))
        ));
        let e = kind(RequestError::Internal(Arc::new(
            coordinate_raft::Error::io("writing the WAL", std::io::Error::other("disk full")),
        )));
        assert!(matches!(e, ServiceError::Internal(_)));
        assert_eq!(e.to_string(), "internal error: writing the WAL: disk full");
    }

    #[test]
    fn unavailability_keeps_its_texts() {
        for (from, want) in [
            (RequestError::NoLeader, Unavailable::NoLeader),
            (RequestError::Timeout, Unavailable::Timeout),
            (RequestError::ReadTimeout, Unavailable::ReadTimeout),
            (RequestError::Shutdown, Unavailable::Shutdown),
        ] {
            let text = from.to_string();
            let e = kind(from);
            assert_eq!(e.to_string(), text);
            assert!(matches!(e, ServiceError::Unavailable(u) if u == want));
        }
    }
}
