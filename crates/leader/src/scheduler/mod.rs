//! The replicated state machine: tasks, assignments, worker liveness.
//!
//! Every change is a [`Command`] committed through the Raft log and applied
//! in log order on every node by [`Scheduler::apply`]. Commands are
//! proposed by the leader from a possibly stale view, so `apply` validates
//! each one against the state it finds (an assignment of a task that is no
//! longer pending, a result for a superseded epoch, ... are no-ops): the
//! log order alone decides, identically everywhere.
//!
//! Fencing (G3): each assignment carries the task's next epoch; a result is
//! accepted only for the epoch currently running, and the first accepted
//! result decides the task (G2).

use cohort_core::{
    after_failure, event_error, event_progress, failure_event, AfterFailure, Epoch, LimitCounts,
    NodeId, Note, Retention, SupersedeReason, Task, TaskEvent, TaskEventKind, TaskEvents, TaskId,
    TaskLimit, TaskOutcome, TaskState, Time,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A state-machine command, the payload of a Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Accept a task (a no-op if the id exists).
    Submit {
        /// The task's id.
        id: TaskId,
        /// The task.
        task: Task,
    },
    /// Run a pending task on `node` under `epoch` (the task's next epoch).
    Assign {
        /// The task.
        id: TaskId,
        /// Must be the task's current epoch + 1.
        epoch: Epoch,
        /// The runner.
        node: NodeId,
    },
    /// The outcome of running `(id, epoch)` on `node`.
    Result {
        /// The task.
        id: TaskId,
        /// The assignment's epoch.
        epoch: Epoch,
        /// The runner that reported it.
        node: NodeId,
        /// What the handler returned.
        outcome: TaskOutcome,
        /// Drawn by the proposing leader from its seeded RNG: the full
        /// jitter of the retry backoff should the outcome be a retryable
        /// failure (see [`cohort_core::retry`]).
        jitter: u32,
    },
    /// `node` missed its heartbeats: its running tasks go back to pending.
    WorkerDead {
        /// The worker.
        node: NodeId,
    },
    /// `node` heartbeats again and may receive tasks.
    WorkerAlive {
        /// The worker.
        node: NodeId,
    },
    /// The runner of `(id, epoch)` no longer holds it (it restarted).
    Reclaim {
        /// The task.
        id: TaskId,
        /// The lost assignment.
        epoch: Epoch,
    },
    /// Cancel a task that is not final.
    Cancel {
        /// The task.
        id: TaskId,
    },
    /// Accept every task of a client's batch, or none: if any id names a
    /// different task already, the whole command is a no-op. (Last in the
    /// enum: the encoding of the earlier variants, already in logs on
    /// disk, stays as it was.)
    SubmitBatch {
        /// The tasks.
        tasks: Vec<(TaskId, Task)>,
    },
    /// `node`, draining, hands the assignment `(id, epoch)` back without a
    /// result: the task goes back to pending (a no-op unless `node` runs
    /// that very assignment). Last in the enum, like `SubmitBatch`.
    Release {
        /// The task.
        id: TaskId,
        /// The assignment handed back.
        epoch: Epoch,
        /// Its runner, who hands it back.
        node: NodeId,
    },
    /// Fail a pending task whose schedule-to-start deadline passed (a
    /// no-op unless it is pending and its deadline is before the entry's
    /// time).
    Expire {
        /// The task.
        id: TaskId,
    },
    /// The handler of `(id, epoch)` on `node` is alive and reports
    /// `progress`: recorded in the task's history (a no-op unless `node`
    /// runs that very assignment). Last in the enum, like `SubmitBatch`.
    Heartbeat {
        /// The task.
        id: TaskId,
        /// The assignment.
        epoch: Epoch,
        /// Its runner.
        node: NodeId,
        /// At most [`cohort_core::PROGRESS_BYTES_MAX`] bytes (cut when applied).
        progress: String,
    },
    /// Nothing but the entry's time: final records whose retention ended
    /// by then are purged, as before every command. The leader proposes it
    /// when a purge is due and nothing else was committed. Last in the
    /// enum, like `SubmitBatch`.
    Purge,
    /// Several commands in one log entry, applied in order with its index
    /// and time, each exactly as if alone: the leader packs the
    /// assignments of one round, and the results that arrived together,
    /// so that a busy cluster writes, replicates and fsyncs one entry for
    /// many. Never nested. Last in the enum, like `SubmitBatch`.
    Many {
        /// At most `LeaderConfig::assignments_per_round_max`.
        commands: Vec<Command>,
    },
    /// The lease of `(id, epoch)` ended with no outcome from its runner
    /// ([`Task::lease_ends`]): a no-op
    /// unless that assignment still runs and its lease ended by the
    /// entry's time; else the attempt failed
    /// ([`Task::lease_expired_error`]): retried like a handler's failure
    /// (noted superseded, `LeaseExpired`) or failed, its runner's late
    /// result rejected. Last in the enum, like `SubmitBatch`.
    ExpireLease {
        /// The task.
        id: TaskId,
        /// The assignment whose lease ended.
        epoch: Epoch,
        /// Drawn by the proposing leader: the full jitter of the retry
        /// backoff, as in `Result`.
        jitter: u32,
    },
}

/// One task as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// What was submitted.
    pub task: Task,
    /// Where it is in its life.
    pub state: TaskState,
    /// The latest epoch handed out (ZERO before the first assignment).
    pub epoch: Epoch,
    /// Failed executions so far.
    pub attempts: u32,
    /// Log index of the current assignment (0 when not running).
    pub assigned_index: u64,
    /// Log index at which it last became pending (its queue position).
    pending_since: u64,
    /// Not to be assigned before this instant: the task's `not_before`,
    /// then the `retry_at` of its latest failed attempt.
    pub ready_at: Time,
    /// While pending with a schedule-to-start timeout: not to be assigned
    /// after this instant, but failed (`Command::Expire`).
    pub start_by: Option<Time>,
    /// What happened to it, stamped with the proposing leader's clock.
    pub history: TaskEvents,
    /// Once final: when the record is purged (its state's retention after
    /// the entry that made it final; `None` for a schedule's definition
    /// and tombstone, kept for ever).
    pub purge_at: Option<Time>,
    /// While running: when the cluster ends the assignment's lease if its
    /// runner has reported nothing ([`Task::lease_ends`] of the assignment
    /// or of its latest recorded heartbeat).
    pub lease_until: Option<Time>,
}

/// What a pending queue holds in common: the worker labels its tasks
/// need and the limit they carry.
pub type QueueKey = (Vec<String>, Option<TaskLimit>);

/// The scheduler's replicated state. Encoded as the Raft snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduler {
    tasks: BTreeMap<TaskId, TaskRecord>,
    /// Pending tasks that could run when they became pending, by the
    /// worker labels they need (none: the empty list) and the limit they
    /// carry, each in queue order: (priority rank, index it became
    /// pending, id), so a higher priority goes first, then first come
    /// first served. Split so that an assignment round skips, at no cost,
    /// every task whose labels no worker with room carries or whose limit
    /// is reached (a backlog for workers that are down, or of a limited
    /// key, does not hold up the others). No empty set is kept.
    pending: BTreeMap<QueueKey, BTreeSet<(u8, u64, TaskId)>>,
    /// Running tasks and recent starts per limit key.
    limits: LimitCounts,
    /// Pending tasks that could not run yet when they became pending
    /// (`not_before` or a retry backoff), by when they may: (ready_at, id).
    /// Disjoint from `pending`; a task stays here until it is assigned.
    waiting: BTreeSet<(Time, TaskId)>,
    /// Pending tasks with a schedule-to-start deadline: (start_by, id).
    deadlines: BTreeSet<(Time, TaskId)>,
    /// Running tasks by when their lease ends: (lease_until, id).
    leases: BTreeSet<(Time, TaskId)>,
    /// Running tasks per runner.
    running: BTreeMap<NodeId, BTreeSet<TaskId>>,
    /// Workers declared dead and not yet back.
    dead: BTreeSet<NodeId>,
    /// Final tasks in the order they finished: (index, id), for retention.
    /// Not the records kept for ever, which are in `kept`.
    finished: BTreeSet<(u64, TaskId)>,
    /// Final records kept for ever: schedule definitions and tombstones
    /// ([`cohort_core::schedule::kept_for_ever`]). Outside `finished`, so
    /// neither retention nor the count bound (`retained_max`) drops one: a
    /// dropped tombstone would let a deleted schedule's late link fire.
    /// Bounded instead where they are created
    /// ([`crate::LeaderConfig::schedules_kept_max`]).
    kept: BTreeSet<TaskId>,
    /// Final tasks by when they are purged: (purge_at, index, id).
    expiring: BTreeSet<(Time, u64, TaskId)>,
    /// Most finished records retained.
    retained_max: usize,
    /// How long finished records are retained, per final state.
    retention: Retention,
    /// Most events a record's history keeps (`Limits::task_events_max`).
    events_max: usize,
}

impl Scheduler {
    /// An empty state keeping at most `retained_max` finished tasks and
    /// `events_max` events per task.
    pub fn new(retained_max: usize, events_max: usize) -> Scheduler {
        assert!(retained_max > 0, "retain at least one finished task");
        assert!(
            events_max >= 2,
            "a history keeps its first event and the latest"
        );
        Scheduler {
            retained_max,
            events_max,
            ..Scheduler::default()
        }
    }

    /// The same, keeping finished records for `retention`.
    pub fn with_retention(mut self, retention: Retention) -> Scheduler {
        self.retention = retention;
        self
    }

    /// When the next finished record is due to be purged.
    pub fn next_purge_at(&self) -> Option<Time> {
        self.expiring.first().map(|&(at, _, _)| at)
    }

    /// Drops the finished records whose retention ended by `at`.
    fn purge(&mut self, at: Time, notes: &mut Vec<Note>) {
        self.limits.sweep(at);
        while let Some(&(due, index, id)) = self.expiring.first() {
            if due > at {
                break;
            }
            self.expiring.pop_first();
            assert!(
                self.finished.remove(&(index, id)),
                "expiring tasks are finished"
            );
            let rec = self.tasks.remove(&id).expect("finished tasks are known");
            assert!(rec.state.is_final(), "only final records are purged");
            notes.push(Note::Purged { task: id });
        }
    }

    /// A task's record.
    pub fn get(&self, id: TaskId) -> Option<&TaskRecord> {
        self.tasks.get(&id)
    }

    /// Tasks in ascending id order, strictly after `after`.
    pub fn tasks_after(
        &self,
        after: Option<TaskId>,
    ) -> impl Iterator<Item = (&TaskId, &TaskRecord)> + '_ {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.tasks.range((from, Bound::Unbounded))
    }

    /// Number of tasks not yet final.
    pub fn active(&self) -> usize {
        self.tasks.len() - self.finished.len() - self.kept.len()
    }

    /// Number of final records kept for ever (schedule definitions and
    /// tombstones).
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// Number of task records held.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is held.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Pending tasks that may be assigned at `now`: those whose wait
    /// (`not_before`, a retry backoff) ended by `now`, earliest first,
    /// then the queue by priority and age.
    pub fn ready(&self, now: Time) -> impl Iterator<Item = TaskId> + '_ {
        self.ready_for(now, |_, _| usize::MAX)
    }

    /// Whether any pending task may be assigned at `now` (labels and
    /// limits aside): O(queues), where [`Scheduler::ready`] would collect.
    pub fn any_ready(&self, now: Time) -> bool {
        self.waiting.first().is_some_and(|(t, _)| *t <= now)
            || self.pending.values().any(|q| !q.is_empty())
    }

    /// [`Scheduler::ready`], taking from each queue at most as many tasks
    /// as `runnable` allows for its labels and limit. The queued tasks of
    /// a queue it gives 0 are skipped whole, at the cost of one call per
    /// queue; waiting tasks whose wait ended are looked at one by one
    /// (kept when `runnable` gives them more than 0).
    pub fn ready_for<'a>(
        &'a self,
        now: Time,
        mut runnable: impl FnMut(&[String], Option<&TaskLimit>) -> usize + 'a,
    ) -> impl Iterator<Item = TaskId> + 'a {
        let mut queues: Vec<_> = self
            .pending
            .iter()
            .map(|((labels, limit), q)| (runnable(labels, limit.as_ref()), q))
            .filter(|(budget, _)| *budget > 0)
            .map(|(budget, q)| (budget, q.iter().peekable()))
            .collect();
        let waiting = self
            .waiting
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .filter(move |id| {
                let task = &self.tasks[id].task;
                runnable(&task.labels, task.limit.as_ref()) > 0
            });
        // The queues merged in queue order: priority, then age.
        let queued = std::iter::from_fn(move || {
            let next = queues
                .iter_mut()
                .enumerate()
                .filter(|(_, (budget, _))| *budget > 0)
                .filter_map(|(i, (_, q))| q.peek().map(|k| (**k, i)))
                .min()?;
            let (budget, q) = &mut queues[next.1];
            q.next();
            *budget -= 1;
            Some(next.0 .2)
        });
        waiting.chain(queued)
    }

    /// What the limits count (see [`LimitCounts`]).
    pub fn limit_counts(&self) -> &LimitCounts {
        &self.limits
    }

    /// The earliest instant after `now` at which a pending task held back
    /// by its rate limit may start, if one is.
    pub fn next_rate_free_after(&self, now: Time) -> Option<Time> {
        let queued = self.pending.keys().filter_map(|(_, l)| l.as_ref());
        let waited = self
            .waiting
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter_map(|(_, id)| self.tasks[id].task.limit.as_ref());
        queued
            .chain(waited)
            .filter_map(|l| self.limits.rate_frees_at(l, now))
            .filter(|t| *t > now)
            .min()
    }

    /// Every pending task, ready or waiting.
    pub fn pending(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.waiting
            .iter()
            .map(|(_, id)| *id)
            .chain(self.pending.values().flatten().map(|(_, _, id)| *id))
    }

    fn pending_len(&self) -> usize {
        self.pending.values().map(BTreeSet::len).sum()
    }

    /// Pending tasks whose schedule-to-start deadline is before `now`.
    pub fn overdue(&self, now: Time) -> impl Iterator<Item = TaskId> + '_ {
        self.deadlines
            .iter()
            .take_while(move |(t, _)| *t < now)
            .map(|(_, id)| *id)
    }

    /// Running assignments whose lease ended before `now`, earliest first.
    pub fn leases_ended(&self, now: Time) -> impl Iterator<Item = (TaskId, Epoch)> + '_ {
        self.leases
            .iter()
            .take_while(move |(t, _)| *t < now)
            .map(|(_, id)| (*id, self.tasks[id].epoch))
    }

    /// The earliest instant after `now` at which a running task's lease
    /// has ended, if any runs.
    pub fn next_lease_end_after(&self, now: Time) -> Option<Time> {
        self.leases
            .range((now, TaskId(0))..)
            .next()
            .map(|(t, _)| Time(t.as_micros().saturating_add(1)))
    }

    /// The earliest instant after `now` at which a pending task is past
    /// its schedule-to-start deadline, if any has one.
    pub fn next_overdue_after(&self, now: Time) -> Option<Time> {
        let from = (now, TaskId(0));
        self.deadlines
            .range(from..)
            .next()
            .map(|(t, _)| Time(t.as_micros().saturating_add(1)))
    }

    /// The earliest instant after `now` at which a waiting task may be
    /// assigned, if any waits that long.
    pub fn next_ready_after(&self, now: Time) -> Option<Time> {
        let after = (Time(now.as_micros().saturating_add(1)), TaskId(0));
        self.waiting.range(after..).next().map(|(t, _)| *t)
    }

    /// Tasks running on `node`.
    pub fn running_on(&self, node: NodeId) -> impl Iterator<Item = TaskId> + '_ {
        self.running.get(&node).into_iter().flatten().copied()
    }

    /// How many tasks run on `node`.
    pub fn load(&self, node: NodeId) -> usize {
        self.running.get(&node).map_or(0, BTreeSet::len)
    }

    /// Whether `node` is declared dead.
    pub fn is_dead(&self, node: NodeId) -> bool {
        self.dead.contains(&node)
    }

    /// Whether `(id, epoch)` is the assignment currently running.
    pub fn is_running(&self, id: TaskId, epoch: Epoch) -> bool {
        self.tasks
            .get(&id)
            .is_some_and(|r| matches!(r.state, TaskState::Running { epoch: e, .. } if e == epoch))
    }

    /// The first id of `tasks` that names a different task already: the
    /// reason a [`Command::SubmitBatch`] is a no-op.
    pub fn batch_conflict(&self, tasks: &[(TaskId, Task)]) -> Option<TaskId> {
        tasks
            .iter()
            .find(|(id, task)| self.tasks.get(id).is_some_and(|r| r.task != *task))
            .map(|(id, _)| *id)
    }

    /// Creates `id` as pending unless it exists (a resubmit is a no-op).
    fn accept(&mut self, index: u64, at: Time, id: TaskId, task: &Task) {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.tasks.entry(id) {
            let mut history = TaskEvents::default();
            history.push(
                TaskEvent {
                    at,
                    what: TaskEventKind::Submitted,
                },
                self.events_max,
            );
            slot.insert(TaskRecord {
                task: task.clone(),
                state: TaskState::Pending,
                epoch: Epoch::ZERO,
                attempts: 0,
                assigned_index: 0,
                pending_since: index,
                ready_at: task.not_before,
                start_by: None,
                history,
                purge_at: None,
                lease_until: None,
            });
            self.enqueue(index, at, id);
        }
    }

    /// Queues pending `id`: waiting when it may not run at `at` yet.
    fn enqueue(&mut self, index: u64, at: Time, id: TaskId) {
        let rec = self.tasks.get_mut(&id).expect("queueing a known task");
        assert_eq!(rec.state, TaskState::Pending, "only pending tasks queue");
        rec.pending_since = index;
        rec.start_by = rec.task.start_by(at, rec.ready_at);
        if let Some(d) = rec.start_by {
            self.deadlines.insert((d, id));
        }
        if rec.ready_at > at {
            self.waiting.insert((rec.ready_at, id));
        } else {
            let key = (rec.task.rank(), index, id);
            self.pending
                .entry(queue_key(&rec.task))
                .or_default()
                .insert(key);
        }
    }

    /// Takes pending `id` off whichever queue holds it.
    fn dequeue(&mut self, id: TaskId) {
        let rec = &self.tasks[&id];
        let key = (rec.task.rank(), rec.pending_since, id);
        let queue = queue_key(&rec.task);
        let in_queue = self.pending.get_mut(&queue).is_some_and(|q| q.remove(&key));
        if self.pending.get(&queue).is_some_and(BTreeSet::is_empty) {
            self.pending.remove(&queue);
        }
        let queued = in_queue || self.waiting.remove(&(rec.ready_at, id));
        assert!(queued, "a pending task is queued exactly once");
        if let Some(d) = rec.start_by {
            assert!(self.deadlines.remove(&(d, id)), "deadlines are indexed");
        }
    }

    /// Appends an event to `id`'s history.
    fn record(&mut self, id: TaskId, at: Time, what: TaskEventKind) {
        let events_max = self.events_max;
        let rec = self.tasks.get_mut(&id).expect("events of a known task");
        rec.history.push(TaskEvent { at, what }, events_max);
    }

    /// Applies the command committed at `index`, proposed at `at` on the
    /// leader's clock; returns the decisions it made, for the history.
    pub fn apply(&mut self, index: u64, at: Time, cmd: &Command) -> Vec<Note> {
        let mut notes = Vec::new();
        self.purge(at, &mut notes);
        match cmd {
            Command::Many { commands } => {
                for c in commands {
                    // Only the leader builds these, from single commands.
                    assert!(
                        !matches!(c, Command::Many { .. }),
                        "a Many entry holds no Many"
                    );
                    notes.extend(self.apply_one(index, at, c));
                }
            }
            _ => notes.extend(self.apply_one(index, at, cmd)),
        }
        notes
    }

    /// [`Scheduler::apply`] of one command, after the purge.
    fn apply_one(&mut self, index: u64, at: Time, cmd: &Command) -> Vec<Note> {
        let mut notes = Vec::new();
        match cmd {
            Command::Purge => {}
            Command::Many { .. } => unreachable!("applied by apply"),
            Command::Submit { id, task } => self.accept(index, at, *id, task),
            Command::SubmitBatch { tasks } => {
                if self.batch_conflict(tasks).is_none() {
                    for (id, task) in tasks {
                        self.accept(index, at, *id, task);
                    }
                }
            }
            Command::Assign { id, epoch, node } => {
                if self.is_dead(*node) {
                    return notes;
                }
                let Some(rec) = self.tasks.get(id) else {
                    return notes;
                };
                // Proposed before the task may run (a stale view): a no-op,
                // so no assignment ever precedes not_before or a backoff.
                if rec.state != TaskState::Pending
                    || *epoch != rec.epoch.next()
                    || at < rec.ready_at
                    || rec.start_by.is_some_and(|d| at > d)
                {
                    return notes;
                }
                // Proposed from a view that missed other starts of its key:
                // a no-op, so the log alone keeps every limit.
                if let Some(limit) = &rec.task.limit {
                    if !self.limits.allows(limit, at) {
                        return notes;
                    }
                    self.limits.started(limit, at);
                }
                self.dequeue(*id);
                let rec = self.tasks.get_mut(id).expect("checked above");
                rec.state = TaskState::Running {
                    node: *node,
                    epoch: *epoch,
                };
                rec.epoch = *epoch;
                rec.assigned_index = index;
                let lease_until = rec.task.lease_ends(at);
                rec.lease_until = Some(lease_until);
                self.leases.insert((lease_until, *id));
                self.running.entry(*node).or_default().insert(*id);
                self.record(
                    *id,
                    at,
                    TaskEventKind::Assigned {
                        node: *node,
                        epoch: *epoch,
                    },
                );
                notes.push(Note::Assigned {
                    task: *id,
                    epoch: *epoch,
                    node: *node,
                    at,
                });
            }
            Command::Result {
                id,
                epoch,
                node,
                outcome,
                jitter,
            } => {
                if !self.is_running(*id, *epoch) {
                    return notes; // stale epoch or already decided: rejected (G3)
                }
                let rec = self.tasks.get(id).expect("running implies present");
                let TaskState::Running { node: runner, .. } = rec.state else {
                    unreachable!("checked running");
                };
                if runner != *node {
                    return notes;
                }
                match outcome {
                    TaskOutcome::Success(result) => {
                        let state = TaskState::Succeeded {
                            result: result.clone(),
                            node: *node,
                            epoch: *epoch,
                        };
                        let what = TaskEventKind::Succeeded {
                            node: *node,
                            epoch: *epoch,
                        };
                        self.record(*id, at, what);
                        self.finish(index, at, *id, state, &mut notes);
                    }
                    TaskOutcome::Failure(error) => {
                        let reason = SupersedeReason::AttemptFailed;
                        let failure = (error.as_str(), *jitter, reason);
                        self.fail_attempt(index, at, *id, failure, &mut notes);
                    }
                }
            }
            Command::WorkerDead { node } => {
                self.dead.insert(*node);
                let lost: Vec<TaskId> = self.running_on(*node).collect();
                for id in lost {
                    let reason = SupersedeReason::RunnerDeclaredDead;
                    self.supersede(index, at, id, reason, &mut notes);
                }
            }
            Command::WorkerAlive { node } => {
                self.dead.remove(node);
            }
            Command::ExpireLease { id, epoch, jitter } => {
                let ended = self.is_running(*id, *epoch)
                    && self.tasks[id].lease_until.is_some_and(|until| at > until);
                if ended {
                    let error = self.tasks[id].task.lease_expired_error();
                    let failure = (error.as_str(), *jitter, SupersedeReason::LeaseExpired);
                    self.fail_attempt(index, at, *id, failure, &mut notes);
                }
            }
            Command::Reclaim { id, epoch } => {
                if self.is_running(*id, *epoch) {
                    let reason = SupersedeReason::RunnerDeclaredDead;
                    self.supersede(index, at, *id, reason, &mut notes);
                }
            }
            Command::Release { id, epoch, node } => {
                let runs = self.tasks.get(id).is_some_and(|r| {
                    r.state
                        == TaskState::Running {
                            node: *node,
                            epoch: *epoch,
                        }
                });
                if runs {
                    self.supersede(index, at, *id, SupersedeReason::Released, &mut notes);
                }
            }
            Command::Expire { id } => {
                let overdue = self.tasks.get(id).is_some_and(|r| {
                    r.state == TaskState::Pending && r.start_by.is_some_and(|d| at > d)
                });
                if overdue {
                    let rec = &self.tasks[id];
                    let error = rec.task.not_started_error();
                    let attempts = rec.attempts;
                    let what = TaskEventKind::NotStarted {
                        error: event_error(&error),
                    };
                    self.record(*id, at, what);
                    let state = TaskState::Failed { error, attempts };
                    self.finish(index, at, *id, state, &mut notes);
                }
            }
            Command::Heartbeat {
                id,
                epoch,
                node,
                progress,
            } => {
                let runs = self.tasks.get(id).is_some_and(|r| {
                    r.state
                        == TaskState::Running {
                            node: *node,
                            epoch: *epoch,
                        }
                });
                if runs {
                    let what = TaskEventKind::Heartbeat {
                        node: *node,
                        epoch: *epoch,
                        progress: event_progress(progress),
                    };
                    self.record(*id, at, what);
                    // A recorded heartbeat renews the lease.
                    let rec = self.tasks.get_mut(id).expect("runs");
                    let renewed = rec.task.lease_ends(at);
                    let old = rec.lease_until.replace(renewed).expect("running");
                    assert!(self.leases.remove(&(old, *id)), "leases are indexed");
                    self.leases.insert((renewed, *id));
                    notes.push(Note::Heartbeat {
                        task: *id,
                        epoch: *epoch,
                        node: *node,
                    });
                }
            }
            Command::Cancel { id } => {
                if self.tasks.get(id).is_some_and(|r| !r.state.is_final()) {
                    self.record(*id, at, TaskEventKind::Cancelled);
                    self.finish(index, at, *id, TaskState::Cancelled, &mut notes);
                }
            }
        }
        self.check();
        for note in &notes {
            let (Note::Assigned { task, .. }
            | Note::Superseded { task, .. }
            | Note::Decided { task, .. }
            | Note::Heartbeat { task, .. }
            | Note::Purged { task }) = note;
            if let Some(rec) = self.tasks.get(task) {
                if let Err(e) = rec.history.check_against(&rec.state) {
                    panic!("task {task}: {e}");
                }
                if let Err(e) = rec.history.check_policy(&rec.task) {
                    panic!("task {task}: {e}");
                }
            }
        }
        notes
    }

    /// Fails the running attempt of `id` with `(error, jitter, reason)`:
    /// a handler's error (`AttemptFailed`) or an ended lease
    /// (`LeaseExpired`). Counted against `max_attempts`; retried after the
    /// policy's backoff (noted superseded for `reason`) or failed for good.
    fn fail_attempt(
        &mut self,
        index: u64,
        at: Time,
        id: TaskId,
        (error, jitter, reason): (&str, u32, SupersedeReason),
        notes: &mut Vec<Note>,
    ) {
        let rec = self.tasks.get_mut(&id).expect("failing a known task");
        let TaskState::Running { node, epoch } = rec.state else {
            panic!("failing an attempt that is not running");
        };
        rec.attempts += 1;
        let after = after_failure(&rec.task, rec.attempts, error, at, jitter);
        let attempts = rec.attempts;
        if let AfterFailure::RetryAt(retry_at) = after {
            rec.ready_at = retry_at;
        }
        self.record(id, at, failure_event(node, epoch, error, after));
        match after {
            AfterFailure::RetryAt(_) => self.supersede(index, at, id, reason, notes),
            AfterFailure::Fail => {
                let error = error.to_string();
                let state = TaskState::Failed { error, attempts };
                self.finish(index, at, id, state, notes);
            }
        }
    }

    /// Ends the running assignment of `id` without a result: back to
    /// pending. A lost runner is an event of its own; a failed attempt was
    /// recorded with its error by the caller.
    fn supersede(
        &mut self,
        index: u64,
        at: Time,
        id: TaskId,
        reason: SupersedeReason,
        notes: &mut Vec<Note>,
    ) {
        let rec = self.tasks.get(&id).expect("superseding a known task");
        let TaskState::Running { node, epoch } = rec.state else {
            panic!("superseding a task that is not running");
        };
        // A failed attempt (a handler's error, an ended lease) was recorded
        // with its error by `fail_attempt`.
        let failed = [
            SupersedeReason::AttemptFailed,
            SupersedeReason::LeaseExpired,
        ];
        if !failed.contains(&reason) {
            let what = TaskEventKind::RunnerLost {
                node,
                epoch,
                reason,
            };
            self.record(id, at, what);
        }
        let rec = self.tasks.get_mut(&id).expect("superseding a known task");
        rec.state = TaskState::Pending;
        rec.assigned_index = 0;
        self.enqueue(index, at, id);
        self.unrun(node, id);
        notes.push(Note::Superseded {
            task: id,
            epoch,
            reason,
        });
    }

    fn finish(
        &mut self,
        index: u64,
        at: Time,
        id: TaskId,
        state: TaskState,
        notes: &mut Vec<Note>,
    ) {
        assert!(state.is_final(), "finish with a final state");
        let current = self.tasks[&id].state.clone();
        assert!(!current.is_final(), "a final state never changes (G2)");
        match current {
            TaskState::Pending => self.dequeue(id),
            TaskState::Running { node, .. } => self.unrun(node, id),
            _ => unreachable!("not final"),
        }
        let rec = self.tasks.get_mut(&id).expect("finishing a known task");
        let purge_at = self.retention.purge_at(&rec.task, &state, at);
        rec.state = state.clone();
        rec.assigned_index = 0;
        rec.purge_at = purge_at;
        match purge_at {
            Some(due) => {
                self.finished.insert((index, id));
                self.expiring.insert((due, index, id));
            }
            None => {
                assert!(
                    cohort_core::schedule::kept_for_ever(&rec.task),
                    "a final record without a purge time is kept for ever"
                );
                self.kept.insert(id);
            }
        }
        notes.push(Note::Decided { task: id, state });
        while self.finished.len() > self.retained_max {
            let (index, old) = self.finished.pop_first().expect("non-empty");
            let rec = self.tasks.remove(&old).expect("finished tasks are known");
            let due = rec.purge_at.expect("finished records have a purge time");
            assert!(self.expiring.remove(&(due, index, old)), "indexed");
            notes.push(Note::Purged { task: old });
        }
    }

    fn unrun(&mut self, node: NodeId, id: TaskId) {
        if let Some(limit) = &self.tasks[&id].task.limit {
            self.limits.stopped(limit);
        }
        let rec = self.tasks.get_mut(&id).expect("a running task is known");
        let lease_until = rec
            .lease_until
            .take()
            .expect("a running task holds a lease");
        assert!(self.leases.remove(&(lease_until, id)), "leases are indexed");
        let set = self.running.get_mut(&node).expect("runner indexed");
        assert!(set.remove(&id), "task indexed under its runner");
        if set.is_empty() {
            self.running.remove(&node);
        }
    }

    /// Cheap structural invariants, checked after every command.
    fn check(&self) {
        let running: usize = self.running.values().map(BTreeSet::len).sum();
        assert!(
            self.pending_len()
                + self.waiting.len()
                + running
                + self.finished.len()
                + self.kept.len()
                == self.tasks.len(),
            "every task is pending, running, finished or kept, exactly once"
        );
        assert_eq!(
            self.expiring.len(),
            self.finished.len(),
            "every finished record is purged some day, and only those"
        );
        assert!(
            self.deadlines.len() <= self.pending_len() + self.waiting.len(),
            "only pending tasks have a schedule-to-start deadline"
        );
        assert_eq!(
            self.leases.len(),
            running,
            "every running task holds one lease"
        );
    }
}

/// The pending queue a task waits in.
fn queue_key(task: &Task) -> QueueKey {
    (task.labels.clone(), task.limit.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::error_class;

    fn task() -> Task {
        Task {
            kind: "echo".into(),
            payload: vec![1],
            timeout_ms: 100,
            max_attempts: 2,
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

    /// Commands in these tests are proposed one millisecond per index.
    fn at(index: u64) -> Time {
        Time::from_millis(index)
    }

    const T: TaskId = TaskId(7);
    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    #[test]
    fn stale_epoch_result_is_rejected_and_first_result_wins() {
        let mut s = Scheduler::new(10, 16);
        s.apply(
            1,
            at(1),
            &Command::Submit {
                id: T,
                task: task(),
            },
        );
        s.apply(
            2,
            at(2),
            &Command::Assign {
                id: T,
                epoch: Epoch(1),
                node: A,
            },
        );
        let notes = s.apply(3, at(3), &Command::WorkerDead { node: A });
        assert!(matches!(
            notes[0],
            Note::Superseded {
                epoch: Epoch(1),
                ..
            }
        ));
        s.apply(
            4,
            at(4),
            &Command::Assign {
                id: T,
                epoch: Epoch(2),
                node: B,
            },
        );
        let stale = Command::Result {
            id: T,
            epoch: Epoch(1),
            node: A,
            outcome: TaskOutcome::Success(vec![1]),
            jitter: 0,
        };
        assert!(
            s.apply(5, at(5), &stale).is_empty(),
            "epoch 1 was superseded"
        );
        let ok = Command::Result {
            id: T,
            epoch: Epoch(2),
            node: B,
            outcome: TaskOutcome::Success(vec![2]),
            jitter: 0,
        };
        assert_eq!(s.apply(6, at(6), &ok).len(), 1);
        assert!(s.apply(7, at(7), &ok).is_empty(), "decided once");
        assert!(matches!(
            s.get(T).unwrap().state,
            TaskState::Succeeded {
                epoch: Epoch(2),
                ..
            }
        ));
    }

    #[test]
    fn failures_retry_until_max_attempts_then_fail() {
        let mut s = Scheduler::new(10, 16);
        s.apply(
            1,
            at(1),
            &Command::Submit {
                id: T,
                task: task(),
            },
        );
        for (i, e) in [(2, 1), (4, 2)] {
            s.apply(
                i,
                at(i),
                &Command::Assign {
                    id: T,
                    epoch: Epoch(e),
                    node: A,
                },
            );
            s.apply(
                i + 1,
                at(i + 1),
                &Command::Result {
                    id: T,
                    epoch: Epoch(e),
                    node: A,
                    outcome: TaskOutcome::Failure("boom".into()),
                    jitter: 0,
                },
            );
        }
        assert_eq!(
            s.get(T).unwrap().state,
            TaskState::Failed {
                error: "boom".into(),
                attempts: 2
            }
        );
    }

    #[test]
    fn assignment_needs_the_next_epoch_and_a_pending_task() {
        let mut s = Scheduler::new(10, 16);
        s.apply(
            1,
            at(1),
            &Command::Submit {
                id: T,
                task: task(),
            },
        );
        assert!(s
            .apply(
                2,
                at(2),
                &Command::Assign {
                    id: T,
                    epoch: Epoch(2),
                    node: A
                }
            )
            .is_empty());
        assert_eq!(
            s.apply(
                3,
                at(3),
                &Command::Assign {
                    id: T,
                    epoch: Epoch(1),
                    node: A
                }
            )
            .len(),
            1
        );
        assert!(s
            .apply(
                4,
                at(4),
                &Command::Assign {
                    id: T,
                    epoch: Epoch(2),
                    node: B
                }
            )
            .is_empty());
        assert_eq!(s.load(A), 1);
        s.apply(5, at(5), &Command::Cancel { id: T });
        assert_eq!(s.get(T).unwrap().state, TaskState::Cancelled);
        assert_eq!(s.load(A), 0);
    }

    #[test]
    fn only_the_runner_of_the_current_epoch_releases_a_task_and_it_goes_back_to_pending() {
        let mut s = Scheduler::new(10, 16);
        s.apply(
            1,
            at(1),
            &Command::Submit {
                id: T,
                task: task(),
            },
        );
        s.apply(
            2,
            at(2),
            &Command::Assign {
                id: T,
                epoch: Epoch(1),
                node: A,
            },
        );
        let by = |epoch, node| Command::Release {
            id: T,
            epoch: Epoch(epoch),
            node,
        };
        assert!(
            s.apply(3, at(3), &by(1, B)).is_empty(),
            "not B's assignment"
        );
        assert!(
            s.apply(4, at(4), &by(2, A)).is_empty(),
            "not the current epoch"
        );
        assert_eq!(
            s.apply(5, at(5), &by(1, A)),
            vec![Note::Superseded {
                task: T,
                epoch: Epoch(1),
                reason: SupersedeReason::Released,
            }]
        );
        let rec = s.get(T).unwrap();
        assert_eq!((rec.state.clone(), rec.attempts), (TaskState::Pending, 0));
        assert_eq!(s.load(A), 0);
        assert!(s.apply(6, at(6), &by(1, A)).is_empty(), "released once");
        assert_eq!(
            s.apply(
                7,
                at(7),
                &Command::Assign {
                    id: T,
                    epoch: Epoch(2),
                    node: B,
                }
            )
            .len(),
            1,
            "reassigned under the next epoch"
        );
    }

    fn limited(key: &str, concurrency_max: u32, rate_max: u32) -> Task {
        Task {
            limit: Some(TaskLimit {
                key: key.into(),
                concurrency_max,
                rate_max,
                rate_window_ms: if rate_max > 0 { 100 } else { 0 },
            }),
            ..task()
        }
    }

    fn assign(s: &mut Scheduler, index: u64, id: u128, epoch: u64, node: NodeId) -> bool {
        let cmd = Command::Assign {
            id: TaskId(id),
            epoch: Epoch(epoch),
            node,
        };
        !s.apply(index, at(index), &cmd).is_empty()
    }

    /// Applies, at log index `index`, the submit of `task` as `id`.
    fn submit(s: &mut Scheduler, index: u64, id: u128, task: Task) {
        let cmd = Command::Submit {
            id: TaskId(id),
            task,
        };
        s.apply(index, at(index), &cmd);
    }

    /// Applies, at log index `index`, the success of `id`'s run `epoch` on `node`.
    fn succeed(s: &mut Scheduler, index: u64, id: u128, epoch: u64, node: NodeId) {
        let cmd = Command::Result {
            id: TaskId(id),
            epoch: Epoch(epoch),
            node,
            outcome: TaskOutcome::Success(vec![]),
            jitter: 0,
        };
        s.apply(index, at(index), &cmd);
    }

    /// Task 1, assigned to `A` under epoch 1 at log index 2.
    fn running_on_a() -> Scheduler {
        let mut s = Scheduler::new(10, 16);
        submit(&mut s, 1, 1, task());
        assert!(assign(&mut s, 2, 1, 1, A));
        s
    }

    /// Ends the lease of task 1's assignment under `epoch`, with no jitter.
    fn expire_first(epoch: u64) -> Command {
        Command::ExpireLease {
            id: TaskId(1),
            epoch: Epoch(epoch),
            jitter: 0,
        }
    }

    /// A lease ends its grace after the start-to-close timeout, for
    /// the assignment it was given to only: an `ExpireLease` before then,
    /// or of an older epoch, is a no-op; after it, the attempt failed
    /// (`lease_expired`), the task is pending again and its runner's late
    /// result is rejected.
    #[test]
    fn a_lease_ends_after_the_timeout_and_its_grace_and_fences_the_late_result() {
        let mut s = running_on_a();
        let grace = std::time::Duration::from_millis(task().effective_lease_grace_ms());
        let until = at(2) + task().timeout() + grace;
        assert_eq!(s.get(TaskId(1)).unwrap().lease_until, Some(until));
        assert_eq!(s.leases_ended(until).count(), 0);
        assert_eq!(
            s.next_lease_end_after(at(2)),
            Some(Time(until.as_micros() + 1))
        );
        assert!(
            s.apply(3, until, &expire_first(1)).is_empty(),
            "not past it yet"
        );
        let late = Time(until.as_micros() + 1);
        assert_eq!(
            s.leases_ended(Time(late.as_micros() + 1))
                .collect::<Vec<_>>(),
            vec![(TaskId(1), Epoch(1))]
        );
        assert!(
            s.apply(4, late, &expire_first(0)).is_empty(),
            "another assignment's"
        );
        let notes = s.apply(5, late, &expire_first(1));
        assert_eq!(
            notes,
            vec![Note::Superseded {
                task: TaskId(1),
                epoch: Epoch(1),
                reason: SupersedeReason::LeaseExpired
            }]
        );
        let rec = s.get(TaskId(1)).unwrap();
        assert_eq!(rec.state, TaskState::Pending);
        assert_eq!(rec.attempts, 1, "an ended lease is a failed attempt");
        let last = &rec.history.events.last().unwrap().what;
        assert!(
            matches!(last, TaskEventKind::AttemptFailed { node, epoch: Epoch(1), error, .. }
                if *node == A && error_class(error) == Some("lease_expired")),
            "{last:?}"
        );
        assert_eq!(rec.lease_until, None);
        assert_eq!(s.next_lease_end_after(late), None);
        succeed(&mut s, 6, 1, 1, A);
        assert_eq!(
            s.get(TaskId(1)).unwrap().state,
            TaskState::Pending,
            "fenced off"
        );
        let again = Command::Assign {
            id: TaskId(1),
            epoch: Epoch(2),
            node: B,
        };
        assert!(!s.apply(7, late, &again).is_empty(), "the next epoch runs");
    }

    /// A task's own `lease_grace_ms` sets when its lease ends: not at the
    /// derived grace (the timeout again, 1 to 10 s), but at its own.
    #[test]
    fn a_tasks_own_lease_grace_sets_when_its_lease_ends() {
        let mut s = Scheduler::new(10, 16);
        let own = Task {
            lease_grace_ms: 25_000,
            ..task()
        };
        assert_ne!(
            own.effective_lease_grace_ms(),
            task().effective_lease_grace_ms()
        );
        submit(&mut s, 1, 1, own.clone());
        assert!(assign(&mut s, 2, 1, 1, A));
        let until = at(2) + own.timeout() + std::time::Duration::from_millis(25_000);
        assert_eq!(s.get(TaskId(1)).unwrap().lease_until, Some(until));
        let derived_end = task().lease_ends(at(2));
        assert!(derived_end < until);
        assert_eq!(
            s.leases_ended(Time(derived_end.as_micros() + 1)).count(),
            0,
            "the derived grace does not end it"
        );
        let expire = expire_first(1);
        assert!(
            s.apply(3, Time(derived_end.as_micros() + 1), &expire)
                .is_empty(),
            "an expiry proposed at the derived end is a no-op"
        );
        let late = Time(until.as_micros() + 1);
        assert_eq!(
            s.leases_ended(Time(late.as_micros() + 1))
                .collect::<Vec<_>>(),
            vec![(TaskId(1), Epoch(1))]
        );
        assert!(
            !s.apply(4, late, &expire).is_empty(),
            "ended at its own grace"
        );
        let rec = s.get(TaskId(1)).unwrap();
        assert_eq!(rec.state, TaskState::Pending);
        assert!(
            matches!(&rec.history.events.last().unwrap().what,
                TaskEventKind::AttemptFailed { error, .. } if error.contains("25000 ms grace")),
            "{:?}",
            rec.history.events.last()
        );
    }

    /// An ended lease counts against `max_attempts`: a handler that hangs
    /// on its last attempt fails the task with the `lease_expired` error
    /// instead of being handed out again.
    #[test]
    fn an_ended_lease_on_the_last_attempt_fails_the_task() {
        let mut s = Scheduler::new(10, 16);
        submit(
            &mut s,
            1,
            1,
            Task {
                max_attempts: 1,
                ..task()
            },
        );
        assert!(assign(&mut s, 2, 1, 1, A));
        let late = Time(task().lease_ends(at(2)).as_micros() + 1);
        let expire = expire_first(1);
        let notes = s.apply(3, late, &expire);
        let failed = TaskState::Failed {
            error: task().lease_expired_error(),
            attempts: 1,
        };
        assert_eq!(
            notes,
            vec![Note::Decided {
                task: TaskId(1),
                state: failed.clone()
            }]
        );
        assert_eq!(s.get(TaskId(1)).unwrap().state, failed);
        assert_eq!(s.leases_ended(Time(late.as_micros() + 1)).count(), 0);
    }

    /// A recorded heartbeat of the running assignment renews its lease;
    /// one of another epoch or runner does not.
    #[test]
    fn a_recorded_heartbeat_renews_the_lease() {
        let mut s = running_on_a();
        let beat = |epoch, node| Command::Heartbeat {
            id: TaskId(1),
            epoch: Epoch(epoch),
            node,
            progress: "half".into(),
        };
        s.apply(3, at(500), &beat(1, B));
        s.apply(4, at(600), &beat(2, A));
        assert_eq!(
            s.get(TaskId(1)).unwrap().lease_until,
            Some(task().lease_ends(at(2)))
        );
        s.apply(5, at(700), &beat(1, A));
        let renewed = task().lease_ends(at(700));
        assert_eq!(s.get(TaskId(1)).unwrap().lease_until, Some(renewed));
        assert_eq!(
            s.next_lease_end_after(at(700)),
            Some(Time(renewed.as_micros() + 1))
        );
    }

    /// A `Many` entry decides exactly what its commands decide one entry
    /// each: the same notes in the same order and the same state, a no-op
    /// among them still a no-op (here a limit's second start).
    #[test]
    fn a_many_entry_applies_like_its_commands_one_by_one() {
        let setup = || {
            let mut s = Scheduler::new(10, 16);
            for id in 1..=3 {
                submit(&mut s, id as u64, id, limited("k", 1, 0));
            }
            submit(&mut s, 4, 4, task());
            s
        };
        let assign = |id, node| Command::Assign {
            id: TaskId(id),
            epoch: Epoch(1),
            node,
        };
        let result = Command::Result {
            id: TaskId(1),
            epoch: Epoch(1),
            node: A,
            outcome: TaskOutcome::Success(b"r".to_vec()),
            jitter: 0,
        };
        let commands = vec![
            assign(1, A),
            assign(2, B),
            assign(4, B),
            result,
            assign(3, B),
        ];
        let mut one_by_one = setup();
        let mut notes = Vec::new();
        for c in &commands {
            notes.extend(one_by_one.apply(5, at(5), c));
        }
        let mut packed = setup();
        let many = packed.apply(5, at(5), &Command::Many { commands });
        assert_eq!(many, notes);
        assert_eq!(
            cohort_core::encode(&packed),
            cohort_core::encode(&one_by_one)
        );
        assert_eq!(
            packed.get(TaskId(2)).unwrap().state,
            TaskState::Pending,
            "over its limit"
        );
        assert!(
            packed.is_running(TaskId(3), Epoch(1)),
            "room once 1 finished"
        );
        assert!(packed.is_running(TaskId(4), Epoch(1)));
    }

    #[test]
    fn a_concurrency_limit_is_kept_by_the_log_alone_and_freed_by_every_way_out() {
        let mut s = Scheduler::new(10, 16);
        for id in 1..=5 {
            submit(&mut s, id as u64, id, limited("k", 2, 0));
        }
        submit(&mut s, 6, 6, task());
        // A leader asking for room gets at most the limit's room from the
        // key's queue, and the unlimited queue whole.
        let budget = |s: &Scheduler, now| {
            s.ready_for(now, |_, l| {
                l.map_or(usize::MAX, |l| s.limit_counts().room(l, now, 0) as usize)
            })
            .collect::<Vec<_>>()
        };
        assert_eq!(budget(&s, at(7)), vec![TaskId(1), TaskId(2), TaskId(6)]);
        assert!(assign(&mut s, 7, 1, 1, A));
        assert!(assign(&mut s, 8, 2, 1, B));
        assert_eq!(budget(&s, at(9)), vec![TaskId(6)]);
        // An assignment proposed from a stale view is a no-op when applied.
        assert!(!assign(&mut s, 9, 3, 1, A), "over the limit");
        assert_eq!(s.get(TaskId(3)).unwrap().state, TaskState::Pending);
        assert_eq!(s.limit_counts().running("k"), 2);
        // An outcome, a dead runner, a cancel and a release each free one.
        succeed(&mut s, 10, 1, 1, A);
        assert_eq!(s.limit_counts().running("k"), 1);
        assert!(assign(&mut s, 11, 3, 1, A));
        s.apply(12, at(12), &Command::WorkerDead { node: A });
        assert_eq!(s.limit_counts().running("k"), 1, "3 went back to pending");
        s.apply(13, at(13), &Command::Cancel { id: TaskId(2) });
        assert_eq!(s.limit_counts().running("k"), 0);
        assert!(assign(&mut s, 14, 4, 1, B));
        let release = Command::Release {
            id: TaskId(4),
            epoch: Epoch(1),
            node: B,
        };
        s.apply(15, at(15), &release);
        assert_eq!(s.limit_counts().running("k"), 0);
        // What the log decided is what every replica counts.
        let copy: Scheduler = cohort_core::decode(&cohort_core::encode(&s), usize::MAX).unwrap();
        assert_eq!(copy.limit_counts(), s.limit_counts());
    }

    #[test]
    fn a_rate_limit_counts_starts_by_the_leaders_stamp_and_names_when_it_frees() {
        let mut s = Scheduler::new(10, 16);
        for id in 1..=3 {
            submit(&mut s, id as u64, id, limited("api", 0, 2));
        }
        assert!(assign(&mut s, 4, 1, 1, A));
        assert!(assign(&mut s, 5, 2, 1, A));
        assert!(!assign(&mut s, 6, 3, 1, A), "two starts within 100 ms");
        // The first start (at 4 ms) leaves the 100 ms window at 104 ms.
        assert_eq!(s.next_rate_free_after(at(6)), Some(at(104)));
        succeed(&mut s, 7, 1, 1, A);
        assert!(!assign(&mut s, 8, 3, 1, A), "an outcome frees no rate");
        assert!(!assign(&mut s, 103, 3, 1, A));
        assert!(assign(&mut s, 104, 3, 1, A));
        assert_eq!(s.next_rate_free_after(at(104)), None, "nothing held back");
    }

    #[test]
    fn finished_records_beyond_the_retention_limit_are_dropped_oldest_first() {
        let mut s = Scheduler::new(1, 16);
        for i in 0..3u128 {
            s.apply(
                1 + 2 * i as u64,
                at(1 + 2 * i as u64),
                &Command::Submit {
                    id: TaskId(i),
                    task: task(),
                },
            );
            s.apply(
                2 + 2 * i as u64,
                at(2 + 2 * i as u64),
                &Command::Cancel { id: TaskId(i) },
            );
        }
        assert_eq!(s.len(), 1);
        assert!(s.get(TaskId(2)).is_some());
    }

    #[test]
    fn finished_records_are_purged_by_the_first_entry_after_their_states_retention() {
        let retention = Retention {
            succeeded_ms: 100,
            failed_ms: 300,
            cancelled_ms: 50,
        };
        let mut s = Scheduler::new(10, 16).with_retention(retention);
        let submit = |id| Command::Submit {
            id: TaskId(id),
            task: task(),
        };
        s.apply(1, at(1), &submit(1));
        s.apply(2, at(2), &submit(2));
        s.apply(3, at(3), &submit(3));
        s.apply(4, at(4), &Command::Cancel { id: TaskId(1) });
        for (index, node) in [(5, A), (6, B)] {
            let (id, epoch) = (TaskId(index as u128 - 3), Epoch(1));
            s.apply(index, at(index), &Command::Assign { id, epoch, node });
        }
        let result = |id, node, outcome| Command::Result {
            id: TaskId(id),
            epoch: Epoch(1),
            node,
            outcome,
            jitter: 0,
        };
        s.apply(7, at(7), &result(2, A, TaskOutcome::Success(vec![])));
        // Task 3 may run twice: its first failure is retried, not final.
        s.apply(8, at(8), &result(3, B, TaskOutcome::Failure("boom".into())));
        assert!(!s.get(TaskId(3)).unwrap().state.is_final());
        s.apply(
            9,
            at(30),
            &Command::Assign {
                id: TaskId(3),
                epoch: Epoch(2),
                node: A,
            },
        );
        s.apply(
            10,
            at(31),
            &Command::Result {
                id: TaskId(3),
                epoch: Epoch(2),
                node: A,
                outcome: TaskOutcome::Failure("boom".into()),
                jitter: 0,
            },
        );
        assert_eq!(s.get(TaskId(1)).unwrap().purge_at, Some(at(54)));
        assert_eq!(s.get(TaskId(2)).unwrap().purge_at, Some(at(107)));
        assert_eq!(s.get(TaskId(3)).unwrap().purge_at, Some(at(331)));
        assert_eq!(s.next_purge_at(), Some(at(54)));
        // Not a moment early.
        s.apply(11, at(53), &Command::Purge);
        assert!(s.get(TaskId(1)).is_some());
        // Any entry purges what is due at its time, then applies.
        s.apply(12, at(54), &submit(4));
        assert!(s.get(TaskId(1)).is_none());
        assert_eq!(s.next_purge_at(), Some(at(107)));
        s.apply(13, at(200), &Command::Purge);
        assert!(s.get(TaskId(2)).is_none());
        assert!(s.get(TaskId(3)).is_some(), "failures are kept longer");
        s.apply(14, at(331), &Command::Purge);
        assert!(s.get(TaskId(3)).is_none());
        assert_eq!(s.next_purge_at(), None);
        assert_eq!(s.len(), 1, "the pending task is never purged");
        // A purged id is free: submitting it again creates a new task.
        s.apply(15, at(332), &submit(1));
        assert_eq!(s.get(TaskId(1)).unwrap().state, TaskState::Pending);
    }

    #[test]
    fn a_count_purge_also_forgets_the_records_retention() {
        let mut s = Scheduler::new(1, 16);
        for i in 0..3u128 {
            let index = 1 + 2 * i as u64;
            let id = TaskId(i);
            s.apply(index, at(index), &Command::Submit { id, task: task() });
            s.apply(index + 1, at(index + 1), &Command::Cancel { id });
        }
        // Only the last is left, and only its purge is pending.
        assert_eq!(s.len(), 1);
        let due = s.get(TaskId(2)).unwrap().purge_at;
        assert_eq!(s.next_purge_at(), due);
    }

    fn kinds(s: &Scheduler, id: TaskId) -> Vec<(u64, TaskEventKind)> {
        let h = &s.get(id).expect("known").history;
        h.events
            .iter()
            .map(|e| (e.at.as_millis(), e.what.clone()))
            .collect()
    }

    #[test]
    fn the_history_tells_a_dead_worker_from_a_failed_handler_with_the_leaders_times() {
        let mut s = Scheduler::new(10, 16);
        let task = Task {
            max_attempts: 3,
            ..task()
        };
        s.apply(1, at(1), &Command::Submit { id: T, task });
        let assign = |epoch, node| Command::Assign {
            id: T,
            epoch: Epoch(epoch),
            node,
        };
        s.apply(2, at(2), &assign(1, A));
        s.apply(3, at(3), &Command::WorkerDead { node: A });
        s.apply(4, at(4), &assign(2, B));
        let fail = Command::Result {
            id: T,
            epoch: Epoch(2),
            node: B,
            outcome: TaskOutcome::Failure("boom".into()),
            jitter: 0,
        };
        s.apply(5, at(5), &fail);
        s.apply(6, at(6), &assign(3, B));
        let ok = Command::Result {
            id: T,
            epoch: Epoch(3),
            node: B,
            outcome: TaskOutcome::Success(vec![9]),
            jitter: 0,
        };
        s.apply(7, at(7), &ok);
        s.apply(8, at(8), &ok); // a duplicate result records nothing
        let (e1, e2, e3) = (Epoch(1), Epoch(2), Epoch(3));
        assert_eq!(
            kinds(&s, T),
            vec![
                (1, TaskEventKind::Submitted),
                (2, TaskEventKind::Assigned { node: A, epoch: e1 }),
                (
                    3,
                    TaskEventKind::RunnerLost {
                        node: A,
                        epoch: e1,
                        reason: SupersedeReason::RunnerDeclaredDead
                    }
                ),
                (4, TaskEventKind::Assigned { node: B, epoch: e2 }),
                (
                    5,
                    TaskEventKind::AttemptFailed {
                        node: B,
                        epoch: e2,
                        error: "boom".into(),
                        retry_at: at(5),
                    }
                ),
                (6, TaskEventKind::Assigned { node: B, epoch: e3 }),
                (7, TaskEventKind::Succeeded { node: B, epoch: e3 }),
            ]
        );
        assert_eq!(s.get(T).unwrap().history.dropped, 0);
    }

    #[test]
    fn a_task_waits_for_its_not_before_and_its_backoff_and_a_non_retryable_error_fails_it() {
        let mut s = Scheduler::new(10, 16);
        let task = Task {
            max_attempts: 5,
            not_before: at(10),
            retry: cohort_core::RetryPolicy {
                non_retryable: vec!["fatal".into()],
                ..cohort_core::RetryPolicy::backoff(100, 100)
            },
            ..task()
        };
        s.apply(1, at(1), &Command::Submit { id: T, task });
        assert_eq!(s.ready(at(9)).count(), 0, "waits for not_before");
        assert!(!s.any_ready(at(9)));
        assert_eq!(s.next_ready_after(at(1)), Some(at(10)));
        assert_eq!(s.ready(at(10)).collect::<Vec<_>>(), vec![T]);
        assert!(s.any_ready(at(10)));
        let assign = |epoch, node| Command::Assign {
            id: T,
            epoch: Epoch(epoch),
            node,
        };
        s.apply(2, at(9), &assign(1, A));
        assert_eq!(
            s.get(T).unwrap().state,
            TaskState::Pending,
            "proposed too early: a no-op"
        );
        s.apply(3, at(10), &assign(1, A));
        assert!(s.is_running(T, Epoch(1)));
        let fail = |epoch, error: &str, jitter| Command::Result {
            id: T,
            epoch: Epoch(epoch),
            node: A,
            outcome: TaskOutcome::Failure(error.into()),
            jitter,
        };
        // Half the jitter range: half the 100 ms cap.
        s.apply(4, at(20), &fail(1, "io: flaky", u32::MAX / 2 + 1));
        let retry_at = at(70);
        assert_eq!(s.get(T).unwrap().ready_at, retry_at);
        assert_eq!(s.next_ready_after(at(20)), Some(retry_at));
        assert_eq!(s.ready(at(69)).count(), 0, "backing off");
        assert!(!s.any_ready(at(69)));
        s.apply(5, at(69), &assign(2, A));
        assert_eq!(s.get(T).unwrap().state, TaskState::Pending);
        s.apply(6, at(70), &assign(2, A));
        assert!(s.is_running(T, Epoch(2)));
        assert_eq!(s.next_ready_after(at(70)), None);
        assert!(!s.any_ready(at(70)), "running, so not pending");
        s.apply(7, at(80), &fail(2, "fatal: bad input", 0));
        assert_eq!(
            s.get(T).unwrap().state,
            TaskState::Failed {
                error: "fatal: bad input".into(),
                attempts: 2
            },
            "not retried, with three attempts left"
        );
        assert_eq!(s.pending().count(), 0);
    }

    #[test]
    fn a_task_not_started_by_its_deadline_fails_and_a_late_assignment_is_a_no_op() {
        let mut s = Scheduler::new(10, 16);
        let task = Task {
            schedule_to_start_ms: 100,
            not_before: at(50),
            ..task()
        };
        s.apply(1, at(1), &Command::Submit { id: T, task });
        // Counted from when it could start: not_before.
        assert_eq!(s.get(T).unwrap().start_by, Some(at(150)));
        assert_eq!(s.next_overdue_after(at(1)), Some(Time(at(150).0 + 1)));
        assert_eq!(s.overdue(at(150)).count(), 0, "at the deadline: not yet");
        s.apply(2, at(150), &Command::Expire { id: T });
        assert_eq!(
            s.get(T).unwrap().state,
            TaskState::Pending,
            "early: a no-op"
        );
        let assign = Command::Assign {
            id: T,
            epoch: Epoch(1),
            node: A,
        };
        s.apply(3, at(151), &assign);
        assert_eq!(s.get(T).unwrap().state, TaskState::Pending, "late: a no-op");
        assert_eq!(s.overdue(at(151)).collect::<Vec<_>>(), vec![T]);
        s.apply(4, at(151), &Command::Expire { id: T });
        let rec = s.get(T).unwrap();
        assert_eq!(
            rec.state,
            TaskState::Failed {
                error: "schedule_to_start: not started within 100 ms".into(),
                attempts: 0
            }
        );
        assert!(matches!(
            rec.history.events.last().unwrap().what,
            TaskEventKind::NotStarted { .. }
        ));
        assert_eq!(s.overdue(at(1_000)).count(), 0);
        assert_eq!(s.pending().count(), 0);
    }

    #[test]
    fn a_lost_runner_restarts_the_schedule_to_start_clock_and_an_assignment_stops_it() {
        let mut s = Scheduler::new(10, 16);
        let task = Task {
            schedule_to_start_ms: 100,
            ..task()
        };
        s.apply(1, at(1), &Command::Submit { id: T, task });
        let assign = |epoch| Command::Assign {
            id: T,
            epoch: Epoch(epoch),
            node: A,
        };
        s.apply(2, at(101), &assign(1));
        assert!(s.is_running(T, Epoch(1)), "at the deadline is in time");
        assert_eq!(
            s.get(T).unwrap().start_by,
            Some(at(101)),
            "kept, not indexed"
        );
        assert_eq!(s.overdue(at(10_000)).count(), 0, "running: no deadline");
        s.apply(3, at(500), &Command::WorkerDead { node: A });
        assert_eq!(s.get(T).unwrap().start_by, Some(at(600)));
        s.apply(4, at(550), &Command::WorkerAlive { node: A });
        s.apply(5, at(550), &assign(2));
        assert!(s.is_running(T, Epoch(2)));
    }

    #[test]
    fn a_waiting_task_can_be_cancelled() {
        let mut s = Scheduler::new(10, 16);
        let task = Task {
            not_before: at(100),
            ..task()
        };
        s.apply(1, at(1), &Command::Submit { id: T, task });
        assert_eq!(s.pending().collect::<Vec<_>>(), vec![T]);
        s.apply(2, at(2), &Command::Cancel { id: T });
        assert_eq!(s.get(T).unwrap().state, TaskState::Cancelled);
        assert_eq!(s.pending().count(), 0);
        assert_eq!(s.next_ready_after(at(2)), None);
    }

    #[test]
    fn a_history_past_its_limit_keeps_the_submission_and_the_latest_events() {
        let mut s = Scheduler::new(10, 3);
        s.apply(
            1,
            at(1),
            &Command::Submit {
                id: T,
                task: task(),
            },
        );
        for i in 0..4u64 {
            let node = if i % 2 == 0 { A } else { B };
            let epoch = Epoch(i + 1);
            s.apply(
                2 + 2 * i,
                at(2 + 2 * i),
                &Command::Assign { id: T, epoch, node },
            );
            s.apply(3 + 2 * i, at(3 + 2 * i), &Command::WorkerDead { node });
            s.apply(3 + 2 * i, at(3 + 2 * i), &Command::WorkerAlive { node });
        }
        let h = &s.get(T).unwrap().history;
        let times: Vec<u64> = h.events.iter().map(|e| e.at.as_millis()).collect();
        assert_eq!(times, vec![1, 8, 9], "the submission, then the last two");
        assert_eq!(h.dropped, 6);
    }
}
