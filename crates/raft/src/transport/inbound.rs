//! Inbound: accepting peer connections, checking who they are, and handing their messages to
//! the node, with every resource bounded.
//!
//! # Rules, in the order they are checked
//! 1. At most [`MAX_PEER_CONNECTIONS`] connections are open on the peer port; one more is
//!    closed at once.
//! 2. With peer TLS, the handshake must complete with a client certificate the peer CA signed.
//! 3. The first frame must be a valid HELLO (at most [`frame::HELLO_FRAME`] bytes: nothing
//!    bigger is read before it), handshake included within [`HELLO_TIMEOUT`], addressed to this
//!    node, from one of the transport's current peers (a hello from a removed member is
//!    answered with REMOVED, so it learns it), whose certificate (with peer TLS) names that
//!    peer's URL, presenting the data-dir identity this node remembers for that peer, or any
//!    identity if it remembers none (it is then remembered, durably, before any message is
//!    read).
//! 4. One connection per peer: a newer hello from the same peer closes the older connection.
//!    A peer removed from the transport's set loses its connection.
//! 5. Every message must be from the hello's peer to this node; snapshots only come as
//!    SNAP_HEAD + SNAP_DATA, one at a time per connection, at most [`frame::MAX_SNAPSHOT`]
//!    bytes, streamed to `<incoming_dir>/incoming-<from>-<n>.tmp` and checked against the
//!    announced length and CRC (again after reading the file back) before the node sees them.
//!    A broken stream deletes its file.
//!
//! # Memory
//! All connections share one budget of [`INBOUND_BUFFER_BYTES`]: a frame's bytes are taken
//! from it (waiting if need be) after its header is read and before its buffer is allocated,
//! and given back once its messages were handed to the node or its chunk written to disk.
//! Once a frame's header has arrived its body must arrive within [`FRAME_TIMEOUT`], so a
//! stalled sender cannot sit on the budget. Each connection also holds a read buffer of
//! [`READ_BUFFER`] bytes. Not covered: the node's own input queue, which holds decoded
//! messages by count, and a received snapshot, which is read back into memory whole (at most
//! [`frame::MAX_SNAPSHOT`]) because the node takes snapshots as bytes.
//!
//! Any breach drops the connection and logs why, at most once a minute per address and kind
//! of breach (a flood of garbage costs no log space).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use coordinate_tls::rustls::pki_types::CertificateDer;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::frame::{self, Frame, FrameError, Hello, HEADER_LEN, HELLO_FRAME, MAX_FRAME};
use super::{Inner, NodeQueue, Transport, TransportEvent};
use crate::storage::identity::Verdict;

/// Bytes of frames all inbound connections together may hold in memory.
pub const INBOUND_BUFFER_BYTES: usize = 64 << 20;
/// Connections open on the peer port at once (authenticated or not).
pub const MAX_PEER_CONNECTIONS: usize = 64;
/// Time a new connection has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a frame's body has to arrive once its header did. Generous: an honest 32 MiB frame
/// needs about 1 MB/s.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer of each connection.
const READ_BUFFER: usize = 64 << 10;
/// Pause after a failed accept (for instance EMFILE), so a full fd table is not spun on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A kind of log line is written at most this often per key.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Keys the log limiter remembers before it starts afresh.
const LOG_KEYS: usize = 4096;
/// Name prefix of incoming snapshot files.
const INCOMING_PREFIX: &str = "incoming-";

/// Why an inbound connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no hello within {HELLO_TIMEOUT:?}")]
    NoHello,
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("hello from node {id}, but its certificate does not prove it: {reason}")]
    Certificate { id: u64, reason: String },
    #[error("hello from node {0}, which was removed from the cluster (told so)")]
    Removed(u64),
    #[error("the first frame is not a hello")]
    NotHello,
    #[error("hello addressed to node {to}, but this is node {own}")]
    WrongNode { to: u64, own: u64 },
    #[error("hello from node {0}, which is not a peer of this node")]
    NotPeer(u64),
    #[error(
        "peer {id} presents data-dir identity {presented:016x} but this cluster knows node {id} \
         as {known:016x}: its data directory was lost or replaced; remove it (DELETE /{id}) and \
         add it back (POST /{id}) to let it rejoin empty"
    )]
    Identity { id: u64, presented: u64, known: u64 },
    #[error("a second hello")]
    SecondHello,
    #[error("a removal answer on an inbound connection")]
    Answer,
    #[error("a message from node {from} to node {to} on the connection of peer {peer}")]
    Misaddressed { from: u64, to: u64, peer: u64 },
    #[error("a snapshot message outside a snapshot stream")]
    InlineSnapshot,
    #[error("a frame's body did not arrive within {FRAME_TIMEOUT:?} of its header")]
    Stalled,
    #[error("a snapshot header while a snapshot is streaming")]
    SnapshotOverlap,
    #[error("snapshot data without a snapshot header")]
    SnapshotDataAlone,
    #[error("snapshot data longer than announced")]
    SnapshotTooLong,
    #[error("snapshot data does not match the announced checksum")]
    SnapshotChecksum,
    #[error("replaced by a newer connection from the same peer")]
    Replaced,
    #[error("the node stopped")]
    NodeStopped,
}

impl Refusal {
    /// A short name for the log limiter.
    fn kind(&self) -> &'static str {
        match self {
            Refusal::Frame(_) => "frame",
            Refusal::Io(_) => "io",
            Refusal::NoHello | Refusal::NotHello => "hello",
            Refusal::Handshake(_) => "tls",
            Refusal::Certificate { .. } => "certificate",
            Refusal::WrongNode { .. } | Refusal::NotPeer(_) | Refusal::Removed(_) => "who",
            Refusal::Identity { .. } => "identity",
            Refusal::SecondHello
            | Refusal::Answer
            | Refusal::Misaddressed { .. }
            | Refusal::InlineSnapshot => "message",
            Refusal::Stalled => "stalled",
            Refusal::SnapshotOverlap
            | Refusal::SnapshotDataAlone
            | Refusal::SnapshotTooLong
            | Refusal::SnapshotChecksum => "snapshot",
            Refusal::Replaced => "replaced",
            Refusal::NodeStopped => "stopped",
        }
    }
}

/// Inbound state shared by all connections.
pub(super) struct Inbound {
    budget: Arc<Semaphore>,
    open: AtomicUsize,
    /// The live connection of each peer: its serial and what closes it (dropping the sender).
    live: Mutex<HashMap<u64, (u64, oneshot::Sender<()>)>>,
    serial: AtomicU64,
    logs: LogLimiter,
}

impl Inbound {
    pub(super) fn new() -> Inbound {
        Inbound {
            budget: Arc::new(Semaphore::new(INBOUND_BUFFER_BYTES)),
            open: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            logs: LogLimiter::default(),
        }
    }

    pub(super) fn buffered_bytes(&self) -> usize {
        INBOUND_BUFFER_BYTES.saturating_sub(self.budget.available_permits())
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, (u64, oneshot::Sender<()>)>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes this connection peer `from`'s only one; its serial, and what tells it to close.
    fn register(&self, from: u64) -> (u64, oneshot::Receiver<()>) {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.live().insert(from, (serial, tx)).is_some()
            && self.logs.allow(format!("replaced-{from}"))
        {
            tracing::info!(
                peer = from,
                "a new connection from peer replaces its older one"
            );
        }
        (serial, rx)
    }

    fn unregister(&self, from: u64, serial: u64) {
        let mut live = self.live();
        if live.get(&from).is_some_and(|(s, _)| *s == serial) {
            live.remove(&from);
        }
    }

    /// Closes the connections of peers for which `keep` is false.
    pub(super) fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.live().retain(|&id, _| keep(id));
    }

    fn log_refusal(&self, addr: SocketAddr, e: &Refusal) {
        let key = match e {
            Refusal::Identity { id, .. } => format!("identity-{id}"),
            _ => format!("{}-{}", addr.ip(), e.kind()),
        };
        if !self.logs.allow(key) {
            return;
        }
        match e {
            Refusal::Identity { .. } => tracing::error!(%addr, "refusing peer: {e}"),
            Refusal::Replaced | Refusal::NodeStopped => {
                tracing::debug!(%addr, "peer connection closed: {e}")
            }
            _ => tracing::warn!(
                %addr,
                error = %e,
                "dropping peer connection (logged at most once a minute per address and reason)"
            ),
        }
    }
}

/// One open connection, counted against [`MAX_PEER_CONNECTIONS`] until dropped.
struct Slot<E>(Arc<Inner<E>>);

impl<E> Slot<E> {
    fn take(t: &Arc<Inner<E>>) -> Option<Slot<E>> {
        let open = &t.inbound.open;
        let mut n = open.load(Ordering::Relaxed);
        loop {
            if n >= MAX_PEER_CONNECTIONS {
                return None;
            }
            match open.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Slot(t.clone())),
                Err(now) => n = now,
            }
        }
    }
}

impl<E> Drop for Slot<E> {
    fn drop(&mut self) {
        self.0.inbound.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts peer connections and feeds their messages to the node. Never returns.
pub async fn serve<E: NodeQueue>(listener: TcpListener, transport: Transport<E>) {
    let t = transport.inner;
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let Some(slot) = Slot::take(&t) else {
                    if t.inbound.logs.allow(format!("cap-{}", addr.ip())) {
                        tracing::warn!(
                            %addr,
                            limit = MAX_PEER_CONNECTIONS,
                            "too many peer connections; closing a new one (logged at most once a minute per address)"
                        );
                    }
                    drop(stream);
                    continue;
                };
                tokio::spawn(async move {
                    let t = slot.0.clone();
                    if let Err(e) = connection(stream, &t).await {
                        t.inbound.log_refusal(addr, &e);
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                if t.inbound.logs.allow("accept".into()) {
                    tracing::warn!(error = %e, "accepting a peer connection failed; backing off");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one connection: the TLS handshake if configured, then the hello and its frames,
/// until it ends or breaks a rule.
async fn connection<E: NodeQueue>(stream: TcpStream, t: &Arc<Inner<E>>) -> Result<(), Refusal> {
    stream.set_nodelay(true)?;
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let Some(tls) = &t.tls else {
        return serve_stream(stream, None, deadline, t).await;
    };
    let stream = tokio::time::timeout_at(deadline, tls.acceptor().accept(stream))
        .await
        .map_err(|_| Refusal::NoHello)?
        .map_err(Refusal::Handshake)?;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned();
    serve_stream(stream, cert, deadline, t).await
}

/// Serves one connection after its handshake (`cert`: the certificate its client presented).
async fn serve_stream<S, E>(
    stream: S,
    cert: Option<CertificateDer<'static>>,
    deadline: tokio::time::Instant,
    t: &Arc<Inner<E>>,
) -> Result<(), Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: NodeQueue,
{
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let first = tokio::time::timeout_at(
        deadline,
        read_frame(&mut reader, &t.inbound.budget, HELLO_FRAME),
    )
    .await
    .map_err(|_| Refusal::NoHello)??;
    let hello = match first {
        None => return Ok(()),
        Some((Frame::Hello(h), _permit)) => h,
        Some(_) => return Err(Refusal::NotHello),
    };
    if let Err(refusal) = admit(t, &hello, cert.as_ref()).await {
        if let Refusal::Removed(id) = refusal {
            // Tell it, so it stops for good instead of campaigning alone forever. Best effort:
            // it hears it again at its next attempt.
            let answer = frame::encode_removed(t.id, id);
            let stream = reader.get_mut();
            let _ = tokio::time::timeout_at(deadline, async {
                stream.write_all(&answer).await?;
                stream.shutdown().await
            })
            .await;
        }
        return Err(refusal);
    }
    let (serial, mut replaced) = t.inbound.register(hello.from);
    let mut session = Session {
        peer: hello.from,
        serial,
        snapshot: None,
    };
    let result = tokio::select! {
        r = session.run(&mut reader, t) => r,
        _ = &mut replaced => Err(Refusal::Replaced),
    };
    t.inbound.unregister(hello.from, serial);
    result
}

/// Checks a hello against rule 3 (see the module doc), remembering a new peer's identity.
async fn admit<E: NodeQueue>(
    t: &Arc<Inner<E>>,
    h: &Hello,
    cert: Option<&CertificateDer<'static>>,
) -> Result<(), Refusal> {
    if h.to != t.id {
        return Err(Refusal::WrongNode {
            to: h.to,
            own: t.id,
        });
    }
    let addr = match t.peers().get(&h.from) {
        Some(peer) if h.from != t.id => peer.addr.clone(),
        _ if t.removed().contains(&h.from) => return Err(Refusal::Removed(h.from)),
        _ => return Err(Refusal::NotPeer(h.from)),
    };
    if let Some(tls) = &t.tls {
        let url = format!("https://{addr}");
        tls.check_member(cert, &url)
            .map_err(|reason| Refusal::Certificate { id: h.from, reason })?;
    }
    match t.known.check(h.from, h.identity) {
        Verdict::Known => Ok(()),
        Verdict::Mismatch { known } => Err(Refusal::Identity {
            id: h.from,
            presented: h.identity,
            known,
        }),
        Verdict::New => {
            if t.known.remember(h.from, h.identity) {
                let known = t.known.clone();
                let saved = tokio::task::spawn_blocking(move || known.save())
                    .await
                    .map_err(io::Error::other)?;
                match saved {
                    Ok(()) => tracing::info!(
                        peer = h.from,
                        identity = %format!("{:016x}", h.identity),
                        "remembered the data-dir identity of peer"
                    ),
                    // The check still holds for this process's lifetime.
                    Err(e) => tracing::error!(error = %e, "cannot save the known peer identities"),
                }
            }
            Ok(())
        }
    }
}

/// Reads one frame of at most `max` bytes, taking its size from `budget` before allocating.
/// `None` at the end of the stream.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    budget: &Arc<Semaphore>,
    max: usize,
) -> Result<Option<(Frame, OwnedSemaphorePermit)>, Refusal> {
    let mut head = [0u8; HEADER_LEN];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let h = frame::parse_header(&head, max.min(INBOUND_BUFFER_BYTES))?;
    let permits = u32::try_from(h.len).map_err(|_| FrameError::Length { len: h.len, max })?;
    let permit = budget
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(io::Error::other)?;
    let mut payload = BytesMut::zeroed(h.len);
    tokio::time::timeout(FRAME_TIMEOUT, reader.read_exact(&mut payload))
        .await
        .map_err(|_| Refusal::Stalled)??;
    Ok(Some((
        frame::decode_payload(payload.freeze(), h.crc)?,
        permit,
    )))
}

/// The frames of one accepted connection.
struct Session {
    peer: u64,
    serial: u64,
    snapshot: Option<IncomingSnapshot>,
}

impl Session {
    async fn run<R: AsyncRead + Unpin, E: NodeQueue>(
        &mut self,
        reader: &mut R,
        t: &Arc<Inner<E>>,
    ) -> Result<(), Refusal> {
        // Each frame's permit is held until the node has stepped every message in it (the
        // messages travel with a share of it), so the node's queue is inside the budget too.
        while let Some((frame, permit)) = read_frame(reader, &t.inbound.budget, MAX_FRAME).await? {
            let share = InboundShare {
                _permit: Some(Arc::new(permit)),
            };
            match frame {
                Frame::Hello(_) => return Err(Refusal::SecondHello),
                Frame::Removed { .. } => return Err(Refusal::Answer),
                Frame::Messages(msgs) => {
                    for m in msgs {
                        let m = m?;
                        self.check_addressed(t, &m)?;
                        if m.get_msg_type() == MessageType::MsgSnapshot {
                            return Err(Refusal::InlineSnapshot);
                        }
                        deliver(t, m, share.clone()).await?;
                    }
                }
                Frame::SnapHead {
                    total,
                    crc,
                    message,
                } => {
                    self.check_addressed(t, &message)?;
                    if self.snapshot.is_some() {
                        return Err(Refusal::SnapshotOverlap);
                    }
                    let path = t.incoming_dir.join(format!(
                        "{INCOMING_PREFIX}{}-{}.tmp",
                        self.peer, self.serial
                    ));
                    self.snapshot =
                        Some(IncomingSnapshot::create(path, total, crc, message).await?);
                }
                Frame::SnapData(data) => {
                    let s = self.snapshot.as_mut().ok_or(Refusal::SnapshotDataAlone)?;
                    s.write(data).await?;
                }
            }
            if self
                .snapshot
                .as_ref()
                .is_some_and(|s| s.received == s.total)
            {
                if let Some(s) = self.snapshot.take() {
                    let m = s.finish().await?;
                    tracing::info!(
                        from = m.from,
                        index = m.get_snapshot().get_metadata().index,
                        bytes = m.get_snapshot().data.len(),
                        "received snapshot"
                    );
                    // Read back from its file: outside the budget (bounded by MAX_SNAPSHOT).
                    deliver(t, m, InboundShare::default()).await?;
                }
            }
        }
        Ok(())
    }

    fn check_addressed<E>(&self, t: &Inner<E>, m: &Message) -> Result<(), Refusal> {
        if m.from != self.peer || m.to != t.id {
            return Err(Refusal::Misaddressed {
                from: m.from,
                to: m.to,
                peer: self.peer,
            });
        }
        Ok(())
    }
}

/// A message's share of the inbound budget: the frame it came in stays counted until the node
/// has stepped (and dropped) every message of it.
#[derive(Clone, Default)]
pub struct InboundShare {
    /// Released when the last message of its frame is dropped.
    _permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl std::fmt::Debug for InboundShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboundShare")
    }
}

async fn deliver<E: NodeQueue>(
    t: &Inner<E>,
    m: Message,
    share: InboundShare,
) -> Result<(), Refusal> {
    t.node
        .send_async(E::from(TransportEvent::Message(Box::new(m), share)))
        .await
        .map_err(|_| Refusal::NodeStopped)
}

/// Runs blocking file work off the event loop.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
}

/// A snapshot being streamed to its temp file; the file is deleted when this is dropped.
struct IncomingSnapshot {
    path: PathBuf,
    file: Option<std::fs::File>,
    total: u64,
    crc: u32,
    received: u64,
    running_crc: u32,
    message: Box<Message>,
}

impl IncomingSnapshot {
    async fn create(
        path: PathBuf,
        total: u64,
        crc: u32,
        message: Box<Message>,
    ) -> Result<IncomingSnapshot, Refusal> {
        let p = path.clone();
        let file = blocking(move || std::fs::File::create(p)).await??;
        Ok(IncomingSnapshot {
            path,
            file: Some(file),
            total,
            crc,
            received: 0,
            running_crc: 0,
            message,
        })
    }

    async fn write(&mut self, data: Bytes) -> Result<(), Refusal> {
        let len = data.len() as u64;
        if self.received + len > self.total {
            return Err(Refusal::SnapshotTooLong);
        }
        self.running_crc = crc32c::crc32c_append(self.running_crc, &data);
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("snapshot file already closed"))?;
        let (file, written) = blocking(move || {
            let r = file.write_all(&data);
            (file, r)
        })
        .await?;
        self.file = Some(file);
        written?;
        self.received += len;
        Ok(())
    }

    /// Checks the checksum, reads the data back (checking it again) and deletes the file.
    async fn finish(mut self) -> Result<Message, Refusal> {
        if self.running_crc != self.crc {
            return Err(Refusal::SnapshotChecksum);
        }
        let file = self.file.take();
        let path = self.path.clone();
        let data = blocking(move || {
            drop(file);
            let data = std::fs::read(&path);
            let _ = std::fs::remove_file(&path);
            data
        })
        .await??;
        if data.len() as u64 != self.total || crc32c::crc32c(&data) != self.crc {
            return Err(Refusal::SnapshotChecksum);
        }
        let mut m = std::mem::take(&mut *self.message);
        m.mut_snapshot().data = Bytes::from(data);
        Ok(m)
    }
}

impl Drop for IncomingSnapshot {
    fn drop(&mut self) {
        // Also after `finish` (which removed it already) and mid-write (the file handle is
        // then with the blocking task, which writes to an unlinked file).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates the incoming-snapshot directory and removes files a previous run left in it.
pub(super) fn prepare_incoming_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(INCOMING_PREFIX) && n.ends_with(".tmp"));
        if stale {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Lets one log line per key through per [`LOG_EVERY`].
#[derive(Default)]
struct LogLimiter {
    last: Mutex<HashMap<String, Instant>>,
}

impl LogLimiter {
    fn allow(&self, key: String) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
        {
            return false;
        }
        if last.len() >= LOG_KEYS {
            last.clear();
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_one_line_per_key_through() {
        let l = LogLimiter::default();
        assert!(l.allow("a".into()));
        assert!(!l.allow("a".into()));
        assert!(l.allow("b".into()));
    }
}
