//! The NOSPACE alarm: growing writes refused with nothing changed, deletes, compaction,
//! revocations and reads still applied, and writes back once it is cleared.

use super::{b, put, put_leased, run};
use crate::kv::{
    Alarm, AlarmKind, Command, Compare, CompareOp, CompareTarget, Delete, DeleteRange, KeyRange,
    Kv, OpResponse, Outcome, RangeQuery, Refusal, Txn, TxnOp,
};

fn alarm(member: u64) -> Alarm {
    Alarm {
        member,
        kind: AlarmKind::NoSpace,
    }
}

fn set(kv: &mut Kv, member: u64, active: bool) -> Outcome {
    run(
        kv,
        Command::Alarm {
            alarm: alarm(member),
            active,
        },
    )
}

fn txn(success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Command {
    Command::Txn(Txn {
        compares: vec![Compare {
            range: KeyRange::Key(b("a")),
            op: CompareOp::Equal,
            target: CompareTarget::Exists(true),
        }],
        success,
        failure,
    })
}

fn read_op(k: &str) -> TxnOp {
    TxnOp::Range(RangeQuery::key(b(k)))
}

fn put_op(k: &str) -> TxnOp {
    TxnOp::Put(crate::kv::Put::new(b(k), b("v")))
}

/// A store with keys, a lease with a key, and the alarm raised by member 1.
fn full() -> Kv {
    let mut kv = Kv::default();
    run(&mut kv, Command::LeaseGrant { id: 1, ttl: 10 });
    put(&mut kv, "a", "1");
    put(&mut kv, "b", "1");
    put_leased(&mut kv, "l", "1", 1);
    assert_eq!(set(&mut kv, 1, true), Outcome::Alarms(vec![alarm(1)]));
    kv
}

#[test]
fn growing_writes_are_refused_with_nothing_changed() {
    let mut kv = full();
    let snapshot = kv.snapshot();
    let refused = [
        Command::put(b("a"), b("2")),
        Command::put(b("new"), b("")),
        Command::LeaseGrant { id: 2, ttl: 10 },
        txn(vec![put_op("x")], vec![]),
        // Whichever branch runs: the other one writes.
        txn(vec![read_op("a")], vec![put_op("x")]),
        txn(
            vec![TxnOp::Txn(Txn {
                success: vec![put_op("x")],
                ..Txn::default()
            })],
            vec![],
        ),
        // A transaction's delete counts as a write (etcd's capped applier).
        txn(
            vec![TxnOp::Delete(DeleteRange {
                range: KeyRange::Key(b("b")),
                prev_kv: false,
            })],
            vec![],
        ),
    ];
    for cmd in refused {
        assert_eq!(
            run(&mut kv, cmd.clone()),
            Outcome::Refused(Refusal::NoSpace),
            "{cmd:?}"
        );
        assert_eq!(kv.snapshot(), snapshot, "{cmd:?} changed something");
    }
}

#[test]
fn deletes_compaction_revocation_and_reads_still_apply() {
    let mut kv = full();
    let out = run(&mut kv, txn(vec![read_op("a"), read_op("b")], vec![]));
    let Outcome::Txn(t) = out else {
        panic!("{out:?}");
    };
    assert!(t.succeeded);
    assert!(matches!(&t.responses[0], OpResponse::Range(r) if r.kvs[0].value == b("1")));
    let del = Command::Delete(Delete {
        key: b("a"),
        condition: None,
    });
    assert!(matches!(
        run(&mut kv, del),
        Outcome::Deleted { deleted: 1, .. }
    ));
    let del = Command::DeleteRange(DeleteRange {
        range: KeyRange::Prefix(b("b")),
        prev_kv: false,
    });
    assert!(matches!(
        run(&mut kv, del),
        Outcome::Deleted { deleted: 1, .. }
    ));
    assert_eq!(
        run(&mut kv, Command::Compact { revision: 4 }),
        Outcome::Compacted { revision: 4 }
    );
    assert!(matches!(
        run(&mut kv, Command::LeaseKeepAlive { id: 1 }),
        Outcome::LeaseRenewed { .. }
    ));
    assert!(matches!(
        run(&mut kv, Command::LeaseRevoke { id: 1 }),
        Outcome::LeaseRevoked { deleted: 1, .. }
    ));
    assert!(kv.is_empty());
}

#[test]
fn clearing_the_alarm_restores_writes() {
    let mut kv = full();
    // Raised by two members: both must clear it.
    assert_eq!(
        set(&mut kv, 2, true),
        Outcome::Alarms(vec![alarm(1), alarm(2)])
    );
    assert_eq!(
        set(&mut kv, 2, true),
        Outcome::Alarms(vec![alarm(1), alarm(2)])
    );
    assert_eq!(set(&mut kv, 1, false), Outcome::Alarms(vec![alarm(2)]));
    assert_eq!(put(&mut kv, "a", "2"), Outcome::Refused(Refusal::NoSpace));
    assert_eq!(set(&mut kv, 2, false), Outcome::Alarms(vec![]));
    // Clearing one not raised changes nothing.
    assert_eq!(set(&mut kv, 3, false), Outcome::Alarms(vec![]));
    assert!(matches!(
        put(&mut kv, "a", "2"),
        Outcome::Put { revision: 4, .. }
    ));
    assert!(matches!(
        run(&mut kv, Command::LeaseGrant { id: 2, ttl: 5 }),
        Outcome::LeaseGranted { id: 2, ttl: 5 }
    ));
    assert!(matches!(
        run(&mut kv, txn(vec![put_op("x")], vec![])),
        Outcome::Txn(_)
    ));
    assert_eq!(kv.alarms().count(), 0);
}
