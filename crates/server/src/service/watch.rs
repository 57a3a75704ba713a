//! [`WatchService`]: a stream of changes to one key or to every key under a prefix, from a
//! revision still in the history (or from now), served from [`WatchHub`]'s shared history.
//!
//! A [`Watcher`] yields whole revisions in order. A front-end renders each event through the
//! closure it passes to [`Watcher::next`]; the watcher does every wait (tokio's budget, a
//! yield every [`WATCH_YIELD_BYTES`], a catch-up turn) before rendering, never between
//! rendering and sending, and holds the catch-up turn while the event is rendered. A watcher
//! that falls behind the history is cut off with the revision to resume from.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::kv::{Event, KeyRange};
use crate::watch::{FetchError, WatchError, WatchHub, WatcherSlot};

use super::error::{Rejection, ServiceError, Unavailable};

/// Bytes of events a watcher renders before it yields to the other tasks (the raft loop runs
/// on the same threads): watchers catching up must not starve it.
pub const WATCH_YIELD_BYTES: usize = 64 * 1024;

/// Starts watches on the node's change history.
#[derive(Clone)]
pub struct WatchService {
    hub: Arc<WatchHub>,
}

/// Watch the keys of `range` from `from_revision` (0: only future changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    pub range: KeyRange,
    pub from_revision: u64,
}

/// What a watcher yields.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchItem<T> {
    /// One change, as the front-end rendered it.
    Event(T),
    /// The watcher fell too far behind and is cut off (the stream ends after this); every
    /// revision before `resume_from_revision` was yielded.
    CutOff { resume_from_revision: u64 },
}

impl WatchService {
    pub(super) fn new(hub: Arc<WatchHub>) -> WatchService {
        WatchService { hub }
    }

    /// Starts a watch: refused if its start is compacted away, if `--max-watchers` watches
    /// are open, or if the node is shutting down.
    pub fn watch(&self, req: WatchRequest) -> Result<Watcher, ServiceError> {
        let sub = self.hub.subscribe(req.from_revision).map_err(|e| match e {
            WatchError::Compacted { oldest } => ServiceError::from(Rejection::Compacted {
                requested: req.from_revision,
                oldest,
            }),
            WatchError::TooMany { limit } => Unavailable::TooManyWatchers { limit }.into(),
            WatchError::Closed => Unavailable::WatchHubClosed.into(),
        })?;
        Ok(Watcher {
            hub: self.hub.clone(),
            range: req.range,
            start: sub.start,
            pending: VecDeque::new(),
            caught_up: true,
            batch_end: sub.start,
            cursor: sub.cursor,
            wake: sub.wake,
            next: sub.start,
            since_yield: 0,
            done: false,
            _slot: sub.slot,
        })
    }
}

/// One open watch; counts against `--max-watchers` until dropped.
pub struct Watcher {
    hub: Arc<WatchHub>,
    range: KeyRange,
    /// The first revision to report: earlier events are skipped.
    start: u64,
    /// Events of the last batch not yet yielded, rendered one at a time as the client takes
    /// them: a watcher whose client stopped reading holds no rendered event but the one its
    /// connection is writing (the events themselves are shared with the history).
    pending: VecDeque<Arc<Event>>,
    /// Whether the last batch reached the end of the history (else it is catch-up work).
    caught_up: bool,
    /// The revision after the last batch: every revision before it is yielded once `pending`
    /// is empty.
    batch_end: u64,
    /// Where the next fetch from the history starts.
    cursor: u64,
    wake: tokio::sync::watch::Receiver<u64>,
    /// Where to resume if the stream is cut: every revision before it was fully yielded.
    next: u64,
    /// Bytes rendered since this watcher last yielded.
    since_yield: usize,
    done: bool,
    _slot: WatcherSlot,
}

impl Watcher {
    /// The next change, rendered by `render`; `None` once the stream ends (the node is
    /// shutting down, or after a cut-off).
    pub async fn next<T>(&mut self, mut render: impl FnMut(&Event) -> T) -> Option<WatchItem<T>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(rendered) = self.render_next(&mut render).await {
                return Some(WatchItem::Event(rendered));
            }
            // Batches hold whole revisions: all of the last one is yielded.
            self.next = self.next.max(self.batch_end);
            // Mark the signal seen before looking, so a publish after the look wakes us.
            self.wake.borrow_and_update();
            let batch = match self.hub.fetch(self.cursor) {
                Ok(batch) => batch,
                Err(FetchError::Behind) => {
                    self.done = true;
                    return Some(WatchItem::CutOff {
                        resume_from_revision: self.next,
                    });
                }
                Err(FetchError::Closed) => return None,
            };
            if batch.events.is_empty() {
                if self.wake.changed().await.is_err() {
                    return None;
                }
                continue;
            }
            if let Some(last) = batch.events.last() {
                self.batch_end = last.revision() + 1;
            }
            self.caught_up = batch.caught_up;
            let (start, range) = (self.start, &self.range);
            let wanted = batch.events.into_iter().filter(|e| wanted(e, start, range));
            self.pending = wanted.collect();
            self.cursor = batch.cursor;
        }
    }

    /// Renders the next pending event, letting other tasks run now and then: every event
    /// counts against tokio's budget, every [`WATCH_YIELD_BYTES`] rendered yield outright, and
    /// catch-up work waits for one of the hub's turns. Every wait comes before rendering.
    async fn render_next<T>(&mut self, render: &mut impl FnMut(&Event) -> T) -> Option<T> {
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
        Some(render(&e))
    }
}

/// Whether a watch of `range` from revision `start` reports `e`.
fn wanted(e: &Event, start: u64, range: &KeyRange) -> bool {
    e.revision() >= start && range.contains(&e.kv.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: u64, key: &str) -> Event {
        Event {
            kv: crate::kv::KeyValue {
                key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                mod_revision: revision,
                ..Default::default()
            },
            deleted: true,
            prev: None,
        }
    }

    fn key(k: &str) -> KeyRange {
        KeyRange::Key(bytes::Bytes::copy_from_slice(k.as_bytes()))
    }

    fn prefix(k: &str) -> KeyRange {
        KeyRange::Prefix(bytes::Bytes::copy_from_slice(k.as_bytes()))
    }

    #[test]
    fn a_watch_reports_its_key_or_prefix_from_its_start() {
        assert!(wanted(&event(5, "a"), 5, &key("a")));
        assert!(!wanted(&event(4, "a"), 5, &key("a")));
        assert!(!wanted(&event(5, "ab"), 5, &key("a")));
        assert!(wanted(&event(5, "ab"), 5, &prefix("a")));
        assert!(wanted(&event(5, "anything"), 1, &prefix("")));
        assert!(!wanted(&event(5, "b"), 1, &prefix("a")));
    }

    fn hub(window: usize) -> Arc<WatchHub> {
        let limits = crate::watch::WatchLimits {
            window,
            window_bytes: 1 << 20,
            max_watchers: 1,
        };
        Arc::new(WatchHub::new(limits, 0))
    }

    #[tokio::test]
    async fn watches_are_refused_by_kind() {
        let hub = hub(2);
        let service = WatchService::new(hub.clone());
        let req = |from_revision| WatchRequest {
            range: key("k"),
            from_revision,
        };
        hub.publish(vec![event(1, "k"), event(2, "k"), event(3, "k")]);
        let e = service.watch(req(1)).err();
        assert!(
            matches!(
                e,
                Some(ServiceError::Rejected(Rejection::Compacted {
                    requested: 1,
                    oldest: 2
                }))
            ),
            "{e:?}"
        );
        let first = service.watch(req(2));
        assert!(first.is_ok());
        let e = service.watch(req(2)).err();
        assert!(matches!(
            e,
            Some(ServiceError::Unavailable(Unavailable::TooManyWatchers {
                limit: 1
            }))
        ));
        drop(first);
        hub.close();
        let e = service.watch(req(0)).err();
        assert!(matches!(
            e,
            Some(ServiceError::Unavailable(Unavailable::WatchHubClosed))
        ));
    }

    #[tokio::test]
    async fn a_watcher_yields_its_events_and_ends_with_the_hub() {
        let hub = hub(10);
        let service = WatchService::new(hub.clone());
        hub.publish(vec![event(1, "k"), event(1, "x")]);
        hub.publish(vec![event(2, "k")]);
        let req = WatchRequest {
            range: key("k"),
            from_revision: 1,
        };
        let Ok(mut w) = service.watch(req) else {
            panic!("watch refused")
        };
        assert_eq!(w.next(|e| e.revision()).await, Some(WatchItem::Event(1)));
        assert_eq!(w.next(|e| e.revision()).await, Some(WatchItem::Event(2)));
        hub.close();
        assert_eq!(w.next(|e| e.revision()).await, None);
    }
}
