//! `leaderless`: every node is equal. Each task lives on `R` replicas picked
//! by rendezvous hashing over the ring membership; a submit is acknowledged
//! once `W` of them persisted it; every change of a task's state (claim,
//! re-claim, result, cancel) is a compare-and-set decided by single-decree
//! Paxos among its replicas; SWIM (the `foca` crate) tells who is live, and
//! the first live replica in preference order runs the task.
//!
//! Layout:
//! - [`placement`]: rendezvous hashing, preference lists.
//! - [`record`]: what a replica stores per task (value + acceptor state).
//! - [`retention`]: which final records a replica purges (by time and
//!   count), and the tombstones they leave.
//! - [`permit`]: concurrency and rate limits, one permit record per key.
//! - [`ring`]: the ring membership, changed by Paxos among the ring.
//! - [`paxos`]: ballots, the acceptor, the proposer.
//! - [`membership`]: foca driven through the node contract.
//! - [`tasks`]: client operations waiting on replicas (quorum write, read).
//! - [`batch`]: batch submits fanned out into one submit per task.
//! - [`node`]: [`LeaderlessNode`], the [`cohort_core::Node`] of this mode.
//! - [`config`]: [`LeaderlessConfig`], validated.
//! - [`operator`]: [`RingOperator`], ring changes scripted for simulated runs.
//!
//! `ALGORITHM.md` next to this crate's `Cargo.toml` explains the protocols
//! and why they are safe.
#![deny(missing_docs)]

pub mod active;
pub mod batch;
pub mod config;
pub mod membership;
pub mod message;
pub mod node;
pub mod operator;
pub mod paxos;
pub mod permit;
pub mod placement;
pub mod record;
pub mod retention;
pub mod ring;
pub mod tasks;

pub mod invariants;
pub use config::{LeaderlessConfig, LeaderlessConfigError};
pub use invariants::LeaderlessInvariants;
pub use message::LeaderlessMessage;
pub use node::{LeaderlessNode, RingError, StealError};
pub use operator::RingOperator;
pub use ring::{Ring, RingChange};
