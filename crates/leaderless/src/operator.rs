//! A scripted operator for simulated runs: on a share of seeds, a spare
//! node joins the ring and a member is removed while the faults strike,
//! like an administrator would through [`LeaderlessNode::propose_ring_change`].
//! Pure and seeded, so a simulator hook can drive it (`cohort sim` and
//! `tests/simulator.rs` do).

use crate::node::LeaderlessNode;
use crate::ring::RingChange;
use cohort_core::{NodeId, Time};

/// Ring changes asked during a run, in order, each asked again at a random
/// live node every [`RingOperator::RETRY_MS`] until that node's ring
/// reflects it (the node asked may crash or be cut off; asking twice is
/// harmless: a change the ring reflects is a no-op).
#[derive(Clone, Debug)]
pub struct RingOperator {
    /// `(not before, ms since the start; change)`, the next first.
    changes: Vec<(u64, RingChange)>,
    /// Every change of the run.
    planned: Vec<RingChange>,
    /// The configured members of the ring at epoch 0.
    initial: Vec<NodeId>,
    asked: u64,
}

impl RingOperator {
    /// How often an unreflected change is asked again.
    pub const RETRY_MS: u64 = 500;
    /// One seed in this many changes the ring.
    pub const EVERY_NTH_SEED: u64 = 3;

    /// The operator of seed `seed` for a cluster of `nodes` configured
    /// members, if this seed changes the ring: every
    /// [`Self::EVERY_NTH_SEED`]th seed, with at least 4 nodes. Its ring at
    /// epoch 0 ([`RingOperator::initial_ring`]) leaves the last node out
    /// as a spare, which joins `join_ms` into the run; a member drawn from
    /// the seed is removed `join_ms + 1 s` in.
    pub fn for_seed(seed: u64, nodes: usize, join_ms: u64) -> Option<RingOperator> {
        if !seed.is_multiple_of(Self::EVERY_NTH_SEED) || nodes < 4 {
            return None;
        }
        let spare = NodeId(nodes as u64);
        let initial: Vec<NodeId> = (1..nodes as u64).map(NodeId).collect();
        let removed = initial[(splitmix(seed) % initial.len() as u64) as usize];
        let changes = vec![
            (join_ms, RingChange::Add(spare)),
            (join_ms + 1_000, RingChange::Remove(removed)),
        ];
        Some(RingOperator {
            planned: changes.iter().map(|&(_, c)| c).collect(),
            changes,
            initial,
            asked: 0,
        })
    }

    /// The ring at epoch 0 (`LeaderlessConfig::initial_ring`).
    pub fn initial_ring(&self) -> Vec<NodeId> {
        self.initial.clone()
    }

    /// When to act first, ms since the start.
    pub fn first_ms(&self) -> Option<u64> {
        self.changes.first().map(|&(at, _)| at)
    }

    /// How many times a change was asked of a node.
    pub fn asked(&self) -> u64 {
        self.asked
    }

    /// Asks the next change not yet reflected at a node drawn with `draw`
    /// among the live ones (`None`: down or paused). Returns when to act
    /// again, if ever.
    pub fn act(
        &mut self,
        now: Time,
        draw: u64,
        nodes: &mut [Option<&mut LeaderlessNode>],
    ) -> Option<u64> {
        let now_ms = now.0 / 1_000;
        let up: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_some()).collect();
        if up.is_empty() {
            return Some(now_ms + Self::RETRY_MS);
        }
        let i = up[(draw % up.len() as u64) as usize];
        let node = nodes[i].as_mut().expect("listed as up");
        while let Some(&(at, change)) = self.changes.first() {
            if at > now_ms {
                return Some(at);
            }
            if change.apply(node.ring()).is_none() {
                self.changes.remove(0);
                continue;
            }
            // Refused while another change is in flight there: asked again.
            let _ = node.propose_ring_change(now, change);
            self.asked += 1;
            return Some(now_ms + Self::RETRY_MS);
        }
        None
    }

    /// At the end of a run: every node that is up holds the same ring, and
    /// it reflects every change asked.
    pub fn check_final(&self, nodes: &[Option<&LeaderlessNode>]) -> Result<(), String> {
        let rings: Vec<(usize, &crate::ring::Ring)> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.ring())))
            .collect();
        let Some(&(_, first)) = rings.first() else {
            return Ok(());
        };
        if let Some((i, other)) = rings.iter().find(|(_, r)| *r != first) {
            return Err(format!(
                "rings differ: n{} holds {first:?}, n{} holds {other:?}",
                rings[0].0 + 1,
                i + 1
            ));
        }
        if let Some(change) = self.planned.iter().find(|c| c.apply(first).is_some()) {
            return Err(format!(
                "ring change {change:?} never landed (ring {first:?})"
            ));
        }
        Ok(())
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
