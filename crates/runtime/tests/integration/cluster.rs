//! The runtime driving a small mode over real sockets and files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::common;

use cohort_core::{Limits, NodeId};
use cohort_runtime::client::{CallError, Client};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::{Handler, HandlerFuture, HandlerInput, Registry};
use common::{eventually, Cluster};
use std::time::Duration;

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

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_a_task_and_replicate_its_outcome() {
    let mut c = Cluster::new(3, Limits::default()).await;
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(c.start(NodeId(i), Registry::with_builtins(false)).await);
    }
    let client = Client::new(&nodes[0].http_addr().to_string());
    let id = client.submit(&body("echo", "hello")).await.unwrap();
    assert_eq!(id.len(), 32, "a generated id is 128 bits of hex");
    let t = client.get(&id, false, WAIT).await.unwrap();
    assert_eq!(t.state, "succeeded");
    assert_eq!(t.result.as_deref(), Some("hello"));
    assert_eq!(t.node, Some(1));
    assert_eq!(t.epoch, Some(1));
    // The outcome reached node 2 over the peer transport.
    let other = Client::new(&nodes[1].http_addr().to_string());
    let mut seen = None;
    for _ in 0..200 {
        if let Ok(t) = other.get(&id, true, None).await {
            if t.is_final() {
                seen = Some(t);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.unwrap().result.as_deref(), Some("hello"));
    let m = nodes[1].metrics();
    assert!(m.counter("cohort_peer_messages_received_total", "peer=\"n1\"") >= 2);
    assert_eq!(
        m.counter(
            "cohort_messages_received_by_type_total",
            "type=\"Replicate\""
        ),
        1
    );
    assert!(
        nodes[0]
            .metrics()
            .counter_sum("cohort_peer_messages_sent_total")
            >= 2
    );
    let cluster = client.cluster().await.unwrap();
    assert_eq!(cluster["mode"], "toy");
    assert_eq!(cluster["members"].as_array().unwrap().len(), 3);
    assert!(cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["connected"] == true));
    let text = client.metrics().await.unwrap();
    assert!(text.contains("cohort_fsync_seconds_bucket"), "{text}");
    assert!(
        text.contains("cohort_client_submit_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("cohort_messages_sent_by_type_total{type=\"Replicate\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("cohort_notes_total{note=\"decided\",state=\"succeeded\"} 1"),
        "{text}"
    );
    assert_eq!(client.health().await.unwrap()["status"], "ok");
    let doc: serde_json::Value =
        reqwest::get(format!("http://{}/v1/openapi.json", nodes[0].http_addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_typed_json_with_the_right_status() {
    let limits = Limits {
        payload_bytes_max: 16,
        ..Limits::default()
    };
    let mut c = Cluster::new(1, limits).await;
    let node = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let addr = node.http_addr();
    let client = Client::new(&addr.to_string());
    let status_of = |e: CallError| match e {
        CallError::Api { status, code, .. } => (status, code),
        other => panic!("not an API error: {other}"),
    };
    let raw = reqwest::Client::new();
    let r = raw
        .post(format!("http://{addr}/v1/tasks"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "malformed");
    // A body far over the limit is refused before it is parsed, still as JSON.
    let r = raw
        .post(format!("http://{addr}/v1/tasks"))
        .header("content-type", "application/json")
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "payload_too_large");
    assert_eq!(
        status_of(client.submit(&body("nope", "x")).await.unwrap_err()),
        (422, "unknown_kind".into())
    );
    assert_eq!(
        status_of(
            client
                .submit(&body("echo", &"x".repeat(17)))
                .await
                .unwrap_err()
        ),
        (413, "payload_too_large".into())
    );
    let mut zero = body("echo", "x");
    zero.max_attempts = Some(0);
    assert_eq!(
        status_of(client.submit(&zero).await.unwrap_err()),
        (400, "invalid_task".into())
    );
    assert_eq!(
        status_of(client.get("abc", false, None).await.unwrap_err()),
        (404, "not_found".into())
    );
    assert_eq!(
        status_of(client.get("xyz", false, None).await.unwrap_err()),
        (400, "malformed".into())
    );
    let mut fixed = body("echo", "one");
    fixed.id = Some("00ff".into());
    assert_eq!(
        client.submit(&fixed).await.unwrap(),
        format!("{:032x}", 0xff)
    );
    // The same id and content again is acknowledged again (idempotent).
    assert_eq!(
        client.submit(&fixed).await.unwrap(),
        format!("{:032x}", 0xff)
    );
    fixed.payload = Some("two".into());
    assert_eq!(
        status_of(client.submit(&fixed).await.unwrap_err()),
        (409, "id_conflict".into())
    );
    let r = raw
        .get(format!("http://{addr}/v1/tasks/ff?wait=forever"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Cancel after it finished leaves the outcome.
    let t = client.get("ff", false, WAIT).await.unwrap();
    assert_eq!(t.state, "succeeded");
    assert_eq!(client.cancel("ff").await.unwrap().state, "succeeded");
    node.shutdown().await.unwrap();
}

struct Panics;
impl Handler for Panics {
    fn run(&self, _: HandlerInput) -> HandlerFuture {
        Box::pin(async { panic!("handler bug") })
    }
}

struct Epochs;
impl Handler for Epochs {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        Box::pin(async move { Ok(format!("{}@{}", input.epoch.0, input.node.0).into_bytes()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_timeouts_and_panics_become_failures_and_handlers_see_the_epoch() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let mut registry = Registry::with_builtins(false);
    registry.register("panics", Panics);
    registry.register("epochs", Epochs);
    let node = c.start(NodeId(1), registry).await;
    let client = Client::new(&node.http_addr().to_string());
    let mut slow = body("sleep", "{\"ms\": 10000}");
    slow.timeout_ms = Some(50);
    let id = client.submit(&slow).await.unwrap();
    let t = client.get(&id, false, WAIT).await.unwrap();
    assert_eq!(t.state, "failed");
    assert_eq!(t.error.as_deref(), Some("timeout: timed out after 50ms"));
    let id = client.submit(&body("panics", "")).await.unwrap();
    let t = client.get(&id, false, WAIT).await.unwrap();
    assert_eq!(t.error.as_deref(), Some("panic: handler panicked"));
    let id = client.submit(&body("epochs", "")).await.unwrap();
    let t = client.get(&id, false, WAIT).await.unwrap();
    assert_eq!(t.result.as_deref(), Some("1@1"));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_task_survives_a_kill_and_restart_from_the_data_dir() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let node = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let client = Client::new(&node.http_addr().to_string());
    let mut long = body("sleep", "60000");
    long.id = Some("abcdef".into());
    let id = client.submit(&long).await.unwrap();
    let t = client.get(&id, true, None).await.unwrap();
    assert_eq!(t.state, "running");
    node.kill().await;
    let node = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let client = Client::new(&node.http_addr().to_string());
    let t = client.get(&id, false, None).await.unwrap();
    assert_eq!(t.state, "running");
    assert_eq!(t.epoch, Some(2), "the toy mode resumes with a new epoch");
    assert_eq!(client.cancel(&id).await.unwrap().state, "cancelled");
    node.shutdown().await.unwrap();
    let node = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let client = Client::new(&node.http_addr().to_string());
    assert_eq!(
        client.get(&id, false, None).await.unwrap().state,
        "cancelled"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_share_fsyncs() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let node = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let client = Client::new(&node.http_addr().to_string());
    let mut joins = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        joins.push(tokio::spawn(async move {
            client.submit(&body("echo", &i.to_string())).await.unwrap()
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    let m = node.metrics();
    let actions = m.counter("cohort_persist_actions_total", "");
    let fsyncs = m.counter("cohort_persist_batches_total", "");
    assert!(
        actions >= 400,
        "each submit persists at least twice: {actions}"
    );
    assert!(
        fsyncs < actions,
        "{fsyncs} fsyncs for {actions} persists: no group commit"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_is_seen_down_and_reconnected_after_restart() {
    let mut c = Cluster::new(2, Limits::default()).await;
    let n1 = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let n2 = c.start(NodeId(2), Registry::with_builtins(false)).await;
    let client = Client::new(&n1.http_addr().to_string());
    let connected = |v: &serde_json::Value| v["members"][1]["connected"] == true;
    let mut up = false;
    for _ in 0..200 {
        if connected(&client.cluster().await.unwrap()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up, "n1 never connected to n2");
    n2.kill().await;
    let m1 = n1.metrics();
    // Pings to the dead peer fail; the link notices and drops them.
    let mut down = false;
    for _ in 0..300 {
        if !connected(&client.cluster().await.unwrap()) {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(down, "n1 still thinks n2 is connected");
    // Read the count before the restart: n1 may reconnect before `start`
    // returns, and a count read after that would wait for a second connect.
    let before = m1.counter("cohort_peer_connects_total", "peer=\"n2\"");
    let n2 = c.start(NodeId(2), Registry::with_builtins(false)).await;
    assert!(
        eventually(Duration::from_secs(5), || m1
            .counter("cohort_peer_connects_total", "peer=\"n2\"")
            > before)
        .await
    );
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

/// Tracks how many executions run at once.
struct Gauge(
    std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
);
impl Handler for Gauge {
    fn run(&self, _: HandlerInput) -> HandlerFuture {
        use std::sync::atomic::Ordering::SeqCst;
        let g = self.0.clone();
        Box::pin(async move {
            let now = g.0.fetch_add(1, SeqCst) + 1;
            g.1.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            g.0.fetch_sub(1, SeqCst);
            Ok(Vec::new())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_bounded_by_the_node_capacity() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let gauge: std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )> = std::sync::Arc::default();
    let mut registry = Registry::with_builtins(false);
    registry.register("gauge", Gauge(gauge.clone()));
    let node = c.start(NodeId(1), registry).await;
    let client = Client::new(&node.http_addr().to_string());
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(client.submit(&body("gauge", "")).await.unwrap());
    }
    for id in ids {
        assert_eq!(
            client.get(&id, false, WAIT).await.unwrap().state,
            "succeeded"
        );
    }
    let max = gauge.1.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(max, 4, "capacity is 4; saw {max} at once");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_future_completes() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let peer = c.peer_listeners.remove(&NodeId(1)).unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = cohort_runtime::NodeOptions {
        registry: Registry::with_builtins(false),
        ..Default::default()
    };
    let server = tokio::spawn(cohort_runtime::run::<common::ToyNode>(
        c.config(NodeId(1)),
        (),
        options,
        cohort_runtime::Listeners { peer, http },
        async move {
            let _ = stopped.await;
        },
    ));
    let client = Client::new(&addr.to_string());
    let id = client.submit(&body("echo", "x")).await.unwrap();
    assert_eq!(
        client.get(&id, false, WAIT).await.unwrap().state,
        "succeeded"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        client.health().await.is_err(),
        "still serving after shutdown"
    );
}
