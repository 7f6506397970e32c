//! Client requests a node hands to another over the peer transport.
//!
//! A schedule's link is a task: it runs on whichever node the cluster gives
//! it to, and asks the cluster to submit the tick's firing and the next
//! link. A node that does not decide (a leader-mode follower, a static
//! worker) answers `NotLeader`, so the request goes to the node that does.
//! It goes as a [`PeerFrame::Forward`] on the peer transport, whose
//! connections are already authenticated (cluster id and membership in the
//! handshake, the cluster CA's certificates when peer TLS is on): a node
//! holds no API credential, and needs none here, whatever the API asks of
//! its clients (tokens, client certificates, TLS).
//!
//! The transport is one-way per connection and unreliable, so a forward is a
//! request id and a timer: the answer comes back as a
//! [`PeerFrame::ForwardReply`] on the peer's own connection to us, and a
//! request unanswered within `request_timeout_ms` is `Unavailable` with its
//! outcome unknown, as over HTTP. A forwarded request is handed to the
//! serving node's core like any client request, and is as idempotent as
//! the request itself (schedule links send id-keyed submits).
//!
//! Bounded by `forwards_in_flight_max` on each side: requests this node
//! waits on, and requests it serves for peers (past it a peer's request is
//! answered `Unavailable` at once).
//!
//! [`PeerFrame::Forward`]: crate::transport::PeerFrame::Forward
//! [`PeerFrame::ForwardReply`]: crate::transport::PeerFrame::ForwardReply

use crate::config::RuntimeConfig;
use crate::driver::Control;
use crate::metrics::Metrics;
use crate::transport::{Outbound, PeerFrame};
use cohort_core::{ClientError, ClientRequest, ClientResponse, NodeId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

type Reply = Result<ClientResponse, ClientError>;

/// A frame with no protocol message, to encode the forwarding variants
/// (their encoding does not depend on the mode's message type).
type ForwardFrame = PeerFrame<()>;

/// This node's side of forwarding: asks its own core, forwards to a peer,
/// serves peers' forwards and matches their answers.
pub struct Forwarding {
    me: NodeId,
    control: mpsc::Sender<Control>,
    outbound: Arc<Outbound>,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
    message_bytes_max: usize,
    in_flight_max: usize,
    /// Requests sent to a peer and not answered yet: id -> (peer, waiter).
    pending: Mutex<Pending>,
    /// Peers' requests being served.
    serving: Arc<Semaphore>,
}

#[derive(Default)]
struct Pending {
    next_request: u64,
    waiting: BTreeMap<u64, (NodeId, oneshot::Sender<Reply>)>,
}

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("node", &self.me)
            .field("in_flight_max", &self.in_flight_max)
            .finish()
    }
}

impl Forwarding {
    /// Forwarding for the node of `config`, asking its core through
    /// `control` and sending through `outbound`.
    pub(crate) fn new(
        config: &RuntimeConfig,
        control: mpsc::Sender<Control>,
        outbound: Arc<Outbound>,
        metrics: Arc<Metrics>,
    ) -> Forwarding {
        let in_flight_max = config.transport.forwards_in_flight_max;
        Forwarding {
            me: config.peers.id,
            control,
            outbound,
            metrics,
            request_timeout: Duration::from_millis(config.client.request_timeout_ms),
            message_bytes_max: config.peers.limits.message_bytes_max,
            in_flight_max,
            pending: Mutex::new(Pending::default()),
            serving: Arc::new(Semaphore::new(in_flight_max)),
        }
    }

    /// Hands `req` to this node's core and waits for its reply (at most
    /// the request timeout: then `Unavailable`, the outcome unknown).
    pub async fn ask_local(&self, req: ClientRequest) -> Reply {
        let unavailable = |reason: &str| ClientError::Unavailable {
            reason: reason.into(),
        };
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.control
                .send(Control::Client { req, reply: tx })
                .await
                .map_err(|_| unavailable("node is stopping"))?;
            rx.await.map_err(|_| unavailable("node is stopping"))?
        };
        match tokio::time::timeout(self.request_timeout, asked).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(
                "no answer from the node in time; outcome unknown",
            )),
        }
    }

    /// Sends `req` to `to`'s core and waits for its answer (at most the
    /// request timeout: then `Unavailable`, the outcome unknown).
    pub async fn forward(&self, to: NodeId, req: ClientRequest) -> Reply {
        let unavailable = |reason: String| Err(ClientError::Unavailable { reason });
        if to == self.me {
            // The core named this node yet does not decide: nothing to forward to.
            return Err(ClientError::NotLeader { leader: Some(to) });
        }
        if !self.outbound.status.is_connected(to) {
            return unavailable(format!("forwarding to {to}: not connected"));
        }
        let (tx, rx) = oneshot::channel();
        let request_id = {
            let mut p = self.pending.lock().expect("forwarding lock");
            if p.waiting.len() >= self.in_flight_max {
                return unavailable(format!(
                    "forwarding to {to}: forwards_in_flight_max ({}) reached",
                    self.in_flight_max
                ));
            }
            let id = p.next_request;
            p.next_request += 1;
            p.waiting.insert(id, (to, tx));
            id
        };
        let frame = cohort_core::encode(&ForwardFrame::Forward {
            request_id,
            request: req,
        });
        if frame.len() > self.message_bytes_max {
            self.forget(request_id);
            return unavailable(format!(
                "forwarding to {to}: the request's {} bytes exceed message_bytes_max",
                frame.len()
            ));
        }
        self.outbound.send(to, frame);
        self.metrics
            .inc("cohort_forwards_total", "outcome=\"sent\"");
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(reply)) => reply,
            // The sender went with the entry: never without an answer.
            Ok(Err(_)) => unavailable(format!("forwarding to {to}: dropped")),
            Err(_) => {
                self.forget(request_id);
                self.metrics
                    .inc("cohort_forwards_total", "outcome=\"timed_out\"");
                unavailable(format!(
                    "forwarding to {to}: no answer in time; outcome unknown"
                ))
            }
        }
    }

    fn forget(&self, request_id: u64) {
        self.pending
            .lock()
            .expect("forwarding lock")
            .waiting
            .remove(&request_id);
    }

    /// A peer's answer to one of our forwards. An answer to no request of
    /// ours, or from another node than the one asked, is ignored.
    pub(crate) fn complete(&self, from: NodeId, request_id: u64, reply: Reply) {
        let mut p = self.pending.lock().expect("forwarding lock");
        match p.waiting.get(&request_id) {
            Some((to, _)) if *to == from => {
                let (_, tx) = p.waiting.remove(&request_id).expect("present");
                let _ = tx.send(reply);
            }
            _ => {
                drop(p);
                self.metrics
                    .inc("cohort_forwards_total", "outcome=\"unmatched_reply\"");
            }
        }
    }

    /// A peer's forwarded request: answered from this node's core in a task
    /// of its own, so the connection it came on keeps being read. Never
    /// blocks; past `forwards_in_flight_max` it is answered `Unavailable`.
    pub(crate) fn serve(self: &Arc<Self>, from: NodeId, request_id: u64, request: ClientRequest) {
        let Ok(permit) = self.serving.clone().try_acquire_owned() else {
            self.metrics
                .inc("cohort_forwards_total", "outcome=\"refused_busy\"");
            self.answer(
                from,
                request_id,
                Err(ClientError::Unavailable {
                    reason: format!(
                        "node {} serves forwards_in_flight_max ({}) forwards already",
                        self.me, self.in_flight_max
                    ),
                }),
            );
            return;
        };
        self.metrics
            .inc("cohort_forwards_total", "outcome=\"served\"");
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = this.ask_local(request).await;
            this.answer(from, request_id, reply);
        });
    }

    fn answer(&self, to: NodeId, request_id: u64, reply: Reply) {
        let mut frame = cohort_core::encode(&ForwardFrame::ForwardReply { request_id, reply });
        if frame.len() > self.message_bytes_max {
            let reason = format!(
                "the answer's {} bytes exceed message_bytes_max; outcome unknown",
                frame.len()
            );
            frame = cohort_core::encode(&ForwardFrame::ForwardReply {
                request_id,
                reply: Err(ClientError::Unavailable { reason }),
            });
        }
        self.outbound.send(to, frame);
    }
}
