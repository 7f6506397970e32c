//! The event loop: one seeded RNG, a virtual clock, a queue of events
//! ordered by `(time, sequence number)`, the network, the disks, the
//! clients and the fault injector.

mod clients;
mod faults;
mod queue;
mod schedules;

use clients::{ClientOp, Pending};
use queue::Queue;

use crate::checkers::{check_all, Guarantee, Violations};
use crate::config::{SimConfig, FATAL_ERROR_CLASS};
use crate::history::{History, HistoryEvent};
use crate::plan::{FaultPlan, Recurring};
use crate::trace::Fnv64;
use crate::workload::{result_bytes, SimPayload};
use crate::{Invariants, Report};
use cohort_core::{
    decode, encode, Action, ClientError, ClientRequest, ClientResponse, Epoch, HeartbeatReply,
    Node, NodeId, Peers, RequestId, StoreOp, Stored, TaskId, TaskOutcome, Time, TimerToken,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

type Reply = Result<ClientResponse, ClientError>;

/// Something that happens at an instant.
#[derive(Debug)]
enum Event {
    /// A peer message arrives (decoded here, at delivery).
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    /// The connection from `from` closes at `to` (`from` crashed): what a
    /// kernel does for a dead process, after whatever `from` sent before.
    PeerLost {
        from: usize,
        to: usize,
    },
    Timer {
        node: usize,
        inc: u64,
        token: TimerToken,
    },
    TaskDone {
        node: usize,
        inc: u64,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
        /// The execution (see `Sim::live`).
        exec: u64,
    },
    /// The handler of execution `exec` beats for the `n`-th time.
    Beat {
        node: usize,
        inc: u64,
        task: TaskId,
        epoch: Epoch,
        exec: u64,
        n: u32,
    },
    FsyncDone {
        node: usize,
        inc: u64,
    },
    /// A client request arrives at a node.
    Request {
        node: usize,
        request: RequestId,
        req: ClientRequest,
    },
    /// A node's reply arrives at its client.
    Response {
        node: usize,
        request: RequestId,
        reply: Reply,
    },
    ClientTimeout {
        op: usize,
        request: RequestId,
    },
    ClientWake {
        op: usize,
        generation: u64,
    },
    /// A request of a schedule link's run went unanswered.
    LinkTimeout {
        runner: u64,
        request: RequestId,
    },
    Arrival,
    Crash,
    Restart {
        node: usize,
        inc: u64,
    },
    Pause,
    Resume {
        node: usize,
        inc: u64,
    },
    PartitionStart,
    /// `SimConfig::script[index]` strikes.
    Scripted {
        index: usize,
    },
    PartitionEnd {
        id: u64,
    },
    Heal,
    /// The mode's operator acts (`Invariants::operate`).
    Operate,
}

impl Event {
    /// The node an event is handed to, for events a node handles.
    fn node_bound(&self) -> Option<usize> {
        match self {
            Event::Deliver { to, .. } | Event::PeerLost { to, .. } => Some(*to),
            Event::Timer { node, .. }
            | Event::TaskDone { node, .. }
            | Event::Beat { node, .. }
            | Event::FsyncDone { node, .. }
            | Event::Request { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// The incarnation an event belongs to, if it dies with a crash.
    fn incarnation(&self) -> Option<u64> {
        match self {
            Event::Timer { inc, .. }
            | Event::TaskDone { inc, .. }
            | Event::Beat { inc, .. }
            | Event::FsyncDone { inc, .. } => Some(*inc),
            _ => None,
        }
    }
}

/// One simulated machine: its node (if up), its disk and its pipeline.
struct Slot<N: Node> {
    id: NodeId,
    node: Option<N>,
    /// Bumped at every crash: events of an older incarnation are dropped.
    inc: u64,
    /// What survived every fsync so far.
    durable: Stored,
    /// The writes of the fsync in flight.
    unsynced: Vec<StoreOp>,
    fsync_in_flight: bool,
    /// Actions waiting for the fsync in flight, in order.
    pipeline: VecDeque<Action<N::Message>>,
    paused: bool,
    /// Events that arrived while paused, handed over at resume.
    held: VecDeque<Event>,
}

pub(crate) struct Sim<'a, N: Node> {
    cfg: &'a SimConfig,
    node_cfg: &'a N::Config,
    rng: ChaCha8Rng,
    plan: FaultPlan,
    now: Time,
    safety_end: Time,
    end: Time,
    queue: Queue,
    peers: Vec<Peers>,
    slots: Vec<Slot<N>>,
    /// `blocked[from * n + to]`: the link is cut.
    blocked: Vec<bool>,
    /// Per-link delivery time of the last message, for FIFO links.
    link_last: Vec<Time>,
    partition: Option<u64>,
    partitions: u64,
    healed: bool,
    /// When an early stop becomes allowed.
    settled: Time,
    ops: Vec<ClientOp>,
    /// Clients that submitted under a dedupe key.
    unique_submits: u64,
    ops_open: usize,
    requests: BTreeMap<RequestId, Pending>,
    next_request: u64,
    /// Schedule links being run, by runner number.
    links: BTreeMap<u64, schedules::LinkRunner>,
    next_runner: u64,
    history: History,
    violations: Violations,
    hash: Fnv64,
    record: bool,
    trace: Vec<String>,
    events: u64,
    executions: u64,
    heartbeats: (u64, u64),
    /// Executions whose handler has not returned (by a sequence number):
    /// a handler told to stop by a heartbeat returns early, and its
    /// scheduled completion is then void.
    live: BTreeSet<u64>,
    messages: u64,
    message_bytes: u64,
    faults: u64,
}

const TAG_DELIVER: u8 = 1;
const TAG_TIMER: u8 = 2;
const TAG_TASK_DONE: u8 = 3;
const TAG_FSYNC: u8 = 4;
const TAG_REQUEST: u8 = 5;
const TAG_RESPONSE: u8 = 6;
const TAG_CLIENT: u8 = 7;
const TAG_FAULT: u8 = 8;
const TAG_DROP: u8 = 9;
const TAG_PEER_LOST: u8 = 10;
const TAG_OPERATE: u8 = 11;
const TAG_PERSIST: u8 = 16;
const TAG_SEND: u8 = 17;
const TAG_EXECUTE: u8 = 18;
const TAG_REPLY: u8 = 19;
const TAG_SET_TIMER: u8 = 20;
const TAG_NOTE: u8 = 21;
const TAG_BEAT: u8 = 22;

impl<'a, N: Node> Sim<'a, N> {
    pub(crate) fn new(cfg: &'a SimConfig, node_cfg: &'a N::Config) -> Sim<'a, N> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let plan = FaultPlan::draw(&mut rng, &cfg.faults);
        let n = cfg.nodes;
        let members: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let peers = members
            .iter()
            .map(|id| {
                Peers::new(*id, members.clone(), cfg.capacity_tasks, cfg.limits.clone())
                    .and_then(|p| p.with_labels(crate::config::node_labels(*id)))
                    .expect("validated configuration")
            })
            .collect();
        let slots = members
            .iter()
            .map(|id| Slot {
                id: *id,
                node: None,
                inc: 0,
                durable: Stored::new(),
                unsynced: Vec::new(),
                fsync_in_flight: false,
                pipeline: VecDeque::new(),
                paused: false,
                held: VecDeque::new(),
            })
            .collect();
        let safety_end = Time::from_millis(cfg.safety_ms);
        Sim {
            cfg,
            node_cfg,
            rng,
            plan,
            now: Time::ZERO,
            safety_end,
            end: Time::from_millis(cfg.safety_ms + cfg.liveness_ms),
            queue: Queue::default(),
            peers,
            slots,
            blocked: vec![false; n * n],
            link_last: vec![Time::ZERO; n * n],
            partition: None,
            partitions: 0,
            healed: false,
            // A schedule's ticks are checked only as far as the run went
            // on after healing: long enough for the chain to catch up.
            settled: Time::from_millis(cfg.safety_ms.saturating_add(
                if cfg.workload.schedule_every_ms > 0 {
                    cfg.settle_ms.max(schedules::SCHEDULE_CATCH_UP_SLACK_MS * 2)
                } else {
                    cfg.settle_ms
                },
            )),
            ops: Vec::new(),
            unique_submits: 0,
            ops_open: 0,
            requests: BTreeMap::new(),
            next_request: 1,
            links: BTreeMap::new(),
            next_runner: 0,
            history: History::new(),
            violations: Violations::new(cfg.violations_max),
            hash: Fnv64::new(),
            record: cfg.record_trace,
            trace: Vec::new(),
            events: 0,
            executions: 0,
            heartbeats: (0, 0),
            live: BTreeSet::new(),
            messages: 0,
            message_bytes: 0,
            faults: 0,
        }
    }

    pub(crate) fn run(mut self, invariants: &mut dyn Invariants<N>) -> Report {
        for i in 0..self.slots.len() {
            self.boot(i);
        }
        if self.cfg.workload.arrivals_per_sec > 0.0 {
            let gap = self.arrival_gap_us();
            self.schedule_in(gap, Event::Arrival);
        }
        if self.cfg.workload.schedule_every_ms > 0 {
            self.start_schedule();
        }
        if let Some(r) = self.plan.crash {
            let gap = self.exp_us(r.every_us);
            self.schedule_in(gap, Event::Crash);
        }
        if let Some(r) = self.plan.pause {
            let gap = self.exp_us(r.every_us);
            self.schedule_in(gap, Event::Pause);
        }
        if let Some(r) = self.plan.partition {
            let gap = self.exp_us(r.every_us);
            self.schedule_in(gap, Event::PartitionStart);
        }
        for (index, f) in self.cfg.script.iter().enumerate() {
            let at = Time::from_millis(f.at_ms);
            if at < self.safety_end {
                self.queue.push(at, Event::Scripted { index });
            }
        }
        self.schedule(self.safety_end, Event::Heal);
        if let Some(ms) = invariants.first_operation_ms() {
            self.schedule(Time::from_millis(ms), Event::Operate);
        }

        // A run without a liveness phase makes no liveness claim.
        let mut liveness_ended = self.cfg.liveness_ms > 0;
        let mut finished_at = self.end;
        while let Some((at, event)) = self.queue.pop_until(self.end) {
            self.now = at;
            self.events += 1;
            if self.events > self.cfg.events_max {
                let detail = format!(
                    "the run was stopped after events_max = {} events",
                    self.cfg.events_max
                );
                self.violations.push(Guarantee::Invariant, self.now, detail);
                liveness_ended = false;
                finished_at = self.now;
                break;
            }
            if let Event::Operate = event {
                self.operate(invariants);
            } else {
                self.process(event);
            }
            if let Err(detail) = self.check_invariants(invariants) {
                self.violations.push(Guarantee::Invariant, self.now, detail);
            }
            if self.cfg.stop_when_done
                && self.healed
                && self.ops_open == 0
                && self.now >= self.settled
            {
                finished_at = self.now;
                break;
            }
        }
        if liveness_ended {
            let view: Vec<Option<&N>> = self.slots.iter().map(|s| s.node.as_ref()).collect();
            if let Err(detail) = invariants.check_final(finished_at, &view) {
                self.violations.push(
                    Guarantee::Invariant,
                    finished_at,
                    format!("at the end: {detail}"),
                );
            }
        }
        let schedule_checked_until = finished_at
            .as_millis()
            .checked_sub(schedules::SCHEDULE_CATCH_UP_SLACK_MS)
            .filter(|_| liveness_ended && finished_at >= self.safety_end);
        if let Some(until) =
            schedule_checked_until.filter(|_| self.cfg.workload.schedule_every_ms > 0)
        {
            let schedule = Box::new(self.sim_schedule());
            let first_tick_ms = self.schedule_first_tick_ms();
            self.history.push(
                finished_at,
                HistoryEvent::ScheduleChecked {
                    schedule,
                    first_tick_ms,
                    checked_until_ms: until,
                },
            );
        }
        check_all(
            &self.history,
            finished_at,
            liveness_ended,
            &mut self.violations,
        );
        self.report(finished_at)
    }

    /// Lets the mode's operator act on the nodes that are up and not
    /// paused, then carries out what they emitted.
    fn operate(&mut self, invariants: &mut dyn Invariants<N>) {
        let draw: u64 = self.rng.gen();
        self.hash_event(TAG_OPERATE, draw, &[]);
        let now = self.now;
        self.line(|| format!("{now} operator acts"));
        let mut view: Vec<Option<&mut N>> = self
            .slots
            .iter_mut()
            .map(|s| if s.paused { None } else { s.node.as_mut() })
            .collect();
        let next = invariants.operate(now, draw, &mut view);
        drop(view);
        for i in 0..self.slots.len() {
            if !self.slots[i].paused {
                self.drain(i);
                self.pump(i);
            }
        }
        if let Some(ms) = next {
            self.schedule(Time::from_millis(ms), Event::Operate);
        }
    }

    /// Hands every node (`None` when down) to the mode's invariants; small
    /// clusters are viewed through a stack array, not a fresh `Vec` per event.
    fn check_invariants(&self, invariants: &mut dyn Invariants<N>) -> Result<(), String> {
        const STACK_NODES: usize = 16;
        if self.slots.len() <= STACK_NODES {
            let mut view: [Option<&N>; STACK_NODES] = [None; STACK_NODES];
            for (v, s) in view.iter_mut().zip(&self.slots) {
                *v = s.node.as_ref();
            }
            invariants.check(self.now, &view[..self.slots.len()])
        } else {
            let view: Vec<Option<&N>> = self.slots.iter().map(|s| s.node.as_ref()).collect();
            invariants.check(self.now, &view)
        }
    }

    fn report(self, finished_at: Time) -> Report {
        let mut finals = BTreeSet::new();
        for r in &self.history.records {
            match &r.event {
                HistoryEvent::Noted {
                    note: cohort_core::Note::Decided { task, state },
                    ..
                } if state.is_final() => {
                    finals.insert(*task);
                }
                HistoryEvent::Read {
                    task,
                    result: Ok(state),
                    ..
                } if state.is_final() => {
                    finals.insert(*task);
                }
                _ => {}
            }
        }
        let violation_count = self.violations.count();
        Report {
            seed: self.cfg.seed,
            plan: self.plan,
            violations: self.violations.into_kept(),
            violation_count,
            trace_hash: self.hash.finish(),
            events: self.events,
            simulated_ms: finished_at.as_millis(),
            tasks_submitted: self.ops.iter().filter(|o| !o.deduplicated).count() as u64,
            unique_submits: self.unique_submits,
            unique_deduplicated: self.ops.iter().filter(|o| o.deduplicated).count() as u64,
            tasks_acked: self.ops.iter().filter(|o| o.acked).count() as u64,
            tasks_acked_in_batch: self.ops.iter().filter(|o| o.acked_in_batch).count() as u64,
            tasks_final: finals.len() as u64,
            executions: self.executions,
            heartbeats: self.heartbeats,
            messages: self.messages,
            message_bytes: self.message_bytes,
            faults_injected: self.faults,
            trace: self.trace,
            history: if self.cfg.keep_history {
                self.history
            } else {
                History::new()
            },
        }
    }

    // ----- scheduling and randomness -------------------------------------

    fn schedule(&mut self, at: Time, event: Event) {
        self.queue.push(at.max(self.now), event);
    }

    fn schedule_in(&mut self, us: u64, event: Event) {
        self.schedule(Time(self.now.0.saturating_add(us)), event);
    }

    /// An exponential draw of mean `mean_us`.
    fn exp_us(&mut self, mean_us: u64) -> u64 {
        let u: f64 = self.rng.gen();
        (-(1.0 - u).ln() * mean_us as f64) as u64
    }

    fn arrival_gap_us(&mut self) -> u64 {
        let mean = 1e6 / self.cfg.workload.arrivals_per_sec;
        let u: f64 = self.rng.gen();
        (-(1.0 - u).ln() * mean) as u64
    }

    fn between_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.gen_range(lo..=hi) * 1000
    }

    fn lasting(&mut self, r: Recurring) -> u64 {
        self.rng
            .gen_range(r.lasts_min_us..=r.lasts_max_us.max(r.lasts_min_us))
    }

    fn latency_us(&mut self) -> u64 {
        let mut us = self.plan.latency_base_us + self.exp_us(self.plan.latency_tail_us);
        if self.plan.jitter_us > 0 {
            us += self.rng.gen_range(0..=self.plan.jitter_us);
        }
        us
    }

    /// Whether one message is lost (never after healing).
    fn lost(&mut self) -> bool {
        !self.healed && self.plan.loss > 0.0 && self.rng.gen_bool(self.plan.loss)
    }

    fn duplicated(&mut self) -> bool {
        !self.healed && self.plan.duplicate > 0.0 && self.rng.gen_bool(self.plan.duplicate)
    }

    /// When a message sent now on `from -> to` arrives.
    fn link_arrival(&mut self, from: usize, to: usize) -> Time {
        let at = Time(self.now.0 + self.latency_us());
        if !self.plan.fifo {
            return at;
        }
        let last = &mut self.link_last[from * self.cfg.nodes + to];
        let at = at.max(*last);
        *last = at;
        at
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        let i = usize::try_from(id.0).ok()?.checked_sub(1)?;
        (i < self.slots.len()).then_some(i)
    }

    fn line(&mut self, text: impl FnOnce() -> String) {
        if self.record {
            let t = text();
            self.trace.push(t);
        }
    }

    fn hash_event(&mut self, tag: u8, who: u64, extra: &[u8]) {
        self.hash.u64(self.now.0);
        self.hash.bytes(&[tag]);
        self.hash.u64(who);
        self.hash.bytes(extra);
    }

    // ----- event dispatch --------------------------------------------------

    fn process(&mut self, event: Event) {
        if let Some(i) = event.node_bound() {
            return self.hand_to_node(i, event);
        }
        match event {
            Event::Response {
                node,
                request,
                reply,
            } => self.on_response(node, request, reply),
            Event::ClientTimeout { op, request } => self.on_client_timeout(op, request),
            Event::ClientWake { op, generation } => self.on_client_wake(op, generation),
            Event::LinkTimeout { runner, request } => self.on_link_timeout(runner, request),
            Event::Arrival => self.on_arrival(),
            Event::Crash => self.on_crash(),
            Event::Restart { node, inc } => {
                if self.slots[node].inc == inc && self.slots[node].node.is_none() {
                    self.hash_event(TAG_FAULT, node as u64, b"restart");
                    let now = self.now;
                    self.line(|| format!("{} restart n{}", now, node + 1));
                    self.boot(node);
                }
            }
            Event::Pause => self.on_pause(),
            Event::Resume { node, inc } => {
                if self.slots[node].inc == inc && self.slots[node].paused {
                    self.hash_event(TAG_FAULT, node as u64, b"resume");
                    let now = self.now;
                    self.line(|| format!("{} resume n{}", now, node + 1));
                    self.resume(node);
                }
            }
            Event::PartitionStart => self.on_partition_start(),
            Event::PartitionEnd { id } => {
                if self.partition == Some(id) {
                    self.hash_event(TAG_FAULT, id, b"partition end");
                    let now = self.now;
                    self.line(|| format!("{} partition healed", now));
                    self.blocked.fill(false);
                    self.partition = None;
                }
            }
            Event::Heal => self.on_heal(),
            Event::Operate => unreachable!("handled by the run loop"),
            Event::Scripted { index } => self.on_scripted(index),
            Event::Deliver { .. }
            | Event::PeerLost { .. }
            | Event::Timer { .. }
            | Event::TaskDone { .. }
            | Event::Beat { .. }
            | Event::FsyncDone { .. }
            | Event::Request { .. } => unreachable!("node-bound events are routed above"),
        }
    }

    /// Hands `event` to node `i`: dropped if the node is down (or the event
    /// belongs to an earlier incarnation), held if it is paused.
    fn hand_to_node(&mut self, i: usize, event: Event) {
        let slot = &self.slots[i];
        let why = if slot.node.is_none() {
            Some("down")
        } else if event.incarnation().is_some_and(|inc| inc != slot.inc) {
            Some("from an earlier incarnation")
        } else if matches!(&event, Event::Deliver { from, to, .. } | Event::PeerLost { from, to } if self.blocked[from * self.cfg.nodes + to])
        {
            Some("link cut")
        } else {
            None
        };
        if let Some(why) = why {
            if let Event::TaskDone { exec, .. } = &event {
                self.live.remove(exec); // died with its node
            }
            self.hash_event(TAG_DROP, i as u64, why.as_bytes());
            let now = self.now;
            self.line(|| format!("{now} n{} dropped ({why}): {event:?}", i + 1));
            return;
        }
        let slot = &mut self.slots[i];
        if slot.paused {
            slot.held.push_back(event);
            return;
        }
        self.dispatch(i, event);
    }

    fn dispatch(&mut self, i: usize, event: Event) {
        let now = self.now;
        let id = self.slots[i].id;
        match event {
            Event::Deliver { from, bytes, .. } => {
                self.hash_event(TAG_DELIVER, id.0, &bytes);
                let limit = self.cfg.limits.message_bytes_max;
                let msg = match decode::<N::Message>(&bytes, limit) {
                    Ok(msg) => msg,
                    Err(e) => {
                        let detail = format!("message n{} -> {id} does not decode: {e}", from + 1);
                        self.violations.push(Guarantee::Invariant, now, detail);
                        return;
                    }
                };
                self.line(|| format!("{now} {id} <- n{} {msg:?}", from + 1));
                let from = self.slots[from].id;
                self.node_mut(i).handle_message(now, from, msg);
            }
            Event::PeerLost { from, .. } => {
                let from = self.slots[from].id;
                self.hash_event(TAG_PEER_LOST, id.0, &from.0.to_le_bytes());
                self.line(|| format!("{now} {id} lost the connection from {from}"));
                self.node_mut(i).handle_peer_lost(now, from);
            }
            Event::Timer { token, .. } => {
                self.hash_event(TAG_TIMER, id.0, &token.0.to_le_bytes());
                self.line(|| format!("{now} {id} timer {}", token.0));
                self.node_mut(i).handle_timer(now, token);
            }
            Event::TaskDone {
                task,
                epoch,
                outcome,
                exec,
                ..
            } => {
                if !self.live.remove(&exec) {
                    return; // it returned early, told to stop
                }
                self.hash_event(TAG_TASK_DONE, id.0, &encode(&(task, epoch, &outcome)));
                self.line(|| format!("{now} {id} finished {task:?} {epoch} {outcome:?}"));
                self.history.push(
                    now,
                    HistoryEvent::Completed {
                        node: id,
                        task,
                        epoch,
                        outcome: outcome.clone(),
                    },
                );
                self.node_mut(i)
                    .handle_task_finished(now, task, epoch, outcome);
            }
            Event::Beat {
                task,
                epoch,
                exec,
                n,
                ..
            } => {
                if !self.live.contains(&exec) {
                    return;
                }
                self.hash_event(TAG_BEAT, id.0, &encode(&(task, epoch, n)));
                let progress = format!("beat {n}");
                let said = self
                    .node_mut(i)
                    .handle_heartbeat(now, task, epoch, Some(progress));
                self.line(|| format!("{now} {id} beat {task:?} {epoch} #{n}: {}", said.name()));
                self.heartbeats.0 += 1;
                self.heartbeats.1 += u64::from(said == HeartbeatReply::Continue);
                if said != HeartbeatReply::Continue {
                    // A cooperative handler stops when told to.
                    self.live.remove(&exec);
                    let outcome =
                        TaskOutcome::Failure(format!("cancelled: told to stop ({})", said.name()));
                    self.history.push(
                        now,
                        HistoryEvent::Completed {
                            node: id,
                            task,
                            epoch,
                            outcome: outcome.clone(),
                        },
                    );
                    self.node_mut(i)
                        .handle_task_finished(now, task, epoch, outcome);
                }
            }
            Event::FsyncDone { .. } => {
                self.hash_event(TAG_FSYNC, id.0, &[]);
                self.line(|| format!("{now} {id} fsync done"));
                let slot = &mut self.slots[i];
                let ops = std::mem::take(&mut slot.unsynced);
                slot.durable.apply(&ops);
                slot.fsync_in_flight = false;
            }
            Event::Request { request, req, .. } => {
                self.hash_event(TAG_REQUEST, id.0, &encode(&(request, &req)));
                self.line(|| format!("{now} {id} <- client r{} {req:?}", request.0));
                self.node_mut(i).handle_client(now, request, req);
            }
            other => unreachable!("not a node event: {other:?}"),
        }
        self.drain(i);
        self.pump(i);
    }

    fn node_mut(&mut self, i: usize) -> &mut N {
        self.slots[i]
            .node
            .as_mut()
            .expect("dispatch only to a node that is up")
    }

    /// Ends the node's batch (one input here: the simulator hands them
    /// over one at a time) and moves its output into its pipeline.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let Slot { node, pipeline, .. } = &mut self.slots[i];
        if let Some(node) = node {
            node.flush(now);
            pipeline.extend(node.actions());
        }
    }

    /// Carries out pipeline actions in order until one must wait for an fsync.
    fn pump(&mut self, i: usize) {
        loop {
            let slot = &mut self.slots[i];
            if slot.fsync_in_flight || slot.node.is_none() {
                return;
            }
            let Some(action) = slot.pipeline.pop_front() else {
                return;
            };
            self.carry_out(i, action);
        }
    }

    fn carry_out(&mut self, i: usize, action: Action<N::Message>) {
        let now = self.now;
        let id = self.slots[i].id;
        match action {
            Action::Persist(mut ops) => {
                if self.cfg.group_commit {
                    // The writes of later inputs join this fsync; their
                    // sends stay behind it in order (made durable earlier
                    // than they needed, never later).
                    let pipeline = &mut self.slots[i].pipeline;
                    let mut rest = VecDeque::with_capacity(pipeline.len());
                    for action in pipeline.drain(..) {
                        match action {
                            Action::Persist(more) => ops.extend(more),
                            other => rest.push_back(other),
                        }
                    }
                    *pipeline = rest;
                }
                self.hash_event(TAG_PERSIST, id.0, &encode(&ops));
                self.line(|| format!("  {id} persist {} ops", ops.len()));
                let us = self
                    .rng
                    .gen_range(self.plan.fsync_min_us..=self.plan.fsync_max_us);
                let slot = &mut self.slots[i];
                slot.unsynced = ops;
                slot.fsync_in_flight = true;
                let inc = slot.inc;
                self.schedule_in(us, Event::FsyncDone { node: i, inc });
            }
            Action::Send { to, msg } => {
                let bytes = encode(&msg);
                self.hash_event(TAG_SEND, id.0, &bytes);
                self.messages += 1;
                self.message_bytes += bytes.len() as u64;
                let Some(j) = self.index_of(to) else {
                    let detail = format!("{id} sent to {to}, which is not a member");
                    self.violations.push(Guarantee::Invariant, now, detail);
                    return;
                };
                let fate = if self.blocked[i * self.cfg.nodes + j] {
                    " (link cut)"
                } else if self.lost() {
                    " (lost)"
                } else {
                    ""
                };
                self.line(|| format!("  {id} -> {to} {msg:?}{fate}"));
                if !fate.is_empty() {
                    return;
                }
                if self.duplicated() {
                    let at = self.link_arrival(i, j);
                    let copy = bytes.clone();
                    self.schedule(
                        at,
                        Event::Deliver {
                            from: i,
                            to: j,
                            bytes: copy,
                        },
                    );
                }
                let at = self.link_arrival(i, j);
                self.schedule(
                    at,
                    Event::Deliver {
                        from: i,
                        to: j,
                        bytes,
                    },
                );
            }
            Action::Execute {
                id: task,
                epoch,
                task: body,
            } => {
                self.hash_event(TAG_EXECUTE, id.0, &encode(&(task, epoch, &body)));
                self.line(|| format!("  {id} execute {task:?} {epoch}"));
                self.executions += 1;
                self.history.push(
                    now,
                    HistoryEvent::Executed {
                        node: id,
                        task,
                        epoch,
                    },
                );
                if body.kind == cohort_core::schedule::SCHEDULE_KIND {
                    self.start_link(i, task, epoch, &body);
                    return;
                }
                let failed = self.rng.gen_bool(self.cfg.workload.handler_failure_rate);
                let (ms, outcome) = match SimPayload::decode(&body.payload) {
                    None => (
                        0,
                        TaskOutcome::Failure("payload is not a SimPayload".into()),
                    ),
                    Some(p) if p.duration_ms > body.timeout_ms => (
                        body.timeout_ms,
                        TaskOutcome::Failure(format!("timed out after {} ms", body.timeout_ms)),
                    ),
                    Some(p) if failed => {
                        let fatal = self.rng.gen_bool(self.cfg.workload.fatal_failure_share);
                        let error = if fatal {
                            format!("{FATAL_ERROR_CLASS}: the handler failed for good")
                        } else {
                            "the handler failed".to_string()
                        };
                        (p.duration_ms, TaskOutcome::Failure(error))
                    }
                    Some(p) => (
                        p.duration_ms,
                        TaskOutcome::Success(result_bytes(task, epoch, id)),
                    ),
                };
                // Drawn only when asked for: a workload without stuck
                // handlers replays the runs it replayed before. A fault like
                // the others: none once healed.
                let stuck = self.cfg.workload.stuck_rate > 0.0
                    && now < self.safety_end
                    && self.rng.gen_bool(self.cfg.workload.stuck_rate);
                let (ms, outcome) = if stuck {
                    let ms = self.cfg.workload.stuck_ms;
                    (ms, TaskOutcome::Success(result_bytes(task, epoch, id)))
                } else {
                    (ms, outcome)
                };
                let inc = self.slots[i].inc;
                let exec = self.executions;
                self.live.insert(exec);
                let (mut ms, mut outcome) = (ms, outcome);
                if stuck && body.heartbeat_timeout_ms > 0 {
                    // Stuck is blocked: it cannot beat either (a handler
                    // that beats awaits, and its runner stops it at its
                    // timeout there), so its runner's watchdog, which
                    // runs beside it, fails the attempt a heartbeat
                    // timeout after it started. Beating on past its
                    // timeout, as it once did here, renewed its lease for
                    // all of `stuck_ms`: no runtime runner does that.
                    ms = body.heartbeat_timeout_ms;
                    outcome = TaskOutcome::Failure(body.heartbeat_timeout_error());
                } else if body.heartbeat_timeout_ms > 0 {
                    // Beats every third of the timeout while it runs; a
                    // hung handler stops beating, and its runner's
                    // watchdog fails it a timeout after its last beat.
                    let timeout_ms = body.heartbeat_timeout_ms;
                    let pace_ms = (timeout_ms / 3).max(1);
                    // The last instant it beats at (inclusive).
                    let mut beat_until_ms = ms.saturating_sub(1);
                    if self.rng.gen_bool(self.cfg.workload.hang_rate) && ms > 0 {
                        let hang_ms = self.rng.gen_range(0..ms);
                        let last_beat_ms = hang_ms / pace_ms * pace_ms;
                        if last_beat_ms + timeout_ms < ms {
                            ms = last_beat_ms + timeout_ms;
                            outcome = TaskOutcome::Failure(body.heartbeat_timeout_error());
                            beat_until_ms = last_beat_ms;
                        }
                    }
                    let mut n = 1u32;
                    while u64::from(n) * pace_ms <= beat_until_ms {
                        self.schedule_in(
                            u64::from(n) * pace_ms * 1000,
                            Event::Beat {
                                node: i,
                                inc,
                                task,
                                epoch,
                                exec,
                                n,
                            },
                        );
                        n += 1;
                    }
                }
                self.schedule_in(
                    ms * 1000,
                    Event::TaskDone {
                        node: i,
                        inc,
                        task,
                        epoch,
                        outcome,
                        exec,
                    },
                );
            }
            Action::Reply { request, reply } => {
                self.hash_event(TAG_REPLY, id.0, &encode(&(request, &reply)));
                self.line(|| format!("  {id} reply r{} {reply:?}", request.0));
                let Some(p) = self.requests.get_mut(&request) else {
                    let detail = format!("{id} replied to r{}, which no client sent", request.0);
                    self.violations.push(Guarantee::Invariant, now, detail);
                    return;
                };
                if p.node != i || p.answered {
                    let detail = format!(
                        "{id} replied to r{} (sent to n{}), already answered: {}",
                        request.0,
                        p.node + 1,
                        p.answered
                    );
                    self.violations.push(Guarantee::Invariant, now, detail);
                    return;
                }
                p.answered = true;
                if self.lost() {
                    return;
                }
                let us = self.latency_us();
                self.schedule_in(
                    us,
                    Event::Response {
                        node: i,
                        request,
                        reply,
                    },
                );
            }
            Action::SetTimer { token, at } => {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&token.0.to_le_bytes());
                b[8..].copy_from_slice(&at.0.to_le_bytes());
                self.hash_event(TAG_SET_TIMER, id.0, &b);
                self.line(|| format!("  {id} set timer {} at {at}", token.0));
                let inc = self.slots[i].inc;
                self.schedule(
                    at,
                    Event::Timer {
                        node: i,
                        inc,
                        token,
                    },
                );
            }
            Action::Note(note) => {
                self.hash_event(TAG_NOTE, id.0, &encode(&note));
                self.line(|| format!("  {id} note {note:?}"));
                self.history
                    .push(now, HistoryEvent::Noted { node: id, note });
            }
        }
    }
}
