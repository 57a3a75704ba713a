//! Command-line flags and the validated configuration they produce.
//!
//! The first four flags are the seed's contract and never change: `--id`, `--cluster`,
//! `--port`, `--join`. With no flags at all a node starts as a single-node cluster
//! (`--id 1 --cluster http://127.0.0.1:12379 --port 12380`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use coordinate_tls::peer::PeerSpec;
use coordinate_tls::server::ServerSpec;

use crate::maintenance::AutoCompaction;
use crate::quota::DEFAULT_QUOTA_BYTES;

/// Command-line flags, as typed.
#[derive(Debug, Parser)]
#[command(
    name = "coordinate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("COORDINATE_COMMIT"), ")"),
    about = "A small, strongly consistent key-value store on Raft"
)]
pub struct Args {
    /// This node's id: its 1-based position in --cluster (also its Raft id).
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Comma-separated peer (Raft) URLs of the cluster; node i listens on entry i.
    #[arg(long, default_value = DEFAULT_CLUSTER)]
    pub cluster: String,
    /// Client HTTP port.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Start with no configuration and wait to be added to an existing cluster.
    #[arg(long)]
    pub join: bool,
    /// Where the WAL and snapshots live [default: coordinate-<id>].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Applied entries between snapshots (log compaction happens after each). etcd's
    /// default: a snapshot serializes the whole state, so taking one every 10,000 writes of a
    /// 20 MB state cost 15% of write throughput and doubled p99 (see BENCHMARKS.md).
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Bytes of log since the last snapshot that trigger one too (or the state's size, if
    /// larger), so the log held in memory and in the WAL is bounded by size, not only by
    /// count: 100,000 entries of 1 MiB would be 100 GiB. 64 MiB: a snapshot at most every
    /// 64 MiB of writes, each writing no more than the log it replaces.
    #[arg(long, default_value_t = coordinate_raft::node::DEFAULT_SNAPSHOT_BYTES)]
    pub snapshot_bytes: u64,
    /// Interface the client HTTP port binds to.
    #[arg(long, default_value = DEFAULT_LISTEN_HOST)]
    pub listen_host: String,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// How long a request waits for a quorum before answering 503/504, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Largest accepted value, in bytes (bigger bodies get 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_value_size: usize,
    /// Recent changes kept for watches that start in the past (older starts get 410).
    #[arg(long, default_value_t = 100_000)]
    pub watch_window: usize,
    /// Bytes the in-memory watch history keeps (its events' keys and values, and room for
    /// their encodings: about three times the keys and values), whatever --watch-window says:
    /// the window is the smaller of the two. A watcher starting before it or falling behind
    /// it reads the store's history instead.
    #[arg(long, default_value_t = 64 << 20)]
    pub watch_window_bytes: usize,
    /// Open watches at most; more are refused with 503 (each holds at most one event in
    /// memory of its own, up to --max-value-size).
    #[arg(long, default_value_t = 1000)]
    pub max_watchers: usize,
    /// Open client connections at most; more get a 503 and are closed [default: the
    /// open-file limit minus 256, between 64 and 10000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, in milliseconds; also how long an idle
    /// keep-alive connection stays open. Responses (watch streams) are not limited by it.
    #[arg(long, default_value_t = 30_000)]
    pub client_header_timeout_ms: u64,
    /// Threads running the node's event loop: HTTP, peer messages and the Raft loop (disk
    /// writes have a thread of their own). One keeps every hand-off between them on one
    /// thread, which measured 20-30% faster than two on a 2-core machine (see BENCHMARKS.md).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How the leader compacts the history by itself (etcd's flag): `revision` keeps the last
    /// --auto-compaction-retention revisions, `periodic` that much time of history.
    #[arg(long, default_value = "revision")]
    pub auto_compaction_mode: String,
    /// What --auto-compaction-mode keeps: revisions (`revision`), or a duration such as
    /// `30m`, `1h` or a bare number of hours (`periodic`); 0 turns auto-compaction off
    /// [default: 100000 revisions, or 1h when periodic].
    #[arg(long)]
    pub auto_compaction_retention: Option<String>,
    /// How long a gRPC watcher that asked for progress notifications (`progress_notify`) may
    /// see no event before it is told the revision it is synced to (etcd's flag).
    #[arg(long, default_value = "10m")]
    pub experimental_watch_progress_notify_interval: String,
    /// Bytes of keys and values, history included, above which writes that grow the store
    /// are refused and the NOSPACE alarm is raised (etcd's flag; 0 means the default)
    /// [default: 2 GiB].
    #[arg(long, default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// The client port's certificate (PEM, with its chain): the port then serves HTTPS only,
    /// REST, health and metrics alike (etcd's flag). Needs --key-file.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The CA that signs client certificates (PEM): a client presenting one is verified
    /// against it.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Serve HTTPS on the client port with a self-signed certificate made at start:
    /// encryption without verification, as in etcd (clients cannot verify it). Ignored when
    /// --cert-file is given.
    #[arg(long)]
    pub auto_tls: bool,
    /// The peer port's certificate (PEM, with its chain), presented to peers both ways; with
    /// it every --cluster URL is https:// (etcd's flag). Needs --peer-key-file and
    /// --peer-trusted-ca-file.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file (PEM).
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// The CA that signs every member's peer certificate (PEM): a peer is accepted only with a
    /// certificate it signed that names the member the peer claims to be.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Accepted for etcd's unit files: with --peer-cert-file, peer certificates are always
    /// required and verified.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Encrypt peer traffic with a self-signed certificate made at start, verifying nothing
    /// (as in etcd: it stops eavesdropping, not impersonation). Needs https:// --cluster URLs;
    /// ignored when --peer-cert-file is given.
    #[arg(long)]
    pub peer_auto_tls: bool,
    /// How often the certificate files are checked for changes, in milliseconds (they are
    /// also re-read on SIGHUP); new connections use the new certificates.
    #[arg(long, default_value_t = 5_000)]
    pub tls_reload_interval_ms: u64,
    /// etcd's `--name`: this member's name in --initial-cluster (its position there is its id).
    #[arg(long)]
    pub name: Option<String>,
    /// etcd's `--initial-cluster`: `name=peer-URL,...`, in place of --cluster and --id (one
    /// URL per member).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// etcd's `--initial-cluster-state`: `new`, or `existing` (the same as --join).
    #[arg(long)]
    pub initial_cluster_state: Option<String>,
    /// etcd's `--initial-advertise-peer-urls`: must be this member's URL in --initial-cluster.
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// etcd's `--listen-peer-urls`: where the peer port binds, if not its advertised URL
    /// (e.g. `http://0.0.0.0:2380`).
    #[arg(long)]
    pub listen_peer_urls: Option<String>,
    /// etcd's `--listen-client-urls`: one URL, in place of --listen-host and --port.
    #[arg(long)]
    pub listen_client_urls: Option<String>,
    /// etcd's `--advertise-client-urls`: the client URL MemberList shows for this member.
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
}

/// `--cluster`'s default.
const DEFAULT_CLUSTER: &str = "http://127.0.0.1:12379";
/// `--port`'s default.
const DEFAULT_PORT: u16 = 12380;
/// `--listen-host`'s default.
const DEFAULT_LISTEN_HOST: &str = "127.0.0.1";

/// What etcd's core flags say beyond the seed's: where the peer port binds, and the client URL
/// this member advertises.
#[derive(Debug, Default)]
struct EtcdExtras {
    peer_listen: Option<String>,
    advertise_client_url: Option<String>,
}

/// Rewrites etcd's core flags into the seed's (`--initial-cluster` and `--name` into
/// `--cluster` and `--id`, `--listen-client-urls` into `--listen-host` and `--port`,
/// `--initial-cluster-state existing` into `--join`), so an etcd unit file works with the
/// binary changed. Using both styles for one setting is an error.
fn apply_etcd_flags(args: &mut Args) -> Result<EtcdExtras, String> {
    let mut extras = EtcdExtras::default();
    let one = |flag: &str, value: &str| -> Result<String, String> {
        let urls: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        match urls[..] {
            [url] => Ok(url.to_string()),
            _ => Err(format!(
                "invalid --{flag} {value:?}: coordinate takes exactly one URL here"
            )),
        }
    };
    if let Some(initial) = args.initial_cluster.clone() {
        if args.cluster != DEFAULT_CLUSTER || args.id != 1 {
            return Err(
                "--initial-cluster replaces --cluster and --id: give one style, not both".into(),
            );
        }
        let name = args.name.clone().unwrap_or_else(|| "default".into());
        let mut urls = Vec::new();
        let mut id = None;
        for (i, entry) in initial.split(',').map(str::trim).enumerate() {
            let (n, url) = entry.split_once('=').ok_or_else(|| {
                format!("invalid --initial-cluster entry {entry:?}: expected name=peer-URL")
            })?;
            if urls.iter().any(|(seen, _): &(String, String)| seen == n) {
                return Err(format!(
                    "invalid --initial-cluster: {n:?} appears twice (coordinate takes one peer URL per member)"
                ));
            }
            if n == name {
                id = Some(i as u64 + 1);
            }
            urls.push((n.to_string(), url.to_string()));
        }
        let id = id.ok_or_else(|| {
            format!("--name {name:?} is not one of the names in --initial-cluster")
        })?;
        if let Some(advertised) = &args.initial_advertise_peer_urls {
            let advertised = one("initial-advertise-peer-urls", advertised)?;
            if advertised.trim_end_matches('/') != urls[id as usize - 1].1.trim_end_matches('/') {
                return Err(format!(
                    "--initial-advertise-peer-urls {advertised} is not {name}'s URL in --initial-cluster"
                ));
            }
        }
        args.id = id;
        args.cluster = urls
            .into_iter()
            .map(|(_, u)| u)
            .collect::<Vec<_>>()
            .join(",");
    }
    match args.initial_cluster_state.as_deref() {
        None | Some("new") => {}
        Some("existing") => args.join = true,
        Some(other) => {
            return Err(format!(
                "invalid --initial-cluster-state {other:?}: it is new or existing"
            ))
        }
    }
    if let Some(listen) = &args.listen_peer_urls {
        let url = one("listen-peer-urls", listen)?;
        extras.peer_listen =
            Some(peer_addr(&url).map_err(|e| format!("invalid --listen-peer-urls {url:?}: {e}"))?);
    }
    if let Some(listen) = args.listen_client_urls.clone() {
        if args.port != DEFAULT_PORT || args.listen_host != DEFAULT_LISTEN_HOST {
            return Err(
                "--listen-client-urls replaces --listen-host and --port: give one style, not both"
                    .into(),
            );
        }
        let url = one("listen-client-urls", &listen)?;
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|e| format!("invalid --listen-client-urls {url:?}: {e}"))?;
        let wants_tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "invalid --listen-client-urls {url:?}: it is http:// or https://"
                ))
            }
        };
        let has_tls = args.cert_file.is_some() || args.auto_tls;
        if wants_tls != has_tls {
            return Err(format!(
                "invalid --listen-client-urls {url:?}: https:// needs --cert-file (or --auto-tls), and only https:// takes them"
            ));
        }
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            return Err(format!(
                "invalid --listen-client-urls {url:?}: it needs a host and a port"
            ));
        };
        args.listen_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        args.port = port;
    }
    if let Some(advertised) = &args.advertise_client_urls {
        let first = advertised
            .split(',')
            .map(str::trim)
            .next()
            .unwrap_or_default();
        extras.advertise_client_url = Some(first.to_string());
    }
    Ok(extras)
}

/// The client port's TLS from its flags (`None`: plain HTTP); the error is one line.
fn client_tls(args: &Args) -> Result<Option<ServerSpec>, String> {
    let spec = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => ServerSpec::Files {
            cert: cert.clone(),
            key: key.clone(),
            trusted_ca: args.trusted_ca_file.clone(),
            require_client_cert: args.client_cert_auth,
        },
        (Some(_), None) => return Err("--cert-file needs --key-file".into()),
        (None, Some(_)) => return Err("--key-file needs --cert-file".into()),
        (None, None) if args.auto_tls => ServerSpec::SelfSigned {
            hosts: vec![args.listen_host.clone(), "localhost".into()],
        },
        (None, None) if args.client_cert_auth || args.trusted_ca_file.is_some() => {
            return Err(
                "--client-cert-auth and --trusted-ca-file need TLS: --cert-file and --key-file"
                    .into(),
            )
        }
        (None, None) => return Ok(None),
    };
    if args.client_cert_auth && args.trusted_ca_file.is_none() {
        return Err("--client-cert-auth needs --trusted-ca-file".into());
    }
    Ok(Some(spec))
}

/// The peer port's TLS from its flags (`None`: plain TCP); checks that the --cluster URLs'
/// scheme agrees. The error is one line.
fn peer_tls(args: &Args, urls: &[&str], own_host: &str) -> Result<Option<PeerSpec>, String> {
    let spec =
        match (&args.peer_cert_file, &args.peer_key_file) {
            (Some(cert), Some(key)) => match &args.peer_trusted_ca_file {
                Some(ca) => Some(PeerSpec::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                    trusted_ca: ca.clone(),
                }),
                None => return Err(
                    "--peer-cert-file needs --peer-trusted-ca-file: peers are verified against it"
                        .into(),
                ),
            },
            (Some(_), None) => return Err("--peer-cert-file needs --peer-key-file".into()),
            (None, Some(_)) => return Err("--peer-key-file needs --peer-cert-file".into()),
            (None, None) if args.peer_auto_tls => Some(PeerSpec::SelfSigned {
                hosts: vec![own_host.to_string(), "localhost".into()],
            }),
            (None, None) if args.peer_client_cert_auth || args.peer_trusted_ca_file.is_some() => {
                return Err(
                    "--peer-client-cert-auth and --peer-trusted-ca-file need peer TLS: \
                 --peer-cert-file and --peer-key-file"
                        .into(),
                )
            }
            (None, None) => None,
        };
    let want = if spec.is_some() { "https" } else { "http" };
    if let Some(url) = urls.iter().find(|u| peer_scheme(u) != Ok(want)) {
        return Err(match spec {
            Some(_) => {
                format!("invalid --cluster URL {url:?}: with peer TLS every peer URL is https://")
            }
            None => format!(
                "invalid --cluster URL {url:?}: https:// peer URLs need peer TLS \
                 (--peer-cert-file, --peer-key-file and --peer-trusted-ca-file, or --peer-auto-tls)"
            ),
        });
    }
    Ok(spec)
}

/// Revisions `--auto-compaction-mode revision` keeps by default: as far back as the watch
/// history reached before it was the MVCC history, so a watcher can resume as far back as
/// before.
pub const DEFAULT_RETAINED_REVISIONS: u64 = 100_000;
/// What `--auto-compaction-mode periodic` keeps by default.
pub const DEFAULT_RETAINED_TIME: Duration = Duration::from_secs(3600);

/// The auto-compaction policy the two flags give (the error is one line for the operator).
fn auto_compaction(mode: &str, retention: Option<&str>) -> Result<AutoCompaction, String> {
    let bad = |why: String| format!("invalid --auto-compaction-retention: {why}");
    match (mode, retention.map(str::trim)) {
        (_, Some("0")) => Ok(AutoCompaction::Off),
        ("revision", None) => Ok(AutoCompaction::Revisions(DEFAULT_RETAINED_REVISIONS)),
        ("revision", Some(r)) => r
            .parse::<u64>()
            .map(AutoCompaction::Revisions)
            .map_err(|_| bad(format!("{r:?} is not a number of revisions"))),
        ("periodic", None) => Ok(AutoCompaction::Periodic(DEFAULT_RETAINED_TIME)),
        ("periodic", Some(r)) => parse_retention_time(r)
            .map(AutoCompaction::Periodic)
            .ok_or_else(|| bad(format!("{r:?} is not a duration like 30m, 1h or 2 (hours)"))),
        (other, _) => Err(format!(
            "invalid --auto-compaction-mode {other:?}: expected revision or periodic"
        )),
    }
}

/// A duration as etcd writes retention: a bare number of hours, or numbers with units
/// (`h`, `m`, `s`, `ms`) such as `1h30m`. Zero is not a retention.
fn parse_retention_time(text: &str) -> Option<Duration> {
    if let Ok(hours) = text.parse::<u64>() {
        return hours
            .checked_mul(3600)
            .filter(|&s| s > 0)
            .map(Duration::from_secs);
    }
    parse_duration(text)
}

/// A duration as Go writes one: numbers with units (`h`, `m`, `s`, `ms`) such as `10m0s`;
/// never zero.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let (number, tail) = rest.split_at(digits);
        let n: u64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let part = match unit {
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = next;
    }
    (!total.is_zero()).then_some(total)
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Raft id of this node (1-based index into `peers`).
    pub id: u64,
    /// Peer URL of every founding member, by id.
    pub peers: HashMap<u64, String>,
    /// `host:port` the peer transport listens on (from this node's own URL).
    pub peer_listen: String,
    /// `host:port` the client API listens on.
    pub client_listen: String,
    /// Wait to be added instead of bootstrapping a cluster.
    pub join: bool,
    /// Data directory (default `coordinate-<id>`).
    pub data_dir: PathBuf,
    /// Applied entries between snapshots (default 100000).
    pub snapshot_count: u64,
    /// Log bytes between snapshots (default 64 MiB, or the state's size if larger).
    pub snapshot_bytes: u64,
    /// Log filter (default `info`).
    pub log_level: String,
    /// Request deadline (default 5 s).
    pub request_timeout: Duration,
    /// Largest value accepted (default 1 MiB).
    pub max_value_size: usize,
    /// Size at which a WAL segment is rotated (default 64 MiB).
    pub wal_segment_size: u64,
    /// Events kept for watches starting in the past (default 100000).
    pub watch_window: usize,
    /// Bytes the watch history keeps at most (default 64 MiB).
    pub watch_window_bytes: usize,
    /// Open watches at most (default 1000).
    pub max_watchers: usize,
    /// Idle time after which a watcher asking for progress gets a notification (default 10m).
    pub watch_progress_interval: Duration,
    /// Open client connections at most (default: derived from the open-file limit).
    pub max_connections: Option<usize>,
    /// Header-read and keep-alive idle timeout of client connections (default 30 s).
    pub client_header_timeout: Duration,
    /// Event-loop threads (default 1).
    pub threads: usize,
    /// What the leader compacts by itself (default: keep 100,000 revisions).
    pub auto_compaction: AutoCompaction,
    /// The store's quota in bytes (default 2 GiB).
    pub quota_bytes: u64,
    /// TLS on the client port (default none: plain HTTP).
    pub client_tls: Option<ServerSpec>,
    /// TLS between peers (default none: plain TCP).
    pub peer_tls: Option<PeerSpec>,
    /// The client URL this member advertises (etcd's `--advertise-client-urls`; default:
    /// the one it listens on).
    pub advertise_client_url: Option<String>,
    /// How often certificate files are checked for changes (default 5 s).
    pub tls_reload_interval: Duration,
    /// The name this member publishes (etcd's `--name`; default: its id, or etcd's
    /// `default` with `--initial-cluster`).
    pub name: String,
}

impl Config {
    /// The scheme of this cluster's peer URLs: `"https"` with peer TLS.
    pub fn peer_scheme(&self) -> &'static str {
        match self.peer_tls {
            Some(_) => "https",
            None => "http",
        }
    }

    /// Validates flags into a configuration; the error is one line for the operator.
    pub fn from_args(mut args: Args) -> Result<Config, String> {
        let extras = apply_etcd_flags(&mut args)?;
        let urls: Vec<&str> = args.cluster.split(',').map(str::trim).collect();
        if urls.len() as u64 > MAX_NODE_ID {
            return Err(format!(
                "invalid --cluster: {} URLs, at most {MAX_NODE_ID} members are supported",
                urls.len()
            ));
        }
        let mut peers = HashMap::new();
        for (i, url) in urls.iter().enumerate() {
            let addr = peer_addr(url).map_err(|e| format!("invalid --cluster URL {url:?}: {e}"))?;
            peers.insert(i as u64 + 1, addr);
        }
        if args.id == 0 || args.id as usize > urls.len() {
            return Err(format!(
                "invalid --id {}: it must be between 1 and the number of --cluster URLs ({})",
                args.id,
                urls.len()
            ));
        }
        if args.snapshot_count == 0 {
            return Err("invalid --snapshot-count 0: it must be at least 1".into());
        }
        if args.snapshot_bytes == 0 {
            return Err("invalid --snapshot-bytes 0: it must be at least 1".into());
        }
        if args.threads == 0 {
            return Err("invalid --threads 0: it must be at least 1".into());
        }
        if args.request_timeout_ms == 0 {
            return Err("invalid --request-timeout-ms 0: it must be at least 1".into());
        }
        if args.max_watchers == 0 {
            return Err("invalid --max-watchers 0: it must be at least 1".into());
        }
        if args.watch_window_bytes == 0 {
            return Err("invalid --watch-window-bytes 0: it must be at least 1".into());
        }
        let max_conns = crate::api::serve::MAX_CONNECTIONS_LIMIT;
        if let Some(n) = args.max_connections.filter(|&n| n == 0 || n > max_conns) {
            return Err(format!(
                "invalid --max-connections {n}: it must be between 1 and {max_conns}"
            ));
        }
        if args.client_header_timeout_ms == 0 {
            return Err("invalid --client-header-timeout-ms 0: it must be at least 1".into());
        }
        let progress = &args.experimental_watch_progress_notify_interval;
        let watch_progress_interval = parse_duration(progress.trim()).ok_or_else(|| {
            format!(
                "invalid --experimental-watch-progress-notify-interval {progress:?}: \
                 expected a duration such as 10m or 30s"
            )
        })?;
        let auto_compaction = auto_compaction(
            &args.auto_compaction_mode,
            args.auto_compaction_retention.as_deref(),
        )?;
        let quota_bytes = match args.quota_backend_bytes {
            0 => DEFAULT_QUOTA_BYTES,
            n => n,
        };
        if args.tls_reload_interval_ms == 0 {
            return Err("invalid --tls-reload-interval-ms 0: it must be at least 1".into());
        }
        let client_tls = client_tls(&args)?;
        let advertised_peer = peers[&args.id].clone();
        let own_host = advertised_peer
            .rsplit_once(':')
            .map_or(advertised_peer.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let peer_tls = peer_tls(&args, &urls, own_host)?;
        let peer_listen = extras.peer_listen.unwrap_or(advertised_peer);
        Ok(Config {
            id: args.id,
            peer_listen,
            peers,
            client_listen: format!("{}:{}", args.listen_host, args.port),
            join: args.join,
            data_dir: args
                .data_dir
                .unwrap_or_else(|| PathBuf::from(format!("coordinate-{}", args.id))),
            snapshot_count: args.snapshot_count,
            snapshot_bytes: args.snapshot_bytes,
            log_level: args.log_level,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            max_value_size: args.max_value_size,
            wal_segment_size: 64 << 20,
            watch_window: args.watch_window,
            watch_window_bytes: args.watch_window_bytes,
            watch_progress_interval,
            max_watchers: args.max_watchers,
            max_connections: args.max_connections,
            client_header_timeout: Duration::from_millis(args.client_header_timeout_ms),
            threads: args.threads,
            auto_compaction,
            quota_bytes,
            client_tls,
            peer_tls,
            tls_reload_interval: Duration::from_millis(args.tls_reload_interval_ms),
            advertise_client_url: extras.advertise_client_url,
            // etcd's default name goes with etcd's flags; the seed's style names a member by id.
            name: match (&args.name, &args.initial_cluster) {
                (Some(name), _) => name.clone(),
                (None, Some(_)) => "default".to_string(),
                (None, None) => args.id.to_string(),
            },
        })
    }
}

pub use coordinate_raft::peers::{
    canonical_peer_url, parse_node_id, peer_addr, peer_scheme, MAX_NODE_ID,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut full = vec!["coordinate"];
        full.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(full).map_err(|e| e.to_string())?)
    }

    const ETCD_CLUSTER: &str = "n1=http://127.0.0.1:1,n2=http://127.0.0.1:2,n3=http://127.0.0.1:3";

    #[test]
    fn etcds_core_flags_stand_for_the_seeds() {
        let c = parse(&[
            "--name",
            "n2",
            "--initial-cluster",
            ETCD_CLUSTER,
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2",
            "--listen-peer-urls",
            "http://0.0.0.0:2",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://10.0.0.2:2379",
            "--initial-cluster-state",
            "existing",
        ])
        .unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.peers[&2], "127.0.0.1:2");
        assert_eq!(c.peer_listen, "0.0.0.0:2");
        assert_eq!(c.client_listen, "0.0.0.0:2379");
        assert_eq!(
            c.advertise_client_url.as_deref(),
            Some("http://10.0.0.2:2379")
        );
        assert!(c.join);
        let new = parse(&["--name", "n3", "--initial-cluster", ETCD_CLUSTER]).unwrap();
        assert_eq!(
            (new.id, new.join, new.peer_listen.as_str()),
            (3, false, "127.0.0.1:3")
        );
    }

    #[test]
    fn mixed_or_bad_etcd_flags_are_refused_in_one_line() {
        let cases: [(&[&str], &str); 7] = [
            (
                &[
                    "--initial-cluster",
                    ETCD_CLUSTER,
                    "--name",
                    "n1",
                    "--id",
                    "2",
                ],
                "give one style",
            ),
            (
                &["--initial-cluster", ETCD_CLUSTER, "--name", "n9"],
                "is not one of the names",
            ),
            (
                &[
                    "--initial-cluster",
                    "a=http://127.0.0.1:1,a=http://127.0.0.1:2",
                    "--name",
                    "a",
                ],
                "appears twice",
            ),
            (
                &[
                    "--initial-cluster",
                    ETCD_CLUSTER,
                    "--name",
                    "n1",
                    "--initial-advertise-peer-urls",
                    "http://127.0.0.1:9",
                ],
                "is not n1's URL",
            ),
            (&["--initial-cluster-state", "old"], "new or existing"),
            (
                &[
                    "--listen-client-urls",
                    "http://127.0.0.1:1,http://127.0.0.1:2",
                ],
                "exactly one URL",
            ),
            (
                &["--listen-client-urls", "https://127.0.0.1:1"],
                "needs --cert-file",
            ),
        ];
        for (args, expected) in cases {
            let e = parse(args).unwrap_err();
            assert!(e.contains(expected), "{args:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        }
    }

    #[test]
    fn defaults_give_a_single_node_cluster() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(c.peer_listen, "127.0.0.1:12379");
        assert_eq!(c.client_listen, "127.0.0.1:12380");
        assert_eq!(c.data_dir, PathBuf::from("coordinate-1"));
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.snapshot_bytes, 64 << 20);
        assert_eq!(c.threads, 1);
        assert_eq!(c.max_connections, None);
        assert_eq!(c.max_watchers, 1000);
        assert_eq!(c.client_header_timeout, Duration::from_secs(30));
        assert!(!c.join);
    }

    #[test]
    fn bad_flags_are_refused() {
        let three = "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3";
        assert!(parse(&["--id", "0"]).unwrap_err().contains("--id"));
        assert!(parse(&["--id", "4", "--cluster", three])
            .unwrap_err()
            .contains("--id"));
        assert!(parse(&["--cluster", "127.0.0.1:1"]).is_err());
        assert!(parse(&["--cluster", "http://127.0.0.1"]).is_err());
        assert!(parse(&["--cluster", "https://127.0.0.1:1"]).is_err());
        assert!(parse(&["--cluster", "http://a@127.0.0.1:1"]).is_err());
        assert!(parse(&["--cluster", "http://127.0.0.1:0"]).is_err());
        assert!(parse(&["--cluster", "http://bad_host:1"]).is_err());
        assert!(parse(&["--snapshot-count", "0"]).is_err());
        assert!(parse(&["--snapshot-bytes", "0"])
            .unwrap_err()
            .contains("--snapshot-bytes"));
        assert!(parse(&["--max-connections", "0"])
            .unwrap_err()
            .contains("--max-connections"));
        assert!(parse(&["--max-watchers", "0"]).is_err());
        assert!(parse(&["--client-header-timeout-ms", "0"]).is_err());
        assert!(parse(&["--watch-window-bytes", "0"]).is_err());
        let progress = "--experimental-watch-progress-notify-interval";
        for bad in ["0s", "10", "ten", ""] {
            assert!(parse(&[progress, bad]).unwrap_err().contains(progress));
        }
        assert_eq!(
            parse(&[progress, "1m30s"]).unwrap().watch_progress_interval,
            Duration::from_secs(90)
        );
        assert_eq!(
            parse(&[]).unwrap().watch_progress_interval,
            Duration::from_secs(600)
        );
        assert!(parse(&["--threads", "0"])
            .unwrap_err()
            .contains("--threads"));
        assert_eq!(
            parse(&["--id", "3", "--cluster", three])
                .unwrap()
                .peer_listen,
            "127.0.0.1:3"
        );
    }

    #[test]
    fn auto_compaction_and_quota_flags_mean_what_etcds_do() {
        let policy = |args: &[&str]| parse(args).map(|c| c.auto_compaction);
        assert_eq!(
            policy(&[]),
            Ok(AutoCompaction::Revisions(DEFAULT_RETAINED_REVISIONS))
        );
        let rev = ["--auto-compaction-mode", "revision"];
        assert_eq!(
            policy(&[rev[0], rev[1], "--auto-compaction-retention", "500"]),
            Ok(AutoCompaction::Revisions(500))
        );
        let periodic = |r: &str| {
            policy(&[
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                r,
            ])
        };
        let secs = |s| Ok(AutoCompaction::Periodic(Duration::from_secs(s)));
        assert_eq!(periodic("2"), secs(7200));
        assert_eq!(periodic("1h30m"), secs(5400));
        assert_eq!(periodic("45s"), secs(45));
        assert_eq!(periodic("0"), Ok(AutoCompaction::Off));
        assert!(periodic("soon")
            .unwrap_err()
            .contains("--auto-compaction-retention"));
        assert!(periodic("5x").is_err());
        assert_eq!(
            policy(&["--auto-compaction-mode", "periodic"]),
            Ok(AutoCompaction::Periodic(DEFAULT_RETAINED_TIME))
        );
        assert!(policy(&["--auto-compaction-mode", "sometimes"])
            .unwrap_err()
            .contains("--auto-compaction-mode"));
        let quota = |args: &[&str]| parse(args).map(|c| c.quota_bytes);
        assert_eq!(quota(&[]), Ok(DEFAULT_QUOTA_BYTES));
        assert_eq!(
            quota(&["--quota-backend-bytes", "0"]),
            Ok(DEFAULT_QUOTA_BYTES)
        );
        assert_eq!(quota(&["--quota-backend-bytes", "4096"]), Ok(4096));
    }
}
