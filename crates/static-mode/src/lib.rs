//! `static`: the naive cluster the article starts from, kept as a baseline.
//!
//! One coordinator, fixed by configuration. It accepts every task, keeps the
//! task table **in memory only**, assigns each pending task to the live worker
//! with the lowest `running / capacity`, watches worker heartbeats, declares a
//! worker dead after `alpha * heartbeat_interval_ms` and reassigns its tasks
//! under a new epoch. There is no election and no replication: when the
//! coordinator crashes, every acknowledged task it held is gone, and while it
//! is down nothing is accepted. The simulator's checkers report exactly that
//! (G1 and G2 violations under crash faults), which is the point: the other
//! modes are measured against it.
//!
//! Every node, the coordinator included, is also a worker.
#![deny(missing_docs)]

mod config;
mod coordinator;
mod message;
mod worker;

pub use config::{StaticConfig, StaticConfigError};
pub use message::StaticMessage;

use cohort_core::{
    Action, BootError, ClientError, ClientRequest, Epoch, HeartbeatReply, Node, NodeId, NodeRng,
    NodeStatus, Peers, RequestId, Stored, TaskId, TaskOutcome, Time, TimerToken,
};
use coordinator::Coordinator;
use worker::Worker;

/// The one periodic timer: heartbeats, result retries, liveness checks.
const TICK: TimerToken = TimerToken(1);

/// A node of a `static` cluster.
#[derive(Debug)]
pub struct StaticNode {
    peers: Peers,
    config: StaticConfig,
    coordinator_id: NodeId,
    /// Present only on the coordinator.
    coordinator: Option<Coordinator>,
    worker: Worker,
    out: Vec<Action<StaticMessage>>,
}

impl StaticNode {
    /// The configured coordinator.
    pub fn coordinator_id(&self) -> NodeId {
        self.coordinator_id
    }

    /// Whether this node is the coordinator.
    pub fn is_coordinator(&self) -> bool {
        self.coordinator.is_some()
    }

    fn arm_tick(&mut self, now: Time) {
        self.out.push(Action::SetTimer {
            token: TICK,
            at: now + self.config.heartbeat_interval(),
        });
    }
}

impl Node for StaticNode {
    type Message = StaticMessage;
    type Config = StaticConfig;

    fn boot(
        peers: &Peers,
        config: &StaticConfig,
        _stored: &Stored,
        rng: NodeRng,
        now: Time,
    ) -> Result<StaticNode, BootError> {
        // The baseline persists nothing, so `_stored` is always empty: a
        // restarted coordinator starts from an empty task table.
        let coordinator_id = config.coordinator_for(peers);
        let coordinator = (coordinator_id == peers.id)
            .then(|| Coordinator::new(peers.clone(), config.clone(), rng, now));
        let mut node = StaticNode {
            peers: peers.clone(),
            config: config.clone(),
            coordinator_id,
            coordinator,
            worker: Worker::new(peers.limits.tasks_active_max),
            out: Vec::new(),
        };
        node.arm_tick(now);
        Ok(node)
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: StaticMessage) {
        match msg {
            StaticMessage::Assign { task, epoch, body } => {
                if from == self.coordinator_id {
                    self.worker.assign(task, epoch, body, from, &mut self.out);
                }
            }
            StaticMessage::ResultAck { task, epoch } => self.worker.acked(task, epoch),
            StaticMessage::Stop { task, epoch, reply } => {
                if from == self.coordinator_id {
                    self.worker.stop(task, epoch, reply);
                }
            }
            StaticMessage::Progress {
                task,
                epoch,
                progress,
            } => {
                if let Some(c) = self.coordinator.as_mut() {
                    c.progress(now, from, task, epoch, Some(progress), &mut self.out);
                }
            }
            StaticMessage::Result {
                task,
                epoch,
                outcome,
            } => {
                if let Some(c) = self.coordinator.as_mut() {
                    c.result(now, from, task, epoch, outcome, &mut self.out);
                }
            }
            StaticMessage::Heartbeat {
                held,
                capacity_tasks,
                labels,
            } => {
                if let Some(c) = self.coordinator.as_mut() {
                    c.heartbeat(now, from, &held, capacity_tasks, labels, &mut self.out);
                }
            }
        }
    }

    fn handle_timer(&mut self, now: Time, token: TimerToken) {
        if token != TICK {
            return;
        }
        match self.coordinator.as_mut() {
            Some(c) => c.tick(now, &mut self.out),
            None => self.worker.tick(
                self.coordinator_id,
                self.peers.capacity_tasks,
                &self.peers.labels,
                &mut self.out,
            ),
        }
        self.arm_tick(now);
    }

    fn handle_client(&mut self, now: Time, request: RequestId, req: ClientRequest) {
        match self.coordinator.as_mut() {
            Some(c) => c.client(now, request, req, &mut self.out),
            None => self.out.push(Action::Reply {
                request,
                reply: Err(ClientError::NotLeader {
                    leader: Some(self.coordinator_id),
                }),
            }),
        }
    }

    fn handle_task_finished(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
    ) {
        match self.coordinator.as_mut() {
            // The coordinator's own executions report straight to its table.
            Some(c) => c.result(now, self.peers.id, task, epoch, outcome, &mut self.out),
            None => self
                .worker
                .finished(task, epoch, outcome, self.coordinator_id, &mut self.out),
        }
    }

    fn handle_heartbeat(
        &mut self,
        now: Time,
        task: TaskId,
        epoch: Epoch,
        progress: Option<String>,
    ) -> HeartbeatReply {
        let me = self.peers.id;
        match self.coordinator.as_mut() {
            // The coordinator's own executions are in its table.
            Some(c) => c.progress(now, me, task, epoch, progress, &mut self.out),
            None => {
                self.worker
                    .heartbeat(task, epoch, progress, self.coordinator_id, &mut self.out)
            }
        }
    }

    fn actions(&mut self) -> std::vec::Drain<'_, Action<StaticMessage>> {
        self.out.drain(..)
    }

    fn visit_tasks(
        &self,
        after: Option<TaskId>,
        visit: &mut dyn FnMut(TaskId, &cohort_core::Task, &cohort_core::TaskState) -> bool,
    ) {
        if let Some(c) = &self.coordinator {
            c.visit_tasks(after, visit);
        }
    }

    fn id(&self) -> NodeId {
        self.peers.id
    }

    fn workers(&self) -> Vec<cohort_core::WorkerInfo> {
        self.coordinator
            .as_ref()
            .map(Coordinator::workers)
            .unwrap_or_default()
    }

    fn status(&self) -> NodeStatus {
        let role = if self.is_coordinator() {
            "coordinator"
        } else {
            "worker"
        };
        NodeStatus {
            id: self.peers.id,
            role,
            leader: Some(self.coordinator_id),
            term: None,
        }
    }
}
