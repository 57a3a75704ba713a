//! Checking that coordinate is linearizable, from the outside.
//!
//! A test workload records every client request as an [`Operation`]: what was asked (a
//! [`Call`]), when it was invoked and when it completed on one monotonic clock, and how it
//! ended ([`Outcome`]: ok, failed — known not to have happened — or unknown — a timeout or a
//! reset: it may take effect at any later time, or never). [`check`] then decides whether one
//! total order of those operations exists that respects real time and makes every key behave
//! like a single register; when none exists it shrinks the key's history to the smallest
//! window of operations that no order can explain, and prints it.
//!
//! The workload and the fault injection that produce histories live in the `chaos` binary
//! (`src/bin/chaos.rs`); this module knows nothing about HTTP or processes, so its checker is
//! unit-tested on hand-written histories, good and bad.

pub mod history;
pub mod linearizability;

pub use history::{Call, History, Operation, Outcome, Summary, Time};
pub use linearizability::{check, Config, Report, Verdict, Violation};
