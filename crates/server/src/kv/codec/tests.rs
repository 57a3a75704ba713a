//! The command encoding: round trips of every command in both forms, the bytes of every kind
//! pinned (version 1's short forms as every earlier build wrote them), which form is written,
//! unknown versions and kinds refused by name, and arbitrary bytes never a panic.

use bytes::Bytes;
use proptest::prelude::*;

use super::{ENVELOPE, FORMAT_VERSION, MAX_TXN_DEPTH};
use crate::kv::tests::b;
use crate::kv::{
    Alarm, AlarmKind, Command, Compare, CompareOp, CompareTarget, Delete, DeleteRange, KeyRange,
    MemberAttributes, Precondition, Put, RangeQuery, SortOrder, SortTarget, Txn, TxnOp,
};

fn raw(k: &[u8]) -> Bytes {
    Bytes::copy_from_slice(k)
}

/// The command as the envelope carries it: every range in etcd's `key`/`range_end` terms (a
/// prefix comes back as the range it covers).
fn canonical(cmd: &Command) -> Command {
    fn range(r: &KeyRange) -> KeyRange {
        let (k, e) = r.to_etcd();
        KeyRange::from_etcd(k, e)
    }
    fn ops(ops: &[TxnOp]) -> Vec<TxnOp> {
        ops.iter()
            .map(|op| match op {
                TxnOp::Delete(d) => TxnOp::Delete(DeleteRange {
                    range: range(&d.range),
                    ..d.clone()
                }),
                TxnOp::Range(q) => TxnOp::Range(RangeQuery {
                    range: range(&q.range),
                    ..q.clone()
                }),
                TxnOp::Txn(t) => TxnOp::Txn(txn(t)),
                TxnOp::Put(_) => op.clone(),
            })
            .collect()
    }
    fn txn(t: &Txn) -> Txn {
        Txn {
            compares: t
                .compares
                .iter()
                .map(|c| Compare {
                    range: range(&c.range),
                    ..c.clone()
                })
                .collect(),
            success: ops(&t.success),
            failure: ops(&t.failure),
        }
    }
    match cmd {
        Command::DeleteRange(d) => Command::DeleteRange(DeleteRange {
            range: range(&d.range),
            ..d.clone()
        }),
        Command::Txn(t) => Command::Txn(txn(t)),
        other => other.clone(),
    }
}

/// Checks both encodings of `cmd` decode to it (the envelope's ranges in etcd's terms), and
/// that no cut of either panics.
fn round_trip(cmd: &Command) {
    let written = cmd.encode();
    let enveloped = cmd.encode_enveloped();
    assert_eq!(enveloped[..2], [ENVELOPE, FORMAT_VERSION]);
    assert_eq!(
        Command::decode(enveloped.clone()).unwrap(),
        canonical(cmd),
        "{cmd:?}"
    );
    let want = match written[0] {
        ENVELOPE => canonical(cmd),
        _ => cmd.clone(),
    };
    assert_eq!(Command::decode(written.clone()).unwrap(), want, "{cmd:?}");
    for data in [written, enveloped] {
        for cut in 0..data.len() {
            let _ = Command::decode(data.slice(..cut));
        }
    }
}

fn compare(range: KeyRange, op: CompareOp, target: CompareTarget) -> Compare {
    Compare { range, op, target }
}

fn every_query_field() -> RangeQuery {
    RangeQuery {
        range: KeyRange::Key(b("k")),
        revision: 1,
        limit: 2,
        max_bytes: 3,
        keys_only: true,
        count_only: false,
        count_all: true,
        sort_target: SortTarget::ModRevision,
        sort_order: SortOrder::Descend,
        min_mod_revision: 4,
        max_mod_revision: 5,
        min_create_revision: 6,
        max_create_revision: 7,
    }
}

/// One command of each variant, with every condition, compare target and op.
fn examples() -> Vec<Command> {
    let conditions = [
        None,
        Some(Precondition::ModRevision(7)),
        Some(Precondition::Absent),
        Some(Precondition::Present),
    ];
    let mut cmds = Vec::new();
    for condition in conditions {
        cmds.push(Command::Put(Put {
            condition,
            ..Put::new(b("a/b c"), b("hello"))
        }));
        cmds.push(Command::Delete(Delete {
            key: b("k"),
            condition,
        }));
        cmds.push(Command::Delete(Delete {
            key: raw(b"\xff\x00"),
            condition,
        }));
    }
    cmds.extend([
        Command::Put(Put {
            lease: -3,
            ignore_value: true,
            ignore_lease: true,
            condition: Some(Precondition::Present),
            ..Put::new(raw(b"\xff"), Bytes::new())
        }),
        Command::DeleteRange(DeleteRange {
            range: KeyRange::Prefix(b("p/")),
            prev_kv: false,
        }),
        Command::DeleteRange(DeleteRange {
            range: KeyRange::Prefix(Bytes::new()),
            prev_kv: true,
        }),
        Command::DeleteRange(DeleteRange {
            range: KeyRange::Between(b("a"), raw(b"\xff")),
            prev_kv: false,
        }),
        Command::DeleteRange(DeleteRange {
            range: KeyRange::FromKey(b("m")),
            prev_kv: true,
        }),
        Command::Compact { revision: 9 },
        Command::LeaseGrant { id: 5, ttl: 60 },
        Command::LeaseRevoke { id: 5 },
        Command::LeaseKeepAlive { id: i64::MIN },
        Command::LeaseExpire {
            id: 5,
            renewed_at: u64::MAX,
        },
        Command::Alarm {
            alarm: Alarm {
                member: 3,
                kind: AlarmKind::NoSpace,
            },
            active: true,
        },
    ]);
    cmds.push(short_txn());
    cmds.push(long_txn());
    cmds
}

/// A transaction version 1 can say.
fn short_txn() -> Command {
    Command::Txn(Txn {
        compares: vec![
            compare(
                KeyRange::Key(b("x")),
                CompareOp::Equal,
                CompareTarget::ValueOrMissing(b("1")),
            ),
            compare(
                KeyRange::Key(b("y")),
                CompareOp::Less,
                CompareTarget::ModRevision(3),
            ),
            compare(
                KeyRange::Key(b("z")),
                CompareOp::Greater,
                CompareTarget::Version(1),
            ),
            compare(
                KeyRange::Key(b("w")),
                CompareOp::NotEqual,
                CompareTarget::Exists(true),
            ),
        ],
        success: vec![TxnOp::Put(Put::new(b("x"), b("2")))],
        failure: vec![TxnOp::Delete(DeleteRange {
            range: KeyRange::Key(b("x")),
            prev_kv: false,
        })],
    })
}

/// A transaction with every target and op of kind 8, nested.
fn long_txn() -> Command {
    let targets = [
        CompareTarget::Value(b("v")),
        CompareTarget::ValueOrMissing(Bytes::new()),
        CompareTarget::ModRevision(1),
        CompareTarget::CreateRevision(2),
        CompareTarget::Version(3),
        CompareTarget::Lease(-4),
        CompareTarget::Exists(false),
    ];
    let compares = targets
        .into_iter()
        .map(|t| compare(KeyRange::Prefix(b("p")), CompareOp::Less, t))
        .collect();
    let nested = Txn {
        compares: vec![compare(
            KeyRange::FromKey(raw(b"\xff")),
            CompareOp::Greater,
            CompareTarget::Version(0),
        )],
        success: vec![TxnOp::Range(RangeQuery::new(KeyRange::Between(
            b("a"),
            b("b"),
        )))],
        failure: vec![],
    };
    Command::Txn(Txn {
        compares,
        success: vec![
            TxnOp::Put(Put {
                lease: 7,
                condition: Some(Precondition::Absent),
                ..Put::new(raw(b"\x00"), b("v"))
            }),
            TxnOp::Range(every_query_field()),
            TxnOp::Txn(nested),
        ],
        failure: vec![TxnOp::Delete(DeleteRange {
            range: KeyRange::Prefix(raw(b"\xff\xff")),
            prev_kv: true,
        })],
    })
}

#[test]
fn commands_round_trip() {
    for cmd in examples() {
        round_trip(&cmd);
    }
    assert!(Command::decode(Bytes::from_static(b"\x09abcd")).is_err());
    assert!(Command::decode(Bytes::from_static(b"\x01\x00\xff\0\0\0ab")).is_err());
}

/// Version 1's short forms, written out by hand: as c0c95b6 wrote them (the fixture's WAL
/// holds such entries), what this build still writes for them, and also readable behind the
/// envelope (`| 0xCE | 1 | kind | body |`). An encoder change that breaks them fails here.
#[test]
fn the_short_forms_bytes_are_pinned() {
    let cases: Vec<(Command, Vec<u8>)> = vec![
        (
            // Put, no condition, key "k", value "vv".
            Command::put(b("k"), b("vv")),
            vec![1, 0, 1, 0, 0, 0, b'k', b'v', b'v'],
        ),
        (
            Command::Put(Put {
                condition: Some(Precondition::ModRevision(0x0102)),
                ..Put::new(b("k"), b(""))
            }),
            vec![1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'k'],
        ),
        (
            Command::Delete(Delete {
                key: b("k"),
                condition: Some(Precondition::Absent),
            }),
            vec![2, 2, 1, 0, 0, 0, b'k'],
        ),
        (
            Command::DeleteRange(DeleteRange {
                range: KeyRange::Prefix(b("p")),
                prev_kv: false,
            }),
            vec![3, 1, 0, 0, 0, b'p'],
        ),
        (
            Command::Txn(Txn {
                compares: vec![compare(
                    KeyRange::Key(b("c")),
                    CompareOp::Greater,
                    CompareTarget::Version(5),
                )],
                success: vec![TxnOp::Put(Put::new(b("p"), b("v")))],
                failure: vec![TxnOp::Delete(DeleteRange {
                    range: KeyRange::Key(b("d")),
                    prev_kv: false,
                })],
            }),
            vec![
                4, // kind
                1, 0, 0, 0, // one compare
                1, 0, 0, 0, b'c', 2, 2, 5, 0, 0, 0, 0, 0, 0, 0, // c > version 5
                1, 0, 0, 0, // one success op
                0, 1, 0, 0, 0, b'p', 1, 0, 0, 0, b'v', // put p = v
                1, 0, 0, 0, // one failure op
                1, 1, 0, 0, 0, b'd', // delete d
            ],
        ),
        (
            // A value compare in version 1 means coordinate's rule (a missing key differs).
            Command::Txn(Txn {
                compares: vec![compare(
                    KeyRange::Key(b("c")),
                    CompareOp::NotEqual,
                    CompareTarget::ValueOrMissing(b("x")),
                )],
                ..Txn::default()
            }),
            vec![
                4, 1, 0, 0, 0, 1, 0, 0, 0, b'c', 1, 0, 1, 0, 0, 0, b'x', 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
    ];
    for (cmd, short) in cases {
        assert_eq!(cmd.encode(), short, "{cmd:?}");
        assert_eq!(Command::decode(Bytes::from(short.clone())).unwrap(), cmd);
        let mut enveloped = vec![ENVELOPE, 1];
        enveloped.extend_from_slice(&short);
        assert_eq!(Command::decode(Bytes::from(enveloped)).unwrap(), cmd);
    }
}

fn le64(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

/// The envelope's kinds 5 to 15, written out by hand from the table in the module doc.
#[test]
fn the_envelopes_bytes_are_pinned() {
    let cat = |parts: &[&[u8]]| parts.concat();
    let head = |kind: u8| [ENVELOPE, 1, kind];
    let cases: Vec<(Command, Vec<u8>)> = vec![
        (
            Command::Put(Put {
                lease: 0x0102,
                ignore_lease: true,
                condition: Some(Precondition::ModRevision(3)),
                ..Put::new(b("k"), b("vv"))
            }),
            cat(&[
                &head(5),
                &[2, 1],
                &le64(3),
                &le64(0x0102),
                &[1, 0, 0, 0, b'k', b'v', b'v'],
            ]),
        ),
        (
            Command::Put(Put {
                ignore_value: true,
                ..Put::new(raw(b"\xff"), Bytes::new())
            }),
            cat(&[&head(5), &[1, 0], &le64(0), &[1, 0, 0, 0, 0xff]]),
        ),
        (
            Command::Delete(Delete {
                key: raw(b"\xff"),
                condition: Some(Precondition::Present),
            }),
            cat(&[&head(6), &[3, 1, 0, 0, 0, 0xff]]),
        ),
        (
            Command::DeleteRange(DeleteRange {
                range: KeyRange::Between(b("a"), b("c")),
                prev_kv: true,
            }),
            cat(&[&head(7), &[1, 1, 0, 0, 0, b'a', 1, 0, 0, 0, b'c']]),
        ),
        (
            Command::DeleteRange(DeleteRange {
                range: KeyRange::FromKey(b("a")),
                prev_kv: false,
            }),
            cat(&[&head(7), &[0, 1, 0, 0, 0, b'a', 1, 0, 0, 0, 0]]),
        ),
        (
            Command::DeleteRange(DeleteRange {
                range: KeyRange::Key(b("a")),
                prev_kv: false,
            }),
            cat(&[&head(7), &[0, 1, 0, 0, 0, b'a', 0, 0, 0, 0]]),
        ),
        (kind8_example(), kind8_bytes()),
        (
            Command::Compact { revision: 0x0102 },
            cat(&[&head(9), &le64(0x0102)]),
        ),
        (
            Command::LeaseGrant { id: 5, ttl: 60 },
            cat(&[&head(10), &le64(5), &le64(60)]),
        ),
        (
            Command::LeaseRevoke { id: -2 },
            cat(&[&head(11), &(-2i64).to_le_bytes()]),
        ),
        (
            Command::LeaseKeepAlive { id: 5 },
            cat(&[&head(12), &le64(5)]),
        ),
        (
            Command::LeaseExpire {
                id: 5,
                renewed_at: 9,
            },
            cat(&[&head(13), &le64(5), &le64(9)]),
        ),
    ];
    let alarm = |active| Command::Alarm {
        alarm: Alarm {
            member: 3,
            kind: AlarmKind::NoSpace,
        },
        active,
    };
    let alarms = [
        (alarm(true), cat(&[&head(14), &le64(3), &[1, 1]])),
        (alarm(false), cat(&[&head(14), &le64(3), &[1, 0]])),
    ];
    let publish = (
        Command::PublishMember {
            id: 2,
            attributes: MemberAttributes {
                name: "n2".into(),
                client_urls: vec!["a".into(), "bc".into()],
            },
        },
        cat(&[
            &head(15),
            &le64(2),
            &[2, 0, 0, 0, b'n', b'2'],
            &[2, 0, 0, 0],
            &[1, 0, 0, 0, b'a'],
            &[2, 0, 0, 0, b'b', b'c'],
        ]),
    );
    for (cmd, bytes) in cases.into_iter().chain(alarms).chain([publish]) {
        // None of these has a short form: the envelope is what is written.
        assert_eq!(cmd.encode(), bytes, "{cmd:?}");
        assert_eq!(cmd.encode_enveloped(), bytes, "{cmd:?}");
        assert_eq!(Command::decode(Bytes::from(bytes)).unwrap(), cmd);
    }
}

/// A kind-8 transaction with a compare of each new target and each op.
fn kind8_example() -> Command {
    Command::Txn(Txn {
        compares: vec![
            compare(
                KeyRange::Key(b("c")),
                CompareOp::Equal,
                CompareTarget::Value(b("x")),
            ),
            compare(
                KeyRange::Between(b("p"), b("q")),
                CompareOp::Less,
                CompareTarget::CreateRevision(2),
            ),
            compare(
                KeyRange::Key(b("l")),
                CompareOp::NotEqual,
                CompareTarget::Lease(-1),
            ),
            compare(
                KeyRange::Key(b("m")),
                CompareOp::Greater,
                CompareTarget::ValueOrMissing(Bytes::new()),
            ),
        ],
        success: vec![
            TxnOp::Put(Put {
                lease: 7,
                ..Put::new(b("k"), b("v"))
            }),
            TxnOp::Range(every_query_field()),
        ],
        failure: vec![
            TxnOp::Delete(DeleteRange {
                range: KeyRange::FromKey(b("z")),
                prev_kv: true,
            }),
            TxnOp::Txn(Txn::default()),
        ],
    })
}

fn kind8_bytes() -> Vec<u8> {
    let none = [0u8, 0, 0, 0];
    [
        &[ENVELOPE, 1, 8][..],
        &[4, 0, 0, 0], // four compares
        &[1, 0, 0, 0, b'c'],
        &none,
        &[0, 0],                               // c (no end) ==, value
        &[1, 0, 0, 0, b'x'],                   //   "x"
        &[1, 0, 0, 0, b'p', 1, 0, 0, 0, b'q'], // [p, q)
        &[3, 4],
        &le64(2), //   < create revision 2
        &[1, 0, 0, 0, b'l'],
        &none,
        &[1, 5],                // l != lease
        &(-1i64).to_le_bytes(), //   -1
        &[1, 0, 0, 0, b'm'],
        &none,
        &[2, 6],
        &none,         // m > value-or-missing ""
        &[2, 0, 0, 0], // two success ops
        &[0, 0, 0],
        &le64(7),                              // put: flags, no condition, lease 7
        &[1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v'], //   k = v (a length)
        &[2, 1, 0, 0, 0, b'k'],
        &none, // range: k alone
        &le64(1),
        &le64(2),
        &le64(3),   //   revision, limit, byte budget
        &[1, 3, 2], //   keys only, by mod revision, descending
        &le64(4),
        &le64(5),
        &le64(6),
        &le64(7),                                 //   min/max mod, min/max create
        &[2, 0, 0, 0],                            // two failure ops
        &[1, 1, 1, 0, 0, 0, b'z', 1, 0, 0, 0, 0], // delete from z, prev kv
        &[3],
        &none,
        &none,
        &none, // an empty transaction
    ]
    .concat()
}

/// The short form is written exactly when it says the whole command.
#[test]
fn the_short_form_is_written_exactly_when_it_says_it_all() {
    let put = |k: &[u8]| Put::new(raw(k), b("v"));
    let key = |k: &str| KeyRange::Key(b(k));
    let txn_of = |c: Vec<Compare>, ops: Vec<TxnOp>| {
        Command::Txn(Txn {
            compares: c,
            success: ops,
            failure: vec![],
        })
    };
    let is = |t| vec![compare(key("k"), CompareOp::Equal, t)];
    let del = |range, prev_kv| DeleteRange { range, prev_kv };
    let short: Vec<(Command, u8)> = vec![
        (Command::Put(put(b"k")), 1),
        (
            Command::Put(Put {
                condition: Some(Precondition::Absent),
                ..put(b"k")
            }),
            1,
        ),
        (Command::Put(put(b"")), 1),
        (
            Command::Delete(Delete {
                key: b("k"),
                condition: Some(Precondition::Present),
            }),
            2,
        ),
        (
            Command::DeleteRange(del(KeyRange::Prefix(b("p")), false)),
            3,
        ),
        (
            Command::DeleteRange(del(KeyRange::Prefix(Bytes::new()), false)),
            3,
        ),
        (txn_of(vec![], vec![]), 4),
        (
            txn_of(
                is(CompareTarget::Exists(false)),
                vec![TxnOp::Put(put(b"k")), TxnOp::Delete(del(key("k"), false))],
            ),
            4,
        ),
    ];
    let long: Vec<Command> = vec![
        Command::Put(Put {
            lease: 1,
            ..put(b"k")
        }),
        Command::Put(Put {
            ignore_value: true,
            ..put(b"k")
        }),
        Command::Put(Put {
            ignore_lease: true,
            ..put(b"k")
        }),
        Command::Put(put(b"\xff")),
        Command::Delete(Delete {
            key: raw(b"\xc3"),
            condition: None,
        }),
        Command::DeleteRange(del(KeyRange::Prefix(b("p")), true)),
        Command::DeleteRange(del(KeyRange::Prefix(raw(b"\xff")), false)),
        Command::DeleteRange(del(key("k"), false)),
        Command::DeleteRange(del(KeyRange::FromKey(b("k")), false)),
        Command::DeleteRange(del(KeyRange::Between(b("a"), b("b")), false)),
        txn_of(is(CompareTarget::Value(b("v"))), vec![]),
        txn_of(is(CompareTarget::CreateRevision(1)), vec![]),
        txn_of(is(CompareTarget::Lease(1)), vec![]),
        txn_of(
            vec![compare(
                KeyRange::Prefix(b("k")),
                CompareOp::Equal,
                CompareTarget::Version(1),
            )],
            vec![],
        ),
        txn_of(
            vec![compare(
                KeyRange::Key(raw(b"\xff")),
                CompareOp::Equal,
                CompareTarget::Version(1),
            )],
            vec![],
        ),
        txn_of(
            vec![],
            vec![TxnOp::Put(Put {
                lease: 1,
                ..put(b"k")
            })],
        ),
        txn_of(
            vec![],
            vec![TxnOp::Put(Put {
                condition: Some(Precondition::Absent),
                ..put(b"k")
            })],
        ),
        txn_of(vec![], vec![TxnOp::Put(put(b"\xff"))]),
        txn_of(vec![], vec![TxnOp::Delete(del(key("k"), true))]),
        txn_of(
            vec![],
            vec![TxnOp::Delete(del(KeyRange::Prefix(b("k")), false))],
        ),
        txn_of(vec![], vec![TxnOp::Range(RangeQuery::key(b("k")))]),
        txn_of(vec![], vec![TxnOp::Txn(Txn::default())]),
        Command::Compact { revision: 1 },
        Command::LeaseGrant { id: 1, ttl: 1 },
        Command::LeaseRevoke { id: 1 },
        Command::LeaseKeepAlive { id: 1 },
        Command::LeaseExpire {
            id: 1,
            renewed_at: 1,
        },
    ];
    for (cmd, kind) in short {
        assert_eq!(cmd.encode()[0], kind, "{cmd:?}");
        round_trip(&cmd);
    }
    for cmd in long {
        assert_eq!(cmd.encode(), cmd.encode_enveloped(), "{cmd:?}");
        round_trip(&cmd);
    }
}

fn error(data: &[u8]) -> String {
    match Command::decode(Bytes::copy_from_slice(data)) {
        Ok(cmd) => panic!("{data:?} decoded to {cmd:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_versions_and_kinds_are_refused_by_name() {
    let body = [0, 1, 0, 0, 0, b'k'];
    for version in [0, FORMAT_VERSION + 1, 0xff] {
        let mut data = vec![ENVELOPE, version, 1];
        data.extend_from_slice(&body);
        let e = error(&data);
        assert!(
            e.contains(&format!(
                "malformed command: unknown format version {version} "
            )),
            "{e}"
        );
    }
    for kind in [0, 16, 0xCE, 0xff] {
        let mut data = vec![ENVELOPE, FORMAT_VERSION, kind];
        data.extend_from_slice(&body);
        let e = error(&data);
        assert!(
            e.ends_with(&format!(
                "malformed command: unknown command kind {kind} in format version 1"
            )),
            "{e}"
        );
    }
    // The short-form set is closed: a bare 5 (or 0) is no command, whatever kinds come later.
    for op in [0, 5, 9, 14, 0xff] {
        let mut data = vec![op];
        data.extend_from_slice(&body);
        assert!(error(&data).ends_with(&format!("malformed command: unknown command kind {op}")));
    }
    assert!(error(&[]).ends_with("malformed command: empty"));
    for cut in [&[ENVELOPE][..], &[ENVELOPE, 1]] {
        assert!(error(cut).ends_with("malformed command: envelope cut short"));
    }
    // Short-form keys are strings.
    assert!(error(&[2, 0, 1, 0, 0, 0, 0xff]).ends_with("malformed command: key"));
    // Out-of-range tags and flags.
    assert!(error(&[ENVELOPE, 1, 14, 3, 0, 0, 0, 0, 0, 0, 0, 2, 1]).ends_with("alarm kind"));
    assert!(error(&[ENVELOPE, 1, 14, 3, 0, 0, 0, 0, 0, 0, 0, 1, 2]).ends_with("alarm action"));
    assert!(error(&[ENVELOPE, 1, 7, 2, 0, 0, 0, 0, 0, 0, 0, 0]).ends_with("delete range"));
    assert!(error(&[ENVELOPE, 1, 5, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).ends_with("put"));
}

/// Every kind whose body has an end refuses bytes after it.
#[test]
fn trailing_bytes_are_refused() {
    for cmd in examples() {
        let ends_with_value = matches!(cmd, Command::Put(_));
        for data in [cmd.encode(), cmd.encode_enveloped()] {
            let mut longer = data.to_vec();
            longer.push(0);
            match ends_with_value {
                // A put's value runs to the end: the byte is part of it.
                true => assert!(Command::decode(Bytes::from(longer)).is_ok()),
                false => assert!(
                    error(&longer).ends_with("malformed command: trailing bytes"),
                    "{cmd:?}"
                ),
            }
        }
    }
}

/// A transaction nested `levels` deep (1: no nesting).
fn nested(levels: usize) -> Txn {
    let mut txn = Txn::default();
    for _ in 1..levels {
        txn = Txn {
            success: vec![TxnOp::Txn(txn)],
            ..Txn::default()
        };
    }
    txn
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let ok = Command::Txn(nested(MAX_TXN_DEPTH));
    assert_eq!(Command::decode(ok.encode()).unwrap(), ok);
    let deep = Command::Txn(nested(MAX_TXN_DEPTH + 1));
    assert!(error(&deep.encode()).ends_with("malformed command: transaction"));
    // Very deep: refused, not a stack overflow.
    let mut data = vec![ENVELOPE, 1, 8];
    for _ in 0..100_000 {
        data.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 3]);
    }
    assert!(error(&data).ends_with("malformed command: transaction"));
}

/// A put's value is a slice of the entry's buffer, in either form: decoding copies no value
/// (the raft loop decodes every committed entry).
#[test]
fn a_decoded_value_shares_the_entry_buffer() {
    let value = Bytes::from(vec![7u8; 4096]);
    let plain = Command::put(b("k"), value.clone());
    let leased = Command::Put(Put {
        lease: 1,
        ..Put::new(b("k"), value.clone())
    });
    for data in [plain.encode(), plain.encode_enveloped(), leased.encode()] {
        let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        match Command::decode(data.clone()).unwrap() {
            Command::Put(p) => {
                assert_eq!(p.value, value);
                assert!(
                    range.contains(&(p.value.as_ptr() as usize)),
                    "the value was copied"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        ".{0,6}".prop_map(|s: String| Bytes::from(s)),
        "[a-c/]{0,4}".prop_map(|s: String| Bytes::from(s)),
        prop::collection::vec(prop_oneof![Just(0u8), Just(0xff), any::<u8>()], 0..4)
            .prop_map(Bytes::from),
    ]
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        key().prop_map(KeyRange::Key),
        key().prop_map(KeyRange::Prefix),
        key().prop_map(KeyRange::FromKey),
        (key(), key()).prop_map(|(a, b)| KeyRange::Between(a, b)),
    ]
}

fn condition() -> impl Strategy<Value = Option<Precondition>> {
    prop_oneof![
        Just(None),
        Just(Some(Precondition::Absent)),
        Just(Some(Precondition::Present)),
        any::<u64>().prop_map(|r| Some(Precondition::ModRevision(r))),
    ]
}

fn compare_strategy() -> impl Strategy<Value = Compare> {
    let op = prop_oneof![
        Just(CompareOp::Equal),
        Just(CompareOp::NotEqual),
        Just(CompareOp::Greater),
        Just(CompareOp::Less),
    ];
    let target = prop_oneof![
        value().prop_map(CompareTarget::Value),
        value().prop_map(CompareTarget::ValueOrMissing),
        any::<u64>().prop_map(CompareTarget::ModRevision),
        any::<u64>().prop_map(CompareTarget::CreateRevision),
        any::<u64>().prop_map(CompareTarget::Version),
        any::<i64>().prop_map(CompareTarget::Lease),
        any::<bool>().prop_map(CompareTarget::Exists),
    ];
    let range = prop_oneof![3 => key().prop_map(KeyRange::Key), 1 => range()];
    (range, op, target).prop_map(|(range, op, target)| Compare { range, op, target })
}

fn put_strategy() -> impl Strategy<Value = Put> {
    let lease = prop_oneof![3 => Just(0i64), 1 => any::<i64>()];
    (key(), value(), lease, any::<(bool, bool)>(), condition()).prop_map(
        |(key, value, lease, (ignore_value, ignore_lease), condition)| Put {
            key,
            value,
            lease,
            ignore_value: ignore_value && lease == 0,
            ignore_lease: ignore_lease && lease == 0,
            condition,
        },
    )
}

fn query_strategy() -> impl Strategy<Value = RangeQuery> {
    let target = prop_oneof![
        Just(SortTarget::Key),
        Just(SortTarget::Version),
        Just(SortTarget::CreateRevision),
        Just(SortTarget::ModRevision),
        Just(SortTarget::Value),
    ];
    let order = prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ];
    (
        range(),
        any::<(u64, u32, u32, bool, bool)>(),
        target,
        order,
        any::<[u64; 4]>(),
    )
        .prop_map(
            |(
                range,
                (revision, limit, max_bytes, keys_only, count_only),
                sort_target,
                sort_order,
                f,
            )| {
                RangeQuery {
                    range,
                    revision,
                    limit: limit as usize,
                    max_bytes: max_bytes as usize,
                    keys_only,
                    count_only,
                    count_all: true,
                    sort_target,
                    sort_order,
                    min_mod_revision: f[0],
                    max_mod_revision: f[1],
                    min_create_revision: f[2],
                    max_create_revision: f[3],
                }
            },
        )
}

fn txn_strategy() -> impl Strategy<Value = Txn> {
    let leaf =
        (prop::collection::vec(compare_strategy(), 0..3), Just(())).prop_map(|(compares, ())| {
            Txn {
                compares,
                ..Txn::default()
            }
        });
    leaf.prop_recursive(3, 24, 4, |inner| {
        let op = prop_oneof![
            4 => put_strategy().prop_map(TxnOp::Put),
            2 => (range(), any::<bool>()).prop_map(|(range, prev_kv)| TxnOp::Delete(DeleteRange { range, prev_kv })),
            1 => query_strategy().prop_map(TxnOp::Range),
            1 => inner.prop_map(TxnOp::Txn),
        ];
        let ops = prop::collection::vec(op, 0..3);
        (prop::collection::vec(compare_strategy(), 0..3), ops.clone(), ops)
            .prop_map(|(compares, success, failure)| Txn { compares, success, failure })
    })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        put_strategy().prop_map(Command::Put),
        (key(), condition())
            .prop_map(|(key, condition)| Command::Delete(Delete { key, condition })),
        (range(), any::<bool>())
            .prop_map(|(range, prev_kv)| Command::DeleteRange(DeleteRange { range, prev_kv })),
        txn_strategy().prop_map(Command::Txn),
        any::<u64>().prop_map(|revision| Command::Compact { revision }),
        any::<(i64, i64)>().prop_map(|(id, ttl)| Command::LeaseGrant { id, ttl }),
        any::<i64>().prop_map(|id| Command::LeaseRevoke { id }),
        any::<i64>().prop_map(|id| Command::LeaseKeepAlive { id }),
        any::<(i64, u64)>().prop_map(|(id, renewed_at)| Command::LeaseExpire { id, renewed_at }),
        any::<(u64, bool)>().prop_map(|(member, active)| Command::Alarm {
            alarm: Alarm {
                member,
                kind: AlarmKind::NoSpace
            },
            active,
        }),
        (
            any::<u64>(),
            ".{0,8}",
            prop::collection::vec(".{0,8}", 0..3)
        )
            .prop_map(|(id, name, client_urls)| Command::PublishMember {
                id,
                attributes: MemberAttributes { name, client_urls },
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every command comes back from both forms, and every cut of them is refused or
    /// decodes to something, never panics.
    #[test]
    fn every_command_round_trips_in_both_forms(cmd in command(), cut in any::<prop::sample::Index>()) {
        let written = cmd.encode();
        let enveloped = cmd.encode_enveloped();
        prop_assert_eq!(&enveloped[..2], &[ENVELOPE, FORMAT_VERSION][..]);
        prop_assert_eq!(Command::decode(enveloped.clone()).unwrap(), canonical(&cmd));
        let want = if written[0] == ENVELOPE { canonical(&cmd) } else { cmd.clone() };
        prop_assert_eq!(Command::decode(written.clone()).unwrap(), want);
        let _ = Command::decode(written.slice(..cut.index(written.len())));
        let _ = Command::decode(enveloped.slice(..cut.index(enveloped.len())));
    }

    /// A range in etcd's terms covers exactly the keys it covered (the empty key aside: no
    /// front-end accepts it, and etcd's "every key" starts at "\0").
    #[test]
    fn a_range_keeps_its_keys_through_etcds_terms(r in range(), probes in prop::collection::vec(key(), 1..16)) {
        let (k, e) = r.to_etcd();
        let back = KeyRange::from_etcd(k, e);
        for probe in probes.iter().filter(|p| !p.is_empty()) {
            prop_assert_eq!(back.contains(probe), r.contains(probe), "{:?} -> {:?} on {:?}", r, back, probe);
        }
        let edges = [r.start().clone(), crate::kv::prefix_end(r.start())];
        for probe in edges.iter().filter(|p| !p.is_empty()) {
            prop_assert_eq!(back.contains(probe), r.contains(probe), "{:?} -> {:?} on {:?}", r, back, probe);
        }
    }

    /// Arbitrary bytes, bare or behind an envelope of any version and kind, never panic; a
    /// refusal is always a "malformed command" error.
    #[test]
    fn arbitrary_bytes_never_panic(
        version in prop_oneof![Just(FORMAT_VERSION), any::<u8>()],
        kind in prop_oneof![1..=14u8, any::<u8>()],
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut enveloped = vec![ENVELOPE, version, kind];
        enveloped.extend_from_slice(&body);
        let mut bare = vec![kind];
        bare.extend_from_slice(&body);
        for data in [enveloped, bare, body] {
            if let Err(e) = Command::decode(Bytes::from(data)) {
                prop_assert!(e.to_string().contains("malformed command: "), "{}", e);
            }
        }
    }
}
