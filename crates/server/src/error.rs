//! The crate's error type: every failure names what it was doing, so a log line or an HTTP
//! body tells the operator what went wrong and where.

use std::path::PathBuf;

/// Errors from storage, raft and the request path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data in {} at offset {offset}: {reason}; refusing to start", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("encoding a protobuf record: {0}")]
    Encode(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error(
        "this node was removed from the cluster ({} exists); start it with an empty --data-dir and add it again with POST /<id>",
        .0.display()
    )]
    Removed(PathBuf),
    #[error("no leader is known; the request was not applied")]
    NoLeader,
    #[error("the node is shutting down")]
    Shutdown,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Misdirected(String),
    /// Leadership is being moved away from a node about to be removed; try again shortly.
    #[error("leadership is moving to another node")]
    LeaderMoving,
    /// A leader new in this term has not applied its predecessors' entries yet (raft-rs drops
    /// a membership change proposed to it meanwhile); try again shortly.
    #[error("a new leader is still applying the entries of earlier terms")]
    LeaderSettling,
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn encode(e: protobuf::ProtobufError) -> Error {
        Error::Encode(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
