//! Watch: the recent tail of the change history, kept in memory, bounded by bytes, and read
//! by every live watcher through a cursor.
//!
//! The raft loop publishes every applied change here, in revision order, and bumps a wake-up
//! signal (a `tokio::sync::watch` of the newest revision). Each event gets a sequence number;
//! a watcher is a cursor into that sequence, and reads forward whole revisions at a time, at
//! most [`BATCH_BYTES`] per read; when it reaches the end it waits for the signal.
//!
//! This is a cache, not the history: the history is the store's MVCC revisions
//! (`crate::kv`). A watch that starts before the tail, or whose cursor falls behind it (it
//! read too slowly, or a snapshot from the leader replaced the state), reads the store's
//! history instead and comes back here once it has caught up (`crate::service::watch`). So
//! the tail's bounds decide memory and speed, never what a watcher can see.
//!
//! **Memory.** The tail holds at most `window` events and at most `window_bytes` bytes of keys
//! and values (the older revisions go first, whole), but always the newest revision. Its
//! values are shared with the store (`Bytes`). Each event also keeps the encodings a
//! front-end made of it ([`Published::encoded`]: etcd's gRPC makes up to two, with and
//! without the previous value), made once for every watcher and counted in `window_bytes`
//! up front. A watcher holds only the batch it is sending,
//! so its own memory is about one batch, never the distance it lags behind; the number of
//! watchers is capped ([`WatchLimits::max_watchers`]).
//!
//! Why not a broadcast ring of values: a ring is bounded by count, and every slot pins a value
//! until overwritten, whether anyone still needs it or not. One tail read by cursors holds
//! each value once, bounded by bytes, and the signal carries no data.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use tokio::sync::{watch, Semaphore, SemaphorePermit};

use crate::kv::Event;
use crate::metrics::METRICS;

/// Bytes of events a watcher takes from the history at once (at least one whole revision).
pub const BATCH_BYTES: usize = 256 * 1024;
/// Bytes an event is counted for beyond its key and value (the struct, the `Arc`, the queue).
const EVENT_OVERHEAD: usize = 64;

/// Watchers rendering catch-up batches at once (see [`WatchHub::catch_up_turn`]).
pub const CATCH_UP_TURNS: usize = 4;

/// Encodings a front-end may keep with each event ([`Published::encoded`]).
pub const ENCODINGS: usize = 2;

/// An applied change as every watcher shares it: the event, and the encodings front-ends
/// made of it — each made by the first watcher that sends the event, then shared by every
/// other, so that a thousand watchers of one key cost one encoding, not a thousand.
#[derive(Debug)]
pub struct Published {
    event: Event,
    encodings: [OnceLock<Bytes>; ENCODINGS],
}

impl Published {
    pub fn new(event: Event) -> Published {
        Published {
            event,
            encodings: Default::default(),
        }
    }

    /// Encoding `slot` (below [`ENCODINGS`]; which slot means what is the front-end's
    /// choice), made by `encode` if no watcher made it yet.
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&Event) -> Bytes) -> Bytes {
        self.encodings[slot]
            .get_or_init(|| encode(&self.event))
            .clone()
    }
}

impl Deref for Published {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

impl PartialEq for Published {
    fn eq(&self, other: &Published) -> bool {
        self.event == other.event
    }
}

impl Eq for Published {}

/// What [`WatchHub::fetch`] returns.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    /// Whole revisions after the cursor (empty: nothing new yet).
    pub events: Vec<Arc<Published>>,
    /// The cursor after them.
    pub cursor: u64,
    /// No events follow them in the history (the watcher is live, not catching up).
    pub caught_up: bool,
    /// The newest revision published when the batch was taken: with no events, the cursor
    /// has seen every revision up to it.
    pub revision: u64,
}

/// Why a watch cannot start where asked.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchError {
    /// The start is before the history; `oldest` is the oldest revision available now.
    Compacted { oldest: u64 },
    /// `--max-watchers` watches are open.
    TooMany { limit: usize },
    /// The node is shutting down.
    Closed,
}

/// Why a watcher cannot read on.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchError {
    /// Events after the cursor are gone from the history.
    Behind,
    /// The node is shutting down: streams end.
    Closed,
}

/// Bounds of the hub.
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// Events kept at most (`--watch-window`).
    pub window: usize,
    /// Bytes of keys and values kept at most (`--watch-window-bytes`).
    pub window_bytes: usize,
    /// Open watches at most (`--max-watchers`).
    pub max_watchers: usize,
}

/// The history and the wake-up signal.
pub struct WatchHub {
    state: Mutex<State>,
    watchers: AtomicUsize,
    max_watchers: usize,
    catch_up: Semaphore,
}

struct State {
    window: usize,
    window_bytes: usize,
    history: VecDeque<Arc<Published>>,
    /// Bytes counted for the events in `history`.
    bytes: usize,
    /// Sequence number of `history[0]` (or of the next event, if it is empty).
    first_seq: u64,
    /// Events of revisions up to and including this one are no longer all held.
    compacted: u64,
    /// The newest revision published.
    current: u64,
    /// `None` once closed for shutdown: every stream then ends.
    signal: Option<watch::Sender<u64>>,
}

/// A started watch.
pub struct Subscription {
    /// The first revision this watch reports (the requested one, or the next one for "now").
    pub start: u64,
    /// Where to read from: pass it to [`WatchHub::fetch`].
    pub cursor: u64,
    /// Changes when new events are published; errors once the hub is closed.
    pub wake: watch::Receiver<u64>,
    /// Counts this watch against `max_watchers` until dropped.
    pub slot: WatcherSlot,
}

/// One watch's place under the cap; frees it when dropped.
pub struct WatcherSlot {
    hub: Arc<WatchHub>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.hub.watchers.fetch_sub(1, Ordering::Relaxed);
        METRICS.watchers.dec();
    }
}

/// The bytes an event is counted for in the history: its key and values, and as much again
/// for its encodings (at most both of them: without the previous value, and with it).
fn event_bytes(e: &Event) -> usize {
    // The previous value counts too: the event keeps it alive after compaction drops it.
    let prev = e.prev.as_ref().map_or(0, |p| p.key.len() + p.value.len());
    let own = e.kv.key.len() + e.kv.value.len();
    own + prev + ENCODINGS * own + prev + EVENT_OVERHEAD
}

impl State {
    fn next_seq(&self) -> u64 {
        self.first_seq + self.history.len() as u64
    }

    fn over(&self) -> bool {
        self.history.len() > self.window || self.bytes > self.window_bytes
    }

    /// Drops the oldest revisions, whole, while over a bound; never the newest revision.
    fn trim(&mut self) {
        while self.over() {
            let (Some(front), Some(back)) = (self.history.front(), self.history.back()) else {
                return;
            };
            if front.revision() == back.revision() {
                return;
            }
            let cut = front.revision();
            while self.history.front().is_some_and(|e| e.revision() == cut) {
                if let Some(old) = self.history.pop_front() {
                    self.bytes -= event_bytes(&old);
                    self.first_seq += 1;
                }
            }
            self.compacted = cut;
        }
    }
}

impl WatchHub {
    /// A hub whose history starts after `revision` (the state it was restored from).
    pub fn new(limits: WatchLimits, revision: u64) -> WatchHub {
        let (signal, _) = watch::channel(revision);
        WatchHub {
            state: Mutex::new(State {
                window: limits.window.max(1),
                window_bytes: limits.window_bytes.max(1),
                history: VecDeque::new(),
                bytes: 0,
                first_seq: 0,
                compacted: revision,
                current: revision,
                signal: Some(signal),
            }),
            watchers: AtomicUsize::new(0),
            max_watchers: limits.max_watchers,
            catch_up: Semaphore::new(CATCH_UP_TURNS),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned state is still coherent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store revision of the last change published (this node's applied state).
    pub fn current(&self) -> u64 {
        self.lock().current
    }

    /// Publishes applied changes (called by the raft loop, in revision order).
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut s = self.lock();
        for e in events {
            s.current = e.revision();
            s.bytes += event_bytes(&e);
            s.history.push_back(Arc::new(Published::new(e)));
        }
        s.trim();
        METRICS.watch_history_bytes.set(s.bytes as i64);
        let current = s.current;
        if let Some(signal) = &s.signal {
            signal.send_replace(current);
        }
    }

    /// The whole state was replaced (a snapshot from the leader): history before it is gone,
    /// and every open watcher is behind (it may have missed what the snapshot covers).
    pub fn reset(&self, revision: u64) {
        let mut s = self.lock();
        // Skip one sequence number: every open cursor is now before the history.
        s.first_seq = s.next_seq() + 1;
        s.history.clear();
        s.bytes = 0;
        s.compacted = revision;
        s.current = revision;
        METRICS.watch_history_bytes.set(0);
        if let Some(signal) = &s.signal {
            signal.send_replace(revision);
        }
    }

    /// Starts a watch at `from` (0: only future changes). Events before `from` are skipped.
    pub fn subscribe(self: &Arc<Self>, from: u64) -> Result<Subscription, WatchError> {
        let s = self.lock();
        let Some(signal) = &s.signal else {
            return Err(WatchError::Closed);
        };
        let from = if from == 0 { s.current + 1 } else { from };
        if from <= s.compacted {
            return Err(WatchError::Compacted {
                oldest: s.compacted + 1,
            });
        }
        let taken = self.watchers.fetch_add(1, Ordering::Relaxed);
        let slot = WatcherSlot { hub: self.clone() };
        METRICS.watchers.inc();
        if taken >= self.max_watchers {
            drop(slot);
            METRICS.watchers_refused.inc();
            return Err(WatchError::TooMany {
                limit: self.max_watchers,
            });
        }
        let skip = s.history.partition_point(|e| e.revision() < from);
        Ok(Subscription {
            start: from,
            cursor: s.first_seq + skip as u64,
            wake: signal.subscribe(),
            slot,
        })
    }

    /// The cursor of the first event of revision `from` or later, if the history still holds
    /// every event from `from` on (else `Behind`: read them from the store's history).
    pub fn cursor_at(&self, from: u64) -> Result<u64, FetchError> {
        let s = self.lock();
        if s.signal.is_none() {
            return Err(FetchError::Closed);
        }
        if from <= s.compacted {
            return Err(FetchError::Behind);
        }
        let skip = s.history.partition_point(|e| e.revision() < from);
        Ok(s.first_seq + skip as u64)
    }

    /// The events after `cursor`: whole revisions, at least one if any, stopping once
    /// [`BATCH_BYTES`] are taken; and the cursor after them. Empty: nothing new yet.
    pub fn fetch(&self, cursor: u64) -> Result<Batch, FetchError> {
        let s = self.lock();
        if s.signal.is_none() {
            return Err(FetchError::Closed);
        }
        if cursor < s.first_seq {
            return Err(FetchError::Behind);
        }
        let start = usize::try_from(cursor - s.first_seq).unwrap_or(usize::MAX);
        let mut out: Vec<Arc<Published>> = Vec::new();
        let mut bytes = 0;
        for e in s.history.iter().skip(start) {
            let boundary = out.last().is_some_and(|l| l.revision() != e.revision());
            if boundary && bytes >= BATCH_BYTES {
                break;
            }
            bytes += event_bytes(e);
            out.push(e.clone());
        }
        let next = (cursor.max(s.first_seq) + out.len() as u64).min(s.next_seq());
        Ok(Batch {
            events: out,
            cursor: next,
            caught_up: next == s.next_seq(),
            revision: s.current,
        })
    }

    /// A turn to render a catch-up batch: at most [`CATCH_UP_TURNS`] watchers render old
    /// events at once, so however many watchers start in the past, the other tasks on the
    /// event loop (the raft loop among them) wait behind a few of them, not all.
    pub async fn catch_up_turn(&self) -> Option<SemaphorePermit<'_>> {
        self.catch_up.acquire().await.ok()
    }

    /// Ends every watch stream (graceful shutdown waits for open responses to finish).
    pub fn close(&self) {
        self.lock().signal = None;
    }

    /// The oldest revision a watch can start from.
    pub fn oldest(&self) -> u64 {
        self.lock().compacted + 1
    }

    /// Bytes held in the history.
    pub fn history_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64, key: &str) -> Event {
        ev_of(revision, key, bytes::Bytes::from_static(b"v"))
    }

    fn ev_of(revision: u64, key: &str, value: bytes::Bytes) -> Event {
        Event {
            kv: crate::kv::KeyValue {
                key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: 0,
            },
            deleted: false,
            prev: None,
        }
    }

    fn hub(window: usize, window_bytes: usize, max_watchers: usize) -> Arc<WatchHub> {
        Arc::new(WatchHub::new(
            WatchLimits {
                window,
                window_bytes,
                max_watchers,
            },
            0,
        ))
    }

    fn revisions(events: &[Arc<Published>]) -> Vec<u64> {
        events.iter().map(|e| e.revision()).collect()
    }

    #[test]
    fn history_then_live_without_gaps() {
        let hub = hub(100, 1 << 20, 10);
        hub.publish(vec![ev(1, "a"), ev(2, "b")]);
        let mut sub = hub.subscribe(2).unwrap();
        let b = hub.fetch(sub.cursor).unwrap();
        assert_eq!(revisions(&b.events), vec![2]);
        assert!(b.caught_up);
        let cursor = b.cursor;
        assert_eq!(hub.fetch(cursor).unwrap().events.len(), 0);
        sub.wake.borrow_and_update();
        hub.publish(vec![ev(3, "c"), ev(4, "c"), ev(4, "d")]);
        assert!(sub.wake.has_changed().unwrap());
        assert_eq!(revisions(&hub.fetch(cursor).unwrap().events), vec![3, 4, 4]);
        // From 0 means "from now on".
        let now = hub.subscribe(0).unwrap();
        assert_eq!(now.start, 5);
        assert!(hub.fetch(now.cursor).unwrap().events.is_empty());
        hub.publish(vec![ev(5, "d")]);
        assert_eq!(revisions(&hub.fetch(now.cursor).unwrap().events), vec![5]);
    }

    #[test]
    fn window_is_bounded_by_count_and_reports_the_oldest() {
        let hub = hub(3, 1 << 20, 10);
        for r in 1..=5 {
            hub.publish(vec![ev(r, "k")]);
        }
        assert_eq!(
            hub.subscribe(2).err(),
            Some(WatchError::Compacted { oldest: 3 })
        );
        let sub = hub.subscribe(3).unwrap();
        assert_eq!(
            revisions(&hub.fetch(sub.cursor).unwrap().events),
            vec![3, 4, 5]
        );
        // A revision with several events is dropped whole.
        hub.publish(vec![ev(6, "x"), ev(6, "y")]);
        assert_eq!(hub.oldest(), 5);
        // The watcher that was at revision 3 is now behind.
        assert_eq!(hub.fetch(sub.cursor), Err(FetchError::Behind));
        let sub = hub.subscribe(5).unwrap();
        assert_eq!(
            revisions(&hub.fetch(sub.cursor).unwrap().events),
            vec![5, 6, 6]
        );
    }

    #[test]
    fn window_is_bounded_by_bytes_but_keeps_the_newest_revision() {
        // Each counts about 3,000 bytes: its key and value, and room for two encodings.
        let big = |r: u64| ev_of(r, "k", bytes::Bytes::from(vec![0u8; 1000]));
        let hub = hub(1000, 7500, 10);
        for r in 1..=10 {
            hub.publish(vec![big(r)]);
        }
        assert!(hub.history_bytes() <= 7500);
        assert_eq!(hub.oldest(), 9);
        // One revision bigger than the whole budget is still kept.
        let huge = ev_of(11, "k", bytes::Bytes::from(vec![0u8; 10_000]));
        hub.publish(vec![huge]);
        assert_eq!(hub.oldest(), 11);
        let sub = hub.subscribe(11).unwrap();
        assert_eq!(revisions(&hub.fetch(sub.cursor).unwrap().events), vec![11]);
    }

    /// An encoding is made by the first watcher that asks for it; every other watcher of the
    /// event gets the same bytes, and the other slot is made separately.
    #[test]
    fn watchers_share_an_events_encodings() {
        let hub = hub(100, 1 << 20, 10);
        let (a, b) = (hub.subscribe(0).unwrap(), hub.subscribe(0).unwrap());
        hub.publish(vec![ev(1, "k")]);
        let made = std::cell::Cell::new(0);
        let encode = |e: &Event| {
            made.set(made.get() + 1);
            Bytes::from(e.kv.key.to_vec())
        };
        let first = hub.fetch(a.cursor).unwrap().events[0].encoded(0, encode);
        let second = hub.fetch(b.cursor).unwrap().events[0].encoded(0, encode);
        assert_eq!(made.get(), 1);
        assert_eq!(first.as_ptr(), second.as_ptr());
        let other = hub.fetch(b.cursor).unwrap().events[0].encoded(1, encode);
        assert_eq!((made.get(), &other[..]), (2, &b"k"[..]));
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_and_never_splits_a_revision() {
        let hub = hub(100_000, 1 << 30, 10);
        let value = bytes::Bytes::from(vec![0u8; BATCH_BYTES / 4]);
        for r in 1..=10 {
            let e = |k: &str| ev_of(r, k, value.clone());
            hub.publish(vec![e("a"), e("b"), e("c")]);
        }
        let sub = hub.subscribe(1).unwrap();
        let (mut cursor, mut seen) = (sub.cursor, Vec::new());
        loop {
            let b = hub.fetch(cursor).unwrap();
            if b.events.is_empty() {
                break;
            }
            assert!(b.events.len() <= 6, "a batch of {} events", b.events.len());
            assert_eq!(b.events.len() % 3, 0, "a revision was split");
            assert_eq!(b.caught_up, seen.len() + b.events.len() == 30);
            seen.extend(revisions(&b.events));
            cursor = b.cursor;
        }
        assert_eq!(seen.len(), 30);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn watchers_are_capped_and_slots_come_back() {
        let hub = hub(10, 1 << 20, 2);
        let a = hub.subscribe(0).unwrap();
        let _b = hub.subscribe(0).unwrap();
        assert_eq!(
            hub.subscribe(0).err(),
            Some(WatchError::TooMany { limit: 2 })
        );
        drop(a);
        assert!(hub.subscribe(0).is_ok());
    }

    #[test]
    fn reset_puts_open_watchers_behind_and_close_ends_them() {
        let hub = hub(10, 1 << 20, 10);
        hub.publish(vec![ev(1, "a")]);
        let sub = hub.subscribe(0).unwrap();
        hub.reset(10);
        assert_eq!(hub.oldest(), 11);
        assert_eq!(hub.fetch(sub.cursor), Err(FetchError::Behind));
        let mut after = hub.subscribe(0).unwrap();
        hub.publish(vec![ev(11, "b")]);
        assert_eq!(
            revisions(&hub.fetch(after.cursor).unwrap().events),
            vec![11]
        );
        hub.close();
        assert_eq!(hub.fetch(after.cursor), Err(FetchError::Closed));
        after.wake.borrow_and_update();
        assert!(after.wake.changed().now_or_never_is_err());
        assert_eq!(hub.subscribe(0).err(), Some(WatchError::Closed));
    }

    /// `changed()` of a closed channel resolves at once with an error.
    trait NowOrNever {
        fn now_or_never_is_err(self) -> bool;
    }

    impl<F: std::future::Future<Output = Result<(), watch::error::RecvError>>> NowOrNever for F {
        fn now_or_never_is_err(self) -> bool {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let mut fut = std::pin::pin!(self);
            matches!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Err(_)))
        }
    }
}
