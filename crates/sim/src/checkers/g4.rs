//! G4, liveness: at the end of the liveness phase every submitted task was
//! acknowledged, and every acknowledged task has a final state reported
//! (a `Note::Decided` or a client read).

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::{ClientError, NodeId, Note, TaskId, Time};
use std::collections::{BTreeMap, BTreeSet};

/// Checks G4 over `history`, as of `end`.
pub fn check(history: &History, end: Time, out: &mut Violations) {
    let mut submitted: BTreeMap<TaskId, Time> = BTreeMap::new();
    let mut acked: BTreeMap<TaskId, (Time, NodeId)> = BTreeMap::new();
    let mut refused: BTreeMap<TaskId, (NodeId, ClientError)> = BTreeMap::new();
    let mut finals: BTreeSet<TaskId> = BTreeSet::new();
    let mut abandoned: BTreeSet<TaskId> = BTreeSet::new();
    for r in &history.records {
        match &r.event {
            HistoryEvent::Submitted { task, .. } => {
                submitted.entry(*task).or_insert(r.at);
            }
            HistoryEvent::Acked { task, node, .. } => {
                acked.entry(*task).or_insert((r.at, *node));
            }
            HistoryEvent::SubmitRefused { task, node, error } => {
                refused.insert(*task, (*node, error.clone()));
            }
            HistoryEvent::SubmitAbandoned { task } => {
                abandoned.insert(*task);
            }
            HistoryEvent::Noted {
                note: Note::Decided { task, state },
                ..
            } if state.is_final() => {
                finals.insert(*task);
            }
            HistoryEvent::Read {
                task,
                result: Ok(state),
                ..
            } if state.is_final() => {
                finals.insert(*task);
            }
            _ => {}
        }
    }
    for (task, at) in &submitted {
        if acked.contains_key(task) || abandoned.contains(task) {
            continue;
        }
        let why = match refused.get(task) {
            Some((node, e)) => format!("refused by {node}: {e}"),
            None => "no Accepted reply".to_string(),
        };
        out.push(
            Guarantee::G4,
            end,
            format!("task {task:?} submitted at {at} was never acknowledged ({why})"),
        );
    }
    for (task, (at, node)) in &acked {
        if !finals.contains(task) {
            out.push(
                Guarantee::G4,
                end,
                format!(
                    "task {task:?} acknowledged by {node} at {at} has no final state by the end \
                     of the liveness phase"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;
    use cohort_core::TaskState;

    fn submitted(h: &mut History, ms: u64) {
        h.push(
            t(ms),
            HistoryEvent::Submitted {
                task: T,
                content: task(),
            },
        );
    }

    #[test]
    fn a_task_acked_and_read_final_passes() {
        let mut h = History::new();
        submitted(&mut h, 1);
        acked(&mut h, 2, 1);
        read(&mut h, 3, 4, 1, Ok(TaskState::Cancelled));
        let mut v = Violations::new(10);
        check(&h, t(100), &mut v);
        assert_eq!(v.count(), 0, "{:?}", v.kept());
    }

    #[test]
    fn an_unacked_submit_and_an_unfinished_task_are_violations() {
        let mut h = History::new();
        submitted(&mut h, 1);
        let mut v = Violations::new(10);
        check(&h, t(100), &mut v);
        assert_eq!(v.count(), 1);
        assert!(v.kept()[0].detail.contains("never acknowledged"));

        acked(&mut h, 2, 1);
        read(&mut h, 3, 4, 1, Ok(TaskState::Pending));
        let mut v = Violations::new(10);
        check(&h, t(100), &mut v);
        assert_eq!(v.count(), 1);
        assert_eq!(
            v.kept()[0].to_string().split(':').next(),
            Some("G4 at 100.000ms")
        );
        assert!(v.kept()[0].detail.contains("no final state"));
    }
}
