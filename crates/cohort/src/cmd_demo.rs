//! `cohort demo`: a 5-node cluster on loopback in one process, each mode in
//! turn, under a paced workload, with nodes killed and restarted mid-run;
//! then a side-by-side table of what happened.
//!
//! Schedule (by tasks submitted): at 1/3 the first victim is killed with no
//! goodbye (the mode's coordinator, or its busiest node), at 2/3 the busiest
//! remaining node, at 5/6 both restart from their data directories. Every
//! submit is retried (same id, next node) for up to 3 s. At the end every
//! acknowledged task is read back (linearizable) from a live node.

use crate::modes::{FirstVictim, Mode, MODES};
use anyhow::Context;
use clap::Args;
use cohort_core::{Limits, NodeId, Note, Peers, TaskId};
use cohort_runtime::client::{CallError, Client};
use cohort_runtime::handlers::Sleep;
use cohort_runtime::http::{parse_wait, SubmitBody};
use cohort_runtime::{
    Handler, HandlerFuture, HandlerInput, Listeners, Metrics, NodeOptions, Registry, RunningNode,
    RuntimeConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Run the demo.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Tasks submitted per mode.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// How long the submissions are spread over (e.g. 6s).
    #[arg(long, default_value = "6s")]
    pub duration: String,
    /// Milliseconds each task sleeps.
    #[arg(long, default_value_t = 10)]
    pub task_ms: u64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5)]
    pub nodes: u64,
    /// Only this mode (default: every available mode in turn).
    #[arg(long)]
    pub mode: Option<String>,
}

/// What the workload observed, shared with handlers and note observers.
#[derive(Default)]
struct Record {
    /// Executions started, per task.
    executions: Mutex<BTreeMap<TaskId, u32>>,
    /// When a task was first decided (any node's note).
    decided: Mutex<BTreeMap<TaskId, Instant>>,
}

/// `sleep` that also counts executions.
struct CountingSleep(Arc<Record>);

impl Handler for CountingSleep {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        *self
            .0
            .executions
            .lock()
            .expect("record lock")
            .entry(input.id)
            .or_default() += 1;
        Sleep.run(input)
    }
}

struct DemoCluster {
    mode: &'static Mode,
    dir: tempfile::TempDir,
    peer_addrs: BTreeMap<NodeId, SocketAddr>,
    http_addrs: BTreeMap<NodeId, SocketAddr>,
    unused: BTreeMap<NodeId, (TcpListener, TcpListener)>,
    running: BTreeMap<NodeId, RunningNode>,
    metrics: BTreeMap<NodeId, Vec<Arc<Metrics>>>,
    record: Arc<Record>,
}

impl DemoCluster {
    async fn bind(mode: &'static Mode, n: u64, record: Arc<Record>) -> anyhow::Result<DemoCluster> {
        let mut c = DemoCluster {
            mode,
            dir: tempfile::tempdir()?,
            peer_addrs: BTreeMap::new(),
            http_addrs: BTreeMap::new(),
            unused: BTreeMap::new(),
            running: BTreeMap::new(),
            metrics: BTreeMap::new(),
            record,
        };
        for i in 1..=n {
            let peer = TcpListener::bind("127.0.0.1:0").await?;
            let http = TcpListener::bind("127.0.0.1:0").await?;
            c.peer_addrs.insert(NodeId(i), peer.local_addr()?);
            c.http_addrs.insert(NodeId(i), http.local_addr()?);
            c.unused.insert(NodeId(i), (peer, http));
        }
        Ok(c)
    }

    async fn start(&mut self, id: NodeId) -> anyhow::Result<()> {
        let (peer, http) = match self.unused.remove(&id) {
            Some(l) => l,
            None => (
                rebind(self.peer_addrs[&id]).await?,
                rebind(self.http_addrs[&id]).await?,
            ),
        };
        let peers = Peers::new(id, self.peer_addrs.keys().copied(), 4, Limits::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let others = self
            .peer_addrs
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut config = RuntimeConfig::new(
            format!("demo-{}", self.mode.name),
            self.mode.name,
            peers,
            others,
            self.dir.path(),
        );
        config.http_addrs = self.http_addrs.clone();
        config.client.request_timeout_ms = 3000;
        let mut registry = Registry::with_builtins(false);
        registry.register("sleep", CountingSleep(self.record.clone()));
        let record = self.record.clone();
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
        let node = (self.mode.start)(config, options, Listeners { peer, http }).await?;
        self.metrics.entry(id).or_default().push(node.metrics());
        self.running.insert(id, node);
        Ok(())
    }

    async fn kill(&mut self, id: NodeId) {
        if let Some(n) = self.running.remove(&id) {
            n.kill().await;
        }
    }

    fn executed(&self, id: NodeId) -> u64 {
        self.metrics
            .get(&id)
            .into_iter()
            .flatten()
            .map(|m| m.counter_sum("cohort_tasks_executed_total"))
            .sum()
    }

    /// The leader, as the live nodes report it in `/v1/cluster` (the first
    /// node that calls itself leader).
    async fn leader(&self) -> Option<NodeId> {
        for id in self.running.keys() {
            let client = Client::new(&self.http_addrs[id].to_string());
            if let Ok(view) = client.cluster().await {
                if view["role"] == "leader" {
                    return Some(*id);
                }
            }
        }
        None
    }

    fn busiest_alive(&self, except: Option<NodeId>) -> NodeId {
        let mut best = None;
        for id in self
            .running
            .keys()
            .copied()
            .filter(|id| Some(*id) != except)
        {
            let load = self.executed(id);
            if best.is_none_or(|(_, b)| load > b) {
                best = Some((id, load));
            }
        }
        best.map(|(id, _)| id).expect("a live node")
    }

    fn messages(&self, id: NodeId, name: &'static str) -> u64 {
        self.metrics
            .get(&id)
            .into_iter()
            .flatten()
            .map(|m| m.counter_sum(name))
            .sum()
    }
}

async fn rebind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.expect("tried")).with_context(|| format!("cannot rebind {addr}"))
}

/// One column of the table.
struct Report {
    mode: &'static str,
    durable: bool,
    submitted: usize,
    acked: usize,
    finished: usize,
    lost: usize,
    unfinished: usize,
    twice: usize,
    waited: usize,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    stalls: Vec<(NodeId, Duration)>,
    msgs_max: u64,
    msgs_mean: f64,
    busiest_share: f64,
}

struct Ack {
    submitted_at: Instant,
}

async fn submit_with_retry(
    clients: &[Client],
    i: usize,
    body: &SubmitBody,
) -> Result<(), CallError> {
    let end = Instant::now() + Duration::from_secs(3);
    let mut attempt = 0usize;
    loop {
        let client = &clients[(i + attempt) % clients.len()];
        match client.submit(body).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retryable() && Instant::now() < end => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run_mode(mode: &'static Mode, args: &DemoArgs) -> anyhow::Result<Report> {
    let record = Arc::new(Record::default());
    let mut cluster = DemoCluster::bind(mode, args.nodes, record.clone()).await?;
    for id in cluster.peer_addrs.keys().copied().collect::<Vec<_>>() {
        cluster.start(id).await?;
    }
    // Let the links come up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let clients: Vec<Client> = cluster
        .http_addrs
        .values()
        .map(|a| Client::new(&a.to_string()))
        .collect();
    let window = parse_wait(&args.duration).context("--duration")?;
    let pb = ProgressBar::new(args.tasks as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_prefix(mode.name);
    let say = |pb: &ProgressBar, s: String| {
        if pb.is_hidden() {
            eprintln!("  [{}] {s}", mode.name);
        }
        pb.set_message(s);
    };
    let acks: Arc<Mutex<BTreeMap<TaskId, Ack>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let mut kills: Vec<(NodeId, Instant)> = Vec::new();
    let mut restarted_at = None;
    let mut joins = Vec::new();
    let payload = format!("{{\"ms\": {}}}", args.task_ms);
    for i in 0..args.tasks {
        let due = start + window.mul_f64(i as f64 / args.tasks as f64);
        tokio::time::sleep_until(due.into()).await;
        if i == args.tasks / 3 {
            let victim = match mode.first_victim {
                FirstVictim::Fixed(id) => id,
                FirstVictim::Leader => cluster
                    .leader()
                    .await
                    .unwrap_or_else(|| cluster.busiest_alive(None)),
                FirstVictim::Busiest => cluster.busiest_alive(None),
            };
            cluster.kill(victim).await;
            kills.push((victim, Instant::now()));
            say(&pb, format!("killed {victim}"));
        } else if i == 2 * args.tasks / 3 {
            let victim = cluster.busiest_alive(kills.first().map(|k| k.0));
            cluster.kill(victim).await;
            kills.push((victim, Instant::now()));
            say(&pb, format!("killed {} and {victim}", kills[0].0));
        } else if i == 5 * args.tasks / 6 {
            for (victim, _) in kills.clone() {
                cluster.start(victim).await?;
            }
            restarted_at = Some(Instant::now());
            say(&pb, "restarted both".to_string());
        }
        let permit = permits.clone().acquire_owned().await?;
        let clients = clients.clone();
        let acks = acks.clone();
        let pb = pb.clone();
        let id = TaskId(((i as u128) + 1) << 64 | 0xc0);
        let body = SubmitBody {
            id: Some(id.to_string()),
            kind: "sleep".into(),
            payload: Some(payload.clone()),
            payload_base64: None,
            timeout_ms: Some(5000),
            max_attempts: Some(3),
            not_before_ms: None,
            retry: None,
            schedule_to_start_ms: None,
            priority: None,
            heartbeat_timeout_ms: None,
            labels: None,
            limit: None,
            lease_grace_ms: None,
        };
        joins.push(tokio::spawn(async move {
            let _permit = permit;
            let submitted_at = Instant::now();
            if submit_with_retry(&clients, i, &body).await.is_ok() {
                acks.lock()
                    .expect("acks lock")
                    .insert(id, Ack { submitted_at });
            }
            pb.inc(1);
        }));
    }
    for j in joins {
        j.await?;
    }
    // Drain: until every acknowledged task is decided, or no progress for 2s.
    let acked: Vec<TaskId> = acks.lock().expect("acks lock").keys().copied().collect();
    let drain_end = Instant::now() + Duration::from_secs(20);
    let mut last_progress = (usize::MAX, Instant::now());
    loop {
        let done = {
            let d = record.decided.lock().expect("record lock");
            acked.iter().filter(|id| d.contains_key(id)).count()
        };
        if done == acked.len() || Instant::now() > drain_end {
            break;
        }
        if last_progress.0 == usize::MAX || done > last_progress.0 {
            say(
                &pb,
                format!(
                    "draining: {done}/{} acknowledged tasks decided",
                    acked.len()
                ),
            );
        }
        if last_progress.0 == usize::MAX || done > last_progress.0 {
            last_progress = (done, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pb.finish_and_clear();
    // Read back every acknowledged task from the cluster as it is now.
    let (mut finished, mut lost, mut unfinished) = (Vec::new(), 0usize, 0usize);
    let reads = Arc::new(Semaphore::new(32));
    let mut checks = Vec::new();
    for id in acked.iter().copied() {
        let clients = clients.clone();
        let permit = reads.clone().acquire_owned().await?;
        checks.push(tokio::spawn(async move {
            let _permit = permit;
            for attempt in 0..clients.len() * 2 {
                match clients[attempt % clients.len()]
                    .get(&id.to_string(), false, None)
                    .await
                {
                    Ok(t) => return (id, Some(t.is_final())),
                    Err(CallError::Api { status: 404, .. }) => return (id, None),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            (id, Some(false))
        }));
    }
    for c in checks {
        match c.await? {
            (id, Some(true)) => finished.push(id),
            (_, Some(false)) => unfinished += 1,
            (_, None) => lost += 1,
        }
    }
    let decided = record.decided.lock().expect("record lock").clone();
    let acks = std::mem::take(&mut *acks.lock().expect("acks lock"));
    let mut latencies: Vec<Duration> = finished
        .iter()
        .filter_map(|id| Some(decided.get(id)?.duration_since(acks.get(id)?.submitted_at)))
        .collect();
    latencies.sort();
    let last_decided = decided.values().max().copied().unwrap_or(start);
    let span = last_decided.duration_since(start).as_secs_f64().max(1e-3);
    let mut times: Vec<Instant> = decided.values().copied().collect();
    times.sort();
    let stalls = kills
        .iter()
        .map(|(victim, at)| {
            let mut prev = *at;
            let mut longest = Duration::ZERO;
            for t in times.iter().filter(|t| **t > *at) {
                longest = longest.max(t.duration_since(prev));
                prev = *t;
            }
            if prev == *at {
                longest = last_decided.max(*at).duration_since(*at);
            }
            (*victim, longest)
        })
        .collect();
    let twice = record
        .executions
        .lock()
        .expect("record lock")
        .iter()
        .filter(|(id, n)| **n > 1 && acks.contains_key(id))
        .count();
    let first_kill = kills.first().map(|k| k.1);
    let waited = match (first_kill, restarted_at) {
        (Some(k), Some(r)) => finished
            .iter()
            .filter(|id| acks[id].submitted_at < k && decided.get(id).is_some_and(|d| *d > r))
            .count(),
        _ => 0,
    };
    let ids: Vec<NodeId> = cluster.peer_addrs.keys().copied().collect();
    let sent: Vec<u64> = ids
        .iter()
        .map(|id| cluster.messages(*id, "cohort_peer_messages_sent_total"))
        .collect();
    let handled: Vec<u64> = ids
        .iter()
        .map(|id| {
            cluster.messages(*id, "cohort_peer_messages_sent_total")
                + cluster.messages(*id, "cohort_peer_messages_received_total")
        })
        .collect();
    let total_handled: u64 = handled.iter().sum();
    let report = Report {
        mode: mode.name,
        durable: mode.durable,
        submitted: args.tasks,
        acked: acked.len(),
        finished: finished.len(),
        lost,
        unfinished,
        twice,
        waited,
        throughput: finished.len() as f64 / span,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        stalls,
        msgs_max: sent.iter().copied().max().unwrap_or(0),
        msgs_mean: sent.iter().sum::<u64>() as f64 / sent.len().max(1) as f64,
        busiest_share: handled.iter().copied().max().unwrap_or(0) as f64
            / (total_handled.max(1)) as f64,
    };
    // The whole cluster is discarded with its temporary directory: a
    // graceful stop would only hand leadership between nodes that are
    // about to stop too (and wait out the grace period once no quorum is
    // left), so the nodes are stopped as a crash stops them.
    for id in ids {
        if let Some(n) = cluster.running.remove(&id) {
            n.kill().await;
        }
    }
    Ok(report)
}

fn print_table(reports: &[Report]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Report) -> String| {
        rows.push((name.to_string(), reports.iter().map(f).collect()));
    };
    row("tasks submitted", &|r| r.submitted.to_string());
    row("acknowledged", &|r| r.acked.to_string());
    row("refused or timed out (not acked)", &|r| {
        (r.submitted - r.acked).to_string()
    });
    row("finished (final when read back)", &|r| {
        r.finished.to_string()
    });
    row("LOST (acknowledged, now unknown)", &|r| r.lost.to_string());
    row("acknowledged, not final", &|r| r.unfinished.to_string());
    row("run more than once", &|r| r.twice.to_string());
    row("waited for a restarted node", &|r| r.waited.to_string());
    row("throughput (finished/s)", &|r| {
        format!("{:.0}", r.throughput)
    });
    row("latency p50 / p99 (ms)", &|r| {
        format!("{:.0} / {:.0}", r.p50_ms, r.p99_ms)
    });
    for k in 0..2 {
        row(&format!("longest stall after kill {}", k + 1), &|r| {
            r.stalls
                .get(k)
                .map(|(n, d)| format!("{n}: {:.2}s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        });
    }
    row("messages sent per node max / mean", &|r| {
        format!("{} / {:.0}", r.msgs_max, r.msgs_mean)
    });
    row("busiest node's share of traffic", &|r| {
        format!("{:.0}%", r.busiest_share * 100.0)
    });
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    print!("{:width$}", "");
    for r in reports {
        print!("  {:>14}", r.mode);
    }
    println!();
    for (name, cells) in rows {
        print!("{name:width$}");
        for c in cells {
            print!("  {c:>14}");
        }
        println!();
    }
}

/// Runs the demo; fails if a mode that promises durability lost a task.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::init_tracing();
    if args.nodes < 3 {
        anyhow::bail!("--nodes must be at least 3 (two are killed)");
    }
    if args.tasks < 6 {
        anyhow::bail!("--tasks must be at least 6");
    }
    let modes: Vec<&'static Mode> = match &args.mode {
        Some(m) => vec![crate::modes::find(m)?],
        None => MODES.iter().collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for mode in modes {
        println!(
            "== {} mode: {} · {} nodes · {} tasks of {}ms over {}",
            mode.name, mode.about, args.nodes, args.tasks, args.task_ms, args.duration
        );
        reports.push(rt.block_on(run_mode(mode, &args))?);
    }
    println!();
    print_table(&reports);
    let mut failed = Vec::new();
    for r in &reports {
        if r.lost > 0 && !r.durable {
            println!(
                "\n{}: lost {} acknowledged tasks — expected: this baseline keeps its task table in memory on one coordinator.",
                r.mode, r.lost
            );
        } else if r.lost > 0 {
            failed.push(format!("{} lost {} acknowledged tasks", r.mode, r.lost));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("durability violated: {}", failed.join("; "));
    }
    Ok(())
}
