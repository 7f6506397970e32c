//! Retry policies per kind on real clusters of every mode: a submit that
//! leaves out `max_attempts` or a `retry` field gets its kind's policy, a
//! field it gives wins, a kind without a policy keeps the node-wide
//! defaults, and the resolved policy is stored with the task (its events
//! read shows it), and so is a lease grace, the kind's or the task's own.
//! A policy for a kind with no handler stops the node from starting.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::{Limits, NodeId, Peers};
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_runtime::client::{Client, TaskEventsView};
use cohort_runtime::config::KindPolicy;
use cohort_runtime::http::{RetryBody, SubmitBody};
use cohort_runtime::{Listeners, NodeOptions, Registry, RunningNode, RuntimeConfig};
use real::{echo, finished, submit, Mode};
use std::collections::BTreeMap;

/// `sleep` tasks: at most 3 attempts, retried at once, and a refused
/// payload (`invalid_payload`) is final.
fn sleep_policy() -> BTreeMap<String, KindPolicy> {
    let policy = KindPolicy {
        max_attempts: Some(3),
        backoff_initial_ms: Some(0),
        backoff_max_ms: Some(0),
        non_retryable: Some(vec!["invalid_payload".into()]),
        lease_grace_ms: Some(4_000),
        ..KindPolicy::default()
    };
    BTreeMap::from([("sleep".to_string(), policy)])
}

fn tweak(_: NodeId, c: &mut RuntimeConfig) {
    c.kind_policies = sleep_policy();
}

/// A `sleep` task whose payload its handler refuses: every attempt fails
/// with class `invalid_payload`.
fn failing() -> SubmitBody {
    SubmitBody {
        kind: "sleep".into(),
        payload: Some("not a duration".into()),
        ..echo("")
    }
}

fn events(v: &TaskEventsView) -> Vec<&str> {
    v.events.iter().map(|e| e.event.as_str()).collect()
}

async fn kinds_keep_their_policies(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());
    let cluster = client.cluster().await.unwrap();
    assert_eq!(
        cluster["kind_policies"]["sleep"]["max_attempts"], 3,
        "{cluster}"
    );

    // Everything from the kind's policy: the refused payload is final.
    let id = submit(&client, &failing()).await;
    let v = finished(&client, &id).await;
    assert_eq!(events(&v), ["submitted", "assigned", "failed"], "{v:?}");
    assert_eq!(v.body["max_attempts"], 3, "{}", v.body);
    assert_eq!(v.body["retry"]["backoff_initial_ms"], 0, "{}", v.body);
    assert_eq!(
        v.body["retry"]["non_retryable"],
        serde_json::json!(["invalid_payload"]),
        "{}",
        v.body
    );
    assert_eq!(v.body["lease_grace_ms"], 4_000, "{}", v.body);

    // A field the body gives wins over the kind's: no class is final now,
    // so the task runs its 3 attempts (the policy's), retried at once.
    let body = SubmitBody {
        retry: Some(RetryBody {
            non_retryable: Some(vec![]),
            ..RetryBody::default()
        }),
        ..failing()
    };
    let id = submit(&client, &body).await;
    let v = finished(&client, &id).await;
    assert_eq!(
        events(&v),
        [
            "submitted",
            "assigned",
            "attempt_failed",
            "assigned",
            "attempt_failed",
            "assigned",
            "failed"
        ],
        "{v:?}"
    );
    assert_eq!(v.task.attempts, Some(3), "{v:?}");
    let body = SubmitBody {
        max_attempts: Some(1),
        lease_grace_ms: Some(2_500),
        retry: Some(RetryBody {
            non_retryable: Some(vec![]),
            ..RetryBody::default()
        }),
        ..failing()
    };
    let id = submit(&client, &body).await;
    let v = finished(&client, &id).await;
    assert_eq!(events(&v), ["submitted", "assigned", "failed"], "{v:?}");
    assert_eq!(v.body["max_attempts"], 1, "{}", v.body);
    assert_eq!(v.body["lease_grace_ms"], 2_500, "{}", v.body);

    // A grace outside 1 s to an hour is refused, and creates nothing.
    for bad in [1, 999, 3_600_001] {
        let body = SubmitBody {
            id: Some(format!("{bad:x}")),
            lease_grace_ms: Some(bad),
            ..echo("bad grace")
        };
        match client.submit(&body).await {
            Err(cohort_runtime::client::CallError::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (400, "invalid_task"), "{bad}")
            }
            other => panic!("a lease grace of {bad} ms: {other:?}"),
        }
        match client.get(&format!("{bad:x}"), false, None).await {
            Err(cohort_runtime::client::CallError::Api { status, .. }) => {
                assert_eq!(status, 404, "{bad}")
            }
            other => panic!("a refused submit created {bad:x}: {other:?}"),
        }
    }

    // A kind without a policy keeps the node-wide defaults.
    let id = submit(&client, &echo("plain")).await;
    let v = finished(&client, &id).await;
    assert_eq!(
        v.body["max_attempts"],
        cohort_runtime::http::TASK_ATTEMPTS_DEFAULT,
        "{}",
        v.body
    );
    assert_eq!(
        v.body["retry"]["non_retryable"],
        serde_json::json!([]),
        "{}",
        v.body
    );
    assert_eq!(v.body["lease_grace_ms"], 0, "the derived grace: {}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_applies_each_kinds_retry_policy() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Leader, tweak, real::builtins).await;
    kinds_keep_their_policies(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_applies_each_kinds_retry_policy() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Leaderless, tweak, real::builtins).await;
    kinds_keep_their_policies(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_applies_each_kinds_retry_policy() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Static, tweak, real::builtins).await;
    kinds_keep_their_policies(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_for_a_kind_without_a_handler_or_out_of_limits_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, policy, says) in [
        (
            "transcode",
            KindPolicy::default(),
            "kind \"transcode\", which has no handler here",
        ),
        (
            "sleep",
            KindPolicy {
                max_attempts: Some(0),
                ..KindPolicy::default()
            },
            "max_attempts must be",
        ),
        (
            "sleep",
            KindPolicy {
                labels: Some(vec!["no spaces".into()]),
                ..KindPolicy::default()
            },
            "label \"no spaces\"",
        ),
        (
            "sleep",
            KindPolicy {
                concurrency_max: Some(1),
                rate_window_ms: Some(500),
                ..KindPolicy::default()
            },
            "rate_window_ms is set without rate_max",
        ),
    ] {
        let e = refused_start::<LeaderNode>(
            dir.path(),
            "leader",
            ValidLeaderConfig::default(),
            kind,
            policy,
        )
        .await;
        assert!(e.contains(says), "{e}");
    }
}

/// Starts a one-node cluster of `mode` whose config gives `kind` the
/// `policy`, which it must refuse; the error.
async fn refused_start<N: cohort_core::Node + Send + 'static>(
    dir: &std::path::Path,
    mode: &str,
    mode_config: N::Config,
    kind: &str,
    policy: KindPolicy,
) -> String {
    let peers = Peers::new(NodeId(1), [NodeId(1)], 2, Limits::default()).unwrap();
    let mut config = RuntimeConfig::new("policy-test", mode, peers, BTreeMap::new(), dir);
    config.kind_policies = BTreeMap::from([(kind.to_string(), policy)]);
    let listeners = Listeners {
        peer: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let started = cohort_runtime::start::<N>(
        config,
        mode_config,
        NodeOptions {
            registry: Registry::with_builtins(false),
            ..NodeOptions::default()
        },
        listeners,
    )
    .await;
    match started {
        Ok(_) => panic!("a {mode} node started with a policy for {kind:?} it should refuse"),
        Err(e) => e.to_string(),
    }
}
