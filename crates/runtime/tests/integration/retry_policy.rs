//! Delayed tasks and retry policies on real clusters of every mode: no
//! task starts before its `not_before_ms`; a failed attempt backs off
//! until the `retry_at_ms` decided with it; a non-retryable error class
//! fails the task at once; a task no node starts within its
//! schedule-to-start timeout fails `not_started`; a malformed policy is
//! refused.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{CallError, Client, TaskEventsView};
use cohort_runtime::http::{RetryBody, SubmitBody};
use cohort_runtime::RunningNode;
use cohort_static::{StaticConfig, StaticNode};
use real::{echo, finished, submit, unix_ms_now};
use std::time::Duration;

/// A `sleep` task whose payload its handler refuses (`invalid_payload:
/// ...`): every attempt fails.
fn failing(max_attempts: u32, retry: RetryBody) -> SubmitBody {
    SubmitBody {
        kind: "sleep".into(),
        payload: Some("not a duration".into()),
        max_attempts: Some(max_attempts),
        retry: Some(retry),
        ..echo("")
    }
}

/// Submits `body`, retrying while the cluster forms; returns the id.
fn kinds(v: &TaskEventsView) -> Vec<&str> {
    v.events.iter().map(|e| e.event.as_str()).collect()
}

async fn policies_are_kept(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());

    // A delayed task: pending until its not_before, started after it.
    let not_before_ms = unix_ms_now() + 800;
    let delayed = SubmitBody {
        not_before_ms: Some(not_before_ms),
        ..echo("later")
    };
    let id = submit(&client, &delayed).await;
    let early = client.get(&id, false, None).await.unwrap();
    assert_eq!(early.state, "pending", "{early:?}");
    let v = finished(&client, &id).await;
    assert_eq!(kinds(&v), ["submitted", "assigned", "succeeded"], "{v:?}");
    assert!(v.events[1].at_ms >= not_before_ms, "started early: {v:?}");

    // Backoff: the failed attempt says when the task may run again, and
    // the next assignment waits for it.
    let backoff = RetryBody {
        backoff_initial_ms: Some(400),
        backoff_max_ms: Some(400),
        non_retryable: None,
    };
    let id = submit(&client, &failing(2, backoff)).await;
    let v = finished(&client, &id).await;
    assert_eq!(
        kinds(&v),
        [
            "submitted",
            "assigned",
            "attempt_failed",
            "assigned",
            "failed"
        ],
        "{v:?}"
    );
    let (failed, again) = (&v.events[2], &v.events[3]);
    let retry_at_ms = failed.retry_at_ms.expect("an attempt_failed says when");
    assert!(
        (failed.at_ms..failed.at_ms + 400).contains(&retry_at_ms),
        "full jitter below the 400 ms cap: {v:?}"
    );
    assert!(
        again.at_ms >= retry_at_ms,
        "retried before its backoff: {v:?}"
    );
    assert!(failed
        .error
        .as_deref()
        .unwrap()
        .starts_with("invalid_payload: "));

    // A non-retryable class fails the task at once, attempts left or not.
    let fatal = RetryBody {
        non_retryable: Some(vec!["invalid_payload".into()]),
        ..RetryBody::default()
    };
    let id = submit(&client, &failing(5, fatal)).await;
    let v = finished(&client, &id).await;
    assert_eq!(kinds(&v), ["submitted", "assigned", "failed"], "{v:?}");
    assert_eq!(v.task.attempts, Some(1), "{v:?}");

    // A malformed policy is refused, naming what is wrong; nothing is created.
    for (retry, says) in [
        (
            RetryBody {
                non_retryable: Some(vec!["Not A Class".into()]),
                ..RetryBody::default()
            },
            "non_retryable",
        ),
        (
            RetryBody {
                backoff_initial_ms: Some(10),
                backoff_max_ms: Some(5),
                ..RetryBody::default()
            },
            "backoff_initial_ms",
        ),
    ] {
        let body = SubmitBody {
            id: Some("feedface".into()),
            retry: Some(retry),
            ..echo("x")
        };
        match client.submit(&body).await {
            Err(CallError::Api {
                status, message, ..
            }) => {
                assert_eq!(status, 400, "{message}");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("a bad policy was not refused: {other:?}"),
        }
    }
    let missing = client.get("feedface", false, None).await;
    assert!(
        matches!(missing, Err(CallError::Api { status: 404, .. })),
        "{missing:?}"
    );
}

/// With every node drained (none takes work), a task with a
/// schedule-to-start timeout fails `not_started` once it passes, and one
/// without waits on.
async fn an_unstarted_task_fails_at_its_deadline(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());
    for n in nodes {
        let c = Client::new(&n.http_addr().to_string());
        c.drain(Some(Duration::from_secs(60))).await.unwrap();
    }
    let submitted_ms = unix_ms_now();
    let bounded = SubmitBody {
        schedule_to_start_ms: Some(300),
        ..echo("never started")
    };
    let id = submit(&client, &bounded).await;
    let waits = submit(&client, &echo("waits")).await;
    let v = finished(&client, &id).await;
    assert_eq!(kinds(&v), ["submitted", "not_started"], "{v:?}");
    assert_eq!(v.task.state, "failed");
    assert_eq!(
        v.task.error.as_deref(),
        Some("schedule_to_start: not started within 300 ms")
    );
    assert!(
        v.events[1].at_ms >= submitted_ms + 300,
        "expired early: {v:?}"
    );
    let t = client.get(&waits, false, None).await.unwrap();
    assert_eq!(t.state, "pending", "no timeout: it waits for a worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_keeps_delays_backoffs_and_non_retryable_errors() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        real::cluster::<LeaderNode>(dir.path(), 3, "leader", ValidLeaderConfig::default(), 0).await;
    policies_are_kept(&nodes).await;
    an_unstarted_task_fails_at_its_deadline(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_keeps_delays_backoffs_and_non_retryable_errors() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::cluster::<LeaderlessNode>(
        dir.path(),
        3,
        "leaderless",
        LeaderlessConfig::default(),
        0,
    )
    .await;
    policies_are_kept(&nodes).await;
    an_unstarted_task_fails_at_its_deadline(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_keeps_delays_backoffs_and_non_retryable_errors() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        real::cluster::<StaticNode>(dir.path(), 3, "static", StaticConfig::default(), 0).await;
    policies_are_kept(&nodes).await;
}
