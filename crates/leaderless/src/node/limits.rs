//! The node's side of concurrency and rate limits ([`crate::permit`]):
//! asking for places before claiming a limited task, giving them back, and
//! keeping the permit records this node is the first live replica of
//! (batching asks into proposals, sweeping places nobody gives back).

use super::LeaderlessNode;
use crate::message::{LeaderlessMessage, ReadState};
use crate::paxos::proposer::{Intent, StartError};
use crate::permit::{permit_id, permit_key, permit_task, Ask, PermitChange};
use crate::record::{TaskHeader, TaskValue};
use crate::tasks::ReadPurpose;
use cohort_core::{
    Action, Epoch, NodeId, Note, RequestId, SupersedeReason, TaskEventKind, TaskId, TaskLimit,
    TaskState, Time,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Internal request ids (creating a permit record, reading a task a place
/// is held for) live above this bit: the drivers number client requests
/// from 1 and batches use bit 63.
const PERMIT_REQUEST_BIT: u64 = 1 << 62;

/// What a keeper holds for one permit record.
#[derive(Debug, Default)]
pub(super) struct KeeperQueue {
    /// The limit key.
    key: String,
    /// Places asked for, by whom, under which limit. An ask that does not
    /// fit yet waits here (granted as soon as a place frees) until
    /// `2 * permit_ask_interval_ms` after it was last made.
    acquire: Vec<(NodeId, Ask, TaskLimit)>,
    /// When each ask of `acquire` was last made.
    asked_at: BTreeMap<(NodeId, Ask), Time>,
    /// Places given back.
    release: Vec<Ask>,
    /// What the proposal running on the record carries.
    proposing: Vec<(NodeId, Ask, TaskLimit)>,
    proposing_release: Vec<Ask>,
    /// When this node last started creating the record (a submit of its
    /// body), if it does not hold it.
    created_at: Option<Time>,
}

/// Places asked for and given back, on their way to one keeper.
type AskBatch = (Vec<(Ask, TaskLimit)>, Vec<Ask>);

/// Limits bookkeeping of one node.
#[derive(Debug, Default)]
pub(super) struct Limiter {
    /// Grants this node holds, by task: the epoch and the stamp.
    grants: BTreeMap<TaskId, (Epoch, Time)>,
    /// Asks sent and not answered with a grant, by task: the epoch and
    /// when (asked again after `permit_ask_interval_ms`).
    asked: BTreeMap<TaskId, (Epoch, Time)>,
    /// Asks to send at the end of this batch: per keeper, per key.
    outbox: BTreeMap<(NodeId, String), AskBatch>,
    /// The permit records this node keeps, by id.
    queues: BTreeMap<TaskId, KeeperQueue>,
    /// The permit records this node has stored (the sweep walks these
    /// rather than every record); dropped once the record is gone.
    pub(super) held_records: std::collections::BTreeSet<TaskId>,
    /// When the last sweep ran, and when each place was last checked.
    swept_at: Option<Time>,
    checked: BTreeMap<(TaskId, TaskId), Time>,
    /// Internal requests in flight: a record creation, or a check of a
    /// task's place (permit id, task, epoch).
    creates: BTreeMap<RequestId, TaskId>,
    checks: BTreeMap<RequestId, (TaskId, Ask)>,
    /// Permit records whose first write under an older ring a lookup found
    /// held by `W` of its replicas, by id, with that ring: a proposal on
    /// it can gather a majority, so the keeper proposes on it again. A
    /// move would take it past version 0, but none comes when the new
    /// ring places it on the same replicas. At most one entry per record
    /// this node keeps; dropped once the record is past version 0 or gone.
    durable_first_writes: BTreeMap<TaskId, u64>,
    next_request: u64,
    /// Asks a keeper dropped (queue full, or malformed), ever.
    pub(super) asks_dropped: u64,
    /// Grants fenced by a sweep (their claim never came), ever.
    pub(super) fences: u64,
    /// Since when each permit record this node keeps has been seen idle
    /// (by the sweep): retired `permit_idle_retire_ms` later. At most one
    /// entry per record this node holds.
    idle_since: BTreeMap<TaskId, Time>,
    /// Permit records this keeper proposed to retire, ever.
    pub(super) retires: u64,
    /// When this keeper first proposed on each record it holds at version
    /// 0: a first write that lost a race with another keeper's (another
    /// incarnation) is answered by no acceptor, so after
    /// `permit_fence_after_ms` without a chosen value the keeper looks the
    /// record up instead (`cohort sim` limits gate, seed 1171, outside the
    /// CI range). At most one entry per record this node keeps.
    first_write_proposed: BTreeMap<TaskId, Time>,
}

impl KeeperQueue {
    /// Queues `from`'s ask for a place at the back, unless it is queued
    /// or being proposed already (an ask made again because its answer
    /// was lost, or it waits): such an ask keeps its turn.
    fn ask(&mut self, now: Time, from: NodeId, ask: Ask, limit: TaskLimit) {
        let queued = |(n, a, _): &(NodeId, Ask, TaskLimit)| *n == from && *a == ask;
        if !self.acquire.iter().any(queued) && !self.proposing.iter().any(queued) {
            self.acquire.push((from, ask.clone(), limit));
        }
        self.asked_at.insert((from, ask), now);
    }

    /// Puts the asks a proposal carried and did not grant back in the
    /// queue, ahead of those that came while it ran, so asks are granted
    /// in the order they first came. (Behind them, as it once was, every
    /// round let the newcomers overtake the waiting: a concurrency-1 key
    /// under a steady flow of tasks served its oldest last, seed 574 of
    /// the leaderless limits gate.)
    fn refused(&mut self, rest: Vec<(NodeId, Ask, TaskLimit)>) {
        self.acquire.splice(0..0, rest);
    }
}

impl Limiter {
    /// Asks queued or being proposed at this keeper, all records.
    fn queued(&self) -> usize {
        self.queues
            .values()
            .map(|q| {
                q.acquire.len() + q.release.len() + q.proposing.len() + q.proposing_release.len()
            })
            .sum()
    }

    fn request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(PERMIT_REQUEST_BIT | self.next_request)
    }
}

/// Whether a place held for `epoch` may be given back, as `value` (a chosen
/// value of the task) shows: it is final, or pending with an epoch at
/// least `epoch` (its run under `epoch` ended, or a claim under it can no
/// longer be chosen). Versions only move on and epochs only grow, so any
/// chosen value that says so says it for good.
pub(super) fn releasable(value: &TaskValue, epoch: Epoch) -> bool {
    value.state.is_final() || (value.state == TaskState::Pending && value.epoch >= epoch)
}

/// The notes of `task`'s assignment under `epoch` having ended, as
/// `value` shows (see [`releasable`]): the keeper notes them before it
/// gives the place back, for the proposer that chose the end may have
/// crashed before it noted it.
fn end_notes(task: TaskId, epoch: Epoch, value: &TaskValue) -> Vec<Note> {
    if value.state.is_final() {
        return vec![Note::Decided {
            task,
            state: value.state.clone(),
        }];
    }
    let reason = value
        .history
        .events
        .iter()
        .rev()
        .find_map(|e| match &e.what {
            TaskEventKind::RunnerLost {
                epoch: e2, reason, ..
            } if *e2 == epoch => Some(*reason),
            TaskEventKind::AttemptFailed { epoch: e2, .. } if *e2 == epoch => {
                Some(super::failed_reason(value, epoch))
            }
            _ => None,
        })
        .unwrap_or(SupersedeReason::Released);
    vec![Note::Superseded {
        task,
        epoch,
        reason,
    }]
}

impl LeaderlessNode {
    /// The node asked for `key`'s places: the first live replica of its
    /// permit record.
    fn keeper_of(&self, key: &str) -> Option<NodeId> {
        self.first_live(&self.replicas_of(permit_id(key)))
    }

    /// The grant this node holds for a claim of `id` under `epoch` at
    /// `now`: one stamped less than `permit_grant_use_ms` ago.
    pub(super) fn grant_for(&self, now: Time, id: TaskId, epoch: Epoch) -> Option<(Epoch, Time)> {
        let use_within = Duration::from_millis(self.config.permit_grant_use_ms);
        self.limiter
            .grants
            .get(&id)
            .copied()
            .filter(|(e, at)| *e == epoch && now < *at + use_within)
    }

    /// Forgets the grant held for `id`, if any.
    pub(super) fn drop_grant(&mut self, id: TaskId) {
        self.limiter.grants.remove(&id);
    }

    /// Asks for a place for `id` under `epoch` (sent at the batch's end),
    /// unless asked recently.
    pub(super) fn ask_permit(&mut self, now: Time, id: TaskId, epoch: Epoch, limit: &TaskLimit) {
        let interval = Duration::from_millis(self.config.permit_ask_interval_ms);
        if let Some((e, at)) = self.limiter.asked.get(&id) {
            if *e == epoch && now < *at + interval {
                return;
            }
        }
        let Some(keeper) = self.keeper_of(&limit.key) else {
            return;
        };
        self.limiter.asked.insert(id, (epoch, now));
        let entry = self
            .limiter
            .outbox
            .entry((keeper, limit.key.clone()))
            .or_default();
        entry.0.push((Ask { task: id, epoch }, limit.clone()));
    }

    /// Gives back `id`'s place under `epoch` in `key`'s record.
    pub(super) fn release_permit(&mut self, key: &str, id: TaskId, epoch: Epoch) {
        self.limiter.grants.remove(&id);
        let Some(keeper) = self.keeper_of(key) else {
            return; // the keeper's sweep gives it back
        };
        let entry = self
            .limiter
            .outbox
            .entry((keeper, key.to_string()))
            .or_default();
        entry.1.push(Ask { task: id, epoch });
    }

    /// Drops grants and asks for tasks whose epoch moved on, or that this
    /// node no longer holds: at most one of each per active record.
    pub(super) fn prune_grants(&mut self, now: Time) {
        let use_within = Duration::from_millis(self.config.permit_grant_use_ms);
        self.limiter
            .grants
            .retain(|_, (_, at)| now < *at + use_within);
        let records = &self.records;
        let current = |id: &TaskId, e: &Epoch| {
            records
                .get(id)
                .is_some_and(|r| !r.value.state.is_final() && r.value.epoch.next() == *e)
        };
        self.limiter.grants.retain(|id, (e, _)| current(id, e));
        self.limiter.asked.retain(|id, (e, _)| current(id, e));
    }

    /// Sends the asks gathered in this batch, one message per keeper and key.
    pub(super) fn send_permit_asks(&mut self) {
        let outbox = std::mem::take(&mut self.limiter.outbox);
        for ((keeper, key), (acquire, release)) in outbox {
            self.send(
                keeper,
                LeaderlessMessage::PermitAsk {
                    key,
                    acquire,
                    release,
                },
            );
        }
    }

    /// A node asks this one, as `key`'s keeper, for places and gives some
    /// back. Queued, and proposed at the batch's end.
    pub(super) fn on_permit_ask(
        &mut self,
        now: Time,
        from: NodeId,
        key: String,
        acquire: Vec<(Ask, TaskLimit)>,
        release: Vec<Ask>,
    ) {
        let pid = permit_id(&key);
        let well_formed = cohort_core::TaskLimit {
            key: key.clone(),
            concurrency_max: 1,
            rate_max: 0,
            rate_window_ms: 0,
        }
        .validate()
        .is_ok()
            && acquire
                .iter()
                .all(|(_, l)| l.key == key && self.limit_enforceable(l).is_ok());
        let n = acquire.len() + release.len();
        if !well_formed
            || !self.replicas_of(pid).contains(&self.me())
            || self.limiter.queued() + n > self.config.permit_asks_max
        {
            // Not this node's to keep (the asker's ring differs), garbage,
            // or too much at once: the asker asks again, the sweep gives
            // back what is not released.
            self.limiter.asks_dropped += n as u64;
            return;
        }
        let q = self.limiter.queues.entry(pid).or_default();
        q.key = key;
        for (ask, limit) in acquire {
            q.ask(now, from, ask, limit);
        }
        for ask in release {
            if !q.release.contains(&ask) && !q.proposing_release.contains(&ask) {
                q.release.push(ask);
            }
        }
    }

    /// Whether this mode can enforce `limit`: its numbers fit in a permit
    /// record (`permit_holders_max`, `permit_starts_max`).
    pub(super) fn limit_enforceable(&self, limit: &TaskLimit) -> Result<(), String> {
        limit.validate()?;
        if limit.concurrency_max > self.config.permit_holders_max {
            return Err(format!(
                "concurrency_max {} is above this leaderless cluster's permit_holders_max {}",
                limit.concurrency_max, self.config.permit_holders_max
            ));
        }
        if limit.rate_max > self.config.permit_starts_max {
            return Err(format!(
                "rate_max {} is above this leaderless cluster's permit_starts_max {}",
                limit.rate_max, self.config.permit_starts_max
            ));
        }
        Ok(())
    }

    /// A keeper's answer: grants are claimed at the batch's end.
    pub(super) fn on_permit_answer(&mut self, granted: Vec<(Ask, Time)>) {
        for (ask, at) in granted {
            let wanted = self
                .limiter
                .asked
                .get(&ask.task)
                .is_some_and(|(e, _)| *e == ask.epoch);
            if wanted {
                self.limiter.asked.remove(&ask.task);
                self.limiter.grants.insert(ask.task, (ask.epoch, at));
                self.claim_soon = true;
            }
        }
    }

    /// Proposes what the keeper queues hold, one proposal per record, for
    /// the records with none running; answers at once what the record
    /// already settles.
    pub(super) fn pump_permits(&mut self, now: Time) {
        let pids: Vec<TaskId> = self.limiter.queues.keys().copied().collect();
        for pid in pids {
            let durable = self.limiter.durable_first_writes.get(&pid).copied();
            let older_first_write = self
                .records
                .get(&pid)
                .filter(|r| r.version == 0 && r.header.ring_epoch < self.ring.ring.epoch)
                .map(|r| r.header.ring_epoch);
            if older_first_write != durable {
                self.limiter.durable_first_writes.remove(&pid);
            }
            let first_write = self.records.get(&pid).is_some_and(|r| r.version == 0);
            if !first_write {
                self.limiter.first_write_proposed.remove(&pid);
            }
            let fence_after = Duration::from_millis(self.config.permit_fence_after_ms);
            let unanswered = self
                .limiter
                .first_write_proposed
                .get(&pid)
                .is_some_and(|at| now >= *at + fence_after);
            if unanswered {
                self.limiter.first_write_proposed.remove(&pid);
            }
            let stale_first_write =
                (older_first_write.is_some() && older_first_write != durable) || unanswered;
            let own = matches!(self.proposer.intent(pid), Some(Intent::Permits(_)));
            if own && stale_first_write {
                // Started before the ring changed, on a first write a
                // majority may now refuse to create: it may never end.
                // Dropped (its asks go back below); the record is looked
                // up again below.
                self.proposer.abandon(pid);
            }
            if self.proposer.is_running(pid) && !stale_first_write {
                continue; // this keeper's own, or a move of the record
            }
            let q = self.limiter.queues.get_mut(&pid).expect("listed");
            // A proposal dropped rather than ended: its asks go back.
            let back = std::mem::take(&mut q.proposing);
            q.acquire.splice(0..0, back);
            let back = std::mem::take(&mut q.proposing_release);
            q.release.splice(0..0, back);
            if q.acquire.is_empty() && q.release.is_empty() {
                self.limiter.queues.remove(&pid);
                continue;
            }
            let Some(rec) = self.records.get(&pid) else {
                self.create_permit_record(now, pid);
                continue;
            };
            if stale_first_write {
                // A first write under an older ring, which may have missed
                // replicas that now refuse to create it (the creation
                // fence): a proposal on it may never gather a majority.
                // Looked up again instead: kept if a majority holds it
                // (the rebalancing moves it, and then it serves), else
                // forgotten and written anew under this ring.
                self.create_permit_record(now, pid);
                continue;
            }
            let (header, version, base) = (rec.header.clone(), rec.version, rec.value.clone());
            let q = self.limiter.queues.get_mut(&pid).expect("listed");
            let change = PermitChange {
                release: std::mem::take(&mut q.release),
                acquire: q
                    .acquire
                    .iter()
                    .map(|(_, ask, limit)| (ask.clone(), limit.clone()))
                    .collect(),
                starts_max: self.config.permit_starts_max as usize,
                restamp_after_ms: self.config.permit_grant_use_ms,
            };
            let acquire = std::mem::take(&mut q.acquire);
            let intent = Intent::Permits(change.clone());
            let changes = intent
                .desired(self.me(), self.generation, &header, &base, now)
                .is_some();
            if !changes {
                // The record settles every ask as it is: those it grants
                // are answered; the rest wait for a place to free (a
                // release, a rate window passing) while their askers still
                // want them.
                let keep_for = Duration::from_millis(2 * self.config.permit_ask_interval_ms);
                let (granted, waiting): (Vec<_>, Vec<_>) = acquire
                    .into_iter()
                    .partition(|(_, ask, _)| base.permits.grant_of(ask.task, ask.epoch).is_some());
                self.answer_asks(&base, granted);
                let q = self.limiter.queues.get_mut(&pid).expect("listed");
                let asked_at = &q.asked_at;
                q.acquire = waiting
                    .into_iter()
                    .filter(|(n, ask, _)| {
                        asked_at
                            .get(&(*n, ask.clone()))
                            .is_some_and(|at| now < *at + keep_for)
                    })
                    .collect();
                let acquire = &q.acquire;
                q.asked_at
                    .retain(|(n, ask), _| acquire.iter().any(|(m, a, _)| m == n && a == ask));
                continue;
            }
            match self.propose(now, pid, header, version, base, intent) {
                Ok(()) => {
                    if version == 0 {
                        self.limiter.first_write_proposed.entry(pid).or_insert(now);
                    }
                    let q = self.limiter.queues.get_mut(&pid).expect("listed");
                    q.proposing = acquire;
                    q.proposing_release = change.release;
                }
                Err(StartError::Busy) => unreachable!("checked above"),
                Err(StartError::Full) => {
                    // Too many proposals here: back in the queue.
                    let q = self.limiter.queues.get_mut(&pid).expect("listed");
                    q.acquire = acquire;
                    q.release = change.release;
                }
            }
        }
    }

    /// Tells each asker which of its asks `value` (the permit record's
    /// latest value) grants; the rest are refused (asked again later).
    fn answer_asks(&mut self, value: &TaskValue, asks: Vec<(NodeId, Ask, TaskLimit)>) {
        let mut answers: BTreeMap<NodeId, Vec<(Ask, Time)>> = BTreeMap::new();
        for (from, ask, _) in asks {
            if let Some(at) = value.permits.grant_of(ask.task, ask.epoch) {
                answers.entry(from).or_default().push((ask, at));
            }
        }
        for (to, granted) in answers {
            self.send(to, LeaderlessMessage::PermitAnswer { granted });
        }
    }

    /// This keeper's proposal on permit record `pid` ended with `value`
    /// the latest chosen: the asks it grants are answered, the rest go
    /// back to the queue (the next pump refuses what the record settles
    /// and proposes again what may still fit).
    pub(super) fn permits_over(&mut self, pid: TaskId, value: &TaskValue) {
        let Some(q) = self.limiter.queues.get_mut(&pid) else {
            return;
        };
        let asks = std::mem::take(&mut q.proposing);
        let releases = std::mem::take(&mut q.proposing_release);
        let (granted, rest): (Vec<_>, Vec<_>) = asks
            .into_iter()
            .partition(|(_, ask, _)| value.permits.grant_of(ask.task, ask.epoch).is_some());
        let stale = |ask: &Ask| {
            value
                .permits
                .held
                .get(&ask.task)
                .is_some_and(|h| h.epoch <= ask.epoch)
        };
        let releases: Vec<Ask> = releases.into_iter().filter(stale).collect();
        let q = self.limiter.queues.get_mut(&pid).expect("present");
        q.refused(rest);
        q.release.extend(releases);
        self.answer_asks(value, granted);
    }

    /// Writes the permit record `pid` (this node is one of its replicas
    /// and lacks it), at most once per `permit_ask_interval_ms`: a submit
    /// of its body, which finds the record if it exists elsewhere.
    fn create_permit_record(&mut self, now: Time, pid: TaskId) {
        let interval = Duration::from_millis(self.config.permit_ask_interval_ms);
        let q = self.limiter.queues.get_mut(&pid).expect("queued");
        if q.created_at.is_some_and(|at| now < at + interval) {
            return;
        }
        q.created_at = Some(now);
        // The body this node holds (a first write to look up again), else
        // a new incarnation's: a lookup that finds another incarnation of
        // the key's record adopts it (`read_done`).
        let task = match self.records.get(&pid) {
            Some(rec) => rec.header.task.clone(),
            None => {
                // The one after the last purged here (0 if none): every
                // keeper that knows the same tombstone creates the same
                // body, so keepers creating at once (or one trying again)
                // do not race with bodies of their own (`cohort sim`
                // limits gate, seed 1171: three replicas each held another
                // first write, none a majority). One that knows an older
                // tombstone is refused (covered) and told the newer one.
                let after = self.tombstones.get(pid).and_then(|t| t.incarnation);
                let next = after.map_or(Time::ZERO, |a| a + Duration::from_millis(1));
                permit_task(&q.key, next)
            }
        };
        if self.ops.len() >= self.config.requests_in_flight_max {
            return;
        }
        let request = self.limiter.request();
        self.limiter.creates.insert(request, pid);
        // Always looked up first: another incarnation of the record may
        // live on a majority that this node missed (it was cut off while
        // the record it purged was brought back), and a new one's first
        // write would only reach this node.
        self.look_up_then_create(now, request, pid, task);
    }

    /// A submit lookup found `header`, a first write under an older ring,
    /// held by `W` of its replicas: if `request` is this keeper's creation
    /// of that very record, a proposal on it can gather a majority again.
    pub(super) fn note_durable_first_write(&mut self, request: RequestId, header: &TaskHeader) {
        let Some(&pid) = self.limiter.creates.get(&request) else {
            return;
        };
        if self
            .records
            .get(&pid)
            .is_some_and(|r| r.version == 0 && r.header == *header)
        {
            self.limiter
                .durable_first_writes
                .insert(pid, header.ring_epoch);
        }
    }

    /// Takes the answer to an internal request; `false` if `request` is
    /// not one (answer the client as usual).
    pub(super) fn internal_reply(&mut self, request: RequestId) -> bool {
        if request.0 & PERMIT_REQUEST_BIT == 0 || request.0 & (1 << 63) != 0 {
            return false;
        }
        // A creation is over (the record is here now, or the next pump
        // tries again); a check that failed is made again by a later sweep.
        self.limiter.creates.remove(&request);
        self.limiter.checks.remove(&request);
        true
    }

    /// The keeper's sweep, every `permit_sweep_interval_ms`: each place
    /// held longer than that in a record this node keeps is checked
    /// against its task's chosen value (this node's record of it, or a
    /// quorum read), given back when the task shows it [`releasable`],
    /// and fenced when its grant was never used.
    pub(super) fn sweep_permits(&mut self, now: Time) {
        let interval = Duration::from_millis(self.config.permit_sweep_interval_ms);
        if self.limiter.swept_at.is_some_and(|at| now < at + interval) {
            return;
        }
        self.limiter.swept_at = Some(now);
        self.retire_idle_permits(now);
        let me = self.me();
        let records = &self.records;
        self.limiter
            .held_records
            .retain(|pid| records.contains_key(pid));
        let mut due: Vec<(TaskId, String, Ask, Time)> = Vec::new();
        for pid in &self.limiter.held_records {
            let rec = &self.records[pid];
            let Some(key) = permit_key(&rec.header.task) else {
                continue;
            };
            if *pid != permit_id(key) {
                continue; // a client task of the reserved kind: never made
            }
            let keeper = self.first_live(&rec.value.replicas);
            if keeper != Some(me) {
                continue;
            }
            for (task, held) in &rec.value.permits.held {
                let checked = self.limiter.checked.get(&(*pid, *task));
                if now < held.at + interval || checked.is_some_and(|at| now < *at + interval) {
                    continue;
                }
                due.push((
                    *pid,
                    key.to_string(),
                    Ask {
                        task: *task,
                        epoch: held.epoch,
                    },
                    held.at,
                ));
            }
        }
        let records = &self.records;
        self.limiter.checked.retain(|(pid, task), _| {
            records
                .get(pid)
                .is_some_and(|r| r.value.permits.held.contains_key(task))
        });
        for (pid, key, ask, granted_at) in due.into_iter().take(self.config.permit_asks_max) {
            self.limiter.checked.insert((pid, ask.task), now);
            match self.records.get(&ask.task) {
                Some(rec) => {
                    let found = ReadState {
                        header: rec.header.clone(),
                        version: rec.version,
                        value: rec.value.clone(),
                        in_doubt: false,
                        created_at: rec.created_at,
                    };
                    self.settle_place(now, &key, ask, granted_at, Some(found));
                }
                None => {
                    if self.ops.len() >= self.config.requests_in_flight_max {
                        continue;
                    }
                    let request = self.limiter.request();
                    self.limiter.checks.insert(request, (pid, ask.clone()));
                    self.quorum_read(now, request, ask.task, ReadPurpose::Permit);
                }
            }
        }
    }

    /// Retires each permit record this node keeps that has been idle for
    /// `permit_idle_retire_ms` on its clock: nothing held, nothing asked or
    /// being proposed, no start recent enough to count
    /// ([`crate::permit::Permits::retirable`]). The proposal's compare
    /// checks the same on the chosen base, so an ask granted meanwhile
    /// (by another keeper under another view) wins over it.
    fn retire_idle_permits(&mut self, now: Time) {
        let idle_for = Duration::from_millis(self.config.permit_idle_retire_ms);
        let me = self.me();
        let mut idle = Vec::new();
        for pid in &self.limiter.held_records {
            let Some(rec) = self.records.get(pid) else {
                continue; // gone: dropped from the set by the sweep
            };
            let keeper = self.first_live(&rec.value.replicas);
            // (Not a first write: it may have lost a race, see
            // `first_write_proposed`.)
            if keeper == Some(me)
                && permit_key(&rec.header.task).is_some()
                && rec.value.state == TaskState::Pending
                && rec.value.permits.retirable(now)
                && rec.version > 0
                && !self.limiter.queues.contains_key(pid)
                && !self.proposer.is_running(*pid)
            {
                idle.push(*pid);
            }
        }
        let since = std::mem::take(&mut self.limiter.idle_since);
        for pid in idle {
            let at = since.get(&pid).copied().unwrap_or(now);
            if now < at + idle_for {
                self.limiter.idle_since.insert(pid, at);
                continue;
            }
            let rec = &self.records[&pid];
            let (header, version, base) = (rec.header.clone(), rec.version, rec.value.clone());
            match self.propose(now, pid, header, version, base, Intent::Retire) {
                Ok(()) => self.limiter.retires += 1,
                // Too many proposals here: tried again at the next sweep.
                Err(_) => {
                    self.limiter.idle_since.insert(pid, at);
                }
            }
        }
    }

    /// A sweep's read of a task a place is held for came back.
    pub(super) fn permit_check_done(
        &mut self,
        now: Time,
        request: RequestId,
        found: Option<ReadState>,
    ) {
        let Some((pid, ask)) = self.limiter.checks.remove(&request) else {
            return;
        };
        let Some(rec) = self.records.get(&pid) else {
            return;
        };
        let Some(key) = permit_key(&rec.header.task).map(str::to_string) else {
            return;
        };
        let Some(held) = rec.value.permits.held.get(&ask.task).copied() else {
            return;
        };
        self.settle_place(now, &key, ask, held.at, found);
    }

    /// Gives back, or fences, the place `ask` in `key`'s record as the
    /// task's chosen value `found` shows (`None`: no replica holds the
    /// task, which was purged).
    fn settle_place(
        &mut self,
        now: Time,
        key: &str,
        ask: Ask,
        granted_at: Time,
        found: Option<ReadState>,
    ) {
        let fence_after = Duration::from_millis(self.config.permit_fence_after_ms);
        let Some(found) = found else {
            // No replica holds the task (purged, or a first write that
            // reached none). A claim under the grant could still create
            // it through its `Prepare` until its claimer drops it, once
            // the grant's use window passed: given back only after the
            // fence delay, like an unused grant.
            if now >= granted_at + fence_after {
                self.queue_release(key, ask);
            }
            return;
        };
        if permit_key(&found.header.task).is_some() || found.header.task.limit.is_none() {
            // Not a limited task under this id: nothing ever claims it
            // with a place (a forged ask), so the place goes back.
            self.queue_release(key, ask);
            return;
        }
        if releasable(&found.value, ask.epoch) {
            for note in end_notes(ask.task, ask.epoch, &found.value) {
                self.out.push(Action::Note(note));
            }
            self.queue_release(key, ask);
            return;
        }
        let unused = found.value.state == TaskState::Pending && found.value.epoch < ask.epoch;
        if unused && now >= granted_at + fence_after && !self.proposer.is_running(ask.task) {
            let ReadState {
                header,
                version,
                value,
                ..
            } = found;
            let fence = Intent::Fence { epoch: ask.epoch };
            if self
                .propose(now, ask.task, header, version, value, fence)
                .is_ok()
            {
                self.limiter.fences += 1;
            }
        }
    }

    /// Queues a release at this keeper itself.
    fn queue_release(&mut self, key: &str, ask: Ask) {
        let pid = permit_id(key);
        let q = self.limiter.queues.entry(pid).or_default();
        q.key = key.to_string();
        if !q.release.contains(&ask) && !q.proposing_release.contains(&ask) {
            q.release.push(ask);
        }
    }

    /// After this node's proposal on limited task `id` was chosen: gives
    /// the place back if the change ended its run (a result, a cancel).
    pub(super) fn after_limited_change(
        &mut self,
        id: TaskId,
        header: &TaskHeader,
        base: &TaskValue,
        value: &TaskValue,
    ) {
        let Some(limit) = &header.task.limit else {
            return;
        };
        if matches!(base.state, TaskState::Running { .. }) && releasable(value, value.epoch) {
            self.release_permit(&limit.key.clone(), id, value.epoch);
        }
    }

    /// Limits counters: asks a keeper dropped, grants fenced, records
    /// retired.
    pub(super) fn limit_counters(&self) -> [(&'static str, u64); 3] {
        [
            ("permit_asks_dropped", self.limiter.asks_dropped),
            ("permit_fences", self.limiter.fences),
            ("permit_retires", self.limiter.retires),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(task: u128) -> Ask {
        Ask {
            task: TaskId(task),
            epoch: Epoch(1),
        }
    }

    fn limit() -> TaskLimit {
        TaskLimit {
            key: "k".into(),
            concurrency_max: 1,
            rate_max: 0,
            rate_window_ms: 0,
        }
    }

    fn order(q: &KeeperQueue) -> Vec<u128> {
        q.acquire.iter().map(|(_, a, _)| a.task.0).collect()
    }

    /// Asks 1, 2, 3 are proposed; 1 is granted; 4 comes (and 2 is asked
    /// again) while the proposal runs. The refused 2 and 3 keep their turn
    /// ahead of 4.
    #[test]
    fn asks_a_proposal_refused_keep_their_turn_ahead_of_those_that_came_meanwhile() {
        let mut q = KeeperQueue::default();
        for (n, t) in [(1, 1), (2, 2), (3, 3)] {
            q.ask(Time(0), NodeId(n), ask(t), limit());
        }
        assert_eq!(order(&q), vec![1, 2, 3]);
        q.proposing = std::mem::take(&mut q.acquire);
        q.ask(Time(10), NodeId(4), ask(4), limit());
        q.ask(Time(10), NodeId(2), ask(2), limit());
        assert_eq!(
            order(&q),
            vec![4],
            "an ask being proposed is not queued twice"
        );
        let proposed = std::mem::take(&mut q.proposing);
        let rest: Vec<_> = proposed
            .into_iter()
            .filter(|(_, a, _)| a.task.0 != 1)
            .collect();
        q.refused(rest);
        assert_eq!(order(&q), vec![2, 3, 4]);
        assert_eq!(q.asked_at[&(NodeId(2), ask(2))], Time(10), "asked again");
    }
}
