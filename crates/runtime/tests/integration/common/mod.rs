//! A tiny mode for the runtime's tests: every node runs what it is handed,
//! persists each task before acknowledging it, and tells its peers about
//! submits and outcomes. Not fault-tolerant; it exercises every action kind.
#![allow(dead_code, clippy::disallowed_methods, clippy::disallowed_types)]

use cohort_core::{
    Action, BootError, ClientError, ClientRequest, ClientResponse, Epoch, Limits, Node, NodeId,
    NodeRng, Note, Peers, RequestId, StoreOp, Stored, Task, TaskId, TaskOutcome, TaskState, Time,
    TimerToken,
};
use cohort_runtime::{Listeners, NodeOptions, Registry, RunningNode, RuntimeConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToyMsg {
    Ping,
    Replicate { id: TaskId, task: Task },
    Decided { id: TaskId, state: TaskState },
}

pub struct ToyNode {
    id: NodeId,
    peers: Peers,
    tasks: BTreeMap<TaskId, (Task, TaskState)>,
    out: Vec<Action<ToyMsg>>,
    pings: u64,
}

const PING_EVERY: Duration = Duration::from_millis(50);

fn key(id: TaskId) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

impl ToyNode {
    fn put(&mut self, id: TaskId) {
        let value = cohort_core::encode(&self.tasks[&id]);
        self.out.push(Action::Persist(vec![StoreOp::Put {
            key: key(id),
            value,
        }]));
    }

    fn broadcast(&mut self, msg: ToyMsg) {
        for to in self.peers.others().collect::<Vec<_>>() {
            self.out.push(Action::Send {
                to,
                msg: msg.clone(),
            });
        }
    }

    fn run(&mut self, id: TaskId, epoch: Epoch) {
        let task = self.tasks[&id].0.clone();
        self.tasks.get_mut(&id).unwrap().1 = TaskState::Running {
            node: self.id,
            epoch,
        };
        self.put(id);
        self.out.push(Action::Note(Note::Assigned {
            task: id,
            epoch,
            node: self.id,
            at: cohort_core::Time::ZERO,
        }));
        self.out.push(Action::Execute { id, epoch, task });
    }
}

impl Node for ToyNode {
    type Message = ToyMsg;
    type Config = ();

    fn boot(
        peers: &Peers,
        _: &(),
        stored: &Stored,
        _rng: NodeRng,
        now: Time,
    ) -> Result<ToyNode, BootError> {
        let mut n = ToyNode {
            id: peers.id,
            peers: peers.clone(),
            tasks: BTreeMap::new(),
            out: Vec::new(),
            pings: 0,
        };
        for (k, v) in stored.scan_prefix(b"t/") {
            let id = TaskId(u128::from_be_bytes(k[2..].try_into().unwrap()));
            let rec: (Task, TaskState) = cohort_core::decode(v, usize::MAX).unwrap();
            n.tasks.insert(id, rec);
        }
        // Resume what this node was running before it stopped.
        let resume: Vec<(TaskId, Epoch)> = n
            .tasks
            .iter()
            .filter_map(|(id, (_, s))| match s {
                TaskState::Running { node, epoch } if *node == n.id => Some((*id, epoch.next())),
                _ => None,
            })
            .collect();
        for (id, epoch) in resume {
            n.run(id, epoch);
        }
        n.out.push(Action::SetTimer {
            token: TimerToken(1),
            at: now + PING_EVERY,
        });
        Ok(n)
    }

    fn handle_message(&mut self, _now: Time, _from: NodeId, msg: ToyMsg) {
        match msg {
            ToyMsg::Ping => self.pings += 1,
            ToyMsg::Replicate { id, task } => {
                if let std::collections::btree_map::Entry::Vacant(e) = self.tasks.entry(id) {
                    e.insert((task, TaskState::Pending));
                    self.put(id);
                }
            }
            ToyMsg::Decided { id, state } => {
                if let Some(rec) = self.tasks.get_mut(&id) {
                    rec.1 = state;
                    self.put(id);
                }
            }
        }
    }

    fn handle_timer(&mut self, now: Time, token: TimerToken) {
        assert_eq!(token, TimerToken(1));
        self.broadcast(ToyMsg::Ping);
        self.out.push(Action::SetTimer {
            token,
            at: now + PING_EVERY,
        });
    }

    fn handle_client(&mut self, _now: Time, request: RequestId, req: ClientRequest) {
        let reply = match req {
            ClientRequest::Submit { id, task } => match self.tasks.get(&id) {
                Some((t, _)) if *t == task => Ok(ClientResponse::Accepted { id }),
                Some(_) => Err(ClientError::IdConflict { id }),
                None => {
                    self.tasks.insert(id, (task.clone(), TaskState::Pending));
                    self.put(id);
                    self.broadcast(ToyMsg::Replicate { id, task });
                    self.out.push(Action::Reply {
                        request,
                        reply: Ok(ClientResponse::Accepted { id }),
                    });
                    self.run(id, Epoch(1));
                    return;
                }
            },
            ClientRequest::Get { id, .. } => match self.tasks.get(&id) {
                Some((_, s)) => Ok(ClientResponse::State {
                    id,
                    state: s.clone(),
                }),
                None => Err(ClientError::NotFound { id }),
            },
            ClientRequest::Cancel { id } => match self.tasks.get_mut(&id) {
                Some((_, s)) => {
                    if !s.is_final() {
                        *s = TaskState::Cancelled;
                        self.put(id);
                    }
                    Ok(ClientResponse::State {
                        id,
                        state: self.tasks[&id].1.clone(),
                    })
                }
                None => Err(ClientError::NotFound { id }),
            },
            // The toy takes no batches and keeps no history; its tests
            // send neither.
            ClientRequest::SubmitBatch { .. } | ClientRequest::Events { .. } => {
                Err(ClientError::InvalidTask {
                    reason: "the toy node takes no batches and keeps no history".into(),
                })
            }
        };
        self.out.push(Action::Reply { request, reply });
    }

    fn handle_task_finished(&mut self, _now: Time, id: TaskId, epoch: Epoch, outcome: TaskOutcome) {
        let Some((task, state)) = self.tasks.get(&id) else {
            return;
        };
        if *state
            != (TaskState::Running {
                node: self.id,
                epoch,
            })
        {
            return;
        }
        let state = match outcome {
            TaskOutcome::Success(result) => TaskState::Succeeded {
                result,
                node: self.id,
                epoch,
            },
            TaskOutcome::Failure(error) => TaskState::Failed {
                error,
                attempts: task.max_attempts.min(1),
            },
        };
        self.tasks.get_mut(&id).unwrap().1 = state.clone();
        self.put(id);
        self.out.push(Action::Note(Note::Decided {
            task: id,
            state: state.clone(),
        }));
        self.broadcast(ToyMsg::Decided { id, state });
    }

    fn actions(&mut self) -> std::vec::Drain<'_, Action<ToyMsg>> {
        self.out.drain(..)
    }

    fn id(&self) -> NodeId {
        self.id
    }
}

/// A cluster of toy nodes on loopback with their listeners reserved.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub peer_addrs: BTreeMap<NodeId, SocketAddr>,
    pub peer_listeners: BTreeMap<NodeId, TcpListener>,
    pub limits: Limits,
}

impl Cluster {
    pub async fn new(n: u64, limits: Limits) -> Cluster {
        let mut peer_addrs = BTreeMap::new();
        let mut peer_listeners = BTreeMap::new();
        for i in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            peer_addrs.insert(NodeId(i), l.local_addr().unwrap());
            peer_listeners.insert(NodeId(i), l);
        }
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            peer_addrs,
            peer_listeners,
            limits,
        }
    }

    pub fn config(&self, id: NodeId) -> RuntimeConfig {
        let peers =
            Peers::new(id, self.peer_addrs.keys().copied(), 4, self.limits.clone()).unwrap();
        let addrs = self
            .peer_addrs
            .iter()
            .filter(|(k, _)| **k != id)
            .map(|(k, v)| (*k, *v))
            .collect();
        RuntimeConfig::new("test-cluster", "toy", peers, addrs, self.dir.path())
    }

    /// Starts node `id` (its peer listener must not be taken yet, or it is rebound).
    pub async fn start(&mut self, id: NodeId, registry: Registry) -> RunningNode {
        let peer = match self.peer_listeners.remove(&id) {
            Some(l) => l,
            None => TcpListener::bind(self.peer_addrs[&id]).await.unwrap(),
        };
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = NodeOptions {
            registry,
            note_observer: None,
            rng_seed: Some(id.0),
        };
        cohort_runtime::start::<ToyNode>(self.config(id), (), options, Listeners { peer, http })
            .await
            .unwrap()
    }
}

/// Polls `f` every 10ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
