//! Outbound: one connection per peer, owned by that peer's task, written directly by senders
//! while it is idle (see the module doc of [`super`]).
//!
//! The task connects (with peer TLS: completes the handshake and checks that the peer's
//! certificate names the member this node means to reach), sends the hello (this node's id,
//! the peer's id, this data directory's identity) as the first frame, and only then lets
//! senders write. The peer sends nothing back on this connection but, once, a REMOVED answer
//! (it applied this node's removal), so the task also watches it for reads: end of stream
//! means the peer hung up (for instance it refused the hello), and the task reconnects.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use coordinate_tls::peer::PeerTls;
use raft::eraftpb::Message;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::frame::{self, Frame, REMOVED_LEN, SNAP_DATA};
use super::link::Link;
use super::{NodeQueue, TransportEvent};
use super::{BATCH_BYTES, HELLO_TIMEOUT, PEER_BUFFER, SNAPSHOT_CHUNK, SNAPSHOT_QUEUE};

/// A connection the peer closes sooner than this after the hello counts as refused.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One peer: where it is, what waits to be written to it, and how to wake its task.
pub(super) struct Peer {
    pub(super) addr: String,
    out: Mutex<Outbox>,
    /// Wakes the task: the outbox has work, a write failed, or the peer was removed.
    wake: Notify,
    closed: AtomicBool,
    /// The connection is up and the hello was sent.
    connected: AtomicBool,
}

#[derive(Default)]
pub(super) struct Outbox {
    /// The connection, while it is up and no snapshot is streaming: senders may write to it.
    stream: Option<Arc<Link>>,
    /// Encoded frames not yet written; they go before anything newer.
    pending: BytesMut,
    /// Snapshots for the task to stream, each after the frames that were pending when it was
    /// queued (so messages sent after a snapshot arrive after it).
    snapshots: VecDeque<(BytesMut, Message)>,
    /// A sender's write failed: the task must reconnect.
    broken: bool,
}

impl Peer {
    pub(super) fn new(addr: String) -> Peer {
        Peer {
            addr,
            out: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
        }
    }

    /// True while the connection is up and the hello has been sent.
    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

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
                match stream.write_now(frames) {
                    Ok(n) if n == frames.len() && !stream.has_backlog() => return Ok(()),
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
    pub(super) fn push_messages(&self, msgs: Vec<Message>, failed: &mut Vec<Message>) {
        if !frame::encode_messages(&msgs, BATCH_BYTES)
            .is_ok_and(|frames| self.push(&frames).is_ok())
        {
            failed.extend(msgs);
        }
    }

    /// Queues a snapshot for the task; senders buffer until it has been streamed. Hands the
    /// message back if too many are queued.
    pub(super) fn queue_snapshot(&self, m: Message) -> Option<Message> {
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

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.connected.store(false, Ordering::Release);
        self.outbox().stream = None;
        self.wake.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The peer's task: connects, says hello, flushes the outbox, streams snapshots, reconnects
/// after errors, until the peer is removed. `hello` is the encoded HELLO frame.
pub(super) async fn run_peer<E: NodeQueue>(
    id: u64,
    peer: Arc<Peer>,
    node: flume::Sender<E>,
    hello: Vec<u8>,
    tls: Option<Arc<PeerTls>>,
) {
    let mut backoff = Duration::from_millis(20);
    let mut was_connected = true;
    let mut refused = false;
    while !peer.is_closed() {
        let stream = match connect(&peer.addr, &hello, tls.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                if was_connected {
                    tracing::warn!(peer = id, addr = %peer.addr, error = %e, "cannot reach peer; retrying");
                    was_connected = false;
                }
                discard(id, &peer, &node);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !was_connected && !refused {
            tracing::info!(peer = id, addr = %peer.addr, "connected to peer");
        }
        was_connected = true;
        peer.outbox().broken = false;
        peer.connected.store(!peer.is_closed(), Ordering::Release);
        let stream = Arc::new(stream);
        let since = Instant::now();
        let result = serve_connection(id, &peer, &stream, &node).await;
        peer.connected.store(false, Ordering::Release);
        peer.outbox().stream = None;
        let Err(e) = result else { continue };
        discard(id, &peer, &node);
        if since.elapsed() < REFUSED_WITHIN {
            // Hung up right after the hello: most likely the peer refuses this node (its log
            // says why). Say so once, and keep backing off instead of hammering it.
            if !refused {
                tracing::warn!(peer = id, addr = %peer.addr, error = %e, "peer closes the connection right after the hello; it may refuse this node (see its log); retrying");
                refused = true;
            }
        } else {
            tracing::warn!(peer = id, addr = %peer.addr, error = %e, "lost connection to peer");
            backoff = Duration::from_millis(20);
            refused = false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects (under TLS if configured, checking the peer's certificate) and sends the hello.
async fn connect(addr: &str, hello: &[u8], tls: Option<&PeerTls>) -> io::Result<Link> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let link = match tls {
        None => Link::plain(tcp),
        Some(tls) => {
            let name = coordinate_tls::server_name(addr)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let handshake = tls.connector().connect(name, tcp);
            let stream = tokio::time::timeout(HELLO_TIMEOUT, handshake)
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            let (tcp, session) = stream.into_inner();
            let cert = session.peer_certificates().and_then(|c| c.first());
            tls.check_member(cert, &format!("https://{addr}"))
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
            Link::tls(tcp, session)
        }
    };
    link.write_all(hello).await?;
    Ok(link)
}

/// Serves one connection until it fails, the peer hangs up, or the peer is removed.
async fn serve_connection<E: NodeQueue>(
    id: u64,
    peer: &Peer,
    stream: &Arc<Link>,
    node: &flume::Sender<E>,
) -> io::Result<()> {
    let mut answer = Vec::new();
    loop {
        flush(id, peer, stream, node).await?;
        tokio::select! {
            () = peer.wake.notified() => {}
            ready = stream.readable() => {
                ready?;
                // What arrived is looked at even if the peer hung up right after it.
                let read = stream.read_now(&mut answer);
                check_answer(id, &answer, node)?;
                read?;
            }
        }
        if peer.is_closed() {
            return Ok(());
        }
    }
}

/// What the peer sent back so far: nothing, part of a REMOVED answer, or a whole one (reported
/// to the node). Anything else breaks the protocol and ends the connection.
fn check_answer<E: NodeQueue>(id: u64, answer: &[u8], node: &flume::Sender<E>) -> io::Result<()> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    match frame::decode(answer, REMOVED_LEN) {
        Ok(None) => Ok(()),
        Ok(Some((Frame::Removed { from, to }, _))) if from == id => {
            report(node, TransportEvent::RemovedBy { member: from, to });
            Ok(())
        }
        Ok(Some(_)) => Err(bad("the peer wrote on an outbound connection".into())),
        Err(e) => Err(bad(format!(
            "the peer wrote on an outbound connection: {e}"
        ))),
    }
}

/// Writes everything queued in the outbox — frames and snapshots, in order — waiting for the
/// socket as needed, then lets senders write directly again. Senders append to the outbox
/// meanwhile (it is not empty, or the connection is not published), so order holds.
async fn flush<E: NodeQueue>(
    id: u64,
    peer: &Peer,
    stream: &Arc<Link>,
    node: &flume::Sender<E>,
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
                    let n = stream.write_now(&out.pending)?;
                    out.pending.advance(n);
                    if out.pending.is_empty() && !stream.has_backlog() {
                        out.stream = Some(stream.clone());
                        return Ok(());
                    }
                    None
                }
            }
        };
        match snapshot {
            Some((before, m)) => {
                stream.write_all(&before).await?;
                let sent = write_snapshot(stream, &m).await;
                report(
                    node,
                    TransportEvent::SnapshotSent {
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
fn discard<E: NodeQueue>(id: u64, peer: &Peer, node: &flume::Sender<E>) {
    let (dropped, snapshots) = {
        let mut out = peer.outbox();
        let dropped = !out.pending.is_empty() || out.broken;
        out.pending.clear();
        out.broken = false;
        (dropped, std::mem::take(&mut out.snapshots))
    };
    if dropped {
        report(node, TransportEvent::Unreachable(id));
    }
    for _ in snapshots {
        report(node, TransportEvent::SnapshotSent { to: id, ok: false });
    }
}

fn report<E: NodeQueue>(node: &flume::Sender<E>, event: TransportEvent) {
    // Best effort: if the node's queue is full the report is dropped; raft copes with both
    // lost messages and missed reports.
    let _ = node.try_send(E::from(event));
}

async fn write_frame(stream: &Link, parts: &[&[u8]]) -> io::Result<()> {
    stream.write_all(&frame::header(parts)).await?;
    for p in parts {
        stream.write_all(p).await?;
    }
    Ok(())
}

async fn write_snapshot(stream: &Link, m: &Message) -> io::Result<()> {
    let data = m.get_snapshot().data.clone();
    let head = frame::snap_head_payload(m, &data).map_err(io::Error::other)?;
    write_frame(stream, &[&head]).await?;
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
