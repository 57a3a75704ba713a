//! Raft: the node loop ([`node`]), the peer transport ([`transport`]), and the async
//! [`NodeHandle`] through which HTTP handlers talk to the raft loop.

pub mod logger;
pub mod node;
pub mod persist;
pub mod transport;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::kv::Outcome;
use node::{Input, MemberChange, MemberInfo, NodeStatus, Query, ReadResult};

/// Why a request did not succeed, in the terms the API reports.
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
    /// The command was rejected when applied.
    #[error("{0}")]
    Rejected(Error),
}

/// A cloneable, async front for the raft loop.
#[derive(Clone)]
pub struct NodeHandle {
    tx: flume::Sender<Input>,
    timeout: Duration,
}

/// Pause between attempts while no leader is known.
const NO_LEADER_RETRY: Duration = Duration::from_millis(50);

impl NodeHandle {
    pub fn new(tx: flume::Sender<Input>, timeout: Duration) -> NodeHandle {
        NodeHandle { tx, timeout }
    }

    /// Replicates a command; returns once it is committed and applied on this node. While no
    /// leader is known it retries until the request timeout.
    pub async fn propose(&self, data: Bytes) -> Result<Outcome, RequestError> {
        self.submit(|reply| Input::Propose {
            data: data.clone(),
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
        .map(|_| ())
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
    async fn submit(&self, make: impl Fn(node::Reply) -> Input) -> Result<Outcome, RequestError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let (reply, rx) = oneshot::channel();
            let input = make(reply);
            if self.tx.send_async(input).await.is_err() {
                return Err(RequestError::Shutdown);
            }
            match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => return Err(RequestError::Timeout),
                Ok(Err(_)) => return Err(RequestError::Timeout),
                Ok(Ok(Ok(outcome))) => return Ok(outcome),
                Ok(Ok(Err(Error::NoLeader | Error::LeaderMoving | Error::LeaderSettling))) => {
                    if Instant::now() + NO_LEADER_RETRY >= deadline {
                        return Err(RequestError::NoLeader);
                    }
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                Ok(Ok(Err(e))) => return Err(RequestError::Rejected(e)),
            }
        }
    }

    /// Reads: linearizably (ReadIndex, then wait for apply), or from this node's state
    /// (serializable: possibly stale, never waits for a quorum).
    pub async fn read(&self, query: Query, linearizable: bool) -> Result<ReadResult, RequestError> {
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
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(RequestError::Rejected(e)),
        }
    }

    /// The node's current status.
    pub async fn status(&self) -> Result<NodeStatus, RequestError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send_async(Input::Status(reply)).await.is_err() {
            return Err(RequestError::Shutdown);
        }
        rx.await.map_err(|_| RequestError::Shutdown)
    }
}
