//! Range reads: every shape of range (0xff bytes, empty and inverted ones), limits, counts,
//! keys or counts only, sorting, revision filters, the byte budget, and the revisions refused.

use bytes::Bytes;

use super::{b, delete, keys, put, read};
use crate::kv::{KeyRange, Kv, RangeQuery, RangeResult, Refusal, SortOrder, SortTarget};

fn raw(k: &[u8]) -> Bytes {
    Bytes::copy_from_slice(k)
}

/// A store holding keys with 0xff bytes around a prefix.
fn store() -> Kv {
    let mut kv = Kv::default();
    for k in [
        &b"a"[..],
        b"a/1",
        b"a/2",
        b"a\xff",
        b"a\xff\xff",
        b"b",
        b"\xff",
        b"\xff\xff",
    ] {
        super::run(&mut kv, crate::kv::Command::put(raw(k), raw(k)));
    }
    kv
}

fn raw_keys(r: &RangeResult) -> Vec<&[u8]> {
    r.kvs.iter().map(|kv| &kv.key[..]).collect()
}

#[test]
fn every_shape_of_range() {
    let kv = store();
    let shapes: Vec<(KeyRange, Vec<&[u8]>)> = vec![
        (KeyRange::Key(raw(b"a/1")), vec![b"a/1"]),
        (KeyRange::Key(raw(b"a/3")), vec![]),
        (
            KeyRange::Prefix(raw(b"a")),
            vec![b"a", b"a/1", b"a/2", b"a\xff", b"a\xff\xff"],
        ),
        (KeyRange::Prefix(raw(b"a/")), vec![b"a/1", b"a/2"]),
        (
            KeyRange::Prefix(raw(b"a\xff")),
            vec![b"a\xff", b"a\xff\xff"],
        ),
        (KeyRange::Prefix(raw(b"\xff")), vec![b"\xff", b"\xff\xff"]),
        (KeyRange::Prefix(raw(b"\xff\xff")), vec![b"\xff\xff"]),
        (KeyRange::Prefix(raw(b"c")), vec![]),
        (
            KeyRange::FromKey(raw(b"a\xff")),
            vec![b"a\xff", b"a\xff\xff", b"b", b"\xff", b"\xff\xff"],
        ),
        (KeyRange::FromKey(raw(b"\xff\xff\xff")), vec![]),
        (
            KeyRange::Between(raw(b"a/"), raw(b"b")),
            vec![b"a/1", b"a/2", b"a\xff", b"a\xff\xff"],
        ),
        (
            KeyRange::Between(raw(b"a"), raw(b"a/2")),
            vec![b"a", b"a/1"],
        ),
        // Empty and inverted ranges: nothing, and no panic.
        (KeyRange::Between(raw(b"b"), raw(b"a")), vec![]),
        (KeyRange::Between(raw(b"b"), raw(b"b")), vec![]),
        (KeyRange::Between(Bytes::new(), Bytes::new()), vec![]),
        (KeyRange::Between(raw(b"\xff\xff"), raw(b"\xff")), vec![]),
    ];
    for (range, want) in shapes {
        let r = read(&kv, range.clone(), 0).unwrap();
        assert_eq!(raw_keys(&r), want, "{range:?}");
        assert_eq!((r.count, r.more, r.revision), (want.len() as u64, false, 8));
    }
    let all = read(&kv, KeyRange::Prefix(Bytes::new()), 0).unwrap();
    assert_eq!(all.count, 8);
    // Every key in key order, values intact.
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert!(all.kvs.iter().all(|kv| kv.key == kv.value));
}

fn query(range: KeyRange) -> RangeQuery {
    RangeQuery::new(range)
}

#[test]
fn limits_counts_and_shapes_of_answers() {
    let kv = store();
    let a = || query(KeyRange::Prefix(raw(b"a")));
    let r = kv.range(&RangeQuery { limit: 2, ..a() }).unwrap();
    assert_eq!(raw_keys(&r), [&b"a"[..], b"a/1"]);
    assert_eq!((r.count, r.more), (5, true));
    for limit in [5, 6, 0] {
        let r = kv.range(&RangeQuery { limit, ..a() }).unwrap();
        assert_eq!(
            (r.kvs.len(), r.count, r.more),
            (5, 5, false),
            "limit {limit}"
        );
    }
    let r = kv.range(&RangeQuery {
        count_only: true,
        limit: 1,
        ..a()
    });
    assert_eq!(
        r,
        Ok(RangeResult {
            revision: 8,
            kvs: vec![],
            more: false,
            count: 5
        })
    );
    let full = kv.range(&a()).unwrap();
    let r = kv.range(&RangeQuery {
        keys_only: true,
        ..a()
    });
    let r = r.unwrap();
    assert_eq!(r.count, 5);
    for (got, kv) in r.kvs.iter().zip(&full.kvs) {
        assert_eq!(got.value, Bytes::new());
        assert_eq!(
            (&got.key, got.mod_revision, got.version),
            (&kv.key, kv.mod_revision, kv.version)
        );
    }
}

/// Keys whose version, create and mod revisions and values order them differently, with ties.
fn sortable() -> Kv {
    let mut kv = Kv::default();
    put(&mut kv, "k3", "x"); // 1
    put(&mut kv, "k1", "z"); // 2
    put(&mut kv, "k2", "y"); // 3
    put(&mut kv, "k4", "x"); // 4
    put(&mut kv, "k1", "w"); // 5: k1 version 2
    put(&mut kv, "k3", "x"); // 6: k3 version 2
    kv
}

fn sorted(kv: &Kv, target: SortTarget, order: SortOrder, limit: usize) -> (Vec<String>, bool) {
    let r = kv
        .range(&RangeQuery {
            sort_target: target,
            sort_order: order,
            limit,
            ..query(KeyRange::Prefix(b("k")))
        })
        .unwrap();
    assert_eq!(r.count, 4);
    (keys(&r), r.more)
}

#[test]
fn sorting_by_every_target_keeps_ties_in_key_order() {
    let kv = sortable();
    use SortOrder::{Ascend, Descend, None};
    use SortTarget::*;
    let cases = [
        (Key, None, ["k1", "k2", "k3", "k4"]),
        (Key, Ascend, ["k1", "k2", "k3", "k4"]),
        (Key, Descend, ["k4", "k3", "k2", "k1"]),
        // Versions: k1 2, k2 1, k3 2, k4 1.
        (Version, Ascend, ["k2", "k4", "k1", "k3"]),
        (Version, Descend, ["k1", "k3", "k2", "k4"]),
        // Created: k3 1, k1 2, k2 3, k4 4.
        (CreateRevision, Ascend, ["k3", "k1", "k2", "k4"]),
        (CreateRevision, Descend, ["k4", "k2", "k1", "k3"]),
        // Modified: k2 3, k4 4, k1 5, k3 6.
        (ModRevision, Ascend, ["k2", "k4", "k1", "k3"]),
        (ModRevision, Descend, ["k3", "k1", "k4", "k2"]),
        // Values: k1 w, k2 y, k3 x, k4 x.
        (Value, Ascend, ["k1", "k3", "k4", "k2"]),
        (Value, Descend, ["k2", "k3", "k4", "k1"]),
    ];
    for (target, order, want) in cases {
        assert_eq!(
            sorted(&kv, target, order, 0),
            (want.map(String::from).to_vec(), false)
        );
        // A limit applies after sorting.
        let (first, more) = sorted(&kv, target, order, 2);
        assert_eq!((&first[..], more), (&want.map(String::from)[..2], true));
    }
    // Sorting by a key's own order with no direction is key order.
    assert_eq!(sorted(&kv, Value, None, 0).0, ["k1", "k2", "k3", "k4"]);
}

#[test]
fn revision_filters() {
    let kv = sortable();
    let filtered = |min_mod, max_mod, min_create, max_create| {
        let r = kv
            .range(&RangeQuery {
                min_mod_revision: min_mod,
                max_mod_revision: max_mod,
                min_create_revision: min_create,
                max_create_revision: max_create,
                ..query(KeyRange::Prefix(b("k")))
            })
            .unwrap();
        // etcd's count: the keys of the range, filtered or not.
        assert_eq!(r.count, 4);
        keys(&r)
    };
    assert_eq!(filtered(0, 0, 0, 0), ["k1", "k2", "k3", "k4"]);
    assert_eq!(filtered(5, 0, 0, 0), ["k1", "k3"]);
    assert_eq!(filtered(0, 4, 0, 0), ["k2", "k4"]);
    assert_eq!(filtered(4, 5, 0, 0), ["k1", "k4"]);
    assert_eq!(filtered(0, 0, 2, 0), ["k1", "k2", "k4"]);
    assert_eq!(filtered(0, 0, 0, 2), ["k1", "k3"]);
    assert_eq!(filtered(0, 0, 2, 3), ["k1", "k2"]);
    assert_eq!(filtered(5, 0, 0, 1), ["k3"]);
    assert_eq!(filtered(7, 0, 0, 0), Vec::<String>::new());
}

/// The byte budget stops an answer once it reached it (with `more`), and never before the
/// first key; sorted answers too.
#[test]
fn the_byte_budget() {
    let mut kv = Kv::default();
    for i in 1..=5 {
        put(&mut kv, &format!("k{i}"), "12345678"); // 10 bytes each
    }
    let budget = |max_bytes, sort_order| {
        let r = kv
            .range(&RangeQuery {
                max_bytes,
                sort_order,
                ..query(KeyRange::Prefix(b("k")))
            })
            .unwrap();
        assert_eq!(r.count, 5);
        (keys(&r), r.more)
    };
    let first = |n: usize| (1..=n).map(|i| format!("k{i}")).collect::<Vec<_>>();
    for order in [SortOrder::None, SortOrder::Ascend] {
        assert_eq!(budget(0, order), (first(1), true));
        assert_eq!(budget(1, order), (first(1), true));
        assert_eq!(budget(10, order), (first(1), true));
        assert_eq!(budget(11, order), (first(2), true));
        assert_eq!(budget(25, order), (first(3), true));
        assert_eq!(budget(40, order), (first(4), true));
        assert_eq!(budget(41, order), (first(5), false));
        assert_eq!(budget(usize::MAX, order), (first(5), false));
    }
    assert_eq!(
        budget(25, SortOrder::Descend),
        (vec!["k5".into(), "k4".into(), "k3".into()], true)
    );
    // Keys only: values are not in the answer, so they do not count.
    let r = kv
        .range(&RangeQuery {
            max_bytes: 5,
            keys_only: true,
            ..query(KeyRange::Prefix(b("k")))
        })
        .unwrap();
    assert_eq!((keys(&r), r.more), (first(3), true));
}

#[test]
fn old_revisions_and_refused_ones() {
    let mut kv = Kv::default();
    put(&mut kv, "a", "1"); // 1
    put(&mut kv, "b", "1"); // 2
    put(&mut kv, "a", "2"); // 3
    delete(&mut kv, "b"); // 4
    let at = |kv: &Kv, r| read(kv, KeyRange::Prefix(Bytes::new()), r);
    let values = |r: RangeResult| {
        r.kvs
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(values(at(&kv, 1).unwrap()), ["a=1"]);
    assert_eq!(values(at(&kv, 2).unwrap()), ["a=1", "b=1"]);
    assert_eq!(values(at(&kv, 3).unwrap()), ["a=2", "b=1"]);
    assert_eq!(values(at(&kv, 4).unwrap()), ["a=2"]);
    assert_eq!(values(at(&kv, 0).unwrap()), ["a=2"]);
    // The answer names the current revision, whichever one was read.
    assert_eq!(at(&kv, 2).unwrap().revision, 4);
    assert_eq!(at(&kv, 5), Err(Refusal::FutureRevision { current: 4 }));
    assert_eq!(
        at(&kv, u64::MAX),
        Err(Refusal::FutureRevision { current: 4 })
    );
    super::run(&mut kv, crate::kv::Command::Compact { revision: 3 });
    for r in [1, 2] {
        assert_eq!(
            at(&kv, r),
            Err(Refusal::Compacted {
                compact_revision: 3
            })
        );
    }
    assert_eq!(values(at(&kv, 3).unwrap()), ["a=2", "b=1"]);
    // Refusals say what a client needs.
    assert_eq!(
        Refusal::Compacted {
            compact_revision: 3
        }
        .to_string(),
        "required revision has been compacted: the oldest revision available is 3"
    );
    assert_eq!(
        Refusal::FutureRevision { current: 4 }.to_string(),
        "required revision is a future revision: the current revision is 4"
    );
    // An empty store reads at revision 0 only.
    let empty = Kv::default();
    assert_eq!(at(&empty, 0).unwrap().count, 0);
    assert_eq!(at(&empty, 1), Err(Refusal::FutureRevision { current: 0 }));
}

#[test]
fn a_read_that_need_not_count_stops_at_its_limit() {
    let mut kv = Kv::default();
    for k in ["a", "b", "c", "d", "e"] {
        put(&mut kv, k, "v");
    }
    let q = RangeQuery {
        limit: 2,
        count_all: false,
        ..RangeQuery::new(KeyRange::Prefix(Bytes::new()))
    };
    let r = kv.range(&q).unwrap();
    assert_eq!(keys(&r), ["a", "b"]);
    assert!(r.more);
    // Counted up to the key that showed there were more, not to the end.
    assert_eq!(r.count, 3);
    let all = kv
        .range(&RangeQuery {
            count_all: true,
            ..q
        })
        .unwrap();
    assert_eq!((all.count, all.more), (5, true));
}
