//! The coordinator: the task table (in memory only), the scheduler and the
//! worker failure detector.

use crate::config::StaticConfig;
use crate::message::StaticMessage;
use cohort_core::{
    after_failure, event_error, event_progress, failure_event, Action, AfterFailure, ClientError,
    ClientRequest, ClientResponse, Epoch, HeartbeatReply, LimitCounts, NodeId, NodeRng, Note,
    Peers, RequestId, SupersedeReason, Task, TaskEvent, TaskEventKind, TaskEvents, TaskId,
    TaskLimit, TaskOutcome, TaskState, Time,
};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// What a queue's tasks have in common: the labels they need and the
/// limit they carry.
type QueueKey = (Vec<String>, Option<TaskLimit>);

/// Pending tasks by the labels they need and limit they carry, each in
/// queue order.
type Queue = BTreeMap<QueueKey, BTreeSet<(u8, u64, TaskId)>>;

fn queue_key(task: &Task) -> QueueKey {
    (task.labels.clone(), task.limit.clone())
}

/// Takes `key` off `task`'s queue, if it is there (keeping no empty set).
fn unqueue(queue: &mut Queue, task: &Task, key: (u8, u64, TaskId)) {
    let queue_key = queue_key(task);
    if let Some(q) = queue.get_mut(&queue_key) {
        q.remove(&key);
        if q.is_empty() {
            queue.remove(&queue_key);
        }
    }
}

#[derive(Debug)]
struct Record {
    task: Task,
    state: TaskState,
    /// Failed executions so far.
    attempts: u32,
    /// When the current assignment was sent (for re-sending lost ones).
    assigned_at: Time,
    /// When its lease was last renewed: the assignment, then each
    /// recorded heartbeat.
    renewed_at: Time,
    /// Not to be assigned before: `not_before`, then the latest retry_at.
    ready_at: Time,
    /// While pending with a schedule-to-start timeout: failed if not
    /// assigned by then.
    start_by: Option<Time>,
    /// What happened to it (in memory, like everything here).
    history: TaskEvents,
    /// Once final: its place in `finished`.
    finished_seq: u64,
    /// Once final: when it is purged (`None`: kept, see
    /// [`cohort_core::Retention::purge_at`]).
    purge_at: Option<Time>,
    /// While in `queue`: its place there, (priority rank, queue sequence).
    queued: (u8, u64),
}

impl Record {
    fn record(&mut self, at: Time, what: TaskEventKind, events_max: usize) {
        self.history.push(TaskEvent { at, what }, events_max);
    }
}

#[derive(Debug)]
struct WorkerView {
    capacity_tasks: u32,
    /// The worker labels it carries, as its latest heartbeat said.
    labels: Vec<String>,
    alive: bool,
    last_seen: Time,
    /// Tasks this worker runs, by the coordinator's table.
    running: BTreeSet<TaskId>,
}

#[derive(Debug)]
pub(crate) struct Coordinator {
    peers: Peers,
    config: StaticConfig,
    tasks: BTreeMap<TaskId, Record>,
    /// Pending tasks that may run, by the worker labels they need (none:
    /// the empty list) and the limit they carry, each by priority, then in
    /// the order they could run: (rank, queue sequence, id). Split so that
    /// a label set no worker with room carries, or a limit reached, is
    /// skipped whole, and a backlog waiting for its workers or its limit
    /// holds up no other task. No empty set is kept.
    queue: Queue,
    /// Running tasks and recent starts per limit key: a start the limit
    /// does not allow waits (in its queue) until an outcome or the rate
    /// window makes room, looked at again on every tick.
    limits: LimitCounts,
    /// The next queue sequence number.
    queue_seq: u64,
    /// Pending tasks that may not run yet (not_before, retry backoff):
    /// (ready_at, id). Moved to `queue` by the tick once due, so they
    /// start within a heartbeat interval of `ready_at`.
    waiting: BTreeSet<(Time, TaskId)>,
    /// Pending tasks with a schedule-to-start deadline: (start_by, id).
    deadlines: BTreeSet<(Time, TaskId)>,
    /// Draws retry jitter.
    rng: NodeRng,
    /// Final tasks in the order they finished, for retention:
    /// (sequence, id). Not the records kept for ever.
    finished: BTreeSet<(u64, TaskId)>,
    /// Schedule definitions and tombstones held, in any state: kept for
    /// ever ([`cohort_core::schedule::kept_for_ever`]), never in
    /// `finished`, bounded by `StaticConfig::schedules_kept_max`.
    kept: usize,
    /// The sequence number of the next task to finish.
    finished_seq: u64,
    /// Final tasks by when their retention ends: (purge_at, sequence, id).
    expiring: BTreeSet<(Time, u64, TaskId)>,
    workers: BTreeMap<NodeId, WorkerView>,
    /// The last epoch handed out. In memory only, like everything here: a
    /// restarted coordinator starts again from zero, which is one of the
    /// baseline's flaws the checkers expose.
    last_epoch: Epoch,
    active: usize,
}

type Out = Vec<Action<StaticMessage>>;

impl Coordinator {
    /// Every worker as this coordinator last heard of it.
    pub fn workers(&self) -> Vec<cohort_core::WorkerInfo> {
        self.workers
            .iter()
            .map(|(id, w)| cohort_core::WorkerInfo {
                id: *id,
                live: w.alive,
                running: w.running.len() as u64,
                capacity: Some(w.capacity_tasks),
                labels: w.labels.clone(),
            })
            .collect()
    }

    /// See [`cohort_core::Node::visit_tasks`].
    pub fn visit_tasks(
        &self,
        after: Option<TaskId>,
        visit: &mut dyn FnMut(TaskId, &Task, &TaskState) -> bool,
    ) {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        for (id, rec) in self.tasks.range((from, Bound::Unbounded)) {
            if !visit(*id, &rec.task, &rec.state) {
                break;
            }
        }
    }

    pub(crate) fn new(peers: Peers, config: StaticConfig, rng: NodeRng, now: Time) -> Coordinator {
        // Every worker starts alive with a full timeout of grace.
        let workers = peers
            .members
            .iter()
            .map(|&id| {
                let (capacity_tasks, labels) = if id == peers.id {
                    (peers.capacity_tasks, peers.labels.clone())
                } else {
                    (1, Vec::new())
                };
                (
                    id,
                    WorkerView {
                        capacity_tasks,
                        labels,
                        alive: true,
                        last_seen: now,
                        running: BTreeSet::new(),
                    },
                )
            })
            .collect();
        Coordinator {
            peers,
            config,
            tasks: BTreeMap::new(),
            queue: BTreeMap::new(),
            limits: LimitCounts::default(),
            queue_seq: 0,
            waiting: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            rng,
            finished: BTreeSet::new(),
            kept: 0,
            finished_seq: 0,
            expiring: BTreeSet::new(),
            workers,
            last_epoch: Epoch::ZERO,
            active: 0,
        }
    }

    pub(crate) fn client(
        &mut self,
        now: Time,
        request: RequestId,
        req: ClientRequest,
        out: &mut Out,
    ) {
        let reply = match req {
            ClientRequest::Submit { id, task } => self.submit(now, id, task, out),
            ClientRequest::SubmitBatch { tasks } => self.submit_batch(now, tasks, out),
            ClientRequest::Get { id, .. } => self
                .tasks
                .get(&id)
                .map(|r| ClientResponse::State {
                    id,
                    state: r.state.clone(),
                })
                .ok_or(ClientError::NotFound { id }),
            ClientRequest::Events { id, .. } => self
                .tasks
                .get(&id)
                .map(|r| ClientResponse::Events {
                    id,
                    state: r.state.clone(),
                    history: r.history.clone(),
                    task: Box::new(r.task.clone()),
                })
                .ok_or(ClientError::NotFound { id }),
            ClientRequest::Cancel { id } => self.cancel(now, id, out),
        };
        out.push(Action::Reply { request, reply });
    }

    fn submit(
        &mut self,
        now: Time,
        id: TaskId,
        task: Task,
        out: &mut Out,
    ) -> Result<ClientResponse, ClientError> {
        self.peers.limits.check_task(&task)?;
        if let Some(existing) = self.tasks.get(&id) {
            return if existing.task == task {
                Ok(ClientResponse::Accepted { id })
            } else {
                Err(ClientError::IdConflict { id })
            };
        }
        if self.active >= self.peers.limits.tasks_active_max {
            return Err(ClientError::Overloaded {
                what: "tasks_active_max".into(),
                limit: self.peers.limits.tasks_active_max,
            });
        }
        let max = self.config.schedules_kept_max;
        if let Some(bound) = cohort_core::schedule::kept_bound(&task, max) {
            if self.kept >= bound {
                return Err(ClientError::Overloaded {
                    what: "schedules_kept_max".into(),
                    limit: max,
                });
            }
            self.kept += 1;
        }
        // The naive part: acknowledged from memory, never persisted.
        let mut record = Record {
            ready_at: task.not_before,
            start_by: None,
            task,
            state: TaskState::Pending,
            attempts: 0,
            assigned_at: now,
            renewed_at: now,
            history: TaskEvents::default(),
            finished_seq: 0,
            purge_at: None,
            queued: (0, 0),
        };
        record.record(now, TaskEventKind::Submitted, self.events_max());
        self.tasks.insert(id, record);
        self.active += 1;
        self.enqueue(now, id);
        self.schedule(now, out);
        Ok(ClientResponse::Accepted { id })
    }

    /// All or nothing: every check passes before the first task is taken.
    fn submit_batch(
        &mut self,
        now: Time,
        tasks: Vec<(TaskId, Task)>,
        out: &mut Out,
    ) -> Result<ClientResponse, ClientError> {
        self.peers.limits.check_batch(&tasks)?;
        let mut new = 0usize;
        for (index, (id, task)) in tasks.iter().enumerate() {
            match self.tasks.get(id) {
                Some(existing) if existing.task != *task => {
                    return Err(ClientError::BatchItem {
                        index,
                        error: Box::new(ClientError::IdConflict { id: *id }),
                    })
                }
                Some(_) => {}
                None => new += 1,
            }
        }
        if self.active + new > self.peers.limits.tasks_active_max {
            return Err(ClientError::Overloaded {
                what: "tasks_active_max".into(),
                limit: self.peers.limits.tasks_active_max,
            });
        }
        let ids = tasks.iter().map(|(id, _)| *id).collect();
        for (id, task) in tasks {
            self.submit(now, id, task, out)?;
        }
        Ok(ClientResponse::AcceptedBatch { ids })
    }

    fn events_max(&self) -> usize {
        self.peers.limits.task_events_max
    }

    fn cancel(
        &mut self,
        now: Time,
        id: TaskId,
        out: &mut Out,
    ) -> Result<ClientResponse, ClientError> {
        let events_max = self.events_max();
        let record = self
            .tasks
            .get_mut(&id)
            .ok_or(ClientError::NotFound { id })?;
        match record.state {
            TaskState::Pending => {
                let key = (record.queued.0, record.queued.1, id);
                unqueue(&mut self.queue, &record.task, key);
                self.waiting.remove(&(record.ready_at, id));
                if let Some(d) = record.start_by {
                    self.deadlines.remove(&(d, id));
                }
            }
            TaskState::Running { node, epoch } => {
                // The runner's late result will be rejected: its epoch is no longer current.
                if let Some(w) = self.workers.get_mut(&node) {
                    w.running.remove(&id);
                }
                if let Some(limit) = &record.task.limit {
                    self.limits.stopped(limit);
                }
                // Its handler is told at its next heartbeat (best effort:
                // its progress is answered the same way).
                if node != self.peers.id {
                    out.push(Action::Send {
                        to: node,
                        msg: StaticMessage::Stop {
                            task: id,
                            epoch,
                            reply: HeartbeatReply::Cancelled,
                        },
                    });
                }
            }
            _ => {
                return Ok(ClientResponse::State {
                    id,
                    state: record.state.clone(),
                })
            }
        }
        record.record(now, TaskEventKind::Cancelled, events_max);
        self.finish(now, id, TaskState::Cancelled, out);
        // A cancelled runner's room (and its limit's) is free at once.
        self.schedule(now, out);
        Ok(ClientResponse::State {
            id,
            state: TaskState::Cancelled,
        })
    }

    /// The handler of `(task, epoch)` on `from` heartbeats with `progress`
    /// (`None`: a liveness question only). Recorded when that execution
    /// holds the task; otherwise the runner is told to stop it. Returns
    /// what to tell the handler.
    pub(crate) fn progress(
        &mut self,
        now: Time,
        from: NodeId,
        task: TaskId,
        epoch: Epoch,
        progress: Option<String>,
        out: &mut Out,
    ) -> HeartbeatReply {
        let events_max = self.events_max();
        let state = self.tasks.get(&task).map(|r| &r.state);
        let reply = HeartbeatReply::for_state(state, from, epoch);
        match (reply, progress) {
            (HeartbeatReply::Continue, Some(progress)) => {
                if let Some(record) = self.tasks.get_mut(&task) {
                    let what = TaskEventKind::Heartbeat {
                        node: from,
                        epoch,
                        progress: event_progress(&progress),
                    };
                    record.record(now, what, events_max);
                    record.renewed_at = now;
                    out.push(Action::Note(Note::Heartbeat {
                        task,
                        epoch,
                        node: from,
                    }));
                }
            }
            (HeartbeatReply::Continue, None) => {}
            (reply, _) if from != self.peers.id => out.push(Action::Send {
                to: from,
                msg: StaticMessage::Stop { task, epoch, reply },
            }),
            _ => {}
        }
        reply
    }

    pub(crate) fn result(
        &mut self,
        now: Time,
        from: NodeId,
        task: TaskId,
        epoch: Epoch,
        outcome: TaskOutcome,
        out: &mut Out,
    ) {
        if from != self.peers.id {
            out.push(Action::Send {
                to: from,
                msg: StaticMessage::ResultAck { task, epoch },
            });
        }
        let events_max = self.events_max();
        let Some(record) = self.tasks.get_mut(&task) else {
            return;
        };
        if record.state != (TaskState::Running { node: from, epoch }) {
            return; // stale epoch, cancelled, or already decided: rejected (G3)
        }
        if let Some(w) = self.workers.get_mut(&from) {
            w.running.remove(&task);
        }
        if let Some(limit) = &record.task.limit {
            self.limits.stopped(limit);
        }
        let node = from;
        match outcome {
            TaskOutcome::Success(result) => {
                record.record(now, TaskEventKind::Succeeded { node, epoch }, events_max);
                self.finish(
                    now,
                    task,
                    TaskState::Succeeded {
                        result,
                        node,
                        epoch,
                    },
                    out,
                )
            }
            TaskOutcome::Failure(error) => {
                let reason = SupersedeReason::AttemptFailed;
                self.fail_attempt(now, task, error, reason, out);
            }
        }
        self.schedule(now, out);
    }

    /// Fails the running attempt of `task`, already off its runner's list
    /// and its limit, with `error`: a handler's (`AttemptFailed`) or an
    /// ended lease's (`LeaseExpired`). Counted against `max_attempts`;
    /// retried after the policy's backoff (noted superseded for `reason`)
    /// or failed for good.
    fn fail_attempt(
        &mut self,
        now: Time,
        task: TaskId,
        error: String,
        reason: SupersedeReason,
        out: &mut Out,
    ) {
        let events_max = self.events_max();
        let jitter = self.rng.gen();
        let record = self.tasks.get_mut(&task).expect("failing a known task");
        let TaskState::Running { node, epoch } = record.state else {
            panic!("failing an attempt that is not running");
        };
        record.attempts += 1;
        let after = after_failure(&record.task, record.attempts, &error, now, jitter);
        record.record(now, failure_event(node, epoch, &error, after), events_max);
        if let AfterFailure::RetryAt(retry_at) = after {
            record.state = TaskState::Pending;
            record.ready_at = retry_at;
            out.push(Action::Note(Note::Superseded {
                task,
                epoch,
                reason,
            }));
            self.enqueue(now, task);
        } else {
            let attempts = record.attempts;
            self.finish(now, task, TaskState::Failed { error, attempts }, out);
        }
    }

    pub(crate) fn heartbeat(
        &mut self,
        now: Time,
        from: NodeId,
        held: &[(TaskId, Epoch)],
        capacity_tasks: u32,
        labels: Vec<String>,
        out: &mut Out,
    ) {
        let Some(w) = self.workers.get_mut(&from) else {
            return;
        };
        w.alive = true;
        w.last_seen = now;
        w.capacity_tasks = capacity_tasks.max(1);
        // Checked like the node's own; invalid ones match nothing labelled.
        w.labels = if cohort_core::task::valid_labels(&labels).is_ok() {
            labels
        } else {
            Vec::new()
        };
        // Re-send assignments the worker does not hold: the Assign was lost.
        let resend_after = self.config.heartbeat_interval();
        for &task in &w.running {
            let Some(record) = self.tasks.get(&task) else {
                continue;
            };
            let TaskState::Running { epoch, .. } = record.state else {
                continue;
            };
            if !held.contains(&(task, epoch))
                && now.saturating_since(record.assigned_at) >= resend_after
            {
                out.push(Action::Send {
                    to: from,
                    msg: StaticMessage::Assign {
                        task,
                        epoch,
                        body: record.task.clone(),
                    },
                });
            }
        }
        self.schedule(now, out);
    }

    pub(crate) fn tick(&mut self, now: Time, out: &mut Out) {
        let timeout = self.config.worker_timeout();
        let me = self.peers.id;
        let dead: Vec<NodeId> = self
            .workers
            .iter()
            .filter(|(&id, w)| id != me && w.alive && now.saturating_since(w.last_seen) > timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in dead {
            let w = self.workers.get_mut(&id).expect("listed above");
            w.alive = false;
            for task in std::mem::take(&mut w.running) {
                self.lose(now, id, task, SupersedeReason::RunnerDeclaredDead, out);
            }
        }
        // Leases no outcome came back for (a live runner's hung handler).
        let tasks = &self.tasks;
        let ended: Vec<(NodeId, TaskId)> = self
            .workers
            .iter()
            .flat_map(|(id, w)| w.running.iter().map(move |t| (*id, *t)))
            .filter(|(_, t)| now > tasks[t].task.lease_ends(tasks[t].renewed_at))
            .collect();
        for (id, task) in ended {
            let w = self.workers.get_mut(&id).expect("listed above");
            w.running.remove(&task);
            let record = &self.tasks[&task];
            if let Some(limit) = &record.task.limit {
                self.limits.stopped(limit);
            }
            let error = record.task.lease_expired_error();
            self.fail_attempt(now, task, error, SupersedeReason::LeaseExpired, out);
        }
        while let Some(&(deadline, task)) = self.deadlines.first() {
            if deadline >= now {
                break;
            }
            self.expire(now, task, out);
        }
        while let Some(&(at, task)) = self.waiting.first() {
            if at > now {
                break;
            }
            self.waiting.pop_first();
            self.queue_in_order(task);
        }
        self.purge(now, out);
        self.schedule(now, out);
    }

    /// Running `task`, taken off its runner `node`'s list by the caller,
    /// lost its runner for `reason`: pending again, the runner's late
    /// result rejected (its epoch is no longer current).
    fn lose(
        &mut self,
        now: Time,
        node: NodeId,
        task: TaskId,
        reason: SupersedeReason,
        out: &mut Out,
    ) {
        let events_max = self.events_max();
        let record = self
            .tasks
            .get_mut(&task)
            .expect("a running task is in the table");
        let TaskState::Running { epoch, .. } = record.state else {
            unreachable!("worker.running lists only running tasks")
        };
        if let Some(limit) = &record.task.limit {
            self.limits.stopped(limit);
        }
        let what = TaskEventKind::RunnerLost {
            node,
            epoch,
            reason,
        };
        record.record(now, what, events_max);
        record.state = TaskState::Pending;
        out.push(Action::Note(Note::Superseded {
            task,
            epoch,
            reason,
        }));
        self.enqueue(now, task);
    }

    /// Fails pending `id`, past its schedule-to-start deadline.
    fn expire(&mut self, now: Time, id: TaskId, out: &mut Out) {
        let events_max = self.events_max();
        let record = self.tasks.get_mut(&id).expect("a deadline of a known task");
        assert_eq!(
            record.state,
            TaskState::Pending,
            "only pending tasks expire"
        );
        let deadline = record.start_by.take().expect("indexed deadlines are set");
        assert!(deadline < now, "expired after its deadline only");
        self.deadlines.remove(&(deadline, id));
        self.waiting.remove(&(record.ready_at, id));
        let key = (record.queued.0, record.queued.1, id);
        unqueue(&mut self.queue, &record.task, key);
        let error = record.task.not_started_error();
        let what = TaskEventKind::NotStarted {
            error: event_error(&error),
        };
        record.record(now, what, events_max);
        let attempts = record.attempts;
        self.finish(now, id, TaskState::Failed { error, attempts }, out);
    }

    /// Puts `id` in the queue behind every task of its priority or higher.
    fn queue_in_order(&mut self, id: TaskId) {
        let seq = self.queue_seq;
        self.queue_seq += 1;
        let record = self.tasks.get_mut(&id).expect("queueing a known task");
        record.queued = (record.task.rank(), seq);
        let fresh = self
            .queue
            .entry(queue_key(&record.task))
            .or_default()
            .insert((record.queued.0, seq, id));
        assert!(fresh, "a task is queued once");
    }

    /// Whether a task of `queue` may start at `now`: its limit allows it
    /// and a live worker with room carries every one of its labels.
    fn room_for(&self, (labels, limit): &QueueKey, now: Time) -> bool {
        if limit.as_ref().is_some_and(|l| !self.limits.allows(l, now)) {
            return false;
        }
        self.workers.values().any(|w| {
            w.alive
                && (w.running.len() as u64) < u64::from(w.capacity_tasks)
                && cohort_core::task::carries(&w.labels, labels)
        })
    }

    /// Queues pending `id`: waiting while its `ready_at` is after `now`.
    fn enqueue(&mut self, now: Time, id: TaskId) {
        let record = self.tasks.get_mut(&id).expect("queueing a known task");
        let ready_at = record.ready_at;
        record.start_by = record.task.start_by(now, ready_at);
        if let Some(d) = record.start_by {
            self.deadlines.insert((d, id));
        }
        if ready_at > now {
            self.waiting.insert((ready_at, id));
        } else {
            self.queue_in_order(id);
        }
    }

    /// Assigns pending tasks, in order, to the live worker with the lowest
    /// `running / capacity` (ties: lowest id) among those carrying the
    /// task's labels, while any has room. The tasks of a label set no
    /// worker with room carries are passed over, at the cost of one look
    /// per label set, and so are those of a limit reached.
    fn schedule(&mut self, now: Time, out: &mut Out) {
        let events_max = self.events_max();
        loop {
            // The first task in queue order among the label sets some
            // worker with room carries.
            let next = self
                .queue
                .iter()
                .filter(|(queue, _)| self.room_for(queue, now))
                .filter_map(|(_, q)| q.first().copied())
                .min();
            let Some((rank, seq, task)) = next else {
                return;
            };
            let want = &self.tasks[&task].task;
            let best = self
                .workers
                .iter()
                .filter(|(_, w)| w.alive && (w.running.len() as u64) < u64::from(w.capacity_tasks))
                .filter(|(_, w)| want.runs_on(&w.labels))
                .min_by(|(a_id, a), (b_id, b)| {
                    // running_a / cap_a vs running_b / cap_b, without floats.
                    let lhs = a.running.len() as u64 * u64::from(b.capacity_tasks);
                    let rhs = b.running.len() as u64 * u64::from(a.capacity_tasks);
                    lhs.cmp(&rhs).then(a_id.cmp(b_id))
                })
                .map(|(&id, _)| id);
            let node = best.expect("room_for found a worker");
            unqueue(&mut self.queue, want, (rank, seq, task));
            if let Some(d) = self.tasks[&task].start_by {
                if d < now {
                    // It went overdue before a worker had room.
                    self.expire(now, task, out);
                    continue;
                }
                self.deadlines.remove(&(d, task));
                self.tasks.get_mut(&task).expect("queued").start_by = None;
            }
            self.last_epoch = self.last_epoch.next();
            let epoch = self.last_epoch;
            let record = self
                .tasks
                .get_mut(&task)
                .expect("a queued task is in the table");
            assert_eq!(
                record.state,
                TaskState::Pending,
                "only pending tasks are queued"
            );
            if let Some(limit) = &record.task.limit {
                self.limits.started(limit, now);
            }
            record.state = TaskState::Running { node, epoch };
            record.assigned_at = now;
            record.renewed_at = now;
            record.record(now, TaskEventKind::Assigned { node, epoch }, events_max);
            self.workers
                .get_mut(&node)
                .expect("chosen above")
                .running
                .insert(task);
            out.push(Action::Note(Note::Assigned {
                task,
                epoch,
                node,
                at: now,
            }));
            let body = record.task.clone();
            if node == self.peers.id {
                out.push(Action::Execute {
                    id: task,
                    epoch,
                    task: body,
                });
            } else {
                out.push(Action::Send {
                    to: node,
                    msg: StaticMessage::Assign { task, epoch, body },
                });
            }
        }
    }

    fn finish(&mut self, now: Time, task: TaskId, state: TaskState, out: &mut Out) {
        assert!(state.is_final());
        let seq = self.finished_seq;
        self.finished_seq += 1;
        let record = self.tasks.get_mut(&task).expect("finishing a known task");
        let purge_at = self.peers.limits.purge_at(&record.task, &state, now);
        assert!(!record.state.is_final(), "a final state never changes");
        record.state = state.clone();
        record.purge_at = purge_at;
        self.active -= 1;
        out.push(Action::Note(Note::Decided { task, state }));
        record.finished_seq = seq;
        let Some(due) = purge_at else {
            // Kept for ever (counted in `kept` when it was created).
            return;
        };
        self.finished.insert((seq, task));
        self.expiring.insert((due, seq, task));
        while self.finished.len() > self.peers.limits.tasks_retained_max {
            let (seq, old) = self.finished.pop_first().expect("non-empty");
            let rec = self.tasks.remove(&old).expect("finished tasks are known");
            let due = rec.purge_at.expect("finished records have a purge time");
            assert!(self.expiring.remove(&(due, seq, old)), "indexed");
            out.push(Action::Note(Note::Purged { task: old }));
        }
    }

    /// Drops the finished records whose retention ended by `now`.
    fn purge(&mut self, now: Time, out: &mut Out) {
        self.limits.sweep(now);
        while let Some(&(due, seq, id)) = self.expiring.first() {
            if due > now {
                break;
            }
            self.expiring.pop_first();
            assert!(
                self.finished.remove(&(seq, id)),
                "expiring tasks are finished"
            );
            let rec = self.tasks.remove(&id).expect("finished tasks are known");
            assert!(rec.state.is_final(), "only final records are purged");
            out.push(Action::Note(Note::Purged { task: id }));
        }
    }
}
