//! Settings of the `static` baseline.

use cohort_core::{NodeId, Peers};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of a `static` cluster, identical on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticConfig {
    /// The coordinator; `None` picks the lowest member id.
    pub coordinator: Option<NodeId>,
    /// How often workers heartbeat the coordinator (`T_heartbeat`).
    pub heartbeat_interval_ms: u64,
    /// A worker silent for `alpha * heartbeat_interval_ms` is declared dead.
    pub alpha: u32,
    /// Most schedule definitions and tombstones the coordinator keeps: they
    /// are kept for ever (`cohort_core::schedule::kept_for_ever`), outside
    /// retention and `tasks_retained_max`, so a new schedule past this is
    /// refused `429 overloaded` (a tombstone past twice this).
    #[serde(default = "schedules_kept_max_default")]
    pub schedules_kept_max: usize,
}

fn schedules_kept_max_default() -> usize {
    100_000
}

impl Default for StaticConfig {
    fn default() -> StaticConfig {
        StaticConfig {
            coordinator: None,
            heartbeat_interval_ms: 100,
            alpha: 5,
            schedules_kept_max: schedules_kept_max_default(),
        }
    }
}

/// An invalid [`StaticConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StaticConfigError {
    /// A period or multiplier is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The configured coordinator is not a member.
    #[error("coordinator {0} is not a member")]
    CoordinatorNotAMember(NodeId),
}

impl StaticConfig {
    /// Checks the settings against the member list.
    pub fn validate(&self, peers: &Peers) -> Result<(), StaticConfigError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(StaticConfigError::Zero("heartbeat_interval_ms"));
        }
        if self.alpha == 0 {
            return Err(StaticConfigError::Zero("alpha"));
        }
        if self.schedules_kept_max == 0 {
            return Err(StaticConfigError::Zero("schedules_kept_max"));
        }
        if let Some(c) = self.coordinator {
            if !peers.members.contains(&c) {
                return Err(StaticConfigError::CoordinatorNotAMember(c));
            }
        }
        Ok(())
    }

    /// `T_heartbeat`.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// `T_timeout = alpha * T_heartbeat`.
    pub fn worker_timeout(&self) -> Duration {
        self.heartbeat_interval() * self.alpha
    }

    /// Who coordinates among `peers`.
    pub fn coordinator_for(&self, peers: &Peers) -> NodeId {
        self.coordinator.unwrap_or(peers.members[0])
    }
}
