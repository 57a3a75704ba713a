//! Who may speak on the peer port of a 3-node cluster with peer mTLS: a member presenting its
//! own certificate is admitted; a certificate from another CA, an expired one, a valid member
//! certificate claiming another member's id (the leader's), and a plain-TCP peer are refused
//! before a single raft message is decoded, and change nothing. Also, in clear and under TLS:
//! a member removed while it was down learns of its removal from the others and stops.

mod common;

use std::time::Duration;

use common::peer::{identity_of, peer_addr_of, refused_messages, RawPeer};
use common::{field, wait_until, Cluster, Security, WAIT_TIMEOUT};
use coordinate_testkit::certs::{peer_client, Certs};
use coordinate_tls::devcerts::Subject;
use raft::eraftpb::{Entry, Message, MessageType};

/// How long a refused connection may stay open before the test calls it admitted.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A heartbeat from `from` whose commit index is past `target`'s log: the node's guard
/// refuses (and counts) it once decoded, and it changes nothing.
fn bad_heartbeat(from: u64, target: u64, term: u64, last: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = target;
    m.term = term;
    m.commit = last + 1000;
    m
}

/// An append from `from` at a future term, holding a put of `forged`.
fn forged_append(from: u64, target: u64, term: u64, last: u64) -> Message {
    use coordinate_server::kv::Command;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = target;
    m.term = term + 1;
    m.index = last;
    m.log_term = term;
    m.commit = last + 1;
    m.mut_entries().push(Entry {
        index: last + 1,
        term: term + 1,
        data: Command::put("forged".into(), "by an impostor".into()).encode(),
        ..Default::default()
    });
    m
}

#[test]
fn impostors_on_the_peer_port_are_refused_and_change_nothing() {
    let (mut c, leader) = Cluster::start_with_leader_as(Security::Tls, 3, &[]);
    for i in 0..5 {
        c.put_ok(leader, &format!("acked-{i}"), b"before the impostors");
    }
    let leader = c.wait_caught_up();
    let target = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let other = c
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != target)
        .unwrap();
    let status = c.status(target);
    let (term, last) = (field(&status, "term"), field(&status, "last_index"));
    let addr = peer_addr_of(&c, target);
    let certs = c.certs().expect("a TLS cluster");
    let ca = certs.ca();
    let leader_url = c.peer_urls()[leader as usize - 1].clone();
    let leader_identity = identity_of(&c, leader);

    // The control: the leader's own certificate is admitted, and its message reaches the
    // node (whose guard refuses what it says). Without this the refusals below prove nothing.
    let before = refused_messages(&c, target);
    let own = peer_client(&ca, certs.files(&format!("node-{leader}")));
    let mut peer = RawPeer::connect_with(Some(own), &addr, leader, target, leader_identity)
        .expect("connect with the leader's own certificate");
    peer.send(&[bad_heartbeat(leader, target, term, last)])
        .expect("send as the leader");
    if !wait_until(WAIT_TIMEOUT, || refused_messages(&c, target) > before) {
        c.fail("a heartbeat over the leader's own certificate never reached the node");
    }
    drop(peer);

    // The impostors, each claiming to be the leader.
    let stranger_ca = Certs::new(&c.dir().join("stranger-ca"));
    let leader_subject = Subject {
        hosts: vec!["127.0.0.1".into()],
        uris: vec![leader_url.clone()],
        ..Subject::named("impostor")
    };
    let foreign = stranger_ca.issue("foreign", &leader_subject);
    let expired = certs.issue(
        "expired",
        &Subject {
            expired: true,
            ..leader_subject.clone()
        },
    );
    let impostors = [
        (
            "a certificate from another CA",
            Some(peer_client(&ca, foreign)),
        ),
        ("an expired certificate", Some(peer_client(&ca, expired))),
        (
            "another member's valid certificate",
            Some(peer_client(&ca, certs.files(&format!("node-{other}")))),
        ),
        ("plain TCP", None),
    ];
    let before = refused_messages(&c, target);
    for (who, tls) in impostors {
        let attempt =
            RawPeer::connect_with(tls, &addr, leader, target, leader_identity).and_then(|mut p| {
                p.send(&[
                    forged_append(leader, target, term, last),
                    bad_heartbeat(leader, target, term, last),
                ])?;
                Ok(p)
            });
        match attempt {
            Err(e) => eprintln!("{who}: refused while sending: {e}"),
            Ok(mut p) => {
                if !p.closed_within(REFUSAL_TIMEOUT) {
                    c.fail(&format!("{who}: the connection was not closed"));
                }
            }
        }
        let now = refused_messages(&c, target);
        assert_eq!(
            now, before,
            "{who}: a message was decoded (refused count {before} -> {now})"
        );
    }
    // A member added with a clear-text URL could never be reached.
    let (status, body) = c.request(leader, "POST", "/4", "http://127.0.0.1:1");
    assert_eq!(status, 400, "POST /4 with an http:// URL: {body}");
    assert!(body.contains("https://"), "POST /4: {body}");
    let log = c.log_text(target);
    for line in ["TLS handshake failed", "its certificate does not prove it"] {
        assert!(log.contains(line), "node {target}'s log lacks {line:?}");
    }

    // Nothing changed: same leader and term on every node, the acknowledged keys and no
    // forged one, and the cluster writes through every node.
    c.check_alive();
    for id in c.ids() {
        let s = c.status(id);
        assert_eq!(field(&s, "leader"), leader, "node {id}: {s}");
        assert_eq!(field(&s, "term"), term, "node {id}: {s}");
        for i in 0..5 {
            c.assert_value(id, &format!("acked-{i}"), b"before the impostors");
        }
        match c.get(id, "forged") {
            Ok((404, _)) => {}
            other => c.fail(&format!("node {id}: the forged key: {other:?}")),
        }
    }
    for id in c.ids() {
        c.put_ok(id, &format!("after-{id}"), b"written");
    }
    c.wait_caught_up();
}

/// New certificate files are picked up without a restart: the next handshake on the peer
/// port presents the new certificate, and members reconnecting afterwards are admitted.
#[test]
fn peer_certificates_rotate_without_a_restart() {
    let (mut c, _) =
        Cluster::start_with_leader_as(Security::Tls, 3, &["--tls-reload-interval-ms", "100"]);
    c.put_ok(1, "before", b"rotation");
    let certs = c.certs().expect("a TLS cluster");
    let addr = peer_addr_of(&c, 1);
    let presented = |c: &Cluster| {
        let certs = c.certs().expect("a TLS cluster");
        let tls = peer_client(&certs.ca(), certs.files("node-2"));
        let mut p = RawPeer::connect_silent_with(Some(tls), &addr).expect("connect");
        p.server_certificate()
            .expect("handshake")
            .expect("a certificate")
    };
    let der = |path: &std::path::Path| {
        coordinate_tls::pem::certificates(path).expect("read the certificate")[0]
            .as_ref()
            .to_vec()
    };
    let (old_file, _) = certs.files("node-1");
    assert_eq!(presented(&c), der(&old_file));
    // Re-issued (same names, new key), as a renewal does.
    certs.issue_member(1, &c.peer_urls()[0].clone());
    let new = der(&old_file);
    if !wait_until(WAIT_TIMEOUT, || presented(&c) == new) {
        c.fail("node 1 still presents its old peer certificate");
    }
    let logged = wait_until(WAIT_TIMEOUT, || {
        c.log_text(1).contains("TLS certificates reloaded")
    });
    assert!(logged, "node 1 did not log the reload");
    // The others reconnect to it over the new certificate.
    c.kill(2);
    c.restart(2);
    c.wait_caught_up();
    c.put_ok(2, "after", b"rotation");
    for id in c.ids() {
        c.assert_value(id, "before", b"rotation");
        c.assert_value(id, "after", b"rotation");
    }
}

/// `--peer-auto-tls`: peers speak TLS with self-signed certificates (encryption, no
/// verification, as in etcd); a clear-text peer is refused.
#[test]
fn peer_auto_tls_encrypts_between_peers() {
    let (c, leader) = Cluster::start_with_leader_as(Security::PeerAutoTls, 3, &[]);
    assert!(c.peer_urls().iter().all(|u| u.starts_with("https://")));
    for id in c.ids() {
        c.put_ok(id, &format!("via-{id}"), b"auto");
    }
    for id in c.ids() {
        for from in c.ids() {
            c.assert_value(id, &format!("via-{from}"), b"auto");
        }
    }
    let target = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let mut plain =
        RawPeer::connect(&peer_addr_of(&c, target), leader, target, 0).expect("connect in clear");
    assert!(
        plain.closed_within(REFUSAL_TIMEOUT),
        "a clear-text hello was not refused"
    );
    // Logged once the connection is dropped, so maybe just after the hang-up.
    let logged = wait_until(WAIT_TIMEOUT, || {
        c.log_text(target).contains("TLS handshake failed")
    });
    assert!(logged, "node {target} did not log the refused handshake");
}

/// A member removed while it was down never hears of the removal from the log (nobody sends
/// it entries any more). When it comes back, the members answer its hello saying it was
/// removed; told so by most of them, it stops for good, as a member that applied its own
/// removal does.
fn a_member_removed_while_down_learns_it_and_stops(security: Security) {
    let (mut c, leader) = Cluster::start_with_leader_as(security, 3, &[]);
    c.put_ok(leader, "before", b"the removal");
    let gone = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.kill(gone);
    let (status, body) = c.request(leader, "DELETE", &format!("/{gone}"), "");
    assert_eq!(status, 204, "DELETE /{gone}: {body}");
    let term = field(&c.status(leader), "term");

    c.restart(gone);
    let exit = c.wait_exit_of(gone, WAIT_TIMEOUT);
    let Some(exit) = exit else {
        c.fail(&format!("node {gone} was removed but keeps running"));
    };
    assert!(exit.success(), "node {gone} exited with {exit}");
    let log = c.log_text(gone);
    assert!(
        log.contains("says it applied this node's removal"),
        "node {gone}'s log does not say why it stopped"
    );
    // It stays stopped: the data dir is marked removed.
    c.restart(gone);
    let again = c.wait_exit_of(gone, WAIT_TIMEOUT);
    assert!(
        again.is_some_and(|s| !s.success()),
        "node {gone} started again on the data dir of a removed member: {again:?}"
    );
    // The others served on, undisturbed.
    for id in c.ids().into_iter().filter(|&id| id != gone) {
        let s = c.status(id);
        assert_eq!(field(&s, "term"), term, "node {id}: {s}");
        c.assert_value(id, "before", b"the removal");
        c.put_ok(id, &format!("after-{id}"), b"written");
    }
}

crate::plain_and_tls!(a_member_removed_while_down_learns_it_and_stops);
