//! [`WatchService`]: a stream of changes to the keys of a range, from any revision the store
//! still holds (or from now).
//!
//! Two sources feed a [`Watcher`], and it moves between them without a gap or a repeat:
//! - the **recent tail** ([`WatchHub`]), which every live watcher reads through a cursor, and
//! - the store's **history** (the MVCC revisions since the compaction point), read a page at
//!   a time through the raft loop (`Query::Changes`, this node's applied state) when the
//!   watch starts before the tail, or falls behind it, or after a snapshot replaced the state.
//!
//! A history page holds whole revisions, and ends with the first revision it does not hold;
//! the watcher switches to the tail as soon as the tail holds that revision. Only a start
//! before the compaction point is refused (up front), and a watcher that falls behind the
//! compaction point while reading is ended with [`WatchItem::Compacted`].
//!
//! Within one revision (a transaction), events come in key order, from either source, so
//! an event's position — its revision and its index within the revision — names it the same
//! way on every node and every reconnect: that is what SSE ids are made of (`api::kv`), and
//! [`WatchRequest::skip`] resumes after a partly delivered revision.
//!
//! A front-end renders each event through the closure it passes to [`Watcher::next`]; the
//! watcher does every wait (tokio's budget, a yield every [`WATCH_YIELD_BYTES`], a catch-up
//! turn) before rendering, never between rendering and sending.
//!
//! **Progress.** A watcher knows how far it is synced: every event of every revision up to
//! [`Watcher::synced`] was handed to the front-end, which asked for more (so it has sent
//! them). It advances only when the watcher has read the tail to its end and waits, so a
//! front-end may promise a client "nothing more up to this revision" from it. With
//! [`Watcher::notify_progress`], a watcher that yielded nothing for an interval and is synced
//! yields [`WatchItem::Progress`] (etcd's `progress_notify`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::kv::{Event, KeyRange};
use crate::watch::{FetchError, Published, WatchError, WatchHub, WatcherSlot};

use super::error::{Rejection, ServiceError, Unavailable};
use super::kv::unexpected_read;
use super::node::{Consistency, Query, Raft, ReadResult};

/// Bytes of events a watcher renders before it yields to the other tasks (the raft loop runs
/// on the same threads): watchers catching up must not starve it.
pub const WATCH_YIELD_BYTES: usize = 64 * 1024;
/// Bytes of keys and values of the store's history a watcher reads per page (at least one
/// revision): the size of a batch of the recent tail.
pub const HISTORY_PAGE_BYTES: usize = crate::watch::BATCH_BYTES;

/// Starts watches on the node's change history.
#[derive(Clone)]
pub struct WatchService {
    hub: Arc<WatchHub>,
    raft: Raft,
}

/// Watch the keys of `range` from `from_revision` (0: only future changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    pub range: KeyRange,
    pub from_revision: u64,
    /// Events of `from_revision` to leave out, in the watch's order (a reconnect after a
    /// partly delivered revision).
    pub skip: usize,
    /// Leave out puts / deletes (etcd's `NOPUT` / `NODELETE` filters).
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchRequest {
    /// Every change to `range` from `from_revision` on.
    pub fn new(range: KeyRange, from_revision: u64) -> WatchRequest {
        WatchRequest {
            range,
            from_revision,
            skip: 0,
            no_put: false,
            no_delete: false,
        }
    }
}

/// Where an event stands in its revision, as the watch reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Events of the same revision reported before it, by this watch.
    pub index: usize,
    /// No other event of its revision follows it in this watch.
    pub last: bool,
}

/// What a watcher yields.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchItem<T> {
    /// One change, as the front-end rendered it.
    Event(T),
    /// The watcher fell behind the compaction point (the stream ends after this): every
    /// revision before `next_revision` was yielded, and the oldest one still held is
    /// `compact_revision`.
    Compacted {
        next_revision: u64,
        compact_revision: u64,
    },
    /// Nothing was yielded for the progress interval, and every event up to `revision` has
    /// been (only with [`Watcher::notify_progress`]).
    Progress { revision: u64 },
}

/// What a read of the tail found.
enum Tail {
    /// A batch (maybe of nothing this watch wants), or a move to the history.
    Read,
    /// Nothing new for the progress interval; synced up to this revision.
    Idle(u64),
    /// The tail is closed: the node is shutting down.
    Closed,
}

/// Where the watcher reads next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The recent tail, at this cursor.
    Tail(u64),
    /// The store's history, from this revision.
    History(u64),
}

impl WatchService {
    pub(super) fn new(hub: Arc<WatchHub>, raft: Raft) -> WatchService {
        WatchService { hub, raft }
    }

    /// Starts a watch: refused if its start is compacted away, if `--max-watchers` watches
    /// are open, or if the node is shutting down.
    pub async fn watch(&self, req: WatchRequest) -> Result<Watcher, ServiceError> {
        // Every watch holds a slot and the wake-up signal of the tail.
        let sub = self.hub.subscribe(0).map_err(|e| match e {
            WatchError::TooMany { limit } => {
                ServiceError::from(Unavailable::TooManyWatchers { limit })
            }
            WatchError::Closed | WatchError::Compacted { .. } => Unavailable::WatchHubClosed.into(),
        })?;
        let req_from = req.from_revision;
        let start = match req_from {
            0 => sub.start,
            from => from,
        };
        let source = match self.hub.cursor_at(start) {
            Ok(cursor) => Source::Tail(cursor),
            Err(FetchError::Closed) => return Err(Unavailable::WatchHubClosed.into()),
            Err(FetchError::Behind) => Source::History(start),
        };
        let mut watcher = Watcher {
            hub: self.hub.clone(),
            raft: self.raft.clone(),
            req,
            start,
            source,
            pending: VecDeque::new(),
            caught_up: true,
            batch_end: start,
            next: start,
            index: (0, 0),
            wake: sub.wake,
            since_yield: 0,
            synced: Arc::new(AtomicU64::new(start.saturating_sub(1))),
            progress_every: None,
            progress_due: Instant::now(),
            done: false,
            _slot: sub.slot,
        };
        // A start before the compaction point is refused up front, also when the recent
        // tail still holds it (it keeps what compaction forgot, for a while).
        let refused = |oldest| -> ServiceError {
            Rejection::Compacted {
                requested: start,
                oldest,
            }
            .into()
        };
        match source {
            Source::History(from) => {
                if let Err(compact_revision) = watcher.read_history(from).await? {
                    return Err(refused(compact_revision));
                }
            }
            Source::Tail(_) if req_from > 0 => {
                let compacted = self.compact_revision().await?;
                if start < compacted {
                    return Err(refused(compacted));
                }
            }
            Source::Tail(_) => {}
        }
        Ok(watcher)
    }
}

impl WatchService {
    /// The store revision this node has applied (no round trip: for response headers of
    /// calls that change no key).
    pub fn applied_revision(&self) -> u64 {
        self.hub.current()
    }

    /// The oldest revision the store can still serve.
    async fn compact_revision(&self) -> Result<u64, ServiceError> {
        match self
            .raft
            .read(Query::CompactRevision, Consistency::Serializable)
            .await?
        {
            ReadResult::CompactRevision(r) => Ok(r),
            other => Err(unexpected_read("the compaction point", other)),
        }
    }
}

/// One open watch; counts against `--max-watchers` until dropped.
pub struct Watcher {
    hub: Arc<WatchHub>,
    raft: Raft,
    req: WatchRequest,
    /// The first revision to report: earlier events are skipped.
    start: u64,
    source: Source,
    /// Events of the last batch not yet yielded (whole revisions, filtered, in key order
    /// within each), rendered one at a time as the client takes them.
    pending: VecDeque<Arc<Published>>,
    /// Whether the last batch reached the end of the tail (else it is catch-up work).
    caught_up: bool,
    /// The revision after the last batch: every revision before it is yielded once `pending`
    /// is empty.
    batch_end: u64,
    /// Every revision before it was fully yielded.
    next: u64,
    /// The revision of the last event yielded and how many of its events were.
    index: (u64, usize),
    wake: tokio::sync::watch::Receiver<u64>,
    /// Bytes rendered since this watcher last yielded.
    since_yield: usize,
    /// Every event up to this revision was handed over, and the front-end asked for more.
    synced: Arc<AtomicU64>,
    /// How long to be idle before yielding [`WatchItem::Progress`] (`None`: never).
    progress_every: Option<Duration>,
    /// When the next progress is due, if nothing is yielded before.
    progress_due: Instant,
    done: bool,
    _slot: WatcherSlot,
}

impl Watcher {
    /// The first revision this watch reports (for a watch from now: one past the revision
    /// applied when it started).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Whether the next event is already at hand ([`Watcher::next`] returns it without
    /// waiting for a write): a front-end may gather it into the same answer.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The revision this watcher is synced to, as it advances: every event up to it was
    /// handed to the front-end before the front-end asked for the next one.
    pub fn synced(&self) -> Arc<AtomicU64> {
        self.synced.clone()
    }

    /// Yield [`WatchItem::Progress`] whenever nothing was yielded for `every` and the watcher
    /// is synced.
    pub fn notify_progress(&mut self, every: Duration) {
        self.progress_every = Some(every);
        self.progress_due = Instant::now() + every;
    }

    /// The next change, rendered by `render`; `None` once the stream ends (the node is
    /// shutting down, or after [`WatchItem::Compacted`]).
    pub async fn next<T>(
        &mut self,
        mut render: impl FnMut(&Published, Position) -> T,
    ) -> Option<WatchItem<T>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(rendered) = self.render_next(&mut render).await {
                if let Some(every) = self.progress_every {
                    self.progress_due = Instant::now() + every;
                }
                return Some(WatchItem::Event(rendered));
            }
            // Batches hold whole revisions: all of the last one is yielded.
            self.next = self.next.max(self.batch_end);
            match self.source {
                Source::History(from) => match self.read_history(from).await {
                    Ok(Ok(())) => {}
                    Ok(Err(compact_revision)) => {
                        self.done = true;
                        return Some(WatchItem::Compacted {
                            next_revision: self.next,
                            compact_revision,
                        });
                    }
                    Err(e) => {
                        // This node cannot read its own state: end the stream (a client
                        // resumes elsewhere from the last revision it got).
                        tracing::warn!(error = %e, "watch: the history is unreadable");
                        return None;
                    }
                },
                Source::Tail(cursor) => match self.read_tail(cursor).await {
                    Tail::Read => {}
                    Tail::Idle(revision) => return Some(WatchItem::Progress { revision }),
                    Tail::Closed => return None,
                },
            }
        }
    }

    /// Reads the next batch of the tail into `pending`, waiting for one if there is none.
    /// A watcher behind the tail goes to the history.
    async fn read_tail(&mut self, cursor: u64) -> Tail {
        // Mark the signal seen before looking, so a publish after the look wakes us.
        self.wake.borrow_and_update();
        let batch = match self.hub.fetch(cursor) {
            Ok(batch) => batch,
            Err(FetchError::Behind) => {
                self.source = Source::History(self.next);
                return Tail::Read;
            }
            Err(FetchError::Closed) => return Tail::Closed,
        };
        if batch.events.is_empty() {
            // Everything up to the newest revision is handed over: synced.
            self.synced.fetch_max(batch.revision, Ordering::AcqRel);
            let changed = match self.progress_every {
                None => self.wake.changed().await.is_ok(),
                Some(every) => tokio::select! {
                    changed = self.wake.changed() => changed.is_ok(),
                    () = tokio::time::sleep_until(self.progress_due) => {
                        self.progress_due = Instant::now() + every;
                        return Tail::Idle(batch.revision);
                    }
                },
            };
            return match changed {
                true => Tail::Read,
                false => Tail::Closed,
            };
        }
        if let Some(last) = batch.events.last() {
            self.batch_end = last.revision() + 1;
        }
        self.caught_up = batch.caught_up;
        self.source = Source::Tail(batch.cursor);
        self.take(batch.events);
        Tail::Read
    }

    /// Reads a page of the store's history from `from` into `pending`, then goes to the tail
    /// if it holds what follows. `Ok(Err(compact revision))` if `from` is compacted.
    async fn read_history(&mut self, from: u64) -> Result<Result<(), u64>, ServiceError> {
        let query = Query::Changes {
            from,
            max_bytes: HISTORY_PAGE_BYTES,
        };
        let read = self.raft.read(query, Consistency::Serializable).await?;
        let (events, next) = match read {
            ReadResult::Changes(Ok(page)) => page,
            ReadResult::Changes(Err(crate::kv::Refusal::Compacted { compact_revision })) => {
                return Ok(Err(compact_revision))
            }
            other => return Err(unexpected_read("a history read", other)),
        };
        self.batch_end = next;
        self.caught_up = false;
        self.source = match self.hub.cursor_at(next) {
            Ok(cursor) => Source::Tail(cursor),
            Err(_) => Source::History(next),
        };
        self.take(
            events
                .into_iter()
                .map(|e| Arc::new(Published::new(e)))
                .collect(),
        );
        Ok(Ok(()))
    }

    /// Keeps the events of a batch this watch reports, in key order within each revision.
    fn take(&mut self, mut events: Vec<Arc<Published>>) {
        events.retain(|e| self.wanted(e));
        events.sort_by(|a, b| (a.revision(), &a.kv.key).cmp(&(b.revision(), &b.kv.key)));
        let mut events: VecDeque<_> = events.into();
        // A resumed watch leaves out the events of its first revision it already got.
        while self.req.skip > 0 && events.front().is_some_and(|e| e.revision() == self.start) {
            events.pop_front();
            self.req.skip -= 1;
            self.count(self.start);
        }
        self.pending = events;
    }

    /// Counts one more event of `revision` as yielded; returns its index within it.
    fn count(&mut self, revision: u64) -> usize {
        let index = match self.index {
            (r, n) if r == revision => n,
            _ => 0,
        };
        self.index = (revision, index + 1);
        index
    }

    /// Whether this watch reports `e`.
    fn wanted(&self, e: &Event) -> bool {
        e.revision() >= self.start
            && self.req.range.contains(&e.kv.key)
            && match e.deleted {
                true => !self.req.no_delete,
                false => !self.req.no_put,
            }
    }

    /// Renders the next pending event, letting other tasks run now and then: every event
    /// counts against tokio's budget, every [`WATCH_YIELD_BYTES`] rendered yield outright, and
    /// catch-up work waits for one of the hub's turns. Every wait comes before rendering.
    async fn render_next<T>(
        &mut self,
        render: &mut impl FnMut(&Published, Position) -> T,
    ) -> Option<T> {
        let e = self.pending.pop_front()?;
        tokio::task::consume_budget().await;
        if self.since_yield >= WATCH_YIELD_BYTES {
            self.since_yield = 0;
            tokio::task::yield_now().await;
        }
        let hub = self.hub.clone();
        let _turn = match self.caught_up {
            true => None,
            false => hub.catch_up_turn().await,
        };
        self.since_yield += e.kv.key.len() + e.kv.value.len();
        let index = self.count(e.revision());
        let last = self
            .pending
            .front()
            .is_none_or(|n| n.revision() != e.revision());
        Some(render(&e, Position { index, last }))
    }
}
