//! Priorities on real one-node clusters of every mode, whose one execution
//! slot is busy: of two tasks waiting for it, the higher priority starts
//! first, though submitted last.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{Client, TaskEventsView};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::RunningNode;
use cohort_static::{StaticConfig, StaticNode};
use real::{echo, submit};
use std::time::Duration;

async fn finished(client: &Client, id: &str) -> TaskEventsView {
    let v = real::finished(client, id).await;
    assert_eq!(v.task.state, "succeeded", "{v:?}");
    v
}

fn at_ms(v: &TaskEventsView, event: &str) -> u64 {
    v.events
        .iter()
        .find(|e| e.event == event)
        .unwrap_or_else(|| panic!("no {event}: {v:?}"))
        .at_ms
}

async fn the_higher_priority_starts_first(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());
    let busy = SubmitBody {
        kind: "sleep".into(),
        payload: Some("400".into()),
        ..echo("")
    };
    let busy = submit(&client, &busy).await;
    // The slot is taken before the two others arrive (a leaderless node
    // claims on its tick, and would otherwise weigh all three).
    for _ in 0..100 {
        if client.get(&busy, false, None).await.unwrap().state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let low = SubmitBody {
        priority: Some(-5),
        ..echo("low")
    };
    let high = SubmitBody {
        priority: Some(5),
        ..echo("high")
    };
    let low = submit(&client, &low).await;
    let high = submit(&client, &high).await;
    let busy = finished(&client, &busy).await;
    let (low, high) = (
        finished(&client, &low).await,
        finished(&client, &high).await,
    );
    // One slot: each waited for the sleep, and the low one for the high one.
    assert!(
        at_ms(&high, "assigned") >= at_ms(&busy, "succeeded"),
        "{high:?}"
    );
    assert!(
        at_ms(&low, "assigned") >= at_ms(&high, "succeeded"),
        "low {low:?} before high {high:?}"
    );
}

async fn one_slot<N: cohort_core::Node + Send + 'static>(
    dir: &std::path::Path,
    mode: &str,
    config: N::Config,
) -> Vec<RunningNode> {
    real::cluster_with::<N>(dir, 1, mode, config, |_, c| c.peers.capacity_tasks = 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_starts_the_higher_priority_first() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = one_slot::<LeaderNode>(dir.path(), "leader", ValidLeaderConfig::default()).await;
    the_higher_priority_starts_first(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_starts_the_higher_priority_first() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        one_slot::<LeaderlessNode>(dir.path(), "leaderless", LeaderlessConfig::default()).await;
    the_higher_priority_starts_first(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_starts_the_higher_priority_first() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = one_slot::<StaticNode>(dir.path(), "static", StaticConfig::default()).await;
    the_higher_priority_starts_first(&nodes).await;
}
