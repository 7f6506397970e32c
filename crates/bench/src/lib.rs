//! `cohort-bench`: the measured comparison of cohort's modes.
//!
//! - [`real`]: real nodes in this process on loopback (TCP, redb with
//!   fsync, HTTP): closed-loop throughput, open-loop latency (each request
//!   timed from when it was due, so a stall is not hidden by coordinated
//!   omission), and a crash of the coordinator or busiest node under load.
//! - [`scale`]: the same cores in the deterministic simulator at 5 to 5,000
//!   nodes: messages per second handled by the busiest and the average node.
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

mod error;
pub mod machine;
pub mod real;
pub mod scale;
pub mod svg;

pub use error::BenchError;
pub use machine::Machine;

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
}

impl BenchOptions {
    /// Under 3 minutes on 2 cores with three modes (500-node simulations take
    /// about 30 s each, hence 2 simulated seconds).
    pub fn quick() -> BenchOptions {
        BenchOptions {
            preset: "quick".into(),
            throughput_nodes: vec![3, 5],
            concurrencies: vec![4, 32],
            batch_tasks: vec![1, 500],
            throughput_s: 1.5,

            nodes: 3,
            latency_load_share: 0.5,
            latency_rate_bounds: (50.0, 3_000.0),
            latency_s: 3.0,
            crash_reps: 3,
            crash_rate: 200.0,
            crash_before_s: 1.0,
            crash_after_s: 2.0,
            scale_nodes: vec![5, 50, 500],
            scale_simulated_ms: 2_000,
            scale_arrivals_per_sec: 50.0,
        }
    }

    /// The full run: more points, longer windows, 10 crashes, 5,000 nodes.
    pub fn full() -> BenchOptions {
        BenchOptions {
            preset: "full".into(),
            throughput_nodes: vec![3, 5],
            concurrencies: vec![1, 8, 32, 128],
            batch_tasks: vec![1, 500],
            throughput_s: 5.0,

            nodes: 3,
            latency_load_share: 0.5,
            latency_rate_bounds: (50.0, 10_000.0),
            latency_s: 10.0,
            crash_reps: 10,
            crash_rate: 300.0,
            crash_before_s: 2.0,
            crash_after_s: 4.0,
            scale_nodes: vec![5, 50, 500, 5_000],
            scale_simulated_ms: 10_000,
            scale_arrivals_per_sec: 50.0,
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
    /// Closed-loop throughput sweep.
    pub throughput: Vec<ThroughputPoint>,
    /// Open-loop latency.
    pub latency: LatencyResult,
    /// Crash repetitions.
    pub crash: Vec<CrashRep>,
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
            seed: 1,
        };
        let mut curve = ScaleCurve {
            mode: mode.name.into(),
            points: Vec::new(),
            skipped: Vec::new(),
        };
        for &n in &options.scale_nodes {
            progress(&format!("scale {}: {n} simulated nodes", mode.name));
            let p = (mode.run)(n, &settings);
            progress(&format!(
                "scale {}: {n} nodes: busiest {:.0} msgs/s, average {:.0} msgs/s ({:.1}s wall)",
                mode.name, p.busiest_msgs_per_s, p.average_msgs_per_s, p.wall_s
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
                let p = real::throughput(mode, n, c, b, window).await?;
                progress(&format!(
                    "{}: {n} nodes, {c} clients x {b} tasks: {:.0} submits/s, {:.0} completions/s, {} refused",
                    mode.name, p.submits_per_s, p.completions_per_s, p.refused
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
        "{}: latency at {rate:.0}/s: ack p50 {:.1} p99 {:.1} ms, finish p50 {:.1} p99 {:.1} ms",
        mode.name,
        latency.ack.p50_ms,
        latency.ack.p99_ms,
        latency.finish.p50_ms,
        latency.finish.p99_ms
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
    Ok(ModeReport {
        mode: mode.name.into(),
        durable: mode.durable,
        throughput,
        latency,
        crash,
    })
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
    row("latency: offered submits/s".into(), &|m| {
        format!("{:.0}", m.latency.offered_per_s)
    });
    row("submit->ack p50/p99/p99.9 ms".into(), &|m| {
        let a = &m.latency.ack;
        format!("{:.1}/{:.1}/{:.1}", a.p50_ms, a.p99_ms, a.p999_ms)
    });
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
        out += "   nodes   busiest msgs/s   average msgs/s   KiB/node   wall s\n";
        for p in &curve.points {
            out += &format!(
                "{:>8} {:>16.0} {:>16.1} {:>10} {:>8.1}\n",
                p.nodes,
                p.busiest_msgs_per_s,
                p.average_msgs_per_s,
                p.memory_kib_per_node
                    .map_or_else(|| "-".into(), |k| format!("{k:.1}")),
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
    }
    Ok(files)
}
