//! Schedule, routing and retry policy, as clients and runners saw them: no
//! execution of a task starts before its `not_before` or on a node that
//! lacks one of its worker labels, and a failure whose
//! error class the task lists as non-retryable is never decided as a
//! retryable attempt failure (the task fails at once instead). An
//! assignment may run more than once (a duplicated message, at-least-once),
//! so only an assignment whose every execution so far failed
//! non-retryably must not be retried. The
//! backoff's own bound is checked inside each mode, against the decided
//! `retry_at` ([`cohort_core::TaskEvents::check_policy`]).

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::{Epoch, Note, SupersedeReason, Task, TaskId, TaskOutcome};
use std::collections::BTreeMap;

/// Checks the schedule and retry policy over `history`.
pub fn check(history: &History, out: &mut Violations) {
    let mut content: BTreeMap<TaskId, &Task> = BTreeMap::new();
    // Per assignment that has completed: a non-retryable error, while every
    // completion was one (`None` once any completion could be retried).
    let mut fatal: BTreeMap<(TaskId, Epoch), Option<&str>> = BTreeMap::new();
    for r in &history.records {
        match &r.event {
            HistoryEvent::Submitted { task, content: c } => {
                content.insert(*task, c);
            }
            HistoryEvent::Executed { node, task, epoch } => {
                let Some(c) = content.get(task) else {
                    continue;
                };
                let labels = crate::config::node_labels(*node);
                if !c.runs_on(&labels) {
                    out.push(
                        Guarantee::Policy,
                        r.at,
                        format!(
                            "task {task:?} labelled {:?} ran on {node} under {epoch}, which \
                             carries {labels:?}",
                            c.labels
                        ),
                    );
                }
                if r.at < c.not_before {
                    out.push(
                        Guarantee::Policy,
                        r.at,
                        format!(
                            "task {task:?} started on {node} under {epoch} at {}, before its \
                             not_before {}",
                            r.at, c.not_before
                        ),
                    );
                }
            }
            HistoryEvent::Completed {
                task,
                epoch,
                outcome: TaskOutcome::Failure(error),
                ..
            } => {
                let retryable = content.get(task).is_none_or(|c| c.retry.retries(error));
                let entry = fatal.entry((*task, *epoch)).or_insert(Some(error));
                if retryable {
                    *entry = None;
                }
            }
            HistoryEvent::Completed { task, epoch, .. } => {
                fatal.insert((*task, *epoch), None);
            }
            HistoryEvent::Noted {
                node,
                note:
                    Note::Superseded {
                        task,
                        epoch,
                        reason: SupersedeReason::AttemptFailed,
                    },
            } => {
                if let Some(Some(error)) = fatal.get(&(*task, *epoch)) {
                    out.push(
                        Guarantee::Policy,
                        r.at,
                        format!(
                            "task {task:?}: {node} retried it after its execution under {epoch} \
                             failed with the non-retryable {error:?}"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use cohort_core::{NodeId, RetryPolicy, Time};

    fn task(not_before_ms: u64) -> Task {
        Task {
            kind: "sleep".into(),
            payload: vec![],
            timeout_ms: 10,
            max_attempts: 3,
            not_before: Time::from_millis(not_before_ms),
            retry: RetryPolicy {
                non_retryable: vec!["fatal".into()],
                ..RetryPolicy::default()
            },
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        }
    }

    fn run(history: &History) -> Vec<String> {
        let mut v = Violations::new(10);
        check(history, &mut v);
        v.into_kept().into_iter().map(|v| v.detail).collect()
    }

    #[test]
    fn an_execution_before_not_before_is_reported() {
        let (n, e) = (NodeId(1), Epoch(1));
        let history = |started_ms| {
            let mut h = History::new();
            h.push(
                Time::from_millis(0),
                HistoryEvent::Submitted {
                    task: TaskId(1),
                    content: task(100),
                },
            );
            h.push(
                Time::from_millis(started_ms),
                HistoryEvent::Executed {
                    node: n,
                    task: TaskId(1),
                    epoch: e,
                },
            );
            h
        };
        assert!(run(&history(100)).is_empty(), "at not_before is on time");
        assert_eq!(run(&history(99)).len(), 1);
    }

    #[test]
    fn a_non_retryable_failure_decided_as_an_attempt_failure_is_reported() {
        let (t, n) = (TaskId(1), NodeId(1));
        let superseded = |epoch| HistoryEvent::Noted {
            node: n,
            note: Note::Superseded {
                task: t,
                epoch,
                reason: SupersedeReason::AttemptFailed,
            },
        };
        let completed = |epoch, error: &str| HistoryEvent::Completed {
            node: n,
            task: t,
            epoch,
            outcome: TaskOutcome::Failure(error.into()),
        };
        let mut h = History::new();
        let at = Time::from_millis(1);
        h.push(
            at,
            HistoryEvent::Submitted {
                task: t,
                content: task(0),
            },
        );
        h.push(at, completed(Epoch(1), "io: retry me"));
        h.push(at, superseded(Epoch(1)));
        assert!(run(&h).is_empty(), "a retryable class is retried");
        h.push(at, completed(Epoch(2), "fatal: never again"));
        h.push(at, superseded(Epoch(2)));
        assert_eq!(run(&h).len(), 1);
        // Run twice (a duplicated assignment): the retryable run may be the
        // one the cluster heard.
        h.push(at, completed(Epoch(3), "fatal: never again"));
        h.push(at, completed(Epoch(3), "io: retry me"));
        h.push(at, superseded(Epoch(3)));
        assert_eq!(run(&h).len(), 1, "no new violation");
    }
}
