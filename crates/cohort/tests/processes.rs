//! Real `cohort` processes on loopback: HTTP, the CLI, kill -9, SIGTERM,
//! restart from the data dir, and a refused foreign data file.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cohort");

/// Kills every child it holds when dropped.
struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port for a child to bind: below the ephemeral range and never the
/// same twice in this process, so neither another test's port nor a
/// `bind(…:0)` can take it between our check and the child's bind.
fn free_port() -> u16 {
    cohort_bench::faults::reserve_port()
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

struct Layout {
    peers: String,
    http_peers: String,
    http: Vec<String>,
}

fn layout(n: usize) -> Layout {
    let peer: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let join = |ports: &[u16]| {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    };
    Layout {
        peers: join(&peer),
        http_peers: join(&http),
        http: http.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
    }
}

fn spawn_node(l: &Layout, id: usize, dir: &Path, cluster: &str) -> Child {
    spawn_mode(l, id, dir, cluster, &["--mode", "static"])
}

/// A node of `l` started with `extra` flags (the mode among them).
fn spawn_mode(l: &Layout, id: usize, dir: &Path, cluster: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["node", "--id", &id.to_string(), "--peers", &l.peers])
        .args(["--http", &l.http[id - 1], "--http-peers", &l.http_peers])
        .args(["--cluster-id", cluster])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn wait_healthy(http: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let out = cli(&["members", "--node", http]);
        if out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("node at {http} never became healthy");
}

/// `cohort submit` of an echo task, waiting up to 15 s for its outcome.
fn submit_echo(http: &str, payload: &str) -> std::process::Output {
    cli(&[
        "submit",
        "--node",
        http,
        "--kind",
        "echo",
        "--payload",
        payload,
        "--wait",
        "15s",
    ])
}

fn submit_and_wait(http: &str, payload: &str) -> serde_json::Value {
    let out = submit_echo(http, payload);
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn three_processes_survive_a_killed_worker_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(3);
    let mut procs = Procs(Vec::new());
    for id in 1..=3 {
        procs
            .0
            .push(Some(spawn_node(&l, id, dir.path(), "proc-test")));
    }
    for h in &l.http {
        wait_healthy(h);
    }
    // Through a worker: it redirects to the coordinator.
    let t = submit_and_wait(&l.http[1], "first");
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["result"], "first");
    // A delayed task with a retry policy from the CLI: its handler refuses
    // the payload (`invalid_payload: ...`), a class named non-retryable, so
    // it fails on its first attempt of four.
    let policy = |class: &str| {
        cli(&[
            "submit",
            "--node",
            &l.http[0],
            "--kind",
            "sleep",
            "--payload",
            "not a duration",
            "--max-attempts",
            "4",
            "--delay",
            "200ms",
            "--backoff-initial-ms",
            "50",
            "--non-retryable",
            class,
            "--wait",
            "15s",
        ])
    };
    let out = policy("invalid_payload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (t["state"].as_str(), t["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{t}"
    );
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_payload: "),
        "{t}"
    );
    let out = policy("Not A Class");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("non_retryable"), "{err}");
    let members = cli(&["members", "--node", &l.http[0]]);
    let text = String::from_utf8_lossy(&members.stdout);
    for n in ["n1", "n2", "n3"] {
        assert!(text.contains(n), "{text}");
    }
    // n1 coordinates: it lists the workers it places tasks on, all live.
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("workers as n1"))
        .skip(2)
        .collect();
    assert_eq!(listed.len(), 3, "{text}");
    for (line, n) in listed.iter().zip(["n1", "n2", "n3"]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[..2], [n, "yes"], "{text}");
    }
    // The static mode has no ring: a typed refusal, non-zero exit.
    let ring = cli(&["ring", "--node", &l.http[0]]);
    assert!(!ring.status.success());
    let err = String::from_utf8_lossy(&ring.stderr);
    assert!(err.contains("not_supported"), "{err}");

    // kill -9 a worker; the cluster keeps running tasks.
    let mut n3 = procs.0[2].take().unwrap();
    n3.kill().unwrap();
    n3.wait().unwrap();
    for i in 0..5 {
        let t = submit_and_wait(&l.http[0], &format!("after-kill-{i}"));
        assert_eq!(t["state"], "succeeded", "{t}");
    }

    // The killed worker restarts from its data dir and rejoins.
    procs.0[2] = Some(spawn_node(&l, 3, dir.path(), "proc-test"));
    wait_healthy(&l.http[2]);

    // SIGTERM: a graceful stop, exit status 0.
    let n2 = procs.0[1].take().unwrap();
    let pid = n2.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = n2.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("shutting down"));
    drop(procs);

    // Node 1's file belongs to cluster proc-test: another cluster id is refused.
    let out = Command::new(BIN)
        .args([
            "node", "--id", "1", "--peers", &l.peers, "--http", &l.http[0],
        ])
        .args(["--cluster-id", "someone-else"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node-1.redb"), "{err}");
    assert!(err.contains("proc-test"), "{err}");
}

#[test]
fn demo_runs_every_mode_and_prints_the_table() {
    let out = cli(&[
        "demo",
        "--tasks",
        "60",
        "--duration",
        "1s",
        "--task-ms",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "tasks submitted",
        "acknowledged",
        "LOST",
        "run more than once",
        "latency p50 / p99",
        "longest stall after kill 1",
        "busiest node's share",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    assert!(stdout.contains("static"), "{stdout}");
}

fn submit_id(http: &str, kind: &str, payload: &str) -> String {
    let out = cli(&[
        "submit",
        "--node",
        http,
        "--kind",
        kind,
        "--payload",
        payload,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn get_task(http: &str, id: &str) -> serde_json::Value {
    let out = cli(&["get", "--node", http, id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `cohort get ID --events`: the task, its history and its body.
fn get_events(http: &str, id: &str) -> serde_json::Value {
    let out = cli(&["get", "--node", http, id, "--events"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_paused_worker_is_declared_dead_and_its_late_result_is_fenced_off() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(3);
    let mut procs = Procs(Vec::new());
    for id in 1..=3 {
        procs
            .0
            .push(Some(spawn_node(&l, id, dir.path(), "pause-test")));
    }
    for h in &l.http {
        wait_healthy(h);
    }
    let n1 = &l.http[0];
    // Find a task running on a worker other than the coordinator (n1).
    let deadline = Instant::now() + Duration::from_secs(20);
    let (target, runner, first_epoch) = loop {
        assert!(Instant::now() < deadline, "no task ever ran on a worker");
        let id = submit_id(n1, "sleep", "1500");
        let t = get_task(n1, &id);
        match (t["state"].as_str(), t["node"].as_u64()) {
            (Some("running"), Some(node)) if node != 1 => {
                break (id, node, t["epoch"].as_u64().unwrap());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let paused = procs.0[runner as usize - 1].as_ref().unwrap();
    signal(paused, "-STOP");
    let out = cli(&["wait", "--node", n1, &target, "--timeout", "15s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(done["node"], runner, "{done}");
    assert!(done["epoch"].as_u64().unwrap() > first_epoch, "{done}");

    // The paused runner wakes up and reports under its old epoch: rejected.
    signal(paused, "-CONT");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        get_task(n1, &target),
        done,
        "a stale result changed the outcome"
    );
    let metrics = http_get(n1, "/metrics");
    assert!(
        metrics.contains("cohort_notes_total{note=\"superseded\",reason=\"RunnerDeclaredDead\"}"),
        "{metrics}"
    );

    // `cohort get --events` tells the lost runner apart from the outcome.
    let out = cli(&["get", "--node", n1, &target, "--events"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = v["events"].as_array().unwrap();
    // (`sleep` heartbeats while it runs: those events are beside the point.)
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .filter(|k| *k != "heartbeat")
        .collect();
    assert_eq!(
        kinds,
        [
            "submitted",
            "assigned",
            "runner_lost",
            "assigned",
            "succeeded"
        ],
        "{v}"
    );
    assert_eq!(events[2]["node"], runner, "{v}");
    assert_eq!(events[2]["epoch"], first_epoch, "{v}");
    assert_eq!(events[2]["reason"], "runner_declared_dead", "{v}");
    assert_eq!(events[4]["node"], done["node"], "{v}");
}

/// A plain HTTP/1.1 GET; returns the whole response.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `cohort ring` with `args`: its stdout, after checking it succeeded.
fn ring_ok(args: &[&str]) -> String {
    let out = cli(&[&["ring"], args].concat());
    assert!(
        out.status.success(),
        "cohort ring {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An echo task submitted through the CLI until a submit is accepted (a
/// leaderless cluster may still be forming), then waited for.
fn leaderless_task(http: &str, payload: &str) -> serde_json::Value {
    for _ in 0..100 {
        let out = submit_echo(http, payload);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no submit accepted at {http}");
}

#[test]
fn a_spare_process_joins_the_ring_and_a_member_leaves_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(3);
    let mut procs = Procs(Vec::new());
    // Node 3 is a spare: configured, outside the ring at epoch 0.
    let flags = ["--mode", "leaderless", "--initial-ring", "1,2"];
    for id in 1..=3 {
        procs
            .0
            .push(Some(spawn_mode(&l, id, dir.path(), "ring-test", &flags)));
    }
    for h in &l.http {
        wait_healthy(h);
    }
    let shown = ring_ok(&["--node", &l.http[2]]);
    assert!(shown.contains("n3 knows ring epoch 0: n1 n2\n"), "{shown}");
    assert!(shown.contains("no change in flight"), "{shown}");
    let before = leaderless_task(&l.http[2], "before");
    assert_eq!(before["state"], "succeeded", "{before}");

    // The spare joins, asked at node 1, waiting until node 1's ring shows it.
    let out = ring_ok(&["join", "3", "--node", &l.http[0], "--wait", "20s"]);
    assert!(out.contains("n1 knows ring epoch 1: n1 n2 n3\n"), "{out}");
    assert!(out.contains("join n3: the ring reflects it"), "{out}");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = ring_ok(&["show", "--node", &l.http[2]]);
        if seen.contains("epoch 1: n1 n2 n3\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.contains("n3 knows ring epoch 1: n1 n2 n3\n"), "{seen}");
    let t = leaderless_task(&l.http[2], "joined");
    assert_eq!(t["state"], "succeeded", "{t}");

    // Node 2 leaves, asked at node 3.
    let out = ring_ok(&["remove", "2", "--node", &l.http[2], "--wait", "20s"]);
    assert!(out.contains("epoch 2: n1 n3\n"), "{out}");
    let t = leaderless_task(&l.http[0], "left");
    assert_eq!(t["state"], "succeeded", "{t}");
    // The first task is still readable, at the node that left too.
    for h in &l.http {
        let read = cli(&["get", "--node", h, before["id"].as_str().unwrap()]);
        assert!(
            read.status.success(),
            "{}",
            String::from_utf8_lossy(&read.stderr)
        );
        let read: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
        assert_eq!(read["result"], "before", "{read}");
    }

    // An unknown node: a typed refusal, non-zero exit, nothing changed.
    let out = cli(&["ring", "join", "9", "--node", &l.http[0]]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not_a_member"), "{err}");
    let out = cli(&["ring", "join", "n9", "--node", &l.http[0]]);
    assert!(!out.status.success());
    assert!(ring_ok(&["--node", &l.http[0]]).contains("epoch 2: n1 n3\n"));
}

/// A leader-mode submit through any node (the cluster may still be
/// electing): retried until acknowledged; returns the id.
fn leader_submit(l: &Layout, kind: &str, payload: &str) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        for h in &l.http {
            let out = cli(&["submit", "--node", h, "--kind", kind, "--payload", payload]);
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap().trim().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no node acknowledged the submit");
}

fn wait_task(http: &str, id: &str) -> serde_json::Value {
    let out = cli(&["wait", "--node", http, id, "--timeout", "20s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cohort_drain_empties_a_node_by_id_and_sigterm_drains_before_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(3);
    let mut procs = Procs(Vec::new());
    for id in 1..=3 {
        procs.0.push(Some(spawn_mode(
            &l,
            id,
            dir.path(),
            "drain-test",
            &["--mode", "leader"],
        )));
    }
    for h in &l.http {
        wait_healthy(h);
    }
    let ids: Vec<String> = (0..6).map(|_| leader_submit(&l, "sleep", "1500")).collect();
    // A node running one of them.
    let end = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let running = ids.iter().find_map(|id| {
            let t = get_task(&l.http[0], id);
            (t["state"] == "running").then(|| t["node"].as_u64().unwrap())
        });
        if let Some(n) = running {
            break n;
        }
        assert!(Instant::now() < end, "nothing ran");
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = |n: u64| cli(&["drain", &n.to_string(), "--node", &l.http[0], "--status"]);
    let out = status(busy);
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not draining"));
    // By id, through another node's /v1/cluster; its tasks finish well
    // before the 20 s deadline.
    let out = cli(&[
        "drain",
        &busy.to_string(),
        "--node",
        &l.http[0],
        "--deadline",
        "20s",
        "--wait",
        "20s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("n{busy} drained")), "{text}");
    for id in &ids {
        let t = wait_task(&l.http[0], id);
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(
            t["epoch"], 1,
            "finished before the deadline: not rerun: {t}"
        );
    }
    // New work goes elsewhere.
    for _ in 0..4 {
        let id = leader_submit(&l, "echo", "later");
        let t = wait_task(&l.http[0], &id);
        assert_ne!(t["node"].as_u64(), Some(busy), "{t}");
    }
    let out = status(busy);
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained"));

    // SIGTERM on a node while it runs a task: it drains (the task
    // finishes there), then stops with status 0.
    let id = leader_submit(&l, "sleep", "1000");
    let end = Instant::now() + Duration::from_secs(20);
    let runner = loop {
        let t = get_task(&l.http[0], &id);
        if t["state"] == "running" {
            break t["node"].as_u64().unwrap();
        }
        assert!(Instant::now() < end, "the task never ran");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(runner, busy, "the drained node takes no work");
    let child = procs.0[runner as usize - 1].take().unwrap();
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.contains("draining") && err.contains("drained"), "{err}");
    let live = &l.http[busy as usize - 1];
    let t = wait_task(live, &id);
    assert_eq!(
        (t["node"].as_u64(), t["epoch"].as_u64()),
        (Some(runner), Some(1)),
        "{t}"
    );
}

/// `cohort submit --dedupe-key KEY` at `http`: (stdout id, stderr).
fn submit_unique(http: &str, key: &str, payload: &str) -> (String, String) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cli(&[
            "submit",
            "--node",
            http,
            "--dedupe-key",
            key,
            "--kind",
            "sleep",
            "--payload",
            payload,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            return (
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                stderr,
            );
        }
        // 503 while the ring settles after start.
        assert!(Instant::now() < end, "submit --dedupe-key failed: {stderr}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cohort_submit_with_a_dedupe_key_names_the_live_task_then_creates_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(3);
    let mut procs = Procs(Vec::new());
    for id in 1..=3 {
        let flags = ["--mode", "leaderless"];
        procs
            .0
            .push(Some(spawn_mode(&l, id, dir.path(), "dedupe-test", &flags)));
    }
    for h in &l.http {
        wait_healthy(h);
    }
    let (first, said) = submit_unique(&l.http[0], "report-1", "3000");
    assert!(said.contains("created: generation 0"), "{said}");
    let (again, said) = submit_unique(&l.http[1], "report-1", "10");
    assert_eq!(again, first, "the live task, not a second one");
    assert!(said.contains("deduplicated: generation 0"), "{said}");
    let done = wait_task(&l.http[2], &first);
    assert_eq!(done["state"], "succeeded", "{done}");
    let (next, said) = submit_unique(&l.http[2], "report-1", "10");
    assert_ne!(next, first);
    assert!(said.contains("created: generation 1"), "{said}");
    // A dedupe key excludes an idempotency key, before anything is sent.
    let out = cli(&[
        "submit",
        "--node",
        &l.http[0],
        "--kind",
        "echo",
        "--dedupe-key",
        "k",
        "--idempotency-key",
        "k",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be used with"), "{err}");
}

/// `cohort schedule ...`, retried while the cluster elects a leader.
fn schedule_ok(args: &[&str]) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cli(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(Instant::now() < end, "{args:?} failed: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cohort_schedule_creates_fires_shows_and_deletes_a_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(3);
    let mut procs = Procs(Vec::new());
    for id in 1..=3 {
        // Every node carries the label the schedule's firings need.
        let flags = ["--mode", "leader", "--label", "tick"];
        procs.0.push(Some(spawn_mode(
            &l,
            id,
            dir.path(),
            "schedule-test",
            &flags,
        )));
    }
    for h in &l.http {
        wait_healthy(h);
    }
    let create = [
        "schedule",
        "create",
        "ticker",
        "--node",
        &l.http[0],
        "--every",
        "200ms",
        "--overlap",
        "allow",
        "--kind",
        "echo",
        "--payload",
        "tick",
        "--label",
        "tick",
    ];
    let said = schedule_ok(&create);
    assert!(said.contains("schedule ticker stored"), "{said}");
    // Started once its definition ran: the next tick's firing is named.
    let end = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let v: serde_json::Value = serde_json::from_str(&schedule_ok(&[
            "schedule", "get", "ticker", "--node", &l.http[1],
        ]))
        .unwrap();
        if v["started"] == true {
            break v;
        }
        assert!(Instant::now() < end, "never started: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(view["definition"]["every_ms"], 200, "{view}");
    assert_eq!(view["definition"]["overlap"], "allow", "{view}");
    assert_eq!(
        view["definition"]["task"]["labels"],
        serde_json::json!(["tick"]),
        "{view}"
    );
    let firing = view["next_firing_id"].as_str().unwrap().to_string();
    // It exists once its tick came (a few hundred ms from now).
    let end = Instant::now() + Duration::from_secs(20);
    while !cli(&["get", "--node", &l.http[2], &firing])
        .status
        .success()
    {
        assert!(Instant::now() < end, "the next tick never fired");
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = wait_task(&l.http[2], &firing);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"], "tick", "{done}");
    // The firing carries the schedule's labels.
    let v = get_events(&l.http[2], &firing);
    assert_eq!(v["task"]["labels"], serde_json::json!(["tick"]), "{v}");
    // The reserved kind cannot be submitted directly.
    let out = cli(&["submit", "--node", &l.http[0], "--kind", "cohort.schedule"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reserved_kind"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = schedule_ok(&["schedule", "list", "--node", &l.http[1]]);
    let row = listed
        .lines()
        .find(|r| r.starts_with("ticker "))
        .unwrap_or_else(|| panic!("ticker not listed: {listed}"));
    assert!(
        row.contains(" started ") && row.contains(" 200ms "),
        "{listed}"
    );
    let said = schedule_ok(&["schedule", "delete", "ticker", "--node", &l.http[2]]);
    assert!(said.contains("schedule ticker deleted"), "{said}");
    let v: serde_json::Value = serde_json::from_str(&schedule_ok(&[
        "schedule", "get", "ticker", "--node", &l.http[0],
    ]))
    .unwrap();
    assert_eq!(v["deleted"], true, "{v}");
    let listed = schedule_ok(&["schedule", "list", "--node", &l.http[0]]);
    assert!(
        listed
            .lines()
            .any(|r| r.starts_with("ticker ") && r.contains(" deleted ")),
        "{listed}"
    );
}

/// Routing and limits through the CLI: `cohort node --label gpu` on n2
/// alone, then `cohort submit --label gpu`: the task runs on n2 whichever
/// node took it, and `cohort get --events` shows its labels; `cohort
/// submit --limit-key ...` stores the limit with the task.
#[test]
fn cohort_submit_routes_by_label_and_stores_a_limit_with_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(3);
    let mut procs = Procs(Vec::new());
    for id in 1..=3 {
        let mut flags = vec!["--mode", "leader"];
        if id == 2 {
            flags.extend(["--label", "gpu"]);
        }
        procs
            .0
            .push(Some(spawn_mode(&l, id, dir.path(), "label-test", &flags)));
    }
    for h in &l.http {
        wait_healthy(h);
    }
    for (i, h) in l.http.iter().enumerate() {
        let end = Instant::now() + Duration::from_secs(20);
        let id = loop {
            let out = cli(&[
                "submit",
                "--node",
                h,
                "--kind",
                "echo",
                "--payload",
                "hi",
                "--label",
                "gpu",
            ]);
            if out.status.success() {
                break String::from_utf8(out.stdout).unwrap().trim().to_string();
            }
            assert!(
                Instant::now() < end,
                "n{} never took the submit: {}",
                i + 1,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let t = wait_task(h, &id);
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["node"], 2, "{t}");
        let v = get_events(h, &id);
        assert_eq!(v["task"]["labels"], serde_json::json!(["gpu"]), "{v}");
    }
    let bad_label = ["--label", "bad label"];
    cli_refused(&[&submit_x(&l.http[0])[..], &bad_label].concat(), "label");
    let id = cli_ok(&[
        "submit",
        "--node",
        &l.http[1],
        "--kind",
        "echo",
        "--payload",
        "limited",
        "--limit-key",
        "tenant-a",
        "--concurrency-max",
        "1",
        "--rate-max",
        "5",
        "--rate-window-ms",
        "2000",
    ]);
    assert_eq!(wait_task(&l.http[0], &id)["state"], "succeeded");
    let v = get_events(&l.http[0], &id);
    assert_eq!(
        v["task"]["limit"],
        serde_json::json!({"key": "tenant-a", "concurrency_max": 1, "rate_max": 5, "rate_window_ms": 2000}),
        "{v}"
    );
    // A number without a key is refused before anything is sent.
    let keyless = ["--rate-max", "5"];
    cli_refused(
        &[&submit_x(&l.http[0])[..], &keyless].concat(),
        "--limit-key",
    );

    // A lease grace of the task's own is stored with it; one under 1 s is
    // refused by the node.
    let grace = ["--lease-grace-ms", "5000"];
    let id = cli_ok(&[&submit_x(&l.http[0])[..], &grace].concat());
    assert_eq!(wait_task(&l.http[0], &id)["state"], "succeeded");
    assert_eq!(get_events(&l.http[0], &id)["task"]["lease_grace_ms"], 5000);
    let short = ["--lease-grace-ms", "500"];
    cli_refused(
        &[&submit_x(&l.http[0])[..], &short].concat(),
        "lease_grace_ms",
    );

    // `cohort retry` of a cancelled task: the retry's events name it.
    let later = ["--delay", "60m"];
    let original = cli_ok(&[&submit_x(&l.http[2])[..], &later].concat());
    cli_ok(&["cancel", "--node", &l.http[2], &original]);
    let line = cli_ok(&["retry", "--node", &l.http[1], &original]);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], [original.as_str(), "new"], "{line}");
    let v = get_events(&l.http[0], words[2]);
    assert_eq!(v["retry_of"], original.as_str(), "{v}");
    assert!(get_events(&l.http[0], &original).get("retry_of").is_none());
}

/// `cohort submit --node NODE --kind echo --payload x`, to add flags to.
fn submit_x(node: &str) -> [&str; 7] {
    ["submit", "--node", node, "--kind", "echo", "--payload", "x"]
}

/// Runs `cohort ARGS`, which must succeed: its stdout, trimmed.
fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `cohort ARGS`, which must fail saying `says`.
fn cli_refused(args: &[&str], says: &str) {
    let out = cli(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(says), "{args:?}: {err}");
}

#[test]
fn a_lone_leader_killed_with_sigkill_restarts_with_every_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(1);
    let mut procs = Procs(vec![Some(spawn_mode(
        &l,
        1,
        dir.path(),
        "wal-test",
        &["--mode", "leader"],
    ))]);
    wait_healthy(&l.http[0]);
    let ids: Vec<String> = (0..30)
        .map(|i| leader_submit(&l, "echo", &format!("kept-{i}")))
        .collect();
    // No clean close: the batches since the last checkpoint are only in
    // the write-ahead log, which the restart must apply.
    let mut n1 = procs.0[0].take().unwrap();
    n1.kill().unwrap();
    n1.wait().unwrap();
    let wal = std::fs::read(dir.path().join("node-1.wal")).unwrap();
    assert!(
        wal.iter().skip(24).any(|b| *b != 0),
        "the killed node's log holds its latest batches"
    );
    procs.0[0] = Some(spawn_mode(
        &l,
        1,
        dir.path(),
        "wal-test",
        &["--mode", "leader"],
    ));
    wait_healthy(&l.http[0]);
    // Serving once it has elected itself again.
    let end = Instant::now() + Duration::from_secs(20);
    while !cli(&["get", "--node", &l.http[0], &ids[0]])
        .status
        .success()
    {
        assert!(
            Instant::now() < end,
            "the restarted node never served a read"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, id) in ids.iter().enumerate() {
        let t = wait_task(&l.http[0], id);
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["result"], format!("kept-{i}"), "{t}");
    }
}
