//! The runtime driving the real `static` mode: redirects to the
//! coordinator, typed 503 when its API address is unknown, long-polls.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::NodeId;
use cohort_runtime::client::Client;
use cohort_runtime::http::SubmitBody;
use cohort_runtime::RunningNode;
use cohort_static::{StaticConfig, StaticNode};
use std::time::{Duration, Instant};

fn body(kind: &str, payload: &str) -> SubmitBody {
    SubmitBody {
        id: None,
        kind: kind.into(),
        payload: Some(payload.into()),
        payload_base64: None,
        timeout_ms: None,
        max_attempts: None,
        not_before_ms: None,
        retry: None,
        schedule_to_start_ms: None,
        priority: None,
        heartbeat_timeout_ms: None,
        labels: None,
        limit: None,
        lease_grace_ms: None,
    }
}

async fn static_cluster(dir: &std::path::Path) -> Vec<RunningNode> {
    real::cluster_with::<StaticNode>(dir, 3, "static", StaticConfig::default(), |id, c| {
        // Node 3 does not know where the others' APIs are.
        if id == NodeId(3) {
            c.http_addrs.clear();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_redirect_to_the_coordinator_or_answer_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = static_cluster(dir.path()).await;
    let n1 = nodes[0].http_addr();
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = raw
        .post(format!("http://{}/v1/tasks", nodes[1].http_addr()))
        .json(&body("echo", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("http://{n1}/v1/tasks")
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "not_leader");
    assert_eq!(v["leader"], 1);

    let r = raw
        .post(format!("http://{}/v1/tasks", nodes[2].http_addr()))
        .json(&body("echo", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "not_leader");
    assert_eq!(v["leader"], 1);

    // A redirected read keeps its query.
    let r = raw
        .get(format!(
            "http://{}/v1/tasks/ab?wait=2s&stale=false",
            nodes[1].http_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("http://{n1}/v1/tasks/ab?wait=2s&stale=false")
    );

    // A client that follows redirects submits through a worker.
    let via_worker = Client::new(&nodes[1].http_addr().to_string());
    let id = via_worker
        .submit(&body("echo", "through n2"))
        .await
        .unwrap();
    let t = via_worker
        .get(&id, false, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(t.state, "succeeded");
    assert_eq!(t.result.as_deref(), Some("through n2"));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_when_the_task_is_final_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = static_cluster(dir.path()).await;
    let client = Client::new(&nodes[0].http_addr().to_string());
    let id = client
        .submit(&body("sleep", "{\"ms\": 400}"))
        .await
        .unwrap();
    let now = client.get(&id, false, None).await.unwrap();
    assert!(!now.is_final(), "{now:?}");
    let started = Instant::now();
    let t = client
        .get(&id, false, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(t.state, "succeeded");
    assert_eq!(t.result.as_deref(), Some("slept 400ms"));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // A short wait on an unfinished task answers with its current state.
    let id = client.submit(&body("sleep", "5000")).await.unwrap();
    let started = Instant::now();
    let t = client
        .get(&id, false, Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(!t.is_final());
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(3));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_reports_each_nodes_role_and_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = static_cluster(dir.path()).await;
    let coordinator = Client::new(&nodes[0].http_addr().to_string())
        .cluster()
        .await
        .unwrap();
    assert_eq!(coordinator["role"], "coordinator");
    assert_eq!(coordinator["leader"], 1);
    let worker = Client::new(&nodes[2].http_addr().to_string())
        .cluster()
        .await
        .unwrap();
    assert_eq!(worker["role"], "worker");
    assert_eq!(worker["leader"], 1);
    assert_eq!(worker["term"], serde_json::Value::Null);
}
