//! The leaderless mode in the project's simulator (`cohort-sim`): its G1–G4
//! checkers over the recorded history, plus this mode's own invariants,
//! checked after every event: at most one value chosen per Paxos instance
//! (every replica that holds version `k` of a task holds the same value),
//! and, from [`CONVERGE_WITHIN_MS`] after healing on, every node sees every
//! node live.
//!
//! More seeds: `SEEDS=20000 NODES=5 cargo test --release -p cohort-leaderless --test simulator`.

use cohort_core::{NodeId, TaskId, Time};
use cohort_leaderless::record::TaskValue;
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_sim::{run, FaultKinds, Invariants, Report, SimConfig};
use std::collections::BTreeMap;

/// The stated bound: after the simulator heals everything, SWIM membership
/// converges (every node sees every node live) within this long.
const CONVERGE_WITHIN_MS: u64 = 5_000;

/// One value per Paxos instance, across every replica, over the whole run
/// (a replica holding version `k` holds the value chosen in instance
/// `k - 1`); membership converged from `converged_by` on.
struct LeaderlessInvariants {
    chosen: BTreeMap<(TaskId, u64), TaskValue>,
    converged_by: Time,
}

impl LeaderlessInvariants {
    fn new(c: &SimConfig) -> LeaderlessInvariants {
        LeaderlessInvariants {
            chosen: BTreeMap::new(),
            converged_by: Time::from_millis(c.safety_ms + CONVERGE_WITHIN_MS),
        }
    }
}

impl Invariants<LeaderlessNode> for LeaderlessInvariants {
    fn check(&mut self, now: Time, nodes: &[Option<&LeaderlessNode>]) -> Result<(), String> {
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
            for (task, version, value) in node.records() {
                match self.chosen.get(&(task, version)) {
                    Some(v) if v != value => {
                        return Err(format!(
                            "two values chosen for {task:?} version {version}: {v:?} and {value:?} (at {})",
                            cohort_core::Node::id(*node)
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.chosen.insert((task, version), value.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

fn sim(seed: u64, nodes: usize, faults: FaultKinds) -> Report {
    let mut c = SimConfig::new(seed, nodes);
    c.faults = faults;
    c.safety_ms = 10_000;
    c.liveness_ms = 30_000;
    run::<LeaderlessNode>(
        &c,
        &LeaderlessConfig::default(),
        &mut LeaderlessInvariants::new(&c),
    )
}

#[test]
fn membership_converges_within_the_stated_bound_after_healing() {
    for seed in 0..8 {
        let mut c = SimConfig::new(seed, 5);
        c.safety_ms = 10_000;
        c.liveness_ms = CONVERGE_WITHIN_MS + 2_000;
        // Run past the bound even when every task is done early.
        c.stop_when_done = false;
        let r = run::<LeaderlessNode>(
            &c,
            &LeaderlessConfig::default(),
            &mut LeaderlessInvariants::new(&c),
        );
        assert!(r.passed(), "{r}");
        assert!(r.simulated_ms >= c.safety_ms + CONVERGE_WITHIN_MS, "{r}");
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn leaderless_passes_the_simulator_without_faults() {
    for seed in 0..20 {
        let r = sim(seed, 5, FaultKinds::NONE);
        assert!(r.passed(), "{r}");
        assert!(r.tasks_acked > 0, "{r}");
        assert_eq!(r.tasks_final, r.tasks_submitted, "{r}");
    }
}

#[test]
fn leaderless_passes_the_simulator_with_every_fault_kind_at_five_nodes() {
    let nodes = env_u64("NODES", 5) as usize;
    let (start, seeds) = (env_u64("SEED_START", 0), env_u64("SEEDS", 40));
    let mut acked = 0;
    for seed in start..start + seeds {
        let r = sim(seed, nodes, FaultKinds::ALL);
        assert!(r.passed(), "{r}");
        acked += r.tasks_acked;
    }
    eprintln!(
        "{seeds} seeds at {nodes} nodes, all faults: {acked} tasks acknowledged, no violation"
    );
    assert!(acked > 0);
}

/// Regression (seed 516, all faults): a node restarted while a read was in
/// flight numbered its next operation like the old one, and a late reply
/// for the old read (another task) answered the new read.
#[test]
fn regression_a_late_reply_from_an_earlier_boot_is_not_counted_for_a_new_operation() {
    let r = sim(516, 5, FaultKinds::ALL);
    assert!(r.passed(), "{r}");
}

#[test]
fn the_leaderless_mode_replays_bit_for_bit_in_the_simulator() {
    let a = sim(7, 5, FaultKinds::ALL);
    let b = sim(7, 5, FaultKinds::ALL);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_ne!(a.trace_hash, sim(8, 5, FaultKinds::ALL).trace_hash);
}
