//! This mode's own invariants over a whole run, for simulators and tests.
//!
//! [`LeaderlessInvariants::check`] takes every node (`None` while crashed)
//! after each event. Wire it into `cohort-sim` with a closure:
//! `|now, nodes| checker.check(now, nodes)`.

use crate::record::TaskValue;
use crate::LeaderlessNode;
use cohort_core::{NodeId, TaskId, Time};
use std::collections::BTreeMap;

/// The stated bound: after the simulator heals everything, SWIM membership
/// converges (every node sees every node live) within this long.
pub const CONVERGE_WITHIN_MS: u64 = 5_000;

/// Every record's event history agrees with its state and kept its
/// task's schedule and retry policy ([`cohort_core::TaskEvents::check_against`],
/// [`cohort_core::TaskEvents::check_policy`]); one value per Paxos
/// instance, across every replica, over the whole run
/// (a replica holding version `k` holds the value chosen in instance
/// `k - 1`; a task's new replicas after a move hold the same values as
/// its old ones); one ring per ring epoch across every node; membership
/// converged from `converged_by` on. Instances are told apart by their
/// task's body as well: a permit record retired and purged is created
/// again under its id with another body, and counts its versions anew.
#[derive(Debug)]
pub struct LeaderlessInvariants {
    chosen: BTreeMap<(TaskId, u64, u64), TaskValue>,
    rings: BTreeMap<u64, Vec<NodeId>>,
    converged_by: Time,
    checks: u64,
}

/// The records scan is linear in every replica's records; it runs on every
/// `RECORDS_SCAN_EVERY`th check. A value is overwritten only by a later
/// version chosen through another Paxos round, which takes several events,
/// and two different final outcomes are caught on every event by the
/// simulator's G2 checker.
pub const RECORDS_SCAN_EVERY: u64 = 8;

impl LeaderlessInvariants {
    /// A checker for a run whose faults heal at `heal_ms` (the simulator's
    /// `safety_ms`).
    pub fn new(heal_ms: u64) -> LeaderlessInvariants {
        LeaderlessInvariants {
            chosen: BTreeMap::new(),
            rings: BTreeMap::new(),
            converged_by: Time::from_millis(heal_ms + CONVERGE_WITHIN_MS),
            checks: 0,
        }
    }

    /// Checks the cluster at `now`; `nodes[i]` is `None` while node `i` is down.
    pub fn check(&mut self, now: Time, nodes: &[Option<&LeaderlessNode>]) -> Result<(), String> {
        if now >= self.converged_by {
            let all: Vec<NodeId> = (1..=nodes.len() as u64).map(NodeId).collect();
            for node in nodes.iter().flatten() {
                if node.live() != all {
                    return Err(format!(
                        "membership not converged {CONVERGE_WITHIN_MS} ms after healing: {} sees {:?}",
                        cohort_core::Node::id(*node),
                        node.live()
                    ));
                }
            }
        }
        for node in nodes.iter().flatten() {
            let ring = node.ring();
            match self.rings.get(&ring.epoch) {
                Some(m) if *m != ring.members => {
                    return Err(format!(
                        "two rings chosen at epoch {}: {m:?} and {:?} (at {})",
                        ring.epoch,
                        ring.members,
                        cohort_core::Node::id(*node)
                    ))
                }
                Some(_) => {}
                None => {
                    self.rings.insert(ring.epoch, ring.members.clone());
                }
            }
        }
        self.checks += 1;
        if !self.checks.is_multiple_of(RECORDS_SCAN_EVERY) {
            return Ok(());
        }
        for node in nodes.iter().flatten() {
            // Version 0 is a creation, not a Paxos choice: a record written
            // under an older ring that the creation fence left dead can
            // differ there; it never reaches version 1, where two live
            // records of a task would show.
            for (task, _, value) in node.records() {
                let body = node.task(task).expect("a record has its task");
                value
                    .history
                    .check_against(&value.state)
                    .and_then(|()| value.history.check_policy(body))
                    .map_err(|e| format!("{task:?} at {}: {e}", cohort_core::Node::id(*node)))?;
            }
            for (task, version, value) in node.records().filter(|r| r.1 > 0) {
                let body = body_digest(node.task(task).expect("a record has its task"));
                match self.chosen.get(&(task, body, version)) {
                    Some(v) if v != value => {
                        return Err(format!(
                            "two values chosen for {task:?} version {version}: {v:?} and {value:?} (at {})",
                            cohort_core::Node::id(*node)
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.chosen.insert((task, body, version), value.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

/// A digest of a task's body.
fn body_digest(task: &cohort_core::Task) -> u64 {
    crate::retention::fnv1a(&cohort_core::encode(task))
}
