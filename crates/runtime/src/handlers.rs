//! Task handlers: a trait, a registry from kind to handler, and the built-ins.
//!
//! Built-in kinds and their payloads:
//!
//! | kind    | payload                                              | result                         |
//! |---------|------------------------------------------------------|--------------------------------|
//! | `sleep` | `{"ms": 100}` or decimal text `100` (milliseconds)   | `slept 100ms`                  |
//! | `hash`  | `{"rounds": 1000, "data": "..."}`, or any other bytes (hashed 1000 times) | hex SHA-256 after `rounds` iterations |
//! | `echo`  | anything                                             | the payload                    |
//! | `exec`  | `{"argv": ["prog", "arg", ...]}` or text split on whitespace (no shell) | the command's stdout  |
//!
//! `exec` is registered only on nodes started with `--allow-exec`. It runs
//! with `COHORT_TASK_ID`, `COHORT_EPOCH` and `COHORT_NODE` in its
//! environment so the command can fence its own side effects, and is killed
//! when the task's timeout expires.
//!
//! Errors carry a class (`class: message`, see `cohort_core::retry`) that a
//! task's retry policy can name as non-retryable: `invalid_payload` (the
//! payload does not parse), `exit_status` (`exec`'s command failed); the
//! runtime adds `timeout`, `panic`, `cancelled` and `unknown_kind`.
//!
//! A long handler heartbeats through `input.heartbeat`: each beat keeps a
//! task with a heartbeat timeout alive (a handler that misses it is stopped
//! and the attempt fails with class `heartbeat_timeout`), may carry progress
//! (recorded in the task's history at most every
//! `heartbeat_record_interval_ms`), and answers whether to go on: a
//! cancelled task, or an execution whose lease ended, is told to stop
//! (cooperative cancellation). `sleep` heartbeats while it sleeps and stops
//! when told to.
//!
//! A handler of your own:
//!
//! ```
//! use cohort_runtime::{Handler, HandlerFuture, HandlerInput, Registry};
//!
//! struct Upper;
//!
//! impl Handler for Upper {
//!     fn run(&self, input: HandlerInput) -> HandlerFuture {
//!         // `input.epoch` fences side effects: a rerun carries a larger one.
//!         Box::pin(async move { Ok(input.payload.to_ascii_uppercase()) })
//!     }
//! }
//!
//! let mut registry = Registry::with_builtins(false);
//! registry.register("upper", Upper);
//! assert_eq!(registry.kinds(), ["echo", "hash", "sleep", "upper"]);
//! ```

use crate::driver::Control;
use cohort_core::{Epoch, HeartbeatReply, NodeId, TaskId};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one execution of a handler gets.
#[derive(Clone, Debug)]
pub struct HandlerInput {
    /// The task.
    pub id: TaskId,
    /// The assignment's fencing token: a later execution of the same task
    /// carries a larger one. Use it to fence side effects.
    pub epoch: Epoch,
    /// The node running it.
    pub node: NodeId,
    /// The task's payload.
    pub payload: Vec<u8>,
    /// Beats to keep the execution alive, report progress and hear of a
    /// cancel.
    pub heartbeat: Heartbeat,
}

/// Most often a handler's beats reach the node: beats closer together are
/// answered with the previous answer (they keep the execution alive all
/// the same).
pub const HEARTBEAT_ASK_INTERVAL_MIN_MS: u64 = 20;

/// A handler's heartbeat: see the module docs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    inner: Option<Arc<Beating>>,
}

#[derive(Debug)]
struct Beating {
    id: TaskId,
    epoch: Epoch,
    control: tokio::sync::mpsc::Sender<Control>,
    timeout: Option<Duration>,
    record_interval: Duration,
    state: std::sync::Mutex<BeatState>,
}

#[derive(Debug)]
struct BeatState {
    /// The latest beat (or the start): what the watchdog measures from.
    last_beat: tokio::time::Instant,
    /// When progress was last sent to be recorded.
    last_recorded: Option<tokio::time::Instant>,
    /// When the node was last asked, and what it said.
    last_asked: Option<(tokio::time::Instant, HeartbeatReply)>,
}

impl Heartbeat {
    /// A heartbeat connected to nothing: every beat says go on. For
    /// calling handlers outside a node (tests).
    pub fn detached() -> Heartbeat {
        Heartbeat { inner: None }
    }

    pub(crate) fn new(
        id: TaskId,
        epoch: Epoch,
        control: tokio::sync::mpsc::Sender<Control>,
        timeout: Option<Duration>,
        record_interval: Duration,
    ) -> Heartbeat {
        Heartbeat {
            inner: Some(Arc::new(Beating {
                id,
                epoch,
                control,
                timeout,
                record_interval,
                state: std::sync::Mutex::new(BeatState {
                    last_beat: tokio::time::Instant::now(),
                    last_recorded: None,
                    last_asked: None,
                }),
            })),
        }
    }

    /// The task's heartbeat timeout, if it has one: beat well within it
    /// (a third of it is a good pace).
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|b| b.timeout)
    }

    /// A beat with no progress to report.
    pub async fn beat(&self) -> HeartbeatReply {
        self.send(None).await
    }

    /// A beat reporting `progress` (cut to
    /// [`cohort_core::PROGRESS_BYTES_MAX`] bytes when recorded).
    pub async fn progress(&self, progress: impl Into<String>) -> HeartbeatReply {
        self.send(Some(progress.into())).await
    }

    async fn send(&self, progress: Option<String>) -> HeartbeatReply {
        let Some(b) = &self.inner else {
            return HeartbeatReply::Continue;
        };
        let now = tokio::time::Instant::now();
        let progress = {
            let mut st = b.state.lock().expect("heartbeat state is never poisoned");
            st.last_beat = now;
            if let Some((at, reply)) = st.last_asked {
                let soon =
                    now.duration_since(at) < Duration::from_millis(HEARTBEAT_ASK_INTERVAL_MIN_MS);
                if soon || reply != HeartbeatReply::Continue {
                    return reply; // a stop is final for this execution
                }
            }
            let due = st
                .last_recorded
                .is_none_or(|r| now.duration_since(r) >= b.record_interval);
            let progress = progress.filter(|_| due);
            if progress.is_some() {
                st.last_recorded = Some(now);
            }
            progress
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = b
            .control
            .send(Control::Heartbeat {
                id: b.id,
                epoch: b.epoch,
                progress,
                reply: tx,
            })
            .await;
        // A node that is stopping answers nothing: go on, it stops the
        // handler itself.
        let reply = match asked {
            Ok(()) => rx.await.unwrap_or(HeartbeatReply::Continue),
            Err(_) => HeartbeatReply::Continue,
        };
        let mut st = b.state.lock().expect("heartbeat state is never poisoned");
        st.last_asked = Some((now, reply));
        reply
    }

    /// When the handler misses its heartbeat timeout: never without one.
    /// Returns once the latest beat is older than the timeout.
    pub(crate) async fn missed(&self) {
        let Some((b, timeout)) = self.inner.as_ref().and_then(|b| Some((b, b.timeout?))) else {
            return std::future::pending().await;
        };
        loop {
            let last = b
                .state
                .lock()
                .expect("heartbeat state is never poisoned")
                .last_beat;
            if last.elapsed() >= timeout {
                return;
            }
            tokio::time::sleep_until(last + timeout).await;
        }
    }
}

/// A handler's result: the output bytes or an error message.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Runs tasks of one kind. The runtime bounds concurrency, applies the task's
/// timeout (dropping the future) and turns a panic into a failure.
pub trait Handler: Send + Sync + 'static {
    /// Starts one execution.
    fn run(&self, input: HandlerInput) -> HandlerFuture;
}

/// Kind name -> handler.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// `sleep`, `hash`, `echo`, and `exec` when `allow_exec`.
    pub fn with_builtins(allow_exec: bool) -> Registry {
        let mut r = Registry::new();
        r.register("sleep", Sleep);
        r.register("hash", Hash);
        r.register("echo", Echo);
        if allow_exec {
            r.register("exec", Exec);
        }
        r
    }

    /// Adds or replaces the handler of `kind`.
    pub fn register(&mut self, kind: &str, handler: impl Handler) {
        self.handlers.insert(kind.to_string(), Arc::new(handler));
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }

    /// Every registered kind, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }
}

/// `sleep`: waits the number of milliseconds in the payload.
#[derive(Debug)]
pub struct Sleep;

/// Parses a `sleep` payload: `{"ms": N}` or decimal text.
pub fn parse_sleep_ms(payload: &[u8]) -> Result<u64, String> {
    let text =
        std::str::from_utf8(payload).map_err(|_| "invalid_payload: sleep payload is not UTF-8")?;
    if let Ok(ms) = text.trim().parse::<u64>() {
        return Ok(ms);
    }
    #[derive(serde::Deserialize)]
    struct P {
        ms: u64,
    }
    serde_json::from_str::<P>(text).map(|p| p.ms).map_err(|e| {
        format!("invalid_payload: sleep payload must be {{\"ms\": N}} or decimal milliseconds: {e}")
    })
}

/// How often `sleep` heartbeats when its task has no heartbeat timeout.
pub const SLEEP_BEAT_INTERVAL_MS: u64 = 1000;

impl Handler for Sleep {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        Box::pin(async move {
            let ms = parse_sleep_ms(&input.payload)?;
            let total = Duration::from_millis(ms);
            let pace = input
                .heartbeat
                .timeout()
                .map_or(Duration::from_millis(SLEEP_BEAT_INTERVAL_MS), |t| {
                    (t / 3).max(Duration::from_millis(1))
                });
            let start = tokio::time::Instant::now();
            loop {
                let slept = start.elapsed();
                if slept >= total {
                    break;
                }
                tokio::time::sleep(pace.min(total - slept)).await;
                let slept = start.elapsed().min(total);
                if slept >= total {
                    break;
                }
                let said = input
                    .heartbeat
                    .progress(format!("slept {} of {ms} ms", slept.as_millis()))
                    .await;
                if said != HeartbeatReply::Continue {
                    return Err(format!(
                        "cancelled: told to stop ({}) after {} of {ms} ms",
                        said.name(),
                        slept.as_millis()
                    ));
                }
            }
            Ok(format!("slept {ms}ms").into_bytes())
        })
    }
}

/// `hash`: iterated SHA-256, on a blocking thread; stops early when dropped.
#[derive(Debug)]
pub struct Hash;

/// Most rounds a `hash` task may ask for.
pub const HASH_ROUNDS_MAX: u64 = 100_000_000;

impl Handler for Hash {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        #[derive(serde::Deserialize)]
        struct P {
            rounds: u64,
            #[serde(default)]
            data: String,
        }
        let (rounds, data) = match serde_json::from_slice::<P>(&input.payload) {
            Ok(p) => (p.rounds, p.data.into_bytes()),
            Err(_) => (1000, input.payload),
        };
        Box::pin(async move {
            if rounds > HASH_ROUNDS_MAX {
                return Err(format!(
                    "invalid_payload: rounds {rounds} exceeds {HASH_ROUNDS_MAX}"
                ));
            }
            let stop = Arc::new(AtomicBool::new(false));
            let guard = StopOnDrop(stop.clone());
            let digest = tokio::task::spawn_blocking(move || {
                let mut d: Vec<u8> = Sha256::digest(&data).to_vec();
                for i in 1..rounds {
                    if i % 4096 == 0 && stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    d = Sha256::digest(&d).to_vec();
                }
                Some(d)
            })
            .await
            .map_err(|e| format!("hash worker failed: {e}"))?;
            drop(guard);
            digest
                .map(|d| hex::encode(d).into_bytes())
                .ok_or_else(|| "stopped".to_string())
        })
    }
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `echo`: returns the payload.
#[derive(Debug)]
pub struct Echo;

impl Handler for Echo {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        Box::pin(async move { Ok(input.payload) })
    }
}

/// `exec`: runs a command without a shell and returns its stdout.
#[derive(Debug)]
pub struct Exec;

/// Parses an `exec` payload into argv.
pub fn parse_exec_argv(payload: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct P {
        argv: Vec<String>,
    }
    let argv = match serde_json::from_slice::<P>(payload) {
        Ok(p) => p.argv,
        Err(_) => std::str::from_utf8(payload)
            .map_err(|_| "invalid_payload: exec payload is not UTF-8")?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    };
    if argv.is_empty() {
        return Err("invalid_payload: exec payload names no command".into());
    }
    Ok(argv)
}

impl Handler for Exec {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        Box::pin(async move {
            let argv = parse_exec_argv(&input.payload)?;
            let out = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env("COHORT_TASK_ID", input.id.to_string())
                .env("COHORT_EPOCH", input.epoch.0.to_string())
                .env("COHORT_NODE", input.node.0.to_string())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("cannot run {:?}: {e}", argv[0]))?;
            if out.status.success() {
                Ok(out.stdout)
            } else {
                Err(format!(
                    "exit_status: {:?} exited with {}: {}",
                    argv[0],
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(payload: &[u8]) -> HandlerInput {
        HandlerInput {
            id: TaskId(7),
            epoch: Epoch(3),
            node: NodeId(1),
            payload: payload.to_vec(),
            heartbeat: Heartbeat::detached(),
        }
    }

    #[tokio::test]
    async fn builtins_do_what_their_docs_say() {
        let r = Registry::with_builtins(false);
        assert_eq!(r.kinds(), vec!["echo", "hash", "sleep"]);
        let echo = r.get("echo").unwrap().run(input(b"hi")).await;
        assert_eq!(echo, Ok(b"hi".to_vec()));
        let slept = r.get("sleep").unwrap().run(input(b"{\"ms\": 5}")).await;
        assert_eq!(slept, Ok(b"slept 5ms".to_vec()));
        let slept = r.get("sleep").unwrap().run(input(b"2")).await;
        assert_eq!(slept, Ok(b"slept 2ms".to_vec()));
        assert!(r.get("sleep").unwrap().run(input(b"soon")).await.is_err());
        let one = r
            .get("hash")
            .unwrap()
            .run(input(b"{\"rounds\":1,\"data\":\"abc\"}"))
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(one).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let two = r
            .get("hash")
            .unwrap()
            .run(input(b"{\"rounds\":2,\"data\":\"abc\"}"))
            .await
            .unwrap();
        let expect = hex::encode(Sha256::digest(Sha256::digest(b"abc")));
        assert_eq!(String::from_utf8(two).unwrap(), expect);
    }

    #[tokio::test]
    async fn exec_runs_only_when_allowed_and_sees_its_epoch() {
        assert!(Registry::with_builtins(false).get("exec").is_none());
        let r = Registry::with_builtins(true);
        let out = r
            .get("exec")
            .unwrap()
            .run(input(
                br#"{"argv":["sh","-c","echo $COHORT_EPOCH $COHORT_NODE"]}"#,
            ))
            .await
            .unwrap();
        assert_eq!(out, b"3 1\n");
        let err = r
            .get("exec")
            .unwrap()
            .run(input(b"false"))
            .await
            .unwrap_err();
        assert!(err.contains("exited"), "{err}");
        let err = r.get("exec").unwrap().run(input(b"")).await.unwrap_err();
        assert!(err.contains("no command"), "{err}");
    }

    #[tokio::test]
    async fn an_exec_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
        let payload = serde_json::json!({"argv": ["sh", "-c", script]}).to_string();
        let run = Registry::with_builtins(true)
            .get("exec")
            .unwrap()
            .run(input(payload.as_bytes()));
        // What the executor does at the task's timeout: drop the future.
        let r = tokio::time::timeout(Duration::from_millis(300), run).await;
        assert!(r.is_err(), "sleep 30 finished early");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let mut gone = false;
        for _ in 0..100 {
            // Gone, or a zombie waiting to be reaped: either way not running.
            match std::fs::read_to_string(&stat) {
                Err(_) => gone = true,
                Ok(s) => gone = s.split_whitespace().nth(2) == Some("Z"),
            }
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "the command outlived its task's timeout");
    }
}
