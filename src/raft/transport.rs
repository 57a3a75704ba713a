//! Peer transport: raft messages between nodes over plain TCP, one long-lived connection per
//! peer in each direction.
//!
//! # Outbound
//! Each peer has a bounded queue and a task that owns its connection. The raft thread never
//! blocks on the network: [`Transport::send`] only `try_send`s into the queue, and a full queue
//! drops the message (raft retransmits) and reports the peer unreachable. The task drains
//! everything queued into one frame per batch, reconnects with exponential backoff after an
//! error, and reports the peer unreachable to raft so it stops pipelining to it.
//!
//! # Frames
//! ```text
//! | len: u32 LE | crc32c(payload): u32 LE | payload |
//! payload = kind: u8, then
//!   1 MESSAGES:  repeated (len: u32 LE, raft Message protobuf)
//!   2 SNAP_HEAD: total data length: u64 LE, raft Message protobuf without snapshot data
//!   3 SNAP_DATA: the next chunk of snapshot data
//! ```
//! Snapshots go in chunks of [`SNAPSHOT_CHUNK`] bytes, so no frame is large. The receiver
//! checks every length against a limit before allocating and drops the connection on anything
//! malformed: garbage on the peer port costs one log line, never a crash or unbounded memory.
//! (The protobuf crate has an advisory for untrusted input; the size limits are its mitigation
//! until peer TLS exists.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::raft::node::Input;

/// Largest frame accepted from a peer.
pub const MAX_FRAME: usize = 32 << 20;
/// Largest snapshot accepted from a peer.
pub const MAX_SNAPSHOT: u64 = 8 << 30;
/// Size of one snapshot data frame.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE: usize = 4096;
/// A batch frame is cut once it holds this many bytes.
const BATCH_BYTES: usize = 4 << 20;

const MESSAGES: u8 = 1;
const SNAP_HEAD: u8 = 2;
const SNAP_DATA: u8 = 3;

/// Per peer: its address and the queue of its connection task.
type PeerMap = HashMap<u64, (String, mpsc::Sender<Message>)>;

/// Handle used by the raft thread to send messages to peers.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: tokio::runtime::Handle,
    node: flume::Sender<Input>,
    /// Per peer: its address and the queue of its connection task.
    peers: Mutex<PeerMap>,
}

impl Transport {
    /// Creates the transport and starts a connection task for each peer (`id → host:port`).
    pub fn new(
        id: u64,
        peers: &HashMap<u64, String>,
        node: flume::Sender<Input>,
        runtime: tokio::runtime::Handle,
    ) -> Transport {
        let transport = Transport {
            inner: Arc::new(Inner {
                runtime,
                node,
                peers: Mutex::new(HashMap::new()),
            }),
        };
        for (&peer, addr) in peers {
            if peer != id {
                transport.add_peer(peer, addr.clone());
            }
        }
        transport
    }

    /// Starts (or restarts with a new address) the connection task for a peer; a no-op if
    /// the peer is already known at that address.
    pub fn add_peer(&self, peer: u64, addr: String) {
        let mut peers = self.peers();
        if peers.get(&peer).is_some_and(|(a, _)| *a == addr) {
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let node = self.inner.node.clone();
        self.inner
            .runtime
            .spawn(run_peer(peer, addr.clone(), rx, node));
        // Replacing the sender drops the old one, which ends the old task.
        peers.insert(peer, (addr, tx));
    }

    /// Makes the set of peers exactly `wanted` (id → host:port): starts new ones, restarts
    /// moved ones, stops removed ones.
    pub fn set_peers(&self, wanted: HashMap<u64, String>) {
        self.peers().retain(|id, _| wanted.contains_key(id));
        for (id, addr) in wanted {
            self.add_peer(id, addr);
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, PeerMap> {
        // The map is only touched briefly; a poisoned lock still holds a usable map.
        self.inner.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues messages without blocking. Returns the messages that could not be queued (peer
    /// unknown or its queue full) so the caller can report them to raft.
    pub fn send(&self, msgs: Vec<Message>) -> Vec<Message> {
        let mut failed = Vec::new();
        let peers = self.peers();
        for m in msgs {
            match peers.get(&m.to) {
                Some((_, tx)) => {
                    if let Err(e) = tx.try_send(m) {
                        failed.push(match e {
                            mpsc::error::TrySendError::Full(m) => m,
                            mpsc::error::TrySendError::Closed(m) => m,
                        });
                    }
                }
                None => failed.push(m),
            }
        }
        failed
    }
}

/// Accepts peer connections and feeds their messages to the node.
pub async fn serve(listener: TcpListener, id: u64, node: flume::Sender<Input>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(e) = read_connection(stream, id, node).await {
                        tracing::warn!(%addr, error = %e, "dropping peer connection");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_connection(
    stream: TcpStream,
    id: u64,
    node: flume::Sender<Input>,
) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    // A snapshot being received: its message and the data so far.
    let mut snapshot: Option<(Message, u64, BytesMut)> = None;
    loop {
        let mut header = [0u8; 8];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_FRAME {
            return Err(format!("frame length {len} out of range"));
        }
        let mut payload = BytesMut::zeroed(len);
        reader
            .read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        if crc32c::crc32c(&payload) != crc {
            return Err("frame checksum mismatch".into());
        }
        let mut payload = payload.freeze();
        let kind = payload[0];
        payload = payload.slice(1..);
        match kind {
            MESSAGES => {
                while !payload.is_empty() {
                    if payload.len() < 4 {
                        return Err("message length cut short".into());
                    }
                    let mlen = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]])
                        as usize;
                    if payload.len() < 4 + mlen {
                        return Err("message cut short".into());
                    }
                    let m = decode_message(&payload.slice(4..4 + mlen))?;
                    payload = payload.slice(4 + mlen..);
                    deliver(&node, id, m).await?;
                }
            }
            SNAP_HEAD => {
                if payload.len() < 8 {
                    return Err("snapshot header cut short".into());
                }
                let mut total = [0u8; 8];
                total.copy_from_slice(&payload[..8]);
                let total = u64::from_le_bytes(total);
                if total > MAX_SNAPSHOT {
                    return Err(format!("snapshot of {total} bytes exceeds the limit"));
                }
                let m = decode_message(&payload.slice(8..))?;
                if m.get_msg_type() != MessageType::MsgSnapshot {
                    return Err("snapshot header without a snapshot message".into());
                }
                snapshot = Some((m, total, BytesMut::new()));
            }
            SNAP_DATA => {
                let Some((_, total, data)) = snapshot.as_mut() else {
                    return Err("snapshot data without a header".into());
                };
                if data.len() as u64 + payload.len() as u64 > *total {
                    return Err("snapshot data longer than announced".into());
                }
                data.extend_from_slice(&payload);
            }
            k => return Err(format!("unknown frame kind {k}")),
        }
        if snapshot
            .as_ref()
            .is_some_and(|(_, total, data)| data.len() as u64 == *total)
        {
            if let Some((mut m, _, data)) = snapshot.take() {
                m.mut_snapshot().data = data.freeze();
                tracing::info!(
                    from = m.from,
                    index = m.get_snapshot().get_metadata().index,
                    "received snapshot"
                );
                deliver(&node, id, m).await?;
            }
        }
    }
}

fn decode_message(b: &Bytes) -> Result<Message, String> {
    Message::parse_from_carllerche_bytes(b).map_err(|e| format!("bad raft message: {e}"))
}

async fn deliver(node: &flume::Sender<Input>, id: u64, m: Message) -> Result<(), String> {
    if m.to != id {
        return Err(format!("message for node {} arrived at node {id}", m.to));
    }
    node.send_async(Input::Raft(Box::new(m)))
        .await
        .map_err(|_| "node stopped".to_string())
}

async fn run_peer(
    peer: u64,
    addr: String,
    mut rx: mpsc::Receiver<Message>,
    node: flume::Sender<Input>,
) {
    let mut backoff = Duration::from_millis(20);
    let mut was_connected = true;
    loop {
        let stream = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                if was_connected {
                    tracing::warn!(peer, %addr, error = %e, "cannot reach peer; retrying");
                    was_connected = false;
                }
                if rx.is_closed() {
                    return;
                }
                if !drop_queued(&mut rx, peer, &node) {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        backoff = Duration::from_millis(20);
        was_connected = true;
        tracing::info!(peer, %addr, "connected to peer");
        let mut writer = BufWriter::with_capacity(256 << 10, stream);
        loop {
            let Some(first) = rx.recv().await else {
                return; // peer removed
            };
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if let Err(e) = write_batch(&mut writer, &batch, peer, &node).await {
                tracing::warn!(peer, %addr, error = %e, "lost connection to peer");
                report(&node, Input::Unreachable(peer));
                for m in batch {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        report(
                            &node,
                            Input::SnapshotSent {
                                to: peer,
                                ok: false,
                            },
                        );
                    }
                }
                break;
            }
        }
    }
}

/// Drops what queued up while the peer was unreachable, telling raft. Returns false when the
/// peer was removed.
fn drop_queued(rx: &mut mpsc::Receiver<Message>, peer: u64, node: &flume::Sender<Input>) -> bool {
    let mut dropped = false;
    loop {
        match rx.try_recv() {
            Ok(m) => {
                dropped = true;
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    report(
                        node,
                        Input::SnapshotSent {
                            to: peer,
                            ok: false,
                        },
                    );
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    if dropped {
        report(node, Input::Unreachable(peer));
    }
    true
}

fn report(node: &flume::Sender<Input>, input: Input) {
    // Best effort: if the node's queue is full the report is dropped; raft copes with both
    // lost messages and missed reports.
    let _ = node.try_send(input);
}

async fn write_batch(
    w: &mut BufWriter<TcpStream>,
    batch: &[Message],
    peer: u64,
    node: &flume::Sender<Input>,
) -> std::io::Result<()> {
    let mut frame = BytesMut::new();
    for m in batch {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            flush_messages(w, &mut frame).await?;
            write_snapshot(w, m).await?;
            report(node, Input::SnapshotSent { to: peer, ok: true });
            continue;
        }
        if frame.is_empty() {
            frame.put_u8(MESSAGES);
        }
        let bytes = m.write_to_bytes().map_err(std::io::Error::other)?;
        frame.put_u32_le(bytes.len() as u32);
        frame.put_slice(&bytes);
        if frame.len() >= BATCH_BYTES {
            flush_messages(w, &mut frame).await?;
        }
    }
    flush_messages(w, &mut frame).await?;
    w.flush().await
}

async fn flush_messages(w: &mut BufWriter<TcpStream>, frame: &mut BytesMut) -> std::io::Result<()> {
    if frame.is_empty() {
        return Ok(());
    }
    write_frame(w, &[frame]).await?;
    frame.clear();
    Ok(())
}

async fn write_frame(w: &mut BufWriter<TcpStream>, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut crc = 0;
    for p in parts {
        crc = crc32c::crc32c_append(crc, p);
    }
    w.write_all(&(len as u32).to_le_bytes()).await?;
    w.write_all(&crc.to_le_bytes()).await?;
    for p in parts {
        w.write_all(p).await?;
    }
    Ok(())
}

async fn write_snapshot(w: &mut BufWriter<TcpStream>, m: &Message) -> std::io::Result<()> {
    let data = m.get_snapshot().data.clone();
    let mut head_msg = m.clone();
    head_msg.mut_snapshot().data = Bytes::new();
    let head = head_msg.write_to_bytes().map_err(std::io::Error::other)?;
    let mut prefix = Vec::with_capacity(9);
    prefix.push(SNAP_HEAD);
    prefix.extend_from_slice(&(data.len() as u64).to_le_bytes());
    write_frame(w, &[&prefix, &head]).await?;
    for chunk in data.chunks(SNAPSHOT_CHUNK) {
        write_frame(w, &[&[SNAP_DATA], chunk]).await?;
    }
    w.flush().await?;
    tracing::info!(
        to = m.to,
        index = m.get_snapshot().get_metadata().index,
        bytes = data.len(),
        "sent snapshot"
    );
    Ok(())
}
