//! Tasks, their lifecycle and the outcome of one execution.

use crate::ids::{Epoch, NodeId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a client submits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    /// The handler that runs it (`sleep`, `hash`, `echo`, `exec`, ...).
    pub kind: String,
    /// Opaque input for the handler.
    pub payload: Vec<u8>,
    /// How long one execution may run before the runner stops it.
    pub timeout_ms: u64,
    /// How many failed executions before the task is failed for good.
    pub max_attempts: u32,
}

impl Task {
    /// The execution timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The result of one execution of a task handler.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// The handler returned a result.
    Success(Vec<u8>),
    /// The handler failed (returned an error, panicked or timed out).
    Failure(String),
}

/// Where a task is in its life. `Succeeded`, `Failed` and `Cancelled` are
/// final: once a task is final its state never changes again (G2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted, waiting for a runner.
    Pending,
    /// Assigned to `node` under fencing token `epoch`.
    Running {
        /// The runner.
        node: NodeId,
        /// The assignment's fencing token.
        epoch: Epoch,
    },
    /// Finished with a result, from the execution `(node, epoch)`.
    Succeeded {
        /// What the handler returned.
        result: Vec<u8>,
        /// The runner whose result was accepted.
        node: NodeId,
        /// The epoch of the accepted execution.
        epoch: Epoch,
    },
    /// Every attempt failed.
    Failed {
        /// The last attempt's error.
        error: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Cancelled by a client before it finished.
    Cancelled,
}

impl TaskState {
    /// Whether the state can never change again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskState::Succeeded { .. } | TaskState::Failed { .. } | TaskState::Cancelled
        )
    }

    /// Every [`TaskState::name`].
    pub const NAMES: [&'static str; 5] = ["pending", "running", "succeeded", "failed", "cancelled"];

    /// A short lowercase name (`pending`, `running`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running { .. } => "running",
            TaskState::Succeeded { .. } => "succeeded",
            TaskState::Failed { .. } => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}
