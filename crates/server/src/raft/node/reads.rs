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
    /// Keys with a prefix, in order, after `start_after`, at most `limit`, and no more keys
    /// once their keys and values reach `max_bytes` (always at least one key).
    Range {
        prefix: String,
        start_after: Option<String>,
        limit: usize,
        max_bytes: usize,
    },
}

/// What a read returns: matching keys and the store revision they were read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    pub revision: u64,
    pub kvs: Vec<(String, kv::Entry)>,
    /// A range stopped at its limit (of keys or bytes) with more keys after it.
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
                max_bytes,
            } => {
                let (kvs, more) = take_page(
                    self.kv.range_from(prefix, start_after.as_deref()),
                    *limit,
                    *max_bytes,
                );
                ReadResult {
                    revision,
                    kvs,
                    more,
                }
            }
        }
    }
}

/// The bytes a key counts for in a page's budget: its key and its value.
fn entry_bytes(key: &str, entry: &kv::Entry) -> usize {
    key.len().saturating_add(entry.value.len())
}

/// One page of a range: keys in order until `limit` keys, or until the keys and values taken
/// reach `max_bytes` — but always at least one key, so a page makes progress whatever the
/// size of a value. `more` is true if keys follow the page. Values are `Bytes`, so a page
/// shares them with the state machine instead of copying.
pub(super) fn take_page<'a>(
    mut range: impl Iterator<Item = (&'a String, &'a kv::Entry)>,
    limit: usize,
    max_bytes: usize,
) -> (Vec<(String, kv::Entry)>, bool) {
    let mut kvs = Vec::new();
    let mut bytes = 0usize;
    for (k, e) in range.by_ref() {
        if kvs.len() >= limit || (!kvs.is_empty() && bytes >= max_bytes) {
            return (kvs, true);
        }
        bytes = bytes.saturating_add(entry_bytes(k, e));
        kvs.push((k.clone(), e.clone()));
    }
    (kvs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(sizes: &[usize]) -> Vec<(String, kv::Entry)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let e = kv::Entry {
                    value: bytes::Bytes::from(vec![b'v'; n]),
                    create_revision: 1,
                    mod_revision: 1,
                    version: 1,
                };
                (format!("k{i}"), e)
            })
            .collect()
    }

    fn page(all: &[(String, kv::Entry)], limit: usize, max_bytes: usize) -> (usize, bool) {
        let (kvs, more) = take_page(all.iter().map(|(k, e)| (k, e)), limit, max_bytes);
        (kvs.len(), more)
    }

    #[test]
    fn a_page_stops_at_its_key_limit_or_byte_budget() {
        let all = entries(&[10, 10, 10, 10]);
        assert_eq!(page(&all, 10, 1000), (4, false));
        assert_eq!(page(&all, 4, 1000), (4, false));
        assert_eq!(page(&all, 3, 1000), (3, true));
        // Each entry is 12 bytes ("k0" + 10): the budget is reached after the second.
        assert_eq!(page(&all, 10, 24), (2, true));
        assert_eq!(page(&all, 10, 25), (3, true));
        // A value above the budget still makes a page of one.
        let big = entries(&[100, 1]);
        assert_eq!(page(&big, 10, 5), (1, true));
        assert_eq!(page(&big, 10, 0), (1, true));
        assert_eq!(page(&[], 10, 0), (0, false));
    }
}
