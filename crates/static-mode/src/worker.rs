//! The worker side, on every node: run what the coordinator assigns and
//! report results until they are acknowledged.

use crate::message::StaticMessage;
use cohort_core::{Action, Epoch, HeartbeatReply, NodeId, Task, TaskId, TaskOutcome};
use std::collections::BTreeMap;

#[derive(Debug)]
pub(crate) struct Worker {
    /// Assignments whose handler is running, with what the coordinator
    /// last said about each (`Continue` until it says stop).
    running: BTreeMap<(TaskId, Epoch), HeartbeatReply>,
    /// Finished executions whose result the coordinator has not acknowledged.
    unacked: BTreeMap<(TaskId, Epoch), TaskOutcome>,
    /// Bound on `running` + `unacked`.
    held_max: usize,
}

impl Worker {
    pub(crate) fn new(held_max: usize) -> Worker {
        Worker {
            running: BTreeMap::new(),
            unacked: BTreeMap::new(),
            held_max,
        }
    }

    pub(crate) fn assign(
        &mut self,
        task: TaskId,
        epoch: Epoch,
        body: Task,
        coordinator: NodeId,
        out: &mut Vec<Action<StaticMessage>>,
    ) {
        let key = (task, epoch);
        if self.running.contains_key(&key) {
            return; // a re-sent assignment we already run
        }
        if let Some(outcome) = self.unacked.get(&key) {
            // Our result was lost on the way: send it again instead of re-running.
            out.push(Action::Send {
                to: coordinator,
                msg: StaticMessage::Result {
                    task,
                    epoch,
                    outcome: outcome.clone(),
                },
            });
            return;
        }
        if self.running.len() + self.unacked.len() >= self.held_max {
            return; // the coordinator re-sends; refusing keeps memory bounded
        }
        self.running.insert(key, HeartbeatReply::Continue);
        out.push(Action::Execute {
            id: task,
            epoch,
            task: body,
        });
    }

    pub(crate) fn finished(
        &mut self,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
        coordinator: NodeId,
        out: &mut Vec<Action<StaticMessage>>,
    ) {
        if self.running.remove(&(task, epoch)).is_none() {
            return; // not an execution this incarnation started
        }
        out.push(Action::Send {
            to: coordinator,
            msg: StaticMessage::Result {
                task,
                epoch,
                outcome: outcome.clone(),
            },
        });
        self.unacked.insert((task, epoch), outcome);
    }

    /// The handler of `(task, epoch)` heartbeats: what to tell it, and
    /// its progress sent on to the coordinator.
    pub(crate) fn heartbeat(
        &mut self,
        task: TaskId,
        epoch: Epoch,
        progress: Option<String>,
        coordinator: NodeId,
        out: &mut Vec<Action<StaticMessage>>,
    ) -> HeartbeatReply {
        let Some(reply) = self.running.get(&(task, epoch)).copied() else {
            return HeartbeatReply::Superseded; // not started by this incarnation
        };
        if let (HeartbeatReply::Continue, Some(progress)) = (reply, progress) {
            out.push(Action::Send {
                to: coordinator,
                msg: StaticMessage::Progress {
                    task,
                    epoch,
                    progress,
                },
            });
        }
        reply
    }

    /// The coordinator says the execution `(task, epoch)` is over.
    pub(crate) fn stop(&mut self, task: TaskId, epoch: Epoch, reply: HeartbeatReply) {
        if let Some(r) = self.running.get_mut(&(task, epoch)) {
            *r = reply;
        }
    }

    pub(crate) fn acked(&mut self, task: TaskId, epoch: Epoch) {
        self.unacked.remove(&(task, epoch));
    }

    pub(crate) fn tick(
        &mut self,
        coordinator: NodeId,
        capacity_tasks: u32,
        labels: &[String],
        out: &mut Vec<Action<StaticMessage>>,
    ) {
        let held = self
            .running
            .keys()
            .chain(self.unacked.keys())
            .copied()
            .collect();
        out.push(Action::Send {
            to: coordinator,
            msg: StaticMessage::Heartbeat {
                held,
                capacity_tasks,
                labels: labels.to_vec(),
            },
        });
        for (&(task, epoch), outcome) in &self.unacked {
            out.push(Action::Send {
                to: coordinator,
                msg: StaticMessage::Result {
                    task,
                    epoch,
                    outcome: outcome.clone(),
                },
            });
        }
    }
}
