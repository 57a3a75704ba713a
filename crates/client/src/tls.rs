//! TLS for the client's connections: the settings every connection of a client shares (the
//! CA to verify nodes against, a client certificate), built once from etcdctl-style flags.

use std::sync::Arc;

use coordinate_tls::client::ClientSpec;
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
