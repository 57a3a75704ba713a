//! Compaction: the refusals, exactly the newest version at or before the point surviving,
//! the bytes it frees, watches from the point on, stepping, and the pause for a snapshot.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{b, delete, put, read, run};
use crate::kv::{Command, Event, KeyRange, Kv, Outcome, Refusal, Txn, TxnOp};

fn compact(kv: &mut Kv, revision: u64) -> Outcome {
    run(kv, Command::Compact { revision })
}

fn finish(kv: &mut Kv) {
    while kv.compaction_pending() {
        kv.compact_step(1);
    }
}

/// Every kept version: key → (mod_revision, deleted) each.
fn versions(kv: &Kv) -> BTreeMap<String, Vec<(u64, bool)>> {
    kv.history
        .versions_after(None)
        .map(|(k, vs)| {
            let vs = vs
                .iter()
                .map(|v| (v.mod_revision, v.is_tombstone()))
                .collect();
            (String::from_utf8_lossy(k).into_owned(), vs)
        })
        .collect()
}

/// Every read at every revision from `from` to the current one.
fn reads(kv: &Kv, from: u64) -> Vec<Vec<crate::kv::KeyValue>> {
    (from..=kv.revision())
        .map(|r| read(kv, KeyRange::Prefix(Bytes::new()), r).unwrap().kvs)
        .collect()
}

#[test]
fn compact_refusals() {
    let mut kv = Kv::default();
    assert_eq!(
        compact(&mut kv, 0),
        Outcome::Refused(Refusal::Compacted {
            compact_revision: 0
        })
    );
    assert_eq!(
        compact(&mut kv, 1),
        Outcome::Refused(Refusal::FutureRevision { current: 0 })
    );
    put(&mut kv, "a", "1");
    put(&mut kv, "a", "2");
    assert_eq!(
        compact(&mut kv, 3),
        Outcome::Refused(Refusal::FutureRevision { current: 2 })
    );
    assert_eq!(compact(&mut kv, 1), Outcome::Compacted { revision: 1 });
    for r in [0, 1] {
        assert_eq!(
            compact(&mut kv, r),
            Outcome::Refused(Refusal::Compacted {
                compact_revision: 1
            })
        );
    }
    assert_eq!(compact(&mut kv, 2), Outcome::Compacted { revision: 2 });
    // Compaction is no change to the data: the revision stays.
    assert_eq!(
        (
            kv.revision(),
            kv.compact_revision(),
            kv.retained_revisions()
        ),
        (2, 2, 0)
    );
}

/// A history with every case around the point 6: several versions before it, a deletion
/// before it, a deletion at it, a key written only after it, one only long before it.
fn history() -> Kv {
    let mut kv = Kv::default();
    put(&mut kv, "old", "o"); // 1
    put(&mut kv, "many", "1"); // 2
    put(&mut kv, "gone", "g"); // 3
    delete(&mut kv, "gone"); // 4
    put(&mut kv, "many", "22"); // 5
    put(&mut kv, "dies", "d"); // 6
    delete(&mut kv, "dies"); // 7: the point
    put(&mut kv, "many", "333"); // 8
    put(&mut kv, "new", "n"); // 9
    kv
}

#[test]
fn exactly_the_newest_version_at_or_before_the_point_survives() {
    let mut kv = history();
    let before = reads(&kv, 7);
    let total = kv.total_bytes();
    assert_eq!(compact(&mut kv, 7), Outcome::Compacted { revision: 7 });
    assert!(kv.compaction_pending());
    // The logical step alone changes no read at the point or after.
    assert_eq!(reads(&kv, 7), before);
    finish(&mut kv);
    assert_eq!(reads(&kv, 7), before);
    let want: BTreeMap<String, Vec<(u64, bool)>> = [
        ("old", vec![(1, false)]),
        ("many", vec![(5, false), (8, false)]),
        // "gone" was deleted before the point: no trace left.
        ("dies", vec![(7, true)]),
        ("new", vec![(9, false)]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(versions(&kv), want);
    // Freed: many@2 (5 bytes), gone@3 (5) and its deletion (4), dies@6 (5).
    assert_eq!(kv.total_bytes(), total - 5 - 5 - 4 - 5);
    assert_eq!(kv.total_bytes(), 4 + 6 + 7 + 4 + 4);
    // A watch from the point sees its deletion, without what came before (dropped), and
    // every later change with it.
    let (events, next) = kv.changes(7, usize::MAX).unwrap();
    assert_eq!(next, 10);
    assert_eq!(events.len(), 3);
    assert_eq!((events[0].deleted, &events[0].prev), (true, &None));
    assert_eq!(
        events[1].prev.as_ref().map(|p| p.value.clone()),
        Some(b("22"))
    );
    assert_eq!(events[2].prev, None);
    assert_eq!(
        kv.changes(6, usize::MAX),
        Err(Refusal::Compacted {
            compact_revision: 7
        })
    );
}

/// A key's survivor of one compaction goes at the next one even when its only later version
/// is at the new point (no log entry of it is before the point).
#[test]
fn a_survivor_goes_when_the_next_point_is_its_successor() {
    let mut kv = Kv::default();
    put(&mut kv, "a", "1"); // 1
    put(&mut kv, "b", "1"); // 2
    compact(&mut kv, 2);
    finish(&mut kv);
    assert_eq!(versions(&kv)["a"], [(1, false)]);
    delete(&mut kv, "a"); // 3
    put(&mut kv, "b", "2"); // 4
    compact(&mut kv, 3);
    finish(&mut kv);
    assert_eq!(versions(&kv)["a"], [(3, true)]);
    assert_eq!(versions(&kv)["b"], [(2, false), (4, false)]);
    assert_eq!(kv.total_bytes(), 1 + 2 + 2);
    let restored = Kv::restore(kv.snapshot()).unwrap();
    assert_eq!(restored, kv);
    assert!(!restored.compaction_pending());
}

/// The physical step does a bounded slice at a time and pauses while a snapshot is being
/// serialized (the snapshot reads versions it would drop).
#[test]
fn compaction_steps_and_pauses_for_a_snapshot() {
    let mut kv = Kv::default();
    for i in 0..20 {
        put(&mut kv, "k", &i.to_string());
    }
    let after = kv.revision();
    compact(&mut kv, after);
    kv.begin_snapshot();
    let total = kv.total_bytes();
    kv.compact_step(usize::MAX);
    assert!(kv.compaction_pending());
    assert_eq!(kv.total_bytes(), total);
    let snapshot = kv.snapshot_step(usize::MAX).expect("one key: done at once");
    let mut steps = 0;
    while kv.compaction_pending() {
        kv.compact_step(3);
        steps += 1;
        // The key's first visit dropped every version before the point at once.
        assert_eq!(kv.total_bytes(), 3);
    }
    // 19 log entries before the point three at a time, and the one at it.
    assert_eq!(steps, 7);
    assert_eq!(kv.total_bytes(), 3);
    // The snapshot taken during the compaction restores the compacted state.
    assert_eq!(Kv::restore(snapshot).unwrap(), kv);
}

/// A watch paging through the history with a small budget never splits a revision, and
/// resumes across compactions as long as its next revision is not compacted.
#[test]
fn a_watch_resumes_across_compaction() {
    let mut kv = Kv::default();
    let mut published = Vec::new();
    for i in 0..10 {
        let txn = Txn {
            success: ["x", "y", "z"]
                .iter()
                .map(|k| TxnOp::Put(crate::kv::Put::new(b(k), b(&i.to_string()))))
                .collect(),
            ..Txn::default()
        };
        kv.apply(0, Command::Txn(txn), &mut published);
    }
    let mut seen: Vec<Event> = Vec::new();
    let mut from = 1;
    while from <= kv.revision() {
        let (events, next) = kv.changes(from, 1).unwrap();
        assert_eq!(events.len(), 3, "one whole revision per page");
        assert!(events.iter().all(|e| e.revision() == from));
        seen.extend(events);
        from = next;
        // Compact up to the revision the watch read last: the next one keeps its prev.
        compact(&mut kv, from - 1);
        kv.compact_step(2);
    }
    assert_eq!(from, 11);
    // Every event, as published, prev included.
    assert_eq!(seen, published);
    // Compacting at the revision a watch reads next drops the prev of its events only.
    assert_eq!(kv.compact_revision(), 10);
    finish(&mut kv);
    let (events, _) = kv.changes(10, 1).unwrap();
    assert!(events.iter().all(|e| e.prev.is_none()));
    let unprev = |e: &Event| Event {
        prev: None,
        ..e.clone()
    };
    assert_eq!(
        events,
        published[27..].iter().map(unprev).collect::<Vec<_>>()
    );
    // One revision behind the point is refused, with the oldest available.
    put(&mut kv, "x", "last");
    compact(&mut kv, 11);
    assert_eq!(
        kv.changes(10, 1),
        Err(Refusal::Compacted {
            compact_revision: 11
        })
    );
    assert_eq!(kv.changes(11, 1).unwrap().0.len(), 1);
    // From the next revision or later: nothing yet, and the next changes start there.
    assert_eq!(kv.changes(12, 1).unwrap(), (vec![], 12));
    assert_eq!(kv.changes(20, 1).unwrap(), (vec![], 20));
}

/// The hash of the readable history is the same whether or not the physical compaction has
/// run (replicas get there at different times), changes with any readable version, and at
/// a past revision leaves out what came after it.
#[test]
fn the_hash_ignores_physical_compaction_and_sees_every_readable_version() {
    let mut kv = Kv::default();
    for i in 0..10 {
        put(&mut kv, "a", &i.to_string());
        put(&mut kv, &format!("k{i}"), "v");
    }
    delete(&mut kv, "k3");
    let before = kv.hash(0).unwrap();
    let at_five = kv.hash(5).unwrap();
    assert_eq!(at_five.1, 5);
    assert_ne!(at_five.0, before.0);
    let point = kv.revision() - 4;
    compact(&mut kv, point);
    let logical = kv.hash(0).unwrap();
    assert_ne!(
        logical.0, before.0,
        "versions before the point are no longer readable"
    );
    let mut copy = Kv::restore(kv.snapshot()).unwrap();
    finish(&mut kv);
    assert_eq!(
        kv.hash(0).unwrap(),
        logical,
        "after the physical compaction"
    );
    finish(&mut copy);
    assert_eq!(copy.hash(0).unwrap(), logical, "on a restored replica");
    put(&mut kv, "a", "again");
    assert_ne!(kv.hash(0).unwrap().0, logical.0);
    assert_eq!(
        kv.hash(1).unwrap_err(),
        Refusal::Compacted {
            compact_revision: point
        }
    );
}
