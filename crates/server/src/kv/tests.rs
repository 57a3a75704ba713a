//! The state machine's semantics: revisions, versions, conditions, deletes, and the helpers
//! every test of the module shares. The submodules test one concern each: the MVCC history
//! against a model ([`model`]), range reads, compaction, leases, alarms, transactions.

use bytes::Bytes;

use super::*;

mod alarms;
mod compaction;
mod leases;
pub(super) mod model;
mod ranges;
mod txns;

/// A string's bytes.
pub(super) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Applies `cmd` at log index 0 (the index matters only to leases), dropping the events.
pub(super) fn run(kv: &mut Kv, cmd: Command) -> Outcome {
    kv.apply(0, cmd, &mut Vec::new())
}

/// A plain put.
pub(super) fn put(kv: &mut Kv, k: &str, v: &str) -> Outcome {
    run(kv, Command::put(b(k), b(v)))
}

/// A put attaching the key to `lease`.
pub(super) fn put_leased(kv: &mut Kv, k: &str, v: &str, lease: LeaseId) -> Outcome {
    run(
        kv,
        Command::Put(Put {
            lease,
            ..Put::new(b(k), b(v))
        }),
    )
}

/// An unconditional delete of one key.
pub(super) fn delete(kv: &mut Kv, k: &str) -> Outcome {
    run(
        kv,
        Command::Delete(Delete {
            key: b(k),
            condition: None,
        }),
    )
}

/// A range read of `range` at `revision`.
pub(super) fn read(kv: &Kv, range: KeyRange, revision: u64) -> Result<RangeResult, Refusal> {
    kv.range(&RangeQuery {
        revision,
        ..RangeQuery::new(range)
    })
}

/// The keys of an answer, as strings (lossily: test keys are mostly UTF-8).
pub(super) fn keys(r: &RangeResult) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// `(create_revision, mod_revision, version)` of a key now.
fn revs(kv: &Kv, k: &str) -> (u64, u64, u64) {
    let e = kv.get(k.as_bytes()).expect("the key exists");
    (e.create_revision, e.mod_revision, e.version)
}

#[test]
fn revisions_and_versions() {
    let mut kv = Kv::default();
    assert_eq!(
        put(&mut kv, "x", "1"),
        Outcome::Put {
            revision: 1,
            prev: None
        }
    );
    put(&mut kv, "y", "a");
    let Outcome::Put { revision: 3, prev } = put(&mut kv, "x", "2") else {
        panic!("not a put at 3");
    };
    assert_eq!(prev.map(|p| (p.value, p.mod_revision)), Some((b("1"), 1)));
    assert_eq!(revs(&kv, "x"), (1, 3, 2));
    assert_eq!(kv.revision(), 3);
    assert_eq!((kv.len(), kv.live_bytes()), (2, 4));
    // Deleting a missing key changes nothing, not even the revision.
    assert_eq!(
        delete(&mut kv, "nope"),
        Outcome::Deleted {
            revision: 3,
            deleted: 0,
            prev: vec![]
        }
    );
    // Recreated keys start over.
    let mut events = Vec::new();
    let del = Command::Delete(Delete {
        key: b("x"),
        condition: None,
    });
    let Outcome::Deleted {
        revision: 4,
        deleted: 1,
        prev,
    } = kv.apply(0, del, &mut events)
    else {
        panic!("not a delete at 4");
    };
    assert_eq!(prev.len(), 1);
    assert_eq!(prev[0].value, b("2"));
    put(&mut kv, "x", "3");
    assert_eq!(revs(&kv, "x"), (5, 5, 1));
    let tombstone = KeyValue {
        key: b("x"),
        mod_revision: 4,
        ..KeyValue::default()
    };
    assert_eq!(events.len(), 1);
    assert_eq!((&events[0].kv, events[0].deleted), (&tombstone, true));
    assert_eq!(events[0].revision(), 4);
    assert_eq!(events[0].prev.as_ref().map(|p| p.version), Some(2));
    // Every version stays readable.
    let at = |r| read(&kv, KeyRange::Key(b("x")), r).unwrap().kvs;
    assert_eq!(at(1)[0].value, b("1"));
    assert_eq!(at(3)[0].value, b("2"));
    assert!(at(4).is_empty());
    assert_eq!(at(5)[0].value, b("3"));
}

#[test]
fn preconditions() {
    let mut kv = Kv::default();
    let cond = |k: &str, v: &str, c| {
        Command::Put(Put {
            condition: Some(c),
            ..Put::new(b(k), b(v))
        })
    };
    let done = |revision| Outcome::Put {
        revision,
        prev: None,
    };
    let failed = |current, revision| Outcome::PreconditionFailed { current, revision };
    assert_eq!(run(&mut kv, cond("k", "1", Precondition::Absent)), done(1));
    assert_eq!(
        run(&mut kv, cond("k", "2", Precondition::Absent)),
        failed(1, 1)
    );
    assert_eq!(
        run(&mut kv, cond("n", "2", Precondition::Present)),
        failed(0, 1)
    );
    let cas = |rev| cond("k", "cas", Precondition::ModRevision(rev));
    assert_eq!(run(&mut kv, cas(9)), failed(1, 1));
    assert!(matches!(
        run(&mut kv, cas(1)),
        Outcome::Put { revision: 2, .. }
    ));
    assert_eq!(kv.get(b"k").unwrap().value, b("cas"));
    assert!(matches!(
        run(&mut kv, cond("k", "p", Precondition::Present)),
        Outcome::Put { revision: 3, .. }
    ));
    // If-Match on a missing key fails with current 0, even if it names revision 0.
    for rev in [0, 1] {
        let del = Command::Delete(Delete {
            key: b("gone"),
            condition: Some(Precondition::ModRevision(rev)),
        });
        assert_eq!(run(&mut kv, del), failed(0, 3));
    }
    let del = Command::Delete(Delete {
        key: b("k"),
        condition: Some(Precondition::ModRevision(3)),
    });
    assert!(matches!(
        run(&mut kv, del),
        Outcome::Deleted {
            revision: 4,
            deleted: 1,
            ..
        }
    ));
    assert_eq!(kv.revision(), 4);
}

#[test]
fn a_range_delete_is_one_revision() {
    let mut kv = Kv::default();
    for k in ["a", "p/1", "p/2", "p/3", "q"] {
        put(&mut kv, k, k);
    }
    let mut ev = Vec::new();
    let del = |range, prev_kv| Command::DeleteRange(DeleteRange { range, prev_kv });
    let out = kv.apply(0, del(KeyRange::Prefix(b("p/")), false), &mut ev);
    assert_eq!(
        out,
        Outcome::Deleted {
            revision: 6,
            deleted: 3,
            prev: vec![]
        }
    );
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|e| e.revision() == 6 && e.deleted));
    assert_eq!(kv.len(), 2);
    // An empty range (or one with no keys) deletes nothing and bumps nothing.
    for range in [
        KeyRange::Between(b("z"), b("a")),
        KeyRange::Between(b("a"), b("a")),
        KeyRange::Prefix(b("p/")),
    ] {
        assert_eq!(
            run(&mut kv, del(range, true)),
            Outcome::Deleted {
                revision: 6,
                deleted: 0,
                prev: vec![]
            }
        );
    }
    let Outcome::Deleted {
        revision: 7,
        deleted: 2,
        prev,
    } = run(&mut kv, del(KeyRange::FromKey(Bytes::new()), true))
    else {
        panic!("not a delete of everything");
    };
    assert_eq!(
        prev.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        [b("a"), b("q")]
    );
    assert!(kv.is_empty());
    assert_eq!(kv.live_bytes(), 0);
}

/// Every change's event carries the key after it and before it.
#[test]
fn events_carry_the_key_before_and_after() {
    let mut kv = Kv::default();
    let mut ev = Vec::new();
    kv.apply(0, Command::put(b("k"), b("1")), &mut ev);
    kv.apply(0, Command::put(b("k"), b("2")), &mut ev);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].prev, None);
    assert_eq!(ev[0].kv, kv.changes(1, 1).unwrap().0[0].kv);
    assert_eq!(ev[1].prev.as_ref().map(|p| p.value.clone()), Some(b("1")));
    assert_eq!(ev[1].kv, kv.get(b"k").unwrap());
    // What a watch catching up reads is what was published when it applied.
    assert_eq!(kv.changes(0, usize::MAX).unwrap(), (ev, 3));
}

#[test]
fn a_page_of_changes_stops_at_a_revision_boundary_past_its_byte_budget() {
    let mut kv = Kv::default();
    let value = "v".repeat(100);
    for i in 0..10 {
        put(&mut kv, &format!("k{i}"), &value);
    }
    // Each change is 102 bytes: the third crosses 250, the page ends after it.
    let (events, next) = kv.changes(1, 250).unwrap();
    assert_eq!((events.len(), next), (3, 4));
    // A budget below one change still returns one whole revision.
    let (events, next) = kv.changes(4, 1).unwrap();
    assert_eq!((events.len(), next), (1, 5));
    let (events, next) = kv.changes(5, usize::MAX).unwrap();
    assert_eq!((events.len(), next), (6, 11));
}

/// A member's published attributes: kept for a member, ignored for any other id, dropped
/// with the member; a new cluster seeded from this state has none, and an id of its own.
#[test]
fn member_attributes_follow_the_member_list() {
    let founders: BTreeMap<u64, String> = [(1, "http://a:1".to_string())].into();
    let mut kv = Kv::with_members(founders.clone());
    assert_eq!(kv.cluster_id(), super::founding_cluster_id(&founders));
    kv.add_member(2, Some("http://b:2".into()));
    let attrs = |name: &str| MemberAttributes {
        name: name.into(),
        client_urls: vec![format!("http://{name}:3")],
    };
    let publish = |id, name| Command::PublishMember {
        id,
        attributes: attrs(name),
    };
    assert_eq!(
        run(&mut kv, publish(2, "two")),
        Outcome::MemberPublished { member: true }
    );
    assert_eq!(
        run(&mut kv, publish(7, "seven")),
        Outcome::MemberPublished { member: false }
    );
    assert_eq!(kv.attributes().keys().collect::<Vec<_>>(), [&2]);
    assert_eq!(kv.attributes()[&2], attrs("two"));
    // A move to another peer URL keeps what the member published.
    kv.add_member(2, Some("http://b:4".into()));
    assert_eq!(kv.attributes()[&2], attrs("two"));
    assert_eq!(kv.revision(), 0, "attributes are no change to the data");
    kv.remove_member(2);
    assert!(kv.attributes().is_empty());

    run(&mut kv, publish(1, "one"));
    let new: BTreeMap<u64, String> = [(1, "http://c:1".to_string())].into();
    kv.reseat_members(new.clone());
    assert!(kv.attributes().is_empty());
    assert_eq!(kv.cluster_id(), super::founding_cluster_id(&new));
    assert_ne!(kv.cluster_id(), super::founding_cluster_id(&founders));
}
