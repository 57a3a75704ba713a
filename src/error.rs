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
    #[error("no leader is known; the request was not applied")]
    NoLeader,
    #[error("the node is shutting down")]
    Shutdown,
    #[error("invalid request: {0}")]
    Invalid(String),
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
