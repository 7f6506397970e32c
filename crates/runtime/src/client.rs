//! A client of the node HTTP API (used by `cohort submit/get/wait/members`,
//! the demo and the tests).

use crate::http::SubmitBody;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A task as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// Hex id.
    pub id: String,
    /// `pending`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Runner, when running or succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// Epoch, when running or succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Result, when succeeded and UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Result in base64, when succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_base64: Option<String>,
    /// Last error, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attempts made, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl TaskView {
    /// Whether the state can never change again.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// One event of a task's history, as `GET /v1/tasks/{id}/events` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEventView {
    /// When the deciding node proposed it, in ms on its clock (since the
    /// Unix epoch).
    pub at_ms: u64,
    /// `submitted`, `assigned`, `attempt_failed`, `runner_lost`,
    /// `succeeded`, `failed` or `cancelled`.
    pub event: String,
    /// The runner, for every event about an assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// The assignment's epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Why a runner was lost (`runner_lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The handler's error (`attempt_failed`, `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a failed attempt's task may run again (`attempt_failed`), in
    /// ms since the Unix epoch on the deciding node's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<u64>,
    /// What the handler reported in its latest recorded heartbeat
    /// (`heartbeat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// A task with its event history (`GET /v1/tasks/{id}/events`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskEventsView {
    /// The task's state.
    #[serde(flatten)]
    pub task: TaskView,
    /// What happened to it, oldest first.
    pub events: Vec<TaskEventView>,
    /// Events dropped between the first and the latest kept.
    pub events_dropped: u32,
    /// A manual retry's original: the hex id of the task it runs again
    /// (`POST /v1/tasks/{id}/retry`), kept with the retry's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// What was submitted: the fields of a submit body (`kind`,
    /// `payload`/`payload_base64`, `timeout_ms`, ...).
    #[serde(rename = "task", default)]
    pub body: serde_json::Value,
}

/// The answer to [`Client::retry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryView {
    /// The retry's hex id: the one created, or the live one found.
    pub id: String,
    /// The task retried.
    pub retry_of: String,
    /// The node that ran the retry.
    pub node: u64,
    /// `true`: a retry of this task was pending or running and nothing was
    /// created.
    pub deduplicated: bool,
    /// How many retries of this task came before this one.
    pub generation: u64,
    /// When deduplicated: the live retry's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A schedule as `GET /v1/schedules/{name}` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScheduleView {
    /// Its name.
    pub name: String,
    /// The id of its definition task.
    pub id: String,
    /// Whether it was deleted (its tombstone exists).
    pub deleted: bool,
    /// Whether its definition ran and started the chain.
    pub started: bool,
    /// The definition, as `POST /v1/schedules` takes it (once started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<serde_json::Value>,
    /// The chain's first tick (once started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_tick_ms: Option<u64>,
    /// The next tick after now by the answering node's clock (once
    /// started, unless deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_tick_ms: Option<u64>,
    /// The id of that tick's firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_firing_id: Option<String>,
}

/// One page of `GET /v1/schedules`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchedulePageView {
    /// The node that answered.
    pub node: u64,
    /// Whether its view covers every schedule of the cluster.
    pub complete: bool,
    /// The schedules, ascending by definition id.
    pub schedules: Vec<ScheduleView>,
    /// The `after` of the next page, if there may be more.
    #[serde(default)]
    pub next: Option<String>,
}

/// Every schedule of the cluster, merged from every member's view where
/// one node's is not complete.
#[derive(Clone, Debug, Default)]
pub struct ScheduleListing {
    /// The schedules, by name, each once.
    pub schedules: Vec<ScheduleView>,
    /// Members that could not be listed.
    pub unreachable: Vec<(u64, String)>,
    /// Whether `schedules` stopped at the caller's limit or at
    /// `LIST_PAGES_READ_MAX` pages of one node.
    pub truncated: bool,
}

/// One page of `GET /v1/tasks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskPageView {
    /// The node that answered.
    pub node: u64,
    /// Whether its view covers every task of the cluster.
    pub complete: bool,
    /// The tasks, ascending by id.
    pub tasks: Vec<TaskView>,
    /// `after` for the next page; `None` at the end.
    pub next: Option<String>,
}

/// A change of the ring as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingChangeView {
    /// `join` or `remove`.
    pub op: String,
    /// The node joining or leaving.
    pub node: u64,
}

/// The ring as one node knows it (`GET /v1/ring`, and the answer to a
/// ring change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingInfo {
    /// The node that answered.
    pub node: u64,
    /// 0 for the configured ring, +1 per agreed change.
    pub epoch: u64,
    /// The members, ascending.
    pub members: Vec<u64>,
    /// The change this node drives now, if any.
    #[serde(default)]
    pub in_flight: Option<RingChangeView>,
    /// Answers to a change: the change asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<RingChangeView>,
    /// Answers to a change: whether this node's ring reflects it (`200`)
    /// or the change is under way (`202`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflected: Option<bool>,
}

/// A node's drain as the API reports it (`GET`/`POST /v1/drain`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainInfo {
    /// The node that answered.
    pub node: u64,
    /// Whether it is draining; the other fields are set only then.
    pub draining: bool,
    /// How long until what it still runs is handed back (0 once begun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_in_ms: Option<u64>,
    /// The deadline has passed: what was left is being handed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handing_back: Option<bool>,
    /// How many tasks it still holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_count: Option<u64>,
    /// The first of those tasks' ids (hex), ascending.
    #[serde(default)]
    pub held: Vec<String>,
    /// It holds nothing any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<bool>,
}

impl DrainInfo {
    /// Whether the node is draining and holds nothing any more.
    pub fn is_done(&self) -> bool {
        self.draining && self.done == Some(true)
    }
}

/// Most pages [`Client::list_all`] reads over all members before it stops
/// and reports the listing truncated.
pub const LIST_PAGES_READ_MAX: usize = 10_000;

/// A cluster-wide listing ([`Client::list_all`]).
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The tasks, ascending by id, each once.
    pub tasks: Vec<TaskView>,
    /// Members that could not be listed (their tasks may be missing if
    /// every replica of a task is among them).
    pub unreachable: Vec<(u64, String)>,
    /// Whether `tasks` stopped at the caller's limit.
    pub truncated: bool,
}

/// Of two views of one task from different nodes, the more advanced: a
/// final state over any other, then the higher epoch, then running over
/// pending.
fn fresher(a: TaskView, b: TaskView) -> TaskView {
    let rank = |t: &TaskView| (t.is_final(), t.epoch.unwrap_or(0), t.state == "running");
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error's `code`.
        code: String,
        /// The error's message.
        message: String,
        /// Batch refusals: the position of the task at fault.
        index: Option<usize>,
        /// `batch_incomplete`: the tasks known durable (hex ids).
        durable: Vec<String>,
    },
    /// The node could not be reached or answered nonsense.
    #[error("{0}")]
    Transport(String),
}

impl CallError {
    /// The HTTP status of an answered call (`None`: no answer).
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Api { status, .. } => Some(*status),
            CallError::Transport(_) => None,
        }
    }

    /// Whether the same call may succeed later or elsewhere.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Api { status, .. } => matches!(status, 307 | 421 | 429 | 503),
            CallError::Transport(_) => true,
        }
    }
}

/// The answer to [`Client::submit_unique`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueSubmit {
    /// The task's hex id: the one created, or the key's live one.
    pub id: String,
    /// The node that ran the submit.
    pub node: u64,
    /// `true`: the key's task was pending or running and nothing was
    /// created; `false`: this body was made the key's new task.
    pub deduplicated: bool,
    /// The task's generation under its key (0 for the key's first task).
    pub generation: u64,
    /// When deduplicated: the task's state as read (`pending`, `running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// `scheme://host:port` of `url` (all of it if it has no path).
fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url[..after_scheme + i].to_string(),
        None => url.to_string(),
    }
}

/// Most redirects a [`Client`] follows for one call.
pub const REDIRECTS_MAX: usize = 5;

/// A client of one node.
///
/// Submits follow the coordinator: once a submit was redirected to the
/// leader (`307 not_leader`), the client sends the next submits there
/// directly, as etcd's and Consul's clients keep to the leader, instead of
/// paying the node's redirect on every call. It goes back to its own node
/// when the leader it keeps to fails to answer, answers `503`, or redirects
/// again (then to where that redirect points). Every other call goes to
/// the node the client was made for.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The origin (`scheme://host:port`) the last submit was redirected to.
    coordinator: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How a [`Client`] authenticates and what it trusts.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// TLS: the CA to trust (PEM); the node address then defaults to `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// TLS client certificate and key (PEM), for nodes that require one.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity_pem", &self.identity_pem.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    code: String,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    durable: Vec<String>,
}

#[derive(Deserialize)]
struct SubmittedBatch {
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct Submitted {
    id: String,
}

impl Client {
    /// A client of the node at `addr` (`127.0.0.1:8001` or `http://...`).
    pub fn new(addr: &str) -> Client {
        Client::with_options(addr, ClientOptions::default())
            .expect("an HTTP client without TLS builds")
    }

    /// A client of the node at `addr` with a token and/or TLS. A bare
    /// `host:port` means `https://` when a CA is given.
    pub fn with_options(addr: &str, options: ClientOptions) -> Result<Client, CallError> {
        crate::tls::install_default_provider();
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else if options.ca_pem.is_some() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            // Redirects to the coordinator are followed by `send`, which
            // keeps the token (reqwest drops it across origins).
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &options.ca_pem {
            let identity = options
                .identity_pem
                .as_ref()
                .map(|(c, k)| (c.as_slice(), k.as_slice()));
            let tls = crate::tls::client_config(ca, identity)
                .map_err(|e| CallError::Transport(e.to_string()))?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder
            .build()
            .map_err(|e| CallError::Transport(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: options.token,
            coordinator: Arc::default(),
        })
    }

    /// Sends a request with the token, if any, following up to
    /// [`REDIRECTS_MAX`] redirects (`307`/`308` to a cluster member's API,
    /// as the node's configuration names it) on the same scheme only.
    async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response, CallError> {
        self.send_with(method, url, body, &[]).await
    }

    /// [`Client::send`] with more headers, sent again on every redirect.
    async fn send_with(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, CallError> {
        self.send_following(method, url, body, headers)
            .await
            .map(|(r, _)| r)
    }

    /// A submit at `path`: sent to the coordinator the last redirect named,
    /// if any, else to this client's node (see [`Client`]).
    async fn send_submit(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, CallError> {
        let pinned = self.coordinator.lock().expect("coordinator lock").clone();
        let origin = pinned.as_deref().unwrap_or(&self.base);
        let url = format!("{origin}{path}");
        let answer = self
            .send_following(reqwest::Method::POST, url, Some(body), headers)
            .await;
        let keep = match &answer {
            Ok((_, Some(moved))) => Some(moved.clone()),
            Ok((r, None)) if r.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE => pinned,
            _ => None,
        };
        *self.coordinator.lock().expect("coordinator lock") = keep;
        answer.map(|(r, _)| r)
    }

    /// Sends the request, following redirects (see [`Client::send`]); also
    /// returns the origin of the last redirect followed, if any.
    async fn send_following(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<(reqwest::Response, Option<String>), CallError> {
        let mut url = url;
        let mut moved = None;
        for _ in 0..=REDIRECTS_MAX {
            let mut r = self.http.request(method.clone(), &url);
            if let Some(t) = &self.token {
                r = r.bearer_auth(t);
            }
            for (name, value) in headers {
                r = r.header(*name, *value);
            }
            if let Some(b) = body {
                r = r
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_vec());
            }
            let resp = r.send().await.map_err(Self::transport)?;
            if !matches!(resp.status().as_u16(), 307 | 308) {
                return Ok((resp, moved));
            }
            let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_string());
            match resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            {
                Some(loc) if scheme(loc).is_some() && scheme(loc) == scheme(&url) => {
                    url = loc.to_string();
                    moved = Some(origin_of(&url));
                }
                _ => return Ok((resp, moved)),
            }
        }
        Err(CallError::Transport(format!(
            "more than {REDIRECTS_MAX} redirects"
        )))
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn decode<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> Result<T, CallError> {
        let status = r.status();
        let bytes = r
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Transport(format!("bad answer: {e}")));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Err(CallError::Api {
                status: status.as_u16(),
                code: b.code,
                message: b.error,
                index: b.index,
                durable: b.durable,
            }),
            Err(_) => Err(CallError::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
                index: None,
                durable: Vec::new(),
            }),
        }
    }

    fn transport(e: reqwest::Error) -> CallError {
        CallError::Transport(e.to_string())
    }

    /// `POST /v1/tasks`; returns the task's id.
    pub async fn submit(&self, body: &SubmitBody) -> Result<String, CallError> {
        let json = serde_json::to_vec(body).map_err(|e| CallError::Transport(e.to_string()))?;
        let r = self.send_submit("/v1/tasks", &json, &[]).await?;
        Self::decode::<Submitted>(r).await.map(|s| s.id)
    }

    /// `POST /v1/tasks` with a `Dedupe-Key`: creates the task unless the
    /// key's previous task is still pending or running, in which case that
    /// one is named instead (see [`cohort_core::dedupe`]). `body.id` must be
    /// `None` (the key chooses the id); a bad key is refused by the node
    /// (`400 malformed`). A `503 contention` is retryable.
    pub async fn submit_unique(
        &self,
        dedupe_key: &str,
        body: &SubmitBody,
    ) -> Result<UniqueSubmit, CallError> {
        let json = serde_json::to_vec(body).map_err(|e| CallError::Transport(e.to_string()))?;
        let r = self
            .send_submit(
                "/v1/tasks",
                &json,
                &[(crate::http::DEDUPE_KEY_HEADER, dedupe_key)],
            )
            .await?;
        Self::decode(r).await
    }

    /// `POST /v1/tasks/{id}/retry`: runs a failed or cancelled task again,
    /// as a new task with the same body (`409 not_retryable` for a task in
    /// another state). While a retry of `id` is pending or running, that
    /// one is named instead of creating another.
    pub async fn retry(&self, id: &str) -> Result<RetryView, CallError> {
        let url = format!("{}/v1/tasks/{id}/retry", self.base);
        let r = self.send(reqwest::Method::POST, url, None).await?;
        Self::decode(r).await
    }

    /// Bulk retry: every failed task of the cluster (up to `max`) whose
    /// error's class is `error_class` (any class if `None`; see
    /// [`cohort_core::error_class`]) is retried with [`Client::retry`].
    /// Each task's answer, in id order; a listing error stops it.
    pub async fn retry_failed(
        &self,
        error_class: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, Result<RetryView, CallError>)>, CallError> {
        let listing = self.list_all(Some("failed"), max).await?;
        let mut out = Vec::new();
        for t in listing.tasks {
            let class = t.error.as_deref().and_then(cohort_core::error_class);
            if error_class.is_some_and(|want| class != Some(want)) {
                continue;
            }
            let answer = self.retry(&t.id).await;
            out.push((t.id, answer));
        }
        Ok(out)
    }

    /// `POST /v1/tasks:batch`; returns the tasks' ids in order once every
    /// task is durable. A refusal names the task at fault (`index`) and,
    /// in leaderless mode, the tasks known durable (`durable`); resending
    /// the same batch (with ids) creates nothing twice.
    pub async fn submit_batch(&self, tasks: &[SubmitBody]) -> Result<Vec<String>, CallError> {
        #[derive(Serialize)]
        struct Batch<'a> {
            tasks: &'a [SubmitBody],
        }
        let json = serde_json::to_vec(&Batch { tasks })
            .map_err(|e| CallError::Transport(e.to_string()))?;
        self.submit_batch_json(&json).await
    }

    /// [`Client::submit_batch`] with the body already encoded (benchmarks
    /// resend one body).
    pub async fn submit_batch_json(&self, json: &[u8]) -> Result<Vec<String>, CallError> {
        let r = self.send_submit("/v1/tasks:batch", json, &[]).await?;
        Self::decode::<SubmittedBatch>(r).await.map(|s| s.ids)
    }

    /// `POST /v1/schedules`: stores a schedule (see
    /// [`cohort_core::schedule`]); returns the id of its definition task.
    /// The same body again is answered the same (safe to retry); another
    /// definition under the name is `409 schedule_exists`, a deleted name
    /// `409 schedule_deleted`.
    pub async fn schedule_create(
        &self,
        body: &crate::http::ScheduleBody,
    ) -> Result<String, CallError> {
        let json = serde_json::to_vec(body).map_err(|e| CallError::Transport(e.to_string()))?;
        let r = self
            .send(
                reqwest::Method::POST,
                format!("{}/v1/schedules", self.base),
                Some(&json),
            )
            .await?;
        Self::decode::<Submitted>(r).await.map(|s| s.id)
    }

    /// `GET /v1/schedules/{name}`.
    pub async fn schedule_get(&self, name: &str) -> Result<ScheduleView, CallError> {
        let url = format!("{}/v1/schedules/{name}", self.base);
        let r = self.send(reqwest::Method::GET, url, None).await?;
        Self::decode(r).await
    }

    /// `GET /v1/schedules`: one page of the schedules this node holds.
    pub async fn schedule_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SchedulePageView, CallError> {
        let mut url = format!("{}/v1/schedules?limit={limit}", self.base);
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let r = self.send(reqwest::Method::GET, url, None).await?;
        Self::decode(r).await
    }

    /// Every schedule of the cluster, up to `max`. Where the asked node's
    /// view is not complete (leaderless mode), every member listed by `GET
    /// /v1/cluster` is listed and the views merged by name (each view is
    /// read linearizably, so any member's is current).
    pub async fn schedules(&self, max: usize) -> Result<ScheduleListing, CallError> {
        const PAGE: usize = 100;
        let first = self.schedule_page(None, PAGE).await?;
        let mut sources = vec![(first.node, self.clone(), None)];
        if !first.complete {
            sources.extend(self.other_members(first.node).await?);
        }
        sources[0].2 = Some(first);
        let mut merged: std::collections::BTreeMap<String, ScheduleView> = Default::default();
        let mut listing = ScheduleListing::default();
        for (node, client, mut page) in sources {
            let mut after: Option<String> = None;
            let mut read = 0usize;
            loop {
                let p = match page.take() {
                    Some(p) => p,
                    None => match client.schedule_page(after.as_deref(), PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            listing.unreachable.push((node, e.to_string()));
                            break;
                        }
                    },
                };
                for v in p.schedules {
                    merged.entry(v.name.clone()).or_insert(v);
                }
                read += 1;
                match p.next {
                    Some(n) if read < LIST_PAGES_READ_MAX => after = Some(n),
                    Some(_) => {
                        listing.truncated = true;
                        break;
                    }
                    None => break,
                }
            }
        }
        listing.truncated |= merged.len() > max;
        listing.schedules = merged.into_values().take(max).collect();
        Ok(listing)
    }

    /// `DELETE /v1/schedules/{name}`: no tick fires once a link has read
    /// the tombstone this writes (see [`cohort_core::schedule`]).
    pub async fn schedule_delete(&self, name: &str) -> Result<(), CallError> {
        let url = format!("{}/v1/schedules/{name}", self.base);
        let r = self.send(reqwest::Method::DELETE, url, None).await?;
        Self::decode::<serde_json::Value>(r).await.map(|_| ())
    }

    /// `GET /v1/tasks/{id}`, optionally stale and/or long-polling.
    pub async fn get(
        &self,
        id: &str,
        stale: bool,
        wait: Option<Duration>,
    ) -> Result<TaskView, CallError> {
        let mut url = format!("{}/v1/tasks/{id}?stale={stale}", self.base);
        if let Some(w) = wait {
            url.push_str(&format!("&wait={}ms", w.as_millis()));
        }
        let r = self.send(reqwest::Method::GET, url, None).await?;
        Self::decode(r).await
    }

    /// `GET /v1/tasks/{id}/events`: the task and its event history.
    pub async fn events(&self, id: &str, stale: bool) -> Result<TaskEventsView, CallError> {
        let url = format!("{}/v1/tasks/{id}/events?stale={stale}", self.base);
        let r = self.send(reqwest::Method::GET, url, None).await?;
        Self::decode(r).await
    }

    /// `DELETE /v1/tasks/{id}`.
    pub async fn cancel(&self, id: &str) -> Result<TaskView, CallError> {
        let r = self
            .send(
                reqwest::Method::DELETE,
                format!("{}/v1/tasks/{id}", self.base),
                None,
            )
            .await?;
        Self::decode(r).await
    }

    /// `GET /v1/tasks`: one page of the tasks this node holds.
    pub async fn list_page(
        &self,
        state: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TaskPageView, CallError> {
        let mut url = format!("{}/v1/tasks?limit={limit}", self.base);
        if let Some(s) = state {
            url.push_str(&format!("&state={s}"));
        }
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let r = self.send(reqwest::Method::GET, url, None).await?;
        Self::decode(r).await
    }

    /// Every task of the cluster in `state` (all states if `None`), up to
    /// `max` tasks. Where the asked node's view is not complete (leaderless
    /// mode: a node holds only its replicas' tasks), every member listed by
    /// `GET /v1/cluster` is listed and the views merged, keeping the most
    /// advanced view of each task.
    pub async fn list_all(&self, state: Option<&str>, max: usize) -> Result<Listing, CallError> {
        const PAGE: usize = 500;
        let first = self.list_page(state, None, PAGE).await?;
        let mut sources = vec![(first.node, self.clone(), None)];
        if !first.complete {
            sources.extend(self.other_members(first.node).await?);
        }
        sources[0].2 = Some(first);
        let mut merged: std::collections::BTreeMap<u128, TaskView> = Default::default();
        let mut listing = Listing::default();
        let mut read = 0usize;
        for (node, client, mut page) in sources {
            let mut after: Option<String> = None;
            loop {
                let p = match page.take() {
                    Some(p) => p,
                    None => match client.list_page(state, after.as_deref(), PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            listing.unreachable.push((node, e.to_string()));
                            break;
                        }
                    },
                };
                for t in p.tasks {
                    let Ok(key) = u128::from_str_radix(&t.id, 16) else {
                        continue;
                    };
                    let t = match merged.remove(&key) {
                        Some(old) => fresher(old, t),
                        None => t,
                    };
                    merged.insert(key, t);
                }
                read += 1;
                match p.next {
                    // Every page is read: another node's views may sort
                    // anywhere among this one's, so no early cut is safe.
                    Some(n) if read < LIST_PAGES_READ_MAX => after = Some(n),
                    Some(_) => {
                        listing.truncated = true;
                        break;
                    }
                    None => break,
                }
            }
        }
        listing.truncated |= merged.len() > max;
        listing.tasks = merged.into_values().take(max).collect();
        Ok(listing)
    }

    /// Every member `GET /v1/cluster` names but `node`, each with a client
    /// of it and no page read yet: where a listing merges every view.
    async fn other_members<P>(
        &self,
        node: u64,
    ) -> Result<Vec<(u64, Client, Option<P>)>, CallError> {
        let cluster = self.cluster().await?;
        let mut others = Vec::new();
        for m in cluster["members"].as_array().into_iter().flatten() {
            let (Some(id), Some(addr)) = (m["id"].as_u64(), m["http_addr"].as_str()) else {
                continue;
            };
            if id != node {
                others.push((id, self.at(addr), None));
            }
        }
        Ok(others)
    }

    /// A client of another node (`host:port`) with the same credentials
    /// and scheme.
    pub fn at(&self, addr: &str) -> Client {
        let scheme = self.base.split_once("://").map_or("http", |(s, _)| s);
        Client {
            http: self.http.clone(),
            base: format!("{scheme}://{addr}"),
            token: self.token.clone(),
            coordinator: Arc::default(),
        }
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<serde_json::Value, CallError> {
        let r = self
            .send(
                reqwest::Method::GET,
                format!("{}/v1/cluster", self.base),
                None,
            )
            .await?;
        Self::decode(r).await
    }

    /// `GET /v1/ring`: the ring this node knows (`404 not_supported`
    /// outside leaderless mode).
    pub async fn ring(&self) -> Result<RingInfo, CallError> {
        let r = self
            .send(reqwest::Method::GET, format!("{}/v1/ring", self.base), None)
            .await?;
        Self::decode(r).await
    }

    /// `POST /v1/ring/members/{node}`: asks this node to propose that
    /// `node` joins the ring. Answers at once (`reflected` false: under
    /// way); see [`Client::ring_change`] to wait.
    pub async fn ring_join(&self, node: u64) -> Result<RingInfo, CallError> {
        self.ring_change(true, node, None).await
    }

    /// `DELETE /v1/ring/members/{node}`: asks this node to propose that
    /// `node` leaves the ring.
    pub async fn ring_remove(&self, node: u64) -> Result<RingInfo, CallError> {
        self.ring_change(false, node, None).await
    }

    /// A join (`join` true) or removal of `node`, waiting up to `wait`
    /// (bounded by the node's `wait_ms_max`) for this node's ring to
    /// reflect it.
    pub async fn ring_change(
        &self,
        join: bool,
        node: u64,
        wait: Option<Duration>,
    ) -> Result<RingInfo, CallError> {
        let method = if join {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let mut url = format!("{}/v1/ring/members/{node}", self.base);
        if let Some(w) = wait {
            url.push_str(&format!("?wait={}ms", w.as_millis()));
        }
        let r = self.send(method, url, None).await?;
        Self::decode(r).await
    }

    /// `POST /v1/drain`: drains this node (admin role). Its running tasks
    /// may finish within `deadline` (the node's default, 30 s, when
    /// `None`), then what is left is handed back and runs elsewhere.
    pub async fn drain(&self, deadline: Option<Duration>) -> Result<DrainInfo, CallError> {
        let mut url = format!("{}/v1/drain", self.base);
        if let Some(d) = deadline {
            url.push_str(&format!("?deadline_ms={}", d.as_millis()));
        }
        let r = self.send(reqwest::Method::POST, url, None).await?;
        Self::decode(r).await
    }

    /// `GET /v1/drain`: where this node's drain stands.
    pub async fn drain_status(&self) -> Result<DrainInfo, CallError> {
        let r = self
            .send(
                reqwest::Method::GET,
                format!("{}/v1/drain", self.base),
                None,
            )
            .await?;
        Self::decode(r).await
    }

    /// The HTTP address (`host:port`) of member `node` as `GET
    /// /v1/cluster` at this node lists it; `None` if it lists none.
    pub async fn member_addr(&self, node: u64) -> Result<Option<String>, CallError> {
        let cluster = self.cluster().await?;
        Ok(cluster["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"].as_u64() == Some(node))
            .and_then(|m| m["http_addr"].as_str().map(str::to_string)))
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<serde_json::Value, CallError> {
        let r = self
            .send(
                reqwest::Method::GET,
                format!("{}/v1/health", self.base),
                None,
            )
            .await?;
        Self::decode(r).await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Result<String, CallError> {
        self.send(reqwest::Method::GET, format!("{}/metrics", self.base), None)
            .await?
            .text()
            .await
            .map_err(Self::transport)
    }
}
