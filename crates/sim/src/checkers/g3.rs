//! G3, fencing. Over the notes nodes state and what the simulator saw run:
//!
//! (a) every execution `(node, task, epoch)` follows a `Note::Assigned` of
//!     that very `(task, epoch, node)`; one `(task, epoch)` is never
//!     assigned to two different nodes (identical notes from several nodes,
//!     or replayed after a restart, count once);
//! (b) a new assignment `e2` of a task after `e1` has `e2 > e1` and comes
//!     after a `Note::Superseded` of `e1`, whatever its reason: the runner
//!     declared dead, its lease expired, its attempt failed, or it handed
//!     the assignment back (`Released`: drained, or removed from the ring
//!     after losing its execution);
//! (c) a reported `Succeeded{result, node, epoch}` is the output of a real
//!     handler completion of `(node, task, epoch)`, and when first reported
//!     `epoch` is the highest epoch assigned for the task;
//! (d) a recorded heartbeat `(task, epoch, node)` is of an assignment of
//!     that very `(task, epoch, node)` (that it was recorded while the
//!     assignment held the task is checked in log order, where it is
//!     decided: every mode asserts `TaskEvents::check_against` on its
//!     records).

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::{Epoch, NodeId, Note, TaskId, TaskOutcome, TaskState, Time};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
struct State {
    assigned: BTreeMap<(TaskId, Epoch), NodeId>,
    highest: BTreeMap<TaskId, Epoch>,
    superseded: BTreeSet<(TaskId, Epoch)>,
    successes: BTreeSet<(TaskId, Epoch, NodeId, Vec<u8>)>,
    reported: BTreeSet<TaskId>,
}

/// Checks G3 over `history`.
pub fn check(history: &History, out: &mut Violations) {
    let mut s = State::default();
    for r in &history.records {
        match &r.event {
            HistoryEvent::Noted { node: by, note } => match note {
                Note::Assigned {
                    task, epoch, node, ..
                } => {
                    s.assigned_note(out, r.at, *by, *task, *epoch, *node);
                }
                Note::Superseded { task, epoch, .. } => {
                    s.superseded.insert((*task, *epoch));
                }
                Note::Decided {
                    task,
                    state:
                        TaskState::Succeeded {
                            result,
                            node,
                            epoch,
                        },
                } => s.result_reported(out, r.at, *by, "decided", *task, result, *node, *epoch),
                Note::Decided { .. } | Note::Purged { .. } => {}
                Note::Heartbeat { task, epoch, node } => {
                    if s.assigned.get(&(*task, *epoch)) != Some(node) {
                        out.push(
                            Guarantee::G3,
                            r.at,
                            format!(
                                "task {task:?}: {by} recorded a heartbeat of {node} under {epoch}, which never held it"
                            ),
                        );
                    }
                }
            },
            HistoryEvent::Read {
                task,
                node: by,
                result:
                    Ok(TaskState::Succeeded {
                        result,
                        node,
                        epoch,
                    }),
                ..
            } => s.result_reported(out, r.at, *by, "answered", *task, result, *node, *epoch),
            HistoryEvent::Executed { node, task, epoch }
                if s.assigned.get(&(*task, *epoch)) != Some(node) =>
            {
                let assigned = match s.assigned.get(&(*task, *epoch)) {
                    Some(other) => format!("it was assigned to {other}"),
                    None => "it was never assigned".to_string(),
                };
                out.push(
                    Guarantee::G3,
                    r.at,
                    format!("task {task:?}: {node} executed it under {epoch}, but {assigned}"),
                );
            }
            HistoryEvent::Completed {
                node,
                task,
                epoch,
                outcome: TaskOutcome::Success(result),
            } => {
                s.successes.insert((*task, *epoch, *node, result.clone()));
            }
            _ => {}
        }
    }
}

impl State {
    fn assigned_note(
        &mut self,
        out: &mut Violations,
        at: Time,
        by: NodeId,
        task: TaskId,
        epoch: Epoch,
        node: NodeId,
    ) {
        if let Some(other) = self.assigned.get(&(task, epoch)) {
            if *other != node {
                out.push(
                    Guarantee::G3,
                    at,
                    format!(
                        "task {task:?}: {epoch} assigned to {other}, then {by} assigned it to {node}"
                    ),
                );
            }
            return;
        }
        if let Some(&prev) = self.highest.get(&task) {
            if epoch <= prev {
                out.push(
                    Guarantee::G3,
                    at,
                    format!("task {task:?}: {by} assigned {epoch} to {node} after {prev}: epochs must grow"),
                );
            } else if !self.superseded.contains(&(task, prev)) {
                out.push(
                    Guarantee::G3,
                    at,
                    format!(
                        "task {task:?}: {by} assigned {epoch} to {node} while {prev} (to {}) was \
                         never superseded",
                        self.assigned[&(task, prev)]
                    ),
                );
            }
        }
        self.assigned.insert((task, epoch), node);
        let h = self.highest.entry(task).or_insert(epoch);
        *h = (*h).max(epoch);
    }

    #[allow(clippy::too_many_arguments)]
    fn result_reported(
        &mut self,
        out: &mut Violations,
        at: Time,
        by: NodeId,
        how: &str,
        task: TaskId,
        result: &[u8],
        node: NodeId,
        epoch: Epoch,
    ) {
        if !self
            .successes
            .contains(&(task, epoch, node, result.to_vec()))
        {
            out.push(
                Guarantee::G3,
                at,
                format!(
                    "task {task:?}: {by} {how} a result of {node} under {epoch} that no \
                     completed execution of {node} under {epoch} returned"
                ),
            );
        }
        if self.reported.insert(task) {
            let highest = self.highest.get(&task).copied();
            if highest != Some(epoch) {
                out.push(
                    Guarantee::G3,
                    at,
                    format!(
                        "task {task:?}: {by} {how} the result of {epoch}, but the highest epoch \
                         assigned was {highest:?}"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;
    use cohort_core::SupersedeReason;

    fn executed(h: &mut History, ms: u64, node: u64, epoch: u64) {
        h.push(
            t(ms),
            HistoryEvent::Executed {
                node: NodeId(node),
                task: T,
                epoch: Epoch(epoch),
            },
        );
    }
    fn completed(h: &mut History, ms: u64, node: u64, epoch: u64, result: &[u8]) {
        h.push(
            t(ms),
            HistoryEvent::Completed {
                node: NodeId(node),
                task: T,
                epoch: Epoch(epoch),
                outcome: TaskOutcome::Success(result.to_vec()),
            },
        );
    }
    fn superseded(epoch: u64) -> Note {
        Note::Superseded {
            task: T,
            epoch: Epoch(epoch),
            reason: SupersedeReason::LeaseExpired,
        }
    }
    fn run(h: &History) -> Violations {
        let mut v = Violations::new(10);
        check(h, &mut v);
        v
    }

    fn fenced_history() -> History {
        let mut h = History::new();
        note(&mut h, 1, 1, assigned(1, 2));
        note(&mut h, 1, 2, assigned(1, 2)); // the same fact from another node
        executed(&mut h, 2, 2, 1);
        note(&mut h, 10, 1, superseded(1));
        note(&mut h, 10, 1, assigned(2, 3));
        executed(&mut h, 11, 3, 2);
        completed(&mut h, 12, 2, 1, b"old");
        completed(&mut h, 13, 3, 2, b"new");
        note(&mut h, 13, 1, assigned(1, 2)); // replayed after a restart
        h
    }

    #[test]
    fn a_fenced_reassignment_passes() {
        let mut h = fenced_history();
        note(
            &mut h,
            14,
            1,
            Note::Decided {
                task: T,
                state: succeeded(b"new", 3, 2),
            },
        );
        read(&mut h, 15, 16, 2, Ok(succeeded(b"new", 3, 2)));
        let v = run(&h);
        assert_eq!(v.count(), 0, "{:?}", v.kept());
    }

    #[test]
    fn a_result_from_a_stale_epoch_is_a_violation() {
        let mut h = fenced_history();
        note(
            &mut h,
            14,
            1,
            Note::Decided {
                task: T,
                state: succeeded(b"old", 2, 1),
            },
        );
        let v = run(&h);
        assert_eq!(v.count(), 1, "{:?}", v.kept());
        assert!(v.kept()[0]
            .detail
            .contains("highest epoch assigned was Some(Epoch(2))"));
    }

    #[test]
    fn a_result_no_execution_returned_is_a_violation() {
        let mut h = fenced_history();
        note(
            &mut h,
            14,
            1,
            Note::Decided {
                task: T,
                state: succeeded(b"forged", 3, 2),
            },
        );
        let v = run(&h);
        assert_eq!(v.count(), 1, "{:?}", v.kept());
        assert!(v.kept()[0].detail.contains("no completed execution"));
    }

    #[test]
    fn an_execution_without_its_assignment_is_a_violation() {
        let mut h = History::new();
        note(&mut h, 1, 1, assigned(1, 2));
        executed(&mut h, 2, 3, 1);
        executed(&mut h, 3, 2, 7);
        let v = run(&h);
        assert_eq!(v.count(), 2, "{:?}", v.kept());
        assert!(v.kept()[0].detail.contains("it was assigned to n2"));
        assert!(v.kept()[1].detail.contains("never assigned"));
    }

    /// A drained runner hands `e1` back at its deadline; its handler
    /// returns later, but the task is decided by the run under `e2`.
    fn drained_history(hand_back: bool) -> History {
        let mut h = History::new();
        note(&mut h, 1, 1, assigned(1, 2));
        executed(&mut h, 2, 2, 1);
        if hand_back {
            let released = Note::Superseded {
                task: T,
                epoch: Epoch(1),
                reason: SupersedeReason::Released,
            };
            note(&mut h, 10, 1, released);
        }
        note(&mut h, 11, 1, assigned(2, 3));
        executed(&mut h, 12, 3, 2);
        completed(&mut h, 13, 2, 1, b"late");
        completed(&mut h, 14, 3, 2, b"new");
        let decided = Note::Decided {
            task: T,
            state: succeeded(b"new", 3, 2),
        };
        note(&mut h, 15, 1, decided);
        h
    }

    #[test]
    fn a_drained_runner_handing_its_assignment_back_ends_it_legitimately() {
        let v = run(&drained_history(true));
        assert_eq!(v.count(), 0, "{:?}", v.kept());
    }

    #[test]
    fn a_rerun_without_a_hand_back_or_any_other_supersede_is_still_a_violation() {
        let v = run(&drained_history(false));
        assert_eq!(v.count(), 1, "{:?}", v.kept());
        assert!(v.kept()[0]
            .detail
            .contains("e1 (to n2) was never superseded"));
    }

    #[test]
    fn reassigning_without_superseding_or_to_a_second_node_is_a_violation() {
        let mut h = History::new();
        note(&mut h, 1, 1, assigned(3, 2));
        note(&mut h, 2, 3, assigned(3, 3)); // same epoch, different runner
        note(&mut h, 3, 1, assigned(4, 3)); // e3 never superseded
        note(&mut h, 4, 1, superseded(4));
        note(&mut h, 5, 1, assigned(4, 2)); // epoch 4 again, other node
        note(&mut h, 6, 1, assigned(2, 1)); // going backwards
        let v = run(&h);
        assert_eq!(v.count(), 4, "{:?}", v.kept());
        assert!(v.kept()[0]
            .detail
            .contains("e3 assigned to n2, then n3 assigned it to n3"));
        assert!(v.kept()[1].detail.contains("never superseded"));
        assert!(v.kept()[2].detail.contains("e4 assigned to n3"));
        assert!(v.kept()[3].detail.contains("epochs must grow"));
    }
}
