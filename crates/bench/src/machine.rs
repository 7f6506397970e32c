//! The machine a run measured: cores, kernel, CPU model.

use serde::Serialize;

/// What the figures were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs the process may use.
    pub cores: usize,
    /// `model name` from `/proc/cpuinfo` ("unknown" elsewhere).
    pub cpu_model: String,
    /// `/proc/sys/kernel/osrelease` ("unknown" elsewhere).
    pub kernel: String,
    /// `MemTotal` from `/proc/meminfo`, in KiB (0 if unknown).
    pub memory_kib: u64,
    /// Target OS and architecture.
    pub os_arch: String,
}

impl Machine {
    /// Reads the running machine.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = field(&meminfo, "MemTotal")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            memory_kib,
            os_arch: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// `MemAvailable` from `/proc/meminfo`, in KiB, if known.
pub fn available_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    field(&meminfo, "MemAvailable")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size of this process now, in KiB (`VmRSS`), if known.
pub fn rss_kib() -> Option<u64> {
    status_kib("VmRSS")
}

/// Peak resident set size since the last [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM")
}

/// Resets the peak RSS counter (Linux `clear_refs` 5). Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    field(&s, key)?.split_whitespace().next()?.parse().ok()
}
