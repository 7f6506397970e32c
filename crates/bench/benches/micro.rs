//! Micro-benchmarks of hot paths: codec encode/decode of a task, rendezvous
//! placement over 5,000 members. A plain timing loop (`harness = false`),
//! not criterion: criterion's build cost on this shared 2-core machine did
//! not fit. Run with `cargo bench -p cohort-bench`; `cargo test` does not
//! run it (it is only built by `--all-targets`).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use cohort_core::{NodeId, Task, TaskId};
use std::hint::black_box;
use std::time::Instant;

/// Runs `f` repeatedly for about 300 ms and prints the mean time per call.
fn bench(name: &str, mut f: impl FnMut()) {
    for _ in 0..100 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_millis() < 300 {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{name:<44} {ns:>12.0} ns/iter ({n} iterations)");
}

fn main() {
    let task = Task {
        kind: "echo".into(),
        payload: vec![7u8; 256],
        timeout_ms: 30_000,
        max_attempts: 3,
    };
    let bytes = cohort_core::encode(&task);
    bench("codec: encode task (256 B payload)", || {
        black_box(cohort_core::encode(black_box(&task)));
    });
    bench("codec: decode task (256 B payload)", || {
        let t: Task = cohort_core::decode(black_box(&bytes), 1 << 20).expect("decodes");
        black_box(t);
    });
    let ring: Vec<NodeId> = (1..=5_000).map(NodeId).collect();
    let mut id = 0u128;
    bench("placement: 3 replicas over 5,000 members", || {
        id += 1;
        black_box(cohort_leaderless::placement::replicas(
            TaskId(id),
            black_box(&ring),
            3,
        ));
    });
}
