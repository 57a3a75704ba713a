//! [`ServiceError`]: why a service call did not succeed, by kind. Front-ends map it once each
//! (REST: `api::error`; gRPC: a code per variant), never per handler.
//!
//! Three kinds, because a client does something different for each:
//! - [`Rejection`]: the request itself was refused (invalid, not found, conflict, a failed
//!   precondition, the wrong node, a compacted revision). Nothing was applied; sending the same
//!   request again is refused again.
//! - [`Unavailable`]: the cluster could not serve it now. [`Unavailable::outcome_unknown`]
//!   says whether a write may still be applied (a timeout after raft took it) or certainly was
//!   not (no leader, shutting down). Retrying later can succeed.
//! - [`Internal`]: a failure inside this node (raft, storage, a broken invariant). Never a
//!   client's fault, so never reported as an invalid request.
//!
//! The texts are the ones clients have always seen; clients and tests match on them.

pub use coordinate_raft::MemberRefusal;

/// Why a service call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// The request was refused; nothing was applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// The request is malformed or not allowed (e.g. a membership change with a bad id).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// What the request names does not exist (e.g. the member to remove).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (e.g. adding a member twice).
    #[error("{0}")]
    Conflict(String),
    /// The request must go to another node (e.g. removing the leader through itself).
    #[error("{0}")]
    Misdirected(String),
    /// A membership change refused for a reason clients tell apart (etcd names each one).
    #[error("{1}")]
    Member(MemberRefusal, String),
    /// A conditional write's precondition did not hold at apply time. `current` is the key's
    /// `mod_revision` (0 if absent), `revision` the store revision it was evaluated at.
    #[error("{}", precondition_text(*current))]
    PreconditionFailed { current: u64, revision: u64 },
    /// The command could not apply, identically on every replica (a missing lease, a
    /// compacted or future revision, the NOSPACE alarm).
    #[error(transparent)]
    Refused(#[from] crate::kv::Refusal),
    /// A watch asked to start before the oldest revision still held.
    #[error("revision {requested} is no longer available to watch; the oldest is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
}

fn precondition_text(current: u64) -> String {
    if current == 0 {
        "precondition failed: the key does not exist".to_string()
    } else {
        format!("precondition failed: the key's mod_revision is {current}")
    }
}

/// The cluster could not serve the request now; trying again later can succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unavailable {
    /// No leader was found before the deadline: the write was certainly not applied.
    #[error("no leader is known; the request was not applied")]
    NoLeader,
    /// The deadline passed after the write was handed to raft: it may still be applied.
    #[error("timed out waiting for a quorum; outcome unknown: the write may still be applied")]
    Timeout,
    /// A read could not be confirmed by a quorum before the deadline.
    #[error("timed out waiting for a quorum to confirm the read")]
    ReadTimeout,
    /// The node is stopping: the request was not applied.
    #[error("the node is shutting down; the request was not applied")]
    Shutdown,
    /// `--max-watchers` watches are open.
    #[error(
        "too many watchers: the limit of {limit} (--max-watchers) is reached; try again later"
    )]
    TooManyWatchers { limit: usize },
    /// The watch history is closed because the node is stopping (a watch applies nothing,
    /// hence the shorter text).
    #[error("the node is shutting down")]
    WatchHubClosed,
}

impl Unavailable {
    /// True if a write that failed this way may still be applied: retrying it blindly could
    /// apply it twice.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Unavailable::Timeout)
    }
}

/// A failure inside this node, not the client's doing.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// The raft node or its storage failed the request (the node's error, marked as this
    /// node's failure so no client takes it for its own mistake).
    #[error("internal error: {0}")]
    Node(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Applying a command answered with an outcome that command cannot have.
    #[error("unexpected outcome of {command}: {outcome}")]
    UnexpectedOutcome {
        command: &'static str,
        outcome: String,
    },
}

impl From<crate::kv::Refusal> for ServiceError {
    fn from(r: crate::kv::Refusal) -> ServiceError {
        ServiceError::Rejected(Rejection::Refused(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_the_ones_clients_know() {
        let e = ServiceError::from(Rejection::PreconditionFailed {
            current: 0,
            revision: 9,
        });
        assert_eq!(e.to_string(), "precondition failed: the key does not exist");
        let e = ServiceError::from(Rejection::PreconditionFailed {
            current: 4,
            revision: 9,
        });
        assert_eq!(
            e.to_string(),
            "precondition failed: the key's mod_revision is 4"
        );
        let e = ServiceError::from(Rejection::Invalid("node id 0 is not valid".into()));
        assert_eq!(e.to_string(), "invalid request: node id 0 is not valid");
        assert_eq!(
            ServiceError::from(Unavailable::Timeout).to_string(),
            "timed out waiting for a quorum; outcome unknown: the write may still be applied"
        );
    }

    #[test]
    fn only_a_timeout_leaves_the_outcome_unknown() {
        for u in [
            Unavailable::NoLeader,
            Unavailable::ReadTimeout,
            Unavailable::Shutdown,
            Unavailable::TooManyWatchers { limit: 1 },
            Unavailable::WatchHubClosed,
        ] {
            assert!(!u.outcome_unknown(), "{u:?}");
        }
        assert!(Unavailable::Timeout.outcome_unknown());
    }
}
