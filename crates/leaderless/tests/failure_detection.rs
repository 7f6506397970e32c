//! The closed-connection hint: a peer's connection closing raises a SWIM
//! suspicion at once, so a killed process is declared down one suspicion
//! timeout later, while a live node whose connection merely closed refutes
//! and stays up.

mod common;

use cohort_core::{NodeId, Time};
use cohort_leaderless::LeaderlessConfig;
use common::Sim;

#[test]
fn a_killed_node_is_declared_down_one_suspicion_timeout_after_its_connections_close() {
    let config = LeaderlessConfig::default();
    let suspect_ms = config.swim_suspect_to_down_ms;
    let mut sim = Sim::new(7, 5, config);
    sim.run_for(3_000);
    let t0 = sim.now;
    sim.kill(NodeId(3));
    sim.run_for(suspect_ms + 1_000);
    for m in [1, 2, 4, 5].map(NodeId) {
        let node = sim.node(m);
        assert!(!node.live().contains(&NodeId(3)), "{m} still sees n3 live");
        let (_, at) = node
            .downs()
            .iter()
            .copied()
            .find(|(n, t)| *n == NodeId(3) && *t >= t0)
            .expect("n3 declared down");
        let after_ms = at.saturating_since(t0).as_millis() as u64;
        // Not before the suspicion timeout (a suspicion, not a verdict),
        // and well before probing alone would find it (a probe period to
        // reach it, another to suspect it, then the same timeout).
        assert!(
            (suspect_ms..suspect_ms + 500).contains(&after_ms),
            "{m} marked n3 down {after_ms} ms after the kill"
        );
        assert!(node.swim_counters().suspicions_from_closed_connections <= 1);
    }
    let raised: u64 = [1, 2, 4, 5]
        .map(|m| {
            sim.node(NodeId(m))
                .swim_counters()
                .suspicions_from_closed_connections
        })
        .iter()
        .sum();
    assert!(raised > 0, "the closed connections raised suspicions");
}

#[test]
fn a_live_node_whose_connections_close_refutes_the_suspicion_and_keeps_its_identity() {
    let mut sim = Sim::new(11, 5, LeaderlessConfig::default());
    sim.run_for(3_000);
    let t0: Time = sim.now;
    let rejoins_before = sim
        .node(NodeId(2))
        .swim_counters()
        .declared_down_while_alive;
    for observer in [1, 3, 4, 5].map(NodeId) {
        sim.close_connection(observer, NodeId(2));
    }
    sim.run_for(10_000);
    let raised: u64 = [1, 3, 4, 5]
        .map(|m| {
            sim.node(NodeId(m))
                .swim_counters()
                .suspicions_from_closed_connections
        })
        .iter()
        .sum();
    assert_eq!(raised, 4, "each observer suspected n2 once");
    for m in sim.members().to_vec() {
        let node = sim.node(m);
        assert!(
            node.downs().iter().all(|(_, t)| *t < t0),
            "{m} declared someone down: {:?}",
            node.downs()
        );
        assert_eq!(node.live().len(), 5, "{m} sees {:?}", node.live());
    }
    assert_eq!(
        sim.node(NodeId(2))
            .swim_counters()
            .declared_down_while_alive,
        rejoins_before
    );
}
