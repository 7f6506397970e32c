//! Per-task single-decree Paxos, one instance per step of a task's life.
//!
//! A task's state is a sequence of versions. Version 0 (`Pending`, written
//! at submission) is fixed by the quorum write; instance `k` decides the
//! value of version `k + 1` from the value at version `k`, like a
//! compare-and-set (Cassandra's lightweight transactions). The acceptors are
//! the task's replicas; any node may propose.
//!
//! - Ballots are `(round, node)`, so two nodes never share one.
//! - Phase 1: `Prepare(k, ballot)` carries the chosen value at `k` (and the
//!   task's header) so a lagging acceptor catches up first; an acceptor that
//!   knows a later version answers `Ahead` with it.
//! - Phase 2: once a majority promised, the proposer must propose the value
//!   accepted under the highest ballot among the promises, if any, else its
//!   own. A majority of `Accepted` means the value is chosen; the proposer
//!   then sends `Learn` to every replica.
//!
//! Safety rests on the usual argument: an acceptor never accepts below its
//! promise, and every quorum of the same instance intersects, so a later
//! ballot finds and keeps any value that may have been chosen.

pub mod acceptor;
pub mod proposer;

use cohort_core::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A ballot: unique per proposing node *and boot*, ordered by round, then
/// node, then the node's boot generation. The generation matters: a node
/// restarted from its store has forgotten the rounds it used, and reusing
/// a ballot for a different value in the same instance would break Paxos
/// (found by the simulator: a crash between two proposals of one instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The round, starting at 1 for real ballots.
    pub round: u64,
    /// The proposer.
    pub node: NodeId,
    /// The proposer's boot generation (persisted, bumped at every boot).
    pub generation: u64,
}

impl Ballot {
    /// Below every real ballot: "nothing promised yet".
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
        generation: 0,
    };

    /// The ballot of `(node, generation)` in the round after `seen`'s.
    pub fn above(seen: Ballot, node: NodeId, generation: u64) -> Ballot {
        let b = Ballot {
            round: seen.round.checked_add(1).expect("ballot round overflow"),
            node,
            generation,
        };
        assert!(b > seen);
        b
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}.{}.g{}", self.round, self.node, self.generation)
    }
}

/// The size of a majority of `n` acceptors.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}
