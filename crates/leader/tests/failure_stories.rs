//! The failure stories job queues are known for (Celery, Sidekiq, SQS),
//! told to leader mode in the simulator (`cohort-sim`), one task each, on
//! fixed seeds with scripted faults and no other fault.
//!
//! A running task's lease is its assignment `(task, epoch)`: it lasts as
//! long as the runner heartbeats the leader. After `alpha *
//! worker_heartbeat_ms` of silence the leader commits `WorkerDead`, which
//! supersedes the runner's tasks and reassigns them under the next epoch; a
//! result is accepted only from the epoch running (G3).
//!
//! Each story runs twice: once unstruck, to learn who runs the task and
//! when (`FirstRun`), then with the fault scripted against that runner. The
//! two runs are the same up to the fault (see `cohort_sim::scenario`). A
//! story needs a runner that is not the leader (a leader crash is another
//! story): the first of `SEEDS` that gives one is used.
//!
//! The negative controls of the fencing checker: `checkers::g3`'s
//! `a_result_from_a_stale_epoch_is_a_violation` (a hand-built history),
//! `accepting_a_result_from_a_superseded_epoch_is_caught_as_g3` in
//! `crates/sim/tests/simulate.rs` (a node that does not fence, in real
//! runs), and the paused-worker story below, which doctors its own history.

use cohort_core::{Epoch, NodeId, SupersedeReason, TaskOutcome, TaskState, Time};
use cohort_leader::raft::Role;
use cohort_leader::{LeaderNode, RaftInvariants, ValidLeaderConfig};
use cohort_sim::scenario::{assert_g3_catches_the_stale_result, one_task, FirstRun};
use cohort_sim::{run, Guarantee, Report, ScriptedFault, SimConfig, TaskTimeline};

const NODES: usize = 3;
/// Long enough for every story's fault, its recovery and the stale
/// runner's return.
const SAFETY_MS: u64 = 20_000;
const SEEDS: [u64; 8] = [11, 12, 13, 14, 15, 16, 17, 18];

/// How long the leader waits for a silent worker: `alpha *
/// worker_heartbeat_ms`.
fn heartbeat_timeout_ms() -> u64 {
    let c = ValidLeaderConfig::default();
    c.get().alpha * c.get().worker_heartbeat_ms
}

/// One run, the Raft invariants checked after every event; also returns
/// every change of leader `(when, leader)`.
fn simulate(c: &SimConfig) -> (Report, Vec<(Time, NodeId)>) {
    let mut raft = RaftInvariants::default();
    let mut leaders: Vec<(Time, NodeId)> = Vec::new();
    let mut hook = |now: Time, nodes: &[Option<&LeaderNode>]| {
        let leader = nodes
            .iter()
            .flatten()
            .map(|n| n.raft_status())
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id);
        if let Some(l) = leader {
            if leaders.last().map(|(_, x)| *x) != Some(l) {
                leaders.push((now, l));
            }
        }
        raft.check(nodes)
    };
    let r = run::<LeaderNode>(c, &ValidLeaderConfig::default(), &mut hook);
    (r, leaders)
}

fn leader_at(leaders: &[(Time, NodeId)], t: Time) -> Option<NodeId> {
    leaders
        .iter()
        .rev()
        .find(|(at, _)| *at <= t)
        .map(|(_, l)| *l)
}

/// The first seed whose task of `duration_ms` runs on a node that is not
/// the leader, the unstruck run's report and that first run.
fn unstruck(duration_ms: u64) -> (SimConfig, Report, FirstRun, NodeId) {
    for seed in SEEDS {
        let c = one_task(seed, NODES, duration_ms, SAFETY_MS);
        let (r, leaders) = simulate(&c);
        let first = FirstRun::of(&r.history).unwrap_or_else(|| panic!("seed {seed}: {r}"));
        let leader = leader_at(&leaders, first.at).expect("a leader assigned it");
        if first.runner != leader {
            return (c, r, first, leader);
        }
    }
    panic!("no seed of {SEEDS:?} runs the task on a follower");
}

/// Runs `c` with `faults` scripted; checks that the run is the unstruck
/// one up to them (the same first run) and broke no guarantee.
fn struck(
    c: &SimConfig,
    first: &FirstRun,
    faults: Vec<ScriptedFault>,
) -> (Report, TaskTimeline, Vec<(Time, NodeId)>) {
    let mut c = c.clone();
    c.script = faults;
    let (r, leaders) = simulate(&c);
    assert_eq!(FirstRun::of(&r.history).as_ref(), Some(first), "{r}");
    assert!(r.passed(), "seed {}: {r}", c.seed);
    assert_eq!(r.faults_injected, c.script.len() as u64, "{r}");
    let timeline = r.history.timeline(first.task);
    (r, timeline, leaders)
}

fn succeeded_by(state: &TaskState) -> Option<(NodeId, Epoch)> {
    match state {
        TaskState::Succeeded { node, epoch, .. } => Some((*node, *epoch)),
        _ => None,
    }
}

#[test]
fn a_task_running_ten_times_longer_than_the_heartbeat_timeout_runs_once() {
    let duration_ms = 10 * heartbeat_timeout_ms();
    let (_, r, first, leader) = unstruck(duration_ms);
    assert!(r.passed(), "{r}");
    let t = r.history.timeline(first.task);
    // Heartbeats kept the lease: one assignment, never superseded.
    assert_eq!(t.assigned, vec![(first.epoch, first.runner)], "{t:?}");
    assert!(t.superseded.is_empty(), "{t:?}");
    assert_eq!(t.executed.len(), 1, "{t:?}");
    assert_eq!(r.executions, 1);
    assert_eq!(t.decided.len(), 1, "{t:?}");
    assert_eq!(
        succeeded_by(&t.decided[0]),
        Some((first.runner, first.epoch))
    );
    // The handler did run for ten timeouts, on a follower (whose
    // heartbeats cross the network).
    let (done_at, node, epoch, _) = &t.completed[0];
    assert_eq!((*node, *epoch), (first.runner, first.epoch));
    assert!(done_at.saturating_since(first.at).as_millis() as u64 >= duration_ms);
    assert_ne!(first.runner, leader);
    assert_eq!(r.tasks_final, 1);
}

#[test]
fn a_worker_killed_mid_task_is_retried_once_with_the_next_epoch() {
    let duration_ms = 1_000;
    let (c, _, first, leader) = unstruck(duration_ms);
    // Killed halfway, down long past the heartbeat timeout.
    let down_ms = 6 * heartbeat_timeout_ms();
    let (r, t, leaders) = struck(&c, &first, vec![first.crash_runner(500, down_ms)]);
    let e2 = Epoch(first.epoch.0 + 1);
    assert_eq!(
        t.superseded,
        vec![(first.epoch, SupersedeReason::RunnerDeclaredDead)],
        "{t:?}"
    );
    assert_eq!(t.assigned.len(), 2, "{t:?}");
    assert_eq!(t.assigned[0], (first.epoch, first.runner));
    let (epoch, second) = t.assigned[1];
    assert_eq!(epoch, e2);
    assert_ne!(second, first.runner);
    // Ran twice, the killed run never returned.
    let runs: Vec<(NodeId, Epoch)> = t.executed.iter().map(|(_, n, e)| (*n, *e)).collect();
    assert_eq!(runs, vec![(first.runner, first.epoch), (second, e2)]);
    assert_eq!(r.executions, 2);
    assert!(t.completed.iter().all(|(_, n, _, _)| *n == second), "{t:?}");
    assert_eq!(t.decided.len(), 1, "{t:?}");
    assert_eq!(succeeded_by(&t.decided[0]), Some((second, e2)));
    // The leader recovered it, not the runner's return.
    let back = first.at_ms(500) + down_ms;
    assert!(t.decided_at.expect("decided") < Time::from_millis(back));
    assert_eq!(
        leader_at(&leaders, t.decided_at.expect("decided")),
        Some(leader)
    );
}

/// What the paused-worker stories share, checked: the runner, frozen 50 ms
/// before its handler returns, for `pause_ms`, is declared dead; the task
/// is reassigned under the next epoch to another node, which finishes it;
/// at the resume the frozen handler's result is handed to its worker,
/// which reports it to the leader, which receives it and rejects it: the
/// outcome decided is the next epoch's, and G3 holds (and would not, had
/// the leader accepted it). Returns the struck run's timeline, the first
/// run, the second runner and when the frozen worker resumed.
fn paused_past_its_lease(
    duration_ms: u64,
    pause_ms: u64,
) -> (TaskTimeline, FirstRun, NodeId, Time) {
    let (c, _, first, leader) = unstruck(duration_ms);
    let (r, t, leaders) = struck(
        &c,
        &first,
        vec![first.pause_runner(duration_ms - 50, pause_ms)],
    );
    let resumed = Time::from_millis(first.at_ms(duration_ms - 50) + pause_ms);
    let e2 = Epoch(first.epoch.0 + 1);
    assert_eq!(
        t.superseded,
        vec![(first.epoch, SupersedeReason::RunnerDeclaredDead)],
        "{t:?}"
    );
    assert_eq!(t.assigned.len(), 2, "{t:?}");
    let (epoch, second) = t.assigned[1];
    assert_eq!(epoch, e2);
    assert_ne!(second, first.runner);
    assert_eq!(t.decided.len(), 1, "{t:?}");
    assert_eq!(succeeded_by(&t.decided[0]), Some((second, e2)));
    assert_eq!(leader_at(&leaders, resumed), Some(leader));

    // The frozen handler's result reached its worker at the resume ...
    let stale = t
        .completed
        .iter()
        .find(|(_, n, e, _)| (*n, *e) == (first.runner, first.epoch))
        .expect("the paused run's completion, held until the resume");
    assert_eq!(stale.0, resumed);
    let TaskOutcome::Success(stale_result) = stale.3.clone() else {
        panic!("{stale:?}");
    };
    // ... which reported it to the leader, which received it.
    let from = r
        .trace
        .iter()
        .position(|l| l.ends_with(&format!("resume {}", first.runner)))
        .expect("the resume is in the trace");
    let report = format!(
        "{leader} <- {} Result {{ task: {:?}",
        first.runner, first.task
    );
    let epoch = format!("epoch: {:?}", first.epoch);
    assert!(
        r.trace[from..]
            .iter()
            .any(|l| l.contains(&report) && l.contains(&epoch)),
        "no stale report reached {leader}"
    );
    // Fenced: no G3 violation. Had the leader accepted it, G3 would say so.
    assert_eq!(r.count_of(Guarantee::G3), 0, "{r}");
    assert_g3_catches_the_stale_result(&r.history, &first, leader, stale_result, e2);
    (t, first, second, resumed)
}

#[test]
fn a_paused_worker_that_wakes_after_its_lease_expired_has_its_result_rejected() {
    // Frozen long enough for the task to be finished elsewhere first.
    let (t, _, _, resumed) = paused_past_its_lease(1_000, 8 * heartbeat_timeout_ms());
    assert!(t.decided_at.expect("decided") < resumed, "{t:?}");
}

#[test]
fn a_paused_worker_that_wakes_while_its_successor_runs_has_its_result_rejected() {
    // The task runs for ten timeouts; its runner wakes three timeouts
    // after the freeze, with the next epoch's run under way.
    let timeout_ms = heartbeat_timeout_ms();
    let (t, _, second, resumed) = paused_past_its_lease(10 * timeout_ms, 3 * timeout_ms);
    let (started, node, _) = t.executed[1];
    assert_eq!(node, second);
    assert!(started < resumed, "{t:?}");
    assert!(t.decided_at.expect("decided") > resumed, "{t:?}");
}
