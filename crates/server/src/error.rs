//! The state machine's own error: a command or snapshot whose bytes do not decode. It fails
//! identically on every replica (see `kv`'s determinism rules) and reaches the proposer as a
//! rejection, never as a node failure.

/// Bytes that are not a valid command or snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
