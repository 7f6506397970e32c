//! End-to-end runs of the simulator with the test-only coordinator node
//! (`support::CoordNode`): determinism, clean runs, and real bugs caught.

mod support;

use cohort_core::Time;
use cohort_sim::{run, FaultKinds, Guarantee, NoInvariants, Report, SimConfig};
use support::{Bug, CoordConfig, CoordNode};

fn config(seed: u64, nodes: usize, faults: &str) -> SimConfig {
    let mut c = SimConfig::new(seed, nodes);
    c.faults = faults.parse::<FaultKinds>().expect("fault list");
    c
}

fn sim(c: &SimConfig, node: &CoordConfig) -> Report {
    run::<CoordNode>(c, node, &mut NoInvariants)
}

#[test]
fn same_seed_same_trace_hash() {
    let c = config(7, 5, "all");
    let node = CoordConfig::correct();
    let a = sim(&c, &node);
    let b = sim(&c, &node);
    assert!(a.events > 1_000, "a real run: {a}");
    assert!(a.faults_injected > 0, "faults were injected: {a}");
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_eq!(a.history, b.history);
    assert_eq!(a.plan, b.plan);

    let other = sim(&config(8, 5, "all"), &node);
    assert_ne!(a.trace_hash, other.trace_hash);
    assert_ne!(a.plan, other.plan);

    // Recording the readable trace observes the run without changing it.
    let mut traced = c.clone();
    traced.record_trace = true;
    let t = sim(&traced, &node);
    assert_eq!(t.trace_hash, a.trace_hash);
    assert!(
        t.trace.len() as u64 >= t.events,
        "one line per event at least"
    );
    assert!(
        t.trace.iter().any(|l| l.contains(" <- n")),
        "deliveries are traced"
    );
    assert!(a.trace.is_empty());
}

#[test]
fn no_faults_runs_clean_over_200_seeds() {
    let node = CoordConfig::correct();
    for seed in 0..200 {
        let mut c = config(seed, 3, "none");
        c.safety_ms = 5_000;
        c.liveness_ms = 10_000;
        let r = sim(&c, &node);
        assert!(r.passed(), "{r}");
        assert!(r.tasks_submitted > 0, "{r}");
        assert_eq!(r.tasks_acked, r.tasks_submitted, "{r}");
        assert_eq!(r.tasks_final, r.tasks_submitted, "{r}");
        assert_eq!(r.faults_injected, 0, "{r}");
    }
}

#[test]
fn a_correct_node_keeps_every_guarantee_under_all_faults() {
    let node = CoordConfig::correct();
    let mut faults = 0;
    for seed in 0..40 {
        let r = sim(&config(seed, 5, "all"), &node);
        assert!(r.passed(), "{r}");
        assert_eq!(r.tasks_final, r.tasks_submitted, "{r}");
        faults += r.faults_injected;
    }
    assert!(faults > 40 * 5, "faults really struck: {faults}");
}

#[test]
fn a_coordinator_that_forgets_its_tasks_on_crash_is_caught_as_g1() {
    let node = CoordConfig::with_bug(Bug::ForgetOnCrash);
    // Without crashes the bug cannot show.
    for seed in 0..5 {
        let r = sim(&config(seed, 3, "none"), &node);
        assert!(r.passed(), "{r}");
    }
    let caught = (0..10)
        .filter(|seed| {
            let r = sim(&config(*seed, 3, "crash"), &node);
            r.count_of(Guarantee::G1) > 0
        })
        .count();
    assert!(caught >= 5, "G1 caught in only {caught} of 10 crash runs");
}

#[test]
fn acking_before_the_fsync_is_caught_as_g1_under_crashes() {
    let node = CoordConfig::with_bug(Bug::AckBeforePersist);
    let mut caught = Vec::new();
    for seed in 0..40 {
        let mut c = config(seed, 3, "crash");
        c.workload.arrivals_per_sec = 100.0;
        let r = sim(&c, &node);
        if r.count_of(Guarantee::G1) > 0 {
            caught.push(r);
        }
    }
    assert!(!caught.is_empty(), "the unsynced ack was never caught");
    let v = &caught[0].violations[0];
    assert!(v.detail.contains("later NotFound from n1"), "{v}");
}

#[test]
fn invariants_are_checked_after_every_event() {
    let node = CoordConfig::correct();
    // A real invariant of the test node: only the coordinator tracks tasks.
    let mut only_n1 = |_now: Time, nodes: &[Option<&CoordNode>]| -> Result<(), String> {
        for n in nodes.iter().flatten() {
            if !n.is_coordinator() && n.tasks_tracked() > 0 {
                return Err("a runner tracks tasks".into());
            }
        }
        Ok(())
    };
    let r = run::<CoordNode>(&config(3, 3, "all"), &node, &mut only_n1);
    assert!(r.passed(), "{r}");

    // An invariant that breaks whenever a node is down: crashes break it.
    let checks = std::cell::Cell::new(0u64);
    let mut all_up = |_now: Time, nodes: &[Option<&CoordNode>]| -> Result<(), String> {
        checks.set(checks.get() + 1);
        match nodes.iter().position(Option::is_none) {
            Some(i) => Err(format!("n{} is down", i + 1)),
            None => Ok(()),
        }
    };
    let r = run::<CoordNode>(&config(3, 3, "crash"), &node, &mut all_up);
    assert!(r.count_of(Guarantee::Invariant) > 0, "{r}");
    assert_eq!(r.count_of(Guarantee::Invariant), r.violations.len());
    assert!(r.violations[0].detail.ends_with("is down"));
    assert_eq!(checks.get(), r.events, "checked once per event");
    let r = run::<CoordNode>(&config(3, 3, "none"), &node, &mut all_up);
    assert!(r.passed(), "{r}");
}

#[test]
fn kept_violations_are_capped_but_counted() {
    let mut c = config(1, 3, "crash");
    c.violations_max = 3;
    let r = sim(&c, &CoordConfig::with_bug(Bug::ForgetOnCrash));
    assert_eq!(r.violations.len(), 3);
    assert!(r.violation_count > 3, "{r}");
}

#[test]
fn faults_follow_the_plan_and_heal_for_the_liveness_phase() {
    let mut c = config(11, 5, "crash,pause,partition");
    c.record_trace = true;
    let r = sim(&c, &CoordConfig::correct());
    assert!(r.passed(), "{r}");
    let plan = r.plan.to_string();
    assert!(
        plan.contains("loss=0.00%") && plan.contains("fifo"),
        "{plan}"
    );
    let heal = r
        .trace
        .iter()
        .position(|l| l.contains("heal: liveness phase begins"))
        .expect("the run heals");
    let faulty =
        |l: &String| l.contains(" crash n") || l.contains(" pause n") || l.contains(" partition: ");
    assert!(
        r.trace[..heal].iter().any(faulty),
        "faults in the safety phase"
    );
    assert!(
        !r.trace[heal..].iter().any(faulty),
        "no fault after healing"
    );
}
