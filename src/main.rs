//! The `coordinate` binary: flags → [`Config`] → run until a signal; or
//! `coordinate restore FILE <the same flags>`, which seeds a new member's data directory from
//! a backup and exits.

use clap::Parser;
use coordinate_server::config::{Args, Config};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: requests allocate and free many small buffers across
/// threads, where glibc spent about 8% of the CPU under load (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process, before it allocates much. With them on (the
/// default of many distributions), memory the allocator takes back from the OS is faulted in
/// 2 MiB at a time, each fault zeroing 2 MiB on the raft loop's thread: applies of a few
/// dozen entries took 4-8 ms, stalling every client at once (p99.9 of PUTs 25-28 ms against
/// 10-13 ms without; BENCHMARKS.md). A kernel that refuses is not worth stopping for.
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE reads no memory of ours; it only sets a flag of
    // this process (inherited by children).
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!(
            "coordinate: cannot turn transparent huge pages off ({}); going on",
            std::io::Error::last_os_error()
        );
    }
}

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "restore") {
        return restore(argv.split_off(2));
    }
    let args = Args::parse_from(argv);
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

/// `coordinate restore FILE [flags]`: the backup FILE (as `etcdctl snapshot save` writes it)
/// becomes the first state of a new cluster of the members the flags name, in the data
/// directory they name; run it for every new member, then start them with the same flags.
fn restore(rest: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    const USAGE: &str = "usage: coordinate restore FILE [the flags the member will run with]";
    let Some((file, flags)) = rest.split_first() else {
        eprintln!("coordinate: restore needs the backup file\n{USAGE}");
        return std::process::ExitCode::from(2);
    };
    if file.to_string_lossy().starts_with('-') {
        eprintln!("coordinate: restore needs the backup file first\n{USAGE}");
        return std::process::ExitCode::from(2);
    }
    let argv = std::iter::once("coordinate restore".into()).chain(flags.iter().cloned());
    let cfg = match Args::try_parse_from(argv)
        .map_err(|e| e.to_string())
        .and_then(Config::from_args)
    {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("coordinate: {}", e.trim_end());
            return std::process::ExitCode::from(2);
        }
    };
    let path = std::path::Path::new(file);
    match coordinate_server::backup::restore(&cfg, path) {
        Ok(restored) => {
            let mut ids: Vec<u64> = cfg.peers.keys().copied().collect();
            ids.sort_unstable();
            let members: Vec<String> = ids.iter().map(u64::to_string).collect();
            println!(
                "restored {} (revision {}, {} keys) into {} as member {} of a new cluster of members {}; start it with the same flags",
                path.display(),
                restored.revision,
                restored.keys,
                cfg.data_dir.display(),
                cfg.id,
                members.join(", ")
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coordinate: restore: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
