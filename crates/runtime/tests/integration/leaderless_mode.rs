//! The runtime driving the real leaderless mode: a node lists only the
//! tasks it replicates, and a cluster-wide listing merges every member's.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::Client;
use real::{echo, http_get};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_listing_merges_every_replica_and_survives_two_dead_members() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = real::cluster::<LeaderlessNode>(
        dir.path(),
        5,
        "leaderless",
        LeaderlessConfig::default(),
        0,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let at = Client::new(&nodes[i % 5].http_addr().to_string());
        let mut submitted = None;
        // Membership may still be forming: a submit is retried while the
        // node says it cannot reach enough replicas.
        for _ in 0..100 {
            match at.submit(&echo(&i.to_string())).await {
                Ok(id) => {
                    submitted = Some(id);
                    break;
                }
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("submit refused: {e}"),
            }
        }
        let id = submitted.expect("submitted within 5 s");
        let t = at
            .get(&id, false, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(t.state, "succeeded", "{t:?}");
        ids.push(id);
    }
    ids.sort_by_key(|id| u128::from_str_radix(id, 16).unwrap());

    // One node holds only its replicas' tasks, and says so.
    let (status, body) = http_get(nodes[0].http_addr(), "/v1/tasks?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["complete"], false);
    let held = page["tasks"].as_array().unwrap().len();
    assert!(
        held < ids.len(),
        "with R=3 of 5 a node holds a part: {held}"
    );

    let client = Client::new(&nodes[0].http_addr().to_string());
    let listing = client.list_all(Some("succeeded"), 1000).await.unwrap();
    let listed: Vec<String> = listing.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(listed, ids, "every task exactly once, in id order");
    assert!(listing.unreachable.is_empty() && !listing.truncated);

    // Two members gone: every task still has a live replica (R=3).
    nodes.pop().unwrap().kill().await;
    nodes.pop().unwrap().kill().await;
    // A surviving replica may not have learned a task's final value yet
    // (the Learn is in flight, or comes by anti-entropy): wait for it.
    let mut listing = client.list_all(Some("succeeded"), 1000).await.unwrap();
    for _ in 0..100 {
        if listing.tasks.len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        listing = client.list_all(Some("succeeded"), 1000).await.unwrap();
    }
    let listed: Vec<String> = listing.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(listed, ids);
    let mut gone: Vec<u64> = listing.unreachable.iter().map(|(n, _)| *n).collect();
    gone.sort();
    assert_eq!(gone, vec![4, 5]);
    let cut = client.list_all(Some("succeeded"), 5).await.unwrap();
    assert_eq!(cut.tasks.len(), 5);
    assert!(cut.truncated);
    assert_eq!(cut.tasks[0].id, ids[0]);
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_once_every_task_is_durable_and_resending_it_creates_nothing_twice()
{
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::cluster_with::<LeaderlessNode>(
        dir.path(),
        5,
        "leaderless",
        LeaderlessConfig::default(),
        |_, c| c.peers.limits.batch_tasks_max = 20,
    )
    .await;
    real::check_batch_semantics(nodes[0].http_addr(), 20).await;
    for n in nodes {
        n.kill().await;
    }
}
