//! A test-only node for driving the simulator end to end while the real
//! modes are written: one fixed coordinator (the lowest id) that persists
//! every task before acknowledging it, hands each assignment to a runner
//! under a fresh epoch, reassigns with epoch + 1 when a lease runs out or an
//! attempt fails, and reboots from what it persisted. Other nodes only run
//! handlers and redirect clients to the coordinator.
//!
//! [`Bug`] makes it deliberately wrong, so tests can show the checkers
//! catch real mistakes in real runs.
#![allow(dead_code)]

use cohort_core::{
    decode, encode, Action, BootError, ClientError, ClientRequest, ClientResponse, Epoch, Limits,
    Node, NodeId, NodeRng, Note, Peers, RequestId, StoreOp, Stored, SupersedeReason, Task, TaskId,
    TaskOutcome, TaskState, Time, TimerToken,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What peers send each other.
// A test protocol's messages: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Coordinator to runner: run `task` under `epoch`.
    Run {
        task: TaskId,
        epoch: Epoch,
        body: Task,
    },
    /// Runner to coordinator: the handler returned.
    Done {
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    },
    /// Background chatter (see [`CoordConfig::heartbeat_ms`]).
    Ping { from: NodeId, seq: u64 },
}

/// A deliberate mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// None: the node is correct.
    None,
    /// Acknowledges a submit before persisting it.
    AckBeforePersist,
    /// Never reads its store back: a restarted coordinator knows nothing.
    ForgetOnCrash,
    /// Accepts a result from any epoch of a task that is not final yet.
    NoFencing,
    /// Accepts every result, even for a final task: the last one wins.
    Redecide,
}

/// Settings of the test node.
#[derive(Clone, Debug)]
pub struct CoordConfig {
    /// Which mistake to make.
    pub bug: Bug,
    /// Lease slack on top of a task's timeout.
    pub lease_slack_ms: u64,
    /// If set, every node pings every other this often: background load
    /// like a real mode's heartbeats, for measuring simulator speed.
    pub heartbeat_ms: Option<u64>,
}

impl CoordConfig {
    pub fn correct() -> CoordConfig {
        CoordConfig {
            bug: Bug::None,
            lease_slack_ms: 200,
            heartbeat_ms: None,
        }
    }
    pub fn with_bug(bug: Bug) -> CoordConfig {
        CoordConfig {
            bug,
            ..CoordConfig::correct()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    task: Task,
    state: TaskState,
    epoch: Epoch,
    failures: u32,
}

pub struct CoordNode {
    id: NodeId,
    coordinator: NodeId,
    members: Vec<NodeId>,
    limits: Limits,
    cfg: CoordConfig,
    tasks: BTreeMap<TaskId, Record>,
    leases: BTreeMap<u64, (TaskId, Epoch)>,
    next_token: u64,
    next_runner: usize,
    out: Vec<Action<Msg>>,
}

/// The heartbeat timer's token; lease tokens count up from 1.
const HEARTBEAT: u64 = u64::MAX;

fn key(id: TaskId) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

impl CoordNode {
    pub fn is_coordinator(&self) -> bool {
        self.id == self.coordinator
    }

    /// How many tasks this node tracks.
    pub fn tasks_tracked(&self) -> usize {
        self.tasks.len()
    }

    fn persist(&mut self, id: TaskId) {
        let value = encode(&self.tasks[&id]);
        self.out.push(Action::Persist(vec![StoreOp::Put {
            key: key(id),
            value,
        }]));
    }

    /// Ends the current assignment (if any) and starts the next one; before
    /// the task's `not_before`, waits for it instead (a timer like a lease's).
    fn assign(&mut self, now: Time, id: TaskId, reason: SupersedeReason) {
        let (epoch, not_before) = {
            let rec = &self.tasks[&id];
            (rec.epoch, rec.task.not_before)
        };
        if now < not_before {
            self.next_token += 1;
            self.leases.insert(self.next_token, (id, epoch));
            self.out.push(Action::SetTimer {
                token: TimerToken(self.next_token),
                at: not_before,
            });
            return;
        }
        let runner = self.members[self.next_runner % self.members.len()];
        self.next_runner += 1;
        let rec = self.tasks.get_mut(&id).expect("assigning a known task");
        let prev = rec.epoch;
        let epoch = prev.next();
        rec.epoch = epoch;
        rec.state = TaskState::Running {
            node: runner,
            epoch,
        };
        let body = rec.task.clone();
        let lease_ms = body.timeout_ms + self.cfg.lease_slack_ms;
        if prev > Epoch::ZERO {
            self.out.push(Action::Note(Note::Superseded {
                task: id,
                epoch: prev,
                reason,
            }));
        }
        self.persist(id);
        self.out.push(Action::Note(Note::Assigned {
            task: id,
            epoch,
            node: runner,
            at: cohort_core::Time::ZERO,
        }));
        if runner == self.id {
            self.out.push(Action::Execute {
                id,
                epoch,
                task: body,
            });
        } else {
            self.out.push(Action::Send {
                to: runner,
                msg: Msg::Run {
                    task: id,
                    epoch,
                    body,
                },
            });
        }
        self.next_token += 1;
        self.leases.insert(self.next_token, (id, epoch));
        self.out.push(Action::SetTimer {
            token: TimerToken(self.next_token),
            at: now + std::time::Duration::from_millis(lease_ms),
        });
    }

    fn finished(
        &mut self,
        now: Time,
        runner: NodeId,
        id: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    ) {
        let bug = self.cfg.bug;
        let Some(rec) = self.tasks.get_mut(&id) else {
            return;
        };
        let fenced = rec.epoch != epoch && !matches!(bug, Bug::NoFencing | Bug::Redecide);
        if fenced || (rec.state.is_final() && bug != Bug::Redecide) {
            return; // a stale or repeated result
        }
        if rec.state == TaskState::Pending {
            return;
        }
        match outcome {
            TaskOutcome::Success(result) => {
                rec.state = TaskState::Succeeded {
                    result,
                    node: runner,
                    epoch,
                };
            }
            TaskOutcome::Failure(error) => {
                rec.failures += 1;
                if rec.state.is_final() {
                    return;
                }
                if rec.failures < rec.task.max_attempts && rec.task.retry.retries(&error) {
                    return self.assign(now, id, SupersedeReason::AttemptFailed);
                }
                rec.state = TaskState::Failed {
                    error,
                    attempts: rec.failures,
                };
            }
        }
        let state = rec.state.clone();
        self.persist(id);
        self.out
            .push(Action::Note(Note::Decided { task: id, state }));
    }

    fn heartbeat(&mut self, now: Time) {
        let Some(ms) = self.cfg.heartbeat_ms else {
            return;
        };
        self.next_token += 1;
        for to in self.members.clone() {
            if to != self.id {
                let msg = Msg::Ping {
                    from: self.id,
                    seq: self.next_token,
                };
                self.out.push(Action::Send { to, msg });
            }
        }
        self.out.push(Action::SetTimer {
            token: TimerToken(HEARTBEAT),
            at: now + std::time::Duration::from_millis(ms),
        });
    }

    fn reply(&mut self, request: RequestId, reply: Result<ClientResponse, ClientError>) {
        self.out.push(Action::Reply { request, reply });
    }
}

impl Node for CoordNode {
    type Message = Msg;
    type Config = CoordConfig;

    fn boot(
        peers: &Peers,
        cfg: &CoordConfig,
        stored: &Stored,
        _rng: NodeRng,
        now: Time,
    ) -> Result<Self, BootError> {
        let mut node = CoordNode {
            id: peers.id,
            coordinator: peers.members[0],
            members: peers.members.clone(),
            limits: peers.limits.clone(),
            cfg: cfg.clone(),
            tasks: BTreeMap::new(),
            leases: BTreeMap::new(),
            next_token: 0,
            next_runner: 0,
            out: Vec::new(),
        };
        node.heartbeat(now);
        if !node.is_coordinator() || cfg.bug == Bug::ForgetOnCrash {
            return Ok(node);
        }
        let restored: Vec<(TaskId, Record)> = stored
            .scan_prefix(b"t/")
            .map(|(k, v)| {
                let id = TaskId(u128::from_be_bytes(k[2..].try_into().expect("16-byte key")));
                (id, decode(v, usize::MAX).expect("own record decodes"))
            })
            .collect();
        for (id, rec) in restored {
            let open = !rec.state.is_final();
            node.tasks.insert(id, rec);
            if open {
                // The runner of the last assignment may be gone with us.
                node.assign(now, id, SupersedeReason::RunnerDeclaredDead);
            }
        }
        Ok(node)
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: Msg) {
        match msg {
            Msg::Run { task, epoch, body } => self.out.push(Action::Execute {
                id: task,
                epoch,
                task: body,
            }),
            Msg::Ping { .. } => {}
            Msg::Done {
                task,
                epoch,
                outcome,
            } => {
                if self.is_coordinator() {
                    self.finished(now, from, task, epoch, outcome);
                }
            }
        }
    }

    fn handle_timer(&mut self, now: Time, token: TimerToken) {
        if token.0 == HEARTBEAT {
            return self.heartbeat(now);
        }
        let Some((id, epoch)) = self.leases.remove(&token.0) else {
            return;
        };
        let expired = self
            .tasks
            .get(&id)
            .is_some_and(|r| r.epoch == epoch && !r.state.is_final());
        if expired {
            self.assign(now, id, SupersedeReason::LeaseExpired);
        }
    }

    fn handle_client(&mut self, now: Time, request: RequestId, req: ClientRequest) {
        if !self.is_coordinator() {
            let leader = Some(self.coordinator);
            return self.reply(request, Err(ClientError::NotLeader { leader }));
        }
        match req {
            ClientRequest::Submit { id, task } => {
                if let Err(e) = self.limits.check_task(&task) {
                    return self.reply(request, Err(e));
                }
                if let Some(rec) = self.tasks.get(&id) {
                    let reply = if rec.task == task {
                        Ok(ClientResponse::Accepted { id })
                    } else {
                        Err(ClientError::IdConflict { id })
                    };
                    return self.reply(request, reply);
                }
                self.tasks.insert(
                    id,
                    Record {
                        task,
                        state: TaskState::Pending,
                        epoch: Epoch::ZERO,
                        failures: 0,
                    },
                );
                if self.cfg.bug == Bug::AckBeforePersist {
                    self.reply(request, Ok(ClientResponse::Accepted { id }));
                    self.persist(id);
                } else {
                    self.persist(id);
                    self.reply(request, Ok(ClientResponse::Accepted { id }));
                }
                // The first assignment supersedes nothing; the reason is unused.
                self.assign(now, id, SupersedeReason::LeaseExpired);
            }
            ClientRequest::Get { id, .. } => {
                let reply = match self.tasks.get(&id) {
                    Some(rec) => Ok(ClientResponse::State {
                        id,
                        state: rec.state.clone(),
                    }),
                    None => Err(ClientError::NotFound { id }),
                };
                self.reply(request, reply);
            }
            ClientRequest::Cancel { id } => {
                let Some(rec) = self.tasks.get_mut(&id) else {
                    return self.reply(request, Err(ClientError::NotFound { id }));
                };
                if !rec.state.is_final() {
                    rec.state = TaskState::Cancelled;
                    self.persist(id);
                    let state = TaskState::Cancelled;
                    self.out
                        .push(Action::Note(Note::Decided { task: id, state }));
                }
                let state = self.tasks[&id].state.clone();
                self.reply(request, Ok(ClientResponse::State { id, state }));
            }
            // This test node takes no batches and keeps no history; its
            // workloads send neither.
            ClientRequest::SubmitBatch { .. } | ClientRequest::Events { .. } => {
                let reason = "the test coordinator takes no batches and keeps no history".into();
                self.reply(request, Err(ClientError::InvalidTask { reason }));
            }
        }
    }

    fn handle_task_finished(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    ) {
        if self.is_coordinator() {
            let me = self.id;
            self.finished(now, me, task, epoch, outcome);
        } else {
            let to = self.coordinator;
            self.out.push(Action::Send {
                to,
                msg: Msg::Done {
                    task,
                    epoch,
                    outcome,
                },
            });
        }
    }

    fn actions(&mut self) -> std::vec::Drain<'_, Action<Msg>> {
        self.out.drain(..)
    }

    fn id(&self) -> NodeId {
        self.id
    }
}
