//! The one loopback port allocator, for the tests' clusters and for chaos on loopback.
//!
//! Ports are handed out from [`PORT_LOW`]..[`PORT_HIGH`], below Linux's default ephemeral
//! range (32768..61000), so an outgoing connection never grabs a port between its allocation
//! and the node's bind. Each process starts at its own block of [`PORT_BLOCK`] ports (derived
//! from its pid), so test binaries and chaos processes running in parallel walk disjoint
//! ranges; a port is checked by binding it (on 127.0.0.1 and on all interfaces) and released.
//! A port this process handed out once is never handed out again.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// First port handed out.
pub const PORT_LOW: u16 = 20_000;
/// One past the last port handed out.
pub const PORT_HIGH: u16 = 32_000;
/// Ports per process block: a test binary or a chaos run uses far fewer than this many.
pub const PORT_BLOCK: u16 = 50;
/// Ports a developer's own node may be using (the seed's defaults); never handed out.
pub const RESERVED_PORTS: &[u16] = &[12379, 12380, 22379, 22380, 32379, 32380, 42379, 42380];

/// Every port in the range is in use or was handed out already.
#[derive(Debug, thiserror::Error)]
#[error("no free port in {PORT_LOW}..{PORT_HIGH}")]
pub struct PortsExhausted;

struct PortState {
    next: u16,
    handed_out: HashSet<u16>,
}

static PORTS: Mutex<Option<PortState>> = Mutex::new(None);

/// A loopback TCP port that nobody is listening on and that this process has not handed out
/// before. Panics when the range is exhausted (for tests; see [`free_ports`]).
pub fn free_port() -> u16 {
    match free_ports(1) {
        Ok(ports) => ports[0],
        Err(e) => panic!("{e}"),
    }
}

/// `n` ports as [`free_port`] finds them.
pub fn free_ports(n: usize) -> Result<Vec<u16>, PortsExhausted> {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let state = guard.get_or_insert_with(|| {
        let blocks = (PORT_HIGH - PORT_LOW) / PORT_BLOCK;
        let block = (std::process::id() % u32::from(blocks)) as u16;
        PortState {
            next: PORT_LOW + block * PORT_BLOCK,
            handed_out: HashSet::new(),
        }
    });
    (0..n).map(|_| next_free(state)).collect()
}

fn next_free(state: &mut PortState) -> Result<u16, PortsExhausted> {
    for _ in 0..(PORT_HIGH - PORT_LOW) {
        let port = state.next;
        state.next = if port + 1 >= PORT_HIGH {
            PORT_LOW
        } else {
            port + 1
        };
        if RESERVED_PORTS.contains(&port) || state.handed_out.contains(&port) {
            continue;
        }
        if is_free(port) {
            state.handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(PortsExhausted)
}

/// Nobody listens on `port`, on loopback or on any interface.
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_in_range() {
        let ports = free_ports(20).unwrap();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for p in ports {
            assert!((PORT_LOW..PORT_HIGH).contains(&p));
            assert!(!RESERVED_PORTS.contains(&p));
            assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
        }
    }
}
