//! [`LeaderNode`]: Raft plus the scheduler on the [`Node`] contract
//! (`--mode leader`).
//!
//! Every node is a worker; the first `voters_max` members are Raft voters
//! and the rest learners. Per input the node steps Raft, then drains Raft's
//! [`Ready`] into actions in order — `Persist`, then `Send`s, then what
//! applying the committed entries decides (`Note`s, `Execute`s, `Reply`s) —
//! and repeats while the leader's duties (assignments, dead workers)
//! propose more. Finally it arms one timer for the earliest deadline.
//!
//! Clients: submits and cancels go through the log and are answered on
//! apply (G1); linearizable reads through ReadIndex; stale reads from the
//! local state. A follower answers `NotLeader { leader }`; with no leader
//! known, `Unavailable`. A leader that loses leadership answers its waiting
//! requests with `Unavailable` (retrying a submit is idempotent); so does a
//! batch whose index turns out to hold another leader's entry, which a
//! deposed leader can apply before it notices it lost leadership.
//!
//! Workers heartbeat the leader every `worker_heartbeat_ms` with their load,
//! the index they have applied and the assignments they hold. The leader
//! declares a worker dead after `alpha` heartbeats of silence (with a grace
//! period of the same length after it takes over), and reclaims an
//! assignment its runner no longer holds (the runner restarted).

use crate::raft::{
    Boot, EntryKind, Membership, MembershipChange, RaftConfig, RaftError, RaftLog, RaftMsg,
    RaftNode, RaftStatus, Ready,
};
use crate::scheduler::{Command, Scheduler};
use cohort_core::task::carries;
use cohort_core::{
    decode, encode, event_progress, Action, BootError, ClientError, ClientRequest, ClientResponse,
    Consistency, DrainRefusal, DrainStatus, Epoch, HeartbeatReply, LimitCounts, Node, NodeId,
    NodeRng, Peers, RequestId, Stored, Task, TaskId, TaskLimit, TaskOutcome, TaskState, Time,
    TimerToken,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Settings of leader mode, as given. Turn into a [`ValidLeaderConfig`]
/// with [`LeaderConfig::validate`] before booting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Smallest randomized election timeout.
    pub election_timeout_ms_min: u64,
    /// Largest randomized election timeout.
    pub election_timeout_ms_max: u64,
    /// Raft heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Worker heartbeat period (`T_heartbeat`).
    pub worker_heartbeat_ms: u64,
    /// A worker is dead after `alpha * worker_heartbeat_ms` of silence.
    pub alpha: u64,
    /// Most Raft voters; further members are learners.
    pub voters_max: usize,
    /// Snapshot once this many applied entries sit in the log.
    pub snapshot_entries_threshold: u64,
    /// Entries kept behind a snapshot for slightly lagging followers.
    pub snapshot_keep_entries: u64,
    /// Snapshot only once the log also holds at least this many entries
    /// per task record in the state (0: no such rule). A snapshot encodes
    /// and writes the whole state, so without it a state of `n` records
    /// costs `O(n)` every `snapshot_entries_threshold` entries, which grows
    /// without bound as tasks accumulate; with it the cost per entry stays
    /// constant and the log stays within `max(threshold, this * records)`
    /// entries, records being bounded by `tasks_retained_max` and
    /// `tasks_active_max`.
    pub snapshot_entries_per_record: u64,
    /// Snapshot also once the log's entries hold more than this many
    /// payload bytes (`Entry::payload_bytes`), whatever the two rules above
    /// say: the log lives in memory, and a restart replays it.
    pub snapshot_log_bytes_max: usize,
    /// Most entries per AppendEntries.
    pub append_entries_max: usize,
    /// Most AppendEntries in flight per follower.
    pub appends_inflight_max: usize,
    /// Bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Most client requests waiting for commit or a read round at one node.
    pub requests_waiting_max: usize,
    /// Most assignments proposed per scheduling round (one log entry),
    /// and most results packed in one log entry.
    pub assignments_per_round_max: usize,
    /// Most schedule definitions and tombstones the cluster keeps. Both
    /// are kept for ever (`cohort_core::schedule::kept_for_ever`), outside
    /// retention and `tasks_retained_max`, so a new schedule past this is
    /// refused `429 overloaded` instead (a tombstone, so that a delete goes
    /// through, past twice this).
    pub schedules_kept_max: usize,
}

impl Default for LeaderConfig {
    fn default() -> LeaderConfig {
        LeaderConfig {
            election_timeout_ms_min: 150,
            election_timeout_ms_max: 300,
            heartbeat_interval_ms: 50,
            worker_heartbeat_ms: 100,
            alpha: 5,
            voters_max: 5,
            snapshot_entries_threshold: 1_000,
            snapshot_keep_entries: 100,
            // Eight entries per record: a snapshot stalls the event loop
            // while it encodes and writes the whole state, and at one per
            // record those stalls made the submit->ack p99 (3 nodes,
            // 3,000 submits/s open loop, two runs each: 29 / 57 ms at 1,
            // 15 / 10 ms at 8).
            snapshot_entries_per_record: 8,
            snapshot_log_bytes_max: 128 << 20,
            append_entries_max: 64,
            appends_inflight_max: 8,
            snapshot_chunk_bytes: 64 << 10,
            requests_waiting_max: 10_000,
            assignments_per_round_max: 256,
            schedules_kept_max: 100_000,
        }
    }
}

/// A configuration that cannot be used. Nothing was started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting that must be positive is zero.
    #[error("{what} must be positive")]
    Zero {
        /// Which setting.
        what: &'static str,
    },
    /// The election timeout range is empty or too tight for the heartbeat.
    #[error("need heartbeat_interval_ms < election_timeout_ms_min <= election_timeout_ms_max")]
    ElectionTimeouts,
}

impl LeaderConfig {
    /// Checks the settings.
    pub fn validate(self) -> Result<ValidLeaderConfig, ConfigError> {
        let positive = [
            ("election_timeout_ms_min", self.election_timeout_ms_min),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("worker_heartbeat_ms", self.worker_heartbeat_ms),
            ("alpha", self.alpha),
            ("voters_max", self.voters_max as u64),
            (
                "snapshot_entries_threshold",
                self.snapshot_entries_threshold,
            ),
            ("append_entries_max", self.append_entries_max as u64),
            ("appends_inflight_max", self.appends_inflight_max as u64),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes as u64),
            ("snapshot_log_bytes_max", self.snapshot_log_bytes_max as u64),
            ("requests_waiting_max", self.requests_waiting_max as u64),
            (
                "assignments_per_round_max",
                self.assignments_per_round_max as u64,
            ),
            ("schedules_kept_max", self.schedules_kept_max as u64),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(ConfigError::Zero { what });
            }
        }
        if self.heartbeat_interval_ms >= self.election_timeout_ms_min
            || self.election_timeout_ms_min > self.election_timeout_ms_max
        {
            return Err(ConfigError::ElectionTimeouts);
        }
        Ok(ValidLeaderConfig(self))
    }
}

/// A [`LeaderConfig`] that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidLeaderConfig(LeaderConfig);

impl ValidLeaderConfig {
    /// The settings.
    pub fn get(&self) -> &LeaderConfig {
        &self.0
    }

    fn raft(&self, peers: &Peers) -> RaftConfig {
        let c = &self.0;
        RaftConfig {
            election_timeout_ms_min: c.election_timeout_ms_min,
            election_timeout_ms_max: c.election_timeout_ms_max,
            heartbeat_interval_ms: c.heartbeat_interval_ms,
            append_entries_max: c.append_entries_max,
            // One maximal payload always fits a message; batches stay well
            // below the message limit.
            append_bytes_max: peers.limits.message_bytes_max / 4,
            appends_inflight_max: c.appends_inflight_max,
            snapshot_chunk_bytes: c.snapshot_chunk_bytes,
            message_bytes_max: peers.limits.message_bytes_max,
        }
    }

    fn worker_timeout(&self) -> Duration {
        Duration::from_millis(self.0.alpha * self.0.worker_heartbeat_ms)
    }
}

impl Default for ValidLeaderConfig {
    fn default() -> ValidLeaderConfig {
        LeaderConfig::default()
            .validate()
            .expect("the defaults are valid")
    }
}

/// The bytes an outcome adds to a log entry, near enough to bound one.
fn outcome_bytes(outcome: &TaskOutcome) -> usize {
    match outcome {
        TaskOutcome::Success(result) => result.len(),
        TaskOutcome::Failure(error) => error.len(),
    }
}

/// Messages between leader-mode nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderMsg {
    /// Raft traffic.
    Raft(RaftMsg),
    /// A worker's heartbeat to the leader.
    Heartbeat {
        /// How many tasks the worker may run at once.
        capacity: u32,
        /// Log index the worker has applied.
        applied: u64,
        /// Assignments it runs or holds an unreported result for.
        holding: Vec<(TaskId, Epoch)>,
        /// The worker labels it carries (tasks naming others are not
        /// assigned to it).
        labels: Vec<String>,
    },
    /// A worker's result for `(task, epoch)`, resent until committed.
    Result {
        /// The task.
        task: TaskId,
        /// The assignment's epoch.
        epoch: Epoch,
        /// What the handler returned.
        outcome: TaskOutcome,
    },
    /// A draining worker hands `(task, epoch)` back without a result;
    /// resent until the cluster has moved the task on. (Last in the enum:
    /// the encoding of the earlier variants stays as it was.)
    Release {
        /// The task.
        task: TaskId,
        /// The assignment handed back.
        epoch: Epoch,
    },
    /// Worker → leader: the handler of `(task, epoch)` is alive and reports
    /// `progress`, to record. Not resent: the next heartbeat carries newer
    /// progress. Last in the enum, like `Release`.
    Progress {
        /// The task.
        task: TaskId,
        /// The assignment.
        epoch: Epoch,
        /// What the handler reported.
        progress: String,
    },
}

/// What the leader knows of one worker (volatile, rebuilt by each leader).
#[derive(Clone, Debug)]
struct WorkerView {
    last_heard: Time,
    capacity: Option<u32>,
    labels: Vec<String>,
}

/// Leader-only bookkeeping of proposals not yet applied, so nothing is
/// proposed twice. Cleared whenever leadership changes.
#[derive(Debug, Default)]
struct Inflight {
    assign: InflightAssigns,
    results: InflightResults,
    /// Results taken during this input, proposed together as one entry
    /// before it settles (each is in `results` already).
    results_unproposed: Vec<Command>,
    dead: BTreeSet<NodeId>,
    alive: BTreeSet<NodeId>,
    reclaim: BTreeSet<(TaskId, Epoch)>,
    release: BTreeSet<(TaskId, Epoch)>,
    expire: BTreeSet<TaskId>,
    /// `Command::ExpireLease` proposed, not yet applied.
    leases: BTreeSet<(TaskId, Epoch)>,
    /// At most one heartbeat per task in flight: later ones are dropped
    /// until it applies (they carry progress only, never a decision).
    progress: BTreeSet<TaskId>,
    /// A `Command::Purge` is proposed and not yet applied.
    purge: bool,
}

/// Assignments proposed and not yet applied, counted per runner and per
/// limit key as they come and go: a scheduling round, which runs after
/// every input, reads the counts instead of walking every one.
#[derive(Debug, Default)]
struct InflightAssigns {
    by_task: BTreeMap<TaskId, (NodeId, Option<String>)>,
    per_node: BTreeMap<NodeId, u64>,
    per_key: BTreeMap<String, u32>,
}

impl InflightAssigns {
    fn insert(&mut self, id: TaskId, node: NodeId, key: Option<String>) {
        if let Some(k) = &key {
            *self.per_key.entry(k.clone()).or_default() += 1;
        }
        *self.per_node.entry(node).or_default() += 1;
        let before = self.by_task.insert(id, (node, key));
        assert!(before.is_none(), "one assignment of a task in flight");
    }

    fn remove(&mut self, id: TaskId) {
        let Some((node, key)) = self.by_task.remove(&id) else {
            return;
        };
        uncount(&mut self.per_node, &node);
        if let Some(k) = key {
            uncount(&mut self.per_key, &k);
        }
    }

    fn len(&self) -> usize {
        self.by_task.len()
    }

    fn contains(&self, id: TaskId) -> bool {
        self.by_task.contains_key(&id)
    }
}

/// Takes one off `key`'s count, dropping the key at zero (so a count's
/// map holds only what is in flight).
fn uncount<K: Ord, N: Copy + PartialEq + std::ops::SubAssign + From<u8>>(
    counts: &mut BTreeMap<K, N>,
    key: &K,
) {
    let n = counts.get_mut(key).expect("counted when inserted");
    *n -= N::from(1);
    if *n == N::from(0) {
        counts.remove(key);
    }
}

/// Results taken and not yet applied, counted per runner: its handler has
/// returned, so the slot it held is free for the next assignment now
/// rather than a commit later (under load that halves how long a no-op
/// task holds a slot: assignment round, then the result's round).
#[derive(Debug, Default)]
struct InflightResults {
    by_attempt: BTreeMap<(TaskId, Epoch), NodeId>,
    per_node: BTreeMap<NodeId, u64>,
}

impl InflightResults {
    fn insert(&mut self, attempt: (TaskId, Epoch), node: NodeId) {
        let before = self.by_attempt.insert(attempt, node);
        assert!(before.is_none(), "one result of an attempt in flight");
        *self.per_node.entry(node).or_default() += 1;
    }

    fn remove(&mut self, attempt: &(TaskId, Epoch)) {
        if let Some(node) = self.by_attempt.remove(attempt) {
            uncount(&mut self.per_node, &node);
        }
    }

    fn contains(&self, attempt: &(TaskId, Epoch)) -> bool {
        self.by_attempt.contains_key(attempt)
    }
}

/// Whether applying `cmd` may end a running attempt other than by that
/// attempt's own result. Exhaustive, so that a new command must answer.
fn may_end_another_attempt(cmd: &Command) -> bool {
    match cmd {
        Command::WorkerDead { .. }
        | Command::Reclaim { .. }
        | Command::Cancel { .. }
        | Command::Release { .. }
        | Command::ExpireLease { .. } => true,
        Command::Submit { .. }
        | Command::SubmitBatch { .. }
        | Command::Assign { .. }
        | Command::Result { .. }
        | Command::WorkerAlive { .. }
        | Command::Expire { .. }
        | Command::Heartbeat { .. }
        | Command::Purge => false,
        Command::Many { commands } => commands.iter().any(may_end_another_attempt),
    }
}

/// Worker side: this node is draining (volatile: a restarted node is not).
#[derive(Debug)]
struct Drain {
    deadline: Time,
    /// The deadline passed: executions were handed back.
    handing_back: bool,
    /// Assignments handed back whose release is not yet applied here.
    /// Listed as held in heartbeats, so the leader does not reclaim them
    /// as lost meanwhile.
    releasing: BTreeMap<TaskId, Epoch>,
}

/// What a read returns.
#[derive(Clone, Copy, Debug)]
enum ReadOf {
    /// The task's state.
    State(TaskId),
    /// Its state and event history.
    Events(TaskId),
}

impl ReadOf {
    fn id(self) -> TaskId {
        match self {
            ReadOf::State(id) | ReadOf::Events(id) => id,
        }
    }
}

/// A batch proposed by this leader, waiting for its entry to apply.
#[derive(Debug)]
struct WaitingBatch {
    request: RequestId,
    /// The term the entry was proposed in: the entry applied at its index
    /// is this batch's own only if it has this term (Log Matching). A
    /// deposed leader's uncommitted entry can be replaced by a successor's
    /// different entry at the same index, which this node then applies.
    term: u64,
    /// The batch's ids, to check the entry answered is the batch's own.
    ids: Vec<TaskId>,
}

/// Client requests waiting at this node.
///
/// Submits and cancels wait by task id, not by log index: whichever
/// entry for that id commits (this node's or, after a leadership change, a
/// successor's), the answer is read from the applied, hence committed,
/// state, so it is right whoever proposed the entry. Batches wait by index
/// and term (see [`WaitingBatch`]); reads by a read index that a quorum
/// confirmed while this node led, served from the applied state.
#[derive(Debug, Default)]
struct Waiting {
    submits: BTreeMap<TaskId, Vec<(RequestId, Task)>>,
    cancels: BTreeMap<TaskId, Vec<RequestId>>,
    /// Batches proposed by this leader, by log index.
    batches: BTreeMap<u64, WaitingBatch>,
    /// Tasks in those batches (for `tasks_active_max`).
    batch_tasks: usize,
    /// Read round ctx -> (request, what it reads).
    reads: BTreeMap<u64, (RequestId, ReadOf)>,
    /// Confirmed reads waiting for the apply index.
    confirmed: Vec<(u64, RequestId, ReadOf)>,
    next_ctx: u64,
}

impl Waiting {
    fn len(&self) -> usize {
        self.submits.values().map(Vec::len).sum::<usize>()
            + self.cancels.values().map(Vec::len).sum::<usize>()
            + self.batches.len()
            + self.reads.len()
            + self.confirmed.len()
    }
}

/// A leader-mode node. See the module docs.
#[derive(Debug)]
pub struct LeaderNode {
    peers: Peers,
    cfg: ValidLeaderConfig,
    raft: RaftNode,
    sm: Scheduler,
    applied: u64,
    actions: Vec<Action<LeaderMsg>>,
    /// Worker side: assignments being executed.
    executing: BTreeMap<TaskId, Epoch>,
    /// Worker side: results not yet seen committed.
    results: BTreeMap<(TaskId, Epoch), TaskOutcome>,
    next_worker_tick: Time,
    /// Leader side.
    workers: BTreeMap<NodeId, WorkerView>,
    inflight: Inflight,
    waiting: Waiting,
    was_leader: bool,
    /// Snapshots received from a leader and restored since boot.
    snapshots_installed: u64,
    /// The leader last heartbeated, to greet a new one at once.
    greeted: Option<NodeId>,
    armed: Option<Time>,
    now: Time,
    /// Graceful shutdown: the term in which this leader began handing over.
    handing_over: Option<u64>,
    /// Whether the driver calls [`Node::flush`] (from its first call on),
    /// so Raft may hold back sends until then.
    flushed: bool,
    /// Draining: no new work, hand back what is left at the deadline.
    drain: Option<Drain>,
    /// Replies that may precede their batch's writes (see
    /// [`Node::reply_may_precede_persist`]), with the flush count of their
    /// batch; at most one batch's worth is held.
    early_replies: BTreeMap<RequestId, u64>,
    /// Flushes so far.
    flushes: u64,
}

const TIMER: u64 = 0;

/// How many ready tasks one assignment round may look at, per assignment
/// it can make: tasks whose labels no worker with room carries are passed
/// over, and this bounds that walk.
pub const LABELLED_SCAN_FACTOR: usize = 8;

/// Whether every command an append carries decodes, as applying it will.
/// Commands come from a leader of this cluster, but what a peer sends is
/// checked before it can crash this node.
fn commands_decode(m: &RaftMsg) -> bool {
    let RaftMsg::Append { entries, .. } = m else {
        return true;
    };
    entries.iter().all(|e| match &e.kind {
        EntryKind::Command(bytes) => decode::<(Time, Command)>(bytes, usize::MAX).is_ok(),
        EntryKind::Noop | EntryKind::Config(_) => true,
    })
}

impl Node for LeaderNode {
    type Message = LeaderMsg;
    type Config = ValidLeaderConfig;

    fn boot(
        peers: &Peers,
        config: &ValidLeaderConfig,
        stored: &Stored,
        rng: NodeRng,
        now: Time,
    ) -> Result<Self, BootError> {
        let initial = Membership::initial(&peers.members, config.get().voters_max);
        let (mut raft, boot) =
            RaftNode::restore(peers.id, initial, config.raft(peers), stored, rng, now)?;
        // Installing a snapshot that does not decode would panic when it
        // is applied: the Raft core drops it before it touches the log.
        raft.check_snapshots_with(|data| decode::<Scheduler>(data, usize::MAX).is_ok());
        let mut node = LeaderNode {
            peers: peers.clone(),
            cfg: config.clone(),
            raft,
            sm: Scheduler::new(
                peers.limits.tasks_retained_max,
                peers.limits.task_events_max,
            )
            .with_retention(peers.limits.retention()),
            applied: 0,
            actions: Vec::new(),
            executing: BTreeMap::new(),
            results: BTreeMap::new(),
            next_worker_tick: now,
            workers: BTreeMap::new(),
            inflight: Inflight::default(),
            waiting: Waiting::default(),
            was_leader: false,
            snapshots_installed: 0,
            handing_over: None,
            flushed: false,
            drain: None,
            early_replies: BTreeMap::new(),
            flushes: 0,
            greeted: None,
            armed: None,
            now,
        };
        node.restore_silently(boot)?;
        node.after_input();
        Ok(node)
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: LeaderMsg) {
        self.now = self.now.max(now);
        match msg {
            // A command that does not decode would panic when applied:
            // refuse the whole append before it reaches the log.
            LeaderMsg::Raft(m) if !commands_decode(&m) => {}
            LeaderMsg::Raft(m) => self.raft.step(self.now, from, m),
            LeaderMsg::Heartbeat {
                capacity,
                applied,
                holding,
                labels,
            } => self.on_heartbeat(from, capacity, applied, holding, labels),
            LeaderMsg::Result {
                task,
                epoch,
                outcome,
            } => self.on_result(from, task, epoch, outcome),
            LeaderMsg::Release { task, epoch } => self.on_release(from, task, epoch),
            LeaderMsg::Progress {
                task,
                epoch,
                progress,
            } => self.on_progress(from, task, epoch, progress),
        }
        self.after_input();
    }

    fn handle_timer(&mut self, now: Time, token: TimerToken) {
        self.now = self.now.max(now);
        let _ = token;
        if self.armed.is_some_and(|a| a <= self.now) {
            self.armed = None;
        }
        self.raft.tick(self.now);
        if self.now >= self.next_worker_tick {
            self.next_worker_tick =
                self.now + Duration::from_millis(self.cfg.get().worker_heartbeat_ms);
            self.worker_tick();
        }
        self.after_input();
    }

    fn handle_client(&mut self, now: Time, request: RequestId, req: ClientRequest) {
        self.now = self.now.max(now);
        if let Err(e) = self.client(request, req) {
            self.reply(request, Err(e));
        }
        self.after_input();
    }

    fn handle_task_finished(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    ) {
        self.now = self.now.max(now);
        if self.executing.get(&task) == Some(&epoch) {
            self.executing.remove(&task);
        }
        let released = self
            .drain
            .as_ref()
            .is_some_and(|d| d.releasing.get(&task) == Some(&epoch));
        // A result of an assignment handed back does not count: another
        // worker may run the task already.
        if !released && self.sm.is_running(task, epoch) {
            self.results.insert((task, epoch), outcome.clone());
            self.report_result(task, epoch, outcome);
        }
        self.after_input();
    }

    fn handle_heartbeat(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        progress: Option<String>,
    ) -> HeartbeatReply {
        self.now = self.now.max(now);
        let handed_back = self
            .drain
            .as_ref()
            .is_some_and(|d| d.releasing.get(&task) == Some(&epoch));
        let state = self.sm.get(task).map(|r| &r.state);
        let reply = match HeartbeatReply::for_state(state, self.peers.id, epoch) {
            HeartbeatReply::Continue if handed_back => HeartbeatReply::Superseded,
            r => r,
        };
        if reply == HeartbeatReply::Continue && self.executing.get(&task) == Some(&epoch) {
            if let Some(progress) = progress {
                let progress = event_progress(&progress);
                match self.raft.leader() {
                    Some(l) if l == self.peers.id => self.on_progress(l, task, epoch, progress),
                    Some(l) => self.send(
                        l,
                        LeaderMsg::Progress {
                            task,
                            epoch,
                            progress,
                        },
                    ),
                    None => {} // dropped: the next heartbeat reports newer progress
                }
            }
        }
        self.after_input();
        reply
    }

    fn flush(&mut self, now: Time) {
        self.now = self.now.max(now);
        // Earlier batches' replies are long carried out.
        let this_batch = self.flushes;
        self.early_replies.retain(|_, batch| *batch == this_batch);
        if !self.flushed {
            self.flushed = true;
            self.raft.defer_sends();
        }
        // The duties first: what they propose goes out with this flush.
        self.settle(true);
        self.raft.flush(self.now);
        self.settle(false);
        self.flushes += 1;
    }

    fn reply_may_precede_persist(&self, request: RequestId) -> bool {
        // Counted before this batch's flush ended.
        self.flushes
            .checked_sub(1)
            .is_some_and(|batch| self.early_replies.get(&request) == Some(&batch))
    }

    fn may_precede_persist(&self, msg: &LeaderMsg) -> bool {
        match msg {
            LeaderMsg::Raft(m) => self.raft.may_precede_persist(m),
            _ => false,
        }
    }

    fn actions(&mut self) -> std::vec::Drain<'_, Action<LeaderMsg>> {
        self.actions.drain(..)
    }

    fn id(&self) -> NodeId {
        self.peers.id
    }

    fn visit_tasks(
        &self,
        after: Option<TaskId>,
        visit: &mut dyn FnMut(TaskId, &Task, &cohort_core::TaskState) -> bool,
    ) {
        for (id, rec) in self.sm.tasks_after(after) {
            if !visit(*id, &rec.task, &rec.state) {
                break;
            }
        }
    }

    fn handle_peer_lost(&mut self, now: Time, peer: NodeId) {
        self.now = self.now.max(now);
        self.raft.peer_lost(self.now, peer);
        self.after_input();
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.raft.counters();
        vec![
            ("pre_votes_started", c.pre_votes_started),
            ("elections_started", c.elections_started),
            ("terms_led", c.terms_led),
            ("leader_changes_seen", c.leader_changes_seen),
        ]
    }

    fn begin_shutdown(&mut self, now: Time) {
        if self.handing_over.is_some() {
            return;
        }
        let term = self.raft_status().term;
        if self.shutdown(now).is_some() {
            self.handing_over = Some(term);
        }
    }

    fn shutdown_ready(&self) -> bool {
        let Some(term) = self.handing_over else {
            return true;
        };
        let st = self.raft_status();
        match st.role {
            // Done once a newer leader has been heard from, so clients are
            // redirected to it the moment this node stops.
            crate::raft::Role::Follower => st.term > term && st.leader.is_some_and(|l| l != st.id),
            // Still leading: ready only if the transfer was abandoned.
            crate::raft::Role::Leader => self.raft.transferring_to().is_none(),
            crate::raft::Role::PreCandidate | crate::raft::Role::Candidate => false,
        }
    }

    fn begin_drain(&mut self, now: Time, deadline: Time) -> Result<(), DrainRefusal> {
        self.now = self.now.max(now);
        match &mut self.drain {
            Some(d) => d.deadline = d.deadline.min(deadline),
            None => {
                self.drain = Some(Drain {
                    deadline,
                    handing_back: false,
                    releasing: BTreeMap::new(),
                });
                // The leader learns the capacity of 0 now, not a heartbeat
                // period later.
                self.worker_tick();
            }
        }
        self.after_input();
        Ok(())
    }

    fn drain_status(&self) -> Option<DrainStatus> {
        let d = self.drain.as_ref()?;
        let me = self.peers.id;
        let held: BTreeSet<TaskId> = self
            .executing
            .keys()
            .copied()
            .chain(self.results.keys().map(|(t, _)| *t))
            .chain(d.releasing.keys().copied())
            .chain(self.sm.running_on(me))
            .collect();
        Some(cohort_core::drain::drain_status(
            d.deadline,
            d.handing_back,
            held,
        ))
    }

    /// The leader's view; other nodes place no work, so they list none.
    fn workers(&self) -> Vec<cohort_core::WorkerInfo> {
        if !self.raft.is_leader() {
            return Vec::new();
        }
        self.workers
            .iter()
            .map(|(w, v)| cohort_core::WorkerInfo {
                id: *w,
                live: self.is_live_worker(*w, v),
                running: self.sm.load(*w) as u64,
                capacity: v.capacity,
                labels: v.labels.clone(),
            })
            .collect()
    }

    fn status(&self) -> cohort_core::NodeStatus {
        let st = self.raft_status();
        let role = match st.role {
            crate::raft::Role::Follower => "follower",
            crate::raft::Role::PreCandidate => "pre-candidate",
            crate::raft::Role::Candidate => "candidate",
            crate::raft::Role::Leader => "leader",
        };
        cohort_core::NodeStatus {
            id: st.id,
            role,
            leader: st.leader,
            term: Some(st.term),
        }
    }
}

impl LeaderNode {
    /// Raft's status, for invariant checkers.
    pub fn raft_status(&self) -> RaftStatus {
        self.raft.status()
    }

    /// Raft's log (terms of entries, for log-matching checkers).
    pub fn raft_log(&self) -> &RaftLog {
        self.raft.log()
    }

    /// Snapshots received from a leader and restored since boot.
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed
    }

    /// The replicated scheduler state as applied here.
    pub fn scheduler(&self) -> &Scheduler {
        &self.sm
    }

    /// Proposes a membership change (only at the leader).
    pub fn propose_membership(
        &mut self,
        now: Time,
        change: MembershipChange,
    ) -> Result<(), RaftError> {
        self.now = self.now.max(now);
        let r = self.raft.propose_membership(self.now, change).map(|_| ());
        self.after_input();
        r
    }

    /// Graceful shutdown: a leader hands over to the most caught-up voter.
    /// Returns the target, if a transfer started.
    pub fn shutdown(&mut self, now: Time) -> Option<NodeId> {
        self.now = self.now.max(now);
        let target = self
            .raft
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.peers.id)
            .max_by_key(|v| (self.raft.match_index(*v), std::cmp::Reverse(*v)));
        let started = target.filter(|t| self.raft.transfer_leadership(self.now, *t).is_ok());
        self.after_input();
        started
    }

    // ---- inputs ------------------------------------------------------

    fn client(&mut self, request: RequestId, req: ClientRequest) -> Result<(), ClientError> {
        match req {
            ClientRequest::Get {
                id,
                consistency: Consistency::Stale,
            } => {
                let reply = self.read_local(ReadOf::State(id));
                self.reply(request, reply);
                return Ok(());
            }
            ClientRequest::Events {
                id,
                consistency: Consistency::Stale,
            } => {
                let reply = self.read_local(ReadOf::Events(id));
                self.reply(request, reply);
                return Ok(());
            }
            _ => {}
        }
        match &req {
            ClientRequest::Submit { task, .. } => self.peers.limits.check_task(task)?,
            ClientRequest::SubmitBatch { tasks } => self.peers.limits.check_batch(tasks)?,
            ClientRequest::Get { .. } | ClientRequest::Cancel { .. } => {}
            ClientRequest::Events { .. } => {}
        }
        self.require_leader()?;
        if self.waiting.len() >= self.cfg.get().requests_waiting_max {
            return Err(ClientError::Overloaded {
                what: "requests_waiting_max".into(),
                limit: self.cfg.get().requests_waiting_max,
            });
        }
        match req {
            ClientRequest::Submit { id, task } => self.submit(request, id, task),
            ClientRequest::SubmitBatch { tasks } => self.submit_batch(request, tasks),
            ClientRequest::Get { id, .. } => self.read_linearizable(request, ReadOf::State(id)),
            ClientRequest::Events { id, .. } => self.read_linearizable(request, ReadOf::Events(id)),
            ClientRequest::Cancel { id } => {
                if let Some(rec) = self.sm.get(id) {
                    if rec.state.is_final() && self.raft.committed_in_term() {
                        // Final in the applied state: committed, never changes.
                        let reply = Ok(ClientResponse::State {
                            id,
                            state: rec.state.clone(),
                        });
                        self.reply(request, reply);
                        return Ok(());
                    }
                }
                self.propose(&Command::Cancel { id })?;
                self.waiting.cancels.entry(id).or_default().push(request);
                Ok(())
            }
        }
    }

    fn submit(&mut self, request: RequestId, id: TaskId, task: Task) -> Result<(), ClientError> {
        if let Some(rec) = self.sm.get(id) {
            // Applied state only holds committed submits: answer at once.
            return if rec.task == task {
                self.reply(request, Ok(ClientResponse::Accepted { id }));
                Ok(())
            } else {
                Err(ClientError::IdConflict { id })
            };
        }
        if let Some(waiters) = self.waiting.submits.get_mut(&id) {
            if waiters[0].1 != task {
                return Err(ClientError::IdConflict { id });
            }
            waiters.push((request, task));
            return Ok(());
        }
        let active_max = self.peers.limits.tasks_active_max;
        if self.sm.active() + self.waiting.submits.len() >= active_max {
            return Err(ClientError::Overloaded {
                what: "tasks_active_max".into(),
                limit: active_max,
            });
        }
        self.check_schedules_kept(&task)?;
        self.propose(&Command::Submit {
            id,
            task: task.clone(),
        })?;
        self.waiting.submits.insert(id, vec![(request, task)]);
        Ok(())
    }

    /// Refuses a new schedule definition once the cluster keeps
    /// `schedules_kept_max` definitions and tombstones (a tombstone past
    /// twice that, so a delete still goes through). Counted: the final ones
    /// and those waiting to commit here; a definition committed but not
    /// yet run is not, so the cluster may keep a few more.
    fn check_schedules_kept(&self, task: &Task) -> Result<(), ClientError> {
        use cohort_core::schedule::{kept_for_ever, SchedulePayload};
        if !kept_for_ever(task) {
            return Ok(());
        }
        let max = self.cfg.get().schedules_kept_max;
        let waiting = self
            .waiting
            .submits
            .values()
            .filter(|w| kept_for_ever(&w[0].1))
            .count();
        let kept = self.sm.kept() + waiting;
        let tombstone = matches!(
            cohort_core::codec::decode::<SchedulePayload>(&task.payload, task.payload.len()),
            Ok(SchedulePayload::Deleted)
        );
        let bound = if tombstone {
            max.saturating_mul(2)
        } else {
            max
        };
        if kept >= bound {
            return Err(ClientError::Overloaded {
                what: "schedules_kept_max".into(),
                limit: max,
            });
        }
        Ok(())
    }

    /// One log entry for the whole batch: committed, it creates every task
    /// or (if an id turned out to name a different task) none.
    fn submit_batch(
        &mut self,
        request: RequestId,
        tasks: Vec<(TaskId, Task)>,
    ) -> Result<(), ClientError> {
        let mut new = 0usize;
        for (index, (id, task)) in tasks.iter().enumerate() {
            let conflict = match self.sm.get(*id) {
                Some(rec) => rec.task != *task,
                None => {
                    new += 1;
                    self.waiting
                        .submits
                        .get(id)
                        .is_some_and(|w| w[0].1 != *task)
                }
            };
            if conflict {
                return Err(ClientError::BatchItem {
                    index,
                    error: Box::new(ClientError::IdConflict { id: *id }),
                });
            }
        }
        if new == 0 {
            // Every task is applied already (a retried batch): committed state.
            let ids = tasks.into_iter().map(|(id, _)| id).collect();
            self.reply(request, Ok(ClientResponse::AcceptedBatch { ids }));
            return Ok(());
        }
        let active_max = self.peers.limits.tasks_active_max;
        let active = self.sm.active() + self.waiting.submits.len() + self.waiting.batch_tasks;
        if active + new > active_max {
            return Err(ClientError::Overloaded {
                what: "tasks_active_max".into(),
                limit: active_max,
            });
        }
        let ids: Vec<TaskId> = tasks.iter().map(|(id, _)| *id).collect();
        let term = self.raft.term();
        let index = self.propose(&Command::SubmitBatch { tasks })?;
        self.waiting.batch_tasks += ids.len();
        let waiter = WaitingBatch { request, term, ids };
        self.waiting.batches.insert(index, waiter);
        Ok(())
    }

    fn require_leader(&self) -> Result<(), ClientError> {
        if self.raft.is_leader() {
            return Ok(());
        }
        match self.raft.leader() {
            Some(l) => Err(ClientError::NotLeader { leader: Some(l) }),
            None => Err(ClientError::Unavailable {
                reason: "no leader elected".into(),
            }),
        }
    }

    /// A read confirmed by a read index (ReadIndex): answered once that
    /// index is applied.
    fn read_linearizable(&mut self, request: RequestId, of: ReadOf) -> Result<(), ClientError> {
        let ctx = self.waiting.next_ctx;
        self.waiting.next_ctx += 1;
        self.raft.read_index(self.now, ctx).map_err(unavailable)?;
        self.waiting.reads.insert(ctx, (request, of));
        Ok(())
    }

    fn read_local(&self, of: ReadOf) -> Result<ClientResponse, ClientError> {
        let id = of.id();
        let Some(rec) = self.sm.get(id) else {
            return Err(ClientError::NotFound { id });
        };
        Ok(match of {
            ReadOf::State(_) => ClientResponse::State {
                id,
                state: rec.state.clone(),
            },
            ReadOf::Events(_) => ClientResponse::Events {
                id,
                state: rec.state.clone(),
                history: rec.history.clone(),
                task: Box::new(rec.task.clone()),
            },
        })
    }

    fn on_heartbeat(
        &mut self,
        from: NodeId,
        capacity: u32,
        applied: u64,
        holding: Vec<(TaskId, Epoch)>,
        labels: Vec<String>,
    ) {
        if !self.raft.is_leader() || !self.peers.members.contains(&from) {
            return;
        }
        // A peer's labels go through the checks of the node's own: at most
        // TASK_LABELS_MAX, each valid. Invalid ones match nothing labelled.
        let labels = if cohort_core::task::valid_labels(&labels).is_ok() {
            labels
        } else {
            Vec::new()
        };
        let now = self.now;
        let view = self.workers.entry(from).or_insert(WorkerView {
            last_heard: now,
            capacity: None,
            labels: Vec::new(),
        });
        view.last_heard = now;
        view.capacity = Some(capacity);
        view.labels = labels;
        if !self.raft.committed_in_term() {
            return;
        }
        if self.sm.is_dead(from)
            && !self.inflight.alive.contains(&from)
            && self.propose(&Command::WorkerAlive { node: from }).is_ok()
        {
            self.inflight.alive.insert(from);
        }
        // Assignments the worker has applied but does not hold were lost
        // (it restarted): reclaim them so they run again.
        let holding: BTreeSet<(TaskId, Epoch)> = holding.into_iter().collect();
        let lost: Vec<(TaskId, Epoch)> = self
            .sm
            .running_on(from)
            .filter_map(|id| {
                let rec = self.sm.get(id).expect("running tasks are known");
                (rec.assigned_index <= applied).then_some((id, rec.epoch))
            })
            .filter(|k| !holding.contains(k) && !self.inflight.reclaim.contains(k))
            .collect();
        for (id, epoch) in lost {
            if self.propose(&Command::Reclaim { id, epoch }).is_ok() {
                self.inflight.reclaim.insert((id, epoch));
            }
        }
    }

    /// A draining worker hands `(task, epoch)` back: propose the release if
    /// it runs that assignment in the applied state.
    fn on_release(&mut self, from: NodeId, task: TaskId, epoch: Epoch) {
        if !self.raft.is_leader() || self.inflight.release.contains(&(task, epoch)) {
            return;
        }
        if !self.sm.is_running(task, epoch) || !self.sm.running_on(from).any(|t| t == task) {
            return; // moved on already, or not applied here yet (resent)
        }
        let cmd = Command::Release {
            id: task,
            epoch,
            node: from,
        };
        if self.propose(&cmd).is_ok() {
            self.inflight.release.insert((task, epoch));
        }
    }

    /// A worker's handler of `(task, epoch)` reports progress: propose
    /// recording it if that worker runs that assignment in the applied
    /// state and no heartbeat of the task is in flight (else it is dropped:
    /// heartbeats decide nothing, and the next one carries newer progress).
    fn on_progress(&mut self, from: NodeId, task: TaskId, epoch: Epoch, progress: String) {
        if !self.raft.is_leader() || self.inflight.progress.contains(&task) {
            return;
        }
        let runs = self
            .sm
            .get(task)
            .is_some_and(|r| r.state == TaskState::Running { node: from, epoch });
        if !runs {
            return;
        }
        let cmd = Command::Heartbeat {
            id: task,
            epoch,
            node: from,
            progress: event_progress(&progress),
        };
        if self.propose(&cmd).is_ok() {
            self.inflight.progress.insert(task);
        }
    }

    /// The capacity this worker advertises: none while draining, so the
    /// leader assigns it nothing new.
    fn capacity(&self) -> u32 {
        if self.drain.is_some() {
            0
        } else {
            self.peers.capacity_tasks
        }
    }

    /// At the drain's deadline: every execution still running is handed
    /// back (its result will not count).
    fn check_drain(&mut self) {
        let Some(d) = &mut self.drain else {
            return;
        };
        if self.now < d.deadline {
            return;
        }
        d.handing_back = true;
        if self.executing.is_empty() {
            return;
        }
        let running = std::mem::take(&mut self.executing);
        d.releasing.extend(running);
        self.send_releases();
    }

    /// Sends the leader every hand-back not yet applied (again each worker
    /// tick, like results: a message may be lost, or the leader change).
    fn send_releases(&mut self) {
        let Some(d) = &self.drain else {
            return;
        };
        let releasing: Vec<(TaskId, Epoch)> = d.releasing.iter().map(|(t, e)| (*t, *e)).collect();
        for (task, epoch) in releasing {
            match self.raft.leader() {
                Some(l) if l == self.peers.id => self.on_release(l, task, epoch),
                Some(l) => self.send(l, LeaderMsg::Release { task, epoch }),
                None => {} // resent on the next worker tick
            }
        }
    }

    fn on_result(&mut self, from: NodeId, task: TaskId, epoch: Epoch, outcome: TaskOutcome) {
        if !self.raft.is_leader() || self.inflight.results.contains(&(task, epoch)) {
            return;
        }
        let current = self.sm.get(task).map(|r| r.state.clone());
        if !matches!(current, Some(TaskState::Running { node, epoch: e }) if node == from && e == epoch)
        {
            return; // stale or unknown here; the log decides anyway
        }
        let jitter = match outcome {
            TaskOutcome::Failure(_) => self.raft.rng().gen(),
            TaskOutcome::Success(_) => 0,
        };
        let cmd = Command::Result {
            id: task,
            epoch,
            node: from,
            outcome,
            jitter,
        };
        self.inflight.results.insert((task, epoch), from);
        self.inflight.results_unproposed.push(cmd);
    }

    /// Forgets the results taken whose attempt the record ended otherwise
    /// (a lease expiry or reclaim committed first): the runner's count no
    /// longer holds them, so they must not free a slot twice. Their
    /// `Command::Result`, if proposed, applies as a no-op; a resend is
    /// refused by `on_result`. Only after a batch that may have ended one
    /// ([`may_end_another_attempt`]): it walks every result taken.
    fn forget_ended_results(&mut self) {
        let sm = &self.sm;
        let ended: Vec<(TaskId, Epoch)> = self
            .inflight
            .results
            .by_attempt
            .iter()
            .filter(|((id, epoch), runner)| {
                !matches!(sm.get(*id).map(|r| &r.state),
                    Some(TaskState::Running { node, epoch: e }) if node == *runner && e == epoch)
            })
            .map(|(attempt, _)| *attempt)
            .collect();
        for attempt in ended {
            self.inflight.results.remove(&attempt);
        }
    }

    /// Proposes the results taken since the last call, packed into as few
    /// entries as fit: at most `assignments_per_round_max` per entry, and
    /// at most `payload_bytes_max` bytes of outcomes (a larger one goes
    /// alone, as it always did), so an entry stays replicable.
    fn propose_results(&mut self) {
        let results = std::mem::take(&mut self.inflight.results_unproposed);
        let (count_max, bytes_max) = (
            self.cfg.get().assignments_per_round_max,
            self.peers.limits.payload_bytes_max,
        );
        let mut entry: Vec<Command> = Vec::new();
        let mut bytes = 0;
        let mut failed = false;
        for cmd in results {
            let size = match &cmd {
                Command::Result { outcome, .. } => outcome_bytes(outcome),
                _ => unreachable!("only results wait here"),
            };
            if !entry.is_empty() && (entry.len() == count_max || bytes + size > bytes_max) {
                failed = failed || self.propose_many(&entry).is_err();
                self.forget_results_if(failed, &entry);
                entry.clear();
                bytes = 0;
            }
            bytes += size;
            entry.push(cmd);
        }
        failed = failed || self.propose_many(&entry).is_err();
        self.forget_results_if(failed, &entry);
    }

    /// Results not proposed (`failed`) are taken again when resent.
    fn forget_results_if(&mut self, failed: bool, results: &[Command]) {
        if !failed {
            return;
        }
        for cmd in results {
            if let Command::Result { id, epoch, .. } = cmd {
                self.inflight.results.remove(&(*id, *epoch));
            }
        }
    }

    fn worker_tick(&mut self) {
        let holding: Vec<(TaskId, Epoch)> = self
            .executing
            .iter()
            .map(|(t, e)| (*t, *e))
            .chain(self.results.keys().copied())
            .chain(
                self.drain
                    .iter()
                    .flat_map(|d| d.releasing.iter().map(|(t, e)| (*t, *e))),
            )
            .collect();
        let (capacity, applied) = (self.capacity(), self.applied);
        let labels = self.peers.labels.clone();
        match self.raft.leader() {
            Some(l) if l == self.peers.id => {
                self.on_heartbeat(l, capacity, applied, holding, labels)
            }
            Some(l) => self.send(
                l,
                LeaderMsg::Heartbeat {
                    capacity,
                    applied,
                    holding,
                    labels,
                },
            ),
            None => {}
        }
        let pending: Vec<((TaskId, Epoch), TaskOutcome)> =
            self.results.iter().map(|(k, v)| (*k, v.clone())).collect();
        for ((task, epoch), outcome) in pending {
            self.report_result(task, epoch, outcome);
        }
        self.send_releases();
        if self.raft.is_leader() {
            self.leader_tick();
        }
    }

    fn report_result(&mut self, task: TaskId, epoch: Epoch, outcome: TaskOutcome) {
        match self.raft.leader() {
            Some(l) if l == self.peers.id => self.on_result(l, task, epoch, outcome),
            Some(l) => self.send(
                l,
                LeaderMsg::Result {
                    task,
                    epoch,
                    outcome,
                },
            ),
            None => {} // retried on the next worker tick
        }
    }

    /// Declares silent workers dead.
    fn leader_tick(&mut self) {
        if !self.raft.committed_in_term() {
            return;
        }
        let deadline = self.cfg.worker_timeout();
        let silent: Vec<NodeId> = self
            .peers
            .members
            .iter()
            .copied()
            .filter(|w| !self.sm.is_dead(*w) && !self.inflight.dead.contains(w))
            .filter(|w| {
                self.workers
                    .get(w)
                    .is_some_and(|v| self.now > v.last_heard + deadline)
            })
            .collect();
        for w in silent {
            if self.propose(&Command::WorkerDead { node: w }).is_ok() {
                self.inflight.dead.insert(w);
            }
        }
    }

    /// Fails pending tasks past their schedule-to-start deadline, and ends
    /// the leases of running tasks whose runner reported nothing in time,
    /// at most `assignments_per_round_max` of each per round.
    fn expire_overdue(&mut self) {
        if !self.raft.is_leader() || !self.raft.committed_in_term() {
            return;
        }
        let todo: Vec<TaskId> = self
            .sm
            .overdue(self.now)
            .filter(|t| !self.inflight.expire.contains(t))
            .take(self.cfg.get().assignments_per_round_max)
            .collect();
        for id in todo {
            if self.propose(&Command::Expire { id }).is_err() {
                break;
            }
            self.inflight.expire.insert(id);
        }
        // Leases whose runner reported nothing, as one entry.
        let ended: Vec<(TaskId, Epoch)> = self
            .sm
            .leases_ended(self.now)
            .filter(|a| !self.inflight.leases.contains(a))
            .take(self.cfg.get().assignments_per_round_max)
            .collect();
        let commands: Vec<Command> = ended
            .iter()
            .map(|&(id, epoch)| Command::ExpireLease {
                id,
                epoch,
                jitter: self.raft.rng().gen(),
            })
            .collect();
        if self.propose_many(&commands).is_ok() {
            self.inflight.leases.extend(ended);
        }
    }

    /// Purges finished records whose retention ended: every applied entry
    /// does, at its own time; when one is due and no entry is on its way,
    /// an empty `Command::Purge` carries the time.
    fn purge_expired(&mut self) {
        if !self.raft.is_leader() || !self.raft.committed_in_term() || self.inflight.purge {
            return;
        }
        if self.sm.next_purge_at().is_some_and(|due| due <= self.now)
            && self.propose(&Command::Purge).is_ok()
        {
            self.inflight.purge = true;
        }
    }

    /// Assigns pending tasks to the least loaded live workers that carry
    /// their labels: `argmin(running / capacity)`, ties to the lowest id.
    /// A task no worker with room can run, or whose limit is reached
    /// (counting the starts on their way), is passed over, not waited on:
    /// the queue skips such label sets and limits whole
    /// ([`Scheduler::ready_for`]),
    /// and of the tasks it yields (which the round's own assignments may
    /// make unplaceable) at most [`LABELLED_SCAN_FACTOR`] times the
    /// round's assignments are looked at.
    /// Whether this leader may give `w` work: heard from within the
    /// worker timeout, not declared dead (nor being declared), and a
    /// member, since a runner learns its assignments by applying the log.
    fn is_live_worker(&self, w: NodeId, v: &WorkerView) -> bool {
        self.now <= v.last_heard + self.cfg.worker_timeout()
            && !self.sm.is_dead(w)
            && !self.inflight.dead.contains(&w)
            && self.raft.membership().is_member(w)
    }

    fn assign_pending(&mut self) {
        if !self.raft.is_leader() || !self.raft.committed_in_term() {
            return;
        }
        // Runs after every batch: with nothing to assign it must not walk
        // the workers (at 150 nodes that walk was over half the leader's
        // time in the simulator, as every heartbeat reply is a batch).
        // Ready tasks whose assignment is in flight do not count; looking
        // past them costs at most one step per assignment in flight, so
        // that look is taken only when it is the shorter walk.
        if !self.sm.any_ready(self.now) {
            return;
        }
        if self.inflight.assign.len() < self.workers.len()
            && self
                .sm
                .ready(self.now)
                .all(|t| self.inflight.assign.contains(t))
        {
            return;
        }
        // Live workers with a capacity, in id order: (id, running, capacity,
        // labels). A vector borrowing the labels, not maps of clones: this
        // walk is the round's cost at thousands of workers.
        let mut load: Vec<(NodeId, u64, u64, &[String])> = self
            .workers
            .iter()
            .filter(|(w, v)| self.is_live_worker(**w, v))
            .filter_map(|(w, v)| {
                let cap = v.capacity?;
                Some((*w, self.sm.load(*w) as u64, u64::from(cap), &v.labels[..]))
            })
            .collect();
        let at = |load: &[(NodeId, u64, u64, &[String])], w: &NodeId| {
            load.binary_search_by_key(w, |l| l.0).ok()
        };
        for (w, n) in &self.inflight.assign.per_node {
            if let Some(i) = at(&load, w) {
                load[i].1 += n;
            }
        }
        // Each still `Running` on its runner in the record (`on_result`,
        // `forget_ended_results`): its handler has returned.
        for (w, n) in &self.inflight.results.per_node {
            if let Some(i) = at(&load, w) {
                load[i].1 = load[i].1.saturating_sub(*n);
            }
        }
        // Runs after every input: with every worker full (the usual case
        // under load) it must not walk the pending tasks, and it takes no
        // more of them than can be placed (the loop below stops there).
        let free: u64 = load
            .iter()
            .map(|(_, run, cap, _)| cap.saturating_sub(*run))
            .sum();
        if free == 0 {
            return;
        }
        let take = usize::try_from(free)
            .unwrap_or(usize::MAX)
            .min(self.cfg.get().assignments_per_round_max);
        // Starts of limited keys proposed and not yet applied.
        let mut extra = self.inflight.assign.per_key.clone();
        let (counts, now) = (self.sm.limit_counts(), self.now);
        // Label sets no worker with room carries, and limits reached, are
        // skipped whole.
        let runnable = |wants: &[String], limit: Option<&TaskLimit>| {
            let placeable = load
                .iter()
                .any(|(_, run, cap, labels)| run < cap && carries(labels, wants));
            match limit {
                _ if !placeable => 0,
                None => usize::MAX,
                Some(l) => room_left(counts, l, now, &extra),
            }
        };
        let todo: Vec<(TaskId, Vec<String>, Option<TaskLimit>)> = self
            .sm
            .ready_for(self.now, runnable)
            .filter(|t| !self.inflight.assign.contains(*t))
            // Past its schedule-to-start deadline: it is being failed, and
            // an assignment now would be a no-op.
            .filter_map(|t| {
                let rec = self.sm.get(t)?;
                rec.start_by
                    .is_none_or(|d| self.now <= d)
                    .then(|| (t, rec.task.labels.clone(), rec.task.limit.clone()))
            })
            .take(take.saturating_mul(LABELLED_SCAN_FACTOR))
            .collect();
        let mut assigned = 0;
        let mut assigns = Vec::new();
        let mut keys = Vec::new();
        for (id, wants, limit) in todo {
            if assigned == take {
                break;
            }
            // This round's own starts may have used up the limit's room.
            let counts = self.sm.limit_counts();
            if limit
                .as_ref()
                .is_some_and(|l| room_left(counts, l, self.now, &extra) == 0)
            {
                continue;
            }
            let best = load
                .iter()
                .enumerate()
                .filter(|(_, (_, run, cap, labels))| run < cap && carries(labels, &wants))
                .min_by(|(_, (a, ra, ca, _)), (_, (b, rb, cb, _))| {
                    (ra * cb).cmp(&(rb * ca)).then(a.cmp(b))
                })
                .map(|(i, _)| i);
            let Some(i) = best else {
                if wants.is_empty() {
                    break; // no worker has room
                }
                continue; // none of those with room carries its labels
            };
            assigned += 1;
            let epoch = self.sm.get(id).expect("pending is known").epoch.next();
            assigns.push(Command::Assign {
                id,
                epoch,
                node: load[i].0,
            });
            load[i].1 += 1;
            let key = limit.map(|l| l.key);
            if let Some(k) = &key {
                *extra.entry(k.clone()).or_default() += 1;
            }
            keys.push(key);
        }
        // The round's assignments, as one entry.
        if self.propose_many(&assigns).is_ok() {
            for (cmd, key) in assigns.into_iter().zip(keys) {
                if let Command::Assign { id, node, .. } = cmd {
                    self.inflight.assign.insert(id, node, key);
                }
            }
        }
    }

    // ---- output ------------------------------------------------------

    /// Proposes `cmd` stamped with this leader's clock: the time its
    /// events carry, the same on every node that applies it.
    fn propose(&mut self, cmd: &Command) -> Result<u64, ClientError> {
        self.raft
            .propose(self.now, encode(&(self.now, cmd)))
            .map_err(unavailable)
    }

    /// Proposes `commands` as one entry: alone, or packed in a
    /// [`Command::Many`]. Nothing to propose is not an error.
    fn propose_many(&mut self, commands: &[Command]) -> Result<(), ClientError> {
        match commands {
            [] => Ok(()),
            [one] => self.propose(one).map(|_| ()),
            _ => self
                .propose(&Command::Many {
                    commands: commands.to_vec(),
                })
                .map(|_| ()),
        }
    }

    fn send(&mut self, to: NodeId, msg: LeaderMsg) {
        self.actions.push(Action::Send { to, msg });
    }

    fn reply(&mut self, request: RequestId, reply: Result<ClientResponse, ClientError>) {
        self.actions.push(Action::Reply { request, reply });
    }

    /// After every input: drain Raft, apply, do the leader's duties (here
    /// or at the batch's `flush`), repeat until quiet; then arm the timer.
    fn after_input(&mut self) {
        // A driver that ends its batches with `flush` gets the leader's
        // duties once per batch rather than once per input: a scheduling
        // round walks the assignments in flight at the head of the queue,
        // and results taken from many inputs pack into one entry.
        self.settle(!self.flushed);
    }

    /// Drains Raft and applies until quiet, doing the leader's duties
    /// (results, expiries, purges, assignments) in each round when
    /// `duties`; then arms the timer.
    fn settle(&mut self, duties: bool) {
        self.check_drain();
        for round in 0.. {
            assert!(round < 64, "after_input does not settle");
            if duties && self.raft.is_leader() {
                self.propose_results();
                self.expire_overdue();
                self.purge_expired();
                self.assign_pending();
            }
            self.maybe_compact();
            let ready = self.raft.take_ready();
            let changed = ready.leadership_changed || self.raft.is_leader() != self.was_leader;
            if ready.is_empty() && !changed {
                break;
            }
            self.carry_out(ready);
            if changed {
                self.on_leadership_change();
            }
            if self.raft.leader().is_some() && self.raft.leader() != self.greeted {
                // A new leader learns our load (and results) now, not a
                // heartbeat period later.
                self.greeted = self.raft.leader();
                self.worker_tick();
            }
        }
        self.arm_timer();
    }

    fn carry_out(&mut self, ready: Ready) {
        if !ready.persist.is_empty() {
            self.actions.push(Action::Persist(ready.persist));
        }
        for (to, msg) in ready.messages {
            self.send(to, LeaderMsg::Raft(msg));
        }
        if let Some(snap) = ready.snapshot {
            self.sm = decode(&snap.data, usize::MAX).expect("a snapshot we made decodes");
            self.applied = snap.meta.index;
            self.snapshots_installed += 1;
            self.after_state_jump();
        }
        let mut assigned_to_me = Vec::new();
        let mut may_have_ended = false;
        for e in ready.committed {
            assert_eq!(e.index, self.applied + 1, "apply in order");
            self.applied = e.index;
            // A batch waiting at this index is answered here, whatever the
            // entry: its own (same term) or one that replaced it.
            let batch = self.waiting.batches.remove(&e.index);
            if let Some(w) = &batch {
                self.waiting.batch_tasks = self.waiting.batch_tasks.saturating_sub(w.ids.len());
            }
            let batch = batch.and_then(|w| {
                if w.term == e.term {
                    return Some(w);
                }
                self.reply(w.request, Err(lost_leadership()));
                None
            });
            if let EntryKind::Command(bytes) = &e.kind {
                let (at, cmd): (Time, Command) =
                    decode(bytes, usize::MAX).expect("commands we encoded decode");
                for note in self.sm.apply(e.index, at, &cmd) {
                    self.actions.push(Action::Note(note));
                }
                may_have_ended = may_have_ended || may_end_another_attempt(&cmd);
                let before = self.actions.len();
                self.after_apply(batch, &cmd, &mut assigned_to_me);
                // An entry the leader's durable log holds is committed on
                // disks that do not depend on this batch's writes: answers
                // about it need not wait for them. (A lone voter commits
                // entries of this very batch: those wait.)
                if self.flushed && e.index <= self.raft.durable_index() {
                    for a in &self.actions[before..] {
                        if let Action::Reply { request, .. } = a {
                            self.early_replies.insert(*request, self.flushes);
                        }
                    }
                }
            } else {
                assert!(batch.is_none(), "a batch's own entry is a command");
            }
        }
        if may_have_ended && !self.inflight.results.by_attempt.is_empty() {
            self.forget_ended_results();
        }
        for (id, epoch) in assigned_to_me {
            self.maybe_execute(id, epoch);
        }
        for r in ready.reads {
            let (request, id) = self
                .waiting
                .reads
                .remove(&r.ctx)
                .expect("reads are tracked");
            self.waiting.confirmed.push((r.index, request, id));
        }
        for ctx in ready.reads_aborted {
            if let Some((request, _)) = self.waiting.reads.remove(&ctx) {
                self.reply(request, Err(lost_leadership()));
            }
        }
        self.serve_reads();
        let still_running = |s: &Scheduler, (t, e): &(TaskId, Epoch)| s.is_running(*t, *e);
        let sm = &self.sm;
        self.results.retain(|k, _| still_running(sm, k));
        if let Some(d) = &mut self.drain {
            d.releasing.retain(|t, e| still_running(sm, &(*t, *e)));
        }
    }

    /// `batch`: the batch whose own entry `cmd` is (same index and term).
    fn after_apply(
        &mut self,
        batch: Option<WaitingBatch>,
        cmd: &Command,
        assigned_to_me: &mut Vec<(TaskId, Epoch)>,
    ) {
        if let Some(w) = &batch {
            let own = matches!(cmd, Command::SubmitBatch { tasks }
                if tasks.iter().map(|(id, _)| *id).eq(w.ids.iter().copied()));
            assert!(own, "an entry of the batch's index and term is the batch");
        }
        match cmd {
            Command::SubmitBatch { tasks } => {
                let Some(WaitingBatch { request, .. }) = batch else {
                    return;
                };
                let reply = match self.sm.batch_conflict(tasks) {
                    Some(id) => Err(ClientError::BatchItem {
                        index: tasks.iter().position(|t| t.0 == id).unwrap_or(0),
                        error: Box::new(ClientError::IdConflict { id }),
                    }),
                    None if tasks.iter().any(|(id, _)| self.sm.get(*id).is_none()) => {
                        Err(ClientError::Unavailable {
                            reason: "task record already retired".into(),
                        })
                    }
                    None => Ok(ClientResponse::AcceptedBatch {
                        ids: tasks.iter().map(|(id, _)| *id).collect(),
                    }),
                };
                self.reply(request, reply);
            }
            Command::Submit { id, .. } => {
                let rec = self.sm.get(*id).map(|r| r.task.clone());
                for (request, task) in self.waiting.submits.remove(id).unwrap_or_default() {
                    let reply = match &rec {
                        Some(t) if *t == task => Ok(ClientResponse::Accepted { id: *id }),
                        Some(_) => Err(ClientError::IdConflict { id: *id }),
                        None => Err(ClientError::Unavailable {
                            reason: "task record already retired".into(),
                        }),
                    };
                    self.reply(request, reply);
                }
            }
            Command::Cancel { id } => {
                for request in self.waiting.cancels.remove(id).unwrap_or_default() {
                    let reply = self.read_local(ReadOf::State(*id));
                    self.reply(request, reply);
                }
            }
            Command::Assign { id, epoch, node } => {
                self.inflight.assign.remove(*id);
                if *node == self.peers.id {
                    assigned_to_me.push((*id, *epoch));
                }
            }
            Command::Result { id, epoch, .. } => {
                self.inflight.results.remove(&(*id, *epoch));
            }
            Command::WorkerDead { node } => {
                self.inflight.dead.remove(node);
            }
            Command::WorkerAlive { node } => {
                self.inflight.alive.remove(node);
            }
            Command::Reclaim { id, epoch } => {
                self.inflight.reclaim.remove(&(*id, *epoch));
            }
            Command::ExpireLease { id, epoch, .. } => {
                self.inflight.leases.remove(&(*id, *epoch));
            }
            Command::Release { id, epoch, .. } => {
                self.inflight.release.remove(&(*id, *epoch));
            }
            Command::Expire { id } => {
                self.inflight.expire.remove(id);
            }
            Command::Heartbeat { id, .. } => {
                self.inflight.progress.remove(id);
            }
            Command::Purge => {
                self.inflight.purge = false;
            }
            Command::Many { commands } => {
                for c in commands {
                    self.after_apply(None, c, assigned_to_me);
                }
            }
        }
    }

    fn maybe_execute(&mut self, id: TaskId, epoch: Epoch) {
        let Some(rec) = self.sm.get(id) else {
            return;
        };
        let mine = rec.state
            == TaskState::Running {
                node: self.peers.id,
                epoch,
            };
        // Its handler may have finished already, its result not yet
        // committed: a duplicate `Assign` in the log (a no-op when applied)
        // must not start it a second time.
        let finished = self.results.contains_key(&(id, epoch));
        if mine && !finished && self.executing.get(&id) != Some(&epoch) {
            if let Some(d) = &mut self.drain {
                // Assigned before the leader learned of the drain: hand it
                // back at once rather than start it.
                if d.releasing.insert(id, epoch).is_none() {
                    self.send_releases();
                }
                return;
            }
            let task = rec.task.clone();
            self.executing.insert(id, epoch);
            self.actions.push(Action::Execute { id, epoch, task });
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.applied;
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting.confirmed)
            .into_iter()
            .partition(|(index, _, _)| *index <= applied);
        self.waiting.confirmed = wait;
        for (_, request, of) in ready {
            let reply = self.read_local(of);
            self.reply(request, reply);
        }
    }

    fn on_leadership_change(&mut self) {
        let leader = self.raft.is_leader();
        self.was_leader = leader;
        self.inflight = Inflight::default();
        self.workers.clear();
        if leader {
            // Grace: every worker gets a full timeout from now before it can
            // be declared dead by this new leader.
            for m in self.peers.members.clone() {
                self.workers.insert(
                    m,
                    WorkerView {
                        last_heard: self.now,
                        capacity: None,
                        labels: Vec::new(),
                    },
                );
            }
            // Our own capacity is known without a heartbeat.
            let capacity = self.capacity();
            if let Some(v) = self.workers.get_mut(&self.peers.id) {
                v.capacity = Some(capacity);
                v.labels = self.peers.labels.clone();
            }
        } else {
            let submits = std::mem::take(&mut self.waiting.submits);
            for (request, _) in submits.into_values().flatten() {
                self.reply(request, Err(lost_leadership()));
            }
            let cancels = std::mem::take(&mut self.waiting.cancels);
            for request in cancels.into_values().flatten() {
                self.reply(request, Err(lost_leadership()));
            }
            let batches = std::mem::take(&mut self.waiting.batches);
            self.waiting.batch_tasks = 0;
            for w in batches.into_values() {
                self.reply(w.request, Err(lost_leadership()));
            }
            let reads = std::mem::take(&mut self.waiting.reads);
            for (request, _) in reads.into_values() {
                self.reply(request, Err(lost_leadership()));
            }
            let confirmed = std::mem::take(&mut self.waiting.confirmed);
            for (_, request, _) in confirmed {
                self.reply(request, Err(lost_leadership()));
            }
        }
    }

    /// The state jumped (snapshot): waiting submits and cancels may have
    /// been decided inside it. A batch whose index it covers cannot tell
    /// whether its own entry is in it: its client retries (idempotently).
    fn after_state_jump(&mut self) {
        let rest = self.waiting.batches.split_off(&(self.applied + 1));
        let covered = std::mem::replace(&mut self.waiting.batches, rest);
        for w in covered.into_values() {
            self.waiting.batch_tasks = self.waiting.batch_tasks.saturating_sub(w.ids.len());
            self.reply(w.request, Err(lost_leadership()));
        }
        let ids: Vec<TaskId> = self.waiting.submits.keys().copied().collect();
        for id in ids {
            if self.sm.get(id).is_some() {
                let cmd = Command::Submit {
                    id,
                    task: self.waiting.submits[&id][0].1.clone(),
                };
                self.after_apply(None, &cmd, &mut Vec::new());
            }
        }
    }

    fn maybe_compact(&mut self) {
        let c = self.cfg.get();
        let held = self.applied.saturating_sub(self.raft.log().offset());
        let amortized = c
            .snapshot_entries_per_record
            .saturating_mul(self.sm.len() as u64);
        let keep = c.snapshot_keep_entries;
        let over_entries = held > c.snapshot_entries_threshold.max(amortized) + keep;
        // Still at least `threshold` entries apart: a log whose kept or
        // unapplied entries alone pass the bound must not snapshot per entry.
        let over_bytes = self.raft.log().bytes() > c.snapshot_log_bytes_max
            && held > c.snapshot_entries_threshold + keep;
        if over_entries || over_bytes {
            assert_eq!(
                self.raft.status().applied,
                self.applied,
                "snapshot the applied state"
            );
            self.raft.compact(encode(&self.sm), keep);
        }
    }

    fn restore_silently(&mut self, boot: Boot) -> Result<(), BootError> {
        if let Some(snap) = boot.snapshot {
            self.sm = decode(&snap.data, usize::MAX)
                .map_err(|e| BootError::corrupt(crate::raft::log::SNAP_KEY, e))?;
            self.applied = snap.meta.index;
        }
        for e in boot.committed {
            assert_eq!(e.index, self.applied + 1, "replay in order");
            self.applied = e.index;
            if let EntryKind::Command(bytes) = &e.kind {
                let (at, cmd): (Time, Command) = decode(bytes, usize::MAX)
                    .map_err(|err| BootError::corrupt(&crate::raft::log::log_key(e.index), err))?;
                // Decided before the crash: the notes were emitted then.
                let _ = self.sm.apply(e.index, at, &cmd);
            }
        }
        Ok(())
    }

    fn arm_timer(&mut self) {
        let mut next = self.raft.next_deadline().min(self.next_worker_tick);
        if self.raft.is_leader() {
            // A waiting task (not_before, retry backoff) is assigned when its
            // wait ends, not at the next unrelated input.
            if let Some(ready_at) = self.sm.next_ready_after(self.now) {
                next = next.min(ready_at);
            }
            // A task held back by its rate limit is assigned when the
            // window lets it.
            if let Some(free) = self.sm.next_rate_free_after(self.now) {
                next = next.min(free);
            }
            if let Some(overdue) = self.sm.next_overdue_after(self.now) {
                next = next.min(overdue);
            }
            if let Some(lease_end) = self.sm.next_lease_end_after(self.now) {
                next = next.min(lease_end);
            }
            if let Some(due) = self.sm.next_purge_at().filter(|&due| due > self.now) {
                next = next.min(due);
            }
        }
        if let Some(d) = self.drain.as_ref().filter(|d| !d.handing_back) {
            next = next.min(d.deadline);
        }
        let earlier = match self.armed {
            Some(a) => next < a,
            None => true,
        };
        if earlier {
            self.armed = Some(next);
            self.actions.push(Action::SetTimer {
                token: TimerToken(TIMER),
                at: next,
            });
        }
    }
}

/// How many more tasks under `limit` may start at `now`, counting the
/// starts this leader has proposed and not yet applied (`extra`).
fn room_left(
    counts: &LimitCounts,
    limit: &TaskLimit,
    now: Time,
    extra: &BTreeMap<String, u32>,
) -> usize {
    let on_way = extra.get(&limit.key).copied().unwrap_or(0);
    usize::try_from(counts.room(limit, now, on_way)).unwrap_or(usize::MAX)
}

fn unavailable(e: RaftError) -> ClientError {
    match e {
        RaftError::NotLeader { leader: Some(l) } => ClientError::NotLeader { leader: Some(l) },
        other => ClientError::Unavailable {
            reason: other.to_string(),
        },
    }
}

fn lost_leadership() -> ClientError {
    ClientError::Unavailable {
        reason: "leadership changed before the request completed; retry".into(),
    }
}
