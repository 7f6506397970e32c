//! Submitters of one dedupe key split by a partition, in the simulator,
//! in both consensus modes: clients reach nodes on both sides of a cut,
//! yet the key gets one task — the first submitter's — and every other
//! submitter is answered with it (`cohort_core::dedupe`: the decision is
//! the cluster's id-keyed submit plus linearizable reads, never a local
//! lock). The run's checkers (among them `checkers::unique`) find nothing.

use cohort_core::dedupe::{DedupeKey, DedupeOutcome};
use cohort_core::{NodeId, Time};
use cohort_leader::{LeaderNode, RaftInvariants, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessInvariants, LeaderlessNode};
use cohort_sim::scenario::{one_key, unique_answers};
use cohort_sim::{run, Fault, Report, ScriptedFault, SimConfig};

const NODES: usize = 3;
const SUBMITTERS: u64 = 6;
/// Longer than the burst of submits and the partition, so the first task
/// is alive while every submitter asks.
const TASK_MS: u64 = 6_000;

/// The key's submitters, with node `isolated` cut off from the others
/// from the start of the burst until after it.
fn config(seed: u64, isolated: u64) -> SimConfig {
    let mut c = one_key(seed, NODES, SUBMITTERS, TASK_MS, 10_000);
    c.script = vec![ScriptedFault {
        at_ms: 20,
        fault: Fault::Isolate {
            node: NodeId(isolated),
            for_ms: 3_000,
        },
    }];
    c
}

/// Submitters' requests reached both sides of the cut while it lasted
/// (read from the run's trace).
fn assert_split(r: &Report, isolated: u64) {
    let cut = format!("partition: n{isolated} isolated");
    let start = r.trace.iter().position(|l| l.contains(&cut));
    let start = start.unwrap_or_else(|| panic!("no {cut:?} in the trace"));
    let end = r.trace[start..]
        .iter()
        .position(|l| l.contains("partition healed"))
        .map_or(r.trace.len(), |e| start + e);
    let during = &r.trace[start..end];
    let to = |inside: bool| {
        during
            .iter()
            .any(|l| l.ends_with(" Unique") && (l.contains(&format!("-> n{isolated} ")) == inside))
    };
    assert!(
        to(true),
        "no dedupe request reached n{isolated} while cut off"
    );
    assert!(to(false), "no dedupe request reached the majority side");
}

/// Every submitter got generation 0 of the key; exactly one created it.
fn assert_one_task(r: &Report) {
    assert!(r.passed(), "{r}");
    assert_eq!(r.faults_injected, 1, "{r}");
    let answers = unique_answers(&r.history);
    assert_eq!(answers.len() as u64, SUBMITTERS, "{r}");
    let key = &answers[0].0;
    let first = key.task_id(0);
    assert_eq!(key, &DedupeKey::new(b"sim-key-0").unwrap());
    for (k, outcome) in &answers {
        assert_eq!(k, key);
        assert_eq!(outcome.id(), first, "{outcome:?}\n{r}");
    }
    let created = answers
        .iter()
        .filter(|(_, o)| matches!(o, DedupeOutcome::Created { .. }))
        .count();
    assert_eq!(created, 1, "{answers:?}");
    assert_eq!(r.tasks_submitted, 1, "{r}");
    assert_eq!(r.unique_deduplicated, SUBMITTERS - 1, "{r}");
    assert_eq!(r.tasks_final, 1, "{r}");
}

#[test]
fn a_partition_between_submitters_of_one_key_leaves_one_task_in_leader_mode() {
    for isolated in 1..=NODES as u64 {
        let c = config(11, isolated);
        let mut inv = RaftInvariants::default();
        let mut hook = |_now: Time, nodes: &[Option<&LeaderNode>]| inv.check(nodes);
        let r = run::<LeaderNode>(&c, &ValidLeaderConfig::default(), &mut hook);
        assert_split(&r, isolated);
        assert_one_task(&r);
    }
}

#[test]
fn a_partition_between_submitters_of_one_key_leaves_one_task_in_leaderless_mode() {
    for isolated in 1..=NODES as u64 {
        let c = config(11, isolated);
        let mut inv = LeaderlessInvariants::new(c.safety_ms);
        let mut hook = |now: Time, nodes: &[Option<&LeaderlessNode>]| inv.check(now, nodes);
        let r = run::<LeaderlessNode>(&c, &LeaderlessConfig::default(), &mut hook);
        assert_split(&r, isolated);
        assert_one_task(&r);
    }
}
