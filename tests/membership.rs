//! Membership changes on real processes: the seed's add/remove walkthrough, a joined node
//! restarting after the cluster compacted past its join, removing the leader under writes,
//! learners, and every refusal.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{field, run_to_exit, wait_until, Cluster, WAIT_TIMEOUT};

/// The seed's walkthrough: add node 4, start it with --join, write through it, remove node 3
/// and watch it exit, write and read on the rest; node 3 then refuses to restart.
#[test]
fn seed_walkthrough_add_then_remove() {
    let (mut c, _) = Cluster::start_with_leader(3, &[]);
    c.put_ok(1, "before", b"join");

    let (four, url) = c.add_node_slot();
    let (status, body) = c.request(1, "POST", &format!("/{four}"), &url);
    assert_eq!(status, 204, "POST /{four}: {body}");
    c.start_joining(four);
    c.wait_caught_up();

    c.put_ok(four, "through-4", b"hello");
    for id in 1..=four {
        c.assert_value(id, "through-4", b"hello");
        c.assert_value(id, "before", b"join");
    }
    let members = c.members(four);
    assert_eq!(members.len(), 4, "{members:?}");
    assert!(members
        .iter()
        .any(|m| m["id"] == 4 && m["peer_url"] == url.as_str()));

    let (status, body) = c.request(1, "DELETE", "/3", "");
    assert_eq!(status, 204, "DELETE /3: {body}");
    let exit = c
        .wait_exit_of(3, WAIT_TIMEOUT)
        .unwrap_or_else(|| c.fail("node 3 did not exit after its removal"));
    assert!(exit.success(), "removed node exits 0, got {exit}");

    c.put_ok(2, "after", b"removal");
    for id in [1, 2, four] {
        c.assert_value(id, "after", b"removal");
        c.assert_value(id, "through-4", b"hello");
    }
    let ids: Vec<u64> = c.members(1).iter().map(|m| field(m, "id")).collect();
    assert_eq!(ids, vec![1, 2, 4]);

    // Started again on the same data dir, the removed node refuses instead of disrupting.
    let (status, stderr) = run_to_exit(c.dir(), &c.args(3));
    assert!(!status.success(), "a removed node must not start: {stderr}");
    assert!(stderr.contains("removed from the cluster"), "{stderr}");
}

/// A node that joined is stopped, the cluster moves on far enough to compact its log past
/// everything the node has, and the node restarts on its data dir: it catches up by snapshot
/// and knows its peers (also ones added after it started).
#[test]
fn joined_node_restarts_after_compaction() {
    let (mut c, _) = Cluster::start_with_leader(3, &["--snapshot-count", "20"]);
    let (four, url) = c.add_node_slot();
    let (status, body) = c.request(2, "POST", &format!("/{four}"), &url);
    assert_eq!(status, 204, "POST /{four}: {body}");
    c.start_joining(four);
    c.wait_caught_up();
    c.put_ok(four, "joined", b"yes");
    c.wait_caught_up();
    let before = field(&c.status(four), "last_index");
    assert_eq!(c.stop(four).code(), Some(0));

    for i in 0..120 {
        c.put_ok(1 + i % 3, &format!("k{i}"), format!("v{i}").as_bytes());
    }
    let leader = c.wait_for_leader();
    let first = field(&c.status(leader), "first_index");
    assert!(
        first > before + 1,
        "the leader must have compacted past node {four}'s log (first index {first}, node had {before})"
    );

    c.restart(four);
    c.wait_caught_up();
    let status = c.status(four);
    assert!(field(&status, "snapshot_index") > before, "{status}");
    for i in 0..120 {
        c.assert_value(four, &format!("k{i}"), format!("v{i}").as_bytes());
    }
    c.put_ok(four, "after-restart", b"ok");
    c.assert_value(1, "after-restart", b"ok");
}

/// Removing the current leader while a client writes through the other nodes: leadership
/// moves, the old leader exits 0, and no acknowledged write is lost.
#[test]
fn removing_the_leader_under_writes_loses_nothing() {
    let (mut c, leader) = Cluster::start_with_leader(3, &[]);
    let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let unexpected = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));

    let writer = {
        let (client, acked, unexpected, stop, count, others) = (
            c.client(),
            acked.clone(),
            unexpected.clone(),
            stop.clone(),
            count.clone(),
            others.clone(),
        );
        thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let node = others[i % others.len()];
                let (key, value) = (format!("w-{i}"), format!("v-{i}"));
                i += 1;
                match client.put(node, &key, value.as_bytes()) {
                    Ok(204) => {
                        acked.lock().unwrap().push((key, value));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(503) | Ok(504) | Err(_) => {}
                    Ok(s) => unexpected.lock().unwrap().push(format!("PUT /{key}: {s}")),
                }
            }
        })
    };
    assert!(wait_until(WAIT_TIMEOUT, || count.load(Ordering::SeqCst) >= 20));

    let (status, body) = c.request(others[0], "DELETE", &format!("/{leader}"), "");
    assert_eq!(status, 204, "DELETE /{leader}: {body}");
    let exit = c
        .wait_exit_of(leader, WAIT_TIMEOUT)
        .unwrap_or_else(|| c.fail("the removed leader did not exit"));
    assert!(exit.success(), "{exit}");

    let at_removal = count.load(Ordering::SeqCst);
    let progressed = wait_until(WAIT_TIMEOUT, || {
        count.load(Ordering::SeqCst) >= at_removal + 20
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    assert!(
        progressed,
        "writes did not resume after removing the leader"
    );

    let new_leader = c.wait_for_leader();
    assert_ne!(new_leader, leader);
    let unexpected = unexpected.lock().unwrap();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    for &id in &others {
        for (key, value) in acked.lock().unwrap().iter() {
            c.assert_value(id, key, value.as_bytes());
        }
    }
}

/// A learner gets the data but no vote; promotion is refused while it lags and accepted once
/// it has caught up.
#[test]
fn learner_is_promoted_once_caught_up() {
    let (mut c, _) = Cluster::start_with_leader(3, &[]);
    for i in 0..150 {
        c.put_ok(1 + i % 3, &format!("k{i}"), b"v");
    }
    let (four, url) = c.add_node_slot();
    let body = format!(r#"{{"id":{four},"peer_url":"{url}","learner":true}}"#);
    let (status, text) = c.request(1, "POST", "/v1/members", &body);
    assert_eq!(status, 201, "{text}");
    let leader = c.wait_for_leader();
    let members = c.members(leader);
    let learner = members.iter().find(|m| m["id"] == four).expect("listed");
    assert_eq!(learner["role"], "learner", "{members:?}");

    // Not started yet: it has nothing, so promotion is refused with the reason.
    let (status, text) = c.request(leader, "POST", &format!("/v1/members/{four}/promote"), "");
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("not caught up"), "{text}");
    // Only the leader can judge; a follower says so.
    let follower = c
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != four)
        .unwrap();
    let (status, text) = c.request(follower, "POST", &format!("/v1/members/{four}/promote"), "");
    assert_eq!(status, 421, "{text}");

    c.start_joining(four);
    c.wait_caught_up();
    c.assert_value(four, "k149", b"v");
    let leader = c.wait_for_leader();
    let (status, text) = c.request(leader, "POST", &format!("/v1/members/{four}/promote"), "");
    assert_eq!(status, 204, "{text}");
    let members = c.members(leader);
    let promoted = members.iter().find(|m| m["id"] == four).expect("listed");
    assert_eq!(promoted["role"], "voter", "{members:?}");
    assert!(members
        .iter()
        .any(|m| m["is_leader"] == true && m["match_index"].is_u64()));
}

/// Every refusal answers 4xx with the reason and changes nothing.
#[test]
fn invalid_membership_changes_are_refused() {
    let (c, _) = Cluster::start_with_leader(3, &[]);
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("POST", "/4", "not a url", 400, "invalid peer URL"),
        ("POST", "/4", "", 400, "invalid peer URL"),
        ("POST", "/4", "https://127.0.0.1:9", 400, "invalid peer URL"),
        ("POST", "/abc", "http://127.0.0.1:9", 400, "not a node id"),
        ("POST", "/0", "http://127.0.0.1:9", 400, "not a node id"),
        ("POST", "/2", "http://127.0.0.1:9", 409, "already a member"),
        ("DELETE", "/9", "", 404, "not a member"),
        ("POST", "/v1/members", "{not json", 400, "invalid JSON"),
        ("POST", "/v1/members", r#"{"id":5}"#, 400, "invalid JSON"),
        ("POST", "/v1/members/2/promote", "", 409, "already a voter"),
        ("POST", "/v1/members/7/promote", "", 404, "not a learner"),
    ];
    for &(method, path, body, want, reason) in cases {
        let (status, text) = c.request(2, method, path, body);
        assert_eq!(status, want, "{method} {path} {body:?}: {text}");
        assert!(
            text.contains(reason),
            "{method} {path}: {text:?} lacks {reason:?}"
        );
    }
    // A URL already used by a member is refused too.
    let url = c.peer_urls()[0].clone();
    let (status, text) = c.request(1, "POST", "/5", &url);
    assert_eq!(status, 409, "{text}");
    assert_eq!(c.members(1).len(), 3, "nothing changed");
}

/// The last voter cannot be removed.
#[test]
fn the_last_voter_cannot_be_removed() {
    let (c, _) = Cluster::start_with_leader(1, &[]);
    let (status, text) = c.request(1, "DELETE", "/1", "");
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("last voter"), "{text}");
    c.put_ok(1, "still", b"serving");

    // A learner that never replicated anything is not caught up, even in a young log:
    // promoting it would make a dead voter and cost the quorum.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let body = format!(r#"{{"id":2,"peer_url":"{dead}","learner":true}}"#);
    let (status, text) = c.request(1, "POST", "/v1/members", &body);
    assert_eq!(status, 201, "{text}");
    let (status, text) = c.request(1, "POST", "/v1/members/2/promote", "");
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("not caught up"), "{text}");
    c.put_ok(1, "still", b"a quorum of one");
}

/// Concurrent changes: each is applied or refused as pending, never lost or half-applied.
#[test]
fn concurrent_changes_are_applied_or_refused_as_pending() {
    let (c, leader) = Cluster::start_with_leader(3, &[]);
    let urls: Vec<String> = (0..4)
        .map(|_| format!("http://127.0.0.1:{}", common::free_port()))
        .collect();
    let c = Arc::new(c);
    let handles: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let (c, url) = (c.clone(), url.clone());
            thread::spawn(move || {
                let id = 10 + i as u64;
                let body = format!(r#"{{"id":{id},"peer_url":"{url}","learner":true}}"#);
                (id, c.request(leader, "POST", "/v1/members", &body))
            })
        })
        .collect();
    let mut added = Vec::new();
    for h in handles {
        let (id, (status, text)) = h.join().expect("request thread");
        match status {
            201 => added.push(id),
            409 => assert!(text.contains("not applied yet"), "{text}"),
            other => panic!("learner {id}: unexpected {other}: {text}"),
        }
    }
    assert!(!added.is_empty(), "at least the first change applies");
    let mut listed: Vec<u64> = c
        .members(leader)
        .iter()
        .filter(|m| m["role"] == "learner")
        .map(|m| field(m, "id"))
        .collect();
    listed.sort_unstable();
    added.sort_unstable();
    assert_eq!(listed, added);
}

/// etcd's strict reconfiguration check: phantom voters (URLs nobody serves) are accepted only
/// while the members this node reaches still form a quorum afterwards; ids no node could be
/// started with, and loosely spelled ids and URLs, are refused. Nothing changes on a refusal.
#[test]
fn phantom_voters_and_unstartable_ids_are_refused() {
    let (mut c, _) = Cluster::start_with_leader(3, &[]);
    c.put_ok(1, "before", b"phantoms");
    let phantom = || format!("http://127.0.0.1:{}", common::free_port());
    let strict: &[(&str, String, &str)] = &[
        ("/18446744073709551615", phantom(), "not a node id"),
        ("/4097", phantom(), "not a node id"),
        ("/+4", phantom(), "not a node id"),
        ("/04", phantom(), "not a node id"),
        ("/4", "http://user@127.0.0.1:9".into(), "invalid peer URL"),
        ("/4", "http://127.0.0.1:0".into(), "invalid peer URL"),
        ("/4", "http://bad_host:9".into(), "invalid peer URL"),
        ("/4", format!("{}/", c.peer_urls()[0]), "already used"),
    ];
    for (path, body, reason) in strict {
        let (status, text) = c.request(1, "POST", path, body);
        assert!(
            (400..500).contains(&status) && text.contains(reason),
            "POST {path} {body:?}: {status} {text}"
        );
    }
    let big = r#"{"id":18446744073709551615,"peer_url":"http://127.0.0.1:9"}"#;
    let (status, text) = c.request(1, "POST", "/v1/members", big);
    assert_eq!(status, 400, "{text}");
    assert_eq!(c.members(1).len(), 3, "nothing changed");

    // With node 3 down, nodes 1 and 2 are two of three: a fourth voter that does not run
    // would leave two of four, no quorum.
    c.kill(3);
    assert!(
        wait_until(WAIT_TIMEOUT, || c
            .members(1)
            .iter()
            .any(|m| m["id"] == 3 && m["reachable"] == false)),
        "node 1 never noticed that node 3 is down: {:?}",
        c.members(1)
    );
    let (status, text) = c.request(1, "POST", "/4", &phantom());
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("reachable") && text.contains("quorum"),
        "{text}"
    );
    // Removing a live member would leave node 1 with the dead node 3: refused too.
    let (status, text) = c.request(1, "DELETE", "/2", "");
    assert_eq!(status, 409, "{text}");
    assert_eq!(c.members(1).len(), 3, "nothing changed");

    // Back to three live nodes: two phantoms fit (3 of 5 is a quorum), a third does not.
    c.restart(3);
    assert!(
        wait_until(WAIT_TIMEOUT, || c
            .members(1)
            .iter()
            .all(|m| m["reachable"] == true)),
        "node 1 never reached node 3 again: {:?}",
        c.members(1)
    );
    // Node 3 may have been the leader: until a new one is elected, node 1 forwards to it, and
    // the restarted node drops what it is sent (a write would get "outcome unknown").
    c.wait_for_leader();
    c.put_ok(1, "settled", b"phantoms");
    for id in [4, 5] {
        let (status, text) = c.request(1, "POST", &format!("/{id}"), &phantom());
        assert_eq!(status, 204, "phantom {id}: {text}");
    }
    let (status, text) = c.request(1, "POST", "/6", &phantom());
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("3 of 6"), "{text}");
    assert_eq!(c.members(1).len(), 5);
    // The cluster still has its leader and its data.
    c.put_ok(2, "after", b"phantoms");
    for id in 1..=3 {
        c.assert_value(id, "before", b"phantoms");
        c.assert_value(id, "after", b"phantoms");
    }
    c.check_alive();
}
