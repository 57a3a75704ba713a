//! Wires one node together — storage recovery, the raft loop, the peer transport and the
//! HTTP API — and owns shutdown.
//!
//! Shutdown order (SIGTERM/SIGINT): stop accepting HTTP requests and let in-flight ones finish
//! (they complete or time out), then tell the raft loop to stop, which syncs the WAL, then
//! exit. The peer transport runs until the process ends.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context};
use coordinate_raft::logger::raft_logger;
use coordinate_raft::node::{
    Exit, Node, NodeConfig, NodeIo, Recovered, CATCH_UP_SHARE_OF_SNAPSHOT_BYTES,
    ELECTION_TIMEOUT_TICKS, MAX_CATCH_UP_ENTRIES,
};
use coordinate_raft::persist::LogWriter;
use coordinate_raft::storage::identity;
use coordinate_raft::storage::wal::Wal;
use coordinate_raft::storage::RaftStorage;
use coordinate_raft::transport::{self, Transport, TransportConfig};
use coordinate_raft::{NodeHandle, Published};
use coordinate_tls::peer::PeerTls;
use coordinate_tls::server::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::kv::{Kv, MemberAttributes};
use crate::lessor::Lessor;
use crate::maintenance;
use crate::quota::Quota;
use crate::service::{Services, Shared};
use crate::state::Store;
use crate::watch::{WatchHub, WatchLimits};

/// Bound of the raft loop's input queue.
const NODE_QUEUE: usize = 65_536;

/// The node's two bound ports.
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses (port 0 picks a free port; read it back with
    /// [`Listeners::client_addr`] and [`Listeners::peer_addr`]).
    pub async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        let client = TcpListener::bind(&cfg.client_listen)
            .await
            .with_context(|| format!("cannot listen for clients on {}", cfg.client_listen))?;
        let peer = TcpListener::bind(&cfg.peer_listen)
            .await
            .with_context(|| format!("cannot listen for peers on {}", cfg.peer_listen))?;
        Ok(Listeners { client, peer })
    }

    pub fn client_addr(&self) -> std::io::Result<SocketAddr> {
        self.client.local_addr()
    }

    pub fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.peer.local_addr()
    }
}

/// The protocols the client port offers over TLS: HTTP/2 (gRPC, and REST too) and HTTP/1.1.
const CLIENT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The binary's entry: binds both ports (so a port in use fails fast, before the data dir is
/// touched), then runs the node until SIGTERM or SIGINT.
pub async fn main(cfg: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&cfg).await?;
    run(cfg, listeners, shutdown_signal()).await
}

/// Runs a node on bound `listeners` until `shutdown` resolves (or the node stops by itself:
/// removed from the cluster, or failed); returns once everything is durable. Tests start a
/// node in-process with it, on `:0` ports.
pub async fn run(
    mut cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // A peer port bound as `:0` is known only now; this node's own entry names it.
    let peer_addr = listeners.peer_addr().context("reading the peer address")?;
    if let Some(own) = cfg.peers.get_mut(&cfg.id) {
        if own.ends_with(":0") {
            *own = peer_addr.to_string();
        }
    }
    // Certificates are read before the data dir is touched: a bad one fails fast.
    let client_tls = match &cfg.client_tls {
        Some(spec) => Some(Arc::new(
            ServerTls::new(spec.clone(), CLIENT_ALPN).context("TLS on the client port")?,
        )),
        None => None,
    };
    let peer_tls = match &cfg.peer_tls {
        Some(spec) => Some(Arc::new(
            PeerTls::new(spec.clone()).context("TLS on the peer port")?,
        )),
        None => None,
    };
    let (recovered, wal) = recover(&cfg).await?;
    let Running {
        handle,
        shared,
        mut done,
    } = start_node(&cfg, recovered, wal, listeners.peer, peer_tls.clone()).await?;
    let watch = shared.hub.clone();
    let services = Services::new(handle.clone(), shared.clone());
    let duties = tokio::spawn(maintenance::run(
        services.clone(),
        shared.lessor.clone(),
        shared.quota.clone(),
        cfg.auto_compaction,
    ));
    let client_scheme = if client_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let client_url = cfg.advertise_client_url.clone().unwrap_or_else(|| {
        format!(
            "{client_scheme}://{}",
            listeners
                .client
                .local_addr()
                .map_or(cfg.client_listen.clone(), |a| a.to_string())
        )
    });
    let attributes = MemberAttributes {
        name: cfg.name.clone(),
        client_urls: vec![client_url],
    };
    let publish = tokio::spawn(services.members.clone().publish(attributes.clone()));
    let grpc = api::grpc::Grpc::new(services.clone(), cfg.id, attributes)
        .with_progress_interval(cfg.watch_progress_interval);
    let app = api::both(
        api::router(ApiState {
            services,
            max_value_size: cfg.max_value_size,
        }),
        api::grpc::router(grpc),
    );
    tracing::info!(
        id = cfg.id,
        client = %listeners.client.local_addr().map_or(cfg.client_listen.clone(), |a| a.to_string()),
        peer = %peer_addr,
        data_dir = %cfg.data_dir.display(),
        "serving"
    );
    let limits =
        api::serve::ServeLimits::from_flags(cfg.max_connections, cfg.client_header_timeout);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let every = cfg.tls_reload_interval;
    let mut reloads = Vec::new();
    if let Some(tls) = client_tls.clone() {
        reloads.push(tokio::spawn(coordinate_tls::keep_fresh(
            tls, "client", every,
        )));
    }
    if let Some(tls) = peer_tls {
        reloads.push(tokio::spawn(coordinate_tls::keep_fresh(tls, "peer", every)));
    }
    let server = tokio::spawn(api::serve::serve(
        listeners.client,
        app,
        limits,
        client_tls,
        stop_rx,
    ));
    let mut early_result = None;
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        result = &mut done => early_result = Some(result),
    }
    let _ = stop_tx.send(true);
    duties.abort();
    publish.abort();
    for reload in reloads {
        reload.abort();
    }
    // Open watch streams never finish by themselves; end them so the drain completes.
    watch.close();
    server.await.context("the HTTP server panicked")?;

    let result = match early_result {
        Some(result) => result,
        None => {
            tracing::info!("HTTP drained; stopping raft");
            handle.shutdown().await;
            done.await
        }
    };
    match result {
        Ok(Ok(Exit::Removed)) => {
            tracing::info!("removed from the cluster; exiting");
            Ok(())
        }
        Ok(Ok(Exit::Shutdown)) => Ok(()),
        Ok(Err(e)) => Err(e).context("raft loop failed"),
        Err(_) => bail!("the raft loop panicked"),
    }
}

/// The cluster id of a state from a build that did not keep one in it (a new cluster's is
/// fixed at bootstrap, `kv::founding_cluster_id`): a hash of member 1's peer address, the one
/// entry every member's `--cluster` list shared in those builds. Also what a `--join` node
/// reports until its first snapshot brings the cluster's.
fn flags_cluster_id(cfg: &Config) -> u64 {
    let first = cfg.peers.get(&1).map_or("", String::as_str);
    // FNV-1a, 64 bits: stable across builds and platforms.
    first.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A started node: its handle, what its state machine shares with the services, and where
/// the raft loop reports its end.
struct Running {
    handle: NodeHandle<Store>,
    shared: Shared,
    done: oneshot::Receiver<coordinate_raft::Result<Exit>>,
}

/// Starts the peer transport, the log writer and the raft loop over recovered state.
async fn start_node(
    cfg: &Config,
    recovered: Recovered<Kv>,
    wal: Wal,
    peer_listener: TcpListener,
    peer_tls: Option<Arc<PeerTls>>,
) -> anyhow::Result<Running> {
    let Recovered {
        storage,
        state: kv,
        applied,
    } = recovered;
    let (shared, store) = shared_state(cfg, kv);
    let recovered = Recovered {
        storage,
        state: store,
        applied,
    };
    let (tx, rx) = flume::bounded(NODE_QUEUE);
    let published = Arc::new(Published::default());
    let identity_dir = cfg.data_dir.clone();
    let identity = tokio::task::spawn_blocking(move || identity::load_or_create(&identity_dir))
        .await
        .context("loading the data-dir identity panicked")?
        .context("loading the data-dir identity")?;
    let transport = Transport::new(
        TransportConfig {
            id: cfg.id,
            identity,
            known_peers: cfg.data_dir.join(identity::PEERS_FILE),
            incoming_dir: cfg.data_dir.join("snap"),
            tls: peer_tls,
        },
        &cfg.peers,
        tx.clone(),
        tokio::runtime::Handle::current(),
    )
    .context("starting the peer transport")?;
    tokio::spawn(transport::serve(peer_listener, transport.clone()));
    let writer = LogWriter::start(
        wal,
        recovered.storage.snapshot_store(),
        transport.clone(),
        tx.clone(),
    )
    .context("starting the log writer")?;
    let node = Node::new(
        node_config(cfg),
        recovered,
        NodeIo {
            transport,
            writer,
            rx,
            tx: tx.clone(),
            published: published.clone(),
            data_dir: cfg.data_dir.clone(),
        },
        &raft_logger(),
    )
    .context("starting raft")?;
    // The raft loop reports its end on `done`: normally after a shutdown request, or early if
    // storage fails, in which case the node stops serving (fail-stop, like etcd on fsync errors).
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(async move {
        let result = node.run().await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft loop failed; stopping the node");
        }
        let _ = done_tx.send(result);
    });
    Ok(Running {
        handle: NodeHandle::new(tx, cfg.request_timeout, published),
        shared,
        done,
    })
}

/// What the state machine shares with the services (the watch tail, the lessor, the
/// quota), and the state machine over the recovered store.
fn shared_state(cfg: &Config, kv: Kv) -> (Shared, Store) {
    let watch_limits = WatchLimits {
        window: cfg.watch_window,
        window_bytes: cfg.watch_window_bytes,
        max_watchers: cfg.max_watchers,
    };
    let shared = Shared {
        member: cfg.id,
        hub: Arc::new(WatchHub::new(watch_limits, kv.revision())),
        lessor: Arc::new(Lessor::new()),
        quota: Arc::new(Quota::new(cfg.quota_bytes)),
        cluster: Arc::new(AtomicU64::new(flags_cluster_id(cfg))),
    };
    crate::metrics::METRICS
        .quota_bytes
        .set(cfg.quota_bytes as i64);
    let store = Store::new(
        kv,
        shared.hub.clone(),
        shared.lessor.clone(),
        shared.quota.clone(),
        cfg.max_value_size,
        shared.cluster.clone(),
    );
    (shared, store)
}

/// The raft loop's settings, from the flags.
fn node_config(cfg: &Config) -> NodeConfig {
    NodeConfig {
        id: cfg.id,
        snapshot_count: cfg.snapshot_count,
        snapshot_bytes: cfg.snapshot_bytes,
        catch_up_entries: (cfg.snapshot_count / 2).min(MAX_CATCH_UP_ENTRIES),
        catch_up_bytes: cfg.snapshot_bytes / CATCH_UP_SHARE_OF_SNAPSHOT_BYTES,
        request_timeout: cfg.request_timeout,
        cluster_ids: cfg.peers.keys().copied().collect(),
        election_ticks: ELECTION_TIMEOUT_TICKS,
    }
}

/// Opens the data directory: the recovered storage, state machine and applied index. A fresh
/// founding member bootstraps the cluster's first state; a fresh `--join` node starts empty.
async fn recover(cfg: &Config) -> anyhow::Result<(Recovered<Kv>, Wal)> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(Recovered<Kv>, Wal)> {
        let (mut storage, mut wal, snapshot) =
            RaftStorage::open(&cfg.data_dir, cfg.wal_segment_size).with_context(|| {
                format!(
                    "cannot recover the data directory {}",
                    cfg.data_dir.display()
                )
            })?;
        if let Some(snap) = snapshot {
            let index = snap.get_metadata().index;
            let kv = Kv::restore(snap.data.clone()).context("restoring the state machine")?;
            tracing::info!(index, keys = kv.len(), "recovered from snapshot");
            let recovered = Recovered {
                storage,
                state: kv,
                applied: index,
            };
            return Ok((recovered, wal));
        }
        if cfg.join {
            tracing::info!("no local state; waiting for the leader to add this node (--join)");
            let recovered = Recovered {
                storage,
                state: Kv::default(),
                applied: 0,
            };
            return Ok((recovered, wal));
        }
        let members = founding_members(&cfg);
        let voters: Vec<u64> = members.keys().copied().collect();
        let kv = Kv::with_members(members);
        storage
            .bootstrap(&mut wal, voters.clone(), kv.snapshot())
            .context("bootstrapping the cluster")?;
        tracing::info!(?voters, "bootstrapped a new cluster");
        let recovered = Recovered {
            storage,
            state: kv,
            applied: 1,
        };
        Ok((recovered, wal))
    })
    .await
    .context("storage recovery panicked")?
}

/// The founding members' peer URLs, by id, as `--cluster` (or `--initial-cluster`) names them.
pub(crate) fn founding_members(cfg: &Config) -> BTreeMap<u64, String> {
    cfg.peers
        .iter()
        .map(|(&id, addr)| (id, format!("{}://{addr}", cfg.peer_scheme())))
        .collect()
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
