//! The HTTP JSON API served by every node.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /v1/tasks` | `202 {"id": "<32 hex>", "node": N}` once the core says the task is durable |
//! | `POST /v1/tasks:batch` | `202 {"ids": [...], "node": N}` once every task of `{"tasks": [<submit body>, ...]}` is durable (see docs/RUNTIME.md for what holds per mode) |
//! | `GET /v1/tasks/{id}` | `200` task JSON; linearizable; `?stale=true` for a local read; `?wait=10s` long-polls until final (`ms`, `s`, `m`; a bare number is seconds) |
//! | `GET /v1/tasks/{id}/events` | `200` task JSON with `"events": [{"at_ms", "event", "node"?, "epoch"?, "reason"?, "error"?}, ...]` (oldest first) and `"events_dropped"`; linearizable; `?stale=true` for a local read |
//! | `DELETE /v1/tasks/{id}` | `200` task JSON after cancelling |
//! | `GET /v1/cluster` | cluster id, mode, this node, members with addresses and link state, task kinds and their retry policies |
//! | `GET /v1/ring` | `200 {"node", "epoch", "members": [...], "in_flight": null \| {"op", "node"}}`: the ring this node knows (leaderless mode; `404 not_supported` in the others) |
//! | `POST /v1/ring/members/{node}` | asks this node to propose that the configured member `node` joins the ring: `202` with the ring and `"reflected": false` once started, `200` with `"reflected": true` when the ring reflects it; `?wait=10s` waits for that (at most `wait_ms_max`) |
//! | `DELETE /v1/ring/members/{node}` | the same for removing `node` from the ring |
//! | `POST /v1/drain` | drains this node: it takes no new work, its running tasks may finish within `?deadline_ms=` (default [`crate::DRAIN_DEADLINE_MS_DEFAULT`], at most [`crate::DRAIN_DEADLINE_MS_MAX`]), then what is left is handed back to run elsewhere; `202` with the drain status (`404 not_supported` in modes that cannot drain) |
//! | `GET /v1/drain` | `200 {"node", "draining", "deadline_in_ms"?, "handing_back"?, "held_count"?, "held"?, "done"?}`: this node's drain |
//! | `POST /v1/schedules` | stores a schedule (`{name, every_ms? \| cron?, start_ms?, overlap?, catch_up_window_ms?, task}`): `201 {"name", "id", "node"}`; see [`cohort_core::schedule`] and docs/RUNTIME.md |
//! | `GET /v1/schedules/{name}` | `200 {"name", "id", "deleted", "started", "definition"?, "first_tick_ms"?, "next_tick_ms"?, "next_firing_id"?}` |
//! | `DELETE /v1/schedules/{name}` | `200 {"name", "deleted": true}` once its tombstone is durable |
//! | `GET /v1/schedules?after=&limit=` | `200 {"node", "role", "complete", "schedules": [...], "next"}`: the definitions this node holds, each as `GET /v1/schedules/{name}` shows it |
//! | `GET /v1/health` | `200 {"status": "ok", ...}` |
//! | `GET /v1/openapi.json` | the OpenAPI 3 document of this API (`crates/runtime/openapi.json`) |
//! | `GET /metrics` | Prometheus text |
//!
//! Submit body: `{"id"?: "<hex up to 32 digits>", "kind": "sleep", "payload"?: "<UTF-8 text>",
//! "payload_base64"?: "<standard base64>", "timeout_ms"?: 30000, "max_attempts"?: 3}`; at most
//! one of `payload` / `payload_base64`. Without an `id`, a random 128-bit id is generated;
//! with one, the submit is idempotent (same id and content: acknowledged again). An
//! `Idempotency-Key: <1..=255 visible ASCII>` header names the task instead (see
//! [`crate::idempotency`]): a repeat returns the existing task's id, a repeat with another
//! body is `409 id_conflict`; a body `id` naming another task is `400`.
//!
//! A `Dedupe-Key: <1..=255 visible ASCII>` header (see [`cohort_core::dedupe`])
//! asks for a task unique by the key while one is pending or running: the
//! answer is `202 {"id", "node", "deduplicated": false, "generation"}` when
//! this body was made the key's new task, `202 {"id", "node",
//! "deduplicated": true, "generation", "state"}` naming the key's pending or
//! running task otherwise. Combined with `Idempotency-Key` or a body `id`
//! it is `400 malformed`; `503 contention` (with `Retry-After`) when
//! `dedupe_rounds_max` submits each found a newer generation already final.
//!
//! A task: `{"id", "state": "pending|running|succeeded|failed|cancelled", "node"?, "epoch"?,
//! "result"? (when UTF-8), "result_base64"?, "error"?, "attempts"?}`.
//!
//! Errors: `{"error": "<message>", "code": "<snake_case>"}` with status 400
//! (`malformed`, `invalid_task`), 401 (`unauthorized`: the node has tokens
//! and the request has no known one), 403 (`forbidden`: the token's role is
//! too low; see [`crate::auth`]), 404 (`not_found`; ring routes:
//! `not_supported` outside leaderless mode, `not_a_member` for a node that
//! is not a configured member), 408 (`timeout`: the
//! request body did not arrive within `request_timeout_ms`), 409
//! (`id_conflict`; ring changes: `busy` while this node drives another
//! change, with `Retry-After` and `"in_flight"`, `last_member`), 413
//! (`payload_too_large`), 422 (`unknown_kind`), 429 (`overloaded`, with
//! `Retry-After`), 307 to the leader's API when this node is not the leader
//! and knows where it is (`not_leader`, with `"leader"`), 503
//! (`not_leader` with no known leader, `unavailable`, `timeout`, with
//! `Retry-After`). A `timeout` on submit means the outcome is unknown:
//! retry with the same id.

use crate::config::{KindPolicy, RuntimeConfig};
use crate::driver::Control;
use crate::handlers::Registry;
use crate::metrics::Metrics;
use crate::transport::PeerStatus;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use cohort_core::dedupe::{DedupeError, DedupeKey, DedupeOutcome, DedupeStep, DedupeSubmit};
use cohort_core::schedule::{
    CronExpr, IdTag, Overlap, Schedule, ScheduleName, Spec, CATCH_UP_WINDOW_MS_DEFAULT,
    SCHEDULE_KIND, SCHEDULE_TICK_MS_MAX,
};
use cohort_core::{
    ClientError, ClientRequest, ClientResponse, Consistency, NodeId, NodeRng, RetryPolicy,
    RingRefusal, RingRequest, RingView, Task, TaskEvent, TaskEventKind, TaskEvents, TaskId,
    TaskLimit, TaskState, Time,
};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

/// The HTTP header that carries a dedupe key.
pub const DEDUPE_KEY_HEADER: &str = "dedupe-key";

/// Default `timeout_ms` of a submitted task.
pub const TASK_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default `max_attempts` of a submitted task.
pub const TASK_ATTEMPTS_DEFAULT: u32 = 3;
/// Default `retry.backoff_initial_ms`: the backoff cap after the first
/// failed attempt (it doubles per failed attempt; the delay drawn is
/// uniform below it).
pub const TASK_BACKOFF_INITIAL_MS_DEFAULT: u64 = 1_000;
/// Default `retry.backoff_max_ms` (raised to `backoff_initial_ms` when that
/// is given and larger).
pub const TASK_BACKOFF_MAX_MS_DEFAULT: u64 = 60_000;

/// What the API handlers share.
pub(crate) struct Api {
    pub config: Arc<RuntimeConfig>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub control: mpsc::Sender<Control>,
    pub decided: Arc<Notify>,
    pub peer_status: Arc<PeerStatus>,
    pub id_rng: Mutex<NodeRng>,
    pub started: std::time::Instant,
}

/// The router of the node API.
pub(crate) fn router(api: Arc<Api>) -> Router {
    let body_max = body_max(&api.config);
    Router::new()
        .route("/v1/tasks", axum::routing::post(submit).get(list_tasks))
        .route("/v1/tasks:batch", axum::routing::post(submit_batch))
        .route("/v1/tasks/{id}", get(get_task).delete(cancel))
        .route("/v1/tasks/{id}/events", get(task_events))
        .route("/v1/tasks/{id}/retry", axum::routing::post(retry_task))
        .route("/v1/cluster", get(cluster))
        .route("/v1/ring", get(ring))
        .route(
            "/v1/ring/members/{node}",
            axum::routing::post(ring_join).delete(ring_remove),
        )
        .route("/v1/drain", get(drain_status).post(drain))
        .route(
            "/v1/schedules",
            axum::routing::post(schedule_create).get(schedule_list),
        )
        .route(
            "/v1/schedules/{name}",
            get(schedule_get).delete(schedule_delete),
        )
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_max))
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

/// Refuses requests without a token of the role the route needs (when the
/// node has tokens): 401 `unauthorized` or 403 `forbidden`.
async fn authorize(
    State(api): State<Arc<Api>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(tokens) = &api.config.security.tokens else {
        return next.run(req).await;
    };
    let Some(needed) = crate::auth::role_needed(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match crate::auth::check(tokens, header, needed) {
        Ok(_) => next.run(req).await,
        Err(crate::auth::Refusal::Unauthenticated) => {
            api.metrics.inc(
                "cohort_http_auth_refused_total",
                "reason=\"unauthenticated\"",
            );
            tracing::info!(method = %req.method(), path = req.uri().path(), "refused: no valid token");
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this node needs `Authorization: Bearer <token>` with a known token",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cohort\""),
            );
            resp
        }
        Err(crate::auth::Refusal::Forbidden { needed, has }) => {
            api.metrics
                .inc("cohort_http_auth_refused_total", "reason=\"forbidden\"");
            tracing::info!(method = %req.method(), path = req.uri().path(), needed = needed.name(), has = has.name(), "refused: role too low");
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this request needs a token with role {}; yours has {}",
                    needed.name(),
                    has.name()
                ),
            )
            .into_response()
        }
    }
}

/// A JSON error response.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: bool,
    /// Where the leader is: its id and, when known, its API's URL.
    leader: Option<Box<(serde_json::Value, Option<String>)>>,
    /// More fields of the body (a batch's `index`, `durable`).
    extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: false,
            leader: None,
            extra: None,
        }
    }

    fn with(mut self, key: &str, value: serde_json::Value) -> ApiError {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value);
        self
    }

    fn retry(mut self) -> ApiError {
        self.retry_after = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        let mut location = None;
        if let Some(leader) = self.leader {
            body["leader"] = leader.0;
            location = leader.1;
        }
        for (k, v) in self.extra.into_iter().flat_map(|m| *m) {
            body[k] = v;
        }
        let mut resp = (self.status, Json(body)).into_response();
        if self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        resp
    }
}

impl Api {
    fn client_error(&self, e: ClientError, path: &str) -> ApiError {
        let msg = e.to_string();
        match e {
            ClientError::NotLeader { leader } => {
                let addr = leader.and_then(|l| self.config.http_addrs.get(&l).copied());
                match (leader, addr) {
                    (Some(l), Some(addr)) => {
                        let mut err =
                            ApiError::new(StatusCode::TEMPORARY_REDIRECT, "not_leader", msg);
                        err.leader = Some(Box::new((
                            json!(l.0),
                            Some(format!(
                                "{}://{addr}{path}",
                                if self.config.security.http_tls.is_some() {
                                    "https"
                                } else {
                                    "http"
                                }
                            )),
                        )));
                        err
                    }
                    _ => {
                        let mut err =
                            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", msg)
                                .retry();
                        err.leader = Some(Box::new((json!(leader.map(|l| l.0)), None)));
                        err
                    }
                }
            }
            ClientError::Unavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg).retry()
            }
            ClientError::IdConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "id_conflict", msg)
            }
            ClientError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", msg),
            ClientError::PayloadTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", msg)
            }
            ClientError::InvalidTask { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_task", msg)
            }
            ClientError::Overloaded { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", msg).retry()
            }
            ClientError::BatchTooLarge { tasks, limit } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_tasks", msg)
                    .with("tasks", json!(tasks))
                    .with("limit", json!(limit))
            }
            ClientError::BatchItem { index, error } => {
                let mut err = self.client_error(*error, path).with("index", json!(index));
                err.message = msg;
                err
            }
            ClientError::BatchIncomplete { durable, error } => {
                let mut err = self.client_error(*error, path);
                err.code = "batch_incomplete";
                err.message = msg;
                err.with(
                    "durable",
                    json!(durable.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
                )
            }
        }
    }

    /// Asks the event loop for a read of the core (no client request: it
    /// changes nothing), waiting at most the request timeout.
    async fn read_core<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let timeout = Duration::from_millis(self.config.client.request_timeout_ms);
        let asked = async {
            self.control.send(make(tx)).await.ok()?;
            rx.await.ok()
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "node is stopping",
            )
            .retry()),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the node did not answer in time",
            )
            .retry()),
        }
    }

    /// Hands `req` to the core and waits for its reply.
    async fn ask(&self, req: ClientRequest, path: &str) -> Result<ClientResponse, ApiError> {
        self.ask_core(req)
            .await?
            .map_err(|e| self.client_error(e, path))
    }

    /// Hands `req` to the core and waits for its reply, handing back the
    /// core's own refusal as it is (the outer error: no answer at all).
    async fn ask_core(
        &self,
        req: ClientRequest,
    ) -> Result<Result<ClientResponse, ClientError>, ApiError> {
        let (tx, rx) = oneshot::channel();
        let timeout = Duration::from_millis(self.config.client.request_timeout_ms);
        let unavailable = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "node is stopping",
            )
            .retry()
        };
        let sent = tokio::time::timeout(
            timeout,
            self.control.send(Control::Client { req, reply: tx }),
        );
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(unavailable()),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the node's input queue stayed full",
                )
                .retry())
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(unavailable()),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "no answer from the cluster within {}ms; the outcome is unknown, retry with the same id",
                    timeout.as_millis()
                ),
            )
            .retry()),
        }
    }
}

/// The body of `POST /v1/tasks`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Client-chosen id, hex.
    #[serde(default)]
    pub id: Option<String>,
    /// Handler kind.
    pub kind: String,
    /// Payload as UTF-8 text.
    #[serde(default)]
    pub payload: Option<String>,
    /// Payload as standard base64.
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// Per-execution timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Attempts before the task fails.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Not to start before this instant, in ms since the Unix epoch (on
    /// the clock of the node that starts it). Absolute, so a resubmit of
    /// the same body names the same task.
    #[serde(default)]
    pub not_before_ms: Option<u64>,
    /// How failed attempts are retried; defaults apply to what is left out.
    #[serde(default)]
    pub retry: Option<RetryBody>,
    /// Fail the task if it has not started this long after it could
    /// (see `Task::schedule_to_start_ms`); absent or 0: wait for ever.
    #[serde(default)]
    pub schedule_to_start_ms: Option<u64>,
    /// Among tasks that may start, a higher priority starts first
    /// (-128 to 127; default 0).
    #[serde(default)]
    pub priority: Option<i8>,
    /// A handler that goes this long without a heartbeat is stopped and
    /// the attempt fails (class `heartbeat_timeout`); absent or 0: none.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Routing: the worker labels a node must carry, every one, to run the
    /// task (absent or empty: any node). A queue is a label its workers
    /// carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// A concurrency and rate limit shared with every task naming the same
    /// key (absent: the kind's limit, if its policy sets one). Enforced by
    /// the leader and static modes; the leaderless mode refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitBody>,
    /// How long past `timeout_ms` the cluster waits for an attempt's
    /// outcome before it ends the lease itself (1,000 to 3,600,000; absent
    /// or 0: the kind's, else the timeout again within 1 to 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_grace_ms: Option<u64>,
}

/// The `limit` object of a submit body (see [`TaskLimit`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    /// The key the limit counts under.
    pub key: String,
    /// At most this many tasks of the key run at once (absent or 0: no
    /// concurrency limit).
    #[serde(default)]
    pub concurrency_max: Option<u32>,
    /// At most this many tasks of the key start within `rate_window_ms`
    /// (absent or 0: no rate limit).
    #[serde(default)]
    pub rate_max: Option<u32>,
    /// The rate limit's window (default 1000 with `rate_max`).
    #[serde(default)]
    pub rate_window_ms: Option<u64>,
}

/// The rate window of a limit that sets `rate_max` and leaves the window
/// out: a rate per second.
pub const RATE_WINDOW_MS_DEFAULT: u64 = 1_000;

impl LimitBody {
    /// The limit the body names (checked with the rest of the task).
    pub fn limit(&self) -> TaskLimit {
        let rate_max = self.rate_max.unwrap_or(0);
        TaskLimit {
            key: self.key.clone(),
            concurrency_max: self.concurrency_max.unwrap_or(0),
            rate_max,
            rate_window_ms: self.rate_window_ms.unwrap_or(if rate_max > 0 {
                RATE_WINDOW_MS_DEFAULT
            } else {
                0
            }),
        }
    }
}

/// The `retry` object of a submit body (see [`cohort_core::retry`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Backoff cap after the first failed attempt; 0 retries at once.
    /// Default [`TASK_BACKOFF_INITIAL_MS_DEFAULT`].
    #[serde(default)]
    pub backoff_initial_ms: Option<u64>,
    /// Largest backoff cap. Default [`TASK_BACKOFF_MAX_MS_DEFAULT`].
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    /// Error classes (the `class` of a `class: message` error) that fail
    /// the task at once. Absent: the kind's policy, else none; `[]`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_retryable: Option<Vec<String>>,
}

impl RetryBody {
    /// The policy: what the body leaves out comes from the kind's policy,
    /// and what that leaves out from the node-wide defaults.
    pub fn policy(body: Option<&RetryBody>, kind: Option<&KindPolicy>) -> RetryPolicy {
        let body = body.cloned().unwrap_or_default();
        let kind = kind.cloned().unwrap_or_default();
        let initial = body
            .backoff_initial_ms
            .or(kind.backoff_initial_ms)
            .unwrap_or(TASK_BACKOFF_INITIAL_MS_DEFAULT);
        let max = body
            .backoff_max_ms
            .or(kind.backoff_max_ms)
            .unwrap_or(TASK_BACKOFF_MAX_MS_DEFAULT.max(initial));
        RetryPolicy {
            backoff_initial_ms: initial,
            backoff_max_ms: max,
            non_retryable: body
                .non_retryable
                .or(kind.non_retryable)
                .unwrap_or_default(),
        }
    }
}

/// What a submit of `kind` that leaves out every policy field resolves to
/// under `policy` (checked against the limits when a node starts).
pub fn kind_policy_task(kind: &str, policy: &KindPolicy) -> Task {
    let mut policies = BTreeMap::new();
    policies.insert(kind.to_string(), policy.clone());
    let body = SubmitBody {
        id: None,
        kind: kind.to_string(),
        payload: None,
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
    };
    match submit_task(body, &policies) {
        Ok((_, task)) => task,
        Err(_) => unreachable!("a body without payload or times decodes"),
    }
}

/// The core answered a request with a response of another request's kind:
/// a bug, reported as a `500`.
fn unexpected(to_what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected answer to {to_what}"),
    )
}

fn parse_id(s: &str) -> Result<TaskId, ApiError> {
    if s.is_empty() || s.len() > 32 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "a task id is 1 to 32 hex digits",
        ));
    }
    s.parse::<TaskId>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("{s:?} is not a hex task id"),
        )
    })
}

/// Decodes a submit body into the optional client id and the task (before
/// limits and kinds are checked).
fn decode_submit(body: &[u8], policies: &KindPolicies) -> Result<(Option<TaskId>, Task), ApiError> {
    let req: SubmitBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("bad JSON: {e}"),
        )
    })?;
    submit_task(req, policies)
}

/// The body of `POST /v1/tasks:batch`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The tasks, each as the body of `POST /v1/tasks`.
    pub tasks: Vec<SubmitBody>,
}

/// Decodes a batch body; a bad task is refused with its `index`.
fn decode_batch(
    body: &[u8],
    policies: &KindPolicies,
) -> Result<Vec<(Option<TaskId>, Task)>, ApiError> {
    let malformed = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "malformed", m);
    let batch: BatchBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            // Slow path, only for a refusal: find the task at fault.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Loose {
                tasks: Vec<serde_json::Value>,
            }
            let loose: Loose =
                serde_json::from_slice(body).map_err(|_| malformed(format!("bad JSON: {e}")))?;
            for (index, t) in loose.tasks.into_iter().enumerate() {
                if let Err(e) = serde_json::from_value::<SubmitBody>(t) {
                    return Err(malformed(format!("batch task {index}: bad JSON: {e}"))
                        .with("index", json!(index)));
                }
            }
            return Err(malformed(format!("bad JSON: {e}")));
        }
    };
    batch
        .tasks
        .into_iter()
        .enumerate()
        .map(|(index, t)| {
            submit_task(t, policies).map_err(|e| {
                let message = format!("batch task {index}: {}", e.message);
                ApiError { message, ..e }.with("index", json!(index))
            })
        })
        .collect()
}

/// [`decode_batch`] for fuzzing and tests: the error is the message a
/// client would get in a `400`.
pub fn parse_batch(body: &[u8]) -> Result<Vec<(Option<TaskId>, Task)>, String> {
    decode_batch(body, &KindPolicies::new())
        .map_err(|e| format!("{} {}: {}", e.status.as_u16(), e.code, e.message))
}

/// Retry policies by kind (see [`KindPolicy`]).
type KindPolicies = BTreeMap<String, KindPolicy>;

/// A decoded submit body: the optional client id and the task (before
/// limits and kinds are checked), what it leaves out filled in from its
/// kind's policy and the defaults.
fn submit_task(
    req: SubmitBody,
    policies: &KindPolicies,
) -> Result<(Option<TaskId>, Task), ApiError> {
    let policy = policies.get(&req.kind);
    let payload = match (req.payload, req.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                "give payload or payload_base64, not both",
            ))
        }
        (Some(p), None) => p.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!("bad payload_base64: {e}"),
                )
            })?,
        (None, None) => Vec::new(),
    };
    let id = req.id.as_deref().map(parse_id).transpose()?;
    let limit = match req.limit {
        Some(body) => Some(body.limit()),
        None => policy.and_then(|p| p.limit(&req.kind)),
    };
    let task = Task {
        kind: req.kind,
        payload,
        timeout_ms: req.timeout_ms.unwrap_or(TASK_TIMEOUT_MS_DEFAULT),
        max_attempts: req
            .max_attempts
            .or(policy.and_then(|p| p.max_attempts))
            .unwrap_or(TASK_ATTEMPTS_DEFAULT),
        not_before: not_before(req.not_before_ms)?,
        retry: RetryBody::policy(req.retry.as_ref(), policy),
        schedule_to_start_ms: req.schedule_to_start_ms.unwrap_or(0),
        priority: req.priority.unwrap_or(0),
        heartbeat_timeout_ms: req.heartbeat_timeout_ms.unwrap_or(0),
        labels: req
            .labels
            .or_else(|| policy.and_then(|p| p.labels.clone()))
            .unwrap_or_default(),
        limit,
        lease_grace_ms: req
            .lease_grace_ms
            .or(policy.and_then(|p| p.lease_grace_ms))
            .unwrap_or(0),
        retry_of: None,
    };
    Ok((id, task))
}

fn not_before(ms: Option<u64>) -> Result<Time, ApiError> {
    let ms = ms.unwrap_or(0);
    ms.checked_mul(1_000).map(Time).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("not_before_ms {ms} is out of range"),
        )
    })
}

/// [`decode_submit`] for fuzzing and tests: the error is the message a
/// client would get in a `400`.
pub fn parse_submit(body: &[u8]) -> Result<(Option<TaskId>, Task), String> {
    decode_submit(body, &KindPolicies::new())
        .map_err(|e| format!("{} {}: {}", e.status.as_u16(), e.code, e.message))
}

/// Largest request body read: a payload at the limit, base64-encoded, and
/// the JSON around it.
fn body_max(config: &RuntimeConfig) -> usize {
    config.peers.limits.payload_bytes_max * 2 + 64 * 1024
}

/// Reads a submit body of at most [`body_max`] bytes within the request
/// timeout. A body over the limit is read on and discarded up to
/// `oversized_body_drain_bytes_max` before the `413`: answering while the
/// client is still sending and closing would reset the connection under
/// the client, which then sees the reset rather than the `413`.
async fn read_submit_body(config: &RuntimeConfig, mut body: Body) -> Result<Bytes, ApiError> {
    let limit = body_max(config);
    let drain_max = config.client.oversized_body_drain_bytes_max;
    let too_large = |seen: usize| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body of at least {seen} bytes exceeds the limit of {limit} bytes"),
        )
    };
    if let Some(announced) = axum::body::HttpBody::size_hint(&body).exact() {
        let announced = usize::try_from(announced).unwrap_or(usize::MAX);
        if announced > limit.saturating_add(drain_max) {
            // Not worth reading: the client gets the 413 if it reads early.
            return Err(too_large(announced));
        }
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(config.client.request_timeout_ms);
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "the request body did not arrive within {}ms",
                        config.client.request_timeout_ms
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!("cannot read the request body: {e}"),
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else {
            buf = Vec::new();
            if seen > limit.saturating_add(drain_max) {
                return Err(too_large(seen));
            }
        }
    }
    if seen > limit {
        return Err(too_large(seen));
    }
    Ok(Bytes::from(buf))
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish. Bounded: at most `http_connections_max` connections
/// (past it a new one is closed at once), each client given
/// `header_read_timeout_ms` to send a request's headers (a slow-loris
/// client trickling them, or one that sends nothing, is cut).
pub(crate) async fn serve<L: axum::serve::Listener>(
    mut listener: L,
    app: Router,
    config: Arc<RuntimeConfig>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let max = config.client.http_connections_max;
    let slots = Arc::new(Semaphore::new(max));
    let header_timeout = Duration::from_millis(config.client.header_read_timeout_ms);
    loop {
        let (io, _) = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.inc(
                "cohort_http_connections_rejected_total",
                "reason=\"too_many_connections\"",
            );
            tracing::warn!("refusing an HTTP connection: http_connections_max reached");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let metrics = metrics.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                let reason = if e.is_timeout() {
                    "reason=\"header_timeout\""
                } else {
                    "reason=\"error\""
                };
                metrics.inc("cohort_http_connections_closed_total", reason);
                tracing::debug!("http connection ended: {e}");
            }
        });
    }
    // Graceful: wait until every connection has finished.
    let _ = slots.acquire_many(max as u32).await;
}

/// Returns once `stop` is true (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The task id named by an `Idempotency-Key` header, if one came; it must
/// agree with an id given in the body.
fn keyed_id(headers: &HeaderMap, body_id: Option<TaskId>) -> Result<Option<TaskId>, ApiError> {
    let Some(key) = headers.get(crate::idempotency::IDEMPOTENCY_KEY_HEADER) else {
        return Ok(body_id);
    };
    let keyed = crate::idempotency::task_id_for_key(key.as_bytes())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.to_string()))?;
    match body_id {
        Some(id) if id != keyed => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("the Idempotency-Key names task {keyed}, the body's id is {id}: give one"),
        )),
        _ => Ok(Some(keyed)),
    }
}

/// The dedupe key of a `Dedupe-Key` header, if one came; it excludes an
/// `Idempotency-Key` and a body id (the key chooses the id).
fn dedupe_key(headers: &HeaderMap, body_id: Option<TaskId>) -> Result<Option<DedupeKey>, ApiError> {
    let Some(key) = headers.get(DEDUPE_KEY_HEADER) else {
        return Ok(None);
    };
    let malformed = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "malformed", m);
    if headers.contains_key(crate::idempotency::IDEMPOTENCY_KEY_HEADER) {
        return Err(malformed(
            "give Dedupe-Key or Idempotency-Key, not both: a dedupe key already makes a retry \
             return the live task"
                .into(),
        ));
    }
    if let Some(id) = body_id {
        return Err(malformed(format!(
            "a Dedupe-Key chooses the task id; the body names {id}: leave it out"
        )));
    }
    DedupeKey::new(key.as_bytes())
        .map(Some)
        .map_err(|e| malformed(e.to_string()))
}

async fn submit(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_submit_body(&api.config, body).await?;
    let (id, task) = decode_submit(&body, &api.config.kind_policies)?;
    let dedupe = dedupe_key(&headers, id)?;
    let id = keyed_id(&headers, id)?;
    api.config
        .peers
        .limits
        .check_task(&task)
        .map_err(|e| api.client_error(e, "/v1/tasks"))?;
    if task.kind == SCHEDULE_KIND {
        return Err(reserved_kind());
    }
    if api.registry.get(&task.kind).is_none() {
        return Err(unknown_kind(&api, &task.kind));
    }
    if let Some(key) = dedupe {
        return submit_unique(&api, key, task).await;
    }
    let id = match id {
        Some(id) => id,
        None => TaskId::random(&mut *api.id_rng.lock().expect("id rng lock")),
    };
    match api
        .ask(ClientRequest::Submit { id, task }, "/v1/tasks")
        .await?
    {
        ClientResponse::Accepted { id } | ClientResponse::State { id, .. } => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id.to_string(), "node": api.config.peers.id.0})),
        )
            .into_response()),
        ClientResponse::AcceptedBatch { .. } | ClientResponse::Events { .. } => {
            Err(unexpected("a submit"))
        }
    }
}

/// A submit with a dedupe key: runs [`DedupeSubmit`] against this node.
/// Its first request is a read, so a leader-mode follower redirects the
/// whole submit to the leader before anything is decided; a redirect or
/// refusal later (the leader changed) is passed on the same way, and the
/// client's retry of the whole submit is safe (see [`cohort_core::dedupe`]).
async fn submit_unique(api: &Api, key: DedupeKey, task: Task) -> Result<Response, ApiError> {
    let body = unique_submit(api, key, task, "/v1/tasks").await?;
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Runs [`DedupeSubmit`] for `key` and `task` against this node; the
/// answer's JSON body.
async fn unique_submit(
    api: &Api,
    key: DedupeKey,
    task: Task,
    path: &str,
) -> Result<serde_json::Value, ApiError> {
    let mut machine = DedupeSubmit::new(key, task, api.config.client.dedupe_rounds_max);
    let mut request = machine.request().expect("a new machine has a request");
    let outcome = loop {
        let reply = api.ask_core(request).await?;
        match machine.handle_reply(reply) {
            DedupeStep::Send(next) => request = next,
            DedupeStep::Done(outcome) => break outcome,
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(DedupeError::Client(e)) => return Err(api.client_error(e, path)),
        Err(e @ DedupeError::Contention { rounds }) => {
            api.metrics
                .inc("cohort_dedupe_submits_total", "outcome=\"contention\"");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contention",
                e.to_string(),
            )
            .with("rounds", json!(rounds))
            .retry());
        }
        Err(e @ DedupeError::Unexpected { .. }) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            ))
        }
    };
    let mut body = json!({
        "id": outcome.id().to_string(),
        "node": api.config.peers.id.0,
        "deduplicated": outcome.is_deduplicated(),
    });
    match &outcome {
        DedupeOutcome::Created { generation, .. } => {
            api.metrics
                .inc("cohort_dedupe_submits_total", "outcome=\"created\"");
            body["generation"] = json!(generation);
        }
        DedupeOutcome::Existing {
            generation, state, ..
        } => {
            api.metrics
                .inc("cohort_dedupe_submits_total", "outcome=\"existing\"");
            body["generation"] = json!(generation);
            body["state"] = json!(state.name());
        }
    }
    Ok(body)
}

fn reserved_kind() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "reserved_kind",
        format!("kind {SCHEDULE_KIND:?} is reserved for schedules: use POST /v1/schedules"),
    )
}

fn unknown_kind(api: &Api, kind: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_kind",
        format!(
            "unknown task kind {kind:?}; this node runs {:?}",
            api.registry.kinds()
        ),
    )
}

async fn submit_batch(State(api): State<Arc<Api>>, body: Body) -> Result<Response, ApiError> {
    const PATH: &str = "/v1/tasks:batch";
    let body = read_submit_body(&api.config, body).await?;
    let items = decode_batch(&body, &api.config.kind_policies)?;
    let tasks: Vec<(TaskId, Task)> = {
        let mut rng = api.id_rng.lock().expect("id rng lock");
        items
            .into_iter()
            .map(|(id, task)| (id.unwrap_or_else(|| TaskId::random(&mut *rng)), task))
            .collect()
    };
    api.config
        .peers
        .limits
        .check_batch(&tasks)
        .map_err(|e| api.client_error(e, PATH))?;
    if let Some(index) = tasks
        .iter()
        .position(|(_, t)| api.registry.get(&t.kind).is_none() || t.kind == SCHEDULE_KIND)
    {
        let kind = &tasks[index].1.kind;
        let err = if kind == SCHEDULE_KIND {
            reserved_kind()
        } else {
            unknown_kind(&api, kind)
        };
        let message = format!("batch task {index}: {}", err.message);
        return Err(ApiError { message, ..err }.with("index", json!(index)));
    }
    match api.ask(ClientRequest::SubmitBatch { tasks }, PATH).await? {
        ClientResponse::AcceptedBatch { ids } => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "ids": ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                "node": api.config.peers.id.0,
            })),
        )
            .into_response()),
        _ => Err(unexpected("a batch")),
    }
}

/// Query of `GET /v1/tasks/{id}`.
#[derive(Debug, Deserialize)]
struct GetQuery {
    #[serde(default)]
    stale: Option<bool>,
    #[serde(default)]
    wait: Option<String>,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_wait(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.trim().parse().ok()?;
    Some(Duration::from_millis(n.checked_mul(unit_ms)?))
}

/// The JSON form of a task's state.
pub fn state_json(id: TaskId, state: &TaskState) -> serde_json::Value {
    let mut v = json!({"id": id.to_string(), "state": state.name()});
    match state {
        TaskState::Pending | TaskState::Cancelled => {}
        TaskState::Running { node, epoch } => {
            v["node"] = json!(node.0);
            v["epoch"] = json!(epoch.0);
        }
        TaskState::Succeeded {
            result,
            node,
            epoch,
        } => {
            v["node"] = json!(node.0);
            v["epoch"] = json!(epoch.0);
            if let Ok(text) = std::str::from_utf8(result) {
                v["result"] = json!(text);
            }
            v["result_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(result));
        }
        TaskState::Failed { error, attempts } => {
            v["error"] = json!(error);
            v["attempts"] = json!(attempts);
        }
    }
    v
}

/// What a task read asks for: the path to redirect to (with its query:
/// stale, wait) and how fresh it must be.
fn read_of(uri: &axum::http::Uri, stale: Option<bool>) -> (String, Consistency) {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let consistency = if stale.unwrap_or(false) {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    };
    (path, consistency)
}

async fn get_task(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    q: Result<Query<GetQuery>, QueryRejection>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text()))?;
    let id = parse_id(&id)?;
    let (path, consistency) = read_of(&uri, q.stale);
    let wait = bounded_wait(&api, q.wait.as_deref())?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut interval = Duration::from_millis(5);
    loop {
        let notified = api.decided.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let resp = api
            .ask(ClientRequest::Get { id, consistency }, &path)
            .await?;
        let ClientResponse::State { id, state } = resp else {
            return Err(unexpected("a read"));
        };
        if state.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(state_json(id, &state)).into_response());
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// `?stale=` of an events read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    stale: Option<bool>,
}

async fn task_events(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    q: Result<Query<EventsQuery>, QueryRejection>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text()))?;
    let id = parse_id(&id)?;
    let (path, consistency) = read_of(&uri, q.stale);
    match api
        .ask(ClientRequest::Events { id, consistency }, &path)
        .await?
    {
        ClientResponse::Events {
            id,
            state,
            history,
            task,
        } => {
            let mut v = events_json(id, &state, &history);
            v["task"] = task_json(&task);
            if let Some(original) = task.retry_of {
                v["retry_of"] = json!(original.to_string());
            }
            Ok(Json(v).into_response())
        }
        _ => Err(unexpected("an events read")),
    }
}

/// The JSON form of a task's limit: the `limit` object of a submit body.
fn limit_json(l: &TaskLimit) -> serde_json::Value {
    json!({
        "key": l.key,
        "concurrency_max": l.concurrency_max,
        "rate_max": l.rate_max,
        "rate_window_ms": l.rate_window_ms,
    })
}

/// The JSON form of a submitted task: a submit body that would submit it
/// again (the payload as text when it is UTF-8, else as base64).
pub fn task_json(task: &Task) -> serde_json::Value {
    let mut v = json!({
        "kind": task.kind,
        "timeout_ms": task.timeout_ms,
        "max_attempts": task.max_attempts,
        "not_before_ms": task.not_before.as_millis(),
        "retry": {
            "backoff_initial_ms": task.retry.backoff_initial_ms,
            "backoff_max_ms": task.retry.backoff_max_ms,
            "non_retryable": task.retry.non_retryable,
        },
        "schedule_to_start_ms": task.schedule_to_start_ms,
        "priority": task.priority,
        "heartbeat_timeout_ms": task.heartbeat_timeout_ms,
        "labels": task.labels,
        "lease_grace_ms": task.lease_grace_ms,
    });
    if let Some(limit) = &task.limit {
        v["limit"] = limit_json(limit);
    }
    match std::str::from_utf8(&task.payload) {
        Ok(text) => v["payload"] = json!(text),
        Err(_) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&task.payload);
            v["payload_base64"] = json!(b64);
        }
    }
    v
}

/// The dedupe key under which the retries of `id` are chained: at most one
/// of them is pending or running at a time.
pub fn retry_key(id: TaskId) -> DedupeKey {
    DedupeKey::new(format!("cohort.retry/{id}").as_bytes()).expect("a valid key")
}

/// `POST /v1/tasks/{id}/retry`: a manual retry of a failed or cancelled
/// task, as a new task with the same body. The retries of one task are a
/// dedupe-key chain ([`retry_key`]): while one is pending or running,
/// retrying again names it (`"deduplicated": true`) instead of creating
/// another; once it is final, retrying again creates the next.
async fn retry_task(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let path = format!("/v1/tasks/{id}/retry");
    let consistency = Consistency::Linearizable;
    let (state, task) = match api
        .ask(ClientRequest::Events { id, consistency }, &path)
        .await?
    {
        ClientResponse::Events { state, task, .. } => (state, *task),
        _ => return Err(unexpected("an events read")),
    };
    if !matches!(state, TaskState::Failed { .. } | TaskState::Cancelled) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "only a failed or cancelled task can be retried; {id} is {}",
                state.name()
            ),
        )
        .with("state", json!(state.name())));
    }
    if task.kind == SCHEDULE_KIND {
        return Err(reserved_kind());
    }
    // The link to the original is part of the retry's body, so it is
    // decided and kept with the task (and shown in its events read).
    let task = Task {
        retry_of: Some(id),
        ..task
    };
    let mut body = unique_submit(&api, retry_key(id), task, &path).await?;
    body["retry_of"] = json!(id.to_string());
    api.metrics.inc("cohort_retries_total", "");
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The JSON form of a task's state and history: [`state_json`] with
/// `"events"` and `"events_dropped"`.
pub fn events_json(id: TaskId, state: &TaskState, history: &TaskEvents) -> serde_json::Value {
    let mut v = state_json(id, state);
    let events: Vec<serde_json::Value> = history.events.iter().map(event_json).collect();
    v["events"] = json!(events);
    v["events_dropped"] = json!(history.dropped);
    v
}

fn event_json(e: &TaskEvent) -> serde_json::Value {
    let mut v = json!({"at_ms": e.at.as_millis(), "event": e.what.name()});
    match &e.what {
        TaskEventKind::Submitted | TaskEventKind::Cancelled => {}
        TaskEventKind::NotStarted { error } => v["error"] = json!(error),
        TaskEventKind::Assigned { node, epoch } | TaskEventKind::Succeeded { node, epoch } => {
            v["node"] = json!(node.0);
            v["epoch"] = json!(epoch.0);
        }
        TaskEventKind::AttemptFailed {
            node,
            epoch,
            error,
            retry_at,
        } => {
            v["node"] = json!(node.0);
            v["epoch"] = json!(epoch.0);
            v["error"] = json!(error);
            v["retry_at_ms"] = json!(retry_at.as_millis());
        }
        TaskEventKind::Failed { node, epoch, error } => {
            v["node"] = json!(node.0);
            v["epoch"] = json!(epoch.0);
            v["error"] = json!(error);
        }
        TaskEventKind::RunnerLost {
            node,
            epoch,
            reason,
        } => {
            v["node"] = json!(node.0);
            v["epoch"] = json!(epoch.0);
            v["reason"] = json!(reason.name());
        }
        TaskEventKind::Heartbeat {
            node,
            epoch,
            progress,
        } => {
            v["node"] = json!(node.0);
            v["epoch"] = json!(epoch.0);
            v["progress"] = json!(progress);
        }
    }
    v
}

async fn cancel(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let path = format!("/v1/tasks/{id}");
    match api.ask(ClientRequest::Cancel { id }, &path).await? {
        ClientResponse::State { id, state } => Ok(Json(state_json(id, &state)).into_response()),
        ClientResponse::Accepted { id } => Ok(Json(json!({"id": id.to_string()})).into_response()),
        ClientResponse::AcceptedBatch { .. } | ClientResponse::Events { .. } => {
            Err(unexpected("a cancel"))
        }
    }
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only tasks in this state.
    pub state: Option<String>,
    /// Start strictly after this id (the previous page's `next`).
    pub after: Option<String>,
    /// Most tasks in the page (default 100, at most `list_page_max`).
    pub limit: Option<usize>,
}

/// Default page size of `GET /v1/tasks`.
pub const LIST_PAGE_DEFAULT: usize = 100;

async fn list_tasks(
    State(api): State<Arc<Api>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "malformed", m);
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            cohort_core::TaskState::NAMES
                .iter()
                .copied()
                .find(|n| *n == s)
                .ok_or_else(|| {
                    bad(format!(
                        "unknown state {s:?}; one of {}",
                        cohort_core::TaskState::NAMES.join(", ")
                    ))
                })?,
        ),
    };
    let (after, limit) = page_bounds(&api, q.after.as_deref(), q.limit)?;
    let page = api
        .read_core(|reply| Control::List {
            after,
            state,
            limit,
            reply,
        })
        .await?;
    let status = api.read_core(|reply| Control::Status { reply }).await?;
    Ok(Json(json!({
        "node": api.config.peers.id.0,
        "role": status.role,
        "complete": view_is_complete(&api.config.mode, status.role),
        "tasks": page.tasks.iter().map(|(id, s)| state_json(*id, s)).collect::<Vec<_>>(),
        "next": page.next.map(|n| n.to_string()),
    }))
    .into_response())
}

/// A listing's `after` and `limit` (default [`LIST_PAGE_DEFAULT`], at
/// most `list_page_max`), checked.
fn page_bounds(
    api: &Api,
    after: Option<&str>,
    limit: Option<usize>,
) -> Result<(Option<TaskId>, usize), ApiError> {
    let after = after.map(parse_id).transpose()?;
    let max = api.config.client.list_page_max;
    let limit = limit.unwrap_or(LIST_PAGE_DEFAULT.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("limit must be 1..={max}"),
        ));
    }
    Ok((after, limit))
}

/// Whether a node's view covers every task of the cluster: in leader mode
/// every node applies every task (a follower may lag the leader); the
/// static coordinator holds them all; a leaderless node holds only the
/// tasks it replicates, so a full listing merges every member's.
fn view_is_complete(mode: &str, role: &str) -> bool {
    match mode {
        "leaderless" => false,
        "static" => role == "coordinator",
        _ => true,
    }
}

async fn cluster(State(api): State<Arc<Api>>) -> Response {
    let c = &api.config;
    let members: Vec<serde_json::Value> = c
        .peers
        .members
        .iter()
        .map(|m| {
            let me = *m == c.peers.id;
            json!({
                "id": m.0,
                "self": me,
                "peer_addr": c.peer_addrs.get(m).map(|a| a.to_string()),
                "http_addr": c.http_addrs.get(m).map(|a| a.to_string()),
                "connected": me || api.peer_status.is_connected(*m),
            })
        })
        .collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let status = match api.control.send(Control::Status { reply: tx }).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let workers = match api.control.send(Control::Workers { reply: tx }).await {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let workers: Vec<serde_json::Value> = workers
        .into_iter()
        .map(|w| {
            json!({
                "id": w.id.0,
                "live": w.live,
                "running": w.running,
                "capacity_tasks": w.capacity,
                "labels": w.labels,
            })
        })
        .collect();
    Json(json!({
        "cluster_id": c.cluster_id,
        "mode": c.mode,
        "node": c.peers.id.0,
        "role": status.as_ref().map(|s| s.role),
        "leader": status.as_ref().and_then(|s| s.leader).map(|l| l.0),
        "term": status.as_ref().and_then(|s| s.term),
        "capacity_tasks": c.peers.capacity_tasks,
        "labels": c.peers.labels,
        "members": members,
        "workers": workers,
        "kinds": api.registry.kinds(),
        "kind_policies": api.config.kind_policies,
    }))
    .into_response()
}

/// The JSON form of a change of the ring.
fn ring_request_json(change: &RingRequest) -> serde_json::Value {
    let (op, node) = match change {
        RingRequest::Join(n) => ("join", n),
        RingRequest::Remove(n) => ("remove", n),
    };
    json!({"op": op, "node": node.0})
}

/// The JSON form of the ring `node` knows.
fn ring_view_json(node: NodeId, view: &RingView) -> serde_json::Value {
    json!({
        "node": node.0,
        "epoch": view.epoch,
        "members": view.members.iter().map(|m| m.0).collect::<Vec<_>>(),
        "in_flight": view.in_flight.as_ref().map(ring_request_json),
    })
}

impl Api {
    fn ring_refusal(&self, e: RingRefusal) -> ApiError {
        let msg = e.to_string();
        match e {
            RingRefusal::NotSupported => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_supported",
                format!(
                    "this node runs the {} mode, which has no ring; ring changes exist in leaderless mode",
                    self.config.mode
                ),
            ),
            RingRefusal::NotAMember(_) => ApiError::new(StatusCode::NOT_FOUND, "not_a_member", msg),
            RingRefusal::Busy(change) => ApiError::new(StatusCode::CONFLICT, "busy", msg)
                .with("in_flight", ring_request_json(&change))
                .retry(),
            RingRefusal::LastMember(_) => ApiError::new(StatusCode::CONFLICT, "last_member", msg),
        }
    }

    /// The ring this node knows; `not_supported` in modes without one.
    async fn read_ring(&self) -> Result<RingView, ApiError> {
        self.read_core(|reply| Control::Ring { reply })
            .await?
            .ok_or_else(|| self.ring_refusal(RingRefusal::NotSupported))
    }
}

async fn ring(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let view = api.read_ring().await?;
    Ok(Json(ring_view_json(api.config.peers.id, &view)).into_response())
}

/// Query of `POST`/`DELETE /v1/ring/members/{node}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingQuery {
    /// Wait until this node's ring reflects the change, at most this long
    /// (`parse_wait` syntax), bounded by `wait_ms_max`.
    #[serde(default)]
    wait: Option<String>,
}

/// A node id in a path: a decimal number.
fn parse_node(s: &str) -> Result<NodeId, ApiError> {
    s.parse::<u64>().map(NodeId).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("{s:?} is not a node id (a decimal number)"),
        )
    })
}

async fn ring_join(
    State(api): State<Arc<Api>>,
    Path(node): Path<String>,
    q: Result<Query<RingQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let node = parse_node(&node)?;
    change_ring(&api, RingRequest::Join(node), q).await
}

async fn ring_remove(
    State(api): State<Arc<Api>>,
    Path(node): Path<String>,
    q: Result<Query<RingQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let node = parse_node(&node)?;
    change_ring(&api, RingRequest::Remove(node), q).await
}

/// A `?wait=` (absent: no wait), capped by `client.wait_ms_max`.
fn bounded_wait(api: &Api, wait: Option<&str>) -> Result<Duration, ApiError> {
    let wait = match wait {
        None => Duration::ZERO,
        Some(w) => parse_wait(w).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("bad wait {w:?}; use e.g. 10s or 500ms"),
            )
        })?,
    };
    Ok(wait.min(Duration::from_millis(api.config.client.wait_ms_max)))
}

/// Asks the core to propose `change`; `200` with the ring when it reflects
/// the change (at once, or within `?wait=`), else `202` with the ring.
async fn change_ring(
    api: &Api,
    change: RingRequest,
    q: Result<Query<RingQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text()))?;
    let wait = bounded_wait(api, q.wait.as_deref())?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut view = api
        .read_core(|reply| Control::ChangeRing { change, reply })
        .await?
        .map_err(|e| api.ring_refusal(e))?;
    let mut interval = Duration::from_millis(5);
    while !change.reflected_in(&view.members) && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
        interval = (interval * 2).min(Duration::from_millis(100));
        view = api.read_ring().await?;
    }
    let reflected = change.reflected_in(&view.members);
    let mut body = ring_view_json(api.config.peers.id, &view);
    body["change"] = ring_request_json(&change);
    body["reflected"] = json!(reflected);
    let status = if reflected {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(body)).into_response())
}

/// Query of `POST /v1/drain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainQuery {
    /// How long running tasks may go on before they are handed back.
    #[serde(default)]
    deadline_ms: Option<u64>,
}

/// The JSON form of a node's drain (`GET`/`POST /v1/drain`).
fn drain_json(node: NodeId, report: &crate::driver::DrainReport) -> serde_json::Value {
    let Some(status) = &report.status else {
        return json!({"node": node.0, "draining": false});
    };
    let deadline_in_ms = report
        .deadline_in()
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    json!({
        "node": node.0,
        "draining": true,
        "deadline_in_ms": deadline_in_ms,
        "handing_back": status.handing_back,
        "held_count": status.held_count,
        "held": status.held.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "done": status.is_done(),
    })
}

async fn drain(
    State(api): State<Arc<Api>>,
    q: Result<Query<DrainQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text()))?;
    let deadline_ms = q.deadline_ms.unwrap_or(crate::DRAIN_DEADLINE_MS_DEFAULT);
    if deadline_ms > crate::DRAIN_DEADLINE_MS_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "deadline_ms must be at most {} (DRAIN_DEADLINE_MS_MAX)",
                crate::DRAIN_DEADLINE_MS_MAX
            ),
        ));
    }
    let deadline = Duration::from_millis(deadline_ms);
    let report = api
        .read_core(|reply| Control::Drain { deadline, reply })
        .await?
        .map_err(|e| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_supported",
                format!("{e} (this node runs the {} mode)", api.config.mode),
            )
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(drain_json(api.config.peers.id, &report)),
    )
        .into_response())
}

async fn drain_status(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let report = api
        .read_core(|reply| Control::DrainStatus { reply })
        .await?;
    Ok(Json(drain_json(api.config.peers.id, &report)).into_response())
}

async fn health(State(api): State<Arc<Api>>) -> Response {
    Json(json!({
        "status": "ok",
        "node": api.config.peers.id.0,
        "mode": api.config.mode,
        "uptime_ms": api.started.elapsed().as_millis() as u64,
    }))
    .into_response()
}

/// The OpenAPI 3 document of this API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    // Read from the core at scrape time; a stopping node still answers
    // with what the runtime itself counted.
    if let Ok(seen) = api.read_core(|reply| Control::Inspect { reply }).await {
        for name in cohort_core::TaskState::NAMES {
            let n = seen.tasks_by_state.get(name).copied().unwrap_or(0);
            api.metrics
                .set("cohort_tasks", &format!("state=\"{name}\""), n as i64);
        }
        for (event, n) in seen.counters {
            api.metrics.set_counter(
                "cohort_protocol_events_total",
                &format!("event=\"{event}\""),
                n,
            );
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

/// The body of `POST /v1/schedules`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// 1 to 128 bytes of `a-z A-Z 0-9 _ . -`; every id of the schedule
    /// derives from it.
    pub name: String,
    /// A fixed interval (give this or `cron`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// The first tick of a fixed interval, in ms since the Unix epoch
    /// (default 0: ticks at the multiples of `every_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// A 5-field UTC cron expression (give this or `every_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// `skip` (default), `buffer_one` or `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// How late a tick may still fire (default
    /// [`CATCH_UP_WINDOW_MS_DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_window_ms: Option<u64>,
    /// The task each tick fires: a submit body without `id` and
    /// `not_before_ms` (the tick sets both).
    pub task: SubmitBody,
}

fn invalid_schedule(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_schedule", message)
}

/// A schedule body, checked (but for its task's size and kind).
fn decode_schedule(
    body: ScheduleBody,
    link_attempts: u32,
    policies: &KindPolicies,
) -> Result<Schedule, ApiError> {
    let name = ScheduleName::new(&body.name).map_err(|e| invalid_schedule(e.to_string()))?;
    let spec = match (body.every_ms, body.cron, body.start_ms) {
        (Some(every_ms), None, start_ms) => Spec::Every {
            every_ms,
            start_ms: start_ms.unwrap_or(0),
        },
        (None, Some(cron), None) => {
            Spec::Cron(CronExpr::parse(&cron).map_err(|e| invalid_schedule(e.to_string()))?)
        }
        (None, Some(_), Some(_)) => {
            return Err(invalid_schedule("start_ms goes with every_ms, not cron"))
        }
        _ => return Err(invalid_schedule("give exactly one of every_ms and cron")),
    };
    let overlap = match body.overlap.as_deref() {
        None => Overlap::Skip,
        Some(o) => Overlap::parse(o).ok_or_else(|| {
            invalid_schedule(format!(
                "overlap {o:?} is not one of skip, buffer_one, allow"
            ))
        })?,
    };
    if body.task.id.is_some() || body.task.not_before_ms.is_some() {
        return Err(invalid_schedule(
            "a schedule's task has no id or not_before_ms: each tick sets them",
        ));
    }
    let (_, task) = submit_task(body.task, policies)?;
    if task.kind == SCHEDULE_KIND {
        return Err(reserved_kind());
    }
    let schedule = Schedule {
        name,
        spec,
        overlap,
        catch_up_window_ms: body
            .catch_up_window_ms
            .unwrap_or(CATCH_UP_WINDOW_MS_DEFAULT),
        task,
        link_attempts,
    };
    schedule
        .validate()
        .map_err(|e| invalid_schedule(e.to_string()))?;
    Ok(schedule)
}

/// [`decode_schedule`] of a JSON body, for tests and fuzzing: the error
/// is what a client would get in a `400`.
pub fn parse_schedule(body: &[u8], link_attempts: u32) -> Result<Schedule, String> {
    serde_json::from_slice::<ScheduleBody>(body)
        .map_err(|e| format!("400 malformed: bad JSON: {e}"))
        .and_then(|b| {
            decode_schedule(b, link_attempts, &KindPolicies::new())
                .map_err(|e| format!("{} {}: {}", e.status.as_u16(), e.code, e.message))
        })
}

/// The JSON form of a schedule's definition (the body that creates it).
pub fn schedule_json(s: &Schedule) -> serde_json::Value {
    let task = &s.task;
    let mut v = json!({
        "name": s.name.as_str(),
        "overlap": s.overlap.name(),
        "catch_up_window_ms": s.catch_up_window_ms,
        "task": {
            "kind": task.kind,
            "payload_base64": base64::engine::general_purpose::STANDARD.encode(&task.payload),
            "timeout_ms": task.timeout_ms,
            "max_attempts": task.max_attempts,
            "retry": {
                "backoff_initial_ms": task.retry.backoff_initial_ms,
                "backoff_max_ms": task.retry.backoff_max_ms,
                "non_retryable": task.retry.non_retryable,
            },
            "schedule_to_start_ms": task.schedule_to_start_ms,
            "priority": task.priority,
            "heartbeat_timeout_ms": task.heartbeat_timeout_ms,
            "labels": task.labels,
            "lease_grace_ms": task.lease_grace_ms,
        },
    });
    if let Some(limit) = &task.limit {
        v["task"]["limit"] = limit_json(limit);
    }
    match &s.spec {
        Spec::Every { every_ms, start_ms } => {
            v["every_ms"] = json!(every_ms);
            v["start_ms"] = json!(start_ms);
        }
        Spec::Cron(c) => v["cron"] = json!(c.text),
    }
    v
}

/// Reads one of a schedule's tasks linearizably: `None` when absent.
async fn read_schedule_task(
    api: &Api,
    id: TaskId,
    path: &str,
) -> Result<Option<TaskState>, ApiError> {
    let req = ClientRequest::Get {
        id,
        consistency: Consistency::Linearizable,
    };
    match api.ask_core(req).await? {
        Ok(ClientResponse::State { state, .. }) => Ok(Some(state)),
        Err(ClientError::NotFound { .. }) => Ok(None),
        Err(e) => Err(api.client_error(e, path)),
        Ok(_) => Err(unexpected("a read")),
    }
}

/// `POST /v1/schedules`: stores the definition, whose first run starts the
/// chain. The same body again is answered the same; another definition
/// under the name is `409 schedule_exists`; a deleted name is `409
/// schedule_deleted` (names are not reused).
async fn schedule_create(State(api): State<Arc<Api>>, body: Body) -> Result<Response, ApiError> {
    const PATH: &str = "/v1/schedules";
    let body = read_submit_body(&api.config, body).await?;
    let body: ScheduleBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("bad JSON: {e}"),
        )
    })?;
    let limits = &api.config.peers.limits;
    let schedule = decode_schedule(body, limits.attempts_max, &api.config.kind_policies)?;
    limits
        .check_task(&schedule.firing(0))
        .map_err(|e| api.client_error(e, PATH))?;
    // The largest task of the chain must fit too: a link carries the
    // definition.
    limits
        .check_task(&schedule.link_task(SCHEDULE_TICK_MS_MAX, Some(SCHEDULE_TICK_MS_MAX)))
        .map_err(|e| api.client_error(e, PATH))?;
    if api.registry.get(&schedule.task.kind).is_none() {
        return Err(unknown_kind(&api, &schedule.task.kind));
    }
    let name = schedule.name.clone();
    // First, so that a follower redirects the whole create to the leader.
    if read_schedule_task(&api, name.task_id(IdTag::Deleted), PATH)
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "schedule_deleted",
            format!(
                "schedule {:?} was deleted; a name is not reused",
                name.as_str()
            ),
        ));
    }
    let id = name.task_id(IdTag::Spec);
    let req = ClientRequest::Submit {
        id,
        task: schedule.spec_task(),
    };
    match api.ask_core(req).await? {
        Ok(_) => Ok((
            StatusCode::CREATED,
            Json(json!({
                "name": name.as_str(),
                "id": id.to_string(),
                "node": api.config.peers.id.0,
            })),
        )
            .into_response()),
        Err(ClientError::IdConflict { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "schedule_exists",
            format!(
                "schedule {:?} exists with another definition",
                name.as_str()
            ),
        )),
        Err(e) => Err(api.client_error(e, PATH)),
    }
}

fn parse_schedule_name(name: &str) -> Result<ScheduleName, ApiError> {
    ScheduleName::new(name).map_err(|e| invalid_schedule(e.to_string()))
}

/// `GET /v1/schedules/{name}`: the definition (once its first run
/// started the chain: the definition task's result), whether it is
/// deleted, and the next tick after now by this node's clock.
async fn schedule_get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = parse_schedule_name(&name)?;
    let path = format!("/v1/schedules/{}", name.as_str());
    match schedule_view(&api, &name, &path).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no schedule {:?}", name.as_str()),
        )),
    }
}

/// A schedule as `GET /v1/schedules/{name}` shows it, from linearizable
/// reads of its definition and tombstone; `None` if it has no definition.
async fn schedule_view(
    api: &Api,
    name: &ScheduleName,
    path: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let Some(state) = read_schedule_task(api, name.task_id(IdTag::Spec), path).await? else {
        return Ok(None);
    };
    let deleted = read_schedule_task(api, name.task_id(IdTag::Deleted), path)
        .await?
        .is_some();
    let mut v = json!({
        "name": name.as_str(),
        "id": name.task_id(IdTag::Spec).to_string(),
        "deleted": deleted,
        "started": matches!(state, TaskState::Succeeded { .. }),
    });
    if let TaskState::Succeeded { result, .. } = &state {
        if let Ok(started) = serde_json::from_slice::<serde_json::Value>(result) {
            v["definition"] = started["definition"].clone();
            v["first_tick_ms"] = started["first_tick_ms"].clone();
        }
    }
    if let Some(schedule) = v.get("definition").and_then(|d| definition_of(name, d)) {
        if !deleted {
            let next = schedule.spec.next_after(crate::schedule::unix_ms_now());
            v["next_tick_ms"] = json!(next);
            v["next_firing_id"] = json!(next.map(|t| name.task_id(IdTag::Fire(t)).to_string()));
        }
    }
    Ok(Some(v))
}

/// Query of `GET /v1/schedules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleListQuery {
    /// Start strictly after this definition id (the previous page's `next`).
    pub after: Option<String>,
    /// Most schedules in the page (default 100, at most `list_page_max`).
    pub limit: Option<usize>,
}

/// `GET /v1/schedules`: the schedules whose definitions this node holds,
/// each as `GET /v1/schedules/{name}` shows it (so each costs two
/// linearizable reads). Like `GET /v1/tasks`, `complete` says whether this
/// node's view covers the cluster (not in leaderless mode: merge every
/// member's, as `Client::schedules` does).
async fn schedule_list(
    State(api): State<Arc<Api>>,
    q: Result<Query<ScheduleListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "malformed", m);
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let (after, limit) = page_bounds(&api, q.after.as_deref(), q.limit)?;
    let page = api
        .read_core(|reply| Control::Schedules {
            after,
            limit,
            reply,
        })
        .await?;
    let status = api.read_core(|reply| Control::Status { reply }).await?;
    // Where a redirect to the node that answers reads points: this page.
    let mut path = format!("/v1/schedules?limit={limit}");
    if let Some(a) = after {
        path.push_str(&format!("&after={a}"));
    }
    let mut schedules = Vec::with_capacity(page.schedules.len());
    for schedule in &page.schedules {
        if let Some(v) = schedule_view(&api, &schedule.name, &path).await? {
            schedules.push(v);
        }
    }
    Ok(Json(json!({
        "node": api.config.peers.id.0,
        "role": status.role,
        "complete": view_is_complete(&api.config.mode, status.role),
        "schedules": schedules,
        "next": page.next.map(|n| n.to_string()),
    }))
    .into_response())
}

/// The schedule a definition's JSON (as [`schedule_json`] writes it) names.
fn definition_of(name: &ScheduleName, d: &serde_json::Value) -> Option<Schedule> {
    let mut body: ScheduleBody = serde_json::from_value(d.clone()).ok()?;
    body.name = name.as_str().to_string();
    // Only its ticks are used: the links' attempts and the task's
    // policy do not matter here.
    decode_schedule(body, 1, &KindPolicies::new()).ok()
}

/// `DELETE /v1/schedules/{name}`: writes the tombstone every link reads
/// before it fires. Asking again is answered the same.
async fn schedule_delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = parse_schedule_name(&name)?;
    let path = format!("/v1/schedules/{}", name.as_str());
    if read_schedule_task(&api, name.task_id(IdTag::Spec), &path)
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no schedule {:?}", name.as_str()),
        ));
    }
    let req = ClientRequest::Submit {
        id: name.task_id(IdTag::Deleted),
        task: Schedule::tombstone_task(),
    };
    match api.ask_core(req).await? {
        Ok(_) => Ok(Json(json!({"name": name.as_str(), "deleted": true})).into_response()),
        Err(e) => Err(api.client_error(e, &path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        for path in [
            "/v1/tasks",
            "/v1/tasks/{id}",
            "/v1/tasks/{id}/events",
            "/v1/tasks/{id}/retry",
            "/v1/cluster",
            "/v1/ring",
            "/v1/ring/members/{node}",
            "/v1/drain",
            "/v1/schedules",
            "/v1/schedules/{name}",
            "/v1/health",
            "/v1/openapi.json",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let fields = doc["components"]["schemas"]["Submit"]["properties"]
            .as_object()
            .unwrap();
        let body = serde_json::to_value(SubmitBody {
            id: Some("1".into()),
            kind: "echo".into(),
            payload: Some(String::new()),
            payload_base64: Some(String::new()),
            timeout_ms: Some(1),
            max_attempts: Some(1),
            not_before_ms: None,
            retry: None,
            schedule_to_start_ms: None,
            priority: None,
            heartbeat_timeout_ms: None,
            labels: None,
            limit: None,
            lease_grace_ms: Some(2_000),
        })
        .unwrap();
        for k in body.as_object().unwrap().keys() {
            assert!(fields.contains_key(k), "openapi misses submit field {k}");
        }
        let ring = doc["components"]["schemas"]["Ring"]["properties"]
            .as_object()
            .unwrap();
        let change = crate::client::RingChangeView {
            op: "join".into(),
            node: 4,
        };
        let answer = serde_json::to_value(crate::client::RingInfo {
            node: 1,
            epoch: 1,
            members: vec![1, 4],
            in_flight: Some(change.clone()),
            change: Some(change),
            reflected: Some(true),
        })
        .unwrap();
        for k in answer.as_object().unwrap().keys() {
            assert!(ring.contains_key(k), "openapi misses ring field {k}");
        }
        let view = RingView {
            epoch: 1,
            members: vec![NodeId(1), NodeId(4)],
            in_flight: Some(RingRequest::Remove(NodeId(4))),
        };
        let shown = ring_view_json(NodeId(1), &view);
        let read: crate::client::RingInfo = serde_json::from_value(shown.clone()).unwrap();
        assert_eq!(read.in_flight.unwrap().op, "remove");
        for k in shown.as_object().unwrap().keys() {
            assert!(ring.contains_key(k), "openapi misses ring field {k}");
        }
        let drain = doc["components"]["schemas"]["Drain"]["properties"]
            .as_object()
            .unwrap();
        let report = crate::driver::DrainReport {
            status: Some(cohort_core::drain::drain_status(
                cohort_core::Time::from_millis(5),
                false,
                [TaskId(1)],
            )),
            now: cohort_core::Time::from_millis(2),
        };
        let shown = drain_json(NodeId(1), &report);
        assert_eq!(shown["deadline_in_ms"], 3);
        let read: crate::client::DrainInfo = serde_json::from_value(shown.clone()).unwrap();
        assert_eq!(read.held_count, Some(1));
        for k in shown.as_object().unwrap().keys() {
            assert!(drain.contains_key(k), "openapi misses drain field {k}");
        }
    }

    #[test]
    fn wait_durations_parse_with_units() {
        assert_eq!(parse_wait("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_wait("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_wait("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_wait("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_wait("soon"), None);
    }
}
