//! Certificates for secure test clusters: a CA made per cluster, a certificate per member
//! naming its peer URL (and `127.0.0.1`/`localhost`, for its client port), a client
//! certificate, the flags that turn on peer mTLS and client TLS with client certificates, and
//! the client that speaks to such a cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coordinate_client::{ClientTls, TlsSpec};
use coordinate_tls::client::ClientSpec;
use coordinate_tls::devcerts::{Authority, Subject};
use coordinate_tls::peer::PEER_ALPN;
use coordinate_tls::rustls::ClientConfig;

/// A cluster's CA and the files it issued, in one directory.
pub struct Certs {
    dir: PathBuf,
    authority: Authority,
}

impl Certs {
    /// A new CA in `dir` (`ca.pem`), and a client certificate (`client.pem`).
    pub fn new(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).expect("create the certificate dir");
        let authority = Authority::new("coordinate test CA").expect("make a CA");
        let certs = Certs {
            dir: dir.to_path_buf(),
            authority,
        };
        std::fs::write(certs.ca(), certs.authority.cert_pem()).expect("write ca.pem");
        certs.issue("client", &Subject::named("client"));
        certs
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues member `id`'s certificate for `peer_url` (its host too, besides loopback).
    pub fn issue_member(&self, id: u64, peer_url: &str) {
        let host = peer_url
            .split_once("://")
            .map_or(peer_url, |(_, a)| a)
            .rsplit_once(':')
            .map_or("", |(h, _)| h);
        let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        if !host.is_empty() && !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
        let subject = Subject {
            hosts,
            uris: vec![peer_url.to_string()],
            ..Subject::named(&format!("node-{id}"))
        };
        self.issue(&format!("node-{id}"), &subject);
    }

    /// Issues a certificate for `subject`, written as `<name>.pem` and `<name>-key.pem`;
    /// returns the two paths.
    pub fn issue(&self, name: &str, subject: &Subject) -> (PathBuf, PathBuf) {
        let issued = self.authority.issue(subject).expect("issue a certificate");
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, issued.cert_pem).expect("write a certificate");
        std::fs::write(&key, issued.key_pem).expect("write a key");
        (cert, key)
    }

    /// The certificate and key files issued as `name`.
    pub fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        )
    }

    /// Member `id`'s flags: peer mTLS, and client TLS requiring client certificates.
    pub fn member_args(&self, id: u64) -> Vec<String> {
        let (cert, key) = self.files(&format!("node-{id}"));
        let ca = self.ca();
        let mut args = Vec::new();
        for (flag, path) in [
            ("--peer-cert-file", &cert),
            ("--peer-key-file", &key),
            ("--peer-trusted-ca-file", &ca),
            ("--cert-file", &cert),
            ("--key-file", &key),
            ("--trusted-ca-file", &ca),
        ] {
            args.push(flag.to_string());
            args.push(path.display().to_string());
        }
        args.push("--client-cert-auth".to_string());
        args
    }

    /// TLS for clients: the CA, and the client certificate.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::new(&TlsSpec {
            trusted_ca: Some(self.ca()),
            cert_and_key: Some((self.dir.join("client.pem"), self.dir.join("client-key.pem"))),
            insecure: false,
        })
        .expect("client TLS from the test certificates")
    }
}

/// What a peer dialling a node's peer port speaks with: it trusts `ca` and presents `cert`
/// (a member's, another CA's, an expired one...).
pub fn peer_client(ca: &Path, (cert, key): (PathBuf, PathBuf)) -> Arc<ClientConfig> {
    ClientSpec {
        trusted_ca: Some(ca.to_path_buf()),
        cert_and_key: Some((cert, key)),
        insecure: false,
    }
    .build(&[PEER_ALPN])
    .expect("a peer client configuration from test certificates")
}
