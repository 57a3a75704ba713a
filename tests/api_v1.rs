//! The `/v1` API on real processes: revisions and conditional writes (412), prefix reads and
//! deletes, transactions, watches (410 before the window, no event lost or repeated across a
//! leader kill), the operator endpoints, and malformed input (bad JSON, bad base64, huge bodies).

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::http::{call, connect};
use common::{field, wait_until, Cluster, WAIT_TIMEOUT};
use coordinate_client::Request;
use serde_json::{json, Value};

#[test]
fn revisions_and_conditional_writes() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let put = call(&c, 1, "PUT", "/v1/kv/a", &[], b"one");
    assert_eq!(put.status, 200, "{}", put.text());
    let r1 = field(&put.json(), "revision");
    assert_eq!(put.etag.as_deref(), Some(format!("\"{r1}\"").as_str()));

    let got = call(&c, 1, "GET", "/v1/kv/a", &[], b"");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"one"[..]));
    assert_eq!(got.etag.as_deref(), Some(format!("\"{r1}\"").as_str()));
    assert!(got.revision.is_some_and(|r| r >= r1));

    // Compare-and-set: a stale revision is refused with the current one.
    let stale = call(&c, 1, "PUT", "/v1/kv/a", &[("If-Match", "\"999\"")], b"x");
    assert_eq!(stale.status, 412, "{}", stale.text());
    assert!(
        stale.revision.is_some_and(|r| r >= r1),
        "412 carries the store revision"
    );
    assert_eq!(field(&stale.json(), "current_revision"), r1);
    let cas = call(
        &c,
        1,
        "PUT",
        "/v1/kv/a",
        &[("If-Match", &format!("\"{r1}\""))],
        b"two",
    );
    assert_eq!(cas.status, 200, "{}", cas.text());
    let r2 = field(&cas.json(), "revision");
    assert!(r2 > r1);
    assert_eq!(
        call(&c, 1, "GET", "/a", &[], b"").body,
        b"two",
        "root API sees it too"
    );

    // Create-only.
    let exists = call(&c, 1, "PUT", "/v1/kv/a", &[("If-None-Match", "*")], b"x");
    assert_eq!(exists.status, 412);
    let created = call(&c, 1, "PUT", "/v1/kv/new", &[("If-None-Match", "*")], b"n");
    assert_eq!(created.status, 200, "{}", created.text());
    let must_exist = call(&c, 1, "PUT", "/v1/kv/absent", &[("If-Match", "*")], b"x");
    assert_eq!(must_exist.status, 412);
    assert_eq!(field(&must_exist.json(), "current_revision"), 0);

    // Deletes: 404 for a missing key, 412 on a failed condition, 204 otherwise.
    assert_eq!(
        call(&c, 1, "DELETE", "/v1/kv/missing", &[], b"").status,
        404
    );
    assert_eq!(
        call(&c, 1, "DELETE", "/v1/kv/a", &[("If-Match", "\"1\"")], b"").status,
        412
    );
    let del = call(
        &c,
        1,
        "DELETE",
        "/v1/kv/a",
        &[("If-Match", &format!("\"{r2}\""))],
        b"",
    );
    assert_eq!(del.status, 204);
    assert!(del.revision.is_some_and(|r| r > r2));
    assert_eq!(call(&c, 1, "GET", "/v1/kv/a", &[], b"").status, 404);

    // Serializable reads answer from the node.
    let ser = call(
        &c,
        1,
        "GET",
        "/v1/kv/new?consistency=serializable",
        &[],
        b"",
    );
    assert_eq!((ser.status, ser.body.as_slice()), (200, &b"n"[..]));

    // Malformed requests.
    for (path, headers) in [
        ("/v1/kv/a?consistency=sometimes", vec![]),
        ("/v1/kv/a", vec![("If-Match", "\"abc\"")]),
        ("/v1/kv/a", vec![("If-None-Match", "\"3\"")]),
        (
            "/v1/kv/a",
            vec![("If-Match", "\"1\""), ("If-None-Match", "*")],
        ),
    ] {
        let method = if path.contains('?') { "GET" } else { "PUT" };
        let a = call(&c, 1, method, path, &headers, b"v");
        assert_eq!(a.status, 400, "{method} {path} {headers:?}: {}", a.text());
        assert!(a.json()["error"].is_string());
    }
    let huge = vec![b'x'; (1 << 20) + 1];
    assert_eq!(
        common::raw_put_status(
            &c.client_url(1).replace("http://", ""),
            "/v1/kv/big",
            huge.len()
        ),
        413
    );
}

#[test]
fn prefix_reads_page_in_key_order_and_delete_ranges() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    for k in ["p/3", "p/1", "p/5", "p/2", "p/4", "q", "o"] {
        assert_eq!(
            call(&c, 1, "PUT", &format!("/v1/kv/{k}"), &[], k.as_bytes()).status,
            200
        );
    }
    call(&c, 1, "PUT", "/v1/kv/p/bin", &[], &[0xff, 0x00, 0xfe]);

    let page = call(&c, 1, "GET", "/v1/kv/p/?prefix=true&limit=2", &[], b"").json();
    let keys: Vec<&str> = page["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["p/1", "p/2"]);
    assert_eq!(page["more"], true);
    let first = &page["kvs"][0];
    assert_eq!(first["value"], "p/1");
    assert_eq!(first["version"], 1);
    assert!(first["create_revision"].as_u64().unwrap() > 0);

    let rest = call(
        &c,
        1,
        "GET",
        "/v1/kv/p/?prefix=true&start_after=p%2F2",
        &[],
        b"",
    )
    .json();
    let keys: Vec<&str> = rest["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["p/3", "p/4", "p/5", "p/bin"]);
    assert_eq!(rest["more"], false);
    // A binary value is base64 and says so; with ?encoding=base64 everything is.
    let bin = &rest["kvs"][3];
    assert_eq!(bin["encoding"], "base64");
    assert_eq!(bin["value"], "/wD+");
    let b64 = call(
        &c,
        1,
        "GET",
        "/v1/kv/p/1?prefix=true&encoding=base64",
        &[],
        b"",
    )
    .json();
    assert_eq!(b64["kvs"][0]["value"], "cC8x");

    for bad in [
        "limit=0",
        "limit=abc",
        "limit=100000",
        "encoding=hex",
        "prefix=maybe",
    ] {
        let a = call(
            &c,
            1,
            "GET",
            &format!("/v1/kv/p/?prefix=true&{bad}"),
            &[],
            b"",
        );
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
    }

    let del = call(&c, 1, "DELETE", "/v1/kv/p/?prefix=true", &[], b"");
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(del.json()["deleted"], 6);
    let all = call(&c, 1, "GET", "/v1/kv/?prefix=true", &[], b"").json();
    let keys: Vec<&str> = all["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["o", "q"]);
}

#[test]
fn transactions_compare_then_write_atomically() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let txn = |body: Value| {
        let a = call(&c, 1, "POST", "/v1/txn", &[], body.to_string().as_bytes());
        (a.status, a)
    };
    let take_lock = json!({
        "compare": [{"key": "lock", "target": "exists", "op": "==", "value": false}],
        "success": [{"op": "put", "key": "lock", "value": "client-a"},
                    {"op": "put", "key": "owner", "value": "a"}],
        "failure": []
    });
    let (status, a) = txn(take_lock.clone());
    assert_eq!(status, 200, "{}", a.text());
    assert_eq!(a.json()["succeeded"], true);
    let (_, b) = txn(take_lock);
    assert_eq!(b.json()["succeeded"], false, "the lock is taken");
    assert_eq!(call(&c, 1, "GET", "/owner", &[], b"").body, b"a");

    let rev = call(&c, 1, "GET", "/v1/kv/lock", &[], b"").etag.unwrap();
    let rev: u64 = rev.trim_matches('"').parse().unwrap();
    let release = json!({
        "compare": [{"key": "lock", "target": "mod_revision", "op": "==", "value": rev},
                    {"key": "lock", "target": "value", "op": "==", "value": "Y2xpZW50LWE="}],
        "success": [{"op": "delete", "key": "lock"}],
        "failure": [{"op": "put", "key": "audit", "value": "bG9zdA=="}],
        "encoding": "base64"
    });
    let (status, r) = txn(release);
    assert_eq!(status, 200, "{}", r.text());
    assert_eq!(r.json()["succeeded"], true);
    assert_eq!(call(&c, 1, "GET", "/v1/kv/lock", &[], b"").status, 404);

    for (bad, want) in [
        (
            json!({"compare": [{"key": "k", "target": "colour", "op": "==", "value": 1}]}),
            400,
        ),
        (
            json!({"compare": [{"key": "k", "target": "value", "op": "~", "value": "x"}]}),
            400,
        ),
        (json!({"success": [{"op": "put", "key": "k"}]}), 400),
        (json!({"success": [{"op": "rename", "key": "k"}]}), 400),
        (
            json!({"success": [{"op": "put", "key": "k", "value": "***"}], "encoding": "base64"}),
            400,
        ),
        (json!({"unknown": true}), 400),
    ] {
        let (status, a) = txn(bad.clone());
        assert_eq!(status, want, "{bad}: {}", a.text());
        assert!(a.json()["error"].is_string(), "{}", a.text());
    }
    let not_json = call(&c, 1, "POST", "/v1/txn", &[], b"{not json");
    assert_eq!(not_json.status, 400);
    // Endpoints refuse methods they do not take, saying why; a PUT there is a reserved key.
    let wrong = call(&c, 1, "GET", "/v1/txn", &[], b"");
    assert_eq!(wrong.status, 405);
    assert!(wrong.json()["error"].is_string());
    for path in ["/health", "/metrics", "/v1/status"] {
        let put = call(&c, 1, "PUT", path, &[], b"v");
        assert_eq!(put.status, 400, "PUT {path}: {}", put.text());
        assert!(put.text().contains("reserved"), "{}", put.text());
    }
    let nowhere = call(&c, 1, "GET", "/v1/nope", &[], b"");
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.json()["error"].is_string());
    let big = json!({"success": [{"op": "put", "key": "k", "value": "x".repeat((1 << 20) + 1)}]});
    let (status, _) = txn(big);
    assert_eq!(status, 413);
}

/// Reads a watch's events in a thread; each parsed event's data goes to the channel.
fn watch(c: &Cluster, id: u64, path: &str) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    let events = watch_events(c, id, path, None);
    thread::spawn(move || {
        for (_, v) in events {
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    rx
}

/// A watch's events as `(id, data)`, reconnecting with `Last-Event-ID` if given.
fn watch_events(
    c: &Cluster,
    id: u64,
    path: &str,
    last_event_id: Option<&str>,
) -> mpsc::Receiver<(Option<String>, Value)> {
    let (tx, rx) = mpsc::channel();
    let (opened_tx, opened) = mpsc::channel();
    let mut conn = connect(c, id, Duration::from_secs(3600));
    let path = path.to_string();
    let mut req = Request::get(path.clone());
    if let Some(last) = last_event_id {
        let value = hyper::header::HeaderValue::from_str(last).expect("an event id");
        req = req.header(
            hyper::header::HeaderName::from_static("last-event-id"),
            value,
        );
    }
    thread::spawn(move || {
        let stream = match conn.open(&req) {
            Ok(stream) => stream,
            Err(e) => {
                let _ = opened_tx.send(Err(format!("watch {path}: {e}")));
                return;
            }
        };
        let status = stream.status().as_u16();
        let _ = opened_tx.send(Ok(status));
        if status != 200 {
            return;
        }
        for event in stream.events() {
            let Ok(event) = event else { return };
            if let Ok(v) = serde_json::from_str::<Value>(event.data.trim()) {
                if tx.send((event.id.clone(), v)).is_err() {
                    return;
                }
            }
        }
    });
    match opened.recv() {
        Ok(Ok(status)) => assert_eq!(status, 200, "watch on node {id}"),
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the watch thread ended before it opened the watch"),
    }
    rx
}

#[test]
fn a_reconnect_with_last_event_id_resumes_right_after_that_event() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    call(&c, 1, "PUT", "/v1/kv/t/a", &[], b"1");
    let txn = json!({ "success": [
        { "op": "put", "key": "t/d", "value": "2" },
        { "op": "put", "key": "t/b", "value": "2" },
        { "op": "put", "key": "t/c", "value": "2" },
    ]});
    let done = call(&c, 1, "POST", "/v1/txn", &[], txn.to_string().as_bytes());
    assert_eq!(done.status, 200, "{}", done.text());
    call(&c, 1, "PUT", "/v1/kv/t/e", &[], b"3");
    let path = "/v1/watch/t/?prefix=true&from_revision=1";
    let all = watch_events(&c, 1, path, None);
    let all: Vec<(Option<String>, Value)> = (0..5)
        .map(|_| all.recv_timeout(WAIT_TIMEOUT).expect("an event"))
        .collect();
    let ids: Vec<&str> = all
        .iter()
        .map(|(id, _)| id.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["1", "2.1", "2.2", "2", "3"]);
    // Within the transaction's revision, key order.
    let keys: Vec<&str> = all
        .iter()
        .map(|(_, v)| v["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["t/a", "t/b", "t/c", "t/d", "t/e"]);
    // A reconnect after any event gets exactly the ones after it.
    for (i, (id, _)) in all.iter().enumerate().take(4) {
        let id = id.as_deref().unwrap_or("");
        let resumed = watch_events(&c, 1, "/v1/watch/t/?prefix=true", Some(id));
        let first = resumed.recv_timeout(WAIT_TIMEOUT).expect("the next event");
        assert_eq!(first, all[i + 1], "after {id}");
    }
}

#[test]
fn a_watcher_that_falls_behind_the_recent_window_goes_on_from_the_history() {
    // The recent window keeps one revision, and this watcher's client reads nothing until
    // 8 MB were written: the node cannot send them all, so the watcher falls behind.
    let (c, _) = Cluster::start_with_leader(1, &["--watch-window-bytes", "1"]);
    let mut conn = connect(&c, 1, Duration::from_secs(60));
    let stream = conn
        .open(&Request::get("/v1/watch/big/?prefix=true"))
        .unwrap_or_else(|e| c.fail(&format!("watch: {e}")));
    assert_eq!(stream.status().as_u16(), 200);
    let value = vec![b'x'; 200_000];
    for i in 0..40 {
        let put = call(&c, 1, "PUT", &format!("/v1/kv/big/{i:02}"), &[], &value);
        assert_eq!(put.status, 200, "{}", put.text());
    }
    let got: Vec<Value> = stream
        .events()
        .take(40)
        .map(|e| {
            let e = e.unwrap_or_else(|e| c.fail(&format!("the stream broke: {e}")));
            serde_json::from_str(e.data.trim()).unwrap_or_else(|e| c.fail(&format!("{e}")))
        })
        .collect();
    let revs: Vec<u64> = got.iter().map(|e| field(e, "revision")).collect();
    assert_eq!(
        revs,
        (1..=40).collect::<Vec<u64>>(),
        "no event cut off or repeated"
    );
    assert!(got.iter().all(|e| e["type"] == "put"));
}

#[test]
fn watch_replays_from_a_revision_and_refuses_compacted_ones() {
    let (mut c, _) = Cluster::start_with_leader(1, &["--watch-window", "5"]);
    for i in 0..10 {
        call(
            &c,
            1,
            "PUT",
            &format!("/v1/kv/w/{i}"),
            &[],
            format!("v{i}").as_bytes(),
        );
    }
    // A start before the recent window (--watch-window 5) is served from the history.
    let events = watch(&c, 1, "/v1/watch/w/?prefix=true&from_revision=3");
    let got: Vec<Value> = (0..8)
        .map(|_| events.recv_timeout(WAIT_TIMEOUT).expect("backlog event"))
        .collect();
    let revs: Vec<u64> = got.iter().map(|e| field(e, "revision")).collect();
    assert_eq!(revs, [3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(got[0]["key"], "w/2");
    assert_eq!(got[0]["value"], "v2");
    assert_eq!(got[0]["type"], "put");

    // Once compacted, a start before the compaction point is refused with the oldest one.
    let body = json!({ "revision": 6 }).to_string();
    assert_eq!(
        call(&c, 1, "POST", "/v1/compact", &[], body.as_bytes()).status,
        200
    );
    let gone = call(
        &c,
        1,
        "GET",
        "/v1/watch/w/?prefix=true&from_revision=1",
        &[],
        b"",
    );
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert_eq!(field(&gone.json(), "oldest_revision"), 6);

    // Live events follow, filtered to the watched key.
    let single = watch(&c, 1, "/v1/watch/w/1");
    call(&c, 1, "PUT", "/v1/kv/other", &[], b"x");
    call(&c, 1, "DELETE", "/v1/kv/w/1", &[], b"");
    let del = single.recv_timeout(WAIT_TIMEOUT).expect("delete event");
    assert_eq!(
        (del["type"].as_str(), del["key"].as_str()),
        (Some("delete"), Some("w/1"))
    );
    let next = events.recv_timeout(WAIT_TIMEOUT).expect("live event");
    assert_eq!(next["key"], "w/1");

    // A start in the future skips what comes before it, live events too.
    let now = field(&c.status(1), "revision");
    let future = watch(&c, 1, &format!("/v1/watch/f?from_revision={}", now + 3));
    for i in 0..4 {
        call(&c, 1, "PUT", "/v1/kv/f", &[], format!("f{i}").as_bytes());
    }
    let first = future
        .recv_timeout(WAIT_TIMEOUT)
        .expect("event at the start revision");
    assert_eq!(field(&first, "revision"), now + 3);
    assert_eq!(first["value"], "f2");

    for bad in ["/v1/watch/", "/v1/watch/x?from_revision=abc"] {
        assert_eq!(call(&c, 1, "GET", bad, &[], b"").status, 400, "{bad}");
    }

    // Open watches do not hold up a graceful shutdown.
    let status = c.stop(1);
    assert_eq!(status.code(), Some(0), "{status}");
    drop((events, single, future));
}

/// A watch on a follower sees every acknowledged write exactly once, in revision order, with
/// no gap, while the leader is killed and a new one takes over.
#[test]
fn watch_loses_nothing_across_a_leader_kill() {
    let (mut c, leader) = Cluster::start_with_leader(3, &[]);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let other = c
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    let start = field(&c.status(follower), "revision") + 1;
    let events = watch(
        &c,
        follower,
        &format!("/v1/watch/w/?prefix=true&from_revision={start}"),
    );

    let mut acked = Vec::new();
    let mut i = 0;
    let deadline = Instant::now() + WAIT_TIMEOUT * 2;
    let mut killed = false;
    while acked.len() < 60 && Instant::now() < deadline {
        if acked.len() == 20 && !killed {
            c.kill(leader);
            killed = true;
        }
        let target = if killed {
            [follower, other][i % 2]
        } else {
            [leader, follower, other][i % 3]
        };
        let key = format!("w/{i:04}");
        let a = call(
            &c,
            target,
            "PUT",
            &format!("/v1/kv/{key}"),
            &[],
            key.as_bytes(),
        );
        if a.status == 200 {
            acked.push(key);
        }
        i += 1;
    }
    assert!(
        killed && acked.len() >= 60,
        "only {} writes acknowledged",
        acked.len()
    );

    let mut seen = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let found_all = wait_until(WAIT_TIMEOUT, || {
        while let Ok(e) = events.try_recv() {
            seen.push(field(&e, "revision"));
            assert!(
                keys.insert(e["key"].as_str().unwrap().to_string()),
                "key {} twice",
                e["key"]
            );
        }
        acked.iter().all(|k| keys.contains(k))
    });
    assert!(
        found_all,
        "missing events: {:?}",
        acked
            .iter()
            .filter(|k| !keys.contains(*k))
            .collect::<Vec<_>>()
    );
    let expected: Vec<u64> = (start..start + seen.len() as u64).collect();
    assert_eq!(
        seen, expected,
        "revisions must be contiguous, without repeats"
    );
}

#[test]
fn health_status_and_metrics() {
    let (mut c, leader) = Cluster::start_with_leader(3, &[]);
    c.put_ok(leader, "k", b"v");
    c.wait_caught_up();
    for id in c.ids() {
        let h = call(&c, id, "GET", "/health", &[], b"");
        assert_eq!(h.status, 200, "node {id}: {}", h.text());
        assert_eq!(h.json()["health"], "ok");
    }
    let s = call(&c, leader, "GET", "/v1/status", &[], b"").json();
    for name in [
        "id",
        "role",
        "leader",
        "term",
        "commit_index",
        "applied_index",
        "snapshot_index",
        "revision",
        "keys",
        "data_bytes",
        "wal_bytes",
    ] {
        assert!(!s[name].is_null(), "status lacks {name}: {s}");
    }
    assert_eq!(s["members"].as_array().map(Vec::len), Some(3), "{s}");
    let m = call(&c, leader, "GET", "/metrics", &[], b"").text();
    for name in [
        "coordinate_http_requests_total{route=\"put\",status=\"204\"}",
        "coordinate_http_request_duration_seconds_bucket",
        "coordinate_proposals_total",
        "coordinate_wal_fsync_duration_seconds_count",
        "coordinate_leader_changes_total",
        "coordinate_applied_index",
        "coordinate_snapshots_total",
        "coordinate_wal_bytes",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }

    // Without a quorum the survivor reports itself unhealthy, with the reason.
    let survivor = c.ids().into_iter().find(|&id| id != leader).unwrap();
    for id in c.ids() {
        if id != survivor {
            c.kill(id);
        }
    }
    let unhealthy = wait_until(WAIT_TIMEOUT, || {
        call(&c, survivor, "GET", "/health", &[], b"").status == 503
    });
    assert!(unhealthy, "health stayed 200 without a quorum");
    let h = call(&c, survivor, "GET", "/health", &[], b"").json();
    assert!(
        h["reason"].as_str().is_some_and(|r| r.contains("leader")),
        "{h}"
    );
}
