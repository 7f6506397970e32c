//! Manual and bulk retry on real clusters of every mode: a failed or
//! cancelled task runs again as a new task with the same body; while one
//! retry of a task is live, retrying again names it instead of creating a
//! second; other states are refused; a bulk retry picks failed tasks by
//! their error's class. The task's body is shown by its events read.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::NodeId;
use cohort_runtime::client::{CallError, Client};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::{Handler, HandlerFuture, HandlerInput, NodeOptions, Registry, RunningNode};
use real::{echo, finished, submit, Mode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fails its first run of each payload with the payload as the error;
/// later runs take 600 ms and succeed.
#[derive(Clone, Default)]
struct FailOnce(Arc<Mutex<BTreeMap<Vec<u8>, u32>>>);

impl Handler for FailOnce {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        let runs = {
            let mut seen = self.0.lock().unwrap();
            let n = seen.entry(input.payload.clone()).or_default();
            *n += 1;
            *n
        };
        Box::pin(async move {
            if runs == 1 {
                return Err(String::from_utf8_lossy(&input.payload).into_owned());
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(b"ok".to_vec())
        })
    }
}

fn options() -> impl Fn(NodeId) -> NodeOptions {
    // One handler state for the whole cluster: "first run" is the
    // cluster's first run of a payload, wherever it runs.
    let shared = FailOnce::default();
    move |id| {
        let mut registry = Registry::with_builtins(false);
        registry.register("fail_once", shared.clone());
        NodeOptions {
            registry,
            rng_seed: Some(id.0),
            ..NodeOptions::default()
        }
    }
}

fn failing(error: &str) -> SubmitBody {
    SubmitBody {
        kind: "fail_once".into(),
        max_attempts: Some(1),
        ..echo(error)
    }
}

fn status(r: Result<impl std::fmt::Debug, CallError>) -> (u16, String) {
    match r {
        Err(CallError::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn manual_and_bulk_retry(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());

    // A failed task; its events read shows what was submitted.
    let a = submit(&client, &failing("fatal: a")).await;
    let v = finished(&client, &a).await;
    assert_eq!(v.task.state, "failed", "{v:?}");
    assert_eq!(v.body["kind"], "fail_once", "{v:?}");
    assert_eq!(v.body["payload"], "fatal: a", "{v:?}");
    assert_eq!(v.body["max_attempts"], 1, "{v:?}");

    // Retried: a new task, same body, runs again; while it runs, retrying
    // again names it rather than creating a second.
    let r = client.retry(&a).await.unwrap();
    assert_eq!(
        (r.retry_of.as_str(), r.deduplicated, r.generation),
        (a.as_str(), false, 0)
    );
    assert_ne!(r.id, a);
    let again = client.retry(&a).await.unwrap();
    assert_eq!(
        (again.id.as_str(), again.deduplicated),
        (r.id.as_str(), true),
        "{again:?}"
    );
    let v = finished(&client, &r.id).await;
    assert_eq!(v.task.state, "succeeded", "{v:?}");
    assert_eq!(v.task.result.as_deref(), Some("ok"));
    assert_eq!(v.body["payload"], "fatal: a", "{v:?}");
    // The retry's record names its original (kept with the task, not only
    // in the retry's answer); a task submitted as itself names none.
    assert_eq!(v.retry_of.as_deref(), Some(a.as_str()), "{v:?}");
    assert_eq!(client.events(&a, false).await.unwrap().retry_of, None);
    // The original is untouched.
    assert_eq!(client.get(&a, false, None).await.unwrap().state, "failed");
    // Once that retry is final, another retry is the chain's next.
    let next = client.retry(&a).await.unwrap();
    assert_eq!((next.deduplicated, next.generation), (false, 1), "{next:?}");
    assert_ne!(next.id, r.id);
    let v = finished(&client, &next.id).await;
    assert_eq!(v.retry_of.as_deref(), Some(a.as_str()), "{v:?}");

    // Only failed or cancelled tasks: a succeeded one is refused, and so
    // is an unknown id.
    assert_eq!(
        status(client.retry(&r.id).await),
        (409, "not_retryable".into())
    );
    let unknown = "00000000000000000000000000abcdef";
    assert_eq!(status(client.retry(unknown).await).0, 404);

    // A cancelled task can be retried.
    let later = SubmitBody {
        not_before_ms: Some(real::unix_ms_now() + 3_600_000),
        ..failing("fatal: cancelled")
    };
    let c = submit(&client, &later).await;
    assert_eq!(
        status(client.retry(&c).await),
        (409, "not_retryable".into())
    );
    assert_eq!(client.cancel(&c).await.unwrap().state, "cancelled");
    let rc = client.retry(&c).await.unwrap();
    assert!(!rc.deduplicated);
    let v = client.events(&rc.id, false).await.unwrap();
    assert_eq!(v.retry_of.as_deref(), Some(c.as_str()), "{v:?}");

    // Bulk: the failed tasks whose error's class is `bulk`, and no other.
    let b1 = submit(&client, &failing("bulk: one")).await;
    let b2 = submit(&client, &failing("bulk: two")).await;
    let other = submit(&client, &failing("other: three")).await;
    for id in [&b1, &b2, &other] {
        assert_eq!(finished(&client, id).await.task.state, "failed");
    }
    let done = client.retry_failed(Some("bulk"), 1000).await.unwrap();
    let mut retried: Vec<&str> = done.iter().map(|(id, _)| id.as_str()).collect();
    retried.sort();
    let mut want = vec![b1.as_str(), b2.as_str()];
    want.sort();
    assert_eq!(retried, want, "{done:?}");
    for (_, answer) in &done {
        let r = answer.as_ref().unwrap();
        assert_eq!(finished(&client, &r.id).await.task.state, "succeeded");
    }
    let v = client.get(&other, false, None).await.unwrap();
    assert_eq!(v.state, "failed", "left alone: {v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_mode_retries_failed_tasks_by_hand_and_in_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(
        dir.path(),
        Mode::Leader,
        |_, c| c.shutdown_grace_ms = 0,
        options(),
    )
    .await;
    manual_and_bulk_retry(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaderless_mode_retries_failed_tasks_by_hand_and_in_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(
        dir.path(),
        Mode::Leaderless,
        |_, c| c.shutdown_grace_ms = 0,
        options(),
    )
    .await;
    manual_and_bulk_retry(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_mode_retries_failed_tasks_by_hand_and_in_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(
        dir.path(),
        Mode::Static,
        |_, c| c.shutdown_grace_ms = 0,
        options(),
    )
    .await;
    manual_and_bulk_retry(&nodes).await;
    real::shutdown_all(nodes).await;
}
