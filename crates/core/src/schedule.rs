//! Schedules stored in the cluster: exactly one firing per tick, across
//! leader changes, crashes and partitions, decided by the same id-keyed
//! submits and linearizable reads as every other task.
//!
//! # The chain of links
//!
//! A schedule named `S` is nothing but tasks of the reserved kind
//! [`SCHEDULE_KIND`], with ids derived from `S` ([`ScheduleName::task_id`]):
//!
//! | id | task | what running it does |
//! |---|---|---|
//! | `H(S, spec)` | the definition ([`SchedulePayload::Spec`]) | submits the first link, at the first tick at or after `max(start, now)` |
//! | `H(S, first)` | the first link | as any link |
//! | `H(S, link, t)` | the link of tick `t` ([`SchedulePayload::Link`]), `not_before = t` | fires what is due, submits the next link |
//! | `H(S, fire, t)` | the firing of tick `t`: the schedule's task, `not_before = t` | whatever the user's handler does |
//! | `H(S, deleted)` | the tombstone ([`SchedulePayload::Deleted`]) | nothing |
//!
//! `H(S, tag, t)` is the first 128 bits of SHA-256 over
//! `cohort/schedule/v1\0`, the name's length as 8 bytes big-endian, the
//! name, the tag and, for per-tick ids, `t` in ms as 8 bytes big-endian.
//!
//! Running a link of tick `T` at `now` ([`ScheduleRun::link`]):
//!
//! 1. a linearizable read of the tombstone: present, the chain ends;
//! 2. the due ticks: ticks in `[T, now]` no older than
//!    `catch_up_window_ms` (older ones are missed, not fired), at most
//!    `firings_max` of them (the rest are left to the next link, which is
//!    then due at once);
//! 3. the overlap policy against the previous firing (the tick the chain
//!    fired last, carried in the link's body): `allow` fires every due
//!    tick; `skip` and `buffer_one` read the previous firing
//!    (linearizably) and fire the first due tick only if it is final, the
//!    other due ticks being skipped (the one just fired is not final);
//!    while it is not final, `skip` skips the due ticks and `buffer_one`
//!    waits: instead of firing, it submits a *wait link* `H(S, wait, T,
//!    n)` for the same tick, not before a short, growing delay
//!    ([`BUFFER_WAIT_MS_MAX`] at most), which looks again (a wait is not
//!    a failed attempt, so a long firing cannot use up the link's
//!    attempts);
//! 4. an id-keyed submit of each firing `H(S, fire, t)`;
//! 5. an id-keyed submit of the next link `H(S, link, t')`, `t'` the first
//!    tick after the last one considered.
//!
//! **At most one firing per tick**: a firing's id is a function of the
//! tick and its body a function of the schedule and the tick, so however
//! often a link runs (a lost runner, a retry) and however many links run
//! at once, a tick's firing is created at most once: a second submit of it
//! is acknowledged again and creates nothing. **None missed once healed**:
//! a link that cannot reach the cluster fails and is retried (links have
//! `link_attempts` attempts, the cluster's `attempts_max`, and a backoff
//! from [`LINK_BACKOFF_INITIAL_MS`] to [`LINK_BACKOFF_MAX_MS`]), and a
//! link is only final once its next link is durable, so the chain does not
//! break while the schedule is not deleted; a tick is missed only when no
//! link ran within `catch_up_window_ms` after it (or `skip` skipped it).
//! **What breaks the chain**: `link_attempts` failed runs of one link in a
//! row. A runner that dies or is cut off is not an attempt, and a failure
//! is only counted once the cluster records it, so that takes a cluster
//! that records the link's failures but refuses its reads and submits for
//! as long (with the defaults, 100 attempts: several minutes).
//!
//! A rerun of a link at a later `now` may name a later next link than its
//! first run did; the two chains meet at the first tick both reach (the
//! lagging one steps through every tick up to the one the other waits at,
//! whose id then exists) and never fire a tick twice meanwhile. A link's
//! body carrying another `prev_fire` than the existing one is an
//! `IdConflict`, taken as "the next link exists".
//!
//! **Deletion** is the tombstone: every link reads it before firing. A
//! link that read it absent just before the delete was acknowledged may
//! still fire the ticks it found due; no link starts a firing after it
//! reads the tombstone. A deleted name is not reused (the tombstone stays).
//!
//! Like dedupe keys, the scheme needs the tombstone and the definition to
//! stay readable: neither retention nor any mode's count bound
//! (`Limits::tasks_retained_max`) purges them ([`kept_for_ever`]); each
//! mode bounds how many it creates instead (`schedules_kept_max`).

use crate::client::{ClientError, ClientRequest, ClientResponse, Consistency};
use crate::ids::TaskId;
use crate::retry::RetryPolicy;
use crate::task::{Task, TaskState};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The reserved kind of a schedule's own tasks (definition, links,
/// tombstone). Clients may not submit it directly.
pub const SCHEDULE_KIND: &str = "cohort.schedule";

/// Longest schedule name, in bytes.
pub const SCHEDULE_NAME_BYTES_MAX: usize = 128;

/// Shortest fixed interval.
pub const SCHEDULE_EVERY_MS_MIN: u64 = 50;

/// Longest fixed interval: a year.
pub const SCHEDULE_EVERY_MS_MAX: u64 = 366 * 24 * 60 * 60 * 1000;

/// The last instant a tick may fall on: the end of the year 9999, in ms
/// since the Unix epoch (a tick is also a [`Time`], in microseconds).
pub const SCHEDULE_TICK_MS_MAX: u64 = 253_402_300_799_999;

/// Longest catch-up window: 30 days.
pub const CATCH_UP_WINDOW_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;

/// Default catch-up window: a minute.
pub const CATCH_UP_WINDOW_MS_DEFAULT: u64 = 60_000;

/// Default for the most ticks one link run fires (or skips); the rest are
/// left to the next link, due at once. Bounds the work, the requests and
/// the result of one run.
pub const SCHEDULE_FIRINGS_PER_RUN_MAX_DEFAULT: usize = 16;

/// How long one run of a link may take (its requests to the cluster).
pub const LINK_TIMEOUT_MS: u64 = 30_000;

/// Backoff cap of a link's first retry (doubling up to
/// [`LINK_BACKOFF_MAX_MS`]): short, so a tick is late by little after the
/// cluster heals.
pub const LINK_BACKOFF_INITIAL_MS: u64 = 50;

/// Largest backoff cap of a link.
pub const LINK_BACKOFF_MAX_MS: u64 = 10_000;

/// `buffer_one`: the first wait for a previous firing, doubling per wait
/// up to [`BUFFER_WAIT_MS_MAX`].
pub const BUFFER_WAIT_MS_MIN: u64 = 100;

/// `buffer_one`: the longest wait between two looks at a previous firing
/// (each look is one wait link: a task record).
pub const BUFFER_WAIT_MS_MAX: u64 = 5_000;

/// How far ahead [`CronExpr::next_after`] looks for a matching minute
/// before it says the expression never matches again: 5 years (a
/// `29 2 *` that matches only on leap days is still found).
const CRON_SEARCH_DAYS_MAX: u64 = 5 * 366 + 1;

const DOMAIN: &[u8] = b"cohort/schedule/v1\0";

/// Why a schedule was refused. Nothing is created for a refused schedule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The name is empty, too long or not of `a-z A-Z 0-9 _ . -`.
    #[error("a schedule name is 1 to {SCHEDULE_NAME_BYTES_MAX} bytes of a-z A-Z 0-9 _ . -")]
    BadName,
    /// `every_ms` is outside [`SCHEDULE_EVERY_MS_MIN`]..=[`SCHEDULE_EVERY_MS_MAX`].
    #[error("every_ms {0} is outside {SCHEDULE_EVERY_MS_MIN}..={SCHEDULE_EVERY_MS_MAX}")]
    BadInterval(u64),
    /// The cron expression does not parse.
    #[error("bad cron expression: {0}")]
    BadCron(String),
    /// `start_ms` is after [`SCHEDULE_TICK_MS_MAX`].
    #[error("start_ms {0} is after {SCHEDULE_TICK_MS_MAX} (the year 9999)")]
    BadStart(u64),
    /// `catch_up_window_ms` is over [`CATCH_UP_WINDOW_MS_MAX`].
    #[error("catch_up_window_ms {0} exceeds {CATCH_UP_WINDOW_MS_MAX}")]
    BadCatchUpWindow(u64),
    /// The fired task is invalid (its kind is reserved, zero attempts, ...).
    #[error("invalid task: {0}")]
    BadTask(String),
}

/// A valid schedule name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScheduleName(String);

/// What a schedule id names (see the table in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdTag {
    /// The definition.
    Spec,
    /// The first link.
    First,
    /// The link of a tick (ms).
    Link(u64),
    /// The firing of a tick (ms).
    Fire(u64),
    /// The `n`-th wait link of a tick (ms) under `buffer_one`.
    Wait(u64, u32),
    /// The tombstone.
    Deleted,
}

impl ScheduleName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<ScheduleName, ScheduleError> {
        let ok = !name.is_empty()
            && name.len() <= SCHEDULE_NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(ScheduleName(name.to_string()))
        } else {
            Err(ScheduleError::BadName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of one of the schedule's tasks.
    pub fn task_id(&self, tag: IdTag) -> TaskId {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update((self.0.len() as u64).to_be_bytes());
        h.update(self.0.as_bytes());
        let (name, tick, n): (&[u8], Option<u64>, Option<u32>) = match tag {
            IdTag::Spec => (b"spec", None, None),
            IdTag::First => (b"first", None, None),
            IdTag::Link(t) => (b"link", Some(t), None),
            IdTag::Fire(t) => (b"fire", Some(t), None),
            IdTag::Wait(t, n) => (b"wait", Some(t), Some(n)),
            IdTag::Deleted => (b"deleted", None, None),
        };
        h.update(name);
        if let Some(t) = tick {
            h.update(t.to_be_bytes());
        }
        if let Some(n) = n {
            h.update(n.to_be_bytes());
        }
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        TaskId(u128::from_be_bytes(first))
    }
}

/// What a tick does while the previous firing is not final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Overlap {
    /// The tick is skipped.
    Skip,
    /// The tick waits until the previous firing is final, then fires;
    /// further ticks meanwhile are skipped.
    BufferOne,
    /// The tick fires anyway.
    Allow,
}

impl Overlap {
    /// `skip`, `buffer_one` or `allow`.
    pub fn name(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer_one",
            Overlap::Allow => "allow",
        }
    }

    /// The policy of [`Overlap::name`].
    pub fn parse(s: &str) -> Option<Overlap> {
        match s {
            "skip" => Some(Overlap::Skip),
            "buffer_one" => Some(Overlap::BufferOne),
            "allow" => Some(Overlap::Allow),
            _ => None,
        }
    }
}

/// When a schedule ticks. Ticks are ms since the Unix epoch (the runtime's
/// clock; the simulator's is its run's start).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Spec {
    /// At `start_ms + k * every_ms`, `k >= 0`.
    Every {
        /// The interval.
        every_ms: u64,
        /// The first tick (the anchor).
        start_ms: u64,
    },
    /// On the minutes a 5-field UTC cron expression matches.
    Cron(CronExpr),
}

impl Spec {
    /// The first tick at or after `at_ms`.
    pub fn first_at_or_after(&self, at_ms: u64) -> Option<u64> {
        self.first_unbounded(at_ms)
            .filter(|t| *t <= SCHEDULE_TICK_MS_MAX)
    }

    fn first_unbounded(&self, at_ms: u64) -> Option<u64> {
        match self {
            Spec::Every { every_ms, start_ms } => {
                if at_ms <= *start_ms {
                    return Some(*start_ms);
                }
                let k = (at_ms - start_ms).div_ceil(*every_ms);
                k.checked_mul(*every_ms)?.checked_add(*start_ms)
            }
            Spec::Cron(c) => match at_ms.checked_sub(1) {
                Some(before) => c.next_after(before),
                // The epoch itself is a minute boundary.
                None if c.matches_minute(0) => Some(0),
                None => c.next_after(0),
            },
        }
    }

    /// The first tick strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        self.first_at_or_after(after_ms.checked_add(1)?)
    }
}

/// A schedule: when, what to fire, and how overlaps and missed ticks are
/// handled.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schedule {
    /// Its name: every id of the schedule derives from it.
    pub name: ScheduleName,
    /// When it ticks.
    pub spec: Spec,
    /// What a tick does while the previous firing is not final.
    pub overlap: Overlap,
    /// How late a tick may still fire; older ones are missed.
    pub catch_up_window_ms: u64,
    /// The task each firing submits (its `not_before` is set to the tick).
    pub task: Task,
    /// Attempts of each link (the cluster's `attempts_max` when created).
    pub link_attempts: u32,
}

impl Schedule {
    /// Checks everything but the task's size and kind against the node's
    /// limits and handlers (the runtime does that).
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if let Spec::Every { every_ms, start_ms } = self.spec {
            if !(SCHEDULE_EVERY_MS_MIN..=SCHEDULE_EVERY_MS_MAX).contains(&every_ms) {
                return Err(ScheduleError::BadInterval(every_ms));
            }
            if start_ms > SCHEDULE_TICK_MS_MAX {
                return Err(ScheduleError::BadStart(start_ms));
            }
        }
        if self.catch_up_window_ms > CATCH_UP_WINDOW_MS_MAX {
            return Err(ScheduleError::BadCatchUpWindow(self.catch_up_window_ms));
        }
        if self.task.kind == SCHEDULE_KIND {
            return Err(ScheduleError::BadTask(format!(
                "kind {SCHEDULE_KIND:?} is reserved"
            )));
        }
        if self.link_attempts == 0 {
            return Err(ScheduleError::BadTask("links need an attempt".into()));
        }
        if self.task.kind.is_empty() || self.task.max_attempts == 0 {
            return Err(ScheduleError::BadTask(
                "a kind and at least one attempt are needed".into(),
            ));
        }
        self.task.retry.validate().map_err(ScheduleError::BadTask)
    }

    /// The firing of tick `tick_ms`: the schedule's task, not before the tick.
    pub fn firing(&self, tick_ms: u64) -> Task {
        Task {
            not_before: Time::from_millis(tick_ms),
            ..self.task.clone()
        }
    }

    /// The definition's task.
    pub fn spec_task(&self) -> Task {
        reserved_task(
            &SchedulePayload::Spec(self.clone()),
            Time::ZERO,
            self.link_attempts,
        )
    }

    /// The link of tick `tick_ms`, whose chain fired `prev_fire_ms` last.
    pub fn link_task(&self, tick_ms: u64, prev_fire_ms: Option<u64>) -> Task {
        self.wait_task(tick_ms, prev_fire_ms, 0, tick_ms)
    }

    /// The `waits`-th wait link of tick `tick_ms` (0: the link itself),
    /// not before `not_before_ms`.
    pub fn wait_task(
        &self,
        tick_ms: u64,
        prev_fire_ms: Option<u64>,
        waits: u32,
        not_before_ms: u64,
    ) -> Task {
        let payload = SchedulePayload::Link {
            schedule: self.clone(),
            tick_ms,
            prev_fire_ms,
            waits,
        };
        reserved_task(
            &payload,
            Time::from_millis(not_before_ms.min(SCHEDULE_TICK_MS_MAX)),
            self.link_attempts,
        )
    }

    /// The tombstone's task.
    pub fn tombstone_task() -> Task {
        reserved_task(&SchedulePayload::Deleted, Time::ZERO, 1)
    }
}

/// The wait before the `waits`-th look (from 1) at a previous firing.
pub fn buffer_wait_ms(waits: u32) -> u64 {
    let doublings = waits.saturating_sub(1).min(32);
    BUFFER_WAIT_MS_MIN
        .saturating_mul(1 << doublings)
        .min(BUFFER_WAIT_MS_MAX)
}

/// A task of the reserved kind: a short backoff, and the highest priority
/// (a late link makes every firing after it late).
fn reserved_task(payload: &SchedulePayload, not_before: Time, attempts: u32) -> Task {
    Task {
        kind: SCHEDULE_KIND.into(),
        payload: crate::codec::encode(payload),
        timeout_ms: LINK_TIMEOUT_MS,
        max_attempts: attempts,
        not_before,
        retry: RetryPolicy::backoff(LINK_BACKOFF_INITIAL_MS, LINK_BACKOFF_MAX_MS),
        schedule_to_start_ms: 0,
        priority: i8::MAX,
        heartbeat_timeout_ms: 0,
        labels: Vec::new(),
        limit: None,
        lease_grace_ms: 0,
        retry_of: None,
    }
}

/// Whether `task` is a schedule's definition or tombstone. Those are never
/// purged by retention: a link of a weekly schedule may run long after the
/// tombstone was written and must still find it, and the definition is
/// what `GET /v1/schedules/{name}` reads. They are one of each per
/// schedule name; the per-tick links and firings are purged like any task.
pub fn kept_for_ever(task: &Task) -> bool {
    task.kind == SCHEDULE_KIND
        && matches!(
            crate::codec::decode::<SchedulePayload>(&task.payload, task.payload.len()),
            Ok(SchedulePayload::Spec(_) | SchedulePayload::Deleted)
        )
}

/// How many records kept for ever ([`kept_for_ever`]) a node may hold
/// already and still create `task`, under a bound of `max` schedules:
/// `None` when `task` is not kept for ever, `max` for a definition, twice
/// that for a tombstone (a delete must go through while definitions are
/// at the bound). Every mode's `schedules_kept_max` check.
pub fn kept_bound(task: &Task, max: usize) -> Option<usize> {
    if !kept_for_ever(task) {
        return None;
    }
    let definition = matches!(
        crate::codec::decode::<SchedulePayload>(&task.payload, task.payload.len()),
        Ok(SchedulePayload::Spec(_))
    );
    Some(if definition {
        max
    } else {
        max.saturating_mul(2)
    })
}

/// The payload of a task of kind [`SCHEDULE_KIND`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchedulePayload {
    /// The definition: running it starts the chain.
    Spec(Schedule),
    /// A link of the chain.
    Link {
        /// The schedule.
        schedule: Schedule,
        /// The link's tick.
        tick_ms: u64,
        /// The tick the chain fired last, if any.
        prev_fire_ms: Option<u64>,
        /// `buffer_one`: how many wait links of this tick came before (0:
        /// this is the tick's link).
        waits: u32,
    },
    /// The tombstone: running it does nothing.
    Deleted,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Ticks whose firing was submitted (acknowledged, or found existing).
    pub fired_ms: Vec<u64>,
    /// Due ticks skipped by the overlap policy.
    pub skipped_ms: Vec<u64>,
    /// Ticks of this link older than the catch-up window were missed: the
    /// first due tick considered, when some were.
    pub missed_before_ms: Option<u64>,
    /// The next link's tick (`None`: the chain ended).
    pub next_link_ms: Option<u64>,
    /// `buffer_one`: the previous firing's tick, not final yet; the next
    /// link is a wait link of this link's tick.
    pub waiting_for_ms: Option<u64>,
    /// The tombstone was found: nothing fired, the chain ended.
    pub deleted: bool,
}

/// Why a run failed. The link is retried (the machine may be started over
/// at any time: every request it makes is idempotent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The cluster refused a request.
    #[error("{0}")]
    Client(ClientError),
    /// The node answered with something that does not answer the request.
    #[error("unexpected answer {answer:?} to {request:?}")]
    Unexpected {
        /// What was asked.
        request: Box<ClientRequest>,
        /// What came back.
        answer: Box<ClientResponse>,
    },
}

/// What to do after [`ScheduleRun::handle_reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStep {
    /// Send this request and hand its answer to `handle_reply`.
    Send(ClientRequest),
    /// Finished.
    Done(Result<RunReport, RunError>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    ReadTombstone,
    ReadPrev { prev_ms: u64 },
    Fire { at: usize },
    Link,
    Wait,
    Done,
}

/// One run of a definition or a link, as a sans-IO state machine (the
/// model is [`crate::dedupe::DedupeSubmit`]): it names the request to send,
/// the caller sends it to its node and hands back the answer, until
/// [`RunStep::Done`]. Time is an input: `now_ms` is fixed at construction.
///
/// Call order: a constructor, then [`ScheduleRun::request`] and
/// [`ScheduleRun::handle_reply`] alternately.
#[derive(Clone, Debug)]
pub struct ScheduleRun {
    schedule: Schedule,
    /// `Some`: a link of this tick; `None`: the definition.
    tick_ms: Option<u64>,
    prev_fire_ms: Option<u64>,
    waits: u32,
    now_ms: u64,
    /// Due ticks, in order, and whether each is to be fired.
    due_ms: Vec<u64>,
    fire: Vec<u64>,
    next_link_ms: Option<u64>,
    report: RunReport,
    stage: Stage,
}

impl ScheduleRun {
    /// A run of the definition at `now_ms`: starts the chain at the first
    /// tick at or after `max(now, the spec's start)`.
    pub fn start(schedule: Schedule, now_ms: u64) -> ScheduleRun {
        let next_link_ms = schedule.spec.first_at_or_after(now_ms);
        ScheduleRun {
            schedule,
            tick_ms: None,
            prev_fire_ms: None,
            waits: 0,
            now_ms,
            due_ms: Vec::new(),
            fire: Vec::new(),
            next_link_ms,
            report: RunReport::default(),
            stage: Stage::ReadTombstone,
        }
    }

    /// A run of the link of `tick_ms` (or its `waits`-th wait link) at
    /// `now_ms`, firing at most `firings_max` (at least 1) ticks.
    pub fn link(
        schedule: Schedule,
        tick_ms: u64,
        prev_fire_ms: Option<u64>,
        waits: u32,
        now_ms: u64,
        firings_max: usize,
    ) -> ScheduleRun {
        let firings_max = firings_max.max(1);
        // The link was started at its tick by some node's clock; a runner
        // whose clock is behind still treats the tick as due, or it would
        // name itself as the next link and end the chain.
        let now_ms = now_ms.max(tick_ms);
        let oldest = now_ms.saturating_sub(schedule.catch_up_window_ms);
        let mut report = RunReport::default();
        let mut due_ms = Vec::new();
        let mut t = if oldest > tick_ms {
            let first = schedule.spec.first_at_or_after(oldest);
            report.missed_before_ms = first;
            first
        } else {
            Some(tick_ms)
        };
        let mut next_link_ms = None;
        while let Some(at) = t {
            if at > now_ms {
                next_link_ms = Some(at);
                break;
            }
            if due_ms.len() == firings_max {
                // Left to the next link, which is due at once.
                next_link_ms = Some(at);
                break;
            }
            due_ms.push(at);
            t = schedule.spec.next_after(at);
        }
        ScheduleRun {
            schedule,
            tick_ms: Some(tick_ms),
            prev_fire_ms,
            waits,
            now_ms,
            due_ms,
            fire: Vec::new(),
            next_link_ms,
            report,
            stage: Stage::ReadTombstone,
        }
    }

    /// The ticks found due at construction (fired or skipped).
    pub fn due_ms(&self) -> &[u64] {
        &self.due_ms
    }

    /// The request whose answer the machine waits for; `None` once done.
    pub fn request(&self) -> Option<ClientRequest> {
        let name = &self.schedule.name;
        let read = |tag| ClientRequest::Get {
            id: name.task_id(tag),
            consistency: Consistency::Linearizable,
        };
        match &self.stage {
            Stage::ReadTombstone => Some(read(IdTag::Deleted)),
            Stage::ReadPrev { prev_ms } => Some(read(IdTag::Fire(*prev_ms))),
            Stage::Fire { at } => {
                let tick = self.fire[*at];
                Some(ClientRequest::Submit {
                    id: name.task_id(IdTag::Fire(tick)),
                    task: self.schedule.firing(tick),
                })
            }
            Stage::Link => {
                let next = self.next_link_ms.expect("Link stage only with a next link");
                let (id, task) = match self.tick_ms {
                    None => (
                        name.task_id(IdTag::First),
                        self.schedule.link_task(next, None),
                    ),
                    Some(_) => (
                        name.task_id(IdTag::Link(next)),
                        self.schedule.link_task(next, self.last_fired()),
                    ),
                };
                Some(ClientRequest::Submit { id, task })
            }
            Stage::Wait => {
                let tick = self.tick_ms.expect("only a link waits");
                let waits = self.waits.saturating_add(1);
                let at = self.now_ms.saturating_add(buffer_wait_ms(waits));
                Some(ClientRequest::Submit {
                    id: name.task_id(IdTag::Wait(tick, waits)),
                    task: self.schedule.wait_task(tick, self.prev_fire_ms, waits, at),
                })
            }
            Stage::Done => None,
        }
    }

    fn last_fired(&self) -> Option<u64> {
        self.fire.last().copied().or(self.prev_fire_ms)
    }

    /// Hands in the answer to [`ScheduleRun::request`].
    ///
    /// # Panics
    /// If the machine is done.
    pub fn handle_reply(&mut self, reply: Result<ClientResponse, ClientError>) -> RunStep {
        let request = self.request().expect("handle_reply after Done");
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        // What the answer says: a read found the task (with its state), a
        // submit created it or found it existing (`None` state).
        let found: Option<Option<TaskState>> = match (&request, reply) {
            (ClientRequest::Get { .. }, Ok(ClientResponse::State { state, .. })) => {
                Some(Some(state))
            }
            (ClientRequest::Get { .. }, Err(ClientError::NotFound { .. })) => None,
            (ClientRequest::Submit { .. }, Ok(ClientResponse::Accepted { .. }))
            | (ClientRequest::Submit { .. }, Ok(ClientResponse::State { .. }))
            // Another body holds the id: the tick fired, or the next link
            // exists (see the module docs).
            | (ClientRequest::Submit { .. }, Err(ClientError::IdConflict { .. })) => Some(None),
            (_, Err(e)) => return self.finish(Err(RunError::Client(e))),
            (_, Ok(answer)) => {
                return self.finish(Err(RunError::Unexpected {
                    request: Box::new(request),
                    answer: Box::new(answer),
                }))
            }
        };
        match stage {
            Stage::ReadTombstone => {
                if found.is_some() {
                    self.report.deleted = true;
                    return self.finish(Ok(()));
                }
                match (
                    self.schedule.overlap,
                    self.prev_fire_ms,
                    self.due_ms.first(),
                ) {
                    (Overlap::Skip | Overlap::BufferOne, Some(prev_ms), Some(_)) => {
                        self.go(Stage::ReadPrev { prev_ms })
                    }
                    (Overlap::Allow, _, _) => {
                        self.fire = self.due_ms.clone();
                        self.after_decision()
                    }
                    _ => {
                        self.fire = self.due_ms.first().copied().into_iter().collect();
                        self.after_decision()
                    }
                }
            }
            Stage::ReadPrev { prev_ms } => {
                // An absent previous firing cannot hold a tick back.
                let finished = found.flatten().is_none_or(|s| s.is_final());
                let first = self.due_ms[0];
                if finished {
                    self.fire = vec![first];
                } else if self.schedule.overlap == Overlap::BufferOne {
                    self.report.waiting_for_ms = Some(prev_ms);
                    return self.go(Stage::Wait);
                }
                self.after_decision()
            }
            Stage::Fire { at } => {
                self.report.fired_ms.push(self.fire[at]);
                if at + 1 < self.fire.len() {
                    self.go(Stage::Fire { at: at + 1 })
                } else {
                    self.submit_link()
                }
            }
            Stage::Link => {
                self.report.next_link_ms = self.next_link_ms;
                self.finish(Ok(()))
            }
            Stage::Wait => {
                self.report.next_link_ms = self.tick_ms;
                self.finish(Ok(()))
            }
            Stage::Done => unreachable!("request() was Some"),
        }
    }

    fn after_decision(&mut self) -> RunStep {
        self.report.skipped_ms = self
            .due_ms
            .iter()
            .filter(|t| !self.fire.contains(t))
            .copied()
            .collect();
        if self.fire.is_empty() {
            self.submit_link()
        } else {
            self.go(Stage::Fire { at: 0 })
        }
    }

    fn submit_link(&mut self) -> RunStep {
        if self.next_link_ms.is_some() {
            self.go(Stage::Link)
        } else {
            self.finish(Ok(()))
        }
    }

    fn go(&mut self, stage: Stage) -> RunStep {
        self.stage = stage;
        RunStep::Send(self.request().expect("a stage that is not Done"))
    }

    fn finish(&mut self, r: Result<(), RunError>) -> RunStep {
        self.stage = Stage::Done;
        RunStep::Done(r.map(|()| self.report.clone()))
    }
}

/// A 5-field UTC cron expression: `minute hour day-of-month month
/// day-of-week`, each `*`, a number, a range `a-b`, a step `*/s` or
/// `a-b/s` or `a/s`, or a comma-separated list of those. Day of week 0 to
/// 7, both 0 and 7 being Sunday. As in Vixie cron, when both day fields are
/// restricted a day matches either.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CronExpr {
    /// The text it was parsed from.
    pub text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Longest cron expression, in bytes.
pub const CRON_EXPR_BYTES_MAX: usize = 256;

impl CronExpr {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<CronExpr, ScheduleError> {
        if text.len() > CRON_EXPR_BYTES_MAX {
            return Err(ScheduleError::BadCron(format!(
                "longer than {CRON_EXPR_BYTES_MAX} bytes"
            )));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields[..] else {
            return Err(ScheduleError::BadCron(format!(
                "5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        };
        let minutes = field(m, 0, 59, "minute")?;
        let hours = field(h, 0, 23, "hour")?;
        let days = field(dom, 1, 31, "day of month")?;
        let months = field(mon, 1, 12, "month")?;
        let mut weekdays = field(dow, 0, 7, "day of week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(CronExpr {
            text: fields.join(" "),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted: !dom.starts_with('*'),
            weekdays_restricted: !dow.starts_with('*'),
        })
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let d = self.days & (1 << day) != 0;
        let w = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => d || w,
            _ => d && w,
        }
    }

    /// Whether the minute starting at `minute` (minutes since the epoch) matches.
    fn matches_minute(&self, minute: u64) -> bool {
        let days = minute / (24 * 60);
        let (_, month, day) = civil_from_days(days);
        let weekday = ((days + 4) % 7) as u32; // 1970-01-01 was a Thursday.
        let in_day = minute % (24 * 60);
        self.months & (1 << month) != 0
            && self.day_matches(day, weekday)
            && self.hours & (1 << (in_day / 60)) != 0
            && self.minutes & (1 << (in_day % 60)) != 0
    }

    /// The first matching minute strictly after `after_ms`, in ms; `None`
    /// if none within five years.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let mut minute = after_ms / 60_000 + 1;
        let last_day = (after_ms / 60_000) / (24 * 60) + CRON_SEARCH_DAYS_MAX;
        loop {
            let days = minute / (24 * 60);
            if days > last_day {
                return None;
            }
            let (_, month, day) = civil_from_days(days);
            let weekday = ((days + 4) % 7) as u32;
            if self.months & (1 << month) == 0 || !self.day_matches(day, weekday) {
                minute = (days + 1) * 24 * 60;
                continue;
            }
            let in_day = minute % (24 * 60);
            if self.hours & (1 << (in_day / 60)) == 0 {
                minute = (minute / 60 + 1) * 60;
                continue;
            }
            if self.minutes & (1 << (in_day % 60)) == 0 {
                minute += 1;
                continue;
            }
            return minute.checked_mul(60_000);
        }
    }
}

/// One cron field as a bit set of the values it matches.
fn field(text: &str, min: u64, max: u64, what: &str) -> Result<u64, ScheduleError> {
    let bad = |why: &str| ScheduleError::BadCron(format!("{what} field {text:?}: {why}"));
    let number = |s: &str| -> Result<u64, ScheduleError> {
        let n: u64 = s.parse().map_err(|_| bad("not a number"))?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(bad(&format!("{n} is outside {min}..={max}")))
        }
    };
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u64 = s.parse().map_err(|_| bad("bad step"))?;
                if s == 0 || s > max {
                    return Err(bad("step out of range"));
                }
                (r, s)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let a = number(range)?;
            // `a/s` runs from a to the top.
            (a, if item.contains('/') { max } else { a })
        };
        if lo > hi {
            return Err(bad("range runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A linearizable store with id-keyed submits, counting creations.
    #[derive(Default)]
    struct Cluster {
        tasks: BTreeMap<TaskId, (Task, TaskState)>,
        created: Vec<TaskId>,
        /// Answer every request with this error instead.
        down: Option<ClientError>,
    }

    impl Cluster {
        fn ask(&mut self, req: ClientRequest) -> Result<ClientResponse, ClientError> {
            if let Some(e) = &self.down {
                return Err(e.clone());
            }
            match req {
                ClientRequest::Get { id, .. } => match self.tasks.get(&id) {
                    Some((_, state)) => Ok(ClientResponse::State {
                        id,
                        state: state.clone(),
                    }),
                    None => Err(ClientError::NotFound { id }),
                },
                ClientRequest::Submit { id, task } => match self.tasks.get(&id) {
                    Some((t, _)) if *t == task => Ok(ClientResponse::Accepted { id }),
                    Some(_) => Err(ClientError::IdConflict { id }),
                    None => {
                        self.tasks.insert(id, (task, TaskState::Pending));
                        self.created.push(id);
                        Ok(ClientResponse::Accepted { id })
                    }
                },
                other => panic!("a schedule run asked {other:?}"),
            }
        }

        fn run(&mut self, mut run: ScheduleRun) -> Result<RunReport, RunError> {
            let mut req = run.request().unwrap();
            loop {
                let reply = self.ask(req);
                match run.handle_reply(reply) {
                    RunStep::Send(next) => req = next,
                    RunStep::Done(r) => return r,
                }
            }
        }

        fn finish(&mut self, id: TaskId) {
            self.tasks.get_mut(&id).unwrap().1 = TaskState::Cancelled;
        }

        fn has(&self, id: TaskId) -> bool {
            self.tasks.contains_key(&id)
        }
    }

    fn schedule(every_ms: u64, overlap: Overlap, catch_up_window_ms: u64) -> Schedule {
        Schedule {
            name: ScheduleName::new("nightly").unwrap(),
            spec: Spec::Every {
                every_ms,
                start_ms: 1_000,
            },
            overlap,
            catch_up_window_ms,
            link_attempts: 100,
            task: Task {
                kind: "echo".into(),
                payload: b"hi".to_vec(),
                timeout_ms: 1000,
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
            },
        }
    }

    fn fire(s: &Schedule, t: u64) -> TaskId {
        s.name.task_id(IdTag::Fire(t))
    }

    fn link(s: &Schedule, t: u64) -> TaskId {
        s.name.task_id(IdTag::Link(t))
    }

    #[test]
    fn fixed_interval_ticks_are_anchored_at_the_start() {
        let spec = Spec::Every {
            every_ms: 100,
            start_ms: 1_000,
        };
        assert_eq!(spec.first_at_or_after(0), Some(1_000));
        assert_eq!(spec.first_at_or_after(1_000), Some(1_000));
        assert_eq!(spec.first_at_or_after(1_001), Some(1_100));
        assert_eq!(spec.next_after(1_100), Some(1_200));
        assert_eq!(spec.next_after(1_150), Some(1_200));
        let far = Spec::Every {
            every_ms: SCHEDULE_EVERY_MS_MAX,
            start_ms: u64::MAX - 10,
        };
        assert_eq!(
            far.next_after(u64::MAX - 10),
            None,
            "overflow ends the chain"
        );
    }

    #[test]
    fn cron_expressions_match_the_minutes_they_name() {
        let min = 60_000u64;
        let every_15 = CronExpr::parse("*/15 * * * *").unwrap();
        assert_eq!(every_15.next_after(0), Some(15 * min));
        assert_eq!(every_15.next_after(15 * min), Some(30 * min));
        assert_eq!(every_15.next_after(59 * min), Some(60 * min));
        // 1970-01-05 was the first Monday: noon then.
        let monday_noon = CronExpr::parse("0 12 * * 1").unwrap();
        assert_eq!(monday_noon.next_after(0), Some((4 * 24 + 12) * 60 * min));
        // Sunday as 7 and as 0.
        let sunday = CronExpr::parse("30 1 * * 7").unwrap();
        assert_eq!(sunday.next_after(0), Some(((3 * 24 + 1) * 60 + 30) * min));
        assert_eq!(
            CronExpr::parse("30 1 * * 0").unwrap().next_after(0),
            sunday.next_after(0)
        );
        // 1972-02-29, the first leap day after the epoch (day 789).
        let leap = CronExpr::parse("0 0 29 2 *").unwrap();
        assert_eq!(leap.next_after(0), Some(789 * 24 * 60 * min));
        // Both day fields restricted: either matches (the 1st, or a Monday).
        let either = CronExpr::parse("0 0 1 * 1").unwrap();
        assert_eq!(either.next_after(0), Some(4 * 24 * 60 * min));
        // Lists, ranges, steps from a value.
        let mixed = CronExpr::parse("5,10-12,50/5 3 * * *").unwrap();
        let starts: Vec<u64> = std::iter::successors(mixed.next_after(0), |t| mixed.next_after(*t))
            .take(7)
            .map(|t| t / min - 3 * 60)
            .collect();
        assert_eq!(starts, vec![5, 10, 11, 12, 50, 55, 24 * 60 + 5]);
        // Never: the 31st of February.
        assert_eq!(CronExpr::parse("0 0 31 2 *").unwrap().next_after(0), None);
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "1,,2 * * * *",
        ] {
            assert!(
                matches!(CronExpr::parse(bad), Err(ScheduleError::BadCron(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn names_and_schedules_are_validated() {
        assert!(ScheduleName::new("a-b_c.9").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(SCHEDULE_NAME_BYTES_MAX + 1)] {
            assert_eq!(ScheduleName::new(bad), Err(ScheduleError::BadName));
        }
        let ok = schedule(100, Overlap::Allow, 0);
        assert_eq!(ok.validate(), Ok(()));
        let mut s = ok.clone();
        s.spec = Spec::Every {
            every_ms: SCHEDULE_EVERY_MS_MIN - 1,
            start_ms: 0,
        };
        assert!(matches!(s.validate(), Err(ScheduleError::BadInterval(_))));
        let mut s = ok.clone();
        s.spec = Spec::Every {
            every_ms: 100,
            start_ms: SCHEDULE_TICK_MS_MAX + 1,
        };
        assert!(matches!(s.validate(), Err(ScheduleError::BadStart(_))));
        let mut s = ok.clone();
        s.catch_up_window_ms = CATCH_UP_WINDOW_MS_MAX + 1;
        assert!(matches!(
            s.validate(),
            Err(ScheduleError::BadCatchUpWindow(_))
        ));
        let mut s = ok.clone();
        s.task.kind = SCHEDULE_KIND.into();
        assert!(matches!(s.validate(), Err(ScheduleError::BadTask(_))));
        let mut s = ok;
        s.task.max_attempts = 0;
        assert!(matches!(s.validate(), Err(ScheduleError::BadTask(_))));
    }

    #[test]
    fn the_definition_starts_one_chain_however_often_it_runs() {
        let s = schedule(100, Overlap::Allow, 1_000);
        let mut c = Cluster::default();
        let r = c.run(ScheduleRun::start(s.clone(), 1_250)).unwrap();
        assert_eq!(r.next_link_ms, Some(1_300));
        // A rerun later names a later first tick: the first link exists.
        let r = c.run(ScheduleRun::start(s.clone(), 1_650)).unwrap();
        assert_eq!(r.next_link_ms, Some(1_700));
        assert_eq!(c.created, vec![s.name.task_id(IdTag::First)]);
        let (task, _) = &c.tasks[&s.name.task_id(IdTag::First)];
        assert_eq!(task.not_before, Time::from_millis(1_300));
    }

    #[test]
    fn a_link_on_time_fires_its_tick_and_links_the_next() {
        let s = schedule(100, Overlap::Allow, 1_000);
        let mut c = Cluster::default();
        let r = c
            .run(ScheduleRun::link(s.clone(), 1_300, None, 0, 1_302, 16))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_300]);
        assert_eq!(r.next_link_ms, Some(1_400));
        assert_eq!(c.created, vec![fire(&s, 1_300), link(&s, 1_400)]);
        assert_eq!(c.tasks[&fire(&s, 1_300)].0, s.firing(1_300));
        assert_eq!(c.tasks[&link(&s, 1_400)].0, s.link_task(1_400, Some(1_300)));
    }

    #[test]
    fn a_late_link_fires_what_the_catch_up_window_still_covers() {
        let s = schedule(100, Overlap::Allow, 250);
        let mut c = Cluster::default();
        // Due since 1_300; at 2_000 only ticks from 1_750 on are covered.
        let r = c
            .run(ScheduleRun::link(s.clone(), 1_300, None, 0, 2_000, 16))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_800, 1_900, 2_000]);
        assert_eq!(r.missed_before_ms, Some(1_800));
        assert_eq!(r.next_link_ms, Some(2_100));
        assert!(!c.has(fire(&s, 1_700)));
        // A window of 0: only a tick of this very instant fires.
        let s0 = schedule(100, Overlap::Allow, 0);
        let r = Cluster::default()
            .run(ScheduleRun::link(s0, 1_300, None, 0, 1_350, 16))
            .unwrap();
        assert!(r.fired_ms.is_empty(), "{r:?}");
        assert_eq!(r.next_link_ms, Some(1_400));
    }

    #[test]
    fn firings_per_run_are_bounded_and_the_rest_left_to_the_next_link() {
        let s = schedule(100, Overlap::Allow, 10_000);
        let mut c = Cluster::default();
        let r = c
            .run(ScheduleRun::link(s.clone(), 1_000, None, 0, 2_000, 4))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_000, 1_100, 1_200, 1_300]);
        assert_eq!(r.next_link_ms, Some(1_400), "due at once");
        let r = c
            .run(ScheduleRun::link(
                s.clone(),
                1_400,
                Some(1_300),
                0,
                2_000,
                4,
            ))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_400, 1_500, 1_600, 1_700]);
    }

    #[test]
    fn skip_skips_ticks_while_the_previous_firing_runs() {
        let s = schedule(100, Overlap::Skip, 1_000);
        let mut c = Cluster::default();
        c.run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_000, 16))
            .unwrap();
        // 1_000's firing is still pending at 1_100: skipped.
        let r = c
            .run(ScheduleRun::link(
                s.clone(),
                1_100,
                Some(1_000),
                0,
                1_100,
                16,
            ))
            .unwrap();
        assert_eq!(
            (r.fired_ms.clone(), r.skipped_ms.clone()),
            (vec![], vec![1_100])
        );
        assert!(!c.has(fire(&s, 1_100)));
        // The next link still names 1_000 as the one to wait for.
        assert_eq!(c.tasks[&link(&s, 1_200)].0, s.link_task(1_200, Some(1_000)));
        c.finish(fire(&s, 1_000));
        let r = c
            .run(ScheduleRun::link(
                s.clone(),
                1_200,
                Some(1_000),
                0,
                1_400,
                16,
            ))
            .unwrap();
        // Final now: the first due tick fires; the others would overlap it.
        assert_eq!(r.fired_ms, vec![1_200]);
        assert_eq!(r.skipped_ms, vec![1_300, 1_400]);
        assert_eq!(r.next_link_ms, Some(1_500));
    }

    #[test]
    fn buffer_one_waits_for_the_previous_firing_then_fires_once() {
        let s = schedule(100, Overlap::BufferOne, 1_000);
        let mut c = Cluster::default();
        c.run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_000, 16))
            .unwrap();
        let before = c.created.clone();
        // 1_000's firing still runs at 1_100: a wait link looks again later.
        let r = c
            .run(ScheduleRun::link(
                s.clone(),
                1_100,
                Some(1_000),
                0,
                1_100,
                16,
            ))
            .unwrap();
        assert_eq!(r.waiting_for_ms, Some(1_000));
        assert!(r.fired_ms.is_empty() && r.skipped_ms.is_empty(), "{r:?}");
        let wait = s.name.task_id(IdTag::Wait(1_100, 1));
        assert_eq!(c.created[before.len()..], [wait]);
        let (task, _) = &c.tasks[&wait];
        assert_eq!(
            task.not_before,
            Time::from_millis(1_100 + BUFFER_WAIT_MS_MIN)
        );
        assert!(task.max_attempts == s.link_attempts);
        // The waits grow, to a bound.
        assert_eq!(buffer_wait_ms(2), 2 * BUFFER_WAIT_MS_MIN);
        assert_eq!(buffer_wait_ms(u32::MAX), BUFFER_WAIT_MS_MAX);
        c.finish(fire(&s, 1_000));
        // The wait link at 1_250: the buffered tick fires, 1_200 is dropped.
        let r = c
            .run(ScheduleRun::link(
                s.clone(),
                1_100,
                Some(1_000),
                1,
                1_250,
                16,
            ))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_100]);
        assert_eq!(r.skipped_ms, vec![1_200]);
        assert_eq!(r.next_link_ms, Some(1_300));
        assert!(!c.has(fire(&s, 1_200)));
    }

    #[test]
    fn allow_fires_while_the_previous_firing_runs() {
        let s = schedule(100, Overlap::Allow, 1_000);
        let mut c = Cluster::default();
        c.run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_000, 16))
            .unwrap();
        let r = c
            .run(ScheduleRun::link(
                s.clone(),
                1_100,
                Some(1_000),
                0,
                1_100,
                16,
            ))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_100]);
        assert!(c.has(fire(&s, 1_000)) && c.has(fire(&s, 1_100)));
    }

    #[test]
    fn a_link_run_twice_fires_nothing_twice() {
        for overlap in [Overlap::Skip, Overlap::BufferOne, Overlap::Allow] {
            let s = schedule(100, overlap, 10_000);
            let mut c = Cluster::default();
            // First run on time; a lost runner's rerun much later, and a
            // third concurrent one: each tick's firing is created once.
            c.run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_000, 16))
                .unwrap();
            c.finish(fire(&s, 1_000));
            c.run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_350, 16))
                .unwrap();
            c.run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_350, 16))
                .unwrap();
            // The first chain goes on from 1_100 and meets the rerun's.
            for t in [1_100, 1_200, 1_300, 1_400] {
                let prev = c
                    .tasks
                    .get(&link(&s, t))
                    .map(|(task, _)| task.payload.clone());
                let Some(payload) = prev else { continue };
                let Ok(SchedulePayload::Link { prev_fire_ms, .. }) =
                    crate::codec::decode::<SchedulePayload>(&payload, 1 << 20)
                else {
                    panic!("a link's payload decodes");
                };
                for (_, (_, st)) in c.tasks.iter_mut() {
                    *st = TaskState::Cancelled;
                }
                let _ = c.run(ScheduleRun::link(s.clone(), t, prev_fire_ms, 0, t + 10, 16));
            }
            let mut seen = std::collections::BTreeSet::new();
            for id in &c.created {
                assert!(seen.insert(*id), "{overlap:?}: {id:?} created twice");
            }
            assert!(c.has(fire(&s, 1_000)), "{overlap:?}");
        }
    }

    #[test]
    fn a_deleted_schedule_fires_nothing_and_ends_its_chain() {
        let s = schedule(100, Overlap::Allow, 1_000);
        let mut c = Cluster::default();
        c.ask(ClientRequest::Submit {
            id: s.name.task_id(IdTag::Deleted),
            task: Schedule::tombstone_task(),
        })
        .unwrap();
        let r = c
            .run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_500, 16))
            .unwrap();
        assert!(r.deleted);
        assert_eq!(r.next_link_ms, None);
        assert_eq!(c.created, vec![s.name.task_id(IdTag::Deleted)]);
        let r = c.run(ScheduleRun::start(s, 1_000)).unwrap();
        assert!(r.deleted);
    }

    #[test]
    fn a_run_that_cannot_reach_the_cluster_fails_and_a_retry_completes_it() {
        let s = schedule(100, Overlap::Allow, 1_000);
        let mut c = Cluster {
            down: Some(ClientError::Unavailable {
                reason: "no quorum".into(),
            }),
            ..Cluster::default()
        };
        let r = c.run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_000, 16));
        assert!(matches!(
            r,
            Err(RunError::Client(ClientError::Unavailable { .. }))
        ));
        c.down = None;
        let r = c
            .run(ScheduleRun::link(s.clone(), 1_000, None, 0, 1_200, 16))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_000, 1_100, 1_200]);
    }

    #[test]
    fn retention_keeps_a_schedules_definition_and_tombstone_and_purges_its_ticks() {
        let s = schedule(100, Overlap::Allow, 10_000);
        let r = crate::Limits::default().retention();
        let done = TaskState::Succeeded {
            result: vec![],
            node: crate::NodeId(1),
            epoch: crate::Epoch(1),
        };
        let at = Time::from_millis(5);
        assert_eq!(r.purge_at(&s.spec_task(), &done, at), None);
        assert_eq!(r.purge_at(&Schedule::tombstone_task(), &done, at), None);
        let due = at + core::time::Duration::from_millis(r.succeeded_ms);
        assert_eq!(r.purge_at(&s.link_task(1_100, None), &done, at), Some(due));
        assert_eq!(r.purge_at(&s.firing(1_100), &done, at), Some(due));
        // A user's task of another kind with the same payload is purged.
        let mut lookalike = s.spec_task();
        lookalike.kind = "echo".into();
        assert_eq!(r.purge_at(&lookalike, &done, at), Some(due));
        assert!(!kept_for_ever(&s.firing(1_100)));
    }

    #[test]
    fn a_runner_whose_clock_is_behind_still_fires_its_tick() {
        let s = schedule(100, Overlap::Allow, 0);
        let r = Cluster::default()
            .run(ScheduleRun::link(s, 1_300, None, 0, 1_250, 16))
            .unwrap();
        assert_eq!(r.fired_ms, vec![1_300]);
        assert_eq!(r.next_link_ms, Some(1_400), "never itself");
    }
}
