#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
//! The `cohort` binary.

mod cmd_client;
mod cmd_demo;
mod cmd_node;
mod modes;

use clap::{Parser, Subcommand};

/// A fault-tolerant task cluster.
#[derive(Parser, Debug)]
#[command(name = "cohort", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node.
    Node(cmd_node::NodeArgs),
    /// Submit a task to a node.
    Submit(cmd_client::SubmitArgs),
    /// Read a task.
    Get(cmd_client::GetArgs),
    /// Wait for a task to be final.
    Wait(cmd_client::WaitArgs),
    /// Cancel a task.
    Cancel(cmd_client::CancelArgs),
    /// Show the cluster as a node sees it.
    Members(cmd_client::MembersArgs),
    /// A 5-node cluster on loopback, killed mid-run, then a table.
    Demo(cmd_demo::DemoArgs),
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Node(a) => cmd_node::run(a),
        Command::Submit(a) => cmd_client::submit(a),
        Command::Get(a) => cmd_client::get(a),
        Command::Wait(a) => cmd_client::wait(a),
        Command::Cancel(a) => cmd_client::cancel(a),
        Command::Members(a) => cmd_client::members(a),
        Command::Demo(a) => cmd_demo::run(a),
    }
}
