//! Authentication and encryption against real nodes: bearer tokens and
//! roles on the API, mutual TLS between peers (a foreign CA is refused at
//! the handshake), TLS on the API, and a secure 3-node cluster running a task.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::common;

use cohort_core::{Limits, NodeId, Peers};
use cohort_runtime::auth::Tokens;
use cohort_runtime::client::{CallError, Client, ClientOptions};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::tls::{DevCerts, HttpTls, PeerTls};
use cohort_runtime::transport::{write_frame, Hello, MAGIC, PROTOCOL_VERSION};
use cohort_runtime::{Listeners, NodeOptions, Registry, RunningNode, RuntimeConfig};
use cohort_static::{StaticConfig, StaticNode};
use common::{eventually, Cluster, ToyNode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const READ: &str = "read-token-0123456789";
const SUBMIT: &str = "submit-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn tokens() -> Arc<Tokens> {
    Arc::new(Tokens::parse(&format!("read {READ}\nsubmit {SUBMIT}\nadmin {ADMIN}\n")).unwrap())
}

fn body(kind: &str, payload: &str) -> SubmitBody {
    SubmitBody {
        id: None,
        kind: kind.into(),
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

async fn start_toy(c: &mut Cluster, id: NodeId, config: RuntimeConfig) -> RunningNode {
    let peer = match c.peer_listeners.remove(&id) {
        Some(l) => l,
        None => TcpListener::bind(c.peer_addrs[&id]).await.unwrap(),
    };
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = NodeOptions {
        registry: Registry::with_builtins(false),
        note_observer: None,
        rng_seed: Some(id.0),
    };
    cohort_runtime::start::<ToyNode>(config, (), options, Listeners { peer, http })
        .await
        .unwrap()
}

fn api_error(e: CallError) -> (u16, String) {
    match e {
        CallError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_the_api_with_401_and_403_by_role() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let mut config = c.config(NodeId(1));
    config.security.tokens = Some(tokens());
    let n = start_toy(&mut c, NodeId(1), config).await;
    let addr = n.http_addr().to_string();
    let with = |t: Option<&str>| {
        Client::with_options(
            &addr,
            ClientOptions {
                token: t.map(String::from),
                ..ClientOptions::default()
            },
        )
        .unwrap()
    };
    let (anon, reader, submitter, admin) = (
        with(None),
        with(Some(READ)),
        with(Some(SUBMIT)),
        with(Some(ADMIN)),
    );
    // Public: health and the API document.
    anon.health().await.unwrap();
    // No token, or an unknown one: 401 with the JSON error shape.
    assert_eq!(
        api_error(anon.submit(&body("echo", "x")).await.unwrap_err()),
        (401, "unauthorized".into())
    );
    assert_eq!(
        api_error(
            with(Some("not-a-known-token-at-all"))
                .cluster()
                .await
                .unwrap_err()
        ),
        (401, "unauthorized".into())
    );
    let raw = reqwest::Client::new();
    let r = raw
        .get(format!("http://{addr}/v1/cluster"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"cohort\"");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unauthorized");
    assert!(!v.to_string().contains("token-0123"));
    // Metrics need a token too.
    let r = raw
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A read token cannot submit: 403.
    assert_eq!(
        api_error(reader.submit(&body("echo", "x")).await.unwrap_err()),
        (403, "forbidden".into())
    );
    // A submit token can submit and read but not cancel.
    let id = submitter.submit(&body("echo", "hi")).await.unwrap();
    let t = reader
        .get(&id, false, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(t.state, "succeeded");
    assert_eq!(
        api_error(submitter.cancel(&id).await.unwrap_err()),
        (403, "forbidden".into())
    );
    // An admin token can cancel (a finished task stays as it is).
    assert_eq!(admin.cancel(&id).await.unwrap().state, "succeeded");
    // Ring changes need admin; reading the ring needs read. This toy mode
    // has no ring, so a request that gets through is refused as such.
    assert_eq!(
        api_error(submitter.ring_join(1).await.unwrap_err()),
        (403, "forbidden".into())
    );
    assert_eq!(
        api_error(submitter.ring_remove(1).await.unwrap_err()),
        (403, "forbidden".into())
    );
    assert_eq!(
        api_error(anon.ring().await.unwrap_err()),
        (401, "unauthorized".into())
    );
    assert_eq!(
        api_error(reader.ring().await.unwrap_err()),
        (404, "not_supported".into())
    );
    assert_eq!(
        api_error(admin.ring_join(1).await.unwrap_err()),
        (404, "not_supported".into())
    );
    let m = n.metrics();
    assert!(
        m.counter(
            "cohort_http_auth_refused_total",
            "reason=\"unauthenticated\""
        ) >= 5
    );
    assert_eq!(
        m.counter("cohort_http_auth_refused_total", "reason=\"forbidden\""),
        4
    );
    n.shutdown().await.unwrap();
}

/// A 2-node toy cluster where node 2's certificate comes from `certs_2`.
async fn tls_pair(certs_1: &DevCerts, certs_2: &DevCerts) -> (Cluster, RunningNode, RunningNode) {
    let mut c = Cluster::new(2, Limits::default()).await;
    let mut c1 = c.config(NodeId(1));
    c1.security.peer_tls = Some(PeerTls::new(&certs_1.node_pem(NodeId(1)).unwrap()).unwrap());
    let mut c2 = c.config(NodeId(2));
    c2.security.peer_tls = Some(PeerTls::new(&certs_2.node_pem(NodeId(2)).unwrap()).unwrap());
    let n1 = start_toy(&mut c, NodeId(1), c1).await;
    let n2 = start_toy(&mut c, NodeId(2), c2).await;
    (c, n1, n2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_certificates_of_the_cluster_ca_connect_over_mutual_tls() {
    let certs = DevCerts::generate("t", &[NodeId(1), NodeId(2)], &[]).unwrap();
    let (_c, n1, n2) = tls_pair(&certs, &certs).await;
    let m1 = n1.metrics();
    let m2 = n2.metrics();
    // The toy mode pings its peers: both directions come up.
    assert!(
        eventually(Duration::from_secs(5), || {
            m1.counter("cohort_peer_messages_received_total", "peer=\"n2\"") > 0
                && m2.counter("cohort_peer_messages_received_total", "peer=\"n1\"") > 0
        })
        .await
    );
    assert_eq!(
        m1.counter(
            "cohort_peer_connections_rejected_total",
            "reason=\"tls_refused\""
        ),
        0
    );
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_foreign_ca_certificate_or_none_is_refused_at_the_handshake() {
    let ours = DevCerts::generate("ours", &[NodeId(1), NodeId(2)], &[]).unwrap();
    let foreign = DevCerts::generate("theirs", &[NodeId(1), NodeId(2)], &[]).unwrap();
    let (c, n1, n2) = tls_pair(&ours, &foreign).await;
    let m1 = n1.metrics();
    let m2 = n2.metrics();
    // Each refuses the other at the TLS handshake, before any cohort frame.
    assert!(
        eventually(Duration::from_secs(5), || {
            m1.counter(
                "cohort_peer_connections_rejected_total",
                "reason=\"tls_refused\"",
            ) > 0
                && m2.counter(
                    "cohort_peer_connections_rejected_total",
                    "reason=\"tls_refused\"",
                ) > 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        m1.counter("cohort_peer_messages_received_total", "peer=\"n2\""),
        0
    );
    assert_eq!(
        m2.counter("cohort_peer_messages_received_total", "peer=\"n1\""),
        0
    );
    // A dialer without TLS at all (a plain cohort handshake) is refused too.
    let before = m1.counter(
        "cohort_peer_connections_rejected_total",
        "reason=\"tls_refused\"",
    );
    let mut s = TcpStream::connect(c.peer_addrs[&NodeId(1)]).await.unwrap();
    let hello = cohort_core::encode(&Hello {
        magic: MAGIC,
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "test-cluster".into(),
        from: NodeId(2),
        to: NodeId(1),
    });
    let _ = write_frame(&mut s, &hello).await;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a plain-TCP dialer was left connected");
    assert!(
        eventually(Duration::from_secs(2), || m1.counter(
            "cohort_peer_connections_rejected_total",
            "reason=\"tls_refused\""
        ) > before)
        .await
    );
    // The node still serves its API.
    Client::new(&n1.http_addr().to_string())
        .health()
        .await
        .unwrap();
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_another_members_id_than_its_certificate_names_is_refused() {
    let certs = DevCerts::generate("t", &[NodeId(1), NodeId(2), NodeId(3)], &[]).unwrap();
    let mut c = Cluster::new(3, Limits::default()).await;
    let mut c1 = c.config(NodeId(1));
    c1.security.peer_tls = Some(PeerTls::new(&certs.node_pem(NodeId(1)).unwrap()).unwrap());
    // Node 2 runs with node 3's certificate (same CA): it may not say it is node 2.
    let mut c2 = c.config(NodeId(2));
    c2.security.peer_tls = Some(PeerTls::new(&certs.node_pem(NodeId(3)).unwrap()).unwrap());
    let n1 = start_toy(&mut c, NodeId(1), c1).await;
    let n2 = start_toy(&mut c, NodeId(2), c2).await;
    let m1 = n1.metrics();
    assert!(
        eventually(Duration::from_secs(5), || m1.counter(
            "cohort_peer_connections_rejected_total",
            "reason=\"wrong_certificate\""
        ) > 0)
        .await
    );
    assert_eq!(
        m1.counter("cohort_peer_messages_received_total", "peer=\"n2\""),
        0
    );
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_client_against_a_tls_api_fails_cleanly_and_a_tls_client_gets_through() {
    let certs = DevCerts::generate("t", &[NodeId(1)], &[]).unwrap();
    let pem = certs.node_pem(NodeId(1)).unwrap();
    let mut c = Cluster::new(1, Limits::default()).await;
    let mut config = c.config(NodeId(1));
    config.security.http_tls = Some(HttpTls::new(&pem.cert, &pem.key, Some(&pem.ca)).unwrap());
    let n = start_toy(&mut c, NodeId(1), config).await;
    let addr = n.http_addr().to_string();
    // Plain HTTP: the TLS handshake fails, the client gets a transport error.
    match Client::new(&addr).health().await {
        Err(CallError::Transport(_)) => {}
        other => panic!("plain HTTP against TLS: {other:?}"),
    }
    // TLS without the client certificate the node requires: refused.
    let no_cert = Client::with_options(
        &addr,
        ClientOptions {
            ca_pem: Some(pem.ca.clone()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        no_cert.health().await,
        Err(CallError::Transport(_))
    ));
    // TLS that trusts another CA: refused by the client.
    let other = DevCerts::generate("other", &[NodeId(1)], &[]).unwrap();
    let wrong_ca = Client::with_options(
        &addr,
        ClientOptions {
            ca_pem: Some(other.ca_cert.clone().into_bytes()),
            identity_pem: Some((
                certs.client.0.clone().into_bytes(),
                certs.client.1.clone().into_bytes(),
            )),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        wrong_ca.health().await,
        Err(CallError::Transport(_))
    ));
    // The right CA and a client certificate: served.
    let good = Client::with_options(
        &addr,
        ClientOptions {
            ca_pem: Some(pem.ca.clone()),
            identity_pem: Some((
                certs.client.0.clone().into_bytes(),
                certs.client.1.clone().into_bytes(),
            )),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert!(good.base().starts_with("https://"));
    good.health().await.unwrap();
    let id = good.submit(&body("echo", "over tls")).await.unwrap();
    let t = good
        .get(&id, false, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(t.result.as_deref(), Some("over tls"));
    let m = n.metrics();
    assert!(
        m.counter(
            "cohort_http_tls_refused_total",
            "reason=\"handshake_failed\""
        ) >= 2
    );
    n.shutdown().await.unwrap();
}

/// Three static nodes with API tokens, TLS on the API and mutual TLS
/// between peers, `coordinator` deciding.
async fn secure_static_cluster(
    dir: &std::path::Path,
    certs: &DevCerts,
    coordinator: NodeId,
) -> Vec<RunningNode> {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let mut listeners = BTreeMap::new();
    let mut peer_addrs: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
    let mut http_addrs = BTreeMap::new();
    for id in ids {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peer_addrs.insert(id, peer.local_addr().unwrap());
        http_addrs.insert(id, http.local_addr().unwrap());
        listeners.insert(id, (peer, http));
    }
    let mut nodes = Vec::new();
    for (id, (peer, http)) in listeners {
        let peers = Peers::new(id, peer_addrs.keys().copied(), 2, Limits::default()).unwrap();
        let others = peer_addrs
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut config = RuntimeConfig::new("secure", "static", peers, others, dir);
        config.http_addrs = http_addrs.clone();
        let pem = certs.node_pem(id).unwrap();
        config.security.tokens = Some(tokens());
        config.security.peer_tls = Some(PeerTls::new(&pem).unwrap());
        config.security.http_tls = Some(HttpTls::new(&pem.cert, &pem.key, None).unwrap());
        let options = NodeOptions {
            registry: Registry::with_builtins(false),
            ..NodeOptions::default()
        };
        let static_config = StaticConfig {
            coordinator: Some(coordinator),
            ..StaticConfig::default()
        };
        nodes.push(
            cohort_runtime::start::<StaticNode>(
                config,
                static_config,
                options,
                Listeners { peer, http },
            )
            .await
            .unwrap(),
        );
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_three_node_static_cluster_runs_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let certs = DevCerts::generate("secure", &[NodeId(1), NodeId(2), NodeId(3)], &[]).unwrap();
    let nodes = secure_static_cluster(dir.path(), &certs, NodeId(1)).await;
    let client = |node: &RunningNode| {
        Client::with_options(
            &node.http_addr().to_string(),
            ClientOptions {
                token: Some(SUBMIT.into()),
                ca_pem: Some(certs.ca_cert.clone().into_bytes()),
                identity_pem: None,
            },
        )
        .unwrap()
    };
    // Submitted through a worker: the client follows the https redirect to
    // the coordinator with its token.
    let id = client(&nodes[1])
        .submit(&body("hash", r#"{"rounds":1,"data":"x"}"#))
        .await
        .unwrap();
    let t = client(&nodes[2])
        .get(&id, false, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(t.state, "succeeded", "{t:?}");
    let cluster = client(&nodes[0]).cluster().await.unwrap();
    for m in cluster["members"].as_array().unwrap() {
        assert_eq!(m["connected"], true, "{m}");
    }
    for n in nodes {
        assert_eq!(
            n.metrics().counter(
                "cohort_peer_connections_rejected_total",
                "reason=\"tls_refused\""
            ),
            0
        );
        n.shutdown().await.unwrap();
    }
}

/// A schedule's links run on whichever node they are assigned to. On one
/// that does not decide they forward their requests to the coordinator
/// over the (mutually authenticated) peer transport: before, they went to
/// its HTTP API, which in a cluster with tokens and TLS refused a node that
/// holds no credential, so every link on a worker failed and ticks fired
/// only when one happened to run on the coordinator. Here the coordinator
/// is node 3 and idle ties go to node 1, so links run on a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_links_on_a_worker_of_a_secure_cluster_forward_over_the_peer_transport() {
    use cohort_core::schedule::{IdTag, ScheduleName};
    use cohort_runtime::http::ScheduleBody;

    const EVERY_MS: u64 = 200;
    const TICKS: u64 = 6;
    let dir = tempfile::tempdir().unwrap();
    let certs = DevCerts::generate("secure", &[NodeId(1), NodeId(2), NodeId(3)], &[]).unwrap();
    let coordinator = NodeId(3);
    let nodes = secure_static_cluster(dir.path(), &certs, coordinator).await;
    let admin = Client::with_options(
        &nodes[0].http_addr().to_string(),
        ClientOptions {
            token: Some(ADMIN.into()),
            ca_pem: Some(certs.ca_cert.clone().into_bytes()),
            identity_pem: None,
        },
    )
    .unwrap();
    let schedule = ScheduleBody {
        name: "secure-tick".into(),
        every_ms: Some(EVERY_MS),
        start_ms: None,
        cron: None,
        overlap: Some("allow".into()),
        catch_up_window_ms: Some(60_000),
        task: body("echo", "tick"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let pause = || async {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the schedule did not fire its ticks within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while let Err(e) = admin.schedule_create(&schedule).await {
        assert!(e.is_retryable(), "create refused: {e}");
        pause().await;
    }
    let from = loop {
        match admin.schedule_get("secure-tick").await {
            Ok(v) if v.started => break v.first_tick_ms.expect("a started schedule's first tick"),
            _ => pause().await,
        }
    };
    let name = ScheduleName::new("secure-tick").unwrap();
    let ticks: Vec<u64> = (0..TICKS).map(|i| from + i * EVERY_MS).collect();
    for &t in &ticks {
        let id = name.task_id(IdTag::Fire(t)).to_string();
        while admin.get(&id, false, None).await.is_err() {
            pause().await;
        }
    }
    // The links that fired them (a late link fires every tick due, so
    // not every tick has one of its own) succeeded at their first attempt.
    let links = std::iter::once(IdTag::First).chain(ticks[1..].iter().map(|&t| IdTag::Link(t)));
    let mut runners = Vec::new();
    for tag in links {
        let id = name.task_id(tag).to_string();
        let v = match admin.get(&id, false, Some(Duration::from_secs(10))).await {
            Err(CallError::Api { status: 404, .. }) => continue,
            r => r.unwrap(),
        };
        assert_eq!(v.state, "succeeded", "{v:?}");
        let events = admin.events(&id, false).await.unwrap();
        assert!(
            events.events.iter().all(|e| e.event != "attempt_failed"),
            "a link failed an attempt: {events:?}"
        );
        runners.extend(
            events
                .events
                .iter()
                .filter(|e| e.event == "assigned")
                .filter_map(|e| e.node),
        );
    }
    assert!(
        runners.iter().any(|&n| n != coordinator.0),
        "no link ran on a worker: {runners:?}"
    );
    let served = nodes[2]
        .metrics()
        .counter("cohort_forwards_total", "outcome=\"served\"");
    assert!(served > 0, "the coordinator served no forwarded request");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
