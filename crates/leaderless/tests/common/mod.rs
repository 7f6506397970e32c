//! A small seeded simulator for scenario tests of the leaderless mode: a
//! virtual clock, a lossy network with per-link cuts, crash/restart from the
//! persisted store, pauses, handlers that finish after a drawn delay, and
//! checkers run after every event.
//!
//! Checked after every event:
//! - one value per Paxos instance: every replica that holds version `k` of a
//!   task holds the same value at `k` (instances are `(task, k - 1)`);
//! - G2: at most one `Decided` state per task;
//! - G3: one runner per `(task, epoch)`; an `Execute` only for an `Assigned`
//!   `(task, epoch, node)` noted before it; epochs of a task's assignments
//!   only grow.
#![allow(dead_code)]

use cohort_core::{
    decode, encode, Action, ClientError, ClientRequest, ClientResponse, Consistency, Epoch, Node,
    NodeId, NodeRng, Note, Peers, RequestId, Stored, Task, TaskId, TaskOutcome, TaskState, Time,
    TimerToken,
};
use cohort_leaderless::{LeaderlessConfig, LeaderlessMessage, LeaderlessNode};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

// A test harness's event queue: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: Box<LeaderlessMessage>,
    },
    Timer {
        node: NodeId,
        incarnation: u64,
        token: TimerToken,
    },
    Finish {
        node: NodeId,
        incarnation: u64,
        task: TaskId,
        epoch: Epoch,
    },
    Client {
        node: NodeId,
        request: RequestId,
        req: ClientRequest,
    },
    /// The connection `from` had opened to `node` closed (its process died).
    PeerLost { node: NodeId, from: NodeId },
}

impl Event {
    fn node(&self) -> NodeId {
        match self {
            Event::Deliver { to, .. } => *to,
            Event::Timer { node, .. }
            | Event::Finish { node, .. }
            | Event::Client { node, .. }
            | Event::PeerLost { node, .. } => *node,
        }
    }
}

/// How handlers behave.
#[derive(Debug, Clone)]
pub struct Handlers {
    /// Handler run time, drawn uniformly, in ms.
    pub run_ms: (u64, u64),
    /// Tasks whose handlers never return on their own (crash tests).
    pub hang: BTreeSet<TaskId>,
    /// Tasks whose first execution fails.
    pub fail_first: BTreeSet<TaskId>,
}

impl Default for Handlers {
    fn default() -> Handlers {
        Handlers {
            run_ms: (5, 30),
            hang: BTreeSet::new(),
            fail_first: BTreeSet::new(),
        }
    }
}

/// The simulated cluster.
pub struct Sim {
    pub now: Time,
    rng: NodeRng,
    members: Vec<NodeId>,
    config: LeaderlessConfig,
    capacity_tasks: u32,
    nodes: BTreeMap<NodeId, LeaderlessNode>,
    stores: BTreeMap<NodeId, Stored>,
    incarnation: BTreeMap<NodeId, u64>,
    queue: BTreeMap<(Time, u64), (Event, bool)>,
    /// CPU-starved nodes: every message to them waits up to this many µs
    /// more in their input queue (their timers still fire on time).
    pub slow_us: BTreeMap<NodeId, u64>,
    seq: u64,
    paused: BTreeSet<NodeId>,
    held: Vec<Event>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Probability that a message is lost, in parts per million.
    pub loss_ppm: u32,
    /// Drops every message `(from, to, message)` it matches, to lose
    /// exactly one kind of message in a scenario.
    #[allow(clippy::type_complexity)]
    pub drop_if: Option<Box<dyn Fn(NodeId, NodeId, &LeaderlessMessage) -> bool>>,
    /// Message latency range, in microseconds.
    pub latency_us: (u64, u64),
    pub handlers: Handlers,
    pub notes: Vec<(Time, NodeId, Note)>,
    pub replies: BTreeMap<RequestId, Result<ClientResponse, ClientError>>,
    /// `(time, node, task, epoch)` of every `Execute`.
    pub executions: Vec<(Time, NodeId, TaskId, Epoch)>,
    next_request: u64,
    failed_once: BTreeSet<TaskId>,
    /// Chosen values seen at any replica: `(task, incarnation, version)`
    /// → value. The incarnation is a permit record's (0 for a task): a
    /// key's record retired and purged is created again under its id,
    /// with another body, and counts its versions anew.
    pub chosen: BTreeMap<(TaskId, u64, u64), cohort_leaderless::record::TaskValue>,
    /// Chosen rings seen at any node: epoch → members.
    pub rings: BTreeMap<u64, Vec<NodeId>>,
    decided: BTreeMap<TaskId, TaskState>,
    assigned: BTreeMap<(TaskId, Epoch), NodeId>,
    /// Messages sent, by sender and kind (the variant's name), for
    /// measurements.
    pub sent: BTreeMap<(NodeId, String), u64>,
    /// A running hash of every event, for determinism checks.
    pub trace_hash: u64,
    pub events: u64,
    /// The worker labels each node boots with (none when absent).
    pub labels: BTreeMap<NodeId, Vec<String>>,
    /// Call [`Node::flush`] after every input, as the runtime does after
    /// every batch: the nodes then bundle what one input sends each peer.
    pub flush_inputs: bool,
    /// The limits every node boots with...
    limits: cohort_core::Limits,
    /// ...but these (see [`Sim::set_limits`]).
    node_limits: BTreeMap<NodeId, cohort_core::Limits>,
}

impl Sim {
    /// A cluster of `n` nodes (ids 1..=n), all booted at time zero.
    pub fn new(seed: u64, n: u64, config: LeaderlessConfig) -> Sim {
        Sim::with_capacity(seed, n, config, 8)
    }

    /// Like [`Sim::new`], with `capacity_tasks` per node.
    pub fn with_capacity(seed: u64, n: u64, config: LeaderlessConfig, capacity_tasks: u32) -> Sim {
        let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut sim = Sim {
            now: Time::ZERO,
            rng: NodeRng::seed_from_u64(seed),
            members: members.clone(),
            config,
            capacity_tasks,
            nodes: BTreeMap::new(),
            stores: members.iter().map(|&m| (m, Stored::new())).collect(),
            incarnation: members.iter().map(|&m| (m, 0)).collect(),
            queue: BTreeMap::new(),
            slow_us: BTreeMap::new(),
            seq: 0,
            paused: BTreeSet::new(),
            held: Vec::new(),
            cut: BTreeSet::new(),
            loss_ppm: 0,
            drop_if: None,
            latency_us: (500, 3_000),
            handlers: Handlers::default(),
            notes: Vec::new(),
            replies: BTreeMap::new(),
            executions: Vec::new(),
            next_request: 0,
            failed_once: BTreeSet::new(),
            chosen: BTreeMap::new(),
            rings: BTreeMap::new(),
            decided: BTreeMap::new(),
            assigned: BTreeMap::new(),
            sent: BTreeMap::new(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            labels: BTreeMap::new(),
            flush_inputs: false,
            limits: cohort_core::Limits::default(),
            node_limits: BTreeMap::new(),
        };
        for m in members {
            sim.boot(m);
        }
        sim
    }

    /// Like [`Sim::new`], with node `n` carrying worker label `l` for each
    /// `(n, l)` of `labels` (those nodes restart at once to take them).
    pub fn with_labels(seed: u64, n: u64, config: LeaderlessConfig, labels: &[(u64, &str)]) -> Sim {
        let mut sim = Sim::new(seed, n, config);
        for (node, label) in labels {
            let node = NodeId(*node);
            sim.labels.entry(node).or_default().push(label.to_string());
            sim.crash(node);
            sim.restart(node);
        }
        sim
    }

    /// Like [`Sim::new`], every node with `limits` (they restart at once
    /// to take them).
    pub fn with_limits(
        seed: u64,
        n: u64,
        config: LeaderlessConfig,
        limits: cohort_core::Limits,
    ) -> Sim {
        let mut sim = Sim::new(seed, n, config);
        sim.limits = limits;
        for node in sim.members.clone() {
            sim.crash(node);
            sim.restart(node);
        }
        sim
    }

    /// Gives node `id` its own `limits` (it restarts at once to take them).
    pub fn set_limits(&mut self, id: NodeId, limits: cohort_core::Limits) {
        self.node_limits.insert(id, limits);
        self.crash(id);
        self.restart(id);
    }

    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    pub fn node(&self, id: NodeId) -> &LeaderlessNode {
        &self.nodes[&id]
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    pub fn store(&self, id: NodeId) -> &Stored {
        &self.stores[&id]
    }

    fn peers(&self, id: NodeId) -> Peers {
        Peers::new(
            id,
            self.members.clone(),
            self.capacity_tasks,
            self.node_limits.get(&id).unwrap_or(&self.limits).clone(),
        )
        .and_then(|p| p.with_labels(self.labels.get(&id).cloned().unwrap_or_default()))
        .expect("valid peers")
    }

    fn boot(&mut self, id: NodeId) {
        let seed: u64 = self.rng.gen();
        let peers = self.peers(id);
        let node = LeaderlessNode::boot(
            &peers,
            &self.config,
            &self.stores[&id],
            NodeRng::seed_from_u64(seed),
            self.now,
        )
        .expect("a node boots from its own store");
        self.nodes.insert(id, node);
        self.drain(id);
    }

    /// Crashes `id`: its memory is gone, its store stays.
    pub fn crash(&mut self, id: NodeId) {
        assert!(self.nodes.remove(&id).is_some(), "{id} was up");
        *self.incarnation.get_mut(&id).expect("member") += 1;
        self.paused.remove(&id);
    }

    /// Kills `id`'s process: like [`Sim::crash`] (which is a machine that
    /// goes silent), and the kernel closes its connections, so every live
    /// node hears of it one message latency later.
    pub fn kill(&mut self, id: NodeId) {
        self.crash(id);
        let live: Vec<NodeId> = self.nodes.keys().copied().collect();
        for node in live {
            let lat = self.rng.gen_range(self.latency_us.0..=self.latency_us.1);
            self.push(Time(self.now.0 + lat), Event::PeerLost { node, from: id });
        }
    }

    /// The connection `from` opened to `node` closes while both live (a
    /// reset link, a restart of `from`'s transport).
    pub fn close_connection(&mut self, node: NodeId, from: NodeId) {
        self.push(self.now, Event::PeerLost { node, from });
    }

    /// Boots `id` again from its store.
    pub fn restart(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "{id} was down");
        self.boot(id);
    }

    /// Stops handing `id` any input until [`Sim::resume`].
    pub fn pause(&mut self, id: NodeId) {
        self.paused.insert(id);
    }

    pub fn resume(&mut self, id: NodeId) {
        self.paused.remove(&id);
        let held: Vec<Event> = std::mem::take(&mut self.held);
        for e in held {
            if e.node() == id {
                self.push(self.now, e);
            } else {
                self.held.push(e);
            }
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: NodeId) {
        for m in self.members.clone() {
            if m != id {
                self.cut(id, m);
            }
        }
    }

    /// Restores both directions between `a` and `b`.
    pub fn heal_link(&mut self, a: NodeId, b: NodeId) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    fn push(&mut self, at: Time, e: Event) {
        self.push_delayed(at, e, false);
    }

    fn push_delayed(&mut self, at: Time, e: Event, delayed: bool) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (e, delayed));
    }

    /// Hands `node` a client request; the reply lands in `replies`.
    pub fn client(&mut self, node: NodeId, req: ClientRequest) -> RequestId {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.push(self.now, Event::Client { node, request, req });
        request
    }

    pub fn submit(&mut self, node: NodeId, id: TaskId, payload: &[u8]) -> RequestId {
        self.client(
            node,
            ClientRequest::Submit {
                id,
                task: task(payload),
            },
        )
    }

    pub fn get(&mut self, node: NodeId, id: TaskId, consistency: Consistency) -> RequestId {
        self.client(node, ClientRequest::Get { id, consistency })
    }

    /// Calls `f` on node `id` and carries out what it asked for.
    pub fn with_node<R>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut LeaderlessNode, Time) -> R,
    ) -> R {
        let now = self.now;
        let r = f(self.nodes.get_mut(&id).expect("node is up"), now);
        self.drain(id);
        r
    }

    fn drain(&mut self, id: NodeId) {
        let (now, flush) = (self.now, self.flush_inputs);
        let actions: Vec<Action<LeaderlessMessage>> = match self.nodes.get_mut(&id) {
            Some(n) => {
                if flush {
                    n.flush(now);
                }
                n.actions().collect()
            }
            None => return,
        };
        let incarnation = self.incarnation[&id];
        for a in actions {
            match a {
                Action::Persist(ops) => self.stores.get_mut(&id).expect("member").apply(&ops),
                Action::Send { to, msg } => {
                    assert_ne!(to, id, "a node handles its own messages");
                    // Every message goes through the wire codec.
                    let bytes = encode(&msg);
                    let msg: LeaderlessMessage = decode(&bytes, 1 << 24).expect("round trip");
                    let dbg = format!("{msg:?}");
                    let kind = dbg.split([' ', '(', '{']).next().unwrap_or_default();
                    *self.sent.entry((id, kind.to_string())).or_default() += 1;
                    if self.cut.contains(&(id, to)) {
                        continue;
                    }
                    if self.drop_if.as_ref().is_some_and(|f| f(id, to, &msg)) {
                        continue;
                    }
                    if self.loss_ppm > 0 && self.rng.gen_range(0..1_000_000) < self.loss_ppm {
                        continue;
                    }
                    let lat = self.rng.gen_range(self.latency_us.0..=self.latency_us.1);
                    let msg = Box::new(msg);
                    self.push(Time(self.now.0 + lat), Event::Deliver { from: id, to, msg });
                }
                Action::SetTimer { token, at } => {
                    assert!(at >= self.now, "timers are not set in the past");
                    self.push(
                        at,
                        Event::Timer {
                            node: id,
                            incarnation,
                            token,
                        },
                    );
                }
                Action::Execute {
                    id: task, epoch, ..
                } => {
                    assert_eq!(
                        self.assigned.get(&(task, epoch)),
                        Some(&id),
                        "{id} executes {task:?} {epoch} without a chosen assignment to it"
                    );
                    self.executions.push((self.now, id, task, epoch));
                    if !self.handlers.hang.contains(&task) {
                        let ms = self
                            .rng
                            .gen_range(self.handlers.run_ms.0..=self.handlers.run_ms.1);
                        self.push(
                            self.now + std::time::Duration::from_millis(ms),
                            Event::Finish {
                                node: id,
                                incarnation,
                                task,
                                epoch,
                            },
                        );
                    }
                }
                Action::Reply { request, reply } => {
                    let prev = self.replies.insert(request, reply);
                    assert!(prev.is_none(), "one reply per request");
                }
                Action::Note(note) => {
                    self.check_note(id, &note);
                    self.notes.push((self.now, id, note));
                }
            }
        }
    }

    fn check_note(&mut self, id: NodeId, note: &Note) {
        match note {
            Note::Assigned {
                task, epoch, node, ..
            } => {
                // A task runs again only after its previous assignment ended.
                if *epoch > Epoch(1) {
                    let prev_epoch = Epoch(epoch.0 - 1);
                    let ended = self.notes.iter().any(|(_, _, n)| {
                        matches!(n, Note::Superseded { task: t, epoch: e, .. } if t == task && *e == prev_epoch)
                    });
                    assert!(
                        ended,
                        "G3: {task:?} {epoch} assigned before {prev_epoch} ended"
                    );
                }
                let prev = self.assigned.insert((*task, *epoch), *node);
                assert!(
                    prev.is_none_or(|p| p == *node),
                    "G3: {task:?} {epoch} assigned to {prev:?} and {node} (noted by {id})"
                );
                let max = self
                    .assigned
                    .range((*task, Epoch::ZERO)..=(*task, Epoch(u64::MAX)))
                    .map(|((_, e), _)| *e)
                    .max()
                    .expect("just inserted");
                assert!(max >= *epoch);
            }
            Note::Decided { task, state } => {
                assert!(state.is_final());
                let prev = self.decided.insert(*task, state.clone());
                assert!(
                    prev.as_ref().is_none_or(|p| p == state),
                    "G2: {task:?} decided {prev:?} and {state:?}"
                );
            }
            Note::Superseded { .. } => {}
            Note::Purged { task } => assert!(
                self.decided.contains_key(task),
                "G1: {task:?} purged by {id} before its outcome was decided"
            ),
            Note::Heartbeat { task, epoch, node } => {
                // Chosen only on the assignment it names, while it holds
                // the task (noted once, by the proposer, when chosen).
                assert_eq!(
                    self.assigned.get(&(*task, *epoch)),
                    Some(node),
                    "G3: heartbeat of {task:?} {epoch} on {node}, never assigned"
                );
                let ended = self.notes.iter().any(|(_, _, n)| {
                    matches!(n, Note::Superseded { task: t, epoch: e, .. } if t == task && e == epoch)
                });
                assert!(!ended, "G3: heartbeat of {task:?} {epoch} after it ended");
                assert!(
                    !self.decided.contains_key(task),
                    "G3: heartbeat of {task:?} after it was decided"
                );
            }
        }
    }

    /// One value per Paxos instance, across every replica's records (and
    /// across moves: a task's new replicas hold the same values); one ring
    /// per ring epoch across every node.
    fn check_records(&mut self) {
        for node in self.nodes.values() {
            let ring = node.ring();
            let prev = self.rings.insert(ring.epoch, ring.members.clone());
            assert!(
                prev.as_ref().is_none_or(|p| *p == ring.members),
                "two rings chosen at epoch {}: {prev:?} and {:?} (at {})",
                ring.epoch,
                ring.members,
                node.id()
            );
        }
        for node in self.nodes.values() {
            // Version 0 is a creation, not a Paxos choice: a record written
            // under an older ring that the creation fence left dead can
            // differ there; it never reaches version 1, where two live
            // records of a task would show.
            for (task, version, value) in node.records().filter(|r| r.1 > 0) {
                let body = node.task(task).expect("a record has its task");
                let incarnation =
                    cohort_leaderless::permit::permit_incarnation(body).map_or(0, |t| t.0);
                match self.chosen.get(&(task, incarnation, version)) {
                    Some(v) => assert_eq!(
                        v,
                        value,
                        "two values chosen for {task:?} version {version} (at {})",
                        node.id()
                    ),
                    None => {
                        self.chosen
                            .insert((task, incarnation, version), value.clone());
                    }
                }
            }
        }
    }

    fn hash(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.trace_hash ^= u64::from(b);
            self.trace_hash = self.trace_hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Runs one event. Returns false when nothing is queued.
    pub fn step(&mut self) -> bool {
        let Some((&(at, seq), _)) = self.queue.iter().next() else {
            return false;
        };
        let (e, delayed) = self.queue.remove(&(at, seq)).expect("present");
        assert!(at >= self.now);
        self.now = at;
        let node = e.node();
        let is_message = matches!(e, Event::Deliver { .. });
        if let (false, true, Some(&max)) = (delayed, is_message, self.slow_us.get(&node)) {
            let extra = self.rng.gen_range(0..=max);
            self.push_delayed(Time(at.0 + extra), e, true);
            return true;
        }
        if self.paused.contains(&node) {
            self.held.push(e);
            return true;
        }
        if !self.nodes.contains_key(&node) {
            if let Event::Client { request, .. } = e {
                self.replies.insert(
                    request,
                    Err(ClientError::Unavailable {
                        reason: "node down".into(),
                    }),
                );
            }
            return true;
        }
        self.events += 1;
        self.hash(at.0);
        self.hash(node.0);
        let now = self.now;
        let inc = self.incarnation[&node];
        match e {
            Event::Deliver { from, to, msg } => {
                self.hash(encode(&msg).len() as u64);
                self.nodes
                    .get_mut(&to)
                    .expect("up")
                    .handle_message(now, from, *msg);
            }
            Event::Timer {
                node,
                incarnation,
                token,
            } => {
                if incarnation != inc {
                    return true;
                }
                self.nodes
                    .get_mut(&node)
                    .expect("up")
                    .handle_timer(now, token);
            }
            Event::Finish {
                node,
                incarnation,
                task,
                epoch,
            } => {
                if incarnation != inc {
                    return true;
                }
                let outcome =
                    if self.handlers.fail_first.contains(&task) && self.failed_once.insert(task) {
                        TaskOutcome::Failure("first attempt fails".into())
                    } else {
                        TaskOutcome::Success(format!("{task:?}@{epoch}").into_bytes())
                    };
                self.nodes
                    .get_mut(&node)
                    .expect("up")
                    .handle_task_finished(now, task, epoch, outcome);
            }
            Event::Client { node, request, req } => {
                self.nodes
                    .get_mut(&node)
                    .expect("up")
                    .handle_client(now, request, req);
            }
            Event::PeerLost { node, from } => {
                self.hash(from.0);
                self.nodes
                    .get_mut(&node)
                    .expect("up")
                    .handle_peer_lost(now, from);
            }
        }
        self.drain(node);
        self.check_records();
        true
    }

    /// Runs until virtual time `ms` milliseconds from now.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + std::time::Duration::from_millis(ms);
        while let Some((&(at, _), _)) = self.queue.iter().next() {
            if at > end {
                break;
            }
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Runs until `done` holds (checked every ms of virtual time) or
    /// `max_ms` passed. Returns whether `done` held.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_ms {
            if done(self) {
                return true;
            }
            self.run_for(1);
        }
        done(self)
    }

    pub fn reply(&self, r: RequestId) -> Option<&Result<ClientResponse, ClientError>> {
        self.replies.get(&r)
    }

    pub fn decided(&self, id: TaskId) -> Option<&TaskState> {
        self.decided.get(&id)
    }

    pub fn assignments(&self, id: TaskId) -> Vec<(Epoch, NodeId)> {
        self.assigned
            .range((id, Epoch::ZERO)..=(id, Epoch(u64::MAX)))
            .map(|(&(_, e), &n)| (e, n))
            .collect()
    }

    pub fn executions_of(&self, id: TaskId) -> Vec<(NodeId, Epoch)> {
        self.executions
            .iter()
            .filter(|(_, _, t, _)| *t == id)
            .map(|&(_, n, _, e)| (n, e))
            .collect()
    }

    /// Notes `Superseded` for a task.
    pub fn superseded(&self, id: TaskId) -> Vec<Epoch> {
        self.notes
            .iter()
            .filter_map(|(_, _, n)| match n {
                Note::Superseded { task, epoch, .. } if *task == id => Some(*epoch),
                _ => None,
            })
            .collect()
    }
}

pub fn task(payload: &[u8]) -> Task {
    Task {
        kind: "echo".into(),
        payload: payload.to_vec(),
        // Past any handler duration the tests set (`handlers.run_ms`): the
        // harness's runner never stops a handler at its timeout, and a
        // handler past it loses its lease once the grace ends too.
        timeout_ms: 10_000,
        max_attempts: 3,
        not_before: cohort_core::Time::ZERO,
        retry: cohort_core::RetryPolicy::default(),
        schedule_to_start_ms: 0,
        priority: 0,
        heartbeat_timeout_ms: 0,
        labels: Vec::new(),
        limit: None,
        lease_grace_ms: 0,
        retry_of: None,
    }
}

/// A task id derived from `n`, spread over the hash space.
pub fn tid(n: u64) -> TaskId {
    TaskId(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) | 1)
}
