//! Idempotency keys over real nodes in both consensus modes: a repeated
//! submit under one key is the same task; another body under the key is a
//! conflict; a malformed key or one that disagrees with the body's id is
//! refused and creates nothing.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::Node;
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::Client;
use cohort_runtime::idempotency::task_id_for_key;
use cohort_runtime::RunningNode;
use real::echo;
use serde_json::Value;
use std::time::Duration;

/// `POST /v1/tasks` with `key` as the `Idempotency-Key`: (status, body),
/// following a leader redirect.
async fn post_keyed(node: &RunningNode, key: &[u8], body: &Value) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut url = format!("http://{}/v1/tasks", node.http_addr());
    for _ in 0..5 {
        let r = http
            .post(&url)
            .header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 307 {
            url = r.headers()["location"].to_str().unwrap().to_string();
            continue;
        }
        if status == 503 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        return (status, r.json().await.unwrap_or(Value::Null));
    }
    panic!("no answer from {url}");
}

async fn listed(nodes: &[RunningNode]) -> usize {
    Client::new(&nodes[0].http_addr().to_string())
        .list_all(None, 1000)
        .await
        .unwrap()
        .tasks
        .len()
}

async fn check<N: Node + Send + 'static>(mode: &str, config: N::Config) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::cluster::<N>(dir.path(), 3, mode, config, 1_000).await;
    let body = serde_json::to_value(echo("pay once")).unwrap();
    let expected = task_id_for_key(b"invoice-42").unwrap().to_string();

    let (status, first) = post_keyed(&nodes[0], b"invoice-42", &body).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["id"], expected.as_str(), "the key names the task");
    // The same key again, at another node: the same task, acknowledged.
    let (status, again) = post_keyed(&nodes[2], b"invoice-42", &body).await;
    assert_eq!((status, &again["id"]), (202, &first["id"]));
    // Another body under the key: a conflict, not a second task.
    let other = serde_json::to_value(echo("pay twice")).unwrap();
    let (status, conflict) = post_keyed(&nodes[1], b"invoice-42", &other).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["code"], "id_conflict", "{conflict}");
    // A key that is not visible ASCII, and one that disagrees with the
    // body's own id: refused before anything is written.
    let (status, bad) = post_keyed(&nodes[0], b"two words", &body).await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("malformed")),
        "{bad}"
    );
    let mut with_id = body.clone();
    with_id["id"] = "abc".into();
    let (status, bad) = post_keyed(&nodes[0], b"invoice-43", &with_id).await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("malformed")),
        "{bad}"
    );
    assert_eq!(listed(&nodes).await, 1, "one task in the cluster");

    let task = Client::new(&nodes[1].http_addr().to_string())
        .get(&expected, false, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(task.state, "succeeded");
    assert_eq!(task.result.as_deref(), Some("pay once"));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_names_one_task_in_leader_mode() {
    check::<LeaderNode>("leader", ValidLeaderConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_names_one_task_in_leaderless_mode() {
    check::<LeaderlessNode>("leaderless", LeaderlessConfig::default()).await;
}
