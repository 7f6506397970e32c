//! Elections: randomized timeouts from the seeded RNG, pre-vote, votes,
//! check-quorum and the leader lease that goes with it.
//!
//! - A voter whose election deadline passes first asks for *pre-votes* at
//!   `term + 1` without changing any term. Only when a quorum would vote for
//!   it does it increment its term and ask for real votes. A node cut off
//!   from the others therefore cannot inflate its term and disrupt the
//!   cluster when it returns.
//! - *Check-quorum*: a leader that has not heard from a quorum within
//!   `election_timeout_ms_max` steps down. Its complement, the *lease*: a
//!   follower that heard from its leader within `election_timeout_ms_min`
//!   refuses pre-votes and ignores votes (unless the leader handed over).

use super::{Progress, RaftMsg, RaftNode, Role};
use cohort_core::{NodeId, Time};
use std::time::Duration;

impl RaftNode {
    /// Adjusts to the term of an incoming message. Returns whether the
    /// message should be handled further.
    pub(super) fn handle_term(&mut self, now: Time, from: NodeId, msg: &RaftMsg) -> bool {
        let term = msg.term();
        if term > self.term {
            match msg {
                // A pre-vote never changes terms, nor does a granted answer.
                RaftMsg::PreVote { .. } | RaftMsg::PreVoteResp { granted: true, .. } => {
                    return true
                }
                RaftMsg::Vote {
                    transfer: false, ..
                } if self.in_lease(now) => return false,
                _ => {}
            }
            let leader = match msg {
                RaftMsg::Append { .. } | RaftMsg::Snapshot { .. } => Some(from),
                _ => None,
            };
            self.become_follower(now, term, leader);
            return true;
        }
        if term < self.term {
            match msg {
                // Tell a stale leader about the new term so it steps down.
                RaftMsg::Append { prev_index, .. } => {
                    let outcome = super::AppendOutcome::Reject {
                        rejected: *prev_index,
                        conflict_term: None,
                        conflict_index: 0,
                    };
                    let msg = RaftMsg::AppendResp {
                        term: self.term,
                        outcome,
                        read_seq: 0,
                    };
                    self.send(from, msg);
                }
                RaftMsg::Snapshot { meta, .. } => {
                    let msg = RaftMsg::SnapshotResp {
                        term: self.term,
                        index: meta.index,
                        received: 0,
                        installed: false,
                    };
                    self.send(from, msg);
                }
                RaftMsg::PreVote { .. } => {
                    let msg = RaftMsg::PreVoteResp {
                        term: self.term,
                        granted: false,
                    };
                    self.send(from, msg);
                }
                _ => {}
            }
            return false;
        }
        true
    }

    /// Whether a current leader was heard from recently (or this node leads).
    pub(super) fn in_lease(&self, now: Time) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        let lease = Duration::from_millis(self.cfg.election_timeout_ms_min);
        self.leader.is_some() && self.leader_contact.is_some_and(|at| now < at + lease)
    }

    pub(super) fn campaign_pre_vote(&mut self, now: Time) {
        assert!(self.membership.is_voter(self.id), "only voters campaign");
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.role = Role::PreCandidate;
        self.counters.pre_votes_started += 1;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.tally() == Some(true) {
            self.campaign(now, false);
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let me = self.id;
        let voters: Vec<NodeId> = self.membership.voters.iter().copied().collect();
        for to in voters.into_iter().filter(|v| *v != me) {
            let msg = RaftMsg::PreVote {
                term: self.term + 1,
                last_index,
                last_term,
            };
            self.send(to, msg);
        }
    }

    /// Starts a real election in `term + 1`.
    pub(super) fn campaign(&mut self, now: Time, transfer: bool) {
        assert!(self.membership.is_voter(self.id), "only voters campaign");
        self.role = Role::Candidate;
        self.counters.elections_started += 1;
        self.term += 1;
        self.vote = Some(self.id);
        self.leader = None;
        self.leader_contact = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline(now);
        if self.tally() == Some(true) {
            self.become_leader(now);
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let me = self.id;
        let voters: Vec<NodeId> = self.membership.voters.iter().copied().collect();
        // The vote for self is persisted by take_ready before these sends.
        for to in voters.into_iter().filter(|v| *v != me) {
            let msg = RaftMsg::Vote {
                term: self.term,
                last_index,
                last_term,
                transfer,
            };
            self.send(to, msg);
        }
    }

    /// `Some(true)` once a quorum granted, `Some(false)` once a quorum refused.
    fn tally(&self) -> Option<bool> {
        let voters = &self.membership.voters;
        let granted = self
            .votes
            .iter()
            .filter(|(n, g)| **g && voters.contains(n))
            .count();
        let refused = self
            .votes
            .iter()
            .filter(|(n, g)| !**g && voters.contains(n))
            .count();
        if granted >= self.quorum() {
            Some(true)
        } else if refused >= self.quorum() {
            Some(false)
        } else {
            None
        }
    }

    pub(super) fn on_pre_vote(
        &mut self,
        now: Time,
        from: NodeId,
        term: u64,
        last_index: u64,
        last_term: u64,
    ) {
        let granted = term > self.term
            && self.log.is_up_to_date(last_index, last_term)
            && !self.in_lease(now);
        let term = if granted { term } else { self.term };
        self.send(from, RaftMsg::PreVoteResp { term, granted });
    }

    pub(super) fn on_pre_vote_resp(&mut self, now: Time, from: NodeId, term: u64, granted: bool) {
        if self.role != Role::PreCandidate {
            return;
        }
        if granted && term != self.term + 1 {
            return; // an answer to an older pre-vote round
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.campaign(now, false),
            Some(false) => self.become_follower(now, self.term, None),
            None => {}
        }
    }

    pub(super) fn on_vote(&mut self, now: Time, from: NodeId, last_index: u64, last_term: u64) {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted {
            self.vote = Some(from);
            self.reset_election_deadline(now);
        }
        // take_ready persists the vote before this answer goes out.
        let msg = RaftMsg::VoteResp {
            term: self.term,
            granted,
        };
        self.send(from, msg);
    }

    pub(super) fn on_vote_resp(&mut self, now: Time, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.become_leader(now),
            Some(false) => self.become_follower(now, self.term, None),
            None => {}
        }
    }

    pub(super) fn become_leader(&mut self, now: Time) {
        assert!(
            self.role == Role::Candidate,
            "only a candidate becomes leader"
        );
        assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
        self.role = Role::Leader;
        self.counters.terms_led += 1;
        self.leader_heard(self.id);
        self.votes.clear();
        self.ready.leadership_changed = true;
        self.progress.clear();
        let next = self.log.last_index() + 1;
        for peer in self.membership.members().filter(|m| *m != self.id) {
            self.progress.insert(peer, Progress::new(next));
        }
        self.term_start_index = next;
        self.heartbeat_deadline = now + Duration::from_millis(self.cfg.heartbeat_interval_ms);
        self.check_quorum_deadline = now + Duration::from_millis(self.cfg.election_timeout_ms_max);
        let index = self.append_local(super::EntryKind::Noop);
        assert_eq!(index, next, "the no-op opens the term");
        self.broadcast_append();
        self.maybe_commit();
    }

    pub(super) fn tick_leader(&mut self, now: Time) {
        assert_eq!(self.role, Role::Leader, "tick_leader at a leader only");
        if now >= self.check_quorum_deadline {
            let active = self
                .membership
                .voters
                .iter()
                .filter(|v| **v == self.id || self.progress.get(v).is_some_and(|p| p.recent_active))
                .count();
            if active < self.quorum() {
                self.become_follower(now, self.term, None);
                return;
            }
            for p in self.progress.values_mut() {
                p.recent_active = false;
            }
            self.check_quorum_deadline =
                now + Duration::from_millis(self.cfg.election_timeout_ms_max);
        }
        if self.transfer.as_ref().is_some_and(|t| now >= t.deadline) {
            self.transfer = None;
        }
        if now >= self.heartbeat_deadline {
            self.heartbeat_deadline = now + Duration::from_millis(self.cfg.heartbeat_interval_ms);
            self.on_heartbeat_tick();
        }
    }
}
