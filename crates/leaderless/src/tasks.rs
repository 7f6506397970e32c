//! Client operations that wait on replicas: quorum writes of new tasks and
//! quorum reads. The node that receives a client request coordinates it;
//! any node may.

use crate::message::ReadState;
use crate::paxos::majority;
use crate::record::TaskHeader;
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
// Submits are most of the operations: boxing their task would cost an
// allocation per submit to save bytes in the rarer reads.
#[allow(clippy::large_enum_variant)]
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
        /// Replicas that refused it: `Other` (they hold a different task
        /// under the id) or `Full`.
        refused: BTreeMap<NodeId, WriteAnswer>,
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
    /// Too many replicas are full (`tasks_active_max`), or hold a
    /// different task, for `W` to be reached, and at least one is full.
    Full,
    /// The same, and at least one refused for `schedules_kept_max`.
    KeptFull,
}

/// A replica's answer to a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAnswer {
    /// It holds the task (stored now, or already).
    Same,
    /// It holds a different task under the id.
    Other,
    /// It is full (`tasks_active_max`) and did not store it.
    Full,
    /// It keeps `schedules_kept_max` schedules and did not store this one.
    KeptFull,
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
    /// How many replicas it has.
    pub of: usize,
    /// Whether it can never be chosen (see [`dead_first_write`]).
    pub dead: bool,
    /// Other version-0 records of the task, under older rings, found dead
    /// the same way, each with the replicas that answered holding it: a
    /// submit's lookup has them forget it, or they would go on refusing
    /// the live record's write (a replica holds one record per id).
    pub others_dead: Vec<(TaskHeader, Vec<NodeId>)>,
}

/// Whether the version-0 record `header`, created under an older ring
/// than `read_epoch`, can never be chosen, judging by the `replies` to a
/// read that carried the newer ring. Each replica of it that answered
/// without it learned that ring before answering, so the creation fence
/// keeps it from ever creating the record; once those leave fewer than a
/// majority of its replicas that could hold it, no proposal on it can
/// gather a quorum. Such a record was never acknowledged: that takes
/// `W` > R/2 replicas holding it, and a holder drops it only on a
/// `Forget` sent once it was found dead.
pub fn dead_first_write(
    header: &TaskHeader,
    replies: &BTreeMap<NodeId, Option<ReadState>>,
    read_epoch: u64,
) -> bool {
    if header.ring_epoch >= read_epoch {
        return false;
    }
    let without = header
        .replicas
        .iter()
        .filter(|n| {
            replies
                .get(n)
                .is_some_and(|a| a.as_ref().is_none_or(|a| a.header != *header))
        })
        .count();
    header.replicas.len() - without < majority(header.replicas.len())
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
        reply: WriteAnswer,
    ) -> Option<(RequestId, TaskId, SubmitVerdict)> {
        let Some(Op::Submit {
            request,
            id,
            acks,
            refused,
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
        match reply {
            // A duplicated write may find room the first did not: a
            // replica counts by its latest answer.
            WriteAnswer::Same => {
                acks.insert(from);
                refused.remove(&from);
            }
            refusal => {
                if !acks.contains(&from) {
                    refused.insert(from, refusal);
                }
            }
        }
        let conflicts = refused
            .values()
            .filter(|a| **a == WriteAnswer::Other)
            .count();
        let verdict = if acks.len() >= *w {
            SubmitVerdict::Durable
        } else if *replicas - conflicts < *w {
            SubmitVerdict::Conflict
        } else if *replicas - refused.len() < *w {
            if refused.values().any(|a| *a == WriteAnswer::KeptFull) {
                SubmitVerdict::KeptFull
            } else {
                SubmitVerdict::Full
            }
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
    /// replica set answered (a permit keeper's check: once every replica
    /// asked did).
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
        // Among version-0 records of the task under several rings, one
        // a majority of its replicas hold (it may have been acknowledged),
        // else the newest ring's: the others are older first writes that
        // a lookup finds dead, or partial ones of a concurrent submit.
        let held_by_majority = |h: &TaskHeader| {
            replies
                .values()
                .flatten()
                .filter(|a| a.header == *h)
                .count()
                >= majority(h.replicas.len())
        };
        let best = replies
            .values()
            .flatten()
            .max_by_key(|a| {
                if a.version == 0 {
                    (0, held_by_majority(&a.header), a.header.ring_epoch)
                } else {
                    (a.version, false, 0)
                }
            })
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
                    let mut others: Vec<&TaskHeader> = Vec::new();
                    for a in replies.values().flatten() {
                        if a.header != best.header && !others.contains(&&a.header) {
                            others.push(&a.header);
                        }
                    }
                    let others_dead = others
                        .into_iter()
                        .filter(|h| dead_first_write(h, replies, *ring_epoch))
                        .map(|h| {
                            let holding = replies
                                .iter()
                                .filter(|(_, a)| a.as_ref().is_some_and(|a| a.header == *h))
                                .map(|(n, _)| *n)
                                .collect();
                            (h.clone(), holding)
                        })
                        .collect();
                    holders = Holders {
                        dead: dead_first_write(&best.header, replies, *ring_epoch),
                        others_dead,
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
                        of: set.len(),
                    };
                    // A submit's lookup that found a record created under an
                    // older ring must know whether it is durable (held by a
                    // majority) or dead; until then it waits.
                    let older = best.header.ring_epoch < *ring_epoch;
                    if *purpose == ReadPurpose::Submit
                        && older
                        && holders.holding.len() < majority(set.len())
                        && !holders.dead
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
                let everywhere = if *purpose == ReadPurpose::Permit {
                    // A keeper gives a place back on this answer. A first
                    // write that reached only a minority (and a claim of
                    // it under the place's grant, waiting for promises)
                    // may still become durable and chosen: only a record
                    // no replica holds is gone (seed 385 of the limits
                    // gate ran two tasks of a concurrency-1 key at once).
                    asked.iter().all(|n| replies.contains_key(n))
                } else {
                    candidates.iter().all(|c| {
                        c.iter().filter(|n| replies.contains_key(n)).count() >= majority(c.len())
                    })
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{test_header, TaskValue};

    fn header(ring_epoch: u64, replicas: [u64; 3]) -> TaskHeader {
        TaskHeader {
            replicas: replicas.iter().map(|&n| NodeId(n)).collect(),
            ring_epoch,
            ..test_header(1_000)
        }
    }

    fn holding(header: &TaskHeader) -> Option<ReadState> {
        Some(ReadState {
            header: header.clone(),
            version: 0,
            value: TaskValue::initial(header),
            in_doubt: false,
            created_at: Time::ZERO,
        })
    }

    /// Seed 732 of the leaderless limits gate: one task's first write under
    /// three rings, each held by one replica.
    fn three_first_writes() -> [TaskHeader; 3] {
        [
            header(0, [2, 3, 1]),
            header(1, [5, 2, 3]),
            header(2, [5, 2, 3]),
        ]
    }

    #[test]
    fn a_first_write_is_dead_once_too_few_of_its_replicas_could_still_hold_it() {
        let [e0, e1, e2] = three_first_writes();
        let mut replies = BTreeMap::new();
        replies.insert(NodeId(2), holding(&e0));
        replies.insert(NodeId(3), holding(&e1));
        // n1 has not answered: it could still hold e0 with n2.
        assert!(!dead_first_write(&e0, &replies, 2));
        replies.insert(NodeId(1), None);
        assert!(dead_first_write(&e0, &replies, 2));
        // e1's replicas n5 and n2 have not both answered without it yet.
        assert!(!dead_first_write(&e1, &replies, 2));
        replies.insert(NodeId(5), holding(&e2));
        assert!(dead_first_write(&e1, &replies, 2));
        // The read's own ring: its replicas may create it yet.
        assert!(!dead_first_write(&e2, &replies, 2));
        // Held by a majority of its replicas, a record is never dead.
        replies.insert(NodeId(3), holding(&e0));
        assert!(!dead_first_write(&e0, &replies, 2));
    }

    /// A submit's lookup of the task at `ring_epoch`, whose placements
    /// are those of `candidates`, answered in order.
    fn lookup(
        ring_epoch: u64,
        candidates: [&TaskHeader; 2],
        answers: Vec<(u64, Option<ReadState>)>,
    ) -> (ReadState, Holders) {
        let mut ops = Ops::new(1);
        let op = ops.insert(Op::Read {
            request: RequestId(7),
            id: TaskId(9),
            purpose: ReadPurpose::Submit,
            replies: BTreeMap::new(),
            asked: [1, 2, 3, 5].into_iter().map(NodeId).collect(),
            candidates: candidates.map(|h| h.replicas.clone()).to_vec(),
            ring_epoch,
            deadline: Time::from_millis(10_000),
        });
        for (n, found) in answers {
            if let ReadProgress::Done(_, _, _, best, _, holders) =
                ops.read_reply(op, NodeId(n), TaskId(9), found)
            {
                return (best.expect("a record found"), holders);
            }
        }
        panic!("the read is not over");
    }

    /// A lookup that finds older first writes dead names their holders
    /// (who are sent a `Forget`), clearing the way for the newest: in seed
    /// 732 every write of it was refused for ever by n2 and n3.
    #[test]
    fn a_submit_lookup_names_the_holders_of_every_dead_older_first_write() {
        let [e0, e1, e2] = three_first_writes();
        let all = vec![
            (1, None),
            (2, holding(&e0)),
            (3, holding(&e1)),
            (5, holding(&e2)),
        ];
        let (best, holders) = lookup(2, [&e2, &e0], all);
        assert_eq!(best.header, e2, "the newest ring's first write");
        assert!(!holders.dead, "the read's own ring");
        assert_eq!(holders.holding, vec![NodeId(5)]);
        assert_eq!(
            holders.others_dead,
            vec![(e0.clone(), vec![NodeId(2)]), (e1.clone(), vec![NodeId(3)])]
        );
        // Over before n1 answered: n1 and n2 could still create e0.
        let (best, holders) = lookup(
            2,
            [&e2, &e0],
            vec![(2, holding(&e0)), (3, holding(&e1)), (5, holding(&e2))],
        );
        assert_eq!(best.header, e2);
        assert_eq!(holders.others_dead, vec![(e1, vec![NodeId(3)])]);
    }

    /// Seed 385 of the leaderless limits gate: a limited task's first
    /// write reached only n1, which got a place for it and kept trying to
    /// claim it, cut off from n2 and n3. The keeper's check heard n2 and
    /// n3 without it and gave the place back; a resubmit made the task
    /// durable and n1's claim was chosen while another task of the
    /// concurrency-1 key ran. A check ends without the task only once
    /// every replica asked answered without it.
    #[test]
    fn a_permit_check_finds_a_task_gone_only_once_no_replica_holds_it() {
        let h = header(0, [1, 2, 3]);
        let mut ops = Ops::new(1);
        let check = |ops: &mut Ops| {
            ops.insert(Op::Read {
                request: RequestId(7),
                id: TaskId(9),
                purpose: ReadPurpose::Permit,
                replies: BTreeMap::new(),
                asked: [1, 2, 3].into_iter().map(NodeId).collect(),
                candidates: vec![h.replicas.clone()],
                ring_epoch: 0,
                deadline: Time::from_millis(10_000),
            })
        };
        let op = check(&mut ops);
        for n in [2, 3] {
            let progress = ops.read_reply(op, NodeId(n), TaskId(9), None);
            assert!(matches!(progress, ReadProgress::Waiting), "n1 unheard");
        }
        match ops.read_reply(op, NodeId(1), TaskId(9), holding(&h)) {
            ReadProgress::Done(_, _, _, best, _, _) => {
                assert_eq!(best.expect("n1's record").header, h);
            }
            other => panic!("{other:?}"),
        }
        // With every replica answering without it, it is gone.
        let op = check(&mut ops);
        let last = [1, 2, 3].map(|n| ops.read_reply(op, NodeId(n), TaskId(9), None));
        assert!(matches!(last[1], ReadProgress::Waiting));
        assert!(matches!(last[2], ReadProgress::Done(_, _, _, None, _, _)));
    }

    #[test]
    fn a_first_write_held_by_a_majority_is_preferred_to_a_newer_partial_one() {
        let old = header(0, [1, 2, 3]);
        let new = header(1, [1, 2, 5]);
        // Without the preference the read would end on n1's answer with
        // the newer, partial record, and its write would make a second one.
        let answers = vec![(5, holding(&new)), (1, holding(&old)), (2, holding(&old))];
        let (best, holders) = lookup(1, [&new, &old], answers);
        assert_eq!(best.header, old);
        assert_eq!(holders.holding, vec![NodeId(1), NodeId(2)]);
        assert!(!holders.dead);
        assert!(holders.others_dead.is_empty(), "{holders:?}");
    }
}
