//! The simulator in the test suite: a fixed set of seeds must pass, a seed must replay
//! exactly, and the checks must catch what a disk that loses fsynced data causes.

use coordinate_sim::{run, Options};

/// Seeds every `cargo test` runs (a few seconds in a debug build).
const SEEDS: u64 = 150;

#[test]
fn fixed_seeds_keep_every_safety_property() {
    let opts = Options::default();
    let mut kinds = std::collections::BTreeSet::new();
    let mut acked = 0;
    for seed in 0..SEEDS {
        let report = run(seed, &opts);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p coordinate-sim -- --seed {seed}",
            report.violations
        );
        kinds.extend(report.kinds);
        acked += report.acked_writes;
    }
    // The runs did work and met every kind of fault the simulator injects.
    assert!(
        acked > 10 * SEEDS as usize,
        "only {acked} writes acknowledged"
    );
    for kind in [
        "drop",
        "duplicate",
        "delay",
        "partition",
        "asymmetric link",
        "crash",
        "torn write",
        "fsync failure",
        "fail-stop",
        "snapshot",
        "snapshot write failure",
        "membership",
        "lease expiry",
    ] {
        assert!(kinds.contains(kind), "no run had a {kind}: {kinds:?}");
    }
}

#[test]
fn five_nodes_keep_every_safety_property() {
    let opts = Options {
        nodes: 5,
        ..Options::default()
    };
    for seed in 1000..1020 {
        let report = run(seed, &opts);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    let opts = Options {
        trace: true,
        ..Options::default()
    };
    for seed in [7, 8, 9] {
        let a = run(seed, &opts);
        let b = run(seed, &opts);
        assert!(a.trace.len() > 1000, "seed {seed}: {} lines", a.trace.len());
        assert_eq!(a.trace, b.trace, "seed {seed}");
        assert_eq!((a.ops, a.events), (b.ops, b.events));
    }
}

#[test]
fn a_disk_that_loses_fsynced_data_is_caught() {
    let opts = Options {
        lying_disk: true,
        ..Options::default()
    };
    let caught = (0..40).find(|&seed| !run(seed, &opts).violations.is_empty());
    assert!(caught.is_some(), "no seed noticed acknowledged data lost");
}

#[test]
fn a_clock_far_too_fast_for_leases_is_caught() {
    let opts = Options {
        wild_clock: true,
        ..Options::default()
    };
    let caught = (0..40).find(|&seed| {
        run(seed, &opts)
            .violations
            .iter()
            .any(|v| v.starts_with("lease safety"))
    });
    assert!(
        caught.is_some(),
        "no seed noticed a lease expired within its TTL"
    );
}

/// Seeds that found bugs, each kept once fixed (each fails with the fix taken out, in this
/// version of the simulator: a change to what runs draw makes a seed another run).
#[test]
fn seeds_that_found_bugs_pass() {
    // A forwarded proposal the network duplicated was appended and applied twice: first found
    // as seed 10066 of 5 nodes (a compare-and-set answered "compare failed", applied by its
    // copy after a delete); in this version of the simulator, seed 1212 of 3 nodes fails the
    // same way without the fix. Fixed: a node steps a forwarded proposal at most once
    // (`guard::ForwardedSeen`).
    let report = run(1212, &Options::default());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
