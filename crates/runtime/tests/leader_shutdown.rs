//! Graceful shutdown of a real leader-mode node: a leader transfers
//! leadership before it stops, so the cluster is never left without one.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use cohort_core::{Limits, NodeId, Peers};
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_runtime::client::Client;
use cohort_runtime::http::SubmitBody;
use cohort_runtime::{Listeners, NodeOptions, Registry, RunningNode, RuntimeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

async fn leader_cluster(dir: &std::path::Path, grace_ms: u64) -> Vec<RunningNode> {
    let mut listeners = BTreeMap::new();
    let mut peer_addrs: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
    let mut http_addrs = BTreeMap::new();
    for i in 1..=3 {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peer_addrs.insert(NodeId(i), peer.local_addr().unwrap());
        http_addrs.insert(NodeId(i), http.local_addr().unwrap());
        listeners.insert(NodeId(i), (peer, http));
    }
    let mut nodes = Vec::new();
    for (id, (peer, http)) in listeners {
        let peers = Peers::new(id, peer_addrs.keys().copied(), 2, Limits::default()).unwrap();
        let others = peer_addrs
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut config = RuntimeConfig::new("shutdown-test", "leader", peers, others, dir);
        config.http_addrs = http_addrs.clone();
        config.shutdown_grace_ms = grace_ms;
        let options = NodeOptions {
            registry: Registry::with_builtins(false),
            rng_seed: Some(id.0),
            ..NodeOptions::default()
        };
        let node = cohort_runtime::start::<LeaderNode>(
            config,
            ValidLeaderConfig::default(),
            options,
            Listeners { peer, http },
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    nodes
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

fn echo(payload: &str) -> SubmitBody {
    SubmitBody {
        id: None,
        kind: "echo".into(),
        payload: Some(payload.into()),
        payload_base64: None,
        timeout_ms: None,
        max_attempts: None,
    }
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
