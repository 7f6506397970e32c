//! The fault plan: rates and durations drawn from the seed, printed with
//! every report so a failing run says what it was subjected to.

use crate::config::FaultKinds;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// The fault settings of one run, drawn from its seed for the enabled
/// kinds. Disabled kinds are zero (or `None`). Times are microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Probability that one message is lost (0..10 %).
    pub loss: f64,
    /// Probability that one message is delivered twice (0..5 %).
    pub duplicate: f64,
    /// Fixed part of every message latency (1–5 ms).
    pub latency_base_us: u64,
    /// Mean of the exponential tail added to every latency.
    pub latency_tail_us: u64,
    /// Uniform jitter on top (wide when reordering, so messages overtake).
    pub jitter_us: u64,
    /// Whether every link delivers in send order.
    pub fifo: bool,
    /// Partitions: mean gap between two, and mean duration.
    pub partition: Option<Recurring>,
    /// Crashes: mean gap between two, and mean downtime.
    pub crash: Option<Recurring>,
    /// Pauses: mean gap between two, and mean duration (100 ms–3 s).
    pub pause: Option<Recurring>,
    /// Shortest fsync.
    pub fsync_min_us: u64,
    /// Longest fsync.
    pub fsync_max_us: u64,
}

/// A fault that comes back: exponential gaps of mean `every_us`, each one
/// lasting uniformly between `lasts_min_us` and `lasts_max_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recurring {
    /// Mean gap between two starts.
    pub every_us: u64,
    /// Shortest duration.
    pub lasts_min_us: u64,
    /// Longest duration.
    pub lasts_max_us: u64,
}

impl FaultPlan {
    /// Draws a plan. Every setting is drawn whether or not its kind is
    /// enabled, so enabling one kind does not shift the others.
    pub fn draw(rng: &mut ChaCha8Rng, kinds: &FaultKinds) -> FaultPlan {
        let loss = rng.gen_range(0.0..0.10);
        let duplicate = rng.gen_range(0.0..0.05);
        let latency_base_us = rng.gen_range(1_000..=5_000);
        let latency_tail_us = rng.gen_range(100..=3_000);
        let jitter_us = rng.gen_range(5_000..=30_000);
        let partition = Recurring {
            every_us: rng.gen_range(1_000_000..=8_000_000),
            lasts_min_us: 300_000,
            lasts_max_us: rng.gen_range(500_000..=5_000_000),
        };
        let crash = Recurring {
            every_us: rng.gen_range(2_000_000..=10_000_000),
            lasts_min_us: 100_000,
            lasts_max_us: rng.gen_range(300_000..=5_000_000),
        };
        let pause = Recurring {
            every_us: rng.gen_range(2_000_000..=10_000_000),
            lasts_min_us: 100_000,
            lasts_max_us: rng.gen_range(300_000..=3_000_000),
        };
        let fsync_max_us = rng.gen_range(100..=5_000);
        FaultPlan {
            loss: if kinds.loss { loss } else { 0.0 },
            duplicate: if kinds.duplicate { duplicate } else { 0.0 },
            latency_base_us,
            latency_tail_us,
            jitter_us: if kinds.reorder { jitter_us } else { 0 },
            fifo: !kinds.reorder,
            partition: kinds.partition.then_some(partition),
            crash: kinds.crash.then_some(crash),
            pause: kinds.pause.then_some(pause),
            fsync_min_us: 100,
            fsync_max_us,
        }
    }
}

fn ms(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else {
        format!("{:.1}ms", us as f64 / 1e3)
    }
}

impl fmt::Display for Recurring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "every~{} for {}-{}",
            ms(self.every_us),
            ms(self.lasts_min_us),
            ms(self.lasts_max_us)
        )
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss={:.2}% dup={:.2}% latency={}+exp({}) jitter={} {} fsync={}-{}",
            self.loss * 100.0,
            self.duplicate * 100.0,
            ms(self.latency_base_us),
            ms(self.latency_tail_us),
            ms(self.jitter_us),
            if self.fifo { "fifo" } else { "reorder" },
            ms(self.fsync_min_us),
            ms(self.fsync_max_us),
        )?;
        let kinds = [
            ("partition", self.partition),
            ("crash", self.crash),
            ("pause", self.pause),
        ];
        for (name, r) in kinds {
            match r {
                Some(r) => write!(f, " {name}={r}")?,
                None => write!(f, " {name}=off")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn disabled_kinds_draw_nothing_and_the_plan_prints_them_off() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let p = FaultPlan::draw(&mut rng, &FaultKinds::NONE);
        assert_eq!(p.loss, 0.0);
        assert_eq!(p.duplicate, 0.0);
        assert!(p.fifo);
        assert_eq!(p.crash, None);
        let s = p.to_string();
        assert!(s.contains("crash=off"), "{s}");
        assert!(s.contains("fifo"), "{s}");
    }

    #[test]
    fn enabled_kinds_are_drawn_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let p = FaultPlan::draw(&mut rng, &FaultKinds::ALL);
        assert!(p.loss < 0.10);
        assert!(p.duplicate < 0.05);
        assert!(!p.fifo);
        let pause = p.pause.expect("pause enabled");
        assert!(pause.lasts_min_us >= 100_000 && pause.lasts_max_us <= 3_000_000);
        assert!(p.to_string().contains("crash=every~"));
    }
}
