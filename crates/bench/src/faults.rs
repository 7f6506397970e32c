//! Partitions and a slow node, on real `cohort node` processes.
//!
//! `SIGSTOP` needs a process of its own, so these scenarios run the
//! `cohort` binary as child processes on loopback rather than nodes inside
//! this process. Every scenario runs the same open-loop workload and the
//! same schedule: `before` seconds of load, the fault for `fault` seconds,
//! then `after` seconds of load with the fault healed, then a drain.
//!
//! **Partitions without root.** Every peer link goes through a proxy in
//! this process: node `i` is told that node `j` lives at the address of the
//! proxy for the ordered pair `(i, j)`, which forwards to `j`'s real
//! listener. Cutting a link makes its proxy stop forwarding in both
//! directions, holding what it already read and opening no new upstream
//! connection, so the nodes see what a firewall drop rule gives them:
//! silence, not a refused or reset connection; at the heal the held bytes
//! go through, as TCP retransmission would deliver them. The HTTP API is
//! not proxied: clients reach every node, as in the simulator. This needs
//! no privileges and no change to the runtime; network namespaces with nft
//! rules (as in `crates/cohort/tests/harness`) need root, and a drop switch
//! inside the runtime would be a test hook in the production binary. The
//! proxy costs one more loopback hop on every peer message, the same in
//! every phase, so before/during comparisons stay fair.
//!
//! **What is measured** per scenario: protocol events during the run (the
//! delta of `cohort_protocol_events_total` over all nodes, from the start
//! of the load to the end of the drain; every node stays alive, so every
//! suspicion and every member declared down is a false one), tasks run more
//! than once (from the nodes' `--history-file` audit logs), submit→ack
//! latency before, during and after the fault (each submit timed from when
//! it was due), and acknowledged tasks never decided (must be 0 for a
//! durable mode).

use crate::real::{self, Percentiles};
use crate::BenchError;
use cohort_core::{Note, TaskId};
use cohort_runtime::audit::{read_log, wall_clock_us, AuditEvent};
use cohort_runtime::client::{CallError, Client};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// One node that is neither the leader nor the busiest node is cut off
    /// from every other node.
    PartitionOne,
    /// A minority (`n / 2` nodes) including the leader (leaderless: the
    /// busiest node) is cut off from the majority.
    PartitionMinorityWithLeader,
    /// The leader (leaderless: the busiest node) gets `SIGSTOP`, then
    /// `SIGCONT` when the fault ends.
    SlowNode,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 3] = [
        Scenario::PartitionOne,
        Scenario::PartitionMinorityWithLeader,
        Scenario::SlowNode,
    ];

    /// A short name for tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PartitionOne => "partition one",
            Scenario::PartitionMinorityWithLeader => "partition minority+leader",
            Scenario::SlowNode => "SIGSTOP leader",
        }
    }
}

/// The schedule and load shared by every scenario.
#[derive(Clone, Debug)]
pub struct FaultSettings {
    /// The `cohort` binary, run as `cohort node`.
    pub binary: PathBuf,
    /// `--mode`.
    pub mode: String,
    /// Nodes (at least 3; 5 makes the minority two nodes).
    pub nodes: u64,
    /// Offered submits per second over the whole schedule.
    pub rate: f64,
    /// Seconds of load before the fault.
    pub before_s: f64,
    /// Seconds the fault lasts.
    pub fault_s: f64,
    /// Seconds of load after the heal.
    pub after_s: f64,
}

/// What one scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRun {
    /// Which fault.
    pub scenario: Scenario,
    /// Nodes.
    pub nodes: u64,
    /// The nodes cut off or paused.
    pub victims: Vec<u64>,
    /// Whether the leader (or busiest node) was among them.
    pub leader_hit: bool,
    /// Seconds from the start of the load to the fault.
    pub fault_at_s: f64,
    /// Seconds the fault lasted.
    pub fault_s: f64,
    /// Offered submits per second.
    pub offered_per_s: f64,
    /// Submit → ack of submits due before the fault.
    pub ack_before: Percentiles,
    /// Submit → ack of submits due while the fault lasted.
    pub ack_during: Percentiles,
    /// Submit → ack of submits due after the heal.
    pub ack_after: Percentiles,
    /// Protocol events over all nodes from the start of the load to the end
    /// of the drain (`cohort_protocol_events_total`, by event).
    pub events: BTreeMap<String, u64>,
    /// Suspicions raised: leaderless `suspicions_raised`, leader
    /// `pre_votes_started` (a follower suspecting its leader).
    pub suspicions: u64,
    /// Members declared down: leaderless `members_declared_down`, leader
    /// `elections_started` (a leader given up on).
    pub declared_down: u64,
    /// Tasks executed more than once.
    pub tasks_rerun: u64,
    /// Acknowledged submits.
    pub acked: u64,
    /// Submits refused or timed out after retries.
    pub refused: u64,
    /// Acknowledged tasks never decided by the end of the drain.
    pub unfinished: u64,
    /// Of those, tasks a node answered `not_found` for: lost (G1).
    pub lost: u64,
    /// Tasks decided per [`real::BIN_MS`] bin from the start of the load.
    pub completions_per_bin: Vec<u64>,
}

/// The names, per mode, of the suspicion and declared-down counters.
const SUSPICION_EVENTS: [&str; 2] = ["suspicions_raised", "pre_votes_started"];
const DOWN_EVENTS: [&str; 2] = ["members_declared_down", "elections_started"];

/// How long one submit attempt may take before the client tries the next
/// node with the same id (a node cut off from its quorum holds a submit
/// until its own 10 s request timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one submit is retried (same id, next node) before it counts as
/// refused.
const SUBMIT_RETRY: Duration = Duration::from_secs(12);
/// How long a node may take to answer `/v1/health` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the drain waits with no progress before it stops.
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// Largest chunk a proxy forwards at once.
const PROXY_CHUNK_BYTES: usize = 64 * 1024;

/// One direction of a proxied connection: forwards while the link is open,
/// holds what it read while it is cut (and the FIN too).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; PROXY_CHUNK_BYTES];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if open.wait_for(|o| *o).await.is_err() {
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}

/// A proxy for the peer link `from → to` (the dialer is `from`).
async fn proxy(listener: TcpListener, target: SocketAddr, open: watch::Receiver<bool>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of descriptors, say: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut open = open.clone();
        tokio::spawn(async move {
            // A cut link opens no upstream connection: the dialer's
            // handshake times out, as behind a drop rule.
            if open.wait_for(|o| *o).await.is_err() {
                return;
            }
            let Ok(upstream) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::select! {
                _ = pipe(ir, uw, open.clone()) => {}
                _ = pipe(ur, iw, open) => {}
            }
        });
    }
}

/// Child processes, killed (`SIGKILL` also ends a stopped one) on drop.
struct Procs(BTreeMap<u64, Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The proxies' accept loops, stopped on drop (their connections end
/// when the nodes go, or when the links' senders are dropped).
struct Proxies(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Proxies {
    fn drop(&mut self) {
        for p in &self.0 {
            p.abort();
        }
    }
}

/// `n` `cohort node` processes whose peer links all go through proxies.
struct ProcCluster {
    dir: tempfile::TempDir,
    procs: Procs,
    clients: BTreeMap<u64, Client>,
    links: BTreeMap<(u64, u64), watch::Sender<bool>>,
    _proxies: Proxies,
    stopped: Vec<u64>,
}

/// Ports for `cohort node` children are taken below the kernel's ephemeral
/// range (32768 and up on Linux), which `bind(…:0)` draws from. A port
/// found with `bind(…:0)` and released for a child to bind was sometimes
/// handed straight to one of this harness's own proxies (bound with port 0
/// right after), and the child failed with "address already in use".
const CHILD_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next port [`reserve_port`] tries: shared by every cluster of this
/// process (tests run side by side), starting at a random point so two
/// processes rarely scan the same ports.
static NEXT_CHILD_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A port on 127.0.0.1 outside the ephemeral range, checked free by
/// binding it; drop the listener before anything may connect to the port.
/// No two calls in one process return the same port.
pub fn reserve_port() -> Result<std::net::TcpListener, BenchError> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::Ordering;
    let span = CHILD_PORTS.end - CHILD_PORTS.start;
    // `RandomState` is seeded from the OS per process: a random start
    // without another dependency.
    let start = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % u64::from(span);
    let _ = NEXT_CHILD_PORT.compare_exchange(0, start as u16, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let offset = NEXT_CHILD_PORT.fetch_add(1, Ordering::Relaxed) % span;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", CHILD_PORTS.start + offset)) {
            return Ok(l);
        }
    }
    Err(BenchError::Options(format!(
        "no free port on 127.0.0.1 in {CHILD_PORTS:?}"
    )))
}

impl ProcCluster {
    async fn start(s: &FaultSettings) -> Result<ProcCluster, BenchError> {
        let dir = tempfile::tempdir().map_err(BenchError::io("temp dir"))?;
        let ids: Vec<u64> = (1..=s.nodes).collect();
        let mut peer = BTreeMap::new();
        let mut http = BTreeMap::new();
        let mut reserved = BTreeMap::new();
        for &i in &ids {
            let (p, h) = (reserve_port()?, reserve_port()?);
            peer.insert(i, p.local_addr().map_err(BenchError::io("addr"))?);
            http.insert(i, h.local_addr().map_err(BenchError::io("addr"))?);
            reserved.insert(i, (p, h));
        }
        // Released before any node starts: a proxy connecting to a port
        // still held here would be queued on that listener, and the socket
        // left behind when it closes keeps the child from binding the port.
        // Nothing else takes these ports meanwhile: `bind(…:0)` never draws
        // from `CHILD_PORTS`, and this process hands each out once.
        drop(reserved);
        let mut links = BTreeMap::new();
        let mut proxies = Vec::new();
        let mut via = BTreeMap::new();
        for &from in &ids {
            for &to in ids.iter().filter(|t| **t != from) {
                let l = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(BenchError::io("bind"))?;
                via.insert((from, to), l.local_addr().map_err(BenchError::io("addr"))?);
                let (tx, rx) = watch::channel(true);
                proxies.push(tokio::spawn(proxy(l, peer[&to], rx)));
                links.insert((from, to), tx);
            }
        }
        let http_list = http
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = Procs(BTreeMap::new());
        for &i in &ids {
            let peers = ids
                .iter()
                .map(|&j| {
                    let a = if j == i { peer[&i] } else { via[&(i, j)] };
                    format!("{j}={a}")
                })
                .collect::<Vec<_>>()
                .join(",");
            let log = std::fs::File::create(dir.path().join(format!("n{i}.log")))
                .map_err(BenchError::io("node log"))?;
            let child = Command::new(&s.binary)
                .arg("node")
                .args(["--id", &i.to_string(), "--peers", &peers])
                .args(["--http", &http[&i].to_string(), "--http-peers", &http_list])
                .args(["--mode", &s.mode, "--cluster-id", "bench-faults"])
                .args(["--capacity", "64"])
                .arg("--data-dir")
                .arg(dir.path().join(format!("n{i}")))
                .arg("--history-file")
                .arg(dir.path().join(format!("history-n{i}.jsonl")))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| BenchError::Io {
                    what: format!("start {} node", s.binary.display()),
                    source: e,
                })?;
            procs.0.insert(i, child);
        }
        let clients = http
            .iter()
            .map(|(i, a)| (*i, Client::new(&a.to_string())))
            .collect();
        let c = ProcCluster {
            dir,
            procs,
            clients,
            links,
            _proxies: Proxies(proxies),
            stopped: Vec::new(),
        };
        for (i, client) in &c.clients {
            let end = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), client.health()).await
                {
                    break;
                }
                if Instant::now() > end {
                    return Err(BenchError::Options(format!(
                        "node {i} of {} did not answer /v1/health in {START_TIMEOUT:?}: {}",
                        s.binary.display(),
                        c.log_tail(*i)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(c)
    }

    fn log_tail(&self, i: u64) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("n{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// The node calling itself leader, if one does.
    async fn leader(&self) -> Option<u64> {
        for (i, c) in &self.clients {
            if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(500), c.cluster()).await {
                if v["role"] == "leader" {
                    return Some(*i);
                }
            }
        }
        None
    }

    /// Waits (up to 10 s) until a node calls itself leader or, for a mode
    /// without one, for links to come up.
    async fn settle(&self, leader_mode: bool) {
        if !leader_mode {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && self.leader().await.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every node's protocol events and executed tasks, summed.
    async fn scrape(&self) -> (BTreeMap<String, u64>, BTreeMap<u64, u64>) {
        let mut events = BTreeMap::new();
        let mut executed = BTreeMap::new();
        for (i, c) in &self.clients {
            let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(2), c.metrics()).await
            else {
                continue;
            };
            for (name, label, v) in parse_metrics(&text) {
                if name == "cohort_protocol_events_total" {
                    if let Some(e) = label_value(label, "event") {
                        *events.entry(e.to_string()).or_default() += v;
                    }
                } else if name == "cohort_tasks_executed_total" {
                    *executed.entry(*i).or_default() += v;
                }
            }
        }
        (events, executed)
    }

    fn cut(&mut self, side: &[u64]) {
        for ((a, b), tx) in &self.links {
            if side.contains(a) != side.contains(b) {
                let _ = tx.send(false);
            }
        }
    }

    fn heal(&mut self) {
        for tx in self.links.values() {
            let _ = tx.send(true);
        }
    }

    fn signal(&mut self, i: u64, stop: bool) -> Result<(), BenchError> {
        let child = self.procs.0.get(&i).ok_or_else(|| {
            BenchError::Options(format!("node {i} is not running, cannot signal it"))
        })?;
        let pid = rustix::process::Pid::from_child(child);
        let sig = if stop {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::CONT
        };
        rustix::process::kill_process(pid, sig).map_err(|e| BenchError::Io {
            what: format!("signal {sig:?} to node {i}"),
            source: e.into(),
        })?;
        if stop {
            self.stopped.push(i);
        } else {
            self.stopped.retain(|s| *s != i);
        }
        Ok(())
    }

    /// Executions per task and the first decision time (wall-clock µs) per
    /// task, from every node's audit log.
    fn audit(&self, nodes: u64) -> (BTreeMap<TaskId, u32>, BTreeMap<TaskId, u64>) {
        let mut executions: BTreeMap<TaskId, u32> = BTreeMap::new();
        let mut decided: BTreeMap<TaskId, u64> = BTreeMap::new();
        for i in 1..=nodes {
            let path = self.dir.path().join(format!("history-n{i}.jsonl"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for r in read_log(&text).0 {
                match r.event {
                    AuditEvent::Executed { task, .. } => *executions.entry(task).or_default() += 1,
                    AuditEvent::Noted(Note::Decided { task, .. }) => {
                        let e = decided.entry(task).or_insert(r.at_us);
                        *e = (*e).min(r.at_us);
                    }
                    _ => {}
                }
            }
        }
        (executions, decided)
    }

    /// Resumes any stopped node, then kills every node and proxy.
    fn stop(mut self) {
        for i in std::mem::take(&mut self.stopped) {
            let _ = self.signal(i, false);
        }
    }
}

/// `(name, labels, value)` of every counter or gauge line of a Prometheus
/// text exposition; other lines are skipped.
fn parse_metrics(text: &str) -> Vec<(&str, &str, u64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match key.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (key, ""),
        };
        out.push((name, labels, v.max(0.0) as u64));
    }
    out
}

fn label_value<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Submits with the same id to node `first`, then the next ones, each
/// attempt cut at [`ATTEMPT_TIMEOUT`], until acknowledged or
/// [`SUBMIT_RETRY`] has passed.
async fn submit(clients: &[Client], first: usize, id: TaskId) -> Result<(), CallError> {
    let body = real::body(id);
    let end = Instant::now() + SUBMIT_RETRY;
    let mut attempt = 0usize;
    loop {
        let c = &clients[(first + attempt) % clients.len()];
        let r = match tokio::time::timeout(ATTEMPT_TIMEOUT, c.submit(&body)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Transport("attempt timed out".into())),
        };
        match r {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retryable() && Instant::now() < end => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .collect()
}

/// Runs one scenario on a fresh cluster.
pub async fn run_scenario(s: &FaultSettings, scenario: Scenario) -> Result<FaultRun, BenchError> {
    if s.nodes < 3 {
        return Err(BenchError::Options(
            "fault scenarios need at least 3 nodes".into(),
        ));
    }
    let leader_mode = s.mode == "leader";
    let mut cluster = ProcCluster::start(s).await?;
    cluster.settle(leader_mode).await;
    let (events_start, _) = cluster.scrape().await;
    let clients: Vec<Client> = cluster.clients.values().cloned().collect();

    let window = Duration::from_secs_f64(s.before_s + s.fault_s + s.after_s);
    let fault_at = Duration::from_secs_f64(s.before_s);
    let heal_at = Duration::from_secs_f64(s.before_s + s.fault_s);
    let count = (s.rate * window.as_secs_f64()).round().max(1.0) as usize;
    let acks: Arc<Mutex<Vec<(TaskId, u64, u64)>>> = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let start_us = wall_clock_us();
    let mut victims: Vec<u64> = Vec::new();
    let mut leader_hit = false;
    let (mut faulted, mut healed) = (false, false);
    let mut joins = Vec::with_capacity(count);
    for i in 0..count {
        let offset = window.mul_f64(i as f64 / count as f64);
        if !faulted && offset >= fault_at {
            faulted = true;
            // The leader, or (no leader) the node that ran most tasks.
            let (_, executed) = cluster.scrape().await;
            let busiest = executed
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or(1, |(i, _)| *i);
            let leader = if leader_mode {
                cluster.leader().await.unwrap_or(busiest)
            } else {
                busiest
            };
            victims = match scenario {
                Scenario::PartitionOne => {
                    vec![(1..=s.nodes).rev().find(|n| *n != leader).unwrap_or(1)]
                }
                Scenario::PartitionMinorityWithLeader => {
                    let mut v = vec![leader];
                    v.extend(
                        (1..=s.nodes)
                            .rev()
                            .filter(|n| *n != leader)
                            .take((s.nodes / 2 - 1) as usize),
                    );
                    v
                }
                Scenario::SlowNode => vec![leader],
            };
            leader_hit = victims.contains(&leader);
            match scenario {
                Scenario::SlowNode => cluster.signal(leader, true)?,
                _ => cluster.cut(&victims),
            }
        }
        if faulted && !healed && offset >= heal_at {
            healed = true;
            match scenario {
                Scenario::SlowNode => {
                    for v in victims.clone() {
                        cluster.signal(v, false)?;
                    }
                }
                _ => cluster.heal(),
            }
        }
        let due = start + offset;
        tokio::time::sleep_until(due.into()).await;
        let due_us = start_us + offset.as_micros() as u64;
        let clients = clients.clone();
        let (acks, refused) = (acks.clone(), refused.clone());
        joins.push(tokio::spawn(async move {
            let id = real::next_task();
            match submit(&clients, i, id).await {
                Ok(()) => acks
                    .lock()
                    .expect("acks lock")
                    .push((id, due_us, wall_clock_us())),
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    if faulted && !healed {
        match scenario {
            Scenario::SlowNode => {
                for v in victims.clone() {
                    cluster.signal(v, false)?;
                }
            }
            _ => cluster.heal(),
        }
    }
    for j in joins {
        let _ = j.await;
    }
    let acks = std::mem::take(&mut *acks.lock().expect("acks lock"));

    // Drain: until every acknowledged task is decided somewhere, or no
    // progress for DRAIN_QUIET.
    let mut last = (0usize, Instant::now());
    let (executions, decided) = loop {
        let (executions, decided) = cluster.audit(s.nodes);
        let done = acks.iter().filter(|a| decided.contains_key(&a.0)).count();
        if done == acks.len() {
            break (executions, decided);
        }
        if done > last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > DRAIN_QUIET {
            break (executions, decided);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (events_end, _) = cluster.scrape().await;
    let undecided: Vec<TaskId> = acks
        .iter()
        .map(|a| a.0)
        .filter(|id| !decided.contains_key(id))
        .collect();
    let mut lost = 0;
    for id in &undecided {
        // Linearizable read at every node until one answers.
        for c in &clients {
            match tokio::time::timeout(Duration::from_secs(2), c.get(&id.to_string(), false, None))
                .await
            {
                Ok(Ok(_)) => break,
                Ok(Err(CallError::Api { code, .. })) if code == "not_found" => {
                    lost += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    cluster.stop();

    let fault_from = start_us + fault_at.as_micros() as u64;
    let heal_from = start_us + heal_at.as_micros() as u64;
    let (mut before, mut during, mut after) =
        (real::histogram(), real::histogram(), real::histogram());
    for (_, due, at) in &acks {
        let h = if *due < fault_from {
            &mut before
        } else if *due < heal_from {
            &mut during
        } else {
            &mut after
        };
        h.saturating_record(at.saturating_sub(*due).max(1));
    }
    let bins = (window.as_millis() as u64 / real::BIN_MS + 1) as usize;
    let mut completions_per_bin = vec![0u64; bins];
    for at in decided.values() {
        if let Some(c) = at
            .checked_sub(start_us)
            .and_then(|d| completions_per_bin.get_mut((d / 1000 / real::BIN_MS) as usize))
        {
            *c += 1;
        }
    }
    let events = delta(&events_end, &events_start);
    let sum = |names: &[&str]| names.iter().filter_map(|n| events.get(*n)).sum();
    Ok(FaultRun {
        scenario,
        nodes: s.nodes,
        victims,
        leader_hit,
        fault_at_s: s.before_s,
        fault_s: s.fault_s,
        offered_per_s: s.rate,
        ack_before: real::percentiles(&before),
        ack_during: real::percentiles(&during),
        ack_after: real::percentiles(&after),
        suspicions: sum(&SUSPICION_EVENTS),
        declared_down: sum(&DOWN_EVENTS),
        events,
        tasks_rerun: executions.values().filter(|n| **n > 1).count() as u64,
        acked: acks.len() as u64,
        refused: refused.load(Ordering::Relaxed),
        unfinished: undecided.len() as u64,
        lost,
        completions_per_bin,
    })
}

/// Why the fault scenarios cannot run with `binary`, if they cannot.
pub fn skip_reason(binary: Option<&Path>) -> Option<String> {
    match binary {
        None => Some("no `cohort` binary given to run nodes as processes".into()),
        Some(b) if !b.is_file() => Some(format!("{} is not a file", b.display())),
        Some(_) => None,
    }
}
