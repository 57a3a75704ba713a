//! Revisions, compaction, leases and the quota on real processes, through the `/v1` API:
//! reads at past revisions and their refusal once compacted; a leased key that lives while
//! kept alive and goes (with a delete event) once its lease expires; keep-alives across a
//! leader kill; the NOSPACE alarm raised above the quota and disarmed after space is freed.

mod common;

use std::time::{Duration, Instant};

use common::http::{call, connect};
use common::{field, wait_until, Cluster, WAIT_TIMEOUT};
use serde_json::json;

#[test]
fn reads_at_past_revisions_until_they_are_compacted() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let r1 = field(
        &call(&c, 1, "PUT", "/v1/kv/k", &[], b"one").json(),
        "revision",
    );
    let r2 = field(
        &call(&c, 1, "PUT", "/v1/kv/k", &[], b"two").json(),
        "revision",
    );
    let at = |rev: u64| call(&c, 1, "GET", &format!("/v1/kv/k?revision={rev}"), &[], b"");
    assert_eq!(at(r1).body, b"one");
    assert_eq!(at(r2).body, b"two");
    assert_eq!(at(0).body, b"two");
    let future = at(r2 + 10);
    assert_eq!(future.status, 400, "{}", future.text());
    assert!(
        future.text().contains("future revision"),
        "{}",
        future.text()
    );
    // A listing at a past revision sees the store as it was.
    call(&c, 1, "PUT", "/v1/kv/l", &[], b"x");
    let list = call(
        &c,
        1,
        "GET",
        &format!("/v1/kv/?prefix=true&revision={r2}"),
        &[],
        b"",
    );
    assert_eq!(
        list.json()["kvs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.text()
    );

    let body = json!({ "revision": r2 }).to_string();
    let compacted = call(&c, 1, "POST", "/v1/compact", &[], body.as_bytes());
    assert_eq!(compacted.status, 200, "{}", compacted.text());
    let gone = at(r1);
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert_eq!(field(&gone.json(), "oldest_revision"), r2);
    assert_eq!(at(r2).body, b"two");
    // A watch from before the compaction point is refused too, though the node's recent
    // changes in memory still hold that revision.
    let watch = call(
        &c,
        1,
        "GET",
        &format!("/v1/watch/k?from_revision={r1}"),
        &[],
        b"",
    );
    assert_eq!(watch.status, 410, "{}", watch.text());
    // Compacting again to the same point is refused: it is compacted already.
    let again = call(&c, 1, "POST", "/v1/compact", &[], body.as_bytes());
    assert_eq!(again.status, 410, "{}", again.text());
}

/// Grants a lease of `ttl` seconds on node `id`; returns its id.
fn grant(c: &Cluster, id: u64, ttl: i64) -> i64 {
    let body = json!({ "ttl": ttl }).to_string();
    let granted = call(c, id, "POST", "/v1/lease", &[], body.as_bytes());
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert_eq!(granted.json()["ttl"], ttl);
    granted.json()["id"]
        .as_i64()
        .unwrap_or_else(|| c.fail("a lease id"))
}

#[test]
fn a_leased_key_lives_while_kept_alive_and_goes_when_its_lease_expires() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let lease = grant(&c, 1, 2);
    let put = call(
        &c,
        1,
        "PUT",
        &format!("/v1/kv/lock?lease={lease}"),
        &[],
        b"me",
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let missing = call(&c, 1, "PUT", "/v1/kv/other?lease=12345", &[], b"x");
    assert_eq!(missing.status, 404, "{}", missing.text());

    let ttl = call(
        &c,
        1,
        "GET",
        &format!("/v1/lease/{lease}?keys=true"),
        &[],
        b"",
    );
    assert_eq!(ttl.json()["keys"], json!(["lock"]), "{}", ttl.text());
    assert_eq!(ttl.json()["granted_ttl"], 2);
    let list = call(&c, 1, "GET", "/v1/lease", &[], b"");
    assert_eq!(list.json()["leases"], json!([lease]));

    // Kept alive for three TTLs, the key stays.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let kept = call(
            &c,
            1,
            "POST",
            &format!("/v1/lease/{lease}/keep-alive"),
            &[],
            b"",
        );
        assert_eq!(kept.status, 200, "{}", kept.text());
        let got = call(&c, 1, "GET", "/v1/kv/lock", &[], b"");
        assert_eq!(
            got.status, 200,
            "the key went while its lease was kept alive"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Left alone, it expires: the key and the lease go.
    let expired = wait_until(WAIT_TIMEOUT, || {
        call(&c, 1, "GET", "/v1/kv/lock", &[], b"").status == 404
    });
    assert!(expired, "the leased key did not expire");
    let after = call(&c, 1, "GET", &format!("/v1/lease/{lease}"), &[], b"");
    assert_eq!(after.status, 404, "{}", after.text());
    let kept = call(
        &c,
        1,
        "POST",
        &format!("/v1/lease/{lease}/keep-alive"),
        &[],
        b"",
    );
    assert_eq!(kept.status, 404, "{}", kept.text());
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let lease = grant(&c, 1, 60);
    for k in ["a", "b", "c"] {
        let put = call(
            &c,
            1,
            "PUT",
            &format!("/v1/kv/s/{k}?lease={lease}"),
            &[],
            b"v",
        );
        assert_eq!(put.status, 200, "{}", put.text());
    }
    let before = field(
        &call(&c, 1, "GET", "/v1/status", &[], b"").json(),
        "revision",
    );
    let revoked = call(&c, 1, "DELETE", &format!("/v1/lease/{lease}"), &[], b"");
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(field(&revoked.json(), "deleted"), 3);
    assert_eq!(field(&revoked.json(), "revision"), before + 1);
    let list = call(&c, 1, "GET", "/v1/kv/s/?prefix=true", &[], b"");
    assert_eq!(list.json()["kvs"], json!([]), "{}", list.text());
}

/// A 3-node cluster with `key` put on a follower under a lease of `ttl` seconds granted
/// there: the cluster, its leader, that follower and the lease.
fn leased_key_on_a_follower(key: &str, ttl: i64) -> (Cluster, u64, u64, i64) {
    let (c, leader) = Cluster::start_with_leader(3, &[]);
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap_or(1);
    let lease = grant(&c, follower, ttl);
    let path = format!("/v1/kv/{key}?lease={lease}");
    let put = call(&c, follower, "PUT", &path, &[], b"x");
    assert_eq!(put.status, 200, "{}", put.text());
    (c, leader, follower, lease)
}

#[test]
fn a_lease_kept_alive_survives_a_leader_kill() {
    let (mut c, leader, follower, lease) = leased_key_on_a_follower("held", 3);
    c.kill(leader);
    // Keep alive through a survivor for a while, as a client does: every 300 ms, each
    // attempt given 1 s (a keep-alive the survivor forwarded to the dead leader waits for the
    // request timeout; the next attempt goes to the new leader).
    let until = Instant::now() + Duration::from_secs(8);
    let path = format!("/v1/lease/{lease}/keep-alive");
    let req =
        coordinate_client::Request::write(hyper::Method::POST, path.clone(), bytes::Bytes::new());
    while Instant::now() < until {
        let mut conn = connect(&c, follower, Duration::from_secs(1));
        if let Ok(kept) = conn.send(&req) {
            let status = kept.status.as_u16();
            assert_ne!(status, 404, "the lease expired while kept alive");
            assert!(
                status == 200 || status == 503 || status == 504,
                "{status}: {}",
                String::from_utf8_lossy(&kept.body)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let got = call(&c, follower, "GET", "/v1/kv/held", &[], b"");
    assert_eq!(
        got.status,
        200,
        "the key of a live lease went: {}",
        got.text()
    );
}

#[test]
fn above_the_quota_writes_are_refused_until_space_is_freed_and_the_alarm_disarmed() {
    let (c, _) = Cluster::start_with_leader(1, &["--quota-backend-bytes", "4096"]);
    let value = vec![b'v'; 1000];
    let mut refused = None;
    for i in 0..10 {
        let put = call(&c, 1, "PUT", &format!("/v1/kv/big/{i}"), &[], &value);
        if put.status != 200 {
            refused = Some(put);
            break;
        }
    }
    let refused = refused.unwrap_or_else(|| c.fail("no write was refused above the quota"));
    assert_eq!(refused.status, 507, "{}", refused.text());
    assert!(
        refused.text().contains("space exceeded"),
        "{}",
        refused.text()
    );
    let alarms = call(&c, 1, "GET", "/v1/alarms", &[], b"");
    assert_eq!(
        alarms.json()["alarms"],
        json!([{ "member": 1, "alarm": "NOSPACE" }])
    );
    // Raised, the alarm refuses even a small write; reads and deletes still work.
    assert_eq!(call(&c, 1, "PUT", "/v1/kv/tiny", &[], b"t").status, 507);
    assert_eq!(call(&c, 1, "GET", "/v1/kv/big/0", &[], b"").status, 200);
    let deleted = call(&c, 1, "DELETE", "/v1/kv/big/?prefix=true", &[], b"");
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let now = field(&deleted.json(), "revision");
    let body = json!({ "revision": now }).to_string();
    assert_eq!(
        call(&c, 1, "POST", "/v1/compact", &[], body.as_bytes()).status,
        200
    );
    // The physical compaction runs as batches are applied: wait until the space is back.
    let freed = wait_until(WAIT_TIMEOUT, || {
        field(
            &call(&c, 1, "GET", "/v1/status", &[], b"").json(),
            "total_bytes",
        ) < 1000
    });
    assert!(freed, "the history was not compacted");
    let disarmed = call(&c, 1, "DELETE", "/v1/alarms", &[], b"");
    assert_eq!(disarmed.json()["alarms"], json!([]), "{}", disarmed.text());
    assert_eq!(call(&c, 1, "PUT", "/v1/kv/tiny", &[], b"t").status, 200);
}

#[test]
fn a_lease_nobody_keeps_alive_expires_under_the_next_leader_too() {
    let (mut c, leader, survivor, lease) = leased_key_on_a_follower("orphan", 2);
    c.kill(leader);
    // The next leader extends the lease once, then expires it: the key goes.
    let gone = wait_until(WAIT_TIMEOUT, || {
        call(&c, survivor, "GET", "/v1/kv/orphan", &[], b"").status == 404
    });
    assert!(gone, "a lease nobody kept alive outlived a leader change");
    let lease_gone = call(&c, survivor, "GET", &format!("/v1/lease/{lease}"), &[], b"");
    assert_eq!(lease_gone.status, 404, "{}", lease_gone.text());
}

#[test]
fn history_is_compacted_before_it_fills_the_quota() {
    // A retention the policy would not reach, and a quota a quarter of which the history
    // passes: the leader compacts anyway.
    let args = [
        "--quota-backend-bytes",
        "100000",
        "--auto-compaction-retention",
        "1000000",
    ];
    let (c, _) = Cluster::start_with_leader(1, &args);
    let value = vec![b'h'; 1000];
    for _ in 0..60 {
        let put = call(&c, 1, "PUT", "/v1/kv/hot", &[], &value);
        assert_eq!(put.status, 200, "{}", put.text());
    }
    let compacted = wait_until(WAIT_TIMEOUT, || {
        field(
            &call(&c, 1, "GET", "/v1/status", &[], b"").json(),
            "compact_revision",
        ) > 0
    });
    assert!(
        compacted,
        "the history was not compacted under quota pressure"
    );
    let status = call(&c, 1, "GET", "/v1/status", &[], b"").json();
    assert!(field(&status, "total_bytes") < 60_000, "{status}");
}

#[test]
fn malformed_lease_range_and_compaction_requests_are_refused_cleanly() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    call(&c, 1, "PUT", "/v1/kv/k", &[], b"v");
    let huge = format!("{{\"ttl\": 5, \"pad\": \"{}\"}}", "x".repeat(10_000));
    let bad: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", "/v1/lease".into(), b"not json".to_vec(), 400),
        ("POST", "/v1/lease".into(), b"[1, 2]".to_vec(), 400),
        ("POST", "/v1/lease".into(), b"{}".to_vec(), 400),
        ("POST", "/v1/lease".into(), br#"{"ttl": -1}"#.to_vec(), 400),
        (
            "POST",
            "/v1/lease".into(),
            br#"{"ttl": "ten"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/lease".into(),
            br#"{"ttl": 5, "id": -3}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/lease".into(),
            br#"{"ttl": 1e400}"#.to_vec(),
            400,
        ),
        ("POST", "/v1/lease".into(), huge.into_bytes(), 413),
        ("GET", "/v1/lease/abc".into(), Vec::new(), 400),
        ("GET", "/v1/lease/-5".into(), Vec::new(), 400),
        (
            "GET",
            "/v1/lease/99999999999999999999".into(),
            Vec::new(),
            400,
        ),
        ("POST", "/v1/lease/0/keep-alive".into(), Vec::new(), 400),
        ("DELETE", "/v1/lease/7".into(), Vec::new(), 404),
        ("PUT", "/v1/kv/k?lease=abc".into(), b"v".to_vec(), 400),
        ("PUT", "/v1/kv/k?lease=-1".into(), b"v".to_vec(), 400),
        ("GET", "/v1/kv/k?revision=abc".into(), Vec::new(), 400),
        (
            "GET",
            "/v1/kv/k?revision=18446744073709551615".into(),
            Vec::new(),
            400,
        ),
        (
            "GET",
            "/v1/kv/?prefix=true&sort_target=size".into(),
            Vec::new(),
            400,
        ),
        (
            "GET",
            "/v1/kv/?prefix=true&sort_order=up".into(),
            Vec::new(),
            400,
        ),
        ("GET", "/v1/kv/?prefix=true&limit=0".into(), Vec::new(), 400),
        (
            "GET",
            "/v1/kv/?prefix=true&max_create_revision=-1".into(),
            Vec::new(),
            400,
        ),
        (
            "GET",
            "/v1/kv/a?prefix=true&range_end=b".into(),
            Vec::new(),
            400,
        ),
        (
            "GET",
            "/v1/kv/%%%?key_encoding=base64".into(),
            Vec::new(),
            400,
        ),
        ("GET", "/v1/kv/k?key_encoding=rot13".into(), Vec::new(), 400),
        ("POST", "/v1/compact".into(), b"garbage".to_vec(), 400),
        (
            "POST",
            "/v1/compact".into(),
            br#"{"revision": 0}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/compact".into(),
            br#"{"revision": 1000000}"#.to_vec(),
            400,
        ),
    ];
    for (method, path, body, want) in &bad {
        let got = call(&c, 1, method, path, &[], body);
        assert_eq!(got.status, *want, "{method} {path}: {}", got.text());
        assert!(
            got.json()["error"].is_string(),
            "{method} {path}: {}",
            got.text()
        );
    }
    let watch = |id: &str| call(&c, 1, "GET", "/v1/watch/k", &[("Last-Event-ID", id)], b"").status;
    assert_eq!(watch("x"), 400);
    assert_eq!(watch("3.x"), 400);
    // Nothing was written by any of them.
    let status = call(&c, 1, "GET", "/v1/status", &[], b"").json();
    assert_eq!(field(&status, "revision"), 1, "{status}");
    assert_eq!(field(&status, "leases"), 0, "{status}");
    assert_eq!(call(&c, 1, "GET", "/v1/kv/k", &[], b"").body, b"v");
}
