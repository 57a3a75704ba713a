//! TLS for coordinate's two ports and its clients, on rustls with the ring provider (no
//! OpenSSL): certificates and keys read from PEM files and re-read when they change
//! ([`server::ServerTls`]), self-signed ones for `--auto-tls` ([`selfsigned`]), client
//! configurations for the tools and tests ([`client`]), a member's peer-port TLS
//! ([`peer`]), and the check that a peer's
//! certificate names the member it claims to be ([`identity`]).

pub mod client;
pub mod devcerts;
mod error;
pub mod identity;
pub mod peer;
pub mod pem;
pub mod selfsigned;
pub mod server;

use std::sync::Arc;

pub use error::TlsError;
pub use rustls;
pub use server::{keep_fresh, Reload};
pub use tokio_rustls;

/// The cryptography every configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
