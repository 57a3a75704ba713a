//! A raw peer for attack tests: speaks the peer protocol byte by byte (mirroring the
//! server's `raft/transport/frame.rs`, without calling it), so a test can send a node
//! anything an attacker on the peer network could.
//!
//! ```text
//! | len: u32 LE | crc32c(payload): u32 LE | payload |
//! payload = kind: u8, then
//!   4 HELLO:     version 1: u8, from: u64 LE, to: u64 LE, identity: u64 LE
//!   1 MESSAGES:  repeated (len: u32 LE, raft Message protobuf)
//!   2 SNAP_HEAD: data length: u64 LE, crc32c(data): u32 LE, MsgSnapshot without its data
//!   3 SNAP_DATA: a chunk of the data
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinate_tls::rustls::{ClientConfig, ClientConnection, StreamOwned};
use protobuf::Message as _;
use raft::eraftpb::Message;

use crate::Cluster;

pub const MESSAGES: u8 = 1;
pub const SNAP_HEAD: u8 = 2;
pub const SNAP_DATA: u8 = 3;
pub const HELLO: u8 = 4;
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of snapshot data per SNAP_DATA frame (as the transport sends them).
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

/// How long a write to a node may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw connection to a node's peer port, in clear or under TLS.
pub struct RawPeer {
    stream: Stream,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// A whole frame (header and payload) of `kind` with `body`.
pub fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(kind);
    payload.extend_from_slice(body);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A HELLO frame.
pub fn hello_frame(from: u64, to: u64, identity: u64) -> Vec<u8> {
    let mut body = vec![PROTOCOL_VERSION];
    body.extend_from_slice(&from.to_le_bytes());
    body.extend_from_slice(&to.to_le_bytes());
    body.extend_from_slice(&identity.to_le_bytes());
    frame(HELLO, &body)
}

/// A MESSAGES frame holding `msgs`.
pub fn messages_frame(msgs: &[Message]) -> Vec<u8> {
    let mut body = Vec::new();
    for m in msgs {
        let bytes = m.write_to_bytes().expect("encode a raft message");
        body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        body.extend_from_slice(&bytes);
    }
    frame(MESSAGES, &body)
}

/// A SNAP_HEAD frame announcing `len` bytes of data with checksum `crc` for `m` (whose own
/// snapshot data is left out).
pub fn snap_head_frame(m: &Message, len: u64, crc: u32) -> Vec<u8> {
    let mut head = m.clone();
    head.mut_snapshot().data = Default::default();
    let mut body = Vec::new();
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(&crc.to_le_bytes());
    body.extend_from_slice(&head.write_to_bytes().expect("encode a raft message"));
    frame(SNAP_HEAD, &body)
}

impl RawPeer {
    /// Connects to `addr` (host:port of a node's peer port) and introduces itself as node
    /// `from` talking to node `to`, presenting data-dir identity `identity`.
    pub fn connect(addr: &str, from: u64, to: u64, identity: u64) -> std::io::Result<RawPeer> {
        RawPeer::connect_with(None, addr, from, to, identity)
    }

    /// [`RawPeer::connect`], under TLS with `tls` if given (the handshake happens with the
    /// hello, so a refused certificate fails the hello or the next read).
    pub fn connect_with(
        tls: Option<Arc<ClientConfig>>,
        addr: &str,
        from: u64,
        to: u64,
        identity: u64,
    ) -> std::io::Result<RawPeer> {
        let mut peer = RawPeer::connect_silent_with(tls, addr)?;
        peer.stream.tcp().set_nodelay(true)?;
        peer.send_raw(&hello_frame(from, to, identity))?;
        Ok(peer)
    }

    /// A connection that has sent nothing yet.
    pub fn connect_silent(addr: &str) -> std::io::Result<RawPeer> {
        RawPeer::connect_silent_with(None, addr)
    }

    /// [`RawPeer::connect_silent`], under TLS with `tls` if given.
    pub fn connect_silent_with(
        tls: Option<Arc<ClientConfig>>,
        addr: &str,
    ) -> std::io::Result<RawPeer> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = coordinate_tls::server_name(addr)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let session = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                Stream::Tls(Box::new(StreamOwned::new(session, tcp)))
            }
        };
        Ok(RawPeer { stream })
    }

    /// Under TLS, completes the handshake and returns the node's certificate (DER).
    pub fn server_certificate(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let Stream::Tls(tls) = &mut self.stream else {
            return Ok(None);
        };
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec()))
    }

    pub fn send(&mut self, msgs: &[Message]) -> std::io::Result<()> {
        self.send_raw(&messages_frame(msgs))
    }

    /// Sends a MsgSnapshot whose `snapshot.data` holds the data, as the transport streams it.
    pub fn send_snapshot(&mut self, m: &Message) -> std::io::Result<()> {
        let data = m.get_snapshot().data.clone();
        self.send_raw(&snap_head_frame(
            m,
            data.len() as u64,
            crc32c::crc32c(&data),
        ))?;
        for chunk in data.chunks(SNAPSHOT_CHUNK) {
            self.send_raw(&frame(SNAP_DATA, chunk))?;
        }
        Ok(())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// True if the node closed the connection within `timeout` (reads EOF or an error).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.stream.tcp().set_read_timeout(Some(left)).is_err() {
                return true;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                // The node never writes on an inbound connection; ignore it if it did.
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// The data-dir identity node `id` presents to its peers (read from its data dir).
pub fn identity_of(c: &Cluster, id: u64) -> u64 {
    let path = c.data_dir(id).join("IDENTITY");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    u64::from_str_radix(text.trim(), 16)
        .unwrap_or_else(|e| panic!("{}: not an identity: {e}", path.display()))
}

/// Refused peer messages on node `id`, from its metrics: a message counts once the node
/// decoded it and its guard refused what it says (0 if the node does not answer).
pub fn refused_messages(c: &Cluster, id: u64) -> u64 {
    let Ok((200, body)) = c.get(id, "metrics") else {
        return 0;
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("coordinate_peer_messages_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// host:port of node `id`'s peer port.
pub fn peer_addr_of(c: &Cluster, id: u64) -> String {
    let url = &c.peer_urls()[(id - 1) as usize];
    url.split_once("://")
        .map_or(url.as_str(), |(_, a)| a)
        .to_string()
}
