//! Counters and histograms of one node, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS_SECONDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Default)]
struct Inner {
    /// (name, labels) -> value
    counters: BTreeMap<(&'static str, String), u64>,
    gauges: BTreeMap<(&'static str, String), i64>,
    histograms: BTreeMap<&'static str, Histogram>,
}

/// One node's metrics. Cheap enough for every message; shared by the event
/// loop, the transport and the HTTP API.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn help(name: &str) -> &'static str {
    match name {
        "cohort_peer_messages_sent_total" => "Peer messages written to a connection, by peer.",
        "cohort_peer_messages_received_total" => "Peer messages received and decoded, by peer.",
        "cohort_peer_messages_dropped_total" => {
            "Peer messages dropped before sending (unreliable by contract), by reason."
        }
        "cohort_peer_bytes_sent_total" => "Bytes of peer frames written.",
        "cohort_peer_bytes_received_total" => "Bytes of peer frames read.",
        "cohort_peer_connections_rejected_total" => {
            "Peer connections closed for a reason, by reason."
        }
        "cohort_peer_connects_total" => "Outbound peer connections established.",
        "cohort_forwards_total" => "Client requests forwarded over the peer transport, by outcome: sent, timed_out, unmatched_reply (this node's), served, refused_busy (peers').",
        "cohort_messages_sent_by_type_total" => "Peer messages handed to the transport, by type.",
        "cohort_messages_received_by_type_total" => "Peer messages received, by type.",
        "cohort_client_submit_seconds" => "Submit latency inside the node: request in to reply out (includes fsync and, by mode, replication).",
        "cohort_client_get_seconds" => "Read latency inside the node.",
        "cohort_client_cancel_seconds" => "Cancel latency inside the node.",
        "cohort_notes_total" => "Task decisions stated by the core, by note.",
        "cohort_persist_batches_total" => "Storage transactions committed (each one fsync).",
        "cohort_persist_actions_total" => "Persist actions of the core (several share one fsync).",
        "cohort_persist_ops_total" => "Storage operations written.",
        "cohort_inputs_total" => "Inputs handed to the core, by kind.",
        "cohort_client_replies_total" => "Client replies from the core, by outcome.",
        "cohort_tasks_executed_total" => "Handler executions finished, by outcome.",
        "cohort_tasks_running" => "Handler executions in progress.",
        "cohort_client_requests_pending" => "Client requests handed to the core, not yet answered.",
        "cohort_queue_depth" => "Inputs waiting for the event loop, by queue.",
        "cohort_timers_pending" => "Timers set by the core and not yet due.",
        "cohort_fsync_seconds" => "Latency of a storage commit including fsync.",
        "cohort_task_run_seconds" => "Run time of task handlers.",
        "cohort_tasks" => "Tasks this node holds, by state (every task in leader mode, its replicas' in leaderless mode).",
        "cohort_protocol_events_total" => {
            "Protocol events counted by the core since boot: elections and leader changes (leader mode), suspicions and down declarations (leaderless mode), by event."
        }
        "cohort_shutdowns_total" => "Graceful shutdowns, by whether the hand-over completed or the grace period ran out.",
        _ => "cohort metric.",
    }
}

impl Metrics {
    /// Adds `by` to counter `name{labels}`; `labels` is Prometheus label text
    /// like `peer="n2"` or empty.
    pub fn add(&self, name: &'static str, labels: &str, by: u64) {
        let mut g = self.inner.lock().expect("metrics lock");
        // Called for every message and request: an existing counter is
        // found without allocating its key.
        if let Some(v) = g.counters.get_mut(&(name, labels) as &dyn Key) {
            *v += by;
            return;
        }
        *g.counters.entry((name, labels.to_string())).or_default() += by;
    }

    /// Increments counter `name{labels}`.
    pub fn inc(&self, name: &'static str, labels: &str) {
        self.add(name, labels, 1);
    }

    /// Sets counter `name{labels}` to a count kept elsewhere (the core's
    /// own counters); such a count only grows, so the counter does too.
    pub fn set_counter(&self, name: &'static str, labels: &str, value: u64) {
        let mut g = self.inner.lock().expect("metrics lock");
        g.counters.insert((name, labels.to_string()), value);
    }

    /// Sets gauge `name{labels}`.
    pub fn set(&self, name: &'static str, labels: &str, value: i64) {
        let mut g = self.inner.lock().expect("metrics lock");
        if let Some(v) = g.gauges.get_mut(&(name, labels) as &dyn Key) {
            *v = value;
            return;
        }
        g.gauges.insert((name, labels.to_string()), value);
    }

    /// Records one observation of histogram `name`.
    pub fn observe(&self, name: &'static str, d: Duration) {
        let s = d.as_secs_f64();
        let mut g = self.inner.lock().expect("metrics lock");
        let h = g.histograms.entry(name).or_default();
        for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
            if s <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum_seconds += s;
    }

    /// The value of counter `name{labels}` (0 if never touched).
    pub fn counter(&self, name: &'static str, labels: &str) -> u64 {
        let g = self.inner.lock().expect("metrics lock");
        g.counters
            .get(&(name, labels.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The sum of counter `name` over all its labels.
    pub fn counter_sum(&self, name: &'static str) -> u64 {
        let g = self.inner.lock().expect("metrics lock");
        g.counters
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Everything, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let g = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), v) in &g.counters {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", help(name));
                last = name;
            }
            let _ = writeln!(out, "{name}{} {v}", braces(labels));
        }
        last = "";
        for ((name, labels), v) in &g.gauges {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} gauge", help(name));
                last = name;
            }
            let _ = writeln!(out, "{name}{} {v}", braces(labels));
        }
        for (name, h) in &g.histograms {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", help(name));
            for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum_seconds);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        out
    }
}

/// A counter's key, borrowed or owned, so a lookup needs no allocation.
trait Key {
    fn key(&self) -> (&str, &str);
}

impl Key for (&'static str, String) {
    fn key(&self) -> (&str, &str) {
        (self.0, &self.1)
    }
}

impl Key for (&'static str, &str) {
    fn key(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn Key + 'a> for (&'static str, String) {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn Key + '_ {}

impl PartialOrd for dyn Key + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Key + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histogram_buckets() {
        let m = Metrics::default();
        m.inc("cohort_peer_messages_sent_total", "peer=\"n2\"");
        m.add("cohort_peer_messages_sent_total", "peer=\"n3\"", 4);
        m.observe("cohort_fsync_seconds", Duration::from_micros(700));
        let text = m.render();
        assert!(text.contains("# TYPE cohort_peer_messages_sent_total counter"));
        assert!(text.contains("cohort_peer_messages_sent_total{peer=\"n3\"} 4"));
        assert!(text.contains("cohort_fsync_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("cohort_fsync_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("cohort_fsync_seconds_bucket{le=\"+Inf\"} 1"));
        assert_eq!(m.counter_sum("cohort_peer_messages_sent_total"), 5);
    }
}
