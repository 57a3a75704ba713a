//! TLS on the client port, with real `coordinate` processes: HTTPS for the REST API, health
//! and metrics; client certificates required with `--client-cert-auth`; plain HTTP and
//! garbage on the TLS port refused without harm; certificates rotated from the files while
//! the node serves; `--auto-tls`; bad TLS flags refused at start with one line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coordinate_testkit::ports::free_ports;
use coordinate_testkit::process::NodeProcess;
use coordinate_tls::client::ClientSpec;
use coordinate_tls::devcerts::{Authority, Issued, Subject};
use coordinate_tls::rustls::pki_types::ServerName;
use coordinate_tls::tokio_rustls::TlsConnector;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_coordinate");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn issue(ca: &Authority, name: &str) -> Issued {
    ca.issue(&Subject {
        name: name.into(),
        hosts: vec!["127.0.0.1".into()],
        ..Subject::default()
    })
    .unwrap()
}

/// A single node started with `tls_args`, stopped (by pid) when dropped.
struct Node {
    process: NodeProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(dir: tempfile::TempDir, tls_args: &[String]) -> Node {
        let ports = free_ports(2).unwrap();
        let mut args: Vec<String> = vec![
            "--id".into(),
            "1".into(),
            "--cluster".into(),
            format!("http://127.0.0.1:{}", ports[0]),
            "--port".into(),
            ports[1].to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--tls-reload-interval-ms".into(),
            "100".into(),
        ];
        args.extend_from_slice(tls_args);
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        let mut process = NodeProcess::new(1, dir.path().join("node.log"), "tls test");
        process.start(cmd, &args.join(" ")).unwrap();
        Node {
            process,
            port: ports[1],
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.process.log_text()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.process.kill();
    }
}

/// One request over a new TLS connection with `client`'s settings: status and body.
async fn request(
    port: u16,
    client: &ClientSpec,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let config = client.build(&[b"http/1.1"]).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body.to_vec()))
}

/// Retries `GET /health` with `client` until it answers 200 (the node is up), or fails the
/// test with the node's log after a minute.
async fn wait_healthy(node: &Node, client: &ClientSpec) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match request(node.port, client, "GET", "/health", b"").await {
            Ok((200, _)) => return,
            other if Instant::now() > deadline => {
                panic!("node never healthy: {other:?}\n{}", node.log())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn trusting(ca: &Path) -> ClientSpec {
    ClientSpec {
        trusted_ca: Some(ca.to_path_buf()),
        ..ClientSpec::default()
    }
}

#[tokio::test]
async fn the_client_port_serves_https_and_requires_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test CA").unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem());
    let node_cert = issue(&ca, "node 1");
    let client_cert = issue(&ca, "a client");
    let other = Authority::new("another CA").unwrap();
    let stranger = issue(&other, "a stranger");
    let files = |issued: &Issued, name: &str| {
        (
            write(dir.path(), &format!("{name}.pem"), &issued.cert_pem),
            write(dir.path(), &format!("{name}-key.pem"), &issued.key_pem),
        )
    };
    let (cert, key) = files(&node_cert, "node");
    let client = ClientSpec {
        cert_and_key: Some(files(&client_cert, "client")),
        ..trusting(&ca_file)
    };
    let strangers = ClientSpec {
        cert_and_key: Some(files(&stranger, "stranger")),
        ..trusting(&ca_file)
    };
    let args = [
        format!("--cert-file={}", cert.display()),
        format!("--key-file={}", key.display()),
        format!("--trusted-ca-file={}", ca_file.display()),
        "--client-cert-auth".to_string(),
    ];
    let node = Node::start(dir, &args);
    wait_healthy(&node, &client).await;

    assert_eq!(
        request(node.port, &client, "PUT", "/greeting", b"hello").await,
        Ok((204, vec![]))
    );
    assert_eq!(
        request(node.port, &client, "GET", "/greeting", b"").await,
        Ok((200, b"hello".to_vec()))
    );
    let (status, metrics) = request(node.port, &client, "GET", "/metrics", b"")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&metrics).contains("client_tls_handshake_failures_total"));

    // Refused: no certificate, another CA's certificate, a client that does not trust the
    // node's CA. None of them changes anything.
    let anonymous = trusting(&node_ca_path(&node, &ca));
    for (who, spec) in [("no certificate", &anonymous), ("another CA", &strangers)] {
        let got = request(node.port, spec, "PUT", "/greeting", b"forged").await;
        assert!(got.is_err(), "{who}: {got:?}");
    }
    let other_ca = write(node._dir.path(), "other-ca.pem", &other.cert_pem());
    let got = request(node.port, &trusting(&other_ca), "GET", "/greeting", b"").await;
    assert!(
        got.is_err_and(|e| e.contains("handshake")),
        "untrusted server"
    );

    // Plain HTTP, and garbage, on the TLS port: no HTTP answer, and the node serves on.
    let mut plain = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    plain
        .write_all(b"PUT /greeting HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nplain!")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {answer:?}"
    );
    let mut garbage = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let _ = garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3])
        .await;
    drop(garbage);
    assert_eq!(
        request(node.port, &client, "GET", "/greeting", b"").await,
        Ok((200, b"hello".to_vec()))
    );
    tools_speak_tls(&node, &ca_file, &client).await;

    let (_, metrics) = request(node.port, &client, "GET", "/metrics", b"")
        .await
        .unwrap();
    let failures = String::from_utf8_lossy(&metrics)
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("client_tls_handshake_failures_total"))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        failures.is_some_and(|n| n >= 3.0),
        "failures counted: {failures:?}"
    );
}

/// `coordinatectl` and `coordinate-bench` with etcdctl's TLS flags against the node.
async fn tools_speak_tls(node: &Node, ca_file: &Path, client: &ClientSpec) {
    let Some((cert, key)) = &client.cert_and_key else {
        panic!("a client certificate is needed")
    };
    let endpoint = format!("https://127.0.0.1:{}", node.port);
    let tls = [
        format!("--cacert={}", ca_file.display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ];
    let ctl = |args: &[&str], tls: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_coordinatectl"))
            .args(["--endpoints", &endpoint])
            .args(tls)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = ctl(&["put", "tool", "over tls"], &tls);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = ctl(&["get", "tool"], &tls);
    assert_eq!((code, text.trim()), (Some(0), "over tls"));
    // Without a certificate the node refuses the connection; without --cacert an https
    // endpoint is a usage error, not a clear-text attempt.
    let (code, text) = ctl(&["get", "tool"], &tls[..1]);
    assert_eq!(code, Some(3), "{text}");
    let (code, text) = ctl(&["get", "tool"], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--cacert"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_coordinate-bench"))
        .args(["--endpoints", &format!("127.0.0.1:{}", node.port)])
        .args(&tls)
        .args([
            "--connections",
            "4",
            "--keys",
            "50",
            "--ops",
            "200",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["error_total"], 0, "{report}");
}

/// The CA the node's certificate comes from (what an anonymous client trusts).
fn node_ca_path(node: &Node, ca: &Authority) -> PathBuf {
    write(node._dir.path(), "trusted-by-anonymous.pem", &ca.cert_pem())
}

#[tokio::test]
async fn certificates_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Authority::new("old CA").unwrap();
    let old_ca_file = write(dir.path(), "old-ca.pem", &old_ca.cert_pem());
    let first = issue(&old_ca, "node 1");
    let cert = write(dir.path(), "node.pem", &first.cert_pem);
    let key = write(dir.path(), "node-key.pem", &first.key_pem);
    let args = [
        format!("--cert-file={}", cert.display()),
        format!("--key-file={}", key.display()),
    ];
    let node = Node::start(dir, &args);
    wait_healthy(&node, &trusting(&old_ca_file)).await;
    assert_eq!(
        request(node.port, &trusting(&old_ca_file), "PUT", "/k", b"v").await,
        Ok((204, vec![]))
    );

    let new_ca = Authority::new("new CA, reissued").unwrap();
    let new_ca_file = write(node._dir.path(), "new-ca.pem", &new_ca.cert_pem());
    let second = issue(&new_ca, "node 1, reissued");
    std::fs::write(&key, &second.key_pem).unwrap();
    std::fs::write(&cert, &second.cert_pem).unwrap();
    // New connections get the new certificate once the node has seen the files change.
    wait_healthy(&node, &trusting(&new_ca_file)).await;
    assert_eq!(
        request(node.port, &trusting(&new_ca_file), "GET", "/k", b"").await,
        Ok((200, b"v".to_vec()))
    );
    assert!(
        request(node.port, &trusting(&old_ca_file), "GET", "/k", b"")
            .await
            .is_err()
    );
    assert!(
        node.log().contains("TLS certificates reloaded"),
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn auto_tls_encrypts_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir, &["--auto-tls".to_string()]);
    let insecure = ClientSpec {
        insecure: true,
        ..ClientSpec::default()
    };
    wait_healthy(&node, &insecure).await;
    assert_eq!(
        request(node.port, &insecure, "PUT", "/k", b"v").await,
        Ok((204, vec![]))
    );
    // It is self-signed: a client verifying against a CA refuses it.
    let ca = Authority::new("some CA").unwrap();
    let ca_file = write(node._dir.path(), "ca.pem", &ca.cert_pem());
    assert!(request(node.port, &trusting(&ca_file), "GET", "/k", b"")
        .await
        .is_err());
}

#[test]
fn bad_tls_flags_are_refused_at_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = write(dir.path(), "garbage.pem", "not a certificate");
    let file = |flag: &str, path: &Path| format!("{flag}={}", path.display());
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "http",
            vec![file("--cert-file", &garbage)],
            "--cert-file needs --key-file",
        ),
        ("http", vec!["--client-cert-auth".into()], "need TLS"),
        (
            "http",
            vec![file("--cert-file", &missing), file("--key-file", &missing)],
            "missing.pem",
        ),
        (
            "http",
            vec![file("--cert-file", &garbage), file("--key-file", &garbage)],
            "garbage.pem",
        ),
        (
            "https",
            vec![file("--peer-cert-file", &garbage)],
            "--peer-cert-file needs --peer-key-file",
        ),
        (
            "https",
            vec![
                file("--peer-cert-file", &garbage),
                file("--peer-key-file", &garbage),
            ],
            "needs --peer-trusted-ca-file",
        ),
        (
            "https",
            vec![
                file("--peer-cert-file", &missing),
                file("--peer-key-file", &missing),
                file("--peer-trusted-ca-file", &missing),
            ],
            "missing.pem",
        ),
        (
            "http",
            vec!["--peer-client-cert-auth".into()],
            "need peer TLS",
        ),
        ("https", vec![], "https:// peer URLs need peer TLS"),
        (
            "http",
            vec!["--peer-auto-tls".into()],
            "with peer TLS every peer URL is https://",
        ),
    ];
    for (scheme, args, expected) in cases {
        let ports = free_ports(2).unwrap();
        let out = Command::new(BIN)
            .args(["--cluster", &format!("{scheme}://127.0.0.1:{}", ports[0])])
            .args(["--port", &ports[1].to_string()])
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        // Log lines start with their time; the error is the one line that does not.
        let error_lines = stderr
            .lines()
            .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
            .count();
        assert_eq!(error_lines, 1, "{args:?}: {stderr}");
    }
    // Nothing was created: the certificates are read before the data dir is touched.
    assert!(!dir.path().join("data").exists());
}
