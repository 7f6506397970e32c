//! The `static` baseline (`cohort-static`) in the simulator: correct with
//! no faults, and caught losing acknowledged tasks when its coordinator
//! crashes — the baseline keeps its task table in memory only.

use cohort_sim::{run, FaultKinds, Guarantee, NoInvariants, Report, SimConfig};
use cohort_static::{StaticConfig, StaticNode};

fn sim(seed: u64, faults: &str, safety_ms: u64, liveness_ms: u64) -> Report {
    let mut c = SimConfig::new(seed, 3);
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

#[test]
fn static_mode_loses_acknowledged_tasks_when_its_coordinator_crashes() {
    let caught = (0..10)
        .filter(|seed| sim(*seed, "crash", 30_000, 30_000).count_of(Guarantee::G1) > 0)
        .count();
    assert!(caught >= 5, "G1 caught in only {caught} of 10 crash runs");
}
