//! The log writer: a thread that owns the WAL and makes each `Ready`'s entries and hard state
//! durable, so the raft loop never waits for a disk.
//!
//! This is raft-rs's asynchronous persistence. The raft loop keeps the new entries in its
//! in-memory log, hands them here, and goes on taking proposals and acknowledgements while
//! the disk works. The writer takes every job queued meanwhile, writes them with **one** write
//! and **one** fsync (group commit across `Ready`s) — no fsync when all they carry is a higher
//! commit index (etcd's rule, see `needs_sync`) — and only then:
//! 1. sends the messages that had to wait for persistence (votes, append acknowledgements) —
//!    never before: a node acknowledges or votes only for what survives a crash;
//! 2. applies WAL compaction and prunes snapshot files older than a durable marker (the files
//!    are deleted by a helper thread, so an unlink never delays an fsync);
//! 3. publishes the highest persisted `Ready` number and wakes the raft loop, which tells
//!    raft-rs (`on_persist_ready`); raft-rs counts this node's own copy of an entry toward a
//!    quorum, and applies entries, only once they are persisted here.
//!
//! Jobs are processed strictly in order, so the WAL sees exactly the sequence the raft loop
//! produced (an overwritten suffix is replaced on replay; a snapshot marker comes after the
//! snapshot file it names, which the raft loop wrote before queueing it).
//!
//! A failed write or fsync is fatal: the writer records the error and stops, and the raft loop
//! stops the node (like etcd, which panics on a failed fsync: retrying it is not safe).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use raft::eraftpb::{Entry, HardState, Message, MessageType};

use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::storage::snapshot::SnapshotFiles;
use crate::storage::wal::{remove_segments, SnapshotMarker, Wal};
use crate::transport::{NodeQueue, Transport, TransportEvent};

enum Job {
    /// A `Ready`'s entries, hard state and the messages that must follow them.
    Append {
        number: u64,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        messages: Vec<Message>,
    },
    /// A snapshot marker (its file is already durable).
    Snapshot {
        marker: SnapshotMarker,
        discard_log: bool,
    },
    /// After the next sync: delete WAL segments below `index`, snapshot files below `prune`,
    /// and free the in-memory entries the compaction covers.
    Compact {
        index: u64,
        prune: u64,
        freed: VecDeque<Entry>,
    },
    /// Answered once everything queued before it is durable.
    Barrier(mpsc::Sender<Result<(), Arc<Error>>>),
}

/// What the log writer tells the raft loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    /// More is durable: see [`LogWriter::persisted`].
    Persisted,
    /// A write or fsync failed and the writer stopped: see [`LogWriter::failure`].
    Failed,
}

/// The raft loop's input queue, as the log writer sees it.
pub trait WriterQueue: NodeQueue + From<LogEvent> {}
impl<T: NodeQueue + From<LogEvent>> WriterQueue for T {}

struct Shared {
    persisted: AtomicU64,
    wal_bytes: AtomicU64,
    failure: Mutex<Option<Arc<Error>>>,
}

/// The raft loop's handle on the writer.
pub struct LogWriter {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl LogWriter {
    /// Starts the writer thread. It sends persisted messages through `transport` and wakes the
    /// raft loop through `wake`.
    pub fn start<E: WriterQueue>(
        wal: Wal,
        snaps: Arc<dyn SnapshotFiles>,
        transport: Transport<E>,
        wake: flume::Sender<E>,
    ) -> Result<LogWriter> {
        let shared = Arc::new(Shared {
            persisted: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(wal.size_bytes()),
            failure: Mutex::new(None),
        });
        let (jobs, rx) = mpsc::channel();
        let writer = Writer {
            wal,
            snaps,
            transport,
            wake,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io("spawning the log writer", e))?;
        Ok(LogWriter { jobs, shared })
    }

    fn push(&self, job: Job) -> Result<()> {
        self.jobs.send(job).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> Error {
        match self.failure() {
            Some(e) => Error::LogWriter(e),
            None => Error::io(
                "the log writer stopped",
                std::io::Error::other("it exited without a recorded failure"),
            ),
        }
    }

    /// Queues a `Ready`'s entries and hard state; `messages` are sent once they are durable.
    pub fn append(
        &self,
        number: u64,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        messages: Vec<Message>,
    ) -> Result<()> {
        self.push(Job::Append {
            number,
            entries,
            hard_state,
            messages,
        })
    }

    /// Queues a snapshot marker (the snapshot file must already be durable).
    pub fn snapshot(&self, marker: SnapshotMarker, discard_log: bool) -> Result<()> {
        self.push(Job::Snapshot {
            marker,
            discard_log,
        })
    }

    /// Queues compaction: WAL segments below `index`, snapshot files older than `prune`; the
    /// `freed` entries are dropped with the files, on the thread that deletes them.
    pub fn compact(&self, index: u64, prune: u64, freed: VecDeque<Entry>) -> Result<()> {
        self.push(Job::Compact {
            index,
            prune,
            freed,
        })
    }

    /// Waits until everything queued so far is durable.
    pub fn barrier(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.push(Job::Barrier(tx))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::LogWriter(e)),
            Err(_) => Err(self.stopped()),
        }
    }

    /// The highest `Ready` number whose contents are durable.
    pub fn persisted(&self) -> u64 {
        self.shared.persisted.load(Ordering::Acquire)
    }

    /// Why the writer stopped, if it did.
    pub fn failure(&self) -> Option<Arc<Error>> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bytes in the WAL.
    pub fn wal_bytes(&self) -> u64 {
        self.shared.wal_bytes.load(Ordering::Relaxed)
    }
}

struct Writer<E> {
    wal: Wal,
    snaps: Arc<dyn SnapshotFiles>,
    transport: Transport<E>,
    wake: flume::Sender<E>,
    shared: Arc<Shared>,
}

impl<E: WriterQueue> Writer<E> {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter());
            if let Err(e) = self.process(jobs) {
                tracing::error!(error = %e, "the log writer failed; stopping the node");
                let e = Arc::new(e);
                *self
                    .shared
                    .failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                // Fail whatever waits, now and later.
                for job in rx.try_iter() {
                    if let Job::Barrier(tx) = job {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                // If the queue is full the loop is busy and checks `failure` on its next turn.
                let _ = self.wake.try_send(E::from(LogEvent::Failed));
                return;
            }
        }
    }

    /// One batch: buffer every job's records, one write + fsync, then everything that had to
    /// wait for it.
    fn process(&mut self, jobs: Vec<Job>) -> Result<()> {
        // Whether the batch needs an fsync: see `needs_sync`.
        let mut durable = false;
        let mut number = None;
        let mut messages = Vec::new();
        // Compactions only ever move forward: the furthest one covers the others.
        let mut compaction: Option<(u64, u64)> = None;
        let mut barriers = Vec::new();
        let mut freed = Vec::new();
        for job in jobs {
            match job {
                Job::Append {
                    number: n,
                    entries,
                    hard_state,
                    messages: m,
                } => {
                    durable |= !entries.is_empty();
                    self.wal.append_entries(&entries)?;
                    if let Some(hs) = hard_state {
                        durable |= needs_sync(self.wal.hard_state(), &hs);
                        self.wal.set_hard_state(&hs)?;
                    }
                    number = Some(n);
                    messages.extend(m);
                }
                Job::Snapshot {
                    marker,
                    discard_log,
                } => {
                    durable = true;
                    self.wal.mark_snapshot(marker, discard_log);
                }
                Job::Compact {
                    index,
                    prune,
                    freed: entries,
                } => {
                    durable = true;
                    let (i, p) = compaction.unwrap_or((index, prune));
                    compaction = Some((i.max(index), p.max(prune)));
                    freed.push(entries);
                }
                Job::Barrier(tx) => {
                    durable = true;
                    barriers.push(tx);
                }
            }
        }
        if durable {
            let started = Instant::now();
            if barriers.is_empty() {
                self.wal.sync()?;
            } else {
                // Rare (a clean stop, a snapshot install): vouch for the last batch too.
                self.wal.seal()?;
            }
            METRICS
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        } else {
            self.wal.write()?;
        }
        // Durable now (what must be): acknowledge and vote.
        for m in self.transport.send(messages) {
            let event = if m.get_msg_type() == MessageType::MsgSnapshot {
                TransportEvent::SnapshotSent {
                    to: m.to,
                    ok: false,
                }
            } else {
                TransportEvent::Unreachable(m.to)
            };
            let _ = self.wake.try_send(E::from(event));
        }
        if let Some((index, prune)) = compaction {
            self.compact(index, prune, freed);
        }
        let bytes = self.wal.size_bytes();
        self.shared.wal_bytes.store(bytes, Ordering::Relaxed);
        METRICS.wal_bytes.set(bytes as i64);
        if let Some(n) = number {
            self.shared.persisted.store(n, Ordering::Release);
            // A full queue means the raft loop is busy and will look anyway.
            let _ = self.wake.try_send(E::from(LogEvent::Persisted));
        }
        for tx in barriers {
            let _ = tx.send(Ok(()));
        }
        Ok(())
    }

    /// Drops WAL segments below `index` from the log, and deletes them and the snapshot files
    /// older than `prune` on a thread of its own: deleting a 20 MB file takes milliseconds
    /// (more with online discard) that this thread's fsyncs must not wait for. A failed delete
    /// only leaves garbage that replay ignores and the next prune retries, so it is logged.
    /// The `freed` entries are dropped there too.
    fn compact(&mut self, index: u64, prune: u64, freed: Vec<VecDeque<Entry>>) {
        let segments = self.wal.detach_compacted(index);
        let dir = self.wal.dir().to_path_buf();
        let snaps = self.snaps.clone();
        let spawned = std::thread::Builder::new()
            .name("compact".into())
            .spawn(move || {
                drop(freed);
                let done = remove_segments(&dir, &segments).and_then(|()| snaps.prune(prune));
                if let Err(e) = done {
                    tracing::warn!(error = %e, "deleting compacted files failed");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start deleting compacted files");
        }
    }
}

/// Whether a new hard state must be durable before anything that follows it: a new term or
/// vote must (a node that forgets its vote could vote twice in a term), a commit index alone
/// need not. A commit index lost in a crash is learned again from the leader, and every entry
/// it covers was durable on a quorum before it was committed. This is etcd's rule
/// (`raft.MustSync`); it saves the fsync that each commit-only `Ready` would otherwise cost
/// (one per write on every node at low load).
pub fn needs_sync(old: &HardState, new: &HardState) -> bool {
    old.term != new.term || old.vote != new.vote
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::wal::tests::hs;

    #[test]
    fn only_a_new_term_or_vote_needs_an_fsync() {
        assert!(!needs_sync(&hs(2, 1, 5), &hs(2, 1, 9)));
        assert!(needs_sync(&hs(2, 1, 5), &hs(3, 1, 5)));
        assert!(needs_sync(&hs(2, 0, 5), &hs(2, 3, 5)));
    }
}
