//! `cohort bench` logic on a tiny run: structure, not speed.

use cohort_bench::real::{RealMode, Victim};
use cohort_bench::scale::SIM_MODES;
use cohort_bench::{BenchOptions, BenchReport};
use cohort_core::NodeId;
use cohort_runtime::{Listeners, NodeOptions, RunningNode, RuntimeConfig, RuntimeError};
use std::future::Future;
use std::pin::Pin;

fn start_static(
    config: RuntimeConfig,
    options: NodeOptions,
    listeners: Listeners,
) -> Pin<Box<dyn Future<Output = Result<RunningNode, RuntimeError>> + Send>> {
    Box::pin(async move {
        let mode = cohort_static::StaticConfig::default();
        cohort_runtime::start::<cohort_static::StaticNode>(config, mode, options, listeners).await
    })
}

fn tiny() -> BenchOptions {
    BenchOptions {
        preset: "tiny".into(),
        throughput_nodes: vec![3],
        concurrencies: vec![2],
        batch_tasks: vec![1, 20],
        throughput_s: 0.3,
        limit_keys: 2,
        nodes: 3,
        latency_load_share: 0.5,
        latency_rate_bounds: (20.0, 200.0),
        latency_s: 0.5,
        crash_reps: 1,
        crash_rate: 50.0,
        crash_before_s: 0.3,
        crash_after_s: 0.4,
        scale_nodes: vec![5, 20],
        scale_simulated_ms: 1_500,
        scale_arrivals_per_sec: 20.0,
        scale_crash_at_ms: 100,
        scale_down_ms: 300,
        scale_wall_s_max: 60.0,
        fault_nodes: 3,
        fault_rate: 50.0,
        fault_before_s: 0.3,
        fault_s: 0.5,
        fault_after_s: 0.3,
        node_binary: None,
    }
}

fn check_non_negative(v: &serde_json::Value, path: &str) {
    match v {
        serde_json::Value::Number(n) => {
            let f = n.as_f64().expect("a number");
            assert!(f >= 0.0, "{path} is negative: {f}");
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_non_negative(x, &format!("{path}[{i}]"));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                check_non_negative(x, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

#[test]
fn a_tiny_run_reports_every_scenario_and_mode_and_writes_its_plots() {
    let modes = [RealMode {
        name: "static",
        start: start_static,
        victim: Victim::Fixed(NodeId(1)),
        durable: false,
        capacity_tasks: cohort_bench::real::CAPACITY_TASKS_DEFAULT,
    }];
    let mut lines = Vec::new();
    let report: BenchReport = cohort_bench::run(&tiny(), &modes, SIM_MODES, &mut |l| {
        lines.push(l.to_string())
    })
    .expect("the run completes");
    assert!(!lines.is_empty(), "progress is reported");
    assert_eq!(report.modes.len(), 1);
    let m = &report.modes[0];
    assert_eq!(m.mode, "static");
    assert_eq!(m.capacity_tasks, cohort_bench::real::CAPACITY_TASKS_DEFAULT);
    assert_eq!(m.throughput.len(), 2, "a single-submit and a batch point");
    for p in &m.throughput {
        assert!(
            p.submits_per_s > 0.0,
            "some submits were acknowledged: {p:?}"
        );
    }
    assert_eq!(
        m.throughput
            .iter()
            .map(|p| p.batch_tasks)
            .collect::<Vec<_>>(),
        vec![1, 20]
    );
    let limited = m.limited.as_ref().expect("the limits point ran");
    assert_eq!((limited.limit_keys, limited.batch_tasks), (2, 1));
    assert!(
        limited.submits_per_s > 0.0,
        "limited submits were acknowledged: {limited:?}"
    );
    assert!(m.throughput.iter().all(|p| p.limit_keys == 0));
    assert!(m.latency.ack.count > 0);
    assert!(m.latency.ack.p50_ms <= m.latency.ack.p99_ms);
    assert!(m.latency.ack.p99_ms <= m.latency.ack.p999_ms);
    assert!(!m.latency.ack.cdf.is_empty());
    // The disk probe ran beside the window, and every acknowledged submit
    // is either in a stall or in the figure outside them.
    assert_eq!(m.latency.disk.error, None);
    assert!(m.latency.disk.fsync.count > 0);
    assert_eq!(
        m.latency.ack_outside_disk_stalls.count + m.latency.acks_in_disk_stalls,
        m.latency.ack.count
    );
    assert_eq!(m.crash.len(), 1);
    assert_eq!(m.crash[0].victim, 1, "static's coordinator is killed");
    assert!(!m.crash[0].completions_per_bin.is_empty());
    assert!(
        m.faults.is_empty(),
        "static does not replicate: no fault scenarios"
    );
    assert!(m.faults_skipped.is_some(), "and the report says why");
    assert_eq!(report.scale.len(), SIM_MODES.len());
    for curve in &report.scale {
        assert_eq!(curve.points.len(), 2);
        for p in &curve.points {
            assert!(p.busiest_msgs_per_s >= p.average_msgs_per_s);
            assert_eq!(p.violations, 0, "no faults, no violations");
        }
    }
    assert!(report.machine.cores >= 1);

    let dir = tempfile::tempdir().expect("temp dir");
    let files = cohort_bench::write_outputs(&report, dir.path()).expect("outputs written");
    for name in [
        "bench.json",
        "latency_ack_cdf.svg",
        "latency_finish_cdf.svg",
        "crash_static.svg",
        "scale_msgs.svg",
    ] {
        let path = dir.path().join(name);
        assert!(files.contains(&path), "{name} listed");
        let text = std::fs::read_to_string(&path).expect("readable");
        if name.ends_with(".svg") {
            assert!(text.starts_with("<svg"), "{name} is SVG");
            assert!(!text.contains("NaN"), "{name} has no NaN");
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench.json")).unwrap())
            .expect("valid JSON");
    for key in ["machine", "options", "modes", "scale"] {
        assert!(json.get(key).is_some(), "JSON has {key}");
    }
    for key in ["cores", "kernel", "cpu_model"] {
        assert!(json["machine"].get(key).is_some(), "machine has {key}");
    }
    let mode = &json["modes"][0];
    for key in ["throughput", "latency", "crash"] {
        assert!(mode.get(key).is_some(), "mode has {key}");
    }
    check_non_negative(&json, "$");
    print!("{}", cohort_bench::table(&report));
}

#[test]
fn options_that_cannot_run_are_refused_before_anything_starts() {
    let mut o = tiny();
    o.nodes = 2;
    let err = cohort_bench::run(&o, &[], &[], &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("at least 3"), "{err}");
}
