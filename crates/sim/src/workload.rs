//! What the simulated handlers run: a task's payload says how long its
//! handler takes; a successful run returns a hash of who ran it under which
//! epoch, so two executions never return the same bytes.

use crate::trace::Fnv64;
use cohort_core::{Epoch, NodeId, TaskId};
use serde::{Deserialize, Serialize};

/// The payload of every simulated task, encoded with postcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimPayload {
    /// How long the handler runs.
    pub duration_ms: u64,
    /// The task's arrival number, so equal durations still differ.
    pub seq: u64,
}

impl SimPayload {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        cohort_core::encode(self)
    }

    /// Reads payload bytes back; `None` if they are not a `SimPayload`.
    pub fn decode(bytes: &[u8]) -> Option<SimPayload> {
        cohort_core::decode(bytes, 64).ok()
    }
}

/// The result bytes of a successful execution of `task` by `node` under `epoch`.
pub fn result_bytes(task: TaskId, epoch: Epoch, node: NodeId) -> Vec<u8> {
    let mut h = Fnv64::new();
    h.bytes(&task.0.to_le_bytes());
    h.u64(epoch.0);
    h.u64(node.0);
    h.finish().to_le_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_results_tell_executions_apart() {
        let p = SimPayload {
            duration_ms: 42,
            seq: 7,
        };
        assert_eq!(SimPayload::decode(&p.encode()), Some(p));
        assert_eq!(SimPayload::decode(&[0xff; 30]), None);
        let t = TaskId(99);
        assert_ne!(
            result_bytes(t, Epoch(1), NodeId(1)),
            result_bytes(t, Epoch(2), NodeId(1))
        );
        assert_ne!(
            result_bytes(t, Epoch(1), NodeId(1)),
            result_bytes(t, Epoch(1), NodeId(2))
        );
    }
}
