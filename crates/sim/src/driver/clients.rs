//! The simulated clients: one per task, submitting, retrying, following
//! redirects, then polling with linearizable reads until the task is final.
//! Some submit under a shared dedupe key instead, through
//! [`DedupeSubmit`] against one node (as the runtime does), then poll the
//! task it names.

use super::{Event, Reply, Sim, TAG_CLIENT, TAG_RESPONSE};
use crate::checkers::Guarantee;
use crate::history::HistoryEvent;
use crate::workload::SimPayload;
use cohort_core::dedupe::{DedupeKey, DedupeOutcome, DedupeStep, DedupeSubmit};
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
    /// A submit under a dedupe key: `id` is known once it ends.
    pub(super) unique: Option<Box<DedupeSubmit>>,
    /// The submit under a dedupe key found the key's task alive: `id` is
    /// that task, not one of this client's.
    pub(super) deduplicated: bool,
    /// When the client arrived (its submit deadline counts from here).
    pub(super) arrived_at: Time,
}

/// What a client request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestKind {
    Submit,
    /// A `SubmitBatch` sent for this op, carrying these other ops' tasks too.
    SubmitBatch,
    Get,
    Cancel,
    /// The request of the op's [`DedupeSubmit`].
    Unique,
}

pub(super) struct Pending {
    pub(super) op: usize,
    pub(super) node: usize,
    pub(super) sent_at: Time,
    pub(super) kind: RequestKind,
    pub(super) answered: bool,
    /// The other ops whose tasks a `SubmitBatch` carries.
    pub(super) batch: Vec<usize>,
    /// A request of a schedule link's run (see `schedules.rs`), not of a
    /// client: `op` means nothing.
    pub(super) runner: Option<u64>,
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
        let mut task = Task {
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
            // Drawn only when asked for, like heartbeats (below).
            priority: if w.prioritised_rate > 0.0 && self.rng.gen_bool(w.prioritised_rate) {
                self.rng.gen_range(-3..=3)
            } else {
                0
            },
            // Drawn only when asked for: a workload without heartbeats
            // replays the runs it replayed before they existed.
            heartbeat_timeout_ms: if w.heartbeat_rate > 0.0 && self.rng.gen_bool(w.heartbeat_rate) {
                w.heartbeat_timeout_ms
            } else {
                0
            },
            // Drawn only when asked for, like heartbeats.
            labels: if w.labelled_rate > 0.0 && self.rng.gen_bool(w.labelled_rate) {
                vec![crate::config::SIM_LABEL.to_string()]
            } else {
                Vec::new()
            },
            // Drawn only when asked for, like heartbeats.
            limit: if w.limited_rate > 0.0 && self.rng.gen_bool(w.limited_rate) {
                let key = self.rng.gen_range(0..w.limit_keys);
                Some(w.limit(format!("key{key}")))
            } else {
                None
            },
            // Drawn only when stuck handlers are asked for: half the tasks
            // then set their own lease grace (1 to 3 s) instead of the
            // derived one, so the cluster ends leases on both.
            lease_grace_ms: if w.stuck_rate > 0.0 && self.rng.gen_bool(0.5) {
                self.rng.gen_range(
                    cohort_core::task::LEASE_GRACE_MIN_MS
                        ..=3 * cohort_core::task::LEASE_GRACE_MIN_MS,
                )
            } else {
                0
            },
            retry_of: None,
        };
        let op = self.ops.len();
        let now = self.now;
        let dedupe = unique_key(w, op as u64);
        if dedupe.is_some() {
            // The `Limits` checker follows tasks by id alone.
            task.limit = None;
        }
        let (id, unique) = match dedupe {
            None => {
                let id = TaskId::random(&mut self.rng);
                self.hash_event(TAG_CLIENT, op as u64, &encode(&(id, &task)));
                self.line(|| format!("{now} client {id:?} arrives (client {op})"));
                self.history.push(
                    now,
                    HistoryEvent::Submitted {
                        task: id,
                        content: task.clone(),
                    },
                );
                (id, None)
            }
            Some(key) => {
                self.hash_event(TAG_CLIENT, op as u64, &encode(&(key.as_bytes(), &task)));
                let shown = String::from_utf8_lossy(key.as_bytes()).into_owned();
                self.line(|| format!("{now} client {op} arrives with dedupe key {shown}"));
                self.history.push(
                    now,
                    HistoryEvent::UniqueSubmitted {
                        key: key.clone(),
                        content: task.clone(),
                    },
                );
                let rounds_max = w.unique_rounds_max;
                self.unique_submits += 1;
                // Until it ends, the op is named by its key's first id.
                let placeholder = key.task_id(0);
                let machine = DedupeSubmit::new(key, task.clone(), rounds_max);
                (placeholder, Some(Box::new(machine)))
            }
        };
        self.ops.push(ClientOp {
            id,
            task,
            phase: Phase::Submitting,
            current: None,
            generation: 0,
            redirects: 0,
            acked: false,
            acked_in_batch: false,
            unique,
            deduplicated: false,
            arrived_at: now,
        });
        self.ops_open += 1;
        let to = self.random_node();
        self.client_send(op, to);
    }

    /// Sends op's next request (a `Submit` or a linearizable `Get`) to `node`.
    pub(super) fn client_send(&mut self, op: usize, node: usize) {
        let deadline_ms = self.cfg.workload.submit_deadline_ms;
        let o = &self.ops[op];
        if deadline_ms > 0
            && o.phase == Phase::Submitting
            && o.unique.is_none()
            && o.task.kind != cohort_core::schedule::SCHEDULE_KIND
            && self.now >= o.arrived_at + Duration::from_millis(deadline_ms)
        {
            // Past its deadline: the client gives up (as one would), and
            // never sends this submit again.
            let (now, task) = (self.now, o.id);
            self.line(|| format!("{now} client {task:?} abandons its submit"));
            self.history
                .push(now, HistoryEvent::SubmitAbandoned { task });
            self.client_finish(op, Phase::Refused);
            return;
        }
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let w = &self.cfg.workload;
        let mut batch = Vec::new();
        let unique = self.ops[op].phase == Phase::Submitting && self.ops[op].unique.is_some();
        if self.ops[op].phase == Phase::Submitting
            && !unique
            && w.batch_rate > 0.0
            && self.rng.gen_bool(w.batch_rate)
        {
            batch = (0..self.ops.len())
                .filter(|o| {
                    *o != op
                        && self.ops[*o].phase == Phase::Submitting
                        && self.ops[*o].unique.is_none()
                })
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
        let (req, kind) = match (o.phase, &o.unique) {
            (Phase::Submitting, Some(m)) => (
                m.request().expect("an open dedupe submit has a request"),
                RequestKind::Unique,
            ),
            _ => match o.phase {
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
            },
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
                runner: None,
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
        if let Some(r) = p.runner {
            self.on_link_response(r, request, reply);
            return;
        }
        let (op, sent_at, kind) = (p.op, p.sent_at, p.kind);
        if kind == RequestKind::Unique {
            self.on_unique_response(op, node, request, sent_at, reply);
            return;
        }
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
                    if self.ops[op].phase == Phase::Refused {
                        // A late ack after the client gave up (its deadline,
                        // or a refusal from another node): the task exists,
                        // so the client watches it after all.
                        self.ops_open += 1;
                        self.ops[op].phase = Phase::Polling;
                        self.client_wait(op, w.poll_ms_min, w.poll_ms_max);
                        return;
                    }
                    if self.ops[op].phase != Phase::Submitting {
                        return;
                    }
                    self.ops[op].redirects = 0;
                    // Some clients cancel their task, racing its execution
                    // (not the schedule's: that would end its chain).
                    let link = self.ops[op].task.kind == cohort_core::schedule::SCHEDULE_KIND;
                    if !link && w.cancel_rate > 0.0 && self.rng.gen_bool(w.cancel_rate) {
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

impl<N: Node> Sim<'_, N> {
    /// The answer to a request of op's dedupe submit. Retryable errors are
    /// not handed to the machine: its request is sent again (which its
    /// contract allows), to the leader named or after a back-off.
    fn on_unique_response(
        &mut self,
        op: usize,
        node: usize,
        request: RequestId,
        sent_at: Time,
        reply: Reply,
    ) {
        let now = self.now;
        let node_id = self.slots[node].id;
        let w = self.cfg.workload.clone();
        self.line(|| format!("{now} client {op} <- {node_id} r{} {reply:?}", request.0));
        let o = &self.ops[op];
        let Some(machine) = o.unique.as_ref() else {
            return;
        };
        if o.current != Some(request) || o.phase != Phase::Submitting {
            return; // an answer to a request sent again since
        }
        let asked = machine
            .request()
            .expect("an open dedupe submit has a request");
        if let ClientRequest::Get { id, .. } = asked {
            let result = match &reply {
                Ok(ClientResponse::State { id: read, state }) if *read == id => Ok(state.clone()),
                Ok(_) => Err(ClientError::Unavailable {
                    reason: "not an answer to the read".into(),
                }),
                Err(e) => Err(e.clone()),
            };
            if !matches!(&result, Err(e) if e.is_retryable()) {
                self.history.push(
                    now,
                    HistoryEvent::Read {
                        task: id,
                        node: node_id,
                        sent_at,
                        result,
                    },
                );
            }
        }
        match &reply {
            Err(ClientError::NotLeader { leader: Some(l) })
                if self.ops[op].redirects < w.redirects_max =>
            {
                self.ops[op].redirects += 1;
                match self.index_of(*l) {
                    Some(j) => self.client_send(op, j),
                    None => self.client_wait(op, w.backoff_ms_min, w.backoff_ms_max),
                }
                return;
            }
            Err(e) if e.is_retryable() => {
                self.ops[op].redirects = 0;
                self.client_wait(op, w.backoff_ms_min, w.backoff_ms_max);
                return;
            }
            _ => {}
        }
        self.ops[op].redirects = 0;
        let machine = self.ops[op].unique.as_mut().expect("checked above");
        let key = machine.key().clone();
        match machine.handle_reply(reply) {
            // The runtime runs the whole submit at the node it reached.
            DedupeStep::Send(_) => self.client_send(op, node),
            DedupeStep::Done(Ok(outcome)) => {
                self.history.push(
                    now,
                    HistoryEvent::UniqueAnswered {
                        key,
                        node: node_id,
                        outcome: outcome.clone(),
                    },
                );
                let o = &mut self.ops[op];
                let content = o.unique.take().expect("checked above").task().clone();
                o.id = outcome.id();
                o.phase = Phase::Polling;
                o.deduplicated = outcome.is_deduplicated();
                if let DedupeOutcome::Created { id, .. } = outcome {
                    o.acked = true;
                    self.history.push(
                        now,
                        HistoryEvent::Submitted {
                            task: id,
                            content: content.clone(),
                        },
                    );
                    self.history.push(
                        now,
                        HistoryEvent::Acked {
                            task: id,
                            node: node_id,
                            content,
                        },
                    );
                }
                self.client_wait(op, w.poll_ms_min, w.poll_ms_max);
            }
            DedupeStep::Done(Err(e)) if e.is_retryable() => {
                // Contention: start over later.
                let task = machine.task().clone();
                **machine = DedupeSubmit::new(key, task, w.unique_rounds_max);
                self.client_wait(op, w.backoff_ms_min, w.backoff_ms_max);
            }
            DedupeStep::Done(Err(e)) => {
                let detail = format!("{node_id} failed a dedupe submit of client {op}: {e}");
                self.violations.push(Guarantee::Invariant, now, detail);
                self.client_finish(op, Phase::Refused);
            }
        }
    }
}

/// The dedupe key op `op` submits under, if it is one of the workload's
/// dedupe submits: the last `unique_burst` of every `unique_every` ops, so
/// that a burst's submits of one key race each other; keys rotate over
/// `unique_keys`. Chosen by position, not drawn, so a workload without
/// dedupe submits draws exactly what it drew before they existed.
fn unique_key(w: &crate::config::Workload, op: u64) -> Option<DedupeKey> {
    if w.unique_every == 0 || op % w.unique_every < w.unique_every - w.unique_burst {
        return None;
    }
    let k = (op / w.unique_every) % w.unique_keys;
    Some(DedupeKey::new(format!("sim-key-{k}").as_bytes()).expect("a visible ASCII key"))
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
