//! Hostile and broken peers: each bad connection is closed with a counted
//! reason, and the node keeps serving clients and its real peers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::common;

use cohort_core::{Limits, NodeId};
use cohort_runtime::client::Client;
use cohort_runtime::http::SubmitBody;
use cohort_runtime::transport::{
    read_frame, write_frame, Hello, HelloReply, MAGIC, PROTOCOL_VERSION,
};
use cohort_runtime::{Listeners, NodeOptions, Registry};
use common::{eventually, Cluster, ToyNode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn hello(cluster: &str, version: u32, from: u64) -> Vec<u8> {
    cohort_core::encode(&Hello {
        magic: MAGIC,
        protocol_version: version,
        cluster_id: cluster.into(),
        from: NodeId(from),
        to: NodeId(1),
    })
}

/// Reads until the node closes the connection; fails if it stays open.
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
    assert!(r.is_ok(), "the node left a hostile connection open");
}

async fn handshake(addr: SocketAddr, hello: &[u8]) -> (TcpStream, HelloReply) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut s, hello).await.unwrap();
    let reply = read_frame(&mut s, 1024).await.unwrap();
    (s, cohort_core::decode(&reply, 1024).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_connections_are_closed_with_a_reason_and_the_node_keeps_running() {
    let mut c = Cluster::new(2, Limits::default()).await;
    let peer_addr = c.peer_addrs[&NodeId(1)];
    let n1 = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let n2 = c.start(NodeId(2), Registry::with_builtins(false)).await;
    let m = n1.metrics();
    let rejected = |reason: &str| {
        m.counter(
            "cohort_peer_connections_rejected_total",
            &format!("reason=\"{reason}\""),
        )
    };

    // Garbage: an HTTP request instead of a handshake.
    let mut s = TcpStream::connect(peer_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_node(&mut s).await;
    assert!(eventually(Duration::from_secs(2), || rejected("bad_handshake") == 1).await);

    // A well-framed handshake with the wrong magic.
    let mut bad_magic = hello("test-cluster", PROTOCOL_VERSION, 2);
    bad_magic[0] ^= 0xff;
    let mut s = TcpStream::connect(peer_addr).await.unwrap();
    write_frame(&mut s, &bad_magic).await.unwrap();
    closed_by_node(&mut s).await;
    assert!(eventually(Duration::from_secs(2), || rejected("bad_handshake") == 2).await);

    // Another cluster: refused with a reason, then closed.
    let (mut s, reply) = handshake(peer_addr, &hello("other-cluster", PROTOCOL_VERSION, 2)).await;
    match reply {
        HelloReply::Rejected(why) => assert!(why.contains("other-cluster"), "{why}"),
        HelloReply::Accepted => panic!("accepted a peer of another cluster"),
    }
    closed_by_node(&mut s).await;
    assert!(eventually(Duration::from_secs(2), || rejected("wrong_cluster") == 1).await);

    // Another protocol version.
    let (mut s, reply) =
        handshake(peer_addr, &hello("test-cluster", PROTOCOL_VERSION + 1, 2)).await;
    assert!(matches!(reply, HelloReply::Rejected(_)));
    closed_by_node(&mut s).await;
    assert!(eventually(Duration::from_secs(2), || rejected("wrong_version") == 1).await);

    // A sender that is not a member.
    let (mut s, reply) = handshake(peer_addr, &hello("test-cluster", PROTOCOL_VERSION, 9)).await;
    assert!(matches!(reply, HelloReply::Rejected(_)));
    closed_by_node(&mut s).await;
    assert!(eventually(Duration::from_secs(2), || rejected("not_a_member") == 1).await);

    // A good handshake, then a frame announcing more than message_bytes_max.
    let (mut s, reply) = handshake(peer_addr, &hello("test-cluster", PROTOCOL_VERSION, 2)).await;
    assert_eq!(reply, HelloReply::Accepted);
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    closed_by_node(&mut s).await;
    assert!(eventually(Duration::from_secs(2), || rejected("oversized_frame") == 1).await);

    // A good handshake, then a frame that is not a message.
    let (mut s, reply) = handshake(peer_addr, &hello("test-cluster", PROTOCOL_VERSION, 2)).await;
    assert_eq!(reply, HelloReply::Accepted);
    write_frame(&mut s, &[0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    closed_by_node(&mut s).await;
    assert!(eventually(Duration::from_secs(2), || rejected("malformed_frame") == 1).await);

    // The node still serves clients, and its real peer link still works.
    let client = Client::new(&n1.http_addr().to_string());
    let id = client
        .submit(&SubmitBody {
            id: None,
            kind: "echo".into(),
            payload: Some("still here".into()),
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
        })
        .await
        .unwrap();
    let t = client
        .get(&id, false, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(t.result.as_deref(), Some("still here"));
    let c2 = Client::new(&n2.http_addr().to_string());
    let mut replicated = false;
    for _ in 0..200 {
        if c2.get(&id, true, None).await.is_ok_and(|t| t.is_final()) {
            replicated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(replicated, "the real peer link broke");
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_fills_only_its_own_bounded_queue() {
    let mut c = Cluster::new(2, Limits::default()).await;
    // "Node 2" accepts connections and never says a word.
    let silent = c.peer_listeners.remove(&NodeId(2)).unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut config = c.config(NodeId(1));
    config.transport.send_queue_len_max = 4;
    config.transport.handshake_timeout_ms = 60_000;
    let peer = c.peer_listeners.remove(&NodeId(1)).unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = NodeOptions {
        registry: Registry::with_builtins(false),
        ..NodeOptions::default()
    };
    let n1 = cohort_runtime::start::<ToyNode>(config, (), options, Listeners { peer, http })
        .await
        .unwrap();
    let m = n1.metrics();
    // Pings every 50ms pile up for the silent peer.
    assert!(
        eventually(Duration::from_secs(3), || {
            m.counter(
                "cohort_peer_messages_dropped_total",
                "reason=\"queue_full\"",
            ) > 0
        })
        .await
    );
    let client = Client::new(&n1.http_addr().to_string());
    let id = client
        .submit(&SubmitBody {
            id: None,
            kind: "echo".into(),
            payload: Some("x".into()),
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
        })
        .await
        .unwrap();
    assert_eq!(
        client
            .get(&id, false, Some(Duration::from_secs(5)))
            .await
            .unwrap()
            .state,
        "succeeded"
    );
    n1.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_time_out_and_excess_connections_are_refused() {
    let mut c = Cluster::new(2, Limits::default()).await;
    let mut config = c.config(NodeId(1));
    config.transport.handshake_timeout_ms = 300;
    config.transport.inbound_connections_max = 2;
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
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A third while two are open: closed at once.
    let mut third = TcpStream::connect(addr).await.unwrap();
    closed_by_node(&mut third).await;
    assert_eq!(
        m.counter(
            "cohort_peer_connections_rejected_total",
            "reason=\"too_many_connections\""
        ),
        1
    );
    // The two silent ones are closed after the handshake timeout.
    closed_by_node(&mut a).await;
    closed_by_node(&mut b).await;
    assert!(
        eventually(Duration::from_secs(2), || {
            m.counter(
                "cohort_peer_connections_rejected_total",
                "reason=\"handshake_timeout\"",
            ) == 2
        })
        .await
    );
    // Their slots are free again.
    let (_s, reply) = handshake(addr, &hello("test-cluster", PROTOCOL_VERSION, 2)).await;
    assert_eq!(reply, HelloReply::Accepted);
    n1.shutdown().await.unwrap();
}

/// The forwarding frames on a raw peer link: a member's `Forward` is
/// answered from the node's core with a `ForwardReply` on the node's own
/// connection to that member; an answer to nothing the node asked is
/// ignored and counted; the node keeps serving its clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_answered_on_the_nodes_own_link_and_a_stray_answer_is_ignored() {
    use cohort_core::{ClientError, ClientRequest, Consistency, TaskId};
    use cohort_runtime::transport::PeerFrame;
    type Frame = PeerFrame<()>;

    let mut c = Cluster::new(2, Limits::default()).await;
    let peer_addr = c.peer_addrs[&NodeId(1)];
    // This test plays node 2: it holds its listener, where node 1 dials.
    let n2_listener = c.peer_listeners.remove(&NodeId(2)).unwrap();
    let n1 = c.start(NodeId(1), Registry::with_builtins(false)).await;
    let m = n1.metrics();
    let (mut back, _) = tokio::time::timeout(Duration::from_secs(5), n2_listener.accept())
        .await
        .expect("node 1 dials its peer")
        .unwrap();
    let hello_in = read_frame(&mut back, 1024).await.unwrap();
    let hello_in: Hello = cohort_core::decode(&hello_in, 1024).unwrap();
    assert_eq!((hello_in.from, hello_in.to), (NodeId(1), NodeId(2)));
    write_frame(&mut back, &cohort_core::encode(&HelloReply::Accepted))
        .await
        .unwrap();

    let (mut s, reply) = handshake(peer_addr, &hello("test-cluster", PROTOCOL_VERSION, 2)).await;
    assert_eq!(reply, HelloReply::Accepted);
    // A stray answer first: nothing was asked under this number.
    let stray = Frame::ForwardReply {
        request_id: 77,
        reply: Err(ClientError::NotFound { id: TaskId(1) }),
    };
    write_frame(&mut s, &cohort_core::encode(&stray))
        .await
        .unwrap();
    let missing = TaskId(0xfeed);
    let ask = Frame::Forward {
        request_id: 5,
        request: ClientRequest::Get {
            id: missing,
            consistency: Consistency::Linearizable,
        },
    };
    write_frame(&mut s, &cohort_core::encode(&ask))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let f = read_frame(&mut back, 1 << 20).await.unwrap();
            // Node 1's link may carry its protocol messages too.
            if let Ok(f @ Frame::ForwardReply { .. }) = cohort_core::decode::<Frame>(&f, 1 << 20) {
                return f;
            }
        }
    })
    .await
    .expect("the forward is answered");
    assert_eq!(
        answer,
        Frame::ForwardReply {
            request_id: 5,
            reply: Err(ClientError::NotFound { id: missing }),
        }
    );
    assert_eq!(
        m.counter("cohort_forwards_total", "outcome=\"unmatched_reply\""),
        1
    );
    assert_eq!(m.counter("cohort_forwards_total", "outcome=\"served\""), 1);
    // The connection is still open and the node serves clients.
    assert_eq!(
        m.counter_sum("cohort_peer_connections_rejected_total"),
        0,
        "a forwarding frame closed the connection"
    );
    let client = Client::new(&n1.http_addr().to_string());
    assert!(client.health().await.is_ok());
    drop(s);
    n1.shutdown().await.unwrap();
}
