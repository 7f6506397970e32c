#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![deny(missing_docs)]
//! The IO shell that runs any cohort mode.
//!
//! [`start`] runs one node of any mode (`N: cohort_core::Node`) on
//! already-bound listeners: it opens the node's redb file, boots the core
//! from it, and spawns
//!
//! - the event loop ([`driver`]): inputs in, ordered actions out, one fsync
//!   per batch of inputs;
//! - the peer transport ([`transport`]): length-prefixed postcard frames
//!   over TCP after a versioned handshake;
//! - the handler executor ([`handlers`]): bounded by the node's capacity,
//!   with per-task timeouts and the epoch handed to every handler;
//! - the HTTP API ([`http`]) and its `/metrics` ([`metrics`]).
//!
//! The returned [`RunningNode`] stops gracefully ([`RunningNode::shutdown`])
//! or as if the process died ([`RunningNode::kill`]). [`run`] is the same
//! with a shutdown future, for a binary.

pub mod audit;
pub mod auth;
pub mod client;
pub mod config;
pub mod driver;
pub mod error;
pub mod forward;
pub mod fuzzing;
pub mod handlers;
pub mod http;
pub mod idempotency;
pub mod kind;
pub mod metrics;
pub mod schedule;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod wal;
pub mod write_behind;

pub use config::{ClientLimits, RuntimeConfig, SecurityConfig, TransportLimits};
pub use driver::NoteObserver;
pub use error::RuntimeError;
pub use handlers::{Handler, HandlerFuture, HandlerInput, Heartbeat, Registry};
pub use metrics::Metrics;

use cohort_core::{Node, NodeId, NodeRng, Time};
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;

/// How long a drain lets running tasks go on when no deadline is given
/// (`POST /v1/drain`, `cohort drain`, SIGTERM on `cohort node`).
pub const DRAIN_DEADLINE_MS_DEFAULT: u64 = 30_000;
/// The longest drain deadline accepted: a node that holds work longer is
/// better shut down and its tasks reclaimed.
pub const DRAIN_DEADLINE_MS_MAX: u64 = 3_600_000;
/// How often [`RunningNode::drain_and_wait`] looks at the drain.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The sockets a node serves, bound by the caller (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    /// Peer transport.
    pub peer: TcpListener,
    /// HTTP API.
    pub http: TcpListener,
}

/// What a node runs besides its configuration.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// Task handlers by kind.
    pub registry: Registry,
    /// Sees every note the core states.
    pub note_observer: Option<NoteObserver>,
    /// Seed of the core's RNG; drawn from the OS when absent.
    pub rng_seed: Option<u64>,
}

/// A node running on the current tokio runtime.
pub struct RunningNode {
    id: NodeId,
    http_addr: SocketAddr,
    peer_addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    handover: watch::Sender<bool>,
    grace: std::time::Duration,
    control: mpsc::Sender<driver::Control>,
    event_loop: JoinHandle<Result<(), RuntimeError>>,
    http: JoinHandle<()>,
    /// Owns the peer listener: awaited on stop so that the port is free
    /// again when `kill` or `shutdown` returns (a restart rebinds it).
    inbound: JoinHandle<()>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("id", &self.id)
            .field("http_addr", &self.http_addr)
            .field("peer_addr", &self.peer_addr)
            .finish()
    }
}

impl RunningNode {
    /// This node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where its HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where its peer transport listens.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Its metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Whether the event loop has stopped (by itself only on a storage error).
    pub fn is_finished(&self) -> bool {
        self.event_loop.is_finished()
    }

    /// Stops as if the process died: the event loop is aborted where it is
    /// (nothing after that point is persisted, sent or answered), handlers
    /// are dropped and every socket is closed.
    pub async fn kill(self) {
        self.event_loop.abort();
        let _ = self.stop.send(true);
        self.http.abort();
        let _ = self.event_loop.await;
        let _ = self.http.await;
        let _ = self.inbound.await;
    }

    /// Stops gracefully. First the core hands over what it can (a leader
    /// transfers leadership to the most caught-up voter) while the node
    /// keeps running, for at most `shutdown_grace_ms`; then no new input is
    /// taken, waiting clients are told the node is shutting down, running
    /// handlers are dropped (their tasks are left to be reclaimed), sockets
    /// close.
    pub async fn shutdown(mut self) -> Result<(), RuntimeError> {
        let _ = self.handover.send(true);
        let drained = tokio::select! {
            r = &mut self.event_loop => Some(r),
            // The loop ends by itself after the grace period; this bound
            // only guards against a core that never returns.
            _ = tokio::time::sleep(self.grace + std::time::Duration::from_secs(5)) => None,
        };
        let _ = self.stop.send(true);
        let joined = match drained {
            Some(r) => r,
            None => self.event_loop.await,
        };
        let r = match joined {
            Ok(r) => r,
            Err(e) => Err(RuntimeError::Stopped(format!("event loop failed: {e}"))),
        };
        let _ = self.http.await;
        let _ = self.inbound.await;
        r
    }

    /// Drains the node (see [`cohort_core::Node::begin_drain`]): it takes
    /// no new work; its running tasks may finish within `deadline`, then
    /// what is left is handed back and its handlers are stopped.
    pub async fn drain(
        &self,
        deadline: std::time::Duration,
    ) -> Result<driver::DrainReport, RuntimeError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.control
            .send(driver::Control::Drain { deadline, reply })
            .await
            .map_err(|_| RuntimeError::Stopped("event loop stopped".into()))?;
        rx.await
            .map_err(|_| RuntimeError::Stopped("event loop stopped".into()))?
            .map_err(|e| RuntimeError::Stopped(format!("drain refused: {e}")))
    }

    /// Where the node's drain stands.
    pub async fn drain_status(&self) -> Result<driver::DrainReport, RuntimeError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.control
            .send(driver::Control::DrainStatus { reply })
            .await
            .map_err(|_| RuntimeError::Stopped("event loop stopped".into()))?;
        rx.await
            .map_err(|_| RuntimeError::Stopped("event loop stopped".into()))
    }

    /// Drains the node with `deadline` and waits until it holds no task,
    /// at most `deadline` plus `shutdown_grace_ms` (for the hand-backs to
    /// be decided). `Ok(true)` when it holds none; `Ok(false)` when the
    /// wait ran out first. A mode that cannot drain is an error.
    pub async fn drain_and_wait(
        &self,
        deadline: std::time::Duration,
    ) -> Result<bool, RuntimeError> {
        let until = tokio::time::Instant::now() + deadline + self.grace;
        self.drain(deadline).await?;
        loop {
            let done = self
                .drain_status()
                .await?
                .status
                .is_none_or(|s| s.is_done());
            if done {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Waits until the event loop stops by itself (a storage error) and returns why.
    pub async fn wait(&mut self) -> Result<(), RuntimeError> {
        match (&mut self.event_loop).await {
            Ok(r) => r,
            Err(e) => Err(RuntimeError::Stopped(format!("event loop failed: {e}"))),
        }
    }
}

/// Runs a node until `shutdown` completes (mini-redis style), then stops it
/// gracefully. Returns early with the error if storage fails.
pub async fn run<N: Node + Send + 'static>(
    config: RuntimeConfig,
    mode_config: N::Config,
    options: NodeOptions,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let mut node = start::<N>(config, mode_config, options, listeners).await?;
    tokio::select! {
        r = node.wait() => r,
        _ = shutdown => node.shutdown().await,
    }
}

/// Opens the node's data file, boots the core from it and starts serving.
pub async fn start<N: Node + Send + 'static>(
    config: RuntimeConfig,
    mode_config: N::Config,
    options: NodeOptions,
    listeners: Listeners,
) -> Result<RunningNode, RuntimeError> {
    config.validate()?;
    if let Some(kind) = config
        .kind_policies
        .keys()
        .find(|k| options.registry.get(k).is_none())
    {
        return Err(RuntimeError::Config(format!(
            "a retry policy is given for kind {kind:?}, which has no handler here (kinds: {})",
            options.registry.kinds().join(", ")
        )));
    }
    tls::install_default_provider();
    let config = Arc::new(config);
    let id = config.peers.id;
    let path = storage::data_file(&config.data_dir, id);
    let cluster_id = config.cluster_id.clone();
    let (storage, stored) = open_storage(path.clone(), cluster_id, id).await?;
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RuntimeError::Io { what, source }
    };
    let http_addr = listeners.http.local_addr().map_err(io("http listener"))?;
    let peer_addr = listeners.peer.local_addr().map_err(io("peer listener"))?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handover_tx, handover_rx) = watch::channel(false);
    let (handback_tx, _) = watch::channel(false);
    let grace = config.shutdown_grace();
    let seed = options.rng_seed.unwrap_or_else(os_seed);
    let rng = NodeRng::seed_from_u64(seed);
    let boot = tokio::time::Instant::now();
    let epoch_us = unix_micros_now();
    let node = boot_checked::<N>(&config.peers, &mode_config, &stored, rng, Time(epoch_us))
        .map_err(|e| RuntimeError::CorruptFile {
            path: path.clone(),
            reason: format!("the {} mode refuses it: {e}", config.mode),
        })?;
    drop(stored);
    let (control_tx, control_rx) = mpsc::channel(4096);
    let (peer_tx, peer_rx) = mpsc::channel(config.transport.inbound_queue_len_max);
    let outbound = Arc::new(transport::start_outbound(
        &config,
        metrics.clone(),
        stop_rx.clone(),
    ));
    let peer_status = outbound.status.clone();
    // Small: a lost connection is a hint, and a burst of them says no more
    // than the first few.
    let (lost_tx, lost_rx) = mpsc::channel(64);
    let forwarding = Arc::new(forward::Forwarding::new(
        &config,
        control_tx.clone(),
        outbound.clone(),
        metrics.clone(),
    ));
    let inbound = tokio::spawn(transport::run_inbound::<N::Message>(
        listeners.peer,
        config.clone(),
        metrics.clone(),
        peer_tx.clone(),
        lost_tx,
        forwarding.clone(),
        stop_rx.clone(),
    ));
    let audit = match &config.audit {
        None => None,
        Some(a) => Some(Arc::new(audit::Audit::open(id, a).map_err(|source| {
            RuntimeError::Io {
                what: format!("audit log {}", a.path.display()),
                source,
            }
        })?)),
    };
    let mut registry = options.registry;
    registry.register(
        cohort_core::schedule::SCHEDULE_KIND,
        schedule::ScheduleHandler::new(
            schedule::InNodeClient::new(forwarding, config.peers.limits.payload_bytes_max),
            config.client.schedule_firings_per_run_max,
        ),
    );
    let registry = Arc::new(registry);
    let decided = Arc::new(Notify::new());
    let event_loop = driver::EventLoop {
        node,
        config: config.clone(),
        storage: Arc::new(storage),
        boot,
        epoch_us,
        timers: BTreeMap::new(),
        timer_seq: 0,
        pending: BTreeMap::new(),
        next_request: 0,
        outbound,
        control_tx: control_tx.clone(),
        executor: Arc::new(Semaphore::new(config.peers.capacity_tasks as usize)),
        registry: registry.clone(),
        metrics: metrics.clone(),
        decided: decided.clone(),
        observer: options.note_observer,
        stop: stop_rx.clone(),
        handover: handover_rx,
        batch: Vec::new(),
        loopback: peer_tx,
        audit,
        ring_replies: Vec::new(),
        handback_at: None,
        handback: handback_tx,
    };
    let event_loop = tokio::spawn(event_loop.run(control_rx, peer_rx, lost_rx));
    let api = Arc::new(http::Api {
        config: config.clone(),
        metrics: metrics.clone(),
        registry,
        control: control_tx.clone(),
        decided,
        peer_status,
        id_rng: Mutex::new(NodeRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)),
        started: std::time::Instant::now(),
    });
    let app = http::router(api);
    let http = match &config.security.http_tls {
        None => tokio::spawn(http::serve(
            listeners.http,
            app,
            config.clone(),
            metrics.clone(),
            stop_rx,
        )),
        Some(tls) => {
            let listener = tls::TlsListener::new(
                listeners.http,
                tls,
                config.handshake_timeout(),
                config.transport.inbound_connections_max,
                metrics.clone(),
            )
            .map_err(io("http listener"))?;
            tokio::spawn(http::serve(
                listener,
                app,
                config.clone(),
                metrics.clone(),
                stop_rx,
            ))
        }
    };
    tracing::info!(node = %id, %http_addr, %peer_addr, mode = %config.mode, "node started");
    Ok(RunningNode {
        id,
        http_addr,
        peer_addr,
        metrics,
        stop: stop_tx,
        handover: handover_tx,
        grace,
        control: control_tx,
        event_loop,
        http,
        inbound,
    })
}

/// Boots the core from what its data file holds. A mode refuses records it
/// cannot decode (or that contradict each other) with a
/// [`cohort_core::BootError`]; the caller refuses the file.
pub fn boot_checked<N: Node>(
    peers: &cohort_core::Peers,
    config: &N::Config,
    stored: &cohort_core::Stored,
    rng: NodeRng,
    now: Time,
) -> Result<N, cohort_core::BootError> {
    N::boot(peers, config, stored, rng, now)
}

/// Microseconds since the Unix epoch on the system clock: where a node's
/// [`Time`] starts. Read once at boot; the node's time then advances with
/// the monotonic clock, so a clock step never moves it backwards, and the
/// times it stamps on task events read as wall-clock times.
fn unix_micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Opens the data file on a blocking thread, retrying briefly while a
/// just-killed node of this process still holds it.
async fn open_storage(
    path: std::path::PathBuf,
    cluster_id: String,
    id: NodeId,
) -> Result<(storage::Storage, cohort_core::Stored), RuntimeError> {
    let mut tries = 0;
    loop {
        let (p, c) = (path.clone(), cluster_id.clone());
        let r = tokio::task::spawn_blocking(move || storage::Storage::open(&p, &c, id))
            .await
            .map_err(|e| RuntimeError::Storage {
                path: path.clone(),
                reason: format!("storage thread failed: {e}"),
            })?;
        match r {
            Err(RuntimeError::Storage { reason, .. })
                if reason.contains("already open") && tries < 50 =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// A seed from the OS: std's hash map keys are drawn from OS randomness.
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}
