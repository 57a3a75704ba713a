//! # coordinate-sim
//!
//! A deterministic simulator for coordinate's raft node. It runs the node's own code —
//! `coordinate_raft::node::Node`, with its pending-request tables, reads, snapshots and
//! recovery, over coordinate's own state machine (`coordinate_server::state::Store`) — with
//! no sockets, threads, sleeps or files: the node reaches the world through the
//! `coordinate_raft::node::Io` trait, which the simulator implements ([`io`]) over a
//! simulated network and disks ([`disk`]).
//!
//! A run ([`world`]) is drawn entirely from one seed: the fault settings, the timing of every
//! message, fsync and tick, the crashes, partitions and torn writes, and what the clients ask
//! for. After every step the raft safety properties are checked ([`check`]); at the end the
//! clients' history is checked for linearizability. The same seed replays the same run, so a
//! failure is reproduced and printed as a readable trace by running its seed again.

pub mod check;
pub mod disk;
pub mod io;
pub mod state;
pub mod world;

pub use world::{Options, RunReport};

/// Runs one seed. A panic in the node's code (raft-rs's included) is a failed run, not the
/// end of the search: it is reported as a violation naming the panic.
pub fn run(seed: u64, opts: &Options) -> RunReport {
    let opts = opts.clone();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world::World::new(seed, opts.clone()).run(seed)
    }));
    run.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        RunReport::panicked(seed, &opts, what)
    })
}
