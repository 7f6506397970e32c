//! What a simulation run is asked to do: the seed, the cluster size, which
//! kinds of fault may be drawn, the phases and the client workload.

use cohort_core::{Limits, NodeId};
use std::fmt;
use std::str::FromStr;

/// Settings of one simulation run. Everything random in the run is drawn
/// from `seed`; the rest is fixed here.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The one seed every random choice of the run comes from.
    pub seed: u64,
    /// Cluster size; nodes are `n1..=n{nodes}`.
    pub nodes: usize,
    /// Which kinds of fault the fault plan may draw.
    pub faults: FaultKinds,
    /// Length of the safety phase (faults on, clients submitting).
    pub safety_ms: u64,
    /// Length of the liveness phase (everything healed, no new faults).
    pub liveness_ms: u64,
    /// The client workload.
    pub workload: Workload,
    /// Keep one readable line per event in [`crate::Report::trace`].
    pub record_trace: bool,
    /// Hand the recorded history back in [`crate::Report::history`]
    /// (default). A sweep over thousands of seeds that keeps its reports
    /// should turn it off: a history is a few MB.
    pub keep_history: bool,
    /// Limits handed to every node.
    pub limits: Limits,
    /// Tasks each node runs at once.
    pub capacity_tasks: u32,
    /// Stop the run after this many events (a runaway node, e.g. one that
    /// re-arms a timer at `now` forever); reported as a violation.
    pub events_max: u64,
    /// Most violations of each guarantee kept in the report; the count
    /// stays exact.
    pub violations_max: usize,
    /// Faults at fixed times, on top of the drawn plan (which may be
    /// `FaultKinds::NONE`): scenario tests that read like a story. Applied
    /// during the safety phase only, and regardless of the minority cap on
    /// drawn faults; one that finds its node in the wrong state (crashing a
    /// node that is down, pausing one that is paused) is skipped.
    pub script: Vec<ScriptedFault>,
    /// End the run early, once every client is done (every task
    /// acknowledged and read final) and the liveness phase has run for at
    /// least `settle_ms`.
    pub stop_when_done: bool,
    /// Group commit: a node's fsync takes every write waiting in its
    /// pipeline, as the runtime's batches do, instead of one input's
    /// writes per fsync. Off by default so the seeds that regression tests
    /// name replay what they found; without it a node makes at most one
    /// fsync-bound input durable at a time, and a leaderless cluster of 5
    /// falls behind at about 100 arrivals a second.
    pub group_commit: bool,
    /// Least liveness-phase time before an early stop, so that
    /// [`crate::Invariants::check_final`] sees a cluster that had time to
    /// converge after healing.
    pub settle_ms: u64,
}

impl SimConfig {
    /// Sane defaults: every fault kind, 30 s of safety phase, 30 s of
    /// liveness phase, the default workload, no readable trace.
    pub fn new(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            faults: FaultKinds::ALL,
            safety_ms: 30_000,
            liveness_ms: 30_000,
            workload: Workload::default(),
            record_trace: false,
            keep_history: true,
            limits: Limits::default(),
            capacity_tasks: 8,
            events_max: 50_000_000,
            violations_max: 100,
            stop_when_done: true,
            group_commit: false,
            settle_ms: 5_000,
            script: Vec::new(),
        }
    }

    /// Refuses settings the simulator cannot run. Changes nothing.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if self.nodes == 0 {
            return Err(SimConfigError::Invalid("nodes must be positive".into()));
        }
        if self.nodes > self.limits.members_max {
            return Err(SimConfigError::Invalid(format!(
                "{} nodes exceeds members_max = {}",
                self.nodes, self.limits.members_max
            )));
        }
        if self.capacity_tasks == 0 {
            return Err(SimConfigError::Invalid(
                "capacity_tasks must be positive".into(),
            ));
        }
        self.limits
            .validate()
            .map_err(|e| SimConfigError::Invalid(e.to_string()))?;
        for f in &self.script {
            let id = f.fault.node();
            if id.0 == 0 || id.0 > self.nodes as u64 {
                return Err(SimConfigError::Invalid(format!(
                    "scripted fault at {} ms names {id}, not one of n1..=n{}",
                    f.at_ms, self.nodes
                )));
            }
        }
        self.workload.validate()
    }
}

/// A fault at a fixed simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedFault {
    /// When it strikes, in ms since the start.
    pub at_ms: u64,
    /// What strikes.
    pub fault: Fault,
}

/// A fault that can be scripted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `node` crashes and restarts `down_ms` later.
    Crash {
        /// The node.
        node: NodeId,
        /// Its downtime.
        down_ms: u64,
    },
    /// `node` stops handling events for `for_ms`.
    Pause {
        /// The node.
        node: NodeId,
        /// How long.
        for_ms: u64,
    },
    /// Every link to and from `node` is cut for `for_ms` (replacing any
    /// partition in force).
    Isolate {
        /// The node.
        node: NodeId,
        /// How long.
        for_ms: u64,
    },
}

/// A scripted fault that does not parse. Nothing was configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad scripted fault {text:?}: expected KIND:nID@AT_MS+DURATION_MS with KIND one of crash, pause, isolate (e.g. crash:n1@5000+1000)")]
pub struct ScriptedFaultError {
    /// The text that did not parse.
    pub text: String,
}

impl FromStr for ScriptedFault {
    type Err = ScriptedFaultError;

    /// Parses `crash:n1@5000+1000` (crash n1 at 5 s for 1 s), `pause:...`,
    /// `isolate:...`.
    fn from_str(s: &str) -> Result<ScriptedFault, ScriptedFaultError> {
        let err = || ScriptedFaultError { text: s.into() };
        let (kind, rest) = s.trim().split_once(':').ok_or_else(err)?;
        let (node, rest) = rest.split_once('@').ok_or_else(err)?;
        let (at, lasts) = rest.split_once('+').ok_or_else(err)?;
        let node = node
            .strip_prefix('n')
            .and_then(|n| n.parse::<u64>().ok())
            .map(NodeId)
            .ok_or_else(err)?;
        let at_ms = at.parse::<u64>().map_err(|_| err())?;
        let ms = lasts.parse::<u64>().map_err(|_| err())?;
        let fault = match kind {
            "crash" => Fault::Crash { node, down_ms: ms },
            "pause" => Fault::Pause { node, for_ms: ms },
            "isolate" => Fault::Isolate { node, for_ms: ms },
            _ => return Err(err()),
        };
        Ok(ScriptedFault { at_ms, fault })
    }
}

impl fmt::Display for ScriptedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, node, ms) = match &self.fault {
            Fault::Crash { node, down_ms } => ("crash", node, down_ms),
            Fault::Pause { node, for_ms } => ("pause", node, for_ms),
            Fault::Isolate { node, for_ms } => ("isolate", node, for_ms),
        };
        write!(f, "{kind}:{node}@{}+{ms}", self.at_ms)
    }
}

impl Fault {
    /// The node it strikes.
    pub fn node(&self) -> NodeId {
        match self {
            Fault::Crash { node, .. } | Fault::Pause { node, .. } | Fault::Isolate { node, .. } => {
                *node
            }
        }
    }
}

/// A configuration the simulator refuses. No run was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimConfigError {
    /// A setting is out of range.
    #[error("invalid simulator configuration: {0}")]
    Invalid(String),
}

/// The kinds of fault a run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultKinds {
    /// Nodes crash (volatile state lost) and restart from their store.
    pub crash: bool,
    /// Nodes pause (GC pause, SIGSTOP) and resume with stale beliefs.
    pub pause: bool,
    /// Messages are lost.
    pub loss: bool,
    /// Messages are delivered twice.
    pub duplicate: bool,
    /// Messages overtake each other (otherwise every link is FIFO).
    pub reorder: bool,
    /// Links are cut: one node isolated, halves split, or one-way.
    pub partition: bool,
}

const FAULT_NAMES: [&str; 6] = ["crash", "pause", "loss", "dup", "reorder", "partition"];

impl FaultKinds {
    /// Every kind of fault.
    pub const ALL: FaultKinds = FaultKinds {
        crash: true,
        pause: true,
        loss: true,
        duplicate: true,
        reorder: true,
        partition: true,
    };
    /// No fault at all.
    pub const NONE: FaultKinds = FaultKinds {
        crash: false,
        pause: false,
        loss: false,
        duplicate: false,
        reorder: false,
        partition: false,
    };

    fn flags(&self) -> [bool; 6] {
        [
            self.crash,
            self.pause,
            self.loss,
            self.duplicate,
            self.reorder,
            self.partition,
        ]
    }

    fn flag_mut(&mut self, i: usize) -> &mut bool {
        match i {
            0 => &mut self.crash,
            1 => &mut self.pause,
            2 => &mut self.loss,
            3 => &mut self.duplicate,
            4 => &mut self.reorder,
            _ => &mut self.partition,
        }
    }
}

/// A fault list that does not parse. Nothing was configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultKindsError {
    /// A word is not a fault kind.
    #[error("unknown fault kind {word:?}: expected none, all, or a comma list of crash,pause,loss,dup,reorder,partition")]
    Unknown {
        /// The word.
        word: String,
    },
    /// The list is empty.
    #[error("empty fault list: use \"none\" for no faults")]
    Empty,
}

impl FromStr for FaultKinds {
    type Err = FaultKindsError;

    fn from_str(s: &str) -> Result<FaultKinds, FaultKindsError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(FaultKindsError::Empty);
        }
        match s {
            "none" => return Ok(FaultKinds::NONE),
            "all" => return Ok(FaultKinds::ALL),
            _ => {}
        }
        let mut kinds = FaultKinds::NONE;
        for word in s.split(',').map(str::trim) {
            let canonical = match word {
                "duplicate" => "dup",
                "partitions" => "partition",
                w => w,
            };
            let i = FAULT_NAMES
                .iter()
                .position(|n| *n == canonical)
                .ok_or_else(|| FaultKindsError::Unknown { word: word.into() })?;
            *kinds.flag_mut(i) = true;
        }
        Ok(kinds)
    }
}

impl fmt::Display for FaultKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .flags()
            .iter()
            .zip(FAULT_NAMES)
            .filter(|(on, _)| **on)
            .map(|(_, n)| n)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// The error class every simulated task lists as non-retryable.
pub const FATAL_ERROR_CLASS: &str = "fatal";

/// The `unique_every` of `cohort sim` (and of tests that ask for dedupe
/// submits): with the default `unique_burst` of 2, a tenth of the
/// arrivals, in pairs of one key.
pub const UNIQUE_EVERY_SIM: u64 = 20;

/// The simulated clients: one client per task, submitting it, retrying,
/// then polling it with linearizable reads until it is final.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Mean task arrivals per second (a Poisson process, safety phase only).
    pub arrivals_per_sec: f64,
    /// Shortest handler run time.
    pub task_ms_min: u64,
    /// Longest handler run time.
    pub task_ms_max: u64,
    /// Probability that one execution fails.
    pub handler_failure_rate: f64,
    /// A client gives up waiting for a reply after this long and retries.
    pub client_timeout_ms: u64,
    /// A client that has had no `Accepted` this long after it arrived
    /// abandons its submit (0: it retries until the run ends). Runs that
    /// purge records need it shorter than their retention, less the
    /// longest a request may be held (a paused node): a retry arriving
    /// after its task was purged creates a new task under the same id.
    pub submit_deadline_ms: u64,
    /// `Task::max_attempts` of every submitted task.
    pub max_attempts: u32,
    /// `RetryPolicy::backoff_initial_ms` of every submitted task.
    pub retry_backoff_initial_ms: u64,
    /// `RetryPolicy::backoff_max_ms` of every submitted task.
    pub retry_backoff_max_ms: u64,
    /// Fraction of failed executions whose error is of the class every
    /// task lists as non-retryable ([`FATAL_ERROR_CLASS`]).
    pub fatal_failure_share: f64,
    /// Fraction of tasks submitted with a `not_before` in the future.
    pub delayed_rate: f64,
    /// Longest delay of a delayed task's `not_before` after its submission.
    pub delay_ms_max: u64,
    /// Fraction of tasks submitted with a schedule-to-start timeout.
    pub schedule_to_start_rate: f64,
    /// Their `Task::schedule_to_start_ms`.
    pub schedule_to_start_ms: u64,
    /// Fraction of tasks submitted with a heartbeat timeout: their
    /// handlers beat (with progress) every third of it.
    pub heartbeat_rate: f64,
    /// Their `Task::heartbeat_timeout_ms`.
    pub heartbeat_timeout_ms: u64,
    /// Fraction of tasks submitted with the worker label [`SIM_LABEL`],
    /// which only n1 carries ([`node_labels`]).
    pub labelled_rate: f64,
    /// Fraction of tasks submitted with a priority drawn from -3..=3
    /// (the rest have 0): leaderless nodes then keep free slots for
    /// tasks of higher priority others announce, and every task must
    /// still finish in the liveness phase.
    pub prioritised_rate: f64,
    /// Fraction of tasks submitted with a concurrency and rate limit, on
    /// one of `limit_keys` keys drawn at random (0: none). Tasks submitted
    /// under a dedupe key carry none.
    pub limited_rate: f64,
    /// Limit keys the limited tasks spread over.
    pub limit_keys: u64,
    /// Their `TaskLimit::concurrency_max`.
    pub limit_concurrency_max: u32,
    /// Their `TaskLimit::rate_max`.
    pub limit_rate_max: u32,
    /// Their `TaskLimit::rate_window_ms`.
    pub limit_rate_window_ms: u64,
    /// Fraction of the executions of those tasks that hang at a random
    /// point: they stop beating, and their runner stops them a heartbeat
    /// timeout after the last beat (the attempt fails, class
    /// `heartbeat_timeout`).
    pub hang_rate: f64,
    /// Fraction of executions whose handler cannot be stopped: it ignores
    /// its timeout and returns (successfully) only `stuck_ms` after it
    /// started, past its lease (`timeout_ms` plus its grace,
    /// [`cohort_core::Task::effective_lease_grace_ms`]), so the cluster must end the
    /// lease while its runner is alive (0: none, the default). Blocked, it
    /// does not beat: with a heartbeat timeout its runner's watchdog fails
    /// the attempt at that timeout instead. Drawn in the safety phase
    /// only, like faults.
    pub stuck_rate: f64,
    /// How long a stuck handler runs.
    pub stuck_ms: u64,
    /// Shortest gap between two polls of a task.
    pub poll_ms_min: u64,
    /// Longest gap between two polls of a task.
    pub poll_ms_max: u64,
    /// Shortest back-off after a retryable error.
    pub backoff_ms_min: u64,
    /// Longest back-off after a retryable error.
    pub backoff_ms_max: u64,
    /// Fraction of clients that, once acknowledged, cancel their task after
    /// up to `task_ms_max` (racing its execution), then poll it as usual.
    pub cancel_rate: f64,
    /// Redirects (`NotLeader{Some}`) followed in a row before backing off.
    pub redirects_max: u32,
    /// Most tasks submitted in one run.
    pub tasks_max: u64,
    /// Fraction of submits sent as a `SubmitBatch` that carries, besides
    /// the client's own task, up to `batch_tasks - 1` other tasks still
    /// waiting for their acknowledgement (0: never).
    pub batch_rate: f64,
    /// Most tasks in one simulated batch.
    pub batch_tasks: usize,
    /// Every `unique_every` arrivals, the last `unique_burst` submit under
    /// a shared dedupe key ([`cohort_core::dedupe`]) instead of by id, and
    /// race each other (0: never, the default, so that a seed's run stays
    /// what it was before dedupe keys; `cohort sim` sets
    /// [`UNIQUE_EVERY_SIM`]).
    pub unique_every: u64,
    /// See `unique_every`; at most `unique_every`.
    pub unique_burst: u64,
    /// Dedupe keys the dedupe submits rotate over.
    pub unique_keys: u64,
    /// `rounds_max` of each dedupe submit.
    pub unique_rounds_max: u32,
    /// The interval of one schedule ([`cohort_core::schedule`], overlap
    /// `allow`, a catch-up window longer than any run) whose first link a
    /// client submits at the start; its links run through the nodes as the
    /// runtime's handler runs them, and the `Schedule` checker sees every
    /// tick fired once healed (0: no schedule, the default, so that a
    /// seed's run stays what it was before schedules).
    pub schedule_every_ms: u64,
}

/// The worker label simulated node n1 alone carries, and the labelled
/// share of the workload ([`Workload::labelled_rate`]) asks for.
pub const SIM_LABEL: &str = "gpu";

/// The worker labels simulated node `node` carries: [`SIM_LABEL`] on n1,
/// none on the others. One carrier makes the paths rare with more: in
/// leaderless mode 4 in 10 of 5 nodes' replica sets lack it (the task is
/// offered to n1), and n1 down leaves such tasks waiting, or requeued.
pub fn node_labels(node: NodeId) -> Vec<String> {
    if node.0 == 1 {
        vec![SIM_LABEL.to_string()]
    } else {
        Vec::new()
    }
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            arrivals_per_sec: 20.0,
            task_ms_min: 10,
            task_ms_max: 200,
            handler_failure_rate: 0.1,
            client_timeout_ms: 1_000,
            submit_deadline_ms: 0,
            max_attempts: 3,
            retry_backoff_initial_ms: 20,
            retry_backoff_max_ms: 200,
            fatal_failure_share: 0.25,
            delayed_rate: 0.1,
            delay_ms_max: 500,
            schedule_to_start_rate: 0.1,
            schedule_to_start_ms: 400,
            // Off by default so a seed's run stays what it was before
            // heartbeats (`cohort sim --heartbeat-rate` turns them on).
            heartbeat_rate: 0.0,
            heartbeat_timeout_ms: 90,
            // Off by default so a seed's run stays what it was before
            // labels (`cohort sim --labelled-rate` turns them on).
            labelled_rate: 0.0,
            // Off by default, like labels (`cohort sim --prioritised-rate`).
            prioritised_rate: 0.0,
            // Off by default, like labels (`cohort sim --limited-rate`).
            // Tight enough to bind at the default arrival rate: a key
            // gets about 5 starts a second when half the tasks are
            // limited, and runs last up to 200 ms.
            limited_rate: 0.0,
            limit_keys: 2,
            limit_concurrency_max: 1,
            limit_rate_max: 2,
            limit_rate_window_ms: 500,
            hang_rate: 0.2,
            // Off by default, like labels (`cohort sim --stuck-rate`).
            stuck_rate: 0.0,
            stuck_ms: 12_000,
            poll_ms_min: 200,
            poll_ms_max: 500,
            backoff_ms_min: 50,
            backoff_ms_max: 200,
            cancel_rate: 0.05,
            redirects_max: 4,
            tasks_max: 100_000,
            batch_rate: 0.0,
            batch_tasks: 8,
            unique_every: 0,
            unique_burst: 2,
            unique_keys: 3,
            unique_rounds_max: cohort_core::DEDUPE_ROUNDS_MAX_DEFAULT,
            schedule_every_ms: 0,
        }
    }
}

impl Workload {
    /// The limit a limited task of `key` carries.
    pub fn limit(&self, key: String) -> cohort_core::TaskLimit {
        cohort_core::TaskLimit {
            key,
            concurrency_max: self.limit_concurrency_max,
            rate_max: self.limit_rate_max,
            rate_window_ms: self.limit_rate_window_ms,
        }
    }

    /// Refuses a workload the simulator cannot run. Changes nothing.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let bad = |what: &str| Err(SimConfigError::Invalid(what.to_string()));
        if !(self.arrivals_per_sec.is_finite() && self.arrivals_per_sec >= 0.0) {
            return bad("arrivals_per_sec must be finite and >= 0");
        }
        if !(0.0..=1.0).contains(&self.handler_failure_rate) {
            return bad("handler_failure_rate must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.batch_rate) {
            return bad("batch_rate must be within 0..=1");
        }
        if self.batch_tasks == 0 {
            return bad("batch_tasks must be positive");
        }
        if self.schedule_every_ms != 0
            && !(cohort_core::schedule::SCHEDULE_EVERY_MS_MIN
                ..=cohort_core::schedule::SCHEDULE_EVERY_MS_MAX)
                .contains(&self.schedule_every_ms)
        {
            return bad("schedule_every_ms must be 0 or a valid schedule interval");
        }
        if !(0.0..=1.0).contains(&self.cancel_rate) {
            return bad("cancel_rate must be within 0..=1");
        }
        if self.task_ms_min > self.task_ms_max {
            return bad("task_ms_min must not exceed task_ms_max");
        }
        if self.poll_ms_min > self.poll_ms_max || self.poll_ms_min == 0 {
            return bad("poll_ms_min must be positive and not exceed poll_ms_max");
        }
        if self.backoff_ms_min > self.backoff_ms_max || self.backoff_ms_min == 0 {
            return bad("backoff_ms_min must be positive and not exceed backoff_ms_max");
        }
        if self.client_timeout_ms == 0 {
            return bad("client_timeout_ms must be positive");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be positive");
        }
        if !(0.0..=1.0).contains(&self.fatal_failure_share) {
            return bad("fatal_failure_share must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.delayed_rate) {
            return bad("delayed_rate must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.schedule_to_start_rate) {
            return bad("schedule_to_start_rate must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.labelled_rate) {
            return bad("labelled_rate must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.prioritised_rate) {
            return bad("prioritised_rate must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.stuck_rate) {
            return bad("stuck_rate must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.limited_rate) {
            return bad("limited_rate must be within 0..=1");
        }
        if self.limited_rate > 0.0 {
            if self.limit_keys == 0 {
                return bad("with limited_rate set, limit_keys must be positive");
            }
            let limit = self.limit("k".into());
            if let Err(e) = limit.validate() {
                return bad(&format!("the workload's limit: {e}"));
            }
        }
        if !(0.0..=1.0).contains(&self.heartbeat_rate) || !(0.0..=1.0).contains(&self.hang_rate) {
            return bad("heartbeat_rate and hang_rate must be within 0..=1");
        }
        if self.heartbeat_rate > 0.0
            && !(1..=cohort_core::HEARTBEAT_TIMEOUT_MS_MAX).contains(&self.heartbeat_timeout_ms)
        {
            return bad(
                "with heartbeat_rate set, heartbeat_timeout_ms must be positive and at most a day",
            );
        }
        let retry = cohort_core::RetryPolicy::backoff(
            self.retry_backoff_initial_ms,
            self.retry_backoff_max_ms,
        );
        if let Err(e) = retry.validate() {
            return bad(&e);
        }
        if self.unique_every > 0
            && (self.unique_burst == 0
                || self.unique_burst > self.unique_every
                || self.unique_keys == 0
                || self.unique_rounds_max == 0)
        {
            return bad(
                "with unique_every set, unique_burst must be within 1..=unique_every and \
                 unique_keys and unique_rounds_max positive",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_kinds_parse_and_print_canonically() {
        assert_eq!("none".parse::<FaultKinds>().unwrap(), FaultKinds::NONE);
        assert_eq!("all".parse::<FaultKinds>().unwrap(), FaultKinds::ALL);
        let k: FaultKinds = "partition, crash,dup".parse().unwrap();
        assert!(k.crash && k.duplicate && k.partition);
        assert!(!k.pause && !k.loss && !k.reorder);
        assert_eq!(k.to_string(), "crash,dup,partition");
        assert_eq!(FaultKinds::NONE.to_string(), "none");
        assert_eq!(
            FaultKinds::ALL.to_string().parse::<FaultKinds>().unwrap(),
            FaultKinds::ALL
        );
    }

    #[test]
    fn fault_kinds_refuse_unknown_words_with_a_typed_error() {
        assert_eq!(
            "crash,flood".parse::<FaultKinds>(),
            Err(FaultKindsError::Unknown {
                word: "flood".into()
            })
        );
        assert_eq!("".parse::<FaultKinds>(), Err(FaultKindsError::Empty));
    }

    #[test]
    fn scripted_faults_parse_and_print_back() {
        let f: ScriptedFault = "crash:n1@5000+1000".parse().unwrap();
        assert_eq!(
            f,
            ScriptedFault {
                at_ms: 5_000,
                fault: Fault::Crash {
                    node: NodeId(1),
                    down_ms: 1_000
                }
            }
        );
        assert_eq!(f.to_string(), "crash:n1@5000+1000");
        for text in ["pause:n2@10+20", "isolate:n3@0+700"] {
            assert_eq!(text.parse::<ScriptedFault>().unwrap().to_string(), text);
        }
        for bad in [
            "crash:n1@5000",
            "boom:n1@1+1",
            "crash:x1@1+1",
            "crash:n1@a+1",
        ] {
            assert_eq!(
                bad.parse::<ScriptedFault>(),
                Err(ScriptedFaultError { text: bad.into() })
            );
        }
        let mut c = SimConfig::new(1, 3);
        c.script = vec!["crash:n4@1+1".parse().unwrap()];
        assert!(c.validate().is_err(), "n4 is not a member of 3 nodes");
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(SimConfig::new(1, 3).validate().is_ok());
        assert!(SimConfig::new(1, 0).validate().is_err());
        let mut c = SimConfig::new(1, 3);
        c.workload.handler_failure_rate = 1.5;
        assert!(c.validate().is_err());
    }
}
