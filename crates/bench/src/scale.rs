//! Scale in the simulator: how many peer messages the busiest and the
//! average node handle per second as the cluster grows, how long a crash
//! takes to be noticed by every node and a (re)join to be known by every
//! node, and memory per simulated node.
//!
//! `cohort_sim::Report` counts messages for the whole cluster only, so each
//! mode runs wrapped in [`Counted`], a [`Node`] that forwards every call to
//! the real core and counts, per node, the messages it receives
//! (`handle_message`) and sends (`Action::Send`). "Handled" is sent plus
//! received. Memory per simulated node is the growth of the process's peak
//! RSS during the run divided by the node count: it includes the
//! simulator's own queues, so it is an upper bound.
//!
//! **Crash and join.** The highest-numbered node crashes at
//! [`ScaleSettings::crash_at_ms`] and boots again from its store
//! [`ScaleSettings::down_ms`] later: a rejoin (leaderless: under a new SWIM
//! identity). [`Watch`] samples every live node's view every
//! [`SAMPLE_MS`] of simulated time ([`Liveness`] says what a mode's view
//! is): detection ends when every live node has given the crashed node up,
//! the join when every other node sees it alive again. The join is only
//! timed when every node had given it up before it came back; otherwise
//! there is nothing to learn and the figure is left out.

use crate::machine;
use cohort_core::{
    Action, ClientRequest, Epoch, Node, NodeId, NodeRng, Peers, RequestId, Stored, TaskId,
    TaskOutcome, Time, TimerToken,
};
use cohort_sim::{Fault, FaultKinds, Invariants, ScriptedFault, SimConfig};
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

    fn flush(&mut self, now: Time) {
        self.inner.flush(now);
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

    fn visit_tasks(
        &self,
        after: Option<TaskId>,
        visit: &mut dyn FnMut(TaskId, &cohort_core::Task, &cohort_core::TaskState) -> bool,
    ) {
        self.inner.visit_tasks(after, visit);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }

    // A crash in the simulator closes the victim's connections, as a
    // killed process's are: without this the wrapped node never heard of
    // it and found every crash by probing alone.
    fn handle_peer_lost(&mut self, now: Time, peer: NodeId) {
        self.inner.handle_peer_lost(now, peer);
    }

    fn handle_heartbeat(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        progress: Option<String>,
    ) -> cohort_core::HeartbeatReply {
        self.inner.handle_heartbeat(now, task, epoch, progress)
    }

    fn begin_shutdown(&mut self, now: Time) {
        self.inner.begin_shutdown(now);
    }

    fn shutdown_ready(&self) -> bool {
        self.inner.shutdown_ready()
    }

    fn begin_drain(&mut self, now: Time, deadline: Time) -> Result<(), cohort_core::DrainRefusal> {
        self.inner.begin_drain(now, deadline)
    }

    fn drain_status(&self) -> Option<cohort_core::DrainStatus> {
        self.inner.drain_status()
    }

    fn workers(&self) -> Vec<cohort_core::WorkerInfo> {
        self.inner.workers()
    }

    fn ring_view(&self) -> Option<cohort_core::RingView> {
        self.inner.ring_view()
    }

    fn change_ring(
        &mut self,
        now: Time,
        change: cohort_core::RingRequest,
    ) -> Result<(), cohort_core::RingRefusal> {
        self.inner.change_ring(now, change)
    }
}

impl<N: Node> Counted<N> {
    /// The wrapped node.
    pub fn inner(&self) -> &N {
        &self.inner
    }
}

/// What a mode's node believes about another node's liveness.
pub trait Liveness {
    /// Whether this node has given `v` up (`v_led`: `v` was the leader when
    /// it crashed); `None` when the mode keeps no such view.
    fn gave_up(&self, v: NodeId, v_led: bool) -> Option<bool>;
    /// Whether this node sees `v` alive; `None` as above.
    fn sees_alive(&self, v: NodeId) -> Option<bool>;
}

impl Liveness for cohort_static::StaticNode {
    fn gave_up(&self, _: NodeId, _: bool) -> Option<bool> {
        None
    }
    fn sees_alive(&self, _: NodeId) -> Option<bool> {
        None
    }
}

impl Liveness for cohort_leader::LeaderNode {
    /// The scheduler's `WorkerDead` (a replicated command, so every node
    /// applies it) or, for a crashed leader, following a new one.
    fn gave_up(&self, v: NodeId, v_led: bool) -> Option<bool> {
        let new_leader = v_led && self.status().leader.is_some_and(|l| l != v);
        Some(self.scheduler().is_dead(v) || new_leader)
    }
    fn sees_alive(&self, v: NodeId) -> Option<bool> {
        Some(!self.scheduler().is_dead(v))
    }
}

impl Liveness for cohort_leaderless::LeaderlessNode {
    fn gave_up(&self, v: NodeId, _: bool) -> Option<bool> {
        Some(!self.is_live(v))
    }
    fn sees_alive(&self, v: NodeId) -> Option<bool> {
        Some(self.is_live(v))
    }
}

/// How often [`Watch`] looks at every node's view, simulated ms: the
/// resolution of the crash and join timings.
pub const SAMPLE_MS: u64 = 10;

/// Times the crash of `victim` and its rejoin from the nodes' views.
struct Watch {
    victim: NodeId,
    /// Simulated µs of the next look.
    next_us: u64,
    /// Whether the victim called itself leader at the last look.
    led: bool,
    crashed_at: Option<Time>,
    /// Live nodes (indices) that have not given the victim up yet.
    to_give_up: Option<Vec<usize>>,
    detected_at: Option<Time>,
    back_at: Option<Time>,
    /// Nodes that do not see the victim alive yet; `None` until it is back
    /// (or forever, when someone still saw it alive then).
    to_see: Option<Vec<usize>>,
    joined_at: Option<Time>,
    tracked: bool,
}

impl Watch {
    fn new(victim: NodeId) -> Watch {
        Watch {
            victim,
            next_us: 0,
            led: false,
            crashed_at: None,
            to_give_up: None,
            detected_at: None,
            back_at: None,
            to_see: None,
            joined_at: None,
            tracked: true,
        }
    }
}

impl<N: Node + Liveness> Invariants<Counted<N>> for Watch {
    fn check(&mut self, now: Time, nodes: &[Option<&Counted<N>>]) -> Result<(), String> {
        let vi = (self.victim.0 - 1) as usize;
        let up = nodes.get(vi).is_some_and(|n| n.is_some());
        // Crash and restart are seen at the event they happen.
        if !up && self.crashed_at.is_none() {
            self.crashed_at = Some(now);
            self.to_give_up = Some((0..nodes.len()).filter(|i| *i != vi).collect());
        }
        if up && self.crashed_at.is_some() && self.back_at.is_none() {
            self.back_at = Some(now);
            if self.detected_at.is_some() {
                self.to_see = Some((0..nodes.len()).filter(|i| *i != vi).collect());
            }
        }
        if now.0 < self.next_us {
            return Ok(());
        }
        self.next_us = now.0 + SAMPLE_MS * 1000;
        if self.crashed_at.is_none() {
            if let Some(Some(v)) = nodes.get(vi) {
                self.led = v.status().role == "leader";
            }
            return Ok(());
        }
        let (victim, led) = (self.victim, self.led);
        if self.detected_at.is_none() {
            if let Some(pending) = &mut self.to_give_up {
                pending.retain(|&i| match nodes[i] {
                    None => false, // down nodes have no view
                    Some(n) => match n.inner().gave_up(victim, led) {
                        None => {
                            self.tracked = false;
                            false
                        }
                        Some(g) => !g,
                    },
                });
                if pending.is_empty() && self.tracked {
                    self.detected_at = Some(now);
                }
            }
        }
        if self.joined_at.is_none() {
            if let Some(pending) = &mut self.to_see {
                pending.retain(|&i| {
                    nodes[i].is_some_and(|n| n.inner().sees_alive(victim) != Some(true))
                });
                if pending.is_empty() {
                    self.joined_at = Some(now);
                }
            }
        }
        Ok(())
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
    /// The node crashed (and rebooted) to time detection and rejoin.
    pub crashed_node: u64,
    /// From the crash until every live node had given it up, ms (`None`:
    /// not within the run, or the mode keeps no liveness view).
    pub crash_detected_ms: Option<f64>,
    /// From its reboot until every other node saw it alive, ms (`None`: not
    /// within the run, or it was not given up by all before it came back).
    pub join_known_ms: Option<f64>,
    /// Whether the crashed node was the leader.
    pub crashed_leader: bool,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
    /// Violations the simulator's checkers found (expected 0: one crash and
    /// a rejoin, which every durable mode must survive).
    pub violations: u64,
    /// The first violation, if any, to reproduce it.
    pub first_violation: Option<String>,
}

/// What to simulate at each size.
#[derive(Clone, Debug)]
pub struct ScaleSettings {
    /// Simulated seconds of load.
    pub simulated_ms: u64,
    /// Cluster-wide task arrivals per second (the same at every size, so
    /// the curves show what the cluster size alone costs).
    pub arrivals_per_sec: f64,
    /// When the highest-numbered node crashes, simulated ms.
    pub crash_at_ms: u64,
    /// How long it stays down before it boots again (long enough for the
    /// crash to be detected everywhere, or the join is not timed).
    pub down_ms: u64,
    /// Seed.
    pub seed: u64,
}

/// Runs mode `N` at `nodes` with no faults and counts per-node messages.
pub fn scale_point<N: Node + Liveness>(
    nodes: usize,
    inner: &N::Config,
    s: &ScaleSettings,
) -> ScalePoint {
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
    let victim = NodeId(nodes as u64);
    if nodes > 1 {
        sim.script.push(ScriptedFault {
            at_ms: s.crash_at_ms,
            fault: Fault::Crash {
                node: victim,
                down_ms: s.down_ms,
            },
        });
    }
    let mut watch = Watch::new(victim);
    let rss_before = machine::rss_kib();
    let peak_reset = machine::reset_peak_rss();
    let wall = crate::Stopwatch::start();
    let report = cohort_sim::run::<Counted<N>>(&sim, &config, &mut watch);
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
        crashed_node: victim.0,
        crash_detected_ms: watch
            .crashed_at
            .zip(watch.detected_at)
            .map(|(c, d)| (d.0 - c.0) as f64 / 1000.0),
        join_known_ms: watch
            .back_at
            .zip(watch.joined_at)
            .map(|(b, j)| (j.0 - b.0) as f64 / 1000.0),
        crashed_leader: watch.led,
        wall_s,
        violations: report.violation_count,
        first_violation: report.violations.first().map(|v| v.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ScaleSettings {
        ScaleSettings {
            simulated_ms: 5_000,
            arrivals_per_sec: 20.0,
            // Once SWIM has formed (a probe period in): a crash before it
            // has no member to suspect.
            crash_at_ms: 1_000,
            down_ms: 2_500,
            seed: 1,
        }
    }

    #[test]
    fn a_crash_and_rejoin_are_timed_in_both_replicated_modes_without_violations() {
        for mode in SIM_MODES.iter().filter(|m| m.name != "static") {
            let p = (mode.run)(20, &settings());
            assert_eq!(p.violations, 0, "{}: {:?}", mode.name, p.first_violation);
            assert_eq!(p.crashed_node, 20);
            let detected = p
                .crash_detected_ms
                .unwrap_or_else(|| panic!("{}: crash not detected by all", mode.name));
            assert!(
                detected > 0.0 && detected < 2_500.0,
                "{}: {detected}",
                mode.name
            );
            assert!(
                p.join_known_ms.is_some(),
                "{}: rejoin not known by all",
                mode.name
            );
            assert!(p.busiest_msgs_per_s >= p.average_msgs_per_s);
        }
    }

    #[test]
    fn static_mode_keeps_no_liveness_view_so_reports_no_timings() {
        let p = (SIM_MODES[0].run)(5, &settings());
        assert_eq!(SIM_MODES[0].name, "static");
        assert_eq!(p.crash_detected_ms, None);
        assert_eq!(p.join_known_ms, None);
    }
}
