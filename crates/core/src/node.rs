//! The node state machine trait and what every node is configured with.

use crate::action::{Action, TimerToken};
use crate::client::{ClientError, ClientRequest, RequestId};
use crate::drain::{DrainRefusal, DrainStatus};
use crate::ids::{Epoch, NodeId, TaskId};
use crate::ring::{RingRefusal, RingRequest, RingView};
use crate::store::Stored;
use crate::task::{Task, TaskOutcome, TaskState};
use crate::time::Time;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// The RNG handed to every node at boot. Seeded by the driver: the simulator
/// derives it from the run's seed, the runtime from the OS once at start.
pub type NodeRng = rand_chacha::ChaCha8Rng;

/// A node state machine: one mode's protocol for one member of the cluster.
///
/// Call order: [`Node::boot`] once; then, repeatedly, one `handle_*` input
/// followed by draining [`Node::actions`] completely and carrying the actions
/// out in order. Every input takes `now`, which never goes backwards.
pub trait Node: Sized {
    /// What peers of this mode send each other. Encoded with postcard.
    type Message: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;
    /// This mode's own settings (timeouts, ...), validated before boot.
    type Config: Clone + Debug + Send + Sync + 'static;

    /// Builds the node from what it persisted (`stored` is empty on first
    /// boot). Initial timers and sends are left in [`Node::actions`].
    ///
    /// The stored records come from a file on disk, which can be damaged:
    /// a record that does not decode, or records that contradict each other,
    /// are a [`BootError`], never a panic. The runtime then refuses to start
    /// (naming the data file); in the simulator it is a bug.
    fn boot(
        peers: &Peers,
        config: &Self::Config,
        stored: &Stored,
        rng: NodeRng,
        now: Time,
    ) -> Result<Self, BootError>;

    /// A message from peer `from`.
    fn handle_message(&mut self, now: Time, from: NodeId, msg: Self::Message);

    /// A timer set with [`Action::SetTimer`] came due.
    fn handle_timer(&mut self, now: Time, token: TimerToken);

    /// A client request; answered with exactly one [`Action::Reply`] for
    /// `request`, now or later (unless the node crashes first).
    fn handle_client(&mut self, now: Time, request: RequestId, req: ClientRequest);

    /// The handler started by [`Action::Execute`] for `(task, epoch)` returned.
    fn handle_task_finished(&mut self, now: Time, task: TaskId, epoch: Epoch, outcome: TaskOutcome);

    /// The driver has handed over a batch of inputs and is about to carry
    /// out their actions (persist once, then send). A node may hold back
    /// sends it can merge (one message per peer for many inputs) and make
    /// them here, leaving them in [`Node::actions`] like any input's. A
    /// driver that calls it must do so after every batch; a node holds
    /// nothing back before the first call, so a driver that never calls it
    /// sees every send at once. The default holds nothing back.
    fn flush(&mut self, now: Time) {
        let _ = now;
    }

    /// Whether `msg`, a [`Action::Send`] of the batch the last
    /// [`Node::flush`] ended, may go out before that batch's
    /// [`Action::Persist`] writes are durable, so the peer's work overlaps
    /// this node's fsync. A node may say yes only for a message whose
    /// content needs none of the batch's writes to survive a crash (a Raft
    /// leader's AppendEntries: its term is already durable, and an entry a
    /// follower stores before the leader does is what Raft allows), and it
    /// may rely on the driver taking no new input until the writes are
    /// durable (so an answer to the early message is handled only then).
    /// A driver that never calls [`Node::flush`] must not send early. The
    /// default says no: every send waits for the batch's writes.
    fn may_precede_persist(&self, msg: &Self::Message) -> bool {
        let _ = msg;
        false
    }

    /// Whether the [`Action::Reply`] to `request`, in the batch the last
    /// [`Node::flush`] ended, may reach its client before that batch's
    /// writes are durable: the answer states only what was durable before
    /// (a Raft entry committed in an earlier batch). Same rules as
    /// [`Node::may_precede_persist`]. The default says no.
    fn reply_may_precede_persist(&self, request: RequestId) -> bool {
        let _ = request;
        false
    }

    /// Drains the output batch. The iterator borrows the node: no new input
    /// can be handed in until the batch has been taken.
    fn actions(&mut self) -> std::vec::Drain<'_, Action<Self::Message>>;

    /// This node's id.
    fn id(&self) -> NodeId;

    /// Visits the tasks this node holds (each with what was submitted and
    /// its state), in ascending id order, starting
    /// strictly after `after`, until `visit` returns false. What a node
    /// holds depends on the mode (every applied task in leader mode, the
    /// records it replicates in leaderless mode); the states are this
    /// node's own view, not a linearizable read. A read: changes nothing.
    /// The default holds nothing.
    fn visit_tasks(
        &self,
        after: Option<TaskId>,
        visit: &mut dyn FnMut(TaskId, &Task, &TaskState) -> bool,
    ) {
        let _ = (after, visit);
    }

    /// Monotonic counts of protocol events since boot (elections started,
    /// members declared down, ...), named in snake case, for operators'
    /// metrics. A read: changes nothing. The default counts nothing.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The connection from `peer` closed: its process most likely died (the
    /// kernel closes a dead process's sockets at once) or restarted. A hint
    /// to act on sooner than a timeout would, never a fact: a partition
    /// closes nothing, and a closed connection may be a quick restart. The
    /// default ignores it.
    fn handle_peer_lost(&mut self, now: Time, peer: NodeId) {
        let _ = (now, peer);
    }

    /// The handler running `(task, epoch)` on this node sends a heartbeat:
    /// it is alive, and (when `progress` is given) this is how far it got,
    /// to be recorded in the task's history as a
    /// [`crate::TaskEventKind::Heartbeat`] decided like any change of the
    /// task (the runtime throttles how often it asks). Recording is best
    /// effort: a heartbeat is dropped rather than queued when one of the
    /// task's changes is in flight, or when `(task, epoch)` no longer holds
    /// the task. The reply tells the handler whether to go on, from this
    /// node's own view (which may lag the cluster's decision, never lead
    /// it): a cancelled task or an assignment that ended is told to stop
    /// (cooperative cancellation; its result would be rejected anyway).
    /// The default records nothing and always says go on.
    fn handle_heartbeat(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        progress: Option<String>,
    ) -> HeartbeatReply {
        let _ = (now, task, epoch, progress);
        HeartbeatReply::Continue
    }

    /// A graceful shutdown begins: hand over whatever can be handed over
    /// (a leader transfers leadership). The driver keeps feeding the node
    /// its inputs until [`Node::shutdown_ready`] or its grace period ends.
    /// Idempotent. The default has nothing to hand over.
    fn begin_shutdown(&mut self, now: Time) {
        let _ = now;
    }

    /// Whether a node that began shutting down may stop now without leaving
    /// the cluster worse off than a crash would (its hand-over is done, or
    /// was abandoned). A read: changes nothing.
    fn shutdown_ready(&self) -> bool {
        true
    }

    /// An operator drains this node: from now on it takes no new work; the
    /// tasks it runs may finish until `deadline`; at `deadline` it stops
    /// counting its handlers' results and hands every assignment it still
    /// holds back to the cluster (noted as [`crate::SupersedeReason::Released`]),
    /// so other nodes run them under the next epoch. A deadline at or
    /// before `now` hands back at once. Idempotent; a second call may bring
    /// the deadline earlier, never later. Like every input, its actions are
    /// left in [`Node::actions`]. The default cannot drain and refuses,
    /// changing nothing.
    fn begin_drain(&mut self, now: Time, deadline: Time) -> Result<(), DrainRefusal> {
        let _ = (now, deadline);
        Err(DrainRefusal::NotSupported)
    }

    /// Where the drain begun by [`Node::begin_drain`] stands; `None` when
    /// the node is not draining. A read: changes nothing.
    fn drain_status(&self) -> Option<DrainStatus> {
        None
    }

    /// The ring membership this node knows, in modes that have a ring
    /// (`/v1/ring`). A read: changes nothing. The default has no ring.
    fn ring_view(&self) -> Option<RingView> {
        None
    }

    /// An operator asks this node to change the ring (`POST`/`DELETE
    /// /v1/ring/members/{node}`). `Ok` when the change was started or the
    /// ring reflects it already; it is agreed once [`Node::ring_view`] shows it.
    /// A refusal changes nothing. Like every input, its actions are left in
    /// [`Node::actions`]. The default has no ring and refuses.
    fn change_ring(&mut self, now: Time, change: RingRequest) -> Result<(), RingRefusal> {
        let _ = (now, change);
        Err(RingRefusal::NotSupported)
    }

    /// The workers this node places work on, as it last heard of them, in
    /// ascending id order: a leader's or static coordinator's view of every
    /// worker, a leaderless member's gossiped loads. A node that places no
    /// work (a follower, a static worker) knows none. For operators
    /// (`/v1/cluster`); a read: changes nothing. At most one per member.
    fn workers(&self) -> Vec<WorkerInfo> {
        Vec::new()
    }

    /// What this node believes about its role, for operators (`/v1/cluster`)
    /// and drivers (the demo kills the leader). A read: changes nothing.
    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: self.id(),
            role: "member",
            leader: None,
            term: None,
        }
    }
}

/// What a heartbeat tells the handler; see [`Node::handle_heartbeat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// The execution still holds the task: go on.
    Continue,
    /// The task was cancelled: stop; a result would be rejected.
    Cancelled,
    /// The execution no longer holds the task (its lease ended: the runner
    /// was declared dead, handed it back, or the task moved on); another
    /// execution may run it. Stop; a result would be rejected.
    Superseded,
}

impl HeartbeatReply {
    /// `continue`, `cancelled` or `superseded`.
    pub fn name(self) -> &'static str {
        match self {
            HeartbeatReply::Continue => "continue",
            HeartbeatReply::Cancelled => "cancelled",
            HeartbeatReply::Superseded => "superseded",
        }
    }

    /// The reply for the execution `(node, epoch)` when this node's view of
    /// the task is `state` (`None`: unknown here).
    pub fn for_state(state: Option<&TaskState>, node: NodeId, epoch: Epoch) -> HeartbeatReply {
        match state {
            Some(TaskState::Running { node: n, epoch: e }) if *n == node && *e == epoch => {
                HeartbeatReply::Continue
            }
            Some(TaskState::Cancelled) => HeartbeatReply::Cancelled,
            // Unknown here (not applied yet): no reason to stop it.
            None => HeartbeatReply::Continue,
            Some(_) => HeartbeatReply::Superseded,
        }
    }
}

/// Why [`Node::boot`] refused what it was given.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootError {
    /// A stored record does not decode.
    #[error("stored record {record:?} is corrupt: {reason}")]
    Corrupt {
        /// The record's key, printable (non-ASCII bytes escaped).
        record: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The stored records decode but contradict each other.
    #[error("stored records are inconsistent: {reason}")]
    Inconsistent {
        /// What does not fit.
        reason: String,
    },
    /// The mode's configuration does not fit these peers.
    #[error("invalid configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
}

impl BootError {
    /// The record at `key` does not decode, for `reason`.
    pub fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> BootError {
        BootError::Corrupt {
            record: key.escape_ascii().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A node's own view of its role; see [`Node::status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Its role in its mode (`leader`, `follower`, `coordinator`, `member`, ...).
    pub role: &'static str,
    /// Who it believes coordinates the cluster, if anyone.
    pub leader: Option<NodeId>,
    /// Its current term, in modes that have terms.
    pub term: Option<u64>,
}

/// What a node has heard of one worker; see [`Node::workers`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker.
    pub id: NodeId,
    /// Whether this node counts it live, so that it may be given work.
    pub live: bool,
    /// Tasks it runs, as this node counts them.
    pub running: u64,
    /// Tasks it runs at once, as it last said (`None`: not said yet, or
    /// draining).
    pub capacity: Option<u32>,
    /// The worker labels it carries, as it last said.
    pub labels: Vec<String>,
}

/// Who the node is and who its peers are: the same for every mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    /// This node.
    pub id: NodeId,
    /// Every member of the cluster, this node included, in ascending order.
    pub members: Vec<NodeId>,
    /// How many tasks this node runs at once.
    pub capacity_tasks: u32,
    /// Limits on everything that grows.
    pub limits: Limits,
    /// The worker labels this node carries: it runs a task only if it
    /// carries every label the task names ([`crate::Task::runs_on`]).
    pub labels: Vec<String>,
}

impl Peers {
    /// Validated peers: `members` sorted and deduplicated, containing `id`.
    pub fn new(
        id: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        capacity_tasks: u32,
        limits: Limits,
    ) -> Result<Peers, LimitsError> {
        let mut members: Vec<NodeId> = members.into_iter().collect();
        members.sort();
        members.dedup();
        if !members.contains(&id) {
            return Err(LimitsError::NotAMember { id });
        }
        if members.len() > limits.members_max {
            return Err(LimitsError::TooManyMembers {
                members: members.len(),
                limit: limits.members_max,
            });
        }
        if capacity_tasks == 0 {
            return Err(LimitsError::Zero {
                what: "capacity_tasks",
            });
        }
        limits.validate()?;
        Ok(Peers {
            id,
            members,
            capacity_tasks,
            limits,
            labels: Vec::new(),
        })
    }

    /// These peers, with this node carrying the worker `labels` (at most
    /// [`crate::task::TASK_LABELS_MAX`], each a [`crate::task::valid_label`]).
    pub fn with_labels(mut self, labels: Vec<String>) -> Result<Peers, LimitsError> {
        crate::task::valid_labels(&labels).map_err(|reason| LimitsError::Labels { reason })?;
        self.labels = labels;
        Ok(self)
    }

    /// Every member but this node.
    pub fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().copied().filter(move |m| *m != self.id)
    }
}

/// A named, configurable limit on everything that grows. Crossing one gives
/// the caller a typed error; nothing acknowledged is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest task payload accepted.
    pub payload_bytes_max: usize,
    /// Largest task kind name accepted.
    pub kind_bytes_max: usize,
    /// Largest encoded peer message accepted.
    pub message_bytes_max: usize,
    /// Most tasks not yet final that a node tracks.
    pub tasks_active_max: usize,
    /// Most finished task records retained, the oldest finished purged
    /// first whatever their retention: in the replicated state (leader
    /// mode) or the coordinator's (static mode), and on each node in
    /// leaderless mode (of the records it holds as a replica; schedule
    /// definitions and tombstones are not counted there).
    pub tasks_retained_max: usize,
    /// Most members in a cluster.
    pub members_max: usize,
    /// Most attempts a task may ask for.
    pub attempts_max: u32,
    /// Most tasks in one [`ClientRequest::SubmitBatch`].
    pub batch_tasks_max: usize,
    /// Most events a task's history keeps (its submission and the latest
    /// ones; see [`crate::TaskEvents`]). At least 2. The same on every
    /// node: it shapes the replicated record.
    pub task_events_max: usize,
    /// How long a succeeded task's record is kept after it finished, in
    /// milliseconds; then it is purged (and its id may be used again).
    /// The same on every node.
    pub succeeded_retained_ms: u64,
    /// Like [`Limits::succeeded_retained_ms`], for failed tasks.
    pub failed_retained_ms: u64,
    /// Like [`Limits::succeeded_retained_ms`], for cancelled tasks.
    pub cancelled_retained_ms: u64,
}

/// How long final task records are kept, per final state
/// ([`Limits::succeeded_retained_ms`] and its siblings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Succeeded tasks, in milliseconds.
    pub succeeded_ms: u64,
    /// Failed tasks, in milliseconds.
    pub failed_ms: u64,
    /// Cancelled tasks, in milliseconds.
    pub cancelled_ms: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Limits::default().retention()
    }
}

impl Retention {
    /// How long a task that reached the final `state` is kept, in
    /// milliseconds (`None` for a state that is not final).
    pub fn retained_ms(&self, state: &TaskState) -> Option<u64> {
        match state {
            TaskState::Succeeded { .. } => Some(self.succeeded_ms),
            TaskState::Failed { .. } => Some(self.failed_ms),
            TaskState::Cancelled => Some(self.cancelled_ms),
            TaskState::Pending | TaskState::Running { .. } => None,
        }
    }

    /// When `task`, which reached the final `state` at `final_at`, is
    /// purged: `None` while it is not final, and for the records a
    /// schedule needs for as long as its name exists (its definition and
    /// its tombstone, one each per schedule, see
    /// [`crate::schedule::kept_for_ever`]). Every replica computes the
    /// same instant from the same decided record.
    pub fn purge_at(&self, task: &Task, state: &TaskState, final_at: Time) -> Option<Time> {
        if crate::schedule::kept_for_ever(task) {
            return None;
        }
        self.retained_ms(state)
            .map(|ms| final_at + core::time::Duration::from_millis(ms))
    }
}

/// Default of [`Limits::succeeded_retained_ms`] and its siblings: a week.
/// The same for every state, so records are purged in the order their
/// tasks finished (which keeps a dedupe key's chain whole for longest,
/// see docs/RUNTIME.md *Retention*).
pub const RETAINED_MS_DEFAULT: u64 = 7 * 24 * 3_600_000;

/// Longest retention accepted for any final state: ten years.
pub const RETAINED_MS_MAX: u64 = 10 * 365 * 24 * 3_600_000;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            payload_bytes_max: 1 << 20,
            kind_bytes_max: 64,
            message_bytes_max: 8 << 20,
            tasks_active_max: 100_000,
            tasks_retained_max: 1_000_000,
            members_max: 10_000,
            attempts_max: 100,
            batch_tasks_max: 1_000,
            task_events_max: 16,
            succeeded_retained_ms: RETAINED_MS_DEFAULT,
            failed_retained_ms: RETAINED_MS_DEFAULT,
            cancelled_retained_ms: RETAINED_MS_DEFAULT,
        }
    }
}

impl Limits {
    /// Refuses limits that would make the node unusable.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let nonzero = [
            ("payload_bytes_max", self.payload_bytes_max),
            ("kind_bytes_max", self.kind_bytes_max),
            ("message_bytes_max", self.message_bytes_max),
            ("tasks_active_max", self.tasks_active_max),
            ("tasks_retained_max", self.tasks_retained_max),
            ("members_max", self.members_max),
            ("attempts_max", self.attempts_max as usize),
            ("batch_tasks_max", self.batch_tasks_max),
        ];
        for (what, v) in nonzero {
            if v == 0 {
                return Err(LimitsError::Zero { what });
            }
        }
        if self.message_bytes_max <= self.payload_bytes_max {
            return Err(LimitsError::MessageSmallerThanPayload);
        }
        if self.task_events_max < 2 {
            return Err(LimitsError::TaskEventsTooFew);
        }
        for (what, v) in [
            ("succeeded_retained_ms", self.succeeded_retained_ms),
            ("failed_retained_ms", self.failed_retained_ms),
            ("cancelled_retained_ms", self.cancelled_retained_ms),
        ] {
            if v == 0 || v > RETAINED_MS_MAX {
                return Err(LimitsError::Retention { what });
            }
        }
        Ok(())
    }

    /// See [`Retention::purge_at`].
    pub fn purge_at(&self, task: &Task, state: &TaskState, final_at: Time) -> Option<Time> {
        self.retention().purge_at(task, state, final_at)
    }

    /// The retention settings alone.
    pub fn retention(&self) -> Retention {
        Retention {
            succeeded_ms: self.succeeded_retained_ms,
            failed_ms: self.failed_retained_ms,
            cancelled_ms: self.cancelled_retained_ms,
        }
    }

    /// Checks a submitted task against the limits. Changes nothing.
    pub fn check_task(&self, task: &Task) -> Result<(), ClientError> {
        if task.payload.len() > self.payload_bytes_max {
            return Err(ClientError::PayloadTooLarge {
                size_bytes: task.payload.len(),
                limit_bytes: self.payload_bytes_max,
            });
        }
        if task.kind.is_empty() || task.kind.len() > self.kind_bytes_max {
            return Err(ClientError::InvalidTask {
                reason: format!("kind must be 1..={} bytes", self.kind_bytes_max),
            });
        }
        if task.max_attempts == 0 || task.max_attempts > self.attempts_max {
            return Err(ClientError::InvalidTask {
                reason: format!("max_attempts must be 1..={}", self.attempts_max),
            });
        }
        if task.timeout_ms == 0 {
            return Err(ClientError::InvalidTask {
                reason: "timeout_ms must be positive".into(),
            });
        }
        if task.schedule_to_start_ms > crate::task::SCHEDULE_TO_START_MS_MAX {
            return Err(ClientError::InvalidTask {
                reason: format!(
                    "schedule_to_start_ms must be at most {}",
                    crate::task::SCHEDULE_TO_START_MS_MAX
                ),
            });
        }
        if task.heartbeat_timeout_ms > crate::task::HEARTBEAT_TIMEOUT_MS_MAX {
            return Err(ClientError::InvalidTask {
                reason: format!(
                    "heartbeat_timeout_ms must be at most {}",
                    crate::task::HEARTBEAT_TIMEOUT_MS_MAX
                ),
            });
        }
        if task.lease_grace_ms > 0
            && !(crate::task::LEASE_GRACE_MIN_MS..=crate::task::LEASE_GRACE_SETTING_MS_MAX)
                .contains(&task.lease_grace_ms)
        {
            return Err(ClientError::InvalidTask {
                reason: format!(
                    "lease_grace_ms must be {}..={} (or 0 for the default)",
                    crate::task::LEASE_GRACE_MIN_MS,
                    crate::task::LEASE_GRACE_SETTING_MS_MAX
                ),
            });
        }
        crate::task::valid_labels(&task.labels)
            .map_err(|reason| ClientError::InvalidTask { reason })?;
        if let Some(limit) = &task.limit {
            limit
                .validate()
                .map_err(|reason| ClientError::InvalidTask { reason })?;
        }
        task.retry
            .validate()
            .map_err(|reason| ClientError::InvalidTask { reason })
    }

    /// Checks a submitted batch: its size, every task against
    /// [`Limits::check_task`] (refusals name the task's index), distinct
    /// ids, and a total size one peer message can carry. Changes nothing.
    pub fn check_batch(&self, tasks: &[(TaskId, Task)]) -> Result<(), ClientError> {
        if tasks.len() > self.batch_tasks_max {
            return Err(ClientError::BatchTooLarge {
                tasks: tasks.len(),
                limit: self.batch_tasks_max,
            });
        }
        if tasks.is_empty() {
            return Err(ClientError::InvalidTask {
                reason: "a batch needs at least one task".into(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut bytes = 0usize;
        for (index, (id, task)) in tasks.iter().enumerate() {
            let item = |error| ClientError::BatchItem {
                index,
                error: Box::new(error),
            };
            self.check_task(task).map_err(item)?;
            if !seen.insert(*id) {
                return Err(item(ClientError::InvalidTask {
                    reason: format!("id {id} appears twice in the batch"),
                }));
            }
            bytes = bytes.saturating_add(task.payload.len() + task.kind.len());
        }
        // The batch travels as one log entry in leader mode: it must fit
        // one peer message with room for the rest of an append.
        let limit_bytes = self.message_bytes_max / 4;
        if bytes > limit_bytes {
            return Err(ClientError::PayloadTooLarge {
                size_bytes: bytes,
                limit_bytes,
            });
        }
        Ok(())
    }
}

/// An invalid node configuration. Nothing was started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    /// The node is not in its own member list.
    #[error("node {id} is not in the member list")]
    NotAMember {
        /// The node.
        id: NodeId,
    },
    /// More members than `members_max`.
    #[error("{members} members exceeds members_max = {limit}")]
    TooManyMembers {
        /// How many were given.
        members: usize,
        /// The limit.
        limit: usize,
    },
    /// `task_events_max` below 2 (a history keeps its first event and the latest).
    #[error("task_events_max must be at least 2")]
    TaskEventsTooFew,
    /// A retention (`*_retained_ms`) is zero or above [`RETAINED_MS_MAX`].
    #[error("{what} must be 1..={max} ms", max = RETAINED_MS_MAX)]
    Retention {
        /// Which setting.
        what: &'static str,
    },
    /// A limit or capacity that must be positive is zero.
    #[error("{what} must be positive")]
    Zero {
        /// Which setting.
        what: &'static str,
    },
    /// A message must be able to carry a maximal payload.
    #[error("message_bytes_max must exceed payload_bytes_max")]
    MessageSmallerThanPayload,
    /// The node's worker labels are not valid.
    #[error("labels: {reason}")]
    Labels {
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_refuse_a_node_outside_its_member_list() {
        let err = Peers::new(NodeId(9), [NodeId(1), NodeId(2)], 4, Limits::default()).unwrap_err();
        assert_eq!(err, LimitsError::NotAMember { id: NodeId(9) });
    }

    #[test]
    fn oversized_payload_is_a_typed_error() {
        let limits = Limits {
            payload_bytes_max: 4,
            ..Limits::default()
        };
        let task = Task {
            kind: "echo".into(),
            payload: vec![0; 5],
            timeout_ms: 1,
            max_attempts: 1,
            not_before: crate::Time::ZERO,
            retry: crate::RetryPolicy::default(),
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        };
        assert_eq!(
            limits.check_task(&task),
            Err(ClientError::PayloadTooLarge {
                size_bytes: 5,
                limit_bytes: 4
            })
        );
    }
}
