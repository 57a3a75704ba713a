//! What the state machine costs per write on the raft loop, measured on its own (no raft, no
//! network, no disk): a put over a key space, the physical compaction of one version, and a
//! snapshot of the store — the three costs every replica pays once per write. A measurement,
//! not a test: the numbers go to BENCHMARKS.md.
//!
//! `cargo run --release -p coordinate-server --example store_costs [KEYS] [WRITES]`
//! (defaults 100,000 keys, 200,000 overwrites, values of 100 to 255 bytes).

use std::time::Instant;

use bytes::Bytes;
use coordinate_server::kv::{Command, Kv};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let keys = args.next().and_then(Result::ok).unwrap_or(100_000);
    let writes = args.next().and_then(Result::ok).unwrap_or(200_000);
    // Keys spread over the key space in a scrambled order, like a benchmark's random keys.
    let key = |i: u64| Bytes::from(format!("key-{:010}", i.wrapping_mul(2_654_435_761) % keys));
    let value = |i: u64| Bytes::from(vec![b'x'; 100 + (i % 156) as usize]);
    let mut kv = Kv::default();
    let mut events = Vec::new();
    for i in 0..keys {
        kv.apply(0, Command::put(key(i), value(i)), &mut events);
        events.clear();
    }

    let started = Instant::now();
    for i in 0..writes {
        kv.apply(0, Command::put(key(i * 7 + 3), value(i)), &mut events);
        events.clear();
    }
    let put = started.elapsed() / writes as u32;

    // Compact the older half of the overwrites away, a step at a time as the node does.
    let revision = kv.revision() - writes / 2;
    kv.apply(0, Command::Compact { revision }, &mut events);
    let (started, mut visited) = (Instant::now(), 0u32);
    while kv.compaction_pending() {
        kv.compact_step(1024);
        visited += 1024;
    }
    let compaction = started.elapsed() / visited.max(1);

    let started = Instant::now();
    let snapshot = kv.snapshot();
    let serialize = started.elapsed();
    println!(
        "{keys} keys, {writes} overwrites: put {put:?} each; physical compaction {compaction:?} \
         per log entry; snapshot of {} MB in {serialize:?}",
        snapshot.len() / 1_000_000
    );
}
