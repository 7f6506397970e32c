//! A client of the node HTTP API (used by `cohort submit/get/wait/members`,
//! the demo and the tests).

use crate::http::SubmitBody;
use serde::{Deserialize, Serialize};
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
    },
    /// The node could not be reached or answered nonsense.
    #[error("{0}")]
    Transport(String),
}

impl CallError {
    /// Whether the same call may succeed later or elsewhere.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Api { status, .. } => matches!(status, 307 | 421 | 429 | 503),
            CallError::Transport(_) => true,
        }
    }
}

/// Most redirects a [`Client`] follows for one call.
pub const REDIRECTS_MAX: usize = 5;

/// A client of one node.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
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
        })
    }

    /// Sends a request with the token, if any, following up to
    /// [`REDIRECTS_MAX`] redirects (`307`/`308` to a cluster member's API,
    /// as the node's configuration names it) on the same scheme only.
    async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&SubmitBody>,
    ) -> Result<reqwest::Response, CallError> {
        let mut url = url;
        for _ in 0..=REDIRECTS_MAX {
            let mut r = self.http.request(method.clone(), &url);
            if let Some(t) = &self.token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(b);
            }
            let resp = r.send().await.map_err(Self::transport)?;
            if !matches!(resp.status().as_u16(), 307 | 308) {
                return Ok(resp);
            }
            let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_string());
            match resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            {
                Some(loc) if scheme(loc).is_some() && scheme(loc) == scheme(&url) => {
                    url = loc.to_string();
                }
                _ => return Ok(resp),
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
            }),
            Err(_) => Err(CallError::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    fn transport(e: reqwest::Error) -> CallError {
        CallError::Transport(e.to_string())
    }

    /// `POST /v1/tasks`; returns the task's id.
    pub async fn submit(&self, body: &SubmitBody) -> Result<String, CallError> {
        let r = self
            .send(
                reqwest::Method::POST,
                format!("{}/v1/tasks", self.base),
                Some(body),
            )
            .await?;
        Self::decode::<Submitted>(r).await.map(|s| s.id)
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
