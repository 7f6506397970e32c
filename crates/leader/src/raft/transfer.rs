//! Leader transfer (Raft thesis §3.10), used by graceful shutdown.
//!
//! The leader stops taking proposals, brings the target up to date, then
//! sends it `TimeoutNow`; the target campaigns at once, skipping pre-vote
//! and overriding its peers' leader lease. If the target has not taken over
//! within an election timeout the transfer is abandoned.

use super::{RaftError, RaftMsg, RaftNode, Role};
use cohort_core::{NodeId, Time};
use std::time::Duration;

/// A transfer in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub(super) to: NodeId,
    pub(super) deadline: Time,
}

impl RaftNode {
    /// Hands leadership to the voter `to`.
    pub fn transfer_leadership(&mut self, now: Time, to: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id || !self.membership.is_voter(to) {
            return Err(RaftError::InvalidChange {
                reason: format!("{to} is not another voter"),
            });
        }
        self.transfer = Some(Transfer {
            to,
            deadline: now + Duration::from_millis(self.cfg.election_timeout_ms_max),
        });
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.maybe_send_timeout_now(to);
        } else {
            self.replicate_to(to);
        }
        Ok(())
    }

    /// The highest index known replicated on `peer` (leader only; else 0).
    pub fn match_index(&self, peer: NodeId) -> u64 {
        if peer == self.id {
            return self.log.last_index();
        }
        self.progress.get(&peer).map_or(0, |p| p.match_index)
    }

    /// The voter leadership is being handed to, if any.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    pub(super) fn maybe_send_timeout_now(&mut self, to: NodeId) {
        if self.transfer.is_some_and(|t| t.to == to) {
            self.send(to, RaftMsg::TimeoutNow { term: self.term });
        }
    }

    pub(super) fn on_timeout_now(&mut self, now: Time, _from: NodeId) {
        if self.role == Role::Leader || !self.membership.is_voter(self.id) {
            return;
        }
        self.campaign(now, true);
    }
}
