//! An outbound connection as its writers see it: bytes written without blocking, in clear or
//! under TLS, by whichever thread holds them (see the module doc of [`super`]).
//!
//! Under TLS the session is a rustls `ClientConnection` behind a mutex: a writer hands it
//! plaintext, which it seals into records, and pushes the records into the socket with
//! `try_write`. Records the socket did not take stay in the session (its *backlog*, at most
//! rustls' buffer limit) until the peer's task pushes them when the socket drains; plaintext
//! the session did not take is the caller's to keep, as a short write is on a plain socket.
//! Anything the peer sends back (session tickets, alerts, coordinate's own answers) is read
//! through the session too.

use std::io::{self, Read, Write};
use std::sync::{Mutex, MutexGuard};

use coordinate_tls::rustls::ClientConnection;
use tokio::net::TcpStream;

/// Bytes of records a session holds before it takes no more plaintext.
const TLS_BACKLOG: usize = 256 << 10;

/// One outbound connection.
pub(super) enum Link {
    Plain(TcpStream),
    Tls {
        tcp: TcpStream,
        /// Boxed: a session is a kilobyte, a plain link a few words.
        session: Box<Mutex<ClientConnection>>,
    },
}

impl Link {
    pub(super) fn plain(tcp: TcpStream) -> Link {
        Link::Plain(tcp)
    }

    /// A link over a completed TLS handshake.
    pub(super) fn tls(tcp: TcpStream, mut session: ClientConnection) -> Link {
        session.set_buffer_limit(Some(TLS_BACKLOG));
        Link::Tls {
            tcp,
            session: Box::new(Mutex::new(session)),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Link::Plain(tcp) | Link::Tls { tcp, .. } => tcp,
        }
    }

    /// Writes as much of `buf` as the connection takes without blocking; how much it took.
    /// Under TLS, taken bytes may still sit in the backlog ([`Link::has_backlog`]).
    pub(super) fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(tcp) => write_plain(tcp, buf),
            Link::Tls { tcp, session } => {
                let mut session = lock(session);
                let mut taken = 0;
                loop {
                    if taken < buf.len() {
                        taken += session.writer().write(&buf[taken..])?;
                    }
                    while session.wants_write() {
                        match session.write_tls(&mut Socket(tcp)) {
                            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
                            Err(e) => return Err(e),
                        }
                    }
                    if taken == buf.len() {
                        return Ok(taken);
                    }
                }
            }
        }
    }

    /// True while TLS records wait for the socket to drain.
    pub(super) fn has_backlog(&self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls { session, .. } => lock(session).wants_write(),
        }
    }

    /// Waits until the socket may take more bytes.
    pub(super) async fn writable(&self) -> io::Result<()> {
        self.tcp().writable().await
    }

    /// Waits until the peer sent something (or hung up).
    pub(super) async fn readable(&self) -> io::Result<()> {
        self.tcp().readable().await
    }

    /// Writes all of `buf`, backlog included, waiting for the socket to drain as needed.
    pub(super) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        loop {
            let n = self.write_now(buf)?;
            buf = &buf[n..];
            if buf.is_empty() && !self.has_backlog() {
                return Ok(());
            }
            self.writable().await?;
        }
    }

    /// Reads what the peer sent without blocking, appending its plaintext to `into`. An
    /// error once the peer hung up (or broke TLS).
    pub(super) fn read_now(&self, into: &mut Vec<u8>) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let n = match self.tcp().try_read(&mut buf) {
            Ok(0) => return Err(hung_up()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        let Link::Tls { session, .. } = self else {
            into.extend_from_slice(&buf[..n]);
            return Ok(());
        };
        let mut session = lock(session);
        let mut received = &buf[..n];
        while !received.is_empty() {
            session.read_tls(&mut received)?;
            let state = session
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if state.plaintext_bytes_to_read() > 0 {
                let start = into.len();
                into.resize(start + state.plaintext_bytes_to_read(), 0);
                session.reader().read_exact(&mut into[start..])?;
            }
            if state.peer_has_closed() {
                return Err(hung_up());
            }
        }
        Ok(())
    }
}

fn hung_up() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the peer hung up")
}

fn lock(session: &Mutex<ClientConnection>) -> MutexGuard<'_, ClientConnection> {
    // Held only around non-blocking calls; a poisoned lock still holds a usable session (a
    // broken one fails its next call, which drops the connection).
    session.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes as much of `buf` as a plain socket takes without blocking.
fn write_plain(tcp: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < buf.len() {
        match tcp.try_write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// The socket as rustls' synchronous writer: `WouldBlock` when it is full.
struct Socket<'a>(&'a TcpStream);

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
