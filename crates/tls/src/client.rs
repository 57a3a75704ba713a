//! The client side: what the tools, the tests and a node dialling its peers connect with —
//! the CA to verify the server against (or none: `--insecure-skip-tls-verify`, and peers in
//! `--peer-auto-tls` mode), and a client certificate to present if the server asks.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::{pem, provider, TlsError};

/// How a client verifies servers and proves itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientSpec {
    /// `--cacert`: the CA that signs the servers' certificates; `None` with `insecure` false
    /// means the platform has none to offer here, so it is required unless `insecure`.
    pub trusted_ca: Option<PathBuf>,
    /// `--cert` and `--key`: a client certificate, for servers that require one.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Encrypt without verifying the server (etcd's `--insecure-skip-tls-verify`, and what
    /// peers do with `--peer-auto-tls`).
    pub insecure: bool,
}

impl ClientSpec {
    /// The rustls configuration; `alpn` lists the application protocols to offer.
    pub fn build(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::rustls("the TLS versions", e))?;
        let builder = match (&self.trusted_ca, self.insecure) {
            (_, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider()))),
            (Some(ca), false) => builder.with_root_certificates(pem::trusted_roots(ca)?),
            (None, false) => {
                return Err(TlsError::invalid(
                    "verifying the server",
                    "it needs a CA file (--cacert), or --insecure-skip-tls-verify",
                ))
            }
        };
        let mut config = match &self.cert_and_key {
            Some((cert, key)) => builder
                .with_client_auth_cert(pem::certificates(cert)?, pem::private_key(key)?)
                .map_err(|e| TlsError::rustls("the client certificate and key", e))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Accepts any server certificate (its signatures are still checked, so the handshake is
/// with whoever holds its key — just not anyone verified).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
