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
//!
//! **The runner's ballot.** In the instance on top of a chosen
//! `Running { node, .. }` claimed by boot `g` of `node`, the ballot
//! `(0, node, g)` ([`Ballot::runners`]) belongs to that runner alone. It
//! is below every real ballot (rounds start at 1), so no value can have
//! been chosen below it: the runner may skip phase 1 and send its result
//! straight in `Accept` (Lamport's "ballot 0 needs no phase 1"). An
//! acceptor takes it only while it promised nothing in the instance, and
//! the runner proposes at most one value under it (a restarted runner has
//! another boot, so another ballot, which no acceptor takes). Any later
//! real ballot prepares as usual and keeps what it finds accepted.

pub mod acceptor;
pub mod proposer;

use crate::record::TaskValue;
use cohort_core::{NodeId, TaskState};
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

impl Ballot {
    /// The runner's ballot of the instance on top of `base`: round 0, the
    /// runner and the boot it claimed in, for a `Running` base; `None`
    /// otherwise (and for a base no real boot claimed). See the module
    /// docs: only that boot of the runner proposes under it, at most one
    /// value, without phase 1.
    pub fn runners(base: &TaskValue) -> Option<Ballot> {
        let TaskState::Running { node, .. } = base.state else {
            return None;
        };
        let b = Ballot {
            round: 0,
            node,
            generation: base.runner_boot,
        };
        (b > Ballot::ZERO).then_some(b)
    }

    /// Whether this is a runner's ballot (round 0), taken without phase 1.
    pub fn is_runners(&self) -> bool {
        self.round == 0 && *self > Ballot::ZERO
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
