//! Helpers for scenario tests that tell one task's story in a mode: a run
//! with a single task and no drawn fault, to which a test adds scripted
//! faults ([`SimConfig::script`]), and a way to doctor the recorded
//! history into the failure a story guards against, so a test can show
//! that its checker would catch it.
//!
//! The drawn plan is the same with or without scripted faults, and
//! scripting a fault draws nothing from the run's RNG: a run with a script
//! is the run without it up to the first scripted fault. A test can
//! therefore run once to learn who runs the task and when, then strike
//! that runner at a chosen point of its execution.

use crate::config::{Fault, FaultKinds, ScriptedFault, SimConfig};
use crate::history::{History, HistoryEvent};
use cohort_core::dedupe::{DedupeKey, DedupeOutcome};
use cohort_core::{Epoch, NodeId, Note, TaskId, TaskState, Time};

/// A run of `nodes` nodes in which one client submits one task whose
/// handler runs `duration_ms` and succeeds, with no drawn fault, a
/// readable trace, and a safety phase of `safety_ms` (when scripted faults
/// may strike) followed by 30 s of liveness phase.
pub fn one_task(seed: u64, nodes: usize, duration_ms: u64, safety_ms: u64) -> SimConfig {
    let mut c = SimConfig::new(seed, nodes);
    c.faults = FaultKinds::NONE;
    c.safety_ms = safety_ms;
    c.liveness_ms = 30_000;
    c.record_trace = true;
    let w = &mut c.workload;
    w.arrivals_per_sec = 1.0;
    w.tasks_max = 1;
    w.task_ms_min = duration_ms;
    w.task_ms_max = duration_ms;
    w.handler_failure_rate = 0.0;
    w.cancel_rate = 0.0;
    w.batch_rate = 0.0;
    w.heartbeat_rate = 0.0;
    c
}

/// A run in which `submitters` clients submit under one dedupe key (see
/// [`cohort_core::dedupe`]) in a burst (about 20 a second), each a task
/// whose handler runs `duration_ms` and succeeds; otherwise as
/// [`one_task`]. With `duration_ms` longer than the burst, every submitter
/// should be answered with the first one's task.
pub fn one_key(
    seed: u64,
    nodes: usize,
    submitters: u64,
    duration_ms: u64,
    safety_ms: u64,
) -> SimConfig {
    let mut c = one_task(seed, nodes, duration_ms, safety_ms);
    let w = &mut c.workload;
    w.arrivals_per_sec = 20.0;
    w.tasks_max = submitters;
    w.unique_every = 1;
    w.unique_burst = 1;
    w.unique_keys = 1;
    c
}

/// The answers to the submits under dedupe keys in `history`, in the
/// order they came.
pub fn unique_answers(history: &History) -> Vec<(DedupeKey, DedupeOutcome)> {
    history
        .records
        .iter()
        .filter_map(|r| match &r.event {
            HistoryEvent::UniqueAnswered { key, outcome, .. } => {
                Some((key.clone(), outcome.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The first handler run of a run's first task: whom a story strikes, and
/// when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstRun {
    /// The task.
    pub task: TaskId,
    /// The node that ran it.
    pub runner: NodeId,
    /// The epoch it ran under.
    pub epoch: Epoch,
    /// When the handler started.
    pub at: Time,
}

impl FirstRun {
    /// The first handler run of the first task created in `history`, if it
    /// ran.
    pub fn of(history: &History) -> Option<FirstRun> {
        let task = *history.tasks().first()?;
        let (at, runner, epoch) = *history.timeline(task).executed.first()?;
        Some(FirstRun {
            task,
            runner,
            epoch,
            at,
        })
    }

    /// When a fault `after_ms` into the run strikes, in whole ms since the
    /// start (a fault is scripted to the ms).
    pub fn at_ms(&self, after_ms: u64) -> u64 {
        self.at.as_millis() + after_ms
    }

    /// The runner crashes `after_ms` into the run, for `down_ms`.
    pub fn crash_runner(&self, after_ms: u64, down_ms: u64) -> ScriptedFault {
        ScriptedFault {
            at_ms: self.at_ms(after_ms),
            fault: Fault::Crash {
                node: self.runner,
                down_ms,
            },
        }
    }

    /// The runner pauses `after_ms` into the run, for `for_ms`.
    pub fn pause_runner(&self, after_ms: u64, for_ms: u64) -> ScriptedFault {
        ScriptedFault {
            at_ms: self.at_ms(after_ms),
            fault: Fault::Pause {
                node: self.runner,
                for_ms,
            },
        }
    }
}

/// The negative control of a fenced-off stale result: had `by` accepted
/// `first`'s result `result` instead of the outcome `history` records (the
/// task having been assigned again under `later`), the G3 checker reports
/// exactly that, once.
///
/// # Panics
///
/// If it does not: the checker would miss a stale result.
pub fn assert_g3_catches_the_stale_result(
    history: &History,
    first: &FirstRun,
    by: NodeId,
    result: Vec<u8>,
    later: Epoch,
) {
    let accepted = decided_instead(
        history,
        first.task,
        by,
        TaskState::Succeeded {
            result,
            node: first.runner,
            epoch: first.epoch,
        },
    );
    let mut v = crate::checkers::Violations::new(10);
    crate::checkers::g3::check(&accepted, &mut v);
    assert_eq!(v.count(), 1, "{:?}", v.kept());
    let wanted = format!("highest epoch assigned was Some({later:?})");
    assert!(v.kept()[0].detail.contains(&wanted), "{:?}", v.kept());
}

/// `history` as it would read had `by` decided `state` for `task` after
/// everything else happened: every decision of `task` noted and every
/// final state of it read is dropped, and `state` is decided at the end.
pub fn decided_instead(history: &History, task: TaskId, by: NodeId, state: TaskState) -> History {
    let mut out = History::new();
    for r in &history.records {
        let reports_final = match &r.event {
            HistoryEvent::Noted {
                note: Note::Decided { task: id, .. },
                ..
            } => *id == task,
            HistoryEvent::Read {
                task: id,
                result: Ok(s),
                ..
            } => *id == task && s.is_final(),
            _ => false,
        };
        if !reports_final {
            out.push(r.at, r.event.clone());
        }
    }
    let end = history
        .records
        .last()
        .map_or(cohort_core::Time::ZERO, |r| r.at);
    out.push(
        end,
        HistoryEvent::Noted {
            node: by,
            note: Note::Decided { task, state },
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;
    use crate::checkers::{g3, Violations};

    #[test]
    fn one_task_is_a_valid_run_of_one_fault_free_task() {
        let c = one_task(3, 5, 700, 4_000);
        assert!(c.validate().is_ok());
        assert_eq!(c.faults, FaultKinds::NONE);
        assert!(c.script.is_empty());
        assert_eq!(c.workload.tasks_max, 1);
        assert_eq!((c.workload.task_ms_min, c.workload.task_ms_max), (700, 700));
        assert_eq!(c.workload.handler_failure_rate, 0.0);
        assert_eq!(c.workload.cancel_rate, 0.0);
    }

    #[test]
    fn the_first_run_is_the_first_execution_of_the_first_task() {
        let mut h = History::new();
        assert_eq!(FirstRun::of(&h), None);
        h.push(
            t(1),
            HistoryEvent::Submitted {
                task: T,
                content: task(),
            },
        );
        assert_eq!(FirstRun::of(&h), None, "submitted, never run");
        for (ms, node, epoch) in [(1_500, 3, 1), (4_000, 2, 2)] {
            h.push(
                Time(ms * 1000 + 250),
                HistoryEvent::Executed {
                    node: NodeId(node),
                    task: T,
                    epoch: Epoch(epoch),
                },
            );
        }
        let first = FirstRun::of(&h).expect("it ran");
        assert_eq!(
            first,
            FirstRun {
                task: T,
                runner: NodeId(3),
                epoch: Epoch(1),
                at: Time(1_500_250),
            }
        );
        assert_eq!(first.crash_runner(10, 700).to_string(), "crash:n3@1510+700");
        assert_eq!(first.pause_runner(0, 5).to_string(), "pause:n3@1500+5");
    }

    #[test]
    fn decided_instead_replaces_every_report_of_the_outcome() {
        let mut h = History::new();
        note(&mut h, 1, 1, assigned(1, 2));
        let other = Note::Decided {
            task: TaskId(5),
            state: TaskState::Cancelled,
        };
        note(&mut h, 2, 1, other.clone());
        let decided = Note::Decided {
            task: T,
            state: succeeded(b"new", 2, 1),
        };
        note(&mut h, 3, 1, decided.clone());
        note(&mut h, 3, 3, decided);
        read(&mut h, 3, 4, 2, Ok(succeeded(b"new", 2, 1)));
        read(&mut h, 4, 5, 2, Ok(TaskState::Pending));
        let d = decided_instead(&h, T, NodeId(3), succeeded(b"old", 2, 1));
        let events: Vec<&HistoryEvent> = d.records.iter().map(|r| &r.event).collect();
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(d.records[0], h.records[0]);
        assert_eq!(d.records[1], h.records[1], "another task's decision stays");
        assert_eq!(
            d.records[2], h.records[5],
            "a read of a state not final stays"
        );
        assert_eq!(
            d.records[3].event,
            HistoryEvent::Noted {
                node: NodeId(3),
                note: Note::Decided {
                    task: T,
                    state: succeeded(b"old", 2, 1)
                }
            }
        );
        assert_eq!(d.records[3].at, t(5));
        // No execution returned "old": G3 says so of the doctored history.
        let mut v = Violations::new(10);
        g3::check(&d, &mut v);
        assert!(
            v.kept()[0].detail.contains("no completed execution"),
            "{:?}",
            v.kept()
        );
    }
}
