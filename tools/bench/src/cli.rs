//! `coordinate-bench`: flags → load run → a table (or JSON) on stdout. The load generator
//! itself is the crate root. Exits 0 when the run completed, even with errors (they are
//! in the report); 2 on bad flags.

use crate as bench;
use crate::Args;
use clap::Parser;

pub fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let tls = match args.validate().and_then(|()| args.tls()) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("coordinate-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coordinate-bench: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json = args.json;
    let report = runtime.block_on(bench::run(args, tls));
    if json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("coordinate-bench: cannot encode the report: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    std::process::ExitCode::SUCCESS
}
