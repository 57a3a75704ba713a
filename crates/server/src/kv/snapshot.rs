//! The state machine's snapshot: its whole state (revisions, members, removed ids, leases,
//! alarms, every kept version of every key) as bytes, serialized at once or a slice at a time
//! while writes go on, and restored — in the current version or any older one.
//!
//! ```text
//! versioned (the long form):          | "KVSV" | version: u32 LE | body |
//! version 1's short form:             | "KVS3" | version-1 body |
//! body (version 1): | revision: u64 | members: u32, then (id: u64, URL) each |
//!                   | removed: u32, then id: u64 each | keys: u64, then entries, in key order |
//!   entry: | key | value | create_revision: u64 | mod_revision: u64 | version: u64 |
//! body (version 2): | revision: u64 | compact_revision: u64 | members (as in 1) | removed (as in 1) |
//!                   | leases: u32, then (id: i64, ttl: i64, renewed_at: u64) each |
//!                   | alarms: u32, then (member: u64, kind: u8, 1 = NOSPACE) each |
//!                   | keys: u64, then keys in order: key, versions: u32, then each version: |
//!                   |   mod_revision: u64, create_revision: u64, version: u64 (0: a deletion), |
//!                   |   lease: i64, value |
//! body (version 3): version 2's, with after the alarms | cluster id: u64 |
//!                   | attributes: u32, then (id: u64, name, client URLs: u32, then URL each) each |
//! ```
//! Strings and byte strings are a u32 length and the bytes; numbers little-endian. The body is
//! read to its end: trailing bytes are an error. A version this build does not know is an
//! error naming it (a newer build wrote it); the rules for a new version are in the module doc
//! of [`crate::kv`] ("The on-disk contract").
//!
//! **Serializing in slices.** A snapshot captures the state at its start (revision `s`): the
//! small parts (members, leases, alarms) are written at once, and the keys a slice at a time,
//! each with its versions up to `s`. That needs no copy-on-write, because while a snapshot is
//! being serialized nothing removes a version: writes only append versions after `s`, and the
//! physical compaction (the one thing that drops versions) waits for it ([`Kv::compact_step`]).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codec::{put_bytes, put_str, take_bytes, take_i64, take_string, take_u32, take_u64};
use super::command::{Alarm, AlarmKind, MemberAttributes};
use super::mvcc::{History, Version};
use super::Kv;
use crate::error::{Error, Result};

/// The magic of a versioned snapshot; a version (u32 LE) follows.
const SNAPSHOT_MAGIC: &[u8; 4] = b"KVSV";
/// The snapshot version this build writes (and the newest it reads).
pub const SNAPSHOT_VERSION: u32 = 3;
/// The magic of version 1's short form: what every build wrote before versions existed.
const LEGACY_MAGIC: &[u8; 4] = b"KVS3";

/// A snapshot serialized a slice at a time while writes go on (see the module doc).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SnapshotCursor {
    out: BytesMut,
    /// The store revision the snapshot captures.
    revision: u64,
    /// Where the key count goes, once known.
    count_at: usize,
    keys: u64,
    /// The last key serialized; every key up to it is done.
    done_through: Option<Bytes>,
}

fn malformed(why: &str) -> Error {
    Error::Malformed(format!("malformed snapshot data: {why}"))
}

impl Kv {
    /// The whole state, serialized at once (a new cluster's bootstrap snapshot, tests).
    pub fn snapshot(&self) -> Bytes {
        let mut cur = self.snapshot_start();
        self.snapshot_keys(&mut cur, usize::MAX);
        finish(cur)
    }

    /// Starts a snapshot of the current state that [`Kv::snapshot_step`] serializes a slice
    /// at a time, so a large state never stalls the caller (the raft loop) for long; writes in
    /// between do not change what it captures. Replaces an unfinished one.
    pub fn begin_snapshot(&mut self) {
        self.snapshotting = Some(Box::new(self.snapshot_start()));
    }

    /// Serializes up to `budget` more keys of the snapshot started by [`Kv::begin_snapshot`].
    /// Returns its data once complete (and forgets it); `None` while keys remain, or if no
    /// snapshot was started.
    pub fn snapshot_step(&mut self, budget: usize) -> Option<Bytes> {
        let mut cur = self.snapshotting.take()?;
        if self.snapshot_keys(&mut cur, budget) {
            return Some(finish(*cur));
        }
        self.snapshotting = Some(cur);
        None
    }

    /// True while a snapshot started by [`Kv::begin_snapshot`] is unfinished.
    pub fn is_snapshotting(&self) -> bool {
        self.snapshotting.is_some()
    }

    /// The header and the small parts of the state, in the current version.
    fn snapshot_start(&self) -> SnapshotCursor {
        let h = &self.history;
        let members: usize = self.members.values().map(|url| 12 + url.len()).sum();
        let attributes: usize = self
            .attributes
            .values()
            .map(|a| 16 + a.name.len() + a.client_urls.iter().map(|u| 4 + u.len()).sum::<usize>())
            .sum();
        let small_parts = 64
            + members
            + attributes
            + 8 * self.removed.len()
            + 24 * self.leases.len()
            + 9 * self.alarms.len();
        let mut b = BytesMut::with_capacity(small_parts + h.snapshot_bytes_bound());
        b.put_slice(SNAPSHOT_MAGIC);
        b.put_u32_le(SNAPSHOT_VERSION);
        b.put_u64_le(h.revision());
        b.put_u64_le(h.compact_revision());
        b.put_u32_le(self.members.len() as u32);
        for (id, url) in &self.members {
            b.put_u64_le(*id);
            put_str(&mut b, url);
        }
        b.put_u32_le(self.removed.len() as u32);
        for id in &self.removed {
            b.put_u64_le(*id);
        }
        b.put_u32_le(self.leases.len() as u32);
        for (id, lease) in self.leases.iter() {
            b.put_i64_le(*id);
            b.put_i64_le(lease.ttl);
            b.put_u64_le(lease.renewed_at);
        }
        b.put_u32_le(self.alarms.len() as u32);
        for alarm in &self.alarms {
            b.put_u64_le(alarm.member);
            b.put_u8(match alarm.kind {
                AlarmKind::NoSpace => 1,
            });
        }
        b.put_u64_le(self.cluster_id);
        b.put_u32_le(self.attributes.len() as u32);
        for (id, a) in &self.attributes {
            b.put_u64_le(*id);
            put_str(&mut b, &a.name);
            b.put_u32_le(a.client_urls.len() as u32);
            for url in &a.client_urls {
                put_str(&mut b, url);
            }
        }
        let count_at = b.len();
        b.put_u64_le(0);
        SnapshotCursor {
            out: b,
            revision: h.revision(),
            count_at,
            keys: 0,
            done_through: None,
        }
    }

    /// Serializes up to `budget` keys after the cursor; true once every key is done.
    fn snapshot_keys(&self, cur: &mut SnapshotCursor, budget: usize) -> bool {
        let after = cur.done_through.clone();
        let mut keys = self.history.versions_after(after.as_ref());
        for _ in 0..budget {
            let Some((key, versions)) = keys.next() else {
                return true;
            };
            cur.done_through = Some(key.clone());
            // Versions written after the snapshot started are not in it.
            let n = versions.partition_point(|v| v.mod_revision <= cur.revision);
            if n == 0 {
                continue;
            }
            cur.keys += 1;
            put_bytes(&mut cur.out, key);
            cur.out.put_u32_le(n as u32);
            for v in &versions[..n] {
                cur.out.put_u64_le(v.mod_revision);
                cur.out.put_u64_le(v.create_revision);
                cur.out.put_u64_le(v.version);
                cur.out.put_i64_le(v.lease);
                put_bytes(&mut cur.out, &v.value);
            }
        }
        keys.next().is_none()
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
            version @ (2 | 3) => restore_versioned(data, version),
            version => Err(malformed(&format!(
                "unknown snapshot version {version} (this build reads versions 1 to \
                 {SNAPSHOT_VERSION})"
            ))),
        }
    }
}

/// Writes the key count into its place.
fn finish(cur: SnapshotCursor) -> Bytes {
    let mut out = cur.out;
    out[cur.count_at..cur.count_at + 8].copy_from_slice(&cur.keys.to_le_bytes());
    out.freeze()
}

/// Members and removed ids (the same in versions 1 and 2).
fn take_members(data: &mut Bytes, kv: &mut Kv) -> Result<()> {
    let bad = malformed;
    let members = take_u32(data).ok_or_else(|| bad("member count"))?;
    for _ in 0..members {
        let id = take_u64(data).ok_or_else(|| bad("member id"))?;
        let url = take_string(data).ok_or_else(|| bad("member URL"))?;
        kv.members.insert(id, url);
    }
    let removed = take_u32(data).ok_or_else(|| bad("removed count"))?;
    for _ in 0..removed {
        kv.removed
            .insert(take_u64(data).ok_or_else(|| bad("removed id"))?);
    }
    Ok(())
}

/// Takes the next key, which must come after `last` (keys are stored in order, once each).
fn take_key(data: &mut Bytes, last: Option<&Bytes>) -> Result<Bytes> {
    let key = take_bytes(data).ok_or_else(|| malformed("key"))?;
    if last.is_some_and(|l| *l >= key) {
        return Err(malformed("keys out of order"));
    }
    Ok(key)
}

/// Restores a version-1 body (also the whole of a `KVS3` snapshot after its magic): one
/// version per key, and no history before its revision.
fn restore_v1(mut data: Bytes) -> Result<Kv> {
    let bad = malformed;
    let revision = take_u64(&mut data).ok_or_else(|| bad("revision"))?;
    let mut kv = Kv::default();
    take_members(&mut data, &mut kv)?;
    let count = take_u64(&mut data).ok_or_else(|| bad("key count"))?;
    let mut keys = BTreeMap::new();
    let mut last: Option<Bytes> = None;
    for _ in 0..count {
        let key = take_key(&mut data, last.as_ref())?;
        let value = take_bytes(&mut data).ok_or_else(|| bad("value"))?;
        if std::str::from_utf8(&key).is_err() {
            return Err(bad("key is not UTF-8"));
        }
        let create_revision = take_u64(&mut data).ok_or_else(|| bad("create revision"))?;
        let mod_revision = take_u64(&mut data).ok_or_else(|| bad("mod revision"))?;
        let version = take_u64(&mut data).ok_or_else(|| bad("version"))?;
        if version == 0 || mod_revision > revision {
            return Err(bad("key version"));
        }
        let v = Version {
            mod_revision,
            create_revision,
            version,
            lease: 0,
            value,
        };
        last = Some(key.clone());
        keys.insert(key, vec![v]);
    }
    if data.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    kv.history = History::restore(keys, revision, revision);
    Ok(kv)
}

/// Restores a version-2 or version-3 body.
fn restore_versioned(mut data: Bytes, version: u32) -> Result<Kv> {
    let bad = malformed;
    let d = &mut data;
    let revision = take_u64(d).ok_or_else(|| bad("revision"))?;
    let compact_revision = take_u64(d).ok_or_else(|| bad("compact revision"))?;
    if compact_revision > revision {
        return Err(bad("compact revision after the revision"));
    }
    let mut kv = Kv::default();
    take_members(d, &mut kv)?;
    take_leases(d, &mut kv)?;
    take_alarms(d, &mut kv)?;
    if version >= 3 {
        kv.cluster_id = take_u64(d).ok_or_else(|| bad("cluster id"))?;
        take_attributes(d, &mut kv)?;
    }
    let keys = take_versioned_keys(d, revision)?;
    if data.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    kv.history = History::restore(keys, revision, compact_revision);
    // Attach each key to its lease; a key naming a lease that is not there is corrupt.
    let attached: Vec<(Bytes, i64)> = kv
        .history
        .live()
        .filter(|(_, v)| v.lease != 0)
        .map(|(k, v)| (k.clone(), v.lease))
        .collect();
    for (key, lease) in attached {
        if !kv.leases.contains(lease) {
            return Err(bad("a key attached to a missing lease"));
        }
        kv.leases.reattach(&key, 0, lease);
    }
    Ok(kv)
}

/// The leases of a version-2 body (their keys are attached once the keys are read).
fn take_leases(d: &mut Bytes, kv: &mut Kv) -> Result<()> {
    let bad = malformed;
    let leases = take_u32(d).ok_or_else(|| bad("lease count"))?;
    let mut last_lease = None;
    for _ in 0..leases {
        let id = take_i64(d).ok_or_else(|| bad("lease id"))?;
        // Written in id order, once each; 0 is "no lease", never an id.
        if id == 0 || last_lease.is_some_and(|l| l >= id) {
            return Err(bad("lease ids out of order, repeated or 0"));
        }
        last_lease = Some(id);
        let ttl = take_i64(d).ok_or_else(|| bad("lease TTL"))?;
        let renewed_at = take_u64(d).ok_or_else(|| bad("lease renewal"))?;
        kv.leases.restore(id, ttl, renewed_at);
    }
    Ok(())
}

/// The members' attributes of a version-3 body: each of a member, in id order, once.
fn take_attributes(d: &mut Bytes, kv: &mut Kv) -> Result<()> {
    let bad = malformed;
    let count = take_u32(d).ok_or_else(|| bad("attribute count"))?;
    let mut last = None;
    for _ in 0..count {
        let id = take_u64(d).ok_or_else(|| bad("attribute member"))?;
        if last.is_some_and(|l| l >= id) || !kv.members.contains_key(&id) {
            return Err(bad("attributes out of order, repeated, or of no member"));
        }
        last = Some(id);
        let name = take_string(d).ok_or_else(|| bad("member name"))?;
        let urls = take_u32(d).ok_or_else(|| bad("client URL count"))?;
        let client_urls = (0..urls)
            .map(|_| take_string(d).ok_or_else(|| bad("client URL")))
            .collect::<Result<Vec<String>>>()?;
        kv.attributes
            .insert(id, MemberAttributes { name, client_urls });
    }
    Ok(())
}

/// The alarms of a version-2 body.
fn take_alarms(d: &mut Bytes, kv: &mut Kv) -> Result<()> {
    let alarms = take_u32(d).ok_or_else(|| malformed("alarm count"))?;
    for _ in 0..alarms {
        let member = take_u64(d).ok_or_else(|| malformed("alarm member"))?;
        let kind = match d.has_remaining().then(|| d.get_u8()) {
            Some(1) => AlarmKind::NoSpace,
            _ => return Err(malformed("alarm kind")),
        };
        kv.alarms.insert(Alarm { member, kind });
    }
    Ok(())
}

/// The keys of a version-2 body, each with its versions (in order, none after `revision`).
fn take_versioned_keys(d: &mut Bytes, revision: u64) -> Result<BTreeMap<Bytes, Vec<Version>>> {
    let bad = malformed;
    let count = take_u64(d).ok_or_else(|| bad("key count"))?;
    let mut keys = BTreeMap::new();
    let mut last: Option<Bytes> = None;
    for _ in 0..count {
        let key = take_key(d, last.as_ref())?;
        let n = take_u32(d).ok_or_else(|| bad("version count"))?;
        let mut versions: Vec<Version> = Vec::with_capacity((n as usize).min(d.remaining() / 36));
        for _ in 0..n {
            let v = Version {
                mod_revision: take_u64(d).ok_or_else(|| bad("mod revision"))?,
                create_revision: take_u64(d).ok_or_else(|| bad("create revision"))?,
                version: take_u64(d).ok_or_else(|| bad("version"))?,
                lease: take_i64(d).ok_or_else(|| bad("lease"))?,
                value: take_bytes(d).ok_or_else(|| bad("value"))?,
            };
            let in_order = versions
                .last()
                .is_none_or(|p| p.mod_revision < v.mod_revision);
            if !in_order || v.mod_revision > revision {
                return Err(bad("versions out of order"));
            }
            versions.push(v);
        }
        if versions.is_empty() {
            return Err(bad("a key without versions"));
        }
        last = Some(key.clone());
        keys.insert(key, versions);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
