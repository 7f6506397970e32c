//! Client operations that wait on replicas: quorum writes of new tasks and
//! quorum reads. The node that receives a client request coordinates it;
//! any node may.

use crate::message::ReadState;
use crate::paxos::majority;
use cohort_core::{NodeId, RequestId, Task, TaskId, Time};
use std::collections::{BTreeMap, BTreeSet};

/// What a read asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPurpose {
    /// A linearizable `Get`.
    Get,
    /// The first half of a `Cancel`: find the latest value, then propose.
    Cancel,
    /// The first half of a `Submit` once the ring has changed: find the
    /// task wherever it lives before creating it (so a resubmit under a
    /// newer ring does not start a second record on other replicas).
    Submit,
    /// A permit keeper's check of a task a place is held for
    /// ([`crate::permit`]).
    Permit,
}

/// One client operation waiting on replicas.
#[derive(Debug)]
pub enum Op {
    /// A submit: acknowledged after `w` replicas persisted the record.
    Submit {
        /// The client's request.
        request: RequestId,
        /// The task.
        id: TaskId,
        /// Its body, to look it up again if a replica fences the write.
        task: Task,
        /// The ring epoch the header was written under.
        ring_epoch: u64,
        /// Replicas that persisted the same task.
        acks: BTreeSet<NodeId>,
        /// Replicas holding a different task under the id.
        conflicts: BTreeSet<NodeId>,
        /// Replicas asked.
        replicas: usize,
        /// The write quorum.
        w: usize,
        /// Give up (retryable) at this time.
        deadline: Time,
    },
    /// A quorum read. The reader does not know where the task lives now
    /// (it may have moved, or not yet, to its replicas under the newest
    /// ring): it asks the task's replicas under every ring it remembers,
    /// then a majority of the replicas named by the newest version found.
    Read {
        /// The client's request.
        request: RequestId,
        /// The task.
        id: TaskId,
        /// Why.
        purpose: ReadPurpose,
        /// Answers so far.
        replies: BTreeMap<NodeId, Option<ReadState>>,
        /// Nodes asked so far.
        asked: BTreeSet<NodeId>,
        /// The task's replicas under each ring this node remembers.
        candidates: Vec<Vec<NodeId>>,
        /// This node's ring epoch when the read began.
        ring_epoch: u64,
        /// Give up (retryable) at this time.
        deadline: Time,
    },
}

/// What a submit's replies add up to.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitVerdict {
    /// Still waiting.
    Waiting,
    /// `W` replicas persisted it: acknowledge.
    Durable,
    /// Too many replicas hold a different task for `W` to be reached.
    Conflict,
}

/// Where a read stands after an answer.
// Short-lived (one per answer, matched at once): boxing `Done` would buy
// nothing but an allocation per finished read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ReadProgress {
    /// Not this operation's answer, or still waiting.
    Waiting,
    /// The newest version found lives on replicas not asked yet: ask them.
    Ask {
        /// The operation.
        op: u64,
        /// The task.
        id: TaskId,
        /// Whom to ask.
        to: Vec<NodeId>,
    },
    /// Over (the operation is removed): the most advanced answer, if any
    /// node holds the task, and the ring epoch the read began under.
    Done(
        RequestId,
        TaskId,
        ReadPurpose,
        Option<ReadState>,
        u64,
        Holders,
    ),
}

/// Who answered a read with the version-0 record it found, among that
/// record's replicas: a submit's lookup decides from it whether a record
/// created under an older ring is durable, or dead.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holders {
    /// Replicas that answered holding it (same header, version 0).
    pub holding: Vec<NodeId>,
    /// How many of its replicas answered at all.
    pub heard: usize,
    /// How many replicas it has.
    pub of: usize,
}

/// The operations in flight at this node, by operation number.
///
/// Numbers are unique across boots (the boot generation in the high 32
/// bits), and replies name their task, so a late reply to an operation of
/// an earlier boot can never be counted for a new one (the simulator caught
/// exactly that: a read answered with another task's state).
#[derive(Debug)]
pub struct Ops {
    ops: BTreeMap<u64, Op>,
    next: u64,
}

impl Ops {
    /// No operation yet, in boot `generation`.
    pub fn new(generation: u64) -> Ops {
        Ops {
            ops: BTreeMap::new(),
            next: generation << 32,
        }
    }

    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Registers `op`; returns its number.
    pub fn insert(&mut self, op: Op) -> u64 {
        self.next += 1;
        let n = self.next;
        self.ops.insert(n, op);
        n
    }

    /// A replica's answer to a write. Returns the verdict and, once it is
    /// not `Waiting`, removes the operation (returning its request and id).
    pub fn write_reply(
        &mut self,
        op: u64,
        from: NodeId,
        task: TaskId,
        same: bool,
    ) -> Option<(RequestId, TaskId, SubmitVerdict)> {
        let Some(Op::Submit {
            request,
            id,
            acks,
            conflicts,
            replicas,
            w,
            ..
        }) = self.ops.get_mut(&op)
        else {
            return None;
        };
        if *id != task {
            return None; // a reply to an operation of an earlier boot
        }
        if same {
            acks.insert(from);
        } else {
            conflicts.insert(from);
        }
        let verdict = if acks.len() >= *w {
            SubmitVerdict::Durable
        } else if *replicas - conflicts.len() < *w {
            SubmitVerdict::Conflict
        } else {
            SubmitVerdict::Waiting
        };
        let (request, id) = (*request, *id);
        if verdict != SubmitVerdict::Waiting {
            self.ops.remove(&op);
        }
        Some((request, id, verdict))
    }

    /// A replica's answer to a read. The read is over once a majority of
    /// the replicas named by the newest version found answered (that
    /// version is then the latest chosen, or the next one is in doubt:
    /// `in_doubt` if any of them accepted a value in the next instance), or,
    /// when nobody holds the task, once a majority of every candidate
    /// replica set answered.
    pub fn read_reply(
        &mut self,
        op: u64,
        from: NodeId,
        task: TaskId,
        found: Option<ReadState>,
    ) -> ReadProgress {
        let Some(Op::Read {
            id,
            purpose,
            replies,
            asked,
            candidates,
            ring_epoch,
            ..
        }) = self.ops.get_mut(&op)
        else {
            return ReadProgress::Waiting;
        };
        if *id != task || !asked.contains(&from) {
            return ReadProgress::Waiting; // a reply to an operation of an earlier boot
        }
        replies.insert(from, found);
        let best = replies
            .values()
            .flatten()
            .max_by_key(|a| a.version)
            .cloned();
        match best {
            Some(mut best) => {
                let set = best.value.replicas.clone();
                let unasked: Vec<NodeId> =
                    set.iter().copied().filter(|n| !asked.contains(n)).collect();
                if !unasked.is_empty() {
                    asked.extend(unasked.iter().copied());
                    return ReadProgress::Ask {
                        op,
                        id: task,
                        to: unasked,
                    };
                }
                let heard = set.iter().filter(|n| replies.contains_key(n)).count();
                if heard < majority(set.len()) {
                    return ReadProgress::Waiting;
                }
                let mut holders = Holders::default();
                if best.version == 0 {
                    // A version-0 record may be a dead one created under an
                    // older ring while the task lives elsewhere: hear a
                    // majority of every candidate set too, where a chosen
                    // version of the live record would show.
                    let everywhere = candidates.iter().all(|c| {
                        c.iter().filter(|n| replies.contains_key(n)).count() >= majority(c.len())
                    });
                    if !everywhere {
                        return ReadProgress::Waiting;
                    }
                    holders = Holders {
                        holding: set
                            .iter()
                            .copied()
                            .filter(|n| {
                                replies.get(n).is_some_and(|a| {
                                    a.as_ref()
                                        .is_some_and(|a| a.version == 0 && a.header == best.header)
                                })
                            })
                            .collect(),
                        heard,
                        of: set.len(),
                    };
                    // A submit's lookup that found a record created under an
                    // older ring must know whether it is durable (held by a
                    // majority) or dead (every replica answered, fewer
                    // hold it); until then it waits.
                    let older = best.header.ring_epoch < *ring_epoch;
                    if *purpose == ReadPurpose::Submit
                        && older
                        && holders.holding.len() < majority(set.len())
                        && heard < set.len()
                    {
                        return ReadProgress::Waiting;
                    }
                }
                best.in_doubt = replies.iter().any(|(n, a)| {
                    set.contains(n)
                        && a.as_ref()
                            .is_some_and(|a| a.version == best.version && a.in_doubt)
                });
                self.finish_read(op, Some(best), holders)
            }
            None => {
                let everywhere = candidates.iter().all(|c| {
                    c.iter().filter(|n| replies.contains_key(n)).count() >= majority(c.len())
                });
                if everywhere {
                    self.finish_read(op, None, Holders::default())
                } else {
                    ReadProgress::Waiting
                }
            }
        }
    }

    fn finish_read(&mut self, op: u64, best: Option<ReadState>, holders: Holders) -> ReadProgress {
        let Some(Op::Read {
            request,
            id,
            purpose,
            ring_epoch,
            ..
        }) = self.ops.remove(&op)
        else {
            unreachable!("a read in flight")
        };
        ReadProgress::Done(request, id, purpose, best, ring_epoch, holders)
    }

    /// A replica refused to create the task of submit `op` under the ring
    /// its header names (the creation fence): removes the operation and
    /// returns its request, task, body and header ring epoch.
    pub fn take_fenced_submit(
        &mut self,
        op: u64,
        task: TaskId,
    ) -> Option<(RequestId, TaskId, Task, u64)> {
        match self.ops.get(&op) {
            Some(Op::Submit { id, .. }) if *id == task => {}
            _ => return None,
        }
        match self.ops.remove(&op) {
            Some(Op::Submit {
                request,
                id,
                task,
                ring_epoch,
                ..
            }) => Some((request, id, task, ring_epoch)),
            _ => unreachable!("checked above"),
        }
    }

    /// Removes and returns every operation past its deadline.
    pub fn expire(&mut self, now: Time) -> Vec<Op> {
        let due: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| match op {
                Op::Submit { deadline, .. } | Op::Read { deadline, .. } => now >= *deadline,
            })
            .map(|(&n, _)| n)
            .collect();
        due.into_iter()
            .map(|n| self.ops.remove(&n).expect("listed above"))
            .collect()
    }
}
