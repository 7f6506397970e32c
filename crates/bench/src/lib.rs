//! `cohort-bench`: the measured comparison of cohort's modes.
//!
//! - [`real`]: real nodes in this process on loopback (TCP, redb with
//!   fsync, HTTP): closed-loop throughput, open-loop latency (each request
//!   timed from when it was due, so a stall is not hidden by coordinated
//!   omission), and a crash of the coordinator or busiest node under load.
//! - [`faults`]: partitions and a `SIGSTOP`ped node, on `cohort node`
//!   child processes whose peer links go through proxies in this process.
//! - [`scale`]: the same cores in the deterministic simulator at 5 to 5,000
//!   nodes: messages per second handled by the busiest and the average node,
//!   time for a crash to be seen and a rejoin to be known by every node,
//!   memory per simulated node.
//! - [`svg`]: plots, hand-written SVG (no font or system library needed).
//!
//! [`run`] runs everything for the modes it is given and returns a
//! [`BenchReport`]; [`write_outputs`] writes `bench.json` and the plots;
//! [`print_table`] prints the terminal table. Modes come in as data
//! ([`real::RealMode`], [`scale::SimMode`]), so every mode in the binary's
//! table is measured without code here.
#![deny(missing_docs)]
// An IO shell like the runtime: it reads the wall clock to measure.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod disk;
mod error;
pub mod faults;
pub mod machine;
pub mod real;
pub mod scale;
pub mod svg;

pub use error::BenchError;
pub use machine::Machine;

use faults::{FaultRun, FaultSettings, Scenario};
use real::{CrashRep, LatencyResult, RealMode, ThroughputPoint};
use scale::{ScalePoint, ScaleSettings, SimMode};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Wall-clock stopwatch.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }
    /// Seconds since the start.
    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// What to run. [`BenchOptions::quick`] and [`BenchOptions::full`] are the
/// two presets; tests build smaller ones.
#[derive(Clone, Debug, Serialize)]
pub struct BenchOptions {
    /// Preset name, for the report.
    pub preset: String,
    /// Cluster sizes of the throughput sweep.
    pub throughput_nodes: Vec<u64>,
    /// Client concurrencies of the throughput sweep.
    pub concurrencies: Vec<usize>,
    /// Tasks per submit in the throughput sweep: 1 is single submits,
    /// more is `POST /v1/tasks:batch` of that many.
    pub batch_tasks: Vec<usize>,
    /// Seconds per throughput point.
    pub throughput_s: f64,
    /// The limits point: the single-submit point at `nodes` and the
    /// highest concurrency again, with every task under a concurrency
    /// limit of one of this many keys, set never to bind
    /// ([`real::LIMIT_CONCURRENCY_MAX`]): the difference is what keeping
    /// a limit costs. 0 skips it.
    pub limit_keys: usize,

    /// Nodes for the latency and crash scenarios.
    pub nodes: u64,
    /// Offered load for latency, as a share of the best measured submit
    /// rate at `nodes` (the issue asks for half).
    pub latency_load_share: f64,
    /// Lower and upper bound on the offered latency load, submits/s.
    pub latency_rate_bounds: (f64, f64),
    /// Seconds of offered latency load.
    pub latency_s: f64,
    /// Crash repetitions per mode.
    pub crash_reps: usize,
    /// Offered load during the crash scenario, submits/s.
    pub crash_rate: f64,
    /// Seconds of load before / after the kill.
    pub crash_before_s: f64,
    /// Seconds of load after the kill.
    pub crash_after_s: f64,
    /// Simulated cluster sizes.
    pub scale_nodes: Vec<usize>,
    /// Simulated milliseconds per size.
    pub scale_simulated_ms: u64,
    /// Cluster-wide task arrivals per second in the simulator.
    pub scale_arrivals_per_sec: f64,
    /// When the simulated crash (and later rejoin) strikes, ms.
    pub scale_crash_at_ms: u64,
    /// How long the crashed simulated node stays down, ms.
    pub scale_down_ms: u64,
    /// A simulated size is skipped (with the reason in the report) when the
    /// previous size predicts it would take longer than this, wall seconds.
    pub scale_wall_s_max: f64,
    /// Nodes for the partition and slow-node scenarios (5: the minority
    /// is then two nodes).
    pub fault_nodes: u64,
    /// Offered load during the fault scenarios, submits/s.
    pub fault_rate: f64,
    /// Seconds of load before each fault.
    pub fault_before_s: f64,
    /// Seconds each fault lasts (the issue's `SIGSTOP` lasts 2 s).
    pub fault_s: f64,
    /// Seconds of load after each heal.
    pub fault_after_s: f64,
    /// The `cohort` binary the fault scenarios run as `cohort node`
    /// processes; `None` skips them (with the reason in the report).
    pub node_binary: Option<PathBuf>,
}

impl BenchOptions {
    /// Under 3 minutes on 2 cores with three modes. The simulator stops at
    /// 50 nodes: a 500-node run takes 65-85 s per mode on a loaded 2-core
    /// machine, which the fault scenarios on real processes left no room for.
    pub fn quick() -> BenchOptions {
        BenchOptions {
            preset: "quick".into(),
            throughput_nodes: vec![3, 5],
            concurrencies: vec![4, 32],
            batch_tasks: vec![1, 500],
            throughput_s: 1.5,
            limit_keys: 8,

            nodes: 3,
            latency_load_share: 0.5,
            latency_rate_bounds: (50.0, 3_000.0),
            latency_s: 3.0,
            crash_reps: 3,
            crash_rate: 200.0,
            crash_before_s: 1.0,
            crash_after_s: 2.0,
            scale_nodes: vec![5, 50],
            scale_simulated_ms: 5_000,
            scale_arrivals_per_sec: 50.0,
            scale_crash_at_ms: 1_000,
            scale_down_ms: 3_000,
            scale_wall_s_max: 60.0,
            fault_nodes: 5,
            fault_rate: 200.0,
            fault_before_s: 1.0,
            fault_s: 2.0,
            fault_after_s: 1.0,
            node_binary: None,
        }
    }

    /// The full run: more points, longer windows, 10 crashes, 5,000 nodes.
    pub fn full() -> BenchOptions {
        BenchOptions {
            preset: "full".into(),
            throughput_nodes: vec![3, 5],
            concurrencies: vec![1, 8, 32, 128, 256],
            batch_tasks: vec![1, 500],
            throughput_s: 5.0,
            limit_keys: 8,

            nodes: 3,
            latency_load_share: 0.5,
            latency_rate_bounds: (50.0, 10_000.0),
            latency_s: 10.0,
            crash_reps: 10,
            crash_rate: 300.0,
            crash_before_s: 2.0,
            crash_after_s: 4.0,
            scale_nodes: vec![5, 50, 500, 5_000],
            // The crash comes 3 s in: after a cold start of 500 leaderless
            // nodes membership is still forming at 1 s, and a crash then
            // was not seen by all within the run.
            scale_simulated_ms: 8_000,
            scale_arrivals_per_sec: 50.0,
            scale_crash_at_ms: 3_000,
            scale_down_ms: 4_000,
            scale_wall_s_max: 1_800.0,
            fault_nodes: 5,
            fault_rate: 300.0,
            fault_before_s: 3.0,
            fault_s: 2.0,
            fault_after_s: 4.0,
            node_binary: None,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Options(m.into()));
        if self.nodes < 3 || self.throughput_nodes.iter().any(|n| *n < 3) {
            return bad("clusters need at least 3 nodes (one is killed)");
        }
        if self.concurrencies.contains(&0) {
            return bad("concurrency must be at least 1");
        }
        if self.batch_tasks.is_empty() || self.batch_tasks.contains(&0) {
            return bad("batch sizes must be at least 1");
        }
        if !(self.throughput_s > 0.0 && self.latency_s > 0.0 && self.crash_after_s > 0.0) {
            return bad("windows must be positive");
        }
        if self.crash_before_s <= 0.0 || self.crash_rate <= 0.0 {
            return bad("crash load must be positive");
        }
        if self.fault_nodes < 3 {
            return bad("fault scenarios need at least 3 nodes");
        }
        if !(self.fault_rate > 0.0
            && self.fault_before_s > 0.0
            && self.fault_s > 0.0
            && self.fault_after_s > 0.0)
        {
            return bad("fault load and windows must be positive");
        }
        // The restart must leave the rejoin and the liveness phase time.
        if self.scale_crash_at_ms + self.scale_down_ms + 1_000 > self.scale_simulated_ms {
            return bad("the simulated crash must end at least 1 s before the run does");
        }
        if self.scale_nodes.contains(&0) {
            return bad("simulated clusters need a node");
        }
        Ok(())
    }
}

/// Figures of one mode on loopback.
#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    /// Mode name.
    pub mode: String,
    /// Whether the mode promises G1.
    pub durable: bool,
    /// Execution slots of each node.
    pub capacity_tasks: u32,
    /// Closed-loop throughput sweep.
    pub throughput: Vec<ThroughputPoint>,
    /// The limits point (see [`BenchOptions::limit_keys`]).
    pub limited: Option<ThroughputPoint>,
    /// Open-loop latency.
    pub latency: LatencyResult,
    /// Crash repetitions.
    pub crash: Vec<CrashRep>,
    /// Partition and slow-node scenarios, in [`Scenario::ALL`] order.
    pub faults: Vec<FaultRun>,
    /// Why the fault scenarios did not run, if they did not.
    pub faults_skipped: Option<String>,
}

/// Scale curve of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleCurve {
    /// Mode name.
    pub mode: String,
    /// One point per size.
    pub points: Vec<ScalePoint>,
    /// Sizes not run, and why.
    pub skipped: Vec<String>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Format of this JSON.
    pub format_version: u32,
    /// Where it ran.
    pub machine: Machine,
    /// What was run.
    pub options: BenchOptions,
    /// Loopback figures per mode.
    pub modes: Vec<ModeReport>,
    /// Simulator curves per mode.
    pub scale: Vec<ScaleCurve>,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
}

/// Progress lines go to stderr through this.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Runs every scenario for every mode given, in order.
pub fn run(
    options: &BenchOptions,
    real_modes: &[RealMode],
    sim_modes: &[SimMode],
    progress: Progress<'_>,
) -> Result<BenchReport, BenchError> {
    options.validate()?;
    let wall = Stopwatch::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::io("tokio runtime"))?;
    let mut modes = Vec::new();
    for mode in real_modes {
        modes.push(rt.block_on(run_mode(options, mode, &mut *progress))?);
    }
    drop(rt);
    let mut scale = Vec::new();
    for mode in sim_modes {
        let settings = ScaleSettings {
            simulated_ms: options.scale_simulated_ms,
            arrivals_per_sec: options.scale_arrivals_per_sec,
            crash_at_ms: options.scale_crash_at_ms,
            down_ms: options.scale_down_ms,
            seed: 1,
        };
        let mut curve = ScaleCurve {
            mode: mode.name.into(),
            points: Vec::new(),
            skipped: Vec::new(),
        };
        for &n in &options.scale_nodes {
            if let Some(why) = curve.points.last().and_then(|prev| {
                too_big(prev, n, options.scale_wall_s_max, machine::available_kib())
            }) {
                progress(&format!("scale {}: {n} nodes skipped: {why}", mode.name));
                curve.skipped.push(format!("{n} nodes: {why}"));
                continue;
            }
            progress(&format!("scale {}: {n} simulated nodes", mode.name));
            let p = (mode.run)(n, &settings);
            progress(&format!(
                "scale {}: {n} nodes: busiest {:.0} msgs/s, average {:.0} msgs/s, \
                 crash detected by all {}, rejoin known by all {} ({:.1}s wall)",
                mode.name,
                p.busiest_msgs_per_s,
                p.average_msgs_per_s,
                ms_or_dash(p.crash_detected_ms),
                ms_or_dash(p.join_known_ms),
                p.wall_s
            ));
            curve.points.push(p);
        }
        scale.push(curve);
    }
    Ok(BenchReport {
        format_version: 1,
        machine: Machine::detect(),
        options: options.clone(),
        modes,
        scale,
        wall_s: wall.seconds(),
    })
}

/// The throughput sweep of one mode: every cluster size, batch size and
/// concurrency of `o`, one fresh cluster per point.
pub async fn throughput_sweep(
    o: &BenchOptions,
    mode: &RealMode,
    progress: Progress<'_>,
) -> Result<Vec<ThroughputPoint>, BenchError> {
    let mut throughput = Vec::new();
    for &n in &o.throughput_nodes {
        for &b in &o.batch_tasks {
            for &c in &o.concurrencies {
                let window = Duration::from_secs_f64(o.throughput_s);
                let p = real::throughput(mode, n, c, b, 0, window).await?;
                progress(&format!(
                    "{}: {n} nodes, {c} clients x {b} tasks: {:.0} submits/s, {:.0} completions/s, {} refused ({} overloaded)",
                    mode.name, p.submits_per_s, p.completions_per_s, p.refused, p.overloaded
                ));
                throughput.push(p);
            }
        }
    }
    Ok(throughput)
}

async fn run_mode(
    o: &BenchOptions,
    mode: &RealMode,
    progress: Progress<'_>,
) -> Result<ModeReport, BenchError> {
    let throughput = throughput_sweep(o, mode, &mut *progress).await?;
    let limited = match (o.limit_keys, o.concurrencies.iter().max()) {
        (0, _) | (_, None) => None,
        (keys, Some(&c)) => {
            let window = Duration::from_secs_f64(o.throughput_s);
            let p = real::throughput(mode, o.nodes, c, 1, keys, window).await?;
            progress(&format!(
                "{}: {} nodes, {c} clients x 1 tasks, limited ({keys} keys): {:.0} submits/s, {:.0} completions/s, {} refused ({} overloaded)",
                mode.name, o.nodes, p.submits_per_s, p.completions_per_s, p.refused, p.overloaded
            ));
            Some(p)
        }
    };
    // The latency load is half the best single-submit rate: the latency
    // scenario submits one task per request.
    let best = throughput
        .iter()
        .filter(|p| p.nodes == o.nodes && p.batch_tasks == 1)
        .map(|p| p.submits_per_s)
        .fold(0.0, f64::max);
    let (lo, hi) = o.latency_rate_bounds;
    let rate = (best * o.latency_load_share).clamp(lo, hi);
    let latency = real::latency(mode, o.nodes, rate, Duration::from_secs_f64(o.latency_s)).await?;
    progress(&format!(
        "{}: latency at {rate:.0}/s: ack p50 {:.1} p99 {:.1} ms (outside disk stalls {:.1}), finish p50 {:.1} p99 {:.1} ms; disk stalls {} ({:.0} ms)",
        mode.name,
        latency.ack.p50_ms,
        latency.ack.p99_ms,
        latency.ack_outside_disk_stalls.p99_ms,
        latency.finish.p50_ms,
        latency.finish.p99_ms,
        latency.disk.stalls,
        latency.disk.stalled_ms
    ));
    let mut crash = Vec::new();
    for rep in 0..o.crash_reps {
        let r = real::crash(
            mode,
            o.nodes,
            o.crash_rate,
            Duration::from_secs_f64(o.crash_before_s),
            Duration::from_secs_f64(o.crash_after_s),
        )
        .await?;
        progress(&format!(
            "{}: crash {}/{}: killed n{}: no ack {:.0} ms, no completion {:.0} ms, {} rerun",
            mode.name,
            rep + 1,
            o.crash_reps,
            r.victim,
            r.no_ack_ms,
            r.no_completion_ms,
            r.tasks_rerun
        ));
        crash.push(r);
    }
    let (faults, faults_skipped) = run_faults(o, mode, progress).await?;
    Ok(ModeReport {
        mode: mode.name.into(),
        durable: mode.durable,
        capacity_tasks: mode.capacity_tasks,
        throughput,
        limited,
        latency,
        crash,
        faults,
        faults_skipped,
    })
}

/// The partition and slow-node scenarios of one mode, or why they did not run.
async fn run_faults(
    o: &BenchOptions,
    mode: &RealMode,
    progress: Progress<'_>,
) -> Result<(Vec<FaultRun>, Option<String>), BenchError> {
    if !mode.durable {
        // Without replication a cut-off or stopped coordinator is simply an
        // outage; there is no failover to measure.
        return Ok((Vec::new(), Some("the mode does not replicate".into())));
    }
    if let Some(why) = faults::skip_reason(o.node_binary.as_deref()) {
        progress(&format!("{}: fault scenarios skipped: {why}", mode.name));
        return Ok((Vec::new(), Some(why)));
    }
    let settings = FaultSettings {
        binary: o.node_binary.clone().unwrap_or_default(),
        mode: mode.name.into(),
        nodes: o.fault_nodes,
        rate: o.fault_rate,
        before_s: o.fault_before_s,
        fault_s: o.fault_s,
        after_s: o.fault_after_s,
    };
    let mut runs = Vec::new();
    for scenario in Scenario::ALL {
        let r = faults::run_scenario(&settings, scenario).await?;
        progress(&format!(
            "{}: {} (n{:?}): {} suspicions, {} declared down, {} rerun, {} unfinished ({} lost); \
             ack p99 {:.1} ms before, {:.1} ms during",
            mode.name,
            scenario.name(),
            r.victims,
            r.suspicions,
            r.declared_down,
            r.tasks_rerun,
            r.unfinished,
            r.lost,
            r.ack_before.p99_ms,
            r.ack_during.p99_ms
        ));
        runs.push(r);
    }
    Ok((runs, None))
}

/// Why simulating `n` nodes would not fit, predicted from the run at the
/// previous size: wall time grows at least with the square of the size
/// (events grow with the size, and so does what each event touches;
/// measured 50 → 500: ×100 to ×260), and so does memory (every node holds
/// every member) against `available_kib`.
/// How many times the measured memory per node a larger size is
/// predicted to need per node.
const SCALE_MEMORY_MARGIN: f64 = 2.0;

fn too_big(
    prev: &ScalePoint,
    n: usize,
    wall_s_max: f64,
    available_kib: Option<u64>,
) -> Option<String> {
    let growth = n as f64 / prev.nodes.max(1) as f64;
    let wall_s = prev.wall_s * growth * growth;
    if wall_s > wall_s_max {
        return Some(format!(
            "predicted at least {wall_s:.0} s of wall time from {} nodes ({:.1} s), over the {wall_s_max:.0} s limit",
            prev.nodes, prev.wall_s
        ));
    }
    // Memory per simulated node stays about flat with the cluster's size
    // (leader: 805 KiB at 150 nodes, 972 at 5,000; leaderless: about 1.1
    // MB at 5,000), so the total grows with `n`: twice that, for margin.
    // (Growing the per-node figure with the size too predicted 36 GB for
    // a 5,000-node leader run that peaked at 4.9 GB, and skipped it.)
    let per_node = prev.memory_kib_per_node.unwrap_or(0.0);
    let need_kib = per_node * n as f64 * SCALE_MEMORY_MARGIN;
    match available_kib {
        Some(avail) if need_kib > avail as f64 * 0.8 => Some(format!(
            "predicted {:.1} GiB of memory from {} nodes ({per_node:.0} KiB/node), {:.1} GiB available",
            need_kib / (1 << 20) as f64,
            prev.nodes,
            avail as f64 / (1 << 20) as f64
        )),
        _ => None,
    }
}

fn ms_or_dash(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |ms| format!("{ms:.0} ms"))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The terminal table: one column per mode.
pub fn table(report: &BenchReport) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let modes = &report.modes;
    let mut row = |name: String, f: &dyn Fn(&ModeReport) -> String| {
        rows.push((name, modes.iter().map(f).collect()));
    };
    for &n in &report.options.throughput_nodes {
        for &b in &report.options.batch_tasks {
            for &c in &report.options.concurrencies {
                row(
                    format!("{n} nodes, {c} clients x {b} tasks: submits/s / done/s"),
                    &|m| {
                        m.throughput
                            .iter()
                            .find(|p| p.nodes == n && p.concurrency == c && p.batch_tasks == b)
                            .map(|p| format!("{:.0} / {:.0}", p.submits_per_s, p.completions_per_s))
                            .unwrap_or_else(|| "-".into())
                    },
                );
            }
        }
    }
    if let (keys @ 1.., Some(&c)) = (
        report.options.limit_keys,
        report.options.concurrencies.iter().max(),
    ) {
        let n = report.options.nodes;
        row(
            format!("{n} nodes, {c} clients x 1 tasks, limited ({keys} keys): submits/s / done/s"),
            &|m| {
                m.limited.as_ref().map_or("-".into(), |p| {
                    format!("{:.0} / {:.0}", p.submits_per_s, p.completions_per_s)
                })
            },
        );
    }
    row("latency: offered submits/s".into(), &|m| {
        format!("{:.0}", m.latency.offered_per_s)
    });
    row("submit->ack p50/p99/p99.9 ms".into(), &|m| {
        let a = &m.latency.ack;
        format!("{:.1}/{:.1}/{:.1}", a.p50_ms, a.p99_ms, a.p999_ms)
    });
    row("  outside disk stalls, p50/p99/p99.9 ms".into(), &|m| {
        let a = &m.latency.ack_outside_disk_stalls;
        format!("{:.1}/{:.1}/{:.1}", a.p50_ms, a.p99_ms, a.p999_ms)
    });
    row(
        format!(
            "  disk: fsync p50/p99/max ms, stalls >= {} ms",
            disk::STALL_MS
        ),
        &|m| {
            let d = &m.latency.disk;
            match &d.error {
                Some(_) => "unavailable".into(),
                None => format!(
                    "{:.2}/{:.1}/{:.0}, {} ({:.0} ms)",
                    d.fsync.p50_ms, d.fsync.p99_ms, d.fsync.max_ms, d.stalls, d.stalled_ms
                ),
            }
        },
    );
    row("submit->finish p50/p99/p99.9 ms".into(), &|m| {
        let a = &m.latency.finish;
        format!("{:.1}/{:.1}/{:.1}", a.p50_ms, a.p99_ms, a.p999_ms)
    });
    row("crash: no ack, median/max ms".into(), &|m| {
        let v: Vec<f64> = m.crash.iter().map(|r| r.no_ack_ms).collect();
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0}/{:.0}", median(v), max)
    });
    row("crash: no completion, median/max ms".into(), &|m| {
        let v: Vec<f64> = m.crash.iter().map(|r| r.no_completion_ms).collect();
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0}/{:.0}", median(v), max)
    });
    row("crash: reps where acks resumed".into(), &|m| {
        format!(
            "{}/{}",
            m.crash.iter().filter(|r| r.acks_resumed).count(),
            m.crash.len()
        )
    });
    row("crash: tasks rerun / acked never done".into(), &|m| {
        let rerun: u64 = m.crash.iter().map(|r| r.tasks_rerun).sum();
        let lost: u64 = m.crash.iter().map(|r| r.unfinished).sum();
        format!("{rerun} / {lost}")
    });
    for scenario in Scenario::ALL {
        let find = move |m: &ModeReport| m.faults.iter().find(|r| r.scenario == scenario).cloned();
        let name = scenario.name();
        row(format!("{name}: suspicions / declared down"), &|m| {
            find(m).map_or("-".into(), |r| {
                format!("{} / {}", r.suspicions, r.declared_down)
            })
        });
        row(format!("{name}: ack p50/p99 ms before"), &|m| {
            find(m).map_or("-".into(), |r| {
                format!("{:.1}/{:.1}", r.ack_before.p50_ms, r.ack_before.p99_ms)
            })
        });
        row(format!("{name}: ack p50/p99 ms during"), &|m| {
            find(m).map_or("-".into(), |r| {
                format!("{:.1}/{:.1}", r.ack_during.p50_ms, r.ack_during.p99_ms)
            })
        });
        row(format!("{name}: rerun / acked never done"), &|m| {
            find(m).map_or("-".into(), |r| {
                format!("{} / {}", r.tasks_rerun, r.unfinished)
            })
        });
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = format!("{:width$}", "");
    for m in modes {
        out += &format!("  {:>18}", m.mode);
    }
    out.push('\n');
    for (name, cells) in rows {
        out += &format!("{name:width$}");
        for c in cells {
            out += &format!("  {c:>18}");
        }
        out.push('\n');
    }
    for curve in &report.scale {
        out += &format!("\nscale ({} mode, simulator):\n", curve.mode);
        out += "   nodes   busiest msgs/s   average msgs/s   KiB/node   crash seen by all   rejoin known by all   wall s\n";
        for p in &curve.points {
            out += &format!(
                "{:>8} {:>16.0} {:>16.1} {:>10} {:>19} {:>21} {:>8.1}\n",
                p.nodes,
                p.busiest_msgs_per_s,
                p.average_msgs_per_s,
                p.memory_kib_per_node
                    .map_or_else(|| "-".into(), |k| format!("{k:.1}")),
                ms_or_dash(p.crash_detected_ms),
                ms_or_dash(p.join_known_ms),
                p.wall_s
            );
        }
        for s in &curve.skipped {
            out += &format!("  skipped: {s}\n");
        }
    }
    out
}

/// Writes `bench.json` and the SVG plots into `dir`; returns the files written.
pub fn write_outputs(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let mut write = |name: &str, text: String| -> Result<(), BenchError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
        files.push(path);
        Ok(())
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| BenchError::Io {
        what: "json".into(),
        source: std::io::Error::other(e),
    })?;
    write("bench.json", json)?;
    let cdf = |pick: fn(&ModeReport) -> &real::Percentiles| {
        report
            .modes
            .iter()
            .map(|m| svg::Series {
                label: m.mode.clone(),
                points: pick(m).cdf.clone(),
            })
            .collect()
    };
    for (file, what, pick) in [
        (
            "latency_ack_cdf.svg",
            "submit -> ack",
            (|m: &ModeReport| &m.latency.ack) as fn(&ModeReport) -> &real::Percentiles,
        ),
        ("latency_finish_cdf.svg", "submit -> finish", |m| {
            &m.latency.finish
        }),
    ] {
        let chart = svg::Chart {
            title: format!("Latency CDF, {what} (open loop)"),
            x_label: "latency ms".into(),
            y_label: "fraction of requests".into(),
            log_x: true,
            log_y: false,
            series: cdf(pick),
        };
        write(file, chart.render())?;
    }
    for m in &report.modes {
        let series = m
            .crash
            .iter()
            .enumerate()
            .map(|(i, r)| svg::Series {
                label: format!("rep {} (n{})", i + 1, r.victim),
                points: r
                    .completions_per_bin
                    .iter()
                    .enumerate()
                    .map(|(b, c)| {
                        let t = (b as u64 * real::BIN_MS) as f64 / 1000.0 - r.kill_at_s;
                        (t, *c as f64 * 1000.0 / real::BIN_MS as f64)
                    })
                    .collect(),
            })
            .collect();
        let chart = svg::Chart {
            title: format!("{}: completions around the crash (kill at 0)", m.mode),
            x_label: "seconds from kill".into(),
            y_label: "tasks decided per second".into(),
            log_x: false,
            log_y: false,
            series,
        };
        write(&format!("crash_{}.svg", m.mode), chart.render())?;
        if m.faults.is_empty() {
            continue;
        }
        let series = m
            .faults
            .iter()
            .map(|r| svg::Series {
                label: format!("{} (n{:?})", r.scenario.name(), r.victims),
                points: r
                    .completions_per_bin
                    .iter()
                    .enumerate()
                    .map(|(b, c)| {
                        let t = (b as u64 * real::BIN_MS) as f64 / 1000.0 - r.fault_at_s;
                        (t, *c as f64 * 1000.0 / real::BIN_MS as f64)
                    })
                    .collect(),
            })
            .collect();
        let chart = svg::Chart {
            title: format!(
                "{}: completions around each fault (fault at 0, healed at {:.0} s)",
                m.mode, report.options.fault_s
            ),
            x_label: "seconds from fault".into(),
            y_label: "tasks decided per second".into(),
            log_x: false,
            log_y: false,
            series,
        };
        write(&format!("faults_{}.svg", m.mode), chart.render())?;
    }
    if !report.scale.is_empty() {
        let mut series = Vec::new();
        for c in &report.scale {
            for (label, pick) in [
                (
                    "busiest",
                    (|p: &ScalePoint| p.busiest_msgs_per_s) as fn(&ScalePoint) -> f64,
                ),
                ("average", |p| p.average_msgs_per_s),
            ] {
                series.push(svg::Series {
                    label: format!("{} {label}", c.mode),
                    points: c.points.iter().map(|p| (p.nodes as f64, pick(p))).collect(),
                });
            }
        }
        let chart = svg::Chart {
            title: "Messages handled per node vs cluster size (simulator)".into(),
            x_label: "nodes".into(),
            y_label: "messages/s (sent + received)".into(),
            log_x: true,
            log_y: true,
            series,
        };
        write("scale_msgs.svg", chart.render())?;
        let mut series = Vec::new();
        for c in &report.scale {
            for (label, pick) in [
                (
                    "crash seen by all",
                    (|p: &ScalePoint| p.crash_detected_ms) as fn(&ScalePoint) -> Option<f64>,
                ),
                ("rejoin known by all", |p| p.join_known_ms),
            ] {
                let points: Vec<(f64, f64)> = c
                    .points
                    .iter()
                    .filter_map(|p| pick(p).map(|ms| (p.nodes as f64, ms.max(1.0))))
                    .collect();
                if !points.is_empty() {
                    series.push(svg::Series {
                        label: format!("{} {label}", c.mode),
                        points,
                    });
                }
            }
        }
        if !series.is_empty() {
            let chart = svg::Chart {
                title: "Crash detection and rejoin, every node's view (simulator)".into(),
                x_label: "nodes".into(),
                y_label: "ms".into(),
                log_x: true,
                log_y: true,
                series,
            };
            write("scale_membership.svg", chart.render())?;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(nodes: usize, wall_s: f64, kib: Option<f64>) -> ScalePoint {
        ScalePoint {
            nodes,
            simulated_s: 6.0,
            tasks_submitted: 0,
            tasks_final: 0,
            busiest_msgs_per_s: 0.0,
            average_msgs_per_s: 0.0,
            busiest_node: 1,
            messages: 0,
            memory_kib_per_node: kib,
            crashed_node: nodes as u64,
            crash_detected_ms: None,
            join_known_ms: None,
            crashed_leader: false,
            wall_s,
            violations: 0,
            first_violation: None,
        }
    }

    #[test]
    fn a_size_the_previous_one_predicts_too_slow_or_too_big_is_skipped_with_the_reason() {
        let gib = Some(1 << 20);
        let why = too_big(&point(500, 80.0, None), 5_000, 1_800.0, gib).expect("too slow");
        assert!(why.contains("wall time"), "{why}");
        assert_eq!(too_big(&point(5, 0.1, Some(10.0)), 50, 60.0, gib), None);
        // 10 KiB per node at 5 nodes: predicted 20 KiB per node at 50,
        // 1,000 KiB in all, which must fit in 80% of what is available.
        assert_eq!(
            too_big(&point(5, 0.1, Some(10.0)), 50, 60.0, Some(1_250)),
            None
        );
        let why = too_big(&point(5, 0.1, Some(10.0)), 50, 60.0, Some(1_249)).expect("too big");
        assert!(why.contains("memory"), "{why}");
        assert_eq!(too_big(&point(5, 0.1, Some(10.0)), 50, 60.0, None), None);
    }
}
