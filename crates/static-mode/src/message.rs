//! What the nodes of a `static` cluster send each other.

use cohort_core::{Epoch, HeartbeatReply, Task, TaskId, TaskOutcome};
use serde::{Deserialize, Serialize};

/// A peer message of the `static` mode.
// An assignment is the message that carries the work: boxing its task
// would cost an allocation per assignment to save bytes in heartbeats.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StaticMessage {
    /// Coordinator → worker: run `task` under `epoch`. Re-sent until the
    /// worker's heartbeat shows it holds the assignment.
    Assign {
        /// The task.
        task: TaskId,
        /// The fencing token of this assignment.
        epoch: Epoch,
        /// What to run.
        body: Task,
    },
    /// Worker → coordinator: the execution `(task, epoch)` finished.
    /// Re-sent every tick until acknowledged.
    Result {
        /// The task.
        task: TaskId,
        /// The execution's epoch.
        epoch: Epoch,
        /// What the handler returned.
        outcome: TaskOutcome,
    },
    /// Coordinator → worker: stop re-sending this result (accepted or rejected).
    ResultAck {
        /// The task.
        task: TaskId,
        /// The execution's epoch.
        epoch: Epoch,
    },
    /// Worker → coordinator, every `heartbeat_interval_ms`: alive, and what
    /// it holds (running, or finished with the result not yet acknowledged).
    Heartbeat {
        /// The assignments this worker holds.
        held: Vec<(TaskId, Epoch)>,
        /// How many tasks it runs at once.
        capacity_tasks: u32,
        /// The worker labels it carries (tasks naming others are not
        /// assigned to it).
        labels: Vec<String>,
    },
    /// Worker → coordinator: the handler of `(task, epoch)` is alive and
    /// reports `progress`, to record. Not re-sent: the next carries newer
    /// progress.
    Progress {
        /// The task.
        task: TaskId,
        /// The execution's epoch.
        epoch: Epoch,
        /// What the handler reported.
        progress: String,
    },
    /// Coordinator → worker: the execution `(task, epoch)` no longer holds
    /// the task (`reply` says why); its handler is told to stop at its next
    /// heartbeat. Sent when a task is cancelled and in answer to progress
    /// of an execution that ended.
    Stop {
        /// The task.
        task: TaskId,
        /// The execution's epoch.
        epoch: Epoch,
        /// `Cancelled` or `Superseded`.
        reply: HeartbeatReply,
    },
}
