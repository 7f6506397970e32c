//! The ring membership as a replicated, versioned value: the nodes tasks are
//! placed on. Epoch 0 is the configured ring; instance `k` of a
//! single-decree Paxos among the members of the chosen ring at epoch `k`
//! decides the ring at epoch `k + 1` (a join or a removal), exactly like a
//! task's versions. Nodes spread the newest ring they know by gossip
//! ([`crate::LeaderlessMessage::RingHave`] / `RingLearn`), so every node
//! converges to it; a ring is only ever replaced by one of a higher epoch.
//!
//! Why one ring per epoch: every proposer of instance `k` starts from the
//! chosen ring at `k` (carried in its prepare), so all of them ask the same
//! acceptors, whose majorities intersect; acceptors never accept below
//! their promise, and a proposer adopts the value accepted under the highest
//! ballot among its promises. Ballots are the tasks' ([`Ballot`]: round,
//! node, boot generation), so a restarted node never reuses one.

use crate::paxos::{majority, Ballot};
use cohort_core::{NodeId, Time};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Store key of this node's ring state ([`RingState`]).
pub(crate) const RING_KEY: &[u8] = b"lless/ring";

/// How many of the changes that led to a ring the ring itself carries
/// ([`Ring::changes`]), so a node that learns it reconstructs that many
/// earlier rings even if it never heard them. Part of the chosen value, so
/// the same on every node: a protocol constant, not a setting.
pub const RING_CHANGES_MAX: usize = 16;

/// The ring membership at one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// 0 for the configured ring, +1 per chosen change.
    pub epoch: u64,
    /// The members, ascending.
    pub members: Vec<NodeId>,
    /// The last changes that led here, oldest first, at most
    /// [`RING_CHANGES_MAX`]: the change that made `epoch` is last. A node
    /// that was down while the ring went from `e` to `e + 2` learns `e + 2`
    /// directly; without `e + 1` it would not look for tasks still placed
    /// under it (not moved yet), and a lookup there could miss an
    /// acknowledged task (`cohort sim` seed 2055: a linearizable read
    /// answered `NotFound`, and a submit could have created it again).
    pub changes: Vec<RingChange>,
}

impl Ring {
    /// The configured ring (epoch 0).
    pub fn initial(members: Vec<NodeId>) -> Ring {
        Ring {
            epoch: 0,
            members,
            changes: Vec::new(),
        }
    }

    /// The rings before this one that its [`Ring::changes`] determine,
    /// newest first.
    pub fn earlier(&self) -> Vec<Ring> {
        let mut out = Vec::with_capacity(self.changes.len());
        let mut members = self.members.clone();
        for (i, change) in self.changes.iter().enumerate().rev() {
            match *change {
                RingChange::Add(n) => members.retain(|&m| m != n),
                RingChange::Remove(n) => {
                    members.push(n);
                    members.sort();
                }
            }
            let back = (self.changes.len() - i) as u64;
            if back > self.epoch {
                break; // never before epoch 0 (only a forged ring says so)
            }
            out.push(Ring {
                epoch: self.epoch - back,
                members: members.clone(),
                changes: self.changes[..i].to_vec(),
            });
        }
        out
    }
}

/// A requested change of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingChange {
    /// The node joins the ring: tasks get placed on it.
    Add(NodeId),
    /// The node leaves the ring for good: its tasks move to other nodes.
    Remove(NodeId),
}

impl RingChange {
    /// The ring after this change on top of `base`, or `None` when `base`
    /// already reflects it (or it would empty the ring).
    pub fn apply(&self, base: &Ring) -> Option<Ring> {
        let mut members = base.members.clone();
        match *self {
            RingChange::Add(n) if !members.contains(&n) => members.push(n),
            RingChange::Remove(n) if members.contains(&n) && members.len() > 1 => {
                members.retain(|&m| m != n)
            }
            _ => return None,
        }
        members.sort();
        let mut changes = base.changes.clone();
        changes.push(*self);
        if changes.len() > RING_CHANGES_MAX {
            changes.drain(..changes.len() - RING_CHANGES_MAX);
        }
        Some(Ring {
            epoch: base.epoch + 1,
            members,
            changes,
        })
    }
}

/// What a node persists of the ring: the newest chosen ring it knows, its
/// acceptor state for the instance deciding the next epoch, and the last
/// few rings (so reads also look where tasks not yet moved still live).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// The newest chosen ring this node knows.
    pub ring: Ring,
    /// Acceptor: highest ballot promised in the instance deciding
    /// `ring.epoch + 1`.
    pub promised: Ballot,
    /// Acceptor: the ring accepted in that instance, with its ballot.
    pub accepted: Option<(Ballot, Ring)>,
    /// Earlier rings this node learned, newest first, at most
    /// `ring_history_max`.
    pub history: VecDeque<Ring>,
}

impl RingState {
    /// The state of a node that knows only the configured ring.
    pub fn initial(members: Vec<NodeId>) -> RingState {
        RingState {
            ring: Ring::initial(members),
            promised: Ballot::ZERO,
            accepted: None,
            history: VecDeque::new(),
        }
    }

    /// Adopts a newer chosen ring. Returns whether anything changed.
    pub fn learn(&mut self, ring: &Ring, history_max: usize) -> bool {
        if ring.epoch <= self.ring.epoch {
            return false;
        }
        let old = std::mem::replace(&mut self.ring, ring.clone());
        // The rings the new one's changes determine come first (this node
        // may never have heard some of them), then what it knew before
        // that the changes do not reach back to.
        let mut history: VecDeque<Ring> = ring.earlier().into();
        let oldest = history.back().map_or(ring.epoch, |r| r.epoch);
        for known in std::iter::once(old).chain(self.history.drain(..)) {
            if known.epoch < oldest {
                history.push_back(known);
            } else {
                debug_assert!(
                    history
                        .iter()
                        .all(|r| r.epoch != known.epoch || r.members == known.members),
                    "two rings at epoch {}",
                    known.epoch
                );
            }
        }
        history.truncate(history_max);
        self.history = history;
        self.promised = Ballot::ZERO;
        self.accepted = None;
        true
    }
}

/// An acceptor's answer to a ring prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingPrepareReply {
    /// Promised; what was accepted in the instance, if anything.
    Promise(Option<(Ballot, Ring)>),
    /// Promised a higher ballot already.
    Reject(Ballot),
    /// Knows a later ring.
    Ahead(Ring),
}

/// Phase 1b at an acceptor for the instance on top of the chosen `base`.
/// Returns the reply and whether `st` changed (persist before replying).
pub fn on_prepare(
    st: &mut RingState,
    base: &Ring,
    ballot: Ballot,
    history_max: usize,
) -> (RingPrepareReply, bool) {
    if st.ring.epoch > base.epoch {
        return (RingPrepareReply::Ahead(st.ring.clone()), false);
    }
    let mut changed = st.learn(base, history_max);
    if ballot < st.promised {
        return (RingPrepareReply::Reject(st.promised), changed);
    }
    if ballot > st.promised {
        st.promised = ballot;
        changed = true;
    }
    (RingPrepareReply::Promise(st.accepted.clone()), changed)
}

/// An acceptor's answer to a ring accept; `None`: behind, no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingAcceptReply {
    /// Accepted.
    Accepted,
    /// Promised a higher ballot already.
    Reject(Ballot),
    /// Knows a later ring.
    Ahead(Ring),
}

/// Phase 2b at an acceptor for the instance deciding `value.epoch`.
pub fn on_accept(
    st: &mut RingState,
    ballot: Ballot,
    value: &Ring,
) -> (Option<RingAcceptReply>, bool) {
    let base_epoch = value.epoch - 1;
    if st.ring.epoch > base_epoch {
        return (Some(RingAcceptReply::Ahead(st.ring.clone())), false);
    }
    if st.ring.epoch < base_epoch {
        return (None, false);
    }
    if ballot < st.promised {
        return (Some(RingAcceptReply::Reject(st.promised)), false);
    }
    let next = Some((ballot, value.clone()));
    if st.promised == ballot && st.accepted == next {
        return (Some(RingAcceptReply::Accepted), false);
    }
    st.promised = ballot;
    st.accepted = next;
    (Some(RingAcceptReply::Accepted), true)
}

#[derive(Clone, Debug)]
enum Phase {
    Preparing(BTreeMap<NodeId, Option<(Ballot, Ring)>>),
    Accepting(Ring, BTreeSet<NodeId>),
}

/// This node's ring change in flight (one at a time).
#[derive(Clone, Debug)]
pub struct RingProposal {
    /// What was asked.
    pub change: RingChange,
    /// The chosen ring this round builds on.
    pub base: Ring,
    ballot: Ballot,
    phase: Phase,
    started: Time,
}

/// What a ring reply led to.
#[derive(Debug, PartialEq, Eq)]
pub enum RingStep {
    /// Nothing to do yet.
    Wait,
    /// Send `Accept(ballot, value)` to the base ring's members.
    Accept(Vec<NodeId>, Ballot, Ring),
    /// `Ring` is chosen (maybe another node's change, adopted).
    Chosen(Ring),
}

impl RingProposal {
    /// A first round for `change` on top of `base` under `ballot`.
    pub fn new(change: RingChange, base: Ring, ballot: Ballot, now: Time) -> RingProposal {
        RingProposal {
            change,
            base,
            ballot,
            phase: Phase::Preparing(BTreeMap::new()),
            started: now,
        }
    }

    /// The ballot of the current round.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Whether the round is older than `timeout` (to retry with a higher ballot).
    pub fn timed_out(&self, now: Time, timeout: Duration) -> bool {
        now.saturating_since(self.started) >= timeout
    }

    /// A new round on top of `base` under `ballot`.
    pub fn restart(&mut self, base: Ring, ballot: Ballot, now: Time) {
        *self = RingProposal::new(self.change, base, ballot, now);
    }

    /// A promise from `from`.
    pub fn on_promise(
        &mut self,
        from: NodeId,
        epoch: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, Ring)>,
    ) -> RingStep {
        if epoch != self.base.epoch || ballot != self.ballot || !self.base.members.contains(&from) {
            return RingStep::Wait;
        }
        let Phase::Preparing(promises) = &mut self.phase else {
            return RingStep::Wait;
        };
        promises.insert(from, accepted);
        if promises.len() < majority(self.base.members.len()) {
            return RingStep::Wait;
        }
        let value = match promises.values().flatten().max_by_key(|(b, _)| *b) {
            Some((_, r)) => r.clone(),
            None => match self.change.apply(&self.base) {
                Some(r) => r,
                None => return RingStep::Chosen(self.base.clone()),
            },
        };
        self.phase = Phase::Accepting(value.clone(), BTreeSet::new());
        RingStep::Accept(self.base.members.clone(), self.ballot, value)
    }

    /// An accepted from `from`.
    pub fn on_accepted(&mut self, from: NodeId, epoch: u64, ballot: Ballot) -> RingStep {
        if epoch != self.base.epoch + 1
            || ballot != self.ballot
            || !self.base.members.contains(&from)
        {
            return RingStep::Wait;
        }
        let Phase::Accepting(value, accepted) = &mut self.phase else {
            return RingStep::Wait;
        };
        accepted.insert(from);
        if accepted.len() < majority(self.base.members.len()) {
            return RingStep::Wait;
        }
        RingStep::Chosen(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(epoch: u64, m: &[u64]) -> Ring {
        Ring {
            epoch,
            members: m.iter().map(|&n| NodeId(n)).collect(),
            changes: Vec::new(),
        }
    }

    fn b(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
            generation: 0,
        }
    }

    #[test]
    fn a_change_already_reflected_in_the_ring_is_a_no_op_and_the_ring_never_empties() {
        let r = ring(3, &[1, 2, 3]);
        assert_eq!(RingChange::Add(NodeId(2)).apply(&r), None);
        assert_eq!(RingChange::Remove(NodeId(9)).apply(&r), None);
        let mut joined = ring(4, &[0, 1, 2, 3]);
        joined.changes = vec![RingChange::Add(NodeId(0))];
        assert_eq!(RingChange::Add(NodeId(0)).apply(&r), Some(joined));
        assert_eq!(RingChange::Remove(NodeId(1)).apply(&ring(0, &[1])), None);
    }

    #[test]
    fn a_node_that_skipped_a_ring_reconstructs_it_from_the_changes_the_newer_ring_carries() {
        // Epoch 0 [1,2,3,4]; 1: n5 joins; 2: n2 is removed. A node down
        // through epoch 1 learns epoch 2 directly and must still look where
        // epoch 1 placed tasks.
        let r0 = ring(0, &[1, 2, 3, 4]);
        let r1 = RingChange::Add(NodeId(5)).apply(&r0).expect("a change");
        let r2 = RingChange::Remove(NodeId(2)).apply(&r1).expect("a change");
        let history = |st: &RingState| -> Vec<(u64, Vec<NodeId>)> {
            st.history
                .iter()
                .map(|r| (r.epoch, r.members.clone()))
                .collect()
        };
        let mut skipped = RingState::initial(r0.members.clone());
        assert!(skipped.learn(&r2, 8));
        let epochs = history(&skipped);
        assert_eq!(
            epochs,
            vec![(1, r1.members.clone()), (0, r0.members.clone())],
            "both earlier rings, newest first"
        );
        // A node that heard every ring ends with the same history.
        let mut heard = RingState::initial(r0.members.clone());
        assert!(heard.learn(&r1, 8));
        assert!(heard.learn(&r2, 8));
        assert_eq!(history(&heard), epochs);
        // The carried changes are bounded, and the history by its limit.
        let mut r = r0.clone();
        for i in 0..(RING_CHANGES_MAX as u64 + 5) {
            r = RingChange::Add(NodeId(100 + i))
                .apply(&r)
                .expect("a change");
        }
        assert_eq!(r.changes.len(), RING_CHANGES_MAX);
        assert_eq!(r.earlier().len(), RING_CHANGES_MAX);
        let mut far = RingState::initial(r0.members.clone());
        assert!(far.learn(&r, 3));
        assert_eq!(far.history.len(), 3);
        assert_eq!(far.history[0].epoch, r.epoch - 1);
    }

    #[test]
    fn two_concurrent_ring_changes_choose_one_ring_per_epoch() {
        // Acceptors 1..3 of epoch 0; proposer A (add 4) and B (remove 3).
        let base = ring(0, &[1, 2, 3]);
        let mut acc: Vec<RingState> = (0..3)
            .map(|_| RingState::initial(base.members.clone()))
            .collect();
        let mut a = RingProposal::new(
            RingChange::Add(NodeId(4)),
            base.clone(),
            b(1, 1),
            Time::ZERO,
        );
        let mut bb = RingProposal::new(
            RingChange::Remove(NodeId(3)),
            base.clone(),
            b(2, 2),
            Time::ZERO,
        );
        // A gets promises from 1 and 2 and accepts at 1 only.
        let mut step = RingStep::Wait;
        for (i, acceptor) in acc.iter_mut().enumerate().take(2) {
            let (RingPrepareReply::Promise(x), _) = on_prepare(acceptor, &base, a.ballot(), 8)
            else {
                panic!()
            };
            step = a.on_promise(NodeId(i as u64 + 1), 0, a.ballot(), x);
        }
        let RingStep::Accept(_, ballot, value) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            on_accept(&mut acc[0], ballot, &value).0,
            Some(RingAcceptReply::Accepted)
        );
        // B prepares at 1 and 3: it sees A's accepted ring and must keep it.
        let mut step = RingStep::Wait;
        for i in [0, 2] {
            let (RingPrepareReply::Promise(x), _) = on_prepare(&mut acc[i], &base, bb.ballot(), 8)
            else {
                panic!()
            };
            step = bb.on_promise(NodeId(i as u64 + 1), 0, bb.ballot(), x);
        }
        let RingStep::Accept(_, _, kept) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            kept,
            RingChange::Add(NodeId(4)).apply(&base).expect("a change")
        );
        // A's late accept at 2 is refused: 2 promised nothing higher, but 3 did.
        assert_eq!(
            on_accept(&mut acc[2], ballot, &value).0,
            Some(RingAcceptReply::Reject(b(2, 2)))
        );
    }
}
