//! `coordinate-sim`: runs simulated seeds until one fails or the count is reached, and prints
//! a failing seed's trace (it replays exactly).

use std::time::Instant;

use clap::Parser;
use coordinate_sim::{run, Options};

#[derive(Parser)]
#[command(about = "Deterministic simulation of coordinate's raft node")]
struct Args {
    /// Seeds to run, from --start.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run just this seed and print its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes per run.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Simulated milliseconds of faults per run (then the cluster settles).
    #[arg(long, default_value_t = 20_000)]
    duration_ms: u64,
    /// Simulate disks whose fsync lies (a crash may lose fsynced data): the runs must fail,
    /// which shows the checks catch lost acknowledged writes.
    #[arg(long)]
    lying_disk: bool,
    /// Run node 1's clock 50% fast (leases allow 2%): the runs must fail, which shows the
    /// lease check catches a lease expired within its TTL.
    #[arg(long)]
    wild_clock: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Options {
        nodes: args.nodes,
        duration_ms: args.duration_ms,
        lying_disk: args.lying_disk,
        wild_clock: args.wild_clock,
        ..Options::default()
    };
    if let Some(seed) = args.seed {
        let report = run(
            seed,
            &Options {
                trace: true,
                ..opts
            },
        );
        for line in &report.trace {
            println!("{line}");
        }
        println!("faults: {:?}", report.faults);
        println!("{}", report.summary);
        println!(
            "{} events, {} operations, {} acknowledged writes; fault kinds: {:?}",
            report.events, report.ops, report.acked_writes, report.kinds
        );
        if report.violations.is_empty() {
            println!("seed {seed}: ok");
            return Ok(());
        }
        for v in &report.violations {
            println!("VIOLATION: {v}");
        }
        anyhow::bail!("seed {seed} failed");
    }
    let started = Instant::now();
    let mut kinds = std::collections::BTreeSet::new();
    let (mut events, mut ops) = (0, 0);
    for seed in args.start..args.start + args.seeds {
        let report = run(seed, &opts);
        events += report.events;
        ops += report.ops;
        kinds.extend(report.kinds.iter().copied());
        if !report.violations.is_empty() {
            for v in &report.violations {
                eprintln!("VIOLATION: {v}");
            }
            let lying = match (args.lying_disk, args.wild_clock) {
                (true, true) => " --lying-disk --wild-clock",
                (true, false) => " --lying-disk",
                (false, true) => " --wild-clock",
                (false, false) => "",
            };
            anyhow::bail!(
                "seed {seed} failed; replay it with `coordinate-sim --seed {seed} --nodes {} \
                 --duration-ms {}{lying}` to see its trace",
                args.nodes,
                args.duration_ms
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds passed in {secs:.1} s ({:.1} seeds/s, {events} events, {ops} operations); \
         fault kinds: {kinds:?}",
        args.seeds,
        args.seeds as f64 / secs
    );
    Ok(())
}
