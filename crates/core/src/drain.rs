//! Draining a node: it takes no new work, lets what it runs finish until a
//! deadline, then hands back what is left so other nodes run it.
//!
//! Modes that drain (leader, leaderless) implement [`crate::Node::begin_drain`]
//! and [`crate::Node::drain_status`]; the others keep the defaults, which
//! refuse with [`DrainRefusal::NotSupported`]. A drain lives in memory only:
//! a node that restarts is not draining (the runtime drains before a
//! graceful shutdown, and a restarted node is a fresh worker).

use crate::ids::TaskId;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// Why a drain was not started. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DrainRefusal {
    /// This node's mode cannot drain.
    #[error("this mode cannot drain a node; draining exists in leader and leaderless modes")]
    NotSupported,
}

/// Where a draining node stands; see [`crate::Node::drain_status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// When what is still running is handed back.
    pub deadline: Time,
    /// Whether the deadline has passed (and the hand-back begun).
    pub handing_back: bool,
    /// The tasks this node still holds: running, or finished with a
    /// result not yet decided, or handed back with the hand-back not yet
    /// decided. Ascending, at most [`DRAIN_HELD_LISTED_MAX`] of them.
    pub held: Vec<TaskId>,
    /// How many tasks it holds in all (`held` may list fewer).
    pub held_count: usize,
}

impl DrainStatus {
    /// Whether the drain is over: nothing is held any more. The node takes
    /// no new work still; stopping it now leaves nothing to reclaim.
    pub fn is_done(&self) -> bool {
        self.held_count == 0
    }
}

/// Most task ids a [`DrainStatus`] lists (the count is always exact).
pub const DRAIN_HELD_LISTED_MAX: usize = 100;

/// A [`DrainStatus`] from the ids held (ascending and deduplicated by the
/// caller) and whether the deadline has passed.
pub fn drain_status(
    deadline: Time,
    handing_back: bool,
    held: impl IntoIterator<Item = TaskId>,
) -> DrainStatus {
    let mut listed = Vec::new();
    let mut count = 0usize;
    for id in held {
        if listed.len() < DRAIN_HELD_LISTED_MAX {
            listed.push(id);
        }
        count += 1;
    }
    DrainStatus {
        deadline,
        handing_back,
        held: listed,
        held_count: count,
    }
}
