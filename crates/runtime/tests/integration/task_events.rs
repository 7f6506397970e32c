//! `GET /v1/tasks/{id}/events` on real clusters of every mode: the history
//! tells a handler that failed from one that succeeded, names each
//! attempt's runner and epoch, and carries wall-clock times.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{Client, TaskEventsView};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::RunningNode;
use cohort_static::{StaticConfig, StaticNode};
use real::{echo, http_get, unix_ms_now};
use std::time::Duration;

/// A `sleep` task whose payload its handler refuses: every attempt fails.
fn failing(max_attempts: u32) -> SubmitBody {
    SubmitBody {
        kind: "sleep".into(),
        payload: Some("not a duration".into()),
        max_attempts: Some(max_attempts),
        not_before_ms: None,
        retry: None,
        schedule_to_start_ms: None,
        priority: None,
        ..echo("")
    }
}

/// Submits `body` at `client`, retrying while the cluster forms, and
/// waits for the task to be final.
async fn run_to_the_end(client: &Client, body: &SubmitBody) -> String {
    for _ in 0..200 {
        match client.submit(body).await {
            Ok(id) => {
                let t = client
                    .get(&id, false, Some(Duration::from_secs(20)))
                    .await
                    .unwrap();
                assert!(t.is_final(), "{t:?}");
                return id;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("submit refused: {e}"),
        }
    }
    panic!("no submit acknowledged within 10 s");
}

fn kinds(v: &TaskEventsView) -> Vec<&str> {
    v.events.iter().map(|e| e.event.as_str()).collect()
}

/// Every event's time lies between `before` and now, in order.
fn times_are_wall_clock(v: &TaskEventsView, before_ms: u64) {
    let after_ms = unix_ms_now();
    let mut last = 0;
    for e in &v.events {
        assert!(
            (before_ms..=after_ms).contains(&e.at_ms),
            "{} at {} not within [{before_ms}, {after_ms}]: {v:?}",
            e.event,
            e.at_ms
        );
        assert!(e.at_ms >= last, "events out of order: {v:?}");
        last = e.at_ms;
    }
}

/// The story every mode must tell for an echo task and a task whose two
/// attempts fail.
async fn histories_tell_what_happened(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());
    let before_ms = unix_ms_now();

    let ok = run_to_the_end(&client, &echo("hi")).await;
    let v = client.events(&ok, false).await.unwrap();
    assert_eq!(v.task.state, "succeeded");
    assert_eq!(kinds(&v), ["submitted", "assigned", "succeeded"], "{v:?}");
    let (assigned, done) = (&v.events[1], &v.events[2]);
    assert_eq!((assigned.node, assigned.epoch), (done.node, done.epoch));
    assert_eq!(done.node, v.task.node);
    assert_eq!(v.events_dropped, 0);
    times_are_wall_clock(&v, before_ms);

    let bad = run_to_the_end(&client, &failing(2)).await;
    let v = client.events(&bad, false).await.unwrap();
    assert_eq!(v.task.state, "failed");
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
    // Each attempt's outcome names its assignment; the retry runs under a
    // later epoch (static mode numbers epochs across tasks, the others per task).
    let epochs: Vec<Option<u64>> = v.events.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs[0], None);
    assert_eq!(epochs[1], epochs[2], "{v:?}");
    assert_eq!(epochs[3], epochs[4], "{v:?}");
    assert!(epochs[1].is_some() && epochs[3] > epochs[1], "{v:?}");
    for e in &v.events[2..] {
        if e.event != "assigned" {
            let error = e.error.as_deref().unwrap_or_default();
            assert!(error.contains("sleep payload"), "{v:?}");
        }
    }
    times_are_wall_clock(&v, before_ms);

    // The same answer as raw JSON, and typed refusals.
    let (status, body) = http_get(nodes[0].http_addr(), &format!("/v1/tasks/{ok}/events")).await;
    assert_eq!(status, 200, "{body}");
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw["events"][0]["event"], "submitted");
    let missing = "0123456789abcdef0123456789abcdef";
    let (status, body) =
        http_get(nodes[0].http_addr(), &format!("/v1/tasks/{missing}/events")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = http_get(nodes[0].http_addr(), "/v1/tasks/zz/events").await;
    assert_eq!(status, 400);
    let (status, _) = http_get(
        nodes[0].http_addr(),
        &format!("/v1/tasks/{ok}/events?bogus=1"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_histories_tell_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        real::cluster::<LeaderNode>(dir.path(), 3, "leader", ValidLeaderConfig::default(), 0).await;
    histories_tell_what_happened(&nodes).await;
    // A stale read of a follower tells the same story once it has applied it.
    let client = Client::new(&nodes[0].http_addr().to_string());
    let id = run_to_the_end(&client, &echo("again")).await;
    let linear = client.events(&id, false).await.unwrap();
    for n in &nodes {
        let local = Client::new(&n.http_addr().to_string());
        let mut seen = None;
        for _ in 0..100 {
            match local.events(&id, true).await {
                Ok(v) if v.task.is_final() => {
                    seen = Some(v);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let seen = seen.expect("every node applies the outcome within 2 s");
        assert_eq!(
            seen.events, linear.events,
            "replicated, the same everywhere"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_histories_tell_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::cluster::<LeaderlessNode>(
        dir.path(),
        3,
        "leaderless",
        LeaderlessConfig::default(),
        0,
    )
    .await;
    histories_tell_what_happened(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_histories_tell_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        real::cluster::<StaticNode>(dir.path(), 3, "static", StaticConfig::default(), 0).await;
    histories_tell_what_happened(&nodes).await;
}
