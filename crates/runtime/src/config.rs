//! The runtime's configuration, validated before anything starts.

use crate::auth::Tokens;
use crate::error::RuntimeError;
use crate::tls::{HttpTls, PeerTls};
use cohort_core::{NodeId, Peers};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Limits and timings of the peer transport (`[transport]` in a
/// `cohort node --config` file; a key left out keeps its default).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportLimits {
    /// Most encoded messages queued for one peer; past it new ones are
    /// dropped (and counted), as the contract allows for messages.
    pub send_queue_len_max: usize,
    /// Most inbound peer connections open at once.
    pub inbound_connections_max: usize,
    /// Most messages received from peers waiting for the event loop; past it
    /// they are dropped and counted.
    pub inbound_queue_len_max: usize,
    /// First reconnect delay.
    pub connect_backoff_ms_min: u64,
    /// Largest reconnect delay (the delay doubles up to it).
    pub connect_backoff_ms_max: u64,
    /// How long a connection may take to present its handshake.
    pub handshake_timeout_ms: u64,
    /// How long a peer may take to finish a frame once its first byte has
    /// arrived; a peer that starts a frame and stalls is disconnected
    /// (`reason="frame_timeout"`). An idle link between frames is fine.
    pub frame_read_timeout_ms: u64,
    /// Most client requests forwarded to a peer and not answered yet, and
    /// most a node serves for its peers at once (`crate::forward`; a
    /// schedule link on a node that does not decide forwards its requests).
    pub forwards_in_flight_max: usize,
}

impl Default for TransportLimits {
    fn default() -> TransportLimits {
        TransportLimits {
            send_queue_len_max: 4096,
            inbound_connections_max: 256,
            inbound_queue_len_max: 16_384,
            connect_backoff_ms_min: 20,
            connect_backoff_ms_max: 1000,
            handshake_timeout_ms: 2000,
            frame_read_timeout_ms: 10_000,
            forwards_in_flight_max: 256,
        }
    }
}

/// Limits of the client API (`[client]` in a `cohort node --config`
/// file; a key left out keeps its default).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimits {
    /// How long an HTTP request waits for the core's answer before `503`.
    pub request_timeout_ms: u64,
    /// Most client requests handed to the core and not yet answered.
    pub requests_in_flight_max: usize,
    /// Longest `?wait=` accepted.
    pub wait_ms_max: u64,
    /// Most tasks in one page of `GET /v1/tasks` (`?limit=` above it is refused).
    pub list_page_max: usize,
    /// Most HTTP connections open at once; past it a new connection is
    /// closed at once (`cohort_http_connections_rejected_total`).
    pub http_connections_max: usize,
    /// How long a client may take to send a request's headers (also: how
    /// long an idle keep-alive connection is kept). A client that trickles
    /// headers byte by byte is cut after it.
    pub header_read_timeout_ms: u64,
    /// How much of a body over the limit is read and discarded before the
    /// `413`, so that the client, still sending, reads the answer instead
    /// of a reset. A larger body gets the `413` at once and the connection
    /// is closed.
    pub oversized_body_drain_bytes_max: usize,
    /// Most submits one `POST /v1/tasks` with a `Dedupe-Key` makes before
    /// it gives up with `503 contention` (each further one means another
    /// submitter's generation was created and went final meanwhile).
    pub dedupe_rounds_max: u32,
    /// Most ticks one run of a schedule's link fires or skips; the rest
    /// are left to the next link, which is due at once.
    pub schedule_firings_per_run_max: usize,
}

impl Default for ClientLimits {
    fn default() -> ClientLimits {
        ClientLimits {
            request_timeout_ms: 10_000,
            requests_in_flight_max: 10_000,
            wait_ms_max: 60_000,
            list_page_max: 1_000,
            http_connections_max: 1024,
            header_read_timeout_ms: 10_000,
            oversized_body_drain_bytes_max: 8 << 20,
            dedupe_rounds_max: cohort_core::DEDUPE_ROUNDS_MAX_DEFAULT,
            schedule_firings_per_run_max:
                cohort_core::schedule::SCHEDULE_FIRINGS_PER_RUN_MAX_DEFAULT,
        }
    }
}

/// A task kind's retry policy and queue: what a submit of the kind gets for each of
/// these fields it leaves out (`[kinds.NAME]` in a `cohort node --config`
/// file). A field the policy leaves out too gets the node-wide default. The
/// resolved values are stored in the task when it is created (decided with
/// it, by consensus), so a policy changed later applies to new submits only.
/// Every node should carry the same policies: a client's resubmit of the
/// same body to another node must resolve to the same task.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KindPolicy {
    /// Attempts before the task fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff cap after the first failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_initial_ms: Option<u64>,
    /// Largest backoff cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    /// Error classes that fail the task at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_retryable: Option<Vec<String>>,
    /// The kind's queue: the worker labels its tasks need when a submit
    /// leaves `labels` out (`"labels": []` in a body says none, and wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// At most this many tasks of the kind run at once, cluster-wide (a
    /// limit keyed `kind:NAME`; a submit's own `limit` replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_max: Option<u32>,
    /// At most this many tasks of the kind start within `rate_window_ms`,
    /// cluster-wide (same key as `concurrency_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_max: Option<u32>,
    /// The rate limit's window (default 1000 with `rate_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_window_ms: Option<u64>,
    /// How long past a task's timeout the cluster waits for an attempt's
    /// outcome before it ends the lease (see `Task::lease_grace_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_grace_ms: Option<u64>,
}

impl KindPolicy {
    /// The limit the policy puts on tasks of `kind`, if it sets one.
    pub fn limit(&self, kind: &str) -> Option<cohort_core::TaskLimit> {
        if self.concurrency_max.is_none()
            && self.rate_max.is_none()
            && self.rate_window_ms.is_none()
        {
            return None;
        }
        let body = crate::http::LimitBody {
            key: kind_limit_key(kind),
            concurrency_max: self.concurrency_max,
            rate_max: self.rate_max,
            rate_window_ms: self.rate_window_ms,
        };
        Some(body.limit())
    }
}

/// The limit key of a kind's policy limit.
pub fn kind_limit_key(kind: &str) -> String {
    format!("kind:{kind}")
}

/// Most kinds given a [`KindPolicy`] on one node.
pub const KIND_POLICIES_MAX: usize = 256;

/// Authentication and encryption of a node; everything is off by default.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// Bearer tokens the HTTP API accepts; without them it accepts anyone.
    pub tokens: Option<Arc<Tokens>>,
    /// Mutual TLS for the peer transport; without it peers speak plain TCP.
    pub peer_tls: Option<PeerTls>,
    /// TLS for the HTTP API; without it the API speaks plain HTTP.
    pub http_tls: Option<HttpTls>,
}

impl SecurityConfig {
    /// Whether API clients must prove who they are (a token or a client
    /// certificate).
    pub fn client_auth(&self) -> bool {
        self.tokens.is_some()
            || self
                .http_tls
                .as_ref()
                .is_some_and(|t| t.client_certs_required)
    }
}

/// The settings a `cohort node --config` TOML file may hold: the same
/// names as `cohort node`'s flags, with `_` for `-`; a flag wins over the file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NodeFile {
    pub id: Option<u64>,
    pub peers: Option<String>,
    pub http: Option<SocketAddr>,
    pub http_peers: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub mode: Option<String>,
    pub cluster_id: Option<String>,
    pub capacity: Option<u32>,
    /// The worker labels this node carries (`labels = ["gpu", "queue=reports"]`).
    pub labels: Option<Vec<String>>,
    pub allow_exec: Option<bool>,
    pub payload_bytes_max: Option<usize>,
    /// `Limits::task_events_max`.
    pub task_events_max: Option<usize>,
    /// `Limits::succeeded_retained_ms`.
    pub succeeded_retained_ms: Option<u64>,
    /// `Limits::failed_retained_ms`.
    pub failed_retained_ms: Option<u64>,
    /// `Limits::cancelled_retained_ms`.
    pub cancelled_retained_ms: Option<u64>,
    /// `Limits::tasks_retained_max`.
    pub tasks_retained_max: Option<usize>,
    /// Leaderless mode: the ring at epoch 0, `"1,2,3"`.
    pub initial_ring: Option<String>,
    /// See [`RuntimeConfig::shutdown_grace_ms`].
    pub shutdown_grace_ms: Option<u64>,
    pub insecure: Option<bool>,
    pub tokens: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub http_tls: Option<bool>,
    pub http_client_ca: Option<PathBuf>,
    pub history_file: Option<PathBuf>,
    pub history_bytes_max: Option<u64>,
    /// See [`RuntimeConfig::inputs_per_batch_max`].
    pub inputs_per_batch_max: Option<usize>,
    /// The `[transport]` table: peer transport limits.
    pub transport: Option<TransportLimits>,
    /// The `[client]` table: client API limits.
    pub client: Option<ClientLimits>,
    /// The `[kinds.NAME]` tables: each kind's retry policy.
    pub kinds: Option<BTreeMap<String, KindPolicy>>,
    /// The `[leaderless]` table: the leaderless mode's settings, by the
    /// names of `cohort_leaderless::LeaderlessConfig` (checked where the
    /// mode is started, not here).
    pub leaderless: Option<toml::Table>,
}

impl NodeFile {
    /// Parses a config file's text; the error says which key or line is wrong.
    pub fn parse(text: &str) -> Result<NodeFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Most bytes in a cluster id.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// Default [`RuntimeConfig::shutdown_grace_ms`]: several election timeouts,
/// so a leader transfer (catch up, `TimeoutNow`, one election) fits.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 2_000;

/// Longest [`RuntimeConfig::shutdown_grace_ms`] accepted: past this a
/// supervisor's stop timeout would kill the node mid-hand-over anyway.
pub const SHUTDOWN_GRACE_MS_MAX: u64 = 60_000;

/// Everything the runtime needs besides the mode's own config.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Name of the cluster; checked in every handshake and in the data file.
    pub cluster_id: String,
    /// The mode's name, reported by `GET /v1/cluster`.
    pub mode: String,
    /// This node, the members, capacity and limits (as handed to the core).
    pub peers: Peers,
    /// Where to reach each other member's peer transport.
    pub peer_addrs: BTreeMap<NodeId, SocketAddr>,
    /// Where each member's HTTP API listens, when known (for redirects and
    /// `GET /v1/cluster`).
    pub http_addrs: BTreeMap<NodeId, SocketAddr>,
    /// Directory holding this node's data file.
    pub data_dir: PathBuf,
    /// Peer transport limits.
    pub transport: TransportLimits,
    /// Client API limits.
    pub client: ClientLimits,
    /// Most inputs handed to the core before their actions are carried out
    /// together (group commit: one fsync for all their writes).
    pub inputs_per_batch_max: usize,
    /// How long a graceful shutdown may wait for the core to hand over
    /// (a leader transferring leadership) before the node stops anyway.
    /// Zero stops at once, as before hand-over existed.
    pub shutdown_grace_ms: u64,
    /// Tokens and TLS.
    pub security: SecurityConfig,
    /// Where to write the audit log of executions, completions and notes
    /// (for fault-test harnesses); off by default.
    pub audit: Option<crate::audit::AuditConfig>,
    /// Most often one execution's heartbeat progress is recorded in its
    /// task's history (each record is a decision of the cluster: a log
    /// entry, a Paxos round); beats in between only keep it alive.
    pub heartbeat_record_interval_ms: u64,
    /// Retry policies by task kind, at most [`KIND_POLICIES_MAX`]; each
    /// kind must have a handler on this node (checked at start).
    pub kind_policies: BTreeMap<String, KindPolicy>,
}

/// Default of [`RuntimeConfig::heartbeat_record_interval_ms`].
pub const HEARTBEAT_RECORD_INTERVAL_MS_DEFAULT: u64 = 1000;

impl RuntimeConfig {
    /// A configuration with default limits.
    pub fn new(
        cluster_id: impl Into<String>,
        mode: impl Into<String>,
        peers: Peers,
        peer_addrs: BTreeMap<NodeId, SocketAddr>,
        data_dir: impl Into<PathBuf>,
    ) -> RuntimeConfig {
        RuntimeConfig {
            cluster_id: cluster_id.into(),
            mode: mode.into(),
            peers,
            peer_addrs,
            http_addrs: BTreeMap::new(),
            data_dir: data_dir.into(),
            transport: TransportLimits::default(),
            client: ClientLimits::default(),
            inputs_per_batch_max: 256,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            security: SecurityConfig::default(),
            audit: None,
            heartbeat_record_interval_ms: HEARTBEAT_RECORD_INTERVAL_MS_DEFAULT,
            kind_policies: BTreeMap::new(),
        }
    }

    /// Checks everything that can be checked before starting.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::Config(m));
        if self.cluster_id.is_empty() || self.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return bad(format!(
                "cluster id must be 1..={CLUSTER_ID_BYTES_MAX} bytes"
            ));
        }
        for m in self.peers.others() {
            if !self.peer_addrs.contains_key(&m) {
                return bad(format!("no peer address for member {m}"));
            }
        }
        for id in self.peer_addrs.keys() {
            if !self.peers.members.contains(id) {
                return bad(format!(
                    "peer address given for {id}, which is not a member"
                ));
            }
        }
        let mut seen = BTreeMap::new();
        for (id, addr) in &self.peer_addrs {
            if let Some(other) = seen.insert(*addr, *id) {
                return bad(format!("members {other} and {id} share the address {addr}"));
            }
        }
        if self.heartbeat_record_interval_ms == 0 {
            return bad("heartbeat_record_interval_ms must be positive".into());
        }
        let t = &self.transport;
        for (what, v) in [
            ("send_queue_len_max", t.send_queue_len_max as u64),
            ("inbound_connections_max", t.inbound_connections_max as u64),
            ("inbound_queue_len_max", t.inbound_queue_len_max as u64),
            ("connect_backoff_ms_min", t.connect_backoff_ms_min),
            ("handshake_timeout_ms", t.handshake_timeout_ms),
            ("frame_read_timeout_ms", t.frame_read_timeout_ms),
            ("forwards_in_flight_max", t.forwards_in_flight_max as u64),
            ("request_timeout_ms", self.client.request_timeout_ms),
            (
                "requests_in_flight_max",
                self.client.requests_in_flight_max as u64,
            ),
            ("inputs_per_batch_max", self.inputs_per_batch_max as u64),
            ("list_page_max", self.client.list_page_max as u64),
            (
                "http_connections_max",
                self.client.http_connections_max as u64,
            ),
            ("header_read_timeout_ms", self.client.header_read_timeout_ms),
            (
                "dedupe_rounds_max",
                u64::from(self.client.dedupe_rounds_max),
            ),
            (
                "schedule_firings_per_run_max",
                self.client.schedule_firings_per_run_max as u64,
            ),
        ] {
            if v == 0 {
                return bad(format!("{what} must be positive"));
            }
        }
        if self.shutdown_grace_ms > SHUTDOWN_GRACE_MS_MAX {
            return bad(format!(
                "shutdown_grace_ms must be at most {SHUTDOWN_GRACE_MS_MAX}"
            ));
        }
        if t.connect_backoff_ms_max < t.connect_backoff_ms_min {
            return bad("connect_backoff_ms_max must be >= connect_backoff_ms_min".into());
        }
        if self.kind_policies.len() > KIND_POLICIES_MAX {
            return bad(format!(
                "{} kind policies given; at most {KIND_POLICIES_MAX}",
                self.kind_policies.len()
            ));
        }
        for (kind, policy) in &self.kind_policies {
            // The policy must resolve to a task the node would accept.
            let task = crate::http::kind_policy_task(kind, policy);
            if let Err(e) = self.peers.limits.check_task(&task) {
                return bad(format!("kind {kind:?}: {e}"));
            }
        }
        if u32::try_from(self.peers.limits.message_bytes_max).is_err() {
            return bad("message_bytes_max must fit a 32-bit frame length".into());
        }
        Ok(())
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.transport.handshake_timeout_ms)
    }
}
