//! The client's errors, by what they mean for a retry.
//!
//! Three layers fail in three ways:
//! - [`ClientError`]: one request on one [`crate::Connection`] got no HTTP answer. Whether it
//!   may be repeated depends on whether it may have reached the server ([`ClientError::was_sent`]).
//! - [`CallError`]: no endpoint of a [`crate::Endpoints`] list gave an answer, or one may have
//!   applied a write and the others were not asked ([`CallError::outcome_unknown`]).
//! - [`Error`]: a typed call of [`crate::Client`] failed: one of the above, or the cluster
//!   answered and refused (not found, precondition failed, conflict, invalid), or answered
//!   something the API does not promise.

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (refused, unreachable, not within the timeout), or an idle
    /// one turned out closed: the request was certainly not sent.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The connection broke after the request may have been sent.
    #[error("request failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a header or path that is not valid HTTP): not sent.
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// No answer within the timeout; the request may have been received.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// True if the request may have reached the server: then a write's outcome is unknown.
    pub fn was_sent(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Request(_) => false,
            ClientError::Http(_) | ClientError::Timeout(_) => true,
        }
    }

    /// True if repeating the request (here or on another endpoint) cannot apply it twice:
    /// it was never sent, or it is idempotent (a read).
    pub fn safe_to_retry(&self, idempotent: bool) -> bool {
        idempotent || !self.was_sent()
    }

    /// The one-line reason without the address (for lists that name the endpoint already):
    /// `cannot connect: …`, `connection lost: …`, `no answer within …`.
    pub fn reason(&self) -> String {
        match self {
            ClientError::Connect { source, .. } => format!("cannot connect: {source}"),
            ClientError::Request(e) => format!("cannot connect: building the request: {e}"),
            ClientError::Http(e) => format!("connection lost: {e}"),
            ClientError::Timeout(t) => format!("no answer within {t:?}"),
        }
    }
}

/// Why no endpoint gave an answer (see [`crate::failover`]).
#[derive(Debug, PartialEq, Eq)]
pub enum CallError {
    /// Every endpoint was tried; each one's reason. Nothing was applied.
    Unavailable(Vec<(String, String)>),
    /// An endpoint may have applied the write; it is not repeated elsewhere.
    Unknown { endpoint: String, reason: String },
}

impl CallError {
    /// True if a write may have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, CallError::Unknown { .. })
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unavailable(tried) => {
                write!(f, "no endpoint could serve the request:")?;
                for (endpoint, reason) in tried {
                    write!(f, "\n  {endpoint}: {reason}")?;
                }
                Ok(())
            }
            CallError::Unknown { endpoint, reason } => write!(f, "{endpoint}: {reason}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Why a typed call of [`crate::Client`] did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint answered, or a write's outcome is unknown.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The cluster answered and refused: nothing was applied. `reason` is the server's.
    #[error("{what}: {reason} ({} from {endpoint})", status.as_u16())]
    Refused {
        what: String,
        endpoint: String,
        status: StatusCode,
        reason: String,
        /// The answer's body (under `/v1`, a JSON object with `error` and maybe more).
        body: Bytes,
    },
    /// The answer is not what the API promises (a bug on one side).
    #[error("{what}: the answer from {endpoint} is not valid: {detail}")]
    Invalid {
        what: String,
        endpoint: String,
        detail: String,
    },
}

impl Error {
    /// True if a write may have been applied (do not blindly repeat it).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Call(e) => e.outcome_unknown(),
            Error::Refused { status, .. } => *status == StatusCode::GATEWAY_TIMEOUT,
            Error::Invalid { .. } => true,
        }
    }

    /// The refusal's status, if the cluster answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsent_or_idempotent_requests_are_safe_to_retry() {
        let refused = ClientError::Connect {
            addr: "a:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(!refused.was_sent());
        assert!(refused.safe_to_retry(false));
        assert!(refused.reason().starts_with("cannot connect: "));
        let timeout = ClientError::Timeout(Duration::from_secs(1));
        assert!(timeout.was_sent());
        assert!(!timeout.safe_to_retry(false));
        assert!(timeout.safe_to_retry(true));
        assert_eq!(timeout.reason(), "no answer within 1s");
    }

    #[test]
    fn unavailability_lists_every_endpoint() {
        let e = CallError::Unavailable(vec![
            ("a:1".into(), "cannot connect: refused".into()),
            ("b:2".into(), "no leader (503)".into()),
        ]);
        assert_eq!(
            e.to_string(),
            "no endpoint could serve the request:\n  a:1: cannot connect: refused\n  b:2: no leader (503)"
        );
        assert!(!e.outcome_unknown());
    }
}
