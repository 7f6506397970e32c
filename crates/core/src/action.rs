//! What a node asks its driver to do.

use crate::client::{ClientError, ClientResponse, RequestId};
use crate::ids::{Epoch, NodeId, TaskId};
use crate::store::StoreOp;
use crate::task::{Task, TaskState};
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// Names a timer the node asked for. The node hands it back meaning; the
/// driver never cancels timers, so a node ignores tokens it no longer wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimerToken(pub u64);

/// One output of a node, carried out by the driver in batch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<M> {
    /// Make these writes durable (fsync) before carrying out any later action
    /// of the batch (a send the node marks with
    /// [`crate::Node::may_precede_persist`] excepted). If the node crashes
    /// first, the writes may be lost, and so are the later actions.
    Persist(Vec<StoreOp>),
    /// Send `msg` to peer `to`. Delivery is not guaranteed.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: M,
    },
    /// Run the handler for `task` under fencing token `epoch`, then call
    /// [`crate::Node::handle_task_finished`] with the same `id` and `epoch`.
    Execute {
        /// The task's id.
        id: TaskId,
        /// The assignment's fencing token.
        epoch: Epoch,
        /// What to run.
        task: Task,
    },
    /// Answer the client request `request`.
    Reply {
        /// The request answered.
        request: RequestId,
        /// The answer.
        reply: Result<ClientResponse, ClientError>,
    },
    /// Call [`crate::Node::handle_timer`] with `token` at or after `at`.
    SetTimer {
        /// Handed back.
        token: TimerToken,
        /// When.
        at: Time,
    },
    /// A fact for the history: logged by the runtime, checked by the
    /// simulator's checkers. Changes nothing.
    Note(Note),
}

/// Facts a node states about task decisions, for logs and checkers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Note {
    /// The cluster decided that `node` runs `task` under `epoch`.
    Assigned {
        /// The task.
        task: TaskId,
        /// The new assignment's fencing token.
        epoch: Epoch,
        /// The runner.
        node: NodeId,
        /// When it was decided, on the deciding node's clock (the leader
        /// that proposed it, the static coordinator, the leaderless
        /// claimer; for a limited leaderless task, the keeper that stamped
        /// its grant): the start a rate limit counts.
        at: Time,
    },
    /// The cluster decided that the assignment `(task, epoch)` is over without
    /// an accepted result; a later assignment may follow.
    Superseded {
        /// The task.
        task: TaskId,
        /// The assignment that ended.
        epoch: Epoch,
        /// Why.
        reason: SupersedeReason,
    },
    /// The cluster decided the final state of `task`.
    Decided {
        /// The task.
        task: TaskId,
        /// Its final state.
        state: TaskState,
    },
    /// The cluster recorded a heartbeat of the assignment `(task, epoch)`
    /// on `node`, which held the task when it was decided.
    Heartbeat {
        /// The task.
        task: TaskId,
        /// The assignment.
        epoch: Epoch,
        /// Its runner.
        node: NodeId,
    },
    /// The record of `task`, final, was purged (its retention ended, or
    /// `Limits::tasks_retained_max` was passed): reads may answer
    /// `NotFound` from now on, and the id may be used again. In leaderless
    /// mode each replica states it for its own copy. (Last in the enum: the
    /// encoding of the earlier variants stays as it was.)
    Purged {
        /// The task.
        task: TaskId,
    },
}

/// Why an assignment ended without an accepted result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SupersedeReason {
    /// The runner was declared dead (missed heartbeats).
    RunnerDeclaredDead,
    /// The runner's lease ran out: a failed attempt (error class
    /// `lease_expired`) with attempts left.
    LeaseExpired,
    /// The handler failed and the task has attempts left.
    AttemptFailed,
    /// The runner handed the assignment back without a result: it was
    /// drained and its deadline passed, or it lost the execution and is no
    /// longer a replica of the task (leaderless). (Last in the enum: the
    /// encoding of the earlier variants stays as it was.)
    Released,
}

impl SupersedeReason {
    /// A short snake-case name (`runner_declared_dead`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SupersedeReason::RunnerDeclaredDead => "runner_declared_dead",
            SupersedeReason::LeaseExpired => "lease_expired",
            SupersedeReason::AttemptFailed => "attempt_failed",
            SupersedeReason::Released => "released",
        }
    }
}
