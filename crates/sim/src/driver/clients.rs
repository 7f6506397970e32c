//! The simulated clients: one per task, submitting, retrying, following
//! redirects, then polling with linearizable reads until the task is final.

use super::{Event, Reply, Sim, TAG_CLIENT, TAG_RESPONSE};
use crate::checkers::Guarantee;
use crate::history::HistoryEvent;
use crate::workload::SimPayload;
use cohort_core::{
    encode, ClientError, ClientRequest, ClientResponse, Consistency, Node, RequestId, RetryPolicy,
    Task, TaskId, Time,
};
use rand::Rng;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Sending `Submit` until acknowledged.
    Submitting,
    /// Acknowledged; sending `Get` until the task reads final.
    Polling,
    /// Acknowledged; sending `Cancel` until answered.
    Cancelling,
    /// The task read final.
    Done,
    /// The submit was refused for good.
    Refused,
}

/// One client, with one task.
pub(super) struct ClientOp {
    pub(super) id: TaskId,
    pub(super) task: Task,
    pub(super) phase: Phase,
    /// The request whose reply or timeout moves the op on.
    pub(super) current: Option<RequestId>,
    /// Invalidates wake-ups scheduled before the latest send.
    pub(super) generation: u64,
    pub(super) redirects: u32,
    pub(super) acked: bool,
    /// Acknowledged by a `SubmitBatch` (its own or one that carried it).
    pub(super) acked_in_batch: bool,
}

/// What a client request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestKind {
    Submit,
    /// A `SubmitBatch` sent for this op, carrying these other ops' tasks too.
    SubmitBatch,
    Get,
    Cancel,
}

pub(super) struct Pending {
    pub(super) op: usize,
    pub(super) node: usize,
    pub(super) sent_at: Time,
    pub(super) kind: RequestKind,
    pub(super) answered: bool,
    /// The other ops whose tasks a `SubmitBatch` carries.
    pub(super) batch: Vec<usize>,
}

impl Phase {
    /// Whether the client still has requests to make.
    pub(super) fn is_open(self) -> bool {
        matches!(self, Phase::Submitting | Phase::Polling | Phase::Cancelling)
    }
}

impl<N: Node> Sim<'_, N> {
    /// A request went unanswered for `client_timeout_ms`: send it again,
    /// to a random node, if it is still the one the client waits for.
    pub(super) fn on_client_timeout(&mut self, op: usize, request: RequestId) {
        self.hash_event(TAG_CLIENT, op as u64, &request.0.to_le_bytes());
        if self.ops[op].current == Some(request) {
            let now = self.now;
            let task = self.ops[op].id;
            self.line(|| format!("{now} client {task:?} timeout r{}", request.0));
            let to = self.random_node();
            self.client_send(op, to);
        }
    }

    /// A back-off or poll interval ended.
    pub(super) fn on_client_wake(&mut self, op: usize, generation: u64) {
        self.hash_event(TAG_CLIENT, op as u64, &generation.to_le_bytes());
        let o = &self.ops[op];
        if o.generation == generation && o.phase.is_open() {
            let (now, task) = (self.now, o.id);
            self.line(|| format!("{now} client {task:?} wakes"));
            let to = self.random_node();
            self.client_send(op, to);
        }
    }

    pub(super) fn random_node(&mut self) -> usize {
        self.rng.gen_range(0..self.cfg.nodes)
    }

    pub(super) fn on_arrival(&mut self) {
        if self.now >= self.safety_end {
            return;
        }
        let gap = self.arrival_gap_us();
        self.schedule_in(gap, Event::Arrival);
        let w = &self.cfg.workload;
        if self.ops.len() as u64 >= w.tasks_max {
            return;
        }
        let (lo, hi) = (w.task_ms_min, w.task_ms_max);
        let task = Task {
            kind: "sleep".into(),
            payload: SimPayload {
                duration_ms: self.rng.gen_range(lo..=hi),
                seq: self.ops.len() as u64,
            }
            .encode(),
            timeout_ms: hi * 2 + 100,
            max_attempts: w.max_attempts,
            not_before: if self.rng.gen_bool(w.delayed_rate) {
                self.now + Duration::from_millis(self.rng.gen_range(0..=w.delay_ms_max))
            } else {
                Time::ZERO
            },
            retry: RetryPolicy {
                non_retryable: vec![crate::config::FATAL_ERROR_CLASS.into()],
                ..RetryPolicy::backoff(w.retry_backoff_initial_ms, w.retry_backoff_max_ms)
            },
            schedule_to_start_ms: if self.rng.gen_bool(w.schedule_to_start_rate) {
                w.schedule_to_start_ms
            } else {
                0
            },
        };
        let id = TaskId::random(&mut self.rng);
        let op = self.ops.len();
        self.hash_event(TAG_CLIENT, op as u64, &encode(&(id, &task)));
        let now = self.now;
        self.line(|| format!("{now} client {id:?} arrives (client {op})"));
        self.history.push(
            self.now,
            HistoryEvent::Submitted {
                task: id,
                content: task.clone(),
            },
        );
        self.ops.push(ClientOp {
            id,
            task,
            phase: Phase::Submitting,
            current: None,
            generation: 0,
            redirects: 0,
            acked: false,
            acked_in_batch: false,
        });
        self.ops_open += 1;
        let to = self.random_node();
        self.client_send(op, to);
    }

    /// Sends op's next request (a `Submit` or a linearizable `Get`) to `node`.
    pub(super) fn client_send(&mut self, op: usize, node: usize) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let w = &self.cfg.workload;
        let mut batch = Vec::new();
        if self.ops[op].phase == Phase::Submitting
            && w.batch_rate > 0.0
            && self.rng.gen_bool(w.batch_rate)
        {
            batch = (0..self.ops.len())
                .filter(|o| *o != op && self.ops[*o].phase == Phase::Submitting)
                .take(w.batch_tasks - 1)
                .collect();
        }
        let mut tasks = Vec::new();
        if !batch.is_empty() {
            tasks.push((self.ops[op].id, self.ops[op].task.clone()));
            tasks.extend(
                batch
                    .iter()
                    .map(|o| (self.ops[*o].id, self.ops[*o].task.clone())),
            );
        }
        let o = &mut self.ops[op];
        let (req, kind) = match o.phase {
            Phase::Submitting if !tasks.is_empty() => (
                ClientRequest::SubmitBatch { tasks },
                RequestKind::SubmitBatch,
            ),
            Phase::Submitting => (
                ClientRequest::Submit {
                    id: o.id,
                    task: o.task.clone(),
                },
                RequestKind::Submit,
            ),
            Phase::Polling => (
                ClientRequest::Get {
                    id: o.id,
                    consistency: Consistency::Linearizable,
                },
                RequestKind::Get,
            ),
            Phase::Cancelling => (ClientRequest::Cancel { id: o.id }, RequestKind::Cancel),
            Phase::Done | Phase::Refused => return,
        };
        o.current = Some(request);
        o.generation += 1;
        self.requests.insert(
            request,
            Pending {
                op,
                node,
                sent_at: self.now,
                kind,
                answered: false,
                batch,
            },
        );
        let lost = self.lost();
        let task = self.ops[op].id;
        let fate = if lost { " (lost)" } else { "" };

        self.line(|| {
            format!(
                "  client {task:?} -> n{} r{} {kind:?}{fate}",
                node + 1,
                request.0
            )
        });
        if !lost {
            let us = self.latency_us();
            self.schedule_in(us, Event::Request { node, request, req });
        }
        let timeout = self.cfg.workload.client_timeout_ms * 1000;
        self.schedule_in(timeout, Event::ClientTimeout { op, request });
    }

    /// Waits `lo..=hi` ms, then sends op's next request to a random node.
    pub(super) fn client_wait(&mut self, op: usize, lo: u64, hi: u64) {
        let us = self.between_ms(lo, hi);
        let o = &mut self.ops[op];
        o.current = None;
        o.generation += 1;
        let generation = o.generation;
        self.schedule_in(us, Event::ClientWake { op, generation });
    }

    pub(super) fn client_finish(&mut self, op: usize, phase: Phase) {
        let o = &mut self.ops[op];
        if o.phase.is_open() {
            self.ops_open -= 1;
        }
        o.phase = phase;
        o.current = None;
        o.generation += 1;
    }

    /// A batch's answer: the other ops it carried are acknowledged if it
    /// was; returns the answer as this op's own submit would have had it.
    fn on_batch_response(
        &mut self,
        node_id: cohort_core::NodeId,
        ids: &[TaskId],
        batch: &[usize],
        reply: Reply,
    ) -> Reply {
        let now = self.now;
        let durable: Vec<TaskId> = match &reply {
            Ok(ClientResponse::AcceptedBatch { ids: acked }) if acked == ids => ids.to_vec(),
            Ok(other) => {
                let detail = format!("{node_id} answered a batch of {ids:?} with {other:?}");
                self.violations.push(Guarantee::Invariant, now, detail);
                Vec::new()
            }
            Err(ClientError::BatchIncomplete { durable, .. }) => durable.clone(),
            Err(_) => Vec::new(),
        };
        let w = self.cfg.workload.clone();
        for &o in batch {
            let task = self.ops[o].id;
            if !durable.contains(&task) {
                continue;
            }
            self.history.push(
                now,
                HistoryEvent::Acked {
                    task,
                    node: node_id,
                    content: self.ops[o].task.clone(),
                },
            );
            self.ops[o].acked = true;
            self.ops[o].acked_in_batch = true;
            if self.ops[o].phase == Phase::Submitting {
                self.ops[o].redirects = 0;
                self.ops[o].phase = Phase::Polling;
                self.client_wait(o, w.poll_ms_min, w.poll_ms_max);
            }
        }
        match reply {
            Ok(ClientResponse::AcceptedBatch { .. }) => Ok(ClientResponse::Accepted { id: ids[0] }),
            Err(ClientError::BatchIncomplete { .. }) if durable.contains(&ids[0]) => {
                Ok(ClientResponse::Accepted { id: ids[0] })
            }
            Err(e) => Err(own_error(e)),
            other => other,
        }
    }

    pub(super) fn on_response(&mut self, node: usize, request: RequestId, reply: Reply) {
        let now = self.now;
        let node_id = self.slots[node].id;
        self.hash_event(TAG_RESPONSE, node_id.0, &encode(&(request, &reply)));
        let p = &self.requests[&request];
        let (op, sent_at, kind) = (p.op, p.sent_at, p.kind);
        let mut reply = reply;
        if kind == RequestKind::SubmitBatch {
            let batch = p.batch.clone();
            let mut ids = vec![self.ops[op].id];
            ids.extend(batch.iter().map(|o| self.ops[*o].id));
            reply = self.on_batch_response(node_id, &ids, &batch, reply);
            if matches!(reply, Ok(ClientResponse::Accepted { .. })) {
                self.ops[op].acked_in_batch = true;
            }
        }
        let task = self.ops[op].id;
        self.line(|| {
            format!(
                "{now} client {task:?} <- {node_id} r{} {reply:?}",
                request.0
            )
        });
        let w = self.cfg.workload.clone();
        let current = self.ops[op].current == Some(request);

        if matches!(kind, RequestKind::Submit | RequestKind::SubmitBatch) {
            match &reply {
                Ok(ClientResponse::Accepted { id }) if *id == task => {
                    self.history.push(
                        now,
                        HistoryEvent::Acked {
                            task,
                            node: node_id,
                            content: self.ops[op].task.clone(),
                        },
                    );
                    self.ops[op].acked = true;
                    if self.ops[op].phase != Phase::Submitting {
                        return;
                    }
                    self.ops[op].redirects = 0;
                    // Some clients cancel their task, racing its execution.
                    if w.cancel_rate > 0.0 && self.rng.gen_bool(w.cancel_rate) {
                        self.ops[op].phase = Phase::Cancelling;
                        self.client_wait(op, 1, w.task_ms_max.max(1));
                    } else {
                        self.ops[op].phase = Phase::Polling;
                        self.client_wait(op, w.poll_ms_min, w.poll_ms_max);
                    }
                    return;
                }
                Ok(other) => {
                    let detail = format!("{node_id} answered Submit of {task:?} with {other:?}");
                    self.violations.push(Guarantee::Invariant, now, detail);
                }
                Err(e) if !e.is_retryable() => {
                    self.history.push(
                        now,
                        HistoryEvent::SubmitRefused {
                            task,
                            node: node_id,
                            error: e.clone(),
                        },
                    );
                    if current && self.ops[op].phase == Phase::Submitting {
                        self.client_finish(op, Phase::Refused);
                    }
                    return;
                }
                Err(_) => {}
            }
        } else {
            let result = match &reply {
                Ok(ClientResponse::State { id, state }) if *id == task => Ok(state.clone()),
                Ok(other) => {
                    let detail = format!("{node_id} answered {kind:?} of {task:?} with {other:?}");
                    self.violations.push(Guarantee::Invariant, now, detail);
                    return;
                }
                Err(e) => Err(e.clone()),
            };
            let is_final = result.as_ref().is_ok_and(|s| s.is_final());
            self.history.push(
                now,
                HistoryEvent::Read {
                    task,
                    node: node_id,
                    sent_at,
                    result,
                },
            );
            if is_final {
                if matches!(self.ops[op].phase, Phase::Polling | Phase::Cancelling) {
                    self.client_finish(op, Phase::Done);
                }
                return;
            }
            let answered = !matches!(&reply, Err(e) if e.is_retryable());
            if current && self.ops[op].phase == Phase::Cancelling && answered {
                // The cancel was answered, not final: watch the task from now on.
                self.ops[op].phase = Phase::Polling;
            }
        }
        if !current {
            return;
        }
        // The op's outstanding request was answered without moving it on.
        match reply {
            Err(ClientError::NotLeader { leader: Some(l) })
                if self.ops[op].redirects < w.redirects_max =>
            {
                self.ops[op].redirects += 1;
                match self.index_of(l) {
                    Some(j) => self.client_send(op, j),
                    None => self.client_wait(op, w.backoff_ms_min, w.backoff_ms_max),
                }
            }
            Ok(_) => {
                self.ops[op].redirects = 0;
                self.client_wait(op, w.poll_ms_min, w.poll_ms_max);
            }
            Err(_) => {
                self.ops[op].redirects = 0;
                self.client_wait(op, w.backoff_ms_min, w.backoff_ms_max);
            }
        }
    }
}

/// What a batch's refusal means for the task at index 0 (the sender's own):
/// its own error, or, when another task was at fault, a retryable one.
fn own_error(e: ClientError) -> ClientError {
    match e {
        ClientError::BatchIncomplete { error, .. } => own_error(*error),
        ClientError::BatchItem { index: 0, error } => *error,
        ClientError::BatchItem { .. } => ClientError::Unavailable {
            reason: "another task of the batch was refused".into(),
        },
        e => e,
    }
}
