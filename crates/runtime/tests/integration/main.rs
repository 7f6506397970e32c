//! The runtime's integration tests, built as one binary: each file was its
//! own binary once, and linking tokio, axum and rustls into nineteen of them
//! took about a quarter of CI's build time. Run one file's tests with
//! `cargo test -p cohort-runtime --test integration FILE::`.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;
mod real;

mod cluster;
mod dedupe;
mod drain;
mod fuzz_corpus;
mod heartbeats;
mod hostile;
mod idempotency;
mod kind_policy;
mod labels;
mod leader_mode;
mod leaderless_mode;
mod limits;
mod manual_retry;
mod priority;
mod retention;
mod retry_policy;
mod ring_api;
mod schedules;
mod security;
mod static_mode;
mod task_events;
mod transport;
