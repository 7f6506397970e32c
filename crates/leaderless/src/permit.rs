//! Concurrency and rate limits without a coordinator: one permit record
//! per limit key.
//!
//! A limit counts across tasks that live on different replicas, so no
//! task's own Paxos instance can enforce it. Each limit key gets a record
//! of its own, placed on the ring by the key's hash like a task and
//! changed by the same per-record Paxos: a compare-and-set over the set of
//! tasks holding a place ([`Permits::held`]) and the latest start stamps
//! ([`Permits::starts`]).
//!
//! - A node that wants to claim (or re-claim) a limited task under epoch
//!   `e` first asks the key's keeper (the first live replica of the permit
//!   record) to add `(task, e)`; the keeper batches asks into one proposal
//!   and grants those that fit.
//! - A claim of a limited task names its grant: it applies only while the
//!   task's epoch is `e - 1`, so a grant is good for one epoch only.
//! - A place is held per task, not per attempt: a re-claim of a running
//!   task moves its place to the new epoch, so a task whose runner died
//!   never waits for its own old place.
//! - A place is given back once the task's chosen value shows it is not
//!   running and cannot run under the granted epoch any more: final, or
//!   pending with an epoch at least the granted one. The runner gives it
//!   back when its result is chosen; the keeper sweeps the rest (a runner
//!   that crashed, a grant never used). A grant whose claim never came is
//!   fenced first: a chosen write that moves the task's epoch past it, so
//!   a claim still in flight loses its compare-and-set.
//!
//! Hence at every version of the permit record, and so at every moment,
//! no more tasks of a key run (in the cluster's record) than its
//! `concurrency_max`, and no window holds more starts than its `rate_max`:
//! a claim is chosen only while its place is held, and a place is given
//! back only after the claim's end is chosen (and noted).

use cohort_core::{Epoch, Task, TaskId, TaskLimit, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The kind of a permit record's task. A submit of a task of this kind is
/// refused, so a record of it is always a permit record.
pub const PERMIT_KIND: &str = "cohort.permit";

/// Hashed before the key, so permit ids never collide with dedupe or
/// idempotency ids by construction (a client may still pick any id).
const DOMAIN: &[u8] = b"cohort/limit-permit/v1\0";

/// The id of `key`'s permit record: the first 128 bits of a SHA-256.
pub fn permit_id(key: &str) -> TaskId {
    let digest = sha256(&[DOMAIN, key.as_bytes()]);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    TaskId(u128::from_be_bytes(first))
}

/// The body of one incarnation of `key`'s permit record, created at
/// `incarnation` (the creating keeper's clock). A record retired and
/// purged is created again with another body under the same id, so no
/// copy of the old one left behind can ever be taken for a value of the
/// new one: a replica holds one body per id, and Paxos never mixes two
/// (ALGORITHM.md *Retiring a permit record*). Keepers that create a key's
/// record at once race like two submits of one id: one body wins, and the
/// others adopt it.
pub fn permit_task(key: &str, incarnation: Time) -> Task {
    let mut payload = key.as_bytes().to_vec();
    payload.push(0);
    payload.extend_from_slice(&incarnation.0.to_be_bytes());
    Task {
        kind: PERMIT_KIND.into(),
        payload,
        timeout_ms: 0,
        max_attempts: 1,
        not_before: Time::ZERO,
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

/// The limit key of a permit record's body, if `task` is one: the payload
/// up to its first zero byte (a limit key holds none, see
/// `TaskLimit::validate`).
pub fn permit_key(task: &Task) -> Option<&str> {
    if task.kind != PERMIT_KIND {
        return None;
    }
    let key = task.payload.split(|&b| b == 0).next().unwrap_or_default();
    std::str::from_utf8(key).ok()
}

/// The incarnation of a permit record's body (when its keeper created
/// it), if `task` is one.
pub fn permit_incarnation(task: &Task) -> Option<Time> {
    permit_key(task)?;
    let at = task.payload.splitn(2, |&b| b == 0).nth(1)?;
    Some(Time(u64::from_be_bytes(at.try_into().ok()?)))
}

/// A task's place in its key's permit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The epoch the place was granted for (a re-claim moves it up).
    pub epoch: Epoch,
    /// The grant's stamp: the start a rate limit counts, and the time the
    /// claim records as its assignment's.
    pub at: Time,
}

/// What a permit record holds (empty in a task's value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permits {
    /// The tasks holding a place, by id.
    pub held: BTreeMap<TaskId, Held>,
    /// Start stamps still inside a rate window, ascending.
    pub starts: Vec<Time>,
    /// The longest rate window any grant counted under: once the latest
    /// start is that old, no window a later start falls in holds any of
    /// `starts`.
    pub window_ms: u64,
    /// When the record was retired (decided idle, [`Permits::retirable`]):
    /// each replica purges it `permit_retired_retained_ms` later unless a
    /// change (a grant, a release) comes first and brings it back.
    pub retired_at: Option<Time>,
}

/// One ask of a permit record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ask {
    /// The task.
    pub task: TaskId,
    /// The epoch its claim will take.
    pub epoch: Epoch,
}

/// A batch of changes to one permit record, as a keeper proposes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermitChange {
    /// Places given back: removed if held for at most that epoch.
    pub release: Vec<Ask>,
    /// Places wanted, each under its task's limit, granted in order while
    /// they fit.
    pub acquire: Vec<(Ask, TaskLimit)>,
    /// Most start stamps kept (`LeaderlessConfig::permit_starts_max`).
    pub starts_max: usize,
    /// A place asked for again, for the epoch it is held for, at least
    /// this long after its stamp is stamped anew (a new start, counted by
    /// the rate limit): a claim must follow its grant within this long
    /// (`LeaderlessConfig::permit_grant_use_ms`), so a start is counted
    /// when it happens.
    pub restamp_after_ms: u64,
}

impl Permits {
    /// The stamp of `task`'s place if it is held for exactly `epoch`.
    pub fn grant_of(&self, task: TaskId, epoch: Epoch) -> Option<Time> {
        self.held
            .get(&task)
            .filter(|h| h.epoch == epoch)
            .map(|h| h.at)
    }

    /// Whether the record may be retired at `at`: no place held, not
    /// retired already, and no start recent enough to count in the window
    /// of a later one (a new incarnation starts with no stamps).
    pub fn retirable(&self, at: Time) -> bool {
        let window = Duration::from_millis(self.window_ms);
        self.held.is_empty()
            && self.retired_at.is_none()
            && self.starts.last().is_none_or(|s| *s + window <= at)
    }

    /// The permits after `change` at `at` (the keeper's clock), or `None`
    /// when nothing would change. A change brings a retired record back.
    ///
    /// Stamps only grow along the record's versions (a grant is stamped no
    /// earlier than the latest start), so dropping the stamps before the
    /// latest one's window never drops one a later grant would count.
    pub fn apply(&self, change: &PermitChange, at: Time) -> Option<Permits> {
        let mut p = self.clone();
        for r in &change.release {
            if p.held.get(&r.task).is_some_and(|h| h.epoch <= r.epoch) {
                p.held.remove(&r.task);
            }
        }
        for (ask, limit) in &change.acquire {
            let restamp_after = Duration::from_millis(change.restamp_after_ms);
            let new = match p.held.get(&ask.task) {
                Some(h) if h.epoch > ask.epoch => continue,
                Some(h) if h.epoch == ask.epoch && at < h.at + restamp_after => continue,
                Some(_) => false,
                None => true,
            };
            if new && limit.concurrency_max > 0 && p.held.len() >= limit.concurrency_max as usize {
                continue;
            }
            let stamp = p.starts.last().map_or(at, |last| at.max(*last));
            if limit.rate_max > 0 {
                p.window_ms = p.window_ms.max(limit.rate_window_ms);
                let window = Duration::from_millis(limit.rate_window_ms);
                let inside = p.starts.iter().filter(|s| **s + window > stamp).count();
                if inside >= limit.rate_max as usize {
                    continue;
                }
                p.starts.push(stamp);
                p.starts.retain(|s| *s + window > stamp);
                let over = p.starts.len().saturating_sub(change.starts_max);
                p.starts.drain(..over);
            }
            p.held.insert(
                ask.task,
                Held {
                    epoch: ask.epoch,
                    at: stamp,
                },
            );
        }
        if p.held == self.held && p.starts == self.starts {
            return None;
        }
        p.retired_at = None;
        Some(p)
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(concurrency_max: u32, rate_max: u32, rate_window_ms: u64) -> TaskLimit {
        TaskLimit {
            key: "k".into(),
            concurrency_max,
            rate_max,
            rate_window_ms,
        }
    }

    fn ask(task: u128, epoch: u64) -> Ask {
        Ask {
            task: TaskId(task),
            epoch: Epoch(epoch),
        }
    }

    fn ms(n: u64) -> Time {
        Time::ZERO + Duration::from_millis(n)
    }

    #[test]
    fn a_concurrency_limit_grants_places_until_full_and_a_release_frees_one() {
        let l = limit(2, 0, 0);
        let change = PermitChange {
            release: vec![],
            acquire: vec![
                (ask(1, 1), l.clone()),
                (ask(2, 1), l.clone()),
                (ask(3, 1), l.clone()),
            ],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = Permits::default().apply(&change, ms(10)).expect("changed");
        assert_eq!(p.held.len(), 2);
        assert!(p.grant_of(TaskId(1), Epoch(1)).is_some());
        assert!(
            p.grant_of(TaskId(3), Epoch(1)).is_none(),
            "no room for a third"
        );
        // Asking again for a place held changes nothing.
        let again = PermitChange {
            release: vec![],
            acquire: vec![(ask(1, 1), l.clone())],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        assert_eq!(p.apply(&again, ms(11)), None);
        let swap = PermitChange {
            release: vec![ask(1, 1)],
            acquire: vec![(ask(3, 1), l)],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = p.apply(&swap, ms(12)).expect("changed");
        assert!(p.grant_of(TaskId(1), Epoch(1)).is_none());
        assert_eq!(p.grant_of(TaskId(3), Epoch(1)), Some(ms(12)));
    }

    #[test]
    fn a_reclaim_moves_the_tasks_place_even_when_the_key_is_full() {
        let l = limit(1, 0, 0);
        let first = PermitChange {
            release: vec![],
            acquire: vec![(ask(1, 1), l.clone())],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = Permits::default().apply(&first, ms(0)).expect("changed");
        let reclaim = PermitChange {
            release: vec![],
            acquire: vec![(ask(1, 2), l.clone()), (ask(2, 1), l)],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = p.apply(&reclaim, ms(5)).expect("changed");
        assert_eq!(p.grant_of(TaskId(1), Epoch(2)), Some(ms(5)));
        assert!(p.grant_of(TaskId(2), Epoch(1)).is_none());
        // A late release of the old epoch leaves the new one's place.
        let late = PermitChange {
            release: vec![ask(1, 1)],
            acquire: vec![],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        assert_eq!(p.apply(&late, ms(6)), None);
    }

    #[test]
    fn a_rate_limit_counts_starts_inside_the_window_and_stamps_only_grow() {
        let l = limit(0, 2, 100);
        let two = PermitChange {
            release: vec![],
            acquire: vec![(ask(1, 1), l.clone()), (ask(2, 1), l.clone())],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = Permits::default().apply(&two, ms(50)).expect("changed");
        let third = PermitChange {
            release: vec![ask(1, 1), ask(2, 1)],
            acquire: vec![(ask(3, 1), l.clone())],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        // Both places are given back, but both starts are in the window.
        let p = p.apply(&third, ms(149)).expect("released");
        assert!(p.grant_of(TaskId(3), Epoch(1)).is_none());
        let later = PermitChange {
            release: vec![],
            acquire: vec![(ask(3, 1), l.clone())],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = p.apply(&later, ms(150)).expect("changed");
        assert_eq!(p.grant_of(TaskId(3), Epoch(1)), Some(ms(150)));
        assert_eq!(p.starts, vec![ms(150)], "older starts dropped");
        // A keeper whose clock is behind stamps no earlier than the latest.
        let behind = PermitChange {
            release: vec![],
            acquire: vec![(ask(4, 1), l)],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = p.apply(&behind, ms(120)).expect("changed");
        assert_eq!(p.grant_of(TaskId(4), Epoch(1)), Some(ms(150)));
    }

    #[test]
    fn a_grant_asked_for_again_once_stale_is_stamped_anew_as_a_new_start() {
        let l = limit(1, 2, 10_000);
        let first = PermitChange {
            release: vec![],
            acquire: vec![(ask(1, 1), l.clone())],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = Permits::default().apply(&first, ms(0)).expect("changed");
        assert_eq!(p.apply(&first, ms(999)), None, "still fresh");
        let p = p.apply(&first, ms(1_000)).expect("restamped");
        assert_eq!(p.grant_of(TaskId(1), Epoch(1)), Some(ms(1_000)));
        assert_eq!(p.starts, vec![ms(0), ms(1_000)]);
        // The rate is spent: a third stamp waits.
        assert_eq!(p.apply(&first, ms(2_000)), None);
    }

    #[test]
    fn permit_ids_are_stable_and_differ_by_key() {
        assert_eq!(permit_id("a"), permit_id("a"));
        assert_ne!(permit_id("a"), permit_id("b"));
        let (a, b) = (
            permit_task("tenant-7", ms(1)),
            permit_task("tenant-7", ms(2)),
        );
        assert_eq!(permit_key(&a), Some("tenant-7"));
        assert_ne!(a, b, "each incarnation is a body of its own");
        assert_eq!(permit_key(&b), Some("tenant-7"));
        assert_eq!(permit_incarnation(&b), Some(ms(2)));
    }

    /// A record is retired only when nothing it holds could still count:
    /// no place held, and its latest start outside the longest window any
    /// grant used. A grant brings it back; a release of nothing does not.
    #[test]
    fn a_record_retires_only_idle_and_past_its_longest_window_and_a_grant_brings_it_back() {
        let rate = limit(1, 5, 300);
        let grant = PermitChange {
            release: vec![],
            acquire: vec![(ask(1, 1), rate)],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = Permits::default().apply(&grant, ms(100)).expect("granted");
        assert_eq!(p.window_ms, 300);
        assert!(!p.retirable(ms(10_000)), "a place is held");
        let release = PermitChange {
            release: vec![ask(1, 1)],
            acquire: vec![],
            starts_max: 64,
            restamp_after_ms: 1_000,
        };
        let p = p.apply(&release, ms(150)).expect("released");
        assert!(!p.retirable(ms(399)), "the start at 100 counts until 400");
        assert!(p.retirable(ms(400)));
        let retired = Permits {
            retired_at: Some(ms(400)),
            ..p.clone()
        };
        assert!(!retired.retirable(ms(500)), "retired already");
        assert_eq!(
            retired.apply(&release, ms(500)),
            None,
            "nothing to give back"
        );
        let back = retired
            .apply(&grant, ms(600))
            .expect("a grant changes the record");
        assert_eq!(back.retired_at, None, "and brings it back");
        assert_eq!(back.grant_of(TaskId(1), Epoch(1)), Some(ms(600)));
    }
}
