//! Clusters of a real mode in one process, for the runtime's tests.
#![allow(dead_code)]

use cohort_core::{Limits, Node, NodeId, Peers};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::{Listeners, NodeOptions, Registry, RunningNode, RuntimeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// `n` nodes of mode `N` on loopback, data under `dir`, every node knowing
/// every API address; node `i` has RNG seed `i`.
pub async fn cluster<N: Node + Send + 'static>(
    dir: &std::path::Path,
    n: u64,
    mode: &str,
    mode_config: N::Config,
    grace_ms: u64,
) -> Vec<RunningNode> {
    cluster_with::<N>(dir, n, mode, mode_config, |_, c| {
        c.shutdown_grace_ms = grace_ms
    })
    .await
}

/// [`cluster`], with `tweak` applied to each node's configuration last.
pub async fn cluster_with<N: Node + Send + 'static>(
    dir: &std::path::Path,
    n: u64,
    mode: &str,
    mode_config: N::Config,
    tweak: impl Fn(NodeId, &mut RuntimeConfig),
) -> Vec<RunningNode> {
    cluster_with_options::<N>(dir, n, mode, mode_config, tweak, builtins).await
}

/// [`cluster_with`], with each node's handlers and observer from `options`.
pub async fn cluster_with_options<N: Node + Send + 'static>(
    dir: &std::path::Path,
    n: u64,
    mode: &str,
    mode_config: N::Config,
    tweak: impl Fn(NodeId, &mut RuntimeConfig),
    options: impl Fn(NodeId) -> NodeOptions,
) -> Vec<RunningNode> {
    let mut listeners = BTreeMap::new();
    let mut peer_addrs: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
    let mut http_addrs = BTreeMap::new();
    for i in 1..=n {
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
        let mut config = RuntimeConfig::new(format!("{mode}-test"), mode, peers, others, dir);
        config.http_addrs = http_addrs.clone();
        tweak(id, &mut config);
        let node = cohort_runtime::start::<N>(
            config,
            mode_config.clone(),
            options(id),
            Listeners { peer, http },
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    nodes
}

/// A mode, for tests that run one body on a cluster of each.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Leader,
    Leaderless,
    Static,
}

/// Three nodes of `mode`, with its default settings, under `dir`
/// ([`cluster_with_options`]).
pub async fn three(
    dir: &std::path::Path,
    mode: Mode,
    tweak: impl Fn(NodeId, &mut RuntimeConfig),
    options: impl Fn(NodeId) -> NodeOptions,
) -> Vec<RunningNode> {
    match mode {
        Mode::Leader => {
            cluster_with_options::<cohort_leader::LeaderNode>(
                dir,
                3,
                "leader",
                cohort_leader::ValidLeaderConfig::default(),
                tweak,
                options,
            )
            .await
        }
        Mode::Leaderless => {
            cluster_with_options::<cohort_leaderless::LeaderlessNode>(
                dir,
                3,
                "leaderless",
                cohort_leaderless::LeaderlessConfig::default(),
                tweak,
                options,
            )
            .await
        }
        Mode::Static => {
            cluster_with_options::<cohort_static::StaticNode>(
                dir,
                3,
                "static",
                cohort_static::StaticConfig::default(),
                tweak,
                options,
            )
            .await
        }
    }
}

/// The options [`cluster_with`] gives each node: the built-in handlers
/// and RNG seed `id`.
pub fn builtins(id: NodeId) -> NodeOptions {
    NodeOptions {
        registry: Registry::with_builtins(false),
        rng_seed: Some(id.0),
        ..NodeOptions::default()
    }
}

/// Shuts every node down.
pub async fn shutdown_all(nodes: Vec<RunningNode>) {
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// An `echo` task.
pub fn echo(payload: &str) -> SubmitBody {
    SubmitBody {
        id: None,
        kind: "echo".into(),
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

/// Submits `body` through `client`, retrying what may succeed later
/// (no leader yet, a replica set still forming) for up to 10 s.
pub async fn submit(client: &cohort_runtime::client::Client, body: &SubmitBody) -> String {
    for _ in 0..200 {
        match client.submit(body).await {
            Ok(id) => return id,
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("submit refused: {e}"),
        }
    }
    panic!("no submit acknowledged within 10 s");
}

/// Waits up to 20 s for `id` to be final; its state and history.
pub async fn finished(
    client: &cohort_runtime::client::Client,
    id: &str,
) -> cohort_runtime::client::TaskEventsView {
    let t = client
        .get(id, false, Some(std::time::Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(t.is_final(), "{t:?}");
    client.events(id, false).await.unwrap()
}

/// A plain GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A batch of `n` echo tasks with fresh ids starting at `first`.
pub fn echo_batch(first: u128, n: usize) -> Vec<SubmitBody> {
    (0..n as u128)
        .map(|i| SubmitBody {
            id: Some(format!("{:032x}", first + i)),
            ..echo(&format!("b{i}"))
        })
        .collect()
}

/// POSTs raw `body` to `/v1/tasks:batch`: status and JSON answer.
pub async fn post_batch(addr: SocketAddr, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/tasks:batch"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The ids of every task the cluster lists (through `client`).
pub async fn listed(client: &cohort_runtime::client::Client) -> Vec<String> {
    let l = client.list_all(None, 100_000).await.unwrap();
    assert!(l.unreachable.is_empty() && !l.truncated, "{l:?}");
    l.tasks.into_iter().map(|t| t.id).collect()
}

/// Batch submits as a client sees them, against a running cluster whose
/// `batch_tasks_max` is `max` (and whose node `addr` takes submits): a
/// batch over the limit and a batch with one bad task are refused with
/// nothing created; a good batch is acknowledged with its ids in order,
/// every task then runs to the end and is listed once; the same batch
/// sent again is acknowledged again and creates nothing twice.
pub async fn check_batch_semantics(addr: SocketAddr, max: usize) {
    use cohort_runtime::client::{CallError, Client};
    use std::time::Duration;
    let client = Client::new(&addr.to_string());
    let json =
        |tasks: &[SubmitBody]| serde_json::to_vec(&serde_json::json!({ "tasks": tasks })).unwrap();
    let before = listed(&client).await;

    // One task over the limit: 413, named limit, nothing created.
    let over = echo_batch(0x1000, max + 1);
    let (status, v) = post_batch(addr, json(&over)).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (413, Some("too_many_tasks")),
        "{v}"
    );
    assert_eq!(v["limit"], max);

    // One bad task in the middle, each way a task can be bad: refused with
    // its index, nothing created.
    let mut bad_kind = echo_batch(0x2000, 5);
    bad_kind[3].kind = "no-such-kind".into();
    let (status, v) = post_batch(addr, json(&bad_kind)).await;
    assert_eq!(
        (status, v["code"].as_str(), v["index"].as_u64()),
        (422, Some("unknown_kind"), Some(3)),
        "{v}"
    );
    let mut zero_attempts = echo_batch(0x3000, 5);
    zero_attempts[1].max_attempts = Some(0);
    let (status, v) = post_batch(addr, json(&zero_attempts)).await;
    assert_eq!(
        (status, v["code"].as_str(), v["index"].as_u64()),
        (400, Some("invalid_task"), Some(1)),
        "{v}"
    );
    let mut raw: serde_json::Value = serde_json::json!({ "tasks": echo_batch(0x4000, 5) });
    raw["tasks"][2]["colour"] = serde_json::json!("blue");
    let (status, v) = post_batch(addr, serde_json::to_vec(&raw).unwrap()).await;
    assert_eq!(
        (status, v["code"].as_str(), v["index"].as_u64()),
        (400, Some("malformed"), Some(2)),
        "{v}"
    );
    let mut twice = echo_batch(0x5000, 5);
    twice[4].id = twice[0].id.clone();
    let (status, v) = post_batch(addr, json(&twice)).await;
    assert_eq!(
        (status, v["code"].as_str(), v["index"].as_u64()),
        (400, Some("invalid_task"), Some(4)),
        "{v}"
    );
    let (status, v) = post_batch(addr, b"{\"tasks\": []}".to_vec()).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        listed(&client).await,
        before,
        "a refused batch created tasks"
    );

    // A good batch: acknowledged once durable, ids in order.
    let good = echo_batch(0x6000, max);
    let want: Vec<String> = good.iter().map(|t| t.id.clone().unwrap()).collect();
    let mut ids = None;
    for _ in 0..100 {
        match client.submit_batch(&good).await {
            Ok(got) => {
                ids = Some(got);
                break;
            }
            // A leaderless cluster may still be forming: resend, as a
            // client would (same ids: nothing is created twice).
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("batch refused: {e}"),
        }
    }
    assert_eq!(ids.as_ref(), Some(&want));
    for id in &want {
        let t = client
            .get(id, false, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(t.state, "succeeded", "{t:?}");
    }
    // Resent: acknowledged again, nothing new.
    assert_eq!(client.submit_batch(&good).await.unwrap(), want);
    let mut expect = before.clone();
    expect.extend(want.iter().cloned());
    expect.sort_by_key(|id| u128::from_str_radix(id, 16).unwrap());
    assert_eq!(
        listed(&client).await,
        expect,
        "every task of the batch listed once"
    );

    // The same ids with other content: refused as a conflict, naming the task.
    let mut other = good.clone();
    other[2].payload = Some("different".into());
    match client.submit_batch(&other).await {
        // Leaderless: each task is written on its own; the others are
        // already there (durable), the conflicting one is named.
        Err(CallError::Api {
            status: 409,
            code,
            index: Some(2),
            durable,
            ..
        }) if code == "batch_incomplete" => {
            assert_eq!(durable.len(), want.len() - 1);
        }
        Err(CallError::Api {
            status: 409,
            index: Some(2),
            ..
        }) => {}
        r => panic!("a conflicting batch was answered {r:?}"),
    }
    assert_eq!(listed(&client).await, expect);
}

/// Now, in ms since the Unix epoch (the runtime's event times).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
