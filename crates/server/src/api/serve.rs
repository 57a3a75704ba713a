//! The client port's accept loop: HTTP/1.1 and HTTP/2 (gRPC) over hyper, with the limits
//! `axum::serve` lacks.
//!
//! An unauthenticated client must not be able to take the node down by opening sockets, so
//! every connection is bounded three ways:
//!
//! - **A cap on open connections** (`--max-connections`). Above it, a new connection gets a
//!   short `503` with a one-line reason and is closed (after its request, if any, is drained
//!   briefly, so the client reads the answer instead of a reset). Refusing costs a few bytes
//!   and at most [`MAX_REFUSALS_IN_FLIGHT`] extra sockets for at most [`REFUSAL_LINGER`].
//!   The default cap is derived from the open-file limit, leaving [`FD_RESERVE`] descriptors
//!   for the WAL, snapshots and peers: a flood of idle sockets can no longer exhaust the
//!   descriptors the node needs to write its snapshot (which made it exit before).
//! - **A header-read timeout** (`--client-header-timeout-ms`): a request's headers must arrive
//!   complete within it (slowloris). In hyper 1.12 the same timer also starts when a
//!   keep-alive connection goes idle after a response (`State::idle` sets `notify_read`, so the
//!   next `poll_read_head` arms the timer), so it is the idle timeout as well. It is not armed
//!   while a response is being written, so long-lived watch streams are not cut.
//! - **Accept errors never end the loop**: `EMFILE`, `ENFILE`, `ENOBUFS` and friends are logged
//!   at most once per [`ACCEPT_ERROR_LOG_INTERVAL`] (with the count of those not logged) and
//!   retried after a backoff from [`ACCEPT_BACKOFF_MIN`] doubling to [`ACCEPT_BACKOFF_MAX`].
//!
//! Shutdown: when `stop` turns true the listener is closed, every connection is told to shut
//! down gracefully (in-flight requests finish, idle connections close at once; watch streams
//! end because the watch hub is closed), and [`serve`] returns once every connection ended —
//! or was closed after [`DRAIN_TIMEOUT`] (a client that stopped reading its watch stream).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use coordinate_tls::server::ServerTls;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::coalesce::Coalesced;
use crate::metrics::METRICS;

/// File descriptors kept out of the default connection cap: WAL segments, snapshot files,
/// peer connections, refusals in flight, the listeners themselves.
pub const FD_RESERVE: u64 = 256;
/// Smallest default connection cap, whatever the open-file limit says.
pub const MIN_DEFAULT_CONNECTIONS: usize = 64;
/// Largest default connection cap: beyond it, memory per connection (buffers, tasks) matters
/// more than descriptors. An explicit `--max-connections` may go higher.
pub const MAX_DEFAULT_CONNECTIONS: usize = 10_000;
/// Largest accepted `--max-connections` (the connection slots are counted in a `u32`).
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// Connections being refused at once; beyond it an over-cap connection is closed without an
/// answer.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection is kept to deliver its `503` and drain its request.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Bytes of a refused connection's request read (and dropped) before closing it.
const REFUSAL_DRAIN_BYTES: usize = 16 * 1024;
/// How long a connection may take to finish its response once shutdown began; then it is
/// closed (a watch stream whose client stopped reading would otherwise hold shutdown forever).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause after a failed accept.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while they keep failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one accept-error log line per interval.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Limits of the client port.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// Open connections at most; more are refused with `503`.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, also the keep-alive idle timeout.
    pub header_timeout: Duration,
}

impl ServeLimits {
    /// The limits the flags ask for: the connection cap derived from the open-file limit
    /// unless set. Logs them, and warns when the cap leaves too few descriptors for the WAL,
    /// snapshots and peers.
    pub fn from_flags(max_connections: Option<usize>, header_timeout: Duration) -> ServeLimits {
        let fd_limit = fd_limit();
        let limits = ServeLimits {
            max_connections: connection_cap(max_connections, fd_limit),
            header_timeout,
        };
        if (limits.max_connections as u64).saturating_add(FD_RESERVE) > fd_limit {
            tracing::warn!(
                max_connections = limits.max_connections,
                fd_limit,
                "--max-connections leaves fewer than {FD_RESERVE} descriptors for the WAL, snapshots and peers"
            );
        }
        tracing::info!(
            max_connections = limits.max_connections,
            header_timeout = ?limits.header_timeout,
            "client port limits"
        );
        limits
    }
}

/// The connection cap: the configured one, or one derived from the open-file limit.
///
/// ```
/// use coordinate_server::api::serve::connection_cap;
/// assert_eq!(connection_cap(Some(10), 1024), 10);
/// assert_eq!(connection_cap(None, 1024), 768);
/// assert_eq!(connection_cap(None, 100), 64);
/// assert_eq!(connection_cap(None, 1 << 20), 10_000);
/// ```
pub fn connection_cap(configured: Option<usize>, fd_limit: u64) -> usize {
    configured.unwrap_or_else(|| {
        let room = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        room.clamp(MIN_DEFAULT_CONNECTIONS, MAX_DEFAULT_CONNECTIONS)
    })
}

/// Raises the soft open-file limit to the hard limit (as Go does at startup for etcd); returns
/// the soft limit in force afterwards. On failure the old limit stays.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            let err = std::io::Error::last_os_error();
            tracing::warn!(error = %err, soft = lim.rlim_cur, hard = lim.rlim_max,
                "cannot raise the open-file limit; keeping the soft limit");
            return Ok(lim.rlim_cur);
        }
        return Ok(raised.rlim_cur);
    }
    Ok(lim.rlim_cur)
}

/// The soft open-file limit in force (`u64::MAX` if it cannot be read).
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// The pause before the next accept after `previous` (none: the first failure).
pub fn next_backoff(previous: Option<Duration>) -> Duration {
    match previous {
        None => ACCEPT_BACKOFF_MIN,
        Some(d) => (d * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX),
    }
}

/// Accept errors, logged at most once per [`ACCEPT_ERROR_LOG_INTERVAL`].
#[derive(Default)]
struct AcceptErrors {
    backoff: Option<Duration>,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// Records a failure; the pause before trying again.
    fn failed(&mut self, err: &std::io::Error, now: Instant) -> Duration {
        let delay = next_backoff(self.backoff);
        self.backoff = Some(delay);
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_ERROR_LOG_INTERVAL)
        {
            tracing::warn!(error = %err, not_logged = self.suppressed, retry_in = ?delay,
                "cannot accept a client connection (too many open files?); retrying");
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        METRICS.accept_errors.inc();
        delay
    }

    fn succeeded(&mut self) {
        self.backoff = None;
    }
}

/// The refusal sent to a connection over the cap.
fn refusal(max_connections: usize) -> Arc<[u8]> {
    let body =
        format!("too many client connections (the limit is {max_connections}); try again later\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

/// True once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `app` on `listener` (over TLS if `tls` is given) until `stop` turns true, then
/// drains every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<Arc<ServerTls>>,
    mut stop: watch::Receiver<bool>,
) {
    let max = limits.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let slots = Arc::new(Semaphore::new(max));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let refusal = refusal(max);
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                errors.succeeded();
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let conn = Connection {
                            app: app.clone(),
                            header_timeout: limits.header_timeout,
                            stop: stop.clone(),
                            slot,
                        };
                        tokio::spawn(conn.start(stream, tls.clone()));
                    }
                    Err(_) => refuse(stream, &refusals, refusal.clone()),
                }
            }
            Err(e) => {
                let delay = errors.failed(&e, Instant::now());
                tokio::select! {
                    () = stopped(&mut stop) => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    drop(listener);
    // Every connection holds a slot until it ends: having them all back means all ended.
    let _ = slots.acquire_many(max as u32).await;
}

/// One accepted client connection; its slot is released when it ends.
struct Connection {
    app: Router,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
}

impl Connection {
    /// The TLS handshake if the port has TLS (given the header timeout: a client that never
    /// finishes it holds a slot no longer than one that never sends headers), then HTTP.
    async fn start(self, stream: TcpStream, tls: Option<Arc<ServerTls>>) {
        let _ = stream.set_nodelay(true);
        let Some(tls) = tls else {
            return self.serve(stream).await;
        };
        let handshake = tls.acceptor().accept(stream);
        match tokio::time::timeout(self.header_timeout, handshake).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => {
                METRICS.tls_handshake_failures.inc();
                tracing::debug!(error = %e, "client TLS handshake failed");
            }
            Err(_) => {
                METRICS.tls_handshake_failures.inc();
                tracing::debug!("client TLS handshake timed out");
            }
        }
    }

    /// Serves HTTP on an established stream until it ends or the node stops.
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            header_timeout,
            mut stop,
            slot,
        } = self;
        METRICS.client_connections.inc();
        serve_http(stream, app, header_timeout, &mut stop).await;
        METRICS.client_connections.dec();
        drop(slot);
    }
}

/// Requests (gRPC calls, watch streams among them) open at once on one HTTP/2 connection.
/// An etcd client multiplexes all its calls and watch streams on one connection (Kubernetes'
/// apiserver holds one stream per watched resource type); hyper's default of 200 would stall
/// the 201st. Watch streams are capped by `--max-watchers` anyway.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 10_000;

/// HTTP/2's connection preface: a connection that opens with it speaks HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP on one connection — HTTP/1.1, or HTTP/2 when it opens with HTTP/2's preface (gRPC
/// clients, in clear or under TLS) — drained gracefully when `stop` turns true.
///
/// Which one is decided here, from the first bytes, within the header timeout: a connection
/// that sends nothing (or half a preface) is closed like one that never finishes its request
/// head. An HTTP/2 connection is then kept alive by pings, answered within the header
/// timeout, and closed when they are not.
async fn serve_http<S>(
    mut stream: S,
    app: Router,
    header_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let opening = match tokio::time::timeout(header_timeout, read_opening(&mut stream)).await {
        Ok(Ok(opening)) if !opening.is_empty() => opening,
        // Closed, broken or silent before saying anything.
        _ => return,
    };
    let h2 = opening.starts_with(H2_PREFACE);
    let stream = Prefixed::new(opening, stream);
    let service = TowerToHyperService::new(app);
    let result = if h2 {
        // Many streams' frames in one write (see `coalesce`).
        let stream = TokioIo::new(Coalesced::new(stream));
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(header_timeout))
            .keep_alive_timeout(header_timeout)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        let conn = builder.serve_connection(stream, service);
        drain(conn, stop, |c| c.graceful_shutdown()).await
    } else {
        let stream = TokioIo::new(stream);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            // Copy each body chunk into one flat write buffer instead of queueing the chunk
            // itself: a stalled watch stream then holds a tight copy of one event, not the
            // over-allocated buffer it was rendered into (measured: 2.3 vs 4.7 MiB per
            // stalled watcher on 1 MiB values).
            .writev(false)
            .keep_alive(true);
        let conn = builder.serve_connection(stream, service);
        drain(conn, stop, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = result {
        // Timeouts, resets and malformed requests: the client's problem, not the node's.
        tracing::debug!(error = %e, "client connection ended");
    }
}

/// Runs a connection to its end; once `stop` turns true, shuts it down gracefully and waits
/// at most [`DRAIN_TIMEOUT`] more.
async fn drain<C, T, E>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<T, E>
where
    C: std::future::Future<Output = Result<T, E>>,
    T: Default,
{
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(stop) => {
            shutdown(conn.as_mut());
            match tokio::time::timeout(DRAIN_TIMEOUT, conn).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!("a client connection did not finish in time; closing it");
                    Ok(T::default())
                }
            }
        }
    }
}

/// Reads the first bytes of a connection: until they are HTTP/2's whole preface or differ
/// from it (HTTP/1.1), or the stream ends. At most the preface's length.
async fn read_opening<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut opening = vec![0u8; H2_PREFACE.len()];
    let mut len = 0;
    while len < H2_PREFACE.len() {
        let n = stream.read(&mut opening[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if opening[..len] != H2_PREFACE[..len] {
            break;
        }
    }
    opening.truncate(len);
    Ok(opening)
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed<S> {
    prefix: Vec<u8>,
    consumed: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            consumed: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.consumed < this.prefix.len() {
            let rest = &this.prefix[this.consumed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.consumed += n;
            if this.consumed == this.prefix.len() {
                this.prefix = Vec::new();
                this.consumed = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Answers a connection over the cap with `503` and closes it, if a refusal slot is free.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>, answer: Arc<[u8]>) {
    METRICS.connections_refused.inc();
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        // Too many refusals at once: close without a word rather than hold more sockets.
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, linger_refusal(stream, &answer)).await;
        drop(permit);
    });
}

/// Writes the refusal, then reads what the client sent until it closes (bounded), so that
/// closing does not reset the connection before the client read the answer.
async fn linger_refusal(mut stream: TcpStream, answer: &[u8]) {
    if stream.write_all(answer).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut d = next_backoff(None);
        assert_eq!(d, ACCEPT_BACKOFF_MIN);
        for _ in 0..20 {
            let next = next_backoff(Some(d));
            assert!(next >= d && next <= ACCEPT_BACKOFF_MAX);
            d = next;
        }
        assert_eq!(d, ACCEPT_BACKOFF_MAX);
    }

    #[test]
    fn accept_errors_are_logged_rarely() {
        let mut errors = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let t0 = Instant::now();
        errors.failed(&e, t0);
        errors.failed(&e, t0 + Duration::from_secs(1));
        errors.failed(&e, t0 + Duration::from_secs(2));
        assert_eq!(errors.suppressed, 2);
        errors.failed(&e, t0 + ACCEPT_ERROR_LOG_INTERVAL);
        assert_eq!(errors.suppressed, 0);
        errors.succeeded();
        assert_eq!(next_backoff(errors.backoff), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn refusal_is_a_complete_http_answer() {
        let text = String::from_utf8(refusal(7).to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains("limit is 7"));
    }

    #[test]
    fn the_fd_limit_is_readable_and_raising_keeps_it() {
        let before = fd_limit();
        let after = raise_fd_limit().unwrap();
        assert!(after >= before.min(after));
        assert_eq!(fd_limit(), after);
    }
}
