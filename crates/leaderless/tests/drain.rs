//! Draining a leaderless node: it claims nothing new, its running tasks
//! finish, and at the deadline it releases its claims by Paxos
//! (`SupersedeReason::Released`), so other replicas claim them under the
//! next epoch. The harness checks one value per instance, G2 and G3 after
//! every event.

mod common;

use cohort_core::{Epoch, Node, NodeId, Note, SupersedeReason, TaskId, TaskState, Time};
use cohort_leaderless::LeaderlessConfig;
use common::{tid, Sim};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TASKS: u64 = 30;
const W: NodeId = NodeId(2);

/// A 5-node cluster with `TASKS` tasks whose handlers run `run_ms`,
/// once `W` runs some of them.
fn loaded(seed: u64, run_ms: (u64, u64)) -> (Sim, Vec<TaskId>) {
    let mut sim = Sim::new(seed, 5, LeaderlessConfig::default());
    sim.handlers.run_ms = run_ms;
    sim.run_for(1_000); // SWIM settles
    let ids: Vec<TaskId> = (0..TASKS).map(tid).collect();
    for (i, &id) in ids.iter().enumerate() {
        sim.submit(NodeId(1 + i as u64 % 5), id, b"x");
    }
    assert!(sim.run_until(1_000, |s| s.executions.iter().any(|e| e.1 == W)));
    (sim, ids)
}

/// The tasks `W` runs now, with their epochs.
fn running_on_w(sim: &Sim, ids: &[TaskId]) -> BTreeMap<TaskId, Epoch> {
    ids.iter()
        .filter_map(|&id| {
            let runs = sim.executions_of(id);
            match runs.last() {
                Some(&(n, e)) if n == W && sim.decided(id).is_none() => Some((id, e)),
                _ => None,
            }
        })
        .collect()
}

fn released(sim: &Sim) -> Vec<(Time, TaskId, Epoch)> {
    sim.notes
        .iter()
        .filter_map(|(at, _, n)| match n {
            Note::Superseded {
                task,
                epoch,
                reason: SupersedeReason::Released,
            } => Some((*at, *task, *epoch)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_draining_node_claims_nothing_new_and_what_finishes_before_the_deadline_is_not_rerun() {
    let (mut sim, mut ids) = loaded(21, (300, 600));
    let mine = running_on_w(&sim, &ids);
    assert!(!mine.is_empty());
    let drained_at = sim.now;
    sim.with_node(W, |n, now| {
        n.begin_drain(now, now + Duration::from_secs(10))
    })
    .unwrap();
    let st = sim.node(W).drain_status().expect("draining");
    assert!(!st.handing_back && st.held_count >= mine.len(), "{st:?}");
    for i in TASKS..2 * TASKS {
        let id = tid(i);
        sim.submit(NodeId(1 + i % 5), id, b"x");
        ids.push(id);
    }
    assert!(sim.run_until(8_000, |s| ids.iter().all(|&id| s.decided(id).is_some())));
    assert!(
        !sim.executions.iter().any(|e| e.1 == W && e.0 > drained_at),
        "nothing started on the draining node"
    );
    for &id in &ids {
        assert!(matches!(sim.decided(id), Some(TaskState::Succeeded { .. })));
        assert_eq!(sim.executions_of(id).len(), 1, "{id:?} ran once");
        if mine.contains_key(&id) {
            assert!(
                matches!(sim.decided(id), Some(TaskState::Succeeded { node, .. }) if *node == W)
            );
        }
    }
    // A claim of W's chosen after the drain began is handed back at once,
    // never run: nothing W ran was handed back.
    for (_, t, e) in released(&sim) {
        assert!(!sim.executions_of(t).contains(&(W, e)), "{t:?} ran on W");
    }
    assert!(sim.run_until(1_000, |s| s.node(W).drain_status().unwrap().is_done()));
}

#[test]
fn at_the_deadline_a_drained_nodes_claims_are_released_by_paxos_and_rerun_elsewhere_with_the_next_epoch(
) {
    // Handlers run 5 s: far past the 1 s deadline.
    let (mut sim, ids) = loaded(22, (5_000, 5_000));
    let mine = running_on_w(&sim, &ids);
    assert!(!mine.is_empty());
    let deadline = sim.now + Duration::from_millis(1_000);
    sim.with_node(W, |n, now| {
        n.begin_drain(now, now + Duration::from_millis(1_000))
    })
    .unwrap();
    // Only claims it does not run (chosen after the drain began) may be
    // released before the deadline; what it runs is released at it.
    let of_mine = |s: &Sim| -> Vec<(Time, TaskId, Epoch)> {
        released(s)
            .into_iter()
            .filter(|(_, t, e)| mine.get(t) == Some(e))
            .collect()
    };
    sim.run_for(900);
    assert!(
        of_mine(&sim).is_empty(),
        "nothing it runs handed back before the deadline"
    );
    assert!(!sim.node(W).drain_status().unwrap().handing_back);
    assert!(sim.run_until(1_000, |s| {
        let handed: BTreeSet<TaskId> = of_mine(s).into_iter().map(|(_, t, _)| t).collect();
        handed.len() == mine.len()
    }));
    for (at, _, _) in of_mine(&sim) {
        assert!(at >= deadline, "released at the deadline, not before");
    }
    assert!(sim.run_until(20_000, |s| ids.iter().all(|&id| s.decided(id).is_some())));
    for (&id, &e) in &mine {
        match sim.decided(id) {
            Some(TaskState::Succeeded { node, epoch, .. }) => {
                assert_ne!(*node, W, "{id:?} ran elsewhere");
                assert_eq!(*epoch, e.next(), "{id:?} under the next epoch");
            }
            s => panic!("{id:?} ended {s:?}"),
        }
        assert_eq!(sim.executions_of(id).len(), 2, "{id:?}");
    }
    for id in ids.iter().filter(|id| !mine.contains_key(id)) {
        assert_eq!(sim.executions_of(*id).len(), 1, "{id:?} ran once");
    }
    assert!(sim.node(W).drain_status().unwrap().is_done());
}
