//! Which final records a replica purges, and when: by time (each final
//! state's retention, `Limits::*_retained_ms`) and by count
//! (`Limits::tasks_retained_max` on each node).
//!
//! Every purgeable final record this node holds is indexed by when its
//! retention ends (its *due* time). A record is purged once its due time
//! has passed on this node's clock, or earlier when more than the count
//! bound are held: then the record due soonest goes first, and the node's
//! *horizon* moves up to its due time. The horizon is a second clock that
//! only counting moves: everything due by it counts as expired, so a record
//! purged for the count does not come back from a replica that kept it
//! (one that holds fewer records, or restarted), just as a record purged
//! for its time does not come back from a replica whose clock is behind.
//! The horizon is persisted ([`HORIZON_KEY`]) with the deletes that raise it.
//!
//! Records kept for ever (schedule definitions and tombstones,
//! `cohort_core::schedule::kept_for_ever`) are neither indexed nor counted
//! here; `LeaderlessConfig::schedules_kept_max` bounds how many a replica
//! creates.
//!
//! # Tombstones
//!
//! A purged record leaves a [`Tombstone`]: its final version, its final
//! event's time and a digest of its body. Without one, a replica that
//! purged a task is a *forgetful acceptor*: a copy of the task that missed
//! its outcome (a replica cut off meanwhile) comes back through
//! anti-entropy or its holder's next claim, the forgetful replicas take it
//! as a task they never held, and a majority of them re-run it and choose
//! a second outcome (`failure_stories.rs`,
//! `a_runner_cut_off_until_its_finished_task_was_purged_does_not_bring_it_back`).
//! With one, a replica refuses such a copy (it never votes on it again)
//! and tells its holder, which drops it and keeps the tombstone too.
//!
//! A copy is the purged task's when it has the same body, a version at
//! most the final one, and no event after the final one (its first event,
//! the first claim, is no later than the final event's time). A submit that
//! reuses a purged id (allowed once the record is gone) writes version 0
//! anew and clears the tombstone; a replica that missed that write tells
//! the new task apart by its events, all after the old task's end (up to
//! the clocks' skew). A version-0 copy has no events: its holder drops it
//! when it stored it before the purge (a reused id's first write comes
//! after it), again up to the clocks' skew.
//!
//! Tombstones are bounded by `LeaderlessConfig::tombstones_max` and kept
//! `tombstone_retained_ms` (a week): a replica cut off longer than that
//! that still holds a task's record not final can bring the task back.

use crate::record::{Record, TaskHeader, TaskValue};
use cohort_core::{TaskId, Time};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a node keeps its purge horizon.
pub(crate) const HORIZON_KEY: &[u8] = b"lless/purge_horizon";

/// Key prefix of tombstones in the node's store (then the id big-endian).
pub(crate) const TOMBSTONE_PREFIX: &[u8] = b"lless/tomb/";

/// The store key of `id`'s tombstone.
pub(crate) fn tombstone_key(id: TaskId) -> Vec<u8> {
    crate::record::task_key(TOMBSTONE_PREFIX, id)
}

/// What a purged record leaves behind (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The version of the final value the record held.
    pub version: u64,
    /// The final value's last event time (the outcome).
    pub final_at: Time,
    /// [`header_digest`] of the record's body.
    pub header_digest: u64,
    /// When the record was purged, on the purging node's clock (kept when
    /// the tombstone is passed on).
    pub purged_at: Time,
    /// When this node made (or took) it, on its clock: it goes
    /// `tombstone_retained_ms` later.
    pub made_at: Time,
    /// A permit record's incarnation ([`crate::permit::permit_incarnation`]):
    /// a copy of the key's record of this incarnation or an older one is
    /// covered, whatever its version (`None`: a client's task).
    pub incarnation: Option<Time>,
}

impl Tombstone {
    /// The tombstone `rec` leaves when purged at `now`.
    pub(crate) fn of(rec: &Record, now: Time) -> Tombstone {
        assert!(
            rec.value.state.is_final() || rec.value.permits.retired_at.is_some(),
            "only final records and retired permit records are purged"
        );
        Tombstone {
            version: rec.version,
            final_at: rec
                .value
                .history
                .events
                .last()
                .map_or(rec.created_at, |e| e.at),
            header_digest: header_digest(&rec.header),
            purged_at: now,
            made_at: now,
            incarnation: crate::permit::permit_incarnation(&rec.header.task),
        }
    }

    /// Whether `(header, version, value)` is a copy of the purged task
    /// (refused: never taken as a new record).
    pub(crate) fn covers(&self, header: &TaskHeader, version: u64, value: &TaskValue) -> bool {
        // An older incarnation of a permit record than the one purged
        // here was retired and purged before it: one tombstone per id
        // covers them all (a key's records may come and go many times).
        let older = self
            .incarnation
            .zip(crate::permit::permit_incarnation(&header.task))
            .is_some_and(|(purged, copy)| copy < purged);
        older
            || header_digest(header) == self.header_digest
                && version <= self.version
                && value
                    .history
                    .events
                    .first()
                    .is_none_or(|e| e.at <= self.final_at)
    }

    /// Whether the holder of `rec` should drop it: a covered copy, not
    /// final, that was claimed at least once or, never claimed, was
    /// written before the purge (a reused id's first write comes after it),
    /// or a permit record's.
    pub(crate) fn drops(&self, rec: &Record) -> bool {
        self.drops_copy(&rec.header, rec.version, &rec.value, rec.created_at)
    }

    /// Whether a covered copy at `version`, holding an accepted value of
    /// the next instance (`accepted`), may hide a chosen value: a permit
    /// record's purged incarnation at exactly the purged (retired)
    /// version. The replicas that purged it held no accepted value of
    /// that instance (`purge_at`), but a majority of the others may have
    /// accepted a grant there, chosen and not learned yet. A copy at an
    /// older version is not in doubt: the record went on past that
    /// instance to its retirement. An older incarnation is not either:
    /// the next one was created only by a lookup that found nothing in
    /// doubt.
    pub(crate) fn in_doubt(&self, header: &TaskHeader, version: u64, accepted: bool) -> bool {
        accepted
            && crate::permit::permit_key(&header.task).is_some()
            && header_digest(header) == self.header_digest
            && version == self.version
    }

    /// [`Self::drops`] of a copy stored at `created_at` (a read's answer).
    pub(crate) fn drops_copy(
        &self,
        header: &TaskHeader,
        version: u64,
        value: &TaskValue,
        created_at: Time,
    ) -> bool {
        // A permit record's body is never used again (its next incarnation
        // is another body), so a covered copy of one is always left behind:
        // a keeper that wrote it without knowing of the purge drops it, and
        // creates the incarnation after this one.
        let permit = crate::permit::permit_key(&header.task).is_some();
        !value.state.is_final()
            && self.covers(header, version, value)
            && (permit || !value.history.events.is_empty() || created_at <= self.purged_at)
    }
}

/// A digest of a task's body and placement (FNV-1a over its encoding):
/// tells a purged task from a new one under the same id.
pub fn header_digest(header: &TaskHeader) -> u64 {
    fnv1a(&cohort_core::encode(header))
}

/// FNV-1a, 64 bits: a digest to tell encodings apart, not a defence.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The tombstones a node keeps, bounded by count and age.
#[derive(Debug)]
pub(crate) struct Tombstones {
    by_id: BTreeMap<TaskId, Tombstone>,
    by_made: BTreeSet<(Time, TaskId)>,
}

impl Tombstones {
    pub(crate) fn new() -> Tombstones {
        Tombstones {
            by_id: BTreeMap::new(),
            by_made: BTreeSet::new(),
        }
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<&Tombstone> {
        self.by_id.get(&id)
    }

    pub(crate) fn insert(&mut self, id: TaskId, t: Tombstone) {
        self.remove(id);
        self.by_made.insert((t.made_at, id));
        self.by_id.insert(id, t);
    }

    /// Removes `id`'s tombstone; whether there was one.
    pub(crate) fn remove(&mut self, id: TaskId) -> bool {
        match self.by_id.remove(&id) {
            Some(t) => {
                self.by_made.remove(&(t.made_at, id));
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Takes the oldest tombstone if it is older than `retained_ms` at
    /// `now`, or more than `kept_max` are held.
    pub(crate) fn next_evicted(
        &mut self,
        now: Time,
        retained_ms: u64,
        kept_max: usize,
    ) -> Option<TaskId> {
        let &(made_at, id) = self.by_made.first()?;
        let old = made_at + std::time::Duration::from_millis(retained_ms) <= now;
        if !old && self.by_id.len() <= kept_max {
            return None;
        }
        self.remove(id);
        Some(id)
    }
}

/// The purgeable final records a node holds, by due time.
#[derive(Debug)]
pub(crate) struct Retained {
    by_due: BTreeSet<(Time, TaskId)>,
    due_of: BTreeMap<TaskId, Time>,
    horizon: Time,
}

impl Retained {
    /// An empty index with a horizon read back from the store.
    pub(crate) fn with_horizon(horizon: Time) -> Retained {
        Retained {
            by_due: BTreeSet::new(),
            due_of: BTreeMap::new(),
            horizon,
        }
    }

    /// Records that `id` is due at `due` (`None`: not final, or kept for
    /// ever), replacing what was recorded for it.
    pub(crate) fn set(&mut self, id: TaskId, due: Option<Time>) {
        let old = match due {
            Some(due) => self.due_of.insert(id, due),
            None => self.due_of.remove(&id),
        };
        if let Some(old) = old {
            self.by_due.remove(&(old, id));
        }
        if let Some(due) = due {
            self.by_due.insert((due, id));
        }
        debug_assert_eq!(self.by_due.len(), self.due_of.len());
    }

    /// How many purgeable final records are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due_of.len()
    }

    /// Everything due by this counts as expired (see the module docs).
    pub(crate) fn horizon(&self) -> Time {
        self.horizon
    }

    /// Whether a final record due at `due` is expired here at `now`: this
    /// node purged it, or would purge it at once.
    pub(crate) fn expired(&self, due: Time, now: Time) -> bool {
        due <= now.max(self.horizon)
    }

    /// Takes the next record to purge at `now` with at most `kept_max`
    /// held: the one due soonest, if it is expired or the count is over
    /// (then the horizon moves up to its due time). `None`: nothing to
    /// purge now.
    pub(crate) fn next_purge(&mut self, now: Time, kept_max: usize) -> Option<(TaskId, Time)> {
        let &(due, id) = self.by_due.first()?;
        if !self.expired(due, now) {
            if self.by_due.len() <= kept_max {
                return None;
            }
            assert!(due > self.horizon, "the horizon only moves up");
            self.horizon = due;
        }
        self.by_due.pop_first();
        self.due_of.remove(&id);
        Some((id, due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: &mut Retained, now: u64, kept_max: usize) -> Vec<u128> {
        std::iter::from_fn(|| r.next_purge(Time(now), kept_max))
            .map(|(id, _)| id.0)
            .collect()
    }

    #[test]
    fn the_oldest_tombstones_go_first_by_age_or_count() {
        let mut t = Tombstones::new();
        let stone = |made_ms: u64| Tombstone {
            version: 3,
            final_at: Time::ZERO,
            header_digest: 7,
            purged_at: Time::ZERO,
            made_at: Time::from_millis(made_ms),
            incarnation: None,
        };
        for (id, made) in [(1, 30), (2, 10), (3, 20)] {
            t.insert(TaskId(id), stone(made));
        }
        t.insert(TaskId(2), stone(40)); // replaced, not added
        assert_eq!(t.len(), 3);
        let mut evicted = |now_ms, kept| {
            std::iter::from_fn(|| t.next_evicted(Time::from_millis(now_ms), 100, kept))
                .map(|id| id.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(evicted(0, 10), Vec::<u128>::new());
        assert_eq!(evicted(0, 2), vec![3], "by count, oldest made first");
        assert_eq!(evicted(135, 10), vec![1], "by age");
        assert_eq!(evicted(1_000, 10), vec![2]);
    }

    #[test]
    fn records_go_when_their_time_comes_or_the_count_is_over_soonest_due_first() {
        let mut r = Retained::with_horizon(Time::ZERO);
        for (id, due) in [(1, 300), (2, 100), (3, 200), (4, 400)] {
            r.set(TaskId(id), Some(Time(due)));
        }
        // Moved: replaced, not added.
        r.set(TaskId(4), Some(Time(500)));
        assert_eq!(r.len(), 4);
        assert_eq!(ids(&mut r, 150, 10), vec![2], "by time only");
        assert_eq!(r.horizon(), Time::ZERO, "time does not move the horizon");
        assert_eq!(
            ids(&mut r, 150, 1),
            vec![3, 1],
            "by count, soonest due first"
        );
        assert_eq!(r.horizon(), Time(300));
        assert!(r.expired(Time(300), Time(150)), "due by the horizon");
        assert!(!r.expired(Time(301), Time(150)));
        assert!(r.expired(Time(301), Time(301)), "or by the clock");
        // Not final any more (or kept for ever): neither counted nor purged.
        r.set(TaskId(4), None);
        assert_eq!(r.len(), 0);
        assert_eq!(ids(&mut r, 10_000, 0), Vec::<u128>::new());
    }

    #[test]
    fn only_the_purged_version_of_a_permit_records_purged_body_with_an_accepted_value_is_in_doubt()
    {
        use crate::permit::permit_task;
        use cohort_core::NodeId;
        let header = |task| TaskHeader {
            task,
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
            ring_epoch: 0,
        };
        let permit = header(permit_task("k", Time::from_millis(5)));
        let purged = Tombstone {
            version: 4,
            final_at: Time::ZERO,
            header_digest: header_digest(&permit),
            purged_at: Time::ZERO,
            made_at: Time::ZERO,
            incarnation: Some(Time::from_millis(5)),
        };
        assert!(purged.in_doubt(&permit, 4, true));
        assert!(
            !purged.in_doubt(&permit, 4, false),
            "nothing accepted on top"
        );
        assert!(!purged.in_doubt(&permit, 3, true), "the instance went on");
        let older = header(permit_task("k", Time::from_millis(1)));
        assert!(purged.covers(&older, 9, &TaskValue::initial(&older)));
        assert!(!purged.in_doubt(&older, 4, true), "an older incarnation");
        let client = header(cohort_core::Task {
            kind: "echo".into(),
            ..permit_task("k", Time::from_millis(5))
        });
        let task = Tombstone {
            header_digest: header_digest(&client),
            incarnation: None,
            ..purged.clone()
        };
        assert!(!task.in_doubt(&client, 4, true), "a client's task is final");
    }
}
