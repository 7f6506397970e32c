//! Handler heartbeats on real clusters of every mode: a long task that
//! beats outlives its heartbeat timeout many times over (one attempt, no
//! duplicate) and its progress is recorded; a handler that stops beating is
//! stopped by its runner and the attempt fails with class
//! `heartbeat_timeout`, retried under the next epoch; a cancel reaches a
//! running handler in its heartbeat reply (cooperative cancellation).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::{HeartbeatReply, NodeId};
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{Client, TaskEventsView};
use cohort_runtime::http::{RetryBody, SubmitBody};
use cohort_runtime::{Handler, HandlerFuture, HandlerInput, NodeOptions, Registry, RunningNode};
use cohort_static::{StaticConfig, StaticNode};
use real::{echo, finished, submit};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Beats with progress every 50 ms for the payload's milliseconds.
struct Beater;

impl Handler for Beater {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        Box::pin(async move {
            let ms: u64 = String::from_utf8_lossy(&input.payload).parse().unwrap();
            let start = tokio::time::Instant::now();
            while start.elapsed() < Duration::from_millis(ms) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let done = start.elapsed().as_millis();
                input.heartbeat.progress(format!("{done} of {ms} ms")).await;
            }
            Ok(b"done".to_vec())
        })
    }
}

/// Never beats: hangs for 30 s.
struct Silent;

impl Handler for Silent {
    fn run(&self, _input: HandlerInput) -> HandlerFuture {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(b"too late".to_vec())
        })
    }
}

/// Beats until told to stop, and says what it was told.
struct Cooperative(Arc<Mutex<Vec<HeartbeatReply>>>);

impl Handler for Cooperative {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        let told = self.0.clone();
        Box::pin(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let said = input.heartbeat.beat().await;
                if said != HeartbeatReply::Continue {
                    told.lock().unwrap().push(said);
                    return Err(format!("cancelled: told {}", said.name()));
                }
            }
        })
    }
}

fn options(told: Arc<Mutex<Vec<HeartbeatReply>>>) -> impl Fn(NodeId) -> NodeOptions {
    move |id| {
        let mut registry = Registry::with_builtins(false);
        registry.register("beater", Beater);
        registry.register("silent", Silent);
        registry.register("cooperative", Cooperative(told.clone()));
        NodeOptions {
            registry,
            rng_seed: Some(id.0),
            ..NodeOptions::default()
        }
    }
}

fn kinds(v: &TaskEventsView) -> Vec<&str> {
    v.events.iter().map(|e| e.event.as_str()).collect()
}

async fn heartbeats_keep_report_and_cancel(
    nodes: &[RunningNode],
    told: &Mutex<Vec<HeartbeatReply>>,
) {
    let client = Client::new(&nodes[0].http_addr().to_string());

    // A long task that beats outlives its 300 ms heartbeat timeout four
    // times over: one assignment, one success, its progress recorded.
    let long = SubmitBody {
        kind: "beater".into(),
        payload: Some("1200".into()),
        heartbeat_timeout_ms: Some(300),
        ..echo("")
    };
    let id = submit(&client, &long).await;
    let v = finished(&client, &id).await;
    assert_eq!(v.task.state, "succeeded", "{v:?}");
    let k = kinds(&v);
    assert_eq!(k.iter().filter(|k| **k == "assigned").count(), 1, "{v:?}");
    let beat = v
        .events
        .iter()
        .find(|e| e.event == "heartbeat")
        .unwrap_or_else(|| panic!("no heartbeat recorded: {v:?}"));
    assert!(
        beat.progress.as_deref().unwrap().ends_with("of 1200 ms"),
        "{v:?}"
    );
    assert_eq!(beat.epoch, v.events[1].epoch, "{v:?}");
    // Consecutive heartbeats of one assignment coalesce.
    assert_eq!(k.iter().filter(|k| **k == "heartbeat").count(), 1, "{v:?}");

    // A handler that never beats is stopped at its heartbeat timeout, and
    // the next attempt runs under the next epoch.
    let silent = SubmitBody {
        kind: "silent".into(),
        heartbeat_timeout_ms: Some(300),
        max_attempts: Some(2),
        retry: Some(RetryBody {
            backoff_initial_ms: Some(10),
            backoff_max_ms: Some(10),
            non_retryable: None,
        }),
        ..echo("")
    };
    let started = std::time::Instant::now();
    let id = submit(&client, &silent).await;
    let v = finished(&client, &id).await;
    assert_eq!(v.task.state, "failed", "{v:?}");
    assert!(
        v.task
            .error
            .as_deref()
            .unwrap()
            .starts_with("heartbeat_timeout:"),
        "{v:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the hung handler ran its 30 s"
    );
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
    assert_eq!(v.events[1].epoch.map(|e| e + 1), v.events[3].epoch);

    // A cancel reaches the running handler in its heartbeat reply.
    let coop = SubmitBody {
        kind: "cooperative".into(),
        ..echo("")
    };
    let id = submit(&client, &coop).await;
    for _ in 0..200 {
        if client.get(&id, false, None).await.unwrap().state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let t = client.cancel(&id).await.unwrap();
    assert_eq!(t.state, "cancelled", "{t:?}");
    for _ in 0..400 {
        if !told.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(*told.lock().unwrap(), [HeartbeatReply::Cancelled]);
}

async fn cluster_of<N: cohort_core::Node + Send + 'static>(
    dir: &std::path::Path,
    mode: &str,
    config: N::Config,
    told: Arc<Mutex<Vec<HeartbeatReply>>>,
) -> Vec<RunningNode> {
    real::cluster_with_options::<N>(
        dir,
        3,
        mode,
        config,
        |_, c| c.heartbeat_record_interval_ms = 100,
        options(told),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_keeps_reports_and_cancels_through_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let told = Arc::new(Mutex::new(Vec::new()));
    let nodes = cluster_of::<LeaderNode>(
        dir.path(),
        "leader",
        ValidLeaderConfig::default(),
        told.clone(),
    )
    .await;
    heartbeats_keep_report_and_cancel(&nodes, &told).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_keeps_reports_and_cancels_through_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let told = Arc::new(Mutex::new(Vec::new()));
    let nodes = cluster_of::<LeaderlessNode>(
        dir.path(),
        "leaderless",
        LeaderlessConfig::default(),
        told.clone(),
    )
    .await;
    heartbeats_keep_report_and_cancel(&nodes, &told).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_keeps_reports_and_cancels_through_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let told = Arc::new(Mutex::new(Vec::new()));
    let nodes =
        cluster_of::<StaticNode>(dir.path(), "static", StaticConfig::default(), told.clone()).await;
    heartbeats_keep_report_and_cancel(&nodes, &told).await;
}
