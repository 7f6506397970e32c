//! Peer transport over TCP.
//!
//! One outbound connection per (this node, peer), used only to send; the
//! peer's own outbound connection carries the other direction. Every frame
//! is a big-endian `u32` length followed by that many bytes of postcard.
//!
//! ```text
//! dialer                                  acceptor
//!   Hello{magic, version, cluster, from, to}  -->
//!                                         <--  HelloReply::Accepted | Rejected(reason)
//!   frame(PeerFrame) ...                   -->
//! ```
//!
//! A frame after the handshake is a [`PeerFrame`]: a protocol message of
//! the node's mode, or a client request forwarded to this node, or the
//! answer to one this node forwarded ([`crate::forward`]).
//!
//! The acceptor closes a connection, logs why and counts it under
//! `cohort_peer_connections_rejected_total{reason=...}` on: a bad magic or
//! garbage handshake, another protocol version, another cluster id, a
//! sender that is not a member, a frame over `Limits::message_bytes_max`, a
//! frame that does not decode, no handshake within `handshake_timeout_ms`,
//! or a frame started and not finished within `frame_read_timeout_ms`. The node keeps running; messages are
//! unreliable by contract, so nothing acknowledged depends on them.
//!
//! With peer TLS ([`crate::tls::PeerTls`]) every connection starts with a
//! mutual TLS handshake against the cluster CA, and the cohort handshake
//! runs inside it as a second check. A dialer without a certificate of the
//! cluster CA is refused (`reason="tls_refused"`, with rustls' reason in the
//! log); the dialer checks the acceptor presents `node-<to>`.

use crate::config::RuntimeConfig;
use crate::forward::Forwarding;
use crate::metrics::Metrics;
use crate::tls::PeerTls;
use cohort_core::{ClientError, ClientRequest, ClientResponse, NodeId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// A peer connection: plain TCP, or TLS over it.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}

/// First bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"CHRT";
/// The peer protocol version this build speaks. 2: frames are
/// [`PeerFrame`]s (1 carried bare protocol messages). 3: tasks carry
/// their own lease grace and a retry's link (data format 12), and
/// leaderless permit values and tombstones their incarnation and
/// retirement (format 13): a node of 2 would misread them, so it is
/// refused at the handshake rather than at its first such message. 4:
/// a leaderless `Purged` says whether it was relayed by a reader. 5: a
/// leaderless load report carries the priority its sender waits a slot
/// for.
pub const PROTOCOL_VERSION: u32 = 5;
/// Largest handshake frame.
pub const HANDSHAKE_BYTES_MAX: usize = 1024;

/// The dialer's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The dialer's cluster.
    pub cluster_id: String,
    /// The dialer.
    pub from: NodeId,
    /// Whom the dialer means to reach.
    pub to: NodeId,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Frames may follow.
    Accepted,
    /// The connection is closed; why.
    Rejected(String),
}

/// What one frame after the handshake carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerFrame<M> {
    /// A message of the mode's protocol, for the core.
    Protocol(M),
    /// A client request the sender forwards to this node's core (see
    /// [`crate::forward`]).
    Forward {
        /// The sender's number for it, echoed in the answer.
        request_id: u64,
        /// The request.
        request: ClientRequest,
    },
    /// The answer to a [`PeerFrame::Forward`] this node sent.
    ForwardReply {
        /// The forward's number.
        request_id: u64,
        /// The core's answer.
        reply: Result<ClientResponse, ClientError>,
    },
}

/// The encoding of `PeerFrame::Protocol(msg)`, without cloning `msg`.
pub fn encode_message<M: Serialize>(msg: &M) -> Vec<u8> {
    // Serde encodes by variant index, not name: this is `PeerFrame`'s
    // first variant (a test checks they agree).
    #[derive(Serialize)]
    enum Borrowed<'a, M> {
        Protocol(&'a M),
    }
    cohort_core::encode(&Borrowed::Protocol(msg))
}

/// Whether each peer's outbound connection is up.
#[derive(Debug, Default)]
pub struct PeerStatus {
    connected: BTreeMap<NodeId, AtomicBool>,
}

impl PeerStatus {
    /// Whether our connection to `peer` is established.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.connected
            .get(&peer)
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The sending half: one bounded queue per peer.
#[derive(Debug)]
pub struct Outbound {
    queues: BTreeMap<NodeId, mpsc::Sender<Vec<u8>>>,
    metrics: Arc<Metrics>,
    message_bytes_max: usize,
    /// Connection state of every peer.
    pub status: Arc<PeerStatus>,
}

impl Outbound {
    /// Queues an encoded message for `to`; drops it (counted) if the queue
    /// is full, the peer unknown or the message too large.
    pub fn send(&self, to: NodeId, bytes: Vec<u8>) {
        if bytes.len() > self.message_bytes_max {
            self.metrics
                .inc("cohort_peer_messages_dropped_total", "reason=\"too_large\"");
            tracing::error!(%to, size = bytes.len(), "dropping an outgoing message over message_bytes_max");
            return;
        }
        let Some(q) = self.queues.get(&to) else {
            self.metrics.inc(
                "cohort_peer_messages_dropped_total",
                "reason=\"unknown_peer\"",
            );
            return;
        };
        if q.try_send(bytes).is_err() {
            self.metrics.inc(
                "cohort_peer_messages_dropped_total",
                "reason=\"queue_full\"",
            );
        }
    }
}

/// Starts one sender task per peer of `config`. They stop when `stop` turns true.
pub fn start_outbound(
    config: &RuntimeConfig,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Outbound {
    let mut queues = BTreeMap::new();
    let mut connected = BTreeMap::new();
    for peer in config.peers.others() {
        connected.insert(peer, AtomicBool::new(false));
    }
    let status = Arc::new(PeerStatus { connected });
    for peer in config.peers.others() {
        let (tx, rx) = mpsc::channel(config.transport.send_queue_len_max);
        queues.insert(peer, tx);
        let link = Link {
            peer,
            addr: config.peer_addrs[&peer],
            hello: Hello {
                magic: MAGIC,
                protocol_version: PROTOCOL_VERSION,
                cluster_id: config.cluster_id.clone(),
                from: config.peers.id,
                to: peer,
            },
            backoff_min: Duration::from_millis(config.transport.connect_backoff_ms_min),
            backoff_max: Duration::from_millis(config.transport.connect_backoff_ms_max),
            handshake_timeout: config.handshake_timeout(),
            tls: config.security.peer_tls.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
        };
        tokio::spawn(link.run(rx, stop.clone()));
    }
    Outbound {
        queues,
        metrics,
        message_bytes_max: config.peers.limits.message_bytes_max,
        status,
    }
}

struct Link {
    peer: NodeId,
    addr: std::net::SocketAddr,
    hello: Hello,
    backoff_min: Duration,
    backoff_max: Duration,
    handshake_timeout: Duration,
    tls: Option<PeerTls>,
    metrics: Arc<Metrics>,
    status: Arc<PeerStatus>,
}

impl Link {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.backoff_min;
        let peer_label = format!("peer=\"{}\"", self.peer);
        loop {
            if *stop.borrow() {
                return;
            }
            let conn = tokio::select! {
                c = self.connect() => c,
                _ = stop.changed() => return,
            };
            match conn {
                Ok(stream) => {
                    backoff = self.backoff_min;
                    self.metrics.inc("cohort_peer_connects_total", &peer_label);
                    self.set_connected(true);
                    let why = self.pump(stream, &mut rx, &mut stop, &peer_label).await;
                    self.set_connected(false);
                    match why {
                        None => return,
                        Some(e) => tracing::debug!(peer = %self.peer, "peer link lost: {e}"),
                    }
                }
                Err(e) => {
                    if e.starts_with("tls") {
                        tracing::warn!(peer = %self.peer, addr = %self.addr, "cannot connect: {e}");
                    } else {
                        tracing::debug!(peer = %self.peer, addr = %self.addr, "cannot connect: {e}");
                    }
                    // Messages are unreliable: do not let a dead peer's queue
                    // deliver ancient messages when it comes back.
                    let mut dropped = 0;
                    while rx.try_recv().is_ok() {
                        dropped += 1;
                    }
                    if dropped > 0 {
                        self.metrics.add(
                            "cohort_peer_messages_dropped_total",
                            "reason=\"disconnected\"",
                            dropped,
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
            }
        }
    }

    fn set_connected(&self, up: bool) {
        if let Some(c) = self.status.connected.get(&self.peer) {
            c.store(up, Ordering::Relaxed);
        }
    }

    async fn connect(&self) -> Result<Box<dyn PeerIo>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let mut stream: Box<dyn PeerIo> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = PeerTls::server_name(self.peer);
                match tokio::time::timeout_at(deadline, tls.connector.connect(name, tcp)).await {
                    Err(_) => return Err("tls handshake timed out".into()),
                    Ok(Err(e)) => return Err(format!("tls handshake failed: {e}")),
                    Ok(Ok(s)) => Box::new(s),
                }
            }
        };
        let hello = cohort_core::encode(&self.hello);
        let reply = tokio::time::timeout_at(deadline, async {
            write_frame(&mut stream, &hello).await?;
            read_frame(&mut stream, HANDSHAKE_BYTES_MAX).await
        })
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| match (&self.tls, e) {
            // Under TLS 1.3 the acceptor checks our certificate after our
            // side of the handshake is done: its refusal arrives here.
            (Some(_), FrameError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                format!("tls: refused by the peer: {e}")
            }
            (_, e) => e.to_string(),
        })?;
        match cohort_core::decode::<HelloReply>(&reply, HANDSHAKE_BYTES_MAX) {
            Ok(HelloReply::Accepted) => Ok(stream),
            Ok(HelloReply::Rejected(why)) => {
                tracing::warn!(peer = %self.peer, addr = %self.addr, "peer refused our handshake: {why}");
                Err(format!("refused: {why}"))
            }
            Err(e) => Err(format!("bad handshake reply: {e}")),
        }
    }

    /// Writes queued frames until the connection fails (Some(reason)) or
    /// the node stops (None).
    async fn pump(
        &self,
        stream: Box<dyn PeerIo>,
        rx: &mut mpsc::Receiver<Vec<u8>>,
        stop: &mut watch::Receiver<bool>,
        peer_label: &str,
    ) -> Option<String> {
        let (mut read, write) = tokio::io::split(stream);
        let mut write = BufWriter::new(write);
        let mut probe = [0u8; 1];
        loop {
            let first = tokio::select! {
                m = rx.recv() => m?,
                _ = stop.changed() => return None,
                r = read.read(&mut probe) => {
                    // The acceptor never writes after the handshake: any
                    // return means the connection is over.
                    return Some(match r { Ok(_) => "closed by peer".into(), Err(e) => e.to_string() });
                }
            };
            let mut batch = vec![first];
            while batch.len() < 256 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut bytes = 0u64;
            for m in &batch {
                bytes += 4 + m.len() as u64;
                let len = (m.len() as u32).to_be_bytes();
                if let Err(e) = write.write_all(&len).await {
                    return Some(e.to_string());
                }
                if let Err(e) = write.write_all(m).await {
                    return Some(e.to_string());
                }
            }
            if let Err(e) = write.flush().await {
                return Some(e.to_string());
            }
            self.metrics.add(
                "cohort_peer_messages_sent_total",
                peer_label,
                batch.len() as u64,
            );
            self.metrics.add("cohort_peer_bytes_sent_total", "", bytes);
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix announces more than the limit.
    #[error("frame of {size_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge {
        /// Announced length.
        size_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
}

/// Writes one length-prefixed frame.
pub async fn write_frame(
    w: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
) -> Result<(), std::io::Error> {
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(bytes).await?;
    w.flush().await
}

/// Reads one length-prefixed frame of at most `limit_bytes`, refusing a
/// larger announced length before allocating.
pub async fn read_frame(
    r: &mut (impl AsyncReadExt + Unpin),
    limit_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    read_frame_body(r, len, limit_bytes).await
}

/// Reads the body a frame's length prefix `len` announces, refusing more
/// than `limit_bytes` before allocating.
async fn read_frame_body(
    r: &mut (impl AsyncReadExt + Unpin),
    len: [u8; 4],
    limit_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let size_bytes = u32::from_be_bytes(len) as usize;
    if size_bytes > limit_bytes {
        return Err(FrameError::TooLarge {
            size_bytes,
            limit_bytes,
        });
    }
    let mut buf = vec![0u8; size_bytes];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Reads one frame like [`read_frame`], waiting as long as it takes for its
/// first byte (a quiet link is fine) but at most `timeout` for the rest: a
/// peer that starts a frame and stalls would otherwise hold its connection
/// (and an `inbound_connections_max` slot) forever. `Ok(None)`: it stalled.
pub async fn read_frame_within(
    r: &mut (impl AsyncReadExt + Unpin),
    limit_bytes: usize,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let first = r.read_u8().await?;
    let rest = async {
        let mut len = [first, 0, 0, 0];
        r.read_exact(&mut len[1..]).await?;
        read_frame_body(r, len, limit_bytes).await
    };
    match tokio::time::timeout(timeout, rest).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// Accepts peer connections on `listener` and delivers decoded messages to
/// `deliver` (dropping, counted, when it is full) until `stop` turns true.
pub async fn run_inbound<M: DeserializeOwned + Serialize + Send + 'static>(
    listener: TcpListener,
    config: Arc<RuntimeConfig>,
    metrics: Arc<Metrics>,
    deliver: mpsc::Sender<(NodeId, M)>,
    lost: mpsc::Sender<NodeId>,
    forwarding: Arc<Forwarding>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.transport.inbound_connections_max));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("peer accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.inc(
                "cohort_peer_connections_rejected_total",
                "reason=\"too_many_connections\"",
            );
            tracing::warn!(%remote, "refusing a peer connection: inbound_connections_max reached");
            continue;
        };
        let config = config.clone();
        let metrics = metrics.clone();
        let deliver = deliver.clone();
        let lost = lost.clone();
        let forwarding = forwarding.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let sinks = Sinks {
                deliver: &deliver,
                lost: &lost,
                forwarding: &forwarding,
            };
            tokio::select! {
                (reason, why) = accept_inbound(stream, &config, &metrics, sinks) => {
                    metrics.inc("cohort_peer_connections_rejected_total", &format!("reason=\"{reason}\""));
                    if reason == "closed" {
                        tracing::debug!(%remote, "peer connection closed: {why}");
                    } else {
                        tracing::warn!(%remote, reason, "closing peer connection: {why}");
                    }
                }
                _ = stop.changed() => {}
            }
        });
    }
}

/// Where an inbound connection's frames go.
struct Sinks<'a, M> {
    /// Protocol messages, to the event loop.
    deliver: &'a mpsc::Sender<(NodeId, M)>,
    /// The hint that a peer's connection closed.
    lost: &'a mpsc::Sender<NodeId>,
    /// Forwarded requests and answers.
    forwarding: &'a Arc<Forwarding>,
}

impl<M> Clone for Sinks<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Sinks<'_, M> {}

/// Runs the TLS handshake (when the node has peer TLS), then serves the
/// connection; returns why it ended (a metric label and a message).
async fn accept_inbound<M: DeserializeOwned + Serialize>(
    tcp: TcpStream,
    config: &RuntimeConfig,
    metrics: &Metrics,
    sinks: Sinks<'_, M>,
) -> (&'static str, String) {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + config.handshake_timeout();
    match &config.security.peer_tls {
        None => serve_inbound(tcp, None, deadline, config, metrics, sinks).await,
        Some(tls) => match tokio::time::timeout_at(deadline, tls.acceptor.accept(tcp)).await {
            Err(_) => ("handshake_timeout", "no TLS handshake in time".into()),
            Ok(Err(e)) => ("tls_refused", format!("TLS handshake failed: {e}")),
            Ok(Ok(s)) => {
                let cert = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned());
                match cert {
                    None => ("tls_refused", "no client certificate".into()),
                    Some(cert) => {
                        serve_inbound(s, Some(cert), deadline, config, metrics, sinks).await
                    }
                }
            }
        },
    }
}

/// Serves one inbound connection after any TLS handshake; the cohort
/// handshake must arrive by `deadline`.
async fn serve_inbound<M: DeserializeOwned + Serialize>(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    peer_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    deadline: tokio::time::Instant,
    config: &RuntimeConfig,
    metrics: &Metrics,
    sinks: Sinks<'_, M>,
) -> (&'static str, String) {
    let Sinks {
        deliver,
        lost,
        forwarding,
    } = sinks;
    let hello =
        tokio::time::timeout_at(deadline, read_frame(&mut stream, HANDSHAKE_BYTES_MAX)).await;
    let hello = match hello {
        Err(_) => return ("handshake_timeout", "no handshake in time".into()),
        Ok(Err(FrameError::TooLarge { size_bytes, .. })) => {
            return (
                "bad_handshake",
                format!("handshake frame of {size_bytes} bytes"),
            )
        }
        Ok(Err(e)) => return ("bad_handshake", e.to_string()),
        Ok(Ok(bytes)) => bytes,
    };
    let hello = match cohort_core::decode::<Hello>(&hello, HANDSHAKE_BYTES_MAX) {
        Ok(h) if h.magic == MAGIC => h,
        Ok(_) => return ("bad_handshake", "bad magic".into()),
        Err(e) => return ("bad_handshake", e.to_string()),
    };
    let refusal = if hello.protocol_version != PROTOCOL_VERSION {
        Some((
            "wrong_version",
            format!(
                "protocol version {} but this node speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        ))
    } else if hello.cluster_id != config.cluster_id {
        Some((
            "wrong_cluster",
            format!(
                "cluster {:?} but this node is in {:?}",
                hello.cluster_id, config.cluster_id
            ),
        ))
    } else if hello.to != config.peers.id {
        Some((
            "wrong_node",
            format!("meant for {} but this is {}", hello.to, config.peers.id),
        ))
    } else if hello.from == config.peers.id || !config.peers.members.contains(&hello.from) {
        Some(("not_a_member", format!("{} is not a peer", hello.from)))
    } else {
        peer_cert
            .as_ref()
            .and_then(|c| crate::tls::cert_names_node(c, hello.from).err())
            .map(|why| ("wrong_certificate", why))
    };
    if let Some((reason, why)) = refusal {
        let reply = cohort_core::encode(&HelloReply::Rejected(why.clone()));
        let _ = write_frame(&mut stream, &reply).await;
        return (reason, why);
    }
    if let Err(e) = write_frame(&mut stream, &cohort_core::encode(&HelloReply::Accepted)).await {
        return ("closed", e.to_string());
    }
    let from = hello.from;
    let label = format!("peer=\"{from}\"");
    let limit = config.peers.limits.message_bytes_max;
    let frame_timeout = Duration::from_millis(config.transport.frame_read_timeout_ms);
    let mut reader = tokio::io::BufReader::new(stream);
    loop {
        let frame = match read_frame_within(&mut reader, limit, frame_timeout).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return (
                    "frame_timeout",
                    format!(
                        "{from} started a frame and did not finish it within {}ms",
                        config.transport.frame_read_timeout_ms
                    ),
                )
            }
            Err(FrameError::TooLarge {
                size_bytes,
                limit_bytes,
            }) => {
                return (
                    "oversized_frame",
                    format!("{from} sent a frame of {size_bytes} bytes, limit {limit_bytes}"),
                )
            }
            Err(FrameError::Io(e)) => {
                // An accepted peer's connection ended: most likely its
                // process died. Tell the core (a hint; dropped if the
                // event loop is behind, as a timeout covers it anyway).
                let _ = lost.try_send(from);
                return ("closed", e.to_string());
            }
        };
        metrics.add(
            "cohort_peer_bytes_received_total",
            "",
            4 + frame.len() as u64,
        );
        let msg = match cohort_core::decode::<PeerFrame<M>>(&frame, limit) {
            Ok(PeerFrame::Protocol(m)) => m,
            Ok(PeerFrame::Forward {
                request_id,
                request,
            }) => {
                forwarding.serve(from, request_id, request);
                continue;
            }
            Ok(PeerFrame::ForwardReply { request_id, reply }) => {
                forwarding.complete(from, request_id, reply);
                continue;
            }
            Err(e) => {
                return (
                    "malformed_frame",
                    format!("{from} sent an undecodable frame: {e}"),
                )
            }
        };
        metrics.inc("cohort_peer_messages_received_total", &label);
        metrics.inc(
            "cohort_messages_received_by_type_total",
            &format!("type=\"{}\"", crate::kind::message_kind(&msg)),
        );
        if deliver.try_send((from, msg)).is_err() {
            if deliver.is_closed() {
                return ("closed", "node stopping".into());
            }
            metrics.inc(
                "cohort_peer_messages_dropped_total",
                "reason=\"inbound_full\"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::TaskId;

    #[test]
    fn a_borrowed_protocol_message_encodes_as_the_frames_protocol_variant() {
        let msg = (7u64, String::from("message"));
        let bytes = encode_message(&msg);
        assert_eq!(
            bytes,
            cohort_core::encode(&PeerFrame::Protocol(msg.clone()))
        );
        let back: PeerFrame<(u64, String)> = cohort_core::decode(&bytes, 1024).unwrap();
        assert_eq!(back, PeerFrame::Protocol(msg));
    }

    #[test]
    fn forwarding_frames_decode_whatever_the_modes_message_type() {
        let reply: PeerFrame<()> = PeerFrame::ForwardReply {
            request_id: 9,
            reply: Err(ClientError::NotFound { id: TaskId(3) }),
        };
        let bytes = cohort_core::encode(&reply);
        let back: PeerFrame<(u64, String)> = cohort_core::decode(&bytes, 1024).unwrap();
        assert_eq!(
            back,
            PeerFrame::ForwardReply {
                request_id: 9,
                reply: Err(ClientError::NotFound { id: TaskId(3) }),
            }
        );
    }
}
