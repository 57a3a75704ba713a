//! A certificate authority for development and tests: a CA, and certificates it signs for
//! nodes and clients (for both server and client use, as peers need), with the names and
//! validity asked for. What `coordinatectl certs` writes, and what the TLS tests use; a
//! production cluster's certificates come from the operator's own CA.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::TlsError;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A CA that signs certificates.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// What a certificate is for.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    /// The common name (for people reading the certificate).
    pub name: String,
    /// Host names: IP addresses or DNS names.
    pub hosts: Vec<String>,
    /// URI names: a member's peer URL proves that member (see [`crate::identity`]).
    pub uris: Vec<String>,
    /// Already expired (for tests of refusal).
    pub expired: bool,
}

impl Subject {
    /// A subject with only a common name (add hosts and URIs with struct update syntax).
    pub fn named(name: &str) -> Subject {
        Subject {
            name: name.to_string(),
            ..Subject::default()
        }
    }
}

/// A signed certificate and its key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new CA, valid for ten years.
    pub fn new(name: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let now = SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + 3650 * DAY).into();
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    /// The CA certificate, PEM-encoded (the `--trusted-ca-file` of whoever verifies).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `subject`, signed by this CA, valid for a year (or expired).
    pub fn issue(&self, subject: &Subject) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, subject.name.as_str());
        for host in &subject.hosts {
            params.subject_alt_names.push(match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into()?),
            });
        }
        for uri in &subject.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.clone().try_into()?));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        (params.not_before, params.not_after) = match subject.expired {
            true => ((now - 3 * DAY).into(), (now - DAY).into()),
            false => ((now - DAY).into(), (now + 365 * DAY).into()),
        };
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
