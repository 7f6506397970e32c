//! Dedupe keys over real nodes in both consensus modes: while the key's
//! task is pending or running, a submit under the key (another body, at
//! another node) names it and creates nothing; once it is final, the next
//! submit creates the key's next generation. Malformed keys and a key
//! combined with an `Idempotency-Key` are refused and create nothing.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::dedupe::DedupeKey;
use cohort_core::Node;
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{CallError, Client, UniqueSubmit};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::RunningNode;
use real::echo;
use serde_json::Value;
use std::time::Duration;

fn sleep_ms(ms: u64) -> SubmitBody {
    SubmitBody {
        kind: "sleep".into(),
        payload: Some(ms.to_string()),
        ..echo("")
    }
}

fn client(node: &RunningNode) -> Client {
    Client::new(&node.http_addr().to_string())
}

/// `submit_unique`, retrying while the cluster is settling (no leader yet).
async fn unique(node: &RunningNode, key: &str, body: &SubmitBody) -> UniqueSubmit {
    for _ in 0..50 {
        match client(node).submit_unique(key, body).await {
            Ok(r) => return r,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("submit under {key}: {e}"),
        }
    }
    panic!("no answer to a submit under {key}");
}

/// The term node 1 is in (leader mode; `None` elsewhere).
async fn term(node: &RunningNode) -> Option<u64> {
    client(node).cluster().await.unwrap()["term"].as_u64()
}

/// A raw `POST /v1/tasks` with `headers`: (status, body).
async fn post(node: &RunningNode, headers: &[(&str, &[u8])], body: &SubmitBody) -> (u16, Value) {
    let mut r = reqwest::Client::new().post(format!("http://{}/v1/tasks", node.http_addr()));
    for (name, value) in headers {
        r = r.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let r = r.json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `leader`: every submit, wherever sent, is run by the leader (a
/// follower redirects the whole submit there).
async fn check<N: Node + Send + 'static>(mode: &str, config: N::Config, leader: bool) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::cluster::<N>(dir.path(), 3, mode, config, 1_000).await;
    let key = DedupeKey::new(b"nightly-report").unwrap();
    let first = unique(&nodes[0], "nightly-report", &sleep_ms(1500)).await;
    let term_before = term(&nodes[0]).await;
    assert!(!first.deduplicated, "{first:?}");
    assert_eq!(first.generation, 0);
    assert_eq!(first.id, key.task_id(0).to_string());

    // While it sleeps: another body, at another node, gets the same task.
    let second = unique(&nodes[2], "nightly-report", &echo("other")).await;
    assert!(second.deduplicated, "{second:?}");
    assert_eq!(second.id, first.id);
    assert_eq!(second.generation, 0);
    assert!(
        matches!(second.state.as_deref(), Some("pending" | "running")),
        "{second:?}"
    );
    // Refusals create nothing: a malformed key, a key with an
    // Idempotency-Key, a key with a body id.
    for (headers, why) in [
        (vec![("Dedupe-Key", &b"two words"[..])], "not visible ASCII"),
        (
            vec![
                ("Dedupe-Key", &b"nightly-report"[..]),
                ("Idempotency-Key", b"x"),
            ],
            "both keys",
        ),
    ] {
        let (status, bad) = post(&nodes[1], &headers, &echo("x")).await;
        assert_eq!(
            (status, bad["code"].as_str()),
            (400, Some("malformed")),
            "{why}: {bad}"
        );
    }
    let with_id = SubmitBody {
        id: Some("abc".into()),
        ..echo("x")
    };
    let (status, bad) = post(&nodes[1], &[("Dedupe-Key", b"other-key")], &with_id).await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("malformed")),
        "{bad}"
    );
    let err = client(&nodes[1])
        .submit_unique("", &echo("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Api { status: 400, .. }), "{err}");

    // Once it is final, the key's next task is created, and is unique in turn.
    // A retryable answer (a leader change under a loaded machine) is
    // retried, as any client does.
    let mut done = None;
    for _ in 0..50 {
        match client(&nodes[1])
            .get(&first.id, false, Some(Duration::from_secs(20)))
            .await
        {
            Ok(t) => {
                done = Some(t);
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("reading {}: {e}", first.id),
        }
    }
    let done = done.expect("an answer within 5 s of retries");
    assert_eq!(done.state, "succeeded", "{done:?}");
    let third = unique(&nodes[1], "nightly-report", &sleep_ms(1500)).await;
    assert!(!third.deduplicated, "{third:?}");
    assert_eq!(third.generation, 1);
    assert_eq!(third.id, key.task_id(1).to_string());
    let fourth = unique(&nodes[0], "nightly-report", &sleep_ms(1500)).await;
    assert!(fourth.deduplicated, "{fourth:?}");
    assert_eq!(fourth.id, third.id);
    // A cancelled task is final too.
    client(&nodes[0]).cancel(&third.id).await.unwrap();
    let fifth = unique(&nodes[2], "nightly-report", &echo("after cancel")).await;
    assert_eq!(
        (fifth.deduplicated, fifth.generation),
        (false, 2),
        "{fifth:?}"
    );

    // Sent to every node in turn; in leader mode run by one node, the leader.
    let ran: Vec<u64> = [&first, &second, &third, &fourth, &fifth]
        .iter()
        .map(|r| r.node)
        .collect();
    if leader {
        // One leader ran them all, unless leadership moved during the test
        // (then each ran at the leader of its time, which this cannot tell).
        if term(&nodes[0]).await == term_before {
            assert!(ran.iter().all(|n| *n == ran[0]), "{ran:?}");
        } else {
            eprintln!("leadership changed during the test: not checking {ran:?}");
        }
    } else {
        assert_eq!(ran, vec![1, 3, 2, 1, 3], "each node runs what it receives");
    }

    let listing = client(&nodes[0]).list_all(None, 1000).await.unwrap();
    let mut ids: Vec<String> = listing.tasks.into_iter().map(|t| t.id).collect();
    ids.sort();
    let mut expected: Vec<String> = (0..3).map(|g| key.task_id(g).to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected, "three generations, nothing else");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedupe_key_keeps_one_live_task_in_leader_mode() {
    check::<LeaderNode>("leader", ValidLeaderConfig::default(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedupe_key_keeps_one_live_task_in_leaderless_mode() {
    check::<LeaderlessNode>("leaderless", LeaderlessConfig::default(), false).await;
}
