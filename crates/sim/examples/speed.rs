//! Measures simulator speed: 5-node, 60-simulated-second runs (30 s safety
//! with every fault, 30 s liveness) of the test coordinator node with
//! 50 ms heartbeats between every pair of nodes, one run per seed.
//!
//! `cargo run --release -p cohort-sim --example speed -- [seeds]`
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../tests/support/mod.rs"]
mod support;

use cohort_sim::{run, NoInvariants, SimConfig};
use std::time::Instant;
use support::{CoordConfig, CoordNode};

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("a number of seeds"))
        .unwrap_or(20);
    let mut node = CoordConfig::correct();
    node.heartbeat_ms = Some(50);
    let start = Instant::now();
    let (mut events, mut simulated_ms, mut failed) = (0u64, 0u64, 0u64);
    for seed in 0..seeds {
        let mut c = SimConfig::new(seed, 5);
        // Run the full 60 s: no early stop once every task is final.
        c.stop_when_done = false;
        let r = run::<CoordNode>(&c, &node, &mut NoInvariants);
        events += r.events;
        simulated_ms += r.simulated_ms;
        failed += u64::from(!r.passed());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds, {failed} failed: {events} events, {:.1} simulated s/seed, {:.2} s wall: \
         {:.0} events/s, {:.2} seeds/s",
        simulated_ms as f64 / 1e3 / seeds as f64,
        secs,
        events as f64 / secs,
        seeds as f64 / secs
    );
}
