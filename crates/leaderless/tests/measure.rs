//! Measurements, asserted against stated bounds and printed: how long from a
//! node's crash until every live node marks it down, and until every task
//! it ran is claimed again.
//!
//! More seeds: `SEEDS=1000 cargo test --release -p cohort-leaderless --test measure -- --nocapture`.

mod common;

use cohort_core::{Epoch, NodeId, Note, TaskId, Time};
use cohort_leaderless::LeaderlessConfig;
use common::{tid, Sim};
use rand::{Rng, SeedableRng};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty());
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// One crash: `(ms until every live node marks the victim down, ms until
/// every task the victim ran is assigned again)`.
fn crash_once(seed: u64) -> (u64, u64) {
    let mut pick = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut sim = Sim::new(seed, 5, LeaderlessConfig::default());
    sim.run_for(1_000);
    let ids: Vec<TaskId> = (0..12).map(|i| tid(seed * 100 + i)).collect();
    for &id in &ids {
        sim.handlers.hang.insert(id);
        let at = NodeId(pick.gen_range(1..=5));
        sim.submit(at, id, b"m");
    }
    assert!(sim.run_until(2_000, |s| ids
        .iter()
        .all(|&id| !s.executions_of(id).is_empty())));
    let victim = NodeId(pick.gen_range(1..=5));
    let owned: Vec<TaskId> = ids
        .iter()
        .copied()
        .filter(|&id| sim.executions_of(id)[0].0 == victim)
        .collect();
    let t0 = sim.now;
    sim.crash(victim);
    let live: Vec<NodeId> = sim
        .members()
        .iter()
        .copied()
        .filter(|&m| m != victim)
        .collect();
    let detected = |s: &Sim| {
        live.iter()
            .map(|&m| {
                s.node(m)
                    .downs()
                    .iter()
                    .find(|(n, t)| *n == victim && *t >= t0)
                    .map(|(_, t)| *t)
            })
            .collect::<Option<Vec<Time>>>()
            .map(|ts| ts.into_iter().max().expect("live nodes"))
    };
    let reclaimed = |s: &Sim| {
        owned
            .iter()
            .map(|&id| {
                s.notes.iter().find_map(|(t, _, n)| match n {
                    Note::Assigned { task, epoch, .. } if *task == id && *epoch == Epoch(2) => {
                        Some(*t)
                    }
                    _ => None,
                })
            })
            .collect::<Option<Vec<Time>>>()
            .map(|ts| ts.into_iter().max().unwrap_or(t0))
    };
    assert!(
        sim.run_until(10_000, |s| detected(s).is_some() && reclaimed(s).is_some()),
        "seed {seed}: crash of {victim} not handled within 10 s"
    );
    let down_ms = detected(&sim)
        .expect("checked")
        .saturating_since(t0)
        .as_millis() as u64;
    let reclaim_ms = reclaimed(&sim)
        .expect("checked")
        .saturating_since(t0)
        .as_millis() as u64;
    (down_ms, reclaim_ms)
}

#[test]
fn a_crashed_node_is_marked_down_everywhere_and_its_tasks_reclaimed_within_bounds() {
    let seeds = env_u64("SEEDS", 40);
    let mut downs = Vec::new();
    let mut reclaims = Vec::new();
    for seed in 0..seeds {
        let (d, r) = crash_once(seed);
        downs.push(d);
        reclaims.push(r);
    }
    downs.sort_unstable();
    reclaims.sort_unstable();
    eprintln!(
        "{seeds} crashes at 5 nodes (probe {} ms, suspect→down {} ms): marked down everywhere p50={} p99={} max={} ms; tasks re-claimed p50={} p99={} max={} ms",
        LeaderlessConfig::default().swim_probe_period_ms,
        LeaderlessConfig::default().swim_suspect_to_down_ms,
        percentile(&downs, 0.5),
        percentile(&downs, 0.99),
        downs[downs.len() - 1],
        percentile(&reclaims, 0.5),
        percentile(&reclaims, 0.99),
        reclaims[reclaims.len() - 1],
    );
    // Stated bound: a few probe periods plus the suspicion timeout.
    assert!(*downs.last().expect("seeds") <= 3_000, "{downs:?}");
    assert!(*reclaims.last().expect("seeds") <= 3_500, "{reclaims:?}");
}

/// Down notifications about nodes that never went down (every one here is
/// a false positive), summed over every observer, with 5% message loss and
/// node 1 CPU-starved (each of its inputs delayed up to `starved_ms`).
/// Returns (false positives, observer node-hours, node 1's peak local health).
fn false_positives(
    seed: u64,
    local_health_max: u32,
    starved_ms: u64,
    run_ms: u64,
) -> (usize, f64, u32) {
    let config = LeaderlessConfig {
        local_health_max,
        ..LeaderlessConfig::default()
    };
    let mut sim = Sim::new(seed, 5, config);
    sim.loss_ppm = 50_000;
    if starved_ms > 0 {
        sim.slow_us.insert(NodeId(1), starved_ms * 1000);
    }
    sim.run_for(run_ms);
    let fps: usize = sim
        .members()
        .iter()
        .map(|&m| sim.node(m).downs().len())
        .sum();
    let node_hours = 5.0 * run_ms as f64 / 3_600_000.0;
    (fps, node_hours, sim.node(NodeId(1)).local_health().1)
}

#[test]
fn local_health_cuts_false_positives_caused_by_a_starved_node() {
    let seeds = env_u64("SEEDS", 30);
    let run_ms = env_u64("RUN_MS", 60_000);
    let mut rows = Vec::new();
    for (label, lhm, starved) in [
        ("5% loss, healthy, no local health", 0, 0),
        ("5% loss, healthy, local health", 8, 0),
        ("5% loss, n1 starved, no local health", 0, 1_000),
        ("5% loss, n1 starved, local health", 8, 1_000),
    ] {
        let (mut fps, mut hours, mut peak) = (0, 0.0, 0);
        for seed in 0..seeds {
            let (f, h, p) = false_positives(seed, lhm, starved, run_ms);
            fps += f;
            hours += h;
            peak = peak.max(p);
        }
        eprintln!(
            "{label}: {fps} false down notices in {hours:.2} node-hours = {:.1} per node-hour (n1 local health peak {peak})",
            fps as f64 / hours
        );
        rows.push((fps, peak));
    }
    assert_eq!(rows[2].1, 0, "off means off");
    assert!(rows[3].1 > 0, "the starved node notices it misses acks");
    assert!(
        rows[3].0 < rows[2].0,
        "local health must cut the false positives: {} with vs {} without",
        rows[3].0,
        rows[2].0
    );
}
