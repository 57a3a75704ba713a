//! [`NodeHandle`]: the cloneable, async front of the raft loop, and the errors a request can
//! get back ([`RequestError`], [`Rejection`]). A front-end holds a handle, never the node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::node::{Input, MemberChange, MemberInfo, NodeStatus};
use crate::state_machine::StateMachine;

/// Why a request did not succeed, in the terms a front-end reports.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No leader was found before the deadline: the write was certainly not applied.
    #[error("no leader is known; the request was not applied")]
    NoLeader,
    /// The deadline passed after the write was handed to raft: it may still be applied.
    #[error("timed out waiting for a quorum; outcome unknown: the write may still be applied")]
    Timeout,
    /// A read could not be confirmed by a quorum before the deadline.
    #[error("timed out waiting for a quorum to confirm the read")]
    ReadTimeout,
    /// The node is stopping.
    #[error("the node is shutting down; the request was not applied")]
    Shutdown,
    /// The request was refused for a reason of its own; it was not applied.
    #[error("{0}")]
    Rejected(Rejection),
    /// raft-rs failed the request for a reason that is not the client's (a bug or a broken
    /// invariant); it was not applied.
    #[error("internal error: {0}")]
    Internal(Arc<Error>),
}

/// A request refused because of what it asks, not because of the cluster's state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Malformed or out of range.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Conflicts with the current state (e.g. the node is already a member).
    #[error("{0}")]
    Conflict(String),
    /// Names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Must be sent to another node (e.g. the leader cannot demote itself).
    #[error("{0}")]
    Misdirected(String),
    /// A membership change refused for a reason clients tell apart (etcd names each one).
    #[error("{1}")]
    Member(MemberRefusal, String),
}

/// Why a membership change was refused, for the reasons clients tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRefusal {
    /// The id is already a member.
    IdTaken,
    /// Another member has the peer URL.
    PeerUrlTaken,
    /// The id is not a member.
    NotMember,
    /// Only a learner can be promoted.
    NotLearner,
    /// The learner's log is not close enough to the leader's yet.
    LearnerBehind,
    /// The voters after the change would not be a quorum this node reaches.
    QuorumAtRisk,
}

/// What the raft loop answers a request with when it does not do it.
#[derive(Debug, thiserror::Error)]
pub enum Declined {
    /// No leader is known: retried until the deadline.
    #[error("no leader is known")]
    NoLeader,
    /// Leadership is being moved away from a node about to be removed: retried.
    #[error("leadership is moving to another node")]
    LeaderMoving,
    /// A leader new in its term has not applied its predecessors' entries (raft-rs drops a
    /// membership change proposed meanwhile): retried.
    #[error("a new leader is still applying the entries of earlier terms")]
    LeaderSettling,
    /// Refused for a reason of its own.
    #[error("{0}")]
    Rejected(Rejection),
    /// raft-rs failed it.
    #[error("internal error: {0}")]
    Internal(Arc<Error>),
}

impl Declined {
    /// Whether the handle retries it until the deadline (the cluster is between leaders).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Declined::NoLeader | Declined::LeaderMoving | Declined::LeaderSettling
        )
    }

    fn into_request_error(self) -> RequestError {
        match self {
            Declined::NoLeader | Declined::LeaderMoving | Declined::LeaderSettling => {
                RequestError::NoLeader
            }
            Declined::Rejected(r) => RequestError::Rejected(r),
            Declined::Internal(e) => RequestError::Internal(e),
        }
    }
}

/// Where the raft loop sends a request's answer.
pub type Reply<T> = oneshot::Sender<Result<T, Declined>>;

/// What the raft loop publishes after every turn, for front-ends to read without a round
/// trip to it (a response header's term, say): its term and the leader it knows (0: none).
#[derive(Debug, Default)]
pub struct Published {
    term: AtomicU64,
    leader: AtomicU64,
}

impl Published {
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, term: u64, leader: u64) {
        self.term.store(term, Ordering::Relaxed);
        self.leader.store(leader, Ordering::Relaxed);
    }
}

/// A cloneable, async front for the raft loop.
pub struct NodeHandle<S: StateMachine> {
    tx: flume::Sender<Input<S>>,
    timeout: Duration,
    published: Arc<Published>,
}

impl<S: StateMachine> Clone for NodeHandle<S> {
    fn clone(&self) -> Self {
        NodeHandle {
            tx: self.tx.clone(),
            timeout: self.timeout,
            published: self.published.clone(),
        }
    }
}

/// Pause between attempts while no leader is known.
const NO_LEADER_RETRY: Duration = Duration::from_millis(50);

impl<S: StateMachine> NodeHandle<S> {
    /// A handle on the loop fed by `tx`, which publishes into `published`.
    pub fn new(
        tx: flume::Sender<Input<S>>,
        timeout: Duration,
        published: Arc<Published>,
    ) -> NodeHandle<S> {
        NodeHandle {
            tx,
            timeout,
            published,
        }
    }

    /// The term and leader as of the raft loop's last turn.
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Replicates a command; returns what applying it returned, once it is committed and
    /// applied on this node. While no leader is known it retries until the request timeout.
    pub async fn propose(&self, command: Bytes) -> Result<S::Output, RequestError> {
        self.submit(|reply| Input::Propose {
            data: command.clone(),
            reply,
        })
        .await
    }

    /// Changes the membership; returns once the change is committed and applied on this node.
    pub async fn change_members(&self, change: MemberChange) -> Result<(), RequestError> {
        self.submit(|reply| Input::ChangeMembers {
            change: change.clone(),
            reply,
        })
        .await
    }

    /// The member list.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, RequestError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send_async(Input::Members(reply)).await.is_err() {
            return Err(RequestError::Shutdown);
        }
        rx.await.map_err(|_| RequestError::Shutdown)
    }

    /// Hands a write to the raft loop and waits for it to be applied, retrying while no
    /// leader is known (or leadership is being moved) until the request timeout.
    async fn submit<T>(&self, make: impl Fn(Reply<T>) -> Input<S>) -> Result<T, RequestError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let (reply, rx) = oneshot::channel();
            if self.tx.send_async(make(reply)).await.is_err() {
                return Err(RequestError::Shutdown);
            }
            match tokio::time::timeout_at(deadline, rx).await {
                Err(_) | Ok(Err(_)) => return Err(RequestError::Timeout),
                Ok(Ok(Ok(done))) => return Ok(done),
                Ok(Ok(Err(declined))) if declined.is_transient() => {
                    if Instant::now() + NO_LEADER_RETRY >= deadline {
                        return Err(RequestError::NoLeader);
                    }
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                Ok(Ok(Err(declined))) => return Err(declined.into_request_error()),
            }
        }
    }

    /// Reads: linearizably (ReadIndex, then wait for apply), or from this node's state
    /// (serializable: possibly stale, never waits for a quorum).
    pub async fn read(&self, query: S::Query, linearizable: bool) -> Result<S::Read, RequestError> {
        let (reply, rx) = oneshot::channel();
        let input = Input::Read {
            query,
            linearizable,
            reply,
        };
        if self.tx.send_async(input).await.is_err() {
            return Err(RequestError::Shutdown);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) | Ok(Err(_)) => Err(RequestError::ReadTimeout),
            Ok(Ok(read)) => Ok(read),
        }
    }

    /// The node's current status.
    pub async fn status(&self) -> Result<NodeStatus<S::Status>, RequestError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send_async(Input::Status(reply)).await.is_err() {
            return Err(RequestError::Shutdown);
        }
        rx.await.map_err(|_| RequestError::Shutdown)
    }

    /// Moves leadership to voter `to` (this node must lead); returns once `to` leads, or
    /// [`RequestError::Timeout`] if it does not within the request timeout.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), RequestError> {
        let deadline = Instant::now() + self.timeout;
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send_async(Input::TransferLeader { to, reply })
            .await
            .is_err()
        {
            return Err(RequestError::Shutdown);
        }
        rx.await
            .map_err(|_| RequestError::Shutdown)?
            .map_err(RequestError::Rejected)?;
        while self.published.leader() != to {
            if Instant::now() >= deadline {
                return Err(RequestError::Timeout);
            }
            tokio::time::sleep(NO_LEADER_RETRY).await;
        }
        Ok(())
    }

    /// The state machine's snapshot data as of this node's applied state now (waits for the
    /// snapshot being taken, if any, and takes a new one).
    pub async fn backup(&self) -> Result<Bytes, RequestError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send_async(Input::Backup(reply)).await.is_err() {
            return Err(RequestError::Shutdown);
        }
        rx.await
            .map_err(|_| RequestError::Shutdown)?
            .map_err(RequestError::Rejected)
    }

    /// Asks the raft loop to sync and stop; false if it already stopped.
    pub async fn shutdown(&self) -> bool {
        self.tx.send_async(Input::Shutdown).await.is_ok()
    }
}
