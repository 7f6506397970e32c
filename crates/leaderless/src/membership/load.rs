//! Node load, spread through foca's custom broadcasts.
//!
//! Each node broadcasts `(node, seq, running, capacity, labels, waiting, pending)` when its load
//! changes (and at least every `load_report_interval_ms`); foca piggybacks
//! the reports on its SWIM traffic. A report replaces every older report of
//! the same node, so stale loads stop spreading.

use cohort_core::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The largest encoded load report accepted: the fixed fields and at most
/// [`cohort_core::task::LABELS_BYTES_MAX`] bytes of labels, each with its
/// length prefix.
pub const LOAD_REPORT_BYTES_MAX: usize =
    64 + cohort_core::task::LABELS_BYTES_MAX + 2 * cohort_core::task::TASK_LABELS_MAX;

/// One node's load at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The node.
    pub node: NodeId,
    /// Grows with each report of the node (per boot: `(generation, n)`).
    pub seq: (u64, u64),
    /// Tasks it runs.
    pub running: u32,
    /// Tasks it can run at once.
    pub capacity: u32,
    /// The worker labels it carries: replicas offer it pending tasks that
    /// name them.
    pub labels: Vec<String>,
    /// The highest priority among the ready tasks it would offer but found
    /// no node with room for (their replicas are full): a node with a free
    /// slot holds it for such a task's offer rather than start a task of
    /// lower priority (`priority_hold_ms`).
    pub waiting: Option<i8>,
    /// The highest priority among the ready pending tasks it replicates
    /// and can run: a task without labels is offered to it only when of a
    /// higher priority (it has work of its own to fill a free slot).
    pub pending: Option<i8>,
}

impl LoadReport {
    /// Whether the node runs as many tasks as it can.
    pub fn is_full(&self) -> bool {
        self.running >= self.capacity
    }
}

/// The latest report of each node. Shared between foca's broadcast handler
/// (which writes it) and the node (which reads it); one thread only.
pub type LoadTable = Arc<Mutex<BTreeMap<NodeId, LoadReport>>>;

/// A report's key for foca: a newer report of a node invalidates older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadKey {
    node: NodeId,
    seq: (u64, u64),
}

impl foca::Invalidates for LoadKey {
    fn invalidates(&self, other: &LoadKey) -> bool {
        self.node == other.node && self.seq >= other.seq
    }
}

/// A malformed load report. The packet's remaining broadcasts are dropped.
#[derive(Debug, thiserror::Error)]
#[error("malformed load report: {0}")]
pub struct LoadError(String);

/// foca's handler for load reports.
pub struct LoadHandler {
    table: LoadTable,
    members_max: usize,
}

impl LoadHandler {
    /// A handler writing into `table`, holding at most `members_max` nodes.
    pub fn new(table: LoadTable, members_max: usize) -> LoadHandler {
        LoadHandler { table, members_max }
    }
}

impl<T> foca::BroadcastHandler<T> for LoadHandler {
    type Key = LoadKey;
    type Error = LoadError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&T>,
    ) -> Result<Option<LoadKey>, LoadError> {
        let report: LoadReport = cohort_core::decode(data, LOAD_REPORT_BYTES_MAX)
            .map_err(|e| LoadError(e.to_string()))?;
        cohort_core::task::valid_labels(&report.labels).map_err(LoadError)?;
        let mut table = self.table.lock().expect("single-threaded: never poisoned");
        let newer = table
            .get(&report.node)
            .is_none_or(|known| report.seq > known.seq);
        if !newer {
            return Ok(None);
        }
        if !table.contains_key(&report.node) && table.len() >= self.members_max {
            return Ok(None);
        }
        let key = LoadKey {
            node: report.node,
            seq: report.seq,
        };
        table.insert(report.node, report);
        Ok(Some(key))
    }
}
