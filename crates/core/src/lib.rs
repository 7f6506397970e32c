//! The node contract shared by every cohort mode.
//!
//! A cohort node is a deterministic state machine. The driver (the tokio
//! runtime or the simulator) feeds it inputs and drains its outputs:
//!
//! ```text
//!   boot(...)                        -- once, from what was persisted
//!   loop {
//!       handle_message / handle_timer / handle_client / handle_task_finished
//!       for action in node.actions() { ... }   -- in order, before the next input
//!   }
//! ```
//!
//! Time ([`Time`]) and randomness ([`NodeRng`]) are inputs; nothing in a core
//! reads a clock or the OS RNG. Output comes as an ordered batch of
//! [`Action`]s: a [`Action::Persist`] must be durable before any later
//! [`Action::Send`], [`Action::Reply`] or [`Action::Execute`] of the same
//! batch is carried out. [`Node::actions`] returns a draining iterator that
//! borrows the node, so no new input can be handed in while a batch is out.
#![deny(missing_docs)]

pub mod action;
pub mod client;
pub mod codec;
pub mod dedupe;
pub mod drain;
pub mod ids;
pub mod limit;
pub mod node;
pub mod retry;
pub mod ring;
pub mod schedule;
pub mod store;
pub mod task;
pub mod time;

pub use action::{Action, Note, SupersedeReason, TimerToken};
pub use client::{ClientError, ClientRequest, ClientResponse, Consistency, RequestId};
pub use codec::{decode, encode, encoded_len, CodecError};
pub use dedupe::{
    DedupeError, DedupeKey, DedupeKeyError, DedupeOutcome, DedupeStep, DedupeSubmit,
    DEDUPE_KEY_BYTES_MAX, DEDUPE_ROUNDS_MAX_DEFAULT,
};
pub use drain::{DrainRefusal, DrainStatus};
pub use ids::{Epoch, NodeId, TaskId};
pub use limit::LimitCounts;
pub use node::{
    BootError, HeartbeatReply, Limits, LimitsError, Node, NodeRng, NodeStatus, Peers, Retention,
    WorkerInfo, RETAINED_MS_DEFAULT, RETAINED_MS_MAX,
};
pub use retry::{after_failure, error_class, AfterFailure, RetryPolicy};
pub use ring::{RingRefusal, RingRequest, RingView};
pub use store::{StoreOp, Stored};
pub use task::{
    event_error, event_progress, failure_event, Task, TaskEvent, TaskEventKind, TaskEvents,
    TaskLimit, TaskOutcome, TaskState, HEARTBEAT_TIMEOUT_MS_MAX, PROGRESS_BYTES_MAX,
    TASK_EVENT_ERROR_BYTES_MAX,
};
pub use time::Time;
