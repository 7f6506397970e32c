//! Schedules on a real node: the built-in handler of the reserved kind
//! [`SCHEDULE_KIND`] that runs a schedule's definition and links (see
//! [`cohort_core::schedule`]), and the in-node client it reaches the
//! cluster with.
//!
//! The handler drives [`ScheduleRun`] against its own node: each request
//! goes to the node's event loop the way an HTTP request does, so no API
//! token is needed. A node that does not decide (a leader-mode follower, a
//! static worker) answers `NotLeader`; the request is then forwarded once
//! to the deciding node over the peer transport ([`crate::forward`]), which
//! needs no API credential either: a link runs wherever it is assigned, in
//! a cluster with API tokens, client certificates or TLS on its API too.

use crate::forward::Forwarding;
use crate::handlers::{Handler, HandlerFuture, HandlerInput};
use cohort_core::schedule::{RunStep, SchedulePayload, ScheduleRun, SCHEDULE_KIND};
use cohort_core::{ClientError, ClientRequest, ClientResponse};
use std::sync::Arc;

/// Sends client requests to this node's event loop, and forwards those it
/// does not decide to the node that does.
#[derive(Clone, Debug)]
pub struct InNodeClient {
    forwarding: Arc<Forwarding>,
    payload_bytes_max: usize,
}

impl InNodeClient {
    pub(crate) fn new(forwarding: Arc<Forwarding>, payload_bytes_max: usize) -> InNodeClient {
        InNodeClient {
            forwarding,
            payload_bytes_max,
        }
    }

    /// Hands `req` to this node's core and waits for its reply (at most
    /// the request timeout: then `Unavailable`, the outcome unknown).
    pub async fn ask_local(&self, req: ClientRequest) -> Result<ClientResponse, ClientError> {
        self.forwarding.ask_local(req).await
    }

    /// [`InNodeClient::ask_local`], forwarded once to the deciding node
    /// when this one answers `NotLeader` naming another.
    pub async fn ask(&self, req: ClientRequest) -> Result<ClientResponse, ClientError> {
        match self.ask_local(req.clone()).await {
            Err(ClientError::NotLeader { leader: Some(l) }) => {
                self.forwarding.forward(l, req).await
            }
            r => r,
        }
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
            let limit = client.payload_bytes_max;
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
