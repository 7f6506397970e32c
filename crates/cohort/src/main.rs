//! The `cohort` binary: a thin shell over the library crates.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cmd_bench;
mod cmd_certs;
mod cmd_client;
mod cmd_demo;
mod cmd_node;
mod cmd_sim;
mod modes;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// glibc's allocator took about 14% of a loaded node's samples (arena locks,
// consolidation); mimalloc's thread-local free lists take most of that back.
// Built without transparent huge pages: with them, a growing task table had
// the kernel zero 2 MiB pages, ~19% of samples under batch submits.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// cohort: a fault-tolerant task cluster, single-leader or leaderless.
#[derive(Parser, Debug)]
#[command(name = "cohort", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the deterministic simulator over one or many seeds.
    Sim(cmd_sim::SimArgs),
    /// Run one node.
    Node(cmd_node::NodeArgs),
    /// Submit a task to a node.
    Submit(cmd_client::SubmitArgs),
    /// Read a task.
    Get(cmd_client::GetArgs),
    /// Wait for a task to be final (non-zero exit unless it succeeded).
    Wait(cmd_client::WaitArgs),
    /// Cancel a task.
    Cancel(cmd_client::CancelArgs),
    /// Run failed or cancelled tasks again (one id, several, or --failed).
    Retry(cmd_client::RetryArgs),
    /// List the cluster's tasks (merging every member's view where needed).
    List(cmd_client::ListArgs),
    /// Show the cluster as a node sees it.
    Members(cmd_client::MembersArgs),
    /// Show or change the ring of a leaderless cluster.
    Ring(cmd_client::RingArgs),
    /// Drain a node: no new work; running tasks finish or are handed back at a deadline.
    Drain(cmd_client::DrainArgs),
    /// Create, show or delete a schedule stored in the cluster (one firing per tick).
    Schedule(cmd_client::ScheduleArgs),
    /// A 5-node cluster on loopback, nodes killed mid-run, then a table.
    Demo(cmd_demo::DemoArgs),
    /// Generate a development CA, node certificates and API tokens.
    Certs(cmd_certs::CertsArgs),
    /// Throughput, latency, crashes on loopback; scale in the simulator.
    Bench(cmd_bench::BenchArgs),
}

/// Logs to stderr; `RUST_LOG` overrides the default (`warn`).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Sim(args) => cmd_sim::run(args),
        Command::Node(a) => done(cmd_node::run(a)),
        Command::Submit(a) => done(cmd_client::submit(a)),
        Command::Get(a) => done(cmd_client::get(a)),
        Command::Wait(a) => done(cmd_client::wait(a)),
        Command::Cancel(a) => done(cmd_client::cancel(a)),
        Command::Retry(a) => done(cmd_client::retry(a)),
        Command::Members(a) => done(cmd_client::members(a)),
        Command::Ring(a) => done(cmd_client::ring(a)),
        Command::Drain(a) => done(cmd_client::drain(a)),
        Command::Schedule(a) => done(cmd_client::schedule(a)),
        Command::List(a) => done(cmd_client::list(a)),
        Command::Demo(a) => done(cmd_demo::run(a)),
        Command::Certs(a) => done(cmd_certs::run(a)),
        Command::Bench(a) => done(cmd_bench::run(a)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `cohort sim ... | head` closes stdout early: end quietly instead of
/// panicking in `println!`.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
