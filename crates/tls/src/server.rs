//! The server side of a port: its rustls configuration, built from PEM files (and rebuilt
//! when they change, so certificates rotate without a restart: new connections use the new
//! ones) or from a self-signed certificate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{pem, provider, selfsigned, TlsError};

/// Where a port's certificate comes from, and how it treats the other side's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSpec {
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth` (or the peer
    /// flags): the certificate and key, and the CA that signs the certificates of clients.
    /// With `require_client_cert` a client without a certificate the CA signed is refused;
    /// without it, a certificate is verified if the client presents one.
    Files {
        cert: PathBuf,
        key: PathBuf,
        trusted_ca: Option<PathBuf>,
        require_client_cert: bool,
    },
    /// `--auto-tls`: a self-signed certificate for these hosts, made at start; clients are
    /// not asked for one.
    SelfSigned { hosts: Vec<String> },
}

/// A port's TLS configuration, current as of the last (re)load.
#[derive(Debug)]
pub struct ServerTls {
    spec: ServerSpec,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files looked like when last loaded (modification time and length of each).
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ServerTls {
    /// Builds the configuration; `alpn` lists the application protocols offered (e.g.
    /// `http/1.1`), in preference order.
    pub fn new(spec: ServerSpec, alpn: &[&[u8]]) -> Result<ServerTls, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamps = stamps(&spec);
        let config = build(&spec, &alpn)?;
        Ok(ServerTls {
            spec,
            alpn,
            current: RwLock::new(config),
            stamps: Mutex::new(stamps),
        })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// An acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }

    /// Rebuilds the configuration from the files if any changed since the last load; true if
    /// it did. On an error the current configuration stays (a half-written certificate must
    /// not take the port down); the files are tried again at the next call.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.spec);
        let mut last = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if *last == now {
            return Ok(false);
        }
        self.reload()?;
        *last = now;
        Ok(true)
    }

    /// Rebuilds the configuration from the files (SIGHUP).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.spec, &self.alpn)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// Whether any file changed since the last load (false for a self-signed port).
    pub fn files_changed(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != stamps(&self.spec)
    }
}

impl Reload for ServerTls {
    fn reload(&self) -> Result<(), TlsError> {
        ServerTls::reload(self)
    }

    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        ServerTls::reload_if_changed(self)
    }

    fn has_files(&self) -> bool {
        matches!(self.spec, ServerSpec::Files { .. })
    }
}

/// Certificates that can be re-read: a port's ([`ServerTls`]) or the peer side's
/// ([`crate::peer::PeerTls`]).
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the files (SIGHUP).
    fn reload(&self) -> Result<(), TlsError>;
    /// Re-reads the files if any changed; true if it did.
    fn reload_if_changed(&self) -> Result<bool, TlsError>;
    /// Whether there are files at all (a self-signed certificate has none to re-read).
    fn has_files(&self) -> bool;
}

/// Reloads on SIGHUP and whenever a file changes (checked every `every`), logging each
/// reload and each failure, until the task is dropped. `what` names the port in logs.
pub async fn keep_fresh<R: Reload>(tls: Arc<R>, what: &'static str, every: Duration) {
    if !tls.has_files() {
        return;
    }
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let forced = match hangups.as_mut() {
            Some(h) => tokio::select! {
                _ = h.recv() => true,
                _ = ticks.tick() => false,
            },
            None => {
                ticks.tick().await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            ticks.tick().await;
            false
        };
        let result = match forced {
            true => tls.reload().map(|()| true),
            false => tls.reload_if_changed(),
        };
        match result {
            Ok(true) => tracing::info!(port = what, "TLS certificates reloaded"),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                port = what, %error,
                "cannot reload the TLS certificates; serving on with the previous ones"
            ),
        }
    }
}

/// The modification time and length of each file of `spec`.
fn stamps(spec: &ServerSpec) -> Vec<Option<(SystemTime, u64)>> {
    let ServerSpec::Files {
        cert,
        key,
        trusted_ca,
        ..
    } = spec
    else {
        return Vec::new();
    };
    [Some(cert), Some(key), trusted_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn build(spec: &ServerSpec, alpn: &[Vec<u8>]) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key, verifier): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, _) =
        match spec {
            ServerSpec::Files {
                cert,
                key,
                trusted_ca,
                require_client_cert,
            } => {
                let verifier = match trusted_ca {
                    Some(ca) => {
                        let roots = pem::trusted_roots(ca)?;
                        let b = WebPkiClientVerifier::builder_with_provider(roots, provider());
                        let b = match require_client_cert {
                            true => b,
                            false => b.allow_unauthenticated(),
                        };
                        Some(b.build().map_err(|e| {
                            TlsError::invalid(format!("the CA in {}", ca.display()), e)
                        })?)
                    }
                    None if *require_client_cert => {
                        return Err(TlsError::invalid(
                            "client certificate authentication",
                            "it needs a trusted CA file to verify the certificates against",
                        ))
                    }
                    None => None,
                };
                (pem::certificates(cert)?, pem::private_key(key)?, verifier)
            }
            ServerSpec::SelfSigned { hosts } => {
                let (certs, key) = selfsigned::generate(hosts)?;
                (certs, key, None)
            }
        };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::rustls("the TLS versions", e))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::rustls("the certificate and key", e))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}
