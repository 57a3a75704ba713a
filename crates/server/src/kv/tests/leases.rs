//! Leases: grant, attach and detach, revocation in one revision, keep-alive and the expiry
//! rule, `ignore_lease` / `ignore_value`.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::{b, delete, put, put_leased, run};
use crate::kv::{Command, DeleteRange, KeyRange, Kv, LeaseId, Outcome, Put, Refusal, Txn, TxnOp};

fn grant(kv: &mut Kv, index: u64, id: LeaseId, ttl: i64) -> Outcome {
    kv.apply(index, Command::LeaseGrant { id, ttl }, &mut Vec::new())
}

fn attached(kv: &Kv, id: LeaseId) -> Vec<Bytes> {
    kv.lease(id)
        .expect("the lease exists")
        .keys
        .iter()
        .cloned()
        .collect()
}

fn lease_of(kv: &Kv, k: &str) -> LeaseId {
    kv.get(k.as_bytes()).expect("the key exists").lease
}

#[test]
fn grants() {
    let mut kv = Kv::default();
    assert_eq!(
        grant(&mut kv, 3, 7, 10),
        Outcome::LeaseGranted { id: 7, ttl: 10 }
    );
    let lease = kv.lease(7).unwrap();
    assert_eq!((lease.ttl, lease.renewed_at, lease.keys.len()), (10, 3, 0));
    assert_eq!(
        grant(&mut kv, 4, 7, 99),
        Outcome::Refused(Refusal::LeaseExists(7))
    );
    assert_eq!(
        (kv.lease(7).unwrap().ttl, kv.lease(7).unwrap().renewed_at),
        (10, 3)
    );
    // 0 is "no lease" in a put: never a lease's id.
    assert_eq!(
        grant(&mut kv, 4, 0, 10),
        Outcome::Refused(Refusal::LeaseNotFound(0))
    );
    grant(&mut kv, 5, -2, 1);
    let ids: Vec<LeaseId> = kv.leases().map(|(id, _)| *id).collect();
    assert_eq!(ids, [-2, 7]);
    // A grant is no change to the data.
    assert_eq!(kv.revision(), 0);
}

#[test]
fn puts_attach_detach_and_reattach() {
    let mut kv = Kv::default();
    grant(&mut kv, 1, 1, 10);
    grant(&mut kv, 2, 2, 10);
    put(&mut kv, "k", "0");
    // A missing lease refuses the put; nothing changes.
    let bytes = kv.total_bytes();
    assert_eq!(
        put_leased(&mut kv, "k", "x", 9),
        Outcome::Refused(Refusal::LeaseNotFound(9))
    );
    assert_eq!(
        put_leased(&mut kv, "new", "x", 9),
        Outcome::Refused(Refusal::LeaseNotFound(9))
    );
    assert_eq!((kv.revision(), kv.total_bytes(), kv.len()), (1, bytes, 1));
    assert_eq!(kv.get(b"k").unwrap().value, b("0"));
    put_leased(&mut kv, "k", "1", 1);
    assert_eq!((lease_of(&kv, "k"), attached(&kv, 1)), (1, vec![b("k")]));
    put_leased(&mut kv, "k", "2", 2);
    assert_eq!((attached(&kv, 1), attached(&kv, 2)), (vec![], vec![b("k")]));
    put(&mut kv, "k", "3");
    assert_eq!((lease_of(&kv, "k"), attached(&kv, 2)), (0, vec![]));
    put_leased(&mut kv, "k", "4", 2);
    put_leased(&mut kv, "j", "4", 2);
    assert_eq!(attached(&kv, 2), [b("j"), b("k")]);
    // History keeps the lease each version had.
    let at = |r| super::read(&kv, KeyRange::Key(b("k")), r).unwrap().kvs[0].lease;
    assert_eq!([at(1), at(2), at(3), at(4), at(5)], [0, 1, 2, 0, 2]);
}

#[test]
fn deletes_detach() {
    let mut kv = Kv::default();
    grant(&mut kv, 1, 1, 10);
    for k in ["a", "b", "c", "d"] {
        put_leased(&mut kv, k, k, 1);
    }
    delete(&mut kv, "a");
    let range = |range| {
        Command::DeleteRange(DeleteRange {
            range,
            prev_kv: false,
        })
    };
    run(&mut kv, range(KeyRange::Key(b("b"))));
    let txn = Txn {
        success: vec![TxnOp::Delete(DeleteRange {
            range: KeyRange::Prefix(b("c")),
            prev_kv: false,
        })],
        ..Txn::default()
    };
    run(&mut kv, Command::Txn(txn));
    assert_eq!(attached(&kv, 1), [b("d")]);
    // A re-created key is not attached unless the put says so.
    put(&mut kv, "a", "again");
    assert_eq!(attached(&kv, 1), [b("d")]);
}

#[test]
fn a_revocation_deletes_every_attached_key_in_one_revision() {
    let mut kv = Kv::default();
    grant(&mut kv, 1, 1, 10);
    grant(&mut kv, 2, 2, 10);
    for k in ["a", "b", "c"] {
        put_leased(&mut kv, k, k, 1);
    }
    put_leased(&mut kv, "other", "o", 2);
    put(&mut kv, "free", "f");
    let mut events = Vec::new();
    let out = kv.apply(9, Command::LeaseRevoke { id: 1 }, &mut events);
    assert_eq!(
        out,
        Outcome::LeaseRevoked {
            id: 1,
            revision: 6,
            deleted: 3
        }
    );
    assert_eq!(kv.revision(), 6);
    assert!(kv.lease(1).is_none());
    let deleted: Vec<Bytes> = events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(deleted, [b("a"), b("b"), b("c")]);
    assert!(events
        .iter()
        .all(|e| e.deleted && e.revision() == 6 && e.prev.is_some()));
    assert_eq!(kv.changes(6, usize::MAX).unwrap(), (events, 7));
    let left: BTreeSet<Bytes> = super::read(&kv, KeyRange::Prefix(Bytes::new()), 0)
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, [b("free"), b("other")].into());
    // Twice: the lease is gone.
    assert_eq!(
        run(&mut kv, Command::LeaseRevoke { id: 1 }),
        Outcome::Refused(Refusal::LeaseNotFound(1))
    );
    // A lease without keys goes without a revision.
    grant(&mut kv, 10, 3, 10);
    let mut events = Vec::new();
    let out = kv.apply(11, Command::LeaseRevoke { id: 3 }, &mut events);
    assert_eq!(
        out,
        Outcome::LeaseRevoked {
            id: 3,
            revision: 6,
            deleted: 0
        }
    );
    assert!(events.is_empty());
    assert_eq!(kv.revision(), 6);
}

#[test]
fn keep_alives_and_the_expiry_rule() {
    let mut kv = Kv::default();
    grant(&mut kv, 4, 1, 10);
    put_leased(&mut kv, "k", "v", 1);
    let keep_alive =
        |kv: &mut Kv, index| kv.apply(index, Command::LeaseKeepAlive { id: 1 }, &mut Vec::new());
    assert_eq!(
        keep_alive(&mut kv, 7),
        Outcome::LeaseRenewed { id: 1, ttl: 10 }
    );
    assert_eq!(kv.lease(1).unwrap().renewed_at, 7);
    assert_eq!(
        kv.apply(8, Command::LeaseKeepAlive { id: 5 }, &mut Vec::new()),
        Outcome::Refused(Refusal::LeaseNotFound(5))
    );
    // An expiry decided on the grant is void: a keep-alive applied since.
    let expire = |renewed_at| Command::LeaseExpire { id: 1, renewed_at };
    assert_eq!(run(&mut kv, expire(4)), Outcome::LeaseStillAlive { id: 1 });
    assert_eq!(run(&mut kv, expire(8)), Outcome::LeaseStillAlive { id: 1 });
    assert_eq!((kv.revision(), kv.len()), (1, 1));
    assert!(kv.lease(1).is_some());
    // Decided on the last keep-alive: it revokes.
    let mut events = Vec::new();
    let out = kv.apply(9, expire(7), &mut events);
    assert_eq!(
        out,
        Outcome::LeaseRevoked {
            id: 1,
            revision: 2,
            deleted: 1
        }
    );
    assert_eq!((events.len(), kv.len()), (1, 0));
    assert!(kv.lease(1).is_none());
    assert_eq!(
        run(&mut kv, expire(7)),
        Outcome::Refused(Refusal::LeaseNotFound(1))
    );
}

#[test]
fn ignore_lease_and_ignore_value() {
    let mut kv = Kv::default();
    grant(&mut kv, 1, 1, 10);
    grant(&mut kv, 2, 2, 10);
    put_leased(&mut kv, "k", "v1", 1);
    let ignoring = |value: &str, lease, ignore_value, ignore_lease| {
        Command::Put(Put {
            lease,
            ignore_value,
            ignore_lease,
            ..Put::new(b("k"), b(value))
        })
    };
    // Keep the lease, change the value.
    run(&mut kv, ignoring("v2", 0, false, true));
    let k = kv.get(b"k").unwrap();
    assert_eq!((k.value, k.lease, k.version), (b("v2"), 1, 2));
    // Keep the value, move the lease.
    run(&mut kv, ignoring("ignored", 2, true, false));
    let k = kv.get(b"k").unwrap();
    assert_eq!((k.value, k.lease, k.version), (b("v2"), 2, 3));
    assert_eq!((attached(&kv, 1), attached(&kv, 2)), (vec![], vec![b("k")]));
    // Both: a new version of the same.
    let out = run(&mut kv, ignoring("", 0, true, true));
    assert!(matches!(out, Outcome::Put { revision: 4, .. }));
    let k = kv.get(b"k").unwrap();
    assert_eq!((k.value, k.lease, k.mod_revision), (b("v2"), 2, 4));
    // With ignore_lease, the put's own lease is not looked up.
    assert!(matches!(
        run(&mut kv, ignoring("v", 9, false, true)),
        Outcome::Put { .. }
    ));
    assert_eq!(lease_of(&kv, "k"), 2);
    // On a missing key, either is refused; nothing changes.
    delete(&mut kv, "k");
    let revision = kv.revision();
    for (v, l) in [(true, false), (false, true), (true, true)] {
        assert_eq!(
            run(&mut kv, ignoring("x", 0, v, l)),
            Outcome::Refused(Refusal::KeyNotFound)
        );
    }
    assert_eq!((kv.revision(), kv.len()), (revision, 0));
}

/// A transaction that deletes a key and then puts it keeping its lease has no lease to keep:
/// refused whole, never a key attached to a lease that does not hold it.
#[test]
fn ignore_lease_after_a_delete_in_one_transaction() {
    let mut kv = Kv::default();
    grant(&mut kv, 1, 1, 10);
    put_leased(&mut kv, "k", "v", 1);
    let txn = Txn {
        success: vec![
            TxnOp::Delete(DeleteRange {
                range: KeyRange::Key(b("k")),
                prev_kv: false,
            }),
            TxnOp::Put(Put {
                lease: 99,
                ignore_lease: true,
                ..Put::new(b("k"), b("w"))
            }),
        ],
        ..Txn::default()
    };
    assert_eq!(
        run(&mut kv, Command::Txn(txn)),
        Outcome::Refused(Refusal::KeyNotFound)
    );
    assert_eq!((kv.revision(), lease_of(&kv, "k")), (1, 1));
    assert_eq!(Kv::restore(kv.snapshot()).unwrap(), kv);
}
