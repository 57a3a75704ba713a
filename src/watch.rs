//! Watch: a bounded window of recent changes, and live fan-out of new ones.
//!
//! The raft loop publishes every applied change here, in revision order. A watcher that
//! starts at revision `N` first gets the window's events from `N` on, then live ones, with no
//! gap and no duplicate: the backlog is copied and the live subscription taken under the same
//! lock that publishing holds. A start before the window (the events are gone) is refused with
//! the oldest revision still available — like etcd's "compacted" error — and the client can
//! re-read the keys and watch from there.
//!
//! Memory is bounded twice: the window keeps at most `window` events, and each watcher's live
//! queue holds at most [`LIVE_QUEUE`] events; a watcher that falls further behind is cut off
//! (told where to resume) instead of growing memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::kv::Event;

/// Events a watcher may lag behind live publishing before it is cut off.
pub const LIVE_QUEUE: usize = 8192;

/// Why a watch cannot start where asked.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchError {
    /// The start is before the window; `oldest` is the oldest revision available now.
    Compacted { oldest: u64 },
    /// The node is shutting down.
    Closed,
}

/// The event window and the live channel.
pub struct WatchHub {
    state: Mutex<State>,
}

struct State {
    window: usize,
    history: VecDeque<Arc<Event>>,
    /// Events of revisions up to and including this one are no longer all held.
    compacted: u64,
    /// The newest revision published.
    current: u64,
    /// `None` once closed for shutdown: every live stream then ends.
    live: Option<broadcast::Sender<Revision>>,
}

/// All events of one revision, delivered live as one item: a watcher that falls behind loses
/// whole revisions, never part of one, so where to resume is exact.
pub type Revision = Arc<[Arc<Event>]>;

/// A started watch: the backlog to send first, then the live receiver.
pub struct Subscription {
    /// The first revision this watch reports (the requested one, or the next one for "now").
    pub start: u64,
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Revision>,
}

impl State {
    fn send(&self, group: Vec<Arc<Event>>) {
        if let (Some(live), false) = (&self.live, group.is_empty()) {
            // No receivers is fine: nobody is watching.
            let _ = live.send(group.into());
        }
    }
}

impl WatchHub {
    /// A hub whose history starts after `revision` (the state it was restored from).
    pub fn new(window: usize, revision: u64) -> WatchHub {
        let (live, _) = broadcast::channel(LIVE_QUEUE);
        WatchHub {
            state: Mutex::new(State {
                window: window.max(1),
                history: VecDeque::new(),
                compacted: revision,
                current: revision,
                live: Some(live),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Publishing never panics while holding the lock; a poisoned state is still coherent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes applied changes (called by the raft loop, in revision order).
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut s = self.lock();
        let mut group: Vec<Arc<Event>> = Vec::new();
        for e in events {
            let e = Arc::new(e);
            if group.first().is_some_and(|g| g.revision != e.revision) {
                s.send(std::mem::take(&mut group));
            }
            s.current = e.revision;
            s.history.push_back(e.clone());
            group.push(e);
        }
        s.send(group);
        while s.history.len() > s.window {
            if let Some(old) = s.history.pop_front() {
                s.compacted = old.revision;
            }
        }
        // Never keep part of a revision: drop the rest of the one just cut.
        let compacted = s.compacted;
        while s.history.front().is_some_and(|e| e.revision <= compacted) {
            s.history.pop_front();
        }
    }

    /// The whole state was replaced (a snapshot from the leader): history before it is gone.
    pub fn reset(&self, revision: u64) {
        let mut s = self.lock();
        s.history.clear();
        s.compacted = revision;
        s.current = revision;
    }

    /// Starts a watch at `from` (0: only future changes). Events before `from` are skipped.
    pub fn subscribe(&self, from: u64) -> Result<Subscription, WatchError> {
        let s = self.lock();
        let Some(live) = &s.live else {
            return Err(WatchError::Closed);
        };
        let from = if from == 0 { s.current + 1 } else { from };
        if from <= s.compacted {
            return Err(WatchError::Compacted {
                oldest: s.compacted + 1,
            });
        }
        let backlog = s
            .history
            .iter()
            .filter(|e| e.revision >= from)
            .cloned()
            .collect();
        Ok(Subscription {
            start: from,
            backlog,
            live: live.subscribe(),
        })
    }

    /// Ends every watch stream (graceful shutdown waits for open responses to finish).
    pub fn close(&self) {
        self.lock().live = None;
    }

    /// The oldest revision a watch can start from.
    pub fn oldest(&self) -> u64 {
        self.lock().compacted + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64, key: &str) -> Event {
        Event {
            revision,
            key: key.into(),
            value: Some(bytes::Bytes::from_static(b"v")),
        }
    }

    #[test]
    fn backlog_then_live_without_gaps() {
        let hub = WatchHub::new(100, 0);
        hub.publish(vec![ev(1, "a"), ev(2, "b")]);
        let mut sub = hub.subscribe(2).unwrap();
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].revision, 2);
        hub.publish(vec![ev(3, "c"), ev(4, "c"), ev(4, "d")]);
        let r3 = sub.live.try_recv().unwrap();
        assert_eq!((r3.len(), r3[0].revision), (1, 3));
        let r4 = sub.live.try_recv().unwrap();
        assert_eq!((r4.len(), r4[1].key.as_str()), (2, "d"));
        // From 0 means "from now on".
        let mut now = hub.subscribe(0).unwrap();
        assert!(now.backlog.is_empty());
        assert_eq!(now.start, 5);
        hub.publish(vec![ev(5, "d")]);
        assert_eq!(now.live.try_recv().unwrap()[0].revision, 5);
    }

    #[test]
    fn window_is_bounded_and_reports_the_oldest() {
        let hub = WatchHub::new(3, 0);
        for r in 1..=5 {
            hub.publish(vec![ev(r, "k")]);
        }
        assert_eq!(
            hub.subscribe(2).err(),
            Some(WatchError::Compacted { oldest: 3 })
        );
        assert_eq!(hub.subscribe(3).unwrap().backlog.len(), 3);
        // A revision with several events is dropped whole.
        hub.publish(vec![ev(6, "x"), ev(6, "y")]);
        assert_eq!(hub.oldest(), 5);
        let sub = hub.subscribe(5).unwrap();
        let revs: Vec<u64> = sub.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(revs, vec![5, 6, 6]);
        hub.reset(10);
        assert_eq!(hub.oldest(), 11);
        let mut sub = hub.subscribe(0).unwrap();
        hub.close();
        assert!(matches!(
            sub.live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert_eq!(hub.subscribe(0).err(), Some(WatchError::Closed));
    }
}
