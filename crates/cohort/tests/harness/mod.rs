//! A fault-test harness for real `cohort node` processes.
//!
//! Each node runs in its own network namespace (`cohort-<pid>-<tag>-n<i>`),
//! joined by veth pairs to a bridge that lives in a namespace of its own
//! (`...-br`), addresses `10.77.0.<i>/24`. The client workload runs on a
//! thread that entered one more namespace (`...-cl`, `10.77.0.200`), so
//! nothing is added to the host's network. Faults are real: `kill -9` and a
//! restart from the data dir, `SIGSTOP`/`SIGCONT`, and partitions as nft drop
//! rules inside the cut-off nodes' namespaces (peer traffic only: clients
//! still reach every node, as in the simulator).
//!
//! The workload records every submit, ack, refusal and read in a
//! [`History`]; each node writes its executions, completions and notes to
//! its `--history-file`; [`check`] merges them by wall-clock time (one
//! machine, one clock) and runs the simulator's checkers G1–G5 on the result.
//!
//! Processes are killed and namespaces deleted on drop, panics included;
//! namespaces left behind by a harness process that no longer runs are
//! removed when a cluster starts.
#![allow(clippy::disallowed_methods, clippy::disallowed_types, dead_code)]

use cohort_core::{ClientError, Epoch, NodeId, Task, TaskId, TaskState, Time};
use cohort_runtime::audit::{read_log, wall_clock_us, AuditEvent, AuditRecord};
use cohort_runtime::client::{CallError, Client, TaskView};
use cohort_runtime::http::SubmitBody;
use cohort_sim::checkers::{check_all, Violation, Violations};
use cohort_sim::history::{History, HistoryEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cohort");

/// When set (CI on the project's machines), a missing root / `ip` / `nft`
/// fails the test instead of skipping it.
pub const REQUIRED_ENV: &str = "COHORT_FAULT_TESTS_REQUIRED";

const PEER_PORT: u16 = 7000;
const HTTP_PORT: u16 = 8000;
const CLIENT_HOST: u8 = 200;
/// How long one client request may take before the client treats its
/// outcome as unknown and tries elsewhere.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a submit is retried (same id) before the client gives up; G4
/// then reports it as never acknowledged.
const SUBMIT_GIVE_UP: Duration = Duration::from_secs(45);
/// Most violations of each guarantee printed.
const VIOLATIONS_SHOWN_MAX: usize = 20;

fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, i as u8)
}

/// Why this machine cannot run the namespace tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            _ => return Some(format!("`{tool}` is not installed or does not run")),
        }
    }
    None
}

/// Prints why a test is skipped, or panics when [`REQUIRED_ENV`] says it must run.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os(REQUIRED_ENV).is_some() {
        panic!("{test} cannot run here ({why}), but {REQUIRED_ENV} is set");
    }
    eprintln!("SKIPPED {test}: {why}");
}

fn run_cmd(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{cmd:?} did not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    run_cmd(Command::new("ip").args(args))
}

fn nft_in(ns: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Deletes namespaces `cohort-<pid>-...` of harness processes that are gone
/// (and kills what still runs inside them).
fn remove_leftovers() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("cohort-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", name]) {
            for p in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .filter_map(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
}

/// The namespaces, bridge and veth pairs of one cluster.
struct Net {
    prefix: String,
    nodes: usize,
    created: Vec<String>,
    cut: BTreeSet<usize>,
}

impl Net {
    fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    fn client_ns(&self) -> String {
        format!("{}-cl", self.prefix)
    }

    fn build(prefix: String, nodes: usize) -> Result<Net, String> {
        let mut net = Net {
            prefix,
            nodes,
            created: Vec::new(),
            cut: BTreeSet::new(),
        };
        let br = format!("{}-br", net.prefix);
        ip(&["netns", "add", &br])?;
        net.created.push(br.clone());
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut hosts: Vec<(String, u8)> = (1..=nodes).map(|i| (net.node_ns(i), i as u8)).collect();
        hosts.push((net.client_ns(), CLIENT_HOST));
        for (ns, host) in hosts {
            ip(&["netns", "add", &ns])?;
            net.created.push(ns.clone());
            let side = format!("v{host}");
            ip(&[
                "-n", &br, "link", "add", &side, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &side, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.0.{host}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// Cuts the nodes of `side` off from every node outside it (both ways).
    fn partition(&mut self, side: &[usize]) -> Result<(), String> {
        let others: Vec<String> = (1..=self.nodes)
            .filter(|i| !side.contains(i))
            .map(|i| node_ip(i).to_string())
            .collect();
        let set = others.join(", ");
        for &i in side {
            let script = format!(
                "table inet cohort_partition {{\n\
                 chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
                 chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            nft_in(&self.node_ns(i), &script)?;
            self.cut.insert(i);
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), String> {
        for i in std::mem::take(&mut self.cut) {
            nft_in(&self.node_ns(i), "delete table inet cohort_partition\n")?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A thread inside the client namespace running a tokio runtime: every
/// future handed to it runs (and opens its sockets) there.
pub struct ClientNs {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientNs {
    /// A client runtime in the host's own network namespace (for nodes in
    /// Docker containers, reachable through Docker's bridge).
    pub fn host() -> ClientNs {
        ClientNs::start(None).expect("a client thread")
    }

    fn enter(ns: &str) -> Result<ClientNs, String> {
        ClientNs::start(Some(format!("/run/netns/{ns}")))
    }

    fn start(path: Option<String>) -> Result<ClientNs, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Some(path) = path {
                let entered = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"));
                // setns changes only this thread's network namespace.
                let entered = entered.and_then(|f| {
                    rustix::thread::move_into_link_name_space(
                        f.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| format!("setns {path}: {e}"))
                });
                if let Err(e) = entered {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let _ = tx.send(Ok((rt.handle().clone(), stop_tx)));
            rt.block_on(async move {
                let _ = stop_rx.await;
            });
        });
        let (handle, stop) = rx.recv().map_err(|_| "client thread died".to_string())??;
        Ok(ClientNs {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `fut` in the client namespace and waits for it.
    pub fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        self.spawn(fut).recv().expect("client runtime stopped")
    }

    /// Starts `fut` in the client namespace; its result arrives on the receiver.
    pub fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> std::sync::mpsc::Receiver<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// N `cohort node` processes, each in its own namespace.
pub struct Cluster {
    pub mode: String,
    pub n: usize,
    procs: Vec<Option<Child>>,
    paused: BTreeSet<usize>,
    /// Dropped before the namespaces go.
    pub client: ClientNs,
    net: Net,
    dir: tempfile::TempDir,
    /// Wall-clock µs at which the harness started: `Time` zero of the history.
    pub start_us: u64,
    /// The faults injected, with their times, for the report.
    pub log: Vec<(Time, String)>,
}

impl Cluster {
    /// Builds the network and starts `n` nodes of `mode`. `tag` tells the
    /// tests of one process apart in namespace names.
    pub fn start(mode: &str, tag: &str, n: usize) -> Result<Cluster, String> {
        remove_leftovers();
        let start_us = wall_clock_us();
        let prefix = format!("cohort-{}-{tag}", std::process::id());
        let net = Net::build(prefix, n)?;
        let client = ClientNs::enter(&net.client_ns())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut c = Cluster {
            mode: mode.into(),
            n,
            procs: (0..n).map(|_| None).collect(),
            paused: BTreeSet::new(),
            client,
            net,
            dir,
            start_us,
            log: Vec::new(),
        };
        for i in 1..=n {
            c.spawn_node(i)?;
        }
        for i in 1..=n {
            c.wait_healthy(i);
        }
        Ok(c)
    }

    pub fn now(&self) -> Time {
        Time(wall_clock_us().saturating_sub(self.start_us))
    }

    fn note(&mut self, what: String) {
        let at = self.now();
        eprintln!("[{at}] {what}");
        self.log.push((at, what));
    }

    pub fn http(&self, i: usize) -> SocketAddr {
        SocketAddr::from((node_ip(i), HTTP_PORT))
    }

    fn history_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("history-n{i}.jsonl"))
    }

    fn log_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}.log"))
    }

    fn spawn_node(&mut self, i: usize) -> Result<(), String> {
        let list = |port: u16| {
            (1..=self.n)
                .map(|j| format!("{j}={}:{port}", node_ip(j)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(i))
            .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.node_ns(i), BIN, "node"])
            .args(["--id", &i.to_string(), "--peers", &list(PEER_PORT)])
            .args(["--http", &self.http(i).to_string()])
            .args(["--http-peers", &list(HTTP_PORT)])
            .args(["--mode", &self.mode, "--cluster-id", "faults"])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("n{i}")))
            .arg("--history-file")
            .arg(self.history_file(i))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start node {i}: {e}"))?;
        self.procs[i - 1] = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers `/v1/health`.
    pub fn wait_healthy(&self, i: usize) {
        let client = Client::new(&self.http(i).to_string());
        let ok = self.client.run(async move {
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if let Ok(Ok(_)) = tokio::time::timeout(REQUEST_TIMEOUT, client.health()).await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        });
        assert!(ok, "node {i} never became healthy\n{}", self.log_tail(i));
    }

    /// The node that calls itself leader, among nodes running, not paused
    /// and not cut off; waits up to 20 s for one.
    pub fn leader(&self) -> usize {
        let candidates: Vec<(usize, Client)> = (1..=self.n)
            .filter(|i| {
                self.procs[i - 1].is_some() && !self.paused.contains(i) && !self.net.cut.contains(i)
            })
            .map(|i| (i, Client::new(&self.http(i).to_string())))
            .collect();
        let found = self.client.run(async move {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                for (i, c) in &candidates {
                    if let Ok(Ok(v)) = tokio::time::timeout(REQUEST_TIMEOUT, c.cluster()).await {
                        if v["role"] == "leader" {
                            return Some(*i);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        });
        found.expect("no node calls itself leader")
    }

    /// `kill -9` node `i`.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.procs[i - 1].take().expect("node running");
        child.kill().expect("kill -9");
        let _ = child.wait();
        self.paused.remove(&i);
        self.note(format!("kill -9 n{i}"));
    }

    /// Restarts node `i` from its data dir and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.spawn_node(i).expect("restart");
        self.note(format!("restart n{i}"));
        self.wait_healthy(i);
    }

    fn signal(&self, i: usize, sig: rustix::process::Signal) {
        let child = self.procs[i - 1].as_ref().expect("node running");
        rustix::process::kill_process(rustix::process::Pid::from_child(child), sig)
            .unwrap_or_else(|e| panic!("signal {sig:?} to n{i}: {e}"));
    }

    /// `SIGSTOP` node `i`.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, rustix::process::Signal::STOP);
        self.paused.insert(i);
        self.note(format!("SIGSTOP n{i}"));
    }

    /// `SIGCONT` node `i`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, rustix::process::Signal::CONT);
        self.paused.remove(&i);
        self.note(format!("SIGCONT n{i}"));
    }

    /// Cuts `side` off from the other nodes.
    pub fn partition(&mut self, side: &[usize]) {
        self.net.partition(side).expect("partition");
        self.note(format!("partition {side:?} from the rest"));
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.net.heal().expect("heal");
        self.note("heal".into());
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_file(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("--- n{i} log (tail) ---\n{}", lines[from..].join("\n"))
    }

    /// Every node's audit records and how many lines could not be read.
    pub fn audit(&self) -> (Vec<AuditRecord>, usize) {
        let paths: Vec<PathBuf> = (1..=self.n).map(|i| self.history_file(i)).collect();
        read_audit_files(&paths)
    }

    /// Starts the client workload in the client namespace.
    pub fn start_workload(&self, submitters: usize) -> Running {
        let https: Vec<SocketAddr> = (1..=self.n).map(|i| self.http(i)).collect();
        start_workload(&self.client, &https, self.start_us, submitters)
    }

    /// Stops submitting, drains (see [`stop_and_drain`]) and checks the
    /// merged history.
    pub fn finish_workload(&mut self, w: Running, drain: Duration) -> Report {
        self.note("stopping the workload; draining".into());
        let client_events = stop_and_drain(&self.client, w, drain);
        let end = self.now();
        self.note("drained".into());
        let (audit, bad_lines) = self.audit();
        report(
            self.start_us,
            client_events,
            &audit,
            bad_lines,
            end,
            (1..=self.n).map(|i| self.log_tail(i)).collect(),
            self.log.clone(),
        )
    }
}

/// Starts `submitters` clients of the nodes at `https` on `client`'s runtime.
pub fn start_workload(
    client: &ClientNs,
    https: &[SocketAddr],
    start_us: u64,
    submitters: usize,
) -> Running {
    let ctx = Arc::new(Ctx {
        clients: https
            .iter()
            .enumerate()
            .map(|(i, a)| (NodeId(i as u64 + 1), Client::new(&a.to_string())))
            .collect(),
        start_us,
        events: Mutex::new(Vec::new()),
        acked: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        seed: AtomicU64::new(start_us ^ 0x9e37_79b9_7f4a_7c15),
    });
    let mut done = Vec::new();
    for k in 0..submitters {
        done.push(client.spawn(submitter(ctx.clone(), k)));
    }
    Running { ctx, done }
}

/// Stops submitting, waits for the submitters, reads every acknowledged
/// task until it is final (up to `drain`) and each once more at another
/// node; returns what the clients recorded.
pub fn stop_and_drain(client: &ClientNs, w: Running, drain: Duration) -> Vec<ClientEvent> {
    w.ctx.stop.store(true, Ordering::Relaxed);
    for d in w.done {
        d.recv().expect("a submitter finished");
    }
    client.run(drain_reads(w.ctx.clone(), drain));
    std::mem::take(&mut *w.ctx.events.lock().unwrap())
}

/// Reads audit logs: every record and how many lines could not be read.
pub fn read_audit_files(paths: &[PathBuf]) -> (Vec<AuditRecord>, usize) {
    let mut all = Vec::new();
    let mut bad = 0;
    for p in paths {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let (recs, b) = read_log(&text);
        all.extend(recs);
        bad += b;
    }
    (all, bad)
}

/// Checks a run and bundles what a failure should show.
pub fn report(
    start_us: u64,
    client_events: Vec<ClientEvent>,
    audit: &[AuditRecord],
    bad_lines: usize,
    end: Time,
    logs: Vec<String>,
    faults: Vec<(Time, String)>,
) -> Report {
    let (history, violations, count) = check(start_us, client_events, audit, end);
    Report {
        history,
        violations,
        count,
        audit_records: audit.len(),
        bad_lines,
        logs,
        faults,
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            // SIGKILL also ends a stopped process.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A client-side fact, stamped with wall-clock µs.
pub type ClientEvent = (u64, HistoryEvent);

/// Shared by the workload's tasks.
pub struct Ctx {
    clients: Vec<(NodeId, Client)>,
    start_us: u64,
    events: Mutex<Vec<ClientEvent>>,
    acked: Mutex<Vec<TaskId>>,
    stop: AtomicBool,
    seed: AtomicU64,
}

impl Ctx {
    fn record(&self, at_us: u64, event: HistoryEvent) {
        self.events.lock().unwrap().push((at_us, event));
    }

    /// A draw from a shared splitmix64 stream (ids, kinds, node choice).
    fn draw(&self) -> u64 {
        let mut z = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A running workload.
pub struct Running {
    ctx: Arc<Ctx>,
    done: Vec<std::sync::mpsc::Receiver<()>>,
}

impl Running {
    /// How many tasks were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.ctx.acked.lock().unwrap().len()
    }
}

/// The client's view of an API error, where the history has a name for it.
fn client_error(e: &CallError, id: TaskId) -> Option<ClientError> {
    let CallError::Api { code, message, .. } = e else {
        return None;
    };
    match code.as_str() {
        "not_found" => Some(ClientError::NotFound { id }),
        "id_conflict" => Some(ClientError::IdConflict { id }),
        "invalid_task" | "malformed" | "unknown_kind" | "payload_too_large" => {
            Some(ClientError::InvalidTask {
                reason: message.clone(),
            })
        }
        _ => None,
    }
}

/// A task as the API reports it, as the core's state.
pub fn view_to_state(v: &TaskView) -> Result<TaskState, String> {
    use base64::Engine;
    let node = || v.node.map(NodeId).ok_or("no node");
    let epoch = || v.epoch.map(Epoch).ok_or("no epoch");
    Ok(match v.state.as_str() {
        "pending" => TaskState::Pending,
        "running" => TaskState::Running {
            node: node()?,
            epoch: epoch()?,
        },
        "succeeded" => TaskState::Succeeded {
            result: base64::engine::general_purpose::STANDARD
                .decode(v.result_base64.as_deref().ok_or("no result")?)
                .map_err(|e| e.to_string())?,
            node: node()?,
            epoch: epoch()?,
        },
        "failed" => TaskState::Failed {
            error: v.error.clone().unwrap_or_default(),
            attempts: v.attempts.unwrap_or(0),
        },
        "cancelled" => TaskState::Cancelled,
        other => return Err(format!("unknown state {other:?}")),
    })
}

/// Submits tasks one after another until told to stop.
async fn submitter(ctx: Arc<Ctx>, k: usize) {
    while !ctx.stop.load(Ordering::Relaxed) {
        let id = TaskId((u128::from(ctx.draw()) << 64) | u128::from(ctx.draw()));
        let r = ctx.draw();
        // Sleeps keep tasks running while faults strike; echoes are quick.
        let (kind, payload) = if r.is_multiple_of(3) {
            ("echo", format!("echo {id} from client {k}"))
        } else {
            ("sleep", format!("{{\"ms\":{}}}", 20 + (r >> 8) % 280))
        };
        let task = Task {
            kind: kind.into(),
            payload: payload.clone().into_bytes(),
            timeout_ms: 10_000,
            max_attempts: 5,
            not_before: cohort_core::Time::ZERO,
            retry: cohort_core::RetryPolicy::default(),
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        };
        submit(&ctx, id, task).await;
        // A read of an earlier task during the faults (G1, G2, G5).
        let earlier = {
            let acked = ctx.acked.lock().unwrap();
            (!acked.is_empty()).then(|| acked[(ctx.draw() % acked.len() as u64) as usize])
        };
        if let Some(t) = earlier {
            let node = (ctx.draw() % ctx.clients.len() as u64) as usize;
            read(&ctx, t, node, None).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Submits `task` under `id` until it is acknowledged or refused for good,
/// retrying the same id elsewhere on errors that leave the outcome open.
async fn submit(ctx: &Ctx, id: TaskId, task: Task) {
    let first = wall_clock_us();
    ctx.record(
        first,
        HistoryEvent::Submitted {
            task: id,
            content: task.clone(),
        },
    );
    let body = SubmitBody {
        id: Some(id.to_string()),
        kind: task.kind.clone(),
        payload: Some(String::from_utf8(task.payload.clone()).expect("UTF-8 payloads")),
        payload_base64: None,
        timeout_ms: Some(task.timeout_ms),
        max_attempts: Some(task.max_attempts),
        not_before_ms: None,
        retry: None,
        schedule_to_start_ms: None,
        priority: None,
        heartbeat_timeout_ms: None,
        labels: None,
        limit: None,
        lease_grace_ms: None,
    };
    let give_up = Instant::now() + SUBMIT_GIVE_UP;
    let mut node = (ctx.draw() % ctx.clients.len() as u64) as usize;
    while Instant::now() < give_up {
        let (nid, client) = &ctx.clients[node];
        match tokio::time::timeout(REQUEST_TIMEOUT, client.submit(&body)).await {
            Ok(Ok(_)) => {
                ctx.record(
                    wall_clock_us(),
                    HistoryEvent::Acked {
                        task: id,
                        node: *nid,
                        content: task,
                    },
                );
                ctx.acked.lock().unwrap().push(id);
                return;
            }
            Ok(Err(e)) if !e.is_retryable() => {
                let error = client_error(&e, id).unwrap_or(ClientError::InvalidTask {
                    reason: e.to_string(),
                });
                ctx.record(
                    wall_clock_us(),
                    HistoryEvent::SubmitRefused {
                        task: id,
                        node: *nid,
                        error,
                    },
                );
                return;
            }
            // Retryable, a transport error or a timeout: unknown outcome,
            // so the same id again, at the next node.
            _ => {
                node = (node + 1) % ctx.clients.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One linearizable read of `task` at node index `node`, recorded when it
/// got an answer the history can hold.
async fn read(ctx: &Ctx, task: TaskId, node: usize, wait: Option<Duration>) -> Option<TaskState> {
    let (nid, client) = &ctx.clients[node];
    let sent = wall_clock_us();
    let limit = REQUEST_TIMEOUT + wait.unwrap_or_default();
    let r = tokio::time::timeout(limit, client.get(&task.to_string(), false, wait)).await;
    let result = match r {
        Ok(Ok(view)) => match view_to_state(&view) {
            Ok(s) => Ok(s),
            Err(e) => panic!("node {nid} answered a task the client cannot read: {e}: {view:?}"),
        },
        Ok(Err(e)) => match client_error(&e, task) {
            Some(ce) => Err(ce),
            None => return None,
        },
        Err(_) => return None,
    };
    let at = wall_clock_us();
    let state = result.as_ref().ok().cloned();
    ctx.record(
        at,
        HistoryEvent::Read {
            task,
            node: *nid,
            sent_at: Time(sent.saturating_sub(ctx.start_us)),
            result,
        },
    );
    state
}

/// Reads every acknowledged task until it is final or `limit` passed, then
/// once more at the next node.
async fn drain_reads(ctx: Arc<Ctx>, limit: Duration) {
    const READERS: usize = 8;
    let tasks: Vec<TaskId> = ctx.acked.lock().unwrap().clone();
    let end = Instant::now() + limit;
    let mut joins = Vec::new();
    for r in 0..READERS {
        let mine: Vec<TaskId> = tasks.iter().copied().skip(r).step_by(READERS).collect();
        let ctx = ctx.clone();
        joins.push(tokio::spawn(async move {
            for (j, t) in mine.into_iter().enumerate() {
                let mut node = (r + j) % ctx.clients.len();
                while Instant::now() < end {
                    let s = read(&ctx, t, node, Some(Duration::from_secs(2))).await;
                    if s.is_some_and(|s| s.is_final()) {
                        node = (node + 1) % ctx.clients.len();
                        read(&ctx, t, node, None).await;
                        break;
                    }
                    node = (node + 1) % ctx.clients.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for j in joins {
        j.await.expect("a reader finished");
    }
}

/// Merges client events and node audit records (stamped in wall-clock µs)
/// into one history ordered by time, and runs the checkers G1–G5 as of `end`.
/// Returns the history, the violations kept and how many there were.
pub fn check(
    start_us: u64,
    client: Vec<ClientEvent>,
    audit: &[AuditRecord],
    end: Time,
) -> (History, Vec<Violation>, u64) {
    let mut all: Vec<(u64, HistoryEvent)> = client;
    for r in audit {
        let event = match &r.event {
            AuditEvent::Executed { task, epoch } => HistoryEvent::Executed {
                node: r.node,
                task: *task,
                epoch: *epoch,
            },
            AuditEvent::Completed {
                task,
                epoch,
                outcome,
            } => HistoryEvent::Completed {
                node: r.node,
                task: *task,
                epoch: *epoch,
                outcome: outcome.clone(),
            },
            AuditEvent::Noted(note) => HistoryEvent::Noted {
                node: r.node,
                note: note.clone(),
            },
        };
        all.push((r.at_us, event));
    }
    // Stable: facts of one source with the same stamp keep their order.
    all.sort_by_key(|(at, _)| *at);
    let mut history = History::new();
    for (at, e) in all {
        history.push(Time(at.saturating_sub(start_us)), e);
    }
    let mut v = Violations::new(VIOLATIONS_SHOWN_MAX);
    check_all(&history, end, true, &mut v);
    let count = v.count();
    (history, v.into_kept(), count)
}

/// What a finished run found.
pub struct Report {
    pub history: History,
    pub violations: Vec<Violation>,
    pub count: u64,
    pub audit_records: usize,
    pub bad_lines: usize,
    pub logs: Vec<String>,
    pub faults: Vec<(Time, String)>,
}

impl Report {
    /// Tasks submitted, acknowledged, and read final.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut sub = BTreeSet::new();
        let mut ack = BTreeSet::new();
        let mut fin = BTreeSet::new();
        for r in &self.history.records {
            match &r.event {
                HistoryEvent::Submitted { task, .. } => {
                    sub.insert(*task);
                }
                HistoryEvent::Acked { task, .. } => {
                    ack.insert(*task);
                }
                HistoryEvent::Read {
                    task,
                    result: Ok(s),
                    ..
                } if s.is_final() => {
                    fin.insert(*task);
                }
                _ => {}
            }
        }
        (sub.len(), ack.len(), fin.len())
    }

    /// How many history records of each kind node audit logs gave.
    pub fn node_facts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for r in &self.history.records {
            let k = match &r.event {
                HistoryEvent::Executed { .. } => "executed",
                HistoryEvent::Completed { .. } => "completed",
                HistoryEvent::Noted { .. } => "noted",
                _ => continue,
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }

    /// Panics with every violation, the faults and the node logs, unless
    /// the run is clean.
    pub fn assert_clean(&self, what: &str) {
        let (sub, ack, fin) = self.counts();
        let facts = self.node_facts();
        eprintln!(
            "{what}: {sub} submitted, {ack} acknowledged, {fin} read final; node facts {facts:?}; \
             {} audit records ({} unreadable lines); {} violations",
            self.audit_records, self.bad_lines, self.count
        );
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(t, f)| format!("  {t}: {f}"))
            .collect();
        if self.count > 0 {
            let shown: Vec<String> = self.violations.iter().map(|v| format!("  {v}")).collect();
            panic!(
                "{what}: {} violations:\n{}\nfaults:\n{}\n{}",
                self.count,
                shown.join("\n"),
                faults.join("\n"),
                self.logs.join("\n")
            );
        }
        assert!(ack > 0, "{what}: no task was acknowledged");
        assert!(
            facts.get("executed").copied().unwrap_or(0) > 0
                && facts.get("noted").copied().unwrap_or(0) > 0,
            "{what}: the nodes' audit logs recorded no executions or notes: {facts:?}"
        );
    }
}
