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
#![deny(missing_docs)]

pub mod node;
pub mod raft;
pub mod scheduler;

pub use node::{ConfigError, LeaderConfig, LeaderMsg, LeaderNode, ValidLeaderConfig};
