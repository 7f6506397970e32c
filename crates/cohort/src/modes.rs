//! The coordination modes this binary can run: one row per mode. Adding a
//! mode (leader, leaderless) is adding a row.

use cohort_core::NodeId;
use cohort_runtime::{Listeners, NodeOptions, RunningNode, RuntimeConfig, RuntimeError};
use std::future::Future;
use std::pin::Pin;

/// Starts a node of one mode with that mode's default settings.
pub type StartFn = fn(
    RuntimeConfig,
    NodeOptions,
    Listeners,
) -> Pin<Box<dyn Future<Output = Result<RunningNode, RuntimeError>> + Send>>;

/// Which node the demo kills first.
#[derive(Clone, Copy, Debug)]
pub enum FirstVictim {
    /// A fixed coordinator (static: the lowest member id).
    Fixed(NodeId),
    /// Whichever node calls itself leader in `/v1/cluster` at that moment.
    Leader,
    /// The node that has run the most tasks so far (leaderless: no node is special).
    Busiest,
}

/// One mode.
pub struct Mode {
    /// `--mode` value.
    pub name: &'static str,
    /// One line for the demo table.
    pub about: &'static str,
    /// Whether the mode promises G1 (acknowledged tasks survive a minority
    /// crash); the demo fails if such a mode loses a task.
    pub durable: bool,
    /// Whom the demo kills first.
    pub first_victim: FirstVictim,
    /// Starts a node.
    pub start: StartFn,
}

fn start_static(
    config: RuntimeConfig,
    options: NodeOptions,
    listeners: Listeners,
) -> Pin<Box<dyn Future<Output = Result<RunningNode, RuntimeError>> + Send>> {
    Box::pin(async move {
        let mode = cohort_static::StaticConfig::default();
        mode.validate(&config.peers)
            .map_err(|e| RuntimeError::Config(format!("static mode: {e}")))?;
        cohort_runtime::start::<cohort_static::StaticNode>(config, mode, options, listeners).await
    })
}

fn start_leader(
    config: RuntimeConfig,
    options: NodeOptions,
    listeners: Listeners,
) -> Pin<Box<dyn Future<Output = Result<RunningNode, RuntimeError>> + Send>> {
    Box::pin(async move {
        let mode = cohort_leader::ValidLeaderConfig::default();
        cohort_runtime::start::<cohort_leader::LeaderNode>(config, mode, options, listeners).await
    })
}

fn start_leaderless(
    config: RuntimeConfig,
    options: NodeOptions,
    listeners: Listeners,
) -> Pin<Box<dyn Future<Output = Result<RunningNode, RuntimeError>> + Send>> {
    Box::pin(start_leaderless_with(config, options, listeners, None))
}

/// Starts a leaderless node whose ring at epoch 0 is `initial_ring`
/// (`None`: every member), the mode's other settings at their defaults.
pub async fn start_leaderless_with(
    config: RuntimeConfig,
    options: NodeOptions,
    listeners: Listeners,
    initial_ring: Option<Vec<NodeId>>,
) -> Result<RunningNode, RuntimeError> {
    let mode = cohort_leaderless::LeaderlessConfig {
        initial_ring,
        ..cohort_leaderless::LeaderlessConfig::default()
    };
    start_leaderless_config(config, options, listeners, mode).await
}

/// Starts a leaderless node with the mode's settings `mode`.
pub async fn start_leaderless_config(
    config: RuntimeConfig,
    options: NodeOptions,
    listeners: Listeners,
    mode: cohort_leaderless::LeaderlessConfig,
) -> Result<RunningNode, RuntimeError> {
    mode.validate(&config.peers)
        .map_err(|e| RuntimeError::Config(format!("leaderless mode: {e}")))?;
    cohort_runtime::start::<cohort_leaderless::LeaderlessNode>(config, mode, options, listeners)
        .await
}

/// Every mode, in demo order.
pub const MODES: &[Mode] = &[
    Mode {
        name: "static",
        about: "one fixed coordinator, in memory (the baseline)",
        durable: false,
        first_victim: FirstVictim::Fixed(NodeId(1)),
        start: start_static,
    },
    Mode {
        name: "leader",
        about: "Raft-elected leader, replicated scheduler",
        durable: true,
        first_victim: FirstVictim::Leader,
        start: start_leader,
    },
    Mode {
        name: "leaderless",
        about: "SWIM membership, hashed placement, per-task Paxos",
        durable: true,
        first_victim: FirstVictim::Busiest,
        start: start_leaderless,
    },
];

/// The mode named `name`.
pub fn find(name: &str) -> anyhow::Result<&'static Mode> {
    MODES.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<&str> = MODES.iter().map(|m| m.name).collect();
        anyhow::anyhow!("unknown mode {name:?}; available: {known:?}")
    })
}
