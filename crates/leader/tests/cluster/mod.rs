//! A small deterministic driver for [`LeaderNode`] clusters, standing in
//! for `cohort-sim` until it lands: seeded network (loss, delay, cuts),
//! crash/restart from the persisted store, pause/resume, a task executor
//! and clients, plus checkers on the recorded notes (G1–G3).

#![allow(dead_code)]

use cohort_core::{
    Action, ClientError, ClientRequest, ClientResponse, Consistency, Epoch, Limits, Node, NodeId,
    NodeRng, Note, Peers, RequestId, Stored, SupersedeReason, Task, TaskId, TaskOutcome, TaskState,
    Time, TimerToken,
};
use cohort_leader::{LeaderMsg, LeaderNode, ValidLeaderConfig};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: LeaderMsg,
    },
    Timer {
        node: NodeId,
        gen: u64,
        token: TimerToken,
    },
    Done {
        node: NodeId,
        gen: u64,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    },
}

pub struct Cluster {
    pub rng: NodeRng,
    pub now: Time,
    pub cfg: ValidLeaderConfig,
    pub members: Vec<NodeId>,
    pub limits: Limits,
    pub nodes: BTreeMap<NodeId, Option<LeaderNode>>,
    pub stored: BTreeMap<NodeId, Stored>,
    gens: BTreeMap<NodeId, u64>,
    queue: BTreeMap<(Time, u64), Event>,
    seq: u64,
    pub paused: BTreeSet<NodeId>,
    held: Vec<Event>,
    pub loss: f64,
    pub delay_us: (u64, u64),
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// How long a handler runs.
    pub exec_ms: u64,
    /// (time, node, note) as emitted.
    pub notes: Vec<(Time, NodeId, Note)>,
    /// Executions started: (time, node, task, epoch).
    pub executed: Vec<(Time, NodeId, TaskId, Epoch)>,
    pub replies: BTreeMap<RequestId, Result<ClientResponse, ClientError>>,
    next_request: u64,
    /// Failures left per task for the `flaky` kind.
    pub flaky: BTreeMap<TaskId, u32>,
    pub max_log_len: usize,
    /// The worker labels each node starts with (none when absent).
    pub labels: BTreeMap<NodeId, Vec<String>>,
}

pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

pub fn task(kind: &str, payload: &[u8]) -> Task {
    Task {
        kind: kind.into(),
        payload: payload.to_vec(),
        // Past any handler duration the tests set (`exec_ms`): the
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

impl Cluster {
    pub fn new(seed: u64, n: u64, cfg: ValidLeaderConfig) -> Cluster {
        Cluster::with_limits(seed, n, cfg, Limits::default())
    }

    /// [`Cluster::new`] with the nodes' `limits`.
    pub fn with_limits(seed: u64, n: u64, cfg: ValidLeaderConfig, limits: Limits) -> Cluster {
        let mut c = Cluster {
            rng: NodeRng::seed_from_u64(seed),
            now: Time::ZERO,
            cfg,
            members: ids(n),
            limits,
            nodes: BTreeMap::new(),
            stored: BTreeMap::new(),
            gens: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            paused: BTreeSet::new(),
            held: Vec::new(),
            loss: 0.0,
            delay_us: (200, 2_000),
            cut: BTreeSet::new(),
            exec_ms: 20,
            notes: Vec::new(),
            executed: Vec::new(),
            replies: BTreeMap::new(),
            next_request: 0,
            flaky: BTreeMap::new(),
            max_log_len: 0,
            labels: BTreeMap::new(),
        };
        for id in c.members.clone() {
            c.stored.insert(id, Stored::new());
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: NodeId) {
        let peers = Peers::new(id, self.members.clone(), 4, self.limits.clone())
            .and_then(|p| p.with_labels(self.labels.get(&id).cloned().unwrap_or_default()))
            .unwrap();
        let rng = NodeRng::seed_from_u64(self.rng.gen());
        let node = LeaderNode::boot(&peers, &self.cfg, &self.stored[&id], rng, self.now)
            .expect("a node boots from its own store");
        *self.gens.entry(id).or_insert(0) += 1;
        self.nodes.insert(id, Some(node));
        self.drain(id);
    }

    pub fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
        self.paused.remove(&id);
    }

    /// `to`'s transport sees the connection from `from` close (what the
    /// kernel does when `from`'s process dies).
    pub fn lose_connection(&mut self, to: NodeId, from: NodeId) {
        if !self.is_up(to) {
            return;
        }
        let now = self.now;
        let node = self.nodes.get_mut(&to).unwrap().as_mut().unwrap();
        node.handle_peer_lost(now, from);
        self.drain(to);
    }

    /// Drains `id`: its running tasks may finish within `deadline_ms`.
    pub fn begin_drain(&mut self, id: NodeId, deadline_ms: u64) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
        node.begin_drain(now, now + Duration::from_millis(deadline_ms))
            .expect("leader mode drains");
        self.drain(id);
    }

    pub fn restart(&mut self, id: NodeId) {
        assert!(self.nodes[&id].is_none());
        self.start(id);
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(Option::is_some)
    }

    pub fn node(&self, id: NodeId) -> &LeaderNode {
        self.nodes[&id].as_ref().expect("up")
    }

    pub fn pause(&mut self, id: NodeId) {
        self.paused.insert(id);
    }

    pub fn resume(&mut self, id: NodeId) {
        self.paused.remove(&id);
        let held = std::mem::take(&mut self.held);
        for ev in held {
            let target = target_of(&ev);
            if target == id {
                self.seq += 1;
                self.queue.insert((self.now, self.seq), ev);
            } else {
                self.held.push(ev);
            }
        }
    }

    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.loss = 0.0;
        for id in self.members.clone() {
            if !self.is_up(id) {
                self.restart(id);
            }
            if self.paused.contains(&id) {
                self.resume(id);
            }
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.as_ref().map(|n| (*id, n.raft_status())))
            .filter(|(id, s)| {
                s.role == cohort_leader::raft::Role::Leader && !self.paused.contains(id)
            })
            .max_by_key(|(_, s)| s.term)
            .map(|(id, _)| id)
    }

    pub fn elect(&mut self, limit_ms: u64) -> NodeId {
        for _ in 0..limit_ms / 10 {
            self.run_for(10);
            if let Some(l) = self.leader() {
                return l;
            }
        }
        panic!("no leader within {limit_ms} ms");
    }

    /// Sends a client request to `at`; returns its id (the reply lands in `replies`).
    pub fn request(&mut self, at: NodeId, req: ClientRequest) -> RequestId {
        self.next_request += 1;
        let r = RequestId(self.next_request);
        if let Some(Some(n)) = self.nodes.get_mut(&at) {
            n.handle_client(self.now, r, req);
            self.drain(at);
        }
        r
    }

    pub fn submit(&mut self, at: NodeId, id: TaskId, task: Task) -> RequestId {
        self.request(at, ClientRequest::Submit { id, task })
    }

    pub fn get(&mut self, at: NodeId, id: TaskId) -> RequestId {
        self.request(
            at,
            ClientRequest::Get {
                id,
                consistency: Consistency::Linearizable,
            },
        )
    }

    /// Submits to whoever leads, retrying until accepted or `limit_ms` passes.
    pub fn submit_until_accepted(&mut self, id: TaskId, task: Task, limit_ms: u64) -> bool {
        for _ in 0..limit_ms / 20 {
            if let Some(l) = self.leader() {
                let r = self.submit(l, id, task.clone());
                self.run_for(20);
                match self.replies.get(&r) {
                    Some(Ok(ClientResponse::Accepted { .. })) => return true,
                    Some(Err(e)) => assert!(e.is_retryable(), "{e}"),
                    _ => {}
                }
            } else {
                self.run_for(20);
            }
        }
        false
    }

    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while let Some((&(at, seq), _)) = self.queue.first_key_value() {
            if at > end {
                break;
            }
            let ev = self.queue.remove(&(at, seq)).unwrap();
            self.now = self.now.max(at);
            self.dispatch(ev);
        }
        self.now = end;
    }

    fn dispatch(&mut self, ev: Event) {
        let target = target_of(&ev);
        if !self.is_up(target) {
            return;
        }
        if self.paused.contains(&target) {
            self.held.push(ev);
            return;
        }
        let now = self.now;
        let gen = self.gens[&target];
        let node = self.nodes.get_mut(&target).unwrap().as_mut().unwrap();
        match ev {
            Event::Deliver { from, msg, .. } => node.handle_message(now, from, msg),
            Event::Timer { gen: g, token, .. } => {
                if g != gen {
                    return;
                }
                node.handle_timer(now, token)
            }
            Event::Done {
                gen: g,
                task,
                epoch,
                outcome,
                ..
            } => {
                if g != gen {
                    return;
                }
                node.handle_task_finished(now, task, epoch, outcome)
            }
        }
        self.drain(target);
    }

    fn drain(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
        let actions: Vec<Action<LeaderMsg>> = node.actions().collect();
        let len = node.raft_log().len();
        self.max_log_len = self.max_log_len.max(len);
        let gen = self.gens[&id];
        for a in actions {
            match a {
                Action::Persist(ops) => self.stored.get_mut(&id).unwrap().apply(&ops),
                Action::Send { to, msg } => {
                    // Round-trip the codec, as a real transport would.
                    let msg: LeaderMsg = cohort_core::decode(
                        &cohort_core::encode(&msg),
                        self.limits.message_bytes_max,
                    )
                    .expect("messages round-trip");
                    if self.cut.contains(&(id, to)) || self.rng.gen_bool(self.loss) {
                        continue;
                    }
                    let d = self.rng.gen_range(self.delay_us.0..=self.delay_us.1);
                    self.push(
                        self.now + Duration::from_micros(d),
                        Event::Deliver { from: id, to, msg },
                    );
                }
                Action::Execute {
                    id: task,
                    epoch,
                    task: t,
                } => {
                    self.executed.push((self.now, id, task, epoch));
                    let outcome = self.run_handler(task, &t);
                    let at = self.now + Duration::from_millis(self.exec_ms);
                    self.push(
                        at,
                        Event::Done {
                            node: id,
                            gen,
                            task,
                            epoch,
                            outcome,
                        },
                    );
                }
                Action::Reply { request, reply } => {
                    assert!(
                        self.replies.insert(request, reply).is_none(),
                        "one reply per request"
                    );
                }
                Action::SetTimer { token, at } => {
                    self.push(
                        at.max(self.now),
                        Event::Timer {
                            node: id,
                            gen,
                            token,
                        },
                    );
                }
                Action::Note(n) => self.notes.push((self.now, id, n)),
            }
        }
    }

    fn run_handler(&mut self, id: TaskId, t: &Task) -> TaskOutcome {
        match t.kind.as_str() {
            "fail" => TaskOutcome::Failure("always fails".into()),
            "flaky" => {
                let left = self.flaky.entry(id).or_insert(1);
                if *left > 0 {
                    *left -= 1;
                    TaskOutcome::Failure("flaky".into())
                } else {
                    TaskOutcome::Success(t.payload.clone())
                }
            }
            _ => TaskOutcome::Success(t.payload.clone()),
        }
    }

    /// Delivers `msg` from `from` to `to` at once, as if it came off the
    /// wire (a forged or corrupt message, say).
    pub fn deliver_now(&mut self, from: NodeId, to: NodeId, msg: LeaderMsg) {
        let ev = Event::Deliver { from, to, msg };
        self.dispatch(ev);
    }

    fn push(&mut self, at: Time, ev: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// G2 and G3 over the notes; returns each decided task's final state.
    pub fn check_history(&self) -> BTreeMap<TaskId, TaskState> {
        let mut decided: BTreeMap<TaskId, TaskState> = BTreeMap::new();
        let mut assigned: BTreeMap<(TaskId, Epoch), NodeId> = BTreeMap::new();
        let mut superseded: BTreeSet<(TaskId, Epoch)> = BTreeSet::new();
        for (_, _, note) in &self.notes {
            match note {
                Note::Assigned {
                    task, epoch, node, ..
                } => {
                    let prev = assigned.insert((*task, *epoch), *node);
                    assert!(
                        prev.is_none() || prev == Some(*node),
                        "G3: epoch {epoch} of {task:?} assigned twice"
                    );
                }
                Note::Superseded { task, epoch, .. } => {
                    superseded.insert((*task, *epoch));
                }
                Note::Decided { task, state } => {
                    let prev = decided.entry(*task).or_insert_with(|| state.clone());
                    assert_eq!(prev, state, "G2: {task:?} decided twice differently");
                }
                Note::Heartbeat { task, epoch, node } => {
                    assert_eq!(
                        assigned.get(&(*task, *epoch)),
                        Some(node),
                        "G3: a heartbeat recorded for an assignment never made"
                    );
                }
                Note::Purged { task } => {
                    assert!(
                        decided.contains_key(task),
                        "G1: {task:?} purged before its outcome was decided"
                    );
                }
            }
        }
        for (task, state) in &decided {
            if let TaskState::Succeeded { node, epoch, .. } = state {
                assert_eq!(
                    assigned.get(&(*task, *epoch)),
                    Some(node),
                    "G3: result from an unassigned run"
                );
                assert!(
                    !superseded.contains(&(*task, *epoch)),
                    "G3: result from a superseded epoch"
                );
            }
        }
        decided
    }

    pub fn superseded(&self, reason: SupersedeReason) -> usize {
        let set: BTreeSet<(TaskId, Epoch)> = self
            .notes
            .iter()
            .filter_map(|(_, _, n)| match n {
                Note::Superseded {
                    task,
                    epoch,
                    reason: r,
                } if *r == reason => Some((*task, *epoch)),
                _ => None,
            })
            .collect();
        set.len()
    }

    /// Time of the first Assigned note after `t`.
    pub fn first_assigned_after(&self, t: Time) -> Option<Time> {
        self.notes
            .iter()
            .find(|(at, _, n)| *at > t && matches!(n, Note::Assigned { .. }))
            .map(|(at, _, _)| *at)
    }
}

fn target_of(ev: &Event) -> NodeId {
    match ev {
        Event::Deliver { to, .. } => *to,
        Event::Timer { node, .. } | Event::Done { node, .. } => *node,
    }
}
