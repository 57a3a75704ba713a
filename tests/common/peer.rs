//! A raw peer client for attack tests: hand-made raft messages written to a node's peer port
//! in the transport's framing, from any claimed id.
//!
//! This version speaks the protocol without a connection handshake: `connect` ignores `from`
//! and `identity` (a version for the handshake keeps the same API).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;

const MESSAGES: u8 = 1;
const SNAP_HEAD: u8 = 2;
const SNAP_DATA: u8 = 3;
/// Size of one snapshot data frame (as the transport sends them).
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// One connection to a node's peer port.
pub struct RawPeer {
    stream: TcpStream,
}

impl RawPeer {
    /// Connects to `addr` as node `from` (with data-dir identity `identity`) talking to `to`.
    pub fn connect(addr: &str, from: u64, to: u64, identity: u64) -> std::io::Result<RawPeer> {
        let _ = (from, to, identity);
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(RawPeer { stream })
    }

    /// Sends messages in one frame.
    pub fn send(&mut self, msgs: &[Message]) -> std::io::Result<()> {
        let mut payload = vec![MESSAGES];
        for m in msgs {
            let bytes = m.write_to_bytes().map_err(std::io::Error::other)?;
            payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            payload.extend_from_slice(&bytes);
        }
        self.frame(&[&payload])
    }

    /// Sends a MsgSnapshot whose `snapshot.data` holds the data, as the transport streams it.
    pub fn send_snapshot(&mut self, m: &Message) -> std::io::Result<()> {
        let data = m.get_snapshot().data.clone();
        let mut head = m.clone();
        head.mut_snapshot().data = Default::default();
        let head = head.write_to_bytes().map_err(std::io::Error::other)?;
        let mut prefix = vec![SNAP_HEAD];
        prefix.extend_from_slice(&(data.len() as u64).to_le_bytes());
        self.frame(&[&prefix, &head])?;
        for chunk in data.chunks(SNAPSHOT_CHUNK) {
            self.frame(&[&[SNAP_DATA], chunk])?;
        }
        Ok(())
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// True if the node closes the connection within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        if self.stream.set_read_timeout(Some(timeout)).is_err() {
            return true;
        }
        let mut buf = [0u8; 256];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    fn frame(&mut self, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut crc = 0;
        for p in parts {
            crc = crc32c::crc32c_append(crc, p);
        }
        let mut out = Vec::with_capacity(8 + len);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        for p in parts {
            out.extend_from_slice(p);
        }
        self.send_raw(&out)
    }
}

/// The data-dir identity node `id` presents to its peers (none in this protocol: 0).
pub fn identity_of(c: &super::Cluster, id: u64) -> u64 {
    let _ = (c, id);
    0
}

/// host:port of node `id`'s peer port.
pub fn peer_addr_of(c: &super::Cluster, id: u64) -> String {
    let url = &c.peer_urls()[(id - 1) as usize];
    url.strip_prefix("http://").unwrap_or(url).to_string()
}
