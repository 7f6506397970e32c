//! Log replication: pipelined AppendEntries, the commit rule, fast repair.
//!
//! The leader keeps a [`Progress`] per follower. In `Probe` it sends one
//! append at a time and waits; in `Replicate` it streams batches of up to
//! `append_entries_max` entries (and `append_bytes_max` bytes) with up to `appends_inflight_max` in
//! flight; in `Snapshot` it sends InstallSnapshot chunks. A rejection
//! carries the follower's conflicting term and the first index of its run,
//! so a divergent follower is repaired in one round per term, not per entry.
//! The leader commits an index once a quorum of voters stores it *and* the
//! entry there is of the leader's own term (Raft §5.4.2).

use super::{AppendOutcome, Entry, RaftMsg, RaftNode, Role};
use cohort_core::{NodeId, Time};
use std::collections::VecDeque;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// One append at a time until the follower's log position is known.
    Probe,
    /// Streaming, pipelined appends.
    Replicate,
    /// Sending the snapshot at `index`; the follower holds `received` bytes.
    Snapshot {
        /// The snapshot's last index.
        index: u64,
        /// Bytes acknowledged so far.
        received: u64,
    },
}

/// The leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known replicated there.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// Replication state.
    pub state: ProgressState,
    inflight: VecDeque<u64>,
    paused: bool,
    pub(super) recent_active: bool,
    pub(super) read_acked: u64,
    acked_since_tick: bool,
}

impl Progress {
    pub(super) fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            paused: false,
            recent_active: false,
            read_acked: 0,
            acked_since_tick: false,
        }
    }

    pub(super) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.paused = false;
        self.inflight.clear();
        self.next_index = self.match_index + 1;
    }
}

impl RaftNode {
    /// Sends `to` whatever it is missing, as far as its window allows.
    pub(super) fn replicate_to(&mut self, to: NodeId) {
        while self.send_append(to, false) {}
    }

    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.replicate_to(to);
        }
    }

    /// Sends one append to `to` if its state allows. Returns whether more
    /// appends could follow immediately (pipelining).
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        match pr.state {
            ProgressState::Snapshot { .. } => return false,
            ProgressState::Probe if pr.paused && !allow_empty => return false,
            ProgressState::Replicate if pr.inflight.len() >= self.cfg.appends_inflight_max => {
                return false
            }
            _ => {}
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term_at(prev_index) else {
            self.start_snapshot(to);
            return false;
        };
        let entries: Vec<Entry> = if pr.next_index <= self.log.last_index() {
            self.log.slice(
                pr.next_index,
                self.cfg.append_entries_max,
                self.cfg.append_bytes_max,
            )
        } else {
            Vec::new()
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = entries.last().map(|e| e.index);
        let pr = self.progress.get_mut(&to).expect("checked above");
        let more = match (pr.state, last) {
            (ProgressState::Replicate, Some(last)) => {
                pr.next_index = last + 1;
                pr.inflight.push_back(last);
                true
            }
            _ => {
                pr.paused = true;
                false
            }
        };
        let msg = RaftMsg::Append {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
            read_seq: self.reads.seq(),
        };
        self.send(to, msg);
        more
    }

    /// Heartbeat to one follower: an empty append at its known match, so it
    /// learns the commit index and echoes the ReadIndex round.
    pub(super) fn send_heartbeat(&mut self, to: NodeId, tick: bool) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        match pr.state {
            ProgressState::Replicate => {
                let prev_index = pr.match_index;
                if let Some(prev_term) = self.log.term_at(prev_index) {
                    let msg = RaftMsg::Append {
                        term: self.term,
                        prev_index,
                        prev_term,
                        entries: Vec::new(),
                        commit: self.commit,
                        read_seq: self.reads.seq(),
                    };
                    self.send(to, msg);
                } else {
                    self.progress
                        .get_mut(&to)
                        .expect("checked above")
                        .become_probe();
                    self.send_append(to, true);
                }
            }
            ProgressState::Probe => {
                if !pr.paused {
                    self.send_append(to, true);
                }
            }
            ProgressState::Snapshot { .. } if tick => self.resend_snapshot_chunk(to),
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Heartbeats every follower. `tick`: the periodic one, which also
    /// resends a snapshot chunk that went unanswered.
    pub(super) fn broadcast_heartbeat(&mut self, tick: bool) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_heartbeat(to, tick);
        }
    }

    pub(super) fn on_heartbeat_tick(&mut self) {
        let last = self.log.last_index();
        for pr in self.progress.values_mut() {
            if pr.state == ProgressState::Replicate && !pr.acked_since_tick && pr.match_index < last
            {
                // Nothing acknowledged for a whole interval: assume the window
                // was lost and go back to the last known match.
                pr.become_probe();
            }
            pr.acked_since_tick = false;
            if pr.state == ProgressState::Probe {
                pr.paused = false;
            }
        }
        self.broadcast_heartbeat(true);
        self.broadcast_append();
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append(
        &mut self,
        now: Time,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
        read_seq: u64,
    ) {
        assert_ne!(
            self.role,
            Role::Leader,
            "two leaders in one term: {} and {from}",
            self.id
        );
        if self.role != Role::Follower {
            self.become_follower(now, self.term, Some(from));
        }
        self.leader_heard(from);
        self.leader_contact = Some(now);
        self.reset_election_deadline(now);
        let outcome = self.append_entries(prev_index, prev_term, entries, leader_commit);
        let msg = RaftMsg::AppendResp {
            term: self.term,
            outcome,
            read_seq,
        };
        self.send(from, msg);
    }

    fn append_entries(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
    ) -> AppendOutcome {
        if prev_index < self.commit {
            // Everything up to our commit matches the leader already.
            return AppendOutcome::Success {
                match_index: self.commit,
            };
        }
        match self.log.term_at(prev_index) {
            None => {
                return AppendOutcome::Reject {
                    rejected: prev_index,
                    conflict_term: None,
                    conflict_index: self.log.last_index() + 1,
                }
            }
            Some(t) if t != prev_term => {
                return AppendOutcome::Reject {
                    rejected: prev_index,
                    conflict_term: Some(t),
                    conflict_index: self.log.first_index_of_term_run(prev_index, t),
                }
            }
            Some(_) => {}
        }
        let last_new = prev_index + entries.len() as u64;
        let mut changed_config = false;
        let mut fresh = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            assert_eq!(e.index, prev_index + 1 + i as u64, "entries are contiguous");
            if !fresh.is_empty() {
                fresh.push(e);
                continue;
            }
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => {}
                Some(_) => {
                    assert!(e.index > self.commit, "a committed entry is never replaced");
                    changed_config |= self
                        .log
                        .range(e.index - 1, self.log.last_index())
                        .iter()
                        .any(|x| matches!(x.kind, super::EntryKind::Config(_)));
                    self.log.truncate_from(e.index, &mut self.ready.persist);
                    fresh.push(e);
                }
                None => fresh.push(e),
            }
        }
        changed_config |= fresh
            .iter()
            .any(|x| matches!(x.kind, super::EntryKind::Config(_)));
        self.log.append(&fresh, &mut self.ready.persist);
        if changed_config {
            self.recompute_membership();
        }
        self.commit_to(leader_commit.min(last_new));
        AppendOutcome::Success {
            match_index: last_new,
        }
    }

    pub(super) fn on_append_resp(
        &mut self,
        _now: Time,
        from: NodeId,
        outcome: AppendOutcome,
        read_seq: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.read_acked = pr.read_acked.max(read_seq);
        match outcome {
            AppendOutcome::Success { match_index } => {
                assert!(
                    match_index <= last,
                    "a follower cannot hold more than we sent"
                );
                if match_index > pr.match_index {
                    pr.match_index = match_index;
                    pr.acked_since_tick = true;
                }
                pr.next_index = pr.next_index.max(pr.match_index + 1);
                pr.inflight.retain(|i| *i > match_index);
                match pr.state {
                    ProgressState::Probe => {
                        pr.state = ProgressState::Replicate;
                        pr.paused = false;
                        pr.inflight.clear();
                        pr.next_index = pr.match_index + 1;
                    }
                    ProgressState::Snapshot { index, .. } if pr.match_index >= index => {
                        pr.become_probe();
                    }
                    _ => {}
                }
                let caught_up = pr.match_index == last;
                self.maybe_commit();
                self.advance_reads();
                if !self.defer {
                    self.replicate_to(from);
                }
                if caught_up {
                    self.maybe_send_timeout_now(from);
                }
            }
            AppendOutcome::Reject {
                rejected,
                conflict_term,
                conflict_index,
            } => {
                let stale = match pr.state {
                    ProgressState::Replicate => rejected <= pr.match_index,
                    ProgressState::Probe => rejected != pr.next_index - 1,
                    ProgressState::Snapshot { .. } => true,
                };
                if !stale {
                    let hint = match conflict_term {
                        Some(t) => match self.log.last_index_of_term(t) {
                            Some(i) if i <= rejected => i + 1,
                            _ => conflict_index,
                        },
                        None => conflict_index,
                    };
                    let pr = self.progress.get_mut(&from).expect("checked above");
                    pr.become_probe();
                    pr.next_index = hint.min(rejected).max(pr.match_index + 1);
                    self.send_append(from, true);
                }
                self.advance_reads();
            }
        }
    }

    /// Advances the commit index to the highest index stored on a quorum of
    /// voters, if that entry is of the current term (§5.4.2).
    pub(super) fn maybe_commit(&mut self) {
        assert_eq!(self.role, Role::Leader, "only the leader computes commits");
        let mut matched: Vec<u64> = self
            .membership
            .voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.log.last_index()
                } else {
                    self.progress.get(v).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&index) = matched.get(self.quorum() - 1) else {
            return;
        };
        if index > self.commit && self.log.term_at(index) == Some(self.term) {
            self.commit_to(index);
        }
    }

    /// Called when the leader's commit index advanced.
    pub(super) fn on_leader_commit(&mut self) {
        // Followers learn the new commit index at once, not a heartbeat
        // later: now, or in the flush that ends this batch.
        if self.defer {
            self.commit_unsent = true;
        } else {
            self.broadcast_heartbeat(false);
        }
        self.on_membership_committed();
    }
}
