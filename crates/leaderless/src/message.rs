//! What the nodes of a leaderless cluster send each other.

use crate::paxos::Ballot;
use crate::permit::Ask;
use crate::record::{TaskHeader, TaskValue};
use crate::ring::Ring;
use cohort_core::{Epoch, TaskId, TaskLimit, Time};
use serde::{Deserialize, Serialize};

/// What a replica holds of a task, as answered to a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// Body and replicas.
    pub header: TaskHeader,
    /// The latest version the replica knows chosen.
    pub version: u64,
    /// Its value.
    pub value: TaskValue,
    /// Whether the replica accepted a value in the instance after
    /// `version`: that value may be chosen already, so a linearizable read
    /// must settle the instance before answering.
    pub in_doubt: bool,
    /// When the replica stored the task (its submission time).
    pub created_at: Time,
}

/// A peer message of the leaderless mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderlessMessage {
    /// A SWIM packet, handed to foca as is.
    Swim(Vec<u8>),
    /// Coordinator → replica: store this new task (first write wins).
    Write {
        /// Names the coordinator's operation.
        op: u64,
        /// The task.
        id: TaskId,
        /// Body and replicas.
        header: TaskHeader,
        /// The coordinator's ring when it changed since epoch 0: a replica
        /// learns it before it answers, so the replicas of a task created
        /// under a ring know that ring (and tell lagging readers).
        ring: Option<Ring>,
    },
    /// Replica → coordinator, after the record is persisted.
    WriteReply {
        /// The operation answered.
        op: u64,
        /// The task written (checked against the operation).
        id: TaskId,
        /// `false`: the replica holds a different task under this id.
        same: bool,
    },
    /// Replica → coordinator: refused to create the record because the
    /// header was written under an older ring than this replica's (the
    /// creation fence): the coordinator adopts `ring` and looks the task
    /// up again under it.
    WriteFenced {
        /// The operation answered.
        op: u64,
        /// The task written (checked against the operation).
        id: TaskId,
        /// The replica's ring.
        ring: Ring,
    },
    /// Coordinator → holders of a version-0 record that a submit's lookup
    /// found can never be chosen (fewer than a majority of its replicas
    /// hold it and all of them refuse to create it): drop it.
    Forget {
        /// The task.
        id: TaskId,
        /// The header of the dead record (a record with another header, or
        /// past version 0, is kept).
        header: TaskHeader,
    },
    /// Coordinator → replica: what do you know of this task?
    Read {
        /// Names the coordinator's operation.
        op: u64,
        /// The task.
        id: TaskId,
        /// The reader's ring epoch.
        ring_epoch: u64,
        /// A submit's lookup carries the reader's ring: the replica learns
        /// it (persisted) before it answers, and from then on refuses to
        /// create the task under an older ring (the creation fence).
        ring: Option<Ring>,
    },
    /// Replica → coordinator.
    ReadReply {
        /// The operation answered.
        op: u64,
        /// The task read (checked against the operation).
        id: TaskId,
        /// What the replica holds of the task, if anything.
        found: Option<ReadState>,
        /// The replica's ring, if newer than the reader's: a reader that
        /// finds nothing looks again under it.
        ring: Option<Ring>,
    },
    /// Paxos phase 1a for the instance deciding `version + 1`.
    Prepare {
        /// The task.
        id: TaskId,
        /// Body and replicas, for an acceptor that missed the write.
        header: TaskHeader,
        /// The base version, known chosen.
        version: u64,
        /// The value chosen at `version`.
        base: TaskValue,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Paxos phase 1b.
    Promise {
        /// The task.
        id: TaskId,
        /// The base version of the instance.
        version: u64,
        /// The ballot promised.
        ballot: Ballot,
        /// What this acceptor accepted in the instance, if anything.
        accepted: Option<(Ballot, TaskValue)>,
    },
    /// Paxos phase 2a.
    Accept {
        /// The task.
        id: TaskId,
        /// The base version of the instance.
        version: u64,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The value proposed for `version + 1`.
        value: TaskValue,
    },
    /// Paxos phase 2b.
    Accepted {
        /// The task.
        id: TaskId,
        /// The base version of the instance.
        version: u64,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// The acceptor promised a higher ballot than `ballot`.
    Reject {
        /// The task.
        id: TaskId,
        /// The base version of the instance.
        version: u64,
        /// The ballot refused.
        ballot: Ballot,
        /// The ballot promised instead.
        promised: Ballot,
    },
    /// The acceptor knows a later chosen version than the instance asked about.
    Ahead {
        /// The task.
        id: TaskId,
        /// The later version.
        version: u64,
        /// Its value.
        value: TaskValue,
    },
    /// `value` was chosen as `version` of the task.
    Learn {
        /// The task.
        id: TaskId,
        /// Body and replicas, for a replica that missed the write.
        header: TaskHeader,
        /// The chosen version.
        version: u64,
        /// Its value.
        value: TaskValue,
    },
    /// Anti-entropy, replica → co-replica: the versions I hold of tasks we
    /// share. The receiver answers `Learn` where it is ahead and `Pull`
    /// where it is behind.
    Digest {
        /// `(task, version)` pairs.
        entries: Vec<(TaskId, u64)>,
    },
    /// Anti-entropy: send me `Learn` for these tasks.
    Pull {
        /// The tasks.
        ids: Vec<TaskId>,
    },
    /// Ring Paxos phase 1a for the instance deciding epoch `base.epoch + 1`.
    RingPrepare {
        /// The chosen ring this instance builds on.
        base: Ring,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Ring Paxos phase 1b.
    RingPromise {
        /// The base epoch of the instance.
        epoch: u64,
        /// The ballot promised.
        ballot: Ballot,
        /// The ring accepted in the instance, if any.
        accepted: Option<(Ballot, Ring)>,
    },
    /// Ring Paxos phase 2a: accept `value` as the ring at `value.epoch`.
    RingAccept {
        /// The proposer's ballot.
        ballot: Ballot,
        /// The proposed ring.
        value: Ring,
    },
    /// Ring Paxos phase 2b, for the instance deciding `epoch`.
    RingAccepted {
        /// The epoch decided.
        epoch: u64,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// Ring Paxos: the acceptor promised `promised` > `ballot`.
    RingReject {
        /// The ballot refused.
        ballot: Ballot,
        /// The ballot promised instead.
        promised: Ballot,
    },
    /// A chosen ring (a learn, an `Ahead` answer, or gossip).
    RingLearn {
        /// The ring.
        ring: Ring,
    },
    /// Gossip: the newest ring epoch the sender knows. A receiver that
    /// knows a newer ring answers `RingLearn`; one that knows an older
    /// ring answers `RingHave` with its own, so the sender teaches it.
    RingHave {
        /// The sender's ring epoch.
        epoch: u64,
    },
    /// Replica → a node carrying the task's worker labels (which no live
    /// replica with room carries): claim this pending task, if you have
    /// room. The receiver proposes the claim itself, to the replicas;
    /// Paxos chooses at most one claim per version. (Last in the enum: the
    /// encoding of the earlier variants stays as it was.)
    Offer {
        /// The task.
        id: TaskId,
        /// Body and replicas.
        header: TaskHeader,
        /// The chosen version the offer is based on.
        version: u64,
        /// Its value (pending).
        value: TaskValue,
        /// A limited task's grant for the claim ([`crate::permit`]).
        permit: Option<(Epoch, Time)>,
    },
    /// Several messages for one peer, made at the end of a driver batch
    /// (see `LeaderlessNode::flush`): the receiver handles each in order as
    /// if it had come alone. Never nested; at most `bundle_messages_max`.
    /// (After `Offer`: the encoding of the earlier variants stays as it was.)
    Bundle(Vec<LeaderlessMessage>),
    /// Claimer → the keeper of a limit key's permit record (its first live
    /// replica): places wanted before claims, places given back.
    PermitAsk {
        /// The limit key.
        key: String,
        /// Places wanted, each under its task's limit (whose key is `key`).
        acquire: Vec<(Ask, TaskLimit)>,
        /// Places given back: each task's run under that epoch ended.
        release: Vec<Ask>,
    },
    /// Keeper → claimer: the asks granted, with their stamps (an ask not
    /// named is refused for now, and asked again later).
    PermitAnswer {
        /// The places granted.
        granted: Vec<(Ask, Time)>,
    },
    /// Replica → coordinator: refused to create the record because this
    /// replica holds `tasks_active_max` active tasks already. The
    /// coordinator answers `429 overloaded` once `W` can no longer be
    /// reached, instead of timing out. (Last in the enum: the encoding of
    /// the earlier variants stays as it was.)
    WriteFull {
        /// The operation answered.
        op: u64,
        /// The task written (checked against the operation).
        id: TaskId,
    },
    /// Replica → a node that sent it a copy of a task it purged (a
    /// proposal, a learn, a repair): the copy is refused; its holder drops
    /// it when `tombstone` covers it (`crate::retention`). Last in the
    /// enum, like `WriteFull`.
    Purged {
        /// The task.
        id: TaskId,
        /// What the purge left.
        tombstone: crate::retention::Tombstone,
        /// Passed on by a reader that was told (not the sender's own
        /// purge): no witness that the sender holds no copy, so it does
        /// not count towards dropping a copy in doubt
        /// (`crate::retention::Tombstone::in_doubt`).
        relayed: bool,
    },
    /// Replica → coordinator: refused to create a schedule's definition
    /// (or tombstone) because this replica keeps `schedules_kept_max` of
    /// them already (`crate::LeaderlessConfig::schedules_kept_max`). Last
    /// in the enum, like `WriteFull`.
    WriteKeptFull {
        /// The operation answered.
        op: u64,
        /// The task written.
        id: TaskId,
    },
}
