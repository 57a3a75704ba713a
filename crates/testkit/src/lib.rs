//! The harness of coordinate's end-to-end tests and of `chaos`: real `coordinate` processes,
//! the ports they listen on, their logs, waiting on conditions, and network namespaces.
//!
//! Layers, bottom up:
//! - [`ports`]: the one loopback port allocator (a block per process, each port checked by
//!   binding it);
//! - [`wait`]: polling a condition with a deadline, waiting for a child to exit; nothing here
//!   sleeps and hopes;
//! - [`log`]: the tail of a log file;
//! - [`process`]: one node's process with its output captured to a log file (appended across
//!   restarts, a marker line per start), signalled and reaped by pid, killed on drop;
//! - [`netns`]: a hub namespace with a bridge and one namespace per node, links cut by
//!   blackhole routes (used by chaos for partitions);
//! - [`cluster`] (with [`client`], [`certs`] and [`raw_http`]): the tests' [`Cluster`], `n`
//!   processes on loopback, in clear or with TLS on both ports, that panic with every node's
//!   log tail when something goes wrong;
//! - `peer` (feature `peer`): a raw peer that speaks the peer protocol byte by byte.
//!
//! The `coordinate` binary is always the caller's: cargo shows its path
//! (`CARGO_BIN_EXE_coordinate`) only to the root package's tests, and chaos takes it from
//! `--coordinate`. Nothing here links the server.

pub mod certs;
pub mod client;
pub mod cluster;
pub mod log;
pub mod netns;
#[cfg(feature = "peer")]
pub mod peer;
pub mod ports;
pub mod process;
pub mod raw_http;
pub mod wait;

pub use certs::Certs;
pub use client::{field, role, show, Client, REQUEST_TIMEOUT};
pub use cluster::{run_to_exit, Cluster, Security};
pub use log::tail;
pub use ports::{free_port, free_ports, PortsExhausted};
pub use process::{sigterm, NodeProcess, Signal};
pub use raw_http::raw_put_status;
pub use wait::{wait_exit, wait_until, wait_while_progressing, WAIT_TIMEOUT};
