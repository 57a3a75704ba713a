//! Key ranges and range reads: which keys a read, a delete, a compare or a watch covers
//! ([`KeyRange`], in etcd's `key`/`range_end` terms), and how a range read is shaped
//! ([`RangeQuery`]: revision, limit, count or keys only, sorting, revision filters).

use std::cmp::Ordering;
use std::ops::Bound;

use bytes::Bytes;

use super::KeyValue;

/// The keys an operation covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key.
    Key(Bytes),
    /// Every key starting with these bytes (every key, if empty).
    Prefix(Bytes),
    /// Every key `>=` this one.
    FromKey(Bytes),
    /// Keys in `[start, end)`.
    Between(Bytes, Bytes),
}

impl KeyRange {
    /// The range etcd means by `key` and `range_end`: an empty end is the key alone, `"\0"`
    /// every key `>= key`, anything else `[key, range_end)`.
    pub fn from_etcd(key: Bytes, range_end: Bytes) -> KeyRange {
        match &range_end[..] {
            [] => KeyRange::Key(key),
            [0] => KeyRange::FromKey(key),
            _ => KeyRange::Between(key, range_end),
        }
    }

    /// The range as etcd's `key` and `range_end`. A `Between` whose end etcd reads as
    /// something else (an empty end is one key, `"\0"` no end) is written as the same keys: an
    /// empty range as `[1, 1)` (no key), `["", "\0")` as the empty key alone.
    pub fn to_etcd(&self) -> (Bytes, Bytes) {
        let all = || Bytes::from_static(&[0]);
        match self {
            KeyRange::Key(k) => (k.clone(), Bytes::new()),
            KeyRange::Prefix(p) if p.is_empty() => (all(), all()),
            KeyRange::Prefix(p) => (p.clone(), prefix_end(p)),
            KeyRange::FromKey(k) => (k.clone(), all()),
            KeyRange::Between(_, _) if self.is_empty() => {
                (Bytes::from_static(&[1]), Bytes::from_static(&[1]))
            }
            KeyRange::Between(a, b) if b[..] == [0] => (a.clone(), Bytes::new()),
            KeyRange::Between(a, b) => (a.clone(), b.clone()),
        }
    }

    /// The first key of the range.
    pub fn start(&self) -> &Bytes {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) | KeyRange::FromKey(k) => k,
            KeyRange::Between(a, _) => a,
        }
    }

    /// The bounds of the range (owned: a prefix's end is computed).
    pub fn bounds(&self) -> (Bound<Bytes>, Bound<Bytes>) {
        match self {
            KeyRange::Key(k) => (Bound::Included(k.clone()), Bound::Included(k.clone())),
            KeyRange::Prefix(p) => match prefix_end(p) {
                end if end[..] == [0] => (Bound::Included(p.clone()), Bound::Unbounded),
                end => (Bound::Included(p.clone()), Bound::Excluded(end)),
            },
            KeyRange::FromKey(k) => (Bound::Included(k.clone()), Bound::Unbounded),
            KeyRange::Between(a, b) => (Bound::Included(a.clone()), Bound::Excluded(b.clone())),
        }
    }

    /// True if `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => key == &k[..],
            KeyRange::Prefix(p) => key.starts_with(p),
            KeyRange::FromKey(k) => key >= &k[..],
            KeyRange::Between(a, b) => key >= &a[..] && key < &b[..],
        }
    }

    /// True if the range is empty whatever the store holds (`[a, b)` with `b <= a`).
    pub fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Between(a, b) if b <= a)
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with its last byte below
/// 0xff incremented and what follows dropped; `"\0"` (no end) if every byte is 0xff or the
/// prefix is empty. (etcd's `GetPrefixRangeEnd`.)
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            Bytes::from(end)
        }
        None => Bytes::from_static(&[0]),
    }
}

/// What a range read sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    CreateRevision,
    ModRevision,
    Value,
}

/// Which way a range read sorts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order, unsorted otherwise (etcd's NONE).
    #[default]
    None,
    Ascend,
    Descend,
}

/// A range read: the keys of `range` as of `revision` (0: the current one), shaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeQuery {
    pub range: KeyRange,
    /// The revision to read at; 0 reads the current state.
    pub revision: u64,
    /// Keys returned at most (0: no limit). `count` still counts every key of the range.
    pub limit: usize,
    /// Bytes of keys and values at which the answer stops (with `more`), sorted or not; at
    /// least one key. Values count only if returned (not with `keys_only`).
    pub max_bytes: usize,
    pub keys_only: bool,
    pub count_only: bool,
    /// Count every key of the range (etcd's `count`, the default). Without it a read in key
    /// order stops at its limit, and `count` is only a lower bound: a page of a long listing
    /// then costs its own size, not the rest of the range. Not part of the log format (a
    /// transaction's reads always count).
    pub count_all: bool,
    pub sort_target: SortTarget,
    pub sort_order: SortOrder,
    /// Only keys whose `mod_revision` / `create_revision` is within these (0: no bound).
    pub min_mod_revision: u64,
    pub max_mod_revision: u64,
    pub min_create_revision: u64,
    pub max_create_revision: u64,
}

impl RangeQuery {
    /// Every key of `range` at the current revision, unshaped.
    pub fn new(range: KeyRange) -> RangeQuery {
        RangeQuery {
            range,
            revision: 0,
            limit: 0,
            max_bytes: usize::MAX,
            keys_only: false,
            count_only: false,
            count_all: true,
            sort_target: SortTarget::Key,
            sort_order: SortOrder::None,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: 0,
            max_create_revision: 0,
        }
    }

    /// One key at the current revision.
    pub fn key(key: Bytes) -> RangeQuery {
        RangeQuery::new(KeyRange::Key(key))
    }

    /// Whether `kv` passes the revision filters.
    pub(super) fn admits(&self, kv: &KeyValue) -> bool {
        let within = |v: u64, min: u64, max: u64| v >= min && (max == 0 || v <= max);
        within(
            kv.mod_revision,
            self.min_mod_revision,
            self.max_mod_revision,
        ) && within(
            kv.create_revision,
            self.min_create_revision,
            self.max_create_revision,
        )
    }

    /// True if the answer comes in plain ascending key order (no sort needed).
    pub(super) fn in_key_order(&self) -> bool {
        self.sort_order == SortOrder::None
            || (self.sort_order == SortOrder::Ascend && self.sort_target == SortTarget::Key)
    }

    /// Sorts `kvs` as asked (stable, so ties stay in key order, like etcd).
    pub(super) fn sort(&self, kvs: &mut [KeyValue]) {
        if self.in_key_order() {
            return;
        }
        let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
            match self.sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::CreateRevision => a.create_revision.cmp(&b.create_revision),
                SortTarget::ModRevision => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        match self.sort_order {
            SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
            _ => kvs.sort_by(cmp),
        }
    }
}

/// What a range read returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// The store's current revision when read (etcd's header revision).
    pub revision: u64,
    /// The keys (values empty if `keys_only`; none if `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Keys of the range follow the ones returned (a limit or the byte budget stopped it).
    pub more: bool,
    /// Keys in the range at the revision read, whatever the limit and the revision filters
    /// (etcd's count); a lower bound if the query did not ask to `count_all`.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"abc"), b(b"abd"));
        assert_eq!(prefix_end(b"a\xff"), b(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), b(b"\0"));
        assert_eq!(prefix_end(b""), b(b"\0"));
    }

    #[test]
    fn ranges_round_trip_through_etcds_encoding() {
        for r in [
            KeyRange::Key(b(b"k")),
            KeyRange::FromKey(b(b"k")),
            KeyRange::Between(b(b"a"), b(b"c")),
        ] {
            let (k, e) = r.to_etcd();
            assert_eq!(KeyRange::from_etcd(k, e), r);
        }
        let (k, e) = KeyRange::Prefix(b(b"ab")).to_etcd();
        assert_eq!(
            KeyRange::from_etcd(k, e),
            KeyRange::Between(b(b"ab"), b(b"ac"))
        );
        let (k, e) = KeyRange::Prefix(Bytes::new()).to_etcd();
        assert_eq!(KeyRange::from_etcd(k, e), KeyRange::FromKey(b(b"\0")));
    }

    #[test]
    fn containment() {
        assert!(KeyRange::Prefix(b(b"a/")).contains(b"a/b"));
        assert!(!KeyRange::Prefix(b(b"a/")).contains(b"a"));
        assert!(KeyRange::Prefix(Bytes::new()).contains(b""));
        assert!(KeyRange::Between(b(b"a"), b(b"c")).contains(b"b"));
        assert!(!KeyRange::Between(b(b"a"), b(b"c")).contains(b"c"));
        assert!(KeyRange::FromKey(b(b"m")).contains(b"z"));
        assert!(KeyRange::Between(b(b"c"), b(b"a")).is_empty());
    }
}
