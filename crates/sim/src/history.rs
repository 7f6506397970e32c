//! The recorded history of a run: what clients saw and what nodes did and
//! stated, in the order the simulator processed it. Checkers read only this.

use cohort_core::dedupe::{DedupeKey, DedupeOutcome};
use cohort_core::{
    ClientError, Epoch, NodeId, Note, SupersedeReason, Task, TaskId, TaskOutcome, TaskState, Time,
};

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
    /// The run's schedule (see `Workload::schedule_every_ms`): every tick
    /// from its first to `checked_until_ms` must have a final firing.
    ScheduleChecked {
        /// The schedule.
        schedule: Box<cohort_core::schedule::Schedule>,
        /// Its first tick.
        first_tick_ms: u64,
        /// The last tick the run lasted long enough after healing for.
        checked_until_ms: u64,
    },
    /// A client created a task and sent its first `Submit`.
    Submitted {
        /// The task's id.
        task: TaskId,
        /// Its content.
        content: Task,
    },
    /// A client gave up submitting: no `Accepted` came within its deadline
    /// (`Workload::submit_deadline_ms`), and it sends no submit again.
    SubmitAbandoned {
        /// The task.
        task: TaskId,
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
    /// A client received the answer to a linearizable `Get`, or to a
    /// `Cancel` (answered with the state the cancel left the task in).
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
    /// A client began a submit under a dedupe key (see
    /// [`cohort_core::dedupe`]); its task id is only known once it ends.
    UniqueSubmitted {
        /// The dedupe key.
        key: DedupeKey,
        /// The content it asks for.
        content: Task,
    },
    /// A submit under a dedupe key ended with this outcome.
    UniqueAnswered {
        /// The dedupe key.
        key: DedupeKey,
        /// The node that answered the last request.
        node: NodeId,
        /// What the submit made of it.
        outcome: DedupeOutcome,
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

/// What one task went through in a history, for scenario tests: the facts
/// nodes stated, each listed once however many nodes stated it (every node
/// of a replicated log notes what it applies), and the handler runs the
/// simulator saw, every one of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskTimeline {
    /// Distinct `Note::Assigned` facts `(epoch, runner)`, first noted first.
    pub assigned: Vec<(Epoch, NodeId)>,
    /// Distinct `Note::Superseded` facts, first noted first.
    pub superseded: Vec<(Epoch, SupersedeReason)>,
    /// Distinct `Note::Decided` states, first noted first.
    pub decided: Vec<TaskState>,
    /// Every handler start `(when, runner, epoch)`.
    pub executed: Vec<(Time, NodeId, Epoch)>,
    /// Every handler return its node was told of `(when, runner, epoch,
    /// outcome)`.
    pub completed: Vec<(Time, NodeId, Epoch, TaskOutcome)>,
    /// When a node first stated the decision, if one did.
    pub decided_at: Option<Time>,
}

impl History {
    /// The tasks clients created, in the order they were created.
    pub fn tasks(&self) -> Vec<TaskId> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                HistoryEvent::Submitted { task, .. } => Some(*task),
                _ => None,
            })
            .collect()
    }

    /// Assignments `(task, epoch)` some node stated superseded for
    /// `reason`, each counted once.
    pub fn superseded_for(&self, reason: SupersedeReason) -> usize {
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.records {
            if let HistoryEvent::Noted {
                note:
                    Note::Superseded {
                        task,
                        epoch,
                        reason: why,
                    },
                ..
            } = &r.event
            {
                if *why == reason {
                    seen.insert((*task, *epoch));
                }
            }
        }
        seen.len()
    }

    /// What `task` went through.
    pub fn timeline(&self, task: TaskId) -> TaskTimeline {
        fn once<T: PartialEq>(v: &mut Vec<T>, x: T) {
            if !v.contains(&x) {
                v.push(x);
            }
        }
        let mut t = TaskTimeline::default();
        for r in &self.records {
            match &r.event {
                HistoryEvent::Noted { note, .. } => match note {
                    Note::Assigned {
                        task: id,
                        epoch,
                        node,
                        ..
                    } if *id == task => once(&mut t.assigned, (*epoch, *node)),
                    Note::Superseded {
                        task: id,
                        epoch,
                        reason,
                    } if *id == task => once(&mut t.superseded, (*epoch, *reason)),
                    Note::Decided { task: id, state } if *id == task => {
                        t.decided_at.get_or_insert(r.at);
                        once(&mut t.decided, state.clone());
                    }
                    _ => {}
                },
                HistoryEvent::Executed {
                    node,
                    task: id,
                    epoch,
                } if *id == task => t.executed.push((r.at, *node, *epoch)),
                HistoryEvent::Completed {
                    node,
                    task: id,
                    epoch,
                    outcome,
                } if *id == task => t.completed.push((r.at, *node, *epoch, outcome.clone())),
                _ => {}
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;

    #[test]
    fn a_timeline_lists_each_stated_fact_once_and_every_run() {
        let mut h = History::new();
        h.push(
            t(0),
            HistoryEvent::Submitted {
                task: T,
                content: task(),
            },
        );
        // Three nodes apply the same assignment; one replays it after a restart.
        for node in [1, 2, 3, 2] {
            note(&mut h, 1, node, assigned(1, 2));
        }
        let other = TaskId(7);
        note(
            &mut h,
            1,
            1,
            Note::Assigned {
                task: other,
                epoch: Epoch(1),
                node: NodeId(3),
                at: Time::ZERO,
            },
        );
        for ms in [2, 3] {
            h.push(
                t(ms),
                HistoryEvent::Executed {
                    node: NodeId(2),
                    task: T,
                    epoch: Epoch(1),
                },
            );
        }
        for node in [1, 3] {
            note(
                &mut h,
                5,
                node,
                Note::Superseded {
                    task: T,
                    epoch: Epoch(1),
                    reason: SupersedeReason::RunnerDeclaredDead,
                },
            );
        }
        note(&mut h, 5, 1, assigned(2, 3));
        h.push(
            t(8),
            HistoryEvent::Completed {
                node: NodeId(3),
                task: T,
                epoch: Epoch(2),
                outcome: TaskOutcome::Success(b"r".to_vec()),
            },
        );
        for (ms, node) in [(10, 1), (11, 2)] {
            note(
                &mut h,
                ms,
                node,
                Note::Decided {
                    task: T,
                    state: succeeded(b"r", 3, 2),
                },
            );
        }
        assert_eq!(h.tasks(), vec![T]);
        let tl = h.timeline(T);
        assert_eq!(
            tl.assigned,
            vec![(Epoch(1), NodeId(2)), (Epoch(2), NodeId(3))]
        );
        assert_eq!(
            tl.superseded,
            vec![(Epoch(1), SupersedeReason::RunnerDeclaredDead)]
        );
        assert_eq!(tl.decided, vec![succeeded(b"r", 3, 2)]);
        assert_eq!(tl.decided_at, Some(t(10)));
        // Runs are not facts: a second start of the same epoch is listed.
        assert_eq!(
            tl.executed,
            vec![(t(2), NodeId(2), Epoch(1)), (t(3), NodeId(2), Epoch(1))]
        );
        assert_eq!(tl.completed.len(), 1);
        assert_eq!(h.timeline(other).assigned, vec![(Epoch(1), NodeId(3))]);
        assert_eq!(h.timeline(TaskId(8)), TaskTimeline::default());
    }
}
