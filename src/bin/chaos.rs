//! `chaos`, the fault-injection tester: everything lives in the `coordinate_chaos` crate.

fn main() -> std::process::ExitCode {
    coordinate_chaos::main()
}
