//! `cohort bench`: the measured comparison of the modes (see `cohort-bench`).
//! Every mode of the binary's table is measured on loopback; every mode the
//! simulator knows is scaled.

use crate::modes::{FirstVictim, Mode, MODES};
use clap::Args;
use cohort_bench::real::{RealMode, Victim};
use cohort_bench::scale::SIM_MODES;
use cohort_bench::BenchOptions;
use std::path::PathBuf;

/// Run the benchmarks.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Short windows, 3 crashes, the fault scenarios once, up to 500 simulated nodes (under 3 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Where `bench.json` and the SVG plots go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Only these modes (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Skip the simulator scale curves.
    #[arg(long)]
    pub no_scale: bool,
    /// Skip the loopback scenarios.
    #[arg(long)]
    pub no_real: bool,
    /// Simulate these cluster sizes instead of the preset's (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub scale_nodes: Vec<usize>,
    /// Override the simulated ms of each scale run.
    #[arg(long)]
    pub scale_simulated_ms: Option<u64>,
    /// Override when, in simulated ms, the scale run crashes its last node
    /// (after a cold start of 500 or more leaderless nodes membership is
    /// still forming 1 s in: a later crash times detection alone).
    #[arg(long)]
    pub scale_crash_at_ms: Option<u64>,
    /// Override how long, in simulated ms, the crashed node stays down.
    #[arg(long)]
    pub scale_down_ms: Option<u64>,
    /// Run only the loopback throughput sweep and print its points as JSON
    /// lines (for profiling one point at a time).
    #[arg(long)]
    pub throughput_only: bool,
    /// Override the sweep's cluster sizes (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub throughput_nodes: Vec<u64>,
    /// Override the sweep's client concurrencies (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub concurrencies: Vec<usize>,
    /// Override the sweep's tasks per submit (comma-separated; 1 = single
    /// submits, more = `POST /v1/tasks:batch`).
    #[arg(long, value_delimiter = ',')]
    pub batch_tasks: Vec<usize>,
    /// Override the seconds per throughput point.
    #[arg(long)]
    pub throughput_s: Option<f64>,
    /// Run only the open-loop latency scenario at this many submits/s (on
    /// the preset's cluster size, for the preset's window) and print its
    /// result as JSON lines (for profiling one load at a time).
    #[arg(long)]
    pub latency_only_rate: Option<f64>,
    /// Execution slots of each node in the loopback scenarios.
    #[arg(long, default_value_t = cohort_bench::real::CAPACITY_TASKS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity_tasks: u32,
}

fn real_mode(m: &Mode, capacity_tasks: u32) -> RealMode {
    RealMode {
        name: m.name,
        start: m.start,
        victim: match m.first_victim {
            FirstVictim::Fixed(id) => Victim::Fixed(id),
            FirstVictim::Busiest => Victim::Busiest,
            FirstVictim::Leader => Victim::Leader,
        },
        durable: m.durable,
        capacity_tasks,
    }
}

/// Runs the benchmarks, prints the table, writes the files.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::init_tracing();
    for name in &args.modes {
        crate::modes::find(name)?;
    }
    let wanted = |name: &str| args.modes.is_empty() || args.modes.iter().any(|m| m == name);
    let real: Vec<RealMode> = if args.no_real {
        Vec::new()
    } else {
        MODES
            .iter()
            .filter(|m| wanted(m.name))
            .map(|m| real_mode(m, args.capacity_tasks))
            .collect()
    };
    let sim: Vec<_> = if args.no_scale {
        Vec::new()
    } else {
        SIM_MODES
            .iter()
            .filter(|m| wanted(m.name))
            .copied()
            .collect()
    };
    let mut options = if args.quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    if !args.scale_nodes.is_empty() {
        options.scale_nodes = args.scale_nodes.clone();
    }
    if let Some(ms) = args.scale_simulated_ms {
        options.scale_simulated_ms = ms;
    }
    if let Some(ms) = args.scale_crash_at_ms {
        options.scale_crash_at_ms = ms;
    }
    if let Some(ms) = args.scale_down_ms {
        options.scale_down_ms = ms;
    }
    // The partition and SIGSTOP scenarios run this binary as `cohort node`.
    options.node_binary = std::env::current_exe().ok();
    if !args.throughput_nodes.is_empty() {
        options.throughput_nodes = args.throughput_nodes.clone();
    }
    if !args.concurrencies.is_empty() {
        options.concurrencies = args.concurrencies.clone();
    }
    if !args.batch_tasks.is_empty() {
        options.batch_tasks = args.batch_tasks.clone();
    }
    if let Some(s) = args.throughput_s {
        options.throughput_s = s;
    }
    if args.throughput_only {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        for mode in &real {
            let points = rt.block_on(cohort_bench::throughput_sweep(
                &options,
                mode,
                &mut |line| eprintln!("  {line}"),
            ))?;
            for p in points {
                println!("{}", serde_json::json!({"mode": mode.name, "point": p}));
            }
        }
        return Ok(());
    }
    if let Some(rate) = args.latency_only_rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--latency-only-rate must be a positive number of submits/s"
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let window = std::time::Duration::from_secs_f64(options.latency_s);
        for mode in &real {
            let r = rt.block_on(cohort_bench::real::latency(
                mode,
                options.nodes,
                rate,
                window,
            ))?;
            println!("{}", serde_json::json!({"mode": mode.name, "latency": r}));
        }
        return Ok(());
    }
    let report = cohort_bench::run(&options, &real, &sim, &mut |line| eprintln!("  {line}"))?;
    println!();
    print!("{}", cohort_bench::table(&report));
    let files = cohort_bench::write_outputs(&report, &args.out)?;
    println!(
        "\n{} on {} cores ({}), {:.0}s; wrote:",
        report.options.preset, report.machine.cores, report.machine.cpu_model, report.wall_s
    );
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}
