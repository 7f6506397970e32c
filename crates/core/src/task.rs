//! Tasks, their lifecycle and the outcome of one execution.

use crate::action::SupersedeReason;
use crate::ids::{Epoch, NodeId};
use crate::retry::RetryPolicy;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a client submits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    /// The handler that runs it (`sleep`, `hash`, `echo`, `exec`, ...).
    pub kind: String,
    /// Opaque input for the handler.
    pub payload: Vec<u8>,
    /// How long one execution may run before the runner stops it.
    pub timeout_ms: u64,
    /// How many failed executions before the task is failed for good.
    pub max_attempts: u32,
    /// Not to start before this instant (`Time::ZERO`: at once). The
    /// runtime's instants count from the Unix epoch; the simulator's from
    /// the run's start. Compared with the clock of the node that assigns
    /// or claims the task.
    pub not_before: Time,
    /// How failed executions are retried (backoff, non-retryable errors).
    pub retry: RetryPolicy,
    /// The schedule-to-start timeout: a task still pending this long after
    /// it could first start (its submission or `not_before`, a retry's
    /// `retry_at`, a lost runner) fails instead of waiting on (0: waits for
    /// ever). A task stuck behind a partition or full workers is thus
    /// told apart from one that runs late.
    pub schedule_to_start_ms: u64,
    /// Among tasks that may start, a higher priority starts first (ties:
    /// first come, first served in leader and static mode; by id among a
    /// leaderless replica's own). Not preemptive: a running task is not
    /// stopped for a higher one.
    pub priority: i8,
    /// The heartbeat timeout: a handler of this task that goes this long
    /// (from its start or its latest heartbeat) without a heartbeat is
    /// stopped by its runner and the attempt fails with class
    /// `heartbeat_timeout`, to be retried under the next epoch like any
    /// failed attempt (0: the handler need not heartbeat). At most
    /// [`HEARTBEAT_TIMEOUT_MS_MAX`]. (Last in the struct, like every field
    /// added since the first data-file format.)
    pub heartbeat_timeout_ms: u64,
    /// Routing: the worker labels a node must carry, every one of them, to
    /// run this task (empty: any node). A queue is a label its workers
    /// carry. At most [`TASK_LABELS_MAX`], each a [`valid_label`].
    pub labels: Vec<String>,
    /// A concurrency and rate limit shared with every task naming the
    /// same key, enforced when the task starts: by the coordinator (leader
    /// and static mode) or by the key's permit record (leaderless mode)
    /// (`None`: no limit).
    pub limit: Option<TaskLimit>,
    /// How long past its timeout an assignment's lease lasts before the
    /// cluster ends it (0: the default, see [`Task::effective_lease_grace_ms`];
    /// otherwise [`LEASE_GRACE_MIN_MS`] to [`LEASE_GRACE_SETTING_MS_MAX`]).
    /// A handler its runner cannot stop holds its slot, and a limited task
    /// its key's place, this long past its timeout; a longer grace gives a
    /// runner slow to report (a large result, a slow disk) more time before
    /// its attempt is counted as failed.
    pub lease_grace_ms: u64,
    /// A manual retry's link: the failed or cancelled task this one was
    /// created to run again (`None`: a task submitted as itself). Set by the
    /// retry endpoint, not by a submit body, and decided with the task like
    /// the rest of its body.
    pub retry_of: Option<crate::ids::TaskId>,
}

/// A cluster-wide limit on the tasks that name one key: a per-kind limit
/// names the kind (what a kind's policy sets), a per-key limit any key the
/// client picks (a customer, a tenant, an API to call).
///
/// Each task carries its limit and is started only when that limit allows
/// it, counted over every task of the key: tasks sharing a key should
/// carry the same numbers. The coordinator decides starts in its
/// replicated log (leader mode) or its own state (static mode), and the
/// leaderless mode in a permit record per key decided by Paxos, so a
/// limit holds across failovers; the counts are of the cluster's record
/// (an assignment is running from its decision until its outcome or its
/// supersession), not of handlers a partitioned runner may still be
/// running.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskLimit {
    /// The key the limit counts under: 1 to [`LIMIT_KEY_BYTES_MAX`] bytes,
    /// a [`valid_label`]'s characters.
    pub key: String,
    /// At most this many tasks of `key` run at once (0: no concurrency
    /// limit). At most [`CONCURRENCY_MAX`].
    pub concurrency_max: u32,
    /// At most this many tasks of `key` start within any `rate_window_ms`
    /// (0: no rate limit). At most [`RATE_MAX`].
    pub rate_max: u32,
    /// The rate limit's sliding window, 1 to [`RATE_WINDOW_MS_MAX`] when
    /// `rate_max` is set (0 otherwise). Starts are stamped with the
    /// deciding coordinator's clock.
    pub rate_window_ms: u64,
}

/// The longest limit key, in bytes.
pub const LIMIT_KEY_BYTES_MAX: usize = 128;

/// The highest concurrency limit a task may carry.
pub const CONCURRENCY_MAX: u32 = 1_000_000;

/// The highest rate limit a task may carry: the coordinator keeps the
/// latest starts of each rate-limited key, at most this many.
pub const RATE_MAX: u32 = 10_000;

/// The longest rate window: 1 day. The coordinator forgets a key's starts
/// once they are this old.
pub const RATE_WINDOW_MS_MAX: u64 = 24 * 60 * 60 * 1000;

impl TaskLimit {
    /// Checks the limit's key and numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.key.is_empty() || self.key.len() > LIMIT_KEY_BYTES_MAX {
            return Err(format!(
                "a limit key must be 1..={LIMIT_KEY_BYTES_MAX} bytes, got {}",
                self.key.len()
            ));
        }
        if let Some(c) = self.key.chars().find(|c| !label_char(*c)) {
            return Err(format!(
                "limit key {:?} holds {c:?}: only ASCII letters, digits and _ - . : = / are allowed",
                self.key
            ));
        }
        if self.concurrency_max == 0 && self.rate_max == 0 {
            return Err("a limit needs concurrency_max or rate_max above 0".into());
        }
        if self.concurrency_max > CONCURRENCY_MAX {
            return Err(format!(
                "concurrency_max {} is above {CONCURRENCY_MAX}",
                self.concurrency_max
            ));
        }
        if self.rate_max > RATE_MAX {
            return Err(format!("rate_max {} is above {RATE_MAX}", self.rate_max));
        }
        match (self.rate_max, self.rate_window_ms) {
            (0, 0) => Ok(()),
            (0, _) => Err("rate_window_ms is set without rate_max".into()),
            (_, w) if w == 0 || w > RATE_WINDOW_MS_MAX => Err(format!(
                "rate_window_ms must be 1..={RATE_WINDOW_MS_MAX} with rate_max, got {w}"
            )),
            _ => Ok(()),
        }
    }
}

/// The longest a coordinator waits past a running task's start-to-close
/// timeout (`timeout_ms`) for its runner's outcome before it ends the
/// lease itself (note reason `LeaseExpired`); a task's own grace is its
/// timeout within [`LEASE_GRACE_MIN_MS`]..=this unless it sets its own
/// ([`Task::effective_lease_grace_ms`]).
/// The ended lease is a failed attempt, of error class `lease_expired`
/// ([`Task::lease_expired_error`]): it counts against `max_attempts` and is
/// retried, under the next epoch, after the retry policy's backoff, so a
/// handler that hangs on every attempt fails its task instead of holding a
/// runner for ever. The runner stops its handler at the timeout and
/// reports a failure, and a runner that is lost is declared dead within
/// `alpha * worker_heartbeat_ms`: the lease ends a task only when neither
/// happened, e.g. a live runner whose handler could not be stopped.
/// Constants and the task's own fields: every node computes the same lease
/// from the same record.
pub const LEASE_GRACE_MS: u64 = 10_000;

/// The longest grace a task may set for itself ([`Task::lease_grace_ms`]):
/// an hour. A runner lost to the cluster is dealt with by failure
/// detection, not by the grace, so a longer one only delays the end of a
/// stuck handler's lease.
pub const LEASE_GRACE_SETTING_MS_MAX: u64 = 60 * 60 * 1000;

/// The shortest grace past the timeout (see [`LEASE_GRACE_MS`]): time for
/// the runner's own timeout report to be decided, and for the clocks of
/// the node that stamped the assignment and the one that ends the lease
/// to differ.
pub const LEASE_GRACE_MIN_MS: u64 = 1_000;

/// The error class of an attempt whose lease the cluster ended
/// ([`Task::lease_expired_error`]). A task may list it as non-retryable.
pub const LEASE_EXPIRED_CLASS: &str = "lease_expired";

impl Task {
    /// The execution timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// How long past its timeout a lease of this task lasts: its own
    /// [`Task::lease_grace_ms`] when set, else the timeout again, at least
    /// [`LEASE_GRACE_MIN_MS`] and at most [`LEASE_GRACE_MS`]. A handler
    /// that cannot be stopped holds its slot, and a limited task its key's
    /// place, that long past its timeout: a flat 10 s held a 500 ms task's
    /// concurrency-1 key for 21 times its run (`cohort sim` leaderless
    /// limits seeds 1571 and 1728).
    pub fn effective_lease_grace_ms(&self) -> u64 {
        if self.lease_grace_ms > 0 {
            return self.lease_grace_ms;
        }
        self.timeout_ms.clamp(LEASE_GRACE_MIN_MS, LEASE_GRACE_MS)
    }

    /// When the lease of an assignment of this task decided (or last
    /// renewed) at `assigned_at` ends, unless its runner reported an
    /// outcome.
    pub fn lease_ends(&self, assigned_at: Time) -> Time {
        assigned_at + self.timeout() + Duration::from_millis(self.effective_lease_grace_ms())
    }

    /// When a task that became pending at `since` fails unless started
    /// (see [`Task::schedule_to_start_ms`]): `None` without a timeout.
    pub fn start_by(&self, since: Time, ready_at: Time) -> Option<Time> {
        (self.schedule_to_start_ms > 0)
            .then(|| since.max(ready_at) + Duration::from_millis(self.schedule_to_start_ms))
    }

    /// The priority as a queue rank: 0 for the highest priority (127), 255
    /// for the lowest (-128), so that ascending order runs higher first.
    pub fn rank(&self) -> u8 {
        u8::try_from(127 - i16::from(self.priority)).expect("127 - i8 is within 0..=255")
    }

    /// The error of an attempt whose handler missed its heartbeat timeout.
    pub fn heartbeat_timeout_error(&self) -> String {
        format!(
            "heartbeat_timeout: no heartbeat within {} ms",
            self.heartbeat_timeout_ms
        )
    }

    /// Whether a node carrying `node_labels` may run this task: it carries
    /// every label the task names.
    pub fn runs_on(&self, node_labels: &[String]) -> bool {
        carries(node_labels, &self.labels)
    }

    /// The error of an attempt whose lease the cluster ended (see
    /// [`LEASE_GRACE_MS`]).
    pub fn lease_expired_error(&self) -> String {
        format!(
            "{LEASE_EXPIRED_CLASS}: no outcome within {} ms ({} ms timeout and {} ms grace) of the assignment or its latest recorded heartbeat",
            self.timeout_ms.saturating_add(self.effective_lease_grace_ms()),
            self.timeout_ms,
            self.effective_lease_grace_ms()
        )
    }

    /// The error of a task not started by its schedule-to-start deadline.
    pub fn not_started_error(&self) -> String {
        format!(
            "schedule_to_start: not started within {} ms",
            self.schedule_to_start_ms
        )
    }
}

/// The result of one execution of a task handler.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// The handler returned a result.
    Success(Vec<u8>),
    /// The handler failed (returned an error, panicked or timed out).
    Failure(String),
}

/// Where a task is in its life. `Succeeded`, `Failed` and `Cancelled` are
/// final: once a task is final its state never changes again (G2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted, waiting for a runner.
    Pending,
    /// Assigned to `node` under fencing token `epoch`.
    Running {
        /// The runner.
        node: NodeId,
        /// The assignment's fencing token.
        epoch: Epoch,
    },
    /// Finished with a result, from the execution `(node, epoch)`.
    Succeeded {
        /// What the handler returned.
        result: Vec<u8>,
        /// The runner whose result was accepted.
        node: NodeId,
        /// The epoch of the accepted execution.
        epoch: Epoch,
    },
    /// Every attempt failed.
    Failed {
        /// The last attempt's error.
        error: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Cancelled by a client before it finished.
    Cancelled,
}

impl TaskState {
    /// Whether the state can never change again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskState::Succeeded { .. } | TaskState::Failed { .. } | TaskState::Cancelled
        )
    }

    /// Every [`TaskState::name`].
    pub const NAMES: [&'static str; 5] = ["pending", "running", "succeeded", "failed", "cancelled"];

    /// A short lowercase name (`pending`, `running`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running { .. } => "running",
            TaskState::Succeeded { .. } => "succeeded",
            TaskState::Failed { .. } => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// One step in a task's life, as the cluster decided it: part of the
/// replicated record, so every node that answers tells the same story.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskEvent {
    /// When the deciding node proposed the step, on its clock (the
    /// runtime's clock counts from the Unix epoch; the simulator's from
    /// the run's start). Clocks of different nodes may disagree a little.
    pub at: Time,
    /// What happened.
    pub what: TaskEventKind,
}

/// What happened to a task. The kinds tell a worker that died (or lost
/// its lease) apart from a handler that returned an error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskEventKind {
    /// The task was made durable.
    Submitted,
    /// `node` was given the task under `epoch` (assigned by the leader, or
    /// claimed by the node itself in leaderless mode).
    Assigned {
        /// The runner.
        node: NodeId,
        /// The assignment's fencing token.
        epoch: Epoch,
    },
    /// The handler of `(node, epoch)` returned an error and the task has
    /// attempts left: it is pending again, not to start before `retry_at`
    /// (its backoff, see [`crate::retry`]).
    AttemptFailed {
        /// The runner.
        node: NodeId,
        /// The attempt's epoch.
        epoch: Epoch,
        /// The handler's error (at most [`TASK_EVENT_ERROR_BYTES_MAX`] bytes).
        error: String,
        /// When the task may run again, on the deciding node's clock.
        retry_at: Time,
    },
    /// The assignment `(node, epoch)` ended without a result because the
    /// runner is gone: a later result from it is rejected (G3), and the
    /// task is pending again. Does not count as an attempt.
    RunnerLost {
        /// The runner.
        node: NodeId,
        /// The assignment that ended.
        epoch: Epoch,
        /// Why it ended.
        reason: SupersedeReason,
    },
    /// The handler of `(node, epoch)` returned a result: final.
    Succeeded {
        /// The runner.
        node: NodeId,
        /// The accepted execution's epoch.
        epoch: Epoch,
    },
    /// The handler of `(node, epoch)` returned an error and no attempt is
    /// left: final.
    Failed {
        /// The runner.
        node: NodeId,
        /// The last attempt's epoch.
        epoch: Epoch,
        /// The handler's error (at most [`TASK_EVENT_ERROR_BYTES_MAX`] bytes).
        error: String,
    },
    /// A client cancelled the task: final.
    Cancelled,
    /// The task was still pending at its schedule-to-start deadline: failed,
    /// final, with `error`.
    NotStarted {
        /// The task's error (see [`Task::not_started_error`]).
        error: String,
    },
    /// The handler of `(node, epoch)` reported it is alive, with
    /// `progress` (at most [`PROGRESS_BYTES_MAX`] bytes). Recorded at most
    /// every so often (the runner's `heartbeat_record_interval_ms`), and
    /// only while `(node, epoch)` is the task's assignment; a heartbeat
    /// recorded right after another of the same assignment replaces it, so
    /// a long task's history keeps its latest progress and not a flood.
    Heartbeat {
        /// The runner.
        node: NodeId,
        /// The assignment's epoch.
        epoch: Epoch,
        /// What the handler said about its progress.
        progress: String,
    },
}

impl TaskEventKind {
    /// A short snake-case name (`submitted`, `assigned`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TaskEventKind::Submitted => "submitted",
            TaskEventKind::Assigned { .. } => "assigned",
            TaskEventKind::AttemptFailed { .. } => "attempt_failed",
            TaskEventKind::RunnerLost { .. } => "runner_lost",
            TaskEventKind::Succeeded { .. } => "succeeded",
            TaskEventKind::Failed { .. } => "failed",
            TaskEventKind::Cancelled => "cancelled",
            TaskEventKind::NotStarted { .. } => "not_started",
            TaskEventKind::Heartbeat { .. } => "heartbeat",
        }
    }
}

/// Longest schedule-to-start timeout a task may ask for: 30 days.
pub const SCHEDULE_TO_START_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;

/// Longest heartbeat timeout a task may ask for: 1 day.
pub const HEARTBEAT_TIMEOUT_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// The most worker labels a task may require, and a node may carry.
pub const TASK_LABELS_MAX: usize = 16;

/// The longest worker label, in bytes.
pub const LABEL_BYTES_MAX: usize = 64;

/// The most bytes all of one task's (or one node's) worker labels take
/// together: a leaderless node gossips its labels with its load, and a
/// load report must stay a small part of a SWIM packet.
pub const LABELS_BYTES_MAX: usize = 256;

/// Checks one worker label: 1 to [`LABEL_BYTES_MAX`] bytes of ASCII
/// letters, digits and `_ - . : = /`, so that it reads the same in a URL,
/// a config file and a log line.
pub fn valid_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > LABEL_BYTES_MAX {
        return Err(format!(
            "a label must be 1..={LABEL_BYTES_MAX} bytes, got {}",
            label.len()
        ));
    }
    if let Some(c) = label.chars().find(|c| !label_char(*c)) {
        return Err(format!(
            "label {label:?} holds {c:?}: only ASCII letters, digits and _ - . : = / are allowed"
        ));
    }
    Ok(())
}

/// Whether `c` may appear in a label or a limit key.
fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.:=/".contains(c)
}

/// Whether a node carrying `node_labels` carries every one of `wanted`.
pub fn carries(node_labels: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|l| node_labels.contains(l))
}

/// Checks a set of worker labels (a task's or a node's): at most
/// [`TASK_LABELS_MAX`], each valid, none twice, [`LABELS_BYTES_MAX`] in
/// all.
pub fn valid_labels(labels: &[String]) -> Result<(), String> {
    if labels.len() > TASK_LABELS_MAX {
        return Err(format!(
            "at most {TASK_LABELS_MAX} labels, got {}",
            labels.len()
        ));
    }
    let bytes: usize = labels.iter().map(String::len).sum();
    if bytes > LABELS_BYTES_MAX {
        return Err(format!(
            "labels take {bytes} bytes in all, more than {LABELS_BYTES_MAX}"
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        valid_label(l)?;
        if labels[..i].contains(l) {
            return Err(format!("label {l:?} appears twice"));
        }
    }
    Ok(())
}

/// Longest progress a heartbeat records (longer is cut on a character
/// boundary): a record keeps the latest one in its history.
pub const PROGRESS_BYTES_MAX: usize = 1024;

/// `progress` cut to at most [`PROGRESS_BYTES_MAX`] bytes, on a character
/// boundary.
pub fn event_progress(progress: &str) -> String {
    cut(progress, PROGRESS_BYTES_MAX)
}

fn cut(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_string();
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Longest handler error an event keeps (the final state keeps it whole):
/// a record holds up to `Limits::task_events_max` events, so each must be
/// small.
pub const TASK_EVENT_ERROR_BYTES_MAX: usize = 256;

/// `error` cut to at most [`TASK_EVENT_ERROR_BYTES_MAX`] bytes, on a
/// character boundary.
pub fn event_error(error: &str) -> String {
    cut(error, TASK_EVENT_ERROR_BYTES_MAX)
}

/// The event of `node`'s attempt under `epoch` failing with `error`, as
/// the retry policy decided it ([`crate::after_failure`]): retried, or
/// failed for good. Every mode records a failed attempt this way.
pub fn failure_event(
    node: NodeId,
    epoch: Epoch,
    error: &str,
    after: crate::AfterFailure,
) -> TaskEventKind {
    let error = event_error(error);
    match after {
        crate::AfterFailure::RetryAt(retry_at) => TaskEventKind::AttemptFailed {
            node,
            epoch,
            error,
            retry_at,
        },
        crate::AfterFailure::Fail => TaskEventKind::Failed { node, epoch, error },
    }
}

/// A task's bounded event history: the first event (its submission) and
/// the latest ones, at most `events_max` in all; the ones dropped between
/// them are counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskEvents {
    /// The events kept, oldest first.
    pub events: Vec<TaskEvent>,
    /// How many events were dropped (the oldest after the first).
    pub dropped: u32,
}

impl TaskEvents {
    /// Appends `event`, dropping the oldest event after the first when
    /// more than `events_max` (at least 2) would be kept. A heartbeat
    /// right after a heartbeat of the same assignment replaces it.
    pub fn push(&mut self, event: TaskEvent, events_max: usize) {
        assert!(events_max >= 2, "keep the first event and the latest");
        if let (
            TaskEventKind::Heartbeat { node, epoch, .. },
            Some(TaskEvent {
                what:
                    TaskEventKind::Heartbeat {
                        node: n, epoch: e, ..
                    },
                ..
            }),
        ) = (&event.what, self.events.last())
        {
            if node == n && epoch == e && self.events.len() > 1 {
                *self.events.last_mut().expect("matched above") = event;
                return;
            }
        }
        self.events.push(event);
        while self.events.len() > events_max {
            self.events.remove(1);
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

impl TaskEvents {
    /// Checks that the history agrees with the task's `state`, as every
    /// mode's record must: assignments take growing epochs; the last event
    /// is the outcome of a final task (the same runner and epoch), the
    /// assignment of a running one, and no assignment for a pending one.
    /// A history may start after the submission (leaderless values keep
    /// the submission beside them), so an empty one agrees with `Pending`.
    pub fn check_against(&self, state: &TaskState) -> Result<(), String> {
        let mut last_epoch = Epoch::ZERO;
        // The assignment a heartbeat may come from: the latest one, until
        // an event ends it. Unknown when dropped events hid it.
        let mut live: Option<(NodeId, Epoch)> = None;
        let mut known = true;
        for (i, e) in self.events.iter().enumerate() {
            if i == 1 && self.dropped > 0 {
                known = false;
            }
            match &e.what {
                TaskEventKind::Assigned { node, epoch } => {
                    if *epoch <= last_epoch {
                        return Err(format!(
                            "assignment epoch {epoch:?} after {last_epoch:?}: {self:?}"
                        ));
                    }
                    last_epoch = *epoch;
                    live = Some((*node, *epoch));
                    known = true;
                }
                TaskEventKind::Heartbeat { node, epoch, .. } => {
                    if known && live != Some((*node, *epoch)) {
                        return Err(format!(
                            "heartbeat of ({node}, {epoch:?}) recorded while {live:?} held the task: {self:?}"
                        ));
                    }
                }
                _ => {
                    live = None;
                    known = true;
                }
            }
        }
        let last = self.events.last().map(|e| &e.what);
        let agrees = match (state, last) {
            (TaskState::Pending, None) => true,
            (TaskState::Pending, Some(what)) => matches!(
                what,
                TaskEventKind::Submitted
                    | TaskEventKind::AttemptFailed { .. }
                    | TaskEventKind::RunnerLost { .. }
            ),
            (
                TaskState::Running { node, epoch },
                Some(
                    TaskEventKind::Assigned { node: n, epoch: e }
                    | TaskEventKind::Heartbeat {
                        node: n, epoch: e, ..
                    },
                ),
            ) => node == n && epoch == e,
            (
                TaskState::Succeeded { node, epoch, .. },
                Some(TaskEventKind::Succeeded { node: n, epoch: e }),
            ) => node == n && epoch == e,
            (
                TaskState::Failed { error, .. },
                Some(
                    TaskEventKind::Failed { error: kept, .. }
                    | TaskEventKind::NotStarted { error: kept },
                ),
            ) => event_error(error) == *kept,
            (TaskState::Cancelled, Some(TaskEventKind::Cancelled)) => true,
            _ => false,
        };
        if agrees {
            Ok(())
        } else {
            Err(format!("history {self:?} disagrees with state {state:?}"))
        }
    }
}

impl TaskEvents {
    /// Checks that the history kept the task's schedule and retry policy,
    /// as every mode's record must: no assignment before `not_before`, or
    /// before the `retry_at` of the failed attempt just before it; no
    /// failed attempt retried when its error is not retryable; with a
    /// schedule-to-start timeout, no assignment after the deadline counted
    /// from the event that made the task pending, and no `not_started`
    /// before it (pairs split by dropped events are not checked).
    pub fn check_policy(&self, task: &Task) -> Result<(), String> {
        let mut retry_at = None;
        // When the task last became pending, if the event just before is kept.
        let mut pending_from = None;
        for (i, e) in self.events.iter().enumerate() {
            if i == 1 && self.dropped > 0 {
                pending_from = None;
            }
            let deadline = pending_from.and_then(|from| task.start_by(from, from));
            match &e.what {
                TaskEventKind::Assigned { .. } => {
                    if e.at < task.not_before {
                        return Err(format!(
                            "assigned at {} before not_before {}: {self:?}",
                            e.at, task.not_before
                        ));
                    }
                    if let Some(r) = retry_at.filter(|r| e.at < *r) {
                        return Err(format!(
                            "assigned at {} before its retry_at {r}: {self:?}",
                            e.at
                        ));
                    }
                    if let Some(d) = deadline.filter(|d| e.at > *d) {
                        return Err(format!(
                            "assigned at {} after its schedule-to-start deadline {d}: {self:?}",
                            e.at
                        ));
                    }
                    retry_at = None;
                    pending_from = None;
                }
                TaskEventKind::NotStarted { .. } => {
                    if task.schedule_to_start_ms == 0 {
                        return Err(format!("not_started without a timeout: {self:?}"));
                    }
                    if let Some(d) = deadline.filter(|d| e.at <= *d) {
                        return Err(format!(
                            "not_started at {} before its deadline {d}: {self:?}",
                            e.at
                        ));
                    }
                    retry_at = None;
                    pending_from = None;
                }
                TaskEventKind::AttemptFailed {
                    error, retry_at: r, ..
                } => {
                    if !task.retry.retries(error) {
                        return Err(format!("non-retryable error retried: {self:?}"));
                    }
                    retry_at = Some(*r);
                    pending_from = Some(e.at.max(*r));
                }
                TaskEventKind::Submitted => {
                    retry_at = None;
                    pending_from = Some(e.at.max(task.not_before));
                }
                TaskEventKind::RunnerLost { .. } => {
                    retry_at = None;
                    pending_from = Some(e.at);
                }
                TaskEventKind::Succeeded { .. }
                | TaskEventKind::Failed { .. }
                | TaskEventKind::Cancelled => {
                    retry_at = None;
                    pending_from = None;
                }
                TaskEventKind::Heartbeat { .. } => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ms: u64) -> TaskEvent {
        TaskEvent {
            at: Time::from_millis(ms),
            what: TaskEventKind::Cancelled,
        }
    }

    /// A lease lasts its timeout again past the timeout, within 1 s..=10 s:
    /// a stuck 500 ms attempt holds its slot 1.5 s, not 10.5 s.
    #[test]
    fn a_leases_grace_is_its_timeout_within_one_and_ten_seconds() {
        let with = |timeout_ms| Task {
            timeout_ms,
            ..plain()
        };
        assert_eq!(with(500).effective_lease_grace_ms(), LEASE_GRACE_MIN_MS);
        assert_eq!(with(3_000).effective_lease_grace_ms(), 3_000);
        assert_eq!(with(3_600_000).effective_lease_grace_ms(), LEASE_GRACE_MS);
        assert_eq!(
            with(500).lease_ends(Time::from_millis(100)),
            Time::from_millis(1_600)
        );
        assert_eq!(
            with(u64::MAX).lease_ends(Time::from_millis(1)),
            Time(u64::MAX),
            "saturates"
        );
        assert!(with(500)
            .lease_expired_error()
            .contains("1500 ms (500 ms timeout and 1000 ms grace)"));
    }

    /// A task's own grace replaces the derived one, whatever its timeout;
    /// 0 keeps the derived one.
    #[test]
    fn a_tasks_own_lease_grace_replaces_the_derived_one() {
        let with = |timeout_ms, lease_grace_ms| Task {
            timeout_ms,
            lease_grace_ms,
            ..plain()
        };
        assert_eq!(with(500, 0).effective_lease_grace_ms(), LEASE_GRACE_MIN_MS);
        assert_eq!(with(500, 30_000).effective_lease_grace_ms(), 30_000);
        assert_eq!(with(3_600_000, 2_000).effective_lease_grace_ms(), 2_000);
        assert_eq!(
            with(500, 30_000).lease_ends(Time::from_millis(100)),
            Time::from_millis(30_600)
        );
        assert!(with(500, 30_000)
            .lease_expired_error()
            .contains("30500 ms (500 ms timeout and 30000 ms grace)"));
    }

    #[test]
    fn a_full_history_keeps_the_first_event_and_the_latest_and_counts_the_rest() {
        let mut h = TaskEvents::default();
        for ms in 0..10 {
            h.push(ev(ms), 4);
        }
        let kept: Vec<u64> = h.events.iter().map(|e| e.at.as_millis()).collect();
        assert_eq!(kept, vec![0, 7, 8, 9]);
        assert_eq!(h.dropped, 6);
    }

    #[test]
    fn heartbeats_of_one_assignment_coalesce_and_keep_the_latest_progress() {
        let (a, b) = (NodeId(1), NodeId(2));
        let beat = |ms: u64, node, epoch: u64, progress: &str| TaskEvent {
            at: Time::from_millis(ms),
            what: TaskEventKind::Heartbeat {
                node,
                epoch: Epoch(epoch),
                progress: progress.into(),
            },
        };
        let assigned = |ms: u64, node, epoch: u64| TaskEvent {
            at: Time::from_millis(ms),
            what: TaskEventKind::Assigned {
                node,
                epoch: Epoch(epoch),
            },
        };
        let mut h = TaskEvents::default();
        h.push(ev(0), 16);
        h.push(assigned(1, a, 1), 16);
        for ms in 2..100 {
            h.push(beat(ms, a, 1, &format!("{ms}%")), 16);
        }
        assert_eq!(h.events.len(), 3, "one heartbeat kept: {h:?}");
        assert_eq!(h.events[2], beat(99, a, 1, "99%"));
        assert_eq!(h.dropped, 0);
        let running = TaskState::Running {
            node: a,
            epoch: Epoch(1),
        };
        h.check_against(&running).unwrap();
        // The next assignment's heartbeat does not replace the last one's.
        h.push(
            TaskEvent {
                at: Time::from_millis(100),
                what: TaskEventKind::RunnerLost {
                    node: a,
                    epoch: Epoch(1),
                    reason: SupersedeReason::RunnerDeclaredDead,
                },
            },
            16,
        );
        h.push(assigned(101, b, 2), 16);
        h.push(beat(102, b, 2, "x"), 16);
        assert_eq!(h.events.len(), 6);
        h.check_against(&TaskState::Running {
            node: b,
            epoch: Epoch(2),
        })
        .unwrap();
    }

    #[test]
    fn a_heartbeat_recorded_for_an_assignment_that_ended_is_caught() {
        let a = NodeId(1);
        let mut h = TaskEvents::default();
        h.push(ev(0), 16);
        h.events.clear();
        let at = Time::from_millis(1);
        for what in [
            TaskEventKind::Submitted,
            TaskEventKind::Assigned {
                node: a,
                epoch: Epoch(1),
            },
            TaskEventKind::RunnerLost {
                node: a,
                epoch: Epoch(1),
                reason: SupersedeReason::RunnerDeclaredDead,
            },
            TaskEventKind::Heartbeat {
                node: a,
                epoch: Epoch(1),
                progress: String::new(),
            },
        ] {
            h.push(TaskEvent { at, what }, 16);
        }
        let err = h.check_against(&TaskState::Pending).unwrap_err();
        assert!(err.contains("heartbeat of"), "{err}");
        // A heartbeat of a stale epoch while another assignment holds it.
        let mut h = TaskEvents::default();
        for what in [
            TaskEventKind::Submitted,
            TaskEventKind::Assigned {
                node: a,
                epoch: Epoch(2),
            },
            TaskEventKind::Heartbeat {
                node: a,
                epoch: Epoch(1),
                progress: String::new(),
            },
        ] {
            h.push(TaskEvent { at, what }, 16);
        }
        assert!(h
            .check_against(&TaskState::Running {
                node: a,
                epoch: Epoch(2)
            })
            .is_err());
    }

    #[test]
    fn progress_is_cut_on_a_character_boundary() {
        let long = "é".repeat(PROGRESS_BYTES_MAX);
        let cut = event_progress(&long);
        assert!(cut.len() <= PROGRESS_BYTES_MAX && cut.len() >= PROGRESS_BYTES_MAX - 1);
    }

    #[test]
    fn an_event_error_is_cut_on_a_character_boundary() {
        let long = "é".repeat(TASK_EVENT_ERROR_BYTES_MAX);
        let cut = event_error(&long);
        assert!(cut.len() <= TASK_EVENT_ERROR_BYTES_MAX);
        assert!(cut.len() >= TASK_EVENT_ERROR_BYTES_MAX - 1);
        assert_eq!(event_error("short"), "short");
    }

    #[test]
    fn the_policy_check_catches_early_starts_late_starts_and_early_expiries() {
        let task = Task {
            kind: "k".into(),
            payload: vec![],
            timeout_ms: 1,
            max_attempts: 3,
            not_before: Time::from_millis(10),
            retry: RetryPolicy::default(),
            schedule_to_start_ms: 100,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        };
        let (node, epoch) = (NodeId(1), Epoch(1));
        let history = |events: &[(u64, TaskEventKind)]| {
            let mut h = TaskEvents::default();
            for (ms, what) in events {
                let at = Time::from_millis(*ms);
                h.push(
                    TaskEvent {
                        at,
                        what: what.clone(),
                    },
                    16,
                );
            }
            h
        };
        let assigned = TaskEventKind::Assigned { node, epoch };
        let not_started = TaskEventKind::NotStarted { error: "x".into() };
        let submitted = TaskEventKind::Submitted;
        // The deadline counts from not_before (10 ms): 110 ms.
        assert!(history(&[(0, submitted.clone()), (110, assigned.clone())])
            .check_policy(&task)
            .is_ok());
        assert!(history(&[(0, submitted.clone()), (9, assigned.clone())])
            .check_policy(&task)
            .is_err());
        assert!(history(&[(0, submitted.clone()), (111, assigned)])
            .check_policy(&task)
            .is_err());
        assert!(
            history(&[(0, submitted.clone()), (111, not_started.clone())])
                .check_policy(&task)
                .is_ok()
        );
        assert!(history(&[(0, submitted), (110, not_started.clone())])
            .check_policy(&task)
            .is_err());
        let no_timeout = Task {
            schedule_to_start_ms: 0,
            priority: 0,
            ..task
        };
        assert!(history(&[(500, not_started)])
            .check_policy(&no_timeout)
            .is_err());
    }

    #[test]
    fn labels_are_checked_for_count_length_characters_repeats_and_total_size() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(valid_labels(&l(&["gpu", "queue=reports", "zone:eu-west/1", "a_b.c"])).is_ok());
        assert!(valid_labels(&[]).is_ok());
        assert!(valid_labels(&l(&[""])).is_err());
        assert!(valid_labels(&l(&["has space"])).is_err());
        assert!(valid_labels(&l(&["é"])).is_err());
        assert!(valid_labels(&l(&["gpu", "gpu"])).is_err());
        assert!(valid_labels(&["x".repeat(LABEL_BYTES_MAX)]).is_ok());
        assert!(valid_labels(&["x".repeat(LABEL_BYTES_MAX + 1)]).is_err());
        let many: Vec<String> = (0..=TASK_LABELS_MAX).map(|i| format!("l{i}")).collect();
        assert!(valid_labels(&many).is_err());
        let big: Vec<String> = (0..5).map(|i| format!("{i}{}", "x".repeat(60))).collect();
        assert!(big.iter().map(String::len).sum::<usize>() > LABELS_BYTES_MAX);
        assert!(valid_labels(&big).is_err());
    }

    /// A task with every optional part left out.
    fn plain() -> Task {
        Task {
            kind: "echo".into(),
            payload: Vec::new(),
            timeout_ms: 1,
            max_attempts: 1,
            not_before: Time::ZERO,
            retry: RetryPolicy::default(),
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        }
    }

    #[test]
    fn a_task_runs_on_a_node_carrying_every_label_it_names() {
        let mut t = plain();
        let node = vec!["gpu".to_string(), "eu".to_string()];
        assert!(t.runs_on(&[]), "an unlabelled task runs anywhere");
        t.labels = vec!["eu".into(), "gpu".into()];
        assert!(t.runs_on(&node));
        t.labels.push("ssd".into());
        assert!(!t.runs_on(&node));
        assert!(!t.runs_on(&[]));
    }

    #[test]
    fn a_history_must_end_in_what_the_state_says() {
        let (n, e) = (NodeId(2), Epoch(3));
        let mut h = TaskEvents::default();
        h.push(ev(1), 8); // cancelled
        assert!(h.check_against(&TaskState::Cancelled).is_ok());
        assert!(h.check_against(&TaskState::Pending).is_err());
        let assigned = TaskEvent {
            at: Time::from_millis(2),
            what: TaskEventKind::Assigned { node: n, epoch: e },
        };
        let mut h = TaskEvents::default();
        h.push(assigned.clone(), 8);
        let running = TaskState::Running { node: n, epoch: e };
        assert!(h.check_against(&running).is_ok());
        let elsewhere = TaskState::Running {
            node: NodeId(1),
            epoch: e,
        };
        assert!(h.check_against(&elsewhere).is_err());
        h.push(assigned, 8);
        assert!(
            h.check_against(&running).is_err(),
            "the same epoch assigned twice"
        );
        assert!(TaskEvents::default()
            .check_against(&TaskState::Pending)
            .is_ok());
    }
}
