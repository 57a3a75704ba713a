//! Peer transport: raft messages between nodes over plain TCP, one long-lived connection per
//! peer in each direction.
//!
//! # Outbound
//! The thread that produced a message writes it: [`Transport::send`] encodes the messages for a
//! peer into one frame and writes it straight into that peer's socket with a non-blocking
//! `try_write`, from the raft loop (appends, heartbeats) or the log writer (acknowledgements
//! after an fsync). A message thus goes out without a hand-off to another thread: on a busy
//! machine each hand-off means waiting for a core, and a request crosses the network up to four
//! times. Nothing ever blocks the caller: what the socket does not take at once goes into the
//! peer's outbox, and the peer's task writes it when the socket drains. Frames are never
//! interleaved: a sender writes directly only while the outbox is empty.
//!
//! Each peer has a task that owns the connection's lifecycle: it connects, reconnects with
//! exponential backoff after an error (dropping what was buffered and reporting the peer
//! unreachable, so raft stops pipelining to it and retransmits later), flushes the outbox, and
//! streams snapshots, during which senders only buffer. An outbox over [`PEER_BUFFER`] bytes
//! refuses new messages (reported unreachable, as a dropped message is).
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

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::raft::node::Input;

/// Largest frame accepted from a peer.
pub const MAX_FRAME: usize = 32 << 20;
/// Largest snapshot accepted from a peer.
pub const MAX_SNAPSHOT: u64 = 8 << 30;
/// Size of one snapshot data frame.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Bytes of encoded messages a peer's outbox holds before new ones are refused.
pub const PEER_BUFFER: usize = 64 << 20;
/// Snapshots queued per peer before new ones are refused.
const SNAPSHOT_QUEUE: usize = 4;
/// A frame of messages is cut once it holds this many bytes.
const BATCH_BYTES: usize = 4 << 20;

const MESSAGES: u8 = 1;
const SNAP_HEAD: u8 = 2;
const SNAP_DATA: u8 = 3;

/// Handle used by the raft loop and the log writer to send messages to peers.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: tokio::runtime::Handle,
    node: flume::Sender<Input>,
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
}

/// One peer: where it is, what waits to be written to it, and how to wake its task.
struct Peer {
    addr: String,
    out: Mutex<Outbox>,
    /// Wakes the task: the outbox has work, a write failed, or the peer was removed.
    wake: Notify,
    closed: AtomicBool,
    /// The outbound connection is up (for strict reconfiguration checks).
    connected: AtomicBool,
}

#[derive(Default)]
struct Outbox {
    /// The connection, while it is up and no snapshot is streaming: senders may write to it.
    stream: Option<Arc<TcpStream>>,
    /// Encoded frames not yet written; they go before anything newer.
    pending: BytesMut,
    /// Snapshots for the task to stream, each after the frames that were pending when it was
    /// queued (so messages sent after a snapshot arrive after it).
    snapshots: VecDeque<(BytesMut, Message)>,
    /// A sender's write failed: the task must reconnect.
    broken: bool,
}

impl Peer {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // Held only around non-blocking writes; a poisoned lock still holds usable state.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `frames` now if the connection is up and nothing waits before them, else
    /// buffers them for the task. Fails if the outbox is full or the connection just broke.
    fn push(&self, frames: &[u8]) -> Result<(), ()> {
        let mut out = self.outbox();
        if out.pending.len() + frames.len() > PEER_BUFFER {
            return Err(());
        }
        let mut written = 0;
        if out.pending.is_empty() {
            if let Some(stream) = &out.stream {
                match write_now(stream, frames) {
                    Ok(n) if n == frames.len() => return Ok(()),
                    Ok(n) => written = n,
                    Err(_) => {
                        out.stream = None;
                        out.pending.clear();
                        out.broken = true;
                        drop(out);
                        self.wake.notify_one();
                        return Err(());
                    }
                }
            }
        }
        out.pending.extend_from_slice(&frames[written..]);
        drop(out);
        self.wake.notify_one();
        Ok(())
    }

    /// [`Peer::push`] of `msgs` as frames; adds them to `failed` if they could not be sent.
    fn push_messages(&self, msgs: Vec<Message>, failed: &mut Vec<Message>) {
        if !encode_messages(&msgs).is_ok_and(|frames| self.push(&frames).is_ok()) {
            failed.extend(msgs);
        }
    }

    /// Queues a snapshot for the task; senders buffer until it has been streamed. Hands the
    /// message back if too many are queued.
    fn queue_snapshot(&self, m: Message) -> Option<Message> {
        let mut out = self.outbox();
        if out.snapshots.len() >= SNAPSHOT_QUEUE {
            return Some(m);
        }
        let before = std::mem::take(&mut out.pending);
        out.snapshots.push_back((before, m));
        out.stream = None;
        drop(out);
        self.wake.notify_one();
        None
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.outbox().stream = None;
        self.wake.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
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
    pub fn add_peer(&self, id: u64, addr: String) {
        let mut peers = self.peers();
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let peer = Arc::new(Peer {
            addr,
            out: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
        });
        self.inner
            .runtime
            .spawn(run_peer(id, peer.clone(), self.inner.node.clone()));
        if let Some(old) = peers.insert(id, peer) {
            old.close();
        }
    }

    /// Makes the set of peers exactly `wanted` (id → host:port): starts new ones, restarts
    /// moved ones, stops removed ones.
    pub fn set_peers(&self, wanted: HashMap<u64, String>) {
        self.peers().retain(|id, peer| {
            let keep = wanted.contains_key(id);
            if !keep {
                peer.close();
            }
            keep
        });
        for (id, addr) in wanted {
            self.add_peer(id, addr);
        }
    }

    /// True while the outbound connection to peer `id` is up.
    pub fn is_connected(&self, id: u64) -> bool {
        self.peers()
            .get(&id)
            .is_some_and(|p| p.connected.load(Ordering::Acquire))
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<u64, Arc<Peer>>> {
        // The map is only touched briefly; a poisoned lock still holds a usable map.
        self.inner.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends messages without blocking: written to the peers' sockets now, or buffered for
    /// their tasks. Returns the messages that could not be sent (peer unknown, outbox full,
    /// connection broken) so the caller can report them to raft.
    pub fn send(&self, msgs: Vec<Message>) -> Vec<Message> {
        let mut failed = Vec::new();
        // Per peer, in order: its messages (snapshots go to the task, which streams them).
        let mut batches: Vec<(Arc<Peer>, Vec<Message>)> = Vec::new();
        {
            let peers = self.peers();
            for m in msgs {
                let Some(peer) = peers.get(&m.to) else {
                    failed.push(m);
                    continue;
                };
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    // Whatever was batched for this peer goes before the snapshot.
                    if let Some(i) = batches.iter().position(|(p, _)| Arc::ptr_eq(p, peer)) {
                        let (p, batch) = batches.swap_remove(i);
                        p.push_messages(batch, &mut failed);
                    }
                    if let Some(m) = peer.queue_snapshot(m) {
                        failed.push(m);
                    }
                    continue;
                }
                match batches.iter_mut().find(|(p, _)| Arc::ptr_eq(p, peer)) {
                    Some((_, batch)) => batch.push(m),
                    None => batches.push((peer.clone(), vec![m])),
                }
            }
        }
        for (peer, batch) in batches {
            peer.push_messages(batch, &mut failed);
        }
        failed
    }
}

/// Encodes messages as MESSAGES frames (cut at [`BATCH_BYTES`]), headers included. Each
/// message is encoded in place, not copied.
fn encode_messages(msgs: &[Message]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut frame_start = None;
    for m in msgs {
        let start = match frame_start {
            Some(start) => start,
            None => {
                let start = out.len();
                out.extend_from_slice(&[0; 8]); // length and CRC, filled in below
                out.push(MESSAGES);
                frame_start = Some(start);
                start
            }
        };
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        m.write_to_vec(&mut out).map_err(io::Error::other)?;
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        if out.len() - start >= BATCH_BYTES {
            seal_frame(&mut out, start);
            frame_start = None;
        }
    }
    if let Some(start) = frame_start {
        seal_frame(&mut out, start);
    }
    Ok(out)
}

/// Fills in the length and CRC of the frame starting at `start` (it runs to the end of `out`).
fn seal_frame(out: &mut [u8], start: usize) {
    let payload = &out[start + 8..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc);
}

/// Writes as much of `buf` as the socket takes without blocking.
fn write_now(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < buf.len() {
        match stream.try_write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Writes all of `buf`, waiting for the socket to drain as needed.
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        let n = write_now(stream, buf)?;
        buf = &buf[n..];
    }
    Ok(())
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

/// The peer's task: connects, flushes the outbox, streams snapshots, reconnects after errors,
/// until the peer is removed.
async fn run_peer(id: u64, peer: Arc<Peer>, node: flume::Sender<Input>) {
    let mut backoff = Duration::from_millis(20);
    let mut was_connected = true;
    while !peer.is_closed() {
        let stream = match TcpStream::connect(&peer.addr).await {
            Ok(s) => s,
            Err(e) => {
                if was_connected {
                    tracing::warn!(peer = id, addr = %peer.addr, error = %e, "cannot reach peer; retrying");
                    was_connected = false;
                }
                discard(id, &peer, &node);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        backoff = Duration::from_millis(20);
        was_connected = true;
        tracing::info!(peer = id, addr = %peer.addr, "connected to peer");
        peer.outbox().broken = false;
        let stream = Arc::new(stream);
        peer.connected.store(true, Ordering::Release);
        let result = serve_connection(id, &peer, &stream, &node).await;
        peer.connected.store(false, Ordering::Release);
        peer.outbox().stream = None;
        if let Err(e) = result {
            tracing::warn!(peer = id, addr = %peer.addr, error = %e, "lost connection to peer");
            discard(id, &peer, &node);
        }
    }
}

/// Serves one connection until it fails or the peer is removed.
async fn serve_connection(
    id: u64,
    peer: &Peer,
    stream: &Arc<TcpStream>,
    node: &flume::Sender<Input>,
) -> io::Result<()> {
    loop {
        flush(id, peer, stream, node).await?;
        // Peers never write on a connection they accepted: readable means the peer closed it
        // (or it broke), which an idle connection would otherwise notice only at its next write.
        tokio::select! {
            () = peer.wake.notified() => {}
            ready = stream.readable() => {
                ready?;
                let mut probe = [0u8; 1];
                match stream.try_read(&mut probe) {
                    Ok(_) => return Err(io::Error::other("the peer closed the connection")),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if peer.is_closed() {
            return Ok(());
        }
    }
}

/// Writes everything queued in the outbox — frames and snapshots, in order — waiting for the
/// socket as needed, then lets senders write directly again. Senders append to the outbox
/// meanwhile (it is not empty, or the connection is not published), so order holds.
async fn flush(
    id: u64,
    peer: &Peer,
    stream: &Arc<TcpStream>,
    node: &flume::Sender<Input>,
) -> io::Result<()> {
    loop {
        let snapshot = {
            let mut out = peer.outbox();
            if out.broken {
                return Err(io::Error::other("a write to the peer failed"));
            }
            match out.snapshots.pop_front() {
                Some(next) => Some(next),
                None => {
                    let n = write_now(stream, &out.pending)?;
                    out.pending.advance(n);
                    if out.pending.is_empty() {
                        out.stream = Some(stream.clone());
                        return Ok(());
                    }
                    None
                }
            }
        };
        match snapshot {
            Some((before, m)) => {
                write_all(stream, &before).await?;
                let sent = write_snapshot(stream, &m).await;
                report(
                    node,
                    Input::SnapshotSent {
                        to: id,
                        ok: sent.is_ok(),
                    },
                );
                sent?;
            }
            None => stream.writable().await?,
        }
    }
}

/// Drops what was queued for an unreachable peer, telling raft.
fn discard(id: u64, peer: &Peer, node: &flume::Sender<Input>) {
    let (dropped, snapshots) = {
        let mut out = peer.outbox();
        let dropped = !out.pending.is_empty() || out.broken;
        out.pending.clear();
        out.broken = false;
        (dropped, std::mem::take(&mut out.snapshots))
    };
    if dropped {
        report(node, Input::Unreachable(id));
    }
    for _ in snapshots {
        report(node, Input::SnapshotSent { to: id, ok: false });
    }
}

fn report(node: &flume::Sender<Input>, input: Input) {
    // Best effort: if the node's queue is full the report is dropped; raft copes with both
    // lost messages and missed reports.
    let _ = node.try_send(input);
}

async fn write_frame(stream: &TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut crc = 0;
    for p in parts {
        crc = crc32c::crc32c_append(crc, p);
    }
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc.to_le_bytes());
    write_all(stream, &header).await?;
    for p in parts {
        write_all(stream, p).await?;
    }
    Ok(())
}

async fn write_snapshot(stream: &TcpStream, m: &Message) -> io::Result<()> {
    let data = m.get_snapshot().data.clone();
    let mut head_msg = m.clone();
    head_msg.mut_snapshot().data = Bytes::new();
    let head = head_msg.write_to_bytes().map_err(io::Error::other)?;
    let mut prefix = Vec::with_capacity(9);
    prefix.push(SNAP_HEAD);
    prefix.extend_from_slice(&(data.len() as u64).to_le_bytes());
    write_frame(stream, &[&prefix, &head]).await?;
    for chunk in data.chunks(SNAPSHOT_CHUNK) {
        write_frame(stream, &[&[SNAP_DATA], chunk]).await?;
    }
    tracing::info!(
        to = m.to,
        index = m.get_snapshot().get_metadata().index,
        bytes = data.len(),
        "sent snapshot"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn append(to: u64, index: u64, size: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = to;
        m.from = 2;
        m.index = index;
        m.mut_entries().push(Entry {
            index,
            data: vec![(index % 251) as u8; size].into(),
            ..Default::default()
        });
        m
    }

    fn snapshot(to: u64, index: u64, size: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = to;
        m.from = 2;
        let snap = m.mut_snapshot();
        snap.mut_metadata().index = index;
        snap.data = vec![7u8; size].into();
        m
    }

    /// Node 1 listening on a fresh port; returns its address and what it receives.
    fn receiver(rt: &tokio::runtime::Runtime) -> (String, flume::Receiver<Input>) {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (tx, rx) = flume::unbounded();
        rt.spawn(serve(listener, 1, tx));
        (addr, rx)
    }

    fn next_message(rx: &flume::Receiver<Input>) -> Message {
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Input::Raft(m)) => return *m,
                Ok(_) => continue,
                Err(e) => panic!("no message: {e}"),
            }
        }
    }

    /// More than a socket buffer holds, sent at once from a thread outside the runtime (as the
    /// raft loop does): part is written directly, the rest by the peer's task, all in order.
    #[test]
    fn a_burst_larger_than_the_socket_buffer_arrives_whole_and_in_order() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (addr, rx) = receiver(&rt);
        let (node, _reports) = flume::unbounded();
        let t = Transport::new(2, &HashMap::from([(1, addr)]), node, rt.handle().clone());
        // The first send may find no connection yet: retry until one is delivered.
        let mut first = None;
        for _ in 0..200 {
            if t.send(vec![append(1, 0, 10)]).is_empty() {
                if let Ok(Input::Raft(m)) = rx.recv_timeout(Duration::from_millis(50)) {
                    first = Some(m);
                    break;
                }
            }
        }
        assert!(first.is_some(), "never connected");
        let burst: Vec<Message> = (1..=400).map(|i| append(1, i, 64 << 10)).collect();
        assert!(t.send(burst).is_empty());
        for i in 1..=400 {
            let m = next_message(&rx);
            assert_eq!(m.index, i);
            assert_eq!(m.get_entries()[0].data.len(), 64 << 10);
            assert!(m.get_entries()[0]
                .data
                .iter()
                .all(|&b| b == (i % 251) as u8));
        }
    }

    /// A snapshot is streamed by the task while senders keep sending: everything arrives, the
    /// snapshot whole, and messages sent after it arrive after it.
    #[test]
    fn messages_sent_during_a_snapshot_follow_it() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (addr, rx) = receiver(&rt);
        let (node, reports) = flume::unbounded();
        let t = Transport::new(2, &HashMap::from([(1, addr)]), node, rt.handle().clone());
        for _ in 0..200 {
            if t.send(vec![append(1, 0, 10)]).is_empty()
                && matches!(
                    rx.recv_timeout(Duration::from_millis(50)),
                    Ok(Input::Raft(_))
                )
            {
                break;
            }
        }
        let size = 5 * SNAPSHOT_CHUNK + 123;
        // In one call: a message, the snapshot, more messages; then more in another call.
        let mut first: Vec<Message> = vec![append(1, 98, 1000), snapshot(1, 99, size)];
        first.extend((100..=120).map(|i| append(1, i, 1000)));
        assert!(t.send(first).is_empty());
        let after: Vec<Message> = (121..=150).map(|i| append(1, i, 1000)).collect();
        assert!(t.send(after).is_empty());
        assert_eq!(next_message(&rx).index, 98);
        let m = next_message(&rx);
        assert_eq!(m.get_msg_type(), MessageType::MsgSnapshot);
        assert_eq!(m.get_snapshot().data.len(), size);
        for i in 100..=150 {
            assert_eq!(next_message(&rx).index, i);
        }
        let sent = loop {
            match reports.recv_timeout(Duration::from_secs(10)) {
                Ok(Input::SnapshotSent { to: 1, ok }) => break ok,
                Ok(_) => continue,
                Err(e) => panic!("no snapshot report: {e}"),
            }
        };
        assert!(sent);
    }

    /// Sending to a peer that is down never blocks and never errors out of `send`: what is
    /// buffered is dropped and reported unreachable; once the peer is up, messages flow.
    #[test]
    fn a_peer_that_is_down_is_reported_unreachable_then_reached() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        // A port with nothing listening (bound, then released).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .to_string();
        let (node, reports) = flume::unbounded();
        let t = Transport::new(
            2,
            &HashMap::from([(1, addr.clone())]),
            node,
            rt.handle().clone(),
        );
        assert!(t.send(vec![append(1, 1, 10)]).is_empty());
        let unreachable = loop {
            match reports.recv_timeout(Duration::from_secs(10)) {
                Ok(Input::Unreachable(id)) => break id,
                Ok(_) => continue,
                Err(e) => panic!("no report: {e}"),
            }
        };
        assert_eq!(unreachable, 1);
        let listener = rt.block_on(TcpListener::bind(&addr)).expect("rebind");
        let (tx, rx) = flume::unbounded();
        rt.spawn(serve(listener, 1, tx));
        let mut delivered = false;
        for i in 2..400 {
            assert!(t.send(vec![append(1, i, 10)]).is_empty());
            if let Ok(Input::Raft(m)) = rx.recv_timeout(Duration::from_millis(50)) {
                assert!(m.index >= 2);
                delivered = true;
                break;
            }
        }
        assert!(delivered, "never reached the peer once it was up");
    }
}
