//! The client port under attack, on real processes: more idle connections than the cap
//! (refused with a 503, the node stays up and serves once they close), silent and slowloris
//! clients (HTTP/1.1 and HTTP/2) and an idle keep-alive connection (all closed by the
//! server), idle sockets by the hundred on a node with a small open-file limit while
//! snapshots are written, accepts failing for want of
//! descriptors (survived), a watcher that stopped reading at shutdown, watchers beyond the cap,
//! hundreds of watchers from revision 1 (stalled or catching up) while a writer writes, and a
//! prefix listing larger than a page's byte budget.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    free_port, tail, wait_until, wait_while_progressing, Client, Cluster, BIN, REQUEST_TIMEOUT,
    WAIT_TIMEOUT,
};
use coordinate_client::ClientError;
use serde_json::Value;

/// `host:port` of node `id`'s client port.
fn addr(c: &Cluster, id: u64) -> String {
    c.client_url(id).trim_start_matches("http://").to_string()
}

fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// Reads from `s` until the peer closes it (EOF or reset), up to `timeout`; what was read, or
/// `None` if it is still open at the deadline.
fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

/// Sends one request on a raw connection; the whole answer once the server closed it.
fn raw_request(addr: &str, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).expect("send request");
    let got = read_until_closed(&mut s, WAIT_TIMEOUT).expect("the answer ends with a close");
    String::from_utf8_lossy(&got).into_owned()
}

/// True once something arrived on `s` or it was closed (non-blocking peek).
fn answered(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("set nonblocking");
    let mut b = [0u8; 1];
    let r = s.peek(&mut b);
    s.set_nonblocking(false).expect("set blocking");
    !matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// A numeric sample of `/metrics` (the first line starting with `name`).
fn metric(client: &Client, id: u64, name: &str) -> Option<f64> {
    let (status, body) = client.get(id, "metrics").ok()?;
    if status != 200 {
        return None;
    }
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

#[test]
fn connections_over_the_cap_are_refused_and_the_node_recovers() {
    let cap = 16;
    let (mut c, _) = Cluster::start_with_leader(
        1,
        &[
            "--max-connections",
            "16",
            "--client-header-timeout-ms",
            "600000",
        ],
    );
    c.put_ok(1, "before", b"1");
    let a = addr(&c, 1);
    let mut idle: Vec<TcpStream> = (0..cap).map(|_| connect(&a)).collect();
    // The server accepts in order: once the cap is taken, every new connection is refused.
    let mut refused = 0;
    let until = Instant::now() + WAIT_TIMEOUT;
    while refused < 20 && Instant::now() < until {
        // (A request served before the cap was reached closes too, and is not counted.)
        let answer = raw_request(
            &a,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if answer.starts_with("HTTP/1.1 503") {
            assert!(
                answer.contains("too many client connections"),
                "refusal without its reason: {answer:?}"
            );
            refused += 1;
        } else {
            // Served: a slot was still free (a connection of the harness's had not been seen
            // closing yet when the idle ones came, so one of those was refused). Take it.
            idle.push(connect(&a));
        }
    }
    assert_eq!(refused, 20, "connections over the cap were not refused");
    c.check_alive();
    drop(idle);
    // Once the idle sockets are gone, the node serves again.
    let client = c.client();
    assert!(
        wait_until(WAIT_TIMEOUT, || client.put(1, "after", b"2").ok()
            == Some(204)),
        "the node did not serve again after the idle connections closed"
    );
    c.assert_value(1, "before", b"1");
    c.assert_value(1, "after", b"2");
    let refusals = metric(&client, 1, "coordinate_client_connections_refused_total");
    assert!(refusals.is_some_and(|n| n >= 20.0), "{refusals:?}");
    c.check_alive();
}

#[test]
fn slowloris_and_idle_keep_alive_connections_are_closed() {
    let (mut c, _) = Cluster::start_with_leader(1, &["--client-header-timeout-ms", "500"]);
    let a = addr(&c, 1);
    // Nothing at all; HTTP/2's preface and then nothing (a client that answers no ping).
    let mut silent = connect(&a);
    assert!(
        read_until_closed(&mut silent, WAIT_TIMEOUT).is_some(),
        "a connection that never sent a byte is still open"
    );
    let mut h2 = connect(&a);
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("send the HTTP/2 preface");
    assert!(
        read_until_closed(&mut h2, WAIT_TIMEOUT).is_some(),
        "an HTTP/2 connection that answers no ping is still open"
    );
    // Half a request head, then nothing.
    let mut slow = connect(&a);
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("send half a head");
    assert!(
        read_until_closed(&mut slow, WAIT_TIMEOUT).is_some(),
        "a connection that never finished its request head is still open"
    );
    // A complete keep-alive exchange, then silence: the server closes the idle connection.
    let mut idle = connect(&a);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send request");
    let got = read_until_closed(&mut idle, WAIT_TIMEOUT)
        .expect("an idle keep-alive connection is still open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(!text.contains("connection: close"), "{text:?}");
    c.check_alive();
    c.put_ok(1, "k", b"v");
    c.assert_value(1, "k", b"v");
}

#[test]
fn a_watch_stream_outlives_the_header_timeout() {
    let (mut c, _) = Cluster::start_with_leader(1, &["--client-header-timeout-ms", "300"]);
    let a = addr(&c, 1);
    let mut watch = connect(&a);
    watch
        .write_all(b"GET /v1/watch/w HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send watch request");
    watch
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut read_some = |s: &mut TcpStream, got: &mut Vec<u8>| match s.read(&mut buf) {
        Ok(0) => panic!(
            "the watch stream was closed: {}",
            String::from_utf8_lossy(got)
        ),
        Ok(n) => got.extend_from_slice(&buf[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => panic!("the watch stream broke: {e}"),
    };
    // Stay quiet for several header timeouts: a response in progress is not timed out.
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < quiet_until {
        read_some(&mut watch, &mut got);
    }
    c.put_ok(1, "w", b"hello");
    let until = Instant::now() + WAIT_TIMEOUT;
    while !String::from_utf8_lossy(&got).contains("\"value\":\"hello\"") {
        assert!(Instant::now() < until, "no event: {:?}", show(&got));
        read_some(&mut watch, &mut got);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    c.check_alive();
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One node started by this test with a small open-file limit (the harness's nodes inherit
/// the test's); killed by pid when dropped.
struct SmallNode {
    child: Option<Child>,
    client: Client,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallNode {
    fn start(nofile: u64, extra: &[&str]) -> SmallNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let (peer, port) = (free_port(), free_port());
        let log = dir.path().join("node.log");
        let out = File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--id",
            "1",
            "--cluster",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
        let limit = libc::rlimit {
            rlim_cur: nofile as libc::rlim_t,
            rlim_max: nofile as libc::rlim_t,
        };
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn coordinate");
        let client = Client::new(vec![format!("http://127.0.0.1:{port}")], REQUEST_TIMEOUT);
        let node = SmallNode {
            child: Some(child),
            client,
            log,
            _dir: dir,
        };
        assert!(
            wait_until(WAIT_TIMEOUT, || matches!(
                node.client.get(1, "health"),
                Ok((200, _))
            )),
            "the node did not become healthy"
        );
        node
    }

    fn addr(&self) -> String {
        self.client.url(1).trim_start_matches("http://").to_string()
    }

    fn assert_alive(&mut self) {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        assert!(status.is_none(), "the node exited: {status:?}");
    }

    /// A PUT that must succeed; a refusal at the connection cap is retried (the slot of the
    /// previous request is freed when the server sees it closed).
    fn put_ok(&self, key: &str, value: &[u8]) {
        let mut last = None;
        let ok = wait_until(WAIT_TIMEOUT, || {
            let r = self.client.put_with_body(1, key, value);
            let done = matches!(r, Ok((204, _)));
            // At the cap the node answers 503 and closes without reading the request, so a
            // client may see only the close, or a reset, instead of the 503 (the node did not
            // apply the PUT either way; whether it stays alive is checked separately).
            let refused = matches!(&r, Ok((503, body)) if show(body).contains("too many client connections"))
                || matches!(&r, Err(ClientError::Connect { .. } | ClientError::Http(_)));
            assert!(done || refused, "PUT /{key}: {r:?}");
            last = Some(r.map(|(s, b)| (s, show(&b))));
            done
        });
        assert!(ok, "PUT /{key} kept failing: {last:?}");
    }
}

impl Drop for SmallNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- node log -----\n{}", tail(Path::new(&self.log), 80));
        }
    }
}

#[test]
fn idle_sockets_beyond_the_fd_limit_do_not_stop_snapshots() {
    // 256 descriptors: the default cap leaves room for the WAL and snapshot files.
    let nofile = 256;
    let mut node = SmallNode::start(
        nofile,
        &[
            "--snapshot-count",
            "5",
            "--client-header-timeout-ms",
            "600000",
        ],
    );
    let a = node.addr();
    let held = 300;
    let sockets: Vec<TcpStream> = (0..held).map(|_| connect(&a)).collect();
    // The ones over the cap are answered (503) or closed; the rest stay idle and open.
    let mut refused = 0;
    assert!(
        wait_until(WAIT_TIMEOUT, || {
            refused = sockets.iter().filter(|s| answered(s)).count();
            refused >= held - 64
        }),
        "only {refused} of {held} connections were refused"
    );
    node.assert_alive();
    // Free one slot for the writer; every write below takes a snapshot every 5 entries.
    let mut open: Vec<TcpStream> = sockets.into_iter().filter(|s| !answered(s)).collect();
    open.pop();
    let value = vec![b'x'; 1024];
    for i in 0..60 {
        node.put_ok(&format!("key-{i}"), &value);
    }
    node.assert_alive();
    drop(open);
    let snapshots = wait_until(WAIT_TIMEOUT, || {
        metric(&node.client, 1, "coordinate_snapshots_total").is_some_and(|n| n >= 5.0)
    });
    assert!(snapshots, "the node took no snapshots");
    for i in 0..60 {
        let (status, body) = node.client.get(1, &format!("key-{i}")).expect("GET");
        assert_eq!((status, body.len()), (200, 1024), "key-{i}");
    }
    node.assert_alive();
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    assert!(
        !log.contains("Too many open files"),
        "{}",
        tail(&node.log, 40)
    );
}

/// Opens a watch on a raw connection and reads its answer's status line.
fn open_watch(addr: &str, path: &str) -> (TcpStream, String) {
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("send watch request");
    s.set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("set read timeout");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    (s, show(&head))
}

#[test]
fn watchers_beyond_the_cap_are_refused() {
    let (mut c, _) = Cluster::start_with_leader(1, &["--max-watchers", "4"]);
    let a = addr(&c, 1);
    let mut open: Vec<TcpStream> = (0..4)
        .map(|i| {
            let (s, status) = open_watch(&a, &format!("/v1/watch/k{i}"));
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            s
        })
        .collect();
    let answer = raw_request(
        &a,
        "GET /v1/watch/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many watchers"), "{answer}");
    drop(open.pop());
    // The closed watch's slot comes back once the server sees the connection closed.
    assert!(
        wait_until(WAIT_TIMEOUT, || {
            let (s, status) = open_watch(&a, "/v1/watch/again");
            let ok = status.starts_with("HTTP/1.1 200");
            if ok {
                open.push(s);
            }
            ok
        }),
        "no watch could start after one closed"
    );
    c.check_alive();
    c.put_ok(1, "k0", b"v");
}

#[test]
fn hundreds_of_watchers_from_revision_one_do_not_stall_writes() {
    let (mut c, leader) = Cluster::start_with_leader(3, &[]);
    // Enough history that catching up takes a while: on the code before the fix, 400
    // watches from revision 1 over 20000 changes stalled writes for 8.7 s (release build).
    let keys = 20_000;
    let writers = 8;
    let value = vec![b'v'; 100];
    let client = c.client();
    std::thread::scope(|scope| {
        for t in 0..writers {
            let (client, value) = (client.clone(), value.clone());
            scope.spawn(move || {
                for i in (t..keys).step_by(writers) {
                    assert_eq!(
                        client.put(leader, &format!("w/{i}"), &value).ok(),
                        Some(204)
                    );
                }
            });
        }
    });
    let a = addr(&c, leader);
    let watchers = 400;
    // A writer writes all along, while the watches open and catch up. Each write must be
    // acknowledged: one stalled for the request timeout would be 503/504.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) || done < 100 {
                match client.put(leader, &format!("live/{done}"), b"x") {
                    Ok(204) => done += 1,
                    other => return Err(format!("write {done} with watchers open: {other:?}")),
                }
            }
            Ok(done)
        })
    };
    // Open every watch before reading any answer, as a flood of clients would.
    let request = "GET /v1/watch/w/?prefix=true&from_revision=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut socks: Vec<TcpStream> = (0..watchers)
        .map(|_| {
            let mut s = connect(&a);
            s.write_all(request.as_bytes()).expect("send watch request");
            s
        })
        .collect();
    // A quarter is read (catching up), the rest never (stalled).
    let reading: Vec<TcpStream> = (0..watchers / 4).map(|_| socks.pop().unwrap()).collect();
    let received = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = reading
        .chunks(25)
        .map(|chunk| {
            let socks: Vec<TcpStream> = chunk.iter().map(|s| s.try_clone().unwrap()).collect();
            let (stop, received) = (stop.clone(), received.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                for s in &socks {
                    s.set_nonblocking(true).unwrap();
                }
                while !stop.load(Ordering::Relaxed) {
                    let mut any = false;
                    for mut s in &socks {
                        if let Ok(n) = s.read(&mut buf) {
                            received.fetch_add(n, Ordering::Relaxed);
                            any |= n > 0;
                        }
                    }
                    if !any {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        })
        .collect();
    // Every watch is being served, and the readers are catching up (1 MB each is 5000 events).
    // The catching up takes as long as the machine is slow: wait while bytes keep arriving
    // and watches keep opening, and fail only if both stop for WAIT_TIMEOUT.
    let served = wait_while_progressing(WAIT_TIMEOUT, || {
        let open = metric(&client, leader, "coordinate_watchers ").unwrap_or(0.0);
        let bytes = received.load(Ordering::Relaxed);
        (
            open == watchers as f64 && bytes > 25 * 1_000_000,
            bytes as u64 + open as u64,
        )
    });
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let writes = writes.unwrap_or_else(|e| c.fail(&e));
    assert!(served, "the watches were not all served and caught up");
    c.check_alive();
    drop(socks);
    drop(reading);
    c.wait_caught_up();
    for id in c.ids() {
        c.assert_value(id, &format!("live/{}", writes - 1), b"x");
        c.assert_value(id, &format!("w/{}", keys - 1), &value);
    }
    c.check_alive();
}

#[test]
fn a_prefix_listing_stops_at_its_byte_budget_and_pages_cover_everything_once() {
    let (mut c, _) = Cluster::start_with_leader(1, &[]);
    // 12 values of 600 KiB: about 7 MiB, above the 4 MiB page budget.
    let big = 12;
    let value = vec![b'b'; 600 * 1024];
    for i in 0..big {
        c.put_ok(1, &format!("big/{i:02}"), &value);
    }
    for i in 0..5 {
        c.put_ok(1, &format!("big/small-{i}"), b"s");
    }
    let list = |start_after: Option<&str>| -> Value {
        let mut path = "v1/kv/big/?prefix=true".to_string();
        if let Some(after) = start_after {
            path.push_str(&format!("&start_after={after}"));
        }
        let (status, body) = c.get(1, &path).expect("list");
        assert_eq!(status, 200, "{}", show(&body));
        serde_json::from_slice(&body).expect("JSON page")
    };
    let first = list(None);
    let kvs = first["kvs"].as_array().unwrap();
    assert_eq!(first["more"], true);
    assert!(!kvs.is_empty() && kvs.len() < big + 5, "{} keys", kvs.len());
    // Page through everything.
    let mut seen: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        for kv in page["kvs"].as_array().unwrap() {
            let key = kv["key"].as_str().unwrap().to_string();
            if key.starts_with("big/0") || key.starts_with("big/1") {
                assert_eq!(kv["value"].as_str().unwrap().len(), value.len(), "{key}");
            }
            seen.push(key);
        }
        if page["more"] == false {
            break;
        }
        let last = seen.last().cloned().unwrap();
        page = list(Some(&last));
    }
    let mut want: Vec<String> = (0..big).map(|i| format!("big/{i:02}")).collect();
    want.extend((0..5).map(|i| format!("big/small-{i}")));
    assert_eq!(seen, want, "every key exactly once, in order");
    c.check_alive();
}

#[test]
fn failed_accepts_are_survived_and_the_node_serves_again() {
    // An explicit cap above what 128 descriptors allow: accepting runs out of descriptors.
    let mut node = SmallNode::start(
        128,
        &[
            "--max-connections",
            "1000",
            "--client-header-timeout-ms",
            "600000",
        ],
    );
    let a = node.addr();
    // More than the descriptors, fewer than the descriptors plus the listen backlog (128).
    let sockets: Vec<TcpStream> = (0..180).map(|_| connect(&a)).collect();
    // The node has run out of descriptors: a new connection gets no answer (it waits in the
    // listen backlog) while the old ones stay open.
    let mut probe = connect(&a);
    probe
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send probe");
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set read timeout");
    let mut b = [0u8; 1];
    let starved = matches!(probe.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    node.assert_alive();
    drop(probe);
    drop(sockets);
    assert!(
        wait_until(WAIT_TIMEOUT, || matches!(
            node.client.get(1, "health"),
            Ok((200, _))
        )),
        "the node did not serve again once the sockets closed"
    );
    node.put_ok("after", b"1");
    let (status, body) = node.client.get(1, "after").expect("GET");
    assert_eq!((status, body), (200, b"1".to_vec()));
    let errors = metric(&node.client, 1, "coordinate_client_accept_errors_total");
    assert!(
        !starved || errors.is_some_and(|n| n > 0.0),
        "the node was starved of descriptors but counted no accept error: {errors:?}"
    );
    assert!(starved, "180 sockets did not exhaust 128 descriptors");
    node.assert_alive();
}

#[test]
fn a_watcher_that_stopped_reading_does_not_hold_up_shutdown() {
    let (mut c, _) = Cluster::start_with_leader(1, &[]);
    let value = vec![b'v'; 64 * 1024];
    for i in 0..100 {
        c.put_ok(1, &format!("s/{i}"), &value);
    }
    // 6.4 MB of events, more than the socket buffers take: the stream blocks mid-response.
    let (stalled, status) = open_watch(&addr(&c, 1), "/v1/watch/s/?prefix=true&from_revision=1");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let exit = c.stop(1);
    assert!(exit.success(), "{exit}");
    drop(stalled);
}
