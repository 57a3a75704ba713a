//! The `coordinate` binary: flags → [`Config`] → run until a signal.

use clap::Parser;
use coordinate_server::config::{Args, Config};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: requests allocate and free many small buffers across
/// threads, where glibc spent about 8% of the CPU under load (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("coordinate: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&cfg.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("coordinate: invalid --log-level {:?}: {e}", cfg.log_level);
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Idle client sockets must not starve the WAL and snapshots of descriptors: raise the
    // soft limit to the hard one (the client port also caps its connections below it).
    match coordinate_server::api::serve::raise_fd_limit() {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
    // A multi-threaded runtime even with one worker: the raft loop hands its rare blocking
    // steps (installing a snapshot, waiting for the WAL at shutdown) to `block_in_place`.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coordinate: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(coordinate_server::server::main(cfg)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coordinate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
