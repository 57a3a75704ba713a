//! The command encoding: round trips in the envelope and the legacy form, the bytes of both
//! pinned, unknown versions and kinds refused, arbitrary bytes never a panic.

use bytes::Bytes;
use proptest::prelude::*;

use super::{ENVELOPE, FORMAT_VERSION};
use crate::kv::tests::b;
use crate::kv::{Command, Compare, CompareOp, CompareTarget, Precondition, TxnOp};

/// The legacy encoding of a command enveloped as version 1: the same kind byte and body,
/// without the mark and the version (what c0c95b6 wrote).
fn legacy(enveloped: &Bytes) -> Bytes {
    assert_eq!(enveloped[..2], [ENVELOPE, 1]);
    enveloped.slice(2..)
}

/// One command of each kind, with every condition and compare target.
fn examples() -> Vec<Command> {
    vec![
        Command::put("a/b c".into(), b("hello")),
        Command::Put {
            key: "k".into(),
            value: b(""),
            condition: Some(Precondition::ModRevision(7)),
        },
        Command::Put {
            key: "k".into(),
            value: b("v"),
            condition: Some(Precondition::Present),
        },
        Command::Delete {
            key: "k".into(),
            condition: Some(Precondition::Absent),
        },
        Command::Delete {
            key: "k".into(),
            condition: None,
        },
        Command::DeletePrefix {
            prefix: "p/".into(),
        },
        Command::Txn {
            compares: vec![
                Compare {
                    key: "x".into(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Value(b("1")),
                },
                Compare {
                    key: "y".into(),
                    op: CompareOp::Less,
                    target: CompareTarget::ModRevision(3),
                },
                Compare {
                    key: "z".into(),
                    op: CompareOp::Greater,
                    target: CompareTarget::Version(1),
                },
                Compare {
                    key: "w".into(),
                    op: CompareOp::NotEqual,
                    target: CompareTarget::Exists(true),
                },
            ],
            success: vec![TxnOp::Put {
                key: "x".into(),
                value: b("2"),
            }],
            failure: vec![TxnOp::Delete { key: "x".into() }],
        },
    ]
}

#[test]
fn commands_round_trip() {
    let cmds = examples();
    for cmd in cmds {
        let encoded = cmd.encode_enveloped();
        assert_eq!(Command::decode(encoded.clone()).unwrap(), cmd);
        assert_eq!(Command::decode(legacy(&encoded)).unwrap(), cmd);
        // Any truncation is refused or decodes to something else, never panics.
        for cut in 0..encoded.len() {
            let _ = Command::decode(encoded.slice(..cut));
        }
    }
    assert!(Command::decode(Bytes::from_static(b"\x09abcd")).is_err());
    assert!(Command::decode(Bytes::from_static(b"\x01\x00\xff\0\0\0ab")).is_err());
}

/// The bytes of each kind, written out by hand: the legacy ones as c0c95b6 wrote them (the
/// fixture's WAL holds such entries), the enveloped ones as this version writes them. An
/// encoder change that breaks either fails here, not in a data dir.
#[test]
fn the_bytes_are_pinned() {
    let cases: Vec<(Command, Vec<u8>)> = vec![
        (
            // Put, no condition, key "k", value "vv".
            Command::put("k".into(), b("vv")),
            vec![1, 0, 1, 0, 0, 0, b'k', b'v', b'v'],
        ),
        (
            Command::Put {
                key: "k".into(),
                value: b(""),
                condition: Some(Precondition::ModRevision(0x0102)),
            },
            vec![1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'k'],
        ),
        (
            Command::Delete {
                key: "k".into(),
                condition: Some(Precondition::Absent),
            },
            vec![2, 2, 1, 0, 0, 0, b'k'],
        ),
        (
            Command::DeletePrefix { prefix: "p".into() },
            vec![3, 1, 0, 0, 0, b'p'],
        ),
        (
            Command::Txn {
                compares: vec![Compare {
                    key: "c".into(),
                    op: CompareOp::Greater,
                    target: CompareTarget::Version(5),
                }],
                success: vec![TxnOp::Put {
                    key: "p".into(),
                    value: b("v"),
                }],
                failure: vec![TxnOp::Delete { key: "d".into() }],
            },
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
    ];
    for (cmd, legacy) in cases {
        assert_eq!(Command::decode(Bytes::from(legacy.clone())).unwrap(), cmd);
        let mut enveloped = vec![ENVELOPE, FORMAT_VERSION];
        enveloped.extend_from_slice(&legacy);
        assert_eq!(cmd.encode_enveloped(), enveloped, "{cmd:?}");
        // What is written: the short form, the bytes every earlier build wrote and reads.
        assert_eq!(cmd.encode(), legacy, "{cmd:?}");
        assert_eq!(Command::decode(Bytes::from(enveloped)).unwrap(), cmd);
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
    for kind in [0, 5, 0xCE, 0xff] {
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
    // The legacy set is closed: a bare 5 (or 0) is no command, whatever kinds come later.
    for op in [0, 5, 9, 0xff] {
        let mut data = vec![op];
        data.extend_from_slice(&body);
        assert!(error(&data).ends_with(&format!("malformed command: unknown command kind {op}")));
    }
    assert!(error(&[]).ends_with("malformed command: empty"));
    for cut in [&[ENVELOPE][..], &[ENVELOPE, 1]] {
        assert!(error(cut).ends_with("malformed command: envelope cut short"));
    }
}

/// A put's value is a slice of the entry's buffer, in either encoding: decoding copies no
/// value (the raft loop decodes every committed entry).
#[test]
fn a_decoded_value_shares_the_entry_buffer() {
    let value = Bytes::from(vec![7u8; 4096]);
    let encoded = Command::put("k".into(), value.clone()).encode_enveloped();
    for data in [encoded.clone(), legacy(&encoded)] {
        let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        match Command::decode(data.clone()).unwrap() {
            Command::Put { value: v, .. } => {
                assert_eq!(v, value);
                assert!(
                    range.contains(&(v.as_ptr() as usize)),
                    "the value was copied"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![".{0,6}", "[a-c/]{0,4}"]
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn condition() -> impl Strategy<Value = Option<Precondition>> {
    prop_oneof![
        Just(None),
        Just(Some(Precondition::Absent)),
        Just(Some(Precondition::Present)),
        any::<u64>().prop_map(|r| Some(Precondition::ModRevision(r))),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    let op = prop_oneof![
        Just(CompareOp::Equal),
        Just(CompareOp::NotEqual),
        Just(CompareOp::Greater),
        Just(CompareOp::Less),
    ];
    let target = prop_oneof![
        value().prop_map(CompareTarget::Value),
        any::<u64>().prop_map(CompareTarget::ModRevision),
        any::<u64>().prop_map(CompareTarget::Version),
        any::<bool>().prop_map(CompareTarget::Exists),
    ];
    (key(), op, target).prop_map(|(key, op, target)| Compare { key, op, target })
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| TxnOp::Put { key, value }),
        key().prop_map(|key| TxnOp::Delete { key }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let ops = || prop::collection::vec(txn_op(), 0..4);
    prop_oneof![
        (key(), value(), condition()).prop_map(|(key, value, condition)| Command::Put {
            key,
            value,
            condition
        }),
        (key(), condition()).prop_map(|(key, condition)| Command::Delete { key, condition }),
        key().prop_map(|prefix| Command::DeletePrefix { prefix }),
        (prop::collection::vec(compare(), 0..4), ops(), ops()).prop_map(
            |(compares, success, failure)| Command::Txn {
                compares,
                success,
                failure
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every command comes back from both encodings, and every cut of them is refused or
    /// decodes to something, never panics.
    #[test]
    fn every_command_round_trips_in_both_encodings(cmd in command(), cut in any::<prop::sample::Index>()) {
        let encoded = cmd.encode_enveloped();
        prop_assert_eq!(&encoded[..2], &[ENVELOPE, FORMAT_VERSION][..]);
        prop_assert_eq!(Command::decode(encoded.clone()).unwrap(), cmd.clone());
        prop_assert_eq!(Command::decode(legacy(&encoded)).unwrap(), cmd);
        let _ = Command::decode(encoded.slice(..cut.index(encoded.len())));
    }

    /// Arbitrary bytes, bare or behind an envelope of any version and kind, never panic; a
    /// refusal is always a "malformed command" error.
    #[test]
    fn arbitrary_bytes_never_panic(
        version in prop_oneof![Just(FORMAT_VERSION), any::<u8>()],
        kind in prop_oneof![1..=4u8, any::<u8>()],
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
