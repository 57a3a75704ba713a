//! [`Coalesced`]: the write side of an HTTP/2 client connection, gathering what the
//! connection's frames of one scheduler pass say into one `sendto`.
//!
//! h2 flushes its connection after every DATA frame of 1 KiB or more (it keeps such a payload
//! aside instead of copying it into its 16 KiB buffer, and cannot queue the next frame until
//! it is written), in two writes when the stream is not vectored: a header, then the payload.
//! A node holding 1,000 watch streams answered each revision with 2,000 `sendto` calls, and
//! on loopback each call also runs the receiver's side of TCP and wakes it: 52% of the node's
//! CPU (BENCHMARKS.md).
//!
//! So writes are copied into one buffer, and a flush of a buffer smaller than
//! [`FLUSH_BYTES`] is deferred while it keeps growing: the connection's task is woken again
//! and yields, tasks ready to run (the other streams' answers among them) run first, and the
//! flush that finds nothing added since the last deferral writes everything gathered. When
//! nothing else is ready that is one extra poll of the task; when much is, it is one write of
//! up to [`FLUSH_BYTES`] instead of hundreds. Nothing is held: a deferred flush always wakes
//! the task that asked for it, whose connection flushes again.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A buffer at least this large is written at once, without waiting for more.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// A stream whose writes are gathered and whose small flushes yield once (see the module doc).
pub struct Coalesced<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
    /// The buffer's length when the last flush was deferred.
    deferred_at: Option<usize>,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Coalesced<S> {
        Coalesced {
            inner,
            buf: Vec::new(),
            written: 0,
            deferred_at: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out the whole buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        // A large buffer once (a big answer) is not kept for every later small one.
        if self.buf.capacity() > 4 * FLUSH_BYTES {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() >= FLUSH_BYTES {
            ready!(this.poll_drain(cx))?;
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let len = this.buf.len();
        if len > 0 && len < FLUSH_BYTES && this.deferred_at != Some(len) {
            // More was written since the last deferral: more may be on its way.
            this.deferred_at = Some(len);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.deferred_at = None;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Every write a [`Sink`] was given, in order.
    type Writes = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A sink recording each write it was given, accepting at most `max` bytes per write.
    #[derive(Clone, Default)]
    struct Sink {
        writes: Writes,
        max: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = data.len().min(self.max);
            self.writes.lock().unwrap().push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn sink(max: usize) -> (Coalesced<Sink>, Writes) {
        let sink = Sink {
            max,
            ..Sink::default()
        };
        let writes = sink.writes.clone();
        (Coalesced::new(sink), writes)
    }

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn small_flushes_yield_while_the_buffer_grows_then_write_it_in_one_call() {
        let (mut c, writes) = sink(usize::MAX);
        let count = Arc::new(Count(0.into()));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for part in [&b"head"[..], b"payload", b"more"] {
            assert!(matches!(
                Pin::new(&mut c).poll_write(&mut cx, part),
                Poll::Ready(Ok(_))
            ));
        }
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        // The task that asked is woken, so it comes back to flush.
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(writes.lock().unwrap().is_empty());
        // Grown since: deferred again.
        let _ = Pin::new(&mut c).poll_write(&mut cx, b"!");
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Nothing added since: written, in one call.
        assert!(matches!(
            Pin::new(&mut c).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(*writes.lock().unwrap(), vec![b"headpayloadmore!".to_vec()]);
        // Nothing left: a flush is at once, and the next small one yields again.
        assert!(matches!(
            Pin::new(&mut c).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let _ = Pin::new(&mut c).poll_write(&mut cx, b"x");
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
    }

    #[test]
    fn a_large_buffer_is_written_at_once_even_in_short_writes() {
        let (mut c, writes) = sink(10_000);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let big = vec![7u8; FLUSH_BYTES + 5];
        let _ = Pin::new(&mut c).poll_write(&mut cx, &big);
        assert!(matches!(
            Pin::new(&mut c).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let all: Vec<u8> = writes.lock().unwrap().concat();
        assert_eq!(all, big);
        // A write past the threshold first drains what is buffered.
        let _ = Pin::new(&mut c).poll_write(&mut cx, &big);
        let _ = Pin::new(&mut c).poll_write(&mut cx, b"tail");
        assert_eq!(writes.lock().unwrap().concat().len(), 2 * big.len());
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(writes.lock().unwrap().concat().len(), 2 * big.len() + 4);
    }
}
