//! Ring changes asked by an operator: the part of the node contract that
//! lets a driver show a mode's ring membership and ask for a change.
//!
//! Only modes with a ring (leaderless) answer; the others keep the
//! defaults of [`crate::Node::ring_view`] and [`crate::Node::change_ring`],
//! which refuse with [`RingRefusal::NotSupported`].

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// A change of the ring an operator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingRequest {
    /// The configured member joins the ring: tasks get placed on it.
    Join(NodeId),
    /// The member leaves the ring: its tasks move to the other members.
    Remove(NodeId),
}

impl RingRequest {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match *self {
            RingRequest::Join(n) | RingRequest::Remove(n) => n,
        }
    }

    /// Whether a ring of `members` reflects the change already.
    pub fn reflected_in(&self, members: &[NodeId]) -> bool {
        match *self {
            RingRequest::Join(n) => members.contains(&n),
            RingRequest::Remove(n) => !members.contains(&n),
        }
    }
}

/// The ring as one node knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingView {
    /// 0 for the configured ring, +1 per agreed change.
    pub epoch: u64,
    /// The members, ascending.
    pub members: Vec<NodeId>,
    /// The change this node is driving now, if any (other nodes' changes
    /// in flight are not known here until agreed).
    pub in_flight: Option<RingRequest>,
}

/// Why a ring change was not started. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RingRefusal {
    /// This node's mode has no ring.
    #[error("this mode has no ring; ring changes exist in leaderless mode")]
    NotSupported,
    /// The node is not a configured member of the cluster (only those can
    /// be in the ring: their addresses are known).
    #[error("node {0} is not a configured member of the cluster")]
    NotAMember(NodeId),
    /// This node drives another ring change now; retry once it is agreed.
    #[error("a ring change is in flight at this node: {0:?}")]
    Busy(RingRequest),
    /// The node is the ring's only member; a ring is never empty.
    #[error("node {0} is the ring's last member")]
    LastMember(NodeId),
}
