//! Raft, written here so that time and randomness stay inputs.
//!
//! [`RaftNode`] is a deterministic state machine. Call order:
//!
//! ```text
//!   let (node, boot) = RaftNode::restore(..., &stored, rng, now)?;   // once
//!   apply boot.snapshot, then boot.committed (silently: already decided)
//!   loop {
//!       one input: node.tick(now) | node.step(now, from, msg) | node.propose(..)
//!                | node.read_index(..) | node.transfer_leadership(..) | ...
//!       let ready = node.take_ready();
//!       1. persist ready.persist (fsync)        -- term, vote, log, snapshot
//!       2. send ready.messages                  -- depend on 1
//!       3. restore ready.snapshot, then apply ready.committed in order
//!       4. serve ready.reads once applied >= their index
//!   }
//! ```
//!
//! Features (etcd-raft / Raft thesis set): pre-vote and check-quorum
//! ([`election`]), pipelined AppendEntries with conflict-term repair and the
//! current-term commit rule ([`replication`]), snapshots with chunked
//! InstallSnapshot ([`snapshot`]), ReadIndex ([`read_index`]), leader
//! transfer ([`transfer`]) and single-server membership change with
//! learners ([`membership`]).

pub mod election;
pub mod log;
pub mod membership;
pub mod read_index;
pub mod replication;
pub mod snapshot;
pub mod transfer;

#[cfg(test)]
mod testnet;
#[cfg(test)]
mod tests;

use cohort_core::{decode, encode, NodeId, NodeRng, StoreOp, Stored, Time};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use log::{LogError, RaftLog};
pub use membership::{Membership, MembershipChange};
pub use read_index::ReadReady;
pub use replication::{Progress, ProgressState};
pub use snapshot::{Snapshot, SnapshotMeta};

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 1.
    pub index: u64,
    /// Term of the leader that created it.
    pub term: u64,
    /// What it carries.
    pub kind: EntryKind,
}

impl Entry {
    /// Size of what the entry carries, plus a small fixed overhead.
    pub fn payload_bytes(&self) -> usize {
        const OVERHEAD_BYTES: usize = 32;
        OVERHEAD_BYTES
            + match &self.kind {
                EntryKind::Noop => 0,
                EntryKind::Command(c) => c.len(),
                EntryKind::Config(m) => 16 * (m.voters.len() + m.learners.len()),
            }
    }
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Appended by every new leader so that it can commit in its term.
    Noop,
    /// An opaque state-machine command.
    Command(Vec<u8>),
    /// A new membership, in force from the moment it is appended.
    Config(Membership),
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners are always followers.
    Follower,
    /// Asking for pre-votes: would I win an election at `term + 1`?
    PreCandidate,
    /// Asking for votes in its own term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// What is persisted before any message that depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Who this node voted for in `term`.
    pub vote: Option<NodeId>,
    /// Highest index known committed (lets a restart re-apply at once).
    pub commit: u64,
}

/// Messages between Raft peers. Every message carries the sender's term
/// (for pre-votes: the term the sender would campaign in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftMsg {
    /// Would you vote for me at `term`? Changes nobody's term.
    PreVote {
        /// The term the sender would campaign in.
        term: u64,
        /// Sender's last log index.
        last_index: u64,
        /// Sender's last log term.
        last_term: u64,
    },
    /// Answer to [`RaftMsg::PreVote`].
    PreVoteResp {
        /// The pre-vote's term if granted, else the responder's term.
        term: u64,
        /// Whether the responder would vote.
        granted: bool,
    },
    /// RequestVote.
    Vote {
        /// The candidate's term.
        term: u64,
        /// Candidate's last log index.
        last_index: u64,
        /// Candidate's last log term.
        last_term: u64,
        /// Sent because the leader handed over (bypasses the leader lease).
        transfer: bool,
    },
    /// Answer to [`RaftMsg::Vote`].
    VoteResp {
        /// Responder's term.
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (also the heartbeat, with no entries).
    Append {
        /// Leader's term.
        term: u64,
        /// Index of the entry before `entries`.
        prev_index: u64,
        /// Its term.
        prev_term: u64,
        /// Entries to append, contiguous from `prev_index + 1`.
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: u64,
        /// Latest ReadIndex round; echoed back.
        read_seq: u64,
    },
    /// Answer to [`RaftMsg::Append`].
    AppendResp {
        /// Responder's term.
        term: u64,
        /// Whether the entries matched.
        outcome: AppendOutcome,
        /// Echo of the append's `read_seq`.
        read_seq: u64,
    },
    /// One chunk of InstallSnapshot.
    Snapshot {
        /// Leader's term.
        term: u64,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of `chunk` in the snapshot data.
        offset: u64,
        /// The bytes.
        chunk: Vec<u8>,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Answer to [`RaftMsg::Snapshot`].
    SnapshotResp {
        /// Responder's term.
        term: u64,
        /// The snapshot's last index.
        index: u64,
        /// How many bytes the responder holds (the next offset wanted).
        received: u64,
        /// Whether the snapshot is installed (or no longer needed).
        installed: bool,
    },
    /// Leader transfer: start an election now, bypassing pre-vote and lease.
    TimeoutNow {
        /// Leader's term.
        term: u64,
    },
}

impl RaftMsg {
    /// The term the message carries.
    pub fn term(&self) -> u64 {
        match self {
            RaftMsg::PreVote { term, .. }
            | RaftMsg::PreVoteResp { term, .. }
            | RaftMsg::Vote { term, .. }
            | RaftMsg::VoteResp { term, .. }
            | RaftMsg::Append { term, .. }
            | RaftMsg::AppendResp { term, .. }
            | RaftMsg::Snapshot { term, .. }
            | RaftMsg::SnapshotResp { term, .. }
            | RaftMsg::TimeoutNow { term } => *term,
        }
    }
}

/// The result of an append at a follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to `match_index`.
    Success {
        /// Highest index known to match.
        match_index: u64,
    },
    /// `prev_index` did not match; the hint lets the leader skip ahead.
    Reject {
        /// The rejected `prev_index`.
        rejected: u64,
        /// Term of the follower's conflicting entry at `rejected`, if any.
        conflict_term: Option<u64>,
        /// Where the leader should try next: the first index of
        /// `conflict_term`'s run, or the follower's last index + 1.
        conflict_index: u64,
    },
}

/// Raft settings, validated by the node's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// Smallest randomized election timeout; also the leader lease.
    pub election_timeout_ms_min: u64,
    /// Largest randomized election timeout; also the check-quorum period.
    pub election_timeout_ms_max: u64,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Most entries in one AppendEntries.
    pub append_entries_max: usize,
    /// Most payload bytes in one AppendEntries (beyond its first entry).
    pub append_bytes_max: usize,
    /// Most AppendEntries in flight to one follower (pipelining window).
    pub appends_inflight_max: usize,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Largest stored value or message accepted when decoding.
    pub message_bytes_max: usize,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            election_timeout_ms_min: 150,
            election_timeout_ms_max: 300,
            heartbeat_interval_ms: 50,
            append_entries_max: 64,
            append_bytes_max: 1 << 20,
            appends_inflight_max: 8,
            snapshot_chunk_bytes: 64 << 10,
            message_bytes_max: 8 << 20,
        }
    }
}

/// One batch of output; see the module docs for the order.
#[derive(Debug, Default)]
pub struct Ready {
    /// Writes to make durable first.
    pub persist: Vec<StoreOp>,
    /// Messages to send after `persist`.
    pub messages: Vec<(NodeId, RaftMsg)>,
    /// A snapshot to restore the state machine from, before `committed`.
    pub snapshot: Option<Snapshot>,
    /// Newly committed entries, in order, to apply.
    pub committed: Vec<Entry>,
    /// ReadIndex requests confirmed by a quorum.
    pub reads: Vec<ReadReady>,
    /// ReadIndex requests dropped because leadership was lost.
    pub reads_aborted: Vec<u64>,
    /// Whether this node gained or lost leadership during the batch.
    pub leadership_changed: bool,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.messages.is_empty()
            && self.snapshot.is_none()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.reads_aborted.is_empty()
            && !self.leadership_changed
    }
}

/// What a node restores at boot, before any input.
#[derive(Debug, Default)]
pub struct Boot {
    /// The snapshot to restore the state machine from.
    pub snapshot: Option<Snapshot>,
    /// The entries after it known committed, to re-apply silently.
    pub committed: Vec<Entry>,
}

/// What this node's Raft has done since boot, for operators' metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftCounters {
    /// Pre-vote rounds started (election timeouts that fired).
    pub pre_votes_started: u64,
    /// Real elections started (a pre-vote won, or a transfer).
    pub elections_started: u64,
    /// Terms in which this node became leader.
    pub terms_led: u64,
    /// Times the leader this node knows of changed to another node.
    pub leader_changes_seen: u64,
}

/// A snapshot of the node for checkers and operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// Current term.
    pub term: u64,
    /// Vote in `term`.
    pub vote: Option<NodeId>,
    /// Role.
    pub role: Role,
    /// Who this node believes leads `term`.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: u64,
    /// Highest index handed out for applying.
    pub applied: u64,
    /// Last compacted index.
    pub log_offset: u64,
    /// Last log index.
    pub last_index: u64,
    /// Current membership.
    pub membership: Membership,
}

/// Why a request to the Raft core was refused. Nothing changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RaftError {
    /// Only the leader takes this request; `leader` is the last one known.
    #[error("not the leader; try {leader:?}")]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// A leader transfer is in progress; proposals wait for the new leader.
    #[error("leader transfer in progress")]
    Transferring,
    /// A membership change is not yet committed; changes go one at a time.
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    /// The requested membership change is not valid now.
    #[error("invalid membership change: {reason}")]
    InvalidChange {
        /// Why.
        reason: String,
    },
    /// The persisted state could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl From<RaftError> for cohort_core::BootError {
    fn from(e: RaftError) -> Self {
        match e {
            RaftError::Log(e) => e.into(),
            other => cohort_core::BootError::Inconsistent {
                reason: other.to_string(),
            },
        }
    }
}

/// The Raft state machine. See the module docs for the call order.
#[derive(Debug)]
pub struct RaftNode {
    id: NodeId,
    cfg: RaftConfig,
    rng: NodeRng,
    term: u64,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    commit: u64,
    applied: u64,
    /// Membership in force (the latest in the log, or the snapshot's).
    membership: Membership,
    /// Index of the config entry that set `membership` (0: snapshot/initial).
    membership_index: u64,
    /// The membership of the latest snapshot, or the initial one.
    base_membership: Membership,
    snapshot: Option<Snapshot>,
    /// Persisted hard state, to persist only on change.
    persisted_hard: HardState,
    election_deadline: Time,
    heartbeat_deadline: Time,
    check_quorum_deadline: Time,
    /// Last time a current leader was heard from (the leader lease).
    leader_contact: Option<Time>,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    /// Index of this leader's first entry of its term.
    term_start_index: u64,
    reads: read_index::ReadQueue,
    transfer: Option<transfer::Transfer>,
    counters: RaftCounters,
    /// The leader last heard of, for [`RaftCounters::leader_changes_seen`].
    leader_seen: Option<NodeId>,
    incoming_snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Whether an assembled incoming snapshot is one the state machine can
    /// restore; one that is not is dropped before it touches the log.
    snapshot_check: fn(&[u8]) -> bool,
    /// Whether the leader holds back the appends that proposals, acks and
    /// commit advances call for until [`RaftNode::flush`] (see
    /// [`RaftNode::defer_sends`]).
    defer: bool,
    /// The commit index advanced since the last flush: followers that get
    /// no append in the flush get a heartbeat to learn it.
    commit_unsent: bool,
    /// The term and last index the previous flush sent up to: while they
    /// hold, only followers heard from since then can be sent anything new.
    flushed: (u64, u64),
    /// Followers whose messages arrived since the last flush.
    flush_touched: BTreeSet<NodeId>,
    /// The term and last log index as the previous flush ended: the driver
    /// made that batch's writes durable before handing in this batch's
    /// inputs, so this term (and the vote in it) and the log up to this
    /// index are on disk (see [`RaftNode::may_precede_persist`]).
    durable: (u64, u64),
    /// The term and last log index as the latest flush ended, durable from
    /// the next flush on.
    flushed_at_end: (u64, u64),
    /// The `now` of the latest input.
    clock: Time,
    ready: Ready,
}

impl RaftNode {
    /// Boots from `stored` (empty on first boot, when `initial` is the
    /// membership). Returns the node and what to restore before any input.
    pub fn restore(
        id: NodeId,
        initial: Membership,
        cfg: RaftConfig,
        stored: &Stored,
        rng: NodeRng,
        now: Time,
    ) -> Result<(RaftNode, Boot), RaftError> {
        let limit = cfg.message_bytes_max;
        let hard: HardState = match stored.get(log::HARD_KEY) {
            Some(b) => decode(b, limit).map_err(|e| LogError::Malformed {
                what: "hard state",
                key: log::HARD_KEY.to_vec(),
                reason: e.to_string(),
            })?,
            None => HardState::default(),
        };
        let snapshot: Option<Snapshot> = match stored.get(log::SNAP_KEY) {
            Some(b) => Some(decode(b, limit).map_err(|e| LogError::Malformed {
                what: "snapshot",
                key: log::SNAP_KEY.to_vec(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let log = RaftLog::restore(stored, limit)?;
        let snap_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
        // Both hold for any file this node wrote; a damaged file is refused.
        if snap_index < log.offset() {
            return Err(LogError::Inconsistent {
                reason: "the log is compacted past the snapshot",
            }
            .into());
        }
        if snap_index > log.last_index() {
            return Err(LogError::Inconsistent {
                reason: "the snapshot runs ahead of the log",
            }
            .into());
        }
        let commit = hard.commit.max(snap_index).min(log.last_index());
        let base_membership = snapshot
            .as_ref()
            .map_or(initial, |s| s.meta.membership.clone());
        let mut node = RaftNode {
            id,
            cfg,
            rng,
            term: hard.term,
            vote: hard.vote,
            role: Role::Follower,
            leader: None,
            log,
            commit,
            applied: commit,
            membership: base_membership.clone(),
            membership_index: 0,
            base_membership,
            snapshot: snapshot.clone(),
            persisted_hard: hard,
            election_deadline: now,
            heartbeat_deadline: now,
            check_quorum_deadline: now,
            leader_contact: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start_index: 0,
            reads: read_index::ReadQueue::default(),
            transfer: None,
            counters: RaftCounters::default(),
            leader_seen: None,
            incoming_snapshot: None,
            snapshot_check: |_| true,
            defer: false,
            commit_unsent: false,
            flushed: (0, 0),
            flush_touched: BTreeSet::new(),
            durable: (0, 0),
            flushed_at_end: (0, 0),
            clock: now,
            ready: Ready::default(),
        };
        node.recompute_membership();
        node.reset_election_deadline(now);
        let committed = node.log.range(snap_index, commit).to_vec();
        Ok((
            node,
            Boot {
                snapshot,
                committed,
            },
        ))
    }

    /// Takes the pending output batch. Carry it out in field order (see the
    /// module docs) before the next input.
    pub fn take_ready(&mut self) -> Ready {
        self.persist_hard_state();
        let mut ready = std::mem::take(&mut self.ready);
        if self.applied < self.commit {
            let from = self.applied.max(self.log.offset());
            ready.committed = self.log.range(from, self.commit).to_vec();
            self.applied = self.commit;
        }
        ready
    }

    /// The earliest time at which [`RaftNode::tick`] has something to do.
    /// The node's seeded RNG, for the state machine's own draws (retry
    /// jitter): one stream per node keeps a seeded run reproducible.
    pub fn rng(&mut self) -> &mut NodeRng {
        &mut self.rng
    }

    /// When the node next needs a timer.
    pub fn next_deadline(&self) -> Time {
        match self.role {
            Role::Leader => self.heartbeat_deadline.min(self.check_quorum_deadline),
            _ => self.election_deadline,
        }
    }

    /// Advances timers: heartbeats and check-quorum at the leader,
    /// elections elsewhere.
    pub fn tick(&mut self, now: Time) {
        self.clock = self.clock.max(now);
        if self.role == Role::Leader {
            self.tick_leader(now);
        } else if now >= self.election_deadline {
            self.reset_election_deadline(now);
            if self.membership.is_voter(self.id) {
                self.campaign_pre_vote(now);
            }
        }
    }

    /// The transport saw `peer`'s connection close. If `peer` is the
    /// leader this node follows, it most likely died: drop the lease and
    /// campaign soon instead of after a whole election timeout. Every
    /// follower sees the close at about the same time, so random delays
    /// would often start two elections at once and split the vote; the
    /// delay is instead this node's rank among the other voters (by id)
    /// times half a heartbeat interval, so the lowest-ranked voter goes
    /// first and the next only if it has not won by then. Pre-vote still
    /// protects a leader that is alive: a peer that still hears from it
    /// refuses.
    pub fn peer_lost(&mut self, now: Time, peer: NodeId) {
        self.clock = self.clock.max(now);
        if self.role != Role::Follower || self.leader != Some(peer) {
            return;
        }
        self.leader = None;
        self.leader_contact = None;
        let rank = self
            .membership
            .voters
            .iter()
            .filter(|v| **v != peer && **v < self.id)
            .count() as u64;
        let spacing_ms = (self.cfg.heartbeat_interval_ms / 2).max(1);
        self.election_deadline = self
            .election_deadline
            .min(now + Duration::from_millis(rank * spacing_ms));
    }

    /// Handles one message from `from`.
    pub fn step(&mut self, now: Time, from: NodeId, msg: RaftMsg) {
        self.clock = self.clock.max(now);
        if from == self.id {
            return;
        }
        if !self.handle_term(now, from, &msg) {
            return;
        }
        if self.defer && self.role == Role::Leader {
            self.flush_touched.insert(from);
        }
        match msg {
            RaftMsg::PreVote {
                term,
                last_index,
                last_term,
            } => self.on_pre_vote(now, from, term, last_index, last_term),
            RaftMsg::PreVoteResp { term, granted } => {
                self.on_pre_vote_resp(now, from, term, granted)
            }
            RaftMsg::Vote {
                last_index,
                last_term,
                ..
            } => self.on_vote(now, from, last_index, last_term),
            RaftMsg::VoteResp { granted, .. } => self.on_vote_resp(now, from, granted),
            RaftMsg::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_seq,
                ..
            } => self.on_append(now, from, prev_index, prev_term, entries, commit, read_seq),
            RaftMsg::AppendResp {
                outcome, read_seq, ..
            } => self.on_append_resp(now, from, outcome, read_seq),
            RaftMsg::Snapshot {
                meta,
                offset,
                chunk,
                done,
                ..
            } => self.on_snapshot(now, from, meta, offset, chunk, done),
            RaftMsg::SnapshotResp {
                index,
                received,
                installed,
                ..
            } => self.on_snapshot_resp(now, from, index, received, installed),
            RaftMsg::TimeoutNow { .. } => self.on_timeout_now(now, from),
        }
    }

    /// Proposes a state-machine command. Returns the entry's index; the
    /// entry may still be lost if leadership changes before it commits.
    pub fn propose(&mut self, now: Time, data: Vec<u8>) -> Result<u64, RaftError> {
        self.propose_entry(now, EntryKind::Command(data))
    }

    pub(crate) fn propose_entry(&mut self, now: Time, kind: EntryKind) -> Result<u64, RaftError> {
        self.clock = self.clock.max(now);
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(RaftError::Transferring);
        }
        let index = self.append_local(kind);
        if !self.defer {
            self.broadcast_append();
        }
        self.maybe_commit();
        Ok(index)
    }

    /// From now on the leader holds back the appends and commit heartbeats
    /// that proposals, acknowledgements and commit advances call for until
    /// [`RaftNode::flush`], which sends each follower one append with
    /// everything it lacks (as far as its window allows) and the latest
    /// commit index. Many proposals then share one AppendEntries, and many
    /// acknowledgements one commit heartbeat, instead of one each. The
    /// caller must call `flush` after every batch of inputs.
    pub fn defer_sends(&mut self) {
        self.defer = true;
    }

    /// Makes the sends held back since the last call (see
    /// [`RaftNode::defer_sends`]).
    pub fn flush(&mut self, now: Time) {
        self.clock = self.clock.max(now);
        self.durable = self.flushed_at_end;
        self.flushed_at_end = (self.term, self.log.last_index());
        let commit_unsent = std::mem::take(&mut self.commit_unsent);
        let touched = std::mem::take(&mut self.flush_touched);
        if self.role != Role::Leader {
            return;
        }
        // With no new entry, no new commit index and no new term, a
        // follower can be owed an append only if its own message (an ack
        // that opens its window, a reject, a snapshot's end) changed its
        // progress; the heartbeat tick walks every follower regardless.
        // Walking all of them per batch made a leader's work grow with the
        // square of the cluster (every ack is a batch).
        let now_at = (self.term, self.log.last_index());
        let peers: Vec<NodeId> = if commit_unsent || self.flushed != now_at {
            self.progress.keys().copied().collect()
        } else {
            touched.into_iter().collect()
        };
        self.flushed = now_at;
        for to in peers {
            let before = self.ready.messages.len();
            self.replicate_to(to);
            if commit_unsent && self.ready.messages.len() == before {
                self.send_heartbeat(to, false);
            }
        }
    }

    /// Whether `msg`, made in the batch the last [`RaftNode::flush`] ended,
    /// may be sent before that batch's writes are durable: only an append
    /// of a term that was durable before the batch began, naming a commit
    /// index the leader's durable log holds. Its entries need not be on the
    /// leader's disk yet (Raft thesis 10.2.1: the leader may write its log
    /// in parallel with replicating it): with other voters, a commit needs
    /// their acks, which the driver hands in only after the batch's writes
    /// are durable, for entries appended in earlier, durable batches. A
    /// lone voter commits its own entries in the batch that appends them:
    /// their commit index must wait for the write, or a crash could leave a
    /// learner applying an entry its leader lost. And a lone voter elects
    /// itself and appends in one batch: if it crashed before its term
    /// reached disk it could lead that term again with other entries.
    pub fn may_precede_persist(&self, msg: &RaftMsg) -> bool {
        let (term_durable, index_durable) = self.durable;
        matches!(msg, RaftMsg::Append { term, commit, .. }
            if *term == term_durable && *commit <= index_durable)
    }

    /// The last log index known durable: the log's end as the previous
    /// [`RaftNode::flush`] ended (see [`RaftNode::may_precede_persist`]).
    pub fn durable_index(&self) -> u64 {
        self.durable.1
    }

    /// A status for checkers and operators.
    pub fn status(&self) -> RaftStatus {
        RaftStatus {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            commit: self.commit,
            applied: self.applied,
            log_offset: self.log.offset(),
            last_index: self.log.last_index(),
            membership: self.membership.clone(),
        }
    }

    /// Read access to the log, e.g. for a log-matching checker.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Whether this node leads its term.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Current membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Commit index.
    pub fn commit(&self) -> u64 {
        self.commit
    }

    /// Whether this leader has committed an entry of its own term (before
    /// that, its view of the state machine may be behind).
    pub fn committed_in_term(&self) -> bool {
        self.role == Role::Leader && self.commit >= self.term_start_index
    }

    // ---- shared helpers ------------------------------------------------

    fn send(&mut self, to: NodeId, msg: RaftMsg) {
        assert_ne!(to, self.id, "a node never messages itself");
        self.ready.messages.push((to, msg));
    }

    fn persist_hard_state(&mut self) {
        let hard = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        };
        if hard != self.persisted_hard {
            self.ready.persist.push(StoreOp::Put {
                key: log::HARD_KEY.to_vec(),
                value: encode(&hard),
            });
            self.persisted_hard = hard;
        }
    }

    fn reset_election_deadline(&mut self, now: Time) {
        use rand::Rng;
        let ms = self
            .rng
            .gen_range(self.cfg.election_timeout_ms_min..=self.cfg.election_timeout_ms_max);
        self.election_deadline = now + Duration::from_millis(ms);
    }

    fn append_local(&mut self, kind: EntryKind) -> u64 {
        assert_eq!(self.role, Role::Leader, "only a leader appends on its own");
        let index = self.log.last_index() + 1;
        let entry = Entry {
            index,
            term: self.term,
            kind,
        };
        let is_config = matches!(entry.kind, EntryKind::Config(_));
        self.log.append(&[entry], &mut self.ready.persist);
        if is_config {
            self.recompute_membership();
        }
        index
    }

    /// Votes needed for a quorum of the current voters.
    /// What this node's Raft has done since boot.
    pub fn counters(&self) -> RaftCounters {
        self.counters
    }

    /// Records that `leader` is now the leader this node knows of.
    fn leader_heard(&mut self, leader: NodeId) {
        self.leader = Some(leader);
        if self.leader_seen != Some(leader) {
            self.leader_seen = Some(leader);
            self.counters.leader_changes_seen += 1;
        }
    }

    fn quorum(&self) -> usize {
        self.membership.voters.len() / 2 + 1
    }

    fn become_follower(&mut self, now: Time, term: u64, leader: Option<NodeId>) {
        assert!(term >= self.term, "terms never go backwards");
        let was_leader = self.role == Role::Leader;
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        let aborted = self.reads.abort_all();
        self.ready.reads_aborted.extend(aborted);
        if was_leader {
            self.ready.leadership_changed = true;
        }
        self.reset_election_deadline(now);
    }

    fn commit_to(&mut self, index: u64) {
        if index <= self.commit {
            return;
        }
        assert!(
            index <= self.log.last_index(),
            "commit only entries the log holds"
        );
        self.commit = index;
        if self.role == Role::Leader {
            self.on_leader_commit();
        }
    }
}
