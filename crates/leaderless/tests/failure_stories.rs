//! The failure stories job queues are known for (Celery, Sidekiq, SQS),
//! told to the leaderless mode in the simulator (`cohort-sim`), one task
//! each, on a fixed seed with scripted faults and no other fault.
//!
//! A running task's lease is its claim `(task, epoch)`, chosen by Paxos
//! among the task's replicas: it holds until SWIM declares the runner down
//! (a probe period, the probe's round trip, then the suspicion timeout);
//! then the next live replica re-claims it under the next epoch. A result
//! is committed only from the epoch running (G3).
//!
//! Each story runs twice: once unstruck, to learn who runs the task and
//! when (`FirstRun`), then with the fault scripted against that runner. The
//! two runs are the same up to the fault (see `cohort_sim::scenario`).
//!
//! The negative controls of the fencing checker: `checkers::g3`'s
//! `a_result_from_a_stale_epoch_is_a_violation` (a hand-built history),
//! `accepting_a_result_from_a_superseded_epoch_is_caught_as_g3` in
//! `crates/sim/tests/simulate.rs` (a node that does not fence, in real
//! runs), and the paused-worker story below, which doctors its own history.

use cohort_core::{Epoch, NodeId, SupersedeReason, TaskOutcome, TaskState, Time};
use cohort_leaderless::{LeaderlessConfig, LeaderlessInvariants, LeaderlessNode};
use cohort_sim::scenario::{assert_g3_catches_the_stale_result, one_task, FirstRun};
use cohort_sim::{run, Fault, Guarantee, Report, ScriptedFault, SimConfig, TaskTimeline};
use std::time::Duration;

const NODES: usize = 5;
const SEED: u64 = 21;
/// Long enough for every story's fault, its recovery and the stale
/// runner's return.
const SAFETY_MS: u64 = 40_000;

/// How long SWIM takes to declare a silent runner down, at most: the
/// probe period, the probe's round trip, then the suspicion timeout.
fn heartbeat_timeout_ms() -> u64 {
    let c = LeaderlessConfig::default();
    c.swim_probe_period_ms + c.swim_probe_rtt_ms + c.swim_suspect_to_down_ms
}

/// One run, the mode's invariants checked after every event.
fn simulate(c: &SimConfig) -> Report {
    let mut inv = LeaderlessInvariants::new(c.safety_ms);
    let mut hook = |now: Time, nodes: &[Option<&LeaderlessNode>]| inv.check(now, nodes);
    run::<LeaderlessNode>(c, &LeaderlessConfig::default(), &mut hook)
}

/// The unstruck run of a task of `duration_ms`, and its first run.
fn unstruck(duration_ms: u64) -> (SimConfig, Report, FirstRun) {
    let c = one_task(SEED, NODES, duration_ms, SAFETY_MS);
    let r = simulate(&c);
    let first = FirstRun::of(&r.history).unwrap_or_else(|| panic!("{r}"));
    (c, r, first)
}

/// Runs `c` with `faults` scripted; checks that the run is the unstruck
/// one up to them (the same first run) and broke no guarantee.
fn struck(c: &SimConfig, first: &FirstRun, faults: Vec<ScriptedFault>) -> (Report, TaskTimeline) {
    let mut c = c.clone();
    c.script = faults;
    let r = simulate(&c);
    assert_eq!(FirstRun::of(&r.history).as_ref(), Some(first), "{r}");
    assert!(r.passed(), "seed {}: {r}", c.seed);
    assert_eq!(r.faults_injected, c.script.len() as u64, "{r}");
    let timeline = r.history.timeline(first.task);
    (r, timeline)
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
    let (_, r, first) = unstruck(duration_ms);
    assert!(r.passed(), "{r}");
    let t = r.history.timeline(first.task);
    // SWIM kept the runner live: one claim, never superseded.
    assert_eq!(t.assigned, vec![(first.epoch, first.runner)], "{t:?}");
    assert!(t.superseded.is_empty(), "{t:?}");
    assert_eq!(t.executed.len(), 1, "{t:?}");
    assert_eq!(r.executions, 1);
    assert_eq!(t.decided.len(), 1, "{t:?}");
    assert_eq!(
        succeeded_by(&t.decided[0]),
        Some((first.runner, first.epoch))
    );
    // The handler did run for ten timeouts.
    let (done_at, node, epoch, _) = &t.completed[0];
    assert_eq!((*node, *epoch), (first.runner, first.epoch));
    assert!(done_at.saturating_since(first.at).as_millis() as u64 >= duration_ms);
    assert_eq!(r.tasks_final, 1);
}

#[test]
fn a_worker_killed_mid_task_is_retried_once_with_the_next_epoch() {
    let duration_ms = 1_000;
    let (c, _, first) = unstruck(duration_ms);
    // Killed halfway, down long past the failure detection.
    let down_ms = 6 * heartbeat_timeout_ms();
    let (r, t) = struck(&c, &first, vec![first.crash_runner(500, down_ms)]);
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
    // The other replicas recovered it, not the runner's return.
    let back = first.at_ms(500) + down_ms;
    assert!(t.decided_at.expect("decided") < Time::from_millis(back));
}

/// What the paused-worker stories share, checked: the runner, frozen 50 ms
/// before its handler returns, for `pause_ms`, is declared down; another
/// replica re-claims the task under the next epoch and finishes it; at the
/// resume the frozen handler's result is handed to its worker, which
/// proposes it to the task's replicas, which receive the proposal and
/// refuse it: the outcome decided is the next epoch's, and G3 holds (and
/// would not, had a replica accepted it). Returns the struck run's
/// timeline, the first run, the second runner and when the frozen worker
/// resumed.
fn paused_past_its_lease(
    duration_ms: u64,
    pause_ms: u64,
) -> (TaskTimeline, FirstRun, NodeId, Time) {
    let (c, _, first) = unstruck(duration_ms);
    let (r, t) = struck(
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
    // ... which proposed it to a replica that received the proposal: as
    // the runner of its epoch's claim, straight in phase 2 under the
    // runner's ballot (crates/leaderless/src/paxos/mod.rs).
    let from = r
        .trace
        .iter()
        .position(|l| l.ends_with(&format!("resume {}", first.runner)))
        .expect("the resume is in the trace");
    let proposal = format!(" <- {} Accept {{ id: {:?}", first.runner, first.task);
    let runners_ballot = format!("ballot: Ballot {{ round: 0, node: {:?},", first.runner);
    assert!(
        r.trace[from..]
            .iter()
            .any(|l| l.contains(&proposal) && l.contains(&runners_ballot)),
        "no stale proposal reached a replica"
    );
    // Fenced: no G3 violation. Had a replica accepted it, G3 would say so.
    assert_eq!(r.count_of(Guarantee::G3), 0, "{r}");
    assert_g3_catches_the_stale_result(&r.history, &first, second, stale_result, e2);
    (t, first, second, resumed)
}

#[test]
fn a_paused_worker_that_wakes_after_its_lease_expired_has_its_result_rejected() {
    // Frozen long enough for the task to be finished elsewhere first.
    let (t, _, _, resumed) = paused_past_its_lease(1_000, 4 * heartbeat_timeout_ms());
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

/// Found while bounding retention by count: the runner is cut off just
/// before its handler returns, for long enough that the other replicas
/// re-claim the task, finish it and purge its record (a 1 s retention).
/// At the heal the runner still holds the task running under its own
/// epoch. Before tombstones the purging replicas took its copy back as a
/// task they had never held: it ran a third time and a second outcome was
/// chosen (G2, and two values in one instance). Now they refuse it and
/// the runner drops its copy.
#[test]
fn a_runner_cut_off_until_its_finished_task_was_purged_does_not_bring_it_back() {
    let duration_ms = 1_000;
    let (mut c, _, first) = unstruck(duration_ms);
    c.limits.succeeded_retained_ms = 1_000;
    let cut_ms = 4 * heartbeat_timeout_ms();
    c.script = vec![ScriptedFault {
        at_ms: first.at_ms(duration_ms - 50),
        fault: Fault::Isolate {
            node: first.runner,
            for_ms: cut_ms,
        },
    }];
    let r = simulate(&c);
    assert!(r.passed(), "seed {}: {r}", c.seed);
    let t = r.history.timeline(first.task);
    let healed = Time::from_millis(first.at_ms(duration_ms - 50) + cut_ms);
    assert!(
        t.decided_at.expect("decided") + Duration::from_millis(1_000) < healed,
        "purged before the heal: {t:?}"
    );
    assert_eq!(t.decided.len(), 1, "{t:?}");
    assert_eq!(t.assigned.len(), 2, "re-claimed once, never again: {t:?}");
    assert_eq!(r.executions, 2, "{r}");
    // The runner was told, and dropped its copy.
    let told = format!("{} <- ", first.runner);
    assert!(
        r.trace
            .iter()
            .any(|l| l.contains(&told) && l.contains("Purged {")),
        "no replica refused the runner's copy"
    );
}
