//! Scenario tests of leader mode on the node contract, each named for what
//! it guards, plus seeded random runs checked for G1–G3 and liveness.

mod cluster;

use cluster::{ids, task, Cluster};
use cohort_core::{
    ClientError, ClientRequest, ClientResponse, Consistency, NodeId, SupersedeReason, Task, TaskId,
    TaskState,
};
use cohort_leader::{LeaderConfig, ValidLeaderConfig};
use rand::Rng;
use std::collections::BTreeSet;

fn cfg() -> ValidLeaderConfig {
    ValidLeaderConfig::default()
}

fn accepted(c: &Cluster, r: cohort_core::RequestId) -> bool {
    matches!(c.replies.get(&r), Some(Ok(ClientResponse::Accepted { .. })))
}

fn state_of(c: &Cluster, r: cohort_core::RequestId) -> Option<TaskState> {
    match c.replies.get(&r) {
        Some(Ok(ClientResponse::State { state, .. })) => Some(state.clone()),
        _ => None,
    }
}

#[test]
fn submitted_tasks_are_acknowledged_after_commit_and_all_succeed() {
    let mut c = Cluster::new(1, 3, cfg());
    let l = c.elect(3_000);
    c.run_for(300); // every worker has heartbeated the leader
    let reqs: Vec<_> = (0..20u128)
        .map(|i| c.submit(l, TaskId(i), task("echo", &[i as u8])))
        .collect();
    assert!(
        reqs.iter().all(|r| !c.replies.contains_key(r)),
        "no ack before commit"
    );
    c.run_for(1_000);
    assert!(reqs.iter().all(|r| accepted(&c, *r)));
    let decided = c.check_history();
    assert_eq!(decided.len(), 20);
    assert!(decided
        .values()
        .all(|s| matches!(s, TaskState::Succeeded { .. })));
    // Load spreads: every node ran something.
    let runners: std::collections::BTreeSet<NodeId> = c.executed.iter().map(|e| e.1).collect();
    assert_eq!(runners.len(), 3);
    let g = c.get(l, TaskId(3));
    c.run_for(100);
    assert!(
        matches!(state_of(&c, g), Some(TaskState::Succeeded { result, .. }) if result == vec![3])
    );
}

#[test]
fn followers_redirect_and_a_leaderless_cluster_is_unavailable() {
    let mut c = Cluster::new(2, 3, cfg());
    let r = c.submit(NodeId(1), TaskId(1), task("echo", b"x"));
    assert!(matches!(
        c.replies.get(&r),
        Some(Err(ClientError::Unavailable { .. }))
    ));
    let l = c.elect(3_000);
    let f = ids(3).into_iter().find(|i| *i != l).unwrap();
    let r = c.submit(f, TaskId(1), task("echo", b"x"));
    assert_eq!(
        c.replies.get(&r),
        Some(&Err(ClientError::NotLeader { leader: Some(l) }))
    );
    let g = c.get(f, TaskId(1));
    assert_eq!(
        c.replies.get(&g),
        Some(&Err(ClientError::NotLeader { leader: Some(l) }))
    );
}

#[test]
fn resubmit_with_same_content_is_accepted_again_and_different_content_conflicts() {
    let mut c = Cluster::new(3, 3, cfg());
    let l = c.elect(3_000);
    let a = c.submit(l, TaskId(9), task("echo", b"a"));
    let again_in_flight = c.submit(l, TaskId(9), task("echo", b"a"));
    let conflict_in_flight = c.submit(l, TaskId(9), task("echo", b"b"));
    assert_eq!(
        c.replies.get(&conflict_in_flight),
        Some(&Err(ClientError::IdConflict { id: TaskId(9) }))
    );
    c.run_for(300);
    assert!(accepted(&c, a) && accepted(&c, again_in_flight));
    let again = c.submit(l, TaskId(9), task("echo", b"a"));
    assert!(accepted(&c, again));
    let conflict = c.submit(l, TaskId(9), task("echo", b"b"));
    assert_eq!(
        c.replies.get(&conflict),
        Some(&Err(ClientError::IdConflict { id: TaskId(9) }))
    );
    c.run_for(300);
    assert_eq!(c.check_history().len(), 1);
    let runs = c.executed.iter().filter(|e| e.2 == TaskId(9)).count();
    assert_eq!(runs, 1, "a resubmit does not run the task again");
}

#[test]
fn invalid_and_oversized_tasks_are_refused_with_typed_errors() {
    let mut c = Cluster::new(4, 1, cfg());
    let l = c.elect(3_000);
    let mut t = task("echo", &vec![0; (1 << 20) + 1]);
    let r = c.submit(l, TaskId(1), t.clone());
    assert!(matches!(
        c.replies.get(&r),
        Some(Err(ClientError::PayloadTooLarge { .. }))
    ));
    t.payload.clear();
    t.max_attempts = 0;
    let r = c.submit(l, TaskId(1), t);
    assert!(matches!(
        c.replies.get(&r),
        Some(Err(ClientError::InvalidTask { .. }))
    ));
}

#[test]
fn failing_handler_is_retried_up_to_max_attempts_then_failed() {
    let mut c = Cluster::new(5, 3, cfg());
    let l = c.elect(3_000);
    c.submit(l, TaskId(1), task("fail", b""));
    c.submit(l, TaskId(2), task("flaky", b"ok"));
    c.run_for(1_000);
    let d = c.check_history();
    assert_eq!(
        d[&TaskId(1)],
        TaskState::Failed {
            error: "always fails".into(),
            attempts: 3
        }
    );
    assert!(matches!(&d[&TaskId(2)], TaskState::Succeeded { epoch, .. } if epoch.0 == 2));
    assert_eq!(c.superseded(SupersedeReason::AttemptFailed), 3);
}

#[test]
fn cancel_is_committed_and_a_late_result_is_rejected() {
    let mut c = Cluster::new(6, 3, cfg());
    c.exec_ms = 500;
    let l = c.elect(3_000);
    c.submit(l, TaskId(1), task("echo", b""));
    c.run_for(100);
    let r = c.request(l, ClientRequest::Cancel { id: TaskId(1) });
    c.run_for(1_000);
    assert_eq!(state_of(&c, r), Some(TaskState::Cancelled));
    assert_eq!(c.check_history()[&TaskId(1)], TaskState::Cancelled);
    let r = c.request(l, ClientRequest::Cancel { id: TaskId(404) });
    c.run_for(100);
    assert_eq!(
        c.replies.get(&r),
        Some(&Err(ClientError::NotFound { id: TaskId(404) }))
    );
}

#[test]
fn worker_paused_beyond_timeout_is_declared_dead_and_its_late_result_rejected() {
    let mut c = Cluster::new(7, 3, cfg());
    c.exec_ms = 300;
    let l = c.elect(3_000);
    c.run_for(300);
    for i in 0..6u128 {
        c.submit(l, TaskId(i), task("echo", &[i as u8]));
    }
    c.run_for(50);
    let w = ids(3).into_iter().find(|i| *i != l).unwrap();
    let mine: Vec<TaskId> = c
        .executed
        .iter()
        .filter(|e| e.1 == w)
        .map(|e| e.2)
        .collect();
    assert!(!mine.is_empty(), "the worker runs something");
    c.pause(w);
    c.run_for(1_500); // beyond alpha * heartbeat = 500 ms
    assert!(c.superseded(SupersedeReason::RunnerDeclaredDead) >= mine.len());
    c.resume(w);
    c.run_for(2_000);
    let d = c.check_history();
    for t in &mine {
        match &d[t] {
            TaskState::Succeeded { node, epoch, .. } => {
                assert_ne!(*node, w, "the paused worker's result was rejected");
                assert!(epoch.0 >= 2);
            }
            s => panic!("{t:?} ended {s:?}"),
        }
    }
    assert_eq!(d.len(), 6);
    // The worker is live again and receives work.
    let before = c.executed.len();
    for i in 100..110u128 {
        c.submit(l, TaskId(i), task("echo", b""));
    }
    c.run_for(1_000);
    assert!(
        c.executed[before..].iter().any(|e| e.1 == w),
        "a returning worker is live again"
    );
}

/// A live runner whose handler outlives its start-to-close timeout and is
/// never stopped (here: the harness's runner does not enforce timeouts,
/// as a runtime could not stop a blocking handler): its worker heartbeats
/// go on, so it is never declared dead, and the cluster itself ends the
/// lease its grace after the timeout; the task runs again under
/// the next epoch and the hung handler's late result is rejected.
#[test]
fn a_hung_handler_on_a_live_runner_loses_its_lease_and_its_late_result_is_rejected() {
    let mut c = Cluster::new(12, 3, cfg());
    c.exec_ms = 4_000; // timeout 1 s + grace 1 s < 4 s
    let t = Task {
        timeout_ms: 1_000,
        ..task("echo", b"x")
    };
    assert_eq!(t.effective_lease_grace_ms(), 1_000);
    let l = c.elect(3_000);
    c.run_for(300);
    c.submit(l, TaskId(1), t);
    c.run_for(100);
    let first = c.executed.clone();
    assert_eq!(first.len(), 1, "{first:?}");
    c.exec_ms = 20; // the next attempt returns at once
    c.run_for(1_400);
    assert_eq!(
        c.superseded(SupersedeReason::LeaseExpired),
        0,
        "within the lease"
    );
    c.run_for(1_500);
    assert_eq!(c.superseded(SupersedeReason::LeaseExpired), 1);
    assert_eq!(c.superseded(SupersedeReason::RunnerDeclaredDead), 0);
    c.run_for(3_000); // past the hung handler's return at 4 s
    match &c.check_history()[&TaskId(1)] {
        TaskState::Succeeded { epoch, .. } => assert_eq!(epoch.0, 2),
        s => panic!("ended {s:?}"),
    }
    assert_eq!(c.executed.len(), 2);
}

#[test]
fn leader_crash_new_leader_resumes_and_assigns_without_mass_reassignment() {
    let mut c = Cluster::new(8, 5, cfg());
    c.exec_ms = 400;
    let l = c.elect(3_000);
    for i in 0..10u128 {
        c.submit(l, TaskId(i), task("echo", b""));
    }
    c.run_for(100);
    let crash_at = c.now;
    c.crash(l);
    let nl = c.elect(3_000);
    assert_ne!(nl, l);
    assert!(c.submit_until_accepted(TaskId(50), task("echo", b""), 3_000));
    c.run_for(2_000);
    let first = c
        .first_assigned_after(crash_at)
        .expect("the new leader assigns");
    assert!(first.saturating_since(crash_at).as_millis() < 2_000);
    // Only the crashed leader's tasks were reassigned, not everybody's.
    let lost_runs = c.executed.iter().filter(|e| e.1 == l).count();
    assert!(c.superseded(SupersedeReason::RunnerDeclaredDead) <= lost_runs);
    c.restart(l);
    c.run_for(1_000);
    let d = c.check_history();
    assert_eq!(d.len(), 11);
}

#[test]
fn old_leader_in_a_minority_acknowledges_nothing() {
    let mut c = Cluster::new(9, 5, cfg());
    let l = c.elect(3_000);
    let others: Vec<NodeId> = ids(5).into_iter().filter(|i| *i != l).collect();
    c.partition(&[l, others[0]], &others[1..]);
    let reqs: Vec<_> = (0..5u128)
        .map(|i| c.submit(l, TaskId(i), task("echo", b"")))
        .collect();
    c.run_for(2_000);
    for r in &reqs {
        assert!(
            !accepted(&c, *r),
            "nothing accepted in the minority is acknowledged"
        );
        assert!(
            matches!(c.replies.get(r), Some(Err(e)) if e.is_retryable()),
            "the client hears back"
        );
    }
    let nl = c.leader().expect("majority side elects");
    assert!(others[1..].contains(&nl));
    c.heal();
    c.run_for(1_000);
    let g = c.request(
        nl,
        ClientRequest::Get {
            id: TaskId(0),
            consistency: Consistency::Linearizable,
        },
    );
    c.run_for(100);
    assert_eq!(
        c.replies.get(&g),
        Some(&Err(ClientError::NotFound { id: TaskId(0) }))
    );
}

#[test]
fn restarted_worker_that_lost_its_execution_gets_the_task_reclaimed() {
    let mut c = Cluster::new(10, 3, cfg());
    c.exec_ms = 2_000;
    let l = c.elect(3_000);
    c.run_for(300);
    for i in 0..6u128 {
        c.submit(l, TaskId(i), task("echo", b""));
    }
    c.run_for(50);
    let w = ids(3).into_iter().find(|i| *i != l).unwrap();
    c.crash(w);
    c.restart(w); // back within the heartbeat timeout
    c.run_for(5_000);
    let d = c.check_history();
    assert_eq!(d.len(), 6, "every task finished");
    assert!(c.superseded(SupersedeReason::RunnerDeclaredDead) >= 1);
}

#[test]
fn stale_read_is_local_and_linearizable_read_sees_acknowledged_writes() {
    let mut c = Cluster::new(11, 3, cfg());
    let l = c.elect(3_000);
    let s = c.submit(l, TaskId(1), task("echo", b""));
    c.run_for(20);
    assert!(accepted(&c, s));
    let g = c.get(l, TaskId(1));
    c.run_for(20);
    assert!(
        state_of(&c, g).is_some(),
        "an acknowledged submit is visible"
    );
    let f = ids(3).into_iter().find(|i| *i != l).unwrap();
    let stale = c.request(
        f,
        ClientRequest::Get {
            id: TaskId(1),
            consistency: Consistency::Stale,
        },
    );
    assert!(
        c.replies.contains_key(&stale),
        "a stale read answers at once"
    );
}

#[test]
fn snapshots_bound_the_log_and_catch_up_a_lagging_node() {
    let cfg = LeaderConfig {
        snapshot_entries_threshold: 20,
        snapshot_keep_entries: 5,
        snapshot_entries_per_record: 0,
        snapshot_chunk_bytes: 64,
        ..LeaderConfig::default()
    }
    .validate()
    .unwrap();
    let mut c = Cluster::new(12, 3, cfg);
    let l = c.elect(3_000);
    let lag = ids(3).into_iter().find(|i| *i != l).unwrap();
    c.crash(lag);
    for i in 0..100u128 {
        c.submit(l, TaskId(i), task("echo", b""));
        c.run_for(5);
    }
    c.run_for(1_000);
    c.restart(lag);
    c.run_for(2_000);
    assert!(c.max_log_len <= 60, "log grew to {}", c.max_log_len);
    assert_eq!(
        c.node(lag).scheduler().len(),
        100,
        "caught up through a snapshot"
    );
    assert_eq!(c.check_history().len(), 100);
}

#[test]
fn old_leader_paused_past_its_term_resumes_and_cannot_act() {
    let mut c = Cluster::new(14, 3, cfg());
    c.exec_ms = 100;
    let old = c.elect(3_000);
    c.run_for(300);
    c.pause(old);
    c.run_for(1_500);
    let new = c.leader().expect("the others elect");
    assert_ne!(new, old);
    assert!(c.submit_until_accepted(TaskId(1), task("echo", b""), 2_000));
    // The old leader wakes up believing it still leads its old term and
    // takes a submit before it hears of the new term: it must not
    // acknowledge it, and the entry can never commit.
    c.resume(old);
    assert_eq!(
        c.node(old).raft_status().role,
        cohort_leader::raft::Role::Leader
    );
    let r = c.submit(old, TaskId(2), task("echo", b""));
    c.run_for(1_000);
    assert!(
        matches!(c.replies.get(&r), Some(Err(e)) if e.is_retryable()),
        "{:?}",
        c.replies.get(&r)
    );
    assert_ne!(
        c.node(old).raft_status().role,
        cohort_leader::raft::Role::Leader
    );
    assert!(!c.check_history().contains_key(&TaskId(2)));
    let d = c.check_history();
    assert!(matches!(d[&TaskId(1)], TaskState::Succeeded { .. }));
}

#[test]
fn a_voter_is_added_and_one_removed_while_tasks_flow() {
    let four = LeaderConfig {
        voters_max: 3,
        ..LeaderConfig::default()
    }
    .validate()
    .unwrap();
    let mut c = Cluster::new(15, 4, four);
    let l = c.elect(3_000);
    c.run_for(300);
    assert!(c
        .node(l)
        .raft_status()
        .membership
        .learners
        .contains(&NodeId(4)));
    let mut next = 0u128;
    let mut flow = |c: &mut Cluster, n: u128| {
        for _ in 0..n {
            let l = c.leader().expect("a leader");
            c.submit(l, TaskId(next), task("echo", b""));
            next += 1;
            c.run_for(10);
        }
    };
    flow(&mut c, 10);
    let now = c.now;
    let l = c.leader().unwrap();
    c.nodes
        .get_mut(&l)
        .unwrap()
        .as_mut()
        .unwrap()
        .propose_membership(
            now,
            cohort_leader::raft::MembershipChange::PromoteLearner(NodeId(4)),
        )
        .unwrap();
    flow(&mut c, 10);
    let l = c.leader().unwrap();
    assert!(c
        .node(l)
        .raft_status()
        .membership
        .voters
        .contains(&NodeId(4)));
    let gone = ids(3).into_iter().find(|i| *i != l).unwrap();
    let now = c.now;
    c.nodes
        .get_mut(&l)
        .unwrap()
        .as_mut()
        .unwrap()
        .propose_membership(now, cohort_leader::raft::MembershipChange::Remove(gone))
        .unwrap();
    flow(&mut c, 10);
    let st = c.node(c.leader().unwrap()).raft_status();
    assert_eq!(st.membership.voters.len(), 3);
    assert!(!st.membership.is_member(gone));
    flow(&mut c, 10);
    c.run_for(2_000);
    let d = c.check_history();
    assert_eq!(d.len(), 40, "every task finished across both changes");
}

#[test]
fn whole_cluster_restart_keeps_every_acknowledged_task() {
    let mut c = Cluster::new(16, 3, cfg());
    c.exec_ms = 10_000; // nothing finishes before the crash
    let l = c.elect(3_000);
    c.run_for(300);
    let reqs: Vec<_> = (0..10u128)
        .map(|i| c.submit(l, TaskId(i), task("echo", b"")))
        .collect();
    c.run_for(100);
    assert!(reqs.iter().all(|r| accepted(&c, *r)));
    for i in ids(3) {
        c.crash(i);
    }
    c.exec_ms = 20;
    for i in ids(3) {
        c.restart(i);
        assert_eq!(
            c.node(i).scheduler().len(),
            10,
            "rebuilt from the persisted log"
        );
    }
    c.run_for(3_000);
    let d = c.check_history();
    assert_eq!(d.len(), 10);
    assert!(d.values().all(|s| matches!(s, TaskState::Succeeded { .. })));
}

#[test]
fn graceful_shutdown_hands_leadership_over() {
    let mut c = Cluster::new(13, 3, cfg());
    let l = c.elect(3_000);
    c.run_for(200);
    let now = c.now;
    let target = c
        .nodes
        .get_mut(&l)
        .unwrap()
        .as_mut()
        .unwrap()
        .shutdown(now)
        .expect("a transfer starts");
    c.run_for(200);
    assert_eq!(c.leader(), Some(target));
}

/// Time from crashing the leader to a new leader, in ms.
fn failover_ms(seed: u64, connections_close: bool) -> u64 {
    let mut c = Cluster::new(seed, 5, cfg());
    let l = c.elect(3_000);
    c.run_for(500);
    let crashed_at = c.now;
    c.crash(l);
    if connections_close {
        for id in ids(5) {
            c.lose_connection(id, l);
        }
    }
    let nl = c.elect(3_000);
    assert_ne!(nl, l);
    c.now.saturating_since(crashed_at).as_millis() as u64
}

#[test]
fn followers_that_see_the_leaders_connection_close_elect_before_an_election_timeout() {
    let min = cfg().get().election_timeout_ms_min;
    let heartbeat = cfg().get().heartbeat_interval_ms;
    for seed in 0..20 {
        // Without the hint nobody campaigns before `min` after the last
        // heartbeat, which came at most one interval before the crash.
        let slow = failover_ms(seed, false);
        assert!(slow >= min - heartbeat, "seed {seed}: {slow} ms");
        // With it, a follower campaigns within one heartbeat interval.
        let fast = failover_ms(seed, true);
        assert!(
            fast < min - heartbeat,
            "seed {seed}: {fast} ms (without: {slow} ms)"
        );
    }
}

#[test]
fn a_connection_closing_under_a_live_leader_deposes_nobody() {
    let mut c = Cluster::new(14, 5, cfg());
    let l = c.elect(3_000);
    c.run_for(500);
    let term = c.node(l).raft_status().term;
    // One follower's connection from the leader resets, the leader is fine:
    // its pre-vote is refused by the others, who still hear the leader.
    let f = ids(5).into_iter().find(|id| *id != l).unwrap();
    c.lose_connection(f, l);
    c.run_for(2_000);
    assert_eq!(c.leader(), Some(l));
    assert_eq!(c.node(l).raft_status().term, term);
}

#[test]
fn invalid_config_is_refused_up_front() {
    let bad = LeaderConfig {
        heartbeat_interval_ms: 200,
        ..LeaderConfig::default()
    };
    assert_eq!(
        bad.validate(),
        Err(cohort_leader::ConfigError::ElectionTimeouts)
    );
    let bad = LeaderConfig {
        alpha: 0,
        ..LeaderConfig::default()
    };
    assert!(bad.validate().is_err());
}

/// Random faults (loss, partitions, crashes, pauses) over a submit
/// workload; then healing, after which every acknowledged task must finish.
/// Returns how many submits were acknowledged.
fn random_run(seed: u64, size: u64) -> usize {
    let mut c = Cluster::new(seed, size, cfg());
    let mut chaos = c.rng.clone();
    c.loss = chaos.gen_range(0.0..0.2);
    c.delay_us = (100, chaos.gen_range(500..10_000));
    let mut submitted = Vec::new();
    for step in 0..200u32 {
        match chaos.gen_range(0..30) {
            0 => {
                let v = NodeId(chaos.gen_range(1..=size));
                let down = ids(size).iter().filter(|i| !c.is_up(**i)).count() as u64;
                if !c.is_up(v) {
                    c.restart(v);
                } else if down < (size - 1) / 2 {
                    c.crash(v);
                }
            }
            1 => {
                let all = ids(size);
                let k = chaos.gen_range(1..size as usize);
                c.cut.clear();
                c.partition(&all[..k], &all[k..]);
            }
            2 => c.cut.clear(),
            3 => {
                let v = NodeId(chaos.gen_range(1..=size));
                if c.paused.contains(&v) {
                    c.resume(v);
                } else if c.is_up(v) {
                    c.pause(v);
                }
            }
            _ => {
                if let Some(l) = c.leader() {
                    let id = TaskId(u128::from(step));
                    let r = c.submit(l, id, task("echo", &step.to_be_bytes()));
                    submitted.push((id, r));
                }
            }
        }
        c.run_for(chaos.gen_range(1..40));
    }
    c.heal();
    c.run_for(5_000);
    let decided = c.check_history();
    let mut acked = 0;
    for (id, r) in &submitted {
        if accepted(&c, *r) {
            acked += 1;
            assert!(
                decided.contains_key(id),
                "seed {seed}: acknowledged {id:?} never finished (G1/G4)"
            );
        }
    }
    acked
}

#[test]
fn random_faults_keep_g1_to_g3_and_finish_every_acknowledged_task() {
    let mut acked = 0;
    for seed in 0..30 {
        acked += random_run(seed, 3);
        acked += random_run(500 + seed, 5);
    }
    // The faults must leave room for work, or the run proves nothing.
    assert!(acked > 60 * 50, "only {acked} submits acknowledged");
}

#[test]
fn raft_invariants_checker_catches_diverging_committed_entries() {
    // Two independent one-node clusters commit different entries at the
    // same indices: seen as two nodes of one cluster, that breaks Raft.
    let mut a = Cluster::new(17, 1, cfg());
    let mut b = Cluster::new(18, 1, cfg());
    a.elect(3_000);
    b.elect(3_000);
    a.submit(NodeId(1), TaskId(1), task("echo", b"a"));
    b.submit(NodeId(1), TaskId(2), task("echo", b"b"));
    let mut checker = cohort_leader::RaftInvariants::default();
    assert_eq!(checker.check(&[Some(a.node(NodeId(1))), None]), Ok(()));
    assert!(checker.committed_seen() >= 2);
    let err = checker
        .check(&[Some(a.node(NodeId(1))), Some(b.node(NodeId(1)))])
        .unwrap_err();
    assert!(err.contains("different entry at 2"), "{err}");
}

/// A 3-node cluster under `cfg` runs 100 tasks to their outcome; returns
/// it and its leader.
fn hundred_tasks(seed: u64, cfg: ValidLeaderConfig) -> (Cluster, NodeId) {
    let mut c = Cluster::new(seed, 3, cfg);
    let l = c.elect(3_000);
    for i in 0..100u128 {
        c.submit(l, TaskId(i), task("echo", b""));
        c.run_for(5);
    }
    c.run_for(1_000);
    assert_eq!(c.check_history().len(), 100);
    (c, l)
}

#[test]
fn snapshots_wait_for_as_many_entries_as_the_state_holds_records() {
    let cfg = LeaderConfig {
        snapshot_entries_threshold: 20,
        snapshot_keep_entries: 5,
        snapshot_entries_per_record: 1,
        ..LeaderConfig::default()
    }
    .validate()
    .unwrap();
    let (c, l) = hundred_tasks(15, cfg);
    // Each task takes about three entries (submit, assign, result), so the
    // log outgrows the 20-entry threshold while records accumulate, yet a
    // snapshot is still taken once it holds as many entries as records.
    assert!(c.max_log_len > 25 + 20, "log stayed at {}", c.max_log_len);
    assert!(c.max_log_len <= 200, "log grew to {}", c.max_log_len);
    assert!(
        c.node(l).raft_status().log_offset > 0,
        "the leader compacted its log"
    );
}

#[test]
fn snapshots_also_come_once_the_log_passes_its_byte_bound() {
    let run = |log_bytes_max: usize| {
        let cfg = LeaderConfig {
            snapshot_entries_threshold: 20,
            snapshot_keep_entries: 5,
            // Never reached here: only the byte bound can cut the log.
            snapshot_entries_per_record: 1_000,
            snapshot_log_bytes_max: log_bytes_max,
            ..LeaderConfig::default()
        }
        .validate()
        .unwrap();
        let (c, l) = hundred_tasks(16, cfg);
        (c.max_log_len, c.node(l).raft_status().log_offset)
    };
    let (unbounded_len, unbounded_offset) = run(usize::MAX);
    assert_eq!(unbounded_offset, 0, "nothing else cuts the log");
    assert!(
        unbounded_len > 250,
        "about three entries per task: {unbounded_len}"
    );
    let (bounded_len, bounded_offset) = run(4_000);
    assert!(bounded_offset > 0, "the byte bound cut the log");
    assert!(bounded_len <= 100, "the log grew to {bounded_len} entries");
}

fn batch(c: &mut Cluster, at: NodeId, ids: &[u128]) -> cohort_core::RequestId {
    let tasks = ids
        .iter()
        .map(|i| (TaskId(*i), task("echo", &[*i as u8])))
        .collect();
    c.request(at, ClientRequest::SubmitBatch { tasks })
}

/// A leader deposed with uncommitted entries learns of its successor from
/// an append that replaces them and commits the successor's entries at the
/// same indices, in one input: the successor's batch at the index of the
/// old leader's batch must not answer the old leader's client (it would
/// acknowledge tasks that were never created: G1).
#[test]
fn a_deposed_leader_never_acknowledges_a_batch_another_leader_wrote_at_its_index() {
    let mut c = Cluster::new(14, 3, cfg());
    let old = c.elect(3_000);
    c.run_for(300);
    let others: Vec<NodeId> = ids(3).into_iter().filter(|i| *i != old).collect();
    // Cut off, the old leader takes an entry it cannot commit (at L+1,
    // where its successor puts its no-op) and leads on until check-quorum
    // notices; the others elect meanwhile.
    c.partition(&[old], &others);
    let lost = c.submit(old, TaskId(1), task("echo", b"lost"));
    let mut new = None;
    for _ in 0..100 {
        c.run_for(5);
        new = others
            .iter()
            .copied()
            .find(|o| c.node(*o).raft_status().role == cohort_leader::raft::Role::Leader);
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("the others elect");
    assert_eq!(
        c.node(old).raft_status().role,
        cohort_leader::raft::Role::Leader,
        "the old leader has not noticed yet"
    );
    // The successor's first entry after its no-op (L+2) is a batch; the
    // old leader, still leading, takes another batch at L+2.
    let theirs = batch(&mut c, new, &[20, 21]);
    let mine = batch(&mut c, old, &[10, 11]);
    c.run_for(20);
    assert!(matches!(
        c.replies.get(&theirs),
        Some(Ok(ClientResponse::AcceptedBatch { .. }))
    ));
    // The old leader hears of the new term by an append of those entries.
    c.cut.clear();
    c.run_for(1_000);
    for r in [lost, mine] {
        assert!(
            matches!(c.replies.get(&r), Some(Err(e)) if e.is_retryable()),
            "{:?}",
            c.replies.get(&r)
        );
    }
    let d = c.check_history();
    assert!(!d.contains_key(&TaskId(10)) && !d.contains_key(&TaskId(11)));
    assert!(d.contains_key(&TaskId(20)) && d.contains_key(&TaskId(21)));
}

#[test]
fn an_append_carrying_a_command_that_does_not_decode_is_refused_not_applied() {
    use cohort_leader::raft::{Entry, EntryKind, RaftMsg};
    use cohort_leader::LeaderMsg;
    let mut c = Cluster::new(7, 3, cfg());
    let l = c.elect(3_000);
    c.run_for(300);
    let f = *c.members.iter().find(|&&n| n != l).expect("a follower");
    let (term, last, last_term, commit) = {
        let n = c.node(f);
        let st = n.raft_status();
        (
            st.term,
            n.raft_log().last_index(),
            n.raft_log().last_term(),
            st.commit,
        )
    };
    let forged = LeaderMsg::Raft(RaftMsg::Append {
        term,
        prev_index: last,
        prev_term: last_term,
        entries: vec![Entry {
            index: last + 1,
            term,
            kind: EntryKind::Command(vec![0xff; 7]),
        }],
        commit: last + 1,
        read_seq: 0,
    });
    c.deliver_now(l, f, forged);
    let node = c.node(f);
    assert_eq!(node.raft_log().last_index(), last, "nothing appended");
    assert_eq!(node.raft_status().commit, commit, "nothing committed");
    // The cluster goes on: a task submitted now is acknowledged and runs.
    assert!(c.submit_until_accepted(TaskId(1), task("echo", b"x"), 3_000));
    c.run_for(2_000);
    let states = c.check_history();
    assert!(matches!(
        states.get(&TaskId(1)),
        Some(TaskState::Succeeded { .. })
    ));
}

#[test]
fn a_snapshot_whose_state_does_not_decode_is_dropped_not_installed() {
    use cohort_leader::raft::{RaftMsg, SnapshotMeta};
    use cohort_leader::LeaderMsg;
    let mut c = Cluster::new(8, 3, cfg());
    let l = c.elect(3_000);
    c.run_for(300);
    let f = *c.members.iter().find(|&&n| n != l).expect("a follower");
    let (term, last, commit, installed) = {
        let n = c.node(f);
        (
            n.raft_status().term,
            n.raft_log().last_index(),
            n.raft_status().commit,
            n.snapshots_installed(),
        )
    };
    let membership = cohort_leader::raft::Membership::initial(&c.members, 7);
    let forged = LeaderMsg::Raft(RaftMsg::Snapshot {
        term,
        meta: SnapshotMeta {
            index: last + 100,
            term,
            membership,
        },
        offset: 0,
        chunk: vec![0xff; 13],
        done: true,
    });
    c.deliver_now(l, f, forged);
    let node = c.node(f);
    assert_eq!(node.snapshots_installed(), installed, "nothing installed");
    assert_eq!(node.raft_log().last_index(), last, "the log is untouched");
    assert_eq!(node.raft_status().commit, commit);
    // The cluster goes on.
    assert!(c.submit_until_accepted(TaskId(2), task("echo", b"y"), 3_000));
    c.run_for(2_000);
    let states = c.check_history();
    assert!(matches!(
        states.get(&TaskId(2)),
        Some(TaskState::Succeeded { .. })
    ));
}

/// Routing: the leader assigns a labelled task only to a worker whose
/// heartbeats carry every label it names (here n3, the one `gpu` worker),
/// and a labelled task no worker with room can run does not hold up the
/// unlabelled tasks queued behind it. Once n3 fills up, the `gpu` tasks
/// wait for it rather than run elsewhere.
#[test]
fn labelled_tasks_run_only_on_workers_carrying_their_labels_and_do_not_block_the_queue() {
    let mut c = Cluster::new(23, 3, cfg());
    c.labels.insert(NodeId(3), vec!["gpu".into()]);
    c.crash(NodeId(3));
    c.restart(NodeId(3));
    c.elect(5_000);
    c.run_for(500);
    c.exec_ms = 200;
    let labelled = |n: u64| {
        let mut t = task("echo", &n.to_be_bytes());
        t.labels = vec!["gpu".into()];
        t
    };
    // More gpu tasks than n3 runs at once (4), then tasks asking for a
    // label no node carries, then unlabelled ones.
    let mut gpu = Vec::new();
    for n in 0..10u64 {
        let id = TaskId(1_000 + u128::from(n));
        assert!(c.submit_until_accepted(id, labelled(n), 5_000));
        gpu.push(id);
    }
    // A backlog of tasks asking for a label no node carries, larger than
    // any round looks at: the queue skips their label set whole.
    for n in 0..200u64 {
        let mut nowhere = task("echo", &n.to_be_bytes());
        nowhere.labels = vec!["tpu".into()];
        assert!(c.submit_until_accepted(TaskId(2_000 + u128::from(n)), nowhere, 5_000));
    }
    let mut plain = Vec::new();
    for n in 0..10u64 {
        let id = TaskId(3_000 + u128::from(n));
        assert!(c.submit_until_accepted(id, task("echo", &n.to_be_bytes()), 5_000));
        plain.push(id);
    }
    c.run_for(5_000);
    let states = c.check_history();
    for id in gpu.iter().chain(&plain) {
        assert!(
            matches!(states.get(id), Some(TaskState::Succeeded { .. })),
            "{id:?}: {:?}",
            states.get(id)
        );
    }
    for n in 0..200u128 {
        assert_eq!(states.get(&TaskId(2_000 + n)), None, "never decided");
    }
    let mut plain_runners = BTreeSet::new();
    for (_, node, id, _) in &c.executed {
        if gpu.contains(id) {
            assert_eq!(*node, NodeId(3), "{id:?} ran on {node}");
        }
        assert!(!(2_000..2_200).contains(&id.0), "nobody carries tpu");
        if plain.contains(id) {
            plain_runners.insert(*node);
        }
    }
    assert!(
        plain_runners.len() > 1,
        "unlabelled tasks spread: {plain_runners:?}"
    );
}

/// A result the leader holds frees its runner's slot before the result
/// commits: with every slot full and the leader cut off from its
/// followers, the results of its own handlers cannot commit, yet the task
/// waiting for a slot is proposed to it at once (before, it waited a
/// commit round, which under load halved completions/s).
#[test]
fn a_result_the_leader_holds_frees_its_runners_slot_before_it_commits() {
    use cohort_leader::scheduler::Command;
    let mut c = Cluster::new(21, 3, cfg());
    c.exec_ms = 200;
    let l = c.elect(3_000);
    c.run_for(300);
    // 3 workers x capacity 4 = 12 slots, and one task more.
    for i in 0..13u128 {
        c.submit(l, TaskId(i), task("echo", b""));
    }
    c.run_for(100);
    assert_eq!(c.executed.len(), 12, "every slot busy");
    let others: Vec<NodeId> = cluster::ids(3).into_iter().filter(|n| *n != l).collect();
    c.partition(&[l], &others);
    let commit = c.node(l).raft_status().commit;
    c.run_for(150); // the leader's handlers return
    let status = c.node(l).raft_status();
    assert_eq!(status.role, cohort_leader::raft::Role::Leader);
    assert_eq!(status.commit, commit, "nothing commits without a quorum");
    let log = c.node(l).raft_log();
    let mut proposed = Vec::new();
    for e in log.range(commit, log.last_index()) {
        if let cohort_leader::raft::EntryKind::Command(bytes) = &e.kind {
            let (_, cmd): (cohort_core::Time, Command) =
                cohort_core::decode(bytes, usize::MAX).unwrap();
            match cmd {
                Command::Many { commands } => proposed.extend(commands),
                one => proposed.push(one),
            }
        }
    }
    let results = proposed
        .iter()
        .filter(|c| matches!(c, Command::Result { node, .. } if *node == l))
        .count();
    assert!(results > 0, "the leader's own results are proposed");
    assert!(
        proposed
            .iter()
            .any(|c| matches!(c, Command::Assign { id: TaskId(12), node, .. } if *node == l)),
        "the waiting task goes to the slot a held result freed: {proposed:?}"
    );
}

/// A result the leader holds frees its slot only while the record still
/// runs that attempt: a cancel committed before the result ends the
/// attempt too, and must not free the slot a second time. With one leader
/// throughout, no worker ever runs more attempts in the record than its
/// capacity (4 in this harness), whatever lands between result and commit.
#[test]
fn a_held_result_whose_attempt_was_cancelled_does_not_free_its_slot_twice() {
    for seed in 0..20 {
        let mut c = Cluster::new(300 + seed, 3, cfg());
        c.exec_ms = 3;
        let l = c.elect(3_000);
        c.run_for(300);
        let term = c.node(l).raft_status().term;
        let mut next = 0u128;
        for step in 0..600u64 {
            // Keep the workers full, and cancel tasks just as they run.
            for _ in 0..3 {
                c.submit(l, TaskId(next), task("echo", b""));
                next += 1;
            }
            if let Some(&(_, _, t, _)) = c.executed.last() {
                if step % 2 == 0 {
                    c.request(l, ClientRequest::Cancel { id: t });
                }
            }
            c.run_for(1);
            assert_eq!(
                c.node(l).raft_status().term,
                term,
                "seed {seed}: one leader"
            );
            for w in cluster::ids(3) {
                let load = c.node(l).scheduler().load(w);
                assert!(load <= 4, "seed {seed} step {step}: {w} runs {load} > 4");
            }
        }
    }
}

/// A schedule's definition and tombstone are kept for ever: a definition
/// is what `GET /v1/schedules/{name}` reads, and a dropped tombstone would
/// let a deleted schedule's late link fire again. So `tasks_retained_max`
/// drops only other finished records (it used to drop the oldest whatever
/// they were), and the cluster keeps at most `schedules_kept_max` of them
/// instead: the next new schedule is refused `overloaded`, naming the
/// limit, and stored nowhere; a delete still goes through, and a
/// definition that exists is acknowledged again.
#[test]
fn schedules_outlive_tasks_retained_max_and_at_most_schedules_kept_max_are_created() {
    use cohort_core::schedule::{IdTag, Overlap, Schedule, ScheduleName, Spec};
    let cfg = LeaderConfig {
        schedules_kept_max: 2,
        ..LeaderConfig::default()
    }
    .validate()
    .expect("valid");
    let limits = cohort_core::Limits {
        tasks_retained_max: 3,
        ..cohort_core::Limits::default()
    };
    let mut c = Cluster::with_limits(11, 3, cfg, limits);
    let l = c.elect(3_000);
    c.run_for(300);
    let schedule = |name: &str| Schedule {
        name: ScheduleName::new(name).expect("a valid name"),
        spec: Spec::Every {
            every_ms: 60_000,
            start_ms: 0,
        },
        overlap: Overlap::Skip,
        catch_up_window_ms: 60_000,
        task: task("echo", b"tick"),
        link_attempts: 3,
    };
    let define = |c: &mut Cluster, name: &str| {
        let s = schedule(name);
        let id = s.name.task_id(IdTag::Spec);
        let r = c.submit(l, id, s.spec_task());
        c.run_for(300);
        (id, c.replies.get(&r).cloned().expect("answered"))
    };
    let over = |r: &Result<ClientResponse, ClientError>| matches!(r, Err(ClientError::Overloaded { what, limit: 2 }) if what == "schedules_kept_max");
    let (first, r) = define(&mut c, "first");
    assert!(matches!(r, Ok(ClientResponse::Accepted { .. })), "{r:?}");
    let (second, r) = define(&mut c, "second");
    assert!(matches!(r, Ok(ClientResponse::Accepted { .. })), "{r:?}");
    let (third, r) = define(&mut c, "third");
    assert!(over(&r), "{r:?}");
    // Many more finished tasks than tasks_retained_max: the oldest go, the
    // definitions (the oldest finished of all) stay.
    for i in 0..10u128 {
        let r = c.submit(l, TaskId(1_000 + i), task("echo", b"x"));
        c.run_for(100);
        assert!(accepted(&c, r));
    }
    c.run_for(500);
    for n in ids(3) {
        let sm = c.node(n).scheduler();
        assert!(sm.get(first).is_some_and(|r| r.state.is_final()), "{n}");
        assert!(sm.get(second).is_some(), "{n}");
        assert!(
            sm.get(third).is_none(),
            "a refused schedule is stored nowhere"
        );
        assert!(sm.get(TaskId(1_000)).is_none(), "purged past the bound");
        assert!(sm.get(TaskId(1_009)).is_some());
    }
    // The same definition again: it exists, acknowledged.
    let (_, r) = define(&mut c, "first");
    assert!(matches!(r, Ok(ClientResponse::Accepted { .. })), "{r:?}");
    // Deleting one still goes through (tombstones up to twice the bound).
    let deleted = ScheduleName::new("first")
        .expect("valid")
        .task_id(IdTag::Deleted);
    let r = c.submit(l, deleted, Schedule::tombstone_task());
    c.run_for(300);
    assert!(accepted(&c, r), "{:?}", c.replies.get(&r));
    // Neither the count bound nor the leader's clock purges them.
    for i in 10..20u128 {
        c.submit(l, TaskId(1_000 + i), task("echo", b"x"));
        c.run_for(100);
    }
    for n in ids(3) {
        assert!(c.node(n).scheduler().get(deleted).is_some(), "{n}");
        assert!(c.node(n).scheduler().get(first).is_some(), "{n}");
    }
}
