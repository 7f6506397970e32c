//! Draining a node of a real cluster under load, in leader and leaderless
//! mode: the drained node starts nothing after the drain, what it runs
//! past the deadline is handed back (its handler stopped) and runs
//! elsewhere under the next epoch, and every task finishes exactly once.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::{Node, NodeId, Note, SupersedeReason};
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{CallError, Client};
use cohort_runtime::http::SubmitBody;
use cohort_runtime::{Handler, HandlerFuture, HandlerInput, NodeOptions, Registry, RunningNode};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    Started,
    Completed,
    /// Dropped before it returned: the runtime stopped it.
    Stopped,
}

#[derive(Clone, Debug)]
struct Run {
    ev: Ev,
    task: String,
    epoch: u64,
    node: u64,
    at: Instant,
}

type Log = Arc<Mutex<Vec<Run>>>;

/// Sleeps the payload's milliseconds, logging its start, its return, or
/// its being dropped before it returned.
#[derive(Clone)]
struct Probe(Log);

struct Running {
    log: Log,
    run: Run,
    done: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        let ev = if self.done {
            Ev::Completed
        } else {
            Ev::Stopped
        };
        let run = Run {
            ev,
            at: Instant::now(),
            ..self.run.clone()
        };
        self.log.lock().unwrap().push(run);
    }
}

impl Handler for Probe {
    fn run(&self, input: HandlerInput) -> HandlerFuture {
        let log = self.0.clone();
        Box::pin(async move {
            let ms: u64 = String::from_utf8_lossy(&input.payload).parse().unwrap();
            let run = Run {
                ev: Ev::Started,
                task: input.id.to_string(),
                epoch: input.epoch.0,
                node: input.node.0,
                at: Instant::now(),
            };
            log.lock().unwrap().push(run.clone());
            let mut running = Running {
                log,
                run,
                done: false,
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            running.done = true;
            Ok(input.payload)
        })
    }
}

fn probe(ms: u64) -> SubmitBody {
    SubmitBody {
        id: None,
        kind: "probe".into(),
        payload: Some(ms.to_string()),
        payload_base64: None,
        timeout_ms: Some(60_000),
        max_attempts: Some(1),
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

/// Submits through any node, retrying while the cluster is not ready.
async fn submit(nodes: &[RunningNode], body: &SubmitBody) -> String {
    for attempt in 0..500 {
        let node = &nodes[attempt % nodes.len()];
        match Client::new(&node.http_addr().to_string())
            .submit(body)
            .await
        {
            Ok(id) => return id,
            Err(CallError::Api { status, .. }) if status == 503 || status == 429 => {}
            Err(e) => panic!("submit refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no node took the submit");
}

const LONG_MS: u64 = 4_000;
const SHORT_MS: u64 = 50;
const SHORT_TASKS: usize = 30;

async fn drain_under_load<N: Node + Send + 'static>(mode: &str, config: N::Config) {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let released: Arc<Mutex<BTreeSet<(String, u64)>>> = Arc::default();
    let (l, r) = (log.clone(), released.clone());
    let nodes = real::cluster_with_options::<N>(
        dir.path(),
        3,
        mode,
        config,
        |_, c| c.shutdown_grace_ms = 2_000,
        move |id| {
            let mut registry = Registry::new();
            registry.register("probe", Probe(l.clone()));
            let r = r.clone();
            NodeOptions {
                registry,
                note_observer: Some(Arc::new(move |_, note: &Note| {
                    if let Note::Superseded {
                        task,
                        epoch,
                        reason: SupersedeReason::Released,
                    } = note
                    {
                        r.lock().unwrap().insert((task.to_string(), epoch.0));
                    }
                })),
                rng_seed: Some(id.0),
            }
        },
    )
    .await;
    // Long tasks, one or two per node (capacity 2 each): the drained node
    // is one that runs one of them.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(&nodes, &probe(LONG_MS)).await);
    }
    let started = |log: &Log| -> Vec<Run> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|r| r.ev == Ev::Started)
            .cloned()
            .collect()
    };
    let drained = loop {
        if let Some(r) = started(&log).first() {
            break NodeId(r.node);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let node = nodes.iter().find(|n| n.id() == drained).unwrap();
    let client = Client::new(&node.http_addr().to_string());
    assert!(!client.drain_status().await.unwrap().draining);
    let drain_asked = Instant::now();
    let d = client
        .drain(Some(Duration::from_millis(500)))
        .await
        .unwrap();
    assert!(d.draining && d.held_count.unwrap() >= 1, "{d:?}");
    assert!(d.deadline_in_ms.unwrap() <= 500);
    // Under load: more work arrives while it drains.
    for _ in 0..SHORT_TASKS {
        ids.push(submit(&nodes, &probe(SHORT_MS)).await);
    }
    let any = Client::new(&nodes[0].http_addr().to_string());
    for id in &ids {
        let t = any
            .get(id, false, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(t.state, "succeeded", "{t:?}");
    }
    let d = client.drain_status().await.unwrap();
    assert!(d.is_done() && d.handing_back == Some(true), "{d:?}");

    let log = log.lock().unwrap().clone();
    let mut by_task: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in &log {
        by_task.entry(&r.task).or_default().push(r);
    }
    let released = released.lock().unwrap().clone();
    for id in &ids {
        let runs = &by_task[id.as_str()];
        let completed: Vec<&&Run> = runs.iter().filter(|r| r.ev == Ev::Completed).collect();
        assert_eq!(completed.len(), 1, "{id} completed exactly once: {runs:?}");
        let final_run = completed[0];
        let view = any.get(id, false, None).await.unwrap();
        assert_eq!(
            (view.node, view.epoch),
            (Some(final_run.node), Some(final_run.epoch)),
            "{id}: the decided run is the one that completed"
        );
        for stopped in runs.iter().filter(|r| r.ev == Ev::Stopped) {
            // Stopped only on the drained node, at its deadline, and
            // handed back: the task then ran under the next epoch.
            assert_eq!(stopped.node, drained.0, "{id}: {runs:?}");
            assert!(stopped.at >= drain_asked + Duration::from_millis(400));
            assert!(released.contains(&(id.clone(), stopped.epoch)), "{id}");
            assert_eq!(final_run.epoch, stopped.epoch + 1, "{id}: {runs:?}");
            assert_ne!(final_run.node, drained.0);
        }
    }
    assert!(
        !released.is_empty(),
        "the drained node ran a long task past the deadline"
    );
    // What the drained node may still start is an assignment decided
    // before it began draining (under load, the fourth long task's can
    // come after `drain_asked`); a task submitted once the drain was
    // acknowledged, it hands back unstarted if the leader or a replica
    // offers it before learning of the drain.
    let after_drain: BTreeSet<&str> = ids[4..].iter().map(String::as_str).collect();
    assert!(
        !log.iter().any(|r| r.ev == Ev::Started
            && r.node == drained.0
            && after_drain.contains(r.task.as_str())),
        "nothing submitted after the drain started on the drained node"
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_leader_mode_node_under_load_hands_back_at_the_deadline_and_every_task_finishes_once(
) {
    drain_under_load::<LeaderNode>("leader", ValidLeaderConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_leaderless_node_under_load_hands_back_at_the_deadline_and_every_task_finishes_once(
) {
    drain_under_load::<LeaderlessNode>("leaderless", LeaderlessConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_api_refuses_a_deadline_past_its_maximum_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        real::cluster::<LeaderNode>(dir.path(), 1, "leader", ValidLeaderConfig::default(), 500)
            .await;
    let client = Client::new(&nodes[0].http_addr().to_string());
    let too_long = Duration::from_millis(cohort_runtime::DRAIN_DEADLINE_MS_MAX + 1);
    match client.drain(Some(too_long)).await {
        Err(CallError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (400, "malformed"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!client.drain_status().await.unwrap().draining);
    let d = client.drain(None).await.unwrap();
    let left = d.deadline_in_ms.unwrap();
    assert!(
        left <= cohort_runtime::DRAIN_DEADLINE_MS_DEFAULT && left > 20_000,
        "{d:?}"
    );
    assert!(d.is_done(), "an idle node holds nothing");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
