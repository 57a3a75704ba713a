//! Linearizable reads: every read that arrives before a read-index round starts shares it.
//! When raft reports the round's read index, the batch waits until this node has applied that
//! index, then is answered from the state machine. Rounds that get no answer (no leader yet,
//! or a new leader that has not committed in its term drops them) are re-sent on a tick.

use raft::ReadState;
use tokio::sync::oneshot;

use super::{Io, Node};
use crate::state_machine::StateMachine;

/// A read waiting for its read-index round.
pub(super) type PendingRead<S> = (
    <S as StateMachine>::Query,
    oneshot::Sender<<S as StateMachine>::Read>,
);

pub(super) struct ReadBatch<S: StateMachine> {
    pub(super) requests: Vec<PendingRead<S>>,
    pub(super) index: Option<u64>,
    pub(super) issued_ticks: u32,
    pub(super) age_ticks: u32,
}

impl<S: StateMachine, I: Io> Node<S, I> {
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
                    let _ = reply.send(self.sm.query(&query));
                }
            }
        }
    }
}
