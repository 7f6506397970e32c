//! Ring changes through the HTTP API on real leaderless nodes: a spare
//! joins, a member leaves, every node's `GET /v1/ring` comes to show it,
//! and tasks keep finishing and stay readable; bad requests get typed
//! errors and change nothing; modes without a ring refuse.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::NodeId;
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{CallError, Client, RingInfo};
use cohort_runtime::RunningNode;
use real::echo;
use std::net::SocketAddr;
use std::time::Duration;

fn leaderless(ring: &[u64]) -> LeaderlessConfig {
    LeaderlessConfig {
        initial_ring: Some(ring.iter().copied().map(NodeId).collect()),
        ..LeaderlessConfig::default()
    }
}

fn client(n: &RunningNode) -> Client {
    Client::new(&n.http_addr().to_string())
}

/// `(status, code)` of an API error.
fn api_error(r: Result<RingInfo, CallError>) -> (u16, String) {
    match r {
        Err(CallError::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A raw request: status and JSON body.
async fn call(method: reqwest::Method, addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Submits an echo task at `at` (retrying while membership forms) and
/// waits until it succeeded; returns its id.
async fn run_task(at: &Client, payload: &str) -> String {
    for _ in 0..200 {
        match at.submit(&echo(payload)).await {
            Ok(id) => {
                let t = at
                    .get(&id, false, Some(Duration::from_secs(10)))
                    .await
                    .unwrap();
                assert_eq!(t.state, "succeeded", "{t:?}");
                assert_eq!(t.result.as_deref(), Some(payload));
                return id;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("submit refused: {e}"),
        }
    }
    panic!("no submit accepted within 200 tries");
}

/// Waits until every node's `GET /v1/ring` shows `members`; returns the
/// rings they show.
async fn every_ring_shows(nodes: &[RunningNode], members: &[u64]) -> Vec<RingInfo> {
    let mut rings = Vec::new();
    for n in nodes {
        let c = client(n);
        let mut seen = None;
        for _ in 0..400 {
            let r = c.ring().await.unwrap();
            if r.members == members {
                seen = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let Some(r) = seen else {
            panic!(
                "n{} never showed ring {members:?}: {:?}",
                n.id(),
                c.ring().await
            );
        };
        rings.push(r);
    }
    rings
}

/// Every task in `ids` reads as succeeded at every node (linearizable).
async fn all_readable(nodes: &[RunningNode], ids: &[String]) {
    for n in nodes {
        let c = client(n);
        for id in ids {
            let t = c.get(id, false, None).await.unwrap();
            assert_eq!(t.state, "succeeded", "n{}: {t:?}", n.id());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_joins_and_a_member_leaves_through_the_api_while_tasks_keep_finishing() {
    let dir = tempfile::tempdir().unwrap();
    // Node 4 is configured but outside the ring: a spare.
    let nodes =
        real::cluster::<LeaderlessNode>(dir.path(), 4, "leaderless", leaderless(&[1, 2, 3]), 0)
            .await;
    for r in every_ring_shows(&nodes, &[1, 2, 3]).await {
        assert_eq!((r.epoch, r.in_flight.clone()), (0, None), "{r:?}");
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(run_task(&client(&nodes[i % 4]), &format!("before-{i}")).await);
    }

    // The spare joins, asked at node 1: started (202) or already agreed (200).
    let asked = client(&nodes[0]).ring_join(4).await.unwrap();
    let change = asked.change.clone().unwrap();
    assert_eq!((change.op.as_str(), change.node), ("join", 4));
    assert_eq!(asked.reflected, Some(asked.members.contains(&4)));
    for r in every_ring_shows(&nodes, &[1, 2, 3, 4]).await {
        assert_eq!(r.epoch, 1, "{r:?}");
    }
    // Asking again changes nothing: the ring reflects it (200).
    let again = client(&nodes[2]).ring_join(4).await.unwrap();
    assert_eq!((again.epoch, again.reflected), (1, Some(true)));
    for i in 0..6 {
        ids.push(run_task(&client(&nodes[i % 4]), &format!("joined-{i}")).await);
    }
    all_readable(&nodes, &ids).await;

    // Node 2 leaves, asked at node 3, waiting until the ring reflects it.
    let left = client(&nodes[2])
        .ring_change(false, 2, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(left.reflected, Some(true), "{left:?}");
    assert_eq!((left.epoch, left.members.clone()), (2, vec![1, 3, 4]));
    for r in every_ring_shows(&nodes, &[1, 3, 4]).await {
        assert_eq!(r.epoch, 2, "{r:?}");
    }
    for i in 0..6 {
        ids.push(run_task(&client(&nodes[i % 4]), &format!("left-{i}")).await);
    }
    all_readable(&nodes, &ids).await;
    // The cluster-wide listing still has every task once.
    let listing = client(&nodes[0])
        .list_all(Some("succeeded"), 1000)
        .await
        .unwrap();
    let mut listed: Vec<String> = listing.tasks.into_iter().map(|t| t.id).collect();
    let mut want = ids.clone();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ring_requests_get_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Two nodes, a ring of node 1 alone.
    let nodes =
        real::cluster::<LeaderlessNode>(dir.path(), 2, "leaderless", leaderless(&[1]), 0).await;
    let c = client(&nodes[0]);
    let addr = nodes[0].http_addr();
    let unchanged = |r: RingInfo| {
        assert_eq!((r.epoch, r.members, r.in_flight), (0, vec![1], None));
    };

    assert_eq!(
        api_error(c.ring_join(9).await),
        (404, "not_a_member".into())
    );
    assert_eq!(
        api_error(c.ring_remove(9).await),
        (404, "not_a_member".into())
    );
    for (method, path) in [
        (reqwest::Method::POST, "/v1/ring/members/abc"),
        (reqwest::Method::DELETE, "/v1/ring/members/-1"),
        (
            reqwest::Method::POST,
            "/v1/ring/members/99999999999999999999",
        ),
        (reqwest::Method::POST, "/v1/ring/members/2?wait=soon"),
        (reqwest::Method::POST, "/v1/ring/members/2?colour=blue"),
    ] {
        let (status, v) = call(method, addr, path).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("malformed")),
            "{path}: {v}"
        );
    }
    // The ring never empties.
    let (status, v) = call(reqwest::Method::DELETE, addr, "/v1/ring/members/1").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("last_member")),
        "{v}"
    );
    unchanged(c.ring().await.unwrap());
    // Removing a node outside the ring: the ring reflects it already (200).
    let (status, v) = call(reqwest::Method::DELETE, addr, "/v1/ring/members/2").await;
    assert_eq!(
        (status, &v["reflected"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    let r = c.ring_remove(2).await.unwrap();
    assert_eq!((r.epoch, r.reflected), (0, Some(true)), "{r:?}");
    unchanged(c.ring().await.unwrap());

    // A good request after all that: node 2 joins.
    let r = c
        .ring_change(true, 2, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(
        (r.epoch, r.members, r.reflected),
        (1, vec![1, 2], Some(true))
    );
    every_ring_shows(&nodes, &[1, 2]).await;
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_agreed_stays_in_flight_and_another_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = real::cluster::<LeaderlessNode>(
        dir.path(),
        3,
        "leaderless",
        LeaderlessConfig::default(),
        0,
    )
    .await;
    every_ring_shows(&nodes, &[1, 2, 3]).await;
    // Two of three ring members gone: no majority can agree a change.
    nodes.pop().unwrap().kill().await;
    nodes.pop().unwrap().kill().await;
    let c = client(&nodes[0]);
    let r = c.ring_remove(3).await.unwrap();
    assert_eq!((r.reflected, r.epoch), (Some(false), 0), "{r:?}");
    let in_flight = r.in_flight.clone().unwrap();
    assert_eq!((in_flight.op.as_str(), in_flight.node), ("remove", 3));
    // The same change again finds it going on (and a wait ends with it
    // still under way); another one is refused.
    assert_eq!(c.ring_remove(3).await.unwrap().reflected, Some(false));
    let waited = c
        .ring_change(false, 3, Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!((waited.reflected, waited.epoch), (Some(false), 0));
    let (status, v) = call(
        reqwest::Method::DELETE,
        nodes[0].http_addr(),
        "/v1/ring/members/3",
    )
    .await;
    assert_eq!(
        (status, &v["reflected"]),
        (202, &serde_json::json!(false)),
        "{v}"
    );
    let (status, v) = call(
        reqwest::Method::DELETE,
        nodes[0].http_addr(),
        "/v1/ring/members/2",
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (409, Some("busy")), "{v}");
    assert_eq!(
        v["in_flight"],
        serde_json::json!({"op": "remove", "node": 3})
    );
    let shown = c.ring().await.unwrap();
    assert_eq!((shown.epoch, shown.members), (0, vec![1, 2, 3]));
    assert_eq!(shown.in_flight, Some(in_flight));
    for n in nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_refuses_ring_requests_as_not_supported() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        real::cluster::<LeaderNode>(dir.path(), 3, "leader", ValidLeaderConfig::default(), 0).await;
    let c = client(&nodes[0]);
    assert_eq!(api_error(c.ring().await), (404, "not_supported".into()));
    assert_eq!(
        api_error(c.ring_join(2).await),
        (404, "not_supported".into())
    );
    let (status, v) = call(
        reqwest::Method::DELETE,
        nodes[1].http_addr(),
        "/v1/ring/members/3",
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_supported")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("leader mode"), "{v}");
    for n in nodes {
        n.kill().await;
    }
}
