//! Scripted checks of the baseline coordinator, driven by hand.

use cohort_core::{
    Action, ClientError, ClientRequest, ClientResponse, Consistency, Epoch, Limits, Node, NodeId,
    Note, Peers, RequestId, Stored, Task, TaskId, TaskOutcome, TaskState, Time, TimerToken,
};
use cohort_static::{StaticConfig, StaticMessage, StaticNode};
use rand::SeedableRng;

fn boot(id: u64, capacity: u32) -> StaticNode {
    let peers = Peers::new(
        NodeId(id),
        [NodeId(1), NodeId(2), NodeId(3)],
        capacity,
        Limits::default(),
    )
    .unwrap();
    StaticNode::boot(
        &peers,
        &StaticConfig::default(),
        &Stored::new(),
        cohort_core::NodeRng::seed_from_u64(0),
        Time::ZERO,
    )
    .expect("the baseline boots from an empty store")
}

fn task() -> Task {
    Task {
        kind: "sleep".into(),
        payload: vec![],
        timeout_ms: 10_000,
        max_attempts: 2,
        not_before: cohort_core::Time::ZERO,
        retry: cohort_core::RetryPolicy::default(),
        schedule_to_start_ms: 0,
        priority: 0,
        heartbeat_timeout_ms: 0,
        labels: Vec::new(),
        limit: None,
        lease_grace_ms: 0,
        retry_of: None,
    }
}

fn drain(n: &mut StaticNode) -> Vec<Action<StaticMessage>> {
    n.actions().collect()
}

fn submit(n: &mut StaticNode, id: u128, req: u64) -> Vec<Action<StaticMessage>> {
    n.handle_client(
        Time::ZERO,
        RequestId(req),
        ClientRequest::Submit {
            id: TaskId(id),
            task: task(),
        },
    );
    drain(n)
}

fn reply_of(actions: &[Action<StaticMessage>]) -> Result<ClientResponse, ClientError> {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Reply { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .expect("a reply")
}

fn assigned(actions: &[Action<StaticMessage>]) -> Vec<(TaskId, Epoch, NodeId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Note(Note::Assigned {
                task, epoch, node, ..
            }) => Some((*task, *epoch, *node)),
            _ => None,
        })
        .collect()
}

#[test]
fn workers_redirect_clients_to_the_coordinator() {
    let mut w = boot(2, 1);
    drain(&mut w);
    let out = submit(&mut w, 1, 1);
    assert_eq!(
        reply_of(&out),
        Err(ClientError::NotLeader {
            leader: Some(NodeId(1))
        })
    );
}

#[test]
fn assignment_goes_to_the_least_loaded_worker_ties_by_id() {
    let mut c = boot(1, 2);
    drain(&mut c);
    // Workers 2 and 3 announce capacity 4; the coordinator has capacity 2.
    for w in [2, 3] {
        c.handle_message(
            Time::ZERO,
            NodeId(w),
            StaticMessage::Heartbeat {
                held: vec![],
                capacity_tasks: 4,
                labels: vec![],
            },
        );
        drain(&mut c);
    }
    let mut nodes = Vec::new();
    for i in 0..6 {
        nodes.extend(
            assigned(&submit(&mut c, i, i as u64))
                .into_iter()
                .map(|(_, _, n)| n),
        );
    }
    // Loads start equal at 0: n1 (lowest id) first, then n2, n3 (0 < 1/2), then
    // the ratio decides: n2 (1/4), n3 (1/4), n2 (2/4) vs n1 (1/2) -> n1 by id.
    assert_eq!(
        nodes,
        vec![
            NodeId(1),
            NodeId(2),
            NodeId(3),
            NodeId(2),
            NodeId(3),
            NodeId(1)
        ]
    );
}

#[test]
fn resubmit_is_idempotent_and_a_different_body_conflicts() {
    let mut c = boot(1, 1);
    drain(&mut c);
    assert_eq!(
        reply_of(&submit(&mut c, 7, 1)),
        Ok(ClientResponse::Accepted { id: TaskId(7) })
    );
    assert_eq!(
        reply_of(&submit(&mut c, 7, 2)),
        Ok(ClientResponse::Accepted { id: TaskId(7) })
    );
    let other = Task {
        payload: vec![1],
        ..task()
    };
    c.handle_client(
        Time::ZERO,
        RequestId(3),
        ClientRequest::Submit {
            id: TaskId(7),
            task: other,
        },
    );
    assert_eq!(
        reply_of(&drain(&mut c)),
        Err(ClientError::IdConflict { id: TaskId(7) })
    );
}

#[test]
fn a_dead_workers_result_is_rejected_after_reassignment() {
    let mut c = boot(1, 1);
    drain(&mut c);
    c.handle_message(
        Time::ZERO,
        NodeId(2),
        StaticMessage::Heartbeat {
            held: vec![],
            capacity_tasks: 1,
            labels: vec![],
        },
    );
    drain(&mut c);
    submit(&mut c, 1, 1); // runs on n1 (lowest id)
    let first = assigned(&submit(&mut c, 2, 2));
    assert_eq!(first, vec![(TaskId(2), Epoch(2), NodeId(2))]);
    // n2 and n3 fall silent; after alpha * heartbeat the coordinator reassigns.
    let late = Time::from_millis(10_000);
    c.handle_timer(late, TimerToken(1));
    let out = drain(&mut c);
    assert!(out.contains(&Action::Note(Note::Superseded {
        task: TaskId(2),
        epoch: Epoch(2),
        reason: cohort_core::SupersedeReason::RunnerDeclaredDead
    })));
    // n1 is busy with task 1, so task 2 waits; finish task 1 to make room.
    c.handle_task_finished(late, TaskId(1), Epoch(1), TaskOutcome::Success(vec![1]));
    let reassigned = assigned(&drain(&mut c));
    assert_eq!(reassigned, vec![(TaskId(2), Epoch(3), NodeId(1))]);
    // The old runner comes back with its result for epoch 2: rejected, but acknowledged.
    c.handle_message(
        late,
        NodeId(2),
        StaticMessage::Result {
            task: TaskId(2),
            epoch: Epoch(2),
            outcome: TaskOutcome::Success(vec![9]),
        },
    );
    let out = drain(&mut c);
    assert_eq!(
        out,
        vec![Action::Send {
            to: NodeId(2),
            msg: StaticMessage::ResultAck {
                task: TaskId(2),
                epoch: Epoch(2)
            }
        }]
    );
    c.handle_client(
        late,
        RequestId(9),
        ClientRequest::Get {
            id: TaskId(2),
            consistency: Consistency::Linearizable,
        },
    );
    assert_eq!(
        reply_of(&drain(&mut c)),
        Ok(ClientResponse::State {
            id: TaskId(2),
            state: TaskState::Running {
                node: NodeId(1),
                epoch: Epoch(3)
            }
        })
    );
}

/// A hung handler on a live runner (here the coordinator's own, never
/// declared dead): its grace after its timeout the coordinator ends
/// the lease, runs the task again under the next epoch and rejects the
/// late result; the ended lease counts as a failed attempt.
#[test]
fn a_hung_handler_loses_its_lease_after_the_timeout_and_its_grace() {
    let mut c = boot(1, 1);
    drain(&mut c);
    assert_eq!(
        assigned(&submit(&mut c, 1, 1)),
        vec![(TaskId(1), Epoch(1), NodeId(1))]
    );
    let ends = task().lease_ends(Time::ZERO);
    assert_eq!(
        ends,
        Time::from_millis(10_000 + cohort_core::task::LEASE_GRACE_MS)
    );
    c.handle_timer(ends, TimerToken(1));
    let out = drain(&mut c);
    assert!(assigned(&out).is_empty(), "not past it yet: {out:?}");
    let late = Time::from_millis(ends.as_millis() + 1);
    c.handle_timer(late, TimerToken(1));
    let out = drain(&mut c);
    assert!(out.contains(&Action::Note(Note::Superseded {
        task: TaskId(1),
        epoch: Epoch(1),
        reason: cohort_core::SupersedeReason::LeaseExpired
    })));
    assert_eq!(assigned(&out), vec![(TaskId(1), Epoch(2), NodeId(1))]);
    // The hung handler returns at last: its epoch is over.
    c.handle_task_finished(late, TaskId(1), Epoch(1), TaskOutcome::Success(vec![1]));
    drain(&mut c);
    c.handle_client(
        late,
        RequestId(9),
        ClientRequest::Get {
            id: TaskId(1),
            consistency: Consistency::Linearizable,
        },
    );
    assert_eq!(
        reply_of(&drain(&mut c)),
        Ok(ClientResponse::State {
            id: TaskId(1),
            state: TaskState::Running {
                node: NodeId(1),
                epoch: Epoch(2)
            }
        })
    );
    // The ended lease was a failed attempt: the second hangs too, and
    // with `max_attempts` 2 the task fails instead of running again.
    let last = Time::from_millis(task().lease_ends(late).as_millis() + 1);
    c.handle_timer(last, TimerToken(1));
    let out = drain(&mut c);
    assert!(assigned(&out).is_empty(), "{out:?}");
    let failed = TaskState::Failed {
        error: task().lease_expired_error(),
        attempts: 2,
    };
    assert!(
        out.contains(&Action::Note(Note::Decided {
            task: TaskId(1),
            state: failed
        })),
        "{out:?}"
    );
}

/// A heartbeat with progress, recorded, renews the lease.
#[test]
fn a_recorded_heartbeat_renews_the_lease() {
    let mut c = boot(1, 1);
    drain(&mut c);
    submit(&mut c, 1, 1);
    let beat = Time::from_millis(5_000);
    c.handle_heartbeat(beat, TaskId(1), Epoch(1), Some("half".into()));
    drain(&mut c);
    let superseded = |out: &[Action<StaticMessage>]| {
        out.iter()
            .any(|a| matches!(a, Action::Note(Note::Superseded { .. })))
    };
    let first = task().lease_ends(Time::ZERO);
    c.handle_timer(Time::from_millis(first.as_millis() + 1), TimerToken(1));
    assert!(!superseded(&drain(&mut c)), "renewed at 5 s");
    let renewed = task().lease_ends(beat);
    c.handle_timer(Time::from_millis(renewed.as_millis() + 1), TimerToken(1));
    assert!(superseded(&drain(&mut c)));
}

#[test]
fn failures_are_retried_up_to_max_attempts_then_failed() {
    let mut c = boot(1, 1);
    drain(&mut c);
    submit(&mut c, 5, 1);
    c.handle_task_finished(
        Time::ZERO,
        TaskId(5),
        Epoch(1),
        TaskOutcome::Failure("boom".into()),
    );
    let retry = assigned(&drain(&mut c));
    assert_eq!(retry, vec![(TaskId(5), Epoch(2), NodeId(1))]);
    c.handle_task_finished(
        Time::ZERO,
        TaskId(5),
        Epoch(2),
        TaskOutcome::Failure("boom again".into()),
    );
    let out = drain(&mut c);
    assert!(out.contains(&Action::Note(Note::Decided {
        task: TaskId(5),
        state: TaskState::Failed {
            error: "boom again".into(),
            attempts: 2
        }
    })));
}

#[test]
fn a_restarted_coordinator_has_forgotten_everything() {
    // This is the baseline's defining flaw: nothing is persisted.
    let mut c = boot(1, 1);
    drain(&mut c);
    submit(&mut c, 1, 1);
    let mut c = boot(1, 1);
    drain(&mut c);
    c.handle_client(
        Time::ZERO,
        RequestId(2),
        ClientRequest::Get {
            id: TaskId(1),
            consistency: Consistency::Linearizable,
        },
    );
    assert_eq!(
        reply_of(&drain(&mut c)),
        Err(ClientError::NotFound { id: TaskId(1) })
    );
}

#[test]
fn a_task_no_worker_has_room_for_fails_at_its_schedule_to_start_deadline() {
    let mut c = boot(1, 1);
    drain(&mut c);
    // Every worker (capacity 1 each) busy.
    for i in 0..3 {
        assert_eq!(assigned(&submit(&mut c, i, i as u64)).len(), 1);
    }
    let bounded = Task {
        schedule_to_start_ms: 100,
        ..task()
    };
    c.handle_client(
        Time::ZERO,
        RequestId(10),
        ClientRequest::Submit {
            id: TaskId(10),
            task: bounded,
        },
    );
    assert!(assigned(&drain(&mut c)).is_empty(), "no room");
    let decided = |out: &[Action<StaticMessage>]| {
        out.iter()
            .filter_map(|a| match a {
                Action::Note(Note::Decided { task, state }) => Some((*task, state.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    c.handle_timer(Time::from_millis(100), TimerToken(1));
    assert!(
        decided(&drain(&mut c)).is_empty(),
        "at the deadline: not yet"
    );
    c.handle_timer(Time::from_millis(101), TimerToken(1));
    let error = "schedule_to_start: not started within 100 ms".to_string();
    assert_eq!(
        decided(&drain(&mut c)),
        vec![(TaskId(10), TaskState::Failed { error, attempts: 0 })]
    );
    c.handle_client(
        Time::from_millis(102),
        RequestId(11),
        ClientRequest::Events {
            id: TaskId(10),
            consistency: Consistency::Linearizable,
        },
    );
    match reply_of(&drain(&mut c)) {
        Ok(ClientResponse::Events { history, .. }) => {
            let names: Vec<&str> = history.events.iter().map(|e| e.what.name()).collect();
            assert_eq!(names, ["submitted", "not_started"]);
        }
        other => panic!("{other:?}"),
    }
}

/// Routing: the coordinator assigns a labelled task only to a worker whose
/// heartbeat carries its labels, least loaded among those, and passes over
/// labelled tasks no worker with room can run (here two thousand of them)
/// instead of stopping the queue at them.
#[test]
fn labelled_tasks_go_only_to_workers_carrying_their_labels_and_do_not_block_the_queue() {
    let mut c = boot(1, 1);
    drain(&mut c);
    for (w, labels) in [(2, vec!["gpu".to_string()]), (3, vec![])] {
        c.handle_message(
            Time::ZERO,
            NodeId(w),
            StaticMessage::Heartbeat {
                held: vec![],
                capacity_tasks: 1,
                labels,
            },
        );
        drain(&mut c);
    }
    let submit_labelled = |c: &mut StaticNode, id: u128, labels: &[&str]| {
        let mut t = task();
        t.labels = labels.iter().map(|l| l.to_string()).collect();
        c.handle_client(
            Time::ZERO,
            RequestId(id as u64),
            ClientRequest::Submit {
                id: TaskId(id),
                task: t,
            },
        );
        assigned(&drain(c))
    };
    // The gpu task goes to n2, the only carrier, though n1 is first by id.
    assert_eq!(
        submit_labelled(&mut c, 1, &["gpu"]),
        vec![(TaskId(1), Epoch(1), NodeId(2))]
    );
    // n2 is full: a second gpu task waits, and the unlabelled tasks behind
    // it still go to n1 and n3.
    assert_eq!(submit_labelled(&mut c, 2, &["gpu"]), vec![]);
    // A backlog for a label no worker carries is skipped whole.
    for id in 10_000..12_000 {
        assert_eq!(submit_labelled(&mut c, id, &["tpu"]), vec![]);
    }
    assert_eq!(
        submit_labelled(&mut c, 3, &[]),
        vec![(TaskId(3), Epoch(2), NodeId(1))]
    );
    assert_eq!(
        submit_labelled(&mut c, 4, &[]),
        vec![(TaskId(4), Epoch(3), NodeId(3))]
    );
    // n2 finishes: the waiting gpu task goes to it.
    c.handle_message(
        Time::ZERO,
        NodeId(2),
        StaticMessage::Result {
            task: TaskId(1),
            epoch: Epoch(1),
            outcome: TaskOutcome::Success(vec![]),
        },
    );
    assert!(assigned(&drain(&mut c)).contains(&(TaskId(2), Epoch(4), NodeId(2))));
}

/// Workers 2 and 3 say they are alive, with room for 10 tasks each.
fn heartbeats(c: &mut StaticNode, now: Time) -> Vec<Action<StaticMessage>> {
    let mut out = Vec::new();
    for w in [2, 3] {
        c.handle_message(
            now,
            NodeId(w),
            StaticMessage::Heartbeat {
                held: vec![],
                capacity_tasks: 10,
                labels: vec![],
            },
        );
        out.extend(drain(c));
    }
    out
}

fn submit_limited(
    c: &mut StaticNode,
    now: Time,
    id: u128,
    limit: Option<cohort_core::TaskLimit>,
) -> Vec<(TaskId, Epoch, NodeId)> {
    let mut t = task();
    t.limit = limit;
    c.handle_client(
        now,
        RequestId(id as u64),
        ClientRequest::Submit {
            id: TaskId(id),
            task: t,
        },
    );
    assigned(&drain(c))
}

#[test]
fn a_concurrency_limit_holds_back_its_key_only_and_frees_on_an_outcome() {
    let mut c = boot(1, 10);
    drain(&mut c);
    heartbeats(&mut c, Time::ZERO);
    let limit = cohort_core::TaskLimit {
        key: "tenant-7".into(),
        concurrency_max: 2,
        rate_max: 0,
        rate_window_ms: 0,
    };
    let mut started = Vec::new();
    for id in 1..=5 {
        started.extend(submit_limited(&mut c, Time::ZERO, id, Some(limit.clone())));
    }
    assert_eq!(started.len(), 2, "two of the key run at once: {started:?}");
    // Other keys and unlimited tasks are not held up by the backlog.
    assert_eq!(submit_limited(&mut c, Time::ZERO, 100, None).len(), 1);
    let other = cohort_core::TaskLimit {
        key: "tenant-8".into(),
        ..limit.clone()
    };
    assert_eq!(
        submit_limited(&mut c, Time::ZERO, 101, Some(other)).len(),
        1
    );
    // An outcome makes room for exactly one more.
    let (task, epoch, node) = started[0];
    c.handle_message(
        Time::ZERO,
        node,
        StaticMessage::Result {
            task,
            epoch,
            outcome: TaskOutcome::Success(vec![]),
        },
    );
    let next = assigned(&drain(&mut c));
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].0, TaskId(3), "the key's queue keeps its order");
    // A cancel of a running one makes room too.
    let (task, _, _) = started[1];
    c.handle_client(
        Time::ZERO,
        RequestId(900),
        ClientRequest::Cancel { id: task },
    );
    let after_cancel = assigned(&drain(&mut c));
    assert_eq!(after_cancel.len(), 1, "{after_cancel:?}");
    assert_eq!(after_cancel[0].0, TaskId(4));
}

#[test]
fn a_rate_limit_spreads_the_starts_of_its_key_over_the_window() {
    let mut c = boot(1, 10);
    drain(&mut c);
    heartbeats(&mut c, Time::ZERO);
    let limit = cohort_core::TaskLimit {
        key: "api.example.com".into(),
        concurrency_max: 0,
        rate_max: 2,
        rate_window_ms: 1_000,
    };
    let mut started = 0;
    for id in 1..=5 {
        started += submit_limited(&mut c, Time::ZERO, id, Some(limit.clone())).len();
    }
    assert_eq!(started, 2, "two starts in the first second");
    // Finishing does not free a rate limit: the window does.
    let tick = |c: &mut StaticNode, at_ms: u64| {
        let now = Time::from_millis(at_ms);
        let mut out = heartbeats(c, now);
        c.handle_timer(now, TimerToken(1));
        out.extend(drain(c));
        assigned(&out).len()
    };
    assert_eq!(tick(&mut c, 500), 0);
    assert_eq!(tick(&mut c, 999), 0);
    assert_eq!(
        tick(&mut c, 1_000),
        2,
        "the window has moved past both starts"
    );
    assert_eq!(tick(&mut c, 1_500), 0);
    assert_eq!(tick(&mut c, 2_000), 1, "the last one");
}

/// Schedule definitions and tombstones are kept for ever, so the count
/// bound (`tasks_retained_max`) drops only other finished records, and the
/// coordinator takes at most `schedules_kept_max` of them: the next new
/// schedule is refused `overloaded`, naming the limit; a tombstone is
/// taken up to twice the bound.
#[test]
fn schedules_outlive_tasks_retained_max_and_at_most_schedules_kept_max_are_created() {
    use cohort_core::schedule::{IdTag, Overlap, Schedule, ScheduleName, Spec};
    let limits = Limits {
        tasks_retained_max: 2,
        ..Limits::default()
    };
    let peers = Peers::new(NodeId(1), [NodeId(1)], 1, limits).unwrap();
    let config = StaticConfig {
        schedules_kept_max: 2,
        ..StaticConfig::default()
    };
    let mut c = StaticNode::boot(
        &peers,
        &config,
        &Stored::new(),
        cohort_core::NodeRng::seed_from_u64(0),
        Time::ZERO,
    )
    .expect("boots");
    drain(&mut c);
    let mut req = 0;
    let mut ask = |c: &mut StaticNode, id: TaskId, task: Task| {
        req += 1;
        c.handle_client(
            Time::ZERO,
            RequestId(req),
            ClientRequest::Submit { id, task },
        );
        let out = drain(c);
        for (t, epoch, _) in assigned(&out) {
            c.handle_task_finished(Time::ZERO, t, epoch, TaskOutcome::Success(vec![]));
            drain(c);
        }
        reply_of(&out)
    };
    let spec = |name: &str| {
        let s = Schedule {
            name: ScheduleName::new(name).expect("a valid name"),
            spec: Spec::Every {
                every_ms: 60_000,
                start_ms: 0,
            },
            overlap: Overlap::Skip,
            catch_up_window_ms: 60_000,
            task: task(),
            link_attempts: 3,
        };
        (s.name.task_id(IdTag::Spec), s.spec_task())
    };
    let (first, t) = spec("first");
    assert!(ask(&mut c, first, t).is_ok());
    let (second, t) = spec("second");
    assert!(ask(&mut c, second, t).is_ok());
    let (third, t) = spec("third");
    assert_eq!(
        ask(&mut c, third, t),
        Err(ClientError::Overloaded {
            what: "schedules_kept_max".into(),
            limit: 2
        })
    );
    for i in 0..5 {
        assert!(ask(&mut c, TaskId(100 + i), task()).is_ok());
    }
    let deleted = ScheduleName::new("first").unwrap().task_id(IdTag::Deleted);
    assert!(ask(&mut c, deleted, Schedule::tombstone_task()).is_ok());
    let mut read = |c: &mut StaticNode, id: TaskId| {
        req += 1;
        c.handle_client(
            Time::ZERO,
            RequestId(req),
            ClientRequest::Get {
                id,
                consistency: Consistency::Linearizable,
            },
        );
        reply_of(&drain(c))
    };
    for kept in [first, second, deleted] {
        assert!(
            matches!(read(&mut c, kept), Ok(ClientResponse::State { state, .. }) if state.is_final()),
            "{kept:?}"
        );
    }
    assert_eq!(
        read(&mut c, TaskId(100)),
        Err(ClientError::NotFound { id: TaskId(100) })
    );
    assert!(read(&mut c, TaskId(104)).is_ok());
    assert_eq!(
        read(&mut c, third),
        Err(ClientError::NotFound { id: third })
    );
}
