//! Scripted scenarios of the leaderless mode, each named for what it guards.
//! The harness (tests/common) checks one value per Paxos instance, G2 and G3
//! after every event; the scenarios check the rest.

mod common;

use cohort_core::{
    ClientError, ClientRequest, ClientResponse, Consistency, Epoch, Node, NodeId, Note,
    SupersedeReason, TaskId, TaskOutcome, TaskState,
};
use cohort_leaderless::{placement, LeaderlessConfig, LeaderlessMessage, RingChange};
use common::{task, tid, Sim};

fn accepted(sim: &Sim, r: cohort_core::RequestId) -> bool {
    matches!(sim.reply(r), Some(Ok(ClientResponse::Accepted { .. })))
}

#[test]
fn a_submitted_task_is_acknowledged_after_w_replicas_persist_it_and_runs_once() {
    let mut sim = Sim::new(1, 5, LeaderlessConfig::default());
    sim.run_for(1_000); // SWIM settles
    let ids: Vec<_> = (0..20).map(tid).collect();
    let reqs: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| sim.submit(NodeId(1 + i as u64 % 5), id, b"x"))
        .collect();
    sim.run_for(50);
    for (&id, &r) in ids.iter().zip(&reqs) {
        assert!(accepted(&sim, r), "{id:?}: {:?}", sim.reply(r));
        // Durable on at least W = 2 of its replicas.
        let replicas = sim.node(NodeId(1)).replicas_of(id);
        assert_eq!(replicas.len(), 3);
        let holding = replicas
            .iter()
            .filter(|&&n| sim.store(n).get(&record_key(id)).is_some())
            .count();
        assert!(holding >= 2, "{id:?} is on {holding} replicas");
    }
    assert!(sim.run_until(2_000, |s| ids.iter().all(|&id| s.decided(id).is_some())));
    for &id in &ids {
        assert!(matches!(sim.decided(id), Some(TaskState::Succeeded { .. })));
        // No faults: exactly one execution, by the first replica.
        let first = sim.node(NodeId(1)).replicas_of(id)[0];
        assert_eq!(sim.executions_of(id), vec![(first, Epoch(1))]);
    }
}

fn record_key(id: cohort_core::TaskId) -> Vec<u8> {
    let mut k = b"lless/task/".to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

#[test]
fn resubmitting_the_same_task_is_idempotent_and_a_different_one_is_an_id_conflict() {
    let mut sim = Sim::new(2, 5, LeaderlessConfig::default());
    sim.run_for(500);
    let id = tid(7);
    let a = sim.submit(NodeId(1), id, b"same");
    sim.run_for(50);
    let b = sim.submit(NodeId(4), id, b"same");
    let c = sim.submit(NodeId(5), id, b"different");
    sim.run_for(50);
    assert!(accepted(&sim, a));
    assert!(accepted(&sim, b));
    assert_eq!(sim.reply(c), Some(&Err(ClientError::IdConflict { id })));
    assert!(sim.run_until(1_000, |s| s.decided(id).is_some()));
    assert_eq!(
        sim.executions_of(id).len(),
        1,
        "a resubmit creates nothing new"
    );
}

#[test]
fn a_submit_whose_replicas_cannot_reach_w_is_a_retryable_unavailable() {
    let mut sim = Sim::new(3, 5, LeaderlessConfig::default());
    sim.run_for(500);
    let id = tid(3);
    let replicas = sim.node(NodeId(1)).replicas_of(id);
    let coordinator = *sim
        .members()
        .iter()
        .find(|n| !replicas.contains(n))
        .expect("6 nodes, 3 replicas");
    sim.crash(replicas[0]);
    sim.crash(replicas[1]);
    let r = sim.submit(coordinator, id, b"x");
    sim.run_for(1_500);
    let err = sim.reply(r).expect("answered").clone().unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { .. }));
    assert!(err.is_retryable());
    // With the replicas back, the same request succeeds.
    sim.restart(replicas[0]);
    sim.run_for(300);
    let again = sim.submit(coordinator, id, b"x");
    sim.run_for(100);
    assert!(accepted(&sim, again), "{:?}", sim.reply(again));
}

#[test]
fn a_linearizable_read_returns_the_decided_outcome_and_a_stale_read_is_local() {
    let mut sim = Sim::new(4, 5, LeaderlessConfig::default());
    sim.run_for(500);
    let id = tid(11);
    sim.submit(NodeId(2), id, b"payload");
    assert!(sim.run_until(1_000, |s| s.decided(id).is_some()));
    let decided = sim.decided(id).expect("decided").clone();
    let replicas = sim.node(NodeId(1)).replicas_of(id);
    let outsider = *sim
        .members()
        .iter()
        .find(|n| !replicas.contains(n))
        .expect("outsider");
    let lin = sim.get(outsider, id, Consistency::Linearizable);
    let stale_out = sim.get(outsider, id, Consistency::Stale);
    let missing = sim.get(outsider, tid(999), Consistency::Linearizable);
    sim.run_for(50);
    assert_eq!(
        sim.reply(lin),
        Some(&Ok(ClientResponse::State {
            id,
            state: decided.clone()
        }))
    );
    // The outsider holds no record: its local view does not know the task.
    assert_eq!(
        sim.reply(stale_out),
        Some(&Err(ClientError::NotFound { id }))
    );
    assert_eq!(
        sim.reply(missing),
        Some(&Err(ClientError::NotFound { id: tid(999) }))
    );
    // Every replica's local view has the outcome (Learn reached them all).
    for r in replicas {
        let stale = sim.get(r, id, Consistency::Stale);
        sim.run_for(5);
        assert_eq!(
            sim.reply(stale),
            Some(&Ok(ClientResponse::State {
                id,
                state: decided.clone()
            }))
        );
    }
}

#[test]
fn two_nodes_claiming_the_same_task_at_once_under_different_views_exactly_one_wins() {
    // Ticks far apart so the preferred replica does not claim first.
    let config = LeaderlessConfig {
        tick_interval_ms: 400,
        ..LeaderlessConfig::default()
    };
    for seed in 0..20 {
        let mut sim = Sim::new(100 + seed, 5, config.clone());
        sim.run_for(1_000);
        let id = tid(seed);
        let r = sim.submit(NodeId(1), id, b"x");
        sim.run_until(100, |s| s.reply(r).is_some());
        assert!(accepted(&sim, r));
        let replicas = sim.node(NodeId(1)).replicas_of(id);
        // The second and third replicas each believe they should take it.
        let mut started = 0;
        for &n in &replicas[1..] {
            if sim.with_node(n, |node, now| node.steal(now, id)).is_ok() {
                started += 1;
            }
        }
        if started < 2 {
            continue; // the first replica got there already this seed
        }
        assert!(sim.run_until(2_000, |s| s.decided(id).is_some()));
        let epoch1: Vec<_> = sim
            .assignments(id)
            .into_iter()
            .filter(|(e, _)| *e == Epoch(1))
            .collect();
        assert_eq!(epoch1.len(), 1, "exactly one claim of epoch 1 is chosen");
        assert_eq!(sim.executions_of(id).len(), 1, "only the winner runs it");
    }
}

#[test]
fn when_the_owner_crashes_mid_run_the_next_live_replica_reclaims_with_a_higher_epoch() {
    let mut sim = Sim::new(5, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(21);
    sim.handlers.hang.insert(id);
    sim.submit(NodeId(3), id, b"x");
    assert!(sim.run_until(500, |s| !s.executions_of(id).is_empty()));
    let (owner, epoch) = sim.executions_of(id)[0];
    assert_eq!(epoch, Epoch(1));
    sim.handlers.hang.clear();
    sim.crash(owner);
    assert!(
        sim.run_until(5_000, |s| s.decided(id).is_some()),
        "re-claimed and finished"
    );
    let replicas = sim
        .node(NodeId(if owner == NodeId(1) { 2 } else { 1 }))
        .replicas_of(id);
    let runs = sim.executions_of(id);
    assert_eq!(runs.len(), 2);
    let (second, e2) = runs[1];
    assert_eq!(e2, Epoch(2));
    assert_ne!(second, owner);
    assert!(replicas.contains(&second));
    assert_eq!(sim.superseded(id), vec![Epoch(1)]);
    match sim.decided(id) {
        Some(TaskState::Succeeded { node, epoch, .. }) => {
            assert_eq!((*node, *epoch), (second, Epoch(2)));
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A live owner whose handler hangs past the task's timeout and is never
/// stopped: SWIM keeps it alive, so only its lease can end the run. The
/// first other live replica ends it (`LeaseExpired`, a failed attempt)
/// once its grace (`Task::effective_lease_grace_ms`) past the timeout, the task runs under epoch 2, and
/// the hung handler's result, when it comes at last, is rejected.
#[test]
fn a_hung_handler_on_a_live_owner_loses_its_lease_and_its_late_result_is_rejected() {
    hung_handler_loses_its_lease(0);
}

/// The same with the task's own lease grace (6 s, where the derived one
/// would be 1 s): the lease holds until that grace has passed.
#[test]
fn a_tasks_own_lease_grace_holds_a_hung_handlers_lease_that_long() {
    hung_handler_loses_its_lease(6_000);
}

fn hung_handler_loses_its_lease(lease_grace_ms: u64) {
    let mut sim = Sim::new(7, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(41);
    sim.handlers.hang.insert(id);
    let t = cohort_core::Task {
        timeout_ms: 1_000,
        lease_grace_ms,
        ..task(b"x")
    };
    if lease_grace_ms > 0 {
        assert_eq!(t.effective_lease_grace_ms(), lease_grace_ms);
    }
    sim.client(
        NodeId(3),
        ClientRequest::Submit {
            id,
            task: t.clone(),
        },
    );
    assert!(sim.run_until(500, |s| !s.executions_of(id).is_empty()));
    let (owner, epoch) = sim.executions_of(id)[0];
    assert_eq!(epoch, Epoch(1));
    sim.handlers.hang.clear(); // the next run returns
    let lease_ms = t.timeout_ms + t.effective_lease_grace_ms();
    sim.run_for(lease_ms - 600);
    assert!(sim.superseded(id).is_empty(), "within its lease");
    assert!(
        sim.run_until(5_000, |s| s.decided(id).is_some()),
        "reclaimed and finished"
    );
    let reasons: Vec<SupersedeReason> = sim
        .notes
        .iter()
        .filter_map(|(_, _, n)| match n {
            Note::Superseded { task, reason, .. } if *task == id => Some(*reason),
            _ => None,
        })
        .collect();
    assert!(!reasons.is_empty());
    assert!(
        reasons.iter().all(|r| *r == SupersedeReason::LeaseExpired),
        "{reasons:?}"
    );
    let runs = sim.executions_of(id);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].1, Epoch(2));
    // The hung handler returns at last: its epoch is over.
    sim.with_node(owner, |n, now| {
        n.handle_task_finished(now, id, Epoch(1), TaskOutcome::Success(b"late".to_vec()))
    });
    sim.run_for(1_000);
    match sim.decided(id) {
        Some(TaskState::Succeeded { epoch, result, .. }) => {
            assert_eq!(*epoch, Epoch(2));
            assert_ne!(result, b"late");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// An ended lease is a failed attempt: a task with one attempt whose
/// handler hangs fails with the `lease_expired` error instead of running
/// again.
#[test]
fn an_ended_lease_on_the_last_attempt_fails_the_task() {
    let mut sim = Sim::new(7, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(42);
    sim.handlers.hang.insert(id);
    let task = cohort_core::Task {
        max_attempts: 1,
        timeout_ms: 1_000,
        ..task(b"x")
    };
    let submit = ClientRequest::Submit {
        id,
        task: task.clone(),
    };
    sim.client(NodeId(3), submit);
    let lease_ms = task.timeout_ms + task.effective_lease_grace_ms();
    assert!(sim.run_until(lease_ms + 5_000, |s| s.decided(id).is_some()));
    let failed = TaskState::Failed {
        error: task.lease_expired_error(),
        attempts: 1,
    };
    assert_eq!(sim.decided(id), Some(&failed));
    assert_eq!(sim.executions_of(id).len(), 1, "not run again");
}

#[test]
fn a_paused_owner_declared_dead_that_resumes_cannot_commit_its_stale_result() {
    let mut sim = Sim::new(6, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(31);
    sim.handlers.run_ms = (300, 300);
    sim.submit(NodeId(2), id, b"x");
    assert!(sim.run_until(500, |s| !s.executions_of(id).is_empty()));
    let (owner, _) = sim.executions_of(id)[0];
    sim.pause(owner);
    sim.handlers.run_ms = (5, 10);
    assert!(sim.run_until(5_000, |s| s.decided(id).is_some()));
    sim.resume(owner);
    // The resumed owner's epoch-1 result arrives late and is rejected.
    sim.run_for(2_000);
    match sim.decided(id) {
        Some(TaskState::Succeeded { node, epoch, .. }) => {
            assert_ne!(*node, owner);
            assert_eq!(*epoch, Epoch(2));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Every replica ends with the same final state.
    let replicas = sim.node(owner).replicas_of(id);
    let finals: Vec<_> = replicas
        .iter()
        .map(|&n| sim.node(n).record(id).map(|(_, v)| v.state.clone()))
        .collect();
    assert!(
        finals.iter().all(|s| s.as_ref() == sim.decided(id)),
        "{finals:?}"
    );
}

#[test]
fn a_replica_cut_off_during_a_task_is_repaired_by_anti_entropy_after_healing() {
    let mut sim = Sim::new(7, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(41);
    let replicas = sim.node(NodeId(1)).replicas_of(id);
    let victim = replicas[2];
    sim.isolate(victim);
    let coordinator = replicas[0];
    let r = sim.submit(coordinator, id, b"x");
    assert!(sim.run_until(3_000, |s| s.decided(id).is_some()));
    assert!(accepted(&sim, r));
    assert!(
        sim.node(victim).record(id).is_none(),
        "the victim missed everything"
    );
    sim.heal();
    assert!(
        sim.run_until(5_000, |s| s
            .node(victim)
            .record(id)
            .map(|(_, v)| v.state.clone())
            == s.decided(id).cloned()),
        "anti-entropy brings the victim's record up to the decided state"
    );
}

#[test]
fn the_whole_cluster_restarts_from_persisted_state_and_finishes_every_task() {
    let mut sim = Sim::new(8, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    sim.handlers.run_ms = (200, 400);
    let ids: Vec<_> = (100..130).map(tid).collect();
    let reqs: Vec<_> = ids
        .iter()
        .map(|&id| sim.submit(NodeId(1), id, b"x"))
        .collect();
    sim.run_for(100);
    for &r in &reqs {
        assert!(accepted(&sim, r));
    }
    for m in sim.members().to_vec() {
        sim.crash(m);
    }
    sim.run_for(50);
    for m in sim.members().to_vec() {
        sim.restart(m);
    }
    sim.handlers.run_ms = (5, 20);
    assert!(
        sim.run_until(10_000, |s| ids.iter().all(|&id| s.decided(id).is_some())),
        "every acknowledged task survives and finishes"
    );
    for &id in &ids {
        let runs = sim.executions_of(id);
        // Epochs of re-runs after the restart are above those before it.
        for w in runs.windows(2) {
            assert!(w[0].1 < w[1].1, "{runs:?}");
        }
    }
}

#[test]
fn a_failed_attempt_with_attempts_left_is_run_again_under_a_new_epoch() {
    let mut sim = Sim::new(9, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(51);
    sim.handlers.fail_first.insert(id);
    sim.submit(NodeId(1), id, b"x");
    assert!(sim.run_until(3_000, |s| s.decided(id).is_some()));
    let epochs: Vec<Epoch> = sim.executions_of(id).into_iter().map(|(_, e)| e).collect();
    assert_eq!(epochs, vec![Epoch(1), Epoch(2)]);
    assert!(matches!(
        sim.decided(id),
        Some(TaskState::Succeeded {
            epoch: Epoch(2),
            ..
        })
    ));
}

#[test]
fn cancelling_a_pending_or_running_task_decides_cancelled_once() {
    let mut sim = Sim::new(10, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(61);
    sim.handlers.hang.insert(id);
    sim.submit(NodeId(1), id, b"x");
    assert!(sim.run_until(500, |s| !s.executions_of(id).is_empty()));
    let c = sim.client(NodeId(4), ClientRequest::Cancel { id });
    assert!(sim.run_until(1_000, |s| s.reply(c).is_some()));
    assert_eq!(
        sim.reply(c),
        Some(&Ok(ClientResponse::State {
            id,
            state: TaskState::Cancelled
        }))
    );
    assert_eq!(sim.decided(id), Some(&TaskState::Cancelled));
    // Cancelling again reports the final state and changes nothing.
    let again = sim.client(NodeId(5), ClientRequest::Cancel { id });
    sim.run_for(100);
    assert_eq!(
        sim.reply(again),
        Some(&Ok(ClientResponse::State {
            id,
            state: TaskState::Cancelled
        }))
    );
    let _ = task(b"");
}

#[test]
fn a_lightly_loaded_replica_steals_pending_work_from_a_full_one_and_each_task_runs_once() {
    let mut sim = Sim::with_capacity(11, 5, LeaderlessConfig::default(), 1);
    sim.run_for(1_000);
    // Four tasks that all prefer n1, which runs one task at a time.
    let busy = NodeId(1);
    let ids: Vec<_> = (0..10_000)
        .map(tid)
        .filter(|&id| sim.node(busy).replicas_of(id)[0] == busy)
        .take(4)
        .collect();
    assert_eq!(ids.len(), 4);
    for &id in &ids {
        sim.handlers.hang.insert(id);
        sim.submit(busy, id, b"x");
    }
    assert!(
        sim.run_until(3_000, |s| ids
            .iter()
            .filter(|&&id| !s.executions_of(id).is_empty())
            .count()
            >= 3),
        "the other replicas took the work n1 had no room for"
    );
    let by_busy = ids
        .iter()
        .filter(|&&id| {
            sim.executions_of(id)
                .first()
                .is_some_and(|(n, _)| *n == busy)
        })
        .count();
    assert_eq!(by_busy, 1, "n1 runs one at a time");
    let steals: u64 = sim.members().iter().map(|&m| sim.node(m).steals()).sum();
    assert!(steals >= 2, "{steals}");
    assert_eq!(
        sim.node(NodeId(2)).load_of(busy),
        Some((1, 1)),
        "n1's load was gossiped"
    );
    // Let everything finish: every task ran exactly once, under epoch 1.
    sim.handlers.hang.clear();
    for &id in &ids {
        let Some(&(node, epoch)) = sim.executions_of(id).first() else {
            continue; // not started yet: it runs (and returns) once a slot frees
        };
        sim.with_node(node, |n, now| {
            cohort_core::Node::handle_task_finished(
                n,
                now,
                id,
                epoch,
                cohort_core::TaskOutcome::Success(vec![]),
            )
        });
    }
    assert!(sim.run_until(5_000, |s| ids.iter().all(|&id| s.decided(id).is_some())));
    for &id in &ids {
        assert_eq!(
            sim.executions_of(id).len(),
            1,
            "{id:?}: {:?}",
            sim.executions_of(id)
        );
    }
}

#[test]
fn a_late_learn_of_an_old_claim_does_not_start_a_finished_task_again() {
    let mut sim = Sim::new(12, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let id = tid(71);
    sim.submit(NodeId(1), id, b"x");
    assert!(sim.run_until(2_000, |s| s.decided(id).is_some()));
    let (owner, epoch) = sim.executions_of(id)[0];
    let header = cohort_leaderless::record::TaskHeader {
        task: task(b"x"),
        replicas: sim.node(owner).replicas_of(id),
        ring_epoch: 0,
    };
    let old = sim.chosen[&(id, 0, 1)].clone();
    assert_eq!(old.state, TaskState::Running { node: owner, epoch });
    // The Learn of version 1 arrives again, long after the outcome.
    let from = *sim.members().iter().find(|&&m| m != owner).expect("peer");
    sim.with_node(owner, |n, now| {
        cohort_core::Node::handle_message(
            n,
            now,
            from,
            cohort_leaderless::LeaderlessMessage::Learn {
                id,
                header,
                version: 1,
                value: old,
            },
        )
    });
    sim.run_for(500);
    assert_eq!(sim.executions_of(id).len(), 1, "not run again");
}

// ---- ring changes ----------------------------------------------------------

/// A config whose ring at epoch 0 is nodes 1..=n (a larger cluster has spares).
fn ring_of(n: u64) -> LeaderlessConfig {
    LeaderlessConfig {
        initial_ring: Some((1..=n).map(NodeId).collect()),
        ..LeaderlessConfig::default()
    }
}

/// `at` asks for `change`; waits up to `within_ms` until every node but
/// `missing` knows ring `epoch`.
fn agree_ring_change(
    sim: &mut Sim,
    at: NodeId,
    change: RingChange,
    epoch: u64,
    missing: NodeId,
    within_ms: u64,
) {
    sim.with_node(at, |n, now| n.propose_ring_change(now, change))
        .expect("started");
    assert!(
        sim.run_until(within_ms, |s| s
            .members()
            .iter()
            .all(|&m| m == missing || s.node(m).ring().epoch == epoch)),
        "ring {epoch} agreed by every node but {missing}"
    );
}

/// What can go wrong during a hand-off, struck right after the ring change
/// is agreed.
#[derive(Clone, Copy, PartialEq)]
enum HandOffFault {
    None,
    /// This node crashes, then restarts 1.5 s later.
    Crash(NodeId),
    /// This node is cut off from every other node for 1.5 s.
    Partition(NodeId),
}

/// Submits 60 tasks over 1.2 s at every node; after the 20th, `at` asks for
/// `change`; `fault` strikes once the change is agreed at `at`.
/// Then checks: every acknowledged task reaches one outcome, every one ends
/// on its replicas under the new ring (all of them hold its latest
/// version), a linearizable read of every acknowledged task never answers
/// `NotFound` (during the hand-off) and answers the decided state after it.
/// The harness checks one value per Paxos instance across the moves, one
/// ring per epoch, G2 and G3 after every event.
fn ring_change_while_tasks_flow(
    seed: u64,
    sim: &mut Sim,
    at: NodeId,
    change: RingChange,
    fault: HandOffFault,
) -> Vec<cohort_core::TaskId> {
    sim.run_for(1_000);
    sim.handlers.run_ms = (50, 400);
    let members = sim.members().to_vec();
    let mut submitted = Vec::new();
    let mut reads = Vec::new();
    let mut struck = false;
    for i in 0..60u64 {
        let id = tid(seed * 1_000 + i);
        let node = members[i as usize % members.len()];
        if sim.is_up(node) {
            submitted.push((id, sim.submit(node, id, b"x")));
        }
        if i == 20 {
            sim.with_node(at, |n, now| n.propose_ring_change(now, change))
                .expect("started");
        }
        if !struck && i > 20 && sim.node(at).ring().epoch == 1 {
            struck = true;
            match fault {
                HandOffFault::None => {}
                HandOffFault::Crash(n) => sim.crash(n),
                HandOffFault::Partition(n) => sim.isolate(n),
            }
        }
        // Reads of tasks acknowledged so far, during the hand-off.
        if i > 20 && i % 5 == 0 {
            for &(id, r) in submitted.iter().take(20) {
                if accepted(sim, r) {
                    let reader = members[(i as usize / 5) % members.len()];
                    if sim.is_up(reader) {
                        reads.push((id, sim.get(reader, id, Consistency::Linearizable)));
                    }
                }
            }
        }
        sim.run_for(20);
    }
    assert!(struck, "the ring change was agreed during the run");
    sim.run_for(1_500);
    match fault {
        HandOffFault::Crash(n) => sim.restart(n),
        HandOffFault::Partition(_) => sim.heal(),
        HandOffFault::None => {}
    }
    let acked: Vec<_> = submitted
        .iter()
        .filter(|(_, r)| accepted(sim, *r))
        .map(|(id, _)| *id)
        .collect();
    assert!(acked.len() >= 40, "{} of 60 acknowledged", acked.len());
    let ring = sim.node(at).ring().clone();
    assert_eq!(ring.epoch, 1);
    assert!(
        sim.run_until(10_000, |s| acked.iter().all(|&id| s.decided(id).is_some())),
        "every acknowledged task finishes"
    );
    // Every node knows the new ring (gossip), and every task moved.
    assert!(
        sim.run_until(10_000, |s| {
            s.members().iter().all(|&m| s.node(m).ring() == &ring)
                && acked.iter().all(|&id| {
                    let target = placement::replicas(id, &ring.members, 3);
                    target.iter().all(|&n| {
                        s.node(n).record(id).is_some_and(|(_, v)| {
                            v.replicas == target && Some(&v.state) == s.decided(id)
                        })
                    })
                })
        }),
        "every record moved to its replicas under the new ring"
    );
    assert!(reads.len() >= 20, "reads ran during the hand-off");
    for (id, r) in reads {
        assert!(
            !matches!(sim.reply(r), Some(Err(ClientError::NotFound { .. }))),
            "{id:?} was acknowledged but a read during the hand-off did not find it"
        );
    }
    for &id in &acked {
        let reader = members[(id.0 % members.len() as u128) as usize];
        let r = sim.get(reader, id, Consistency::Linearizable);
        assert!(sim.run_until(500, |s| s.reply(r).is_some()));
        assert_eq!(
            sim.reply(r),
            Some(&Ok(ClientResponse::State {
                id,
                state: sim.decided(id).expect("decided").clone()
            })),
            "{id:?} read at {reader} after the hand-off"
        );
    }
    acked
}

#[test]
fn a_node_joins_while_tasks_flow_and_records_move_to_it_with_one_outcome_per_task() {
    let mut sim = Sim::new(31, 6, ring_of(5));
    let acked = ring_change_while_tasks_flow(
        31,
        &mut sim,
        NodeId(2),
        RingChange::Add(NodeId(6)),
        HandOffFault::None,
    );
    assert_eq!(sim.node(NodeId(1)).ring().members.len(), 6);
    let on_new = acked
        .iter()
        .filter(|&&id| sim.node(NodeId(6)).record(id).is_some())
        .count();
    assert!(
        on_new >= 10,
        "the new node holds {on_new} of {} tasks",
        acked.len()
    );
    // No fault: a move never runs a task again.
    for &id in &acked {
        assert_eq!(sim.executions_of(id).len(), 1, "{id:?}");
    }
}

#[test]
fn a_node_removed_while_tasks_flow_hands_every_record_off_and_can_then_be_shut_down() {
    let mut sim = Sim::new(32, 5, LeaderlessConfig::default());
    let gone = NodeId(5);
    let acked = ring_change_while_tasks_flow(
        32,
        &mut sim,
        NodeId(1),
        RingChange::Remove(gone),
        HandOffFault::None,
    );
    assert!(!sim.node(NodeId(1)).ring().members.contains(&gone));
    // Removed for good: the cluster serves every task without it.
    sim.crash(gone);
    for &id in &acked {
        let r = sim.get(NodeId(1), id, Consistency::Linearizable);
        assert!(sim.run_until(500, |s| s.reply(r).is_some()));
        assert!(
            matches!(sim.reply(r), Some(Ok(ClientResponse::State { .. }))),
            "{id:?}"
        );
    }
    let id = tid(999_999);
    let r = sim.submit(NodeId(2), id, b"after");
    assert!(sim.run_until(3_000, |s| s.decided(id).is_some()));
    assert!(accepted(&sim, r));
    assert!(!sim.node(NodeId(2)).replicas_of(id).contains(&gone));
}

#[test]
fn a_replica_crashing_during_the_hand_off_of_a_join_loses_no_task_and_decides_each_once() {
    let mut sim = Sim::new(33, 6, ring_of(5));
    ring_change_while_tasks_flow(
        33,
        &mut sim,
        NodeId(3),
        RingChange::Add(NodeId(6)),
        HandOffFault::Crash(NodeId(1)),
    );
}

#[test]
fn the_joining_node_crashing_during_its_hand_off_loses_no_task() {
    let mut sim = Sim::new(34, 6, ring_of(5));
    ring_change_while_tasks_flow(
        34,
        &mut sim,
        NodeId(3),
        RingChange::Add(NodeId(6)),
        HandOffFault::Crash(NodeId(6)),
    );
}

#[test]
fn a_replica_partitioned_during_the_hand_off_of_a_removal_loses_no_task() {
    let mut sim = Sim::new(35, 5, LeaderlessConfig::default());
    ring_change_while_tasks_flow(
        35,
        &mut sim,
        NodeId(2),
        RingChange::Remove(NodeId(4)),
        HandOffFault::Partition(NodeId(1)),
    );
}

#[test]
fn the_removed_node_crashing_mid_hand_off_leaves_its_tasks_to_the_others() {
    let mut sim = Sim::new(36, 5, LeaderlessConfig::default());
    ring_change_while_tasks_flow(
        36,
        &mut sim,
        NodeId(2),
        RingChange::Remove(NodeId(4)),
        HandOffFault::Crash(NodeId(4)),
    );
}

/// Records an old replica keeps after their tasks moved away while
/// running (history, see ALGORITHM.md *Ring changes*) do not stay for
/// ever: the moved value names the new replicas, so the old replica's
/// anti-entropy digests go to them and they answer with the task's final
/// value once it ends; the record is then final and goes with retention
/// like every record of the task.
#[test]
fn records_kept_after_their_tasks_moved_away_take_the_outcome_and_are_purged() {
    let config = ring_of(5);
    let limits = cohort_core::Limits {
        succeeded_retained_ms: 5_000,
        ..cohort_core::Limits::default()
    };
    let mut sim = Sim::with_limits(38, 6, config, limits);
    sim.handlers.run_ms = (2_000, 2_500); // still running when they move
    sim.run_for(1_000);
    let ids: Vec<TaskId> = (0..40).map(|i| tid(38_000 + i)).collect();
    for (i, &id) in ids.iter().enumerate() {
        sim.submit(NodeId(1 + i as u64 % 4), id, b"x");
    }
    sim.run_for(300);
    agree_ring_change(
        &mut sim,
        NodeId(1),
        RingChange::Add(NodeId(6)),
        1,
        NodeId(0),
        3_000,
    );
    let kept = |s: &Sim| -> Vec<(NodeId, TaskId, bool)> {
        let mut kept = Vec::new();
        for &m in s.members() {
            for &id in &ids {
                if let Some((_, v)) = s.node(m).record(id) {
                    if !v.replicas.contains(&m)
                        && !matches!(v.state, TaskState::Running { node, .. } if node == m)
                    {
                        kept.push((m, id, v.state.is_final()));
                    }
                }
            }
        }
        kept
    };
    // Moved while running: some old replicas keep records not final.
    assert!(
        sim.run_until(1_500, |s| kept(s).iter().filter(|k| !k.2).count() >= 5),
        "records moved away while their tasks ran: {:?}",
        kept(&sim)
    );
    assert!(sim.run_until(10_000, |s| ids.iter().all(|&id| s.decided(id).is_some())));
    // Each kept record takes its task's outcome...
    assert!(
        sim.run_until(5_000, |s| kept(s).iter().all(|k| k.2)),
        "kept records still not final: {:?}",
        kept(&sim).iter().filter(|k| !k.2).collect::<Vec<_>>()
    );
    for (m, id, _) in kept(&sim) {
        let (_, v) = sim.node(m).record(id).expect("kept");
        assert_eq!(Some(&v.state), sim.decided(id), "{m:?} {id:?}");
    }
    // ...and goes with its retention, like every record of the task.
    assert!(
        sim.run_until(10_000, |s| s
            .members()
            .iter()
            .all(|&m| ids.iter().all(|&id| s.node(m).record(id).is_none()))),
        "every record purged after its retention: {:?}",
        kept(&sim)
    );
}

#[test]
fn a_ring_change_is_refused_for_an_unknown_node_and_a_no_op_when_already_reflected() {
    let mut sim = Sim::new(37, 5, LeaderlessConfig::default());
    sim.run_for(500);
    assert_eq!(
        sim.with_node(NodeId(1), |n, now| n
            .propose_ring_change(now, RingChange::Add(NodeId(9)))),
        Err(cohort_leaderless::RingError::NotAMember(NodeId(9)))
    );
    assert_eq!(
        sim.with_node(NodeId(1), |n, now| n
            .propose_ring_change(now, RingChange::Add(NodeId(2)))),
        Ok(())
    );
    assert!(!sim.node(NodeId(1)).ring_change_in_flight());
    assert_eq!(sim.node(NodeId(1)).ring().epoch, 0);
    // Two nodes asking for different changes at once: both are applied,
    // one epoch each, every node agrees.
    sim.with_node(NodeId(1), |n, now| {
        n.propose_ring_change(now, RingChange::Remove(NodeId(5)))
    })
    .expect("started");
    sim.with_node(NodeId(2), |n, now| {
        n.propose_ring_change(now, RingChange::Remove(NodeId(4)))
    })
    .expect("started");
    assert!(sim.run_until(3_000, |s| s.members().iter().all(|&m| s
        .node(m)
        .ring()
        .members
        == vec![NodeId(1), NodeId(2), NodeId(3)])));
    assert_eq!(sim.node(NodeId(3)).ring().epoch, 2);
}

#[test]
fn the_node_contract_shows_the_ring_and_refuses_bad_changes_with_nothing_changed() {
    use cohort_core::{Node, RingRefusal, RingRequest, RingView};
    let mut sim = Sim::new(40, 5, ring_of(4));
    sim.run_for(500);
    let view = |s: &Sim, n: u64| Node::ring_view(s.node(NodeId(n))).expect("a ring");
    let change = |s: &mut Sim, n: u64, c: RingRequest| {
        s.with_node(NodeId(n), |node, now| Node::change_ring(node, now, c))
    };
    let zero = RingView {
        epoch: 0,
        members: (1..=4).map(NodeId).collect(),
        in_flight: None,
    };
    assert_eq!(view(&sim, 5), zero);
    for c in [RingRequest::Join(NodeId(9)), RingRequest::Remove(NodeId(9))] {
        assert_eq!(
            change(&mut sim, 1, c),
            Err(RingRefusal::NotAMember(NodeId(9)))
        );
    }
    assert_eq!(view(&sim, 1), zero);

    // Cut off, node 1 cannot get its change agreed: it stays in flight,
    // asking for it again is fine, another change is busy.
    sim.isolate(NodeId(1));
    assert_eq!(change(&mut sim, 1, RingRequest::Join(NodeId(5))), Ok(()));
    sim.run_for(1_000);
    assert_eq!(change(&mut sim, 1, RingRequest::Join(NodeId(5))), Ok(()));
    assert_eq!(
        change(&mut sim, 1, RingRequest::Remove(NodeId(2))),
        Err(RingRefusal::Busy(RingRequest::Join(NodeId(5))))
    );
    assert_eq!(
        view(&sim, 1),
        RingView {
            in_flight: Some(RingRequest::Join(NodeId(5))),
            ..zero.clone()
        }
    );
    // Healed, the change is agreed and every node comes to show it.
    sim.heal();
    let joined: Vec<NodeId> = (1..=5).map(NodeId).collect();
    assert!(sim.run_until(5_000, |s| (1..=5)
        .all(|n| view(s, n).members == joined && view(s, n).in_flight.is_none())));
    assert_eq!(view(&sim, 3).epoch, 1);

    // The ring never empties.
    let mut alone = Sim::new(41, 2, ring_of(1));
    alone.run_for(200);
    assert_eq!(
        alone.with_node(NodeId(2), |n, now| Node::change_ring(
            n,
            now,
            RingRequest::Remove(NodeId(1))
        )),
        Err(RingRefusal::LastMember(NodeId(1)))
    );
    assert_eq!(Node::ring_view(alone.node(NodeId(1))).unwrap().epoch, 0);
}

#[test]
fn a_resubmit_under_a_newer_ring_before_the_task_moved_finds_it_and_creates_no_second_record() {
    let mut sim = Sim::new(38, 6, ring_of(5));
    sim.run_for(1_000);
    sim.handlers.run_ms = (2_000, 3_000);
    let ids: Vec<_> = (0..30).map(|i| tid(38_000 + i)).collect();
    let first: Vec<_> = ids
        .iter()
        .map(|&id| sim.submit(NodeId(1), id, b"x"))
        .collect();
    sim.run_for(100);
    assert!(first.iter().all(|&r| accepted(&sim, r)));
    sim.with_node(NodeId(2), |n, now| {
        n.propose_ring_change(now, RingChange::Add(NodeId(6)))
    })
    .expect("started");
    // The moment the ring change is known at n2, before the moves.
    assert!(sim.run_until(1_000, |s| s.node(NodeId(2)).ring().epoch == 1));
    let again: Vec<_> = ids
        .iter()
        .map(|&id| sim.submit(NodeId(2), id, b"x"))
        .collect();
    let other = sim.submit(NodeId(2), ids[0], b"different");
    assert!(sim.run_until(1_000, |s| again.iter().all(|&r| s.reply(r).is_some())));
    for &r in &again {
        assert!(accepted(&sim, r), "{:?}", sim.reply(r));
    }
    assert_eq!(
        sim.reply(other),
        Some(&Err(ClientError::IdConflict { id: ids[0] }))
    );
    // The harness checked one value per version (a second record created on
    // n6 under the new placement would differ at version 0).
    assert!(sim.run_until(10_000, |s| ids.iter().all(|&id| s.decided(id).is_some())));
    for &id in &ids {
        assert_eq!(sim.executions_of(id).len(), 1, "{id:?}");
    }
    let moved_to_n6 = ids
        .iter()
        .filter(|&&id| sim.node(NodeId(2)).replicas_of(id).contains(&NodeId(6)))
        .count();
    assert!(moved_to_n6 >= 5, "{moved_to_n6}");
}

#[test]
fn a_reader_that_missed_a_ring_change_still_finds_tasks_placed_under_the_new_ring() {
    let mut sim = Sim::new(39, 6, ring_of(5));
    sim.run_for(1_000);
    sim.handlers.run_ms = (3_000, 3_000);
    let lagging = NodeId(5);
    sim.isolate(lagging);
    sim.with_node(NodeId(1), |n, now| {
        n.propose_ring_change(now, RingChange::Add(NodeId(6)))
    })
    .expect("started");
    assert!(sim.run_until(2_000, |s| s
        .members()
        .iter()
        .all(|&m| m == lagging || s.node(m).ring().epoch == 1)));
    // A task placed on the new node and two old ones `a` and `b`, written
    // to `a` and the new node only, while n5 is cut off.
    let id = (0..2_000)
        .map(|i| tid(39_000 + i))
        .find(|&id| {
            let now = sim.node(NodeId(1)).replicas_of(id);
            now.contains(&NodeId(6)) && !now.contains(&lagging)
        })
        .expect("such a task");
    let placed = sim.node(NodeId(1)).replicas_of(id);
    let old: Vec<NodeId> = placed.iter().copied().filter(|&n| n != NodeId(6)).collect();
    let (a, b) = (old[0], old[1]);
    let coordinator = [1, 2, 3, 4]
        .iter()
        .map(|&n| NodeId(n))
        .find(|n| !placed.contains(n))
        .expect("a coordinator outside the placement");
    sim.isolate(b);
    sim.cut(b, lagging);
    let r = sim.submit(coordinator, id, b"x");
    sim.run_for(200);
    assert!(accepted(&sim, r));
    assert!(sim.node(b).record(id).is_none());
    // n5 still has ring 0, which puts the task on a, b and a third old
    // node; it cannot reach a, and b (reachable by n5 only) and the third
    // have nothing.
    sim.heal();
    sim.isolate(b);
    sim.heal_link(b, lagging);
    sim.cut(lagging, a);
    assert_eq!(sim.node(lagging).ring().epoch, 0, "n5 missed the change");
    let read = sim.get(lagging, id, Consistency::Linearizable);
    assert!(sim.run_until(2_000, |s| s.reply(read).is_some()));
    assert!(
        matches!(sim.reply(read), Some(Ok(ClientResponse::State { .. }))),
        "{:?}",
        sim.reply(read)
    );
    assert_eq!(
        sim.node(lagging).ring().epoch,
        1,
        "n5 learned the ring from b or the third node"
    );
}

#[test]
fn concurrent_first_submits_under_two_ring_epochs_create_one_record_and_run_once() {
    let mut sim = Sim::new(40, 6, ring_of(5));
    sim.run_for(1_000);
    sim.handlers.run_ms = (200, 300);
    let ring0: Vec<NodeId> = (1..=5).map(NodeId).collect();
    let ring1: Vec<NodeId> = (1..=6).map(NodeId).collect();
    // A task whose placement changes when n6 joins, with two coordinators
    // outside both placements.
    let (id, old, new) = (0..5_000)
        .map(|i| tid(40_000 + i))
        .map(|id| {
            (
                id,
                placement::replicas(id, &ring0, 3),
                placement::replicas(id, &ring1, 3),
            )
        })
        .find(|(_, old, new)| {
            new.contains(&NodeId(6)) && new.iter().filter(|n| !old.contains(n)).count() == 1
        })
        .expect("such a task");
    let outside: Vec<NodeId> = ring0
        .iter()
        .copied()
        .filter(|n| !old.contains(n) && !new.contains(n))
        .collect();
    let (behind, ahead) = (outside[0], outside[1]);
    // `behind` misses the ring change.
    sim.isolate(behind);
    agree_ring_change(
        &mut sim,
        ahead,
        RingChange::Add(NodeId(6)),
        1,
        behind,
        2_000,
    );
    // `ahead` looks the task up (nobody has it) and creates it under ring 1;
    // right after its lookup, `behind`, still under ring 0, submits it too.
    let first = sim.submit(ahead, id, b"x");
    assert!(sim.run_until(100, |s| new.iter().any(|&n| s.node(n).record(id).is_some())));
    sim.heal();
    assert_eq!(sim.node(behind).ring().epoch, 0, "behind missed the change");
    let second = sim.submit(behind, id, b"x");
    assert!(sim.run_until(2_000, |s| s.reply(first).is_some()
        && s.reply(second).is_some()));
    assert!(accepted(&sim, first), "{:?}", sim.reply(first));
    assert!(accepted(&sim, second), "{:?}", sim.reply(second));
    assert!(sim.run_until(10_000, |s| s.decided(id).is_some()));
    sim.run_for(2_000);
    assert_eq!(
        sim.executions_of(id).len(),
        1,
        "{:?}",
        sim.executions_of(id)
    );
    // No record of the task under ring 0's placement outside ring 1's.
    for n in old.iter().filter(|n| !new.contains(n)) {
        assert!(
            sim.node(*n).record(id).is_none(),
            "a second record on {n:?}"
        );
    }
}

/// `cohort sim` seed 2055: a node down while the ring went from epoch 0 to
/// 2 learned epoch 2 directly, so it did not look where epoch 1 placed a
/// task that had not moved yet (its holders could not reach each other),
/// and its linearizable read answered `NotFound` for an acknowledged task.
/// A ring now carries the changes that led to it, so the node reconstructs
/// epoch 1 and waits for that placement too.
#[test]
fn a_node_down_through_two_ring_changes_still_looks_where_the_ring_it_missed_placed_a_task() {
    let reader = NodeId(5);
    let ring0: Vec<NodeId> = (1..=5).map(NodeId).collect();
    let ring1: Vec<NodeId> = (1..=6).map(NodeId).collect();
    // A task that ring 1 places on the reader and two holders, and a
    // removal for ring 2, such that the reader reaches a majority of its
    // placements under rings 0 and 2 without either holder.
    let (id, holders, removed) = (0..20_000)
        .flat_map(|i| (1..=6).map(move |x| (tid(2_055_000 + i), NodeId(x))))
        .find_map(|(id, removed)| {
            let p1 = placement::replicas(id, &ring1, 3);
            if !p1.contains(&reader) || removed == reader {
                return None;
            }
            let holders: Vec<NodeId> = p1.iter().copied().filter(|&n| n != reader).collect();
            let ring2: Vec<NodeId> = ring1.iter().copied().filter(|&n| n != removed).collect();
            let without = |p: Vec<NodeId>| p.iter().filter(|n| !holders.contains(n)).count();
            (without(placement::replicas(id, &ring0, 3)) >= 2
                && without(placement::replicas(id, &ring2, 3)) >= 2)
                .then_some((id, holders, removed))
        })
        .expect("such a task");
    let proposer = *ring1
        .iter()
        .find(|&&n| n != reader && n != removed)
        .expect("a proposer");

    let mut sim = Sim::new(2_055, 6, ring_of(5));
    sim.run_for(1_000);
    sim.crash(reader);
    agree_ring_change(
        &mut sim,
        proposer,
        RingChange::Add(NodeId(6)),
        1,
        reader,
        3_000,
    );
    let r = sim.submit(holders[0], id, b"x");
    assert!(sim.run_until(1_000, |s| s.reply(r).is_some()));
    assert!(accepted(&sim, r), "{:?}", sim.reply(r));
    // The holders cannot reach each other: no move of the task (nor a
    // later claim or outcome) can gather a majority of its ring-1
    // placement.
    sim.cut(holders[0], holders[1]);
    agree_ring_change(
        &mut sim,
        proposer,
        RingChange::Remove(removed),
        2,
        reader,
        3_000,
    );

    sim.restart(reader);
    sim.cut(reader, holders[0]);
    sim.cut(reader, holders[1]);
    assert!(sim.run_until(3_000, |s| s.node(reader).ring().epoch == 2));
    let read = sim.get(reader, id, Consistency::Linearizable);
    assert!(sim.run_until(3_000, |s| s.reply(read).is_some()));
    assert!(
        matches!(sim.reply(read), Some(Err(ClientError::Unavailable { .. }))),
        "the read cannot hear a majority of the ring-1 placement, so it must not answer: {:?}",
        sim.reply(read)
    );

    sim.heal();
    let read = sim.get(reader, id, Consistency::Linearizable);
    assert!(sim.run_until(3_000, |s| s.reply(read).is_some()));
    assert!(
        matches!(sim.reply(read), Some(Ok(ClientResponse::State { .. }))),
        "{:?}",
        sim.reply(read)
    );
    assert!(sim.run_until(10_000, |s| s.decided(id).is_some()));
    assert_eq!(sim.executions_of(id).len(), 1);
}

/// `cohort sim` seed 10776: a node cut off under ring 0 had written a first
/// copy of a task that never reached `W` (a dead version-0 record); the
/// task was then created under ring 1 and finished. Back, and still on
/// ring 0, the node read the task: a majority of its ring-0 placement
/// answered (itself with the dead record, a replica with nothing and ring
/// 1), and it answered `Pending`. A read that learns a newer ring and has
/// found only a version-0 record now looks again under that ring.
#[test]
fn a_read_that_finds_only_a_dead_first_copy_and_learns_a_newer_ring_looks_again_there() {
    let stale = NodeId(3);
    let ring0: Vec<NodeId> = (1..=5).map(NodeId).collect();
    let ring1: Vec<NodeId> = (1..=6).map(NodeId).collect();
    // Ring 0 places the task on the stale node, `x` and `y`; ring 1 on the
    // stale node, `x` and n6.
    let (id, x, y) = (0..20_000)
        .map(|i| tid(10_776_000 + i))
        .find_map(|id| {
            let p0 = placement::replicas(id, &ring0, 3);
            let p1 = placement::replicas(id, &ring1, 3);
            if !p0.contains(&stale) || !p1.contains(&stale) || !p1.contains(&NodeId(6)) {
                return None;
            }
            let x = *p0.iter().find(|&&n| n != stale && p1.contains(&n))?;
            let y = *p0.iter().find(|&&n| n != stale && n != x)?;
            Some((id, x, y))
        })
        .expect("such a task");
    let mut sim = Sim::new(10_776, 6, ring_of(5));
    sim.run_for(1_000);
    sim.isolate(stale);
    let first = sim.submit(stale, id, b"x");
    assert!(sim.run_until(3_000, |s| s.reply(first).is_some()));
    assert!(
        matches!(sim.reply(first), Some(Err(ClientError::Unavailable { .. }))),
        "{:?}",
        sim.reply(first)
    );
    assert!(sim.node(stale).record(id).is_some(), "its dead first copy");
    let proposer = *ring0.iter().find(|&&n| n != stale).expect("a proposer");
    agree_ring_change(
        &mut sim,
        proposer,
        RingChange::Add(NodeId(6)),
        1,
        stale,
        3_000,
    );
    let coordinator = *ring0
        .iter()
        .find(|&&n| n != stale && n != x && n != y)
        .expect("a coordinator");
    let again = sim.submit(coordinator, id, b"x");
    assert!(sim.run_until(1_000, |s| s.reply(again).is_some()));
    assert!(accepted(&sim, again), "{:?}", sim.reply(again));
    assert!(sim.run_until(10_000, |s| matches!(
        s.decided(id),
        Some(TaskState::Succeeded { .. })
    )));
    // Back, but not hearing `x`, and still on ring 0.
    sim.heal();
    sim.cut(stale, x);
    assert_eq!(sim.node(stale).ring().epoch, 0);
    let read = sim.get(stale, id, Consistency::Linearizable);
    assert!(sim.run_until(3_000, |s| s.reply(read).is_some()));
    assert!(
        matches!(
            sim.reply(read),
            Some(Ok(ClientResponse::State {
                state: TaskState::Succeeded { .. },
                ..
            }))
        ),
        "a finished task reads back finished: {:?}",
        sim.reply(read)
    );
}

#[test]
fn a_corrupt_stored_ring_or_record_is_a_typed_boot_error_not_a_panic() {
    use cohort_core::{BootError, Limits, NodeRng, Peers, StoreOp, Stored, Time};
    use rand::SeedableRng;
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    let peers = Peers::new(NodeId(1), members, 4, Limits::default()).expect("valid peers");
    let config = LeaderlessConfig::default();
    for key in [b"lless/ring".to_vec(), record_key(tid(7))] {
        let mut stored = Stored::new();
        stored.apply(&[StoreOp::Put {
            key: key.clone(),
            value: vec![0xff; 9],
        }]);
        let booted = cohort_leaderless::LeaderlessNode::boot(
            &peers,
            &config,
            &stored,
            NodeRng::seed_from_u64(1),
            Time::ZERO,
        );
        match booted {
            Err(BootError::Corrupt { record, .. }) => {
                assert_eq!(record, key.escape_ascii().to_string())
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("booted from a corrupt {}", key.escape_ascii()),
        }
    }
}

#[test]
fn a_read_that_finds_the_task_in_doubt_during_this_nodes_own_proposal_reads_again_instead_of_refusing(
) {
    // A cancel makes its node propose; a linearizable read at that node a
    // few ms later finds the cancel accepted but not known chosen (in
    // doubt), and this node cannot settle it while its own proposal runs.
    // It used to answer 503; now it reads again once the proposal ends.
    let mut read_again = 0;
    for seed in 0..40u64 {
        let mut sim = Sim::new(100 + seed, 3, LeaderlessConfig::default());
        sim.run_for(1_000);
        let id = tid(70);
        sim.handlers.hang.insert(id);
        sim.submit(NodeId(1), id, b"x");
        assert!(sim.run_until(500, |s| !s.executions_of(id).is_empty()));
        let at = NodeId(1 + seed % 3);
        let c = sim.client(at, ClientRequest::Cancel { id });
        sim.run_for(2 + seed % 7);
        let g = sim.get(at, id, Consistency::Linearizable);
        assert!(sim.run_until(2_000, |s| s.reply(g).is_some() && s.reply(c).is_some()));
        // Concurrent with the cancel: either state, but an answer.
        assert!(
            matches!(
                sim.reply(g),
                Some(Ok(ClientResponse::State {
                    state: TaskState::Running { .. } | TaskState::Cancelled,
                    ..
                }))
            ),
            "seed {seed}: {:?}",
            sim.reply(g)
        );
        read_again += sim
            .node(at)
            .counters()
            .iter()
            .find(|(name, _)| *name == "reads_read_again")
            .map_or(0, |(_, n)| *n);
    }
    assert!(
        read_again > 0,
        "no read met this node's own proposal in doubt"
    );
}

/// Routing: a labelled task placed on replicas that lack its label is
/// offered to the node that carries it (n5), which claims it through Paxos
/// among the replicas and runs it. When n5 dies mid-run, a replica cannot
/// take the task over (it lacks the label): it puts the task back to
/// pending, and n5 runs it again once back, under the next epoch. No
/// replica ever runs it.
#[test]
fn a_labelled_task_on_replicas_without_its_label_is_offered_to_its_carrier_and_requeued_when_it_dies(
) {
    let mut sim = Sim::with_labels(7, 5, LeaderlessConfig::default(), &[(5, "gpu")]);
    sim.run_for(1_000);
    let carrier = NodeId(5);
    let id = (1..)
        .map(tid)
        .find(|id| !sim.node(NodeId(1)).replicas_of(*id).contains(&carrier))
        .expect("some task is placed away from n5");
    let replicas = sim.node(NodeId(1)).replicas_of(id);
    sim.handlers.hang.insert(id);
    let mut t = task(b"x");
    t.labels = vec!["gpu".into()];
    let r = sim.client(NodeId(1), ClientRequest::Submit { id, task: t });
    assert!(sim.run_until(3_000, |s| !s.executions_of(id).is_empty()));
    assert!(accepted(&sim, r));
    assert_eq!(sim.executions_of(id), vec![(carrier, Epoch(1))]);
    assert!(sim.node(carrier).offers().1 >= 1, "n5 took an offer");
    sim.handlers.hang.clear();
    sim.crash(carrier);
    let back_to_pending = |s: &Sim| {
        replicas.iter().any(|&n| {
            s.node(n)
                .record(id)
                .is_some_and(|(_, v)| v.state == TaskState::Pending && v.epoch == Epoch(1))
        })
    };
    assert!(
        sim.run_until(10_000, back_to_pending),
        "requeued by a replica"
    );
    assert_eq!(sim.executions_of(id).len(), 1, "no replica runs it");
    sim.restart(carrier);
    assert!(sim.run_until(10_000, |s| s.decided(id).is_some()));
    assert_eq!(
        sim.executions_of(id),
        vec![(carrier, Epoch(1)), (carrier, Epoch(2))]
    );
    match sim.decided(id) {
        Some(TaskState::Succeeded { node, epoch, .. }) => {
            assert_eq!((*node, *epoch), (carrier, Epoch(2)));
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---- cluster-wide priorities -------------------------------------------------

/// The first task id from `tid(from)` on whose replicas (in preference
/// order) `pred` holds.
fn task_placed(sim: &Sim, from: u64, pred: impl Fn(&[NodeId]) -> bool) -> TaskId {
    (from..)
        .map(tid)
        .find(|id| pred(&sim.node(NodeId(1)).replicas_of(*id)))
        .expect("some id is placed so")
}

/// Five nodes of one slot each: n1-n4 each run a task that never ends, n5
/// one that ends at 1.5 s. Meanwhile a task of priority 10 placed on n1-n4
/// and one of priority 0 placed first on n5 wait. Returns the two and when
/// n5's task started.
fn five_busy_nodes_and_two_waiting(
    sim: &mut Sim,
    high: cohort_core::Task,
) -> (TaskId, TaskId, cohort_core::Time) {
    sim.handlers.run_ms = (1_500, 1_500);
    sim.run_for(1_000);
    let n5 = NodeId(5);
    for n in 1..=5 {
        let id = task_placed(sim, 1_000 * n, |r| r[0] == NodeId(n));
        if n < 5 {
            sim.handlers.hang.insert(id);
        }
        sim.submit(NodeId(n), id, b"busy");
        assert!(sim.run_until(2_000, |s| s.executions_of(id)
            == vec![(NodeId(n), Epoch(1))]));
    }
    let busy_since = sim.executions.last().expect("n5 runs").0;
    let high_id = task_placed(sim, 10_000, |r| !r.contains(&n5));
    let low_id = task_placed(sim, 20_000, |r| r[0] == n5);
    let mut low = task(b"low");
    low.priority = 0;
    sim.client(
        NodeId(1),
        ClientRequest::Submit {
            id: high_id,
            task: high,
        },
    );
    sim.client(
        n5,
        ClientRequest::Submit {
            id: low_id,
            task: low,
        },
    );
    (high_id, low_id, busy_since)
}

/// Cluster-wide priorities in leaderless mode: when n5's slot frees, the
/// task of priority 10, whose replicas are all busy, is offered to n5 and
/// starts there before n5's own task of priority 0, which n5 holds back
/// meanwhile because n1-n4 announce a task of higher priority they have no
/// slot for. Without the change n5 started its own task at once and the
/// other waited behind tasks that never end (an unlabelled task was never
/// offered outside its replicas).
#[test]
fn a_free_slot_goes_to_the_clusters_highest_priority_task_before_its_own_lower_one() {
    let mut sim = Sim::with_capacity(11, 5, LeaderlessConfig::default(), 1);
    let mut high = task(b"high");
    high.priority = 10;
    let (high_id, low_id, _) = five_busy_nodes_and_two_waiting(&mut sim, high);
    let n5 = NodeId(5);
    assert!(sim.run_until(10_000, |s| !s.executions_of(low_id).is_empty()));
    assert_eq!(sim.executions_of(high_id), vec![(n5, Epoch(1))]);
    assert_eq!(sim.executions_of(low_id), vec![(n5, Epoch(1))]);
    let started = |id| sim.executions.iter().find(|e| e.2 == id).expect("ran").0;
    assert!(
        started(high_id) < started(low_id),
        "priority 10 started first: {:?} then {:?}",
        started(high_id),
        started(low_id)
    );
    assert!(sim.node(n5).offers().1 >= 1, "n5 took the offer");
    assert!(sim.run_until(5_000, |s| s.decided(high_id).is_some()
        && s.decided(low_id).is_some()));
}

/// Work moves to an idle node: a task whose replicas are all busy is
/// offered to n5, which has nothing of its own to run, and runs there at
/// once rather than waiting behind tasks that never end.
#[test]
fn a_task_whose_replicas_are_all_busy_runs_on_an_idle_node_that_is_not_a_replica() {
    let mut sim = Sim::with_capacity(13, 5, LeaderlessConfig::default(), 1);
    sim.run_for(1_000);
    let n5 = NodeId(5);
    for n in 1..=4 {
        let id = task_placed(&sim, 1_000 * n, |r| r[0] == NodeId(n));
        sim.handlers.hang.insert(id);
        sim.submit(NodeId(n), id, b"busy");
        assert!(sim.run_until(2_000, |s| s.executions_of(id)
            == vec![(NodeId(n), Epoch(1))]));
    }
    let id = task_placed(&sim, 10_000, |r| !r.contains(&n5));
    sim.submit(NodeId(1), id, b"moved");
    assert!(sim.run_until(2_000, |s| s.decided(id).is_some()));
    assert_eq!(sim.executions_of(id), vec![(n5, Epoch(1))]);
    assert!(matches!(sim.decided(id), Some(TaskState::Succeeded { .. })));
    assert!(sim.node(n5).offers().1 >= 1, "n5 took the offer");
}

/// The hold is bounded: a task of priority 10 that no node can run (its
/// label is nowhere) is announced for ever, and n5 keeps its free slot for
/// it `priority_hold_ms` (1 s) and no longer, then starts its own task.
#[test]
fn a_slot_kept_for_a_higher_priority_task_that_never_comes_is_used_after_priority_hold_ms() {
    let config = LeaderlessConfig::default();
    let hold_ms = config.priority_hold_ms;
    let mut sim = Sim::with_capacity(12, 5, config, 1);
    let mut high = task(b"high");
    high.priority = 10;
    high.labels = vec!["nowhere".into()];
    let (high_id, low_id, busy_since) = five_busy_nodes_and_two_waiting(&mut sim, high);
    let n5 = NodeId(5);
    assert!(sim.run_until(10_000, |s| !s.executions_of(low_id).is_empty()));
    assert!(sim.executions_of(high_id).is_empty());
    let freed = busy_since + std::time::Duration::from_millis(1_500);
    let low_started = sim
        .executions
        .iter()
        .find(|e| e.2 == low_id)
        .expect("ran")
        .0;
    let waited_ms = low_started.saturating_since(freed).as_millis() as u64;
    assert!(
        (hold_ms - 100..=hold_ms + 400).contains(&waited_ms),
        "n5's slot was kept {waited_ms} ms (hold {hold_ms} ms)"
    );
    let holds = sim
        .node(n5)
        .counters()
        .into_iter()
        .find(|c| c.0 == "priority_holds");
    assert!(holds.is_some_and(|(_, n)| n > 0), "{holds:?}");
}

/// A backlog larger than one tick's claim scan (`claim_scan_per_tick_max`)
/// is covered over several ticks: every task runs once, and the task last
/// in claim order, whose schedule-to-start deadline passes while 29 tasks
/// wait ahead of it, is failed soon after that deadline by the window that
/// moves through the backlog, not only once it reaches the head.
#[test]
fn a_backlog_larger_than_the_claim_scan_is_covered_over_several_ticks() {
    let config = LeaderlessConfig {
        claim_scan_per_tick_max: 2,
        ..LeaderlessConfig::default()
    };
    let mut sim = Sim::with_capacity(7, 3, config, 1);
    sim.handlers.run_ms = (200, 200);
    sim.run_for(1_000);
    let ids: Vec<cohort_core::TaskId> = (0..30).map(tid).collect();
    let last = *ids.iter().max().unwrap();
    let submitted_at = sim.now;
    for (i, &id) in ids.iter().enumerate() {
        let mut t = task(b"x");
        if id == last {
            t.schedule_to_start_ms = 300;
        }
        let node = NodeId(1 + i as u64 % 3);
        sim.client(node, ClientRequest::Submit { id, task: t });
    }
    assert!(sim.run_until(1_400, |s| s.decided(last).is_some()));
    assert!(
        matches!(sim.decided(last), Some(TaskState::Failed { .. })),
        "{:?}",
        sim.decided(last)
    );
    let failed_after = sim.now.saturating_since(submitted_at);
    assert!(
        ids.iter().filter(|&&id| sim.decided(id).is_none()).count() > 3,
        "the backlog had not cleared when it failed ({failed_after:?})"
    );
    assert!(sim.run_until(10_000, |s| ids.iter().all(|&id| s.decided(id).is_some())));
    for &id in &ids {
        if id == last {
            assert!(sim.executions_of(id).is_empty());
        } else {
            assert!(matches!(sim.decided(id), Some(TaskState::Succeeded { .. })));
            assert_eq!(sim.executions_of(id).len(), 1, "{id:?} ran once");
        }
    }
}

// ---- bundles -----------------------------------------------------------------

/// Runs `n` tasks submitted as one batch at n1 to the end, flushing after
/// every input (bundling) or not; returns the messages sent by kind.
fn batch_to_the_end(flush_inputs: bool, n: u64) -> std::collections::BTreeMap<String, u64> {
    let mut sim = Sim::with_capacity(31, 5, LeaderlessConfig::default(), 64);
    sim.flush_inputs = flush_inputs;
    sim.run_for(1_000);
    let ids: Vec<_> = (1..=n).map(tid).collect();
    let r = sim.client(
        NodeId(1),
        ClientRequest::SubmitBatch {
            tasks: ids.iter().map(|&id| (id, task(b"b"))).collect(),
        },
    );
    assert!(sim.run_until(5_000, |s| ids
        .iter()
        .all(|&id| matches!(s.decided(id), Some(TaskState::Succeeded { .. })))));
    assert!(
        matches!(sim.reply(r), Some(Ok(ClientResponse::AcceptedBatch { .. }))),
        "{:?}",
        sim.reply(r)
    );
    for &id in &ids {
        assert_eq!(sim.executions_of(id).len(), 1, "{id:?} ran once");
    }
    let mut by_kind = std::collections::BTreeMap::new();
    for ((_, kind), count) in &sim.sent {
        *by_kind.entry(kind.clone()).or_insert(0) += count;
    }
    by_kind
}

/// A node flushed after every input (as the runtime flushes after every
/// batch) sends each peer one bundle of what the input made for it: a batch
/// of 200 tasks reaches the same end with far fewer messages. (Here each
/// finished task is an input of its own, so its result round is not
/// bundled; the runtime's batches bundle those too.)
#[test]
fn a_flushed_node_bundles_what_one_input_sends_each_peer() {
    let plain = batch_to_the_end(false, 200);
    let bundled = batch_to_the_end(true, 200);
    assert_eq!(plain.get("Bundle"), None, "nothing bundled without a flush");
    assert!(
        bundled.get("Bundle").copied().unwrap_or(0) > 0,
        "{bundled:?}"
    );
    let total = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .filter(|(kind, _)| kind.as_str() != "Swim")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    // The batch's writes and their replies all travel in bundles.
    assert_eq!(bundled.get("Write"), None, "{bundled:?}");
    assert_eq!(bundled.get("WriteReply"), None, "{bundled:?}");
    assert!(
        total(&bundled) * 2 < total(&plain),
        "bundled {bundled:?}, plain {plain:?}"
    );
}

/// A bundle inside a bundle, or one over `bundle_messages_max`, comes from
/// no correct peer: it is dropped whole and changes nothing, while the
/// same write in a well-formed bundle creates the record.
#[test]
fn a_malformed_bundle_is_dropped_whole_and_changes_nothing() {
    let config = LeaderlessConfig {
        bundle_messages_max: 4,
        ..LeaderlessConfig::default()
    };
    let mut sim = Sim::new(32, 5, config);
    sim.run_for(1_000);
    let id = tid(77);
    let replicas = sim.node(NodeId(1)).replicas_of(id);
    let (to, from) = (replicas[0], replicas[1]);
    let write = cohort_leaderless::LeaderlessMessage::Write {
        op: 1,
        id,
        header: cohort_leaderless::record::TaskHeader {
            task: task(b"w"),
            replicas: replicas.clone(),
            ring_epoch: 0,
        },
        ring: None,
    };
    let bundle = cohort_leaderless::LeaderlessMessage::Bundle;
    let nested = bundle(vec![bundle(vec![write.clone()])]);
    let too_many = bundle(vec![write.clone(); 5]);
    for bad in [nested, too_many] {
        sim.with_node(to, |n, now| n.handle_message(now, from, bad));
    }
    assert_eq!(sim.node(to).bundles_refused(), 2);
    assert!(sim.node(to).record(id).is_none(), "nothing was written");
    assert!(sim.store(to).get(&record_key(id)).is_none());
    sim.with_node(to, |n, now| {
        n.handle_message(now, from, bundle(vec![write.clone(), write]))
    });
    assert_eq!(sim.node(to).bundles_refused(), 2);
    assert!(
        sim.node(to).record(id).is_some(),
        "a well-formed bundle is handled"
    );
}

/// With a tick of a whole second, a node claims a new task, and the next
/// task in a slot its handler just freed, at the end of the batch that
/// brought it (`claim_interval_ms`), not at its next tick: each of ten
/// tasks submitted one after another starts within 50 ms of its
/// acknowledgement, and the backlog a one-slot cluster is given drains at
/// far more than one task per slot and tick. Without a flush (a driver
/// that never ends its batches), claims wait for the tick.
#[test]
fn a_freed_slot_and_a_new_task_are_claimed_at_the_batch_end_not_the_next_tick() {
    let config = LeaderlessConfig {
        tick_interval_ms: 1_000,
        ..LeaderlessConfig::default()
    };
    let starts_after_ack = |flush_inputs: bool| -> Vec<u64> {
        let mut sim = Sim::with_capacity(41, 3, config.clone(), 1);
        sim.flush_inputs = flush_inputs;
        sim.handlers.run_ms = (1, 2);
        sim.run_for(2_000);
        let mut waits = Vec::new();
        for i in 0..10 {
            let id = tid(900 + i);
            let r = sim.submit(NodeId(1 + i % 3), id, b"t");
            assert!(sim.run_until(1_000, |s| s.reply(r).is_some()));
            assert!(matches!(sim.reply(r), Some(Ok(_))), "{:?}", sim.reply(r));
            let acked = sim.now;
            assert!(sim.run_until(3_000, |s| !s.executions_of(id).is_empty()));
            waits.push((sim.now.0 - acked.0) / 1_000);
        }
        waits
    };
    let flushed = starts_after_ack(true);
    assert!(flushed.iter().all(|&ms| ms < 50), "{flushed:?}");
    let unflushed = starts_after_ack(false);
    assert!(
        unflushed.iter().filter(|&&ms| ms >= 50).count() >= 5,
        "without a flush the claim waits for the tick: {unflushed:?}"
    );

    // A backlog of 30 tasks on three one-slot nodes.
    let mut sim = Sim::with_capacity(42, 3, config, 1);
    sim.flush_inputs = true;
    sim.handlers.run_ms = (1, 2);
    sim.run_for(2_000);
    let ids: Vec<_> = (1..=30).map(|i| tid(1_000 + i)).collect();
    let r = sim.client(
        NodeId(1),
        ClientRequest::SubmitBatch {
            tasks: ids.iter().map(|&id| (id, task(b"b"))).collect(),
        },
    );
    assert!(sim.run_until(1_000, |s| s.reply(r).is_some()));
    let start = sim.now;
    assert!(sim.run_until(10_000, |s| ids
        .iter()
        .all(|&id| matches!(s.decided(id), Some(TaskState::Succeeded { .. })))));
    let took_ms = (sim.now.0 - start.0) / 1_000;
    assert!(
        took_ms < 2_000,
        "30 tasks on 3 slots took {took_ms} ms: at one task per slot and 1 s tick it would be 10 s"
    );
}

/// A limited task submitted on `node`.
fn submit_limited(
    sim: &mut Sim,
    node: NodeId,
    id: cohort_core::TaskId,
    limit: cohort_core::TaskLimit,
) -> cohort_core::RequestId {
    sim.client(
        node,
        ClientRequest::Submit {
            id,
            task: cohort_core::Task {
                limit: Some(limit),
                ..task(b"limited")
            },
        },
    )
}

/// The runs of `ids` (tasks of one concurrency-1 key): one each, none
/// overlapping the next, in the order they ran.
fn one_run_each_in_turn(
    sim: &Sim,
    ids: &[cohort_core::TaskId],
) -> Vec<(u64, u64, cohort_core::TaskId)> {
    let runs = live_spans(sim, ids);
    assert_eq!(runs.len(), ids.len(), "one run each: {runs:?}");
    for pair in runs.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two runs of the key overlap: {runs:?}"
        );
    }
    runs
}

/// Per assignment of `ids`, the sim times it was live in the cluster's
/// record: from its first `Assigned` note to the first note that ended it.
fn live_spans(sim: &Sim, ids: &[cohort_core::TaskId]) -> Vec<(u64, u64, cohort_core::TaskId)> {
    use std::collections::BTreeMap;
    let mut start: BTreeMap<(cohort_core::TaskId, Epoch), u64> = BTreeMap::new();
    let mut spans = Vec::new();
    for (at, _, note) in &sim.notes {
        let ms = at.as_millis();
        match note {
            Note::Assigned { task, epoch, .. } if ids.contains(task) => {
                start.entry((*task, *epoch)).or_insert(ms);
            }
            Note::Superseded { task, epoch, .. } => {
                if let Some(from) = start.remove(&(*task, *epoch)) {
                    spans.push((from, ms, *task));
                }
            }
            Note::Decided { task, .. } => {
                let ended: Vec<_> = start.keys().filter(|(t, _)| t == task).copied().collect();
                for k in ended {
                    let from = start.remove(&k).expect("listed");
                    spans.push((from, ms, *task));
                }
            }
            _ => {}
        }
    }
    spans.sort();
    spans
}

#[test]
fn a_concurrency_limit_of_one_runs_its_keys_tasks_one_at_a_time_whichever_node_claims() {
    let mut sim = Sim::new(41, 5, LeaderlessConfig::default());
    sim.handlers.run_ms = (100, 100);
    sim.run_for(1_000);
    let one = cohort_core::TaskLimit {
        key: "tenant-a".into(),
        concurrency_max: 1,
        rate_max: 0,
        rate_window_ms: 0,
    };
    // Spread over the hash space: different replicas claim them.
    let limited: Vec<_> = (0..6).map(|n| tid(100 + n)).collect();
    let free: Vec<_> = (0..6).map(|n| tid(200 + n)).collect();
    for (i, (&l, &f)) in limited.iter().zip(&free).enumerate() {
        let node = NodeId(1 + i as u64 % 5);
        submit_limited(&mut sim, node, l, one.clone());
        sim.submit(node, f, b"free");
    }
    let all: Vec<_> = limited.iter().chain(&free).copied().collect();
    assert!(
        sim.run_until(10_000, |s| all.iter().all(|&id| s.decided(id).is_some())),
        "every task finishes"
    );
    for &id in &all {
        assert!(matches!(sim.decided(id), Some(TaskState::Succeeded { .. })));
    }
    let runs = one_run_each_in_turn(&sim, &limited);
    // The unlimited tasks were not held back behind them.
    let free_runs = live_spans(&sim, &free);
    let last_free_end = free_runs.iter().map(|r| r.1).max().expect("ran");
    let last_limited_end = runs.last().expect("ran").1;
    assert!(
        last_free_end < last_limited_end,
        "free tasks ran beside the limited ones: {free_runs:?} {runs:?}"
    );
    // Every place was given back: the keeper's record holds none.
    let pid = cohort_leaderless::permit::permit_id("tenant-a");
    assert!(sim.run_until(2_000, |s| {
        s.members().iter().all(|&n| {
            s.node(n)
                .record(pid)
                .is_none_or(|(_, v)| v.permits.held.is_empty())
        })
    }));
}

/// The permit record of `key` as `node` holds it: its body's incarnation,
/// version and value.
fn permit_record(
    sim: &Sim,
    node: NodeId,
    key: &str,
) -> Option<(cohort_core::Time, u64, cohort_leaderless::record::TaskValue)> {
    let pid = cohort_leaderless::permit::permit_id(key);
    let n = sim.node(node);
    let body = n.task(pid)?;
    let (version, value) = n.record(pid)?;
    let incarnation = cohort_leaderless::permit::permit_incarnation(body).expect("a permit body");
    Some((incarnation, version, value.clone()))
}

/// A 5-node cluster (seed `seed`) whose keepers retire a permit record
/// idle for 1 s and purge it `retained_ms` later, in which task `id`
/// under `limit`, submitted at `node`, has run (200 ms) and finished.
fn one_task_under_a_retiring_key(
    seed: u64,
    retained_ms: u64,
    (node, id): (NodeId, cohort_core::TaskId),
    limit: &cohort_core::TaskLimit,
) -> Sim {
    let config = LeaderlessConfig {
        permit_idle_retire_ms: 1_000,
        permit_retired_retained_ms: retained_ms,
        ..LeaderlessConfig::default()
    };
    let mut sim = Sim::new(seed, 5, config);
    sim.handlers.run_ms = (200, 200);
    sim.run_for(1_000);
    submit_limited(&mut sim, node, id, limit.clone());
    assert!(sim.run_until(5_000, |s| s.decided(id).is_some()));
    sim
}

/// A key no longer used does not keep a record for ever: once idle, its
/// keeper retires it (a decided change), every replica purges it, and the
/// key's next task gets a new incarnation (another body under the same
/// id) that enforces the limit as before.
#[test]
fn an_idle_keys_permit_record_is_retired_purged_and_created_anew_for_its_next_tasks() {
    let one = cohort_core::TaskLimit {
        key: "tenant-idle".into(),
        concurrency_max: 1,
        rate_max: 2,
        rate_window_ms: 600,
    };
    let mut sim = one_task_under_a_retiring_key(47, 1_500, (NodeId(1), tid(400)), &one);
    let holders = |s: &Sim| -> Vec<NodeId> {
        s.members()
            .iter()
            .copied()
            .filter(|&n| permit_record(s, n, "tenant-idle").is_some())
            .collect()
    };
    let replicas = holders(&sim);
    assert_eq!(replicas.len(), 3, "R = 3 replicas hold the record");
    let (old, _, _) = permit_record(&sim, replicas[0], "tenant-idle").expect("held");
    // Retired once idle, on every replica...
    assert!(sim.run_until(5_000, |s| {
        replicas.iter().all(|&n| {
            permit_record(s, n, "tenant-idle")
                .is_some_and(|(_, _, v)| v.permits.retired_at.is_some())
        })
    }));
    // ...then purged everywhere, leaving tombstones.
    assert!(sim.run_until(5_000, |s| holders(s).is_empty()));
    assert!(replicas.iter().all(|&n| sim.node(n).tombstones_held() > 0));
    // The key's next tasks: a new incarnation, one run at a time.
    let next: Vec<_> = (0..3).map(|n| tid(410 + n)).collect();
    for (i, &id) in next.iter().enumerate() {
        submit_limited(&mut sim, NodeId(1 + i as u64), id, one.clone());
    }
    assert!(sim.run_until(15_000, |s| next.iter().all(|&id| s.decided(id).is_some())));
    for &id in &next {
        assert!(matches!(sim.decided(id), Some(TaskState::Succeeded { .. })));
    }
    one_run_each_in_turn(&sim, &next);
    let now_held = holders(&sim);
    assert!(now_held.len() >= 2, "a majority holds the new record");
    for n in now_held {
        let (incarnation, _, _) = permit_record(&sim, n, "tenant-idle").expect("held");
        assert!(
            incarnation > old,
            "{incarnation} is a new incarnation after {old}"
        );
    }
}

/// A grant within the retention after a retirement brings the same record
/// back (no new incarnation), and it is not purged while in use.
#[test]
fn a_retired_permit_record_is_brought_back_by_the_next_grant_before_its_purge() {
    let one = cohort_core::TaskLimit {
        key: "tenant-back".into(),
        concurrency_max: 1,
        rate_max: 0,
        rate_window_ms: 0,
    };
    let mut sim = one_task_under_a_retiring_key(53, 60_000, (NodeId(2), tid(420)), &one);
    let retired = |s: &Sim| {
        s.members().iter().find_map(|&n| {
            permit_record(s, n, "tenant-back")
                .filter(|(_, _, v)| v.permits.retired_at.is_some())
                .map(|(inc, version, _)| (inc, version))
        })
    };
    assert!(sim.run_until(5_000, |s| retired(s).is_some()));
    let (incarnation, version) = retired(&sim).expect("retired");
    let second = tid(421);
    submit_limited(&mut sim, NodeId(3), second, one);
    assert!(sim.run_until(5_000, |s| s.decided(second).is_some()));
    assert!(matches!(
        sim.decided(second),
        Some(TaskState::Succeeded { .. })
    ));
    let released = |s: &Sim| {
        s.members().iter().all(|&n| {
            permit_record(s, n, "tenant-back").is_none_or(|(_, _, v)| v.permits.held.is_empty())
        })
    };
    assert!(sim.run_until(2_000, released), "the place was given back");
    let back: Vec<_> = sim
        .members()
        .iter()
        .filter_map(|&n| permit_record(&sim, n, "tenant-back"))
        .filter(|(_, v, _)| *v > version)
        .collect();
    assert!(
        back.len() >= 2,
        "a majority moved past the retirement: {back:?}"
    );
    for (inc, _, _) in &back {
        assert_eq!(*inc, incarnation, "the same record, brought back");
    }
}

/// Where the copy-in-doubt scenarios start: a concurrency-1 key whose
/// first task ran, its permit record retired on its three replicas (in
/// preference order; purged 1.5 s later), and a node that is none of them
/// to submit from.
struct RetiredKey {
    sim: Sim,
    limit: cohort_core::TaskLimit,
    pid: cohort_core::TaskId,
    replicas: Vec<NodeId>,
    client: NodeId,
    /// The retired version, and the record's incarnation.
    version: u64,
    incarnation: cohort_core::Time,
}

fn a_retired_key(seed: u64, key: &str, first: cohort_core::TaskId) -> RetiredKey {
    let limit = cohort_core::TaskLimit {
        key: key.into(),
        concurrency_max: 1,
        rate_max: 0,
        rate_window_ms: 0,
    };
    let mut sim = one_task_under_a_retiring_key(seed, 1_500, (NodeId(1), first), &limit);
    let pid = cohort_leaderless::permit::permit_id(key);
    let replicas = sim
        .node(NodeId(1))
        .record_replicas(pid)
        .expect("held")
        .to_vec();
    let client = *sim
        .members()
        .iter()
        .find(|n| !replicas.contains(n))
        .expect("5 > 3");
    let retired = |s: &Sim, n: NodeId| {
        permit_record(s, n, key).is_some_and(|(_, _, v)| v.permits.retired_at.is_some())
    };
    assert!(sim.run_until(5_000, |s| replicas.iter().all(|&n| retired(s, n))));
    let (incarnation, version, _) = permit_record(&sim, replicas[0], key).expect("held");
    RetiredKey {
        sim,
        limit,
        pid,
        replicas,
        client,
        version,
        incarnation,
    }
}

/// A grant chosen on top of a retired record, whose `Learn` one replica of
/// its majority missed, is not forgotten when the third replica (cut off
/// meanwhile) purges the record and tells the others: the replica holding
/// the accepted grant settles the instance before it drops anything, so a
/// keeper that takes over does not create the key's next incarnation
/// beside the grant (its task and the next one would run at once).
#[test]
fn a_grant_on_a_retired_record_survives_a_purge_by_a_replica_that_missed_it() {
    let RetiredKey {
        mut sim,
        limit: one,
        pid,
        replicas,
        client,
        version: retired_version,
        ..
    } = a_retired_key(61, "tenant-doubt", tid(430));
    let (keeper, lagging, purger) = (replicas[0], replicas[1], replicas[2]);
    // The purger hears nothing of what comes next; the lagging replica
    // accepts the next grant but never learns it was chosen.
    sim.cut(purger, keeper);
    sim.cut(purger, lagging);
    sim.drop_if = Some(Box::new(move |_, to, msg| {
        to == lagging && matches!(msg, LeaderlessMessage::Learn { id, .. } if *id == pid)
    }));
    sim.handlers.run_ms = (5_000, 5_000);
    let (held, next) = (tid(431), tid(432));
    submit_limited(&mut sim, client, held, one.clone());
    assert!(sim.run_until(3_000, |s| !s.executions_of(held).is_empty()));
    assert!(
        !sim.executions_of(held).iter().any(|(n, _)| *n == keeper),
        "the keeper does not run the task it is stopped under"
    );
    let (_, back_version, _) = permit_record(&sim, keeper, "tenant-doubt").expect("held");
    assert_eq!(back_version, retired_version + 1, "the grant is chosen");
    // The purger purges the retired record it was left with.
    assert!(
        sim.run_until(5_000, |s| permit_record(s, purger, "tenant-doubt")
            .is_none())
    );
    let (_, lag_version, _) = permit_record(&sim, lagging, "tenant-doubt").expect("held");
    assert_eq!(
        lag_version, retired_version,
        "the lagging replica missed the grant"
    );
    // The keeper stops; the purger is heard again; the next task asks.
    sim.crash(keeper);
    sim.drop_if = None;
    sim.heal();
    submit_limited(&mut sim, client, next, one);
    sim.run_for(3_000);
    assert!(
        sim.executions_of(next).is_empty(),
        "the next task waits for the place the first one holds"
    );
    assert!(
        permit_record(&sim, lagging, "tenant-doubt").is_some(),
        "the copy in doubt is kept while no majority says it was purged"
    );
    sim.restart(keeper);
    assert!(sim.run_until(20_000, |s| {
        [held, next].iter().all(|&id| s.decided(id).is_some())
    }));
    one_run_each_in_turn(&sim, &[held, next]);
}

/// The other side of the same story: a grant only its keeper accepted
/// (its `Accept`s to the other two replicas lost, and they purged the
/// retired record meanwhile) was never chosen. Both answer the keeper's
/// next rounds `Purged`; a majority of the replicas said so, so the keeper
/// drops its copy in doubt, and the task gets its place from the key's
/// next incarnation.
#[test]
fn a_grant_only_its_keeper_accepted_is_dropped_once_a_majority_purged_the_record() {
    let RetiredKey {
        mut sim,
        limit: one,
        pid,
        replicas,
        client,
        version: retired_version,
        incarnation: old,
    } = a_retired_key(67, "tenant-alone", tid(440));
    let keeper = replicas[0];
    sim.drop_if = Some(Box::new(move |from, _, msg| {
        from == keeper && matches!(msg, LeaderlessMessage::Accept { id, .. } if *id == pid)
    }));
    let task = tid(441);
    submit_limited(&mut sim, client, task, one);
    let others_purged = |s: &Sim| {
        replicas[1..]
            .iter()
            .all(|&n| permit_record(s, n, "tenant-alone").is_none())
    };
    assert!(sim.run_until(5_000, others_purged));
    let (_, kept_version, _) = permit_record(&sim, keeper, "tenant-alone").expect("held");
    assert_eq!(kept_version, retired_version, "its grant was never chosen");
    assert!(sim.executions_of(task).is_empty(), "no grant, no run");
    sim.drop_if = None;
    assert!(sim.run_until(10_000, |s| s.decided(task).is_some()));
    assert!(matches!(
        sim.decided(task),
        Some(TaskState::Succeeded { .. })
    ));
    let (incarnation, _, _) = permit_record(&sim, keeper, "tenant-alone").expect("created anew");
    assert!(
        incarnation > old,
        "{incarnation} is the next incarnation after {old}"
    );
}

#[test]
fn a_limited_tasks_runner_crashing_mid_run_hands_its_place_to_the_reclaim_and_the_key_goes_on() {
    let mut sim = Sim::new(43, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let one = cohort_core::TaskLimit {
        key: "tenant-b".into(),
        concurrency_max: 1,
        rate_max: 0,
        rate_window_ms: 0,
    };
    let (a, b) = (tid(300), tid(301));
    sim.handlers.hang.insert(a);
    submit_limited(&mut sim, NodeId(2), a, one.clone());
    assert!(sim.run_until(1_000, |s| !s.executions_of(a).is_empty()));
    submit_limited(&mut sim, NodeId(3), b, one);
    sim.run_for(1_000);
    assert!(
        sim.executions_of(b).is_empty(),
        "b waits while a holds the only place"
    );
    let (owner, _) = sim.executions_of(a)[0];
    sim.handlers.hang.clear();
    sim.crash(owner);
    // The key is full, yet a's re-claim moves a's own place to epoch 2
    // (a dead runner's place does not block its task), then b runs.
    assert!(
        sim.run_until(10_000, |s| s.decided(a).is_some() && s.decided(b).is_some()),
        "both finish"
    );
    let runs_a = sim.executions_of(a);
    assert_eq!(runs_a.len(), 2, "{runs_a:?}");
    assert_eq!(runs_a[1].1, Epoch(2));
    let runs = live_spans(&sim, &[a, b]);
    for pair in runs.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {runs:?}");
    }
}

#[test]
fn a_limit_above_what_a_permit_record_holds_and_the_reserved_kind_are_refused() {
    let mut sim = Sim::new(44, 3, LeaderlessConfig::default());
    sim.run_for(500);
    let big = cohort_core::TaskLimit {
        key: "k".into(),
        concurrency_max: 5_000,
        rate_max: 0,
        rate_window_ms: 0,
    };
    let r = submit_limited(&mut sim, NodeId(1), tid(1), big);
    let reserved = sim.client(
        NodeId(1),
        ClientRequest::Submit {
            id: tid(2),
            task: cohort_core::Task {
                kind: cohort_leaderless::permit::PERMIT_KIND.into(),
                ..task(b"k")
            },
        },
    );
    sim.run_for(50);
    for (r, says) in [(r, "permit_holders_max"), (reserved, "reserved")] {
        match sim.reply(r) {
            Some(Err(ClientError::InvalidTask { reason })) => {
                assert!(reason.contains(says), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(sim.node(NodeId(1)).record(tid(1)).is_none());
    assert!(sim.node(NodeId(1)).record(tid(2)).is_none());
}

/// A grant its claimer never used (it was cut off right after the grant,
/// and no other node carries the task's label) would hold the key's only
/// place for ever; the keeper's sweep fences the task (its epoch moves
/// past the grant, so the claim could no longer apply) and gives the
/// place back, and another task of the key runs.
#[test]
fn an_unused_grant_is_fenced_and_its_place_given_back_to_the_next_task_of_the_key() {
    let mut sim = Sim::with_labels(45, 3, LeaderlessConfig::default(), &[(1, "x")]);
    sim.run_for(1_000);
    let one = cohort_core::TaskLimit {
        key: "k".into(),
        concurrency_max: 1,
        rate_max: 0,
        rate_window_ms: 0,
    };
    let (t, t2) = (tid(400), tid(401));
    sim.client(
        NodeId(1),
        ClientRequest::Submit {
            id: t,
            task: cohort_core::Task {
                labels: vec!["x".into()],
                limit: Some(one.clone()),
                ..task(b"only n1")
            },
        },
    );
    let pid = cohort_leaderless::permit::permit_id("k");
    let held = |s: &Sim| {
        s.members().iter().any(|&n| {
            s.node(n)
                .record(pid)
                .is_some_and(|(_, v)| v.permits.held.contains_key(&t))
        })
    };
    assert!(sim.run_until(2_000, held), "t's place granted");
    sim.isolate(NodeId(1));
    submit_limited(&mut sim, NodeId(2), t2, one);
    assert!(
        sim.run_until(15_000, |s| s.decided(t2).is_some()),
        "t2 runs once t's unused place is fenced and given back"
    );
    assert!(sim.executions_of(t).is_empty(), "t never ran");
    let (_, value) = sim.node(NodeId(2)).record(t).expect("a replica");
    assert_eq!(value.state, TaskState::Pending);
    assert_eq!(value.epoch, Epoch(1), "fenced past its grant");
    // Once n1 is back, t runs under the next epoch.
    sim.heal();
    assert!(sim.run_until(15_000, |s| s.decided(t).is_some()));
    assert_eq!(sim.executions_of(t), vec![(NodeId(1), Epoch(2))]);
}

/// A replica holding `tasks_active_max` active tasks refuses a new one and
/// says so: the submit is answered `429 overloaded` (`tasks_active_max`) as
/// soon as `W` can no longer be reached, not `503` after
/// `request_timeout_ms`, and nothing is created. (It used to stay silent:
/// `cohort bench`'s leaderless batch point answered thousands of batches
/// `503 batch_incomplete` a second late.) A coordinator as full refuses
/// before writing.
#[test]
fn a_submit_to_full_replicas_is_refused_as_overloaded_at_once() {
    let limits = cohort_core::Limits {
        tasks_active_max: 1,
        ..cohort_core::Limits::default()
    };
    // Six nodes: some tasks are placed on none of `a`'s three replicas.
    let mut sim = Sim::with_limits(62, 6, LeaderlessConfig::default(), limits);
    sim.run_for(1_000);
    let later = |payload: &[u8]| cohort_core::Task {
        not_before: cohort_core::Time::from_millis(3_600_000),
        ..task(payload)
    };
    let members = sim.members().to_vec();
    let a = tid(1);
    let replicas = placement::replicas(a, &members, 3);
    let r = sim.client(
        replicas[0],
        ClientRequest::Submit {
            id: a,
            task: later(b"a"),
        },
    );
    assert!(sim.run_until(2_000, |s| accepted(s, r)));
    assert!(sim.run_until(2_000, |s| replicas
        .iter()
        .all(|&n| s.node(n).record(a).is_some())));
    // Another task on the same (full) replicas, submitted through a node
    // that is none of them and holds nothing.
    let c = (2..10_000)
        .map(tid)
        .find(|&t| placement::replicas(t, &members, 3) == replicas)
        .expect("an id placed on the same replicas");
    let coordinator = *members
        .iter()
        .find(|n| !replicas.contains(n))
        .expect("5 nodes, 3 replicas");
    let start = sim.now;
    let r = sim.client(
        coordinator,
        ClientRequest::Submit {
            id: c,
            task: later(b"c"),
        },
    );
    assert!(sim.run_until(2_000, |s| s.reply(r).is_some()));
    assert!(
        matches!(sim.reply(r), Some(Err(ClientError::Overloaded { what, limit: 1 })) if what == "tasks_active_max"),
        "{:?}",
        sim.reply(r)
    );
    let took = sim.now.saturating_since(start);
    assert!(
        took < std::time::Duration::from_millis(LeaderlessConfig::default().request_timeout_ms / 2),
        "answered after {took:?}"
    );
    assert!(members.iter().all(|&n| sim.node(n).record(c).is_none()));
    // The coordinator of `a` is full itself: it refuses a task it would
    // hold at once, without writing.
    let placed = |t: cohort_core::TaskId| placement::replicas(t, &members, 3);
    let d = (20_000..30_000)
        .map(tid)
        .find(|&t| placed(t).contains(&replicas[0]))
        .expect("an id placed on the full coordinator");
    let r = sim.client(
        replicas[0],
        ClientRequest::Submit {
            id: d,
            task: later(b"d"),
        },
    );
    assert!(sim.run_until(100, |s| s.reply(r).is_some()));
    assert!(matches!(
        sim.reply(r),
        Some(Err(ClientError::Overloaded { .. }))
    ));
    assert!(members.iter().all(|&n| sim.node(n).record(d).is_none()));
    // But a task placed only on nodes with room is theirs to take: the full
    // coordinator writes it and it is accepted.
    let e = (30_000..40_000)
        .map(tid)
        .find(|&t| placed(t).iter().all(|n| !replicas.contains(n)))
        .expect("an id placed on the other three nodes");
    let r = sim.client(
        replicas[0],
        ClientRequest::Submit {
            id: e,
            task: later(b"e"),
        },
    );
    assert!(
        sim.run_until(2_000, |s| accepted(s, r)),
        "{:?}",
        sim.reply(r)
    );
}
