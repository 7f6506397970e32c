//! Schedules: exactly one firing per tick, none missed once healed.
//!
//! At most one firing per tick holds by construction (a tick's firing has
//! one id, so two would be one task with two outcomes, which [`super::g2`]
//! catches). What is checked here is the other half: every tick from the
//! schedule's first to the last one the run lasted long enough after
//! healing for (`ScheduleChecked::checked_until_ms`) has a firing some
//! node decided final, or read final. Its catch-up window is longer than
//! the run, so no tick may be missed, whatever the faults did.

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::schedule::IdTag;
use cohort_core::{Note, TaskId, Time};
use std::collections::BTreeSet;

/// Checks every `ScheduleChecked` of `history`.
pub fn check(history: &History, out: &mut Violations) {
    let mut finals: BTreeSet<TaskId> = BTreeSet::new();
    let mut checked = Vec::new();
    for r in &history.records {
        match &r.event {
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
            HistoryEvent::ScheduleChecked {
                schedule,
                first_tick_ms,
                checked_until_ms,
            } => checked.push((schedule, *first_tick_ms, *checked_until_ms, r.at)),
            _ => {}
        }
    }
    for (schedule, first, until, at) in checked {
        let mut tick = Some(first);
        let mut missed = Vec::new();
        while let Some(t) = tick.filter(|t| *t <= until) {
            if !finals.contains(&schedule.name.task_id(IdTag::Fire(t))) {
                missed.push(t);
            }
            tick = schedule.spec.next_after(t);
        }
        if !missed.is_empty() {
            let shown: Vec<String> = missed.iter().take(10).map(|t| format!("{t}ms")).collect();
            let detail = format!(
                "schedule {}: {} ticks up to {until}ms never fired or never finished after healing: {}",
                schedule.name.as_str(),
                missed.len(),
                shown.join(", ")
            );
            out.push(Guarantee::Schedule, at.max(Time::ZERO), detail);
        }
    }
}
