//! The encoding of a [`Command`] in a raft entry: a versioned envelope around one body per
//! command kind, and the legacy bare encoding it replaced, still decoded.
//!
//! ```text
//! envelope (the long form):              | 0xCE | version: u8 | kind: u8 | body |
//! short form (version 1, kinds 1..=4):   | kind: u8 (1..=4)          | body |
//! ```
//! The envelope's first byte, [`ENVELOPE`], is no short-form kind, so the two never overlap:
//! the first byte of every command says its format version. Both decode. The kinds of
//! version 1 are **written** in the short form, byte for byte what every earlier build wrote
//! and reads, so a cluster can be upgraded one node at a time (an older build would skip an
//! enveloped command that its newer peers apply, and the replicas would diverge). A kind or
//! version added later is written only in the envelope, and proposed only once every member
//! reads it (see "The on-disk contract" in [`crate::kv`]). The bodies (u32 little-endian
//! lengths, u64 little-endian numbers, UTF-8 keys):
//!
//! | kind | command | body |
//! |---|---|---|
//! | 1 | put | condition, key, value (to the end: no length, so decoding shares the entry's buffer) |
//! | 2 | delete | condition, key |
//! | 3 | delete prefix | prefix |
//! | 4 | transaction | compare count (u32), compares, then success and failure: op count (u32), ops |
//!
//! A condition is a tag (0 none, 1 `mod_revision` = u64 follows, 2 absent, 3 present); a
//! compare is key, op (0 `==`, 1 `!=`, 2 `>`, 3 `<`), target tag (0 value = bytes, 1
//! `mod_revision` = u64, 2 version = u64, 3 exists = u8 0/1); a transaction op is a tag (0 put
//! = key, value as bytes; 1 delete = key). The rules for adding to this are in the module doc
//! of [`crate::kv`] ("The on-disk contract").

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Command, Compare, CompareOp, CompareTarget, Precondition, TxnOp};
use crate::error::{Error, Result};

/// The first byte of an enveloped command; no legacy command starts with it.
pub const ENVELOPE: u8 = 0xCE;
/// The envelope version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u8 = 1;
/// Envelope bytes before the body: mark, version, kind.
const HEADER_BYTES: usize = 3;

/// The kinds of command. Numbers are part of the on-disk format: never change or reuse one.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Put = 1,
    Delete = 2,
    DeletePrefix = 3,
    Txn = 4,
}

impl Kind {
    /// The kind of an enveloped command of `version` (1 is the only one so far).
    fn of(version: u8, kind: u8) -> Option<Kind> {
        match (version, kind) {
            (1, 1) => Some(Kind::Put),
            (1, 2) => Some(Kind::Delete),
            (1, 3) => Some(Kind::DeletePrefix),
            (1, 4) => Some(Kind::Txn),
            _ => None,
        }
    }

    /// The kind of a legacy command: the closed set written before the envelope. A kind
    /// added later is never valid here.
    fn legacy(op: u8) -> Option<Kind> {
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

/// How a command is written: see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Short,
    Envelope,
}

impl Command {
    /// Encodes the command for a raft entry: version 1's kinds in their short form, which
    /// every build reads.
    pub fn encode(&self) -> Bytes {
        self.encode_as(Form::Short)
    }

    /// Encodes the command in the envelope (the form a kind added later must use).
    pub fn encode_enveloped(&self) -> Bytes {
        self.encode_as(Form::Envelope)
    }

    fn encode_as(&self, form: Form) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Command::Put {
                key,
                value,
                condition,
            } => {
                b.reserve(HEADER_BYTES + 16 + key.len() + value.len());
                put_header(&mut b, form, Kind::Put);
                put_condition(&mut b, condition);
                put_str(&mut b, key);
                // The value runs to the end: no length, no second copy on decode.
                b.put_slice(value);
            }
            Command::Delete { key, condition } => {
                put_header(&mut b, form, Kind::Delete);
                put_condition(&mut b, condition);
                put_str(&mut b, key);
            }
            Command::DeletePrefix { prefix } => {
                put_header(&mut b, form, Kind::DeletePrefix);
                put_str(&mut b, prefix);
            }
            Command::Txn {
                compares,
                success,
                failure,
            } => {
                put_header(&mut b, form, Kind::Txn);
                put_txn(&mut b, compares, success, failure);
            }
        }
        b.freeze()
    }

    /// Decodes a command from a committed entry (enveloped or legacy), sharing the entry's
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
                let kind = Kind::legacy(op)
                    .ok_or_else(|| malformed(&format!("unknown command kind {op}")))?;
                (kind, 1)
            }
        };
        data.advance(header);
        decode_body(kind, data)
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

fn put_header(b: &mut BytesMut, form: Form, kind: Kind) {
    match form {
        Form::Short => b.put_u8(kind as u8),
        Form::Envelope => b.put_slice(&[ENVELOPE, FORMAT_VERSION, kind as u8]),
    }
}

/// The body of a command of `kind` (the same in legacy and version-1 commands).
fn decode_body(kind: Kind, mut data: Bytes) -> Result<Command> {
    match kind {
        Kind::Put => {
            let condition = take_condition(&mut data).ok_or_else(|| malformed("condition"))?;
            let key = take_string(&mut data).ok_or_else(|| malformed("key"))?;
            Ok(Command::Put {
                key,
                value: data,
                condition,
            })
        }
        Kind::Delete => {
            let condition = take_condition(&mut data).ok_or_else(|| malformed("condition"))?;
            let key = take_string(&mut data).ok_or_else(|| malformed("key"))?;
            Ok(Command::Delete { key, condition })
        }
        Kind::DeletePrefix => {
            let prefix = take_string(&mut data).ok_or_else(|| malformed("prefix"))?;
            Ok(Command::DeletePrefix { prefix })
        }
        Kind::Txn => decode_txn(&mut data).ok_or_else(|| malformed("transaction")),
    }
}

fn put_txn(b: &mut BytesMut, compares: &[Compare], success: &[TxnOp], failure: &[TxnOp]) {
    b.put_u32_le(compares.len() as u32);
    for c in compares {
        put_str(b, &c.key);
        b.put_u8(c.op as u8);
        match &c.target {
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
        }
    }
    for ops in [success, failure] {
        b.put_u32_le(ops.len() as u32);
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    b.put_u8(0);
                    put_str(b, key);
                    put_bytes(b, value);
                }
                TxnOp::Delete { key } => {
                    b.put_u8(1);
                    put_str(b, key);
                }
            }
        }
    }
}

/// The smallest encoded compare: key length, op, target tag, one byte of target.
const MIN_COMPARE_BYTES: usize = 4 + 1 + 1 + 1;

fn decode_txn(data: &mut Bytes) -> Option<Command> {
    let n = take_u32(data)? as usize;
    // Reserved by what the data can hold, never by the count field alone.
    let mut compares = Vec::with_capacity(n.min(data.remaining() / MIN_COMPARE_BYTES));
    for _ in 0..n {
        let key = take_string(data)?;
        let op = match take_u8(data)? {
            0 => CompareOp::Equal,
            1 => CompareOp::NotEqual,
            2 => CompareOp::Greater,
            3 => CompareOp::Less,
            _ => return None,
        };
        let target = match take_u8(data)? {
            0 => CompareTarget::Value(take_bytes(data)?),
            1 => CompareTarget::ModRevision(take_u64(data)?),
            2 => CompareTarget::Version(take_u64(data)?),
            3 => CompareTarget::Exists(take_u8(data)? == 1),
            _ => return None,
        };
        compares.push(Compare { key, op, target });
    }
    let mut branches = [Vec::new(), Vec::new()];
    for branch in &mut branches {
        let n = take_u32(data)? as usize;
        for _ in 0..n {
            let op = match take_u8(data)? {
                0 => TxnOp::Put {
                    key: take_string(data)?,
                    value: take_bytes(data)?,
                },
                1 => TxnOp::Delete {
                    key: take_string(data)?,
                },
                _ => return None,
            };
            branch.push(op);
        }
    }
    if data.has_remaining() {
        return None;
    }
    let [success, failure] = branches;
    Some(Command::Txn {
        compares,
        success,
        failure,
    })
}

pub(super) fn put_str(b: &mut BytesMut, s: &str) {
    put_bytes(b, s.as_bytes());
}

pub(super) fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32_le(v.len() as u32);
    b.put_slice(v);
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
