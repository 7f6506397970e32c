//! Identifiers: nodes, tasks and fencing epochs.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A node of the cluster. Stable across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A task, 128 bits. A client may choose it (an idempotent submit retries
/// with the same id); otherwise the driver generates one with [`TaskId::random`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u128);

impl TaskId {
    /// A fresh id drawn from `rng`.
    pub fn random(rng: &mut impl RngCore) -> TaskId {
        let hi = u128::from(rng.next_u64());
        let lo = u128::from(rng.next_u64());
        TaskId((hi << 64) | lo)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{:08x}", (self.0 >> 96) as u32)
    }
}

impl std::str::FromStr for TaskId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(TaskId)
    }
}

/// A fencing token for one assignment of a task to a runner. Epochs of a task
/// only grow: a result carrying an epoch older than the current assignment is
/// rejected (G3). Handlers receive it so they can fence their own effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch before any assignment.
    pub const ZERO: Epoch = Epoch(0);

    /// The next epoch. Panics on overflow rather than wrapping, because a
    /// wrapped fencing token would let a stale runner win.
    #[must_use]
    pub fn next(self) -> Epoch {
        Epoch(self.0.checked_add(1).expect("epoch overflow"))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_round_trips_through_its_display_form() {
        let id = TaskId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
    }

    #[test]
    fn epochs_only_grow() {
        assert!(Epoch::ZERO.next() > Epoch::ZERO);
    }
}
