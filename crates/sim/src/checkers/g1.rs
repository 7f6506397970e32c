//! G1, durability: once a submit is acknowledged, the task is never lost.
//!
//! A linearizable `Get` sent after the client received the ack must not
//! answer `NotFound`. A `Submit` refused with `IdConflict` is also a loss:
//! task ids are 128-bit random draws, so the only task that can hold the id
//! is the client's own, and the node no longer knows its content.
//!
//! A lost task is reported once, at the first read that shows it lost.
//!
//! Retention is not loss: a read may answer `NotFound` once some node
//! stated `Note::Purged` for the task, but a purge of a task whose final
//! state was never decided (`Note::Decided`) is one.

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::{ClientError, NodeId, Note, TaskId, Time};
use std::collections::{BTreeMap, BTreeSet};

/// Checks G1 over `history`.
pub fn check(history: &History, out: &mut Violations) {
    let mut acked: BTreeMap<TaskId, (Time, NodeId)> = BTreeMap::new();
    let mut lost: BTreeSet<TaskId> = BTreeSet::new();
    let mut decided: BTreeSet<TaskId> = BTreeSet::new();
    let mut purged: BTreeSet<TaskId> = BTreeSet::new();
    for r in &history.records {
        match &r.event {
            HistoryEvent::Noted {
                note: Note::Decided { task, state },
                ..
            } if state.is_final() => {
                decided.insert(*task);
            }
            HistoryEvent::Noted {
                node,
                note: Note::Purged { task },
            } => {
                if !decided.contains(task) && lost.insert(*task) {
                    out.push(
                        Guarantee::G1,
                        r.at,
                        format!("task {task:?}: {node} purged it before its outcome was decided"),
                    );
                }
                purged.insert(*task);
            }
            HistoryEvent::Acked { task, node, .. } => {
                acked.entry(*task).or_insert((r.at, *node));
            }
            HistoryEvent::Read {
                task,
                node,
                sent_at,
                result: Err(ClientError::NotFound { .. }),
            } => {
                let Some((ack_at, ack_node)) = acked.get(task) else {
                    continue;
                };
                if purged.contains(task) {
                    continue;
                }
                if sent_at >= ack_at && lost.insert(*task) {
                    out.push(
                        Guarantee::G1,
                        r.at,
                        format!(
                            "task {task:?} acknowledged by {ack_node} at {ack_at}, later NotFound \
                             from {node} (read sent at {sent_at})"
                        ),
                    );
                }
            }
            HistoryEvent::SubmitRefused {
                task,
                node,
                error: ClientError::IdConflict { .. },
            } => out.push(
                Guarantee::G1,
                r.at,
                format!(
                    "task {task:?}: {node} refused a submit of its own content with IdConflict"
                ),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;
    use cohort_core::TaskState;

    #[test]
    fn reads_that_find_the_acked_task_pass() {
        let mut h = History::new();
        // A NotFound before the ack was received is not a loss.
        read(&mut h, 1, 2, 2, Err(ClientError::NotFound { id: T }));
        acked(&mut h, 3, 1);
        read(&mut h, 4, 5, 2, Ok(TaskState::Pending));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 0, "{:?}", v.kept());
    }

    #[test]
    fn not_found_after_the_ack_is_a_violation() {
        let mut h = History::new();
        acked(&mut h, 3, 1);
        read(&mut h, 4, 5, 2, Ok(TaskState::Pending));
        read(&mut h, 6, 7, 2, Err(ClientError::NotFound { id: T }));
        read(&mut h, 8, 9, 3, Err(ClientError::NotFound { id: T }));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 1);
        let text = v.kept()[0].to_string();
        assert!(text.starts_with("G1 at 7.000ms: task "), "{text}");
        assert!(
            text.contains("acknowledged by n1 at 3.000ms, later NotFound from n2"),
            "{text}"
        );
    }

    #[test]
    fn id_conflict_for_the_clients_own_submit_is_a_violation() {
        let mut h = History::new();
        h.push(
            t(1),
            HistoryEvent::SubmitRefused {
                task: T,
                node: NodeId(3),
                error: ClientError::IdConflict { id: T },
            },
        );
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 1);
        assert_eq!(v.kept()[0].guarantee, Guarantee::G1);
    }

    fn noted(h: &mut History, at: u64, note: Note) {
        h.push(
            t(at),
            HistoryEvent::Noted {
                node: NodeId(2),
                note,
            },
        );
    }

    #[test]
    fn not_found_after_a_purge_of_the_decided_task_is_retention_not_loss() {
        let mut h = History::new();
        acked(&mut h, 3, 1);
        let state = TaskState::Cancelled;
        noted(&mut h, 4, Note::Decided { task: T, state });
        noted(&mut h, 5, Note::Purged { task: T });
        read(&mut h, 6, 7, 2, Err(ClientError::NotFound { id: T }));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 0, "{:?}", v.kept());
    }

    #[test]
    fn a_purge_before_the_outcome_is_a_violation() {
        let mut h = History::new();
        acked(&mut h, 3, 1);
        noted(&mut h, 5, Note::Purged { task: T });
        read(&mut h, 6, 7, 2, Err(ClientError::NotFound { id: T }));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 1, "{:?}", v.kept());
        let text = v.kept()[0].to_string();
        assert!(
            text.contains("purged it before its outcome was decided"),
            "{text}"
        );
    }
}
