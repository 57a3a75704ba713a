//! Forged raft messages on the peer port of a real 3-node cluster (issue 11, items 1-7), in
//! clear and with peer mTLS (`tls::`), where the attacker holds a real member's certificate
//! and claims to be another member (the leader, say): refused before any message is decoded.
//!
//! Each test writes acknowledged keys, performs one attack through a raw socket — claiming a
//! non-member id (99) and a real member's id, with messages no honest member can send — and then
//! checks that nothing changed: every acknowledged key is readable on every node, nothing was
//! injected, no node exited, the term did not explode, and the cluster still writes (through
//! every node). Attacks on persisted state restart the whole cluster and check again.
//!
//! A message is known to be handled once the node counts it refused
//! (`coordinate_peer_messages_refused_total`) or closes the connection (a transport that refuses
//! the sender's id outright); the checks that follow do not depend on which.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::peer::{identity_of, peer_addr_of, refused_messages, RawPeer};
use common::{field, wait_until, Cluster, Security, WAIT_TIMEOUT};
use coordinate_server::kv::{Command, Kv};
use coordinate_testkit::certs::peer_client;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};

/// The id no member has.
const STRANGER: u64 = 99;
/// Terms an attack may not push the cluster beyond (ordinary elections only).
const TERM_SLACK: u64 = 5;

crate::plain_and_tls!(
    a_forged_snapshot_replaces_nothing,
    a_heartbeat_at_the_last_term_is_refused,
    a_heartbeat_commit_past_the_log_is_refused,
    a_forged_append_is_not_applied,
    a_malformed_snapshot_is_refused_before_it_is_durable,
    forged_proposals_are_refused,
    strangers_cannot_lead_or_force_elections
);

/// A 3-node cluster with acknowledged keys.
struct Setup {
    c: Cluster,
    leader: u64,
    keys: Vec<(String, Vec<u8>)>,
    term: u64,
}

impl Setup {
    fn new(security: Security) -> Setup {
        let (c, leader) = Cluster::start_with_leader_as(security, 3, &[]);
        let mut s = Setup {
            c,
            leader,
            keys: Vec::new(),
            term: 0,
        };
        for i in 0..5 {
            s.write(leader, &format!("acked-{i}"));
        }
        s.leader = s.c.wait_caught_up();
        s.term = field(&s.c.status(s.leader), "term");
        s
    }

    fn write(&mut self, via: u64, key: &str) {
        let value = format!("value of {key}").into_bytes();
        self.c.put_ok(via, key, &value);
        self.keys.push((key.to_string(), value));
    }

    fn followers(&self) -> Vec<u64> {
        self.c
            .ids()
            .into_iter()
            .filter(|&id| id != self.leader)
            .collect()
    }

    /// A member that is neither `target` nor the leader (to claim in the leader's term).
    fn bystander(&self, target: u64) -> u64 {
        self.c
            .ids()
            .into_iter()
            .find(|&id| id != target && id != self.leader)
            .expect("a third node")
    }

    /// Sends `msgs` to `target` claiming to be `from`, then waits until they are handled.
    fn attack(&self, target: u64, from: u64, msgs: &[Message]) {
        self.deliver(target, from, msgs.len() as u64, |p| p.send(msgs));
    }

    /// Streams a snapshot message to `target` claiming to be `from`.
    fn attack_snapshot(&self, target: u64, from: u64, m: &Message) {
        self.deliver(target, from, 1, |p| p.send_snapshot(m));
    }

    fn deliver(
        &self,
        target: u64,
        from: u64,
        count: u64,
        send: impl FnOnce(&mut RawPeer) -> std::io::Result<()>,
    ) {
        let before = refused_messages(&self.c, target);
        let identity = if from == STRANGER {
            0
        } else {
            identity_of(&self.c, from)
        };
        // With peer TLS the attacker holds a real member's certificate, but not `from`'s: a
        // member gone rogue, claiming to be another (or a stranger).
        let tls = self.c.certs().map(|certs| {
            let holder = self
                .c
                .ids()
                .into_iter()
                .find(|&id| id != from)
                .expect("a member");
            peer_client(&certs.ca(), certs.files(&format!("node-{holder}")))
        });
        let secure = tls.is_some();
        let mut peer = match RawPeer::connect_with(
            tls,
            &peer_addr_of(&self.c, target),
            from,
            target,
            identity,
        ) {
            Ok(peer) => peer,
            // A transport may refuse a stranger's connection outright, and with TLS anyone
            // whose certificate does not name them: nothing is delivered.
            Err(e) if from == STRANGER || secure => {
                eprintln!("node {target} refused a connection from {from}: {e}");
                return;
            }
            Err(e) => self
                .c
                .fail(&format!("connect to node {target} as {from}: {e}")),
        };
        // A node may hang up mid-way; what counts is what it did with the rest.
        let sent = send(&mut peer);
        let handled = wait_until(WAIT_TIMEOUT, || {
            refused_messages(&self.c, target) >= before + count
                || peer.closed_within(Duration::from_millis(50))
        });
        if !handled {
            eprintln!(
                "node {target}: messages from {from} neither refused nor hung up on ({sent:?})"
            );
        }
    }

    /// Nothing changed: keys on every node, no forged key, no node 42, all alive, the term
    /// sane, and the cluster writes through every node.
    fn check_intact(&mut self, forged_keys: &[&str]) {
        self.c.check_alive();
        self.leader = self.c.wait_for_leader();
        for id in self.c.ids() {
            for (key, value) in &self.keys {
                self.c.assert_value(id, key, value);
            }
            for key in forged_keys {
                match self.c.get(id, key) {
                    Ok((404, _)) => {}
                    other => self
                        .c
                        .fail(&format!("forged key {key} on node {id}: {other:?}")),
                }
            }
            let status = self.c.status(id);
            let term = field(&status, "term");
            if term > self.term + TERM_SLACK {
                self.c
                    .fail(&format!("node {id} is at term {term}, was {}", self.term));
            }
            let voters = status.get("voters").cloned().unwrap_or_default();
            if voters != serde_json::json!([1, 2, 3]) {
                self.c
                    .fail(&format!("node {id}'s voters changed: {status}"));
            }
        }
        for id in self.c.ids() {
            self.write(id, &format!("after-attack-{}-{id}", self.keys.len()));
        }
        self.leader = self.c.wait_caught_up();
        for id in self.c.ids() {
            for (key, value) in &self.keys {
                self.c.assert_value(id, key, value);
            }
        }
        self.c.check_alive();
    }

    /// Stops every node, starts them again, checks again.
    fn restart_and_check(&mut self, forged_keys: &[&str]) {
        for id in self.c.ids() {
            let status = self.c.stop(id);
            assert!(status.success(), "node {id} stopped with {status}");
        }
        for id in self.c.ids() {
            self.c.restart(id);
        }
        self.leader = self.c.wait_for_leader();
        self.check_intact(forged_keys);
    }

    fn term_and_last(&self, id: u64) -> (u64, u64) {
        let s = self.c.status(id);
        (field(&s, "term"), field(&s, "last_index"))
    }
}

fn msg(kind: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn put_entry(index: u64, term: u64, key: &str, value: Vec<u8>) -> Entry {
    Entry {
        index,
        term,
        data: Command::put(Bytes::copy_from_slice(key.as_bytes()), value.into()).encode(),
        ..Default::default()
    }
}

/// A proposal context naming `proposer`.
fn context(proposer: u64) -> Bytes {
    let mut c = proposer.to_le_bytes().to_vec();
    c.extend_from_slice(&[0x5a; 16]);
    c.into()
}

/// A state-machine snapshot holding `forged`, with the given member list.
fn forged_state(members: &[(u64, String)], forged: &str) -> Bytes {
    let members: BTreeMap<u64, String> = members.iter().cloned().collect();
    let mut kv = Kv::with_members(members);
    let mut events = Vec::new();
    kv.apply(
        1,
        Command::put(
            Bytes::copy_from_slice(forged.as_bytes()),
            Bytes::from_static(b"attacker"),
        ),
        &mut events,
    );
    kv.snapshot()
}

fn snapshot_msg(from: u64, to: u64, term: u64, index: u64, data: Bytes) -> Message {
    let mut m = msg(MessageType::MsgSnapshot, from, to, term);
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = index;
    snap.mut_metadata().term = term;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    snap.data = data;
    m.set_snapshot(snap);
    m
}

fn real_members(s: &Setup) -> Vec<(u64, String)> {
    s.c.ids()
        .into_iter()
        .map(|id| (id, s.c.peer_urls()[(id - 1) as usize].clone()))
        .collect()
}

/// Item 1: a snapshot holding the attacker's state, at a higher term and index.
fn a_forged_snapshot_replaces_nothing(security: Security) {
    let mut s = Setup::new(security);
    let members = real_members(&s);
    for target in s.c.ids() {
        let (term, last) = s.term_and_last(target);
        // From a non-member, at a higher term: a valid state, nothing else wrong.
        let data = forged_state(&members, "forged");
        s.attack_snapshot(
            target,
            STRANGER,
            &snapshot_msg(STRANGER, target, term + 1, last + 100, data.clone()),
        );
        // From a member that does not lead this term.
        let other = s.bystander(target);
        s.attack_snapshot(
            target,
            other,
            &snapshot_msg(other, target, term, last + 100, data),
        );
        // From a member at a higher term, with a member list that lacks its voters.
        let lacking = forged_state(&[(STRANGER, "http://127.0.0.1:1".into())], "forged");
        s.attack_snapshot(
            target,
            other,
            &snapshot_msg(other, target, term + 1, last + 100, lacking),
        );
        // A joint membership raft-rs cannot restore.
        let mut joint = snapshot_msg(
            other,
            target,
            term + 1,
            last + 100,
            forged_state(&members, "forged"),
        );
        joint
            .mut_snapshot()
            .mut_metadata()
            .mut_conf_state()
            .voters_outgoing = vec![1, 2, 3];
        s.attack_snapshot(target, other, &joint);
    }
    s.check_intact(&["forged"]);
    s.restart_and_check(&["forged"]);
}

/// Item 2: a heartbeat with term 2^64-1 (and one far beyond any election).
fn a_heartbeat_at_the_last_term_is_refused(security: Security) {
    let mut s = Setup::new(security);
    for target in s.c.ids() {
        let (term, _) = s.term_and_last(target);
        let member = if target == s.leader {
            s.bystander(target)
        } else {
            s.leader
        };
        for from in [STRANGER, member] {
            let msgs: Vec<Message> = [u64::MAX, u64::MAX - 1, term + (1 << 21)]
                .into_iter()
                .map(|t| msg(MessageType::MsgHeartbeat, from, target, t))
                .collect();
            s.attack(target, from, &msgs);
            // A vote request at the last term, too.
            let mut vote = msg(MessageType::MsgRequestVote, from, target, u64::MAX);
            vote.index = u64::MAX;
            vote.log_term = u64::MAX;
            s.attack(target, from, &[vote]);
        }
    }
    s.check_intact(&[]);
    s.restart_and_check(&[]);
}

/// Item 3: a heartbeat whose commit index is past the follower's log.
fn a_heartbeat_commit_past_the_log_is_refused(security: Security) {
    let mut s = Setup::new(security);
    for target in s.followers() {
        let (term, last) = s.term_and_last(target);
        for from in [STRANGER, s.leader] {
            let msgs: Vec<Message> = [last + 1, last + 1000, u64::MAX]
                .into_iter()
                .map(|commit| {
                    let mut m = msg(MessageType::MsgHeartbeat, from, target, term);
                    m.commit = commit;
                    m
                })
                .collect();
            s.attack(target, from, &msgs);
        }
    }
    s.check_intact(&[]);
}

/// Item 4: an append carrying the attacker's write, committed at once.
fn a_forged_append_is_not_applied(security: Security) {
    let mut s = Setup::new(security);
    for target in s.followers() {
        let (term, last) = s.term_and_last(target);
        let append = |from: u64, term: u64, entries: Vec<Entry>| {
            let mut m = msg(MessageType::MsgAppend, from, target, term);
            m.index = last;
            m.log_term = s.term;
            m.commit = last + 1;
            m.set_entries(entries.into());
            m
        };
        let bogus = |index, term| put_entry(index, term, "forged", b"attacker".to_vec());
        // From a non-member at a higher term: the probe's attack as found.
        s.attack(
            target,
            STRANGER,
            &[append(STRANGER, term + 1, vec![bogus(last + 1, term + 1)])],
        );
        // From a member that does not lead this term.
        let other = s.bystander(target);
        s.attack(
            target,
            other,
            &[append(other, term, vec![bogus(last + 1, term)])],
        );
        // "From the leader", with what no leader sends: an entry of a later term than the
        // message, an entry that does not follow the anchor, an anchor of term 0.
        let leader = s.leader;
        let mut zero_anchor = append(leader, term, vec![bogus(last + 1, term)]);
        zero_anchor.log_term = 0;
        s.attack(
            target,
            leader,
            &[
                append(leader, term, vec![bogus(last + 1, term + 5)]),
                append(leader, term, vec![bogus(last + 2, term)]),
                append(
                    leader,
                    term,
                    vec![bogus(last + 1, term), bogus(last + 1, term)],
                ),
                zero_anchor,
            ],
        );
    }
    s.check_intact(&["forged"]);
}

/// Item 5: a snapshot whose data is not a state machine.
fn a_malformed_snapshot_is_refused_before_it_is_durable(security: Security) {
    let mut s = Setup::new(security);
    let members = real_members(&s);
    let valid = forged_state(&members, "forged");
    let garbage: Vec<Bytes> = vec![
        Bytes::from_static(b"not a snapshot at all"),
        Bytes::from_static(b"KVS3\xff\xff\xff\xff"),
        valid.slice(..valid.len() - 3),
        Bytes::new(),
    ];
    for target in s.c.ids() {
        let (term, last) = s.term_and_last(target);
        let member = if target == s.leader {
            s.bystander(target)
        } else {
            s.leader
        };
        for data in &garbage {
            s.attack_snapshot(
                target,
                STRANGER,
                &snapshot_msg(STRANGER, target, term + 1, last + 50, data.clone()),
            );
            // From the leader (or a member at a higher term, to the leader).
            let t = if member == s.leader { term } else { term + 1 };
            s.attack_snapshot(
                target,
                member,
                &snapshot_msg(member, target, t, last + 50, data.clone()),
            );
        }
    }
    s.check_intact(&["forged"]);
    s.restart_and_check(&["forged"]);
}

fn propose(from: u64, to: u64, entries: Vec<Entry>) -> Message {
    let mut m = msg(MessageType::MsgPropose, from, to, 0);
    m.set_entries(entries.into());
    m
}

fn conf_change_entry(proposer: u64, kind: EntryType) -> Entry {
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddNode);
    cc.node_id = 42;
    cc.context = Bytes::from_static(b"http://127.0.0.1:1");
    let mut e = Entry {
        data: cc.write_to_bytes().unwrap().into(),
        context: context(proposer),
        ..Default::default()
    };
    e.set_entry_type(kind);
    e
}

/// Item 6: proposals that skip the HTTP checks (a 5 MiB value, a new voter 42).
fn forged_proposals_are_refused(security: Security) {
    let mut s = Setup::new(security);
    let big = || put_entry(0, 0, "big", vec![b'x'; 5 << 20]);
    for target in s.c.ids() {
        let claimed = if target == s.leader {
            s.followers()[0]
        } else {
            s.bystander(target)
        };
        for from in [STRANGER, claimed] {
            let mut huge = big();
            huge.context = context(from);
            let mut forged = put_entry(0, 0, "forged", b"attacker".to_vec());
            // Proposed "by" someone other than the sender.
            forged.context = context(STRANGER - 1);
            let mut garbage = put_entry(0, 0, "forged", Vec::new());
            garbage.data = Bytes::from_static(&[0xee, 1, 2, 3]);
            garbage.context = context(from);
            let mut misnamed = conf_change_entry(STRANGER - 1, EntryType::EntryConfChange);
            misnamed.context = context(STRANGER - 1);
            s.attack(
                target,
                from,
                &[
                    propose(from, target, vec![huge]),
                    propose(from, target, vec![forged]),
                    propose(from, target, vec![garbage]),
                    propose(from, target, vec![misnamed]),
                    propose(
                        from,
                        target,
                        vec![conf_change_entry(from, EntryType::EntryConfChangeV2)],
                    ),
                    propose(from, target, Vec::new()),
                ],
            );
        }
        // A removal of the leader, forwarded "by" a follower.
        if target == s.leader {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::RemoveNode);
            cc.node_id = s.leader;
            let mut e = Entry {
                data: cc.write_to_bytes().unwrap().into(),
                context: context(claimed),
                ..Default::default()
            };
            e.set_entry_type(EntryType::EntryConfChange);
            s.attack(target, claimed, &[propose(claimed, target, vec![e])]);
        }
    }
    s.check_intact(&["forged", "big"]);
    let members = s.c.get(s.leader, "v1/members").unwrap();
    assert!(
        !String::from_utf8_lossy(&members.1).contains("\"id\":42"),
        "node 42 was added: {}",
        String::from_utf8_lossy(&members.1)
    );
}

/// Item 7: heartbeats from a non-member (followers would adopt it as leader) and elections
/// forced at will with MsgTimeoutNow.
fn strangers_cannot_lead_or_force_elections(security: Security) {
    let mut s = Setup::new(security);
    for target in s.followers() {
        let (term, last) = s.term_and_last(target);
        let other = s.bystander(target);
        for from in [STRANGER, other] {
            let mut hb = msg(MessageType::MsgHeartbeat, from, target, term);
            hb.commit = last;
            let timeouts: Vec<Message> = (0..20)
                .map(|_| msg(MessageType::MsgTimeoutNow, from, target, term))
                .collect();
            s.attack(target, from, &[hb.clone(), hb.clone(), hb]);
            s.attack(target, from, &timeouts);
            let status = s.c.status(target);
            if field(&status, "leader") != s.leader {
                s.c.fail(&format!("node {target} follows another leader: {status}"));
            }
        }
        // A timeout "from the leader" at another term.
        let stale: Vec<Message> = [term + 1, term.saturating_sub(1)]
            .into_iter()
            .map(|t| msg(MessageType::MsgTimeoutNow, s.leader, target, t))
            .collect();
        s.attack(target, s.leader, &stale);
    }
    s.check_intact(&[]);
    let term = field(&s.c.status(s.leader), "term");
    assert!(
        term <= s.term + 2,
        "the term went from {} to {term}",
        s.term
    );
}
