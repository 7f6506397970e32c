//! The records a node still has work to look at (state not final), kept in
//! the order claims take them: higher priority first, then by id.
//!
//! Every tick walks them (`claim_work`); sorting them there each time cost
//! O(n log n) record lookups per tick, which with a backlog of 100,000
//! pending tasks took most of a node's CPU and starved completions.

use cohort_core::TaskId;
use std::collections::{BTreeMap, BTreeSet};

/// Ids of active records, by claim rank ([`cohort_core::Task::rank`]).
#[derive(Clone, Debug, Default)]
pub struct ActiveSet {
    rank_of: BTreeMap<TaskId, u8>,
    in_order: BTreeSet<(u8, TaskId)>,
}

impl ActiveSet {
    /// Adds `id` with `rank`, or moves it there.
    pub fn insert(&mut self, id: TaskId, rank: u8) {
        if let Some(before) = self.rank_of.insert(id, rank) {
            self.in_order.remove(&(before, id));
        }
        self.in_order.insert((rank, id));
    }

    /// Removes `id` if present.
    pub fn remove(&mut self, id: TaskId) {
        if let Some(rank) = self.rank_of.remove(&id) {
            self.in_order.remove(&(rank, id));
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.rank_of.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.rank_of.is_empty()
    }

    /// In claim order: rank, then id.
    pub fn in_claim_order(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.in_order.iter().map(|(_, id)| *id)
    }

    /// In id order.
    pub fn ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.rank_of.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_order_is_rank_then_id_and_a_moved_or_removed_id_leaves_no_trace() {
        let mut a = ActiveSet::default();
        a.insert(TaskId(3), 127);
        a.insert(TaskId(1), 127);
        a.insert(TaskId(2), 10);
        a.insert(TaskId(4), 200);
        let order: Vec<u128> = a.in_claim_order().map(|t| t.0).collect();
        assert_eq!(order, vec![2, 1, 3, 4]);
        a.insert(TaskId(4), 0);
        a.remove(TaskId(1));
        a.remove(TaskId(9));
        let order: Vec<u128> = a.in_claim_order().map(|t| t.0).collect();
        assert_eq!(order, vec![4, 2, 3]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.ids().map(|t| t.0).collect::<Vec<_>>(), vec![2, 3, 4]);
    }
}
