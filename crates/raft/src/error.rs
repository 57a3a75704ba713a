//! The errors that stop a node: storage, corruption, raft-rs itself. Every failure names what
//! it was doing, so a log line tells the operator what went wrong and where. What a request
//! gets back is [`crate::RequestError`], a different type.

use std::path::PathBuf;

/// A fatal error: the node stops (fail-stop) rather than serve on a state it cannot trust.
///
/// Each message already ends with the error it wraps, so none is also reported as a
/// `source()`: printed as a chain (`{:#}` at the edge) it would appear twice or three times.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
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
    /// The log writer failed (and stopped) on this error.
    #[error("the write-ahead log failed: {0}")]
    LogWriter(std::sync::Arc<Error>),
    /// An invariant of the in-memory log broke (a bug, never caused by input).
    #[error("internal error: {0}")]
    Internal(String),
    /// The state machine could not restore a snapshot raft-rs had accepted.
    #[error("restoring a snapshot: {0}")]
    Snapshot(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            cause: source,
        }
    }

    pub fn encode(e: protobuf::ProtobufError) -> Error {
        Error::Encode(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
