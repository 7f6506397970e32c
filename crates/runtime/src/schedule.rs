//! Schedules on a real node: the built-in handler of the reserved kind
//! [`SCHEDULE_KIND`] that runs a schedule's definition and links (see
//! [`cohort_core::schedule`]), and the in-node client it reaches the
//! cluster with.
//!
//! The handler drives [`ScheduleRun`] against its own node: each request
//! goes to the node's event loop the way an HTTP request does, so no API
//! token is needed. A node that does not decide (a leader-mode follower, a
//! static worker) answers `NotLeader`; the request is then forwarded once
//! to the deciding node's `POST /v1/internal/client` (its API address from
//! `--http-peers`). That endpoint needs the `admin` role, which a node
//! cannot present: in a cluster with API tokens or client certificates, or
//! with TLS on its API, a link that runs on a follower fails (retryably)
//! and is retried until it runs where the decisions are made.

use crate::config::RuntimeConfig;
use crate::driver::Control;
use crate::handlers::{Handler, HandlerFuture, HandlerInput};
use cohort_core::schedule::{RunStep, SchedulePayload, ScheduleRun, SCHEDULE_KIND};
use cohort_core::{ClientError, ClientRequest, ClientResponse, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The path of the internal endpoint a follower forwards to.
pub const INTERNAL_CLIENT_PATH: &str = "/v1/internal/client";

/// Sends client requests to this node's event loop, and forwards those it
/// does not decide to the node that does.
#[derive(Clone)]
pub struct InNodeClient {
    control: mpsc::Sender<Control>,
    config: Arc<RuntimeConfig>,
    http: Option<reqwest::Client>,
}

impl std::fmt::Debug for InNodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InNodeClient")
            .field("node", &self.config.peers.id)
            .finish()
    }
}

impl InNodeClient {
    pub(crate) fn new(control: mpsc::Sender<Control>, config: Arc<RuntimeConfig>) -> InNodeClient {
        // Forwarding needs no credentials only where the API asks none.
        let plain = !config.security.client_auth() && config.security.http_tls.is_none();
        let http = plain
            .then(|| {
                reqwest::Client::builder()
                    .timeout(Duration::from_millis(config.client.request_timeout_ms))
                    .connect_timeout(Duration::from_secs(2))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .ok()
            })
            .flatten();
        InNodeClient {
            control,
            config,
            http,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.client.request_timeout_ms)
    }

    /// Hands `req` to this node's core and waits for its reply (at most
    /// the request timeout: then `Unavailable`, the outcome unknown).
    pub async fn ask_local(&self, req: ClientRequest) -> Result<ClientResponse, ClientError> {
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
        match tokio::time::timeout(self.timeout(), asked).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(
                "no answer from the node in time; outcome unknown",
            )),
        }
    }

    /// [`InNodeClient::ask_local`], forwarded once to the deciding node
    /// when this one answers `NotLeader` naming it.
    pub async fn ask(&self, req: ClientRequest) -> Result<ClientResponse, ClientError> {
        match self.ask_local(req.clone()).await {
            Err(ClientError::NotLeader { leader: Some(l) }) if l != self.config.peers.id => {
                self.forward(l, req).await
            }
            r => r,
        }
    }

    async fn forward(&self, to: NodeId, req: ClientRequest) -> Result<ClientResponse, ClientError> {
        let not_leader = Err(ClientError::NotLeader { leader: Some(to) });
        let (Some(http), Some(addr)) = (&self.http, self.config.http_addrs.get(&to)) else {
            return not_leader;
        };
        let unavailable = |reason: String| ClientError::Unavailable { reason };
        let resp = http
            .post(format!("http://{addr}{INTERNAL_CLIENT_PATH}"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(cohort_core::encode(&req))
            .send()
            .await
            .map_err(|e| unavailable(format!("forwarding to {to}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| unavailable(format!("forwarding to {to}: {e}")))?;
        if !status.is_success() {
            return Err(unavailable(format!(
                "forwarding to {to}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        cohort_core::decode::<Result<ClientResponse, ClientError>>(
            &bytes,
            self.config.peers.limits.message_bytes_max,
        )
        .map_err(|e| unavailable(format!("forwarding to {to}: bad answer: {e}")))?
    }
}

/// The handler of [`SCHEDULE_KIND`]: runs a definition or a link.
pub struct ScheduleHandler {
    client: InNodeClient,
    firings_max: usize,
}

impl ScheduleHandler {
    pub(crate) fn new(client: InNodeClient, firings_max: usize) -> ScheduleHandler {
        ScheduleHandler {
            client,
            firings_max,
        }
    }
}

/// Now, in ms since the Unix epoch: the clock ticks are compared with.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Handler for ScheduleHandler {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        let client = self.client.clone();
        let firings_max = self.firings_max;
        Box::pin(async move {
            let limit = client.config.peers.limits.payload_bytes_max;
            let payload: SchedulePayload = cohort_core::decode(&input.payload, limit)
                .map_err(|e| format!("invalid_payload: not a schedule payload: {e}"))?;
            let now = unix_ms_now();
            let mut definition = None;
            let mut run = match payload {
                SchedulePayload::Deleted => return Ok(b"{\"deleted\":true}".to_vec()),
                SchedulePayload::Spec(schedule) => {
                    definition = Some(crate::http::schedule_json(&schedule));
                    ScheduleRun::start(schedule, now)
                }
                SchedulePayload::Link {
                    schedule,
                    tick_ms,
                    prev_fire_ms,
                    waits,
                } => ScheduleRun::link(schedule, tick_ms, prev_fire_ms, waits, now, firings_max),
            };
            let mut req = run.request().expect("a new run has a request");
            let outcome = loop {
                let reply = client.ask(req).await;
                match run.handle_reply(reply) {
                    RunStep::Send(next) => req = next,
                    RunStep::Done(outcome) => break outcome,
                }
            };
            match outcome {
                // The definition's result is what `GET /v1/schedules/{name}`
                // shows: a read gives a task's state, not its body.
                Ok(report) => Ok(match definition {
                    Some(d) => serde_json::json!({
                        "definition": d,
                        "first_tick_ms": report.next_link_ms,
                        "deleted": report.deleted,
                    }),
                    None => serde_json::to_value(&report).expect("a report serialises"),
                }
                .to_string()
                .into_bytes()),
                // Every failure is retried (links have many attempts): the
                // chain must not end while the schedule is not deleted.
                Err(e) => Err(format!("schedule: {e}")),
            }
        })
    }
}

impl std::fmt::Debug for ScheduleHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleHandler")
            .field("kind", &SCHEDULE_KIND)
            .field("firings_max", &self.firings_max)
            .finish()
    }
}
