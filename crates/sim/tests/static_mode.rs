//! The `static` baseline (`cohort-static`) in the simulator: correct with
//! no faults, and caught losing acknowledged tasks when its coordinator
//! crashes — the baseline keeps its task table in memory only.

use cohort_core::{NodeId, Time};
use cohort_sim::{
    run, Fault, FaultKinds, Guarantee, NoInvariants, Report, ScriptedFault, SimConfig,
    UNIQUE_EVERY_SIM,
};
use cohort_static::{StaticConfig, StaticNode};

fn sim(seed: u64, faults: &str, safety_ms: u64, liveness_ms: u64) -> Report {
    let mut c = SimConfig::new(seed, 3);
    c.workload.unique_every = UNIQUE_EVERY_SIM;
    c.faults = faults.parse::<FaultKinds>().expect("fault list");
    c.safety_ms = safety_ms;
    c.liveness_ms = liveness_ms;
    run::<StaticNode>(&c, &StaticConfig::default(), &mut NoInvariants)
}

#[test]
fn static_mode_passes_clean_without_faults_over_200_seeds() {
    for seed in 0..200 {
        let r = sim(seed, "none", 5_000, 10_000);
        assert!(r.passed(), "{r}");
        assert!(r.tasks_submitted > 0, "{r}");
        assert_eq!(r.tasks_final, r.tasks_submitted, "{r}");
    }
}

/// A 3-node run without faults of the workload `tweak` sets, which
/// passes every check and finishes every task.
fn clean_run(
    seed: u64,
    safety_ms: u64,
    liveness_ms: u64,
    tweak: impl FnOnce(&mut cohort_sim::Workload),
) -> Report {
    let mut c = SimConfig::new(seed, 3);
    c.faults = FaultKinds::NONE;
    c.safety_ms = safety_ms;
    c.liveness_ms = liveness_ms;
    tweak(&mut c.workload);
    let r = run::<StaticNode>(&c, &StaticConfig::default(), &mut NoInvariants);
    assert!(r.passed(), "{r}");
    assert_eq!(r.tasks_final, r.tasks_submitted, "{r}");
    r
}

/// The coordinator keeps concurrency and rate limits: half the tasks
/// carry one on one of two keys, some wait for a place, none is exceeded.
#[test]
fn static_mode_keeps_concurrency_and_rate_limits_without_faults() {
    let mut held_back = 0;
    for seed in 0..20 {
        let r = clean_run(seed, 5_000, 10_000, |w| w.limited_rate = 0.5);
        held_back += cohort_sim::checkers::limits::held_back(&r.history);
    }
    assert!(held_back > 20, "only {held_back} tasks waited for a place");
}

/// Handlers that cannot be stopped: the coordinator ends their leases.
#[test]
fn static_mode_ends_the_leases_of_stuck_handlers() {
    let mut expired = 0;
    for seed in 0..10 {
        let r = clean_run(seed, 10_000, 20_000, |w| w.stuck_rate = 0.02);
        expired += r
            .history
            .superseded_for(cohort_core::SupersedeReason::LeaseExpired);
    }
    assert!(expired > 5, "only {expired} leases ended");
}

#[test]
fn static_mode_loses_acknowledged_tasks_when_its_coordinator_crashes() {
    let caught = (0..10)
        .filter(|seed| sim(*seed, "crash", 30_000, 30_000).count_of(Guarantee::G1) > 0)
        .count();
    assert!(caught >= 5, "G1 caught in only {caught} of 10 crash runs");
}

/// The negative control of the dedupe checker in real runs: a coordinator
/// that forgets its tasks on a crash lets a dedupe key's chain restart at
/// generation 0 after later generations existed, which `checkers::unique`
/// reports; without crashes it reports nothing.
#[test]
fn static_mode_gives_a_dedupe_key_two_live_tasks_when_its_coordinator_crashes() {
    let caught = (0..10)
        .filter(|seed| sim(*seed, "crash", 30_000, 30_000).count_of(Guarantee::Unique) > 0)
        .count();
    assert!(caught >= 1, "Unique caught in none of 10 crash runs");
    for seed in 0..10 {
        let r = sim(seed, "none", 10_000, 10_000);
        assert!(r.unique_submits > 0, "{r}");
        assert_eq!(r.count_of(Guarantee::Unique), 0, "{r}");
    }
}

#[test]
fn crashing_the_static_coordinator_once_loses_what_it_had_acknowledged() {
    let mut c = SimConfig::new(5, 3);
    c.faults = FaultKinds::NONE;
    c.script = vec![ScriptedFault {
        at_ms: 5_000,
        fault: Fault::Crash {
            node: NodeId(1),
            down_ms: 1_000,
        },
    }];
    let r = run::<StaticNode>(&c, &StaticConfig::default(), &mut NoInvariants);
    assert_eq!(r.faults_injected, 1);
    assert!(r.count_of(Guarantee::G1) > 0, "{r}");
    let first = r
        .violations
        .iter()
        .find(|v| v.guarantee == Guarantee::G1)
        .expect("a G1 violation");
    assert!(first.at > Time::from_millis(5_000), "{first}");
    assert!(first.detail.contains("acknowledged by n1"), "{first}");

    // The same story with a worker crashing instead: nothing is lost.
    c.script[0].fault = Fault::Crash {
        node: NodeId(2),
        down_ms: 1_000,
    };
    let r = run::<StaticNode>(&c, &StaticConfig::default(), &mut NoInvariants);
    assert!(r.passed(), "{r}");
}

/// The second half of the baseline's story: a restarted coordinator has
/// forgotten the tasks it decided, so a client whose acknowledgement was lost
/// resubmits, the task runs again under a reused epoch, and a second,
/// different outcome is decided (G2) — with the epoch going backwards (G3).
#[test]
fn a_restarted_static_coordinator_decides_a_task_twice() {
    let runs: Vec<Report> = (0..10)
        .map(|seed| sim(seed, "crash,loss", 30_000, 30_000))
        .collect();
    let g2 = runs
        .iter()
        .filter(|r| r.count_of(Guarantee::G2) > 0)
        .count();
    assert!(g2 >= 2, "G2 caught in only {g2} of 10 crash+loss runs");
    let example = runs
        .iter()
        .flat_map(|r| r.violations.iter())
        .find(|v| v.guarantee == Guarantee::G2)
        .expect("a G2 violation");
    assert!(example.detail.contains("decided"), "{example}");
    assert!(
        runs.iter().any(|r| r.count_of(Guarantee::G3) > 0),
        "the reused epochs show up as G3"
    );
}

/// The negative control of the schedule checker: a coordinator that
/// forgets its tasks on a crash forgets the schedule's pending link, so
/// the chain ends and later ticks never fire, which `checkers::schedule`
/// reports; without crashes it reports nothing.
#[test]
fn static_mode_loses_a_schedules_chain_when_its_coordinator_crashes() {
    let with_schedule = |seed: u64, faults: &str| {
        let mut c = SimConfig::new(seed, 3);
        c.faults = faults.parse::<FaultKinds>().expect("fault list");
        c.safety_ms = 10_000;
        c.liveness_ms = 30_000;
        c.workload.schedule_every_ms = 300;
        run::<StaticNode>(&c, &StaticConfig::default(), &mut NoInvariants)
    };
    let caught = (0..10)
        .filter(|seed| with_schedule(*seed, "crash").count_of(Guarantee::Schedule) > 0)
        .count();
    assert!(caught >= 1, "Schedule caught in none of 10 crash runs");
    for seed in 0..5 {
        let r = with_schedule(seed, "none");
        assert!(r.passed(), "{r}");
    }
}
