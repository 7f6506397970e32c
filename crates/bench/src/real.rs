//! Real nodes in this process on loopback: throughput, open-loop latency and
//! a coordinator crash, for any mode given as a start function.

use crate::disk::{DiskProbe, DiskResult};
use crate::BenchError;
use cohort_core::{Limits, NodeId, Note, Peers, TaskId};
use cohort_runtime::client::{CallError, Client};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::{
    Handler, HandlerFuture, HandlerInput, Listeners, Metrics, NodeOptions, Registry, RunningNode,
    RuntimeConfig, RuntimeError,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Starts one node of a mode with that mode's defaults.
pub type StartFn = fn(
    RuntimeConfig,
    NodeOptions,
    Listeners,
) -> Pin<Box<dyn Future<Output = Result<RunningNode, RuntimeError>> + Send>>;

/// Whom the crash scenario kills.
#[derive(Clone, Copy, Debug)]
pub enum Victim {
    /// A fixed node (static: its coordinator).
    Fixed(NodeId),
    /// The node whose `/v1/cluster` says `role: leader` (the busiest if none does).
    Leader,
    /// The node that has executed the most tasks so far.
    Busiest,
}

/// A mode as the loopback scenarios run it.
#[derive(Clone, Copy)]
pub struct RealMode {
    /// `--mode` value.
    pub name: &'static str,
    /// Starts a node.
    pub start: StartFn,
    /// Whom the crash scenario kills.
    pub victim: Victim,
    /// Whether acknowledged tasks must survive the crash (G1).
    pub durable: bool,
    /// Execution slots of each node (`Peers::capacity`):
    /// [`CAPACITY_TASKS_DEFAULT`] unless `cohort bench --capacity-tasks`
    /// says otherwise.
    pub capacity_tasks: u32,
}

impl std::fmt::Debug for RealMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealMode")
            .field("name", &self.name)
            .field("victim", &self.victim)
            .field("capacity_tasks", &self.capacity_tasks)
            .finish()
    }
}

/// What the handlers and note observers saw.
#[derive(Default)]
struct Record {
    executions: Mutex<BTreeMap<TaskId, u32>>,
    decided: Mutex<BTreeMap<TaskId, Instant>>,
}

/// `echo` that counts executions per task.
struct CountingEcho(Arc<Record>);

impl Handler for CountingEcho {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        *self
            .0
            .executions
            .lock()
            .expect("record lock")
            .entry(input.id)
            .or_default() += 1;
        Box::pin(async move { Ok(input.payload) })
    }
}

static NEXT_TASK: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_task() -> TaskId {
    TaskId(u128::from(NEXT_TASK.fetch_add(1, Ordering::Relaxed)) << 64 | 0xbe)
}

/// The concurrency limit of the limits point: the most a permit record
/// holds, so it never binds and what the point shows is the limit's cost.
pub const LIMIT_CONCURRENCY_MAX: u32 = 1_024;

/// [`body`] under a concurrency limit of `key` ([`LIMIT_CONCURRENCY_MAX`]).
fn limited_body(id: TaskId, key: String) -> SubmitBody {
    SubmitBody {
        limit: Some(cohort_runtime::http::LimitBody {
            key,
            concurrency_max: Some(LIMIT_CONCURRENCY_MAX),
            rate_max: None,
            rate_window_ms: None,
        }),
        ..body(id)
    }
}

pub(crate) fn body(id: TaskId) -> SubmitBody {
    SubmitBody {
        id: Some(id.to_string()),
        kind: "echo".into(),
        payload: Some("x".into()),
        payload_base64: None,
        timeout_ms: Some(5_000),
        max_attempts: Some(3),
        not_before_ms: None,
        retry: None,
        schedule_to_start_ms: None,
        priority: None,
        heartbeat_timeout_ms: None,
        labels: None,
        limit: None,
        lease_grace_ms: None,
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    running: BTreeMap<NodeId, RunningNode>,
    metrics: BTreeMap<NodeId, Arc<Metrics>>,
    clients: Vec<Client>,
    record: Arc<Record>,
}

/// Execution slots of each node for the no-op tasks, by default.
pub const CAPACITY_TASKS_DEFAULT: u32 = 64;
/// Time for links to come up (and a leader to be elected) before measuring.
const WARMUP: Duration = Duration::from_millis(400);
/// How long one submit is retried (same id, next node) before it counts as refused.
const SUBMIT_RETRY: Duration = Duration::from_secs(3);

impl Cluster {
    async fn start(mode: &RealMode, n: u64) -> Result<Cluster, BenchError> {
        let dir = tempfile::tempdir().map_err(BenchError::io("temp dir"))?;
        let record = Arc::new(Record::default());
        let mut listeners = BTreeMap::new();
        let (mut peer_addrs, mut http_addrs) = (BTreeMap::new(), BTreeMap::new());
        for i in 1..=n {
            let peer = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(BenchError::io("bind"))?;
            let http = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(BenchError::io("bind"))?;
            peer_addrs.insert(
                NodeId(i),
                peer.local_addr().map_err(BenchError::io("addr"))?,
            );
            http_addrs.insert(
                NodeId(i),
                http.local_addr().map_err(BenchError::io("addr"))?,
            );
            listeners.insert(NodeId(i), Listeners { peer, http });
        }
        let mut c = Cluster {
            _dir: dir,
            running: BTreeMap::new(),
            metrics: BTreeMap::new(),
            clients: http_addrs
                .values()
                .map(|a| Client::new(&a.to_string()))
                .collect(),
            record,
        };
        for (id, l) in listeners {
            let peers = Peers::new(
                id,
                peer_addrs.keys().copied(),
                mode.capacity_tasks,
                Limits::default(),
            )
            .map_err(|e| BenchError::Options(e.to_string()))?;
            let others = peer_addrs
                .iter()
                .filter(|(k, _)| **k != id)
                .map(|(k, v)| (*k, *v))
                .collect();
            let mut config = RuntimeConfig::new(
                format!("bench-{}", mode.name),
                mode.name,
                peers,
                others,
                c._dir.path(),
            );
            config.http_addrs = http_addrs.clone();
            config.client.request_timeout_ms = 3_000;
            let mut registry = Registry::with_builtins(false);
            registry.register("echo", CountingEcho(c.record.clone()));
            let record = c.record.clone();
            let observer: cohort_runtime::NoteObserver = Arc::new(move |_node, note: &Note| {
                if let Note::Decided { task, .. } = note {
                    record
                        .decided
                        .lock()
                        .expect("record lock")
                        .entry(*task)
                        .or_insert_with(Instant::now);
                }
            });
            let options = NodeOptions {
                registry,
                note_observer: Some(observer),
                rng_seed: Some(id.0),
            };
            let node = (mode.start)(config, options, l).await?;
            c.metrics.insert(id, node.metrics());
            c.running.insert(id, node);
        }
        tokio::time::sleep(WARMUP).await;
        Ok(c)
    }

    fn busiest(&self) -> NodeId {
        self.running
            .keys()
            .copied()
            .max_by_key(|id| self.metrics[id].counter_sum("cohort_tasks_executed_total"))
            .expect("a running node")
    }

    async fn leader(&self) -> Option<NodeId> {
        // `clients[i]` is node `i + 1`.
        for id in self.running.keys() {
            let c = &self.clients[(id.0 - 1) as usize];
            if let Ok(view) = c.cluster().await {
                if view["role"] == "leader" {
                    return Some(*id);
                }
            }
        }
        None
    }

    async fn kill(&mut self, id: NodeId) {
        if let Some(n) = self.running.remove(&id) {
            n.kill().await;
        }
    }

    async fn stop(mut self) {
        for (_, n) in std::mem::take(&mut self.running) {
            n.kill().await;
        }
    }

    fn decided_between(&self, from: Instant, to: Instant) -> u64 {
        let d = self.record.decided.lock().expect("record lock");
        d.values().filter(|t| **t >= from && **t <= to).count() as u64
    }
}

/// Submits with the same id to node `first`, then the next ones, until
/// acknowledged or [`SUBMIT_RETRY`] has passed.
async fn submit(clients: &[Client], first: usize, body: &SubmitBody) -> Result<(), CallError> {
    retrying(
        clients,
        first,
        |c| async move { c.submit(body).await.map(drop) },
    )
    .await
}

/// `call` on node `first`, then the next ones, until it succeeds or
/// [`SUBMIT_RETRY`] has passed.
async fn retrying<'a, F, Fut>(clients: &'a [Client], first: usize, call: F) -> Result<(), CallError>
where
    F: Fn(&'a Client) -> Fut,
    Fut: Future<Output = Result<(), CallError>>,
{
    let end = Instant::now() + SUBMIT_RETRY;
    let mut attempt = 0usize;
    loop {
        match call(&clients[(first + attempt) % clients.len()]).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && Instant::now() < end => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Closed-loop throughput at one cluster size and client concurrency.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputPoint {
    /// Nodes.
    pub nodes: u64,
    /// Clients, each with one submit in flight.
    pub concurrency: usize,
    /// Tasks per submit: 1 is `POST /v1/tasks`, more is one
    /// `POST /v1/tasks:batch` of that many.
    pub batch_tasks: usize,
    /// 0: no limits; else every task is under a concurrency limit of one
    /// of this many keys, in turn (single submits only).
    pub limit_keys: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Acknowledged (durable where the mode is) submits per second.
    pub submits_per_s: f64,
    /// Tasks decided per second in the same window.
    pub completions_per_s: f64,
    /// Submits refused or timed out after retries.
    pub refused: u64,
    /// Of `refused`, those answered `429 overloaded`: the cluster's
    /// backpressure (e.g. `tasks_active_max` reached while completions lag
    /// submits), not a fault.
    pub overloaded: u64,
}

/// The JSON of a batch of `n` fresh echo tasks, written by hand: the
/// client shares the machine with the nodes it measures.
fn batch_json(n: usize) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = String::with_capacity(16 + n * 96);
    s.push_str("{\"tasks\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"id\":\"{}\",\"kind\":\"echo\",\"payload\":\"x\",\"timeout_ms\":5000,\"max_attempts\":3}}",
            next_task()
        );
    }
    s.push_str("]}");
    s.into_bytes()
}

/// Runs `concurrency` clients in a closed loop for `window`, each
/// submitting `batch_tasks` tasks at a time (1: single submits), under
/// limits of `limit_keys` keys if not 0 (single submits only). Clients
/// send to the leader where the mode has one (a client that knows where
/// to go), spread over the nodes otherwise.
pub async fn throughput(
    mode: &RealMode,
    nodes: u64,
    concurrency: usize,
    batch_tasks: usize,
    limit_keys: usize,
    window: Duration,
) -> Result<ThroughputPoint, BenchError> {
    if limit_keys > 0 && batch_tasks > 1 {
        return Err(BenchError::Options(
            "limited tasks are measured with single submits".into(),
        ));
    }
    let cluster = Cluster::start(mode, nodes).await?;
    let leader = match mode.victim {
        Victim::Leader => cluster.leader().await,
        _ => None,
    };
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let overloaded = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop_at = start + window;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let clients = cluster.clients.clone();
        let first = leader.map_or(w, |l| (l.0 - 1) as usize);
        let (acked, refused) = (acked.clone(), refused.clone());
        let overloaded = overloaded.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while Instant::now() < stop_at {
                let (n, r) = if batch_tasks <= 1 {
                    let body = if limit_keys > 0 {
                        let key = format!("bench-{}", (w + sent) % limit_keys);
                        limited_body(next_task(), key)
                    } else {
                        body(next_task())
                    };
                    sent += 1;
                    (1, submit(&clients, first, &body).await)
                } else {
                    let json = batch_json(batch_tasks);
                    let json = &json;
                    let r = retrying(&clients, first, |c| async move {
                        c.submit_batch_json(json).await.map(drop)
                    })
                    .await;
                    (batch_tasks as u64, r)
                };
                match r {
                    Ok(()) => acked.fetch_add(n, Ordering::Relaxed),
                    Err(e) => {
                        if e.status() == Some(429) {
                            overloaded.fetch_add(n, Ordering::Relaxed);
                        }
                        refused.fetch_add(n, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let end = Instant::now();
    let seconds = end.duration_since(start).as_secs_f64().max(1e-3);
    let completions = cluster.decided_between(start, end);
    cluster.stop().await;
    Ok(ThroughputPoint {
        nodes,
        concurrency,
        batch_tasks,
        limit_keys,
        seconds,
        submits_per_s: acked.load(Ordering::Relaxed) as f64 / seconds,
        completions_per_s: completions as f64 / seconds,
        refused: refused.load(Ordering::Relaxed),
        overloaded: overloaded.load(Ordering::Relaxed),
    })
}

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// (latency ms, fraction at or below) points of the CDF, for the plot.
    pub cdf: Vec<(f64, f64)>,
}

pub(crate) fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    let cdf = if h.is_empty() {
        Vec::new()
    } else {
        h.iter_quantiles(2)
            .map(|v| (ms(v.value_iterated_to()), v.quantile_iterated_to()))
            .collect()
    };
    Percentiles {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        cdf,
    }
}

/// Open-loop latency at a fixed offered load.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    /// Nodes.
    pub nodes: u64,
    /// Offered submits per second (each timed from when it was due, not
    /// from when it was sent, so a stall counts for every request it delays).
    pub offered_per_s: f64,
    /// Seconds of offered load.
    pub seconds: f64,
    /// Submit → acknowledgement.
    pub ack: Percentiles,
    /// Submit → decided (any node's note).
    pub finish: Percentiles,
    /// Submits refused or timed out after retries.
    pub refused: u64,
    /// Acknowledged tasks not decided by the end of the drain.
    pub unfinished: u64,
    /// The disk's own fsync latency during the window, and its stalls.
    pub disk: DiskResult,
    /// Submit → acknowledgement of the submits whose wait (from due to
    /// acknowledged) overlapped no disk stall: what is left of the
    /// figure once the disk's hiccups, which no durable acknowledgement
    /// can hide, are set aside. Read it beside [`LatencyResult::ack`],
    /// never instead of it.
    pub ack_outside_disk_stalls: Percentiles,
    /// Acknowledged submits whose wait overlapped a disk stall.
    pub acks_in_disk_stalls: u64,
}

struct OpenLoop {
    start: Instant,
    /// (task, due, acknowledged at).
    acks: Vec<(TaskId, Instant, Instant)>,
    refused: u64,
    kill: Option<(NodeId, Instant)>,
}

/// Offers `rate` submits/s for `window`, spread over the nodes; at
/// `kill_after` (if any) kills the mode's victim.
async fn open_loop(
    cluster: &mut Cluster,
    mode: &RealMode,
    rate: f64,
    window: Duration,
    kill_after: Option<Duration>,
) -> OpenLoop {
    let count = (rate * window.as_secs_f64()).round().max(1.0) as usize;
    let acks: Arc<Mutex<Vec<(TaskId, Instant, Instant)>>> = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut kill = None;
    let mut joins = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + window.mul_f64(i as f64 / count as f64);
        if let Some(k) = kill_after {
            if kill.is_none() && due >= start + k {
                let victim = match mode.victim {
                    Victim::Fixed(id) => id,
                    Victim::Busiest => cluster.busiest(),
                    Victim::Leader => cluster.leader().await.unwrap_or_else(|| cluster.busiest()),
                };
                cluster.kill(victim).await;
                kill = Some((victim, Instant::now()));
            }
        }
        tokio::time::sleep_until(due.into()).await;
        let clients = cluster.clients.clone();
        let (acks, refused) = (acks.clone(), refused.clone());
        joins.push(tokio::spawn(async move {
            let id = next_task();
            match submit(&clients, i, &body(id)).await {
                Ok(()) => acks
                    .lock()
                    .expect("acks lock")
                    .push((id, due, Instant::now())),
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for j in joins {
        let _ = j.await;
    }
    let acks = std::mem::take(&mut *acks.lock().expect("acks lock"));
    OpenLoop {
        start,
        acks,
        refused: refused.load(Ordering::Relaxed),
        kill,
    }
}

/// Waits until every acknowledged task is decided, or nothing was decided
/// for `quiet`. Returns how many are still undecided.
async fn drain(record: &Record, acked: &[TaskId], quiet: Duration) -> u64 {
    let mut last = (usize::MAX, Instant::now());
    loop {
        let done = {
            let d = record.decided.lock().expect("record lock");
            acked.iter().filter(|id| d.contains_key(id)).count()
        };
        if done == acked.len() {
            return 0;
        }
        if last.0 == usize::MAX || done > last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > quiet {
            return (acked.len() - done) as u64;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Measures submit→ack and submit→finish at `rate` submits/s for `window`.
pub async fn latency(
    mode: &RealMode,
    nodes: u64,
    rate: f64,
    window: Duration,
) -> Result<LatencyResult, BenchError> {
    let mut cluster = Cluster::start(mode, nodes).await?;
    let probe = DiskProbe::start(cluster._dir.path());
    let run = open_loop(&mut cluster, mode, rate, window, None).await;
    let origin = probe.started();
    let disk = tokio::task::spawn_blocking(move || probe.finish())
        .await
        .unwrap_or_else(|e| DiskResult::unavailable(format!("the probe's task failed: {e}")));
    let acked: Vec<TaskId> = run.acks.iter().map(|a| a.0).collect();
    let unfinished = drain(&cluster.record, &acked, Duration::from_secs(2)).await;
    let (mut ack, mut finish, mut calm) = (histogram(), histogram(), histogram());
    let mut acks_in_disk_stalls = 0;
    {
        let decided = cluster.record.decided.lock().expect("record lock");
        let ms = |t: Instant| t.saturating_duration_since(origin).as_secs_f64() * 1000.0;
        for (id, due, at) in &run.acks {
            let waited = at.duration_since(*due).as_micros() as u64;
            ack.saturating_record(waited);
            if disk.overlaps_stall(ms(*due), ms(*at)) {
                acks_in_disk_stalls += 1;
            } else {
                calm.saturating_record(waited);
            }
            if let Some(d) = decided.get(id) {
                finish.saturating_record(d.saturating_duration_since(*due).as_micros() as u64);
            }
        }
    }
    cluster.stop().await;
    Ok(LatencyResult {
        nodes,
        offered_per_s: rate,
        seconds: window.as_secs_f64(),
        ack: percentiles(&ack),
        finish: percentiles(&finish),
        refused: run.refused,
        unfinished,
        disk,
        ack_outside_disk_stalls: percentiles(&calm),
        acks_in_disk_stalls,
    })
}

/// One repetition of the coordinator crash.
#[derive(Clone, Debug, Serialize)]
pub struct CrashRep {
    /// The node killed.
    pub victim: u64,
    /// Seconds from the start of the load to the kill.
    pub kill_at_s: f64,
    /// Longest time from the kill on with no acknowledged submit, ms.
    pub no_ack_ms: f64,
    /// Longest time from the kill on with no task decided, ms.
    pub no_completion_ms: f64,
    /// Whether submits were acknowledged again after the kill.
    pub acks_resumed: bool,
    /// Whether tasks were decided again after the kill.
    pub completions_resumed: bool,
    /// Tasks executed more than once.
    pub tasks_rerun: u64,
    /// Acknowledged submits.
    pub acked: u64,
    /// Submits refused or timed out after retries.
    pub refused: u64,
    /// Acknowledged tasks never decided (lost for a durable mode: a G1/G4 failure).
    pub unfinished: u64,
    /// Tasks decided per 50 ms bin from the start of the load.
    pub completions_per_bin: Vec<u64>,
}

/// Width of a bin of [`CrashRep::completions_per_bin`].
pub const BIN_MS: u64 = 50;

/// Longest gap from `from` on between consecutive `times` (the first gap
/// starts at `from`); if none is after `from`, the time up to `end`.
fn longest_gap(from: Instant, end: Instant, times: &mut [Instant]) -> (Duration, bool) {
    times.sort();
    let mut prev = from;
    let mut longest = Duration::ZERO;
    let mut any = false;
    for t in times.iter().filter(|t| **t > from) {
        longest = longest.max(t.duration_since(prev));
        prev = *t;
        any = true;
    }
    if !any {
        longest = end.saturating_duration_since(from);
    }
    (longest, any)
}

/// Kills the victim `before` into a load of `rate` submits/s lasting
/// `before + after`, and measures the outage.
pub async fn crash(
    mode: &RealMode,
    nodes: u64,
    rate: f64,
    before: Duration,
    after: Duration,
) -> Result<CrashRep, BenchError> {
    let mut cluster = Cluster::start(mode, nodes).await?;
    let run = open_loop(&mut cluster, mode, rate, before + after, Some(before)).await;
    let acked: Vec<TaskId> = run.acks.iter().map(|a| a.0).collect();
    let unfinished = drain(&cluster.record, &acked, Duration::from_secs(2)).await;
    let end = Instant::now();
    let (victim, kill_at) = run.kill.unwrap_or((NodeId(0), end));
    let mut ack_times: Vec<Instant> = run.acks.iter().map(|a| a.2).collect();
    let (no_ack, acks_resumed) = longest_gap(kill_at, end, &mut ack_times);
    let mut decided: Vec<Instant> = cluster
        .record
        .decided
        .lock()
        .expect("record lock")
        .values()
        .copied()
        .collect();
    let (no_completion, completions_resumed) = longest_gap(kill_at, end, &mut decided);
    let bins = ((before + after).as_millis() as u64 / BIN_MS + 1) as usize;
    let mut completions_per_bin = vec![0u64; bins];
    for t in &decided {
        let b = (t.saturating_duration_since(run.start).as_millis() as u64 / BIN_MS) as usize;
        if let Some(c) = completions_per_bin.get_mut(b) {
            *c += 1;
        }
    }
    let tasks_rerun = cluster
        .record
        .executions
        .lock()
        .expect("record lock")
        .values()
        .filter(|n| **n > 1)
        .count() as u64;
    cluster.stop().await;
    Ok(CrashRep {
        victim: victim.0,
        kill_at_s: kill_at.saturating_duration_since(run.start).as_secs_f64(),
        no_ack_ms: no_ack.as_secs_f64() * 1000.0,
        no_completion_ms: no_completion.as_secs_f64() * 1000.0,
        acks_resumed,
        completions_resumed,
        tasks_rerun,
        acked: acked.len() as u64,
        refused: run.refused,
        unfinished,
        completions_per_bin,
    })
}
