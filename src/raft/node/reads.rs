//! Linearizable reads: every read that arrives before a read-index round starts shares it.
//! When raft reports the round's read index, the batch waits until this node has applied that
//! index, then is answered from the state machine. Rounds that get no answer (no leader yet,
//! or a new leader that has not committed in its term drops them) are re-sent on a tick.

use raft::ReadState;
use tokio::sync::oneshot;

use super::Node;
use crate::error::Result;
use crate::kv;

/// A read waiting for its read-index round.
pub(super) type PendingRead = (Query, oneshot::Sender<Result<ReadResult>>);

/// What a read asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// One key.
    Get(String),
    /// Keys with a prefix, in order, after `start_after`, at most `limit`.
    Range {
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    },
}

/// What a read returns: matching keys and the store revision they were read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    pub revision: u64,
    pub kvs: Vec<(String, kv::Entry)>,
    /// A range stopped at its limit with more keys after it.
    pub more: bool,
}

pub(super) struct ReadBatch {
    pub(super) requests: Vec<PendingRead>,
    pub(super) index: Option<u64>,
    pub(super) issued_ticks: u32,
    pub(super) age_ticks: u32,
}

impl Node {
    /// Starts one read-index round for every read queued since the last one.
    pub(super) fn flush_reads(&mut self) {
        if self.queued_reads.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        let requests = std::mem::take(&mut self.queued_reads);
        self.read_batches.insert(
            ctx,
            ReadBatch {
                requests,
                index: None,
                issued_ticks: 0,
                age_ticks: 0,
            },
        );
        self.raw.read_index(self.read_context(ctx));
    }

    pub(super) fn read_context(&self, ctx: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&self.incarnation.to_le_bytes());
        b.extend_from_slice(&ctx.to_le_bytes());
        b
    }

    pub(super) fn on_read_states(&mut self, states: Vec<ReadState>) {
        for rs in states {
            if rs.request_ctx.len() != 16 || rs.request_ctx[..8] != self.incarnation.to_le_bytes() {
                continue;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&rs.request_ctx[8..]);
            if let Some(batch) = self.read_batches.get_mut(&u64::from_le_bytes(b)) {
                batch.index.get_or_insert(rs.index);
            }
        }
        self.serve_reads();
    }

    /// Answers every read batch whose read index has been applied.
    pub(super) fn serve_reads(&mut self) {
        let applied = self.applied;
        let ready: Vec<u64> = self
            .read_batches
            .iter()
            .filter(|(_, b)| b.index.is_some_and(|i| i <= applied))
            .map(|(&ctx, _)| ctx)
            .collect();
        for ctx in ready {
            if let Some(batch) = self.read_batches.remove(&ctx) {
                for (query, reply) in batch.requests {
                    let _ = reply.send(Ok(self.query(&query)));
                }
            }
        }
    }

    /// Answers a read from the local state machine.
    pub(super) fn query(&self, query: &Query) -> ReadResult {
        let revision = self.kv.revision();
        match query {
            Query::Get(key) => ReadResult {
                revision,
                kvs: self
                    .kv
                    .get(key)
                    .map(|e| (key.clone(), e.clone()))
                    .into_iter()
                    .collect(),
                more: false,
            },
            Query::Range {
                prefix,
                start_after,
                limit,
            } => {
                let mut kvs: Vec<(String, kv::Entry)> = self
                    .kv
                    .range_from(prefix, start_after.as_deref())
                    .take(limit.saturating_add(1))
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
                let more = kvs.len() > *limit;
                kvs.truncate(*limit);
                ReadResult {
                    revision,
                    kvs,
                    more,
                }
            }
        }
    }
}
