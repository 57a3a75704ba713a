//! The encoding of a [`Command`] in a raft entry: a versioned envelope around one body per
//! command kind, and version 1's short form, still written for the four kinds it has.
//!
//! ```text
//! envelope (the long form):              | 0xCE | version: u8 | kind: u8 | body |
//! short form (version 1, kinds 1..=4):   | kind: u8 (1..=4)          | body |
//! ```
//! The envelope's first byte, [`ENVELOPE`], is no short-form kind, so the two never overlap:
//! the first byte of every command says its format version. Both decode. A command that kinds
//! 1 to 4 can say is **written** in the short form, byte for byte what every earlier build
//! wrote and reads, so a cluster can be upgraded one node at a time; every other command is
//! written in the envelope, and must be proposed only once every member reads it (see "The
//! on-disk contract" in [`crate::kv`]). The bodies (u32 little-endian lengths, u64 and i64
//! little-endian numbers; "str" is a length and UTF-8 bytes, "bytes" a length and any bytes):
//!
//! | kind | command | body |
//! |---|---|---|
//! | 1 | put | condition, key (str), value (to the end: no length, so decoding shares the entry's buffer) |
//! | 2 | delete | condition, key (str) |
//! | 3 | delete prefix | prefix (str) |
//! | 4 | transaction | compare count (u32), compares, then success and failure: op count (u32), ops |
//! | 5 | put | flags (u8: 1 ignore value, 2 ignore lease), condition, lease (i64), key (bytes), value (to the end) |
//! | 6 | delete | condition, key (bytes) |
//! | 7 | delete range | flags (u8: 1 prev kv), key, range end (bytes: etcd's encoding) |
//! | 8 | transaction | compare count (u32), compares, then success and failure: op count (u32), ops |
//! | 9 | compact | revision (u64) |
//! | 10 | lease grant | id (i64), TTL (i64) |
//! | 11 | lease revoke | id (i64) |
//! | 12 | lease keep-alive | id (i64) |
//! | 13 | lease expire | id (i64), renewed at (u64 log index) |
//! | 14 | alarm | member (u64), alarm (u8: 1 NOSPACE, etcd's number), active (u8 0/1) |
//! | 15 | publish member | id (u64), name (str), client URL count (u32), client URLs (str each) |
//!
//! A condition is a tag (0 none, 1 `mod_revision` = u64 follows, 2 absent, 3 present).
//! In kind 4, a compare is key (str), op (0 `==`, 1 `!=`, 2 `>`, 3 `<`), target tag (0 value
//! = bytes, compared as [`CompareTarget::ValueOrMissing`]; 1 `mod_revision` = u64; 2 version
//! = u64; 3 exists = u8 0/1), and an op a tag (0 put = key (str), value (bytes); 1 delete =
//! key (str)). In kind 8, a compare is key and range end (bytes), op, target tag (0 value =
//! bytes, etcd's rule; 1 `mod_revision`, 2 version = u64; 3 exists = u8; 4 `create_revision`
//! = u64; 5 lease = i64; 6 value-or-missing = bytes), and an op a tag: 0 put (a kind-5 body
//! whose value has a length), 1 delete range (a kind-7 body), 2 range (key, range end,
//! revision u64, limit u64, byte budget u64, flags u8 (1 keys only, 2 count only), sort
//! target u8 (0 key, 1 version, 2 create, 3 mod, 4 value), sort order u8 (0 none, 1 ascend,
//! 2 descend), min/max mod revision, min/max create revision: u64 each), 3 transaction (a
//! kind-8 body, nested at most [`MAX_TXN_DEPTH`] deep).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::{
    Alarm, AlarmKind, Command, Compare, CompareOp, CompareTarget, Delete, DeleteRange,
    MemberAttributes, Precondition, Put, Txn, TxnOp,
};
use super::range::{KeyRange, RangeQuery, SortOrder, SortTarget};
use crate::error::{Error, Result};

/// The first byte of an enveloped command; no short-form command starts with it.
pub const ENVELOPE: u8 = 0xCE;
/// The envelope version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u8 = 1;
/// Envelope bytes before the body: mark, version, kind.
const HEADER_BYTES: usize = 3;
/// Transactions nest at most this deep (decoding recurses once per level).
pub const MAX_TXN_DEPTH: usize = 16;

/// The kinds of command. Numbers are part of the on-disk format: never change or reuse one.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Put = 1,
    Delete = 2,
    DeletePrefix = 3,
    Txn = 4,
    PutV2 = 5,
    DeleteV2 = 6,
    DeleteRange = 7,
    TxnV2 = 8,
    Compact = 9,
    LeaseGrant = 10,
    LeaseRevoke = 11,
    LeaseKeepAlive = 12,
    LeaseExpire = 13,
    Alarm = 14,
    PublishMember = 15,
}

impl Kind {
    /// The kind of an enveloped command of `version` (1 is the only one so far).
    fn of(version: u8, kind: u8) -> Option<Kind> {
        use Kind::*;
        let all = [
            Put,
            Delete,
            DeletePrefix,
            Txn,
            PutV2,
            DeleteV2,
            DeleteRange,
            TxnV2,
            Compact,
            LeaseGrant,
            LeaseRevoke,
            LeaseKeepAlive,
            LeaseExpire,
            Alarm,
            PublishMember,
        ];
        match version {
            1 => all.into_iter().find(|k| *k as u8 == kind),
            _ => None,
        }
    }

    /// The kind of a short-form command: the closed set written before the envelope. A kind
    /// added later is never valid here.
    fn short(op: u8) -> Option<Kind> {
        match op {
            1 => Some(Kind::Put),
            2 => Some(Kind::Delete),
            3 => Some(Kind::DeletePrefix),
            4 => Some(Kind::Txn),
            _ => None,
        }
    }
}

fn malformed(why: &str) -> Error {
    Error::Malformed(format!("malformed command: {why}"))
}

impl Command {
    /// Encodes the command for a raft entry: in version 1's short form if it has one, else
    /// in the envelope.
    pub fn encode(&self) -> Bytes {
        match short_form(self) {
            Some(kind) => self.encode_short(kind),
            None => self.encode_enveloped(),
        }
    }

    /// Encodes the command in the envelope, in its newest kind (the form every kind added
    /// after version 1's four must use).
    pub fn encode_enveloped(&self) -> Bytes {
        let mut b = BytesMut::new();
        let kind = match self {
            Command::Put(_) => Kind::PutV2,
            Command::Delete(_) => Kind::DeleteV2,
            Command::DeleteRange(_) => Kind::DeleteRange,
            Command::Txn(_) => Kind::TxnV2,
            Command::Compact { .. } => Kind::Compact,
            Command::LeaseGrant { .. } => Kind::LeaseGrant,
            Command::LeaseRevoke { .. } => Kind::LeaseRevoke,
            Command::LeaseKeepAlive { .. } => Kind::LeaseKeepAlive,
            Command::LeaseExpire { .. } => Kind::LeaseExpire,
            Command::Alarm { .. } => Kind::Alarm,
            Command::PublishMember { .. } => Kind::PublishMember,
        };
        b.put_slice(&[ENVELOPE, FORMAT_VERSION, kind as u8]);
        match self {
            Command::Put(put) => {
                b.reserve(32 + put.key.len() + put.value.len());
                put_put(&mut b, put);
                // The value runs to the end: no length, no second copy on decode.
                b.put_slice(&put.value);
            }
            Command::Delete(d) => {
                put_condition(&mut b, &d.condition);
                put_bytes(&mut b, &d.key);
            }
            Command::DeleteRange(d) => put_delete_range(&mut b, d),
            Command::Txn(txn) => put_txn(&mut b, txn),
            Command::Compact { revision } => b.put_u64_le(*revision),
            Command::LeaseGrant { id, ttl } => {
                b.put_i64_le(*id);
                b.put_i64_le(*ttl);
            }
            Command::LeaseRevoke { id } | Command::LeaseKeepAlive { id } => b.put_i64_le(*id),
            Command::LeaseExpire { id, renewed_at } => {
                b.put_i64_le(*id);
                b.put_u64_le(*renewed_at);
            }
            Command::Alarm { alarm, active } => {
                b.put_u64_le(alarm.member);
                b.put_u8(match alarm.kind {
                    AlarmKind::NoSpace => 1,
                });
                b.put_u8(u8::from(*active));
            }
            Command::PublishMember { id, attributes } => {
                b.put_u64_le(*id);
                put_str(&mut b, &attributes.name);
                b.put_u32_le(attributes.client_urls.len() as u32);
                for url in &attributes.client_urls {
                    put_str(&mut b, url);
                }
            }
        }
        b.freeze()
    }

    /// Encodes in version 1's short form (`kind` from [`short_form`]).
    fn encode_short(&self, kind: Kind) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(kind as u8);
        match self {
            Command::Put(put) => {
                b.reserve(16 + put.key.len() + put.value.len());
                put_condition(&mut b, &put.condition);
                put_bytes(&mut b, &put.key);
                b.put_slice(&put.value);
            }
            Command::Delete(d) => {
                put_condition(&mut b, &d.condition);
                put_bytes(&mut b, &d.key);
            }
            Command::DeleteRange(d) => put_bytes(&mut b, d.range.start()),
            Command::Txn(txn) => put_short_txn(&mut b, txn),
            _ => {}
        }
        b.freeze()
    }

    /// Decodes a command from a committed entry (enveloped or short), sharing the entry's
    /// buffer for values. An unknown version or kind is an error naming it.
    pub fn decode(mut data: Bytes) -> Result<Command> {
        let (kind, header) = match data.first() {
            None => return Err(malformed("empty")),
            Some(&ENVELOPE) => {
                let (&version, &kind) = data
                    .get(1)
                    .zip(data.get(2))
                    .ok_or_else(|| malformed("envelope cut short"))?;
                (enveloped_kind(version, kind)?, HEADER_BYTES)
            }
            Some(&op) => {
                let kind = Kind::short(op)
                    .ok_or_else(|| malformed(&format!("unknown command kind {op}")))?;
                (kind, 1)
            }
        };
        data.advance(header);
        decode_body(kind, data)
    }
}

/// The short-form kind that says exactly this command, if one does (UTF-8 keys, no lease, no
/// range but a prefix, a transaction of single-key compares, puts and deletes).
fn short_form(cmd: &Command) -> Option<Kind> {
    let utf8 = |k: &Bytes| std::str::from_utf8(k).is_ok();
    let plain_put = |p: &Put| p.lease == 0 && !p.ignore_value && !p.ignore_lease && utf8(&p.key);
    match cmd {
        Command::Put(p) => plain_put(p).then_some(Kind::Put),
        Command::Delete(d) => utf8(&d.key).then_some(Kind::Delete),
        Command::DeleteRange(DeleteRange {
            range: KeyRange::Prefix(p),
            prev_kv: false,
        }) => utf8(p).then_some(Kind::DeletePrefix),
        Command::Txn(txn) => {
            let compare = |c: &Compare| {
                matches!(&c.range, KeyRange::Key(k) if utf8(k))
                    && matches!(
                        c.target,
                        CompareTarget::ValueOrMissing(_)
                            | CompareTarget::ModRevision(_)
                            | CompareTarget::Version(_)
                            | CompareTarget::Exists(_)
                    )
            };
            let op = |op: &TxnOp| match op {
                TxnOp::Put(p) => plain_put(p) && p.condition.is_none(),
                TxnOp::Delete(DeleteRange {
                    range: KeyRange::Key(k),
                    prev_kv: false,
                }) => utf8(k),
                _ => false,
            };
            let short =
                txn.compares.iter().all(compare) && txn.success.iter().chain(&txn.failure).all(op);
            short.then_some(Kind::Txn)
        }
        _ => None,
    }
}

/// The kind named by an envelope's version and kind bytes, or an error naming what is unknown.
fn enveloped_kind(version: u8, kind: u8) -> Result<Kind> {
    if version == 0 || version > FORMAT_VERSION {
        return Err(malformed(&format!(
            "unknown format version {version} (this build reads versions 1 to {FORMAT_VERSION})"
        )));
    }
    Kind::of(version, kind).ok_or_else(|| {
        malformed(&format!(
            "unknown command kind {kind} in format version {version}"
        ))
    })
}

/// The body of a command of `kind`.
fn decode_body(kind: Kind, mut data: Bytes) -> Result<Command> {
    let d = &mut data;
    let cmd = match kind {
        Kind::Put => {
            let condition = take_condition(d).ok_or_else(|| malformed("condition"))?;
            let key = take_str_bytes(d).ok_or_else(|| malformed("key"))?;
            let value = std::mem::take(d);
            Command::Put(Put {
                condition,
                ..Put::new(key, value)
            })
        }
        Kind::Delete => {
            let condition = take_condition(d).ok_or_else(|| malformed("condition"))?;
            let key = take_str_bytes(d).ok_or_else(|| malformed("key"))?;
            Command::Delete(Delete { key, condition })
        }
        Kind::DeletePrefix => {
            let prefix = take_str_bytes(d).ok_or_else(|| malformed("prefix"))?;
            Command::DeleteRange(DeleteRange {
                range: KeyRange::Prefix(prefix),
                prev_kv: false,
            })
        }
        Kind::Txn => decode_short_txn(d).ok_or_else(|| malformed("transaction"))?,
        Kind::PutV2 => {
            let mut put = take_put(d).ok_or_else(|| malformed("put"))?;
            put.value = std::mem::take(d);
            Command::Put(put)
        }
        Kind::DeleteV2 => {
            let condition = take_condition(d).ok_or_else(|| malformed("condition"))?;
            let key = take_bytes(d).ok_or_else(|| malformed("key"))?;
            Command::Delete(Delete { key, condition })
        }
        Kind::DeleteRange => {
            Command::DeleteRange(take_delete_range(d).ok_or_else(|| malformed("delete range"))?)
        }
        Kind::TxnV2 => Command::Txn(take_txn(d, 0).ok_or_else(|| malformed("transaction"))?),
        Kind::Compact => Command::Compact {
            revision: take_u64(d).ok_or_else(|| malformed("revision"))?,
        },
        Kind::LeaseGrant => {
            let id = take_i64(d).ok_or_else(|| malformed("lease id"))?;
            let ttl = take_i64(d).ok_or_else(|| malformed("lease TTL"))?;
            Command::LeaseGrant { id, ttl }
        }
        Kind::LeaseRevoke => Command::LeaseRevoke {
            id: take_i64(d).ok_or_else(|| malformed("lease id"))?,
        },
        Kind::LeaseKeepAlive => Command::LeaseKeepAlive {
            id: take_i64(d).ok_or_else(|| malformed("lease id"))?,
        },
        Kind::LeaseExpire => {
            let id = take_i64(d).ok_or_else(|| malformed("lease id"))?;
            let renewed_at = take_u64(d).ok_or_else(|| malformed("renewal index"))?;
            Command::LeaseExpire { id, renewed_at }
        }
        Kind::Alarm => {
            let member = take_u64(d).ok_or_else(|| malformed("alarm member"))?;
            let kind = match take_u8(d) {
                Some(1) => AlarmKind::NoSpace,
                _ => return Err(malformed("alarm kind")),
            };
            let active = take_flag(d).ok_or_else(|| malformed("alarm action"))?;
            Command::Alarm {
                alarm: Alarm { member, kind },
                active,
            }
        }
        Kind::PublishMember => {
            let id = take_u64(d).ok_or_else(|| malformed("member id"))?;
            let name = take_string(d).ok_or_else(|| malformed("member name"))?;
            let count = take_u32(d).ok_or_else(|| malformed("client URL count"))?;
            let client_urls = (0..count)
                .map(|_| take_string(d).ok_or_else(|| malformed("client URL")))
                .collect::<Result<Vec<String>>>()?;
            Command::PublishMember {
                id,
                attributes: MemberAttributes { name, client_urls },
            }
        }
    };
    // Kinds whose value runs to the end took it all; every other body must be used up.
    if data.has_remaining() {
        return Err(malformed("trailing bytes"));
    }
    Ok(cmd)
}

fn put_put(b: &mut BytesMut, put: &Put) {
    b.put_u8(u8::from(put.ignore_value) | (u8::from(put.ignore_lease) << 1));
    put_condition(b, &put.condition);
    b.put_i64_le(put.lease);
    put_bytes(b, &put.key);
}

/// A put up to its value (kind 5's body, or a transaction's put before its value).
fn take_put(d: &mut Bytes) -> Option<Put> {
    let flags = take_u8(d)?;
    if flags & !3 != 0 {
        return None;
    }
    let condition = take_condition(d)?;
    let lease = take_i64(d)?;
    let key = take_bytes(d)?;
    Some(Put {
        key,
        value: Bytes::new(),
        lease,
        ignore_value: flags & 1 != 0,
        ignore_lease: flags & 2 != 0,
        condition,
    })
}

fn put_range(b: &mut BytesMut, range: &KeyRange) {
    let (key, end) = range.to_etcd();
    put_bytes(b, &key);
    put_bytes(b, &end);
}

fn take_range(d: &mut Bytes) -> Option<KeyRange> {
    let key = take_bytes(d)?;
    let end = take_bytes(d)?;
    Some(KeyRange::from_etcd(key, end))
}

fn put_delete_range(b: &mut BytesMut, d: &DeleteRange) {
    b.put_u8(u8::from(d.prev_kv));
    put_range(b, &d.range);
}

fn take_delete_range(d: &mut Bytes) -> Option<DeleteRange> {
    let prev_kv = take_flag(d)?;
    let range = take_range(d)?;
    Some(DeleteRange { range, prev_kv })
}

fn put_query(b: &mut BytesMut, q: &RangeQuery) {
    put_range(b, &q.range);
    b.put_u64_le(q.revision);
    b.put_u64_le(q.limit as u64);
    b.put_u64_le(q.max_bytes as u64);
    b.put_u8(u8::from(q.keys_only) | (u8::from(q.count_only) << 1));
    b.put_u8(match q.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::CreateRevision => 2,
        SortTarget::ModRevision => 3,
        SortTarget::Value => 4,
    });
    b.put_u8(match q.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    for r in [
        q.min_mod_revision,
        q.max_mod_revision,
        q.min_create_revision,
        q.max_create_revision,
    ] {
        b.put_u64_le(r);
    }
}

fn take_query(d: &mut Bytes) -> Option<RangeQuery> {
    let range = take_range(d)?;
    let revision = take_u64(d)?;
    let limit = usize::try_from(take_u64(d)?).ok()?;
    let max_bytes = usize::try_from(take_u64(d)?).unwrap_or(usize::MAX);
    let flags = take_u8(d)?;
    if flags & !3 != 0 {
        return None;
    }
    let sort_target = match take_u8(d)? {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::CreateRevision,
        3 => SortTarget::ModRevision,
        4 => SortTarget::Value,
        _ => return None,
    };
    let sort_order = match take_u8(d)? {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        2 => SortOrder::Descend,
        _ => return None,
    };
    Some(RangeQuery {
        range,
        revision,
        limit,
        max_bytes,
        keys_only: flags & 1 != 0,
        count_only: flags & 2 != 0,
        count_all: true,
        sort_target,
        sort_order,
        min_mod_revision: take_u64(d)?,
        max_mod_revision: take_u64(d)?,
        min_create_revision: take_u64(d)?,
        max_create_revision: take_u64(d)?,
    })
}

fn put_op(b: &mut BytesMut, c: CompareOp) {
    b.put_u8(match c {
        CompareOp::Equal => 0,
        CompareOp::NotEqual => 1,
        CompareOp::Greater => 2,
        CompareOp::Less => 3,
    });
}

fn take_op(d: &mut Bytes) -> Option<CompareOp> {
    match take_u8(d)? {
        0 => Some(CompareOp::Equal),
        1 => Some(CompareOp::NotEqual),
        2 => Some(CompareOp::Greater),
        3 => Some(CompareOp::Less),
        _ => None,
    }
}

/// A compare's target, tagged as in kind 8 (tags 1 to 3 are kind 4's too).
fn put_target(b: &mut BytesMut, target: &CompareTarget) {
    match target {
        CompareTarget::Value(v) => {
            b.put_u8(0);
            put_bytes(b, v);
        }
        CompareTarget::ModRevision(r) => {
            b.put_u8(1);
            b.put_u64_le(*r);
        }
        CompareTarget::Version(v) => {
            b.put_u8(2);
            b.put_u64_le(*v);
        }
        CompareTarget::Exists(e) => {
            b.put_u8(3);
            b.put_u8(u8::from(*e));
        }
        CompareTarget::CreateRevision(r) => {
            b.put_u8(4);
            b.put_u64_le(*r);
        }
        CompareTarget::Lease(l) => {
            b.put_u8(5);
            b.put_i64_le(*l);
        }
        CompareTarget::ValueOrMissing(v) => {
            b.put_u8(6);
            put_bytes(b, v);
        }
    }
}

/// A kind-8 transaction body.
fn put_txn(b: &mut BytesMut, txn: &Txn) {
    b.put_u32_le(txn.compares.len() as u32);
    for c in &txn.compares {
        put_range(b, &c.range);
        put_op(b, c.op);
        put_target(b, &c.target);
    }
    for ops in [&txn.success, &txn.failure] {
        b.put_u32_le(ops.len() as u32);
        for op in ops {
            match op {
                TxnOp::Put(put) => {
                    b.put_u8(0);
                    put_put(b, put);
                    put_bytes(b, &put.value);
                }
                TxnOp::Delete(d) => {
                    b.put_u8(1);
                    put_delete_range(b, d);
                }
                TxnOp::Range(q) => {
                    b.put_u8(2);
                    put_query(b, q);
                }
                TxnOp::Txn(nested) => {
                    b.put_u8(3);
                    put_txn(b, nested);
                }
            }
        }
    }
}

/// The smallest encoded compare or op: what the count fields are checked against before
/// reserving.
const MIN_COMPARE_BYTES: usize = 4 + 1 + 1 + 1;
const MIN_OP_BYTES: usize = 2;

fn take_txn(d: &mut Bytes, depth: usize) -> Option<Txn> {
    if depth >= MAX_TXN_DEPTH {
        return None;
    }
    let n = take_u32(d)? as usize;
    // Reserved by what the data can hold, never by the count field alone.
    let mut compares = Vec::with_capacity(n.min(d.remaining() / MIN_COMPARE_BYTES));
    for _ in 0..n {
        let range = take_range(d)?;
        let op = take_op(d)?;
        let target = match take_u8(d)? {
            0 => CompareTarget::Value(take_bytes(d)?),
            1 => CompareTarget::ModRevision(take_u64(d)?),
            2 => CompareTarget::Version(take_u64(d)?),
            3 => CompareTarget::Exists(take_flag(d)?),
            4 => CompareTarget::CreateRevision(take_u64(d)?),
            5 => CompareTarget::Lease(take_i64(d)?),
            6 => CompareTarget::ValueOrMissing(take_bytes(d)?),
            _ => return None,
        };
        compares.push(Compare { range, op, target });
    }
    let mut branches = [Vec::new(), Vec::new()];
    for branch in &mut branches {
        let n = take_u32(d)? as usize;
        branch.reserve(n.min(d.remaining() / MIN_OP_BYTES));
        for _ in 0..n {
            let op = match take_u8(d)? {
                0 => {
                    let mut put = take_put(d)?;
                    put.value = take_bytes(d)?;
                    TxnOp::Put(put)
                }
                1 => TxnOp::Delete(take_delete_range(d)?),
                2 => TxnOp::Range(take_query(d)?),
                3 => TxnOp::Txn(take_txn(d, depth + 1)?),
                _ => return None,
            };
            branch.push(op);
        }
    }
    let [success, failure] = branches;
    Some(Txn {
        compares,
        success,
        failure,
    })
}

/// A kind-4 transaction body (see [`short_form`] for what it can hold).
fn put_short_txn(b: &mut BytesMut, txn: &Txn) {
    b.put_u32_le(txn.compares.len() as u32);
    for c in &txn.compares {
        put_bytes(b, c.range.start());
        put_op(b, c.op);
        match &c.target {
            // Kind 4's tag 0 is the value compared by the REST rule.
            CompareTarget::ValueOrMissing(v) => {
                b.put_u8(0);
                put_bytes(b, v);
            }
            // Tags 1 to 3 are the same in both kinds; short_form allows no other target.
            other => put_target(b, other),
        }
    }
    for ops in [&txn.success, &txn.failure] {
        b.put_u32_le(ops.len() as u32);
        for op in ops {
            match op {
                TxnOp::Put(put) => {
                    b.put_u8(0);
                    put_bytes(b, &put.key);
                    put_bytes(b, &put.value);
                }
                TxnOp::Delete(d) => {
                    b.put_u8(1);
                    put_bytes(b, d.range.start());
                }
                // Not in the short form (see short_form).
                TxnOp::Range(_) | TxnOp::Txn(_) => {}
            }
        }
    }
}

fn decode_short_txn(d: &mut Bytes) -> Option<Command> {
    let n = take_u32(d)? as usize;
    let mut compares = Vec::with_capacity(n.min(d.remaining() / MIN_COMPARE_BYTES));
    for _ in 0..n {
        let key = take_str_bytes(d)?;
        let op = take_op(d)?;
        let target = match take_u8(d)? {
            0 => CompareTarget::ValueOrMissing(take_bytes(d)?),
            1 => CompareTarget::ModRevision(take_u64(d)?),
            2 => CompareTarget::Version(take_u64(d)?),
            3 => CompareTarget::Exists(take_u8(d)? == 1),
            _ => return None,
        };
        compares.push(Compare {
            range: KeyRange::Key(key),
            op,
            target,
        });
    }
    let mut branches = [Vec::new(), Vec::new()];
    for branch in &mut branches {
        let n = take_u32(d)? as usize;
        for _ in 0..n {
            let op = match take_u8(d)? {
                0 => {
                    let key = take_str_bytes(d)?;
                    TxnOp::Put(Put::new(key, take_bytes(d)?))
                }
                1 => TxnOp::Delete(DeleteRange {
                    range: KeyRange::Key(take_str_bytes(d)?),
                    prev_kv: false,
                }),
                _ => return None,
            };
            branch.push(op);
        }
    }
    let [success, failure] = branches;
    Some(Command::Txn(Txn {
        compares,
        success,
        failure,
    }))
}

fn put_condition(b: &mut BytesMut, c: &Option<Precondition>) {
    match c {
        None => b.put_u8(0),
        Some(Precondition::ModRevision(rev)) => {
            b.put_u8(1);
            b.put_u64_le(*rev);
        }
        Some(Precondition::Absent) => b.put_u8(2),
        Some(Precondition::Present) => b.put_u8(3),
    }
}

fn take_condition(data: &mut Bytes) -> Option<Option<Precondition>> {
    match take_u8(data)? {
        0 => Some(None),
        1 => Some(Some(Precondition::ModRevision(take_u64(data)?))),
        2 => Some(Some(Precondition::Absent)),
        3 => Some(Some(Precondition::Present)),
        _ => None,
    }
}

fn take_flag(data: &mut Bytes) -> Option<bool> {
    match take_u8(data)? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

pub(super) fn take_i64(data: &mut Bytes) -> Option<i64> {
    (data.remaining() >= 8).then(|| data.get_i64_le())
}

/// A string's bytes, checked to be UTF-8 (version 1's short-form keys were strings).
fn take_str_bytes(data: &mut Bytes) -> Option<Bytes> {
    take_bytes(data).filter(|b| std::str::from_utf8(b).is_ok())
}

pub(super) fn put_str(b: &mut BytesMut, s: &str) {
    put_bytes(b, s.as_bytes());
}

pub(super) fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32_le(v.len() as u32);
    b.put_slice(v);
}

pub(super) fn take_u8(data: &mut Bytes) -> Option<u8> {
    data.has_remaining().then(|| data.get_u8())
}

pub(super) fn take_u32(data: &mut Bytes) -> Option<u32> {
    (data.remaining() >= 4).then(|| data.get_u32_le())
}

pub(super) fn take_u64(data: &mut Bytes) -> Option<u64> {
    (data.remaining() >= 8).then(|| data.get_u64_le())
}

pub(super) fn take_bytes(data: &mut Bytes) -> Option<Bytes> {
    let len = take_u32(data)? as usize;
    (data.remaining() >= len).then(|| data.split_to(len))
}

pub(super) fn take_string(data: &mut Bytes) -> Option<String> {
    take_bytes(data).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

#[cfg(test)]
mod tests;
