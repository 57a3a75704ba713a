//! Property test of the peer frame decoder (`coordinate_raft::transport::frame`): valid
//! frames of every kind, then mutated (bytes flipped, cut short, lengths and kinds changed,
//! garbage spliced in), and plain random bytes, never panic, never allocate beyond
//! `frame::decode_bound` of the input, and fail with an error that says something.
//!
//! Allocation is measured by a counting global allocator: this test binary's own, so the
//! count covers exactly what the decoder allocates on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use coordinate_raft::transport::frame::{self, Frame, Hello, MAX_FRAME};
use proptest::prelude::*;
use protobuf::ProtobufEnum;
use raft::eraftpb::{Entry, Message, MessageType};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size);
        sub(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Decodes every frame in `buf` (iterating messages), as the reader does; returns how many
/// frames decoded and the peak bytes allocated meanwhile above what was live before.
fn decode_all(buf: &[u8], max: usize) -> (usize, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let mut rest = buf;
    let mut frames = 0;
    loop {
        match frame::decode(rest, max) {
            Ok(None) => break,
            Ok(Some((f, n))) => {
                frames += 1;
                if let Frame::Messages(msgs) = f {
                    for m in msgs {
                        if let Err(e) = m {
                            assert!(!e.to_string().is_empty());
                            break;
                        }
                    }
                }
                rest = &rest[n..];
            }
            Err(e) => {
                assert!(!e.to_string().is_empty(), "an error without a message");
                break;
            }
        }
    }
    let peak = PEAK.with(|p| p.get()) - base;
    (frames, peak)
}

fn message() -> impl Strategy<Value = Message> {
    (
        0..19i32,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(
            (
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            0..8,
        ),
        any::<u64>(),
        prop::collection::vec(any::<u64>(), 0..5),
    )
        .prop_map(|(t, from, term, commit, entries, index, voters)| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::from_i32(t).unwrap_or(MessageType::MsgAppend));
            m.from = from;
            m.to = 1;
            m.term = term;
            m.commit = commit;
            m.index = index;
            for (index, term, data) in entries {
                m.mut_entries().push(Entry {
                    index,
                    term,
                    data: data.into(),
                    ..Default::default()
                });
            }
            m.mut_snapshot().mut_metadata().mut_conf_state().voters = voters;
            m
        })
}

fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut out = frame::header(&[payload]).to_vec();
    out.extend_from_slice(payload);
    out
}

/// A valid frame of any kind.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(v, from, to, identity)| {
                frame::encode_hello(&Hello {
                    version: if v < 200 { frame::PROTOCOL_VERSION } else { v },
                    from,
                    to,
                    identity,
                })
            }
        ),
        prop::collection::vec(message(), 0..6).prop_map(|msgs| frame::encode_messages(
            &msgs,
            1 << 20
        )
        .unwrap()),
        (message(), prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(mut m, data)| {
            m.set_msg_type(MessageType::MsgSnapshot);
            with_header(&frame::snap_head_payload(&m, &data).unwrap())
        }),
        prop::collection::vec(any::<u8>(), 0..512).prop_map(|data| {
            let mut payload = vec![frame::SNAP_DATA];
            payload.extend_from_slice(&data);
            with_header(&payload)
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Length(u32),
    Kind(u8),
    Splice(usize, Vec<u8>),
    /// Fix the CRC after the other mutations, so the payload decoder sees them.
    Reseal,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        prop_oneof![
            any::<u32>(),
            0..64u32,
            Just(MAX_FRAME as u32),
            Just(u32::MAX)
        ]
        .prop_map(Mutation::Length),
        any::<u8>().prop_map(Mutation::Kind),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
        Just(Mutation::Reseal),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, x) => {
            let i = i % buf.len();
            buf[i] ^= x;
        }
        Mutation::Truncate(i) => buf.truncate(i % buf.len()),
        Mutation::Length(len) if buf.len() >= 4 => buf[..4].copy_from_slice(&len.to_le_bytes()),
        Mutation::Kind(k) if buf.len() > 8 => buf[8] = *k,
        Mutation::Splice(i, b) => {
            let i = i % buf.len();
            buf.splice(i..i, b.iter().copied());
        }
        Mutation::Reseal if buf.len() > 8 => {
            let crc = crc32c::crc32c(&buf[8..]);
            buf[4..8].copy_from_slice(&crc.to_le_bytes());
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn valid_frames_decode(frames in prop::collection::vec(valid_frame(), 1..4)) {
        let buf: Vec<u8> = frames.concat();
        let (_, peak) = decode_all(&buf, MAX_FRAME);
        prop_assert!(peak <= frame::decode_bound(buf.len()), "{peak} bytes for {} input", buf.len());
    }

    #[test]
    fn mutated_frames_never_panic_nor_overallocate(
        frames in prop::collection::vec(valid_frame(), 1..4),
        mutations in prop::collection::vec(mutation(), 1..5),
        max in prop_oneof![Just(frame::HELLO_FRAME), Just(MAX_FRAME)],
    ) {
        let mut buf: Vec<u8> = frames.concat();
        for m in &mutations {
            apply(&mut buf, m);
        }
        let (_, peak) = decode_all(&buf, max);
        prop_assert!(peak <= frame::decode_bound(buf.len()), "{peak} bytes for {} input", buf.len());
    }

    #[test]
    fn random_bytes_never_panic_nor_overallocate(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (_, peak) = decode_all(&buf, MAX_FRAME);
        prop_assert!(peak <= frame::decode_bound(buf.len()), "{peak} bytes for {} input", buf.len());
    }
}

/// A frame header announcing the largest frame, with only a few bytes behind it, allocates
/// nothing: the decoder waits for the whole frame before copying it.
#[test]
fn a_huge_announced_frame_allocates_nothing_until_it_is_all_there() {
    let mut buf = (MAX_FRAME as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(&[0; 4]);
    buf.push(frame::MESSAGES);
    let (frames, peak) = decode_all(&buf, MAX_FRAME);
    assert_eq!((frames, peak), (0, 0));
}
