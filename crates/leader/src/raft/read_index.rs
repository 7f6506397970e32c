//! Linearizable reads through ReadIndex, without a log write per read.
//!
//! The leader notes `read_index = max(commit, first index of its term)`,
//! then proves it still leads by a heartbeat round (`read_seq`) answered by
//! a quorum of voters. Once confirmed, the read is served when the state
//! machine has applied `read_index`. A read still pending when leadership
//! is lost is aborted, and the client retries elsewhere.

use super::{RaftError, RaftNode, Role};
use cohort_core::Time;
use std::collections::VecDeque;

/// A read confirmed by a quorum: serve it once `applied >= index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadReady {
    /// The caller's tag.
    pub ctx: u64,
    /// The index the state machine must have applied first.
    pub index: u64,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    index: u64,
    seq: u64,
}

/// Reads waiting for their heartbeat round.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    seq: u64,
    pending: VecDeque<PendingRead>,
}

impl ReadQueue {
    /// The latest round number, sent with every append.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn abort_all(&mut self) -> Vec<u64> {
        self.pending.drain(..).map(|r| r.ctx).collect()
    }

    /// How many reads are waiting.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }
}

impl RaftNode {
    /// Starts a linearizable read tagged `ctx`. It comes back in
    /// [`super::Ready::reads`] (or `reads_aborted`).
    pub fn read_index(&mut self, _now: Time, ctx: u64) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        let index = self.commit.max(self.term_start_index);
        self.reads.seq += 1;
        let seq = self.reads.seq;
        self.reads
            .pending
            .push_back(PendingRead { ctx, index, seq });
        if self.quorum() > 1 {
            self.broadcast_heartbeat(false);
        }
        self.advance_reads();
        Ok(())
    }

    /// Number of reads waiting for confirmation.
    pub fn reads_pending(&self) -> usize {
        self.reads.len()
    }

    pub(super) fn advance_reads(&mut self) {
        while let Some(front) = self.reads.pending.front().copied() {
            let acked = self
                .membership
                .voters
                .iter()
                .filter(|v| {
                    **v == self.id
                        || self
                            .progress
                            .get(v)
                            .is_some_and(|p| p.read_acked >= front.seq)
                })
                .count();
            if acked < self.quorum() {
                break;
            }
            self.reads.pending.pop_front();
            self.ready.reads.push(ReadReady {
                ctx: front.ctx,
                index: front.index,
            });
        }
    }
}
