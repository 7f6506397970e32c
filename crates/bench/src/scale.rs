//! Scale in the simulator: how many peer messages the busiest and the
//! average node handle per second as the cluster grows.
//!
//! `cohort_sim::Report` counts messages for the whole cluster only, so each
//! mode runs wrapped in [`Counted`], a [`Node`] that forwards every call to
//! the real core and counts, per node, the messages it receives
//! (`handle_message`) and sends (`Action::Send`). "Handled" is sent plus
//! received. Memory per simulated node is the growth of the process's peak
//! RSS during the run divided by the node count: it includes the
//! simulator's own queues, so it is an upper bound.

use crate::machine;
use cohort_core::{
    Action, ClientRequest, Epoch, Node, NodeId, NodeRng, Peers, RequestId, Stored, TaskId,
    TaskOutcome, Time, TimerToken,
};
use cohort_sim::{FaultKinds, NoInvariants, SimConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Per-node message counters shared by every [`Counted`] node of one run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Node id → (sent, received).
    by_node: Mutex<BTreeMap<NodeId, (u64, u64)>>,
}

impl Counters {
    fn add(&self, id: NodeId, sent: u64, received: u64) {
        let mut g = self.by_node.lock().expect("counters lock");
        let e = g.entry(id).or_default();
        e.0 += sent;
        e.1 += received;
    }

    /// Node id → (sent, received) so far.
    pub fn snapshot(&self) -> BTreeMap<NodeId, (u64, u64)> {
        self.by_node.lock().expect("counters lock").clone()
    }
}

/// The configuration of a [`Counted`] node: the mode's own and the counters.
#[derive(Clone, Debug)]
pub struct CountedConfig<C> {
    /// The wrapped mode's configuration.
    pub inner: C,
    /// Where the counts go.
    pub counters: Arc<Counters>,
}

/// A mode's node, counting its peer messages. Behaves exactly as `N`.
pub struct Counted<N: Node> {
    inner: N,
    counters: Arc<Counters>,
    out: Vec<Action<N::Message>>,
}

impl<N: Node> Node for Counted<N> {
    type Message = N::Message;
    type Config = CountedConfig<N::Config>;

    fn boot(
        peers: &Peers,
        config: &Self::Config,
        stored: &Stored,
        rng: NodeRng,
        now: Time,
    ) -> Result<Self, cohort_core::BootError> {
        Ok(Counted {
            inner: N::boot(peers, &config.inner, stored, rng, now)?,
            counters: config.counters.clone(),
            out: Vec::new(),
        })
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: Self::Message) {
        self.counters.add(self.inner.id(), 0, 1);
        self.inner.handle_message(now, from, msg);
    }

    fn handle_timer(&mut self, now: Time, token: TimerToken) {
        self.inner.handle_timer(now, token);
    }

    fn handle_client(&mut self, now: Time, request: RequestId, req: ClientRequest) {
        self.inner.handle_client(now, request, req);
    }

    fn handle_task_finished(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    ) {
        self.inner.handle_task_finished(now, task, epoch, outcome);
    }

    fn actions(&mut self) -> std::vec::Drain<'_, Action<Self::Message>> {
        let mut sent = 0;
        for a in self.inner.actions() {
            if matches!(a, Action::Send { .. }) {
                sent += 1;
            }
            self.out.push(a);
        }
        if sent > 0 {
            self.counters.add(self.inner.id(), sent, 0);
        }
        self.out.drain(..)
    }

    fn id(&self) -> NodeId {
        self.inner.id()
    }

    fn status(&self) -> cohort_core::NodeStatus {
        self.inner.status()
    }
}

/// One cluster size of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct ScalePoint {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Simulated seconds.
    pub simulated_s: f64,
    /// Tasks submitted / finished in the run.
    pub tasks_submitted: u64,
    /// Tasks with a final state.
    pub tasks_final: u64,
    /// Peer messages sent plus received per simulated second, busiest node.
    pub busiest_msgs_per_s: f64,
    /// The same, averaged over all nodes.
    pub average_msgs_per_s: f64,
    /// Which node was busiest.
    pub busiest_node: u64,
    /// Peer messages in the whole run.
    pub messages: u64,
    /// Peak RSS growth during the run per node, KiB (upper bound; `None`
    /// where /proc is not available).
    pub memory_kib_per_node: Option<f64>,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
    /// Violations the simulator's checkers found (expected 0: no faults).
    pub violations: u64,
}

/// What to simulate at each size.
#[derive(Clone, Debug)]
pub struct ScaleSettings {
    /// Simulated seconds of load.
    pub simulated_ms: u64,
    /// Cluster-wide task arrivals per second (the same at every size, so
    /// the curves show what the cluster size alone costs).
    pub arrivals_per_sec: f64,
    /// Seed.
    pub seed: u64,
}

/// Runs mode `N` at `nodes` with no faults and counts per-node messages.
pub fn scale_point<N: Node>(nodes: usize, inner: &N::Config, s: &ScaleSettings) -> ScalePoint {
    let counters = Arc::new(Counters::default());
    let config = CountedConfig {
        inner: inner.clone(),
        counters: counters.clone(),
    };
    let mut sim = SimConfig::new(s.seed, nodes);
    sim.faults = FaultKinds::NONE;
    sim.safety_ms = s.simulated_ms;
    sim.liveness_ms = 1_000;
    sim.settle_ms = 0;
    sim.stop_when_done = false;
    sim.keep_history = false;
    sim.limits.members_max = sim.limits.members_max.max(nodes);
    sim.workload.arrivals_per_sec = s.arrivals_per_sec;
    sim.workload.cancel_rate = 0.0;
    sim.workload.handler_failure_rate = 0.0;
    let rss_before = machine::rss_kib();
    let peak_reset = machine::reset_peak_rss();
    let wall = crate::Stopwatch::start();
    let report = cohort_sim::run::<Counted<N>>(&sim, &config, &mut NoInvariants);
    let wall_s = wall.seconds();
    let memory_kib_per_node = match (peak_reset, rss_before, machine::peak_rss_kib()) {
        (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before) as f64 / nodes as f64),
        _ => None,
    };
    let counts = counters.snapshot();
    let secs = (report.simulated_ms as f64 / 1000.0).max(1e-3);
    let (busiest_node, busiest) = counts
        .iter()
        .map(|(id, (s, r))| (id.0, s + r))
        .max_by_key(|(_, h)| *h)
        .unwrap_or((0, 0));
    let total: u64 = counts.values().map(|(s, r)| s + r).sum();
    ScalePoint {
        nodes,
        simulated_s: secs,
        tasks_submitted: report.tasks_submitted,
        tasks_final: report.tasks_final,
        busiest_msgs_per_s: busiest as f64 / secs,
        average_msgs_per_s: total as f64 / nodes as f64 / secs,
        busiest_node,
        messages: report.messages,
        memory_kib_per_node,
        wall_s,
        violations: report.violation_count,
    }
}

/// A mode as the simulator runs it: a name and a monomorphised runner.
#[derive(Clone, Copy)]
pub struct SimMode {
    /// The mode's name (as in `--mode`).
    pub name: &'static str,
    /// Runs one size.
    pub run: fn(usize, &ScaleSettings) -> ScalePoint,
}

impl std::fmt::Debug for SimMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimMode").field("name", &self.name).finish()
    }
}

/// Every mode the simulator can scale, one row each.
pub const SIM_MODES: &[SimMode] = &[
    SimMode {
        name: "static",
        run: |n, s| {
            scale_point::<cohort_static::StaticNode>(n, &cohort_static::StaticConfig::default(), s)
        },
    },
    SimMode {
        name: "leader",
        run: |n, s| {
            scale_point::<cohort_leader::LeaderNode>(
                n,
                &cohort_leader::ValidLeaderConfig::default(),
                s,
            )
        },
    },
    SimMode {
        name: "leaderless",
        run: |n, s| {
            scale_point::<cohort_leaderless::LeaderlessNode>(
                n,
                &cohort_leaderless::LeaderlessConfig::default(),
                s,
            )
        },
    },
];
