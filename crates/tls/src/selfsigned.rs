//! Self-signed certificates for `--auto-tls` and `--peer-auto-tls`: encryption without
//! verification, as etcd documents those modes — the other side cannot tell this node from
//! any other, so they authenticate nobody.

use std::net::IpAddr;

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::TlsError;

/// A new key and a self-signed certificate for `hosts` (IP addresses or DNS names), valid
/// from now for a year.
pub fn generate(
    hosts: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coordinate (auto-tls)");
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
    let cert = params.self_signed(&key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((vec![cert.der().clone()], key))
}
