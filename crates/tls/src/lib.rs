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

/// The name a node's certificate must carry to be `addr`'s (`host:port`): its host, an IP
/// address or a DNS name.
pub fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = match addr.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    };
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} as a TLS name: {e}"))
}

/// The cryptography every configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    #[test]
    fn server_names_are_the_host() {
        assert_eq!(
            server_name("127.0.0.1:12380").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:80").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("node1.example:2379").unwrap(),
            ServerName::try_from("node1.example").unwrap()
        );
        assert!(server_name("bad host:1").is_err());
    }
}
