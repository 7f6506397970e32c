//! Golden trace: one task through a two-node cluster of the test node, no
//! faults, every event in order. It reads like a story of what the
//! simulator does (latencies, fsyncs holding replies back, the runner, the
//! client's polls) and pins it: a change in the simulator's behaviour shows
//! up here as a diff. After an intended change, regenerate with
//! `COHORT_UPDATE_GOLDEN=1 cargo test -p cohort-sim --test golden`.

mod support;

use cohort_sim::{run, FaultKinds, NoInvariants, SimConfig};
use support::{CoordConfig, CoordNode};

#[test]
fn one_task_through_two_nodes() {
    let mut c = SimConfig::new(2024, 2);
    c.faults = FaultKinds::NONE;
    c.safety_ms = 1_000;
    c.liveness_ms = 2_000;
    c.workload.tasks_max = 1;
    c.workload.handler_failure_rate = 0.0;
    c.record_trace = true;
    let r = run::<CoordNode>(&c, &CoordConfig::correct(), &mut NoInvariants);
    assert!(r.passed(), "{r}");
    assert_eq!((r.tasks_submitted, r.tasks_final), (1, 1), "{r}");
    let mut text = format!("{}\n", r.plan);
    for line in &r.trace {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!("trace hash {:016x}\n", r.trace_hash));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/one_task.txt");
    if std::env::var_os("COHORT_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &text).expect("writing the golden trace");
    }
    let golden = std::fs::read_to_string(path).expect("the golden trace (see the module doc)");
    assert_eq!(text, golden, "the trace changed; see the module doc");
}
