//! The runtime driving the real leader mode: graceful shutdown hands
//! leadership over; tasks are listed by state, page by page; `/metrics`
//! shows tasks by state and the core's election counters.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_runtime::client::Client;
use cohort_runtime::RunningNode;
use real::{echo, http_get};
use std::time::Duration;

async fn leader_cluster(dir: &std::path::Path, grace_ms: u64) -> Vec<RunningNode> {
    real::cluster::<LeaderNode>(dir, 3, "leader", ValidLeaderConfig::default(), grace_ms).await
}

/// `(role, term)` as a node reports it on `GET /v1/cluster`.
async fn role(node: &RunningNode) -> (String, u64) {
    let v = Client::new(&node.http_addr().to_string())
        .cluster()
        .await
        .unwrap();
    (
        v["role"].as_str().unwrap_or("?").to_string(),
        v["term"].as_u64().unwrap_or(0),
    )
}

async fn wait_for_leader(nodes: &[RunningNode]) -> usize {
    for _ in 0..500 {
        for (i, n) in nodes.iter().enumerate() {
            if role(n).await.0 == "leader" {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader elected within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shutting_down_gracefully_hands_over_before_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = leader_cluster(dir.path(), 3_000).await;
    let old = wait_for_leader(&nodes).await;
    let (_, old_term) = role(&nodes[old]).await;
    let client = Client::new(&nodes[old].http_addr().to_string());
    let id = client.submit(&echo("before")).await.unwrap();

    let leaving = nodes.remove(old);
    let metrics = leaving.metrics();
    leaving.shutdown().await.unwrap();
    assert_eq!(
        metrics.counter("cohort_shutdowns_total", "outcome=\"ready\""),
        1,
        "the old leader stopped without seeing a successor"
    );

    // The moment the old leader is gone a successor already leads, in a
    // newer term: no election timeout had to pass first.
    let mut leaders = Vec::new();
    for n in &nodes {
        let (r, term) = role(n).await;
        if r == "leader" {
            assert!(term > old_term, "leader of term {term}, old {old_term}");
            leaders.push(n);
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one successor leads at once");
    let client = Client::new(&leaders[0].http_addr().to_string());
    let t = client
        .get(&id, false, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        t.state, "succeeded",
        "the task acknowledged before the hand-over survives"
    );
    let after = client.submit(&echo("after")).await.unwrap();
    let t = client
        .get(&after, false, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(t.result.as_deref(), Some("after"));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_shutting_down_stops_at_once_and_the_leader_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = leader_cluster(dir.path(), 3_000).await;
    let leader = wait_for_leader(&nodes).await;
    let (_, term) = role(&nodes[leader]).await;
    let follower = (leader + 1) % nodes.len();
    let leaving = nodes.remove(follower);
    let metrics = leaving.metrics();
    leaving.shutdown().await.unwrap();
    assert_eq!(
        metrics.counter("cohort_shutdowns_total", "outcome=\"ready\""),
        1,
        "a follower has nothing to hand over and is ready at once"
    );
    let leader = if follower < leader {
        leader - 1
    } else {
        leader
    };
    assert_eq!(role(&nodes[leader]).await, ("leader".to_string(), term));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_by_state_page_by_page_and_counted_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = leader_cluster(dir.path(), 3_000).await;
    let leader = &nodes[wait_for_leader(&nodes).await];
    let client = Client::new(&leader.http_addr().to_string());
    let mut done = Vec::new();
    for i in 0..5 {
        let id = client.submit(&echo(&i.to_string())).await.unwrap();
        let t = client
            .get(&id, false, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(t.state, "succeeded");
        done.push(id);
    }
    let mut sleepy = echo("60000");
    sleepy.kind = "sleep".into();
    let running = client.submit(&sleepy).await.unwrap();
    // Wait until it is assigned.
    for _ in 0..500 {
        if client.get(&running, false, None).await.unwrap().state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Pages of two, following `next`, give every succeeded task once, in id order.
    let mut listed = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let (status, body) = http_get(
            leader.http_addr(),
            &format!("/v1/tasks?state=succeeded&limit=2{after}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["complete"], true, "{page}");
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 2);
        for t in tasks {
            assert_eq!(t["state"], "succeeded");
            listed.push(t["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    let mut expected = done.clone();
    expected.sort_by_key(|id| u128::from_str_radix(id, 16).unwrap());
    assert_eq!(listed, expected);

    let (_, body) = http_get(leader.http_addr(), "/v1/tasks?state=running").await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![running.as_str()]);
    assert!(page["next"].is_null());

    for bad in [
        "/v1/tasks?state=done",
        "/v1/tasks?limit=0",
        "/v1/tasks?limit=100000",
        "/v1/tasks?after=xyz",
        "/v1/tasks?colour=red",
    ] {
        let (status, body) = http_get(leader.http_addr(), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            e["error"].is_string() && e["code"].is_string(),
            "{bad}: {body}"
        );
    }

    let (_, text) = http_get(leader.http_addr(), "/metrics").await;
    assert!(
        text.contains("cohort_tasks{state=\"succeeded\"} 5"),
        "{text}"
    );
    assert!(text.contains("cohort_tasks{state=\"running\"} 1"), "{text}");
    assert!(text.contains("cohort_tasks{state=\"failed\"} 0"), "{text}");
    assert!(
        text.contains("cohort_protocol_events_total{event=\"terms_led\"} 1"),
        "{text}"
    );
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_entry_all_or_nothing_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = real::cluster_with::<LeaderNode>(
        dir.path(),
        3,
        "leader",
        ValidLeaderConfig::default(),
        |_, c| c.peers.limits.batch_tasks_max = 20,
    )
    .await;
    let leader = wait_for_leader(&nodes).await;
    // Sent to a follower: redirected to the leader like a single submit.
    let follower = (leader + 1) % nodes.len();
    real::check_batch_semantics(nodes[follower].http_addr(), 20).await;
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_to_the_leader_a_submit_was_redirected_to_until_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = leader_cluster(dir.path(), 3_000).await;
    let leader = wait_for_leader(&nodes).await;
    let follower = (leader + 1) % nodes.len();
    let asked = |n: &RunningNode| {
        n.metrics()
            .counter("cohort_inputs_total", "kind=\"client\"")
    };
    let client = Client::new(&nodes[follower].http_addr().to_string());
    client.submit(&echo("redirected")).await.unwrap();
    let (at_follower, at_leader) = (asked(&nodes[follower]), asked(&nodes[leader]));
    assert_eq!(at_follower, 1, "the first submit went to the follower");
    for i in 0..5 {
        client.submit(&echo(&format!("direct {i}"))).await.unwrap();
    }
    assert_eq!(
        asked(&nodes[follower]),
        at_follower,
        "later submits skip the follower's redirect"
    );
    assert_eq!(asked(&nodes[leader]), at_leader + 5);
    // Every other call still goes to the node the client was made for.
    let view = client.cluster().await.unwrap();
    assert_eq!(view["role"], "follower", "{view}");

    // The leader dies: the client goes back to its own node, which
    // redirects to (or, until one is elected, names no) new leader.
    nodes.remove(leader).kill().await;
    let follower = nodes
        .iter()
        .position(|n| n.http_addr().to_string() == client.base().trim_start_matches("http://"))
        .expect("the client's node still runs");
    let before = asked(&nodes[follower]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.submit(&echo("after the leader died")).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no submit accepted 10 s after the leader died: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        asked(&nodes[follower]) > before,
        "after the kept leader failed the client asked its own node again"
    );
    for n in nodes {
        n.kill().await;
    }
}

/// A leader answers a submit committed by its followers' acks without
/// waiting for the fsync of the batch that learns of the commit (the entry
/// is on a majority of disks already), and appends go out before its own
/// fsync; a lone voter, which commits entries of the very batch it writes,
/// answers only after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_precede_a_batchs_fsync_only_for_entries_already_durable() {
    let early = |n: &RunningNode| {
        let m = n.metrics();
        (
            m.counter("cohort_replies_before_fsync_total", ""),
            m.counter("cohort_sends_before_fsync_total", ""),
        )
    };
    for size in [3, 1] {
        let dir = tempfile::tempdir().unwrap();
        let nodes = real::cluster::<LeaderNode>(
            dir.path(),
            size,
            "leader",
            ValidLeaderConfig::default(),
            3_000,
        )
        .await;
        let leader = wait_for_leader(&nodes).await;
        let client = Client::new(&nodes[leader].http_addr().to_string());
        for i in 0..20 {
            client.submit(&echo(&format!("{size} {i}"))).await.unwrap();
        }
        let (replies, sends) = early(&nodes[leader]);
        if size > 1 {
            assert!(replies > 0, "no reply went out before its batch's fsync");
            assert!(sends > 0, "no append went out before the leader's fsync");
        } else {
            assert_eq!(
                (replies, sends),
                (0, 0),
                "a lone voter waits for its writes"
            );
        }
        for n in nodes {
            n.kill().await;
        }
    }
}
