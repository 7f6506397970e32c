//! cohort's single-leader mode (`--mode leader`).
//!
//! Two layers, each a deterministic sans-IO state machine:
//!
//! - [`raft`]: the consensus core written here (pre-vote, check-quorum,
//!   pipelined replication with fast log repair, snapshots, ReadIndex,
//!   leader transfer, single-server membership change with learners). Time
//!   and the RNG are inputs; its output is a [`raft::Ready`] batch:
//!   persist, then send, then apply.
//! - [`scheduler`]: the replicated state machine applied from the log
//!   (tasks, assignments with fencing epochs, worker liveness).
//!
//! [`LeaderNode`] glues them onto the [`cohort_core::Node`] contract.
//!
//! A one-node cluster, driven by hand: the node asks for a timer, elects
//! itself when it fires, and then acknowledges a submit only after the
//! entry is persisted (the `Persist` precedes the `Reply` in the batch).
//!
//! ```
//! use cohort_core::*;
//! use cohort_leader::{LeaderNode, ValidLeaderConfig};
//! use rand::SeedableRng;
//!
//! let peers = Peers::new(NodeId(1), [NodeId(1)], 4, Limits::default()).unwrap();
//! let rng = NodeRng::seed_from_u64(7);
//! let config = ValidLeaderConfig::default();
//! let mut node = LeaderNode::boot(&peers, &config, &Stored::new(), rng, Time::ZERO).unwrap();
//! let mut store = Stored::new();
//! let mut timers = Vec::new();
//! let mut carry_out = |node: &mut LeaderNode, timers: &mut Vec<(Time, TimerToken)>| {
//!     let mut out = Vec::new();
//!     for action in node.actions() {
//!         match action {
//!             Action::Persist(ops) => store.apply(&ops),
//!             Action::SetTimer { token, at } => timers.push((at, token)),
//!             other => out.push(other),
//!         }
//!     }
//!     out
//! };
//! carry_out(&mut node, &mut timers);
//! while node.raft_status().role != cohort_leader::raft::Role::Leader {
//!     timers.sort();
//!     let (at, token) = timers.remove(0);
//!     node.handle_timer(at, token);
//!     carry_out(&mut node, &mut timers);
//! }
//! let task = Task { kind: "echo".into(), payload: b"hi".to_vec(), timeout_ms: 1_000, max_attempts: 3,
//!                   not_before: cohort_core::Time::ZERO, retry: Default::default(),
//!                   schedule_to_start_ms: 0, priority: 0,
//!                   heartbeat_timeout_ms: 0, labels: vec![], limit: None,
//!                   lease_grace_ms: 0, retry_of: None };
//! node.handle_client(Time::from_millis(400), RequestId(1), ClientRequest::Submit { id: TaskId(1), task });
//! let out = carry_out(&mut node, &mut timers);
//! assert!(out.contains(&Action::Reply {
//!     request: RequestId(1),
//!     reply: Ok(ClientResponse::Accepted { id: TaskId(1) }),
//! }));
//! ```
#![deny(missing_docs)]

pub mod invariants;
pub mod node;
pub mod raft;
pub mod scheduler;

pub use invariants::RaftInvariants;
pub use node::{ConfigError, LeaderConfig, LeaderMsg, LeaderNode, ValidLeaderConfig};
