//! The state machine's snapshot: its whole state (revision, members, removed ids, every key
//! with its metadata) as bytes, serialized at once or a slice at a time while writes go on,
//! and restored — in the current version or any older one.
//!
//! ```text
//! versioned (the long form):         | "KVSV" | version: u32 LE | body |
//! short form (version 1, as written): | "KVS3" | body |   (the version-1 body)
//! body (version 1): | revision: u64 | members: u32, then (id: u64, URL) each |
//!                   | removed: u32, then id: u64 each | keys: u64, then entries, in key order |
//! entry: | key | value | create_revision: u64 | mod_revision: u64 | version: u64 |
//! ```
//! Strings and byte strings are a u32 length and the bytes; numbers little-endian. The body
//! is read to its end: trailing bytes are an error. A version this build does not know is an
//! error naming it (a newer build wrote it); the rules for a new version are in the module doc
//! of [`crate::kv`] ("The on-disk contract").

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codec::{put_bytes, put_str, take_bytes, take_string, take_u32, take_u64};
use super::{Entry, Kv};
use crate::error::{Error, Result};

/// The magic of a versioned snapshot; a version (u32 LE) follows.
const SNAPSHOT_MAGIC: &[u8; 4] = b"KVSV";
/// The snapshot version this build writes (and the newest it reads).
pub const SNAPSHOT_VERSION: u32 = 1;
/// The magic of version 1's short form, a version-1 body follows at once: what every build
/// wrote before versions existed, and what this one still writes, so that a member of a
/// cluster being upgraded one node at a time (or a data dir moved back to an older build)
/// can read it. A later version is written only in the long form.
const LEGACY_MAGIC: &[u8; 4] = b"KVS3";
/// Bytes before the entries at most: magic, version, revision, three counts.
const HEADER_BYTES: usize = 4 + 4 + 8 + 4 + 4 + 8;

/// A snapshot serialized a slice at a time while writes go on. It captures the state as of
/// its start: a key changed before the cursor reaches it has its entry from the start kept in
/// `before`, and that is what gets serialized (copy-on-write, one key at a time).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SnapshotCursor {
    out: BytesMut,
    /// The last key serialized; every key up to it is done.
    done_through: Option<String>,
    /// Keys changed since the start and not serialized yet, with their entry at the start
    /// (`None`: the key did not exist then).
    before: BTreeMap<String, Option<Entry>>,
}

fn malformed(why: &str) -> Error {
    Error::Malformed(format!("malformed snapshot data: {why}"))
}

impl Kv {
    /// Before a key changes: if a snapshot being serialized has not reached it yet, keeps its
    /// entry as of the snapshot's start.
    pub(super) fn keep_for_snapshot(&mut self, key: &str) {
        if let Some(cur) = self.snapshotting.as_mut() {
            let pending = cur.done_through.as_deref().is_none_or(|done| key > done);
            if pending && !cur.before.contains_key(key) {
                cur.before
                    .insert(key.to_string(), self.data.get(key).cloned());
            }
        }
    }

    /// The whole state, serialized at once (a new cluster's bootstrap snapshot, tests).
    pub fn snapshot(&self) -> Bytes {
        let mut b = self.snapshot_header(BytesMut::new());
        for (k, e) in &self.data {
            put_entry(&mut b, k, e);
        }
        b.freeze()
    }

    /// Starts a snapshot of the current state that [`Kv::snapshot_step`] serializes a slice
    /// at a time, so a large state never stalls the caller (the raft loop) for long; writes in
    /// between do not change what it captures. Replaces an unfinished one.
    pub fn begin_snapshot(&mut self) {
        let out = self.snapshot_header(BytesMut::new());
        self.snapshotting = Some(Box::new(SnapshotCursor {
            out,
            done_through: None,
            before: BTreeMap::new(),
        }));
    }

    /// Serializes up to `budget` more entries of the snapshot started by
    /// [`Kv::begin_snapshot`]. Returns its data once complete (and forgets it); `None` while
    /// entries remain, or if no snapshot was started.
    pub fn snapshot_step(&mut self, budget: usize) -> Option<Bytes> {
        let Kv {
            data, snapshotting, ..
        } = self;
        let cur = snapshotting.as_mut()?;
        let from = match &cur.done_through {
            Some(done) => Bound::Excluded(done.as_str()),
            None => Bound::Unbounded,
        };
        // Merge the live entries with the kept ones; a kept one wins (it is the older).
        let mut live = data.range::<str, _>((from, Bound::Unbounded)).peekable();
        let mut kept = cur
            .before
            .range::<str, _>((from, Bound::Unbounded))
            .peekable();
        let mut last: Option<&str> = None;
        for _ in 0..budget {
            let live_first = match (live.peek(), kept.peek()) {
                (None, None) => break,
                (Some((lk, _)), Some((kk, _))) => lk.as_str() < kk.as_str(),
                (next_live, _) => next_live.is_some(),
            };
            let (key, entry) = if live_first {
                match live.next() {
                    Some((k, e)) => (k, Some(e)),
                    None => break,
                }
            } else {
                // The kept entry shadows a live one under the same key.
                if live.peek().map(|(k, _)| *k) == kept.peek().map(|(k, _)| *k) {
                    live.next();
                }
                match kept.next() {
                    Some((k, e)) => (k, e.as_ref()),
                    None => break,
                }
            };
            if let Some(e) = entry {
                put_entry(&mut cur.out, key, e);
            }
            last = Some(key.as_str());
        }
        if live.peek().is_none() && kept.peek().is_none() {
            return snapshotting.take().map(|cur| cur.out.freeze());
        }
        if let Some(last) = last.map(str::to_string) {
            // Kept entries up to the cursor are serialized; drop them.
            cur.before = cur.before.split_off(last.as_str());
            cur.before.remove(&last);
            cur.done_through = Some(last);
        }
        None
    }

    /// True while a snapshot started by [`Kv::begin_snapshot`] is unfinished.
    pub fn is_snapshotting(&self) -> bool {
        self.snapshotting.is_some()
    }

    /// The snapshot up to the entry count, in the current version, written into `b` (cleared
    /// first).
    fn snapshot_header(&self, mut b: BytesMut) -> BytesMut {
        let size = self.data_bytes as usize
            + self.data.len() * 32
            + self.members.values().map(|u| 12 + u.len()).sum::<usize>()
            + self.removed.len() * 8
            + HEADER_BYTES;
        b.clear();
        b.reserve(size);
        // Version 1, in its short form (see LEGACY_MAGIC).
        b.put_slice(LEGACY_MAGIC);
        b.put_u64_le(self.revision);
        b.put_u32_le(self.members.len() as u32);
        for (id, url) in &self.members {
            b.put_u64_le(*id);
            put_str(&mut b, url);
        }
        b.put_u32_le(self.removed.len() as u32);
        for id in &self.removed {
            b.put_u64_le(*id);
        }
        b.put_u64_le(self.data.len() as u64);
        b
    }

    /// Rebuilds the state from snapshot data of any version this build knows; values share
    /// the snapshot's buffer.
    pub fn restore(mut data: Bytes) -> Result<Kv> {
        if data.remaining() < 4 {
            return Err(malformed("missing header"));
        }
        let magic = data.split_to(4);
        if &magic[..] == LEGACY_MAGIC {
            return restore_v1(data);
        }
        if &magic[..] != SNAPSHOT_MAGIC {
            return Err(malformed("missing header"));
        }
        match take_u32(&mut data).ok_or_else(|| malformed("version"))? {
            1 => restore_v1(data),
            version => Err(malformed(&format!(
                "unknown snapshot version {version} (this build reads versions 1 to \
                 {SNAPSHOT_VERSION})"
            ))),
        }
    }
}

/// Restores a version-1 body (also the whole of a legacy `KVS3` snapshot after its magic).
fn restore_v1(mut data: Bytes) -> Result<Kv> {
    let bad = malformed;
    let mut kv = Kv {
        revision: take_u64(&mut data).ok_or_else(|| bad("revision"))?,
        ..Kv::default()
    };
    let members = take_u32(&mut data).ok_or_else(|| bad("member count"))?;
    for _ in 0..members {
        let id = take_u64(&mut data).ok_or_else(|| bad("member id"))?;
        let url = take_string(&mut data).ok_or_else(|| bad("member URL"))?;
        kv.members.insert(id, url);
    }
    let removed = take_u32(&mut data).ok_or_else(|| bad("removed count"))?;
    for _ in 0..removed {
        kv.removed
            .insert(take_u64(&mut data).ok_or_else(|| bad("removed id"))?);
    }
    let count = take_u64(&mut data).ok_or_else(|| bad("key count"))?;
    for _ in 0..count {
        let key = take_string(&mut data).ok_or_else(|| bad("key"))?;
        let value = take_bytes(&mut data).ok_or_else(|| bad("value"))?;
        let create_revision = take_u64(&mut data).ok_or_else(|| bad("create revision"))?;
        let mod_revision = take_u64(&mut data).ok_or_else(|| bad("mod revision"))?;
        let version = take_u64(&mut data).ok_or_else(|| bad("version"))?;
        kv.data_bytes += (key.len() + value.len()) as u64;
        kv.data.insert(
            key,
            Entry {
                value,
                create_revision,
                mod_revision,
                version,
            },
        );
    }
    if data.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(kv)
}

fn put_entry(b: &mut BytesMut, key: &str, e: &Entry) {
    put_str(b, key);
    put_bytes(b, &e.value);
    b.put_u64_le(e.create_revision);
    b.put_u64_le(e.mod_revision);
    b.put_u64_le(e.version);
}

#[cfg(test)]
mod tests;
