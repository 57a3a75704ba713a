//! The snapshot: the whole state restored (history, leases, alarms, members, compaction
//! point), serialized in steps while commands apply, the bytes of versions 2 and 3 pinned, versions
//! 1 (both forms) and 2 still restored, corrupt and unknown data refused by name.

use bytes::{BufMut, Bytes, BytesMut};

use super::{LEGACY_MAGIC, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use crate::kv::tests::model::{self, Model, Rng};
use crate::kv::tests::{b, delete, put, put_leased, run};
use crate::kv::{
    Alarm, AlarmKind, Command, DeleteRange, Event, KeyRange, Kv, MemberAttributes, Put, Txn, TxnOp,
};

fn finish_compaction(kv: &mut Kv) {
    while kv.compaction_pending() {
        kv.compact_step(1);
    }
}

/// A state with every part: members and removed ids, a member's attributes, leases with keys, an alarm, history
/// with deletions and a transaction, and a compaction.
fn everything() -> Kv {
    let mut kv = Kv::with_members([(1, "http://127.0.0.1:1".to_string())].into());
    kv.add_member(2, Some("http://127.0.0.1:2".into()));
    kv.add_member(3, Some("http://127.0.0.1:3".into()));
    kv.remove_member(3);
    assert!(kv.is_removed(3));
    kv.add_member(2, None);
    assert_eq!(kv.members()[&2], "http://127.0.0.1:2");
    kv.apply(4, Command::LeaseGrant { id: 1, ttl: 10 }, &mut Vec::new());
    kv.apply(5, Command::LeaseGrant { id: 2, ttl: 20 }, &mut Vec::new());
    kv.apply(6, Command::LeaseGrant { id: 3, ttl: 30 }, &mut Vec::new());
    put(&mut kv, "x", "1"); // 1
    put(&mut kv, "y", ""); // 2
    put(&mut kv, "x", "2"); // 3
    put_leased(&mut kv, "l1", "a", 1); // 4
    put_leased(&mut kv, "l2", "b", 1); // 5
    put_leased(&mut kv, "m", "c", 2); // 6
    delete(&mut kv, "y"); // 7
    let txn = Txn {
        success: ["t1", "t2", "x"]
            .iter()
            .map(|k| TxnOp::Put(Put::new(b(k), b("t"))))
            .collect(),
        ..Txn::default()
    };
    run(&mut kv, Command::Txn(txn)); // 8
    put(&mut kv, "y", "again"); // 9
    run(&mut kv, Command::Compact { revision: 4 });
    finish_compaction(&mut kv);
    kv.apply(20, Command::LeaseKeepAlive { id: 2 }, &mut Vec::new());
    let alarm = Alarm {
        member: 2,
        kind: AlarmKind::NoSpace,
    };
    run(
        &mut kv,
        Command::Alarm {
            alarm,
            active: true,
        },
    );
    let attributes = MemberAttributes {
        name: "two".into(),
        client_urls: vec!["http://127.0.0.1:12".into(), "http://127.0.0.1:22".into()],
    };
    run(&mut kv, Command::PublishMember { id: 2, attributes });
    kv
}

#[test]
fn a_restored_snapshot_is_the_state() {
    let kv = everything();
    let restored = Kv::restore(kv.snapshot()).unwrap();
    assert_eq!(restored, kv);
    assert_eq!((restored.revision(), restored.compact_revision()), (9, 4));
    assert_eq!(restored.lease(1).unwrap().keys.len(), 2);
    assert_eq!(restored.lease(2).unwrap().renewed_at, 20);
    assert!(restored.lease(3).unwrap().keys.is_empty());
    assert_eq!(restored.alarms().count(), 1);
    assert!(restored.is_removed(3));
    assert_eq!(
        (restored.live_bytes(), restored.total_bytes()),
        (kv.live_bytes(), kv.total_bytes())
    );
    assert_eq!(restored.snapshot(), kv.snapshot());
    let snap = kv.snapshot();
    for cut in 0..snap.len() {
        assert!(Kv::restore(snap.slice(..cut)).is_err(), "cut at {cut}");
    }
}

/// The buffer a snapshot starts with holds all of it: it never grows (copying the state) on
/// the raft loop.
fn assert_buffer_is_large_enough(kv: &Kv, ctx: &str) {
    let capacity = kv.snapshot_start().out.capacity();
    let len = kv.snapshot().len();
    assert!(
        len <= capacity,
        "{ctx}: {len} bytes in a buffer of {capacity}"
    );
}

#[test]
fn the_snapshot_buffer_is_allocated_once() {
    let mut kv = everything();
    assert_buffer_is_large_enough(&kv, "everything");
    kv.add_member(
        9,
        Some(format!("http://{}:1", "long-host-name.".repeat(40))),
    );
    assert_buffer_is_large_enough(&kv, "a long member URL");
    run(&mut kv, Command::Compact { revision: 8 });
    assert_buffer_is_large_enough(&kv, "compaction pending");
    finish_compaction(&mut kv);
    assert_buffer_is_large_enough(&kv, "compacted");
}

/// A snapshot taken while a compaction is still in progress holds the versions it will drop;
/// restored, they are gone: the state the compaction ends in.
#[test]
fn a_snapshot_during_a_compaction_restores_the_compacted_state() {
    let mut kv = everything();
    put(&mut kv, "x", "3");
    delete(&mut kv, "x");
    run(&mut kv, Command::Compact { revision: 10 });
    assert!(kv.compaction_pending());
    let restored = Kv::restore(kv.snapshot()).unwrap();
    assert!(!restored.compaction_pending());
    assert!(restored.total_bytes() < kv.total_bytes());
    finish_compaction(&mut kv);
    assert_eq!(restored, kv);
}

/// The observable state: the snapshot bytes, and what a watch from the compaction point
/// reads (within a revision in key order: a snapshot does not keep the order of a
/// transaction's writes).
fn assert_same(a: &Kv, b: &Kv, ctx: &str) {
    assert_eq!(a.snapshot(), b.snapshot(), "{ctx}");
    let changes = |kv: &Kv| {
        let (events, next) = kv.changes(kv.compact_revision(), usize::MAX).unwrap();
        (model::by_revision_and_key(events), next)
    };
    assert_eq!(changes(a), changes(b), "{ctx}");
    assert_eq!(a.compaction_pending(), b.compaction_pending(), "{ctx}");
}

/// Random histories (the model's commands) restore to the same state.
#[test]
fn random_states_restore() {
    for seed in 0..40 {
        let mut rng = Rng::new(1000 + seed);
        let mut kv = Kv::default();
        let mut m = Model::new();
        for n in 0..80 {
            let cmd = model::command(&mut rng, n, &m);
            model::step(
                &mut kv,
                &mut m,
                cmd,
                &mut Vec::new(),
                &format!("seed {seed}"),
            );
        }
        assert_buffer_is_large_enough(&kv, &format!("seed {seed}"));
        finish_compaction(&mut kv);
        assert_buffer_is_large_enough(&kv, &format!("seed {seed}, compacted"));
        let restored = Kv::restore(kv.snapshot()).unwrap();
        assert_same(&restored, &kv, &format!("seed {seed}"));
        model::check(&restored, &m, &format!("seed {seed}, restored"));
    }
}

/// A snapshot serialized a slice at a time while every kind of command applies between the
/// slices (writes before and after the cursor, deletions, transactions, revocations,
/// compactions) captures exactly the state at its start.
#[test]
fn a_snapshot_taken_in_steps_captures_the_state_at_its_start() {
    for seed in 0..60 {
        let mut rng = Rng::new(seed);
        let mut kv = Kv::default();
        let mut m = Model::new();
        for n in 0..rng.below(60) {
            let cmd = model::command(&mut rng, n, &m);
            model::step(
                &mut kv,
                &mut m,
                cmd,
                &mut Vec::new(),
                &format!("seed {seed}"),
            );
        }
        let expected = kv.snapshot();
        kv.begin_snapshot();
        assert!(kv.is_snapshotting());
        let budget = 1 + rng.below(3) as usize;
        let mut n = 100;
        let data = loop {
            for _ in 0..rng.below(6) {
                let cmd = model::command(&mut rng, n, &m);
                model::step(
                    &mut kv,
                    &mut m,
                    cmd,
                    &mut Vec::new(),
                    &format!("seed {seed}"),
                );
                kv.compact_step(1 + rng.below(3) as usize);
                n += 1;
            }
            if let Some(data) = kv.snapshot_step(budget) {
                break data;
            }
        };
        assert_eq!(data, expected, "seed {seed}, budget {budget}");
        assert!(!kv.is_snapshotting());
        assert_eq!(kv.snapshot_step(budget), None);
        assert_eq!(Kv::restore(data).unwrap(), Kv::restore(expected).unwrap());
        // What applied meanwhile is all there, the physical compaction resumed.
        finish_compaction(&mut kv);
        model::check(&kv, &m, &format!("seed {seed}, after"));
    }
}

/// The small state whose snapshot bytes are pinned below.
fn pinned_state() -> Kv {
    let mut kv = Kv::with_members([(1, "u".to_string())].into());
    kv.add_member(2, Some("w".into()));
    kv.remove_member(2);
    kv.apply(3, Command::LeaseGrant { id: 7, ttl: 10 }, &mut Vec::new());
    put_leased(&mut kv, "k", "v", 7); // 1
    put(&mut kv, "d", "x"); // 2
    delete(&mut kv, "d"); // 3
    run(&mut kv, Command::Compact { revision: 2 });
    let alarm = Alarm {
        member: 1,
        kind: AlarmKind::NoSpace,
    };
    run(
        &mut kv,
        Command::Alarm {
            alarm,
            active: true,
        },
    );
    let attributes = MemberAttributes {
        name: "n".into(),
        client_urls: vec!["c".into()],
    };
    run(&mut kv, Command::PublishMember { id: 1, attributes });
    kv
}

/// The bytes of `pinned_state` in version `version` (2 or 3), written out by hand from the
/// module doc.
fn pinned_bytes(version: u8) -> Vec<u8> {
    let le = |n: u64| n.to_le_bytes();
    let head: Vec<u8> = [
        &b"KVSV"[..],
        &[version, 0, 0, 0],
        &le(3),              // revision
        &le(2),              // compact revision
        &[1, 0, 0, 0],       // one member
        &le(1),              // id 1
        &[1, 0, 0, 0, b'u'], // its URL
        &[1, 0, 0, 0],       // one removed id
        &le(2),              // id 2
        &[1, 0, 0, 0],       // one lease
        &le(7),              // id
        &le(10),             // TTL
        &le(3),              // renewed at
        &[1, 0, 0, 0],       // one alarm
        &le(1),              // member 1
        &[1],                // NOSPACE
    ]
    .concat();
    let v3: Vec<u8> = [
        &le(0x529a_59dc_8ff5_8023)[..], // the cluster id
        &[1, 0, 0, 0],                  // one member's attributes
        &le(1),                         // member 1
        &[1, 0, 0, 0, b'n'],            // its name
        &[1, 0, 0, 0],                  // one client URL
        &[1, 0, 0, 0, b'c'],
    ]
    .concat();
    let keys: Vec<u8> = [
        &le(2)[..],          // two keys
        &[1, 0, 0, 0, b'd'], // "d"
        &[2, 0, 0, 0],       // two versions
        &le(2),
        &le(2),
        &le(1),
        &le(0),
        &[1, 0, 0, 0, b'x'], // put at 2
        &le(3),
        &le(0),
        &le(0),
        &le(0),
        &[0, 0, 0, 0],       // deleted at 3
        &[1, 0, 0, 0, b'k'], // "k"
        &[1, 0, 0, 0],       // one version
        &le(1),
        &le(1),
        &le(1),
        &le(7),
        &[1, 0, 0, 0, b'v'], // put at 1, lease 7
    ]
    .concat();
    match version {
        2 => [head, keys].concat(),
        _ => [head, v3, keys].concat(),
    }
}

/// The bytes of a small version-3 snapshot, written at once and in steps.
#[test]
fn the_version_3_bytes_are_pinned() {
    let mut kv = pinned_state();
    let data = pinned_bytes(3);
    assert_eq!(kv.snapshot(), data);
    kv.begin_snapshot();
    assert_eq!(kv.snapshot_step(1), None);
    assert_eq!(kv.snapshot_step(1), Some(Bytes::from(data.clone())));
    finish_compaction(&mut kv);
    assert_eq!(Kv::restore(Bytes::from(data)).unwrap(), kv);
}

/// A version-2 snapshot (what builds before member attributes wrote) restores the same
/// state, with no attributes and no cluster id (the node derives one from its flags).
#[test]
fn version_2_still_restores() {
    let mut kv = pinned_state();
    finish_compaction(&mut kv);
    kv.attributes.clear();
    kv.cluster_id = 0;
    assert_eq!(Kv::restore(Bytes::from(pinned_bytes(2))).unwrap(), kv);
}

/// Attributes of a member not in the snapshot's member list, or out of order, are corrupt.
#[test]
fn attributes_of_no_member_are_refused() {
    let mut data = pinned_bytes(3);
    // The attribute count, member 1's id, its name: found once in the bytes.
    let needle: Vec<u8> = [
        &[1u8, 0, 0, 0][..],
        &1u64.to_le_bytes(),
        &[1, 0, 0, 0, b'n'],
    ]
    .concat();
    let pos = data
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the attributes are in the snapshot");
    data[pos + 4] = 9; // member 9 is no member
    let e = Kv::restore(Bytes::from(data)).unwrap_err().to_string();
    assert!(
        e.contains("attributes out of order, repeated, or of no member"),
        "{e}"
    );
}

/// Version 1's body, as c0c95b6 wrote it (the fixture's snapshot file holds one).
fn version_1_body() -> Vec<u8> {
    [
        &[1, 0, 0, 0, 0, 0, 0, 0][..], // revision 1
        &[1, 0, 0, 0],                 // one member
        &[1, 0, 0, 0, 0, 0, 0, 0],     // id 1
        &[1, 0, 0, 0, b'u'],           // its URL
        &[1, 0, 0, 0],                 // one removed id
        &[2, 0, 0, 0, 0, 0, 0, 0],     // id 2
        &[1, 0, 0, 0, 0, 0, 0, 0],     // one key
        &[1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v'],
        &[1, 0, 0, 0, 0, 0, 0, 0], // create_revision
        &[1, 0, 0, 0, 0, 0, 0, 0], // mod_revision
        &[1, 0, 0, 0, 0, 0, 0, 0], // version
    ]
    .concat()
}

/// Both forms of version 1 restore: its one version per key, no history before its
/// revision (the compaction point), no leases, no alarms, no cluster id.
#[test]
fn version_1_still_restores() {
    let mut kv = Kv::with_members([(1, "u".to_string())].into());
    kv.cluster_id = 0;
    kv.add_member(2, Some("w".into()));
    kv.remove_member(2);
    put(&mut kv, "k", "v");
    run(&mut kv, Command::Compact { revision: 1 });
    finish_compaction(&mut kv);
    let short = [&LEGACY_MAGIC[..], &version_1_body()].concat();
    let long = [&SNAPSHOT_MAGIC[..], &[1, 0, 0, 0], &version_1_body()].concat();
    for form in [short, long] {
        let restored = Kv::restore(Bytes::from(form.clone())).unwrap();
        assert_eq!(restored, kv);
        assert_eq!((restored.revision(), restored.compact_revision()), (1, 1));
        assert_eq!(
            (restored.leases().count(), restored.alarms().count()),
            (0, 0)
        );
        assert!(!restored.compaction_pending());
        let k = restored.get(b"k").unwrap();
        assert_eq!(
            (k.create_revision, k.mod_revision, k.version, k.lease),
            (1, 1, 1, 0)
        );
        for cut in 0..form.len() {
            assert!(
                Kv::restore(Bytes::from(form[..cut].to_vec())).is_err(),
                "cut at {cut}"
            );
        }
    }
    // Version 1's keys were strings.
    let mut bad = version_1_body();
    let at = bad.len() - 24 - 5 - 1; // the key's byte
    assert_eq!(bad[at], b'k');
    bad[at] = 0xff;
    let e = Kv::restore(Bytes::from([&LEGACY_MAGIC[..], &bad].concat())).unwrap_err();
    assert!(e.to_string().ends_with("key is not UTF-8"), "{e}");
}

fn error(data: Vec<u8>) -> String {
    match Kv::restore(Bytes::from(data)) {
        Ok(kv) => panic!("restored {kv:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_versions_are_refused_by_name() {
    let body = Kv::default().snapshot().slice(8..);
    for version in [0u32, SNAPSHOT_VERSION + 1, u32::MAX] {
        let data = [&SNAPSHOT_MAGIC[..], &version.to_le_bytes(), &body].concat();
        let e = error(data);
        assert!(
            e.contains(&format!(
                "malformed snapshot data: unknown snapshot version {version} "
            )),
            "{e}"
        );
    }
    for data in [
        &b""[..],
        b"KVS",
        b"KVS2",
        b"KVSV",
        b"KVSV\x02\0\0",
        b"XXXX\x02\0\0\0",
    ] {
        assert!(Kv::restore(Bytes::from_static(data)).is_err(), "{data:?}");
    }
}

/// One version as a version-2 snapshot stores it.
type V = (u64, u64, u64, i64, &'static [u8]);

/// A version-2 snapshot of revision 9, compacted at `compact`, with these leases and keys.
fn v2(compact: u64, leases: &[i64], keys: &[(&[u8], &[V])]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_slice(b"KVSV");
    out.put_u32_le(2);
    out.put_u64_le(9);
    out.put_u64_le(compact);
    out.put_u32_le(0); // members
    out.put_u32_le(0); // removed
    out.put_u32_le(leases.len() as u32);
    for id in leases {
        out.put_i64_le(*id);
        out.put_i64_le(10);
        out.put_u64_le(1);
    }
    out.put_u32_le(0); // alarms
    out.put_u64_le(keys.len() as u64);
    for (key, versions) in keys {
        out.put_u32_le(key.len() as u32);
        out.put_slice(key);
        out.put_u32_le(versions.len() as u32);
        for (m, c, v, l, value) in versions.iter() {
            out.put_u64_le(*m);
            out.put_u64_le(*c);
            out.put_u64_le(*v);
            out.put_i64_le(*l);
            out.put_u32_le(value.len() as u32);
            out.put_slice(value);
        }
    }
    out.to_vec()
}

#[test]
fn corrupt_snapshots_are_refused() {
    let one: &[V] = &[(1, 1, 1, 0, b"v")];
    assert!(Kv::restore(Bytes::from(v2(0, &[-1, 1], &[(b"a", one), (b"b", one)]))).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (v2(0, &[], &[(b"b", one), (b"a", one)]), "keys out of order"),
        (v2(0, &[], &[(b"a", one), (b"a", one)]), "keys out of order"),
        (
            v2(0, &[], &[(b"a", &[(2, 2, 1, 0, b""), (1, 1, 1, 0, b"")])]),
            "versions out of order",
        ),
        (
            v2(0, &[], &[(b"a", &[(2, 2, 1, 0, b""), (2, 2, 2, 0, b"")])]),
            "versions out of order",
        ),
        (
            v2(0, &[], &[(b"a", &[(10, 10, 1, 0, b"")])]),
            "versions out of order",
        ),
        (v2(0, &[], &[(b"a", &[])]), "a key without versions"),
        (
            v2(0, &[1], &[(b"a", &[(1, 1, 1, 2, b"")])]),
            "a key attached to a missing lease",
        ),
        (v2(10, &[], &[]), "compact revision after the revision"),
        (v2(0, &[2, 1], &[]), "lease ids out of order, repeated or 0"),
        (v2(0, &[1, 1], &[]), "lease ids out of order, repeated or 0"),
        (v2(0, &[0], &[]), "lease ids out of order, repeated or 0"),
        ([v2(0, &[], &[]), vec![0]].concat(), "trailing bytes"),
    ];
    for (data, why) in cases {
        let e = error(data);
        assert!(e.ends_with(why), "{e} (want {why})");
    }
    // A deleted key's old lease is no attachment.
    let gone: &[V] = &[(1, 1, 1, 2, b"v"), (2, 0, 0, 0, b"")];
    let kv = Kv::restore(Bytes::from(v2(0, &[], &[(b"a", gone)]))).unwrap();
    assert!(kv.is_empty());
}

/// A watch's view survives a restore: every event from the compaction point on, each with
/// its prev, whatever the order of a transaction's writes.
#[test]
fn a_restored_history_serves_the_same_changes() {
    let mut kv = everything();
    let mut published: Vec<Event> = Vec::new();
    let txn = Txn {
        success: vec![
            TxnOp::Put(Put::new(b("z"), b("1"))),
            TxnOp::Delete(DeleteRange {
                range: KeyRange::Key(b("m")),
                prev_kv: false,
            }),
            TxnOp::Put(Put::new(b("a"), b("1"))),
        ],
        ..Txn::default()
    };
    kv.apply(0, Command::Txn(txn), &mut published);
    let restored = Kv::restore(kv.snapshot()).unwrap();
    assert_same(
        &restored,
        &kv,
        "after a transaction writing out of key order",
    );
    let (events, _) = restored.changes(10, usize::MAX).unwrap();
    assert_eq!(events, model::by_revision_and_key(published));
}
