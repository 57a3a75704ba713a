//! The state machine's own error: a command or snapshot whose bytes do not decode. It fails
//! identically on every replica (see `kv`'s determinism rules). A forwarded proposal that does
//! not decode is refused before it reaches the log; one that reaches it anyway is skipped by
//! every replica, and its proposer (this node encoded it: a bug) answers 500.

/// Bytes that are not a valid command or snapshot (the text says which, and why).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Malformed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
