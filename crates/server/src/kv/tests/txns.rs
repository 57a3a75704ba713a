//! Transactions: every compare target (etcd's value rule and coordinate's), compares over
//! ranges, nesting, reads of the transaction's own writes, one revision at most, atomicity.

use bytes::Bytes;

use super::{b, put, put_leased, run};
use crate::kv::{
    Command, Compare, CompareOp, CompareTarget, DeleteRange, KeyRange, Kv, OpResponse, Outcome,
    Put, RangeQuery, Refusal, Txn, TxnOp, TxnOutcome,
};

fn cmp(range: KeyRange, op: CompareOp, target: CompareTarget) -> Compare {
    Compare { range, op, target }
}

fn key(k: &str) -> KeyRange {
    KeyRange::Key(b(k))
}

fn put_op(k: &str, v: &str) -> TxnOp {
    TxnOp::Put(Put::new(b(k), b(v)))
}

fn del_op(range: KeyRange) -> TxnOp {
    TxnOp::Delete(DeleteRange {
        range,
        prev_kv: true,
    })
}

fn txn(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Command {
    Command::Txn(Txn {
        compares,
        success,
        failure,
    })
}

/// Runs a transaction; its outcome (panics if refused).
fn outcome(kv: &mut Kv, cmd: Command) -> TxnOutcome {
    match run(kv, cmd) {
        Outcome::Txn(t) => t,
        other => panic!("{other:?}"),
    }
}

/// Whether a compare holds now (a transaction without ops tells).
fn holds(kv: &mut Kv, c: Compare) -> bool {
    outcome(kv, txn(vec![c], vec![], vec![])).succeeded
}

#[test]
fn transactions_are_atomic() {
    let mut kv = Kv::default();
    put(&mut kv, "lock", "free");
    let take = txn(
        vec![cmp(
            key("lock"),
            CompareOp::Equal,
            CompareTarget::Value(b("free")),
        )],
        vec![put_op("lock", "held"), put_op("owner", "me")],
        vec![],
    );
    let mut ev = Vec::new();
    let Outcome::Txn(t) = kv.apply(0, take.clone(), &mut ev) else {
        panic!("not a transaction");
    };
    assert_eq!((t.succeeded, t.revision), (true, 2));
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| e.revision() == 2));
    assert_eq!(
        t.responses[0],
        OpResponse::Put {
            prev: kv
                .range(&RangeQuery {
                    revision: 1,
                    ..RangeQuery::key(b("lock"))
                })
                .unwrap()
                .kvs
                .pop()
        }
    );
    assert_eq!(t.responses[1], OpResponse::Put { prev: None });
    let t = outcome(&mut kv, take);
    assert_eq!((t.succeeded, t.revision, t.responses), (false, 2, vec![]));
}

/// Each target on a present and an absent key, with each operator.
#[test]
fn compare_targets() {
    use CompareOp::*;
    use CompareTarget as T;
    let mut kv = Kv::default();
    run(&mut kv, Command::LeaseGrant { id: 5, ttl: 10 });
    put(&mut kv, "other", "o"); // 1
    put_leased(&mut kv, "k", "m", 5); // 2
    put_leased(&mut kv, "k", "m", 5); // 3: create 2, mod 3, version 2
    let cases: Vec<(T, [bool; 4], [bool; 4])> = vec![
        // Target: (==, !=, >, <) on "k", then on a missing key.
        (T::Value(b("m")), [true, false, false, false], [false; 4]),
        (T::Value(b("a")), [false, true, true, false], [false; 4]),
        (T::Value(b("z")), [false, true, false, true], [false; 4]),
        // The empty value: an absent key still fails (etcd's rule).
        (
            T::Value(Bytes::new()),
            [false, true, true, false],
            [false; 4],
        ),
        (
            T::ValueOrMissing(b("m")),
            [true, false, false, false],
            [false, true, false, false],
        ),
        (
            T::ValueOrMissing(b("z")),
            [false, true, false, true],
            [false, true, false, false],
        ),
        (
            T::ModRevision(3),
            [true, false, false, false],
            [false, true, false, true],
        ),
        (
            T::ModRevision(0),
            [false, true, true, false],
            [true, false, false, false],
        ),
        (
            T::CreateRevision(2),
            [true, false, false, false],
            [false, true, false, true],
        ),
        (
            T::CreateRevision(3),
            [false, true, false, true],
            [false, true, false, true],
        ),
        (
            T::Version(2),
            [true, false, false, false],
            [false, true, false, true],
        ),
        (
            T::Version(0),
            [false, true, true, false],
            [true, false, false, false],
        ),
        (
            T::Lease(5),
            [true, false, false, false],
            [false, true, false, true],
        ),
        (
            T::Lease(0),
            [false, true, true, false],
            [true, false, false, false],
        ),
        (
            T::Exists(true),
            [true, false, false, false],
            [false, true, false, true],
        ),
        (
            T::Exists(false),
            [false, true, true, false],
            [true, false, false, false],
        ),
    ];
    for (target, present, absent) in cases {
        for (k, want) in [("k", present), ("missing", absent)] {
            for (op, want) in [Equal, NotEqual, Greater, Less].into_iter().zip(want) {
                let c = cmp(key(k), op, target.clone());
                assert_eq!(holds(&mut kv, c), want, "{k} {op:?} {target:?}");
            }
        }
    }
    assert_eq!(kv.revision(), 3, "compares change nothing");
}

#[test]
fn compares_over_ranges() {
    use CompareOp::*;
    use CompareTarget as T;
    let mut kv = Kv::default();
    put(&mut kv, "p/a", "1");
    put(&mut kv, "p/b", "1");
    put(&mut kv, "p/c", "2");
    let p = || KeyRange::Prefix(b("p/"));
    // Every key must hold.
    assert!(holds(&mut kv, cmp(p(), Greater, T::Value(b("0")))));
    assert!(!holds(&mut kv, cmp(p(), Equal, T::Value(b("1")))));
    assert!(holds(
        &mut kv,
        cmp(
            KeyRange::Between(b("p/a"), b("p/c")),
            Equal,
            T::Value(b("1"))
        )
    ));
    assert!(holds(&mut kv, cmp(p(), Less, T::ModRevision(4))));
    assert!(!holds(&mut kv, cmp(p(), Less, T::ModRevision(3))));
    assert!(holds(
        &mut kv,
        cmp(KeyRange::FromKey(b("p/b")), Greater, T::CreateRevision(1))
    ));
    // A range without keys compares like an absent key; an inverted one too, no panic.
    for empty in [
        KeyRange::Prefix(b("q/")),
        KeyRange::Between(b("p/c"), b("p/a")),
        KeyRange::Between(b("p/b"), b("p/b")),
    ] {
        assert!(
            holds(&mut kv, cmp(empty.clone(), Equal, T::Version(0))),
            "{empty:?}"
        );
        assert!(
            holds(&mut kv, cmp(empty.clone(), Equal, T::Exists(false))),
            "{empty:?}"
        );
        assert!(
            !holds(&mut kv, cmp(empty.clone(), NotEqual, T::Value(b("x")))),
            "{empty:?}"
        );
        assert!(holds(
            &mut kv,
            cmp(empty.clone(), NotEqual, T::ValueOrMissing(b("x")))
        ));
    }
}

/// Every compare on the taken path is decided before the first write, and a read inside the
/// transaction sees its earlier writes (at the current revision) or the past (at an old one).
#[test]
fn nesting_and_reads_of_the_transactions_own_writes() {
    let mut kv = Kv::default();
    put(&mut kv, "k", "1");
    put(&mut kv, "gone", "g");
    let k_is_1 = || cmp(key("k"), CompareOp::Equal, CompareTarget::Value(b("1")));
    let nested = Txn {
        compares: vec![k_is_1()],
        success: vec![put_op("nested", "saw k = 1")],
        failure: vec![put_op("nested", "saw k = 2")],
    };
    let t = outcome(
        &mut kv,
        txn(
            vec![k_is_1()],
            vec![
                TxnOp::Range(RangeQuery::key(b("k"))),
                put_op("k", "2"),
                del_op(key("gone")),
                TxnOp::Txn(nested),
                TxnOp::Range(RangeQuery::new(KeyRange::Prefix(Bytes::new()))),
                TxnOp::Range(RangeQuery {
                    revision: 2,
                    ..RangeQuery::new(KeyRange::Prefix(Bytes::new()))
                }),
            ],
            vec![],
        ),
    );
    assert_eq!((t.succeeded, t.revision), (true, 3));
    let range = |i: usize| match &t.responses[i] {
        OpResponse::Range(r) => r
            .kvs
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                )
            })
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(range(0), ["k=1"]);
    assert!(matches!(&t.responses[2], OpResponse::Delete { deleted: 1, prev } if prev.len() == 1));
    let OpResponse::Txn(n) = &t.responses[3] else {
        panic!("{:?}", t.responses[3]);
    };
    assert_eq!((n.succeeded, n.revision), (true, 3));
    assert_eq!(range(4), ["k=2", "nested=saw k = 1"]);
    assert_eq!(range(5), ["gone=g", "k=1"]);
    // Every write of every level went in one revision.
    let (events, next) = kv.changes(3, usize::MAX).unwrap();
    assert_eq!((events.len(), next), (3, 4));
}

#[test]
fn one_revision_or_none() {
    let mut kv = Kv::default();
    put(&mut kv, "k", "1");
    // Nothing changed (a delete of nothing, reads): no revision.
    let t = outcome(
        &mut kv,
        txn(
            vec![],
            vec![
                del_op(key("missing")),
                TxnOp::Range(RangeQuery::key(b("k"))),
            ],
            vec![],
        ),
    );
    assert_eq!((t.succeeded, t.revision, kv.revision()), (true, 1, 1));
    assert!(matches!(
        &t.responses[0],
        OpResponse::Delete { deleted: 0, .. }
    ));
    // A key written twice: one version, one event, versions counted per write.
    let mut ev = Vec::new();
    let two = txn(
        vec![],
        vec![put_op("k", "2"), put_op("new", "a"), put_op("k", "3")],
        vec![],
    );
    kv.apply(0, two, &mut ev);
    assert_eq!(kv.revision(), 2);
    let k = kv.get(b"k").unwrap();
    assert_eq!(
        (&k.value, k.create_revision, k.mod_revision, k.version),
        (&b("3"), 1, 2, 3)
    );
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        (ev[0].kv.clone(), ev[0].prev.as_ref().map(|p| p.version)),
        (k, Some(1))
    );
    assert_eq!(kv.changes(2, usize::MAX).unwrap().0, ev);
    assert_eq!(kv.total_bytes(), 2 + 2 + 4);
    // Put then delete: gone at the revision, one delete event with the key before it.
    let mut ev = Vec::new();
    kv.apply(
        0,
        txn(vec![], vec![put_op("k", "4"), del_op(key("k"))], vec![]),
        &mut ev,
    );
    assert_eq!((kv.revision(), kv.get(b"k")), (3, None));
    assert_eq!(ev.len(), 1);
    assert!(ev[0].deleted);
    assert_eq!(ev[0].prev.as_ref().map(|p| p.value.clone()), Some(b("3")));
    assert_eq!(kv.changes(3, usize::MAX).unwrap().0, ev);
    // Delete then put: re-created in the revision.
    let mut ev = Vec::new();
    kv.apply(
        0,
        txn(vec![], vec![del_op(key("new")), put_op("new", "b")], vec![]),
        &mut ev,
    );
    let new = kv.get(b"new").unwrap();
    assert_eq!((new.create_revision, new.version), (4, 1));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].prev.as_ref().map(|p| p.value.clone()), Some(b("a")));
    assert_eq!(kv.changes(4, usize::MAX).unwrap().0, ev);
}

#[test]
fn a_refused_op_on_the_taken_path_refuses_the_whole_transaction() {
    let mut kv = Kv::default();
    put(&mut kv, "k", "1");
    put(&mut kv, "k", "2");
    let snapshot = kv.snapshot();
    let leased = TxnOp::Put(Put {
        lease: 9,
        ..Put::new(b("x"), b("v"))
    });
    let refused = [
        (
            txn(vec![], vec![put_op("a", "1"), leased.clone()], vec![]),
            Refusal::LeaseNotFound(9),
        ),
        (
            txn(
                vec![],
                vec![
                    put_op("a", "1"),
                    TxnOp::Txn(Txn {
                        success: vec![leased.clone()],
                        ..Txn::default()
                    }),
                ],
                vec![],
            ),
            Refusal::LeaseNotFound(9),
        ),
        (
            txn(
                vec![],
                vec![
                    put_op("a", "1"),
                    TxnOp::Put(Put {
                        ignore_value: true,
                        ..Put::new(b("nope"), Bytes::new())
                    }),
                ],
                vec![],
            ),
            Refusal::KeyNotFound,
        ),
        (
            txn(
                vec![],
                vec![
                    put_op("a", "1"),
                    TxnOp::Range(RangeQuery {
                        revision: 3,
                        ..RangeQuery::key(b("k"))
                    }),
                ],
                vec![],
            ),
            Refusal::FutureRevision { current: 2 },
        ),
    ];
    for (cmd, refusal) in refused {
        assert_eq!(run(&mut kv, cmd), Outcome::Refused(refusal));
        assert_eq!(kv.snapshot(), snapshot);
    }
    run(&mut kv, Command::Compact { revision: 2 });
    let old = txn(
        vec![],
        vec![TxnOp::Range(RangeQuery {
            revision: 1,
            ..RangeQuery::key(b("k"))
        })],
        vec![],
    );
    assert_eq!(
        run(&mut kv, old),
        Outcome::Refused(Refusal::Compacted {
            compact_revision: 2
        })
    );
    // A refused op on the branch not taken does not matter.
    let t = outcome(&mut kv, txn(vec![], vec![put_op("a", "1")], vec![leased]));
    assert_eq!((t.succeeded, t.revision), (true, 3));
    // A put created earlier in the transaction can keep its value.
    let keep = TxnOp::Put(Put {
        ignore_value: true,
        ..Put::new(b("fresh"), Bytes::new())
    });
    let t = outcome(
        &mut kv,
        txn(vec![], vec![put_op("fresh", "f"), keep], vec![]),
    );
    assert_eq!(t.revision, 4);
    assert_eq!(kv.get(b"fresh").unwrap().value, b("f"));
}
