//! One test per rule of the guard, and a property test: random hostile messages, through the
//! guard, into a real `RawNode` that is a member of a 3-voter cluster — it must never panic.

use super::*;
use raft::eraftpb::{ConfChange, ConfChangeType, Snapshot};

const VOTERS: [u64; 3] = [1, 2, 3];
const LEARNERS: [u64; 1] = [4];

/// Node 1 follows node 2 at term 5; its log ends at 10, committed 8.
fn view() -> PeerView<'static> {
    PeerView {
        id: 1,
        term: 5,
        last_index: 10,
        committed: 8,
        leader: 2,
        is_leader: false,
        voters: &VOTERS,
        learners: &LEARNERS,
        initialized: true,
        cluster_ids: &VOTERS,
    }
}

fn leader_view() -> PeerView<'static> {
    PeerView {
        leader: 1,
        is_leader: true,
        ..view()
    }
}

fn msg(kind: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.to = 1;
    m.from = from;
    m.term = term;
    m
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Default::default()
    }
}

fn append() -> Message {
    let mut m = msg(MessageType::MsgAppend, 2, 5);
    m.index = 10;
    m.log_term = 5;
    m.commit = 11;
    m.set_entries(vec![entry(11, 5), entry(12, 5)].into());
    m
}

fn snapshot_msg(voters: Vec<u64>) -> Message {
    let mut m = msg(MessageType::MsgSnapshot, 2, 5);
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 20;
    snap.mut_metadata().term = 5;
    snap.mut_metadata().mut_conf_state().voters = voters;
    m.set_snapshot(snap);
    m
}

fn ok(v: &PeerView, m: &Message) {
    assert_eq!(check_peer_message(v, m), Ok(()), "{m:?}");
}

fn refused(v: &PeerView, m: &Message) -> Refusal {
    match check_peer_message(v, m) {
        Err(r) => r,
        Ok(()) => panic!("accepted {m:?}"),
    }
}

#[test]
fn local_only_kinds_are_refused() {
    for kind in [
        MessageType::MsgHup,
        MessageType::MsgBeat,
        MessageType::MsgUnreachable,
        MessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum,
    ] {
        assert_eq!(refused(&view(), &msg(kind, 2, 5)), Refusal::Kind(kind));
    }
}

#[test]
fn only_current_members_other_than_self_may_send() {
    let mut hb = msg(MessageType::MsgHeartbeat, 2, 5);
    ok(&view(), &hb);
    for from in [0, 1, 99, u64::MAX] {
        hb.from = from;
        assert_eq!(refused(&view(), &hb), Refusal::NotMember(from));
    }
    // A learner is a member (it answers heartbeats, it may forward proposals).
    let resp = msg(MessageType::MsgHeartbeatResponse, 4, 5);
    ok(&leader_view(), &resp);
    // Addressed to someone else.
    let mut other = msg(MessageType::MsgHeartbeat, 2, 5);
    other.to = 3;
    assert_eq!(refused(&view(), &other), Refusal::WrongRecipient(3));
}

#[test]
fn an_uninitialized_node_hears_only_the_cluster_ids() {
    let joining = PeerView {
        term: 0,
        last_index: 0,
        committed: 0,
        leader: 0,
        voters: &[],
        learners: &[],
        initialized: false,
        cluster_ids: &[1, 2, 3, 4],
        ..view()
    };
    // Any term of the cluster: the joining node has none yet.
    let mut hb = msg(MessageType::MsgHeartbeat, 2, 5_000_000);
    ok(&joining, &hb);
    hb.from = 99;
    assert_eq!(refused(&joining, &hb), Refusal::NotMember(99));
    // Still under the ceiling.
    hb.from = 2;
    hb.term = MAX_TERM + 1;
    assert!(matches!(refused(&joining, &hb), Refusal::Term { .. }));
}

#[test]
fn terms_that_wrap_jump_or_are_missing_are_refused() {
    let mut hb = msg(MessageType::MsgHeartbeat, 2, 6);
    ok(&view(), &hb);
    hb.term = 5 + MAX_TERM_JUMP;
    ok(&view(), &hb);
    for term in [0, 6 + MAX_TERM_JUMP, MAX_TERM, u64::MAX - 1, u64::MAX] {
        hb.term = term;
        assert!(
            matches!(refused(&view(), &hb), Refusal::Term { .. }),
            "{term}"
        );
    }
    // Forwarded kinds carry no term at all.
    let mut prop = msg(MessageType::MsgPropose, 2, 5);
    prop.set_entries(vec![entry(0, 0)].into());
    assert_eq!(
        refused(&leader_view(), &prop),
        Refusal::TermOnForward(MessageType::MsgPropose)
    );
    // The term a message reports for a log position never exceeds its own.
    let mut vote = msg(MessageType::MsgRequestVote, 3, 6);
    vote.log_term = 6;
    ok(&view(), &vote);
    vote.log_term = 7;
    assert_eq!(refused(&view(), &vote), Refusal::Range("log_term"));
    vote.log_term = 5;
    vote.commit_term = 7;
    assert_eq!(refused(&view(), &vote), Refusal::Range("log_term"));
}

#[test]
fn one_leader_per_term() {
    // Node 3 cannot lead term 5: node 2 does.
    let mut hb = msg(MessageType::MsgHeartbeat, 3, 5);
    assert!(matches!(
        refused(&view(), &hb),
        Refusal::SecondLeader { leader: 2, .. }
    ));
    let mut app = append();
    app.from = 3;
    assert!(matches!(
        refused(&view(), &app),
        Refusal::SecondLeader { .. }
    ));
    let mut snap = snapshot_msg(vec![1, 2, 3]);
    snap.from = 3;
    assert!(matches!(
        refused(&view(), &snap),
        Refusal::SecondLeader { .. }
    ));
    // This node leads term 5 itself.
    hb.from = 2;
    assert!(matches!(
        refused(&leader_view(), &hb),
        Refusal::SecondLeader { .. }
    ));
    // A higher term may have a new leader; no known leader: anyone may have won.
    hb.term = 6;
    hb.from = 3;
    ok(&view(), &hb);
    hb.term = 5;
    ok(
        &PeerView {
            leader: 0,
            ..view()
        },
        &hb,
    );
}

#[test]
fn a_heartbeat_commit_never_passes_the_log() {
    let mut hb = msg(MessageType::MsgHeartbeat, 2, 5);
    hb.commit = 10;
    ok(&view(), &hb);
    hb.commit = 11;
    assert!(matches!(refused(&view(), &hb), Refusal::PastLog { .. }));
    hb.commit = u64::MAX;
    assert!(matches!(refused(&view(), &hb), Refusal::Range("commit")));
}

#[test]
fn append_entries_follow_their_anchor() {
    ok(&view(), &append());
    // A gap, a repeat, an overflow.
    for bad in [
        vec![entry(12, 5)],
        vec![entry(11, 5), entry(11, 5)],
        vec![entry(11, 5), entry(13, 5)],
    ] {
        let mut m = append();
        m.set_entries(bad.into());
        assert_eq!(refused(&view(), &m), Refusal::Entries(10));
    }
    // Terms: never above the message's, never going down, never below the anchor's.
    for bad in [
        vec![entry(11, 6)],
        vec![entry(11, 5), entry(12, 4)],
        vec![entry(11, 3)],
    ] {
        let mut m = append();
        m.log_term = 4;
        m.set_entries(bad.into());
        assert_eq!(refused(&view(), &m), Refusal::Entries(10), "{m:?}");
    }
    // The anchor: index ≥ 1, term ≥ 1, ≤ the message's term.
    let mut m = append();
    m.index = 0;
    m.set_entries(vec![entry(1, 5)].into());
    assert_eq!(refused(&view(), &m), Refusal::Range("append anchor"));
    let mut m = append();
    m.log_term = 0;
    assert_eq!(refused(&view(), &m), Refusal::Range("append anchor"));
    let mut m = append();
    m.index = MAX_INDEX + 1;
    assert_eq!(refused(&view(), &m), Refusal::Range("index"));
    // A leader's commit may be ahead of this follower's log (raft-rs caps it).
    let mut m = append();
    m.commit = 1000;
    ok(&view(), &m);
}

#[test]
fn append_responses_stay_within_the_log() {
    let mut r = msg(MessageType::MsgAppendResponse, 2, 5);
    r.index = 10;
    ok(&leader_view(), &r);
    r.index = 11;
    assert!(matches!(
        refused(&leader_view(), &r),
        Refusal::PastLog { .. }
    ));
    r.index = 5;
    r.reject = true;
    r.reject_hint = 11;
    assert!(matches!(
        refused(&leader_view(), &r),
        Refusal::PastLog { .. }
    ));
    r.reject_hint = 4;
    r.request_snapshot = 4;
    assert_eq!(
        refused(&leader_view(), &r),
        Refusal::Range("request_snapshot")
    );
}

#[test]
fn snapshot_metadata_must_be_restorable_and_name_this_node() {
    ok(&view(), &snapshot_msg(vec![1, 2, 3]));
    let mut none = snapshot_msg(vec![1, 2, 3]);
    none.snapshot = Default::default();
    assert!(matches!(refused(&view(), &none), Refusal::Snapshot(_)));
    let mut m = snapshot_msg(vec![1, 2, 3]);
    m.mut_snapshot().mut_metadata().index = 0;
    assert!(matches!(refused(&view(), &m), Refusal::Snapshot(_)));
    let mut m = snapshot_msg(vec![1, 2, 3]);
    m.mut_snapshot().mut_metadata().term = 6;
    assert!(matches!(refused(&view(), &m), Refusal::Snapshot(_)));
    for voters in [vec![], vec![2, 3], vec![0, 1, 2], vec![1, 2, 2]] {
        let m = snapshot_msg(voters);
        assert!(matches!(refused(&view(), &m), Refusal::Snapshot(_)));
    }
    let mut m = snapshot_msg(vec![1, 2, 3]);
    m.mut_snapshot().mut_metadata().mut_conf_state().learners = vec![3];
    assert!(matches!(refused(&view(), &m), Refusal::Snapshot(_)));
    let mut m = snapshot_msg(vec![1, 2, 3]);
    m.mut_snapshot()
        .mut_metadata()
        .mut_conf_state()
        .voters_outgoing = vec![1, 2];
    assert!(matches!(refused(&view(), &m), Refusal::Snapshot(_)));
    // A learner receiving its first snapshot.
    let cs = ConfState {
        voters: vec![2, 3],
        learners: vec![1],
        ..Default::default()
    };
    assert_eq!(check_conf_state(&cs, 1), Ok(()));
}

#[test]
fn leadership_transfers_follow_the_protocol() {
    // TimeoutNow only from this node's leader, at its term.
    ok(&view(), &msg(MessageType::MsgTimeoutNow, 2, 5));
    for (from, term) in [(3, 5), (2, 6), (2, 4)] {
        let m = msg(MessageType::MsgTimeoutNow, from, term);
        assert!(matches!(refused(&view(), &m), Refusal::NotFromLeader(_)));
    }
    assert!(matches!(
        refused(&leader_view(), &msg(MessageType::MsgTimeoutNow, 2, 5)),
        Refusal::NotFromLeader(_)
    ));
    // TransferLeader only to the leader, from a voter (the transferee), at its term.
    let t = msg(MessageType::MsgTransferLeader, 3, 5);
    ok(&leader_view(), &t);
    assert!(matches!(refused(&view(), &t), Refusal::NotLeader(_)));
    for m in [
        msg(MessageType::MsgTransferLeader, 4, 5),
        msg(MessageType::MsgTransferLeader, 3, 6),
    ] {
        assert!(matches!(
            refused(&leader_view(), &m),
            Refusal::NotFromLeader(_)
        ));
    }
}

#[test]
fn reads_and_proposals_go_to_the_leader_with_entries() {
    let mut read = msg(MessageType::MsgReadIndex, 2, 0);
    read.set_entries(vec![entry(0, 0)].into());
    ok(&leader_view(), &read);
    assert!(matches!(refused(&view(), &read), Refusal::NotLeader(_)));
    read.set_entries(Vec::new().into());
    assert!(matches!(refused(&leader_view(), &read), Refusal::Range(_)));

    let mut resp = msg(MessageType::MsgReadIndexResp, 2, 5);
    resp.index = 8;
    resp.set_entries(vec![entry(0, 0)].into());
    ok(&view(), &resp);
    resp.from = 3;
    assert!(matches!(refused(&view(), &resp), Refusal::NotFromLeader(_)));
    resp.from = 2;
    resp.set_entries(Vec::new().into());
    assert!(matches!(refused(&view(), &resp), Refusal::Range(_)));

    let mut prop = msg(MessageType::MsgPropose, 2, 0);
    prop.set_entries(vec![entry(0, 0)].into());
    ok(&leader_view(), &prop);
    assert!(matches!(refused(&view(), &prop), Refusal::NotLeader(_)));
    prop.set_entries(Vec::new().into());
    assert!(matches!(
        refused(&leader_view(), &prop),
        Refusal::Proposal(_)
    ));
}

#[test]
fn priorities_are_never_set() {
    let mut vote = msg(MessageType::MsgRequestVote, 3, 6);
    vote.priority = 5;
    assert_eq!(refused(&view(), &vote), Refusal::Range("priority"));
    vote.priority = 0;
    vote.deprecated_priority = 5;
    assert_eq!(refused(&view(), &vote), Refusal::Range("priority"));
}

fn ctx(proposer: u64) -> Bytes {
    let mut c = proposer.to_le_bytes().to_vec();
    c.extend_from_slice(&[7; 16]);
    c.into()
}

fn proposal(data: &'static [u8], proposer: u64) -> Entry {
    Entry {
        data: Bytes::from_static(data),
        context: ctx(proposer),
        ..Default::default()
    }
}

/// A stand-in for the state machine's check: commands of up to 10 bytes are valid.
fn at_most_ten_bytes(command: &Bytes) -> Result<(), String> {
    match command.len() {
        0 => Err("empty".into()),
        n if n > 10 => Err(format!("{n} bytes")),
        _ => Ok(()),
    }
}

#[test]
fn forwarded_commands_are_proposed_by_the_sender_and_pass_the_state_machines_check() {
    let check = |e: &Entry, from| check_proposal_entry(e, from, at_most_ten_bytes);
    let small = proposal(b"put k v", 2);
    assert_eq!(check(&small, 2), Ok(()));
    // Proposed by someone else, or with a context of the wrong size.
    assert!(check(&proposal(b"put k v", 3), 2).is_err());
    let mut short = small.clone();
    short.context = Bytes::from_static(&[2, 0, 0, 0, 0, 0, 0, 0]);
    assert!(check(&short, 2).is_err());
    // The state machine's verdict decides for commands.
    assert!(check(&proposal(b"put k 12345678", 2), 2).is_err());
    assert!(check(&proposal(b"", 2), 2).is_err());
    // Membership: v1 goes on to the node's check, joint changes never.
    let mut cc = small.clone();
    cc.set_entry_type(EntryType::EntryConfChange);
    assert_eq!(check(&cc, 2), Ok(()));
    cc.set_entry_type(EntryType::EntryConfChangeV2);
    assert!(check(&cc, 2).is_err());
}

#[test]
fn refusal_lines_are_rate_limited() {
    let mut log = RefusalLog::default();
    let t = Instant::now();
    assert_eq!(log.note(t), Some(0));
    assert_eq!(log.note(t), None);
    assert_eq!(log.note(t + Duration::from_millis(10)), None);
    assert_eq!(log.note(t + REFUSAL_LOG_INTERVAL), Some(2));
    assert_eq!(log.note(t + REFUSAL_LOG_INTERVAL), None);
}

fn origin(node: u64, incarnation: u64, seq: u64) -> Origin {
    Origin {
        node,
        incarnation,
        seq,
    }
}

#[test]
fn a_forwarded_proposal_is_taken_once() {
    let mut seen = ForwardedSeen::default();
    assert_eq!(seen.take(&[origin(2, 7, 1), origin(2, 7, 2)]), Ok(()));
    // A copy of that message, or of one of its entries, or an older one of the same run.
    assert_eq!(
        seen.take(&[origin(2, 7, 1), origin(2, 7, 2)]),
        Err(Refusal::Duplicate)
    );
    assert_eq!(seen.take(&[origin(2, 7, 2)]), Err(Refusal::Duplicate));
    assert_eq!(seen.take(&[origin(2, 7, 1)]), Err(Refusal::Duplicate));
    // A refused message takes nothing: what follows it is still new.
    assert_eq!(seen.take(&[origin(2, 7, 3)]), Ok(()));
    // Entries out of order within a message are not a run's proposals in sequence.
    assert_eq!(
        seen.take(&[origin(2, 7, 5), origin(2, 7, 4)]),
        Err(Refusal::Duplicate)
    );
    assert_eq!(seen.take(&[origin(2, 7, 4), origin(2, 7, 5)]), Ok(()));
    // Other senders, and other runs of the same one, count on their own.
    assert_eq!(seen.take(&[origin(3, 7, 1)]), Ok(()));
    assert_eq!(seen.take(&[origin(2, 8, 1)]), Ok(()));
}

#[test]
fn runs_are_told_apart_but_never_ordered_by_incarnation() {
    let mut seen = ForwardedSeen::default();
    assert_eq!(seen.take(&[origin(2, 100, 9)]), Ok(()));
    // A run whose clock stepped back still gets its proposals through.
    assert_eq!(seen.take(&[origin(2, 50, 1)]), Ok(()));
    // A late copy from the earlier run is still recognized.
    assert_eq!(seen.take(&[origin(2, 100, 9)]), Err(Refusal::Duplicate));
    assert_eq!(seen.take(&[origin(2, 100, 10)]), Ok(()));
    // Only the last few runs are kept: the oldest is forgotten.
    for inc in 1..=RUNS_KEPT as u64 {
        assert_eq!(seen.take(&[origin(2, inc, 1)]), Ok(()));
    }
    assert_eq!(seen.take(&[origin(2, 100, 10)]), Ok(()));
}

mod hostile {
    //! The property: whatever arrives, a message the guard lets through never makes raft-rs
    //! panic, in any role, through any number of ready/advance cycles.

    use super::*;
    use proptest::prelude::*;
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, StateRole};

    /// A value chosen relative to the node's state when the message is built, so that many
    /// messages come close to passing, plus extremes.
    #[derive(Clone, Debug)]
    enum Num {
        Term(i64),
        Last(i64),
        Commit(i64),
        Abs(u64),
    }

    fn num() -> impl Strategy<Value = Num> {
        prop_oneof![
            3 => (-2i64..=3).prop_map(Num::Term),
            3 => (-3i64..=3).prop_map(Num::Last),
            3 => (-3i64..=3).prop_map(Num::Commit),
            2 => prop_oneof![
                Just(0u64),
                Just(1),
                Just(MAX_TERM_JUMP),
                Just(MAX_INDEX),
                Just(MAX_INDEX + 1),
                Just(u64::MAX - 1),
                Just(u64::MAX),
                any::<u64>(),
            ]
            .prop_map(Num::Abs),
        ]
    }

    /// A term reported for a log position: mostly at or below the node's term.
    fn log_term() -> impl Strategy<Value = Num> {
        prop_oneof![4 => (-3i64..=0).prop_map(Num::Term), 1 => num()]
    }

    fn resolve(n: &Num, term: u64, last: u64, commit: u64) -> u64 {
        let rel = |base: u64, d: i64| base.saturating_add_signed(d);
        match *n {
            Num::Term(d) => rel(term, d),
            Num::Last(d) => rel(last, d),
            Num::Commit(d) => rel(commit, d),
            Num::Abs(v) => v,
        }
    }

    #[derive(Clone, Debug)]
    struct EntrySpec {
        index: Num,
        term: Num,
        kind: u8,
        data: Vec<u8>,
        command: bool,
    }

    #[derive(Clone, Debug)]
    struct SnapSpec {
        index: Num,
        term: Num,
        voters: Vec<u64>,
        learners: Vec<u64>,
        outgoing: Vec<u64>,
    }

    #[derive(Clone, Debug)]
    struct MsgSpec {
        kind: i32,
        from: u64,
        to: u64,
        term: Num,
        log_term: Num,
        index: Num,
        commit: Num,
        commit_term: Num,
        reject_hint: Num,
        reject: bool,
        request_snapshot: u64,
        entries: Vec<EntrySpec>,
        /// Rewrite the entries to follow the anchor (so appends often pass the guard).
        contiguous: bool,
        snapshot: Option<SnapSpec>,
        context: Vec<u8>,
        ticks: u8,
    }

    fn ids() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(prop_oneof![Just(0u64), 1u64..=4, Just(99)], 0..4)
    }

    fn entry_spec() -> impl Strategy<Value = EntrySpec> {
        (
            num(),
            num(),
            0u8..3,
            proptest::collection::vec(any::<u8>(), 0..12),
            any::<bool>(),
        )
            .prop_map(|(index, term, kind, data, command)| EntrySpec {
                index,
                term,
                kind,
                data,
                command,
            })
    }

    fn snap_spec() -> impl Strategy<Value = SnapSpec> {
        let plausible = (num(), log_term()).prop_map(|(index, term)| SnapSpec {
            index,
            term,
            voters: VOTERS.to_vec(),
            learners: Vec::new(),
            outgoing: Vec::new(),
        });
        let random = (num(), num(), ids(), ids(), ids()).prop_map(
            |(index, term, voters, learners, outgoing)| SnapSpec {
                index,
                term,
                voters,
                learners,
                outgoing,
            },
        );
        prop_oneof![plausible, random]
    }

    fn msg_spec() -> impl Strategy<Value = MsgSpec> {
        // Any kind, with the leader's kinds (append, snapshot, heartbeat, timeout) and the
        // forwarded ones (propose, read index) drawn more often.
        let kind = prop_oneof![
            1 => 0i32..19,
            1 => proptest::sample::select(vec![2, 3, 7, 8, 14, 15, 16]),
        ];
        let head = (
            kind,
            prop_oneof![1 => Just(0u64), 6 => 2u64..=4, 1 => Just(1), 1 => Just(99), 1 => Just(u64::MAX)],
            prop_oneof![6 => Just(1u64), 1 => Just(2u64)],
            num(),
            log_term(),
            num(),
            num(),
            log_term(),
        );
        let tail = (
            num(),
            any::<bool>(),
            prop_oneof![8 => Just(0u64), 1 => any::<u64>()],
            proptest::collection::vec(entry_spec(), 0..4),
            any::<bool>(),
            proptest::option::of(snap_spec()),
            proptest::collection::vec(any::<u8>(), 0..4),
            0u8..4,
        );
        (head, tail).prop_map(
            |(
                (kind, from, to, term, log_term, index, commit, commit_term),
                (
                    reject_hint,
                    reject,
                    request_snapshot,
                    entries,
                    contiguous,
                    snapshot,
                    context,
                    ticks,
                ),
            )| MsgSpec {
                kind,
                from,
                to,
                term,
                log_term,
                index,
                commit,
                commit_term,
                reject_hint,
                reject,
                request_snapshot,
                entries,
                contiguous,
                snapshot,
                context,
                ticks,
            },
        )
    }

    fn build(spec: &MsgSpec, raw: &RawNode<MemStorage>) -> Message {
        let mut m = build_fields(spec, raw);
        // Kinds raft-rs forwards carry no term: mostly send them so.
        if spec.ticks > 0
            && matches!(
                m.get_msg_type(),
                MessageType::MsgPropose | MessageType::MsgReadIndex
            )
        {
            m.term = 0;
            m.log_term = 0;
            m.commit_term = 0;
        }
        m
    }

    fn build_fields(spec: &MsgSpec, raw: &RawNode<MemStorage>) -> Message {
        let r = &raw.raft;
        let (t, l, c) = (r.term, r.raft_log.last_index(), r.raft_log.committed);
        let at = |n: &Num| resolve(n, t, l, c);
        let mut m = Message::default();
        m.set_msg_type(
            <MessageType as protobuf::ProtobufEnum>::from_i32(spec.kind)
                .unwrap_or(MessageType::MsgHeartbeat),
        );
        m.from = spec.from;
        m.to = spec.to;
        m.term = at(&spec.term);
        m.log_term = at(&spec.log_term);
        m.index = at(&spec.index);
        m.commit = at(&spec.commit);
        m.commit_term = at(&spec.commit_term);
        m.reject_hint = at(&spec.reject_hint);
        m.reject = spec.reject;
        m.request_snapshot = spec.request_snapshot;
        m.context = spec.context.clone().into();
        let entries: Vec<Entry> = spec
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut out = Entry {
                    index: at(&e.index),
                    term: at(&e.term),
                    data: e.data.clone().into(),
                    context: ctx(spec.from),
                    ..Default::default()
                };
                if spec.contiguous {
                    out.index = m.index.saturating_add(1 + i as u64);
                    out.term = m.term;
                }
                out.set_entry_type(match e.kind {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    _ => EntryType::EntryConfChangeV2,
                });
                if e.command {
                    out.data = match e.kind {
                        0 => e.data.clone().into(),
                        _ => {
                            let mut cc = ConfChange::default();
                            cc.set_change_type(ConfChangeType::AddNode);
                            cc.node_id = e.data.first().map_or(5, |&b| u64::from(b));
                            protobuf::Message::write_to_bytes(&cc).unwrap().into()
                        }
                    };
                }
                out
            })
            .collect();
        m.set_entries(entries.into());
        if let Some(s) = &spec.snapshot {
            let mut snap = Snapshot::default();
            let meta = snap.mut_metadata();
            meta.index = at(&s.index);
            meta.term = at(&s.term);
            let cs = meta.mut_conf_state();
            cs.voters = s.voters.clone();
            cs.learners = s.learners.clone();
            cs.voters_outgoing = s.outgoing.clone();
            snap.data = Bytes::from_static(b"state");
            m.set_snapshot(snap);
        }
        m
    }

    /// Node 1 of voters {1, 2, 3}, from the bootstrap snapshot (index 1, term 1) plus a few
    /// entries, in the given role; or (role 3) a `--join` node with no state yet.
    fn node(role: u8) -> RawNode<MemStorage> {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        if role == 3 {
            let cfg = Config {
                id: 1,
                check_quorum: true,
                pre_vote: true,
                ..Default::default()
            };
            return RawNode::new(&cfg, MemStorage::new(), &logger).unwrap();
        }
        let store = MemStorage::new();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 1;
        snap.mut_metadata().term = 1;
        snap.mut_metadata().mut_conf_state().voters = VOTERS.to_vec();
        store.wl().apply_snapshot(snap).unwrap();
        let ents: Vec<Entry> = (2..=5).map(|i| entry(i, 2)).collect();
        store.wl().append(&ents).unwrap();
        let mut hs = store.wl().hard_state().clone();
        hs.term = 2;
        hs.commit = 4;
        store.wl().set_hardstate(hs);
        let cfg = Config {
            id: 1,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 1,
            check_quorum: true,
            pre_vote: true,
            max_inflight_msgs: 4,
            ..Default::default()
        };
        let mut raw = RawNode::new(&cfg, store, &logger).unwrap();
        match role {
            // Follower of node 2.
            0 => {
                let mut hb = msg(MessageType::MsgHeartbeat, 2, 2);
                hb.commit = 4;
                raw.step(hb).unwrap();
            }
            // Pre-candidate, or leader after winning both rounds.
            _ => {
                raw.campaign().unwrap();
                if role == 2 {
                    let mut pre = msg(MessageType::MsgRequestPreVoteResponse, 2, 3);
                    pre.reject = false;
                    raw.step(pre).unwrap();
                    raw.step(msg(MessageType::MsgRequestVoteResponse, 2, 3))
                        .unwrap();
                    assert_eq!(raw.raft.state, StateRole::Leader);
                }
            }
        }
        drive(&mut raw);
        raw
    }

    /// Runs ready/advance cycles as the node loop does (storage is memory: durable at once).
    fn drive(raw: &mut RawNode<MemStorage>) {
        for _ in 0..8 {
            if !raw.has_ready() {
                return;
            }
            let mut rd = raw.ready();
            if !rd.snapshot().is_empty() {
                let _ = raw.store().wl().apply_snapshot(rd.snapshot().clone());
            }
            let _ = raw.store().wl().append(rd.entries());
            if let Some(hs) = rd.hs() {
                raw.store().wl().set_hardstate(hs.clone());
            }
            let _ = rd.take_committed_entries();
            let mut light = raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                raw.store().wl().mut_hard_state().commit = commit;
            }
            let _ = light.take_committed_entries();
            raw.advance_apply();
        }
    }

    fn view_of(raw: &RawNode<MemStorage>) -> (u64, u64, u64, u64, bool, Vec<u64>, Vec<u64>) {
        let r = &raw.raft;
        let conf = r.prs().conf();
        (
            r.term,
            r.raft_log.last_index(),
            r.raft_log.committed,
            r.leader_id,
            r.state == StateRole::Leader,
            conf.voters().ids().iter().collect(),
            conf.learners().iter().copied().collect(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn no_hostile_message_panics_raft(
            role in 0u8..4,
            specs in proptest::collection::vec(msg_spec(), 1..16),
        ) {
            let mut raw = node(role);
            for spec in &specs {
                let m = build(spec, &raw);
                let (term, last_index, committed, leader, is_leader, voters, learners) =
                    view_of(&raw);
                let view = PeerView {
                    id: 1,
                    term,
                    last_index,
                    committed,
                    leader,
                    is_leader,
                    voters: &voters,
                    learners: &learners,
                    initialized: !voters.is_empty() || !learners.is_empty(),
                    cluster_ids: &[1, 2, 3, 4],
                };
                let mut verdict = check_peer_message(&view, &m);
                if verdict.is_ok() && m.get_msg_type() == MessageType::MsgPropose {
                    verdict = m
                        .entries
                        .iter()
                        .try_for_each(|e| {
                            check_proposal_entry(e, m.from, |_| Ok::<(), String>(()))
                        });
                }
                if verdict.is_ok() {
                    let _ = raw.step(m);
                }
                for _ in 0..spec.ticks {
                    raw.tick();
                }
                drive(&mut raw);
                prop_assert!(raw.raft.term <= MAX_TERM);
            }
        }
    }
}
