//! What can go wrong building a TLS configuration: each error names the file or the setting.

use std::path::PathBuf;

/// A TLS configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{what}: {source}")]
    Rustls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

impl TlsError {
    pub(crate) fn rustls(what: impl Into<String>, source: rustls::Error) -> TlsError {
        TlsError::Rustls {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl ToString) -> TlsError {
        TlsError::Invalid {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
