//! [`LeaderlessNode`]: SWIM, placement, quorum writes and per-task Paxos
//! behind the [`cohort_core::Node`] contract.
//!
//! Call order is the contract's: `boot`, then one `handle_*` input at a time,
//! each followed by draining `actions()`. Messages a node sends to itself
//! (it is usually one of a task's replicas) are handled before the input
//! returns, so their `Persist` precedes, in the same batch, anything that
//! depends on it.

use crate::active::{ActiveSet, ClaimKey};
use crate::config::LeaderlessConfig;
use crate::membership::{load::LoadReport, Membership, GENERATION_KEY};
use crate::message::{LeaderlessMessage, ReadState};
use crate::paxos::acceptor::{self, AcceptReply, PrepareReply};
use crate::paxos::proposer::{Intent, Outcome, Proposal, Proposer, StartError};
use crate::paxos::Ballot;
use crate::permit::permit_key;
use crate::placement;
use crate::record::{record_key, task_of_key, Record, TaskHeader, TaskValue, RECORD_PREFIX};
use crate::retention::{
    header_digest, tombstone_key, Retained, Tombstone, Tombstones, HORIZON_KEY, TOMBSTONE_PREFIX,
};
use crate::ring::{self as ringp, Ring, RingChange, RingProposal, RingState, RingStep, RING_KEY};
use crate::tasks::{Holders, Op, Ops, ReadProgress, ReadPurpose, SubmitVerdict, WriteAnswer};
use cohort_core::schedule::{kept_bound, kept_for_ever};
use cohort_core::task::LEASE_EXPIRED_CLASS;
use cohort_core::{
    decode, encode, error_class, event_progress, Action, BootError, ClientError, ClientRequest,
    ClientResponse, Consistency, DrainRefusal, DrainStatus, Epoch, HeartbeatReply, Node, NodeId,
    NodeRng, Note, Peers, RequestId, RingRefusal, RingRequest, RingView, StoreOp, Stored,
    SupersedeReason, Task, TaskEvent, TaskEventKind, TaskEvents, TaskId, TaskOutcome, TaskState,
    Time, TimerToken,
};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The node's housekeeping timer.
const TICK: TimerToken = TimerToken(1);
/// A drain's deadline.
const DRAIN: TimerToken = TimerToken(2);

/// This node is draining (volatile: a restarted node is not).
#[derive(Clone, Copy, Debug)]
struct Drain {
    deadline: Time,
    /// The deadline passed: executions were dropped, and every claim of
    /// this node is released.
    handing_back: bool,
}

type Out = Vec<Action<LeaderlessMessage>>;

/// An execution this node runs, with what it needs to commit the result.
#[derive(Clone, Debug)]
struct Execution {
    epoch: Epoch,
    header: TaskHeader,
    version: u64,
    value: TaskValue,
}

/// A finished execution whose result is not yet chosen (or rejected).
#[derive(Clone, Debug)]
struct Finished {
    execution: Execution,
    outcome: TaskOutcome,
    /// Drawn when the handler returned: the retry jitter every proposal
    /// of this result carries (see [`cohort_core::retry`]).
    jitter: u32,
}

/// Why [`LeaderlessNode::steal`] did not start a claim. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StealError {
    /// This node holds no record of the task.
    #[error("this node is not a replica of the task")]
    NotAReplica,
    /// The task is not pending in this node's view.
    #[error("the task is not pending here")]
    NotPending,
    /// The task may not start yet (`not_before` or a retry backoff).
    #[error("the task may not start before {ready_at}")]
    NotReady {
        /// When it may.
        ready_at: Time,
    },
    /// A proposal for the task, or too many proposals, are in flight.
    #[error("a proposal is in flight")]
    Busy,
    /// The task carries a limit and this node holds no place for it yet
    /// (a claim asks its keeper first).
    #[error("the task is limited and no place in its limit is held here")]
    NoPermit,
}

/// Why [`LeaderlessNode::propose_ring_change`] did not start. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Only configured members can join (their addresses are known).
    #[error("{0} is not a configured member")]
    NotAMember(NodeId),
    /// This node runs a ring change already.
    #[error("a ring change is in flight here")]
    Busy,
}

mod doubts;
mod limits;

/// A node of a leaderless cluster.
#[derive(Debug)]
pub struct LeaderlessNode {
    peers: Peers,
    config: LeaderlessConfig,
    /// This boot's generation (persisted, bumped at every boot).
    generation: u64,
    /// The ring membership (the nodes tasks are placed on): the newest
    /// chosen ring this node knows, its acceptor state for the next ring
    /// instance, and the last few rings (persisted).
    ring: RingState,
    /// This node's ring change in flight.
    ring_proposal: Option<RingProposal>,
    /// When this node last gossiped its ring epoch.
    ring_gossiped_at: Option<Time>,
    /// The highest ring ballot round used or seen.
    ring_round_seen: u64,
    /// Where the rebalancing scan goes on from, and the ring epoch for
    /// which a whole pass found every record on its replicas.
    rebalance_cursor: Option<TaskId>,
    /// Where the next tick's window over the pending records past the
    /// head starts (see `claim_scan`).
    claim_cursor: Option<ClaimKey>,
    rebalanced_epoch: Option<u64>,
    rng: NodeRng,
    membership: Membership,
    /// Records of the tasks this node is a replica of.
    records: BTreeMap<TaskId, Record>,
    /// Ids of `records` whose state is not final, in claim order.
    active: ActiveSet,
    /// Final records by when their retention ends, and the purge horizon.
    retained: Retained,
    /// What the records purged here left (see [`crate::retention`]).
    tombstones: Tombstones,
    proposer: Proposer,
    ops: Ops,
    /// Handlers running here, by task.
    executing: BTreeMap<TaskId, Execution>,
    /// Results waiting to be committed, by task.
    finished: BTreeMap<TaskId, Finished>,
    /// Clients waiting for a cancel of each task.
    cancel_waiters: BTreeMap<TaskId, Vec<(RequestId, Time)>>,
    /// Clients whose linearizable read waits for this node's proposal on
    /// the task to end.
    read_waiters: BTreeMap<TaskId, Vec<(RequestId, Time)>>,
    /// Clients whose linearizable read found the task in doubt while this
    /// node ran another proposal for it: read again once that one ends.
    reread_waiters: BTreeMap<TaskId, Vec<(RequestId, Time)>>,
    /// Reads put into `reread_waiters`, ever (a counter).
    reads_again: u64,
    /// Messages to this node itself, handled before the input returns.
    loopback: VecDeque<LeaderlessMessage>,
    /// Set by the driver's first [`Node::flush`]: from then on, messages
    /// to peers wait in `outbox` until the batch ends and go out bundled.
    bundling: bool,
    /// Messages held for each peer until the batch's flush. Emptied at
    /// every flush, so it holds at most one batch's sends.
    outbox: BTreeMap<NodeId, Vec<LeaderlessMessage>>,
    /// Bundles from peers dropped as malformed (too many messages, or a
    /// bundle inside), since boot.
    bundles_refused: u64,
    /// A handler returned or a new record arrived since the last claim
    /// scan: the batch's flush claims, `claim_interval_ms` allowing.
    claim_soon: bool,
    /// When the last claim scan ran.
    claimed_at: Option<Time>,
    /// Claims this node started for tasks whose preferred live replica was
    /// full (work stealing).
    steals: u64,
    /// Submits looking their task up first (the ring changed), by request.
    /// At most one per operation in flight (`requests_in_flight_max`).
    submit_lookups: BTreeMap<RequestId, Task>,
    /// Reads that answer a task's event history rather than its state,
    /// with the submission time once a replica told it. Removed when the
    /// request is answered, so at most one per read in flight.
    events_requests: BTreeMap<RequestId, Option<Time>>,
    /// Batch submits waiting for their tasks' submits.
    batches: crate::batch::Batches,
    /// Where the anti-entropy scan goes on from.
    anti_entropy_cursor: Option<TaskId>,
    /// When this node first saw each pending task it is not the preferred
    /// claimer of still pending (at most one entry per active record).
    pending_seen: BTreeMap<TaskId, Time>,
    /// When this node last offered each pending task to a node carrying
    /// its worker labels (at most one entry per active record).
    offered: BTreeMap<TaskId, Time>,
    /// Claims this node proposes because it was offered the task (at most
    /// its capacity: an offer beyond it is declined).
    offer_claims: BTreeSet<TaskId>,
    /// Offers sent and offers taken (a claim proposed), ever.
    offers_sent: u64,
    offers_taken: u64,
    /// The highest priority among the ready tasks this node would offer
    /// and found no node with room for, as of its last claim pass: its
    /// load report carries it.
    waiting_priority: Option<i8>,
    /// The highest priority among the ready pending tasks this node
    /// replicates and can run, as of its last claim pass (load report).
    pending_priority: Option<i8>,
    /// Since when this node keeps a free slot for a task of higher
    /// priority another node announces (`priority_hold_ms`); cleared
    /// when it has no free slot, nothing is announced, or it took an offer.
    priority_hold_since: Option<Time>,
    /// Claim passes that kept a slot free for an announced task.
    priority_holds: u64,
    /// Final records purged here (retention, or `tasks_retained_max`).
    records_purged: u64,
    /// Copies of purged tasks refused (and their holders told).
    purged_copies_refused: u64,
    /// Copies of purged tasks this node held and dropped when told.
    purged_copies_dropped: u64,
    /// Copies of retired permit records told `Purged` while they may hide
    /// a chosen grant, being settled (at most one per record held).
    doubts: BTreeMap<TaskId, doubts::Doubt>,
    /// Settles started on such copies, and copies dropped once a majority
    /// of their replicas had purged them.
    doubts_settles: u64,
    doubts_dropped: u64,
    /// Reads answered `unavailable` because their newest copy was in doubt.
    doubtful_reads: u64,
    /// The schedule definitions and tombstones held (kept for ever, see
    /// `LeaderlessConfig::schedules_kept_max`).
    kept: BTreeSet<TaskId>,
    /// Draining: no new claims, hand back what is left at the deadline.
    drain: Option<Drain>,
    /// Concurrency and rate limits: grants, asks, permit records kept.
    limiter: limits::Limiter,
    out: Out,
}

impl LeaderlessNode {
    /// This node's view of the task's latest chosen version and value, if it
    /// is a replica of it. For checkers: every replica that holds version
    /// `k` of a task must hold the same value at `k`.
    pub fn record(&self, id: TaskId) -> Option<(u64, &TaskValue)> {
        self.records.get(&id).map(|r| (r.version, &r.value))
    }

    /// How many tombstones of purged records this node keeps.
    pub fn tombstones_held(&self) -> usize {
        self.tombstones.len()
    }

    /// Every record this node holds: `(task, version, value)` in task order.
    pub fn records(&self) -> impl Iterator<Item = (TaskId, u64, &TaskValue)> {
        self.records
            .iter()
            .map(|(&id, r)| (id, r.version, &r.value))
    }

    /// The submitted task `id`, if this node holds its record.
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.records.get(&id).map(|r| &r.header.task)
    }

    /// The nodes this node sees as live.
    pub fn live(&self) -> Vec<NodeId> {
        self.membership.live()
    }

    /// Whether this node sees `node` as live (without building the whole
    /// list: the scale benchmark asks this of thousands of nodes).
    pub fn is_live(&self, node: NodeId) -> bool {
        self.membership.is_live(node)
    }

    /// When this node saw each down notification from SWIM.
    pub fn downs(&self) -> &[(NodeId, Time)] {
        self.membership.downs()
    }

    /// What SWIM did at this node since boot.
    pub fn swim_counters(&self) -> crate::membership::SwimCounters {
        self.membership.counters()
    }

    /// Lifeguard's local health multiplier now, and the highest it reached.
    pub fn local_health(&self) -> (u32, u32) {
        (
            self.membership.local_health(),
            self.membership.local_health_peak(),
        )
    }

    /// The task's replicas under the newest ring this node knows, most
    /// preferred first (where a task submitted now goes, and where every
    /// task is moved).
    pub fn replicas_of(&self, id: TaskId) -> Vec<NodeId> {
        placement::replicas(id, &self.ring.ring.members, self.config.replicas)
    }

    /// The replicas named by the latest version of the task this node
    /// holds, if it holds a record of it.
    pub fn record_replicas(&self, id: TaskId) -> Option<&[NodeId]> {
        self.records.get(&id).map(|r| r.value.replicas.as_slice())
    }

    /// The newest chosen ring this node knows.
    pub fn ring(&self) -> &Ring {
        &self.ring.ring
    }

    /// Whether this node runs a ring change now.
    pub fn ring_change_in_flight(&self) -> bool {
        self.ring_proposal.is_some()
    }

    /// Asks the ring to add or remove a node: a Paxos instance among the
    /// members of the newest ring this node knows, retried (on top of any
    /// newer ring) until the ring reflects the change. `Ok` when started
    /// or when the ring reflects it already; the change is agreed once
    /// [`LeaderlessNode::ring`] shows it.
    pub fn propose_ring_change(&mut self, now: Time, change: RingChange) -> Result<(), RingError> {
        if let RingChange::Add(n) = change {
            if !self.peers.members.contains(&n) {
                return Err(RingError::NotAMember(n));
            }
        }
        if self.ring_proposal.is_some() {
            return Err(RingError::Busy);
        }
        if change.apply(&self.ring.ring).is_none() {
            return Ok(());
        }
        let ballot = self.next_ring_ballot();
        let p = RingProposal::new(change, self.ring.ring.clone(), ballot, now);
        self.ring_prepare(&p);
        self.ring_proposal = Some(p);
        self.run_loopback(now);
        Ok(())
    }

    /// Claims this node started for tasks whose preferred live replica
    /// reported itself full (work stealing), since boot.
    pub fn steals(&self) -> u64 {
        self.steals
    }

    /// Offers of labelled tasks this node sent, and offers it took (a claim
    /// proposed), since boot.
    pub fn offers(&self) -> (u64, u64) {
        (self.offers_sent, self.offers_taken)
    }

    /// The latest load `(running, capacity)` this node heard from `node`.
    pub fn load_of(&self, node: NodeId) -> Option<(u32, u32)> {
        self.membership.load(node).map(|l| (l.running, l.capacity))
    }

    /// Bundles from peers this node dropped whole as malformed (too many
    /// messages, or a bundle inside), since boot.
    pub fn bundles_refused(&self) -> u64 {
        self.bundles_refused
    }

    /// Paxos proposals this node runs now.
    pub fn proposals_in_flight(&self) -> usize {
        self.proposer.len()
    }

    /// Work stealing: claims the pending task `id` for this node through
    /// Paxos, whatever the preference order says. If another node claims it
    /// at the same time, exactly one claim is chosen.
    pub fn steal(&mut self, now: Time, id: TaskId) -> Result<(), StealError> {
        let rec = self.records.get(&id).ok_or(StealError::NotAReplica)?;
        if rec.value.state != TaskState::Pending {
            return Err(StealError::NotPending);
        }
        if now < rec.value.ready_at {
            return Err(StealError::NotReady {
                ready_at: rec.value.ready_at,
            });
        }
        if rec.value.start_by.is_some_and(|d| now > d) {
            return Err(StealError::NotPending);
        }
        let permit = self
            .grant_for(now, id, rec.value.epoch.next())
            .filter(|(_, at)| *at >= rec.value.ready_at);
        if rec.header.task.limit.is_some() && permit.is_none() {
            return Err(StealError::NoPermit);
        }
        let (header, version, value) = (rec.header.clone(), rec.version, rec.value.clone());
        self.propose(now, id, header, version, value, Intent::Claim { permit })
            .map_err(|_| StealError::Busy)?;
        self.run_loopback(now);
        Ok(())
    }

    fn me(&self) -> NodeId {
        self.peers.id
    }

    fn send(&mut self, to: NodeId, msg: LeaderlessMessage) {
        if to == self.me() {
            self.loopback.push_back(msg);
        } else if self.bundling {
            self.outbox.entry(to).or_default().push(msg);
        } else {
            self.out.push(Action::Send { to, msg });
        }
    }

    /// Sends what this batch's inputs held back for each peer, as few
    /// [`LeaderlessMessage::Bundle`]s as fit `bundle_messages_max` and the
    /// peer's `message_bytes_max` (a lone message goes as it is).
    fn send_bundles(&mut self) {
        // Room for the variant tag and the list's length (varints).
        let bytes_max = self.peers.limits.message_bytes_max.saturating_sub(16);
        for (to, msgs) in std::mem::take(&mut self.outbox) {
            for bundle in bundles(msgs, self.config.bundle_messages_max, bytes_max) {
                self.out.push(Action::Send { to, msg: bundle });
            }
        }
    }

    /// Handles each message of a peer's bundle in order, as if it had come
    /// on its own. A bundle over `bundle_messages_max`, and a bundle inside
    /// a bundle, come from no correct peer: they are dropped whole.
    fn on_bundle(&mut self, now: Time, from: NodeId, msgs: Vec<LeaderlessMessage>) {
        if msgs.len() > self.config.bundle_messages_max
            || msgs
                .iter()
                .any(|m| matches!(m, LeaderlessMessage::Bundle(_)))
        {
            self.bundles_refused += 1;
            return;
        }
        for msg in msgs {
            self.on_message(now, from, msg);
        }
    }

    /// The first of `replicas` this node sees live: the one that claims a
    /// task first, moves a record, or keeps a permit record.
    fn first_live(&self, replicas: &[NodeId]) -> Option<NodeId> {
        replicas
            .iter()
            .copied()
            .find(|&n| self.membership.is_live(n))
    }

    fn persist_record(&mut self, id: TaskId) {
        let rec = self.records.get(&id).expect("persisting a held record");
        if crate::permit::permit_key(&rec.header.task).is_some() {
            self.limiter.held_records.insert(id);
        }
        if kept_for_ever(&rec.header.task) {
            self.kept.insert(id);
        }
        self.out.push(Action::Persist(vec![StoreOp::Put {
            key: record_key(id),
            value: encode(rec),
        }]));
        // A record that arrives or changes placed under an older ring
        // wants a move: the rebalancing scan runs again.
        if rec.value.ring_epoch < self.ring.ring.epoch {
            self.rebalanced_epoch = None;
        }
        if !is_active(rec, self.peers.id) {
            self.active.remove(id);
        } else {
            self.active.insert_record(id, rec);
        }
        self.retained
            .set(id, purge_at(&self.peers.limits, &self.config, rec));
    }

    /// Drops the final records whose retention ended by `now` (on this
    /// node's clock, from the time the final value records: every replica
    /// purges at about the same time), and the ones due soonest while more
    /// than `Limits::tasks_retained_max` are held. None is taken back from
    /// a replica that has not purged it yet, see [`Self::ensure_record`]
    /// and [`crate::retention`].
    fn purge_expired(&mut self, now: Time) {
        let horizon = self.retained.horizon();
        let kept_max = self.peers.limits.tasks_retained_max;
        let mut deletes = Vec::new();
        while deletes.len() < PURGES_PER_TICK_MAX {
            let Some((id, due)) = self.retained.next_purge(now, kept_max) else {
                break; // the rest (if any) at the next tick
            };
            let rec = self.records.get(&id).expect("indexed records are held");
            assert_eq!(
                purge_at(&self.peers.limits, &self.config, rec),
                Some(due),
                "every change of a record is persisted, and indexed with it"
            );
            // A permit record is no client's task: its purge is no task's.
            let task = permit_key(&rec.header.task).is_none();
            let tombstone = Tombstone::of(rec, now);
            self.drop_record(id, tombstone, &mut deletes);
            self.records_purged += 1;
            if task {
                self.out.push(Action::Note(Note::Purged { task: id }));
            }
        }
        while deletes.len() < PURGES_PER_TICK_MAX {
            let c = &self.config;
            let Some(id) =
                self.tombstones
                    .next_evicted(now, c.tombstone_retained_ms, c.tombstones_max)
            else {
                break;
            };
            deletes.push(StoreOp::Delete {
                key: tombstone_key(id),
            });
        }
        if self.retained.horizon() != horizon {
            deletes.push(StoreOp::Put {
                key: HORIZON_KEY.to_vec(),
                value: encode(&self.retained.horizon()),
            });
        }
        if !deletes.is_empty() {
            self.out.push(Action::Persist(deletes));
        }
    }

    /// Drops `id`'s record for good, leaving `tombstone` (the store ops go
    /// to `ops`, to be persisted in one batch).
    fn drop_record(&mut self, id: TaskId, tombstone: Tombstone, ops: &mut Vec<StoreOp>) {
        self.records.remove(&id).expect("dropping a held record");
        self.kept.remove(&id);
        self.active.remove(id);
        self.retained.set(id, None);
        self.proposer.abandon(id);
        // A result of it waiting to be committed never will be (see
        // `commit_results`); a handler still running is told at its next
        // heartbeat.
        self.finished.remove(&id);
        ops.push(StoreOp::Delete {
            key: record_key(id),
        });
        ops.push(StoreOp::Put {
            key: tombstone_key(id),
            value: encode(&tombstone),
        });
        self.tombstones.insert(id, tombstone);
    }

    /// `header`'s record is being created where `id` has a tombstone that
    /// does not cover it. The same body: a purged id used again, a new
    /// task, and the tombstone goes. Another body's tombstone stays, to
    /// refuse that body's copies left behind (a permit record's older
    /// incarnation, which would otherwise win over a new one's first
    /// write, see `adopts`: `cohort sim` limits gate, seed 14 with
    /// permit records retired every few hundred ms).
    fn created_over_tombstone(&mut self, id: TaskId, header: &TaskHeader) {
        let same = |t: &Tombstone| t.header_digest == header_digest(header);
        if self.tombstones.get(id).is_some_and(same) {
            self.clear_tombstone(id);
        }
    }

    /// Forgets `id`'s tombstone, if any: a new task under a purged id.
    fn clear_tombstone(&mut self, id: TaskId) {
        if self.tombstones.remove(id) {
            self.out.push(Action::Persist(vec![StoreOp::Delete {
                key: tombstone_key(id),
            }]));
        }
    }

    /// Tells `to` that this node purged `id`, with its own tombstone: it
    /// holds no copy of that body, so it is a witness for a copy in doubt
    /// (`doubts`).
    fn tell_purged(&mut self, to: NodeId, id: TaskId) {
        let tombstone = self.tombstones.get(id).expect("purged here").clone();
        let relayed = false;
        self.send(
            to,
            LeaderlessMessage::Purged {
                id,
                tombstone,
                relayed,
            },
        );
    }

    /// A replica that purged `id` (`from`; `None`: relayed by a read)
    /// refused this node's copy of it: drop the copy too, when it is the
    /// purged task's and was left behind, unless it may hide a chosen
    /// value (see [`doubts`]).
    fn on_purged(&mut self, from: Option<NodeId>, id: TaskId, tombstone: Tombstone, now: Time) {
        let Some(rec) = self.records.get(&id) else {
            // A reader told by a replica that purged it: kept, to judge
            // the copies other replicas answer (`answer_read`); a permit
            // record's newer incarnation's replaces an older one's. And
            // persisted: this node refuses copies of it from now on and
            // says so as a witness (`tell_purged`), which it must not
            // forget at a restart and then accept a copy of the instance
            // in doubt after all (found in review).
            let newer = |held: &Tombstone| held.incarnation < tombstone.incarnation;
            if self.tombstones.get(id).is_none_or(newer) {
                let tombstone = Tombstone {
                    made_at: now,
                    ..tombstone
                };
                self.out.push(Action::Persist(vec![StoreOp::Put {
                    key: tombstone_key(id),
                    value: encode(&tombstone),
                }]));
                self.tombstones.insert(id, tombstone);
            }
            return;
        };
        if !tombstone.drops(rec) {
            return; // a new task under the id, or up to date
        }
        if tombstone.in_doubt(&rec.header, rec.version, rec.accepted.is_some()) {
            return self.purged_in_doubt(now, from, id, tombstone);
        }
        let tombstone = Tombstone {
            made_at: now,
            ..tombstone
        };
        let mut ops = Vec::new();
        self.drop_record(id, tombstone, &mut ops);
        self.purged_copies_dropped += 1;
        self.out.push(Action::Persist(ops));
    }

    /// A read's newest copy, unless it is a copy of a purged task left
    /// behind (a replica told this node so): then the task reads as
    /// absent, and the replicas of that copy are told. `Err(())` when
    /// that copy is in doubt ([`Tombstone::in_doubt`]): neither it nor
    /// absence is the answer until its holders settle it.
    fn unless_purged(
        &mut self,
        now: Time,
        id: TaskId,
        best: Option<ReadState>,
    ) -> Result<Option<ReadState>, ()> {
        let Some(b) = best else {
            return Ok(None);
        };
        let Some(t) = self.tombstones.get(id) else {
            return Ok(Some(b));
        };
        if !t.drops_copy(&b.header, b.version, &b.value, b.created_at) {
            return Ok(Some(b));
        }
        let in_doubt = t.in_doubt(&b.header, b.version, b.in_doubt);
        let tombstone = t.clone();
        let mut told: Vec<NodeId> = Vec::new();
        for &n in b.value.replicas.iter().chain(&b.header.replicas) {
            if n != self.me() && !told.contains(&n) {
                told.push(n);
                let tombstone = tombstone.clone();
                let relayed = true;
                self.send(
                    n,
                    LeaderlessMessage::Purged {
                        id,
                        tombstone,
                        relayed,
                    },
                );
            }
        }
        if self.records.contains_key(&id) {
            self.on_purged(None, id, tombstone, now);
        }
        if in_doubt {
            return Err(());
        }
        Ok(None)
    }

    /// Handles the messages this node sent itself.
    fn run_loopback(&mut self, now: Time) {
        let me = self.me();
        while let Some(msg) = self.loopback.pop_front() {
            self.on_message(now, me, msg);
        }
    }

    fn reply(&mut self, request: RequestId, reply: Result<ClientResponse, ClientError>) {
        if self.internal_reply(request) {
            return;
        }
        self.events_requests.remove(&request);
        match self.batches.reply(request, reply) {
            Err(reply) => self.out.push(Action::Reply { request, reply }),
            Ok(Some((request, reply))) => self.out.push(Action::Reply { request, reply }),
            Ok(None) => {}
        }
    }

    /// Checks the whole batch (a refusal changes nothing), then submits
    /// each task on its own; see [`crate::batch`] for what holds.
    fn submit_batch(&mut self, now: Time, request: RequestId, tasks: Vec<(TaskId, Task)>) {
        let unenforced = tasks.iter().enumerate().find_map(|(index, (_, task))| {
            self.refuse_unenforceable(task)
                .err()
                .map(|e| ClientError::BatchItem {
                    index,
                    error: Box::new(e),
                })
        });
        if let Some(e) = self.peers.limits.check_batch(&tasks).err().or(unenforced) {
            return self.reply(request, Err(e));
        }
        if self.ops.len() + tasks.len() > self.config.requests_in_flight_max {
            return self.reply(
                request,
                Err(ClientError::Overloaded {
                    what: "requests_in_flight_max".into(),
                    limit: self.config.requests_in_flight_max,
                }),
            );
        }
        if self.too_full_for(tasks.iter().map(|(id, _)| *id)) {
            return self.reply(request, Err(self.full()));
        }
        let subs = self
            .batches
            .open(request, tasks.iter().map(|(id, _)| *id).collect());
        for (sub, (id, task)) in subs.into_iter().zip(tasks) {
            self.submit(now, sub, id, task);
        }
    }

    /// Refuses a task this mode cannot run as asked: one of the permit
    /// records' reserved kind, or a limit above what a permit record holds.
    fn refuse_unenforceable(&self, task: &Task) -> Result<(), ClientError> {
        if task.kind == crate::permit::PERMIT_KIND {
            return Err(ClientError::InvalidTask {
                reason: format!(
                    "task kind {:?} is reserved for the cluster's limit records",
                    crate::permit::PERMIT_KIND
                ),
            });
        }
        match &task.limit {
            Some(limit) => self
                .limit_enforceable(limit)
                .map_err(|reason| ClientError::InvalidTask { reason }),
            None => Ok(()),
        }
    }

    fn unavailable(reason: &str) -> ClientError {
        ClientError::Unavailable {
            reason: reason.to_string(),
        }
    }

    fn arm_tick(&mut self, now: Time) {
        // A little jitter keeps the nodes' ticks from lining up.
        let jitter_ms = self.rng.gen_range(0..=self.config.tick_interval_ms / 4);
        self.out.push(Action::SetTimer {
            token: TICK,
            at: now + self.config.tick_interval() + Duration::from_millis(jitter_ms),
        });
    }

    // ---- client requests -------------------------------------------------

    fn submit(&mut self, now: Time, request: RequestId, id: TaskId, task: Task) {
        if let Err(e) = self
            .peers
            .limits
            .check_task(&task)
            .and_then(|()| self.refuse_unenforceable(&task))
        {
            return self.reply(request, Err(e));
        }
        if self.ops.len() >= self.config.requests_in_flight_max {
            return self.reply(
                request,
                Err(ClientError::Overloaded {
                    what: "requests_in_flight_max".into(),
                    limit: self.config.requests_in_flight_max,
                }),
            );
        }
        // A batch's tasks were admitted as a whole.
        if !crate::batch::is_sub_request(request) && self.too_full_for(std::iter::once(id)) {
            return self.reply(request, Err(self.full()));
        }
        self.submit_or_look_up(now, request, id, task);
    }

    /// A replica answered submit `op`'s write.
    fn write_answered(&mut self, from: NodeId, op: u64, id: TaskId, answer: WriteAnswer) {
        let Some((request, id, verdict)) = self.ops.write_reply(op, from, id, answer) else {
            return;
        };
        match verdict {
            SubmitVerdict::Waiting => {}
            SubmitVerdict::Durable => self.reply(request, Ok(ClientResponse::Accepted { id })),
            SubmitVerdict::Conflict => self.reply(request, Err(ClientError::IdConflict { id })),
            SubmitVerdict::Full => self.reply(request, Err(self.full())),
            SubmitVerdict::KeptFull => {
                let refused = ClientError::Overloaded {
                    what: "schedules_kept_max".into(),
                    limit: self.config.schedules_kept_max,
                };
                self.reply(request, Err(refused))
            }
        }
    }

    /// Whether this node, coordinating the new tasks `ids`, would hold
    /// more than `tasks_active_max` active tasks with those it is a replica
    /// of: it would refuse its own write of them, so it refuses before
    /// writing. Tasks it is no replica of are left to their replicas, which
    /// answer [`LeaderlessMessage::WriteFull`] when full: a full coordinator
    /// does not speak for replicas with room.
    fn too_full_for(&self, ids: impl Iterator<Item = TaskId>) -> bool {
        let me = self.peers.id;
        let mine = ids.filter(|id| self.replicas_of(*id).contains(&me)).count();
        mine > 0 && self.active.len() + mine > self.peers.limits.tasks_active_max
    }

    /// Whether this replica refuses to create `task`'s record for
    /// `schedules_kept_max`: a schedule's definition once it keeps that
    /// many, a deleted schedule's tombstone once it keeps twice that (a
    /// delete must go through while definitions are at the bound).
    fn kept_full_for(&self, task: &Task) -> bool {
        kept_bound(task, self.config.schedules_kept_max).is_some_and(|b| self.kept.len() >= b)
    }

    /// The refusal of a submit while replicas hold `tasks_active_max`
    /// active tasks.
    fn full(&self) -> ClientError {
        ClientError::Overloaded {
            what: "tasks_active_max".into(),
            limit: self.peers.limits.tasks_active_max,
        }
    }

    fn submit_or_look_up(&mut self, now: Time, request: RequestId, id: TaskId, task: Task) {
        if self.ring.ring.epoch > 0 {
            // The task may live on its replicas under an earlier ring (not
            // moved yet): look it up first, create it only if nobody has it.
            return self.look_up_then_create(now, request, id, task);
        }
        self.create(now, request, id, task);
    }

    /// Reads `id` from a majority of its replicas, then creates `task`
    /// there if none holds it (`read_done`).
    fn look_up_then_create(&mut self, now: Time, request: RequestId, id: TaskId, task: Task) {
        self.submit_lookups.insert(request, task);
        self.quorum_read(now, request, id, ReadPurpose::Submit);
    }

    /// Writes a new record of the task on its replicas under this node's
    /// ring.
    fn create(&mut self, now: Time, request: RequestId, id: TaskId, task: Task) {
        let header = TaskHeader {
            replicas: self.replicas_of(id),
            task,
            ring_epoch: self.ring.ring.epoch,
        };
        self.write(now, request, id, header);
    }

    /// Writes `header` to its replicas; the client is answered after `W`.
    fn write(&mut self, now: Time, request: RequestId, id: TaskId, header: TaskHeader) {
        let replicas = header.replicas.clone();
        let w = self.config.write_quorum_for(replicas.len());
        // Replicas learn the ring the task is placed under.
        let ring = (self.ring.ring.epoch > 0).then(|| self.ring.ring.clone());
        let op = self.ops.insert(Op::Submit {
            request,
            id,
            task: header.task.clone(),
            ring_epoch: header.ring_epoch,
            acks: BTreeSet::new(),
            refused: BTreeMap::new(),
            replicas: replicas.len(),
            w,
            deadline: now + self.config.request_timeout(),
        });
        for to in replicas {
            self.send(
                to,
                LeaderlessMessage::Write {
                    op,
                    id,
                    header: header.clone(),
                    ring: ring.clone(),
                },
            );
        }
    }

    fn get(&mut self, now: Time, request: RequestId, id: TaskId, consistency: Consistency) {
        match consistency {
            Consistency::Stale => {
                let reply = match self.records.get(&id) {
                    Some(r) => Ok(ClientResponse::State {
                        id,
                        state: r.value.state.clone(),
                    }),
                    None => Err(ClientError::NotFound { id }),
                };
                self.reply(request, reply);
            }
            Consistency::Linearizable => self.quorum_read(now, request, id, ReadPurpose::Get),
        }
    }

    fn quorum_read(&mut self, now: Time, request: RequestId, id: TaskId, purpose: ReadPurpose) {
        if self.ops.len() >= self.config.requests_in_flight_max {
            self.submit_lookups.remove(&request);
            return self.reply(
                request,
                Err(ClientError::Overloaded {
                    what: "requests_in_flight_max".into(),
                    limit: self.config.requests_in_flight_max,
                }),
            );
        }
        // The task lives on its replicas under one of the rings this node
        // remembers (it moves to the newest one's), or somewhere a newer
        // version it finds there names.
        let mut candidates = vec![self.replicas_of(id)];
        for ring in &self.ring.history {
            let c = placement::replicas(id, &ring.members, self.config.replicas);
            if !candidates.contains(&c) {
                candidates.push(c);
            }
        }
        let asked: BTreeSet<NodeId> = candidates.iter().flatten().copied().collect();
        let op = self.ops.insert(Op::Read {
            request,
            id,
            purpose,
            replies: BTreeMap::new(),
            asked: asked.clone(),
            candidates,
            ring_epoch: self.ring.ring.epoch,
            deadline: now + self.config.request_timeout(),
        });
        for to in asked {
            let msg = self.read_message(op, id);
            self.send(to, msg);
        }
    }

    /// A read of `id` for operation `op`. It carries this node's ring once
    /// that changed: the replica learns it before answering, so a submit's
    /// lookup that finds nothing leaves a majority of every placement it
    /// looked at refusing to create the task under an older ring (the
    /// creation fence, see ALGORITHM.md).
    fn read_message(&self, op: u64, id: TaskId) -> LeaderlessMessage {
        LeaderlessMessage::Read {
            op,
            id,
            ring_epoch: self.ring.ring.epoch,
            ring: (self.ring.ring.epoch > 0).then(|| self.ring.ring.clone()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_done(
        &mut self,
        now: Time,
        request: RequestId,
        id: TaskId,
        purpose: ReadPurpose,
        best: Option<ReadState>,
        read_epoch: u64,
        holders: Holders,
    ) {
        if purpose == ReadPurpose::Permit {
            return self.permit_check_done(now, request, best);
        }
        if purpose == ReadPurpose::Submit {
            let Some(mut task) = self.submit_lookups.remove(&request) else {
                return; // answered already (expired)
            };
            let Some(found) = best else {
                return self.create(now, request, id, task);
            };
            let key = permit_key(&task);
            if key.is_some() && permit_key(&found.header.task) == key {
                // A keeper creating a permit record found another
                // incarnation of it (another keeper's, or one this node
                // missed): that one is the key's record. A chosen value of
                // it is stored here at once (this node is a replica).
                task = found.header.task.clone();
                if found.version > 0 {
                    let me = self.me();
                    let (header, value) = (found.header.clone(), found.value.clone());
                    self.on_learn(now, me, id, header, found.version, value);
                }
            }
            if found.version > 0 {
                // A value was chosen: a majority holds the task.
                let reply = if found.header.task == task {
                    Ok(ClientResponse::Accepted { id })
                } else {
                    Err(ClientError::IdConflict { id })
                };
                return self.reply(request, reply);
            }
            // Older first writes of the task that can never be chosen are
            // dropped by whoever holds them: a replica holds one record per
            // id, so they would refuse the live one's write for ever.
            for (header, holding) in &holders.others_dead {
                for &n in holding {
                    let (id, header) = (id, header.clone());
                    self.send(n, LeaderlessMessage::Forget { id, header });
                }
            }
            if found.header.ring_epoch < read_epoch {
                // Created under an older ring than the one every replica
                // that answered now knows: none of them creates it any
                // more. Held by a majority it lives on (and is claimed
                // soon); dead once too few are left that could hold it.
                let held = holders.holding.len();
                if holders.dead {
                    for &n in &holders.holding {
                        let header = found.header.clone();
                        self.send(n, LeaderlessMessage::Forget { id, header });
                    }
                    return self.create(now, request, id, task);
                }
                let reply = if found.header.task != task {
                    Err(ClientError::IdConflict { id })
                } else if held >= self.config.write_quorum_for(holders.of) {
                    self.note_durable_first_write(request, &found.header);
                    Ok(ClientResponse::Accepted { id })
                } else {
                    Err(Self::unavailable(
                        "the task's first write is incomplete; retry once it is claimed",
                    ))
                };
                return self.reply(request, reply);
            }
            if found.header.task != task {
                return self.reply(request, Err(ClientError::IdConflict { id }));
            }
            // Make sure `W` of its own replicas hold it, with the same
            // header: the same version-0 value, one record.
            return self.write(now, request, id, found.header);
        }
        let Some(ReadState {
            mut header,
            mut version,
            mut value,
            mut in_doubt,
            created_at,
        }) = best
        else {
            return self.reply(request, Err(ClientError::NotFound { id }));
        };
        // This replica may have learned a later chosen value while the
        // read was out (its own proposal ended): answer from that one. A
        // settle on the older base would be for a moot instance, and if
        // the read found a body that lost the race for the id, for a
        // record no replica answers any more, so it would never end and
        // would hold the task's proposer slot here for ever. Nothing later
        // was chosen before the read began: its majority would have
        // accepted on top of this version, and one of them would have
        // answered with it.
        if let Some(rec) = self.records.get(&id).filter(|r| r.version > version) {
            header = rec.header.clone();
            version = rec.version;
            value = rec.value.clone();
            in_doubt = false;
        }
        if let Some(slot) = self.events_requests.get_mut(&request) {
            *slot = Some(created_at);
        }
        match purpose {
            ReadPurpose::Submit | ReadPurpose::Permit => unreachable!("answered above"),
            ReadPurpose::Get if !in_doubt => self.answer_value(request, id, &header.task, &value),
            ReadPurpose::Get => {
                // A value accepted after `version` may be chosen already:
                // finish that instance (or find it empty) before answering.
                match self.propose(now, id, header, version, value, Intent::Settle) {
                    Ok(()) => {
                        let deadline = now + self.config.request_timeout();
                        self.read_waiters
                            .entry(id)
                            .or_default()
                            .push((request, deadline));
                    }
                    // This node's own proposal for the task is under way
                    // (a claim, a result): a read that ends with it may
                    // not be linearizable (it may have been chosen, and
                    // overtaken, before this read began), so read again
                    // once it ends instead of refusing the client.
                    Err(StartError::Busy) => {
                        self.reads_again += 1;
                        let deadline = now + self.config.request_timeout();
                        self.reread_waiters
                            .entry(id)
                            .or_default()
                            .push((request, deadline));
                    }
                    Err(e) => {
                        let refused = self.refusal(e);
                        self.reply(request, Err(refused));
                    }
                }
            }
            ReadPurpose::Cancel => {
                if value.state.is_final() {
                    return self.reply(
                        request,
                        Ok(ClientResponse::State {
                            id,
                            state: value.state,
                        }),
                    );
                }
                match self.propose(now, id, header, version, value, Intent::Cancel) {
                    Ok(()) => {
                        let deadline = now + self.config.request_timeout();
                        self.cancel_waiters
                            .entry(id)
                            .or_default()
                            .push((request, deadline));
                    }
                    Err(e) => {
                        let refused = self.refusal(e);
                        self.reply(request, Err(refused));
                    }
                }
            }
        }
    }

    /// A task's state and history; linearizable like [`Self::get`].
    fn events(&mut self, now: Time, request: RequestId, id: TaskId, consistency: Consistency) {
        match consistency {
            Consistency::Stale => {
                let events_max = self.peers.limits.task_events_max;
                let reply = match self.records.get(&id) {
                    Some(r) => Ok(events_response(
                        id,
                        &r.header.task,
                        r.created_at,
                        &r.value,
                        events_max,
                    )),
                    None => Err(ClientError::NotFound { id }),
                };
                self.reply(request, reply);
            }
            Consistency::Linearizable => {
                self.events_requests.insert(request, None);
                self.quorum_read(now, request, id, ReadPurpose::Get);
            }
        }
    }

    /// Answers a linearizable read with the chosen `value`: its state, or
    /// its history if the request asked for that.
    fn answer_value(&mut self, request: RequestId, id: TaskId, task: &Task, value: &TaskValue) {
        let reply = match self.events_requests.get(&request) {
            Some(created_at) => {
                let first = value.history.events.first().map_or(Time::ZERO, |e| e.at);
                let created_at = created_at.unwrap_or(first);
                let events_max = self.peers.limits.task_events_max;
                events_response(id, task, created_at, value, events_max)
            }
            None => ClientResponse::State {
                id,
                state: value.state.clone(),
            },
        };
        self.reply(request, Ok(reply));
    }

    // ---- replica side ------------------------------------------------------

    fn on_write(&mut self, now: Time, from: NodeId, op: u64, id: TaskId, header: TaskHeader) {
        if !header.replicas.contains(&self.me()) {
            return; // not ours: no answer
        }
        let same = match self.records.get(&id) {
            // The same task placed under another ring: this record cannot
            // count for that one (they are different version-0 values);
            // at most one of them lives, see the creation fence.
            Some(rec) if rec.header.task == header.task && rec.header != header => return,
            Some(rec) => rec.header.task == header.task,
            None => {
                if header.ring_epoch < self.ring.ring.epoch {
                    // The creation fence: a task is created only under the
                    // newest ring its replicas know.
                    let ring = self.ring.ring.clone();
                    return self.send(from, LeaderlessMessage::WriteFenced { op, id, ring });
                }
                if self.active.len() >= self.peers.limits.tasks_active_max {
                    return self.send(from, LeaderlessMessage::WriteFull { op, id });
                }
                if self.kept_full_for(&header.task) {
                    return self.send(from, LeaderlessMessage::WriteKeptFull { op, id });
                }
                if let Some(t) = self.tombstones.get(id) {
                    let initial = TaskValue::initial(&header);
                    if permit_key(&header.task).is_some() && t.covers(&header, 0, &initial) {
                        // A permit record's incarnation purged here (or an
                        // older one) is never created again: its keeper
                        // creates a new one.
                        self.purged_copies_refused += 1;
                        return self.tell_purged(from, id);
                    }
                }
                self.created_over_tombstone(id, &header);
                self.abandon_foreign_proposal(id, Some(&header));
                self.records.insert(id, Record::new(header, now));
                self.persist_record(id);
                self.claim_soon = true;
                true
            }
        };
        self.send(from, LeaderlessMessage::WriteReply { op, id, same });
    }

    /// Drops a version-0 record a submit's lookup found dead (see
    /// `read_done`): it can never be chosen, and the task is created anew
    /// under the newer ring. Anything else is kept.
    fn on_forget(&mut self, id: TaskId, header: TaskHeader) {
        let dead = self.records.get(&id).is_some_and(|r| {
            r.version == 0
                && r.accepted.is_none()
                && r.header == header
                && header.ring_epoch < self.ring.ring.epoch
        });
        if dead {
            self.records.remove(&id);
            self.kept.remove(&id);
            self.active.remove(id);
            self.retained.set(id, None);
            self.out.push(Action::Persist(vec![StoreOp::Delete {
                key: record_key(id),
            }]));
            self.abandon_foreign_proposal(id, None);
        }
    }

    /// Ends this node's proposal on `id` if it was made for another record
    /// of the task than `header`'s (`None`: than any record). Its acceptors
    /// hold the live record and never answer it (`Foreign`), and it would
    /// keep the task's slot here for ever.
    fn abandon_foreign_proposal(&mut self, id: TaskId, header: Option<&TaskHeader>) {
        let foreign = self
            .proposer
            .header(id)
            .is_some_and(|h| header.is_none_or(|header| h != header));
        if foreign {
            self.proposer.abandon(id);
        }
    }

    /// Creates (and persists) the record from a header and a chosen value
    /// a proposer or learner sent, if the value names this node a replica
    /// (a task moved here is written with its chosen state before this
    /// node answers anything about it). Returns whether the record now
    /// exists with this header's task. A version-0 record written under
    /// an older ring than this node's is not created (the creation fence);
    /// a later version is (a value was chosen: the task lives).
    ///
    /// A replica that gets the task this way did not see it submitted: it
    /// reports the submission at its first decided event's time, or now
    /// if that is earlier (clocks differ).
    fn ensure_record(
        &mut self,
        now: Time,
        from: Option<NodeId>,
        id: TaskId,
        header: &TaskHeader,
        version: u64,
        value: &TaskValue,
    ) -> bool {
        let covered = self
            .tombstones
            .get(id)
            .is_some_and(|t| t.covers(header, version, value));
        match self.records.get(&id) {
            Some(rec) if rec.header.task != header.task && covered => {
                // A copy of a body purged here, while this replica holds
                // another: a permit record's older incarnation. Its holder
                // is told, as when this replica holds none: a keeper left
                // with it would otherwise propose on it for ever, answered
                // by no one (`cohort sim` limits gate, seed 128 with permit
                // records retired every few hundred ms).
                self.purged_copies_refused += 1;
                if let Some(from) = from.filter(|&f| f != self.me()) {
                    self.tell_purged(from, id);
                }
                false
            }
            Some(rec)
                if rec.header.task != header.task
                    && adopts(rec, version, value, self.me())
                    && value.permits.retired_at.is_none() =>
            {
                // (A retired permit record's value is what an older
                // incarnation left behind, not a race's winner: the next
                // incarnation's first write keeps its body.)
                // This replica's first write lost a race with another body:
                // a value of that body is chosen, so that body is the task.
                let first = value.history.events.first().map_or(now, |e| e.at);
                let created_at = rec.created_at.min(first);
                self.abandon_foreign_proposal(id, Some(header));
                self.records
                    .insert(id, Record::new(header.clone(), created_at));
                self.persist_record(id);
                true
            }
            Some(rec) => rec.header.task == header.task,
            None => {
                // A replica holds the record; so does a node that runs the
                // task without being one (it took an offer), so that it
                // finishes, or after a restart releases, its claim.
                let runs_it =
                    matches!(value.state, TaskState::Running { node, .. } if node == self.me());
                if !value.replicas.contains(&self.me()) && !runs_it {
                    return false;
                }
                if version == 0 && header.ring_epoch < self.ring.ring.epoch {
                    return false;
                }
                if let Some(t) = self.tombstones.get(id) {
                    if t.covers(header, version, value) {
                        // Purged here: never vote on it again; its holder
                        // drops a copy left behind.
                        self.purged_copies_refused += 1;
                        if let Some(from) = from.filter(|&f| f != self.me()) {
                            self.tell_purged(from, id);
                        }
                        return false;
                    }
                    self.created_over_tombstone(id, header);
                }
                // (A retired permit record is not refused by its age: a
                // grant accepted on top of it may be chosen, see
                // `purge_at`. The tombstones of the replicas that purged
                // it refuse its copies.)
                let final_at = value.history.events.last().map(|e| e.at);
                let expired = final_at
                    .and_then(|at| self.peers.limits.purge_at(&header.task, &value.state, at))
                    .is_some_and(|due| self.retained.expired(due, now));
                if expired {
                    // Purged here (or never held): a replica whose clock is
                    // behind, or that holds fewer records, must not hand it
                    // back.
                    return false;
                }
                self.abandon_foreign_proposal(id, Some(header));
                let first = value.history.events.first().map_or(now, |e| e.at);
                self.records
                    .insert(id, Record::new(header.clone(), first.min(now)));
                self.persist_record(id);
                true
            }
        }
    }

    /// Phase 1a at this acceptor, for the instance on top of the chosen
    /// `(version, base)`.
    fn on_prepare(
        &mut self,
        now: Time,
        from: NodeId,
        (id, header): (TaskId, TaskHeader),
        (version, base): (u64, TaskValue),
        ballot: Ballot,
    ) {
        if !self.ensure_record(now, Some(from), id, &header, version, &base) {
            return; // a different task under this id, or not a replica
        }
        let rec = self.records.get_mut(&id).expect("ensured");
        let before = rec.version;
        let (reply, changed) = acceptor::on_prepare(rec, version, &base, ballot);
        let after = (rec.version, rec.value.clone(), rec.header.clone());
        if changed {
            self.persist_record(id);
        }
        if after.0 > before {
            self.on_learned(now, id, &after.2, after.0, &after.1);
        }
        let msg = match reply {
            PrepareReply::Promise(accepted) => LeaderlessMessage::Promise {
                id,
                version,
                ballot,
                accepted,
            },
            PrepareReply::Reject(promised) => LeaderlessMessage::Reject {
                id,
                version,
                ballot,
                promised,
            },
            PrepareReply::Ahead(version, value) => LeaderlessMessage::Ahead { id, version, value },
            PrepareReply::Foreign => return,
        };
        self.send(from, msg);
    }

    fn on_accept(
        &mut self,
        from: NodeId,
        id: TaskId,
        version: u64,
        ballot: Ballot,
        value: TaskValue,
    ) {
        let Some(rec) = self.records.get_mut(&id) else {
            return;
        };
        let (reply, changed) = acceptor::on_accept(rec, version, ballot, &value);
        if changed {
            self.persist_record(id);
        }
        let msg = match reply {
            AcceptReply::Accepted => LeaderlessMessage::Accepted {
                id,
                version,
                ballot,
            },
            AcceptReply::Reject(promised) => LeaderlessMessage::Reject {
                id,
                version,
                ballot,
                promised,
            },
            // No answer: an `Ahead` names no body, and this replica may
            // hold another body under the id than the proposer's (an accept,
            // unlike a prepare, does not say whose). The proposer's round
            // times out and its next prepare, which does, gets the answer.
            AcceptReply::Ahead(..) | AcceptReply::Behind | AcceptReply::Unpromised => return,
        };
        self.send(from, msg);
    }

    /// A chosen `(version, value)` arrived (a `Learn`, or an anti-entropy
    /// repair). Replicas store it; everyone acts on it.
    fn on_learn(
        &mut self,
        now: Time,
        from: NodeId,
        id: TaskId,
        header: TaskHeader,
        version: u64,
        value: TaskValue,
    ) {
        if self.ensure_record(now, Some(from), id, &header, version, &value) {
            let rec = self.records.get_mut(&id).expect("ensured");
            if rec.learn(version, &value) {
                self.persist_record(id);
            }
        }
        self.on_learned(now, id, &header, version, &value);
    }

    /// Acts on a chosen value, however it became known: start the handler
    /// of a claim for this node, settle waiting cancels and results, end a
    /// proposal of this node that is now moot.
    fn on_learned(
        &mut self,
        now: Time,
        id: TaskId,
        header: &TaskHeader,
        version: u64,
        value: &TaskValue,
    ) {
        // A learned value older than this replica's record is history.
        let stale = self.records.get(&id).is_some_and(|r| r.version > version);
        if let TaskState::Running { node, epoch } = value.state {
            let current = self.executing.get(&id).map(|e| e.epoch);
            let done = self.finished.get(&id).map(|f| f.execution.epoch);
            // Run only a claim of this boot, newer than anything run here;
            // a claim of an earlier boot is re-claimed by `claim_work`.
            // A draining node starts nothing new: a claim of its chosen
            // after the drain began is released by `claim_work`.
            let fresh = !stale
                && self.drain.is_none()
                && node == self.me()
                && value.runner_boot == self.generation
                && current.is_none_or(|e| e < epoch)
                && done.is_none_or(|e| e < epoch);
            if fresh {
                self.executing.insert(
                    id,
                    Execution {
                        epoch,
                        header: header.clone(),
                        version,
                        value: value.clone(),
                    },
                );
                self.out.push(Action::Execute {
                    id,
                    epoch,
                    task: header.task.clone(),
                });
            }
        }
        // A result of an older assignment can no longer be committed.
        if let Some(f) = self.finished.get(&id) {
            let still = matches!(value.state, TaskState::Running { node, epoch } if node == self.me() && epoch == f.execution.epoch);
            if !still && version > f.execution.version {
                self.finished.remove(&id);
            }
        }
        if value.state.is_final() {
            if let Some(waiters) = self.cancel_waiters.remove(&id) {
                for (request, _) in waiters {
                    self.reply(
                        request,
                        Ok(ClientResponse::State {
                            id,
                            state: value.state.clone(),
                        }),
                    );
                }
            }
        }
        // A later value of this very task ends this node's proposal on it;
        // a value of another body under the id means the proposal's body
        // lost the id: it is dropped, and never given that value.
        if self
            .proposer
            .header(id)
            .is_some_and(|h| h.task != header.task)
        {
            if version > 0 {
                self.proposer.abandon(id);
            }
        } else if let Some(o) = self.proposer.on_ahead(id, version, value.clone()) {
            self.proposal_over(now, o);
        }
    }

    // ---- proposer side -----------------------------------------------------

    fn propose(
        &mut self,
        now: Time,
        id: TaskId,
        header: TaskHeader,
        version: u64,
        base: TaskValue,
        intent: Intent,
    ) -> Result<(), StartError> {
        let msgs = self
            .proposer
            .start(now, id, header, version, base, intent)?;
        for (to, msg) in msgs {
            self.send(to, msg);
        }
        Ok(())
    }

    fn on_outcome(&mut self, now: Time, outcome: Outcome) {
        match outcome {
            Outcome::Send(msgs) => {
                for (to, msg) in msgs {
                    self.send(to, msg);
                }
            }
            o => self.proposal_over(now, o),
        }
    }

    /// A proposal ended: its value was chosen, or a later version exists.
    fn proposal_over(&mut self, now: Time, outcome: Outcome) {
        let (proposal, version, value, chosen): (Proposal, u64, TaskValue, bool) = match outcome {
            Outcome::Chosen {
                proposal,
                version,
                value,
            } => (proposal, version, value, true),
            Outcome::Ahead {
                proposal,
                version,
                value,
            } => (proposal, version, value, false),
            Outcome::Settled { proposal } => {
                // Nothing was in doubt: the base is the latest chosen value.
                let base = proposal.base.clone();
                let task = proposal.header.task.clone();
                self.answer_reads(now, proposal.id, &task, &base, &base.replicas);
                self.reread(now, proposal.id);
                return;
            }
            Outcome::Send(_) => unreachable!("not an end"),
        };
        let (id, header, intent) = (
            proposal.id,
            proposal.header.clone(),
            proposal.intent.clone(),
        );
        if self.ensure_record(now, None, id, &header, version, &value) {
            let rec = self.records.get_mut(&id).expect("ensured");
            if rec.learn(version, &value) {
                self.persist_record(id);
            }
        }
        if chosen {
            assert_eq!(version, proposal.version + 1);
            for note in transition_notes(id, &proposal.base, &value) {
                self.out.push(Action::Note(note));
            }
            self.after_limited_change(id, &header, &proposal.base, &value);
            // The value chosen may be another proposer's (adopted in
            // phase 1): noted only when it records this very heartbeat.
            if let Intent::Heartbeat { epoch, .. } = &intent {
                let me = self.me();
                let recorded = value.state
                    == TaskState::Running {
                        node: me,
                        epoch: *epoch,
                    }
                    && matches!(value.history.events.last(),
                        Some(TaskEvent { what: TaskEventKind::Heartbeat { node, epoch: e, .. }, .. })
                            if *node == me && e == epoch);
                if recorded {
                    self.out.push(Action::Note(Note::Heartbeat {
                        task: id,
                        epoch: *epoch,
                        node: me,
                    }));
                }
            }
            // The old replicas (who then answer older prepares with this
            // version) and, after a move, the new ones.
            let mut to_learn: BTreeSet<NodeId> = proposal.base.replicas.iter().copied().collect();
            to_learn.extend(value.replicas.iter().copied());
            to_learn.remove(&self.peers.id);
            for to in to_learn {
                let msg = LeaderlessMessage::Learn {
                    id,
                    header: header.clone(),
                    version,
                    value: value.clone(),
                };
                self.send(to, msg);
            }
        }
        self.on_learned(now, id, &header, version, &value);
        if matches!(intent, Intent::Permits(_)) {
            self.permits_over(id, &value);
        }
        // Results and cancels go on until their compare part fails; claims
        // are left to the next tick, which looks at liveness again.
        let again = matches!(intent, Intent::Finish { .. } | Intent::Cancel)
            && intent
                .desired(self.me(), self.generation, &header, &value, now)
                .is_some();
        if again {
            let (h, v) = (header.clone(), value.clone());
            if let Err(e) = self.propose(now, id, h, version, v, intent.clone()) {
                assert_eq!(e, StartError::Full, "the proposal for this task just ended");
            }
        }
        let read_set = proposal.base.replicas.clone();
        self.answer_reads(now, id, &header.task, &value, &read_set);
        self.reread(now, id);
        if !self.proposer.is_running(id) {
            if let Some(waiters) = self.cancel_waiters.remove(&id) {
                for (request, _) in waiters {
                    self.reply(
                        request,
                        Ok(ClientResponse::State {
                            id,
                            state: value.state.clone(),
                        }),
                    );
                }
            }
            if matches!(intent, Intent::Finish { .. }) && !again {
                // Chosen, or rejected because the assignment moved on (G3).
                if self
                    .finished
                    .get(&id)
                    .is_some_and(|f| f.execution.version < version)
                {
                    self.finished.remove(&id);
                }
            }
        }
    }

    /// Answers the linearizable reads waiting on this node's proposal for
    /// `id`, which read a majority of `read_set`: `value` is chosen, and at
    /// least as new as any value chosen before those reads began, unless it
    /// moved the task to other replicas, who may have chosen later values:
    /// then the reads start again (and find it there).
    fn answer_reads(
        &mut self,
        now: Time,
        id: TaskId,
        task: &Task,
        value: &TaskValue,
        read_set: &[NodeId],
    ) {
        let waiters = self.read_waiters.remove(&id).unwrap_or_default();
        for (request, _) in waiters {
            if value.replicas != read_set {
                self.quorum_read(now, request, id, ReadPurpose::Get);
                continue;
            }
            self.answer_value(request, id, task, value);
        }
    }

    // ---- housekeeping ------------------------------------------------------

    /// Answers `Unavailable` (retryable) to cancels and reads that waited
    /// past their deadline on a proposal that has not ended. The proposal
    /// goes on; a cancel may still take effect.
    fn expire_waiters(&mut self, now: Time) {
        let mut expired = Vec::new();
        for waiters in [
            &mut self.cancel_waiters,
            &mut self.read_waiters,
            &mut self.reread_waiters,
        ] {
            for list in waiters.values_mut() {
                list.retain(|&(request, deadline)| {
                    let keep = now < deadline;
                    if !keep {
                        expired.push(request);
                    }
                    keep
                });
            }
            waiters.retain(|_, list| !list.is_empty());
        }
        for request in expired {
            self.reply(
                request,
                Err(Self::unavailable("no decision on the task in time")),
            );
        }
        // A settle exists only for the reads waiting on it: with none
        // left it is dropped, so it cannot hold the task's proposer slot
        // (and block the runner's result here) if its acceptors never
        // answer it. Another read or decision settles the instance later.
        // (A copy in doubt's settle is dropped when its doubt ends.)
        let moot: Vec<TaskId> = self
            .proposer
            .ids_with(|intent| *intent == Intent::Settle)
            .filter(|id| !self.read_waiters.contains_key(id) && !self.settling_doubt(*id))
            .collect();
        for id in moot {
            self.proposer.abandon(id);
        }
    }

    /// Starts again the reads that waited for this node's proposal on `id`
    /// to end, once none runs (it ended, or was dropped).
    fn reread(&mut self, now: Time, id: TaskId) {
        if self.proposer.is_running(id) {
            return;
        }
        for (request, _) in self.reread_waiters.remove(&id).unwrap_or_default() {
            self.quorum_read(now, request, id, ReadPurpose::Get);
        }
    }

    fn tick(&mut self, now: Time) {
        // Reads waiting on a proposal that was dropped rather than ended.
        let waiting: Vec<TaskId> = self.reread_waiters.keys().copied().collect();
        for id in waiting {
            self.reread(now, id);
        }
        // A limited task's claim is made within `permit_grant_use_ms` of
        // its grant's stamp: past that the keeper may fence the grant, or
        // give its place back if no replica holds the task, so a claim
        // still without a single `Accept` sent (nothing of it can be
        // chosen) is dropped rather than retried; the task asks again.
        let use_within = Duration::from_millis(self.config.permit_grant_use_ms);
        let stale: Vec<TaskId> = self
            .proposer
            .ids_with(move |i| {
                matches!(i, Intent::Claim { permit: Some((_, at)) } if now >= *at + use_within)
            })
            .collect();
        for id in stale {
            if !self.proposer.abandon_unaccepted(id) {
                self.drop_grant(id);
            }
        }
        // Retry Paxos rounds.
        let (rng, config) = (&mut self.rng, &self.config);
        let msgs = self
            .proposer
            .tick(now, config.paxos_round_timeout(), |failed_rounds| {
                Duration::from_millis(paxos_backoff_ms(config, failed_rounds, rng))
            });
        for (to, msg) in msgs {
            self.send(to, msg);
        }
        // Fail client operations that waited too long.
        for op in self.ops.expire(now) {
            let request = match op {
                Op::Submit { request, .. } | Op::Read { request, .. } => request,
            };
            self.submit_lookups.remove(&request);
            self.reply(
                request,
                Err(Self::unavailable("too few replicas answered in time")),
            );
        }
        self.expire_waiters(now);
        self.settle_doubts(now);
        self.purge_expired(now);
        // Spread this node's load.
        self.report_load(now);
        // Join and re-join (every configured member: a spare outside the
        // ring is live too, so it can be added).
        let members = self.peers.members.clone();
        self.membership.announce_to_unseen(
            now,
            &members,
            self.config.announce_interval(),
            self.config.announce_fanout_max,
            &mut self.out,
        );
        self.ring_tick(now);
        self.commit_results(now);
        self.claim_work(now, ClaimPass::Tick);
        self.sweep_permits(now);
        self.pump_permits(now);
        self.send_permit_asks();
        self.rebalance(now);
        self.anti_entropy();
    }

    /// Spreads this node's load; a draining node reports no capacity, so
    /// the other replicas claim its tasks without waiting for it.
    fn report_load(&mut self, now: Time) {
        let running = u32::try_from(self.executing.len()).unwrap_or(u32::MAX);
        let capacity = if self.drain.is_some() {
            0
        } else {
            self.peers.capacity_tasks
        };
        self.membership.report_load(
            now,
            (running, capacity),
            (self.waiting_priority, self.pending_priority),
            &self.peers.labels,
            Duration::from_millis(self.config.load_report_interval_ms),
        );
    }

    /// At the drain's deadline: drops every execution (a handler's result
    /// no longer counts) and releases every claim of this node by Paxos
    /// (`claim_work` goes on releasing at each tick until chosen).
    fn check_drain(&mut self, now: Time) {
        let Some(d) = &mut self.drain else {
            return;
        };
        if now < d.deadline || d.handing_back {
            return;
        }
        d.handing_back = true;
        self.executing.clear();
        self.report_load(now);
        self.claim_work(now, ClaimPass::Tick);
    }

    /// Proposes the results of finished executions not yet committed.
    fn commit_results(&mut self, now: Time) {
        let ids: Vec<TaskId> = self.finished.keys().copied().collect();
        for id in ids {
            if self.proposer.is_running(id) {
                continue;
            }
            if !self.records.contains_key(&id) && self.tombstones.get(id).is_some() {
                // Purged (or dropped as a purged task's copy) while its
                // handler ran: its replicas refuse any proposal on it.
                self.finished.remove(&id);
                continue;
            }
            let f = self.finished[&id].clone();
            // The freshest chosen value this node knows of.
            let (version, value) = match self.records.get(&id) {
                Some(r) if r.version >= f.execution.version => (r.version, r.value.clone()),
                _ => (f.execution.version, f.execution.value.clone()),
            };
            let intent = Intent::Finish {
                epoch: f.execution.epoch,
                outcome: f.outcome.clone(),
                jitter: f.jitter,
            };
            if intent
                .desired(self.me(), self.generation, &f.execution.header, &value, now)
                .is_none()
            {
                self.finished.remove(&id); // rejected: the assignment moved on
                continue;
            }
            if self
                .propose(now, id, f.execution.header.clone(), version, value, intent)
                .is_err()
            {
                return; // full: next tick
            }
        }
    }

    /// Claims pending tasks this node is the first live replica of, and
    /// re-claims tasks whose runner is down (or is this node, restarted).
    /// `pass` says which records it looks at ([`ClaimPass`]).
    fn claim_work(&mut self, now: Time, pass: ClaimPass) {
        self.claim_soon = false;
        self.claimed_at = Some(now);
        let me = self.me();
        let draining = self.drain.is_some();
        let ids = match pass {
            ClaimPass::Tick => self.claim_scan(),
            ClaimPass::Head => self
                .active
                .pending_after(None)
                .take(self.config.claim_early_active_max)
                .map(|(_, id)| id)
                .collect(),
        };
        self.prune_grants(now);
        // What is kept per pending task goes with its pending state: pruned
        // by the tick's pass only, as a walk of it per batch would cost
        // what the head-only pass saves (a stale entry is only dropped late).
        if pass == ClaimPass::Tick {
            let records = &self.records;
            let pending = |id: &TaskId| {
                records
                    .get(id)
                    .is_some_and(|r| r.value.state == TaskState::Pending)
            };
            self.pending_seen.retain(|id, _| pending(id));
            self.offered.retain(|id, _| pending(id));
        }
        // Offers made this round, by target: they count as load.
        let mut offered_to: BTreeMap<NodeId, u32> = BTreeMap::new();
        // An offer claim nobody answers (its acceptors hold another body,
        // or a forged offer named the wrong ones) would hold a slot for
        // ever: dropped after a while, if nothing of it can be chosen.
        let stuck_after = Duration::from_millis(4 * self.config.offer_interval_ms);
        let stuck: Vec<TaskId> = self
            .offer_claims
            .iter()
            .copied()
            .filter(|t| {
                self.proposer
                    .started_at(*t)
                    .is_some_and(|at| now >= at + stuck_after)
            })
            .collect();
        for t in stuck {
            self.proposer.abandon_unaccepted(t);
        }
        let proposer = &self.proposer;
        self.offer_claims.retain(|t| proposer.is_running(*t));
        // A claim of an offered task in flight holds its slot.
        let mut room = if draining {
            0
        } else {
            (self.peers.capacity_tasks as usize)
                .saturating_sub(self.executing.len() + self.offer_claims.len())
        };
        if room == 0 {
            self.priority_hold_since = None;
        }
        // The priority a free slot is kept for, asked once per pass and
        // only when a pending task would start.
        let mut hold: Option<Option<i8>> = None;
        let mut held = false;
        let mut waiting: Option<i8> = None;
        let mut own_best: Option<i8> = None;
        // The nodes with room offers may go to, looked up once per pass.
        let mut targets: Option<Vec<LoadReport>> = None;
        let fallback = Duration::from_millis(self.config.pending_claim_fallback_ms);
        for id in ids {
            if self.proposer.is_running(id) {
                continue;
            }
            let rec = &self.records[&id];
            let i_carry = rec.header.task.runs_on(&self.peers.labels);
            let first_live = self.first_live(&rec.value.replicas);
            if rec.value.state == TaskState::Pending && now < rec.value.ready_at {
                continue; // not_before or a retry backoff: not yet
            }
            // Past its schedule-to-start deadline: failed instead of claimed.
            let overdue = (rec.value.state == TaskState::Pending)
                .then(|| {
                    let task = &rec.header.task;
                    (rec.value.start_by).or_else(|| task.start_by(rec.created_at, task.not_before))
                })
                .flatten()
                .filter(|deadline| now > *deadline);
            if rec.value.state == TaskState::Pending && overdue.is_none() && i_carry {
                own_best = own_best.max(Some(rec.header.task.priority));
            }
            let intent = match rec.value.state {
                TaskState::Pending if overdue.is_some() => {
                    // The first live replica fails it, or any replica once
                    // the first leaves it too long (as for claims).
                    let since = *self.pending_seen.entry(id).or_insert(now);
                    if first_live != Some(me) && now < since + fallback {
                        continue;
                    }
                    Intent::Expire {
                        deadline: overdue.expect("checked"),
                    }
                }
                // A version-0 record written under an older ring may have
                // missed a replica that now refuses to create it (the
                // creation fence); if that one comes first it would wait
                // for ever, so any holder claims.
                TaskState::Pending
                    if room > 0 && i_carry && fenced_first_write(rec, &self.ring.ring) =>
                {
                    Intent::Claim { permit: None }
                }
                TaskState::Pending if room > 0 && i_carry => {
                    // The first live replica with room claims: a replica
                    // ahead of this one that reports itself full leaves the
                    // task to the next (work stealing, by gossiped load).
                    let claimer = rec
                        .value
                        .replicas
                        .iter()
                        .copied()
                        .filter(|&n| self.membership.is_live(n))
                        .find(|&n| n == me || self.may_claim(n, &rec.header.task));
                    if claimer != Some(me) {
                        // Unless the preferred replica leaves it pending too
                        // long (it may lack the record, or hold a dead one).
                        let since = *self.pending_seen.entry(id).or_insert(now);
                        if now < since + fallback {
                            continue;
                        }
                    }
                    if first_live != Some(me) {
                        self.steals += 1;
                    }
                    Intent::Claim { permit: None }
                }
                TaskState::Pending => {
                    // This node cannot claim it (it lacks a label, or room).
                    // While a live replica that can is there, that one
                    // claims; otherwise a node with room carrying the
                    // labels is offered it, by the first live replica. Once
                    // the task waits too long (that replica may lack the
                    // record), any replica offers it, to any node that can
                    // run it. A task no node has room for is announced in
                    // this node's load report (`waiting`): nodes with a
                    // free slot keep it for the task's offer.
                    let task = &rec.header.task;
                    let targets = targets.get_or_insert_with(|| self.offer_targets());
                    if task.labels.is_empty()
                        && !targets.iter().any(|l| l.pending < Some(task.priority))
                    {
                        // No node would take it (the common case under a
                        // backlog, so it costs no more than a look): only
                        // announced, by the first live replica, if no
                        // replica has room for it either.
                        if first_live == Some(me) && !self.another_replica_may_claim(rec) {
                            waiting = waiting.max(Some(task.priority));
                        }
                        continue;
                    }
                    let since = *self.pending_seen.entry(id).or_insert(now);
                    let waited = now >= since + fallback;
                    if !waited && (first_live != Some(me) || self.another_replica_may_claim(rec)) {
                        continue;
                    }
                    let interval = Duration::from_millis(self.config.offer_interval_ms);
                    if self.offered.get(&id).is_some_and(|at| now < *at + interval) {
                        continue;
                    }
                    let Some(to) = Self::offer_target(targets, &rec.header.task, &offered_to)
                    else {
                        // No live node with room carries them: later.
                        waiting = waiting.max(Some(rec.header.task.priority));
                        continue;
                    };
                    // A limited task is offered with a place held for it.
                    let want = rec.value.epoch.next();
                    let permit = self
                        .grant_for(now, id, want)
                        .filter(|(_, at)| *at >= rec.value.ready_at);
                    if let (Some(limit), None) = (rec.header.task.limit.clone(), permit) {
                        self.ask_permit(now, id, want, &limit);
                        continue;
                    }
                    let msg = LeaderlessMessage::Offer {
                        id,
                        header: rec.header.clone(),
                        version: rec.version,
                        value: rec.value.clone(),
                        permit,
                    };
                    *offered_to.entry(to).or_default() += 1;
                    self.offered.insert(id, now);
                    self.offers_sent += 1;
                    self.send(to, msg);
                    continue;
                }
                TaskState::Running { node, epoch } if node == me => {
                    let lost = self.executing.get(&id).map(|e| e.epoch) != Some(epoch)
                        && self.finished.get(&id).map(|f| f.execution.epoch) != Some(epoch);
                    if !lost {
                        continue;
                    }
                    if rec.is_replica(me) && i_carry && !draining {
                        Intent::Reclaim {
                            owner: node,
                            epoch,
                            reason: SupersedeReason::RunnerDeclaredDead,
                            permit: None,
                        }
                    } else {
                        Intent::Release { epoch }
                    }
                }
                // A runner that is not a replica (it took an offer) and
                // restarted since its claim lost the execution, and holds
                // no record to release it by if the claim's outcome never
                // reached it: its gossiped boot generation says so.
                TaskState::Running { node, epoch }
                    if node != me
                        && !rec.value.replicas.contains(&node)
                        && first_live == Some(me)
                        && self
                            .membership
                            .load(node)
                            .is_some_and(|l| l.seq.0 > rec.value.runner_boot) =>
                {
                    if !i_carry {
                        Intent::Requeue {
                            owner: node,
                            epoch,
                            reason: SupersedeReason::RunnerDeclaredDead,
                        }
                    } else if room > 0 {
                        Intent::Reclaim {
                            owner: node,
                            epoch,
                            reason: SupersedeReason::RunnerDeclaredDead,
                            permit: None,
                        }
                    } else {
                        continue;
                    }
                }
                TaskState::Running { node, epoch }
                    if !self.membership.is_live(node)
                        && first_live == Some(me)
                        && room > 0
                        && i_carry =>
                {
                    Intent::Reclaim {
                        owner: node,
                        epoch,
                        reason: SupersedeReason::RunnerDeclaredDead,
                        permit: None,
                    }
                }
                // The runner is down and this replica cannot run the task:
                // back to pending, to be offered to a node that can.
                TaskState::Running { node, epoch }
                    if !self.membership.is_live(node) && first_live == Some(me) && !i_carry =>
                {
                    Intent::Requeue {
                        owner: node,
                        epoch,
                        reason: SupersedeReason::RunnerDeclaredDead,
                    }
                }
                // A live runner that reported no outcome by the end of its
                // lease (its handler could not be stopped, or its results
                // never arrive): the first other live replica ends it, as
                // a failed attempt retried after its backoff by a claim.
                TaskState::Running { node, epoch }
                    if node != me
                        && lease_ended(&rec.header.task, &rec.value, now)
                        && rec
                            .value
                            .replicas
                            .iter()
                            .copied()
                            .find(|&n| n != node && self.membership.is_live(n))
                            == Some(me) =>
                {
                    Intent::EndLease {
                        owner: node,
                        epoch,
                        jitter: self.rng.gen(),
                    }
                }
                _ => continue,
            };
            let (header, version, value) = (rec.header.clone(), rec.version, rec.value.clone());
            // A pending task of lower priority than one another node
            // announces it has no slot for waits while this node keeps its
            // free slot for that task's offer (cluster-wide priorities).
            if matches!(intent, Intent::Claim { .. }) && value.state == TaskState::Pending {
                let held_for = *hold.get_or_insert_with(|| self.priority_hold(now));
                if held_for.is_some_and(|p| header.task.priority < p) {
                    held = true;
                    continue;
                }
            }
            let mut intent = intent;
            if let Intent::Claim { permit } | Intent::Reclaim { permit, .. } = &mut intent {
                room = room.saturating_sub(1);
                // A limited task is claimed only with a place held for the
                // epoch the claim takes: asked for first, claimed once
                // granted (a later scan).
                if let Some(limit) = &header.task.limit {
                    let want = value.epoch.next();
                    // A grant stamped before the task may start (it was
                    // asked for before a retry's backoff) cannot be used:
                    // its stamp would be the start. Asked for again.
                    let grant = self
                        .grant_for(now, id, want)
                        .filter(|(_, at)| *at >= value.ready_at);
                    match grant {
                        Some(grant) => *permit = Some(grant),
                        None => {
                            self.drop_grant(id);
                            self.ask_permit(now, id, want, limit);
                            continue;
                        }
                    }
                }
            }
            if self
                .propose(now, id, header, version, value, intent)
                .is_err()
            {
                break;
            }
        }
        self.priority_holds += u64::from(held);
        // What a pass over the head alone saw is not what the node waits
        // for: the tick's pass reports that.
        if pass == ClaimPass::Tick
            && (self.waiting_priority, self.pending_priority) != (waiting, own_best)
        {
            (self.waiting_priority, self.pending_priority) = (waiting, own_best);
            self.report_load(now);
        }
    }

    /// The priority this node keeps a free slot for: the highest another
    /// live node announces it has no slot for, for at most
    /// `priority_hold_ms` from when this node first kept one (an
    /// announcement may be stale, or name a task this node cannot run).
    fn priority_hold(&mut self, now: Time) -> Option<i8> {
        let hold_ms = self.config.priority_hold_ms;
        let Some(p) = (hold_ms > 0)
            .then(|| self.membership.waiting_elsewhere())
            .flatten()
        else {
            self.priority_hold_since = None;
            return None;
        };
        let since = *self.priority_hold_since.get_or_insert(now);
        (now < since + Duration::from_millis(hold_ms)).then_some(p)
    }

    /// The records this tick's `claim_work` looks at, in claim order
    /// (higher priorities first, by id within one): every running one, the
    /// first `claim_scan_per_tick_max` pending ones, and as many again from
    /// a window past those that moves on each tick and wraps around, so a
    /// backlog larger than the head is covered over several ticks.
    fn claim_scan(&mut self) -> Vec<TaskId> {
        let budget = self.config.claim_scan_per_tick_max;
        let mut keys: Vec<ClaimKey> = self
            .active
            .running()
            .filter_map(|id| self.active.key_of(id))
            .collect();
        let head_start = keys.len();
        keys.extend(self.active.pending_after(None).take(budget));
        let head_end = keys.get(head_start..).and_then(|h| h.last()).copied();
        if keys.len() - head_start == budget {
            let from = match (self.claim_cursor, head_end) {
                (Some(c), Some(h)) if c > h => Some(c),
                _ => head_end,
            };
            let window: Vec<ClaimKey> = self.active.pending_after(from).take(budget).collect();
            self.claim_cursor = if window.len() < budget {
                None // the end: the next window starts past the head again
            } else {
                window.last().copied()
            };
            keys.extend(window);
        } else {
            self.claim_cursor = None;
        }
        keys.sort_unstable();
        keys.into_iter().map(|(_, id)| id).collect()
    }

    /// Whether a live replica of `rec` other than this node may claim it,
    /// as gossiped loads say ([`Self::may_claim`]).
    fn another_replica_may_claim(&self, rec: &Record) -> bool {
        let me = self.me();
        rec.value
            .replicas
            .iter()
            .any(|&n| n != me && self.membership.is_live(n) && self.may_claim(n, &rec.header.task))
    }

    /// Whether `node` (not this one) may claim `task`, as its gossiped
    /// load says: it is not full and carries the task's labels. A node not
    /// heard from yet may claim an unlabelled task only.
    fn may_claim(&self, node: NodeId, task: &Task) -> bool {
        self.membership
            .with_load(node, |l| !l.is_full() && task.runs_on(&l.labels))
            .unwrap_or(task.labels.is_empty())
    }

    /// The live nodes other than this one that report room, for one claim
    /// pass's offers: with a backlog every node is full, and each pending
    /// task then costs a look at an empty list.
    fn offer_targets(&self) -> Vec<LoadReport> {
        let me = self.me();
        self.membership
            .live()
            .into_iter()
            .filter(|&n| n != me)
            .filter_map(|n| self.membership.load(n))
            .filter(|l| l.running < l.capacity)
            .collect()
    }

    /// Of `targets`, the node that carries `task`'s labels and is least
    /// loaded (`running / capacity`, counting the offers `offered_to` made
    /// this round; ties to the lowest id), if any has room. A task without
    /// labels goes only to a node whose own pending tasks are all of lower
    /// priority: under a backlog every node has work of its own, and
    /// offering it more only moves tasks off their replicas for nothing
    /// (5 nodes, batch submits: completions fell by half).
    fn offer_target(
        targets: &[LoadReport],
        task: &Task,
        offered_to: &BTreeMap<NodeId, u32>,
    ) -> Option<NodeId> {
        targets
            .iter()
            .filter_map(|l| {
                let running =
                    u64::from(l.running) + u64::from(offered_to.get(&l.node).copied().unwrap_or(0));
                let capacity = u64::from(l.capacity);
                let wanted = !task.labels.is_empty() || l.pending < Some(task.priority);
                (running < capacity && wanted && task.runs_on(&l.labels))
                    .then_some((l.node, running, capacity))
            })
            .min_by(|(a, ra, ca), (b, rb, cb)| (ra * cb).cmp(&(rb * ca)).then(a.cmp(b)))
            .map(|(n, _, _)| n)
    }

    /// An offer of pending `id`: claims it for this node if it carries the
    /// task's labels and has room. The claim goes through Paxos among the
    /// task's replicas like any other, so two nodes offered the same task
    /// (or a replica claiming it meanwhile) end with one claim chosen; a
    /// forged or stale offer is at worst a claim that loses.
    fn on_offer(
        &mut self,
        now: Time,
        id: TaskId,
        header: TaskHeader,
        version: u64,
        value: TaskValue,
        permit: Option<(Epoch, Time)>,
    ) {
        // A proposal of this node for another body of the task (two first
        // writes raced under the id: this node holds, or was offered, the
        // other) whose acceptors may never answer it: the offer replaces
        // it, unless an acceptor may hold its value already.
        if self.proposer.header(id).is_some_and(|h| *h != header) {
            self.proposer.abandon_unaccepted(id);
        }
        self.offer_claims.retain(|t| self.proposer.is_running(*t));
        let room = (self.peers.capacity_tasks as usize)
            .saturating_sub(self.executing.len() + self.offer_claims.len());
        let wanted = self.drain.is_none()
            && room > 0
            && value.state == TaskState::Pending
            && !value.replicas.is_empty()
            && header.task.runs_on(&self.peers.labels)
            && self.peers.limits.check_task(&header.task).is_ok()
            && !self.proposer.is_running(id)
            && !self.executing.contains_key(&id);
        if !wanted {
            return;
        }
        // A slot kept for a task of higher priority is kept from offers
        // too (a replica of this task, full, offers it after a while).
        if self
            .priority_hold(now)
            .is_some_and(|p| header.task.priority < p)
        {
            self.priority_holds += 1;
            return;
        }
        // This node's own record, when newer (it is a replica, or ran it).
        let (version, value) = match self.records.get(&id) {
            // A value of this node's body is chosen: the offer's lost the id.
            Some(r) if r.header.task != header.task && r.version > 0 => return,
            // Two first writes raced under the id and neither body is chosen
            // yet; this node holds the other one. The claim decides among
            // the offer's replicas, which hold the offer's body (when it is
            // chosen this record adopts it, as after any such race).
            Some(r) if r.header.task != header.task => {
                self.abandon_foreign_proposal(id, Some(&header));
                (version, value)
            }
            // At the same version the offerer's value stands: the offer's
            // replicas hold it, while this node's may be a first write
            // placed under another ring (the creation fence keeps one).
            Some(r) if r.version > version => (r.version, r.value.clone()),
            _ => (version, value),
        };
        // A limited task comes with the offerer's grant; without one (or
        // with one for another epoch) the claim cannot apply.
        let claim = Intent::Claim { permit };
        if claim
            .desired(self.me(), self.generation, &header, &value, now)
            .is_none()
        {
            return; // not ready yet, past its deadline, or no place held
        }
        if self.propose(now, id, header, version, value, claim).is_ok() {
            self.offer_claims.insert(id);
            self.offers_taken += 1;
            self.priority_hold_since = None;
        }
    }

    /// What a client is told when its request cannot start a proposal.
    fn refusal(&self, e: StartError) -> ClientError {
        match e {
            StartError::Busy => Self::unavailable("a decision on this task is in flight here"),
            StartError::Full => ClientError::Overloaded {
                what: "paxos_in_flight_max".into(),
                limit: self.config.paxos_in_flight_max,
            },
        }
    }

    /// One live node other than this one, drawn from the node's RNG.
    fn random_live_other(&mut self) -> Option<NodeId> {
        let live = self.membership.live_others();
        if live.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..live.len());
        Some(self.membership.live_others()[i])
    }

    /// Offers the versions of a batch of records (final ones too: a replica
    /// cut off for a task's whole life has none) to one random live
    /// co-replica; it answers with what either side misses.
    fn anti_entropy(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let Some(peer) = self.random_live_other() else {
            return;
        };
        let start = self.anti_entropy_cursor;
        let mut entries = Vec::new();
        let mut last = None;
        let range = self
            .records
            .keys()
            .filter(|id| start.is_none_or(|s| **id > s))
            .chain(
                self.records
                    .keys()
                    .filter(|id| start.is_some_and(|s| **id <= s)),
            );
        for &id in range {
            if entries.len() >= self.config.anti_entropy_batch_max {
                break;
            }
            last = Some(id);
            let rec = &self.records[&id];
            if rec.value.replicas.contains(&peer) {
                entries.push((id, rec.version));
            }
        }
        self.anti_entropy_cursor = last;
        if !entries.is_empty() {
            self.send(peer, LeaderlessMessage::Digest { entries });
        }
    }

    fn on_digest(&mut self, from: NodeId, entries: Vec<(TaskId, u64)>) {
        let mut pull = Vec::new();
        for (id, theirs) in entries {
            match self.records.get(&id) {
                Some(rec) if rec.version > theirs => {
                    let msg = LeaderlessMessage::Learn {
                        id,
                        header: rec.header.clone(),
                        version: rec.version,
                        value: rec.value.clone(),
                    };
                    self.send(from, msg);
                }
                Some(rec) if rec.version == theirs => {}
                _ => pull.push(id),
            }
        }
        if !pull.is_empty() {
            self.send(from, LeaderlessMessage::Pull { ids: pull });
        }
    }

    fn on_pull(&mut self, from: NodeId, ids: Vec<TaskId>) {
        for id in ids.into_iter().take(self.config.anti_entropy_batch_max) {
            if let Some(rec) = self.records.get(&id) {
                let msg = LeaderlessMessage::Learn {
                    id,
                    header: rec.header.clone(),
                    version: rec.version,
                    value: rec.value.clone(),
                };
                self.send(from, msg);
            }
        }
    }

    fn on_message(&mut self, now: Time, from: NodeId, msg: LeaderlessMessage) {
        match msg {
            LeaderlessMessage::Bundle(msgs) => self.on_bundle(now, from, msgs),
            LeaderlessMessage::Swim(data) => self.membership.handle_data(now, &data, &mut self.out),
            LeaderlessMessage::Offer {
                id,
                header,
                version,
                value,
                permit,
            } => self.on_offer(now, id, header, version, value, permit),
            LeaderlessMessage::PermitAsk {
                key,
                acquire,
                release,
            } => self.on_permit_ask(now, from, key, acquire, release),
            LeaderlessMessage::PermitAnswer { granted } => self.on_permit_answer(granted),
            LeaderlessMessage::Write {
                op,
                id,
                header,
                ring,
            } => {
                if let Some(ring) = ring {
                    self.learn_ring(now, &ring);
                }
                self.on_write(now, from, op, id, header)
            }
            LeaderlessMessage::WriteReply { op, id, same } => {
                let answer = if same {
                    WriteAnswer::Same
                } else {
                    WriteAnswer::Other
                };
                self.write_answered(from, op, id, answer);
            }
            LeaderlessMessage::WriteFull { op, id } => {
                self.write_answered(from, op, id, WriteAnswer::Full);
            }
            LeaderlessMessage::WriteKeptFull { op, id } => {
                self.write_answered(from, op, id, WriteAnswer::KeptFull);
            }
            LeaderlessMessage::WriteFenced { op, id, ring } => {
                self.learn_ring(now, &ring);
                let fenced = self.ops.take_fenced_submit(op, id);
                if let Some((request, id, task, epoch)) = fenced {
                    if epoch < self.ring.ring.epoch {
                        self.submit_or_look_up(now, request, id, task);
                    } else {
                        self.reply(request, Err(Self::unavailable("fenced by a replica")));
                    }
                }
            }
            LeaderlessMessage::Forget { id, header } => self.on_forget(id, header),
            LeaderlessMessage::Read {
                op,
                id,
                ring_epoch,
                ring,
            } => {
                if let Some(ring) = ring {
                    self.learn_ring(now, &ring);
                }
                let ring = (self.ring.ring.epoch > ring_epoch).then(|| self.ring.ring.clone());
                let found = self.records.get(&id).map(|r| ReadState {
                    header: r.header.clone(),
                    version: r.version,
                    value: r.value.clone(),
                    in_doubt: r.accepted.is_some(),
                    created_at: r.created_at,
                });
                if found.is_none() && self.tombstones.get(id).is_some() && from != self.me() {
                    // Purged here: the reader learns it before this answer
                    // (one bundle), so a copy another replica left behind
                    // does not read as the task.
                    self.tell_purged(from, id);
                }
                self.send(
                    from,
                    LeaderlessMessage::ReadReply {
                        op,
                        id,
                        found,
                        ring,
                    },
                );
            }
            LeaderlessMessage::ReadReply {
                op,
                id,
                found,
                ring,
            } => {
                if let Some(ring) = ring {
                    self.learn_ring(now, &ring);
                }
                match self.ops.read_reply(op, from, id, found) {
                    ReadProgress::Waiting => {}
                    ReadProgress::Ask { op, id, to } => {
                        for n in to {
                            let msg = self.read_message(op, id);
                            self.send(n, msg);
                        }
                    }
                    ReadProgress::Done(request, id, purpose, best, epoch, _)
                        if epoch < self.ring.ring.epoch
                            && best.as_ref().is_none_or(|b| b.version == 0) =>
                    {
                        // Nobody had it where this node's ring put it, or
                        // only a version-0 record (which may be a dead one
                        // while the live record, placed under the newer ring,
                        // has chosen values: `cohort sim` seed 10776 read a
                        // finished task back `Pending`), but a newer ring
                        // came in meanwhile: look there too.
                        self.quorum_read(now, request, id, purpose)
                    }
                    ReadProgress::Done(request, id, purpose, best, epoch, holders) => {
                        let Ok(best) = self.unless_purged(now, id, best) else {
                            // A keeper's lookup must not create the key's
                            // next incarnation beside a grant that may be
                            // chosen: it is made again later.
                            self.submit_lookups.remove(&request);
                            self.doubtful_reads += 1;
                            let reason = "a purged record's copy is being settled";
                            return self.reply(request, Err(Self::unavailable(reason)));
                        };
                        self.read_done(now, request, id, purpose, best, epoch, holders)
                    }
                }
            }
            LeaderlessMessage::Prepare {
                id,
                header,
                version,
                base,
                ballot,
            } => self.on_prepare(now, from, (id, header), (version, base), ballot),
            LeaderlessMessage::Promise {
                id,
                version,
                ballot,
                accepted,
            } => {
                let o = self
                    .proposer
                    .on_promise(from, id, version, ballot, accepted);
                self.on_outcome(now, o);
            }
            LeaderlessMessage::Accept {
                id,
                version,
                ballot,
                value,
            } => self.on_accept(from, id, version, ballot, value),
            LeaderlessMessage::Accepted {
                id,
                version,
                ballot,
            } => {
                let o = self.proposer.on_accepted(from, id, version, ballot);
                self.on_outcome(now, o);
            }
            LeaderlessMessage::Reject {
                id,
                version,
                ballot,
                promised,
            } => {
                let (rng, config) = (&mut self.rng, &self.config);
                self.proposer
                    .on_reject(now, id, version, ballot, promised, |failed_rounds| {
                        Duration::from_millis(paxos_backoff_ms(config, failed_rounds, rng))
                    });
            }
            LeaderlessMessage::Ahead { id, version, value } => {
                if let Some(o) = self.proposer.on_ahead(id, version, value) {
                    self.proposal_over(now, o);
                }
            }
            LeaderlessMessage::Learn {
                id,
                header,
                version,
                value,
            } => self.on_learn(now, from, id, header, version, value),
            LeaderlessMessage::Purged {
                id,
                tombstone,
                relayed,
            } => {
                let witness = (!relayed).then_some(from);
                self.on_purged(witness, id, tombstone, now)
            }
            LeaderlessMessage::Digest { entries } => self.on_digest(from, entries),
            LeaderlessMessage::Pull { ids } => self.on_pull(from, ids),
            LeaderlessMessage::RingPrepare { base, ballot } => {
                self.on_ring_prepare(now, from, base, ballot)
            }
            LeaderlessMessage::RingPromise {
                epoch,
                ballot,
                accepted,
            } => {
                let step = match self.ring_proposal.as_mut() {
                    Some(p) => p.on_promise(from, epoch, ballot, accepted),
                    None => RingStep::Wait,
                };
                self.on_ring_step(now, step);
            }
            LeaderlessMessage::RingAccept { ballot, value } => {
                self.on_ring_accept(now, from, ballot, value)
            }
            LeaderlessMessage::RingAccepted { epoch, ballot } => {
                let step = match self.ring_proposal.as_mut() {
                    Some(p) => p.on_accepted(from, epoch, ballot),
                    None => RingStep::Wait,
                };
                self.on_ring_step(now, step);
            }
            LeaderlessMessage::RingReject { ballot, promised } => {
                // Retried above it when the round times out.
                if self
                    .ring_proposal
                    .as_ref()
                    .is_some_and(|p| p.ballot() == ballot)
                {
                    self.ring_round_seen = self.ring_round_seen.max(promised.round);
                }
            }
            LeaderlessMessage::RingLearn { ring } => self.learn_ring(now, &ring),
            LeaderlessMessage::RingHave { epoch } => {
                let mine = self.ring.ring.epoch;
                if epoch < mine {
                    let ring = self.ring.ring.clone();
                    self.send(from, LeaderlessMessage::RingLearn { ring });
                } else if epoch > mine {
                    self.send(from, LeaderlessMessage::RingHave { epoch: mine });
                }
            }
        }
    }

    // ---- ring changes ------------------------------------------------------

    fn persist_ring(&mut self) {
        self.out.push(Action::Persist(vec![StoreOp::Put {
            key: RING_KEY.to_vec(),
            value: encode(&self.ring),
        }]));
    }

    fn next_ring_ballot(&mut self) -> Ballot {
        let seen = Ballot {
            round: self.ring_round_seen,
            node: NodeId(u64::MAX),
            generation: u64::MAX,
        };
        let b = Ballot::above(seen, self.me(), self.generation);
        self.ring_round_seen = b.round;
        b
    }

    fn ring_prepare(&mut self, p: &RingProposal) {
        for &to in &p.base.members {
            self.send(
                to,
                LeaderlessMessage::RingPrepare {
                    base: p.base.clone(),
                    ballot: p.ballot(),
                },
            );
        }
    }

    /// Adopts a newer chosen ring (persisted), and carries this node's own
    /// ring change over to it, or ends it when the ring reflects it.
    fn learn_ring(&mut self, now: Time, ring: &Ring) {
        if self.ring.learn(ring, self.config.ring_history_max) {
            self.persist_ring();
            self.rebalanced_epoch = None;
        }
        let Some(p) = self.ring_proposal.as_ref() else {
            return;
        };
        if p.base.epoch >= self.ring.ring.epoch {
            return;
        }
        let change = p.change;
        if change.apply(&self.ring.ring).is_none() {
            self.ring_proposal = None;
            return;
        }
        let ballot = self.next_ring_ballot();
        let mut p = self.ring_proposal.take().expect("checked above");
        p.restart(self.ring.ring.clone(), ballot, now);
        self.ring_prepare(&p);
        self.ring_proposal = Some(p);
    }

    fn on_ring_prepare(&mut self, now: Time, from: NodeId, base: Ring, ballot: Ballot) {
        if !base.members.contains(&self.me()) {
            // Not an acceptor of this instance; the base is chosen though.
            return self.learn_ring(now, &base);
        }
        let before = self.ring.ring.epoch;
        let (reply, changed) =
            ringp::on_prepare(&mut self.ring, &base, ballot, self.config.ring_history_max);
        if changed {
            self.persist_ring();
        }
        if self.ring.ring.epoch > before {
            self.rebalanced_epoch = None;
        }
        let msg = match reply {
            ringp::RingPrepareReply::Promise(accepted) => LeaderlessMessage::RingPromise {
                epoch: base.epoch,
                ballot,
                accepted,
            },
            ringp::RingPrepareReply::Reject(promised) => {
                LeaderlessMessage::RingReject { ballot, promised }
            }
            ringp::RingPrepareReply::Ahead(ring) => LeaderlessMessage::RingLearn { ring },
        };
        self.send(from, msg);
    }

    fn on_ring_accept(&mut self, _now: Time, from: NodeId, ballot: Ballot, value: Ring) {
        if value.epoch == 0 {
            return; // malformed: epoch 0 is never decided
        }
        let (reply, changed) = ringp::on_accept(&mut self.ring, ballot, &value);
        if changed {
            self.persist_ring();
        }
        let msg = match reply {
            Some(ringp::RingAcceptReply::Accepted) => LeaderlessMessage::RingAccepted {
                epoch: value.epoch,
                ballot,
            },
            Some(ringp::RingAcceptReply::Reject(promised)) => {
                LeaderlessMessage::RingReject { ballot, promised }
            }
            Some(ringp::RingAcceptReply::Ahead(ring)) => LeaderlessMessage::RingLearn { ring },
            None => return,
        };
        self.send(from, msg);
    }

    fn on_ring_step(&mut self, now: Time, step: RingStep) {
        match step {
            RingStep::Wait => {}
            RingStep::Accept(to, ballot, value) => {
                for n in to {
                    self.send(
                        n,
                        LeaderlessMessage::RingAccept {
                            ballot,
                            value: value.clone(),
                        },
                    );
                }
            }
            RingStep::Chosen(ring) => {
                if ring.epoch > self.ring.ring.epoch {
                    // Every configured member learns it (gossip repairs losses).
                    for to in self.peers.others().collect::<Vec<_>>() {
                        self.send(to, LeaderlessMessage::RingLearn { ring: ring.clone() });
                    }
                    self.learn_ring(now, &ring);
                } else {
                    self.ring_proposal = None; // the ring reflects the change already
                }
            }
        }
    }

    /// Retries a ring round that timed out; gossips this node's ring epoch
    /// to one random live node every `ring_gossip_interval_ms`.
    fn ring_tick(&mut self, now: Time) {
        if self
            .ring_proposal
            .as_ref()
            .is_some_and(|p| p.timed_out(now, self.config.paxos_round_timeout()))
        {
            let mut p = self.ring_proposal.take().expect("checked above");
            if p.change.apply(&self.ring.ring).is_some() {
                let ballot = self.next_ring_ballot();
                p.restart(self.ring.ring.clone(), ballot, now);
                self.ring_prepare(&p);
                self.ring_proposal = Some(p);
            }
        }
        let due = self.ring_gossiped_at.is_none_or(|at| {
            now.saturating_since(at) >= Duration::from_millis(self.config.ring_gossip_interval_ms)
        });
        let to = if due { self.random_live_other() } else { None };
        if let Some(to) = to {
            self.ring_gossiped_at = Some(now);
            let epoch = self.ring.ring.epoch;
            self.send(to, LeaderlessMessage::RingHave { epoch });
        }
    }

    /// Moves tasks whose replicas differ from their replicas under the
    /// newest ring: the first live one of a task's current replicas
    /// proposes `Move` (final tasks too, so reads find every task where the
    /// newest ring puts it and a removed node holds nothing anyone needs).
    /// At most `rebalance_per_tick_max` moves start per tick; a pass that
    /// finds nothing left to move ends the scans until the ring changes.
    fn rebalance(&mut self, now: Time) {
        let epoch = self.ring.ring.epoch;
        if self.rebalanced_epoch == Some(epoch) || self.records.is_empty() {
            return;
        }
        let me = self.me();
        let start = self.rebalance_cursor;
        let ids: Vec<TaskId> = self
            .records
            .keys()
            .copied()
            .filter(|id| start.is_none_or(|s| *id > s))
            .collect();
        let mut started = 0;
        let mut pending = false;
        let mut last = None;
        for id in ids {
            if started >= self.config.rebalance_per_tick_max {
                break;
            }
            last = Some(id);
            let rec = &self.records[&id];
            if !rec.is_replica(me) || rec.value.ring_epoch >= epoch {
                continue;
            }
            let target = self.replicas_of(id);
            if rec.value.replicas == target {
                continue;
            }
            pending = true;
            let mover = self.first_live(&rec.value.replicas);
            // As for claims: any holder moves a version-0 record written
            // under an older ring.
            let mover_here = mover == Some(me) || fenced_first_write(rec, &self.ring.ring);
            if !mover_here || self.proposer.is_running(id) {
                continue;
            }
            let (header, version, value) = (rec.header.clone(), rec.version, rec.value.clone());
            let intent = Intent::Move {
                ring_epoch: epoch,
                replicas: target,
            };
            if self
                .propose(now, id, header, version, value, intent)
                .is_err()
            {
                break;
            }
            started += 1;
        }
        let wrapped = started < self.config.rebalance_per_tick_max;
        self.rebalance_cursor = if wrapped { None } else { last };
        if wrapped && start.is_none() && !pending {
            self.rebalanced_epoch = Some(epoch);
        }
    }
}

/// Whether the record is at version 0 and was written under an older ring
/// than `ring`: a replica its first write missed refuses to create it now
/// (the creation fence), so it only moves on through its holders.
fn fenced_first_write(rec: &Record, ring: &Ring) -> bool {
    rec.version == 0 && rec.header.ring_epoch < ring.epoch
}

/// Whether a replica holding `rec` adopts another body of the task for
/// which `(version, value)` is chosen: `rec` is still at version 0 (its
/// first write, never chosen) and the chosen value is past version 0 and
/// names `me` a replica. A chosen value past version 0 was accepted by a
/// majority of replicas holding that body (an acceptor accepts only a
/// ballot it promised, and promises only for the body it holds), so no
/// other body was ever acknowledged (see ALGORITHM.md, *Racing bodies*).
fn adopts(rec: &Record, version: u64, value: &TaskValue, me: NodeId) -> bool {
    rec.version == 0 && version > 0 && value.replicas.contains(&me)
}

/// Most final records one tick purges: a backlog (a node back after a
/// long stop) is cleared over several ticks, not in one long input.
const PURGES_PER_TICK_MAX: usize = 4096;

/// When `rec` is purged: its final state's retention after the time its
/// final value records (the last event: the outcome), or a retired permit
/// record's `permit_retired_retained_ms` after it was retired. `None`
/// while it is neither, and while a retired record holds an accepted value
/// of the instance after it: that value (a grant bringing the record back)
/// may be chosen, and a replica that forgot it could let a lookup miss the
/// record and create the key's next incarnation beside it, its places
/// lost (`cohort sim` limits gate, seed 638, outside the CI range).
fn purge_at(limits: &cohort_core::Limits, config: &LeaderlessConfig, rec: &Record) -> Option<Time> {
    let final_at = rec
        .value
        .history
        .events
        .last()
        .map_or(rec.created_at, |e| e.at);
    let retired = || {
        rec.accepted
            .is_none()
            .then(|| retired_purge_at(config, &rec.value))
            .flatten()
    };
    limits
        .purge_at(&rec.header.task, &rec.value.state, final_at)
        .or_else(retired)
}

/// When a retired permit record's value `value` is purged (`None`: not
/// one).
fn retired_purge_at(config: &LeaderlessConfig, value: &TaskValue) -> Option<Time> {
    let retained = std::time::Duration::from_millis(config.permit_retired_retained_ms);
    value.permits.retired_at.map(|at| at + retained)
}

/// Whether `me` has anything to do about the record: a task not final of
/// which it is a replica, or one it runs (a node removed from the ring
/// finishes, or releases, what it was running). A record kept after its
/// task moved away is otherwise history.
fn is_active(rec: &Record, me: NodeId) -> bool {
    // A permit record stays pending for ever; nothing claims it.
    !rec.value.state.is_final()
        && crate::permit::permit_key(&rec.header.task).is_none()
        && (rec.is_replica(me)
            || matches!(rec.value.state, TaskState::Running { node, .. } if node == me))
}

/// The answer to an events read: the submission (at `created_at`, or at
/// the first event's time when that is earlier), then the chosen value's
/// history, at most `events_max` events in all.
fn events_response(
    id: TaskId,
    task: &Task,
    created_at: Time,
    value: &TaskValue,
    events_max: usize,
) -> ClientResponse {
    let mut history = TaskEvents::default();
    // `created_at` is when the answering replica stored the record, which
    // may be after another replica (the submit's coordinator) claimed it:
    // the submission is never shown after what followed it.
    let first = value.history.events.first().map(|e| e.at);
    let submitted = TaskEvent {
        at: first.map_or(created_at, |f| f.min(created_at)),
        what: TaskEventKind::Submitted,
    };
    history.push(submitted, events_max);
    for e in &value.history.events {
        history.push(e.clone(), events_max);
    }
    history.dropped = history.dropped.saturating_add(value.history.dropped);
    ClientResponse::Events {
        id,
        state: value.state.clone(),
        history,
        task: Box::new(task.clone()),
    }
}

/// Whether the lease of `value`'s running assignment ended by `now`: the
/// latest event of the assignment in the record, its claim or a recorded
/// heartbeat (stamped by the claimer, by the runner), is older than the
/// task's start-to-close timeout and its grace ([`Task::effective_lease_grace_ms`]).
/// The history always keeps its latest events, so the latest of these is
/// there.
fn lease_ended(task: &Task, value: &TaskValue, now: Time) -> bool {
    let TaskState::Running { epoch, .. } = value.state else {
        return false;
    };
    let renewed_at = value
        .history
        .events
        .iter()
        .rev()
        .find_map(|e| match e.what {
            TaskEventKind::Assigned { epoch: e2, .. }
            | TaskEventKind::Heartbeat { epoch: e2, .. }
                if e2 == epoch =>
            {
                Some(e.at)
            }
            _ => None,
        });
    renewed_at.is_some_and(|at| now > task.lease_ends(at))
}

/// Why `value` ended the failed attempt under `epoch`: its lease ended
/// when the cluster recorded the failure under the `lease_expired` class
/// (`Intent::EndLease`), else its handler failed.
fn failed_reason(value: &TaskValue, epoch: Epoch) -> SupersedeReason {
    let lease = value.history.events.iter().rev().any(|e| {
        matches!(&e.what, TaskEventKind::AttemptFailed { epoch: e2, error, .. }
            if *e2 == epoch && error_class(error) == Some(LEASE_EXPIRED_CLASS))
    });
    if lease {
        SupersedeReason::LeaseExpired
    } else {
        SupersedeReason::AttemptFailed
    }
}

/// The notes for the chosen transition `old` → `new` of `task`.
fn transition_notes(task: TaskId, old: &TaskValue, new: &TaskValue) -> Vec<Note> {
    let mut notes = Vec::new();
    if old.state == new.state {
        return notes; // a move: the state and its assignment go on
    }
    // Why the runner lost it, as the change recorded it.
    let lost_for = |epoch: Epoch| {
        new.history.events.iter().rev().find_map(|e| match e.what {
            TaskEventKind::RunnerLost {
                epoch: e2, reason, ..
            } if e2 == epoch => Some(reason),
            _ => None,
        })
    };
    let failed_for = |epoch: Epoch| failed_reason(new, epoch);
    match (&old.state, &new.state) {
        (TaskState::Running { epoch, .. }, TaskState::Running { .. }) => {
            notes.push(Note::Superseded {
                task,
                epoch: *epoch,
                reason: lost_for(*epoch).unwrap_or(SupersedeReason::RunnerDeclaredDead),
            })
        }
        (TaskState::Running { epoch, .. }, TaskState::Pending) => notes.push(Note::Superseded {
            task,
            epoch: *epoch,
            reason: if new.attempts > old.attempts {
                failed_for(*epoch)
            } else {
                lost_for(*epoch).unwrap_or(SupersedeReason::Released)
            },
        }),
        _ => {}
    }
    match &new.state {
        TaskState::Running { node, epoch } => notes.push(Note::Assigned {
            task,
            epoch: *epoch,
            node: *node,
            // A limited task's start is its grant's stamp, which its rate
            // limit counted (the claim comes a little later); any other's
            // is the claim's own event, stamped by the claimer.
            at: match new.granted {
                Some((e, at)) if e == *epoch => at,
                _ => new
                    .history
                    .events
                    .iter()
                    .rev()
                    .find_map(|e| match e.what {
                        TaskEventKind::Assigned { epoch: e2, .. } if e2 == *epoch => Some(e.at),
                        _ => None,
                    })
                    .unwrap_or(Time::ZERO),
            },
        }),
        s if s.is_final() => notes.push(Note::Decided {
            task,
            state: s.clone(),
        }),
        _ => {}
    }
    notes
}

impl Node for LeaderlessNode {
    type Message = LeaderlessMessage;
    type Config = LeaderlessConfig;

    fn boot(
        peers: &Peers,
        config: &LeaderlessConfig,
        stored: &Stored,
        mut rng: NodeRng,
        now: Time,
    ) -> Result<LeaderlessNode, BootError> {
        config.validate(peers).map_err(|e| BootError::Config {
            reason: e.to_string(),
        })?;
        let generation = match stored.get(GENERATION_KEY) {
            Some(b) => decode::<u64>(b, 16)
                .map_err(|e| BootError::corrupt(GENERATION_KEY, e))?
                .checked_add(1)
                .ok_or_else(|| BootError::corrupt(GENERATION_KEY, "generation exhausted"))?,
            None => 0,
        };
        let swim_rng = NodeRng::seed_from_u64(rng.gen());
        let mut records = BTreeMap::new();
        let mut active = ActiveSet::default();
        let horizon = match stored.get(HORIZON_KEY) {
            Some(b) => decode(b, 16).map_err(|e| BootError::corrupt(HORIZON_KEY, e))?,
            None => Time::ZERO,
        };
        let mut retained = Retained::with_horizon(horizon);
        let mut tombstones = Tombstones::new();
        for (key, value) in stored.scan_prefix(TOMBSTONE_PREFIX) {
            let t: Tombstone = decode(value, 64).map_err(|e| BootError::corrupt(key, e))?;
            let id = task_of_key(TOMBSTONE_PREFIX, key)
                .ok_or_else(|| BootError::corrupt(key, "not a 16-byte task id"))?;
            tombstones.insert(id, t);
        }
        let mut limiter = limits::Limiter::default();
        let mut kept = BTreeSet::new();
        for (key, value) in stored.scan_prefix(RECORD_PREFIX) {
            let rec: Record = decode(value, usize::MAX).map_err(|e| BootError::corrupt(key, e))?;
            let id = task_of_key(RECORD_PREFIX, key)
                .ok_or_else(|| BootError::corrupt(key, "not a 16-byte task id"))?;
            if is_active(&rec, peers.id) {
                active.insert_record(id, &rec);
            }
            retained.set(id, purge_at(&peers.limits, config, &rec));
            if crate::permit::permit_key(&rec.header.task).is_some() {
                limiter.held_records.insert(id);
            }
            if kept_for_ever(&rec.header.task) {
                kept.insert(id);
            }
            records.insert(id, rec);
        }
        let ring = match stored.get(RING_KEY) {
            None => RingState::initial(config.ring_zero(peers)),
            Some(b) => decode(b, usize::MAX).map_err(|e| BootError::corrupt(RING_KEY, e))?,
        };
        let mut node = LeaderlessNode {
            peers: peers.clone(),
            config: config.clone(),
            generation,
            ring,
            ring_proposal: None,
            ring_gossiped_at: None,
            ring_round_seen: 0,
            rebalance_cursor: None,
            claim_cursor: None,
            rebalanced_epoch: None,
            membership: Membership::new(
                peers.id,
                generation,
                config,
                peers.limits.members_max,
                swim_rng,
            ),
            rng,
            records,
            active,
            retained,
            tombstones,
            proposer: Proposer::new(
                peers.id,
                generation,
                config.paxos_in_flight_max,
                peers.limits.task_events_max,
            ),
            ops: Ops::new(generation),
            executing: BTreeMap::new(),
            finished: BTreeMap::new(),
            cancel_waiters: BTreeMap::new(),
            read_waiters: BTreeMap::new(),
            reread_waiters: BTreeMap::new(),
            reads_again: 0,
            loopback: VecDeque::new(),
            bundling: false,
            outbox: BTreeMap::new(),
            bundles_refused: 0,
            claim_soon: false,
            claimed_at: None,
            anti_entropy_cursor: None,
            pending_seen: BTreeMap::new(),
            offered: BTreeMap::new(),
            offer_claims: BTreeSet::new(),
            offers_sent: 0,
            offers_taken: 0,
            waiting_priority: None,
            pending_priority: None,
            priority_hold_since: None,
            priority_holds: 0,
            records_purged: 0,
            purged_copies_refused: 0,
            purged_copies_dropped: 0,
            doubts: BTreeMap::new(),
            doubts_settles: 0,
            doubts_dropped: 0,
            doubtful_reads: 0,
            submit_lookups: BTreeMap::new(),
            events_requests: BTreeMap::new(),
            batches: crate::batch::Batches::default(),
            steals: 0,
            kept,
            drain: None,
            limiter,
            out: Vec::new(),
        };
        node.out.push(Action::Persist(vec![StoreOp::Put {
            key: GENERATION_KEY.to_vec(),
            value: encode(&generation),
        }]));
        let members = peers.members.clone();
        node.membership.announce_to_unseen(
            now,
            &members,
            config.announce_interval(),
            config.announce_fanout_max,
            &mut node.out,
        );
        node.arm_tick(now);
        Ok(node)
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: LeaderlessMessage) {
        self.on_message(now, from, msg);
        self.run_loopback(now);
    }

    /// The batch's end: what its inputs held back for each peer goes out
    /// bundled. Every Paxos round, write and learn stays per task, but a
    /// tick that claims a hundred tasks sends each co-replica one message
    /// instead of a hundred, and the replica answers with one: the
    /// per-message costs (framing, queues, one driver input each) are paid
    /// per peer and batch.
    fn flush(&mut self, now: Time) {
        self.bundling = true;
        let spaced = self
            .claimed_at
            .is_none_or(|at| now >= at + Duration::from_millis(self.config.claim_interval_ms));
        // With every slot taken there is nothing to claim before the tick
        // (which also makes the offers, fallbacks and deadline failures);
        // and with a backlog, scans between ticks cost more CPU than the
        // slots gain: the tick keeps them busy then.
        let room =
            self.drain.is_none() && self.executing.len() < self.peers.capacity_tasks as usize;
        if self.claim_soon && spaced && room {
            // With a backlog, a full scan per batch costs more CPU than the
            // slots gain, and waiting for the tick left each freed slot idle
            // for up to `tick_interval_ms` (completions were bounded by
            // capacity / tick: 64 slots, 50 ms, 3 nodes: 3,300/s). So only
            // the head of the claim order is looked at then.
            let pass = if self.active.len() <= self.config.claim_early_active_max {
                ClaimPass::Tick
            } else {
                ClaimPass::Head
            };
            self.claim_work(now, pass);
        }
        self.pump_permits(now);
        self.send_permit_asks();
        self.run_loopback(now);
        self.send_bundles();
    }

    fn handle_timer(&mut self, now: Time, token: TimerToken) {
        if Membership::owns(token) {
            self.membership.handle_timer(now, token, &mut self.out);
        } else if token == TICK {
            self.check_drain(now);
            self.tick(now);
            self.arm_tick(now);
        } else if token == DRAIN {
            self.check_drain(now);
        }
        self.run_loopback(now);
    }

    fn handle_client(&mut self, now: Time, request: RequestId, req: ClientRequest) {
        match req {
            ClientRequest::Submit { id, task } => self.submit(now, request, id, task),
            ClientRequest::SubmitBatch { tasks } => self.submit_batch(now, request, tasks),
            ClientRequest::Get { id, consistency } => self.get(now, request, id, consistency),
            ClientRequest::Events { id, consistency } => self.events(now, request, id, consistency),
            ClientRequest::Cancel { id } => self.quorum_read(now, request, id, ReadPurpose::Cancel),
        }
        self.run_loopback(now);
    }

    fn handle_task_finished(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    ) {
        let Some(execution) = self.executing.get(&task) else {
            return; // not started by this incarnation
        };
        if execution.epoch != epoch {
            return;
        }
        let execution = self.executing.remove(&task).expect("present above");
        self.claim_soon = true; // its slot is free
        let jitter = self.rng.gen();
        let finished = Finished {
            execution,
            outcome,
            jitter,
        };
        self.finished.insert(task, finished);
        self.commit_results(now);
        self.run_loopback(now);
    }

    fn handle_heartbeat(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        progress: Option<String>,
    ) -> HeartbeatReply {
        let state = self.records.get(&task).map(|r| &r.value.state);
        let mut reply = HeartbeatReply::for_state(state, self.me(), epoch);
        let holds = self.executing.get(&task).is_some_and(|e| e.epoch == epoch);
        if reply == HeartbeatReply::Continue && !holds {
            // Handed back (a drain's deadline) or started by an earlier
            // incarnation: this node no longer counts its result.
            reply = HeartbeatReply::Superseded;
        }
        if let (HeartbeatReply::Continue, Some(progress)) = (reply, progress) {
            // Dropped while another change of the task is in flight.
            if !self.proposer.is_running(task) {
                if let Some(r) = self.records.get(&task) {
                    let (header, version, value) = (r.header.clone(), r.version, r.value.clone());
                    let intent = Intent::Heartbeat {
                        epoch,
                        progress: event_progress(&progress),
                    };
                    let _ = self.propose(now, task, header, version, value, intent);
                }
            }
        }
        self.run_loopback(now);
        reply
    }

    fn actions(&mut self) -> std::vec::Drain<'_, Action<LeaderlessMessage>> {
        self.out.drain(..)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.membership.counters();
        vec![
            ("suspicions_raised", c.suspicions_raised),
            ("reads_read_again", self.reads_again),
            ("offers_sent", self.offers_sent),
            ("offers_taken", self.offers_taken),
            ("priority_holds", self.priority_holds),
            ("records_purged", self.records_purged),
            ("purged_copies_refused", self.purged_copies_refused),
            ("purged_copies_dropped", self.purged_copies_dropped),
            ("doubts_settles", self.doubts_settles),
            ("doubts_dropped", self.doubts_dropped),
            ("doubtful_reads", self.doubtful_reads),
            self.limit_counters()[0],
            self.limit_counters()[1],
            self.limit_counters()[2],
            ("members_declared_down", c.members_declared_down),
            ("declared_down_while_alive", c.declared_down_while_alive),
            (
                "suspicions_from_closed_connections",
                c.suspicions_from_closed_connections,
            ),
        ]
    }

    fn handle_peer_lost(&mut self, now: Time, peer: NodeId) {
        if peer == self.me() {
            return;
        }
        self.membership.suspect_closed(now, peer, &mut self.out);
        self.run_loopback(now);
    }

    fn visit_tasks(
        &self,
        after: Option<TaskId>,
        visit: &mut dyn FnMut(TaskId, &Task, &cohort_core::TaskState) -> bool,
    ) {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        for (id, rec) in self.records.range((from, Bound::Unbounded)) {
            if crate::permit::permit_key(&rec.header.task).is_some() {
                continue; // the cluster's own, not a client's task
            }
            if !visit(*id, &rec.header.task, &rec.value.state) {
                break;
            }
        }
    }

    fn id(&self) -> NodeId {
        self.peers.id
    }

    fn begin_drain(&mut self, now: Time, deadline: Time) -> Result<(), DrainRefusal> {
        match &mut self.drain {
            Some(d) => d.deadline = d.deadline.min(deadline),
            None => {
                self.drain = Some(Drain {
                    deadline,
                    handing_back: false,
                })
            }
        }
        self.out.push(Action::SetTimer {
            token: DRAIN,
            at: deadline,
        });
        self.report_load(now);
        self.check_drain(now);
        self.run_loopback(now);
        Ok(())
    }

    fn drain_status(&self) -> Option<DrainStatus> {
        let d = self.drain?;
        let me = self.me();
        let claimed = self.active.ids().filter(|id| {
            self.records.get(id).is_some_and(
                |r| matches!(r.value.state, TaskState::Running { node, .. } if node == me),
            )
        });
        let held: BTreeSet<TaskId> = self
            .executing
            .keys()
            .chain(self.finished.keys())
            .copied()
            .chain(claimed)
            .collect();
        Some(cohort_core::drain::drain_status(
            d.deadline,
            d.handing_back,
            held,
        ))
    }

    /// The gossiped loads this member holds (its own included).
    fn workers(&self) -> Vec<cohort_core::WorkerInfo> {
        self.membership
            .loads()
            .into_iter()
            .map(|l| cohort_core::WorkerInfo {
                id: l.node,
                live: self.membership.is_live(l.node),
                running: u64::from(l.running),
                capacity: Some(l.capacity),
                labels: l.labels,
            })
            .collect()
    }

    fn ring_view(&self) -> Option<RingView> {
        Some(RingView {
            epoch: self.ring.ring.epoch,
            members: self.ring.ring.members.clone(),
            in_flight: self.ring_proposal.as_ref().map(|p| ring_request(p.change)),
        })
    }

    fn change_ring(&mut self, now: Time, change: RingRequest) -> Result<(), RingRefusal> {
        let node = change.node();
        if !self.peers.members.contains(&node) {
            return Err(RingRefusal::NotAMember(node));
        }
        let wanted = match change {
            RingRequest::Join(n) => RingChange::Add(n),
            RingRequest::Remove(n) => RingChange::Remove(n),
        };
        if let Some(p) = &self.ring_proposal {
            // Asking again for the change in flight is not a conflict: an
            // operator's retry finds it going on.
            return if p.change == wanted {
                Ok(())
            } else {
                Err(RingRefusal::Busy(ring_request(p.change)))
            };
        }
        if self.ring.ring.members == [node] && matches!(wanted, RingChange::Remove(_)) {
            return Err(RingRefusal::LastMember(node));
        }
        self.propose_ring_change(now, wanted).map_err(|e| match e {
            RingError::NotAMember(n) => RingRefusal::NotAMember(n),
            RingError::Busy => RingRefusal::Busy(change),
        })
    }
}

/// Packs `msgs` (for one peer, in order) into as few messages as hold at
/// most `count_max` messages and `bytes_max` encoded bytes each; a message
/// that fits no bundle goes on its own, as it would unbundled.
fn bundles(
    msgs: Vec<LeaderlessMessage>,
    count_max: usize,
    bytes_max: usize,
) -> Vec<LeaderlessMessage> {
    assert!(count_max > 0, "bundle_messages_max is validated positive");
    let mut out = Vec::new();
    let mut open: Vec<LeaderlessMessage> = Vec::new();
    let mut open_bytes = 0usize;
    let close =
        |open: &mut Vec<LeaderlessMessage>, out: &mut Vec<LeaderlessMessage>| match open.len() {
            0 => {}
            1 => out.push(open.pop().expect("one message")),
            _ => out.push(LeaderlessMessage::Bundle(std::mem::take(open))),
        };
    for msg in msgs {
        debug_assert!(!matches!(msg, LeaderlessMessage::Bundle(_)));
        let bytes = cohort_core::encoded_len(&msg);
        if open.len() == count_max || open_bytes + bytes > bytes_max {
            close(&mut open, &mut out);
            open_bytes = 0;
        }
        open_bytes += bytes;
        open.push(msg);
    }
    close(&mut open, &mut out);
    out
}

/// The contract's name for a ring change.
fn ring_request(change: RingChange) -> RingRequest {
    match change {
        RingChange::Add(n) => RingRequest::Join(n),
        RingChange::Remove(n) => RingRequest::Remove(n),
    }
}

/// Randomized exponential backoff after a pre-empted Paxos round: drawn
/// from `[tick, min(paxos_backoff_max_ms, paxos_round_timeout_ms *
/// 2^(failed_rounds - 1))]`. A fixed window lets several proposers of one
/// task (a claimer, a reader settling, a runner finishing) keep pre-empting
/// each other while slow fsyncs stretch every round (`cohort sim` seed 642:
/// four proposers duelled on the same instances through the whole liveness
/// phase); a window that doubles with each failed round separates them.
fn paxos_backoff_ms(config: &LeaderlessConfig, failed_rounds: u32, rng: &mut impl Rng) -> u64 {
    let low = config.tick_interval_ms;
    let doubled = config
        .paxos_round_timeout_ms
        .saturating_mul(1u64 << failed_rounds.saturating_sub(1).min(20));
    let high = doubled.min(config.paxos_backoff_max_ms).max(low);
    rng.gen_range(low..=high)
}

/// Which records a [`LeaderlessNode::claim_work`] pass looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClaimPass {
    /// The tick's (and a small node's) pass: every running record and a
    /// moving window of pending ones ([`LeaderlessNode::claim_scan`]).
    Tick,
    /// Between ticks, with a backlog: the first `claim_early_active_max`
    /// pending records of the claim order only, to fill freed slots.
    Head,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the runtime's events test once claims came within a
    /// millisecond of the write: the answering replica stored the record
    /// after the coordinator had claimed it.
    #[test]
    fn a_history_never_shows_the_submission_after_the_first_assignment() {
        let header = crate::record::test_header(1_000);
        let task = header.task.clone();
        let mut value = TaskValue::initial(&header);
        let assigned = TaskEvent {
            at: Time(1_000),
            what: TaskEventKind::Assigned {
                node: NodeId(1),
                epoch: Epoch(1),
            },
        };
        value.history.push(assigned, 16);
        let times =
            |created_at: u64| match events_response(TaskId(1), &task, Time(created_at), &value, 16)
            {
                ClientResponse::Events { history, .. } => {
                    history.events.iter().map(|e| e.at.0).collect::<Vec<_>>()
                }
                other => panic!("{other:?}"),
            };
        assert_eq!(times(1_200), vec![1_000, 1_000], "stored after the claim");
        assert_eq!(times(900), vec![900, 1_000], "stored before it: as stored");
    }

    #[test]
    fn bundles_keep_order_and_stay_within_count_and_bytes() {
        let digest = |n: u64| LeaderlessMessage::Digest {
            entries: vec![(TaskId(n.into()), n)],
        };
        let msgs: Vec<_> = (0..10).map(digest).collect();
        let one = cohort_core::encoded_len(&msgs[0]);
        let unpack = |out: &[LeaderlessMessage]| -> Vec<LeaderlessMessage> {
            out.iter()
                .flat_map(|m| match m {
                    LeaderlessMessage::Bundle(inner) => inner.clone(),
                    m => vec![m.clone()],
                })
                .collect()
        };
        // By count: 4 + 4 + 2.
        let out = bundles(msgs.clone(), 4, usize::MAX);
        assert_eq!(out.len(), 3);
        assert_eq!(unpack(&out), msgs, "order kept");
        // By bytes: three messages fit, a fourth does not.
        let out = bundles(msgs.clone(), 100, 3 * one + one / 2);
        assert_eq!(out.len(), 4);
        for b in &out {
            assert!(cohort_core::encoded_len(b) <= 3 * one + 16, "{b:?}");
        }
        assert_eq!(unpack(&out), msgs);
        // A lone message, and one too large for any bundle, go unbundled.
        let out = bundles(vec![digest(1)], 4, usize::MAX);
        assert_eq!(out, vec![digest(1)]);
        let out = bundles(vec![digest(1), digest(2)], 4, one - 1);
        assert_eq!(out, vec![digest(1), digest(2)]);
    }

    #[test]
    fn the_paxos_backoff_window_doubles_with_each_failed_round_up_to_its_limit() {
        let config = LeaderlessConfig::default();
        let mut rng = NodeRng::seed_from_u64(642);
        let widest = |failed_rounds: u32, rng: &mut NodeRng| {
            (0..2_000)
                .map(|_| paxos_backoff_ms(&config, failed_rounds, rng))
                .fold((u64::MAX, 0), |(lo, hi), ms| (lo.min(ms), hi.max(ms)))
        };
        let tick = config.tick_interval_ms;
        let round = config.paxos_round_timeout_ms;
        for (failed_rounds, high) in [(1, round), (2, 2 * round), (3, 4 * round), (4, 8 * round)] {
            let (lo, hi) = widest(failed_rounds, &mut rng);
            let high = high.min(config.paxos_backoff_max_ms);
            assert!(lo >= tick && hi <= high, "{failed_rounds}: {lo}..{hi}");
            // 2,000 draws come within 5% of the top of the window.
            assert!(hi * 20 >= high * 19, "{failed_rounds}: {hi} of {high}");
        }
        let (_, hi) = widest(40, &mut rng);
        assert!(hi <= config.paxos_backoff_max_ms);
        assert!(hi * 20 >= config.paxos_backoff_max_ms * 19);
    }
}
