//! The proposer side: at most one proposal per task on this node, at most
//! `paxos_in_flight_max` in all. The node decides *what* it wants (an
//! [`Intent`]); the proposer runs prepare/promise and accept/accepted and
//! reports when a value is chosen or when an acceptor knows a later version.

use crate::message::LeaderlessMessage;
use crate::paxos::{majority, Ballot};
use crate::permit::PermitChange;
use crate::record::{TaskHeader, TaskValue};
use cohort_core::{
    after_failure, event_error, event_progress, AfterFailure, Epoch, NodeId, SupersedeReason,
    TaskEvent, TaskEventKind, TaskId, TaskOutcome, TaskState, Time,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What a node wants to change about a task: a compare-and-set whose
/// expected state is part of the intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// `Pending` → `Running { me, epoch + 1 }`.
    Claim {
        /// A limited task's grant ([`crate::permit`]): the epoch it is
        /// good for, which the claim must take, and its stamp. A limited
        /// task is never claimed without one.
        permit: Option<(Epoch, Time)>,
    },
    /// `Running { owner, epoch }` → `Running { me, epoch + 1 }`: the owner was
    /// declared down (or is this node, restarted), or its lease ended.
    Reclaim {
        /// The runner being replaced.
        owner: NodeId,
        /// Its assignment.
        epoch: Epoch,
        /// Why, as the history records it (`RunnerDeclaredDead`).
        reason: SupersedeReason,
        /// A limited task's grant, as for [`Intent::Claim`].
        permit: Option<(Epoch, Time)>,
    },
    /// `Running { me, epoch }` → the outcome (final, or `Pending` again
    /// when the retry policy retries it).
    Finish {
        /// This node's assignment.
        epoch: Epoch,
        /// What the handler returned.
        outcome: TaskOutcome,
        /// Drawn from the node's seeded RNG when the handler returned: the
        /// full jitter of the retry backoff, should the outcome be retried.
        jitter: u32,
    },
    /// `Running { owner, epoch }` → a failed attempt
    /// ([`cohort_core::Task::lease_expired_error`]): `Pending` after the
    /// retry policy's backoff, or `Failed` when no attempt is left. The
    /// owner is live but reported no outcome by the end of its lease.
    EndLease {
        /// The runner whose lease ended.
        owner: NodeId,
        /// Its assignment.
        epoch: Epoch,
        /// Drawn from the proposing node's seeded RNG: the full jitter of
        /// the retry backoff.
        jitter: u32,
    },
    /// Any state not final → `Cancelled`.
    Cancel,
    /// `Running { me, epoch }` → `Pending` (attempts unchanged): this node
    /// lost the execution (it restarted) and is no longer one of the
    /// task's replicas (it was removed from the ring), so a replica claims
    /// it instead.
    Release {
        /// This node's lost assignment.
        epoch: Epoch,
    },
    /// `Running { owner, epoch }` → `Pending` (attempts unchanged): the
    /// owner was declared down and the proposing replica does not carry
    /// the task's worker labels, so it hands the task back for a node
    /// that does (epoch + 1 comes with the next claim: the owner's result
    /// is rejected, as after a reclaim).
    Requeue {
        /// The runner declared down.
        owner: NodeId,
        /// Its assignment.
        epoch: Epoch,
        /// Why, as for [`Intent::Reclaim`].
        reason: SupersedeReason,
    },
    /// Any state → the same state on the task's replicas under a newer
    /// ring (`ring_epoch`), if it is not on them already. Chosen by the old
    /// replicas' majority; later instances run among `replicas`.
    Move {
        /// The ring epoch the new replicas were computed from.
        ring_epoch: u64,
        /// The task's replicas under that ring.
        replicas: Vec<NodeId>,
    },
    /// `Pending` → `Failed`: the task was not started by its schedule-to-start
    /// deadline: the base's own, or `deadline` when the base has none (a
    /// version-0 value, whose deadline the proposing replica counts from
    /// when it stored the task).
    Expire {
        /// The deadline when the base names none.
        deadline: Time,
    },
    /// `Running { me, epoch }` → the same state, with a heartbeat of the
    /// handler and its `progress` in the history. Not retried when another
    /// change wins the instance: the next heartbeat carries newer progress.
    Heartbeat {
        /// This node's assignment.
        epoch: Epoch,
        /// What the handler reported (at most
        /// [`cohort_core::PROGRESS_BYTES_MAX`] bytes).
        progress: String,
    },
    /// No change of its own: finish the instance on top of the base if a
    /// value was accepted in it (a linearizable read whose replicas are in
    /// doubt), else stop.
    Settle,
    /// A permit record's places given back and asked for
    /// ([`crate::permit::Permits::apply`]); applies while something changes.
    Permits(PermitChange),
    /// `Pending` with an epoch below `epoch` → the same, with its epoch at
    /// `epoch`: a claim under `epoch` (a grant never used, whose claim
    /// may still be in flight) can no longer be chosen, so the grant's
    /// place can be given back.
    Fence {
        /// The epoch of the unused grant.
        epoch: Epoch,
    },
    /// A permit record, `Pending`, idle ([`crate::permit::Permits::retirable`])
    /// → the same, retired at the proposer's clock: each replica purges it
    /// `permit_retired_retained_ms` later, unless a change of its permits
    /// comes first (ALGORITHM.md *Retiring a permit record*).
    Retire,
}

/// Whether a claim taking `base.epoch + 1` of `header`'s task may go
/// ahead with `permit`: any claim of an unlimited task, and a limited
/// task's only with a grant for exactly that epoch.
fn permitted(header: &TaskHeader, base: &TaskValue, permit: Option<(Epoch, Time)>) -> bool {
    match (&header.task.limit, permit) {
        (None, _) => true,
        // Stamped no earlier than the task may start: the stamp is the
        // start the history and the rate limit show.
        (Some(_), Some((epoch, at))) => epoch == base.epoch.next() && at >= base.ready_at,
        (Some(_), None) => false,
    }
}

impl Intent {
    /// The value this intent proposes on top of `base` at `at` (this
    /// node's clock), or `None` when the compare part fails (the intent no
    /// longer applies). `me` is this node in its boot `boot`. An intent
    /// that applies at `at` still applies later on the same base.
    pub fn desired(
        &self,
        me: NodeId,
        boot: u64,
        header: &TaskHeader,
        base: &TaskValue,
        at: Time,
    ) -> Option<TaskValue> {
        match (self, &base.state) {
            (Intent::Claim { permit }, TaskState::Pending)
                if at >= base.ready_at
                    && base.start_by.is_none_or(|d| at <= d)
                    && permitted(header, base, *permit) =>
            {
                Some(claim(me, boot, base, *permit))
            }
            (Intent::Expire { deadline }, TaskState::Pending)
                if at > base.start_by.unwrap_or(*deadline) =>
            {
                Some(TaskValue {
                    state: TaskState::Failed {
                        error: header.task.not_started_error(),
                        attempts: base.attempts,
                    },
                    start_by: None,
                    ..base.clone()
                })
            }
            (
                Intent::Reclaim {
                    owner,
                    epoch,
                    permit,
                    ..
                },
                TaskState::Running { node, epoch: e },
            ) if node == owner && e == epoch && permitted(header, base, *permit) => {
                Some(claim(me, boot, base, *permit))
            }
            (
                Intent::Finish {
                    epoch,
                    outcome,
                    jitter,
                },
                TaskState::Running { node, epoch: e },
            ) if *node == me && e == epoch => {
                let state = match outcome {
                    TaskOutcome::Success(result) => TaskState::Succeeded {
                        result: result.clone(),
                        node: me,
                        epoch: *epoch,
                    },
                    TaskOutcome::Failure(error) => {
                        return Some(failed_attempt(header, base, error, at, *jitter));
                    }
                };
                Some(TaskValue {
                    state,
                    ..base.clone()
                })
            }
            (
                Intent::EndLease {
                    owner,
                    epoch,
                    jitter,
                },
                TaskState::Running { node, epoch: e },
            ) if node == owner && e == epoch => {
                let error = header.task.lease_expired_error();
                Some(failed_attempt(header, base, &error, at, *jitter))
            }
            (Intent::Release { epoch }, TaskState::Running { node, epoch: e })
                if *node == me && e == epoch =>
            {
                Some(TaskValue {
                    state: TaskState::Pending,
                    start_by: header.task.start_by(at, base.ready_at),
                    ..base.clone()
                })
            }
            (Intent::Heartbeat { epoch, .. }, TaskState::Running { node, epoch: e })
                if *node == me && e == epoch =>
            {
                Some(base.clone())
            }
            (Intent::Requeue { owner, epoch, .. }, TaskState::Running { node, epoch: e })
                if node == owner && e == epoch =>
            {
                Some(TaskValue {
                    state: TaskState::Pending,
                    start_by: header.task.start_by(at, base.ready_at),
                    ..base.clone()
                })
            }
            (Intent::Cancel, s) if !s.is_final() => Some(TaskValue {
                state: TaskState::Cancelled,
                ..base.clone()
            }),
            (
                Intent::Move {
                    ring_epoch,
                    replicas,
                },
                _,
            ) if base.ring_epoch < *ring_epoch && base.replicas != *replicas => Some(TaskValue {
                replicas: replicas.clone(),
                ring_epoch: *ring_epoch,
                ..base.clone()
            }),
            (Intent::Permits(change), TaskState::Pending) => {
                let permits = base.permits.apply(change, at)?;
                Some(TaskValue {
                    permits: Box::new(permits),
                    ..base.clone()
                })
            }
            (Intent::Fence { epoch }, TaskState::Pending) if base.epoch < *epoch => {
                Some(TaskValue {
                    epoch: *epoch,
                    ..base.clone()
                })
            }
            (Intent::Retire, TaskState::Pending)
                if crate::permit::permit_key(&header.task).is_some()
                    && base.permits.retirable(at) =>
            {
                let permits = crate::permit::Permits {
                    retired_at: Some(at),
                    ..(*base.permits).clone()
                };
                Some(TaskValue {
                    permits: Box::new(permits),
                    ..base.clone()
                })
            }
            _ => None,
        }
    }
}

impl Intent {
    /// [`Intent::desired`] with the change recorded in the value's event
    /// history, stamped `at` (the proposer's clock), keeping at most
    /// `events_max` events.
    pub fn desired_at(
        &self,
        me: NodeId,
        boot: u64,
        header: &TaskHeader,
        base: &TaskValue,
        at: Time,
        events_max: usize,
    ) -> Option<TaskValue> {
        let mut value = self.desired(me, boot, header, base, at)?;
        let mut events = Vec::new();
        match self {
            Intent::Claim { .. } => events.push(TaskEventKind::Assigned {
                node: me,
                epoch: value.epoch,
            }),
            Intent::Reclaim {
                owner,
                epoch,
                reason,
                ..
            } => {
                events.push(TaskEventKind::RunnerLost {
                    node: *owner,
                    epoch: *epoch,
                    reason: *reason,
                });
                events.push(TaskEventKind::Assigned {
                    node: me,
                    epoch: value.epoch,
                });
            }
            Intent::Finish { epoch, outcome, .. } => events.push(match outcome {
                TaskOutcome::Success(_) => TaskEventKind::Succeeded {
                    node: me,
                    epoch: *epoch,
                },
                TaskOutcome::Failure(error) => failure_event(me, *epoch, error, &value),
            }),
            Intent::EndLease { owner, epoch, .. } => {
                let error = header.task.lease_expired_error();
                events.push(failure_event(*owner, *epoch, &error, &value));
            }
            Intent::Release { epoch } => events.push(TaskEventKind::RunnerLost {
                node: me,
                epoch: *epoch,
                reason: SupersedeReason::Released,
            }),
            Intent::Requeue {
                owner,
                epoch,
                reason,
            } => events.push(TaskEventKind::RunnerLost {
                node: *owner,
                epoch: *epoch,
                reason: *reason,
            }),
            Intent::Cancel => events.push(TaskEventKind::Cancelled),
            Intent::Expire { .. } => events.push(TaskEventKind::NotStarted {
                error: event_error(&header.task.not_started_error()),
            }),
            Intent::Heartbeat { epoch, progress } => events.push(TaskEventKind::Heartbeat {
                node: me,
                epoch: *epoch,
                progress: event_progress(progress),
            }),
            Intent::Move { .. }
            | Intent::Settle
            | Intent::Permits(_)
            | Intent::Fence { .. }
            | Intent::Retire => {}
        }
        // A limited task's claim is stamped at its grant: the start its
        // rate limit counted, and what its events show.
        let at = match self {
            Intent::Claim {
                permit: Some((_, granted)),
            }
            | Intent::Reclaim {
                permit: Some((_, granted)),
                ..
            } => *granted,
            _ => at,
        };
        for what in events {
            value.history.push(TaskEvent { at, what }, events_max);
        }
        Some(value)
    }
}

/// `base`, running, after its attempt failed with `error` at `at`:
/// counted, then pending again after the retry policy's backoff, or failed.
fn failed_attempt(
    header: &TaskHeader,
    base: &TaskValue,
    error: &str,
    at: Time,
    jitter: u32,
) -> TaskValue {
    let attempts = base.attempts.saturating_add(1);
    match after_failure(&header.task, attempts, error, at, jitter) {
        AfterFailure::Fail => TaskValue {
            state: TaskState::Failed {
                error: error.to_string(),
                attempts,
            },
            ..base.clone()
        },
        AfterFailure::RetryAt(ready_at) => TaskValue {
            state: TaskState::Pending,
            attempts,
            ready_at,
            start_by: header.task.start_by(at, ready_at),
            ..base.clone()
        },
    }
}

/// The event of `node`'s attempt under `epoch` failing with `error`, as
/// `value` (the outcome) decided it: retried or failed for good.
fn failure_event(node: NodeId, epoch: Epoch, error: &str, value: &TaskValue) -> TaskEventKind {
    let after = match value.state {
        TaskState::Failed { .. } => AfterFailure::Fail,
        _ => AfterFailure::RetryAt(value.ready_at),
    };
    cohort_core::failure_event(node, epoch, error, after)
}

fn claim(me: NodeId, boot: u64, base: &TaskValue, permit: Option<(Epoch, Time)>) -> TaskValue {
    let epoch = base.epoch.next();
    TaskValue {
        state: TaskState::Running { node: me, epoch },
        epoch,
        attempts: base.attempts,
        runner_boot: boot,
        replicas: base.replicas.clone(),
        ring_epoch: base.ring_epoch,
        ready_at: base.ready_at,
        start_by: None,
        history: base.history.clone(),
        permits: base.permits.clone(),
        granted: permit.or(base.granted),
    }
}

#[derive(Clone, Debug)]
enum Phase {
    Preparing {
        promises: BTreeMap<NodeId, Option<(Ballot, TaskValue)>>,
    },
    Accepting {
        value: TaskValue,
        accepted: BTreeSet<NodeId>,
    },
    /// Beaten by a higher ballot: wait until the time, then prepare again.
    Backoff { until: Time },
}

/// One proposal in flight.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The task.
    pub id: TaskId,
    /// The task's header (sent with `Prepare` so lagging acceptors catch up).
    pub header: TaskHeader,
    /// The base version: this proposal runs the instance deciding `version + 1`.
    pub version: u64,
    /// The chosen value at `version`.
    pub base: TaskValue,
    /// What the node wants.
    pub intent: Intent,
    ballot: Ballot,
    /// Highest ballot seen in any reply of this instance.
    seen: Ballot,
    phase: Phase,
    round_started: Time,
    /// When the proposal started: the time its intent was checked at, and
    /// the time its value is computed and its events stamped at, so that
    /// an intent bounded in time (a claim before a deadline) that applied
    /// at the start still applies in phase 2.
    started_at: Time,
    /// Rounds of this proposal that ended without a decision (pre-empted
    /// or timed out). Backoff grows with it, so proposers that keep
    /// pre-empting each other spread out instead of duelling for ever.
    failed_rounds: u32,
    /// Whether any round of it sent `Accept`: until then no acceptor holds
    /// its value, so nothing of it can be chosen, ever.
    accepts_sent: bool,
    /// Whether its first round went under the runner's ballot
    /// ([`Ballot::runners`]), which then carries its value for good.
    runners_ballot_used: bool,
}

/// What a reply led to.
#[derive(Debug)]
pub enum Outcome {
    /// Messages to send.
    Send(Vec<(NodeId, LeaderlessMessage)>),
    /// `value` is chosen as `version` of the task (the proposal is over).
    Chosen {
        /// The finished proposal.
        proposal: Proposal,
        /// The new version.
        version: u64,
        /// Its value.
        value: TaskValue,
    },
    /// A `Settle` found nothing accepted in a majority: the base is the
    /// latest chosen value (the proposal is over).
    Settled {
        /// The finished proposal.
        proposal: Proposal,
    },
    /// An acceptor knows the chosen `value` at a later `version` (the
    /// proposal is over).
    Ahead {
        /// The finished proposal.
        proposal: Proposal,
        /// The later version.
        version: u64,
        /// Its value.
        value: TaskValue,
    },
}

/// Every proposal this node runs.
#[derive(Clone, Debug)]
pub struct Proposer {
    me: NodeId,
    /// This boot's generation: part of every ballot, so a restarted node
    /// never reuses a ballot.
    generation: u64,
    proposals: BTreeMap<TaskId, Proposal>,
    in_flight_max: usize,
    /// Most events a task's history keeps (`Limits::task_events_max`).
    events_max: usize,
    /// The highest round this node has used or seen: new ballots go above.
    round_seen: u64,
    /// Instances (task, base version) whose runner's ballot this boot used
    /// in a proposal abandoned before its instance was decided: the ballot
    /// carries one value only, so it is not used there again. Abandons of
    /// such proposals are rare (the record was dropped); past
    /// [`RUNNERS_BALLOTS_SPENT_MAX`] entries the runner's ballot is no
    /// longer used (phase 1 always: slower, never unsafe).
    runners_spent: BTreeMap<TaskId, u64>,
}

/// Most instances [`Proposer`] remembers having spent its runner's ballot in.
pub const RUNNERS_BALLOTS_SPENT_MAX: usize = 4096;

/// Why a proposal could not start. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// This node already runs a proposal for the task.
    Busy,
    /// `paxos_in_flight_max` proposals are running.
    Full,
}

impl Proposer {
    /// An idle proposer for this boot (`generation`) of node `me`, whose
    /// values keep at most `events_max` events per task.
    pub fn new(me: NodeId, generation: u64, in_flight_max: usize, events_max: usize) -> Proposer {
        assert!(in_flight_max > 0);
        assert!(events_max >= 2);
        Proposer {
            me,
            generation,
            proposals: BTreeMap::new(),
            in_flight_max,
            events_max,
            round_seen: 0,
            runners_spent: BTreeMap::new(),
        }
    }

    /// Whether a proposal for `id` runs.
    pub fn is_running(&self, id: TaskId) -> bool {
        self.proposals.contains_key(&id)
    }

    /// The intent of the proposal running for `id`.
    pub fn intent(&self, id: TaskId) -> Option<&Intent> {
        self.proposals.get(&id).map(|p| &p.intent)
    }

    /// The tasks of the running proposals whose intent passes `pred`, in
    /// id order.
    pub fn ids_with<'a>(
        &'a self,
        pred: impl Fn(&Intent) -> bool + 'a,
    ) -> impl Iterator<Item = TaskId> + 'a {
        self.proposals
            .iter()
            .filter(move |(_, p)| pred(&p.intent))
            .map(|(&id, _)| id)
    }

    /// How many proposals run.
    pub fn len(&self) -> usize {
        self.proposals.len()
    }

    /// Whether no proposal runs.
    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty()
    }

    fn next_ballot(&mut self, seen: Ballot) -> Ballot {
        self.round_seen = self.round_seen.max(seen.round);
        let b = Ballot::above(
            Ballot {
                round: self.round_seen,
                node: NodeId(u64::MAX),
                generation: u64::MAX,
            },
            self.me,
            self.generation,
        );
        self.round_seen = b.round;
        b
    }

    /// Starts a proposal for `id` on top of the chosen `(version, base)`.
    /// The caller checked that `intent.desired(..)` is `Some`.
    pub fn start(
        &mut self,
        now: Time,
        id: TaskId,
        header: TaskHeader,
        version: u64,
        base: TaskValue,
        intent: Intent,
    ) -> Result<Vec<(NodeId, LeaderlessMessage)>, StartError> {
        if self.proposals.contains_key(&id) {
            return Err(StartError::Busy);
        }
        if self.proposals.len() >= self.in_flight_max {
            return Err(StartError::Full);
        }
        assert!(
            intent == Intent::Settle
                || intent
                    .desired(self.me, self.generation, &header, &base, now)
                    .is_some()
        );
        if self.runners_spent.get(&id).is_some_and(|&v| v < version) {
            self.runners_spent.remove(&id); // that instance is decided
        }
        // The runner's result goes to phase 2 at once: see the module docs
        // of `crate::paxos`.
        let runners = self.runners_ballot(id, version, &base, &intent);
        let (ballot, phase) = match runners {
            Some(ballot) => {
                let value = intent
                    .desired_at(
                        self.me,
                        self.generation,
                        &header,
                        &base,
                        now,
                        self.events_max,
                    )
                    .expect("checked above");
                let accepted = BTreeSet::new();
                (ballot, Phase::Accepting { value, accepted })
            }
            None => {
                let promises = BTreeMap::new();
                (
                    self.next_ballot(Ballot::ZERO),
                    Phase::Preparing { promises },
                )
            }
        };
        let p = Proposal {
            id,
            header,
            version,
            base,
            intent,
            ballot,
            seen: Ballot::ZERO,
            phase,
            round_started: now,
            started_at: now,
            failed_rounds: 0,
            accepts_sent: runners.is_some(),
            runners_ballot_used: runners.is_some(),
        };
        let msgs = match &p.phase {
            Phase::Accepting { value, .. } => accept_msgs(id, &p, value.clone()),
            _ => prepare_msgs(id, &p),
        };
        self.proposals.insert(id, p);
        Ok(msgs)
    }

    /// The runner's ballot, if this proposal may skip phase 1 under it: a
    /// result (`Finish`) of this boot's own assignment, in an instance
    /// where this boot has not spent the ballot already.
    fn runners_ballot(
        &self,
        id: TaskId,
        version: u64,
        base: &TaskValue,
        intent: &Intent,
    ) -> Option<Ballot> {
        let Intent::Finish { epoch, .. } = intent else {
            return None;
        };
        let ballot = Ballot::runners(base)?;
        let mine = ballot.node == self.me && ballot.generation == self.generation;
        let assignment = matches!(base.state, TaskState::Running { epoch: e, .. } if e == *epoch);
        let spent = self.runners_spent.get(&id) == Some(&version)
            || self.runners_spent.len() >= RUNNERS_BALLOTS_SPENT_MAX;
        (version > 0 && mine && assignment && !spent).then_some(ballot)
    }

    /// A `Promise` from `from`.
    pub fn on_promise(
        &mut self,
        from: NodeId,
        id: TaskId,
        version: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, TaskValue)>,
    ) -> Outcome {
        let (me, boot, events_max) = (self.me, self.generation, self.events_max);
        let Some(p) = self.proposals.get_mut(&id) else {
            return Outcome::Send(vec![]);
        };
        if p.version != version || p.ballot != ballot || !p.base.replicas.contains(&from) {
            return Outcome::Send(vec![]); // a reply to an older round
        }
        let Phase::Preparing { promises } = &mut p.phase else {
            return Outcome::Send(vec![]);
        };
        promises.insert(from, accepted);
        if promises.len() < majority(p.base.replicas.len()) {
            return Outcome::Send(vec![]);
        }
        // Keep the value accepted under the highest ballot, if any.
        let value = match promises.values().flatten().max_by_key(|(b, _)| *b) {
            Some((_, v)) => v.clone(),
            None if p.intent == Intent::Settle => {
                let proposal = self.proposals.remove(&id).expect("present above");
                return Outcome::Settled { proposal };
            }
            None => p
                .intent
                .desired_at(me, boot, &p.header, &p.base, p.started_at, events_max)
                .expect("checked at start; the base does not change within a proposal"),
        };
        p.phase = Phase::Accepting {
            value: value.clone(),
            accepted: BTreeSet::new(),
        };
        p.accepts_sent = true;
        Outcome::Send(accept_msgs(id, p, value))
    }

    /// An `Accepted` from `from`.
    pub fn on_accepted(
        &mut self,
        from: NodeId,
        id: TaskId,
        version: u64,
        ballot: Ballot,
    ) -> Outcome {
        let Some(p) = self.proposals.get_mut(&id) else {
            return Outcome::Send(vec![]);
        };
        if p.version != version || p.ballot != ballot || !p.base.replicas.contains(&from) {
            return Outcome::Send(vec![]);
        }
        let Phase::Accepting { accepted, .. } = &mut p.phase else {
            return Outcome::Send(vec![]);
        };
        accepted.insert(from);
        if accepted.len() < majority(p.base.replicas.len()) {
            return Outcome::Send(vec![]);
        }
        let proposal = self.proposals.remove(&id).expect("present above");
        let Phase::Accepting { value, .. } = &proposal.phase else {
            unreachable!("matched above")
        };
        let value = value.clone();
        Outcome::Chosen {
            version: version + 1,
            value,
            proposal,
        }
    }

    /// A `Reject`: an acceptor promised `promised` > our ballot. Back off
    /// for `backoff`, then prepare again above it.
    pub fn on_reject(
        &mut self,
        now: Time,
        id: TaskId,
        version: u64,
        ballot: Ballot,
        promised: Ballot,
        backoff: impl FnOnce(u32) -> Duration,
    ) {
        self.round_seen = self.round_seen.max(promised.round);
        let Some(p) = self.proposals.get_mut(&id) else {
            return;
        };
        if p.version != version || p.ballot != ballot {
            return;
        }
        p.seen = p.seen.max(promised);
        if !matches!(p.phase, Phase::Backoff { .. }) {
            p.failed_rounds = p.failed_rounds.saturating_add(1);
            p.phase = Phase::Backoff {
                until: now + backoff(p.failed_rounds),
            };
        }
    }

    /// An `Ahead`: the instance is over; `(version, value)` is chosen.
    pub fn on_ahead(&mut self, id: TaskId, version: u64, value: TaskValue) -> Option<Outcome> {
        let p = self.proposals.get(&id)?;
        if version <= p.version {
            return None;
        }
        let proposal = self.proposals.remove(&id).expect("present above");
        Some(Outcome::Ahead {
            proposal,
            version,
            value,
        })
    }

    /// Drops the proposal for `id` (the node learned it is moot).
    pub fn abandon(&mut self, id: TaskId) -> Option<Proposal> {
        let p = self.proposals.remove(&id)?;
        if p.runners_ballot_used {
            self.runners_spent.insert(id, p.version);
        }
        Some(p)
    }

    /// Abandons the proposal on `id` if none of its rounds sent `Accept`
    /// (so its value can never be chosen: abandoning it loses nothing
    /// decided). Returns whether a proposal on `id` is left running.
    pub fn abandon_unaccepted(&mut self, id: TaskId) -> bool {
        match self.proposals.get(&id) {
            Some(p) if !p.accepts_sent => {
                self.proposals.remove(&id);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// When the proposal on `id` started, if one runs.
    pub fn started_at(&self, id: TaskId) -> Option<Time> {
        self.proposals.get(&id).map(|p| p.started_at)
    }

    /// The header of the record this node's proposal on `id` was made for.
    pub fn header(&self, id: TaskId) -> Option<&TaskHeader> {
        self.proposals.get(&id).map(|p| &p.header)
    }

    /// Retries rounds that timed out or finished backing off, with a new
    /// ballot. `jitter` spreads the retries of duelling proposers.
    pub fn tick(
        &mut self,
        now: Time,
        round_timeout: Duration,
        mut backoff: impl FnMut(u32) -> Duration,
    ) -> Vec<(NodeId, LeaderlessMessage)> {
        let mut out = Vec::new();
        let mut due = Vec::new();
        for (&id, p) in self.proposals.iter_mut() {
            match p.phase {
                Phase::Backoff { until } if now >= until => due.push(id),
                Phase::Backoff { .. } => {}
                // A round with no decision in time backs off like a
                // pre-empted one rather than starting again at once: when
                // acceptors are slow (a deep fsync queue), an immediate
                // retry only lengthens the queue every round waits in.
                _ if now.saturating_since(p.round_started) >= round_timeout => {
                    p.failed_rounds = p.failed_rounds.saturating_add(1);
                    p.phase = Phase::Backoff {
                        until: now + backoff(p.failed_rounds),
                    };
                }
                _ => {}
            }
        }
        for id in due {
            let seen = self.proposals[&id].seen;
            let ballot = self.next_ballot(seen);
            let p = self.proposals.get_mut(&id).expect("listed above");
            p.ballot = ballot;
            p.phase = Phase::Preparing {
                promises: BTreeMap::new(),
            };
            p.round_started = now;
            out.extend(prepare_msgs(id, p));
        }
        out
    }
}

fn accept_msgs(id: TaskId, p: &Proposal, value: TaskValue) -> Vec<(NodeId, LeaderlessMessage)> {
    p.base
        .replicas
        .iter()
        .map(|&to| {
            (
                to,
                LeaderlessMessage::Accept {
                    id,
                    version: p.version,
                    ballot: p.ballot,
                    value: value.clone(),
                },
            )
        })
        .collect()
}

fn prepare_msgs(id: TaskId, p: &Proposal) -> Vec<(NodeId, LeaderlessMessage)> {
    p.base
        .replicas
        .iter()
        .map(|&to| {
            (
                to,
                LeaderlessMessage::Prepare {
                    id,
                    header: p.header.clone(),
                    version: p.version,
                    base: p.base.clone(),
                    ballot: p.ballot,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> TaskHeader {
        crate::record::test_header(1)
    }

    fn first_ballot(generation: u64) -> Ballot {
        let mut p = Proposer::new(NodeId(1), generation, 4, 16);
        let msgs = p
            .start(
                Time::ZERO,
                TaskId(1),
                header(),
                0,
                TaskValue::initial(&header()),
                Intent::Claim { permit: None },
            )
            .expect("starts");
        match &msgs[0].1 {
            LeaderlessMessage::Prepare { ballot, .. } => *ballot,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_restarted_node_never_reuses_a_ballot_of_an_earlier_boot() {
        // A restarted node has forgotten its rounds: the same round must
        // still give a different ballot (regression: crash between two
        // proposals of one instance).
        let before = first_ballot(0);
        let after = first_ballot(1);
        assert_eq!(before.round, after.round);
        assert_ne!(before, after);
    }

    /// Version 1 of a task claimed by boot `boot` of `node`, epoch 1.
    fn running(node: u64, boot: u64) -> TaskValue {
        let mut v = TaskValue::initial(&header());
        v.state = TaskState::Running {
            node: NodeId(node),
            epoch: Epoch(1),
        };
        v.epoch = Epoch(1);
        v.runner_boot = boot;
        v
    }

    fn finish() -> Intent {
        Intent::Finish {
            epoch: Epoch(1),
            outcome: TaskOutcome::Success(vec![]),
            jitter: 0,
        }
    }

    fn first_message(msgs: &[(NodeId, LeaderlessMessage)]) -> (&'static str, Ballot) {
        match &msgs[0].1 {
            LeaderlessMessage::Prepare { ballot, .. } => ("prepare", *ballot),
            LeaderlessMessage::Accept { ballot, .. } => ("accept", *ballot),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_runner_sends_its_result_under_its_ballot_without_phase_1_once_per_instance() {
        let mut p = Proposer::new(NodeId(1), 7, 4, 16);
        let msgs = p
            .start(Time::ZERO, TaskId(1), header(), 1, running(1, 7), finish())
            .expect("starts");
        let runners = Ballot::runners(&running(1, 7)).expect("a running base");
        assert_eq!(first_message(&msgs), ("accept", runners));
        assert_eq!(msgs.len(), 3, "to every replica");
        // Abandoned before its instance was decided: the ballot holds that
        // value, so a second result of the same instance prepares.
        assert!(p.abandon(TaskId(1)).is_some());
        let msgs = p
            .start(Time::ZERO, TaskId(1), header(), 1, running(1, 7), finish())
            .expect("starts");
        let (kind, ballot) = first_message(&msgs);
        assert_eq!(kind, "prepare");
        assert!(ballot > runners && !ballot.is_runners());
        p.abandon(TaskId(1));
        // The next instance (a later version) has a ballot of its own.
        let msgs = p
            .start(Time::ZERO, TaskId(1), header(), 3, running(1, 7), finish())
            .expect("starts");
        assert_eq!(first_message(&msgs).0, "accept");
        assert!(
            p.runners_spent.is_empty(),
            "the decided instance is forgotten"
        );
    }

    #[test]
    fn only_the_runners_own_boot_and_only_a_result_skip_phase_1() {
        let start = |me: u64, boot: u64, base: TaskValue, intent: Intent| {
            let mut p = Proposer::new(NodeId(me), boot, 4, 16);
            let msgs = p
                .start(Time::ZERO, TaskId(1), header(), 1, base, intent)
                .expect("starts");
            first_message(&msgs).0
        };
        assert_eq!(start(1, 7, running(1, 7), finish()), "accept");
        // The runner restarted: its new boot's ballot is not the runner's.
        // (It would not finish an assignment of an earlier boot anyway.)
        assert_eq!(start(1, 8, running(1, 7), finish()), "prepare");
        let heartbeat = Intent::Heartbeat {
            epoch: Epoch(1),
            progress: String::new(),
        };
        assert_eq!(start(1, 7, running(1, 7), heartbeat), "prepare");
        let reclaim = Intent::Reclaim {
            owner: NodeId(1),
            epoch: Epoch(1),
            reason: SupersedeReason::RunnerDeclaredDead,
            permit: None,
        };
        assert_eq!(start(2, 3, running(1, 7), reclaim), "prepare");
    }

    #[test]
    fn only_as_many_proposals_as_the_limit_run_and_one_per_task() {
        let mut p = Proposer::new(NodeId(1), 0, 2, 16);
        let start = |p: &mut Proposer, id| {
            p.start(
                Time::ZERO,
                TaskId(id),
                header(),
                0,
                TaskValue::initial(&header()),
                Intent::Claim { permit: None },
            )
        };
        assert!(start(&mut p, 1).is_ok());
        assert_eq!(start(&mut p, 1).unwrap_err(), StartError::Busy);
        assert!(start(&mut p, 2).is_ok());
        assert_eq!(start(&mut p, 3).unwrap_err(), StartError::Full);
        assert_eq!(p.len(), 2);
    }

    /// `cohort sim` seed 642: four proposers of the same instances
    /// retried at once after every timeout and within a fixed window after
    /// every reject, so under slow fsyncs they pre-empted each other for the
    /// whole liveness phase. Each failed round now backs off, and the node
    /// is asked for a wait that knows how many rounds failed.
    #[test]
    fn a_round_that_times_out_or_is_pre_empted_backs_off_longer_each_time() {
        let mut p = Proposer::new(NodeId(1), 0, 4, 16);
        let id = TaskId(1);
        let first = p
            .start(
                Time::ZERO,
                id,
                header(),
                0,
                TaskValue::initial(&header()),
                Intent::Claim { permit: None },
            )
            .expect("starts");
        let LeaderlessMessage::Prepare { ballot, .. } = first[0].1 else {
            panic!("{:?}", first[0].1)
        };
        let timeout = Duration::from_millis(200);
        let mut asked = Vec::new();
        // Round 1 times out: no prepare at once, a backoff instead.
        let at = |ms| Time::from_millis(ms);
        let out = p.tick(at(200), timeout, |n| {
            asked.push(n);
            Duration::from_millis(100)
        });
        assert!(out.is_empty(), "a timed-out round waits before retrying");
        assert!(p.tick(at(250), timeout, |_| unreachable!()).is_empty());
        let out = p.tick(at(300), timeout, |_| unreachable!());
        assert_eq!(out.len(), 3, "round 2 prepares at every replica");
        let LeaderlessMessage::Prepare { ballot: second, .. } = out[0].1 else {
            panic!("{:?}", out[0].1)
        };
        assert!(second > ballot);
        // Round 2 is pre-empted: the wait asked for counts two failures.
        let promised = Ballot::above(second, NodeId(2), 0);
        p.on_reject(at(310), id, 0, second, promised, |n| {
            asked.push(n);
            Duration::from_millis(400)
        });
        // A second reject of the same round neither counts nor extends it.
        p.on_reject(at(320), id, 0, second, promised, |_| unreachable!());
        assert!(p.tick(at(700), timeout, |_| unreachable!()).is_empty());
        let out = p.tick(at(710), timeout, |_| unreachable!());
        let LeaderlessMessage::Prepare { ballot: third, .. } = out[0].1 else {
            panic!("{:?}", out[0].1)
        };
        assert!(third > promised, "the next round outbids what it saw");
        assert_eq!(asked, vec![1, 2]);
    }
}
