//! The disk's own fsync latency while a scenario runs.
//!
//! A durable acknowledgement cannot come sooner than the fsync under it, and
//! the loopback clusters keep every node's data file on one disk: when that
//! disk stalls, every node's fsync waits at once, and each request due in
//! the stall waits with it. A lone loop of 4 KiB writes and `fdatasync` on
//! this machine, with nothing else of ours running, saw stalls of 145 to
//! 330 ms a few times in 20 s (p50 0.16 ms). The probe records them during
//! the latency scenario, beside the figures they move, so a p99 can be read
//! as the cluster's or the disk's.

use crate::real::{histogram, percentiles, Percentiles};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time between the starts of two probes, ms: a light load (one 4 KiB write
/// and fsync) that still times every stall longer than a few probes.
pub const PROBE_INTERVAL_MS: u64 = 10;

/// A probe slower than this counts as a stall of the disk, ms. The
/// latency target for a durable acknowledgement is 20 ms at the p99.
pub const STALL_MS: u64 = 20;

/// Bytes written per probe.
const PROBE_BYTES: usize = 4096;

/// The most probes kept (a run longer than this many intervals keeps
/// measuring but stops recording).
const PROBES_MAX: usize = 1_000_000;

/// What the probe saw.
#[derive(Clone, Debug, Serialize)]
pub struct DiskResult {
    /// Time between probe starts, ms.
    pub interval_ms: u64,
    /// Latency of one 4 KiB write and `fdatasync` on the nodes' disk.
    pub fsync: Percentiles,
    /// Probes slower than [`STALL_MS`].
    pub stalls: u64,
    /// Their total time, ms: how long the disk was seen stalled.
    pub stalled_ms: f64,
    /// The stalls, as (start, end) in ms from the probe's start.
    pub stall_spans_ms: Vec<(f64, f64)>,
    /// Why the probe could not run, if it could not (its figures are then empty).
    pub error: Option<String>,
}

/// A probe running on its own thread.
pub struct DiskProbe {
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<(Duration, Duration)>, String>>,
}

impl DiskProbe {
    /// Starts probing with a file in `dir` (the nodes' directory, so the
    /// same file system and disk).
    pub fn start(dir: &Path) -> DiskProbe {
        let path = dir.join("disk-probe");
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || probe(&path, started, &flag));
        DiskProbe {
            started,
            stop,
            thread,
        }
    }

    /// When the probe started: the origin of [`DiskResult::stall_spans_ms`].
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops and reports.
    pub fn finish(self) -> DiskResult {
        self.stop.store(true, Ordering::Relaxed);
        let probes = self
            .thread
            .join()
            .unwrap_or_else(|_| Err("the probe thread panicked".into()));
        summarize(probes)
    }
}

/// (start from `started`, latency) of each probe until `stop`.
fn probe(
    path: &Path,
    started: Instant,
    stop: &AtomicBool,
) -> Result<Vec<(Duration, Duration)>, String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    // Written once and synced, so each probe rewrites allocated blocks:
    // a data sync, not a metadata one, as a preallocated log's would be.
    file.write_all(&[0u8; PROBE_BYTES])
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("preparing {}: {e}", path.display()))?;
    let buf = [7u8; PROBE_BYTES];
    let interval = Duration::from_millis(PROBE_INTERVAL_MS);
    let mut probes = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        file.write_all_at(&buf, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("probing {}: {e}", path.display()))?;
        if probes.len() < PROBES_MAX {
            probes.push((t - started, t.elapsed()));
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // a stall: no burst of probes to catch up
        }
    }
    Ok(probes)
}

fn summarize(probes: Result<Vec<(Duration, Duration)>, String>) -> DiskResult {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut h = histogram();
    let (mut stalls, mut stalled_ms, mut spans) = (0, 0.0, Vec::new());
    let error = match probes {
        Ok(probes) => {
            for (at, took) in probes {
                h.saturating_record(took.as_micros() as u64);
                if took >= Duration::from_millis(STALL_MS) {
                    stalls += 1;
                    stalled_ms += ms(took);
                    spans.push((ms(at), ms(at + took)));
                }
            }
            None
        }
        Err(e) => Some(e),
    };
    DiskResult {
        interval_ms: PROBE_INTERVAL_MS,
        fsync: percentiles(&h),
        stalls,
        stalled_ms,
        stall_spans_ms: spans,
        error,
    }
}

impl DiskResult {
    /// The result of a probe that could not run.
    pub fn unavailable(reason: String) -> DiskResult {
        summarize(Err(reason))
    }

    /// Whether the span `[from_ms, to_ms]` (ms from the probe's start)
    /// overlaps a stall the probe saw.
    pub fn overlaps_stall(&self, from_ms: f64, to_ms: f64) -> bool {
        self.stall_spans_ms
            .iter()
            .any(|&(s, e)| s <= to_ms && from_ms <= e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_times_fsyncs_on_the_given_disk_and_finds_stalls_by_their_span() {
        let dir = tempfile::tempdir().unwrap();
        let probe = DiskProbe::start(dir.path());
        std::thread::sleep(Duration::from_millis(120));
        let r = probe.finish();
        assert_eq!(r.error, None);
        assert!(r.fsync.count >= 2, "{} probes in 120 ms", r.fsync.count);
        assert!(dir.path().join("disk-probe").exists());
        assert_eq!(r.stalls as usize, r.stall_spans_ms.len());

        let seen = DiskResult {
            stall_spans_ms: vec![(100.0, 250.0)],
            ..r
        };
        assert!(seen.overlaps_stall(90.0, 110.0));
        assert!(seen.overlaps_stall(240.0, 400.0));
        assert!(seen.overlaps_stall(120.0, 130.0));
        assert!(!seen.overlaps_stall(0.0, 99.0));
        assert!(!seen.overlaps_stall(251.0, 300.0));
    }

    #[test]
    fn a_probe_that_cannot_write_says_why_instead_of_reporting_figures() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("missing").join("deeper");
        let r = DiskProbe::start(&gone).finish();
        assert!(
            r.error.as_deref().unwrap_or("").contains("opening"),
            "{r:?}"
        );
        assert_eq!(r.fsync.count, 0);
    }
}
