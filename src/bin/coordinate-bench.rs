//! `coordinate-bench`, the load generator: everything lives in the `coordinate_bench` crate.

fn main() -> std::process::ExitCode {
    coordinate_bench::cli::main()
}
