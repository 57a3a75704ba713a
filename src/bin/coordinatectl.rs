//! `coordinatectl`, the command-line client: everything lives in the `coordinate_ctl` crate.

fn main() -> std::process::ExitCode {
    coordinate_ctl::cli::main()
}
