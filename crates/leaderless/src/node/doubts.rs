//! A retired permit record's copy that a replica which purged it tells
//! `Purged` while it holds an accepted value of the next instance
//! ([`Tombstone::in_doubt`]): that value (a grant bringing the record
//! back) may have been chosen by a majority that has not learned it yet.
//! Dropping the copy could forget a chosen grant, and the key's next
//! incarnation would not count its place. Keeping it without finishing
//! the instance would block the key for ever. So its holder finishes the
//! instance first (a settle: phase 1, then phase 2 with what the majority
//! accepted), and drops the copy only once a majority of its replicas
//! have said `Purged`: a replica that purged or dropped the copy held no
//! accepted value of that instance and never accepts one, so no majority
//! can have chosen anything there.
//!
//! Readers do their part in `unless_purged`: a lookup whose newest copy is
//! one in doubt does not read the key as absent (it fails, and is made
//! again), so a keeper does not create the key's next incarnation beside a
//! grant that may be chosen.

use super::LeaderlessNode;
use crate::paxos::majority;
use crate::paxos::proposer::{Intent, StartError};
use crate::retention::Tombstone;
use cohort_core::{NodeId, TaskId, Time};
use std::collections::BTreeSet;

/// One copy in doubt: the replicas that told this node `Purged` for it.
/// Held only beside the record it is for (at most one per record).
#[derive(Debug, Clone)]
pub(super) struct Doubt {
    /// The newest tombstone a replica told (left here if the copy goes).
    tombstone: Tombstone,
    /// Replicas of the record that answered `Purged`.
    purged_by: BTreeSet<NodeId>,
}

impl LeaderlessNode {
    /// `from` (`None`: a read's answer, relayed) told this node that `id`'s
    /// copy here was purged, and the copy is in doubt: count the replica,
    /// drop the copy once a majority has said so, else settle the
    /// instance.
    pub(super) fn purged_in_doubt(
        &mut self,
        now: Time,
        from: Option<NodeId>,
        id: TaskId,
        tombstone: Tombstone,
    ) {
        let me = self.me();
        let rec = self.records.get(&id).expect("a copy in doubt is held");
        let replicas = rec.value.replicas.clone();
        let doubt = self.doubts.entry(id).or_insert_with(|| Doubt {
            tombstone: tombstone.clone(),
            purged_by: BTreeSet::new(),
        });
        if (doubt.tombstone.version, doubt.tombstone.header_digest)
            != (tombstone.version, tombstone.header_digest)
        {
            // Witnesses of another version (the record moved on, and was
            // retired again, within a tick): they may accept at this one.
            doubt.purged_by.clear();
        }
        doubt.tombstone = tombstone;
        if let Some(n) = from.filter(|n| *n != me && replicas.contains(n)) {
            doubt.purged_by.insert(n);
        }
        if doubt.purged_by.len() >= majority(replicas.len()) {
            // A majority never accepted anything on top of the purged
            // version, and never will: nothing there was chosen.
            let doubt = self.doubts.remove(&id).expect("present above");
            let tombstone = Tombstone {
                made_at: now,
                ..doubt.tombstone
            };
            let mut ops = Vec::new();
            self.drop_record(id, tombstone, &mut ops);
            self.purged_copies_dropped += 1;
            self.doubts_dropped += 1;
            self.out.push(cohort_core::Action::Persist(ops));
            return;
        }
        self.settle_doubt(now, id);
    }

    /// Proposes on the instance in doubt, unless a proposal of this node
    /// on the record runs already (it finishes that instance too). Its
    /// acceptors that purged the record answer `Purged`, counted above.
    fn settle_doubt(&mut self, now: Time, id: TaskId) {
        if self.proposer.is_running(id) {
            return;
        }
        let rec = &self.records[&id];
        let (header, version, value) = (rec.header.clone(), rec.version, rec.value.clone());
        match self.propose(now, id, header, version, value, Intent::Settle) {
            Ok(()) => self.doubts_settles += 1,
            // (Busy: checked above.) With too many proposals in flight,
            // the next tick tries again.
            Err(StartError::Full | StartError::Busy) => {}
        }
    }

    /// Each tick: forgets the doubts that ended (the record moved on past
    /// the purged version, lost its accepted value, or went) and settles
    /// the others again if their proposal was dropped.
    pub(super) fn settle_doubts(&mut self, now: Time) {
        let records = &self.records;
        self.doubts.retain(|id, d| {
            records.get(id).is_some_and(|rec| {
                d.tombstone
                    .in_doubt(&rec.header, rec.version, rec.accepted.is_some())
            })
        });
        let ids: Vec<TaskId> = self.doubts.keys().copied().collect();
        for id in ids {
            self.settle_doubt(now, id);
        }
    }

    /// Whether this node is settling a copy in doubt of `id` (its settle
    /// is not dropped for want of readers).
    pub(super) fn settling_doubt(&self, id: TaskId) -> bool {
        self.doubts.contains_key(&id)
    }
}
