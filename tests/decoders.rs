//! Property tests of every decoder of bytes that come from the disk: WAL segments, snapshot
//! files, the state machine's snapshot data and log commands (in the current format envelope
//! and in the legacy encodings older data dirs hold). Fed random bytes and valid
//! inputs with flipped bytes, truncations, zero blocks and huge length fields, each must
//! return a clear error or a value — never panic — and allocate no more than a bound
//! proportional to its input (measured by a counting allocator, per thread: the tests of one
//! binary run on parallel threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use proptest::prelude::*;
use raft::eraftpb::{Entry, HardState, Snapshot};

use coordinate_raft::storage::snapshot::{self, SnapshotStore};
use coordinate_raft::storage::wal::{self, Recovered, SnapshotMarker, Wal};
use coordinate_server::kv::{
    Alarm, AlarmKind, Command, Compare, CompareOp, CompareTarget, Delete, DeleteRange, KeyRange,
    Kv, MemberAttributes, Precondition, Put, RangeQuery, Txn, TxnOp, ENVELOPE, FORMAT_VERSION,
};

// ---------------------------------------------------------------------------------------------
// A counting allocator: bytes live on this thread while measuring, and their peak.
// ---------------------------------------------------------------------------------------------

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = LIVE.try_with(|live| {
                let now = live.get() + delta;
                live.set(now);
                let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
            });
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`, returning its result and the peak bytes it had allocated at once on this thread.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    MEASURING.with(|m| m.set(true));
    let out = f();
    MEASURING.with(|m| m.set(false));
    (out, PEAK.with(|p| p.get()).max(0) as usize)
}

/// The allocation a decoder may make for `len` bytes of input: a constant share per byte
/// (decoded structures are bigger than their encoding: an 11-byte WAL entry record becomes a
/// 100-byte `Entry` in a doubling `Vec`) plus a fixed allowance (a B-tree's first node, error
/// texts). A decoder that reserves by an unchecked length field blows far past it.
fn bound(len: usize) -> usize {
    48 * len + (64 << 10)
}

// ---------------------------------------------------------------------------------------------
// Valid inputs, made once by the real encoders.
// ---------------------------------------------------------------------------------------------

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        data: data.to_vec().into(),
        context: Bytes::from_static(b"ctx"),
        ..Default::default()
    }
}

/// A WAL segment holding entries, overwrites, hard states, snapshot markers and sync points.
fn wal_segment() -> &'static [u8] {
    static SEGMENT: OnceLock<Vec<u8>> = OnceLock::new();
    SEGMENT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&wal_dir, 1 << 20).unwrap();
        for i in 1..=12u64 {
            wal.append_entries(&[entry(i, 1 + i / 5, &vec![i as u8; (i * 7) as usize])])
                .unwrap();
            wal.set_hard_state(&HardState {
                term: 1 + i / 5,
                vote: 1,
                commit: i.saturating_sub(1),
                ..Default::default()
            })
            .unwrap();
            if i == 6 {
                wal.mark_snapshot(SnapshotMarker { index: 4, term: 1 }, false);
            }
            if i % 3 == 0 {
                wal.write().unwrap();
            } else {
                wal.sync().unwrap();
            }
        }
        wal.append_entries(&[entry(10, 4, b"overwrite")]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        std::fs::read(wal_dir.join(format!("{:016x}.wal", 1))).unwrap()
    })
}

fn snapshot_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 77;
        snap.mut_metadata().term = 5;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snap.mut_metadata().mut_conf_state().learners = vec![4];
        snap.data = kv_snapshot().to_vec().into();
        store.save(&snap).unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "snap"))
            .unwrap();
        std::fs::read(path).unwrap()
    })
}

/// A state-machine snapshot in the current version: history, a lease, members, a member's
/// published attributes, removed ids.
fn kv_snapshot() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| {
        let members: BTreeMap<u64, String> = (1..=3)
            .map(|i| (i, format!("http://127.0.0.1:{}", 12379 + i)))
            .collect();
        let mut kv = Kv::with_members(members);
        kv.remove_member(3);
        let mut events = Vec::new();
        kv.apply(1, Command::LeaseGrant { id: 9, ttl: 10 }, &mut events);
        for i in 0..20 {
            let put = Put {
                lease: if i % 5 == 0 { 9 } else { 0 },
                ..Put::new(format!("key/{i}").into(), vec![i as u8; i].into())
            };
            kv.apply(2 + i as u64, Command::Put(put), &mut events);
        }
        // History: an overwrite and a delete.
        kv.apply(30, Command::put("key/1".into(), "new".into()), &mut events);
        let delete = Delete {
            key: "key/2".into(),
            condition: None,
        };
        kv.apply(31, Command::Delete(delete), &mut events);
        let attributes = MemberAttributes {
            name: "one".into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
        };
        kv.apply(
            32,
            Command::PublishMember { id: 1, attributes },
            &mut events,
        );
        kv.snapshot().to_vec()
    })
}

/// A version-1 snapshot (`KVS3`, what builds before version 2 wrote), by hand: revision 20,
/// the same members, 20 keys of one version each.
fn v1_kv_snapshot() -> Vec<u8> {
    let mut b = b"KVS3".to_vec();
    let put_str = |b: &mut Vec<u8>, s: &[u8]| {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s);
    };
    b.extend_from_slice(&20u64.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    for i in 1..=2u64 {
        b.extend_from_slice(&i.to_le_bytes());
        put_str(&mut b, format!("http://127.0.0.1:{}", 12379 + i).as_bytes());
    }
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&3u64.to_le_bytes());
    let mut keys: Vec<(String, usize)> = (0..20).map(|i| (format!("key/{i}"), i)).collect();
    keys.sort();
    b.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for (key, i) in keys {
        put_str(&mut b, key.as_bytes());
        put_str(&mut b, &vec![i as u8; i]);
        for n in [i as u64 + 1, i as u64 + 1, 1] {
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
    b
}

/// The long (`KVSV`, versioned) form of [`v1_kv_snapshot`]: the same body behind version 1.
fn versioned_v1_kv_snapshot() -> Vec<u8> {
    let short = v1_kv_snapshot();
    [&b"KVSV\x01\0\0\0"[..], &short[4..]].concat()
}

/// The short (bare kind) form of a command enveloped in version 1 (kinds 1 to 4 only).
fn short_command(enveloped: &Bytes) -> Bytes {
    assert_eq!(enveloped[..2], [ENVELOPE, FORMAT_VERSION]);
    enveloped.slice(2..)
}

/// Version 1's four kinds, as every build before the envelope wrote them (the short form).
fn short_commands() -> Vec<Bytes> {
    let compare = |key: &str, op, target| Compare {
        range: KeyRange::Key(Bytes::copy_from_slice(key.as_bytes())),
        op,
        target,
    };
    vec![
        Command::put("a".into(), Bytes::from_static(b"value")).encode(),
        Command::Put(Put {
            condition: Some(Precondition::ModRevision(7)),
            ..Put::new("b".into(), Bytes::from_static(b"v"))
        })
        .encode(),
        Command::Delete(Delete {
            key: "c".into(),
            condition: Some(Precondition::Present),
        })
        .encode(),
        Command::DeleteRange(DeleteRange {
            range: KeyRange::Prefix("d/".into()),
            prev_kv: false,
        })
        .encode(),
        Command::Txn(Txn {
            compares: vec![
                compare(
                    "x",
                    CompareOp::Equal,
                    CompareTarget::ValueOrMissing(Bytes::from_static(b"1")),
                ),
                compare("y", CompareOp::Greater, CompareTarget::ModRevision(3)),
                compare("z", CompareOp::Less, CompareTarget::Version(2)),
                compare("w", CompareOp::NotEqual, CompareTarget::Exists(true)),
            ],
            success: vec![TxnOp::Put(Put::new("x".into(), Bytes::from_static(b"2")))],
            failure: vec![TxnOp::Delete(DeleteRange {
                range: KeyRange::Key("y".into()),
                prev_kv: false,
            })],
        })
        .encode(),
    ]
}

/// Every later kind, enveloped.
fn enveloped_commands() -> Vec<Bytes> {
    let put = Put {
        lease: 5,
        ignore_value: true,
        ..Put::new(Bytes::from_static(b"\xff\x00"), Bytes::new())
    };
    let range = RangeQuery {
        revision: 3,
        limit: 10,
        ..RangeQuery::new(KeyRange::Between("a".into(), "c".into()))
    };
    vec![
        Command::Put(put.clone()).encode(),
        Command::Delete(Delete {
            key: Bytes::from_static(b"\xfe"),
            condition: None,
        })
        .encode(),
        Command::DeleteRange(DeleteRange {
            range: KeyRange::FromKey("k".into()),
            prev_kv: true,
        })
        .encode(),
        Command::Txn(Txn {
            compares: vec![Compare {
                range: KeyRange::Prefix("p".into()),
                op: CompareOp::Equal,
                target: CompareTarget::CreateRevision(0),
            }],
            success: vec![TxnOp::Put(put), TxnOp::Range(range)],
            failure: vec![TxnOp::Txn(Txn::default())],
        })
        .encode(),
        Command::Compact { revision: 4 }.encode(),
        Command::LeaseGrant { id: 1, ttl: 5 }.encode(),
        Command::LeaseRevoke { id: 1 }.encode(),
        Command::LeaseKeepAlive { id: 1 }.encode(),
        Command::LeaseExpire {
            id: 1,
            renewed_at: 7,
        }
        .encode(),
        Command::Alarm {
            alarm: Alarm {
                member: 1,
                kind: AlarmKind::NoSpace,
            },
            active: true,
        }
        .encode(),
    ]
}

fn commands() -> Vec<Bytes> {
    let mut all = short_commands();
    all.extend(enveloped_commands());
    all
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Zero {
        at: usize,
        len: usize,
    },
    /// A length-like field: 0, small, huge, all ones.
    Length {
        at: usize,
        value: u64,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let lengths = prop_oneof![
        Just(0u64),
        Just(1),
        Just(64 << 20),
        Just((64 << 20) - 1),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(1 << 40),
        any::<u64>(),
    ];
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 1..2048usize).prop_map(|(at, len)| Mutation::Zero { at, len }),
        (any::<usize>(), lengths).prop_map(|(at, value)| Mutation::Length { at, value }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn mutate(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if data.is_empty() {
            break;
        }
        let n = data.len();
        match m {
            Mutation::Flip { at, mask } => data[at % n] ^= mask,
            Mutation::Truncate { at } => data.truncate(at % n),
            Mutation::Zero { at, len } => {
                let from = at % n;
                let to = (from + len).min(n);
                data[from..to].fill(0);
            }
            Mutation::Length { at, value } => {
                let from = at % n;
                let bytes = value.to_le_bytes();
                // As a u32 or a u64 field, whichever fits.
                let width = if value >> 32 == 0 { 4 } else { 8 };
                let to = (from + width).min(n);
                data[from..to].copy_from_slice(&bytes[..to - from]);
            }
            Mutation::Insert { at, bytes } => {
                let at = at % (n + 1);
                data.splice(at..at, bytes.iter().copied());
            }
        }
    }
    data
}

/// Recomputes each WAL record's CRC after a mutation, so the record decoders behind the CRC
/// (protobuf entries, hard states, markers) see the damaged payloads too.
fn fix_wal_crcs(mut data: Vec<u8>) -> Vec<u8> {
    let mut pos = 0;
    while pos + 8 < data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > data.len() {
            break;
        }
        let crc = crc32c::crc32c(&data[pos + 8..pos + 8 + len]);
        data[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos += 8 + len;
    }
    data
}

/// Recomputes a snapshot file's trailing CRC.
fn fix_snapshot_crc(mut data: Vec<u8>) -> Vec<u8> {
    if data.len() >= 4 {
        let body = data.len() - 4;
        let crc = crc32c::crc32c(&data[..body]);
        data[body..].copy_from_slice(&crc.to_le_bytes());
    }
    data
}

// ---------------------------------------------------------------------------------------------
// The checks, one per decoder
// ---------------------------------------------------------------------------------------------

fn check_wal(data: &[u8]) -> Result<(), TestCaseError> {
    for is_last in [false, true] {
        let (result, peak) = peak_of(|| {
            let mut rec = Recovered::default();
            wal::replay_records(data, is_last, &mut rec).map(|end| (end, rec))
        });
        prop_assert!(
            peak <= bound(data.len()),
            "WAL replay of {} bytes allocated {peak}",
            data.len()
        );
        match result {
            Ok((end, rec)) => {
                prop_assert!(end.end as usize <= data.len());
                prop_assert!(!end.torn || is_last, "a torn tail outside the last segment");
                // Entries come out contiguous.
                for pair in rec.entries.windows(2) {
                    prop_assert_eq!(pair[1].index, pair[0].index + 1);
                }
            }
            Err(bad) => {
                prop_assert!(bad.offset as usize <= data.len());
                prop_assert!(!bad.reason.is_empty());
            }
        }
    }
    Ok(())
}

fn check_snapshot(data: &[u8]) -> Result<(), TestCaseError> {
    let input = data.to_vec();
    let (result, peak) = peak_of(move || snapshot::decode(input).map(|s| s.data.len()));
    // The file's own buffer is moved in, not copied: only the decoding counts.
    prop_assert!(
        peak <= bound(data.len()),
        "snapshot decode allocated {peak}"
    );
    if let Err((offset, reason)) = result {
        prop_assert!(offset as usize <= data.len());
        prop_assert!(!reason.is_empty());
    }
    Ok(())
}

fn check_kv(data: &[u8]) -> Result<(), TestCaseError> {
    let input = Bytes::copy_from_slice(data);
    let (result, peak) = peak_of(move || Kv::restore(input).map(|kv| kv.len()));
    prop_assert!(peak <= bound(data.len()), "Kv::restore allocated {peak}");
    if let Err(e) = result {
        prop_assert!(e.to_string().contains("malformed snapshot data"), "{}", e);
    }
    Ok(())
}

fn check_command(data: &[u8]) -> Result<(), TestCaseError> {
    let input = Bytes::copy_from_slice(data);
    let (result, peak) = peak_of(move || Command::decode(input).map(|c| format!("{c:?}").len()));
    // The Debug text of the result is built inside the measurement too: twice the input.
    prop_assert!(
        peak <= 2 * bound(data.len()),
        "Command::decode allocated {peak}"
    );
    if let Err(e) = result {
        prop_assert!(e.to_string().contains("malformed command"), "{}", e);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn wal_replay_survives_random_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_wal(&data)?;
        check_wal(&fix_wal_crcs(data))?;
    }

    #[test]
    fn wal_replay_survives_damaged_segments(
        mutations in prop::collection::vec(mutation(), 1..5),
        recrc in any::<bool>(),
    ) {
        let mut data = mutate(wal_segment().to_vec(), &mutations);
        if recrc {
            data = fix_wal_crcs(data);
        }
        check_wal(&data)?;
    }

    #[test]
    fn snapshot_decode_survives_random_and_damaged_files(
        random in prop::collection::vec(any::<u8>(), 0..2048),
        mutations in prop::collection::vec(mutation(), 1..5),
        recrc in any::<bool>(),
    ) {
        check_snapshot(&random)?;
        let mut data = mutate(snapshot_file().to_vec(), &mutations);
        if recrc {
            data = fix_snapshot_crc(data);
        }
        check_snapshot(&data)?;
    }

    #[test]
    fn kv_restore_survives_random_and_damaged_data(
        random in prop::collection::vec(any::<u8>(), 0..2048),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        check_kv(&random)?;
        for header in [&b"KVS3"[..], b"KVSV\x01\0\0\0", b"KVSV\x02\0\0\0", b"KVSV"] {
            let mut with_magic = header.to_vec();
            with_magic.extend_from_slice(&random);
            check_kv(&with_magic)?;
        }
        check_kv(&mutate(kv_snapshot().to_vec(), &mutations))?;
        check_kv(&mutate(v1_kv_snapshot(), &mutations))?;
        check_kv(&mutate(versioned_v1_kv_snapshot(), &mutations))?;
    }

    #[test]
    fn command_decode_survives_random_and_damaged_commands(
        random in prop::collection::vec(any::<u8>(), 0..512),
        which in 0..15usize,
        mutations in prop::collection::vec(mutation(), 1..4),
        version in prop_oneof![Just(FORMAT_VERSION), any::<u8>()],
    ) {
        check_command(&random)?;
        let valid = commands()[which].clone();
        check_command(&mutate(valid.to_vec(), &mutations))?;
        // Every kind byte, bare (short form) and enveloped, with random bytes after it.
        for kind in 0..=15u8 {
            for header in [vec![kind], vec![ENVELOPE, version, kind]] {
                let mut data = header;
                data.extend_from_slice(&random);
                check_command(&data)?;
            }
        }
    }
}

/// The valid inputs decode to what was encoded (the properties above are not vacuous).
#[test]
fn the_valid_inputs_decode() {
    let mut rec = Recovered::default();
    let end = wal::replay_records(wal_segment(), true, &mut rec).unwrap();
    assert!(!end.torn);
    let indexes: Vec<u64> = rec.entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (5..=10).collect::<Vec<_>>());
    assert_eq!(&rec.entries.last().unwrap().data[..], b"overwrite");
    assert_eq!(rec.snapshot, Some(SnapshotMarker { index: 4, term: 1 }));

    let snap = snapshot::decode(snapshot_file().to_vec()).unwrap();
    assert_eq!(snap.get_metadata().index, 77);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
    let kv = Kv::restore(snap.data.clone()).unwrap();
    assert_eq!(kv.len(), 19);
    let v1 = Kv::restore(Bytes::from(v1_kv_snapshot())).unwrap();
    assert_eq!(v1.len(), 20);
    assert_eq!(v1.revision(), 20);
    assert_eq!(
        Kv::restore(Bytes::from(versioned_v1_kv_snapshot())).unwrap(),
        v1
    );
    let current = Kv::restore(Bytes::from_static(kv_snapshot())).unwrap();
    assert_eq!(current, kv);
    assert_eq!(kv.revision(), 22);

    for c in commands() {
        let decoded = Command::decode(c.clone()).unwrap();
        assert_eq!(decoded.encode(), c);
    }
    // Version 1's kinds also decode enveloped, to the same command.
    for c in short_commands() {
        let enveloped = [&[ENVELOPE, FORMAT_VERSION][..], &c].concat();
        let decoded = Command::decode(Bytes::from(enveloped.clone())).unwrap();
        assert_eq!(short_command(&Bytes::from(enveloped)), c);
        assert_eq!(Command::decode(c).unwrap(), decoded);
    }
}

/// A transaction header announcing four billion compares in five bytes must not reserve room
/// for them (it used to reserve 1024 at once, ~70 KiB, before reading a single one).
#[test]
fn a_huge_compare_count_allocates_nothing_up_front() {
    for header in [vec![4u8], vec![ENVELOPE, FORMAT_VERSION, 4]] {
        let mut data = header;
        data.extend_from_slice(&u32::MAX.to_le_bytes());
        let len = data.len();
        let (result, peak) = peak_of(|| Command::decode(Bytes::from(data)));
        assert!(result.is_err());
        assert!(
            peak < 4096,
            "allocated {peak} bytes for a {len}-byte command"
        );
    }
}
