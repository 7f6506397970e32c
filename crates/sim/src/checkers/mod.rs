//! Checkers over a recorded [`History`], one per guarantee of DESIGN.md,
//! mode-agnostic: they read only what clients saw and what nodes stated.
//!
//! - [`g1`]: no acknowledged task lost.
//! - [`g2`]: one outcome per task, and a final state never reverts.
//! - [`g3`]: fencing: executions match assignments, epochs grow, accepted
//!   results come from the latest epoch and a real execution.
//! - [`g4`]: liveness after healing.
//! - [`g5`]: linearizable reads: an assignment epoch once read never reads
//!   older afterwards.
//! - [`policy`]: schedule and retry policy: nothing starts before its
//!   `not_before`; a non-retryable failure is never retried.
//! - [`unique`]: at most one pending-or-running task per dedupe key.
//! - [`schedule`]: every tick of a schedule fired (none missed once healed).
//! - [`limits`]: concurrency and rate limits never exceeded.

use crate::history::History;
use cohort_core::Time;
use std::collections::BTreeMap;
use std::fmt;

pub mod g1;
pub mod g2;
pub mod g3;
pub mod g4;
pub mod g5;
pub mod limits;
pub mod policy;
pub mod schedule;
pub mod unique;

/// Which guarantee a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Guarantee {
    /// Durability: an acknowledged task was lost.
    G1,
    /// One outcome: two different final states, or a final state reverted.
    G2,
    /// Fencing: an execution or result outside the epoch discipline.
    G3,
    /// Liveness: something did not finish after healing.
    G4,
    /// Linearizable reads: a read older than one already answered.
    G5,
    /// Schedule and retry policy: an execution before the task's
    /// `not_before`, or a non-retryable failure retried.
    Policy,
    /// Unique tasks: two tasks of one dedupe key were alive together.
    Unique,
    /// Schedules: a tick of a schedule never fired once healed.
    Schedule,
    /// Limits: more runs of a limit live at once than its
    /// `concurrency_max`, or more starts in one window than its `rate_max`.
    Limits,
    /// A mode-specific invariant ([`crate::Invariants`]) or a broken contract.
    Invariant,
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Guarantee::G1 => "G1",
            Guarantee::G2 => "G2",
            Guarantee::G3 => "G3",
            Guarantee::G4 => "G4",
            Guarantee::G5 => "G5",
            Guarantee::Policy => "Policy",
            Guarantee::Unique => "Unique",
            Guarantee::Schedule => "Schedule",
            Guarantee::Limits => "Limits",
            Guarantee::Invariant => "Invariant",
        })
    }
}

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee.
    pub guarantee: Guarantee,
    /// When it was observed.
    pub at: Time,
    /// What happened, naming tasks, nodes and times.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.guarantee, self.at, self.detail)
    }
}

/// Collects violations up to a limit per guarantee (so a flood of one kind
/// cannot hide another); the count stays exact past it.
#[derive(Clone, Debug)]
pub struct Violations {
    kept: Vec<Violation>,
    kept_per: BTreeMap<Guarantee, usize>,
    count: u64,
    max: usize,
}

impl Violations {
    /// Keeps at most `max` violations of each guarantee.
    pub fn new(max: usize) -> Violations {
        Violations {
            kept: Vec::new(),
            kept_per: BTreeMap::new(),
            count: 0,
            max,
        }
    }

    /// Records one violation.
    pub fn push(&mut self, guarantee: Guarantee, at: Time, detail: String) {
        self.count += 1;
        let kept = self.kept_per.entry(guarantee).or_insert(0);
        if *kept < self.max {
            *kept += 1;
            self.kept.push(Violation {
                guarantee,
                at,
                detail,
            });
        }
    }

    /// How many were recorded, kept or not.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The kept violations, in the order recorded.
    pub fn kept(&self) -> &[Violation] {
        &self.kept
    }

    /// The kept violations, earliest first (ties in the order recorded).
    pub fn into_kept(mut self) -> Vec<Violation> {
        self.kept.sort_by_key(|v| v.at);
        self.kept
    }
}

/// Runs every history checker: G1–G3 and G5 over the whole history, and G4 as of
/// `end` (the end of the liveness phase) when `liveness_ended` says the
/// run got there.
pub fn check_all(history: &History, end: Time, liveness_ended: bool, out: &mut Violations) {
    g1::check(history, out);
    g2::check(history, out);
    g3::check(history, out);
    g5::check(history, out);
    policy::check(history, out);
    unique::check(history, out);
    schedule::check(history, out);
    limits::check(history, out);
    if liveness_ended {
        g4::check(history, end, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_capped_counted_and_handed_back_earliest_first() {
        let mut v = Violations::new(2);
        v.push(Guarantee::G4, Time::from_millis(9), "late".into());
        v.push(Guarantee::G1, Time::from_millis(3), "early".into());
        v.push(Guarantee::G1, Time::from_millis(5), "second".into());
        v.push(
            Guarantee::G1,
            Time::from_millis(1),
            "third G1: dropped".into(),
        );
        v.push(
            Guarantee::G2,
            Time::from_millis(2),
            "a G2 is still kept".into(),
        );
        assert_eq!(v.count(), 5);
        let kept = v.into_kept();
        let details: Vec<&str> = kept.iter().map(|v| v.detail.as_str()).collect();
        assert_eq!(details, ["a G2 is still kept", "early", "second", "late"]);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::history::{History, HistoryEvent};
    use cohort_core::{ClientError, Epoch, NodeId, Note, Task, TaskId, TaskState, Time};

    pub fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }
    pub const T: TaskId = TaskId(0xabcd << 96);
    pub fn task() -> Task {
        Task {
            kind: "sleep".into(),
            payload: vec![1],
            timeout_ms: 100,
            max_attempts: 2,
            not_before: cohort_core::Time::ZERO,
            retry: cohort_core::RetryPolicy::default(),
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        }
    }
    pub fn acked(h: &mut History, ms: u64, node: u64) {
        h.push(
            t(ms),
            HistoryEvent::Acked {
                task: T,
                node: NodeId(node),
                content: task(),
            },
        );
    }
    pub fn read(h: &mut History, sent: u64, ms: u64, node: u64, r: Result<TaskState, ClientError>) {
        h.push(
            t(ms),
            HistoryEvent::Read {
                task: T,
                node: NodeId(node),
                sent_at: t(sent),
                result: r,
            },
        );
    }
    pub fn note(h: &mut History, ms: u64, node: u64, note: Note) {
        h.push(
            t(ms),
            HistoryEvent::Noted {
                node: NodeId(node),
                note,
            },
        );
    }
    pub fn assigned(epoch: u64, node: u64) -> Note {
        Note::Assigned {
            task: T,
            epoch: Epoch(epoch),
            node: NodeId(node),
            at: Time::ZERO,
        }
    }
    pub fn succeeded(result: &[u8], node: u64, epoch: u64) -> TaskState {
        TaskState::Succeeded {
            result: result.to_vec(),
            node: NodeId(node),
            epoch: Epoch(epoch),
        }
    }
}
