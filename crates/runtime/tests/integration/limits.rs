//! Concurrency and rate limits on real clusters: in leader and static mode
//! the runs of a key never overlap beyond its `concurrency_max` and its
//! starts keep to `rate_max` per window, by the decision stamps in each
//! task's events, while tasks of other keys run beside them; a kind's
//! policy limit shows on its tasks. The leaderless mode keeps them too,
//! through a permit record per key; it refuses a limit larger than a
//! permit record holds.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::NodeId;
use cohort_runtime::client::{Client, TaskEventsView};
use cohort_runtime::config::KindPolicy;
use cohort_runtime::http::{LimitBody, SubmitBody};
use cohort_runtime::RuntimeConfig;
use real::{echo, finished, submit, Mode};
use std::collections::BTreeMap;

/// Every node: `hash` tasks carry their kind's limit of two at a time.
fn tweak(_: NodeId, c: &mut RuntimeConfig) {
    c.kind_policies = BTreeMap::from([(
        "hash".to_string(),
        KindPolicy {
            concurrency_max: Some(2),
            ..KindPolicy::default()
        },
    )]);
}

fn limited(body: SubmitBody, limit: LimitBody) -> SubmitBody {
    SubmitBody {
        limit: Some(limit),
        ..body
    }
}

fn sleep_ms(ms: u64) -> SubmitBody {
    SubmitBody {
        kind: "sleep".into(),
        payload: Some(ms.to_string()),
        ..echo("")
    }
}

/// The decision stamps of a finished task's only run: assigned, outcome.
fn run_of(v: &TaskEventsView) -> (u64, u64) {
    let at = |event: &str| {
        let found: Vec<u64> = v
            .events
            .iter()
            .filter(|e| e.event == event)
            .map(|e| e.at_ms)
            .collect();
        assert_eq!(found.len(), 1, "one {event} event: {v:?}");
        found[0]
    };
    (at("assigned"), at("succeeded"))
}

async fn limits_hold_back_their_key_only(nodes: &[cohort_runtime::RunningNode]) {
    let clients: Vec<Client> = nodes
        .iter()
        .map(|n| Client::new(&n.http_addr().to_string()))
        .collect();

    // One run of `tenant-a` at a time, whichever node took each submit;
    // unlimited sleeps run beside them.
    let one_at_a_time = LimitBody {
        key: "tenant-a".into(),
        concurrency_max: Some(1),
        ..LimitBody::default()
    };
    let mut limited_ids = Vec::new();
    let mut free_ids = Vec::new();
    for i in 0..4 {
        let client = &clients[i % clients.len()];
        limited_ids.push(submit(client, &limited(sleep_ms(300), one_at_a_time.clone())).await);
        free_ids.push(submit(client, &sleep_ms(300)).await);
    }
    let mut runs = Vec::new();
    for id in &limited_ids {
        let v = finished(&clients[0], id).await;
        assert_eq!(v.task.state, "succeeded", "{v:?}");
        assert_eq!(
            v.body["limit"],
            serde_json::json!({"key": "tenant-a", "concurrency_max": 1, "rate_max": 0, "rate_window_ms": 0}),
            "{}",
            v.body
        );
        runs.push(run_of(&v));
    }
    runs.sort();
    for pair in runs.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two runs of tenant-a overlap: {runs:?}"
        );
    }
    let span = runs[3].1 - runs[0].0;
    assert!(
        span >= 4 * 300,
        "four 300 ms runs one after another: {runs:?}"
    );
    // Unlimited tasks ran beside the limited ones: the limit held back
    // its key, not the cluster.
    let mut free = Vec::new();
    for id in &free_ids {
        let v = finished(&clients[0], id).await;
        assert_eq!(v.task.state, "succeeded", "{v:?}");
        free.push(run_of(&v));
    }
    let overlapping = free
        .iter()
        .filter(|f| runs.iter().any(|l| f.0 < l.1 && l.0 < f.1))
        .count();
    assert!(
        overlapping > 0,
        "no free task ran while tenant-a's did: {free:?} {runs:?}"
    );

    // Two starts of `tenant-b` per second.
    let two_per_second = LimitBody {
        key: "tenant-b".into(),
        rate_max: Some(2),
        rate_window_ms: Some(1_000),
        ..LimitBody::default()
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = limited(echo(&format!("r{i}")), two_per_second.clone());
        ids.push(submit(&clients[i % clients.len()], &body).await);
    }
    let mut starts = Vec::new();
    for id in &ids {
        let v = finished(&clients[0], id).await;
        assert_eq!(v.task.state, "succeeded", "{v:?}");
        starts.push(run_of(&v).0);
    }
    starts.sort();
    for w in starts.windows(3) {
        assert!(
            w[2] - w[0] >= 1_000,
            "three starts of tenant-b within a second: {starts:?}"
        );
    }

    // A kind's policy limit, shown under its key.
    let id = submit(
        &clients[1],
        &SubmitBody {
            kind: "hash".into(),
            ..echo("abc")
        },
    )
    .await;
    let v = finished(&clients[0], &id).await;
    assert_eq!(v.task.state, "succeeded", "{v:?}");
    assert_eq!(v.body["limit"]["key"], "kind:hash", "{}", v.body);
    assert_eq!(v.body["limit"]["concurrency_max"], 2, "{}", v.body);

    // Invalid limits are a 400 and create nothing.
    for (bad, says) in [
        (
            LimitBody {
                key: "".into(),
                concurrency_max: Some(1),
                ..LimitBody::default()
            },
            "limit key",
        ),
        (
            LimitBody {
                key: "k".into(),
                ..LimitBody::default()
            },
            "concurrency_max or rate_max",
        ),
        (
            LimitBody {
                key: "k".into(),
                concurrency_max: Some(1),
                rate_window_ms: Some(10),
                ..LimitBody::default()
            },
            "rate_window_ms is set without rate_max",
        ),
    ] {
        let body = SubmitBody {
            id: Some("0000000000000000000000000000beef".into()),
            ..limited(echo("x"), bad)
        };
        let e = clients[0].submit(&body).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
    let absent = clients[0]
        .get("0000000000000000000000000000beef", false, None)
        .await
        .unwrap_err();
    assert!(absent.to_string().contains("not found"), "{absent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_keeps_concurrency_and_rate_limits_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Leader, tweak, real::builtins).await;
    limits_hold_back_their_key_only(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_keeps_concurrency_and_rate_limits_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Static, tweak, real::builtins).await;
    limits_hold_back_their_key_only(&nodes).await;
    real::shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_keeps_concurrency_and_rate_limits_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::three(dir.path(), Mode::Leaderless, tweak, real::builtins).await;
    limits_hold_back_their_key_only(&nodes).await;
    // A limit above what a permit record holds is refused, not kept
    // loosely.
    let client = Client::new(&nodes[0].http_addr().to_string());
    let body = limited(
        echo("x"),
        LimitBody {
            key: "tenant".into(),
            concurrency_max: Some(5_000),
            ..LimitBody::default()
        },
    );
    let e = client.submit(&body).await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("permit_holders_max"), "{e}");
    real::shutdown_all(nodes).await;
}
