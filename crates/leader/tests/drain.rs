//! Draining a worker in leader mode: it gets no new assignments, its
//! running tasks finish, and at the deadline what it still runs is handed
//! back (`SupersedeReason::Released`) and runs elsewhere under the next
//! epoch.

mod cluster;

use cluster::{task, Cluster};
use cohort_core::{Epoch, Node, NodeId, Note, SupersedeReason, TaskId, TaskState};
use cohort_leader::ValidLeaderConfig;
use std::collections::{BTreeMap, BTreeSet};

const TASKS: u128 = 12;

/// A 3-node cluster (capacity 4 each) with `TASKS` tasks submitted and
/// spread over the workers; returns it and a worker that runs some of
/// them (the leader itself if `leader`, else a follower).
fn loaded(seed: u64, exec_ms: u64, leader: bool) -> (Cluster, NodeId) {
    let mut c = Cluster::new(seed, 3, ValidLeaderConfig::default());
    c.exec_ms = exec_ms;
    let l = c.elect(3_000);
    c.run_for(300); // every worker has heartbeated the leader
    for i in 0..TASKS {
        c.submit(l, TaskId(i), task("echo", &[i as u8]));
    }
    c.run_for(100);
    let w = if leader {
        l
    } else {
        (1..=3).map(NodeId).find(|n| *n != l).unwrap()
    };
    assert!(
        c.node(w).scheduler().load(w) > 0,
        "the drained worker runs something"
    );
    (c, w)
}

/// Executions of each task: `(node, epoch)` in order.
fn runs(c: &Cluster) -> BTreeMap<TaskId, Vec<(NodeId, Epoch)>> {
    let mut runs: BTreeMap<TaskId, Vec<(NodeId, Epoch)>> = BTreeMap::new();
    for (_, n, t, e) in &c.executed {
        runs.entry(*t).or_default().push((*n, *e));
    }
    runs
}

#[test]
fn a_draining_worker_gets_no_new_work_and_what_finishes_before_the_deadline_is_not_rerun() {
    let (mut c, w) = loaded(11, 300, false);
    let drained_at = c.now;
    let mine: BTreeSet<TaskId> = c.node(w).scheduler().running_on(w).collect();
    c.begin_drain(w, 5_000);
    let st = c.node(w).drain_status().expect("draining");
    assert!(!st.handing_back);
    assert_eq!(st.held, mine.iter().copied().collect::<Vec<_>>());
    let l = c.leader().unwrap();
    for i in TASKS..2 * TASKS {
        c.submit(l, TaskId(i), task("echo", &[i as u8]));
    }
    c.run_for(3_000);
    assert!(
        !c.executed
            .iter()
            .any(|(at, n, _, _)| *n == w && *at > drained_at),
        "nothing started on the draining worker"
    );
    let decided = c.check_history();
    assert_eq!(decided.len(), 2 * TASKS as usize);
    for (id, runs) in runs(&c) {
        assert_eq!(runs.len(), 1, "{id:?} ran once: {runs:?}");
        if mine.contains(&id) {
            assert!(matches!(decided[&id], TaskState::Succeeded { node, .. } if node == w));
        }
    }
    assert_eq!(c.superseded(SupersedeReason::Released), 0);
    let st = c.node(w).drain_status().expect("still draining");
    assert!(st.is_done(), "{st:?}");
}

fn handed_back_at_the_deadline(seed: u64, leader: bool) {
    // Handlers run 5 s: far past the 1 s deadline.
    let (mut c, w) = loaded(seed, 5_000, leader);
    let mine: BTreeSet<TaskId> = c.node(w).scheduler().running_on(w).collect();
    let epochs: BTreeMap<TaskId, Epoch> = mine
        .iter()
        .map(|t| (*t, c.node(w).scheduler().get(*t).unwrap().epoch))
        .collect();
    c.begin_drain(w, 1_000);
    c.run_for(900);
    let st = c.node(w).drain_status().unwrap();
    assert!(!st.handing_back && st.held_count == mine.len(), "{st:?}");
    assert_eq!(c.superseded(SupersedeReason::Released), 0);
    let deadline = c.now + std::time::Duration::from_millis(100);
    c.run_for(400);
    assert!(c.node(w).drain_status().unwrap().handing_back);
    assert_eq!(c.superseded(SupersedeReason::Released), mine.len());
    c.run_for(15_000);
    let decided = c.check_history();
    assert_eq!(decided.len(), TASKS as usize);
    let released: BTreeSet<(TaskId, Epoch)> = c
        .notes
        .iter()
        .filter_map(|(at, _, n)| match n {
            Note::Superseded {
                task,
                epoch,
                reason: SupersedeReason::Released,
            } => {
                assert!(*at >= deadline, "handed back at the deadline, not before");
                Some((*task, *epoch))
            }
            _ => None,
        })
        .collect();
    let expected: BTreeSet<(TaskId, Epoch)> = epochs.iter().map(|(t, e)| (*t, *e)).collect();
    assert_eq!(released, expected);
    for (id, e) in &epochs {
        match &decided[id] {
            TaskState::Succeeded { node, epoch, .. } => {
                assert_ne!(*node, w, "{id:?} ran elsewhere");
                assert_eq!(*epoch, e.next(), "{id:?} under the next epoch");
            }
            s => panic!("{id:?} ended {s:?}"),
        }
    }
    for (id, runs) in runs(&c) {
        let expected = if mine.contains(&id) { 2 } else { 1 };
        assert_eq!(runs.len(), expected, "{id:?}: {runs:?}");
    }
    assert!(c.node(w).drain_status().unwrap().is_done());
    // The drained worker's handlers returned long after the hand-back;
    // their results did not count (checked above: other runners won).
    assert!(c.now > deadline + std::time::Duration::from_millis(5_000));
}

#[test]
fn at_the_deadline_a_drained_followers_tasks_are_handed_back_and_rerun_elsewhere_with_the_next_epoch(
) {
    handed_back_at_the_deadline(12, false);
}

#[test]
fn a_drained_leader_hands_its_own_tasks_back_at_the_deadline() {
    handed_back_at_the_deadline(13, true);
}

#[test]
fn a_second_drain_brings_the_deadline_earlier_never_later() {
    let (mut c, w) = loaded(14, 5_000, false);
    c.begin_drain(w, 1_000);
    let first = c.node(w).drain_status().unwrap().deadline;
    c.begin_drain(w, 10_000);
    assert_eq!(c.node(w).drain_status().unwrap().deadline, first);
    c.begin_drain(w, 0);
    c.run_for(50);
    assert!(c.node(w).drain_status().unwrap().handing_back);
    assert!(c.superseded(SupersedeReason::Released) > 0);
}
