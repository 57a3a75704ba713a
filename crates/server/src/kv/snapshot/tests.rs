//! The snapshot: restored whole in the current and the legacy form, serialized in steps,
//! unknown versions refused by name.

use bytes::Bytes;

use super::{LEGACY_MAGIC, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use crate::kv::tests::{b, put};
use crate::kv::{Command, Kv};

/// The long (`KVSV`, versioned) form of a snapshot this build writes in version 1's short
/// form (`KVS3`): the same body behind the version.
fn versioned(short: &Bytes) -> Bytes {
    assert_eq!(&short[..4], LEGACY_MAGIC);
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&short[4..]);
    Bytes::from(out)
}

#[test]
fn snapshot_restore_keeps_everything() {
    let mut kv = Kv::with_members([(1, "http://127.0.0.1:1".to_string())].into());
    kv.add_member(2, Some("http://127.0.0.1:2".into()));
    kv.add_member(3, Some("http://127.0.0.1:3".into()));
    kv.remove_member(3);
    assert!(kv.is_removed(3));
    kv.add_member(2, None);
    assert_eq!(kv.members()[&2], "http://127.0.0.1:2");
    put(&mut kv, "x", "1");
    put(&mut kv, "y", "");
    put(&mut kv, "x", "2");
    let restored = Kv::restore(kv.snapshot()).unwrap();
    assert_eq!(restored, kv);
    assert_eq!(restored.data_bytes(), 3);
    let snap = kv.snapshot();
    for cut in 0..snap.len() {
        assert!(Kv::restore(snap.slice(..cut)).is_err(), "cut at {cut}");
    }
}

/// A snapshot serialized a slice at a time while keys are written, deleted, created and
/// re-created captures exactly the state at its start, whatever the interleaving.
#[test]
fn a_snapshot_taken_in_steps_captures_the_state_at_its_start() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..30 {
        let mut kv = Kv::default();
        for i in 0..200 {
            if next(3) > 0 {
                put(&mut kv, &format!("k{:03}", i), &format!("v{i}"));
            }
        }
        let expected = kv.snapshot();
        kv.begin_snapshot();
        let budget = 1 + next(40) as usize;
        let data = loop {
            // Between steps: writes and deletes anywhere, before or after the cursor.
            for _ in 0..next(20) {
                let key = format!("k{:03}", next(220));
                let cmd = if next(3) == 0 {
                    Command::Delete {
                        key,
                        condition: None,
                    }
                } else {
                    Command::put(key, b(&format!("new{round}")))
                };
                kv.apply(cmd, &mut Vec::new());
            }
            if let Some(data) = kv.snapshot_step(budget) {
                break data;
            }
        };
        assert_eq!(data, expected, "round {round}, budget {budget}");
        assert!(!kv.is_snapshotting());
        let restored = Kv::restore(data).unwrap();
        assert_eq!(restored.snapshot(), expected);
    }
}

#[test]
fn both_forms_of_a_snapshot_restore_the_same_state() {
    let mut kv = Kv::with_members([(1, "http://127.0.0.1:1".to_string())].into());
    kv.add_member(2, Some("http://127.0.0.1:2".into()));
    kv.remove_member(2);
    put(&mut kv, "x", "1");
    put(&mut kv, "x", "2");
    put(&mut kv, "y", "");
    let short = kv.snapshot();
    let long = versioned(&short);
    for form in [short, long] {
        assert_eq!(Kv::restore(form.clone()).unwrap(), kv);
        for cut in 0..form.len() {
            assert!(Kv::restore(form.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}

/// The bytes of a small snapshot, written out by hand: version 1's short form, as c0c95b6
/// wrote it (the fixture's snapshot file holds one) and as this build still writes it, and the
/// long form, which restores the same.
#[test]
fn the_bytes_are_pinned() {
    let mut kv = Kv::with_members([(1, "u".to_string())].into());
    kv.add_member(2, Some("w".into()));
    kv.remove_member(2);
    put(&mut kv, "k", "v");
    let body: Vec<u8> = [
        &[1, 0, 0, 0, 0, 0, 0, 0][..], // revision 1
        &[1, 0, 0, 0],                 // one member
        &[1, 0, 0, 0, 0, 0, 0, 0],     // id 1
        &[1, 0, 0, 0, b'u'],           // its URL
        &[1, 0, 0, 0],                 // one removed id
        &[2, 0, 0, 0, 0, 0, 0, 0],     // id 2
        &[1, 0, 0, 0, 0, 0, 0, 0],     // one key
        &[1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v'],
        &[1, 0, 0, 0, 0, 0, 0, 0], // create_revision
        &[1, 0, 0, 0, 0, 0, 0, 0], // mod_revision
        &[1, 0, 0, 0, 0, 0, 0, 0], // version
    ]
    .concat();
    let short = [&b"KVS3"[..], &body].concat();
    assert_eq!(kv.snapshot(), short);
    kv.begin_snapshot();
    assert_eq!(kv.snapshot_step(usize::MAX).unwrap(), short);
    assert_eq!(Kv::restore(Bytes::from(short)).unwrap(), kv);
    let long = [&b"KVSV"[..], &[1, 0, 0, 0], &body].concat();
    assert_eq!(Kv::restore(Bytes::from(long)).unwrap(), kv);
}

#[test]
fn unknown_versions_are_refused_by_name() {
    let body = Kv::default().snapshot().slice(4..);
    for version in [0u32, SNAPSHOT_VERSION + 1, u32::MAX] {
        let data = [&SNAPSHOT_MAGIC[..], &version.to_le_bytes(), &body].concat();
        let e = Kv::restore(Bytes::from(data)).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "malformed snapshot data: unknown snapshot version {version} "
            )),
            "{e}"
        );
    }
    for data in [&b""[..], b"KVS", b"KVS2", b"KVSV", b"KVSV\x01\0\0"] {
        assert!(Kv::restore(Bytes::from_static(data)).is_err(), "{data:?}");
    }
}
