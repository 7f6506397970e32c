//! Routing by worker labels on real clusters of every mode: n3 alone
//! carries `gpu`. Every `gpu` task runs on n3, whichever node took the
//! submit (leaderless mode runs five nodes, so that about 4 in 10 tasks are
//! placed on three replicas without the label and offered to n3);
//! unlabelled tasks still run; the labels show in the task's body and in
//! `GET /v1/cluster`; invalid labels are a 400.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::{NodeId, TaskId};
use cohort_runtime::client::Client;
use cohort_runtime::config::KindPolicy;
use cohort_runtime::http::SubmitBody;
use cohort_runtime::RuntimeConfig;
use real::{echo, finished, submit, Mode};
use std::collections::BTreeMap;

/// Every node: `sleep` is queued for `gpu` workers by its kind's policy.
fn tweak(id: NodeId, c: &mut RuntimeConfig) {
    c.kind_policies = BTreeMap::from([(
        "sleep".to_string(),
        KindPolicy {
            labels: Some(vec!["gpu".into()]),
            ..KindPolicy::default()
        },
    )]);
    if id == NodeId(3) {
        c.peers = c
            .peers
            .clone()
            .with_labels(vec!["gpu".into(), "queue=render".into()])
            .unwrap();
    }
}

/// The `n`-th task id (from a fixed base) whose three replicas over a ring
/// of n1..n5 leave out n3.
fn away_from_n3(n: u64) -> TaskId {
    let ring: Vec<NodeId> = (1..=5).map(NodeId).collect();
    (0u128..)
        .map(|i| TaskId(0x5eed_0000_0000_0000 + i))
        .filter(|id| !cohort_leaderless::placement::replicas(*id, &ring, 3).contains(&NodeId(3)))
        .nth(n as usize)
        .expect("ids are placed all over the ring")
}

fn labelled(payload: &str, labels: &[&str]) -> SubmitBody {
    SubmitBody {
        labels: Some(labels.iter().map(|l| l.to_string()).collect()),
        ..echo(payload)
    }
}

async fn labelled_tasks_run_on_the_carrier(nodes: &[cohort_runtime::RunningNode]) {
    let clients: Vec<Client> = nodes
        .iter()
        .map(|n| Client::new(&n.http_addr().to_string()))
        .collect();
    let cluster = clients[2].cluster().await.unwrap();
    assert_eq!(
        cluster["labels"],
        serde_json::json!(["gpu", "queue=render"]),
        "{cluster}"
    );
    let mut ids = Vec::new();
    for i in 0..12 {
        let labels: &[&str] = if i % 3 == 0 {
            &["gpu"]
        } else {
            &["queue=render", "gpu"]
        };
        let client = &clients[i % clients.len()];
        let mut body = labelled(&format!("g{i}"), labels);
        if clients.len() == 5 && i % 2 == 0 {
            // Leaderless: every other task placed on replicas without n3.
            body.id = Some(away_from_n3(i as u64).to_string());
        }
        ids.push(submit(client, &body).await);
    }
    for id in &ids {
        let v = finished(&clients[0], id).await;
        assert_eq!(v.task.state, "succeeded", "{v:?}");
        assert_eq!(v.task.node, Some(3), "{id} ran on n3 only: {v:?}");
        for e in &v.events {
            if let Some(n) = e.node {
                assert_eq!(n, 3, "{id}: {v:?}");
            }
        }
        assert!(
            v.body["labels"]
                .as_array()
                .is_some_and(|l| l.contains(&"gpu".into())),
            "{}",
            v.body
        );
    }
    if clients.len() == 5 {
        let (_, metrics) = real::http_get(nodes[2].http_addr(), "/metrics").await;
        let taken = metrics
            .lines()
            .find(|l| l.starts_with("cohort_protocol_events_total{event=\"offers_taken\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            taken >= 6,
            "n3 took the offers of the tasks placed away from it: {taken}"
        );
    }
    // Whoever places work lists n3 with its labels; a node that places
    // none (a follower, a static worker) lists nobody.
    let mut listed = 0;
    for c in &clients {
        let cluster = c.cluster().await.unwrap();
        let workers = cluster["workers"].as_array().expect("a list").clone();
        for w in &workers {
            if w["id"] == 3 {
                listed += 1;
                assert_eq!(
                    w["labels"],
                    serde_json::json!(["gpu", "queue=render"]),
                    "{cluster}"
                );
                assert_eq!(w["live"], true, "{cluster}");
            } else {
                assert_eq!(w["labels"], serde_json::json!([]), "{cluster}");
            }
        }
    }
    assert!(listed >= 1, "some node lists n3 among its workers");
    let plain = submit(&clients[0], &echo("plain")).await;
    let v = finished(&clients[1], &plain).await;
    assert_eq!(v.task.state, "succeeded", "{v:?}");
    assert_eq!(v.body["labels"], serde_json::json!([]), "{}", v.body);

    // A kind's policy queues it: `sleep` without labels gets `gpu` and runs
    // on n3; `"labels": []` in the body says none and wins.
    let sleep = |labels: Option<Vec<String>>| SubmitBody {
        kind: "sleep".into(),
        payload: Some("1".into()),
        labels,
        ..echo("")
    };
    for i in 0..clients.len() {
        let id = submit(&clients[i], &sleep(None)).await;
        let v = finished(&clients[0], &id).await;
        assert_eq!(v.task.state, "succeeded", "{v:?}");
        assert_eq!(v.task.node, Some(3), "{v:?}");
        assert_eq!(v.body["labels"], serde_json::json!(["gpu"]), "{}", v.body);
    }
    let id = submit(&clients[0], &sleep(Some(vec![]))).await;
    let v = finished(&clients[0], &id).await;
    assert_eq!(v.body["labels"], serde_json::json!([]), "{}", v.body);

    for bad in [
        labelled("x", &["has space"]),
        labelled("x", &["gpu", "gpu"]),
        labelled("x", &[""]),
    ] {
        let e = clients[0].submit(&bad).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("label"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_runs_labelled_tasks_only_on_nodes_carrying_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Leader, tweak, real::builtins).await;
    labelled_tasks_run_on_the_carrier(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_runs_labelled_tasks_only_on_nodes_carrying_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::cluster_with_options::<cohort_leaderless::LeaderlessNode>(
        dir.path(),
        5,
        "leaderless",
        cohort_leaderless::LeaderlessConfig::default(),
        tweak,
        real::builtins,
    )
    .await;
    labelled_tasks_run_on_the_carrier(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_runs_labelled_tasks_only_on_nodes_carrying_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Static, tweak, real::builtins).await;
    labelled_tasks_run_on_the_carrier(&nodes).await;
    real::shutdown_all(nodes).await;
}
