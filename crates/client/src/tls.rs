//! TLS for the client's connections: the settings every connection of a client shares (the
//! CA to verify nodes against, a client certificate), built once from etcdctl-style flags.

use std::sync::Arc;

use coordinate_tls::client::ClientSpec;
use coordinate_tls::rustls::pki_types::ServerName;
use coordinate_tls::rustls::ClientConfig;
use coordinate_tls::TlsError;

/// TLS settings for connections to the client port (HTTP/1.1 inside).
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Reads the files `spec` names; the error names the file or setting.
    pub fn new(spec: &ClientSpec) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            config: spec.build(&[b"http/1.1"])?,
        })
    }

    pub(crate) fn connector(&self) -> coordinate_tls::tokio_rustls::TlsConnector {
        coordinate_tls::tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

/// The name a node's certificate must carry to be `addr`'s (`host:port`): its host, an IP
/// address or a DNS name.
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    };
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} as a TLS name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
