//! Peer frames: their layout, their encoding, and a pure decoder (no I/O), so every rule about
//! bytes from the peer port is in one place and can be fed random input in tests.
//!
//! ```text
//! | len: u32 LE | crc32c(payload): u32 LE | payload (len bytes) |
//! payload = kind: u8, then
//!   4 HELLO:     version: u8, from: u64 LE, to: u64 LE, identity: u64 LE   (first frame, once)
//!   1 MESSAGES:  repeated (len: u32 LE, raft Message protobuf)
//!   2 SNAP_HEAD: total data length: u64 LE, crc32c of the data: u32 LE,
//!                raft MsgSnapshot protobuf without its snapshot data
//!   3 SNAP_DATA: the next chunk of snapshot data
//!   5 REMOVED:   from: u64 LE, to: u64 LE   (the only frame sent back on a connection: its
//!                hello came from a member `from` has removed; then the connection closes)
//! ```
//! Bounds, all checked before anything is allocated: a frame is at most the limit its reader
//! gives ([`MAX_FRAME`] after the hello, [`HELLO_FRAME`] before it); a snapshot announces at
//! most [`MAX_SNAPSHOT`] bytes; a message holds at most [`MAX_ENTRIES_PER_MESSAGE`] entries and
//! only the fields this protocol version knows at its top level. Messages are decoded one at a
//! time ([`Messages`] is an iterator), so decoding never holds more than one message beyond the
//! frame itself. (raft-rs' protobuf 2.28 has RUSTSEC-2024-0437 for untrusted input; these
//! bounds and the hello are its mitigation until peer TLS exists.)

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::storage::wire::{self, Shape};

/// Version of this protocol, sent in the hello.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of a frame header (length and CRC).
pub const HEADER_LEN: usize = 8;
/// Largest frame accepted from a peer that has said hello.
pub const MAX_FRAME: usize = 32 << 20;
/// Largest snapshot accepted from a peer.
pub const MAX_SNAPSHOT: u64 = 8 << 30;
/// Payload length of a hello (kind included).
pub const HELLO_LEN: usize = 1 + 1 + 8 + 8 + 8;
/// Largest frame accepted before the hello: the hello itself.
pub const HELLO_FRAME: usize = HELLO_LEN;
/// Entries one message may hold. raft-rs cuts appends at `max_size_per_msg` (1 MiB) and an
/// entry takes at least 4 bytes on the wire, so honest appends hold fewer than 2^18 entries;
/// the limit bounds what decoding one message allocates (an `Entry` is ~100 bytes in memory
/// and as little as 2 on the wire).
pub const MAX_ENTRIES_PER_MESSAGE: usize = 1 << 18;

pub const MESSAGES: u8 = 1;
pub const SNAP_HEAD: u8 = 2;
pub const SNAP_DATA: u8 = 3;
pub const HELLO: u8 = 4;
pub const REMOVED: u8 = 5;
/// Payload length of a REMOVED answer (kind included).
pub const REMOVED_LEN: usize = 1 + 8 + 8;

/// The first frame of every connection: who is talking to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub from: u64,
    pub to: u64,
    /// The sender's data-dir identity (see `storage::identity`).
    pub identity: u64,
}

/// Why bytes are not a frame. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} out of range (1..={max})")]
    Length { len: usize, max: usize },
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("hello of {0} bytes, want {HELLO_LEN}")]
    HelloLength(usize),
    #[error("removal answer of {0} bytes, want {REMOVED_LEN}")]
    RemovedLength(usize),
    #[error("peer speaks protocol version {0}, this node {PROTOCOL_VERSION}")]
    Version(u8),
    #[error("message cut short")]
    MessageCut,
    #[error("bad raft message: {0}")]
    Message(String),
    #[error("message holds more than {MAX_ENTRIES_PER_MESSAGE} entries")]
    TooManyEntries,
    #[error("snapshot header cut short")]
    SnapHeadCut,
    #[error("snapshot of {0} bytes exceeds the limit of {MAX_SNAPSHOT}")]
    SnapshotTooLarge(u64),
    #[error("snapshot header without a snapshot message")]
    NotASnapshot,
}

/// A frame's header: its payload length (checked against the reader's limit) and CRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub crc: u32,
}

/// A decoded frame.
#[derive(Debug)]
pub enum Frame {
    Hello(Hello),
    Messages(Messages),
    SnapHead {
        total: u64,
        crc: u32,
        message: Box<Message>,
    },
    SnapData(Bytes),
    /// Member `from` answers a hello from `to`, which it applied the removal of.
    Removed {
        from: u64,
        to: u64,
    },
}

/// Parses a header, refusing a length of 0 or over `max` (before anything is allocated).
pub fn parse_header(h: &[u8; HEADER_LEN], max: usize) -> Result<Header, FrameError> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len == 0 || len > max {
        return Err(FrameError::Length { len, max });
    }
    Ok(Header { len, crc })
}

/// Decodes a payload whose header announced `crc`.
pub fn decode_payload(payload: Bytes, crc: u32) -> Result<Frame, FrameError> {
    if crc32c::crc32c(&payload) != crc {
        return Err(FrameError::Checksum);
    }
    let Some(&kind) = payload.first() else {
        return Err(FrameError::Length { len: 0, max: 0 });
    };
    let body = payload.slice(1..);
    match kind {
        HELLO => decode_hello(&payload).map(Frame::Hello),
        MESSAGES => Ok(Frame::Messages(Messages { rest: body })),
        SNAP_HEAD => {
            if body.len() < 12 {
                return Err(FrameError::SnapHeadCut);
            }
            let total = u64::from_le_bytes(array(&body[..8]));
            let crc = u32::from_le_bytes(array(&body[8..12]));
            if total > MAX_SNAPSHOT {
                return Err(FrameError::SnapshotTooLarge(total));
            }
            let message = decode_message(&body.slice(12..))?;
            if message.get_msg_type() != MessageType::MsgSnapshot {
                return Err(FrameError::NotASnapshot);
            }
            Ok(Frame::SnapHead {
                total,
                crc,
                message: Box::new(message),
            })
        }
        SNAP_DATA => Ok(Frame::SnapData(body)),
        REMOVED if payload.len() == REMOVED_LEN => Ok(Frame::Removed {
            from: u64::from_le_bytes(array(&body[..8])),
            to: u64::from_le_bytes(array(&body[8..16])),
        }),
        REMOVED => Err(FrameError::RemovedLength(payload.len())),
        k => Err(FrameError::Kind(k)),
    }
}

/// Decodes the frame at the start of `buf`, if it is all there: the frame and the bytes it
/// took. Allocates at most the frame's length (plus one message at a time when iterated).
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let h = parse_header(&array(head), max)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + h.len) else {
        return Ok(None);
    };
    let frame = decode_payload(Bytes::copy_from_slice(payload), h.crc)?;
    Ok(Some((frame, HEADER_LEN + h.len)))
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

fn decode_hello(payload: &[u8]) -> Result<Hello, FrameError> {
    if payload.len() != HELLO_LEN {
        return Err(FrameError::HelloLength(payload.len()));
    }
    let version = payload[1];
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    Ok(Hello {
        version,
        from: u64::from_le_bytes(array(&payload[2..10])),
        to: u64::from_le_bytes(array(&payload[10..18])),
        identity: u64::from_le_bytes(array(&payload[18..26])),
    })
}

/// The messages of a MESSAGES frame, decoded one at a time.
#[derive(Debug)]
pub struct Messages {
    rest: Bytes,
}

impl Iterator for Messages {
    type Item = Result<Message, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.take();
        if item.is_err() {
            self.rest = Bytes::new();
        }
        Some(item)
    }
}

impl Messages {
    fn take(&mut self) -> Result<Message, FrameError> {
        let Some(len) = self.rest.get(..4) else {
            return Err(FrameError::MessageCut);
        };
        let len = u32::from_le_bytes(array(len)) as usize;
        if self.rest.len() - 4 < len {
            return Err(FrameError::MessageCut);
        }
        let m = decode_message(&self.rest.slice(4..4 + len))?;
        self.rest = self.rest.slice(4 + len..);
        Ok(m)
    }
}

/// Decodes one raft message after checking its wire format against the schema this protocol
/// version knows (no unknown fields at any depth, at most [`MAX_ENTRIES_PER_MESSAGE`] entries).
pub fn decode_message(b: &Bytes) -> Result<Message, FrameError> {
    let mut entries = 0;
    let count = &mut |s: &Shape| entries += usize::from(std::ptr::eq(s, &ENTRY));
    wire::check_with(b, &MESSAGE, count).map_err(|e| FrameError::Message(e.to_string()))?;
    if entries > MAX_ENTRIES_PER_MESSAGE {
        return Err(FrameError::TooManyEntries);
    }
    Message::parse_from_carllerche_bytes(b).map_err(|e| FrameError::Message(e.to_string()))
}

/// What decoding a frame of `len` bytes may allocate at most, payload included: the payload
/// (copied once), plus one decoded message, whose biggest parts are its entries (an `Entry`
/// takes at least 2 bytes on the wire) and its packed id lists (8 bytes in memory per byte on
/// the wire), each in a vector that may hold twice its length.
pub fn decode_bound(len: usize) -> usize {
    let entries = (len / 2 + 1).min(MAX_ENTRIES_PER_MESSAGE);
    len + 2 * entries * std::mem::size_of::<raft::eraftpb::Entry>()
        + 16 * len
        + 4 * std::mem::size_of::<Message>()
        + 4096
}

// eraftpb (raft-proto 0.7) as this protocol version knows it: Message, Entry, Snapshot,
// SnapshotMetadata, ConfState (no field beyond `last`; the schema is not recursive, so neither
// is the depth of the check).
static CONF_STATE: Shape = Shape {
    last: 5,
    nested: &[],
};
static SNAPSHOT_METADATA: Shape = Shape {
    last: 3,
    nested: &[(1, &CONF_STATE)],
};
static SNAPSHOT: Shape = Shape {
    last: 2,
    nested: &[(2, &SNAPSHOT_METADATA)],
};
static ENTRY: Shape = Shape {
    last: 6,
    nested: &[],
};
static MESSAGE: Shape = Shape {
    last: 16,
    nested: &[(7, &ENTRY), (9, &SNAPSHOT)],
};

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// A frame header for a payload made of `parts`.
pub fn header(parts: &[&[u8]]) -> [u8; HEADER_LEN] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut crc = 0;
    for p in parts {
        crc = crc32c::crc32c_append(crc, p);
    }
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A whole REMOVED frame: member `from` tells `to` that it was removed.
pub fn encode_removed(from: u64, to: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(REMOVED_LEN);
    payload.push(REMOVED);
    payload.extend_from_slice(&from.to_le_bytes());
    payload.extend_from_slice(&to.to_le_bytes());
    let mut out = header(&[&payload]).to_vec();
    out.extend_from_slice(&payload);
    out
}

/// A whole HELLO frame.
pub fn encode_hello(h: &Hello) -> Vec<u8> {
    let mut payload = Vec::with_capacity(HELLO_LEN);
    payload.push(HELLO);
    payload.push(h.version);
    payload.extend_from_slice(&h.from.to_le_bytes());
    payload.extend_from_slice(&h.to.to_le_bytes());
    payload.extend_from_slice(&h.identity.to_le_bytes());
    let mut out = header(&[&payload]).to_vec();
    out.extend_from_slice(&payload);
    out
}

/// The payload of a SNAP_HEAD frame for `m`, whose snapshot data is `data`.
pub fn snap_head_payload(m: &Message, data: &[u8]) -> protobuf::ProtobufResult<Vec<u8>> {
    let mut head = m.clone();
    head.mut_snapshot().data = Bytes::new();
    let mut out = Vec::with_capacity(13 + head.compute_size() as usize);
    out.push(SNAP_HEAD);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    head.write_to_vec(&mut out)?;
    Ok(out)
}

/// Encodes messages as MESSAGES frames (cut once one holds `batch` bytes), headers included.
/// Each message is encoded in place, not copied.
pub fn encode_messages(msgs: &[Message], batch: usize) -> protobuf::ProtobufResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut frame_start = None;
    for m in msgs {
        let start = match frame_start {
            Some(start) => start,
            None => {
                let start = out.len();
                out.extend_from_slice(&[0; HEADER_LEN]); // length and CRC, filled in below
                out.push(MESSAGES);
                frame_start = Some(start);
                start
            }
        };
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        m.write_to_vec(&mut out)?;
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        if out.len() - start >= batch {
            seal_frame(&mut out, start);
            frame_start = None;
        }
    }
    if let Some(start) = frame_start {
        seal_frame(&mut out, start);
    }
    Ok(out)
}

/// Fills in the length and CRC of the frame starting at `start` (it runs to the end of `out`).
fn seal_frame(out: &mut [u8], start: usize) {
    let h = header(&[&out[start + HEADER_LEN..]]);
    out[start..start + HEADER_LEN].copy_from_slice(&h);
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            from: 2,
            to: 1,
            identity: 0xfeed,
        }
    }

    #[test]
    fn a_hello_round_trips_and_a_bad_one_is_named() {
        let bytes = encode_hello(&hello());
        let Some((Frame::Hello(h), n)) = decode(&bytes, HELLO_FRAME).unwrap() else {
            panic!("not a hello");
        };
        assert_eq!((h, n), (hello(), bytes.len()));
        let mut v2 = hello();
        v2.version = 2;
        let e = decode(&encode_hello(&v2), HELLO_FRAME).unwrap_err();
        assert_eq!(e, FrameError::Version(2));
        assert!(decode(&bytes[..bytes.len() - 1], HELLO_FRAME)
            .unwrap()
            .is_none());
    }

    /// A REMOVED answer round trips; cut short it is incomplete; of the wrong length, or
    /// longer than an answer may be, it is refused before anything is allocated for it.
    #[test]
    fn a_removed_answer_round_trips_and_a_bad_one_is_refused() {
        let bytes = encode_removed(1, 3);
        let Some((Frame::Removed { from, to }, n)) = decode(&bytes, REMOVED_LEN).unwrap() else {
            panic!("not a removal answer");
        };
        assert_eq!((from, to, n), (1, 3, bytes.len()));
        assert!(decode(&bytes[..bytes.len() - 1], REMOVED_LEN)
            .unwrap()
            .is_none());
        let mut long = vec![REMOVED];
        long.extend_from_slice(&[0u8; 20]);
        let mut framed = header(&[&long]).to_vec();
        framed.extend_from_slice(&long);
        assert!(matches!(
            decode(&framed, REMOVED_LEN),
            Err(FrameError::Length { .. })
        ));
        assert_eq!(
            decode(&framed, 64).unwrap_err(),
            FrameError::RemovedLength(21)
        );
        let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            decode(&huge, REMOVED_LEN),
            Err(FrameError::Length { .. })
        ));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header() {
        let m = Message {
            context: vec![1u8; 100].into(),
            ..Default::default()
        };
        let bytes = encode_messages(&[m], 1 << 20).unwrap();
        // Only the header is given: the length alone is refused.
        let e = decode(&bytes[..HEADER_LEN], HELLO_FRAME).unwrap_err();
        assert!(matches!(e, FrameError::Length { .. }), "{e}");
    }

    #[test]
    fn messages_round_trip_one_at_a_time() {
        let msgs: Vec<Message> = (1..=3)
            .map(|i| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgAppend);
                m.index = i;
                m.mut_entries().push(Entry {
                    index: i,
                    ..Default::default()
                });
                m
            })
            .collect();
        let bytes = encode_messages(&msgs, 1 << 20).unwrap();
        let Some((Frame::Messages(it), _)) = decode(&bytes, MAX_FRAME).unwrap() else {
            panic!("not messages");
        };
        let got: Vec<Message> = it.collect::<Result<_, _>>().unwrap();
        assert_eq!(got, msgs);
    }

    #[test]
    fn unknown_fields_and_too_many_entries_are_refused() {
        // Field 99, varint 1; an entry holding field 7, varint 1.
        for unknown in [&[0x98, 0x06, 0x01][..], &[0x3a, 0x02, 0x38, 0x01]] {
            assert!(matches!(
                decode_message(&Bytes::copy_from_slice(unknown)),
                Err(FrameError::Message(_))
            ));
        }
        let many: Vec<u8> = std::iter::repeat_n([0x3a, 0x00], MAX_ENTRIES_PER_MESSAGE + 1)
            .flatten()
            .collect();
        assert_eq!(
            decode_message(&Bytes::from(many)).unwrap_err(),
            FrameError::TooManyEntries
        );
    }

    #[test]
    fn a_snapshot_header_is_checked() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        let payload = snap_head_payload(&m, b"data").unwrap();
        let mut frame = header(&[&payload]).to_vec();
        frame.extend_from_slice(&payload);
        let Some((Frame::SnapHead { total, crc, .. }, _)) = decode(&frame, MAX_FRAME).unwrap()
        else {
            panic!("not a snapshot head");
        };
        assert_eq!((total, crc), (4, crc32c::crc32c(b"data")));
        let mut huge = payload.clone();
        huge[1..9].copy_from_slice(&(MAX_SNAPSHOT + 1).to_le_bytes());
        let crc = crc32c::crc32c(&huge);
        assert_eq!(
            decode_payload(Bytes::from(huge), crc).unwrap_err(),
            FrameError::SnapshotTooLarge(MAX_SNAPSHOT + 1)
        );
    }
}
