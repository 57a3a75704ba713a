//! Which member a peer's certificate proves: the rule a node applies, on both ends of a peer
//! connection, before it decodes a raft message from the other side.
//!
//! A certificate proves the member whose peer URL is `u` if its subject alternative names
//! include the URI `u` itself — or, when it has no URI names at all, an IP address or DNS name
//! equal to `u`'s host (the certificates etcd deployments already have: one per host). URI
//! names are what tell apart members that share a host, such as a cluster on one machine.

use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The names a certificate is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// The subject alternative names of a DER certificate.
pub fn names(cert: &CertificateDer<'_>) -> Result<Names, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut names = Names::default();
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::URI(u) => names.uris.push(u.trim_end_matches('/').to_string()),
            GeneralName::DNSName(d) => names.dns.push(d.to_ascii_lowercase()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => names
                    .ips
                    .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                16 => names
                    .ips
                    .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                _ => {}
            },
            _ => {}
        }
    }
    Ok(names)
}

/// The host of a peer URL (`https://host:port`, IPv6 in brackets), lowercased.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Checks that `cert` proves the member whose peer URL is `url` (see the module doc); the
/// error says what the certificate names instead.
pub fn check_member(cert: &CertificateDer<'_>, url: &str) -> Result<(), String> {
    let names = names(cert)?;
    let url = url.trim_end_matches('/');
    if !names.uris.is_empty() {
        return match names.uris.iter().any(|u| u == url) {
            true => Ok(()),
            false => Err(format!(
                "the certificate is for {:?}, not for the member at {url}",
                names.uris
            )),
        };
    }
    let host = host_of(url).ok_or_else(|| format!("{url} has no host"))?;
    let matches = match host.parse::<IpAddr>() {
        Ok(ip) => names.ips.contains(&ip),
        Err(_) => names.dns.contains(&host),
    };
    match matches {
        true => Ok(()),
        false => Err(format!(
            "the certificate is for the hosts {:?} {:?}, not for {host} (the member at {url})",
            names.dns, names.ips
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert(sans: Vec<SanType>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().clone()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().unwrap())
    }

    #[test]
    fn a_uri_name_proves_exactly_its_member() {
        let c = cert(vec![
            uri("https://127.0.0.1:12379"),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ]);
        assert!(check_member(&c, "https://127.0.0.1:12379").is_ok());
        assert!(check_member(&c, "https://127.0.0.1:12379/").is_ok());
        // Same host, another member: the URI decides, not the IP.
        let err = check_member(&c, "https://127.0.0.1:22379").unwrap_err();
        assert!(
            err.contains("not for the member at https://127.0.0.1:22379"),
            "{err}"
        );
    }

    #[test]
    fn without_uri_names_the_host_must_match() {
        let by_ip = cert(vec![SanType::IpAddress("10.0.0.1".parse().unwrap())]);
        assert!(check_member(&by_ip, "https://10.0.0.1:2380").is_ok());
        assert!(check_member(&by_ip, "https://10.0.0.2:2380").is_err());
        let by_name = cert(vec![SanType::DnsName("Node1.example".try_into().unwrap())]);
        assert!(check_member(&by_name, "https://node1.example:2380").is_ok());
        assert!(check_member(&by_name, "https://node2.example:2380").is_err());
        let v6 = cert(vec![SanType::IpAddress("::1".parse().unwrap())]);
        assert!(check_member(&v6, "https://[::1]:2380").is_ok());
        assert!(check_member(&cert(vec![]), "https://10.0.0.1:2380").is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = check_member(&CertificateDer::from(vec![1, 2, 3]), "https://a:1").unwrap_err();
        assert!(err.contains("unreadable certificate"), "{err}");
    }
}
