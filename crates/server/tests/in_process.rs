//! A node started in-process with `server::run`: ports bound as `:0` and read back (no port
//! probing), stopped by its shutdown future, restarted on the same data dir.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use coordinate_client::Connection;
use coordinate_server::config::{Args, Config};
use coordinate_server::server::{self, Listeners};
use hyper::StatusCode;
use tokio::time::Instant;

/// How long a condition may take before the test fails (generous: CI machines are slow).
const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path) -> Config {
    let args = Args::try_parse_from(["coordinate", "--data-dir", &dir.display().to_string()])
        .expect("flags parse");
    let mut cfg = Config::from_args(args).expect("flags are valid");
    cfg.client_listen = "127.0.0.1:0".into();
    cfg.peer_listen = "127.0.0.1:0".into();
    cfg.peers.insert(cfg.id, "127.0.0.1:0".into());
    cfg
}

/// Starts a node; returns its client address, the sender that stops it, and its task.
async fn start(
    dir: &std::path::Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let cfg = config(dir);
    let listeners = Listeners::bind(&cfg).await.expect("bind :0");
    let addr = listeners.client_addr().expect("client address").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::run(cfg, listeners, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// Retries `PUT key` until the node has elected itself and acknowledges it.
async fn put_until_acknowledged(c: &mut Connection, key: &str, value: &'static [u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        match c.put(key, Bytes::from_static(value)).await {
            Ok(r) if r.status == StatusCode::NO_CONTENT => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "PUT never acknowledged: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_port_zero_serves_stops_on_its_future_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (addr, stop, task) = start(dir.path()).await;
    let mut c = Connection::new(addr, Duration::from_secs(10));
    put_until_acknowledged(&mut c, "greeting", b"hello").await;
    let got = c.get("greeting").await.expect("GET");
    assert_eq!((got.status, &got.body[..]), (StatusCode::OK, &b"hello"[..]));

    stop.send(()).expect("the node is running");
    task.await.expect("no panic").expect("a clean stop");

    // The same data dir, new ports: the acknowledged write is still there.
    let (addr, stop, task) = start(dir.path()).await;
    let mut c = Connection::new(addr, Duration::from_secs(10));
    put_until_acknowledged(&mut c, "second", b"x").await;
    let got = c.get("greeting").await.expect("GET");
    assert_eq!((got.status, &got.body[..]), (StatusCode::OK, &b"hello"[..]));
    stop.send(()).expect("the node is running");
    task.await.expect("no panic").expect("a clean stop");
}
