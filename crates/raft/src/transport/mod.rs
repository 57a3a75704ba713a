//! Peer transport: raft messages between nodes over TCP, in clear or under mutual TLS, one
//! long-lived connection per peer in each direction.
//!
//! # Outbound ([`outbound`])
//! The thread that produced a message writes it: [`Transport::send`] encodes the messages for a
//! peer into one frame and writes it straight into that peer's socket with a non-blocking
//! `try_write`, from the raft loop (appends, heartbeats) or the log writer (acknowledgements
//! after an fsync). A message thus goes out without a hand-off to another thread: on a busy
//! machine each hand-off means waiting for a core, and a request crosses the network up to four
//! times. Nothing ever blocks the caller: what the socket does not take at once goes into the
//! peer's outbox, and the peer's task writes it when the socket drains. Frames are never
//! interleaved: a sender writes directly only while the outbox is empty.
//!
//! Each peer has a task that owns the connection's lifecycle: it connects, sends the hello,
//! reconnects with exponential backoff after an error (dropping what was buffered and reporting
//! the peer unreachable, so raft stops pipelining to it and retransmits later), flushes the
//! outbox, and streams snapshots, during which senders only buffer. An outbox over
//! [`PEER_BUFFER`] bytes refuses new messages (reported unreachable, as a dropped message is).
//!
//! # TLS ([`link`])
//! With peer TLS every connection starts with a handshake in which both sides present a
//! certificate the peer CA signed, and each checks that the other's names the member it
//! stands for (`coordinate_tls::identity`): the dialler that it reached the member it meant,
//! the acceptor that the hello's sender is that member — before any raft message is decoded.
//! Senders still write directly: the outbound TLS session sits beside the socket, and a
//! writer seals its frames into records and pushes them with `try_write` ([`link::Link`]).
//!
//! # Frames ([`frame`])
//! Every connection starts with a HELLO (protocol version, from, to, the sender's data-dir
//! identity), then carries MESSAGES frames and snapshots as SNAP_HEAD + SNAP_DATA chunks of
//! [`SNAPSHOT_CHUNK`] bytes, so no frame is large.
//!
//! # Inbound ([`inbound`])
//! A connection is accepted only after a valid hello from a current peer, addressed to this
//! node, presenting the data-dir identity this node remembers for that peer (trust on first
//! use, `storage::identity`); then every message on it must be from that peer to this node.
//! One connection per peer: a newer one replaces the older. Memory is bounded in total (a
//! budget shared by all connections, taken before a frame is allocated), connections are
//! capped, and snapshots stream to a temp file and are verified (length, CRC) before the node
//! sees them. Anything else drops the connection and costs a rate-limited log line, never a
//! crash. What raft messages *say* (terms, indexes, membership) is checked by the node.

pub mod frame;
mod inbound;
mod link;
mod outbound;
pub use inbound::InboundShare;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use raft::eraftpb::{Message, MessageType};

use coordinate_tls::peer::PeerTls;

use crate::error::{Error, Result};
use crate::storage::identity::KnownPeers;
pub use frame::{MAX_FRAME, MAX_SNAPSHOT};
pub use inbound::{
    serve, FRAME_TIMEOUT, HELLO_TIMEOUT, INBOUND_BUFFER_BYTES, MAX_PEER_CONNECTIONS,
};
use outbound::Peer;

/// What the transport reports to the raft loop.
#[derive(Debug)]
pub enum TransportEvent {
    /// A message from a peer, with the share of the inbound budget it holds until it has been
    /// stepped.
    Message(Box<Message>, InboundShare),
    /// Messages to this peer could not be delivered.
    Unreachable(u64),
    /// Sending a snapshot to `to` finished (or failed).
    SnapshotSent { to: u64, ok: bool },
    /// `member` answered this node's hello saying it applied the removal of `to` (this node,
    /// or the id it said hello as).
    RemovedBy { member: u64, to: u64 },
}

/// The raft loop's input queue, as the transport sees it: anything a [`TransportEvent`]
/// converts into. (The transport never names the node's input type.)
pub trait NodeQueue: From<TransportEvent> + Send + 'static {}
impl<T: From<TransportEvent> + Send + 'static> NodeQueue for T {}

/// Size of one snapshot data frame.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Bytes of encoded messages a peer's outbox holds before new ones are refused.
pub const PEER_BUFFER: usize = 64 << 20;
/// Snapshots queued per peer before new ones are refused.
const SNAPSHOT_QUEUE: usize = 4;
/// A frame of messages is cut once it holds this many bytes.
const BATCH_BYTES: usize = 4 << 20;

/// Who this node is to its peers, and where the transport keeps its files.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's raft id.
    pub id: u64,
    /// This data directory's identity (`storage::identity::load_or_create`).
    pub identity: u64,
    /// The file of identities peers presented (`<data_dir>/PEERS`).
    pub known_peers: PathBuf,
    /// Where incoming snapshots are streamed to (`<data_dir>/snap`).
    pub incoming_dir: PathBuf,
    /// Peer TLS (`None`: plain TCP, and `http://` peer URLs).
    pub tls: Option<Arc<PeerTls>>,
}

/// Handle used by the raft loop and the log writer to send messages to peers.
pub struct Transport<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Transport<E> {
    fn clone(&self) -> Self {
        Transport {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E> {
    id: u64,
    identity: u64,
    runtime: tokio::runtime::Handle,
    node: flume::Sender<E>,
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    known: Arc<KnownPeers>,
    incoming_dir: PathBuf,
    inbound: inbound::Inbound,
    tls: Option<Arc<PeerTls>>,
    /// Ids removed from the cluster: a hello from one is answered with REMOVED.
    removed: Mutex<std::collections::BTreeSet<u64>>,
}

impl<E: NodeQueue> Transport<E> {
    /// Creates the transport and starts a connection task for each peer (`id → host:port`;
    /// this node's own entry is skipped). Fails if the known-peers file is malformed or the
    /// incoming-snapshot directory cannot be prepared.
    pub fn new(
        cfg: TransportConfig,
        peers: &HashMap<u64, String>,
        node: flume::Sender<E>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Transport<E>> {
        let known = Arc::new(KnownPeers::load(&cfg.known_peers)?);
        inbound::prepare_incoming_dir(&cfg.incoming_dir)
            .map_err(|e| Error::io(format!("preparing {}", cfg.incoming_dir.display()), e))?;
        let transport = Transport {
            inner: Arc::new(Inner {
                id: cfg.id,
                identity: cfg.identity,
                runtime,
                node,
                peers: Mutex::new(HashMap::new()),
                known,
                incoming_dir: cfg.incoming_dir,
                inbound: inbound::Inbound::new(),
                tls: cfg.tls,
                removed: Mutex::new(Default::default()),
            }),
        };
        for (&peer, addr) in peers {
            if peer != cfg.id {
                transport.add_peer(peer, addr.clone());
            }
        }
        Ok(transport)
    }

    /// Starts (or restarts with a new address) the connection task for a peer; a no-op if
    /// the peer is already known at that address.
    pub fn add_peer(&self, id: u64, addr: String) {
        if id == self.inner.id {
            return;
        }
        let mut peers = self.peers();
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let peer = Arc::new(Peer::new(addr));
        let hello = frame::encode_hello(&frame::Hello {
            version: frame::PROTOCOL_VERSION,
            from: self.inner.id,
            to: id,
            identity: self.inner.identity,
        });
        self.inner.runtime.spawn(outbound::run_peer(
            id,
            peer.clone(),
            self.inner.node.clone(),
            hello,
            self.inner.tls.clone(),
        ));
        if let Some(old) = peers.insert(id, peer) {
            old.close();
        }
    }

    /// Makes the set of peers exactly `wanted` (id → host:port): starts new ones, restarts
    /// moved ones, stops removed ones (and drops their inbound connections).
    pub fn set_peers(&self, wanted: HashMap<u64, String>) {
        self.peers().retain(|id, peer| {
            let keep = wanted.contains_key(id);
            if !keep {
                peer.close();
            }
            keep
        });
        self.inner
            .inbound
            .retain(|id| wanted.contains_key(&id) && id != self.inner.id);
        for (id, addr) in wanted {
            self.add_peer(id, addr);
        }
    }

    /// Remembers the ids removed from the cluster (and not added back), so their hellos are
    /// answered with REMOVED.
    pub fn set_removed(&self, removed: impl IntoIterator<Item = u64>) {
        *self.inner.removed() = removed.into_iter().collect();
    }

    /// The scheme of this cluster's peer URLs: `"https"` with peer TLS, else `"http"`.
    pub fn scheme(&self) -> &'static str {
        self.inner.scheme()
    }

    /// True while the outbound connection to peer `id` is up (connected, hello sent, not
    /// hung up by the peer).
    pub fn is_connected(&self, id: u64) -> bool {
        self.peers().get(&id).is_some_and(|p| p.is_connected())
    }

    /// Forgets the data-dir identity remembered for peer `id`, so the next one it presents is
    /// trusted (call it when the member is added back after its data directory was lost).
    /// The file is rewritten off the caller's thread.
    pub fn forget_identity(&self, id: u64) {
        if !self.inner.known.forget(id) {
            return;
        }
        tracing::info!(peer = id, "forgot the data-dir identity of peer");
        let known = self.inner.known.clone();
        self.inner.runtime.spawn_blocking(move || {
            if let Err(e) = known.save() {
                tracing::error!(error = %e, "cannot save the known peer identities");
            }
        });
    }

    /// Bytes of inbound frames held in memory right now (at most [`INBOUND_BUFFER_BYTES`]),
    /// for a gauge.
    pub fn inbound_buffered_bytes(&self) -> usize {
        self.inner.inbound.buffered_bytes()
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<u64, Arc<Peer>>> {
        self.inner.peers()
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

impl<E: NodeQueue> Inner<E> {
    fn peers(&self) -> MutexGuard<'_, HashMap<u64, Arc<Peer>>> {
        // The map is only touched briefly; a poisoned lock still holds a usable map.
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn removed(&self) -> MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.removed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => "https",
            None => "http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;
    use std::time::Duration;
    use tokio::net::TcpListener;

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

    /// A transport for node `id` with data-dir identity `identity`, its files in `dir`.
    fn transport(
        id: u64,
        identity: u64,
        dir: &std::path::Path,
        peers: HashMap<u64, String>,
        node: flume::Sender<TransportEvent>,
        rt: &tokio::runtime::Runtime,
    ) -> Transport<TransportEvent> {
        secure_transport(id, identity, dir, peers, node, rt, None)
    }

    /// [`transport`] with peer TLS if given.
    fn secure_transport(
        id: u64,
        identity: u64,
        dir: &std::path::Path,
        peers: HashMap<u64, String>,
        node: flume::Sender<TransportEvent>,
        rt: &tokio::runtime::Runtime,
        tls: Option<Arc<PeerTls>>,
    ) -> Transport<TransportEvent> {
        let cfg = TransportConfig {
            id,
            identity,
            known_peers: dir.join(format!("PEERS-{id}")),
            incoming_dir: dir.join(format!("snap-{id}")),
            tls,
        };
        Transport::new(cfg, &peers, node, rt.handle().clone()).expect("transport")
    }

    /// A CA for the TLS variants of the tests, issuing member certificates into `dir`.
    struct Pki {
        ca: coordinate_tls::devcerts::Authority,
        dir: std::path::PathBuf,
    }

    impl Pki {
        fn new(dir: &std::path::Path) -> Pki {
            let ca = coordinate_tls::devcerts::Authority::new("test CA").expect("CA");
            std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write CA");
            Pki {
                ca,
                dir: dir.to_path_buf(),
            }
        }

        /// Node `id`'s peer TLS, its certificate naming `https://<addr>`.
        fn member(&self, id: u64, addr: &str) -> Arc<PeerTls> {
            use coordinate_tls::devcerts::Subject;
            use coordinate_tls::peer::PeerSpec;
            let issued = self
                .ca
                .issue(&Subject {
                    hosts: vec!["127.0.0.1".into()],
                    uris: vec![format!("https://{addr}")],
                    ..Subject::named("member")
                })
                .expect("issue");
            let cert = self.dir.join(format!("node-{id}.pem"));
            let key = self.dir.join(format!("node-{id}-key.pem"));
            std::fs::write(&cert, issued.cert_pem).expect("write cert");
            std::fs::write(&key, issued.key_pem).expect("write key");
            let spec = PeerSpec::Files {
                cert,
                key,
                trusted_ca: self.dir.join("ca.pem"),
            };
            Arc::new(PeerTls::new(spec).expect("peer TLS"))
        }
    }

    /// Node 2's transport toward node 1 at `addr`, under TLS if `pki` is given.
    fn sender(
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
        addr: String,
        node: flume::Sender<TransportEvent>,
        pki: Option<&Pki>,
    ) -> Transport<TransportEvent> {
        let tls = pki.map(|pki| pki.member(2, "127.0.0.1:9"));
        let peers = HashMap::from([(1, addr)]);
        secure_transport(2, 0x2222, dir, peers, node, rt, tls)
    }

    /// Node 1 (peer 2 at an address nobody serves) listening on a fresh port; returns its
    /// address and what it receives.
    fn receiver(
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
    ) -> (String, flume::Receiver<TransportEvent>) {
        let (addr, rx, _) = receiver_transport(rt, dir, None);
        (addr, rx)
    }

    /// [`receiver`] (under TLS if `pki` is given), and node 1's transport.
    fn receiver_transport(
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
        pki: Option<&Pki>,
    ) -> (
        String,
        flume::Receiver<TransportEvent>,
        Transport<TransportEvent>,
    ) {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (tx, rx) = flume::unbounded();
        let peers = HashMap::from([(2, "127.0.0.1:9".to_string())]);
        let tls = pki.map(|pki| pki.member(1, &addr));
        let t = secure_transport(1, 0x1111, dir, peers, tx, rt, tls);
        rt.spawn(serve(listener, t.clone()));
        (addr, rx, t)
    }

    fn next_message(rx: &flume::Receiver<TransportEvent>) -> Message {
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(TransportEvent::Message(m, _)) => return *m,
                Ok(_) => continue,
                Err(e) => panic!("no message: {e}"),
            }
        }
    }

    /// More than a socket buffer holds, sent at once from a thread outside the runtime (as the
    /// raft loop does): part is written directly, the rest by the peer's task, all in order.
    #[test]
    fn a_burst_larger_than_the_socket_buffer_arrives_whole_and_in_order() {
        burst_arrives_whole_and_in_order(false);
    }

    /// The same under TLS, where a burst also overflows the session's record backlog.
    #[test]
    fn a_burst_under_tls_arrives_whole_and_in_order() {
        burst_arrives_whole_and_in_order(true);
    }

    fn burst_arrives_whole_and_in_order(secure: bool) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let pki = secure.then(|| Pki::new(dir.path()));
        let (addr, rx, _receiver) = receiver_transport(&rt, dir.path(), pki.as_ref());
        let (node, _reports) = flume::unbounded();
        let t = sender(&rt, dir.path(), addr, node, pki.as_ref());
        // The first send may find no connection yet: retry until one is delivered.
        let mut first = None;
        for _ in 0..200 {
            if t.send(vec![append(1, 0, 10)]).is_empty() {
                if let Ok(TransportEvent::Message(m, _)) =
                    rx.recv_timeout(Duration::from_millis(50))
                {
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
        snapshot_then_messages(false);
    }

    /// The same under TLS.
    #[test]
    fn under_tls_messages_sent_during_a_snapshot_follow_it() {
        snapshot_then_messages(true);
    }

    fn snapshot_then_messages(secure: bool) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let pki = secure.then(|| Pki::new(dir.path()));
        let (addr, rx, _receiver) = receiver_transport(&rt, dir.path(), pki.as_ref());
        let (node, reports) = flume::unbounded();
        let t = sender(&rt, dir.path(), addr, node, pki.as_ref());
        for _ in 0..200 {
            if t.send(vec![append(1, 0, 10)]).is_empty()
                && matches!(
                    rx.recv_timeout(Duration::from_millis(50)),
                    Ok(TransportEvent::Message(_, _))
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
                Ok(TransportEvent::SnapshotSent { to: 1, ok }) => break ok,
                Ok(_) => continue,
                Err(e) => panic!("no snapshot report: {e}"),
            }
        };
        assert!(sent);
    }

    /// A member this node removed is answered so: its hello gets a REMOVED frame, which its
    /// transport reports (in clear and under TLS).
    #[test]
    fn a_removed_member_is_told_so() {
        for secure in [false, true] {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let dir = tempfile::tempdir().expect("dir");
            let pki = secure.then(|| Pki::new(dir.path()));
            let (addr, _rx, receiver) = receiver_transport(&rt, dir.path(), pki.as_ref());
            receiver.set_peers(HashMap::new());
            receiver.set_removed([2]);
            let (node, reports) = flume::unbounded();
            let _t = sender(&rt, dir.path(), addr, node, pki.as_ref());
            let told = loop {
                match reports.recv_timeout(Duration::from_secs(10)) {
                    Ok(TransportEvent::RemovedBy { member, to }) => break (member, to),
                    Ok(_) => continue,
                    Err(e) => panic!("not told (TLS: {secure}): {e}"),
                }
            };
            assert_eq!(told, (1, 2), "TLS: {secure}");
        }
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
        let dir = tempfile::tempdir().expect("dir");
        let (node, reports) = flume::unbounded();
        let t = transport(
            2,
            0x2222,
            dir.path(),
            HashMap::from([(1, addr.clone())]),
            node,
            &rt,
        );
        assert!(t.send(vec![append(1, 1, 10)]).is_empty());
        let unreachable = loop {
            match reports.recv_timeout(Duration::from_secs(10)) {
                Ok(TransportEvent::Unreachable(id)) => break id,
                Ok(_) => continue,
                Err(e) => panic!("no report: {e}"),
            }
        };
        assert_eq!(unreachable, 1);
        let listener = rt.block_on(TcpListener::bind(&addr)).expect("rebind");
        let (tx, rx) = flume::unbounded();
        let peers = HashMap::from([(2, "127.0.0.1:9".to_string())]);
        rt.spawn(serve(
            listener,
            transport(1, 0x1111, dir.path(), peers, tx, &rt),
        ));
        let mut delivered = false;
        for i in 2..400 {
            assert!(t.send(vec![append(1, i, 10)]).is_empty());
            if let Ok(TransportEvent::Message(m, _)) = rx.recv_timeout(Duration::from_millis(50)) {
                assert!(m.index >= 2);
                delivered = true;
                break;
            }
        }
        assert!(delivered, "never reached the peer once it was up");
    }

    /// A raw connection to `addr` that says hello as `from` (to node 1).
    fn raw(addr: &str, from: u64, identity: u64) -> std::net::TcpStream {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let hello = frame::encode_hello(&frame::Hello {
            version: frame::PROTOCOL_VERSION,
            from,
            to: 1,
            identity,
        });
        s.write_all(&hello).expect("hello");
        s
    }

    /// True if the other end closed `s` within 10 s.
    fn closed(s: &mut std::net::TcpStream) -> bool {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    fn send_raw(s: &mut std::net::TcpStream, m: Message) {
        use std::io::Write;
        let _ = s.write_all(&frame::encode_messages(&[m], 1 << 20).expect("encode"));
    }

    /// Strangers, impostors and misaddressed messages cost their connection; nothing of
    /// theirs reaches the node, and the real peer's messages do.
    #[test]
    fn only_a_known_peer_with_its_identity_gets_messages_through() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let (addr, rx) = receiver(&rt, dir.path());
        // Not a peer.
        let mut stranger = raw(&addr, 3, 7);
        send_raw(&mut stranger, append(1, 1, 1));
        assert!(closed(&mut stranger));
        // The real peer 2 (its identity is remembered now) gets a message through.
        let mut real = raw(&addr, 2, 0x2222);
        send_raw(&mut real, append(1, 2, 1));
        assert_eq!(next_message(&rx).index, 2);
        // Another identity for 2 is refused.
        let mut impostor = raw(&addr, 2, 0x9999);
        send_raw(&mut impostor, append(1, 3, 1));
        assert!(closed(&mut impostor));
        // A message whose `from` is not the hello's drops the connection.
        let mut forged = append(1, 4, 1);
        forged.from = 3;
        send_raw(&mut real, forged);
        assert!(closed(&mut real));
        // A newer connection of 2 replaces the older one.
        let mut old = raw(&addr, 2, 0x2222);
        send_raw(&mut old, append(1, 5, 1));
        assert_eq!(next_message(&rx).index, 5);
        let mut new = raw(&addr, 2, 0x2222);
        assert!(closed(&mut old));
        send_raw(&mut new, append(1, 6, 1));
        assert_eq!(next_message(&rx).index, 6);
        assert!(rx.try_recv().is_err(), "something else was delivered");
    }

    #[test]
    fn is_connected_follows_the_outbound_connection() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let (addr, _rx) = receiver(&rt, dir.path());
        let (node, _reports) = flume::unbounded();
        let t = transport(2, 0x2222, dir.path(), HashMap::from([(1, addr)]), node, &rt);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !t.is_connected(1) {
            assert!(std::time::Instant::now() < deadline, "never connected");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!t.is_connected(3));
        t.set_peers(HashMap::new());
        assert!(!t.is_connected(1));
    }

    fn snapshot_frames(m: &Message, announced: &[u8], sent: &[u8]) -> Vec<u8> {
        let head = frame::snap_head_payload(m, announced).expect("head");
        let mut out = frame::header(&[&head]).to_vec();
        out.extend_from_slice(&head);
        let mut data = vec![frame::SNAP_DATA];
        data.extend_from_slice(sent);
        out.extend_from_slice(&frame::header(&[&data]));
        out.extend_from_slice(&data);
        out
    }

    fn incoming_files(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir.join("snap-1"))
            .expect("incoming dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A snapshot stream whose data does not match its announced checksum, or runs past its
    /// announced length, is refused and leaves no file; a good one arrives whole.
    #[test]
    fn a_broken_snapshot_stream_is_refused_and_leaves_no_file() {
        use std::io::Write;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let (addr, rx) = receiver(&rt, dir.path());
        let m = snapshot(1, 5, 0);
        for sent in [&b"0123456789"[..], b"abcdefghijk"] {
            let mut s = raw(&addr, 2, 0x2222);
            let _ = s.write_all(&snapshot_frames(&m, b"abcdefghij", sent));
            assert!(closed(&mut s), "a bad stream of {sent:?} was not refused");
        }
        let mut s = raw(&addr, 2, 0x2222);
        s.write_all(&snapshot_frames(&m, b"abcdefghij", b"abcdefghij"))
            .expect("send");
        let got = next_message(&rx);
        assert_eq!(&got.get_snapshot().data[..], b"abcdefghij");
        assert_eq!(got.get_snapshot().get_metadata().index, 5);
        assert!(rx.try_recv().is_err(), "a bad snapshot was delivered");
        assert!(
            incoming_files(dir.path()).is_empty(),
            "{:?}",
            incoming_files(dir.path())
        );
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A frame's size is taken from the shared budget once its header arrives (before the
    /// body does), and given back when the connection ends.
    #[test]
    fn a_delivered_message_holds_its_frames_budget_until_the_node_drops_it() {
        use std::io::Write;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let (addr, rx, t) = receiver_transport(&rt, dir.path(), None);
        let mut s = raw(&addr, 2, 0x2222);
        let frames = frame::encode_messages(&[append(1, 7, 4096), append(1, 8, 4096)], 1 << 20)
            .expect("encode");
        s.write_all(&frames).expect("frame");
        let first = loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(input @ TransportEvent::Message(..)) => break input,
                Ok(_) => continue,
                Err(e) => panic!("no message: {e}"),
            }
        };
        // Both messages are queued for the node: the frame is still counted.
        let held = t.inbound_buffered_bytes();
        assert!(held > 8192, "{held} bytes counted");
        drop(first);
        assert_eq!(
            t.inbound_buffered_bytes(),
            held,
            "the second message still holds it"
        );
        let second = next_message(&rx);
        assert_eq!(second.index, 8);
        wait_for("the budget to be released", || {
            t.inbound_buffered_bytes() == 0
        });
    }

    #[test]
    fn a_frame_holds_the_inbound_budget_only_while_it_is_read() {
        use std::io::Write;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let (addr, _rx, t) = receiver_transport(&rt, dir.path(), None);
        assert_eq!(t.inbound_buffered_bytes(), 0);
        let mut s = raw(&addr, 2, 0x2222);
        let mut head = ((1u32 << 20).to_le_bytes()).to_vec();
        head.extend_from_slice(&[0; 4]);
        head.push(frame::MESSAGES);
        s.write_all(&head).expect("header");
        wait_for("the budget to be taken", || {
            t.inbound_buffered_bytes() == 1 << 20
        });
        drop(s);
        wait_for("the budget to be released", || {
            t.inbound_buffered_bytes() == 0
        });
    }
}
