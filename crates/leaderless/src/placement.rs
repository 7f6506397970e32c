//! Rendezvous (highest-random-weight) placement of tasks over the ring.
//!
//! Every node computes the same preference list for a task from the same
//! ring membership: each member gets the score `fnv1a(task id ++ node id)`
//! and members are ordered by descending score (ties by node id). The first
//! `R` are the task's replicas. The hash is FNV-1a 64 written here, so the
//! result never depends on a per-process random hasher key.

use cohort_core::{NodeId, TaskId};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits, over `bytes`, continuing from the state `h`.
fn fnv1a64_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// A final avalanche (splitmix64) so that FNV's weak low bits do not bias
/// the ordering of close node ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The FNV state after the task id's bytes: the part of every member's
/// score the task alone decides, hashed once per placement rather than
/// once per member.
fn task_state(task: TaskId) -> u64 {
    fnv1a64_from(FNV_OFFSET, &task.0.to_be_bytes())
}

/// The score of `node` from the task's FNV state.
fn score_from(task_state: u64, node: NodeId) -> u64 {
    mix(fnv1a64_from(task_state, &node.0.to_be_bytes()))
}

/// The rendezvous score of `node` for `task`.
pub fn score(task: TaskId, node: NodeId) -> u64 {
    score_from(task_state(task), node)
}

/// Whether `a` comes before `b` in a preference list: higher score first,
/// ties by node id.
fn before(a: (u64, NodeId), b: (u64, NodeId)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Every member of `ring`, most preferred first, for `task`.
pub fn preference_list(task: TaskId, ring: &[NodeId]) -> Vec<NodeId> {
    let state = task_state(task);
    let mut scored: Vec<(u64, NodeId)> = ring.iter().map(|&n| (score_from(state, n), n)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.dedup_by_key(|(_, n)| *n);
    scored.into_iter().map(|(_, n)| n).collect()
}

/// The task's first `r` members of the preference list: its replicas.
/// Selected in one pass that keeps the best `r` seen (`r` is the
/// replication factor, a handful), not by sorting the whole ring: this
/// runs for every task a node places, over every member.
pub fn replicas(task: TaskId, ring: &[NodeId], r: usize) -> Vec<NodeId> {
    let state = task_state(task);
    let mut best: Vec<(u64, NodeId)> = Vec::with_capacity(r + 1);
    for &n in ring {
        let s = (score_from(state, n), n);
        if best.len() == r && !best.last().is_some_and(|last| before(s, *last)) {
            continue;
        }
        if best.iter().any(|(_, m)| *m == n) {
            continue; // a member listed twice counts once
        }
        let at = best
            .iter()
            .position(|b| before(s, *b))
            .unwrap_or(best.len());
        best.insert(at, s);
        best.truncate(r);
    }
    let list: Vec<NodeId> = best.into_iter().map(|(_, n)| n).collect();
    assert!(list.len() == r.min(ring.len()));
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ring(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    #[test]
    fn the_preference_list_is_a_permutation_of_the_ring_and_order_independent() {
        let mut r = ring(7);
        let t = TaskId(0xdead_beef);
        let a = preference_list(t, &r);
        r.reverse();
        let b = preference_list(t, &r);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, ring(7));
    }

    /// The one-pass selection is the sorted list's prefix, and the score
    /// is FNV-1a over the task and node bytes as it always was (a change
    /// would move every task of a running cluster).
    #[test]
    fn replicas_are_the_preference_lists_first_members_and_scores_keep_their_hash() {
        let r = ring(40);
        for i in 0..300u128 {
            let t = TaskId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_0123_4567));
            let full = preference_list(t, &r);
            for k in [1, 3, 5, 40] {
                assert_eq!(replicas(t, &r, k), full[..k].to_vec(), "{t:?} r={k}");
            }
        }
        // A member listed twice counts once.
        let twice = [NodeId(1), NodeId(2), NodeId(2), NodeId(3), NodeId(1)];
        let t = TaskId(42);
        assert_eq!(replicas(t, &twice, 3), preference_list(t, &twice));
        // FNV-1a 64 over the 24 bytes task ++ node, then splitmix64's finish.
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&7u128.to_be_bytes());
        bytes[16..].copy_from_slice(&9u64.to_be_bytes());
        let mut h = FNV_OFFSET;
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        assert_eq!(score(TaskId(7), NodeId(9)), mix(h));
    }

    #[test]
    fn removing_a_member_only_moves_the_tasks_it_held() {
        // The rendezvous property: a task whose replicas did not include the
        // removed node keeps exactly the same replicas.
        let full = ring(6);
        let smaller: Vec<NodeId> = full.iter().copied().filter(|n| *n != NodeId(4)).collect();
        for i in 0..500u128 {
            let t = TaskId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let before = replicas(t, &full, 3);
            let after = replicas(t, &smaller, 3);
            if !before.contains(&NodeId(4)) {
                assert_eq!(before, after);
            } else {
                assert!(!after.contains(&NodeId(4)));
            }
        }
    }

    #[test]
    fn first_replicas_spread_evenly_over_five_nodes() {
        let r = ring(5);
        let mut firsts: BTreeMap<NodeId, u32> = BTreeMap::new();
        for i in 0..5000u128 {
            let t = TaskId(i.wrapping_mul(0x0123_4567_89ab_cdef_1122_3344_5566_7788));
            *firsts.entry(replicas(t, &r, 3)[0]).or_default() += 1;
        }
        assert_eq!(firsts.len(), 5);
        for (&n, &c) in &firsts {
            assert!(
                (800..=1200).contains(&c),
                "{n} is first for {c} of 5000 tasks"
            );
        }
    }
}
