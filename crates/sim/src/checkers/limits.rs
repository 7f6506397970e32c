//! Concurrency and rate limits: per limit, never more runs live at once
//! than its `concurrency_max`, and never more starts inside one window of
//! `rate_window_ms` than its `rate_max`.
//!
//! An assignment `(task, epoch)` is live in the consensus record from the
//! first note of its `Assigned` fact to the first note of its end (its
//! `Superseded`, or the task's `Decided`). Taking first notes in history
//! order is sound for a replicated log: every node notes what it applies
//! in log order, so the first note of an earlier entry never comes after
//! the first note of a later one. A start is counted at the stamp its
//! `Assigned` fact carries: the time the coordinator decided it, which is
//! what the coordinator's rate limit counts.
//!
//! Tasks are grouped by their whole limit (key and numbers): a key whose
//! tasks carry different numbers shares one count in the coordinator, so
//! a group holds at most what the key holds and the check stays sound.
//! Tasks a client submitted under a dedupe key are not followed (their
//! ids are generations only the submit knows); the workload gives them
//! no limit.

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::{Epoch, Note, TaskId, TaskLimit, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Checks every limit over `history`.
pub fn check(history: &History, out: &mut Violations) {
    check_counting(history, out);
}

/// Limited tasks submitted, due at once, while their limit already had
/// `concurrency_max` runs live: each had to wait for a place, so a run
/// with some is one whose limits were put to the test.
pub fn held_back(history: &History) -> u64 {
    check_counting(history, &mut Violations::new(0))
}

/// [`check`], answering [`held_back`].
fn check_counting(history: &History, out: &mut Violations) -> u64 {
    let mut limit_of: BTreeMap<TaskId, &TaskLimit> = BTreeMap::new();
    for r in &history.records {
        if let HistoryEvent::Submitted {
            task,
            content: cohort_core::Task {
                limit: Some(limit), ..
            },
        } = &r.event
        {
            limit_of.insert(*task, limit);
        }
    }
    if limit_of.is_empty() {
        return 0;
    }
    let mut held_back = 0;
    // Per limit: the assignments live now, and every start's stamp.
    let mut live: BTreeMap<&TaskLimit, BTreeSet<(TaskId, Epoch)>> = BTreeMap::new();
    let mut starts: BTreeMap<&TaskLimit, Vec<(Time, TaskId, Epoch)>> = BTreeMap::new();
    let mut seen_assigned: BTreeSet<(TaskId, Epoch)> = BTreeSet::new();
    let mut ended: BTreeSet<(TaskId, Epoch)> = BTreeSet::new();
    for r in &history.records {
        let (note, node) = match &r.event {
            HistoryEvent::Noted { note, node } => (note, node),
            HistoryEvent::Submitted { task, content } if content.not_before <= r.at => {
                if let Some(limit) = limit_of.get(task).copied() {
                    let running = live.get(limit).map_or(0, |l| l.len());
                    if limit.concurrency_max > 0 && running >= limit.concurrency_max as usize {
                        held_back += 1;
                    }
                }
                continue;
            }
            _ => continue,
        };
        match note {
            Note::Assigned {
                task, epoch, at, ..
            } => {
                let Some(limit) = limit_of.get(task).copied() else {
                    continue;
                };
                if !seen_assigned.insert((*task, *epoch)) || ended.contains(&(*task, *epoch)) {
                    continue;
                }
                let running = live.entry(limit).or_default();
                running.insert((*task, *epoch));
                if limit.concurrency_max > 0 && running.len() > limit.concurrency_max as usize {
                    out.push(
                        Guarantee::Limits,
                        r.at,
                        format!(
                            "{} runs of limit key {:?} live at once (concurrency_max {}) when {node} \
                             noted {task:?} epoch {} assigned: {:?}",
                            running.len(),
                            limit.key,
                            limit.concurrency_max,
                            epoch.0,
                            running
                        ),
                    );
                }
                starts.entry(limit).or_default().push((*at, *task, *epoch));
            }
            Note::Superseded { task, epoch, .. } => {
                if !ended.insert((*task, *epoch)) {
                    continue;
                }
                if let Some(limit) = limit_of.get(task).copied() {
                    if let Some(running) = live.get_mut(limit) {
                        running.remove(&(*task, *epoch));
                    }
                }
            }
            Note::Decided { task, .. } => {
                let Some(limit) = limit_of.get(task).copied() else {
                    continue;
                };
                if let Some(running) = live.get_mut(limit) {
                    // At most one assignment of a task is live; a decision
                    // ends it.
                    let of_task: Vec<(TaskId, Epoch)> = running
                        .range((*task, Epoch(0))..=(*task, Epoch(u64::MAX)))
                        .copied()
                        .collect();
                    for a in of_task {
                        running.remove(&a);
                        ended.insert(a);
                    }
                }
            }
            Note::Heartbeat { .. } | Note::Purged { .. } => {}
        }
    }
    for (limit, mut stamps) in starts {
        if limit.rate_max == 0 {
            continue;
        }
        let window = Duration::from_millis(limit.rate_window_ms);
        stamps.sort();
        // For each start, the starts stamped in the window opening at it.
        let mut end = 0;
        for (i, (from, _, _)) in stamps.iter().enumerate() {
            while end < stamps.len() && stamps[end].0 < *from + window {
                end += 1;
            }
            let inside = end - i;
            if inside > limit.rate_max as usize {
                let (last, task, epoch) = stamps[end - 1];
                out.push(
                    Guarantee::Limits,
                    last,
                    format!(
                        "{inside} starts of limit key {:?} stamped within {} ms from {from} \
                         (rate_max {}), the last {task:?} epoch {}",
                        limit.key, limit.rate_window_ms, limit.rate_max, epoch.0
                    ),
                );
                break;
            }
        }
    }
    held_back
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;
    use cohort_core::{NodeId, SupersedeReason, TaskState};

    fn limit(concurrency_max: u32, rate_max: u32) -> TaskLimit {
        TaskLimit {
            key: "tenant".into(),
            concurrency_max,
            rate_max,
            rate_window_ms: 100,
        }
    }

    /// Ids that differ in the bits a task id shows.
    fn id_of(n: u128) -> TaskId {
        TaskId(n << 96)
    }

    fn submitted(h: &mut History, id: u128, limit: Option<TaskLimit>) {
        submitted_at(h, 0, id, limit)
    }

    fn submitted_at(h: &mut History, ms: u64, id: u128, limit: Option<TaskLimit>) {
        h.push(
            t(ms),
            HistoryEvent::Submitted {
                task: id_of(id),
                content: cohort_core::Task { limit, ..task() },
            },
        );
    }

    fn assigned_at(id: u128, epoch: u64, stamp_ms: u64) -> Note {
        Note::Assigned {
            task: id_of(id),
            epoch: Epoch(epoch),
            node: NodeId(2),
            at: t(stamp_ms),
        }
    }

    fn decided(id: u128) -> Note {
        Note::Decided {
            task: id_of(id),
            state: TaskState::Cancelled,
        }
    }

    fn run(h: &History) -> Vec<String> {
        let mut v = Violations::new(10);
        check(h, &mut v);
        v.into_kept().into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn an_end_frees_a_place_and_only_the_first_note_of_each_fact_counts() {
        let mut h = History::new();
        for id in 1..=3 {
            submitted(&mut h, id, Some(limit(1, 0)));
        }
        // Several nodes note each fact; an end and the next start share a
        // moment, the end noted first (log order).
        for node in [1, 2] {
            note(&mut h, 10, node, assigned_at(1, 1, 10));
        }
        note(&mut h, 20, 1, decided(1));
        note(&mut h, 20, 1, assigned_at(2, 1, 20));
        note(&mut h, 21, 3, decided(1));
        note(
            &mut h,
            30,
            1,
            Note::Superseded {
                task: id_of(2),
                epoch: Epoch(1),
                reason: SupersedeReason::RunnerDeclaredDead,
            },
        );
        note(&mut h, 30, 1, assigned_at(3, 1, 30));
        note(&mut h, 31, 2, assigned_at(2, 2, 31));
        assert_eq!(run(&h).len(), 1, "{:?}", run(&h));
        assert!(run(&h)[0].contains("2 runs of limit key \"tenant\" live at once"));
    }

    #[test]
    fn two_live_runs_over_a_concurrency_limit_of_one_are_a_violation() {
        let mut h = History::new();
        submitted(&mut h, 1, Some(limit(1, 0)));
        submitted(&mut h, 2, Some(limit(1, 0)));
        // An unlimited task does not count.
        submitted(&mut h, 3, None);
        note(&mut h, 10, 1, assigned_at(1, 1, 10));
        note(&mut h, 11, 1, assigned_at(3, 1, 11));
        assert!(run(&h).is_empty());
        assert_eq!(held_back(&h), 0, "both submitted before any run");
        submitted_at(&mut h, 11, 4, Some(limit(1, 0)));
        assert_eq!(held_back(&h), 1, "submitted while task 1 ran");
        note(&mut h, 12, 1, assigned_at(2, 1, 12));
        let found = run(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("Limits at 12.000ms"), "{found:?}");
    }

    #[test]
    fn starts_are_counted_in_every_window_by_their_stamps() {
        let mut h = History::new();
        for id in 1..=4 {
            submitted(&mut h, id, Some(limit(0, 2)));
        }
        // 2 per 100 ms: 0, 50 | 100, 150 is kept (100 is outside the
        // window opening at 0)...
        for (id, stamp) in [(1, 0), (2, 50), (3, 100), (4, 150)] {
            note(&mut h, stamp + 5, 1, assigned_at(id, 1, stamp));
            note(&mut h, stamp + 6, 1, decided(id));
        }
        assert!(run(&h).is_empty(), "{:?}", run(&h));
        // ...a third in [50, 150) is not, whenever it was noted.
        submitted_at(&mut h, 300, 5, Some(limit(0, 2)));
        note(&mut h, 400, 1, assigned_at(5, 1, 149));
        let found = run(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("3 starts of limit key"), "{found:?}");
    }

    #[test]
    fn a_start_noted_again_after_its_end_is_not_a_new_run() {
        let mut h = History::new();
        submitted(&mut h, 1, Some(limit(1, 1)));
        submitted(&mut h, 2, Some(limit(1, 1)));
        note(&mut h, 10, 1, assigned_at(1, 1, 10));
        note(&mut h, 20, 1, decided(1));
        note(&mut h, 200, 1, assigned_at(2, 1, 200));
        // A node that replays its log after a restart notes old facts again.
        note(&mut h, 210, 3, assigned_at(1, 1, 10));
        note(&mut h, 210, 3, decided(1));
        assert!(run(&h).is_empty(), "{:?}", run(&h));
    }
}
