//! G2, one outcome: every final state reported for a task — a node's
//! `Note::Decided`, or a client read — is the same one, and once one was
//! reported, a read sent afterwards never shows the task non-final again.

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::{NodeId, Note, TaskId, TaskState, Time};
use std::collections::BTreeMap;

struct FirstFinal {
    at: Time,
    by: NodeId,
    how: &'static str,
    state: TaskState,
}

/// Checks G2 over `history`.
pub fn check(history: &History, out: &mut Violations) {
    let mut first: BTreeMap<TaskId, FirstFinal> = BTreeMap::new();
    for r in &history.records {
        match &r.event {
            HistoryEvent::Noted {
                node,
                note: Note::Decided { task, state },
            } => {
                if !state.is_final() {
                    out.push(
                        Guarantee::G2,
                        r.at,
                        format!("task {task:?}: {node} decided a non-final state {state:?}"),
                    );
                    continue;
                }
                report(&mut first, out, r.at, *task, *node, "decided", state);
            }
            HistoryEvent::Read {
                task,
                node,
                sent_at,
                result: Ok(state),
            } => {
                if state.is_final() {
                    report(&mut first, out, r.at, *task, *node, "answered", state);
                    continue;
                }
                let Some(f) = first.get(task) else { continue };
                if f.at < *sent_at {
                    out.push(
                        Guarantee::G2,
                        r.at,
                        format!(
                            "task {task:?}: {} {} {:?} at {}, but a read sent at {sent_at} to \
                             {node} shows it {}",
                            f.by,
                            f.how,
                            f.state,
                            f.at,
                            state.name()
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Records a final state reported for `task`, or compares it with the first one.
fn report(
    first: &mut BTreeMap<TaskId, FirstFinal>,
    out: &mut Violations,
    at: Time,
    task: TaskId,
    by: NodeId,
    how: &'static str,
    state: &TaskState,
) {
    match first.get(&task) {
        None => {
            first.insert(
                task,
                FirstFinal {
                    at,
                    by,
                    how,
                    state: state.clone(),
                },
            );
        }
        Some(f) if f.state != *state => out.push(
            Guarantee::G2,
            at,
            format!(
                "task {task:?}: {} {} {:?} at {}, but {by} {how} {state:?}",
                f.by, f.how, f.state, f.at
            ),
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;

    #[test]
    fn the_same_outcome_everywhere_passes() {
        let mut h = History::new();
        let s = succeeded(b"r1", 2, 1);
        read(
            &mut h,
            1,
            2,
            1,
            Ok(TaskState::Running {
                node: NodeId(2),
                epoch: cohort_core::Epoch(1),
            }),
        );
        note(
            &mut h,
            3,
            1,
            Note::Decided {
                task: T,
                state: s.clone(),
            },
        );
        note(
            &mut h,
            4,
            2,
            Note::Decided {
                task: T,
                state: s.clone(),
            },
        );
        // Sent before the decision: a non-final answer is allowed.
        read(&mut h, 2, 5, 3, Ok(TaskState::Pending));
        read(&mut h, 6, 7, 3, Ok(s));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 0, "{:?}", v.kept());
    }

    #[test]
    fn two_different_outcomes_are_a_violation() {
        let mut h = History::new();
        note(
            &mut h,
            3,
            1,
            Note::Decided {
                task: T,
                state: succeeded(b"r1", 2, 1),
            },
        );
        read(&mut h, 4, 5, 2, Ok(succeeded(b"r2", 3, 2)));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 1);
        assert_eq!(v.kept()[0].guarantee, Guarantee::G2);
        assert!(
            v.kept()[0].detail.contains("n2 answered"),
            "{}",
            v.kept()[0]
        );
    }

    #[test]
    fn a_final_state_that_reverts_is_a_violation() {
        let mut h = History::new();
        read(&mut h, 1, 2, 1, Ok(TaskState::Cancelled));
        read(&mut h, 3, 4, 2, Ok(TaskState::Pending));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 1);
        assert!(
            v.kept()[0].detail.contains("shows it pending"),
            "{}",
            v.kept()[0]
        );
    }
}
