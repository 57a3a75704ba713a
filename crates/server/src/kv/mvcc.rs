//! The revision history: every version of every key since the compaction point, read at any
//! revision, and compacted away a bounded slice at a time.
//!
//! Each key maps to its versions in revision order; a delete appends a *tombstone* (a version
//! with `version == 0`) so a read at an earlier revision still finds what was there. A second
//! index, the log, lists `(revision, key)` for every version in revision order: it is what
//! compaction walks (only the keys changed before the compaction point are visited) and what
//! a watch catching up from an old revision reads.
//!
//! **Compaction** at `c` makes revisions before `c` unreadable at once (the logical step:
//! `compact_revision = c`), then, a slice at a time ([`History::compact_step`]), visits the keys
//! of the log entries before `c` (dropping those entries) and of the entries at `c` (keeping
//! them), and drops for each key visited every version older than the newest one at or before
//! `c` — and that one too
//! if it is a tombstone older than `c` (the key is absent from `c` on). A tombstone *at* `c`
//! stays, so a watch from `c` still sees that delete. The physical step changes nothing a
//! read or watch at `c` or later can see, so it may lag (and pauses while a snapshot is
//! serialized, which then needs no copy-on-write: versions are only appended meanwhile).
//!
//! **Slots.** A key's versions live in a slot (a vector index); the key index maps each key to
//! its slot and the log names slots, not keys, so the physical step and a watch catching up
//! reach a key's versions without a search of the index (a search was a third of a write's
//! cost on the raft loop at 100,000 keys). A slot is freed when its key's last version is
//! dropped and reused by a later new key. Log entries before the compaction point may still
//! name a reused slot; they are harmless, because the new key's versions were all written
//! after the point (a slot is only freed by the physical step, which runs at a current
//! revision at or past the point), so a visit drops nothing of them, and no read or watch looks
//! before the point.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;
use smallvec::SmallVec;

use super::command::{Event, KeyValue, LeaseId};
use super::range::{KeyRange, RangeQuery, RangeResult};

/// One version of a key. `version == 0` marks a tombstone (the key was deleted at
/// `mod_revision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Version {
    pub mod_revision: u64,
    pub create_revision: u64,
    pub version: u64,
    pub lease: LeaseId,
    pub value: Bytes,
}

impl Version {
    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    pub fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// Log entries one page of changes looks at, at most (after finishing its revision).
pub const MAX_CHANGES_PER_PAGE: usize = 4096;

/// What a put wrote: the key after and before, and whether the key was already written in
/// this revision (a transaction writing it twice).
pub(super) struct Written {
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
    pub rewrite: bool,
}

/// A key's versions, oldest first. Most keys hold one (after a compaction), so it is kept
/// inline: a `Vec` would allocate room for four on its first push.
pub(super) type Versions = SmallVec<[Version; 1]>;

/// Bytes a version counts for in the store's size (its key and value; the quota's measure).
fn version_bytes(key: &[u8], v: &Version) -> u64 {
    (key.len() + v.value.len()) as u64
}

/// A key and its versions (see "Slots" in the module doc). A free slot has no versions.
#[derive(Debug, Default)]
struct Slot {
    key: Bytes,
    versions: Versions,
}

/// Each key's slot, kept twice: in key order (ranges, snapshots, hashes) and hashed, so a
/// write or a read of one key finds its slot without walking the B-tree (at 100,000 keys that
/// walk and its key comparisons were a tenth of the leader's CPU under PUT or GET, and every
/// replica applies every write). The two maps change only together, here.
#[derive(Debug, Default)]
struct KeyIndex {
    ordered: BTreeMap<Bytes, usize>,
    hashed: HashMap<Bytes, usize>,
}

impl KeyIndex {
    fn get(&self, key: &[u8]) -> Option<usize> {
        self.hashed.get(key).copied()
    }

    fn insert(&mut self, key: Bytes, slot: usize) {
        self.ordered.insert(key.clone(), slot);
        self.hashed.insert(key, slot);
    }

    fn remove(&mut self, key: &[u8]) {
        self.ordered.remove(key);
        self.hashed.remove(key);
    }

    fn len(&self) -> usize {
        self.hashed.len()
    }

    /// The keys and their slots, in key order.
    fn ordered(&self) -> &BTreeMap<Bytes, usize> {
        &self.ordered
    }
}

/// Every kept version of every key, and the revision counters.
#[derive(Debug, Default)]
pub(super) struct History {
    /// Each key's slot.
    index: KeyIndex,
    slots: Vec<Slot>,
    /// Slots free for the next new key.
    free: Vec<usize>,
    /// `(revision, slot)` of every version, in revision order.
    log: VecDeque<(u64, usize)>,
    revision: u64,
    compact_revision: u64,
    /// Keys that exist at the current revision.
    live_keys: usize,
    /// Bytes of the keys and values that exist at the current revision.
    live_bytes: u64,
    /// Bytes of every kept version (the quota's measure).
    total_bytes: u64,
    /// Versions kept, tombstones included.
    versions: usize,
    /// Log entries at the compaction point whose keys the physical step has visited (their
    /// entries stay: a watch from the point reads them).
    visited_at_point: usize,
}

impl History {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    pub fn live_keys(&self) -> usize {
        self.live_keys
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// An upper bound on the bytes the keys and versions take in a snapshot (see
    /// `kv::snapshot`): a key's length and version count, and per version four numbers, the
    /// value's length and the value. The snapshot's buffer is made this large at once: one
    /// that grows by doubling copies, and faults in, up to twice the state on the raft loop.
    pub fn snapshot_bytes_bound(&self) -> usize {
        // total_bytes counts a key once per version, so it covers the key bytes.
        self.total_bytes as usize + 8 * self.index.len() + 36 * self.versions
    }

    /// Revisions from the compaction point to the current one.
    pub fn retained_revisions(&self) -> u64 {
        self.revision - self.compact_revision
    }

    /// Starts the next revision (the caller writes in it).
    pub fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// The slot of `key`, if it has versions.
    fn slot_of(&self, key: &[u8]) -> Option<&Slot> {
        self.index.get(key).map(|i| &self.slots[i])
    }

    /// The key as it is now, if it exists.
    pub fn current(&self, key: &[u8]) -> Option<KeyValue> {
        let slot = self.slot_of(key)?;
        slot.versions
            .last()
            .filter(|v| !v.is_tombstone())
            .map(|v| v.to_kv(&slot.key))
    }

    /// The key as it was at `revision`.
    fn at(key: &Bytes, versions: &[Version], revision: u64) -> Option<KeyValue> {
        let n = versions.partition_point(|v| v.mod_revision <= revision);
        let v = versions.get(n.checked_sub(1)?)?;
        (!v.is_tombstone()).then(|| v.to_kv(key))
    }

    /// Checks a revision to read at (0: current), returning the one to use.
    pub fn readable(&self, revision: u64) -> Result<u64, super::Refusal> {
        match revision {
            0 => Ok(self.revision),
            r if r > self.revision => Err(super::Refusal::FutureRevision {
                current: self.revision,
            }),
            r if r < self.compact_revision => Err(super::Refusal::Compacted {
                compact_revision: self.compact_revision,
            }),
            r => Ok(r),
        }
    }

    /// The keys of `range` that exist at `revision` (already checked readable), in key order.
    pub fn scan<'a>(
        &'a self,
        range: &KeyRange,
        revision: u64,
    ) -> Box<dyn Iterator<Item = KeyValue> + 'a> {
        if range.is_empty() {
            return Box::new(std::iter::empty());
        }
        if let KeyRange::Key(key) = range {
            // One key (every GET): a lookup, not a range walk.
            let one = self
                .slot_of(&key[..])
                .and_then(|slot| History::at(&slot.key, &slot.versions, revision));
            return Box::new(one.into_iter());
        }
        let (lo, hi) = range.bounds();
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) =
            (lo.as_ref().map(|b| &b[..]), hi.as_ref().map(|b| &b[..]));
        let current = revision == self.revision;
        let iter = self
            .index
            .ordered()
            .range::<[u8], _>(bounds)
            .filter_map(move |(_, &i)| {
                let Slot { key, versions } = &self.slots[i];
                match current {
                    // The common case: the newest version, no search.
                    true => versions
                        .last()
                        .filter(|v| !v.is_tombstone())
                        .map(|v| v.to_kv(key)),
                    false => History::at(key, versions, revision),
                }
            });
        Box::new(iter)
    }

    /// Answers a range read (its revision already checked readable).
    pub fn range(&self, query: &RangeQuery, revision: u64) -> RangeResult {
        let mut count = 0u64;
        let mut kvs = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        let sorted = !query.in_key_order();
        // What a key adds to the answer (no value if keys only), and whether an answer of
        // `n` keys and `bytes` is full: the limit, or the byte budget after the first key.
        let size = |kv: &KeyValue| kv.key.len() + if query.keys_only { 0 } else { kv.value.len() };
        let full = |n: usize, bytes: usize| {
            (query.limit > 0 && n >= query.limit) || (n > 0 && bytes >= query.max_bytes)
        };
        for kv in self.scan(&query.range, revision) {
            // etcd's count: every key of the range, before the revision filters and limits.
            count += 1;
            if query.count_only || !query.admits(&kv) {
                continue;
            }
            // Sorting needs every match; otherwise stop collecting at the limits, and stop
            // reading too unless every key is to be counted.
            if !sorted && full(kvs.len(), bytes) {
                more = true;
                if query.count_all {
                    continue;
                }
                break;
            }
            bytes = bytes.saturating_add(size(&kv));
            kvs.push(kv);
        }
        if sorted {
            query.sort(&mut kvs);
            let mut bytes = 0usize;
            let cut = kvs.iter().enumerate().position(|(n, kv)| {
                let stop = full(n, bytes);
                bytes = bytes.saturating_add(size(kv));
                stop
            });
            if let Some(n) = cut {
                kvs.truncate(n);
                more = true;
            }
        }
        if query.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        RangeResult {
            revision: self.revision,
            kvs,
            more,
            count,
        }
    }

    /// Writes a new version of `key` at the current revision (the caller bumped it); returns
    /// the key after and before. A second write of one key in one revision (a transaction)
    /// replaces the first.
    pub fn put(&mut self, key: Bytes, value: Bytes, lease: LeaseId) -> Written {
        let revision = self.revision;
        // A hash lookup: this runs on the raft loop for every write, on every replica.
        let i = match self.index.get(&key) {
            Some(i) => i,
            None => {
                let slot = Slot {
                    key: key.clone(),
                    versions: Versions::new(),
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i] = slot;
                        i
                    }
                    None => {
                        self.slots.push(slot);
                        self.slots.len() - 1
                    }
                };
                self.index.insert(key, i);
                i
            }
        };
        let Slot { key, versions } = &mut self.slots[i];
        let rewrite = versions.last().is_some_and(|v| v.mod_revision == revision);
        let prev = versions
            .last()
            .filter(|v| !v.is_tombstone())
            .map(|v| v.to_kv(key));
        let new = Version {
            mod_revision: revision,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value,
        };
        match &prev {
            Some(p) => self.live_bytes -= (p.key.len() + p.value.len()) as u64,
            None => self.live_keys += 1,
        }
        self.live_bytes += version_bytes(key, &new);
        let kv = new.to_kv(key);
        let counts = (&mut self.total_bytes, &mut self.versions);
        append(counts, (&mut self.log, i), key, versions, new);
        Written { kv, prev, rewrite }
    }

    /// Deletes `key` at the current revision if it exists; returns it as it was, and whether
    /// it was already written in this revision (a transaction).
    pub fn delete(&mut self, key: &[u8]) -> Option<(KeyValue, bool)> {
        let revision = self.revision;
        let i = self.index.get(key)?;
        let Slot { key, versions } = &mut self.slots[i];
        let prev = versions
            .last()
            .filter(|v| !v.is_tombstone())
            .map(|v| v.to_kv(key))?;
        let rewrite = versions.last().is_some_and(|v| v.mod_revision == revision);
        self.live_keys -= 1;
        self.live_bytes -= (prev.key.len() + prev.value.len()) as u64;
        let tombstone = Version {
            mod_revision: revision,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
        };
        append(
            (&mut self.total_bytes, &mut self.versions),
            (&mut self.log, i),
            key,
            versions,
            tombstone,
        );
        Some((prev, rewrite))
    }

    /// The logical compaction: revisions before `revision` are unreadable from now on. The
    /// caller checked `compact_revision < revision <= current`.
    pub fn compact(&mut self, revision: u64) {
        debug_assert!(revision > self.compact_revision && revision <= self.revision);
        self.compact_revision = revision;
        self.visited_at_point = 0;
    }

    /// True while versions before the compaction point are still held.
    pub fn compaction_pending(&self) -> bool {
        let at = self.compact_revision;
        self.log.front().is_some_and(|(r, _)| *r < at)
            || self
                .log
                .get(self.visited_at_point)
                .is_some_and(|(r, _)| *r == at)
    }

    /// The physical compaction, for up to `budget` log entries before the compaction point,
    /// then the keys written at it. A key whose newest version at or before the previous
    /// compaction point survived it has no log entry before the new point; if its next
    /// version is at the new point, only that entry leads here to drop the survivor.
    pub fn compact_step(&mut self, budget: usize) {
        let at = self.compact_revision;
        for _ in 0..budget {
            let slot = match self.log.front() {
                Some(&(r, slot)) if r < at => {
                    self.log.pop_front();
                    slot
                }
                _ => match self.log.get(self.visited_at_point) {
                    Some(&(r, slot)) if r == at => {
                        self.visited_at_point += 1;
                        slot
                    }
                    _ => return,
                },
            };
            self.compact_slot(slot, at);
        }
    }

    /// Drops the versions of slot `i`'s key that no read at `at` or later can see (always
    /// safe, whichever log entry led here: see "Slots" in the module doc), and frees the slot
    /// if none is left.
    fn compact_slot(&mut self, i: usize, at: u64) {
        let Slot { key, versions } = &mut self.slots[i];
        if versions.is_empty() {
            return; // Free: freed by an earlier visit.
        }
        for v in versions.drain(..first_kept(versions, at)) {
            self.total_bytes -= version_bytes(key, &v);
            self.versions -= 1;
        }
        if versions.is_empty() {
            self.index.remove(&key[..]);
            self.slots[i] = Slot::default();
            self.free.push(i);
        }
        // A key that spilled to the heap stays there: it is written to again (shrinking it
        // back inline would free and allocate once per write). Keys written once stay inline.
    }

    /// A CRC32C of every version readable at some revision from the compaction point to
    /// `revision` (key, revisions, version, lease, value, in key then revision order): equal
    /// on every replica at the same revision, however far each one's physical compaction
    /// got, since that only drops versions no such read can see.
    pub fn hash(&self, revision: u64) -> u32 {
        let at = self.compact_revision;
        let mut crc = 0u32;
        for (key, &i) in self.index.ordered() {
            let versions = &self.slots[i].versions;
            let kept = &versions[first_kept(versions, at)..];
            for v in kept.iter().take_while(|v| v.mod_revision <= revision) {
                crc = crc32c::crc32c_append(crc, key);
                for n in [v.mod_revision, v.create_revision, v.version, v.lease as u64] {
                    crc = crc32c::crc32c_append(crc, &n.to_le_bytes());
                }
                crc = crc32c::crc32c_append(crc, &v.value);
            }
        }
        crc
    }

    /// The versions of every key with `mod_revision <= revision`, in key order (a
    /// snapshot's content), from the key after `after` on.
    pub fn versions_after<'a>(
        &'a self,
        after: Option<&'a Bytes>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a [Version])> + 'a {
        let lower = match after {
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Unbounded,
        };
        self.index
            .ordered()
            .range::<[u8], _>((lower, Bound::Unbounded))
            .map(|(k, &i)| (k, self.slots[i].versions.as_slice()))
    }

    /// The changes of whole revisions from `from` on, in revision order, stopping at a
    /// revision boundary once their keys and values reach `max_bytes` or
    /// [`MAX_CHANGES_PER_PAGE`] log entries were looked at (a revision is never split, and
    /// the first is always whole); returns them and the first revision not included (the
    /// current one + 1 when all were).
    pub fn changes_from(&self, from: u64, max_bytes: usize) -> (Vec<Event>, u64) {
        let start = self.log.partition_point(|(r, _)| *r < from);
        let mut out = Vec::new();
        let mut last = None;
        let mut bytes = 0usize;
        for (n, &(revision, slot)) in self.log.iter().skip(start).enumerate() {
            let full = bytes >= max_bytes || n >= MAX_CHANGES_PER_PAGE;
            if full && last.is_some_and(|l| l != revision) {
                return (out, revision);
            }
            last = Some(revision);
            if let Some(e) = self.event(&self.slots[slot], revision) {
                bytes = bytes.saturating_add(e.kv.key.len() + e.kv.value.len());
                out.push(e);
            }
        }
        // A start after the current revision is still where the next changes begin.
        (out, (self.revision + 1).max(from))
    }

    /// The change to a slot's key at `revision`, as a watcher sees it.
    fn event(&self, slot: &Slot, revision: u64) -> Option<Event> {
        let Slot { key, versions } = slot;
        let i = versions.partition_point(|v| v.mod_revision < revision);
        let v = versions.get(i).filter(|v| v.mod_revision == revision)?;
        let prev = i
            .checked_sub(1)
            .and_then(|j| versions.get(j))
            .filter(|p| !p.is_tombstone())
            .map(|p| p.to_kv(key));
        let deleted = v.is_tombstone();
        let kv = match deleted {
            true => KeyValue {
                key: key.clone(),
                mod_revision: revision,
                ..KeyValue::default()
            },
            false => v.to_kv(key),
        };
        Some(Event { kv, deleted, prev })
    }

    /// Rebuilds a history from versions read back from a snapshot (each key's in revision
    /// order; `compact_revision` and `revision` as the snapshot says), physically compacted:
    /// the same history as the one snapshotted once its compaction finished.
    pub fn restore(
        keys: BTreeMap<Bytes, Vec<Version>>,
        revision: u64,
        compact_revision: u64,
    ) -> History {
        let mut keys: BTreeMap<Bytes, Versions> = keys
            .into_iter()
            .map(|(k, v)| (k, Versions::from_vec(v)))
            .collect();
        let mut h = History {
            revision,
            compact_revision,
            ..History::default()
        };
        keys.retain(|_, versions| {
            versions.drain(..first_kept(versions, compact_revision));
            versions.shrink_to_fit();
            !versions.is_empty()
        });
        let mut log = Vec::new();
        for (i, (k, versions)) in keys.into_iter().enumerate() {
            h.versions += versions.len();
            for v in &versions {
                h.total_bytes += version_bytes(&k, v);
                // Survivors of a compaction have no entry (see compact_step).
                if v.mod_revision >= compact_revision {
                    log.push((v.mod_revision, i));
                }
            }
            if let Some(v) = versions.last().filter(|v| !v.is_tombstone()) {
                h.live_keys += 1;
                h.live_bytes += version_bytes(&k, v);
            }
            h.index.insert(k.clone(), i);
            h.slots.push(Slot { key: k, versions });
        }
        // Within one revision (a transaction), key order (slots are numbered in key order):
        // the order the writes were made in is not in the snapshot.
        log.sort_unstable();
        h.visited_at_point = log
            .iter()
            .take_while(|(r, _)| *r == compact_revision)
            .count();
        h.log = log.into();
        h
    }

    /// Every key's newest version, if it exists: for rebuilding lease attachments.
    pub fn live(&self) -> impl Iterator<Item = (&Bytes, &Version)> {
        self.index.ordered().iter().filter_map(|(k, &i)| {
            let newest = self.slots[i].versions.last()?;
            (!newest.is_tombstone()).then_some((k, newest))
        })
    }

    /// Whether two histories hold the same keys and versions, and the same log naming the
    /// same keys, whatever slots they use.
    fn content_eq(&self, other: &History) -> bool {
        let log = |h: &History| {
            let named = |&(r, i): &(u64, usize)| (r, h.slots[i].key.clone());
            h.log.iter().map(named).collect::<Vec<_>>()
        };
        self.versions_after(None).eq(other.versions_after(None)) && log(self) == log(other)
    }
}

/// Equal histories hold the same versions, log and counters; slot numbers may differ.
impl PartialEq for History {
    fn eq(&self, other: &History) -> bool {
        let counters = |h: &History| {
            (
                h.revision,
                h.compact_revision,
                h.live_keys,
                h.live_bytes,
                h.total_bytes,
                h.versions,
                h.visited_at_point,
            )
        };
        counters(self) == counters(other) && self.content_eq(other)
    }
}

impl Eq for History {}

/// How many of a key's oldest versions a compaction at `at` drops: every one older than the
/// newest at or before `at`, and that one too if it is a deletion before `at` (the key is
/// absent from `at` on; a deletion *at* `at` stays, so a watch from `at` sees it).
fn first_kept(versions: &[Version], at: u64) -> usize {
    let newest = versions.partition_point(|v| v.mod_revision <= at);
    match newest.checked_sub(1).map(|i| (i, &versions[i])) {
        Some((i, v)) if v.is_tombstone() && v.mod_revision < at => i + 1,
        Some((i, _)) => i,
        None => 0,
    }
}

/// Appends `v` to a key's versions and the log (or replaces the last version if it has the
/// same revision: a transaction writing one key twice).
fn append(
    (total_bytes, versions_kept): (&mut u64, &mut usize),
    (log, slot): (&mut VecDeque<(u64, usize)>, usize),
    key: &Bytes,
    versions: &mut Versions,
    v: Version,
) {
    *total_bytes += version_bytes(key, &v);
    match versions.last_mut() {
        Some(last) if last.mod_revision == v.mod_revision => {
            *total_bytes -= version_bytes(key, last);
            *last = v;
        }
        _ => {
            log.push_back((v.mod_revision, slot));
            versions.push(v);
            *versions_kept += 1;
        }
    }
}
