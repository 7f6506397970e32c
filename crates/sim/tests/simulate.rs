//! End-to-end runs of the simulator with the test-only coordinator node
//! (`support::CoordNode`): determinism, clean runs, and real bugs caught.

mod support;

use cohort_core::{Node, NodeId, Note, SupersedeReason, TaskState, Time};
use cohort_sim::history::HistoryEvent;
use cohort_sim::{
    run, Fault, FaultKinds, Guarantee, Invariants, NoInvariants, Report, ScriptedFault, SimConfig,
    UNIQUE_EVERY_SIM,
};
use support::{Bug, CoordConfig, CoordNode};

/// A run with some clients submitting under shared dedupe keys, as
/// `cohort sim` runs them.
fn config(seed: u64, nodes: usize, faults: &str) -> SimConfig {
    let mut c = SimConfig::new(seed, nodes);
    c.faults = faults.parse::<FaultKinds>().expect("fault list");
    c.workload.unique_every = UNIQUE_EVERY_SIM;
    c
}

fn sim(c: &SimConfig, node: &CoordConfig) -> Report {
    run::<CoordNode>(c, node, &mut NoInvariants)
}

#[test]
fn same_seed_same_trace_hash() {
    let mut c = config(7, 5, "all");
    c.keep_history = true;
    let node = CoordConfig::correct();
    let a = sim(&c, &node);
    let b = sim(&c, &node);
    assert!(a.events > 1_000, "a real run: {a}");
    assert!(a.faults_injected > 0, "faults were injected: {a}");
    assert!(a.unique_submits > 0, "dedupe submits ran: {a}");
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert!(a.history.records.len() > 1_000);
    assert_eq!(a.history, b.history);
    assert_eq!(a.plan, b.plan);

    let mut c8 = config(8, 5, "all");
    c8.keep_history = false;
    let other = sim(&c8, &node);
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
    assert!(other.history.records.is_empty(), "not kept unless asked");
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
    // The window is one fsync (0.1-5 ms) of the coordinator: it takes busy
    // runs and a few seeds to hit it.
    let node = CoordConfig::with_bug(Bug::AckBeforePersist);
    let caught = (0..40).find_map(|seed| {
        let mut c = config(seed, 3, "crash");
        c.workload.arrivals_per_sec = 100.0;
        let r = sim(&c, &node);
        (r.count_of(Guarantee::G1) > 0).then_some(r)
    });
    let r = caught.expect("the unsynced ack was never caught");
    let v = &r.violations[0];
    assert!(v.detail.contains("later NotFound from n1"), "{v}");
}

#[test]
fn accepting_a_result_from_a_superseded_epoch_is_caught_as_g3() {
    // Pauses outlast leases: the paused runner's result arrives after the
    // task was reassigned under a newer epoch.
    let node = CoordConfig::with_bug(Bug::NoFencing);
    let r = (0..20)
        .map(|seed| sim(&config(seed, 3, "pause"), &node))
        .find(|r| r.count_of(Guarantee::G3) > 0)
        .expect("a stale result was never caught");
    let v = &r.violations[0];
    assert_eq!(v.guarantee, Guarantee::G3, "{r}");
    assert!(
        v.detail.contains("but the highest epoch assigned was"),
        "{v}"
    );
}

#[test]
fn deciding_a_task_twice_is_caught_as_g2() {
    let node = CoordConfig::with_bug(Bug::Redecide);
    let r = (0..20)
        .map(|seed| sim(&config(seed, 3, "pause"), &node))
        .find(|r| r.count_of(Guarantee::G2) > 0)
        .expect("a second outcome was never caught");
    let v = r
        .violations
        .iter()
        .find(|v| v.guarantee == Guarantee::G2)
        .expect("G2");
    assert!(v.detail.contains("decided Succeeded"), "{v}");
}

struct OnlyTheCoordinatorTracksTasks {
    finals: u32,
}

impl Invariants<CoordNode> for OnlyTheCoordinatorTracksTasks {
    fn check(&mut self, _now: Time, nodes: &[Option<&CoordNode>]) -> Result<(), String> {
        for n in nodes.iter().flatten() {
            if !n.is_coordinator() && n.tasks_tracked() > 0 {
                return Err(format!("runner {} tracks tasks", n.id()));
            }
        }
        Ok(())
    }

    fn check_final(&mut self, _now: Time, nodes: &[Option<&CoordNode>]) -> Result<(), String> {
        self.finals += 1;
        match nodes.first() {
            Some(Some(n)) if n.is_coordinator() => Ok(()),
            _ => Err("n1 is not up as the coordinator".into()),
        }
    }
}

#[test]
fn invariants_are_checked_after_every_event() {
    let node = CoordConfig::correct();
    // A real invariant of the test node, as a mode would write one: only
    // the coordinator tracks tasks.
    let mut invariant = OnlyTheCoordinatorTracksTasks { finals: 0 };
    let r = run::<CoordNode>(&config(3, 3, "all"), &node, &mut invariant);
    assert!(r.passed(), "{r}");
    assert_eq!(invariant.finals, 1, "checked once more at the end");

    // What must hold only after healing is checked once, at the end.
    struct NeverConverges;
    impl Invariants<CoordNode> for NeverConverges {
        fn check(&mut self, _: Time, _: &[Option<&CoordNode>]) -> Result<(), String> {
            Ok(())
        }
        fn check_final(&mut self, _: Time, _: &[Option<&CoordNode>]) -> Result<(), String> {
            Err("views differ".into())
        }
    }
    let r = run::<CoordNode>(&config(3, 3, "none"), &node, &mut NeverConverges);
    assert_eq!(r.violation_count, 1, "{r}");
    assert_eq!(r.violations[0].guarantee, Guarantee::Invariant);
    assert_eq!(r.violations[0].detail, "at the end: views differ");

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
    // The seed was picked for its G4 count with plain submits only.
    c.workload.unique_every = 0;
    let r = sim(&c, &CoordConfig::with_bug(Bug::ForgetOnCrash));
    assert_eq!(r.count_of(Guarantee::G1), 3, "{r}");
    assert_eq!(
        r.count_of(Guarantee::G4),
        3,
        "a flood of G1 does not hide G4: {r}"
    );
    assert_eq!(r.violations.len(), 6);
    assert!(r.violation_count > 6, "{r}");
    assert!(
        r.violations.windows(2).all(|w| w[0].at <= w[1].at),
        "earliest first"
    );
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

#[test]
fn runs_are_pure_in_the_seed_and_can_share_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Report>();
    send_and_sync::<SimConfig>();
    let node = CoordConfig::correct();
    let seeds = [21u64, 22, 23, 24];
    let sequential: Vec<u64> = seeds
        .iter()
        .map(|s| sim(&config(*s, 3, "all"), &node).trace_hash)
        .collect();
    let parallel: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .iter()
            .map(|s| {
                let node = &node;
                scope.spawn(move || sim(&config(*s, 3, "all"), node).trace_hash)
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a run"))
            .collect()
    });
    assert_eq!(sequential, parallel);
}

#[test]
fn a_coordinator_that_persists_survives_its_own_crash() {
    let mut c = config(5, 3, "none");
    c.keep_history = true;
    c.workload.arrivals_per_sec = 100.0; // tasks in flight when it strikes
    c.script = vec![ScriptedFault {
        at_ms: 5_000,
        fault: Fault::Crash {
            node: NodeId(1),
            down_ms: 1_000,
        },
    }];
    let r = sim(&c, &CoordConfig::correct());
    assert!(r.passed(), "{r}");
    assert_eq!(r.faults_injected, 1);
    // The restarted coordinator declared the runs it lost track of dead and
    // reassigned them under new epochs; the checkers accepted that.
    let reassigned = r
        .history
        .records
        .iter()
        .filter(|rec| {
            rec.at >= Time::from_millis(6_000)
                && matches!(
                    rec.event,
                    HistoryEvent::Noted {
                        note: Note::Superseded {
                            reason: SupersedeReason::RunnerDeclaredDead,
                            ..
                        },
                        ..
                    }
                )
        })
        .count();
    assert!(reassigned > 0, "{r}");
}

#[test]
fn cancels_race_executions_and_each_task_keeps_one_outcome() {
    let node = CoordConfig::correct();
    let (mut cancelled, mut succeeded) = (0, 0);
    for seed in 0..5 {
        let mut c = config(seed, 3, "all");
        c.workload.cancel_rate = 0.5;
        c.keep_history = true;
        let r = sim(&c, &node);
        assert!(r.passed(), "{r}");
        for rec in &r.history.records {
            if let HistoryEvent::Noted {
                note: Note::Decided { state, .. },
                ..
            } = &rec.event
            {
                match state {
                    TaskState::Cancelled => cancelled += 1,
                    TaskState::Succeeded { .. } => succeeded += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(cancelled > 100, "cancels won some races: {cancelled}");
    assert!(succeeded > 100, "executions won others: {succeeded}");
}

#[test]
fn invariants_see_every_node_of_a_large_cluster() {
    for nodes in [16, 17] {
        let mut c = config(9, nodes, "crash");
        c.safety_ms = 3_000;
        c.liveness_ms = 6_000;
        let mut seen = std::collections::BTreeSet::new();
        let mut sizes = |_now: Time, view: &[Option<&CoordNode>]| -> Result<(), String> {
            seen.insert(view.len());
            Ok(())
        };
        let r = run::<CoordNode>(&c, &CoordConfig::correct(), &mut sizes);
        assert!(r.passed(), "{r}");
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![nodes]);
    }
}
