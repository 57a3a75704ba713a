//! The peer port's TLS: the one certificate a member presents both when peers dial it and
//! when it dials them, the CA that signs every member's, and whether the other side's
//! identity is checked (always with certificate files; never with `--peer-auto-tls`, which
//! encrypts without verifying, as in etcd).

use std::sync::{Arc, RwLock};

use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;

use crate::client::ClientSpec;
use crate::server::{Reload, ServerSpec, ServerTls};
use crate::{identity, TlsError};

/// The ALPN protocol both ends of a peer connection name, so nothing else (an HTTPS client
/// that offers `http/1.1`, say) completes a handshake with the peer port.
pub const PEER_ALPN: &[u8] = b"coordinate-peer/1";

/// Where a member's peer certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`: every connection,
    /// either way, is verified against the CA, and its certificate must name the member it
    /// speaks for ([`identity::check_member`]).
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        trusted_ca: std::path::PathBuf,
    },
    /// `--peer-auto-tls`: a self-signed certificate for these hosts; nothing is verified.
    SelfSigned { hosts: Vec<String> },
}

/// A member's TLS for its peer connections, current as of the last (re)load.
#[derive(Debug)]
pub struct PeerTls {
    spec: PeerSpec,
    server: ServerTls,
    client: RwLock<Arc<ClientConfig>>,
}

impl PeerTls {
    /// Reads the certificate, key and CA (or makes a self-signed certificate).
    pub fn new(spec: PeerSpec) -> Result<PeerTls, TlsError> {
        let server = ServerTls::new(server_spec(&spec), &[PEER_ALPN])?;
        let client = client_config(&spec)?;
        Ok(PeerTls {
            spec,
            server,
            client: RwLock::new(client),
        })
    }

    /// An acceptor for the next inbound connection (it requires a client certificate the CA
    /// signed, unless self-signed).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.server.acceptor()
    }

    /// A connector for the next outbound connection (it verifies the peer's certificate
    /// against the CA and its host name, unless self-signed).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        let config = match self.client.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsConnector::from(config)
    }

    /// Whether the certificate of the other side must name the member it speaks for.
    pub fn checks_identity(&self) -> bool {
        matches!(self.spec, PeerSpec::Files { .. })
    }

    /// Checks that the other side's certificate, if identities are checked, proves the
    /// member at `url` (see [`identity::check_member`]); the reason if not.
    pub fn check_member(&self, cert: Option<&CertificateDer<'_>>, url: &str) -> Result<(), String> {
        if !self.checks_identity() {
            return Ok(());
        }
        let cert = cert.ok_or("no certificate was presented")?;
        identity::check_member(cert, url)
    }
}

impl Reload for PeerTls {
    fn reload(&self) -> Result<(), TlsError> {
        let client = client_config(&self.spec)?;
        self.server.reload()?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        Ok(())
    }

    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if !self.server.files_changed() {
            return Ok(false);
        }
        // The client side first: if it fails, the server side is not marked as loaded either,
        // so both are tried again at the next check.
        let client = client_config(&self.spec)?;
        if self.server.reload_if_changed()? {
            *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        }
        Ok(true)
    }

    fn has_files(&self) -> bool {
        self.checks_identity()
    }
}

fn server_spec(spec: &PeerSpec) -> ServerSpec {
    match spec {
        PeerSpec::Files {
            cert,
            key,
            trusted_ca,
        } => ServerSpec::Files {
            cert: cert.clone(),
            key: key.clone(),
            trusted_ca: Some(trusted_ca.clone()),
            require_client_cert: true,
        },
        PeerSpec::SelfSigned { hosts } => ServerSpec::SelfSigned {
            hosts: hosts.clone(),
        },
    }
}

fn client_config(spec: &PeerSpec) -> Result<Arc<ClientConfig>, TlsError> {
    let client = match spec {
        PeerSpec::Files {
            cert,
            key,
            trusted_ca,
        } => ClientSpec {
            trusted_ca: Some(trusted_ca.clone()),
            cert_and_key: Some((cert.clone(), key.clone())),
            insecure: false,
        },
        PeerSpec::SelfSigned { .. } => ClientSpec {
            trusted_ca: None,
            cert_and_key: None,
            insecure: true,
        },
    };
    client.build(&[PEER_ALPN])
}
