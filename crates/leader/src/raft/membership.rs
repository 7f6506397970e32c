//! Membership: voters and learners, changed one server at a time.
//!
//! A configuration entry takes effect as soon as it is appended (Raft
//! thesis §4.1), on leader and followers alike, and is undone if the entry is
//! truncated. The leader proposes a change only when the previous one is
//! committed and it has committed an entry of its own term (the fix for the
//! single-server change bug). Learners receive the log but neither vote nor
//! count towards a quorum; a learner is promoted once it has caught up. A
//! leader that removes itself steps down once the change commits.

use super::{EntryKind, Progress, RaftError, RaftNode, Role};
use cohort_core::{NodeId, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Who votes and who only replicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members that vote and count towards quorums.
    pub voters: BTreeSet<NodeId>,
    /// Members that replicate the log without voting.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// The first `voters_max` of `members` vote; the rest learn.
    pub fn initial(members: &[NodeId], voters_max: usize) -> Membership {
        let mut sorted: Vec<NodeId> = members.to_vec();
        sorted.sort();
        sorted.dedup();
        let voters = sorted.iter().copied().take(voters_max).collect();
        let learners = sorted.iter().copied().skip(voters_max).collect();
        Membership { voters, learners }
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The membership after `change`, or why it is not allowed.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, RaftError> {
        let mut next = self.clone();
        let invalid = |reason: String| Err(RaftError::InvalidChange { reason });
        match change {
            MembershipChange::AddLearner(n) => {
                if self.is_member(n) {
                    return invalid(format!("{n} is already a member"));
                }
                next.learners.insert(n);
            }
            MembershipChange::PromoteLearner(n) => {
                if !next.learners.remove(&n) {
                    return invalid(format!("{n} is not a learner"));
                }
                next.voters.insert(n);
            }
            MembershipChange::DemoteVoter(n) => {
                if !next.voters.remove(&n) {
                    return invalid(format!("{n} is not a voter"));
                }
                next.learners.insert(n);
            }
            MembershipChange::Remove(n) => {
                if !next.voters.remove(&n) && !next.learners.remove(&n) {
                    return invalid(format!("{n} is not a member"));
                }
            }
        }
        if next.voters.is_empty() {
            return invalid("the last voter cannot leave".into());
        }
        Ok(next)
    }
}

/// One single-server membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Start replicating to a new non-voting member.
    AddLearner(NodeId),
    /// Give a learner a vote.
    PromoteLearner(NodeId),
    /// Take a voter's vote away; it keeps replicating.
    DemoteVoter(NodeId),
    /// Drop a member entirely.
    Remove(NodeId),
}

impl RaftNode {
    /// Proposes one membership change. Returns the config entry's index.
    pub fn propose_membership(
        &mut self,
        now: Time,
        change: MembershipChange,
    ) -> Result<u64, RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.membership_index > self.commit || !self.committed_in_term() {
            return Err(RaftError::ChangeInProgress);
        }
        let next = self.membership.apply(change)?;
        self.propose_entry(now, EntryKind::Config(next))
    }

    /// The membership in force at `index` (which must be at or after the offset).
    pub(super) fn membership_at(&self, index: u64) -> super::Membership {
        let hi = index.min(self.log.last_index());
        self.log
            .range(self.log.offset(), hi)
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                EntryKind::Config(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.base_membership.clone())
    }

    /// Re-derives the membership from the log after it changed.
    pub(super) fn recompute_membership(&mut self) {
        let latest = self
            .log
            .range(self.log.offset(), self.log.last_index())
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                EntryKind::Config(m) => Some((e.index, m.clone())),
                _ => None,
            });
        (self.membership_index, self.membership) =
            latest.unwrap_or_else(|| (0, self.base_membership.clone()));
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            let members: BTreeSet<NodeId> = self.membership.members().collect();
            self.progress.retain(|n, _| members.contains(n));
            for m in members.into_iter().filter(|m| *m != self.id) {
                self.progress
                    .entry(m)
                    .or_insert_with(|| Progress::new(next));
            }
        }
    }

    pub(super) fn on_membership_committed(&mut self) {
        if self.role == Role::Leader
            && self.membership_index <= self.commit
            && !self.membership.is_voter(self.id)
        {
            // Removed or demoted ourselves: hand over by stepping down.
            self.become_follower(self.clock, self.term, None);
        }
    }
}
