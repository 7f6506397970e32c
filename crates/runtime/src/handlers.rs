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

use cohort_core::{Epoch, NodeId, TaskId};
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

impl Handler for Sleep {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        Box::pin(async move {
            let ms = parse_sleep_ms(&input.payload)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
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
