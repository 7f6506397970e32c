//! Unique tasks by a dedupe key: at most one task of a key is pending or
//! running at any moment.
//!
//! The tasks of a key `K` are its generations `id(K, 0), id(K, 1), ...`
//! ([`cohort_core::dedupe`]). What the submit machine promises is stronger
//! than uniqueness, and easier to see in a history: a later generation `h`
//! never exists while an earlier one `g` is still not final. The history
//! gives, for each task, sound bounds on both:
//!
//! - `h` existed by time `x` if something shows it at `x`: an `Accepted`
//!   submit, a node's note about it (assigned, superseded, decided), a
//!   handler run, or a read that found it (at the answer).
//! - `g` was not final at some moment at or after `y` if a linearizable read
//!   sent at `y` answered a pending or running state (the read took effect
//!   between its sending and its answer, and a final state never reverts).
//!
//! `x < y` for some `g < h` of one key is a violation: at the read's moment
//! `h` existed and `g` was still alive. The converse is not complete (a
//! violation no read observed goes unseen), as for every history checker.

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::dedupe::DedupeKey;
use cohort_core::{Note, TaskId, Time};
use std::collections::BTreeMap;

/// Generations looked at per submit under a key: a submit creates at most
/// one task of its own, a few more only when retried from scratch after an
/// unknown outcome.
const GENERATIONS_PER_SUBMIT: u64 = 4;

/// Checks uniqueness of dedupe keys over `history`.
pub fn check(history: &History, out: &mut Violations) {
    let mut submits: BTreeMap<DedupeKey, u64> = BTreeMap::new();
    for r in &history.records {
        if let HistoryEvent::UniqueSubmitted { key, .. } = &r.event {
            *submits.entry(key.clone()).or_insert(0) += 1;
        }
    }
    if submits.is_empty() {
        return;
    }
    // Which key and generation each task id is.
    let mut generation_of: BTreeMap<TaskId, (usize, u64)> = BTreeMap::new();
    let keys: Vec<(DedupeKey, u64)> = submits.into_iter().collect();
    for (k, (key, n)) in keys.iter().enumerate() {
        for g in 0..=n.saturating_mul(GENERATIONS_PER_SUBMIT) {
            generation_of.insert(key.task_id(g), (k, g));
        }
    }
    // Per key and generation: existed by, alive at or after (the read's
    // sending, and its answer for the report).
    let mut existed_by: BTreeMap<(usize, u64), Time> = BTreeMap::new();
    let mut alive_after: BTreeMap<(usize, u64), (Time, Time)> = BTreeMap::new();
    let mut seen = |task: &TaskId, at: Time| {
        if let Some(kg) = generation_of.get(task) {
            existed_by.entry(*kg).or_insert(at);
        }
    };
    for r in &history.records {
        match &r.event {
            HistoryEvent::Acked { task, .. } | HistoryEvent::Executed { task, .. } => {
                seen(task, r.at)
            }
            HistoryEvent::Noted { note, .. } => match note {
                Note::Assigned { task, .. }
                | Note::Superseded { task, .. }
                | Note::Decided { task, .. }
                | Note::Heartbeat { task, .. } => seen(task, r.at),
                Note::Purged { .. } => {}
            },
            HistoryEvent::Read {
                task,
                sent_at,
                result: Ok(state),
                ..
            } => {
                seen(task, r.at);
                if let Some(kg) = generation_of.get(task) {
                    if !state.is_final() {
                        let latest = alive_after.entry(*kg).or_insert((*sent_at, r.at));
                        if *sent_at > latest.0 {
                            *latest = (*sent_at, r.at);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for ((k, g), (sent_at, answered_at)) in &alive_after {
        // The earliest sign of any later generation of the key.
        let later = existed_by
            .range((*k, g + 1)..=(*k, u64::MAX))
            .min_by_key(|(_, at)| **at);
        if let Some(((_, h), at)) = later {
            if at < sent_at {
                let key = String::from_utf8_lossy(keys[*k].0.as_bytes());
                out.push(
                    Guarantee::Unique,
                    *answered_at,
                    format!(
                        "dedupe key {key:?}: generation {h} ({:?}) existed by {at}, but \
                         generation {g} ({:?}) read not final by a read sent at {sent_at}",
                        keys[*k].0.task_id(*h),
                        keys[*k].0.task_id(*g),
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
    use cohort_core::{NodeId, TaskState};

    fn submitted(h: &mut History, ms: u64, key: &DedupeKey) {
        h.push(
            t(ms),
            HistoryEvent::UniqueSubmitted {
                key: key.clone(),
                content: task(),
            },
        );
    }

    fn read(h: &mut History, sent: u64, ms: u64, id: TaskId, state: TaskState) {
        h.push(
            t(ms),
            HistoryEvent::Read {
                task: id,
                node: NodeId(1),
                sent_at: t(sent),
                result: Ok(state),
            },
        );
    }

    fn acked(h: &mut History, ms: u64, id: TaskId) {
        h.push(
            t(ms),
            HistoryEvent::Acked {
                task: id,
                node: NodeId(1),
                content: task(),
            },
        );
    }

    fn checked(h: &History) -> Vec<String> {
        let mut v = Violations::new(10);
        check(h, &mut v);
        v.into_kept().into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_later_generation_created_while_an_earlier_one_is_alive_is_a_violation() {
        let k = DedupeKey::new(b"k").unwrap();
        let mut h = History::new();
        submitted(&mut h, 0, &k);
        submitted(&mut h, 1, &k);
        acked(&mut h, 10, k.task_id(0));
        acked(&mut h, 20, k.task_id(1));
        // Generation 0 still pending at a read sent after 1 existed.
        read(&mut h, 25, 30, k.task_id(0), TaskState::Pending);
        let found = checked(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("Unique at"), "{found:?}");
        assert!(found[0].contains("generation 1"), "{found:?}");
    }

    #[test]
    fn generations_that_follow_each_other_pass() {
        let k = DedupeKey::new(b"k").unwrap();
        let other = DedupeKey::new(b"other").unwrap();
        let mut h = History::new();
        submitted(&mut h, 0, &k);
        submitted(&mut h, 1, &k);
        submitted(&mut h, 1, &other);
        acked(&mut h, 10, k.task_id(0));
        read(
            &mut h,
            12,
            14,
            k.task_id(0),
            TaskState::Running {
                node: NodeId(2),
                epoch: cohort_core::Epoch(1),
            },
        );
        read(&mut h, 15, 16, k.task_id(0), TaskState::Cancelled);
        acked(&mut h, 20, k.task_id(1));
        read(&mut h, 21, 22, k.task_id(1), TaskState::Pending);
        // Another key's live task at the same time is no violation.
        acked(&mut h, 22, other.task_id(0));
        read(&mut h, 23, 24, other.task_id(0), TaskState::Pending);
        // A read sent before the later generation existed proves nothing,
        // even if answered after.
        read(&mut h, 19, 25, k.task_id(0), TaskState::Pending);
        assert_eq!(checked(&h), Vec::<String>::new());
    }

    #[test]
    fn a_note_about_a_later_generation_counts_as_its_existence() {
        let k = DedupeKey::new(b"k").unwrap();
        let mut h = History::new();
        submitted(&mut h, 0, &k);
        note(
            &mut h,
            5,
            3,
            Note::Assigned {
                task: k.task_id(2),
                epoch: cohort_core::Epoch(1),
                node: NodeId(3),
                at: Time::ZERO,
            },
        );
        read(&mut h, 6, 7, k.task_id(1), TaskState::Pending);
        assert_eq!(checked(&h).len(), 1);
    }
}
