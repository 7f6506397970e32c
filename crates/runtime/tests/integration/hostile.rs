//! Hostile input against real nodes, beyond the peer handshake cases in
//! `transport.rs`: malformed, oversized and oddly shaped API requests, a
//! truncated peer frame, a burst of a thousand connections, and data files
//! that are not this node's, slow-loris peers and HTTP clients. Each gets a
//! clear error or a closed connection, and the node keeps serving; where a
//! submit workload runs alongside ([`AckedWorkload`]), the simulator's G1
//! checker confirms no acknowledged task was lost.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::common;

use cohort_core::{ClientError, Epoch, Limits, NodeId, Task, TaskId, TaskState, Time};
use cohort_runtime::client::{CallError, Client, TaskView};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::transport::{
    read_frame, write_frame, Hello, HelloReply, MAGIC, PROTOCOL_VERSION,
};
use cohort_runtime::{Listeners, NodeOptions, Registry, RuntimeError};
use cohort_sim::checkers::Violations;
use cohort_sim::history::{History, HistoryEvent};
use common::{eventually, Cluster, ToyNode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn echo(payload: &str) -> SubmitBody {
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

async fn still_serves(client: &Client) {
    let id = client.submit(&echo("still here")).await.unwrap();
    let t = client
        .get(&id, false, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(t.result.as_deref(), Some("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_api_requests_get_typed_json_errors_and_the_node_keeps_serving() {
    let limits = Limits {
        payload_bytes_max: 1024,
        ..Limits::default()
    };
    let mut c = Cluster::new(1, limits).await;
    let n = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let work = AckedWorkload::start(n.http_addr(), NodeId(1));
    let base = format!("http://{}", n.http_addr());
    let raw = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        raw.post(format!("{base}/v1/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not JSON", b"kind=echo".to_vec(), 400, "malformed"),
        (
            "truncated JSON",
            br#"{"kind":"ec"#.to_vec(),
            400,
            "malformed",
        ),
        ("empty body", Vec::new(), 400, "malformed"),
        (
            "invalid UTF-8",
            b"{\"kind\":\"\xff\xfe\"}".to_vec(),
            400,
            "malformed",
        ),
        ("a JSON array", b"[1,2,3]".to_vec(), 400, "malformed"),
        ("deep nesting", nested.into_bytes(), 400, "malformed"),
        (
            "unknown field",
            br#"{"kind":"echo","colour":9}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "wrong type",
            br#"{"kind":"echo","timeout_ms":"soon"}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "negative number",
            br#"{"kind":"echo","max_attempts":-1}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "missing kind",
            br#"{"payload":"x"}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "id not hex",
            br#"{"id":"xyz","kind":"echo"}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "id too long",
            format!(r#"{{"id":"{}","kind":"echo"}}"#, "a".repeat(33)).into_bytes(),
            400,
            "malformed",
        ),
        (
            "id empty",
            br#"{"id":"","kind":"echo"}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "id a number",
            br#"{"id":12,"kind":"echo"}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "both payloads",
            br#"{"kind":"echo","payload":"a","payload_base64":"YQ=="}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "bad base64",
            br#"{"kind":"echo","payload_base64":"!!!"}"#.to_vec(),
            400,
            "malformed",
        ),
        (
            "payload over the limit",
            format!(r#"{{"kind":"echo","payload":"{}"}}"#, "x".repeat(2000)).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "body far over the limit",
            vec![b' '; 1 << 20],
            413,
            "payload_too_large",
        ),
        (
            "unknown kind",
            br#"{"kind":"rm-rf"}"#.to_vec(),
            422,
            "unknown_kind",
        ),
        (
            "zero attempts",
            br#"{"kind":"echo","max_attempts":0}"#.to_vec(),
            400,
            "invalid_task",
        ),
    ];
    for (what, body, status, code) in cases {
        let r = post(body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        let v: serde_json::Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(v["code"], code, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    // A body far over the limit, again and again: the node reads it on (up
    // to oversized_body_drain_bytes_max) before its 413, so the client,
    // still sending, reads the 413 every time instead of a reset.
    for i in 0..20 {
        let r = post(vec![b' '; 1 << 20])
            .await
            .unwrap_or_else(|e| panic!("oversized body {i}: no answer: {e}"));
        assert_eq!(r.status().as_u16(), 413, "oversized body {i}");
    }
    // Ids of the wrong shape in the path.
    for path in ["zz", "0x12", &"f".repeat(33), "%00", "-1"] {
        let r = raw
            .get(format!("{base}/v1/tasks/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "GET {path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "malformed");
        let r = raw
            .delete(format!("{base}/v1/tasks/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "DELETE {path}");
    }
    // A bad ?wait.
    let r = raw
        .get(format!("{base}/v1/tasks/ab?wait=forever"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    still_serves(&Client::new(&n.http_addr().to_string())).await;
    work.finish().await;
    n.shutdown().await.unwrap();
}

fn hello(from: u64) -> Vec<u8> {
    cohort_core::encode(&Hello {
        magic: MAGIC,
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "test-cluster".into(),
        from: NodeId(from),
        to: NodeId(1),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_and_a_burst_of_a_thousand_connections_leave_the_node_serving() {
    let mut c = Cluster::new(2, Limits::default()).await;
    let mut config = c.config(NodeId(1));
    config.transport.inbound_connections_max = 16;
    config.transport.handshake_timeout_ms = 500;
    let peer = c.peer_listeners.remove(&NodeId(1)).unwrap();
    let addr = peer.local_addr().unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = NodeOptions {
        registry: Registry::with_builtins(false),
        ..NodeOptions::default()
    };
    let n1 = cohort_runtime::start::<ToyNode>(config, (), options, Listeners { peer, http })
        .await
        .unwrap();
    let n2 = c.start(NodeId(2), Registry::with_builtins(false)).await;
    let m = n1.metrics();
    let work = AckedWorkload::start(n1.http_addr(), NodeId(1));

    // A frame that announces 100 bytes, sends 10 and hangs up.
    let mut s = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut s, &hello(2)).await.unwrap();
    let reply = read_frame(&mut s, 1024).await.unwrap();
    assert_eq!(
        cohort_core::decode::<HelloReply>(&reply, 1024).unwrap(),
        HelloReply::Accepted
    );
    s.write_all(&100u32.to_be_bytes()).await.unwrap();
    s.write_all(&[0u8; 10]).await.unwrap();
    drop(s);
    assert!(
        eventually(Duration::from_secs(2), || m.counter(
            "cohort_peer_connections_rejected_total",
            "reason=\"closed\""
        ) >= 1)
        .await,
        "the truncated frame's connection was not closed"
    );

    // A thousand connections at once, each sending a byte of garbage.
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        tasks.push(tokio::spawn(async move {
            if let Ok(mut s) = TcpStream::connect(addr).await {
                let _ = s.write_all(&[0xde]).await;
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let refused = m.counter(
        "cohort_peer_connections_rejected_total",
        "reason=\"too_many_connections\"",
    );
    assert!(refused > 0, "the connection limit never applied");
    // The real peer still gets through, and clients are served.
    let before = m.counter("cohort_peer_messages_received_total", "peer=\"n2\"");
    assert!(
        eventually(Duration::from_secs(5), || m
            .counter("cohort_peer_messages_received_total", "peer=\"n2\"")
            > before)
        .await
    );
    still_serves(&Client::new(&n1.http_addr().to_string())).await;
    work.finish().await;
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_from_another_clusters_or_a_bit_flipped_data_file() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let n = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let id = Client::new(&n.http_addr().to_string())
        .submit(&echo("durable"))
        .await
        .unwrap();
    n.shutdown().await.unwrap();
    let start = |config| async {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        cohort_runtime::start::<ToyNode>(
            config,
            (),
            NodeOptions::default(),
            Listeners { peer, http },
        )
        .await
    };
    // Another cluster's node with the same id and directory.
    let mut other = c.config(NodeId(1));
    other.cluster_id = "another-cluster".into();
    match start(other).await {
        Err(RuntimeError::ForeignFile { reason, .. }) => assert!(
            reason.contains("another-cluster") || reason.contains("test-cluster"),
            "{reason}"
        ),
        other => panic!("started from another cluster's file: {other:?}"),
    }
    // Our own node still starts from it and has the task.
    let n = start(c.config(NodeId(1))).await.unwrap();
    let t = Client::new(&n.http_addr().to_string())
        .get(&id, true, None)
        .await
        .unwrap();
    assert_eq!(t.id, id);
    n.shutdown().await.unwrap();
    // Flip bits all over the file: refused as corrupt, never started from empty.
    let path = cohort_runtime::storage::data_file(c.dir.path(), NodeId(1));
    let mut bytes = std::fs::read(&path).unwrap();
    for i in (0..bytes.len()).step_by(97) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    match start(c.config(NodeId(1))).await {
        Err(RuntimeError::CorruptFile { .. })
        | Err(RuntimeError::Storage { .. })
        | Err(RuntimeError::ForeignFile { .. }) => {}
        other => panic!("started from a bit-flipped file: {other:?}"),
    }
}

/// A leader-mode data file whose `raft/log/` record ends early (what the
/// `storage_records` fuzzer found panicking `LeaderNode::boot`): the node
/// refuses to start with an error naming the file and the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_leader_log_record_is_refused_at_start_naming_the_file_and_record() {
    let c = Cluster::new(1, Limits::default()).await;
    let config = c.config(NodeId(1));
    let path = cohort_runtime::storage::data_file(c.dir.path(), NodeId(1));
    {
        let (storage, _) =
            cohort_runtime::storage::Storage::open(&path, &config.cluster_id, NodeId(1)).unwrap();
        let mut key = b"raft/log/".to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        storage
            .persist(&[cohort_core::StoreOp::Put {
                key,
                value: vec![0x01],
            }])
            .unwrap();
    }
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = cohort_runtime::start::<cohort_leader::LeaderNode>(
        config,
        Default::default(),
        NodeOptions::default(),
        Listeners { peer, http },
    )
    .await;
    match r {
        Err(e @ RuntimeError::CorruptFile { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("raft/log/"), "{msg}");
        }
        other => panic!("started from a truncated log record: {other:?}"),
    }
}

/// Reads until the node closes `s`; fails if it stays open for 5 s.
async fn closed_by_node(s: &mut TcpStream) {
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the node left a slow-loris connection open");
}

/// Slow-loris peers: one sends half a handshake frame and stalls, another
/// completes the handshake and then sends half a frame and stalls. Each
/// holds an `inbound_connections_max` slot until it is cut, after
/// `handshake_timeout_ms` and `frame_read_timeout_ms` respectively, counted
/// by reason; their slots are then free for a real peer. A link that is
/// merely quiet between frames is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_peers_stalling_mid_handshake_or_mid_frame_are_cut_and_their_slots_freed() {
    let mut c = Cluster::new(2, Limits::default()).await;
    let mut config = c.config(NodeId(1));
    config.transport.inbound_connections_max = 3;
    config.transport.handshake_timeout_ms = 300;
    config.transport.frame_read_timeout_ms = 300;
    let peer = c.peer_listeners.remove(&NodeId(1)).unwrap();
    let addr = peer.local_addr().unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = NodeOptions {
        registry: Registry::with_builtins(false),
        ..NodeOptions::default()
    };
    let n1 = cohort_runtime::start::<ToyNode>(config, (), options, Listeners { peer, http })
        .await
        .unwrap();
    let m = n1.metrics();
    let accepted = |reply: Vec<u8>| {
        assert_eq!(
            cohort_core::decode::<HelloReply>(&reply, 1024).unwrap(),
            HelloReply::Accepted
        )
    };

    // A link that handshakes and then says nothing: legitimate, kept.
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut quiet, &hello(2)).await.unwrap();
    accepted(read_frame(&mut quiet, 1024).await.unwrap());

    // Half a handshake: the length and a few bytes of the Hello.
    let mut half_hello = TcpStream::connect(addr).await.unwrap();
    let h = hello(2);
    half_hello
        .write_all(&(h.len() as u32).to_be_bytes())
        .await
        .unwrap();
    half_hello.write_all(&h[..3]).await.unwrap();

    // A good handshake, then two bytes of a frame's length.
    let mut half_frame = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut half_frame, &hello(2)).await.unwrap();
    accepted(read_frame(&mut half_frame, 1024).await.unwrap());
    half_frame.write_all(&[0, 0]).await.unwrap();

    closed_by_node(&mut half_hello).await;
    closed_by_node(&mut half_frame).await;
    assert!(
        eventually(Duration::from_secs(2), || {
            m.counter(
                "cohort_peer_connections_rejected_total",
                "reason=\"handshake_timeout\"",
            ) == 1
                && m.counter(
                    "cohort_peer_connections_rejected_total",
                    "reason=\"frame_timeout\"",
                ) == 1
        })
        .await,
        "each stall is counted under its reason"
    );
    // Their two slots are free again: two more peers get in (three slots).
    let mut more = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        write_frame(&mut s, &hello(2)).await.unwrap();
        accepted(read_frame(&mut s, 1024).await.unwrap());
        more.push(s);
    }
    // The quiet link outlived both timeouts several times over.
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), quiet.read(&mut buf))
            .await
            .is_err(),
        "a quiet link between frames was cut"
    );
    n1.shutdown().await.unwrap();
}

/// Sends an endless request head one byte every 50 ms until the node cuts
/// the connection; panics if it is still open after 5 s.
async fn trickle_headers(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = b"POST /v1/tasks HTTP/1.1\r\nHost: cohort\r\nX-Slow: ";
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a client trickling headers was never cut");
}

/// Slow-loris HTTP clients: four trickle headers byte by byte, two connect
/// and send nothing, one sends headers and half its body. While they hang
/// on, another client is served; each is cut (`header_read_timeout_ms`, or
/// a `408` once the body is `request_timeout_ms` late); connections past
/// `http_connections_max` are closed at once; afterwards the node serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_http_clients_are_cut_and_do_not_starve_other_clients() {
    let mut c = Cluster::new(1, Limits::default()).await;
    let mut config = c.config(NodeId(1));
    config.client.header_read_timeout_ms = 500;
    config.client.request_timeout_ms = 1000;
    config.client.http_connections_max = 10;
    let peer = c.peer_listeners.remove(&NodeId(1)).unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = NodeOptions {
        registry: Registry::with_builtins(false),
        ..NodeOptions::default()
    };
    let n = cohort_runtime::start::<ToyNode>(config, (), options, Listeners { peer, http })
        .await
        .unwrap();
    let addr = n.http_addr();
    let m = n.metrics();
    let client = Client::new(&addr.to_string());
    let work = AckedWorkload::start(addr, NodeId(1));

    let tricklers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(trickle_headers(addr)))
        .collect();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut half_body = TcpStream::connect(addr).await.unwrap();
    half_body
        .write_all(
            b"POST /v1/tasks HTTP/1.1\r\nHost: cohort\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":",
        )
        .await
        .unwrap();
    // Seven connections hang on; another client is served meanwhile.
    still_serves(&client).await;

    for s in &mut silent {
        closed_by_node(s).await;
    }
    for t in tricklers {
        t.await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), half_body.read_to_end(&mut answer))
        .await
        .expect("the half-sent body was never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(
        eventually(Duration::from_secs(2), || m.counter(
            "cohort_http_connections_closed_total",
            "reason=\"header_timeout\""
        ) >= 6)
        .await,
        "each header stall is counted"
    );

    // Past http_connections_max a connection is closed at once.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut excess = TcpStream::connect(addr).await.unwrap();
    closed_by_node(&mut excess).await;
    assert!(
        eventually(Duration::from_secs(2), || m.counter(
            "cohort_http_connections_rejected_total",
            "reason=\"too_many_connections\""
        ) >= 1)
        .await
    );
    // Once those are cut, clients are served again.
    for s in &mut held {
        closed_by_node(s).await;
    }
    still_serves(&client).await;
    work.finish().await;
    n.shutdown().await.unwrap();
}

/// A small submit workload run alongside hostile input. It submits echo
/// tasks under ids of its own and records each submit, ack and refusal in
/// a `cohort_sim` history; [`AckedWorkload::finish`] then reads every
/// acknowledged task back (linearizable) and runs the simulator's G1
/// checker over it: no acknowledged task may be lost to the hostile input.
struct AckedWorkload {
    stop: Arc<AtomicBool>,
    submitter: tokio::task::JoinHandle<()>,
    recorder: Recorder,
    client: Client,
}

/// A history shared by the workload's tasks, stamped with microseconds
/// since it started (under its lock, so times never go backwards).
#[derive(Clone)]
struct Recorder {
    history: Arc<Mutex<History>>,
    start: std::time::Instant,
}

impl Recorder {
    fn now(&self) -> Time {
        Time(self.start.elapsed().as_micros() as u64)
    }

    fn push(&self, event: HistoryEvent) {
        let mut h = self.history.lock().unwrap();
        let at = self.now();
        h.push(at, event);
    }
}

impl AckedWorkload {
    fn start(addr: std::net::SocketAddr, node: NodeId) -> AckedWorkload {
        let recorder = Recorder {
            history: Arc::new(Mutex::new(History::new())),
            start: std::time::Instant::now(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let client = Client::new(&addr.to_string());
        let submitter = {
            let (recorder, stop, client) = (recorder.clone(), stop.clone(), client.clone());
            tokio::spawn(async move {
                let mut i: u128 = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let task = TaskId(0xacced << 64 | i);
                    let payload = format!("acked-workload {i}");
                    let content = Task {
                        kind: "echo".into(),
                        payload: payload.clone().into_bytes(),
                        timeout_ms: cohort_runtime::http::TASK_TIMEOUT_MS_DEFAULT,
                        max_attempts: cohort_runtime::http::TASK_ATTEMPTS_DEFAULT,
                        not_before: cohort_core::Time::ZERO,
                        retry: cohort_runtime::http::RetryBody::policy(None, None),
                        schedule_to_start_ms: 0,
                        priority: 0,
                        heartbeat_timeout_ms: 0,
                        labels: Vec::new(),
                        limit: None,
                        lease_grace_ms: 0,
                        retry_of: None,
                    };
                    recorder.push(HistoryEvent::Submitted {
                        task,
                        content: content.clone(),
                    });
                    let body = SubmitBody {
                        id: Some(format!("{:032x}", task.0)),
                        ..echo(&payload)
                    };
                    match client.submit(&body).await {
                        Ok(_) => recorder.push(HistoryEvent::Acked {
                            task,
                            node,
                            content,
                        }),
                        Err(CallError::Api { status: 409, .. }) => {
                            recorder.push(HistoryEvent::SubmitRefused {
                                task,
                                node,
                                error: ClientError::IdConflict { id: task },
                            })
                        }
                        // No ack: the outcome is unknown, nothing to check.
                        Err(_) => {}
                    }
                    // Pacing, so the workload runs alongside rather than drowns the test.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        AckedWorkload {
            stop,
            submitter,
            recorder,
            client,
        }
    }

    /// Stops submitting, reads back every acknowledged task and checks G1;
    /// returns how many tasks were acknowledged (at least one).
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.submitter.await.unwrap();
        let acked: Vec<(TaskId, NodeId)> = self
            .recorder
            .history
            .lock()
            .unwrap()
            .records
            .iter()
            .filter_map(|r| match &r.event {
                HistoryEvent::Acked { task, node, .. } => Some((*task, *node)),
                _ => None,
            })
            .collect();
        assert!(!acked.is_empty(), "the workload was never acknowledged");
        for (task, node) in &acked {
            let sent_at = self.recorder.now();
            let result = match self
                .client
                .get(&format!("{:032x}", task.0), false, None)
                .await
            {
                Ok(view) => Ok(task_state(&view)),
                Err(CallError::Api { status: 404, .. }) => Err(ClientError::NotFound { id: *task }),
                Err(e) => Err(ClientError::Unavailable {
                    reason: e.to_string(),
                }),
            };
            self.recorder.push(HistoryEvent::Read {
                task: *task,
                node: *node,
                sent_at,
                result,
            });
        }
        let mut violations = Violations::new(10);
        cohort_sim::checkers::g1::check(&self.recorder.history.lock().unwrap(), &mut violations);
        assert_eq!(
            violations.count(),
            0,
            "acknowledged tasks lost: {:?}",
            violations.kept()
        );
        eprintln!(
            "workload: {} acknowledged tasks, every one read back",
            acked.len()
        );
        acked.len()
    }
}

/// The task state a `TaskView` shows.
fn task_state(v: &TaskView) -> TaskState {
    let node = NodeId(v.node.unwrap_or(0));
    let epoch = Epoch(v.epoch.unwrap_or(0));
    match v.state.as_str() {
        "pending" => TaskState::Pending,
        "running" => TaskState::Running { node, epoch },
        "succeeded" => TaskState::Succeeded {
            result: v.result.clone().unwrap_or_default().into_bytes(),
            node,
            epoch,
        },
        "failed" => TaskState::Failed {
            error: v.error.clone().unwrap_or_default(),
            attempts: v.attempts.unwrap_or(0),
        },
        "cancelled" => TaskState::Cancelled,
        other => panic!("task {} in an unknown state {other:?}", v.id),
    }
}
