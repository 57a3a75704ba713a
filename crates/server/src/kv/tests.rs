//! The state machine's semantics: revisions, versions, conditions, prefixes, transactions.

use super::*;

pub(super) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(super) fn put(kv: &mut Kv, k: &str, v: &str) -> Outcome {
    kv.apply(Command::put(k.into(), b(v)), &mut Vec::new())
}

#[test]
fn revisions_and_versions() {
    let mut kv = Kv::default();
    assert_eq!(
        put(&mut kv, "x", "1"),
        Outcome::Done {
            revision: 1,
            changed: 1
        }
    );
    put(&mut kv, "y", "a");
    put(&mut kv, "x", "2");
    let x = kv.get("x").unwrap();
    assert_eq!((x.create_revision, x.mod_revision, x.version), (1, 3, 2));
    assert_eq!(kv.revision(), 3);
    // Deleting a missing key changes nothing, not even the revision.
    let out = kv.apply(
        Command::Delete {
            key: "nope".into(),
            condition: None,
        },
        &mut Vec::new(),
    );
    assert_eq!(
        out,
        Outcome::Done {
            revision: 3,
            changed: 0
        }
    );
    // Recreated keys start over.
    let mut events = Vec::new();
    kv.apply(
        Command::Delete {
            key: "x".into(),
            condition: None,
        },
        &mut events,
    );
    put(&mut kv, "x", "3");
    let x = kv.get("x").unwrap();
    assert_eq!((x.create_revision, x.mod_revision, x.version), (5, 5, 1));
    assert_eq!(
        events,
        vec![Event {
            revision: 4,
            key: "x".into(),
            value: None
        }]
    );
}

#[test]
fn preconditions() {
    let mut kv = Kv::default();
    let mut ev = Vec::new();
    let absent = |k: &str, v: &str| Command::Put {
        key: k.into(),
        value: b(v),
        condition: Some(Precondition::Absent),
    };
    assert_eq!(
        kv.apply(absent("k", "1"), &mut ev),
        Outcome::Done {
            revision: 1,
            changed: 1
        }
    );
    assert_eq!(
        kv.apply(absent("k", "2"), &mut ev),
        Outcome::PreconditionFailed {
            current: 1,
            revision: 1
        }
    );
    let cas = |rev| Command::Put {
        key: "k".into(),
        value: b("cas"),
        condition: Some(Precondition::ModRevision(rev)),
    };
    assert_eq!(
        kv.apply(cas(9), &mut ev),
        Outcome::PreconditionFailed {
            current: 1,
            revision: 1
        }
    );
    assert_eq!(
        kv.apply(cas(1), &mut ev),
        Outcome::Done {
            revision: 2,
            changed: 1
        }
    );
    assert_eq!(kv.get("k").unwrap().value, b("cas"));
    // If-Match on a missing key fails with current 0.
    let del = Command::Delete {
        key: "gone".into(),
        condition: Some(Precondition::ModRevision(1)),
    };
    assert_eq!(
        kv.apply(del, &mut ev),
        Outcome::PreconditionFailed {
            current: 0,
            revision: 2
        }
    );
}

#[test]
fn prefix_range_and_delete() {
    let mut kv = Kv::default();
    for k in ["a", "p/1", "p/2", "p/3", "q"] {
        put(&mut kv, k, k);
    }
    let keys: Vec<&String> = kv.range_from("p/", None).map(|(k, _)| k).collect();
    assert_eq!(keys, ["p/1", "p/2", "p/3"]);
    let keys: Vec<&String> = kv.range_from("p/", Some("p/1")).map(|(k, _)| k).collect();
    assert_eq!(keys, ["p/2", "p/3"]);
    let keys: Vec<&String> = kv.range_from("", Some("p/3")).map(|(k, _)| k).collect();
    assert_eq!(keys, ["q"]);
    let mut ev = Vec::new();
    let out = kv.apply(
        Command::DeletePrefix {
            prefix: "p/".into(),
        },
        &mut ev,
    );
    assert_eq!(
        out,
        Outcome::Done {
            revision: 6,
            changed: 3
        }
    );
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|e| e.revision == 6 && e.value.is_none()));
    assert_eq!(kv.len(), 2);
}

#[test]
fn transactions_are_atomic() {
    let mut kv = Kv::default();
    put(&mut kv, "lock", "free");
    let take = Command::Txn {
        compares: vec![Compare {
            key: "lock".into(),
            op: CompareOp::Equal,
            target: CompareTarget::Value(b("free")),
        }],
        success: vec![
            TxnOp::Put {
                key: "lock".into(),
                value: b("held"),
            },
            TxnOp::Put {
                key: "owner".into(),
                value: b("me"),
            },
        ],
        failure: vec![],
    };
    let mut ev = Vec::new();
    assert_eq!(
        kv.apply(take.clone(), &mut ev),
        Outcome::Txn {
            succeeded: true,
            revision: 2
        }
    );
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| e.revision == 2));
    assert_eq!(
        kv.apply(take, &mut ev),
        Outcome::Txn {
            succeeded: false,
            revision: 2
        }
    );
    let missing = Compare {
        key: "nope".into(),
        op: CompareOp::Equal,
        target: CompareTarget::Exists(false),
    };
    assert!(kv.holds(&missing));
    let value_of_missing = Compare {
        key: "nope".into(),
        op: CompareOp::NotEqual,
        target: CompareTarget::Value(b("x")),
    };
    assert!(kv.holds(&value_of_missing));
}
