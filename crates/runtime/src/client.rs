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

/// A client of one node.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
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
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .build()
            .expect("an HTTP client without TLS builds");
        Client { http, base }
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
            .http
            .post(format!("{}/v1/tasks", self.base))
            .json(body)
            .send()
            .await
            .map_err(Self::transport)?;
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
        let r = self.http.get(url).send().await.map_err(Self::transport)?;
        Self::decode(r).await
    }

    /// `DELETE /v1/tasks/{id}`.
    pub async fn cancel(&self, id: &str) -> Result<TaskView, CallError> {
        let r = self
            .http
            .delete(format!("{}/v1/tasks/{id}", self.base))
            .send()
            .await
            .map_err(Self::transport)?;
        Self::decode(r).await
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<serde_json::Value, CallError> {
        let r = self
            .http
            .get(format!("{}/v1/cluster", self.base))
            .send()
            .await
            .map_err(Self::transport)?;
        Self::decode(r).await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<serde_json::Value, CallError> {
        let r = self
            .http
            .get(format!("{}/v1/health", self.base))
            .send()
            .await
            .map_err(Self::transport)?;
        Self::decode(r).await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Result<String, CallError> {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .map_err(Self::transport)?
            .text()
            .await
            .map_err(Self::transport)
    }
}
