//! The records a node still has work to look at (state not final), kept in
//! the order claims take them: higher priority first, then by id; the
//! running ones also apart, since every tick looks at all of those and at
//! a bounded part of the pending ones (`claim_scan_per_tick_max`).
//!
//! Sorting them in `claim_work` each tick cost O(n log n) record lookups,
//! and walking them all O(n): with a backlog of 100,000 pending tasks that
//! took most of a node's CPU and starved completions.

use crate::record::Record;
use cohort_core::{TaskId, TaskState};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Where a record stands in the claim order: its rank
/// ([`cohort_core::Task::rank`]), then its id.
pub type ClaimKey = (u8, TaskId);

/// Ids of active records, by claim key, the running ones also apart.
#[derive(Clone, Debug, Default)]
pub struct ActiveSet {
    /// Each id's rank and whether it runs.
    of: BTreeMap<TaskId, (u8, bool)>,
    in_order: BTreeSet<ClaimKey>,
    running: BTreeSet<TaskId>,
}

impl ActiveSet {
    /// Adds `id` with `rank`, or updates it.
    pub fn insert(&mut self, id: TaskId, rank: u8, running: bool) {
        self.remove(id);
        self.of.insert(id, (rank, running));
        self.in_order.insert((rank, id));
        if running {
            self.running.insert(id);
        }
    }

    /// Adds `id` as `rec` stands (its task's rank, whether it runs), or
    /// updates it.
    pub fn insert_record(&mut self, id: TaskId, rec: &Record) {
        let running = matches!(rec.value.state, TaskState::Running { .. });
        self.insert(id, rec.header.task.rank(), running);
    }

    /// Removes `id` if present.
    pub fn remove(&mut self, id: TaskId) {
        if let Some((rank, _)) = self.of.remove(&id) {
            self.in_order.remove(&(rank, id));
            self.running.remove(&id);
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.of.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }

    /// The running ones, by id.
    pub fn running(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.running.iter().copied()
    }

    /// The ones not running, in claim order, strictly after `after` (from
    /// the head when `None`).
    pub fn pending_after(&self, after: Option<ClaimKey>) -> impl Iterator<Item = ClaimKey> + '_ {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.in_order
            .range((from, Bound::Unbounded))
            .copied()
            .filter(|(_, id)| !self.running.contains(id))
    }

    /// The claim key of `id`, if present.
    pub fn key_of(&self, id: TaskId) -> Option<ClaimKey> {
        self.of.get(&id).map(|(rank, _)| (*rank, id))
    }

    /// In id order.
    pub fn ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.of.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(keys: impl Iterator<Item = ClaimKey>) -> Vec<u128> {
        keys.map(|(_, t)| t.0).collect()
    }

    #[test]
    fn pending_in_claim_order_running_apart_and_an_update_or_removal_leaves_no_trace() {
        let mut a = ActiveSet::default();
        a.insert(TaskId(3), 127, false);
        a.insert(TaskId(1), 127, false);
        a.insert(TaskId(2), 10, false);
        a.insert(TaskId(4), 200, true);
        assert_eq!(ids(a.pending_after(None)), vec![2, 1, 3]);
        assert_eq!(a.running().map(|t| t.0).collect::<Vec<_>>(), vec![4]);
        assert_eq!(ids(a.pending_after(Some((10, TaskId(2))))), vec![1, 3]);
        // Task 4 goes back to pending with another rank; 1 ends.
        a.insert(TaskId(4), 0, false);
        a.remove(TaskId(1));
        a.remove(TaskId(9));
        assert_eq!(ids(a.pending_after(None)), vec![4, 2, 3]);
        assert_eq!(a.running().count(), 0);
        assert_eq!(a.len(), 3);
        assert_eq!(a.key_of(TaskId(4)), Some((0, TaskId(4))));
        assert_eq!(a.ids().map(|t| t.0).collect::<Vec<_>>(), vec![2, 3, 4]);
    }
}
