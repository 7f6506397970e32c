//! The recorded history of a run: what clients saw and what nodes did and
//! stated, in the order the simulator processed it. Checkers read only this.

use cohort_core::{ClientError, Epoch, NodeId, Note, Task, TaskId, TaskOutcome, TaskState, Time};

/// One fact of the history, stamped with the simulated time it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// When the simulator processed it.
    pub at: Time,
    /// What happened.
    pub event: HistoryEvent,
}

/// What can happen in a history.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryEvent {
    /// A client created a task and sent its first `Submit`.
    Submitted {
        /// The task's id.
        task: TaskId,
        /// Its content.
        content: Task,
    },
    /// A client received `Accepted` for its `Submit`.
    Acked {
        /// The task.
        task: TaskId,
        /// The node that acknowledged it.
        node: NodeId,
        /// The content the client submitted.
        content: Task,
    },
    /// A client's `Submit` was refused with a non-retryable error.
    SubmitRefused {
        /// The task.
        task: TaskId,
        /// The node that refused it.
        node: NodeId,
        /// Why.
        error: ClientError,
    },
    /// A client received the answer to a linearizable `Get`.
    Read {
        /// The task read.
        task: TaskId,
        /// The node that answered.
        node: NodeId,
        /// When the client sent the request (the answer came at `Record::at`).
        sent_at: Time,
        /// The answer.
        result: Result<TaskState, ClientError>,
    },
    /// A node started a handler ([`cohort_core::Action::Execute`]).
    Executed {
        /// The runner.
        node: NodeId,
        /// The task.
        task: TaskId,
        /// The fencing token it ran under.
        epoch: Epoch,
    },
    /// A handler returned and its node was told.
    Completed {
        /// The runner.
        node: NodeId,
        /// The task.
        task: TaskId,
        /// The fencing token it ran under.
        epoch: Epoch,
        /// What it returned.
        outcome: TaskOutcome,
    },
    /// A node stated a fact ([`cohort_core::Action::Note`]).
    Noted {
        /// The node.
        node: NodeId,
        /// The fact.
        note: Note,
    },
}

/// Everything recorded in one run, in processing order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The records, oldest first.
    pub records: Vec<Record>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Appends `event` at `at`. Times must not go backwards.
    pub fn push(&mut self, at: Time, event: HistoryEvent) {
        if let Some(last) = self.records.last() {
            assert!(last.at <= at, "history time went backwards");
        }
        self.records.push(Record { at, event });
    }
}
