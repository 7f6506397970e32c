//! A task's replicated record: the immutable body, its replicas, the latest
//! chosen version of its state, and the Paxos acceptor state for the next
//! version. One record per task on each of its replicas, persisted under one
//! key so a record and its acceptor state change atomically.

use crate::paxos::Ballot;
use crate::permit::Permits;
use cohort_core::{Epoch, NodeId, Task, TaskEvents, TaskId, TaskState, Time};
use serde::{Deserialize, Serialize};

/// Key prefix of task records in the node's store.
pub(crate) const RECORD_PREFIX: &[u8] = b"lless/task/";

/// The store key of `id`'s record (prefix, then the id big-endian, so the
/// store's key order is the task id order).
pub(crate) fn record_key(id: TaskId) -> Vec<u8> {
    task_key(RECORD_PREFIX, id)
}

/// A per-task store key: `prefix`, then the id big-endian.
pub(crate) fn task_key(prefix: &[u8], id: TaskId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The task id of a [`task_key`] under `prefix` (`None`: not 16 bytes).
pub(crate) fn task_of_key(prefix: &[u8], key: &[u8]) -> Option<TaskId> {
    let bytes = key.strip_prefix(prefix)?.try_into().ok()?;
    Some(TaskId(u128::from_be_bytes(bytes)))
}

/// The replicated value of a task: what each Paxos instance decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskValue {
    /// The task's state.
    pub state: TaskState,
    /// The latest epoch handed out (zero before the first claim). Epochs
    /// only grow: every claim takes `epoch + 1`.
    pub epoch: Epoch,
    /// Failed executions so far.
    pub attempts: u32,
    /// The boot generation of the runner when it claimed (0 before any
    /// claim). A node runs only assignments of its current boot: one it
    /// finds from an earlier boot (it crashed) is re-claimed with a new
    /// epoch instead of run again under the old one.
    pub runner_boot: u64,
    /// The task's replicas from this version on: the acceptors of the
    /// instance deciding the next version. Changed only by a chosen move
    /// (a ring change), so every proposer of an instance, knowing its
    /// chosen base, asks the same acceptors.
    pub replicas: Vec<NodeId>,
    /// The ring epoch `replicas` were computed from; only grows.
    pub ring_epoch: u64,
    /// Not to be claimed before this instant (on the claimer's clock): the
    /// task's `not_before`, then the `retry_at` of its latest failed attempt.
    pub ready_at: Time,
    /// While pending again with a schedule-to-start timeout (after a failed
    /// attempt or a hand-back): not to be claimed after this instant, but
    /// failed. `None` at version 0, whose deadline each replica counts from
    /// its [`Record::created_at`] (a written value must be the same
    /// everywhere), and while running.
    pub start_by: Option<Time>,
    /// What happened to the task since it was submitted, each event
    /// stamped by the node that proposed it (the submission itself is the
    /// record's [`Record::created_at`]: a version-0 value is written, not
    /// chosen, and must be the same on every replica).
    pub history: TaskEvents,
    /// A permit record's places and starts ([`crate::permit`]); empty in
    /// a task's value.
    pub permits: Box<Permits>,
    /// A limited task's latest claim: its epoch and the stamp of the grant
    /// it used, the start its rate limit counted (every node that notes
    /// the claim reads it here: the proposer that gets it chosen may not be
    /// the claimer).
    pub granted: Option<(Epoch, Time)>,
}

impl TaskValue {
    /// The value of a task just submitted (version 0), on the replicas
    /// its header was written to.
    pub fn initial(header: &TaskHeader) -> TaskValue {
        TaskValue {
            state: TaskState::Pending,
            epoch: Epoch::ZERO,
            attempts: 0,
            runner_boot: 0,
            replicas: header.replicas.clone(),
            ring_epoch: header.ring_epoch,
            ready_at: header.task.not_before,
            start_by: None,
            history: TaskEvents::default(),
            permits: Box::default(),
            granted: None,
        }
    }
}

/// The task itself and where it lives; immutable once created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHeader {
    /// What to run.
    pub task: Task,
    /// The replicas the task was written to at submission, from the ring
    /// membership of `ring_epoch` (where version 0 lives; later versions
    /// name their own replicas in [`TaskValue::replicas`]).
    pub replicas: Vec<NodeId>,
    /// The ring epoch of the submitting node.
    pub ring_epoch: u64,
}

/// What a replica holds for one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Body and replicas.
    pub header: TaskHeader,
    /// The latest version this replica knows to be chosen.
    pub version: u64,
    /// The value chosen at `version`.
    pub value: TaskValue,
    /// Acceptor state of the instance deciding `version + 1`: the highest
    /// ballot promised.
    pub promised: Ballot,
    /// Acceptor state of the instance deciding `version + 1`: the value
    /// accepted, with its ballot.
    pub accepted: Option<(Ballot, TaskValue)>,
    /// When this replica first stored the task, on its clock: the
    /// submission time its event history reports.
    pub created_at: Time,
}

impl Record {
    /// A fresh record at version 0, stored at `created_at`.
    pub fn new(header: TaskHeader, created_at: Time) -> Record {
        Record {
            value: TaskValue::initial(&header),
            header,
            version: 0,
            promised: Ballot::ZERO,
            accepted: None,
            created_at,
        }
    }

    /// Whether `me` is one of the task's replicas as of the latest chosen
    /// version this record knows (a record kept after the task moved away
    /// is not).
    pub fn is_replica(&self, me: NodeId) -> bool {
        self.value.replicas.contains(&me)
    }

    /// Moves to a newer chosen `(version, value)`, clearing the acceptor
    /// state of the instances it skips. Returns whether anything changed.
    pub fn learn(&mut self, version: u64, value: &TaskValue) -> bool {
        if version <= self.version {
            return false;
        }
        assert!(
            !self.value.state.is_final() || self.value.state == value.state,
            "a final state never changes (version {} -> {version})",
            self.version
        );
        assert!(value.epoch >= self.value.epoch, "epochs only grow");
        self.version = version;
        self.value = value.clone();
        self.promised = Ballot::ZERO;
        self.accepted = None;
        true
    }
}

/// A header for unit tests: an `echo` task with `timeout_ms`, one
/// attempt, on replicas n1, n2, n3 of ring epoch 0.
#[cfg(test)]
pub(crate) fn test_header(timeout_ms: u64) -> TaskHeader {
    TaskHeader {
        task: Task {
            kind: "echo".into(),
            payload: vec![],
            timeout_ms,
            max_attempts: 1,
            not_before: Time::ZERO,
            retry: cohort_core::RetryPolicy::default(),
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        },
        replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
        ring_epoch: 0,
    }
}
