//! Handshakes between the server and client configurations over an in-memory pipe: who is
//! let in (a certificate from the trusted CA), who is not (no certificate when one is
//! required, another CA's, an expired one), self-signed mode, and rotation from the files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coordinate_tls::client::ClientSpec;
use coordinate_tls::devcerts::{Authority, Issued, Subject};
use coordinate_tls::rustls::pki_types::ServerName;
use coordinate_tls::server::{ServerSpec, ServerTls};
use coordinate_tls::tokio_rustls::TlsConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALPN: &[&[u8]] = &[b"http/1.1"];

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn node(ca: &Authority, expired: bool) -> Issued {
    ca.issue(&Subject {
        name: "node".into(),
        hosts: vec!["127.0.0.1".into(), "localhost".into()],
        expired,
        ..Subject::default()
    })
    .unwrap()
}

/// Writes a CA and a certificate it issued; returns (ca, cert, key) paths.
fn files(dir: &Path, prefix: &str, ca: &Authority, issued: &Issued) -> (PathBuf, PathBuf, PathBuf) {
    (
        write(dir, &format!("{prefix}-ca.pem"), &ca.cert_pem()),
        write(dir, &format!("{prefix}.pem"), &issued.cert_pem),
        write(dir, &format!("{prefix}-key.pem"), &issued.key_pem),
    )
}

/// Runs one handshake and a round trip; Ok only if both sides succeed.
async fn handshake(server: &ServerTls, client: &ClientSpec) -> Result<(), String> {
    let config = client.build(ALPN).map_err(|e| e.to_string())?;
    let (a, b) = tokio::io::duplex(1 << 16);
    let acceptor = server.acceptor();
    let serve = async move {
        let mut s = acceptor
            .accept(a)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        s.write_all(&buf)
            .await
            .map_err(|e| format!("server write: {e}"))?;
        s.flush().await.map_err(|e| format!("server flush: {e}"))?;
        Ok::<_, String>(())
    };
    let dial = async move {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut c = TlsConnector::from(config)
            .connect(name, b)
            .await
            .map_err(|e| format!("client: {e}"))?;
        c.write_all(b"ping")
            .await
            .map_err(|e| format!("client write: {e}"))?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        Ok::<_, String>(buf)
    };
    // Both sides' errors: the one that refused names the reason, the other sees an alert.
    match tokio::join!(serve, dial) {
        (Ok(()), Ok(buf)) if &buf == b"ping" => Ok(()),
        (Ok(()), Ok(other)) => Err(format!("echoed {other:?}")),
        (served, answer) => Err(format!("{:?} / {:?}", served.err(), answer.err())),
    }
}

fn trusting(ca: &Path) -> ClientSpec {
    ClientSpec {
        trusted_ca: Some(ca.to_path_buf()),
        ..ClientSpec::default()
    }
}

#[tokio::test]
async fn a_client_verifies_the_server_against_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let (ca_file, cert, key) = files(dir.path(), "node", &ca, &node(&ca, false));
    let server = ServerTls::new(
        ServerSpec::Files {
            cert,
            key,
            trusted_ca: None,
            require_client_cert: false,
        },
        ALPN,
    )
    .unwrap();
    handshake(&server, &trusting(&ca_file)).await.unwrap();

    // Another CA's client does not trust it; an insecure one does not ask.
    let other = Authority::new("other CA").unwrap();
    let other_ca = write(dir.path(), "other-ca.pem", &other.cert_pem());
    let err = handshake(&server, &trusting(&other_ca)).await.unwrap_err();
    assert!(
        err.contains("client: invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let insecure = ClientSpec {
        insecure: true,
        ..ClientSpec::default()
    };
    handshake(&server, &insecure).await.unwrap();
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let (ca_file, cert, key) = files(dir.path(), "node", &ca, &node(&ca, true));
    let server = ServerTls::new(
        ServerSpec::Files {
            cert,
            key,
            trusted_ca: None,
            require_client_cert: false,
        },
        ALPN,
    )
    .unwrap();
    let err = handshake(&server, &trusting(&ca_file)).await.unwrap_err();
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let (ca_file, cert, key) = files(dir.path(), "node", &ca, &node(&ca, false));
    let server = ServerTls::new(
        ServerSpec::Files {
            cert,
            key,
            trusted_ca: Some(ca_file.clone()),
            require_client_cert: true,
        },
        ALPN,
    )
    .unwrap();
    let with = |prefix: &str, issuer: &Authority, expired: bool| {
        let (_, cert, key) = files(dir.path(), prefix, issuer, &node(issuer, expired));
        ClientSpec {
            cert_and_key: Some((cert, key)),
            ..trusting(&ca_file)
        }
    };
    handshake(&server, &with("client", &ca, false))
        .await
        .unwrap();

    let err = handshake(&server, &trusting(&ca_file)).await.unwrap_err();
    assert!(err.contains("server:"), "no certificate: {err}");
    let other = Authority::new("other CA").unwrap();
    let err = handshake(&server, &with("stranger", &other, false))
        .await
        .unwrap_err();
    assert!(err.contains("server:"), "another CA: {err}");
    let err = handshake(&server, &with("old", &ca, true))
        .await
        .unwrap_err();
    assert!(
        err.contains("server:") && err.to_lowercase().contains("expired"),
        "{err}"
    );
}

#[tokio::test]
async fn client_cert_auth_without_a_ca_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let (_, cert, key) = files(dir.path(), "node", &ca, &node(&ca, false));
    let err = ServerTls::new(
        ServerSpec::Files {
            cert,
            key,
            trusted_ca: None,
            require_client_cert: true,
        },
        ALPN,
    )
    .unwrap_err();
    assert!(err.to_string().contains("trusted CA"), "{err}");
    let err = ServerTls::new(
        ServerSpec::Files {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("missing-key.pem"),
            trusted_ca: None,
            require_client_cert: false,
        },
        ALPN,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[tokio::test]
async fn self_signed_mode_encrypts_without_verification() {
    let server = ServerTls::new(
        ServerSpec::SelfSigned {
            hosts: vec!["127.0.0.1".into()],
        },
        ALPN,
    )
    .unwrap();
    let insecure = ClientSpec {
        insecure: true,
        ..ClientSpec::default()
    };
    handshake(&server, &insecure).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem());
    assert!(handshake(&server, &trusting(&ca_file)).await.is_err());
}

#[tokio::test]
async fn certificates_rotate_from_the_files_and_a_broken_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Authority::new("old CA").unwrap();
    let (old_ca_file, cert, key) = files(dir.path(), "node", &old_ca, &node(&old_ca, false));
    let server = Arc::new(
        ServerTls::new(
            ServerSpec::Files {
                cert: cert.clone(),
                key: key.clone(),
                trusted_ca: None,
                require_client_cert: false,
            },
            ALPN,
        )
        .unwrap(),
    );
    assert!(!server.reload_if_changed().unwrap(), "nothing changed yet");
    handshake(&server, &trusting(&old_ca_file)).await.unwrap();

    // New certificate files (a new CA, and a different size so the change is seen at once).
    let new_ca = Authority::new("new CA with a longer name").unwrap();
    let issued = new_ca
        .issue(&Subject {
            name: "node, reissued".into(),
            hosts: vec!["127.0.0.1".into(), "node.example".into()],
            ..Subject::default()
        })
        .unwrap();
    let new_ca_file = write(dir.path(), "new-ca.pem", &new_ca.cert_pem());
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    assert!(server.reload_if_changed().unwrap());
    handshake(&server, &trusting(&new_ca_file)).await.unwrap();
    assert!(handshake(&server, &trusting(&old_ca_file)).await.is_err());

    // A half-written certificate: the reload fails, the port serves on with the new one.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64").unwrap();
    assert!(server.reload_if_changed().is_err());
    handshake(&server, &trusting(&new_ca_file)).await.unwrap();
}

/// One handshake and round trip from `connector` to `acceptor`; how the client's handshake
/// went (full, or resumed from an earlier session), and whether the server has the client's
/// certificate.
async fn handshake_kind(
    acceptor: coordinate_tls::tokio_rustls::TlsAcceptor,
    connector: TlsConnector,
) -> (coordinate_tls::rustls::HandshakeKind, bool) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let serve = async move {
        let mut s = acceptor.accept(a).await.expect("server handshake");
        let client_cert = s.get_ref().1.peer_certificates().is_some();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("server read");
        s.write_all(&buf).await.expect("server write");
        s.flush().await.expect("server flush");
        // Keep the connection until the client has read the echo (and the tickets).
        let _ = s.read(&mut buf).await;
        client_cert
    };
    let dial = async move {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut c = connector.connect(name, b).await.expect("client handshake");
        c.write_all(b"ping").await.expect("client write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("client read");
        let kind = c.get_ref().1.handshake_kind().expect("handshake done");
        c.shutdown().await.expect("client shutdown");
        kind
    };
    let (client_cert, kind) = tokio::join!(serve, dial);
    (kind, client_cert)
}

/// A client that reconnects with the same configuration resumes its session instead of a
/// full handshake, on the client port and between peers alike.
#[tokio::test]
async fn a_reconnection_resumes_the_session() {
    use coordinate_tls::peer::{PeerSpec, PeerTls};
    use coordinate_tls::rustls::HandshakeKind;
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let (ca_file, cert, key) = files(dir.path(), "node", &ca, &node(&ca, false));

    let server = ServerTls::new(
        ServerSpec::Files {
            cert: cert.clone(),
            key: key.clone(),
            trusted_ca: None,
            require_client_cert: false,
        },
        ALPN,
    )
    .unwrap();
    let connector = TlsConnector::from(trusting(&ca_file).build(ALPN).unwrap());
    let (first, _) = handshake_kind(server.acceptor(), connector.clone()).await;
    let (second, _) = handshake_kind(server.acceptor(), connector).await;
    assert_eq!(
        (first, second),
        (HandshakeKind::Full, HandshakeKind::Resumed),
        "client port"
    );

    let peer = PeerTls::new(PeerSpec::Files {
        cert,
        key,
        trusted_ca: ca_file,
    })
    .unwrap();
    let first = handshake_kind(peer.acceptor(), peer.connector()).await;
    let second = handshake_kind(peer.acceptor(), peer.connector()).await;
    // A resumed peer session still carries the member's certificate, which the identity
    // check reads.
    assert_eq!(
        (first, second),
        ((HandshakeKind::Full, true), (HandshakeKind::Resumed, true)),
        "peer port"
    );
}
