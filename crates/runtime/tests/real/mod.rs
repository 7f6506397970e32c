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
        let options = NodeOptions {
            registry: Registry::with_builtins(false),
            rng_seed: Some(id.0),
            ..NodeOptions::default()
        };
        let node = cohort_runtime::start::<N>(
            config,
            mode_config.clone(),
            options,
            Listeners { peer, http },
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    nodes
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
    }
}

/// A plain GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
