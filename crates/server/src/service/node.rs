//! The one seam between the services and the raft node: every call to
//! [`crate::raft::NodeHandle`], every log-command encoding, and the one conversion of the
//! node's errors into [`ServiceError`] live here. When the node's interface changes, this
//! file changes and the services above it do not.

use crate::error::Error;
use crate::kv::{Command, Outcome};
use crate::raft::{NodeHandle, RequestError};

use super::error::{Internal, Rejection, ServiceError, Unavailable};

pub(super) use crate::raft::node::{MemberChange, Query, ReadResult};
pub use crate::raft::node::{MemberInfo, NodeStatus};

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
    handle: NodeHandle,
}

impl Raft {
    pub(super) fn new(handle: NodeHandle) -> Raft {
        Raft { handle }
    }

    /// Replicates a command; returns what applying it did on this node.
    pub(super) async fn propose(&self, cmd: &Command) -> Result<Outcome, ServiceError> {
        self.handle
            .propose(cmd.encode())
            .await
            .map_err(ServiceError::from)
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
            RequestError::Rejected(e) => from_node_error(e),
        }
    }
}

/// An error the node answered a request with.
fn from_node_error(e: Error) -> ServiceError {
    match e {
        Error::Invalid(m) => Rejection::Invalid(m).into(),
        Error::NotFound(m) => Rejection::NotFound(m).into(),
        Error::Conflict(m) => Rejection::Conflict(m).into(),
        Error::Misdirected(m) => Rejection::Misdirected(m).into(),
        Error::NoLeader | Error::LeaderMoving | Error::LeaderSettling => {
            Unavailable::NoLeader.into()
        }
        Error::Shutdown => Unavailable::Shutdown.into(),
        // Raft, storage and encoding failures: this node's, never the client's.
        other @ (Error::Raft(_)
        | Error::Io { .. }
        | Error::Corrupt { .. }
        | Error::Encode(_)
        | Error::Removed(_)) => Internal::Node(Box::new(other)).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: RequestError) -> ServiceError {
        ServiceError::from(e)
    }

    #[test]
    fn a_raft_error_is_internal_not_invalid() {
        let e = kind(RequestError::Rejected(Error::Raft(
            ::raft::Error::ProposalDropped,
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
    fn node_errors_keep_their_kind_and_text() {
        let e = kind(RequestError::Rejected(Error::Conflict(
            "node 4 is already a member".into(),
        )));
        assert!(matches!(e, ServiceError::Rejected(Rejection::Conflict(_))));
        assert_eq!(e.to_string(), "node 4 is already a member");
        let e = kind(RequestError::Rejected(Error::Invalid("bad".into())));
        assert!(matches!(e, ServiceError::Rejected(Rejection::Invalid(_))));
        assert_eq!(e.to_string(), "invalid request: bad");
        let e = kind(RequestError::Rejected(Error::NotFound("gone".into())));
        assert!(matches!(e, ServiceError::Rejected(Rejection::NotFound(_))));
        let e = kind(RequestError::Rejected(Error::Misdirected("ask 2".into())));
        assert!(matches!(
            e,
            ServiceError::Rejected(Rejection::Misdirected(_))
        ));
        let e = kind(RequestError::Rejected(Error::io(
            "writing the WAL",
            std::io::Error::other("disk full"),
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
