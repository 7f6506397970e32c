//! Result retention on real clusters of every mode: a final task's record
//! is kept for its state's retention (`Limits::*_retained_ms`), then purged
//! on every node, so storage does not grow without bound; a purged record
//! does not come back (leaderless anti-entropy between replicas whose
//! clocks differ), and its id may be used again.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::NodeId;
use cohort_runtime::client::Client;
use cohort_runtime::http::SubmitBody;
use cohort_runtime::{
    Handler, HandlerFuture, HandlerInput, NodeOptions, Registry, RunningNode, RuntimeConfig,
};
use real::{echo, finished, submit, Mode};
use std::time::{Duration, Instant};

const SUCCEEDED_MS: u64 = 600;
const FAILED_MS: u64 = 60_000;

/// Fails at once, with a class that is never retried.
struct Fail;

impl Handler for Fail {
    fn run(&self, _input: HandlerInput) -> HandlerFuture {
        Box::pin(async move { Err("fatal: on purpose".to_string()) })
    }
}

fn options(id: NodeId) -> NodeOptions {
    let mut registry = Registry::with_builtins(false);
    registry.register("fail", Fail);
    NodeOptions {
        registry,
        rng_seed: Some(id.0),
        ..NodeOptions::default()
    }
}

fn short_retention(_: NodeId, c: &mut RuntimeConfig) {
    c.shutdown_grace_ms = 0;
    c.peers.limits.succeeded_retained_ms = SUCCEEDED_MS;
    c.peers.limits.failed_retained_ms = FAILED_MS;
    c.peers.limits.cancelled_retained_ms = SUCCEEDED_MS;
}

fn three_retained(_: NodeId, c: &mut RuntimeConfig) {
    c.shutdown_grace_ms = 0;
    c.peers.limits.tasks_retained_max = 3;
}

/// Whether every node's own view (a stale read) has a record of `id`.
async fn held_everywhere(nodes: &[RunningNode], id: &str) -> bool {
    for n in nodes {
        let c = Client::new(&n.http_addr().to_string());
        if c.get(id, true, None).await.is_err() {
            return false;
        }
    }
    true
}

/// Whether every node's own view (a stale read) has no record of `id`.
async fn gone_everywhere(nodes: &[RunningNode], id: &str) -> bool {
    for n in nodes {
        let c = Client::new(&n.http_addr().to_string());
        match c.get(id, true, None).await {
            Err(e) if e.status() == Some(404) => {}
            _ => return false,
        }
    }
    true
}

async fn records_are_purged_after_their_retention(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());
    let body = |id: &str| SubmitBody {
        id: Some(id.to_string()),
        ..echo("kept for a while")
    };
    let ok = "00000000000000000000000000000a11";
    let failed = "00000000000000000000000000000fa1";
    submit(&client, &body(ok)).await;
    let done_at = Instant::now();
    let t = finished(&client, ok).await;
    assert_eq!(t.task.state, "succeeded", "{t:?}");
    let fail = SubmitBody {
        id: Some(failed.to_string()),
        kind: "fail".into(),
        ..echo("")
    };
    submit(&client, &fail).await;
    assert_eq!(finished(&client, failed).await.task.state, "failed");

    // Kept for its retention: still there half-way through.
    tokio::time::sleep(Duration::from_millis(SUCCEEDED_MS / 2)).await;
    if done_at.elapsed() < Duration::from_millis(SUCCEEDED_MS) {
        let t = client.get(ok, false, None).await.unwrap();
        assert_eq!(t.state, "succeeded", "purged before its retention: {t:?}");
    }

    // Then purged on every node.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gone_everywhere(nodes, ok).await {
        assert!(Instant::now() < deadline, "{ok} never purged everywhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        done_at.elapsed() >= Duration::from_millis(SUCCEEDED_MS),
        "purged after {:?}, before its retention",
        done_at.elapsed()
    );
    let e = client.get(ok, false, None).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(!real::listed(&client).await.contains(&ok.to_string()));

    // A failed task's longer retention keeps it.
    let t = client.get(failed, false, None).await.unwrap();
    assert_eq!(t.state, "failed", "{t:?}");

    // Nothing brings it back (anti-entropy, late learners) ...
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        gone_everywhere(nodes, ok).await,
        "a purged record came back"
    );

    // ... and its id may be used again: a new task, run again.
    submit(&client, &body(ok)).await;
    let t = finished(&client, ok).await;
    assert_eq!(t.task.state, "succeeded", "{t:?}");
    let submitted = t.events.iter().filter(|e| e.event == "submitted").count();
    let assigned = t.events.iter().filter(|e| e.event == "assigned").count();
    assert_eq!((submitted, assigned), (1, 1), "a new record: {t:?}");
}

/// `tasks_retained_max` (3 here) bounds the finished records however
/// young: the oldest finished go first, on every node (in leaderless mode
/// each node counts its own, and with three nodes every node is a replica
/// of every task).
async fn only_the_newest_finished_records_are_kept(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());
    let ids: Vec<String> = (1..=6u128).map(|i| format!("{:032x}", 0xc0 + i)).collect();
    for id in &ids {
        let body = SubmitBody {
            id: Some(id.clone()),
            ..echo("one of six")
        };
        submit(&client, &body).await;
        assert_eq!(finished(&client, id).await.task.state, "succeeded");
    }
    let (old, kept) = ids.split_at(3);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut settled = true;
        for id in old {
            settled &= gone_everywhere(nodes, id).await;
        }
        for id in kept {
            settled &= held_everywhere(nodes, id).await;
        }
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never settled on the newest three"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = real::listed(&client).await;
    assert!(old.iter().all(|id| !listed.contains(id)), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mode_keeps_only_the_newest_tasks_retained_max_finished_records() {
    for mode in [Mode::Leader, Mode::Leaderless, Mode::Static] {
        let dir = tempfile::tempdir().unwrap();
        let nodes = real::three(dir.path(), mode, three_retained, options).await;
        only_the_newest_finished_records_are_kept(&nodes).await;
        real::shutdown_all(nodes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_mode_purges_final_records_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Leader, short_retention, options).await;
    records_are_purged_after_their_retention(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaderless_mode_purges_final_records_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Leaderless, short_retention, options).await;
    records_are_purged_after_their_retention(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_mode_purges_final_records_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Static, short_retention, options).await;
    records_are_purged_after_their_retention(&nodes).await;
    real::shutdown_all(nodes).await;
}
