//! A seeded, deterministic test network of [`RaftNode`]s that delivers,
//! drops, delays, duplicates and reorders messages, cuts links, crashes
//! nodes and restarts them from what they persisted, and checks the Raft
//! invariants after every input:
//!
//! - election safety: at most one leader per term;
//! - state machine safety: every node applies the same entry at an index,
//!   contiguously, and a committed entry never changes;
//! - leader completeness: a new leader holds every committed entry;
//! - log matching (checked on demand, [`Net::check_log_matching`]).

use super::{Entry, Membership, RaftConfig, RaftMsg, RaftNode, Ready, Role};
use cohort_core::{decode, encode, NodeId, NodeRng, Stored, Time};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A live node plus its toy state machine (the applied commands).
pub struct Peer {
    pub raft: RaftNode,
    pub applied: u64,
    pub sm: Vec<Vec<u8>>,
    pub reads: Vec<(u64, u64)>,
    pub aborted: Vec<u64>,
}

pub struct Net {
    pub rng: NodeRng,
    pub now: Time,
    pub cfg: RaftConfig,
    pub initial: Membership,
    pub nodes: BTreeMap<NodeId, Option<Peer>>,
    pub stored: BTreeMap<NodeId, Stored>,
    queue: BTreeMap<(Time, u64), (NodeId, NodeId, RaftMsg)>,
    seq: u64,
    /// Probability that a message is dropped.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub dup: f64,
    /// One-way delay range in microseconds.
    pub delay_us: (u64, u64),
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Compact a node's log when it holds more than this many entries.
    pub compact_after: Option<u64>,
    /// Entries kept behind a snapshot.
    pub keep_entries: u64,
    /// Term -> its leader, over the whole run.
    pub leaders: BTreeMap<u64, NodeId>,
    /// Index -> the entry committed there, over the whole run.
    pub committed: BTreeMap<u64, Entry>,
    pub snapshots_installed: u64,
    pub messages_sent: u64,
}

pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

impl Net {
    pub fn new(seed: u64, n: u64) -> Net {
        Net::with(
            seed,
            Membership::initial(&ids(n), n as usize),
            RaftConfig::default(),
        )
    }

    pub fn with(seed: u64, initial: Membership, cfg: RaftConfig) -> Net {
        let mut net = Net {
            rng: NodeRng::seed_from_u64(seed),
            now: Time::ZERO,
            cfg,
            initial: initial.clone(),
            nodes: BTreeMap::new(),
            stored: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            loss: 0.0,
            dup: 0.0,
            delay_us: (500, 2_000),
            cut: BTreeSet::new(),
            compact_after: None,
            keep_entries: 4,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            snapshots_installed: 0,
            messages_sent: 0,
        };
        for id in initial.members() {
            net.stored.insert(id, Stored::new());
            net.start(id);
        }
        net
    }

    fn start(&mut self, id: NodeId) {
        let rng = NodeRng::seed_from_u64(self.rng.gen());
        let (raft, boot) = RaftNode::restore(
            id,
            self.initial.clone(),
            self.cfg.clone(),
            &self.stored[&id],
            rng,
            self.now,
        )
        .expect("stored state decodes");
        let mut peer = Peer {
            raft,
            applied: 0,
            sm: Vec::new(),
            reads: Vec::new(),
            aborted: Vec::new(),
        };
        if let Some(s) = boot.snapshot {
            peer.sm = decode(&s.data, 1 << 30).expect("snapshot decodes");
            peer.applied = s.meta.index;
        }
        for e in &boot.committed {
            Self::apply_one(&mut self.committed, id, &mut peer, e);
        }
        self.nodes.insert(id, Some(peer));
        self.check(id);
    }

    pub fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
    }

    pub fn restart(&mut self, id: NodeId) {
        assert!(self.nodes[&id].is_none(), "restart a crashed node");
        self.start(id);
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|p| p.is_some())
    }

    pub fn peer(&self, id: NodeId) -> &Peer {
        self.nodes[&id].as_ref().expect("node is up")
    }

    pub fn raft(&mut self, id: NodeId) -> &mut RaftNode {
        &mut self
            .nodes
            .get_mut(&id)
            .unwrap()
            .as_mut()
            .expect("node is up")
            .raft
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.loss = 0.0;
        self.dup = 0.0;
    }

    /// The live leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, p)| p.as_ref().map(|p| (*id, &p.raft)))
            .filter(|(_, r)| r.is_leader())
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    /// Runs until a leader is known, or panics after `limit_ms`.
    pub fn elect(&mut self, limit_ms: u64) -> NodeId {
        let end = self.now + Duration::from_millis(limit_ms);
        while self.now < end {
            self.run_for(10);
            if let Some(l) = self.leader() {
                return l;
            }
        }
        panic!("no leader within {limit_ms} ms");
    }

    /// Proposes `data` at node `at` (which should lead).
    pub fn propose_at(&mut self, at: NodeId, data: &[u8]) -> Option<u64> {
        let now = self.now;
        let r = self.raft(at).propose(now, data.to_vec()).ok();
        self.drain(at);
        r
    }

    /// Runs the network for `ms` milliseconds of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        let mut spins = 0u32;
        let mut last = self.now;
        loop {
            if self.now == last {
                spins += 1;
                assert!(
                    spins < 100_000,
                    "livelock at {}: {:?}",
                    self.now,
                    self.nodes
                        .values()
                        .flatten()
                        .map(|p| (p.raft.status(), p.raft.next_deadline()))
                        .collect::<Vec<_>>()
                );
            } else {
                spins = 0;
                last = self.now;
            }
            let next_msg = self.queue.keys().next().map(|k| k.0);
            let next_tick = self
                .nodes
                .values()
                .flatten()
                .map(|p| p.raft.next_deadline())
                .min();
            let next = match (next_msg, next_tick) {
                (Some(a), Some(b)) => a.min(b),
                (None, None) => break,
                (a, b) => a.or(b).expect("one is set"),
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_msg == Some(next) {
                let (key, (from, to, msg)) = self.queue.pop_first().expect("peeked");
                let _ = key;
                if let Some(Some(p)) = self.nodes.get_mut(&to) {
                    p.raft.step(self.now, from, msg);
                    self.drain(to);
                }
            } else {
                let due: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter_map(|(id, p)| p.as_ref().map(|p| (*id, p)))
                    .filter(|(_, p)| p.raft.next_deadline() <= self.now)
                    .map(|(id, _)| id)
                    .collect();
                for id in due {
                    let now = self.now;
                    self.raft(id).tick(now);
                    self.drain(id);
                }
            }
        }
        self.now = end;
    }

    /// Carries out one node's Ready: persist, send, apply; then checks.
    pub fn drain(&mut self, id: NodeId) {
        let ready: Ready = self.raft(id).take_ready();
        self.stored.get_mut(&id).unwrap().apply(&ready.persist);
        for (to, msg) in ready.messages {
            self.messages_sent += 1;
            self.enqueue(id, to, msg);
        }
        let peer = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
        if let Some(s) = ready.snapshot {
            assert!(s.meta.index > peer.applied, "a snapshot moves forward");
            peer.sm = decode(&s.data, 1 << 30).expect("snapshot decodes");
            peer.applied = s.meta.index;
            self.snapshots_installed += 1;
            if let Some(c) = self.committed.get(&s.meta.index) {
                assert_eq!(
                    c.term, s.meta.term,
                    "snapshot disagrees with the committed log"
                );
            }
        }
        for e in &ready.committed {
            Self::apply_one(&mut self.committed, id, peer, e);
        }
        for r in ready.reads {
            peer.reads.push((r.ctx, r.index));
        }
        peer.aborted.extend(ready.reads_aborted);
        if let Some(limit) = self.compact_after {
            let len = peer.applied - peer.raft.log().offset();
            if len > limit {
                let data = encode(&peer.sm);
                let keep = self.keep_entries;
                peer.raft.compact(data, keep);
                let more = peer.raft.take_ready();
                assert!(more.messages.is_empty(), "compaction sends nothing");
                self.stored.get_mut(&id).unwrap().apply(&more.persist);
            }
        }
        self.check(id);
    }

    fn apply_one(committed: &mut BTreeMap<u64, Entry>, id: NodeId, peer: &mut Peer, e: &Entry) {
        assert_eq!(e.index, peer.applied + 1, "{id} applies contiguously");
        match committed.get(&e.index) {
            Some(c) => assert_eq!(c, e, "{id} applied a different entry at {}", e.index),
            None => {
                committed.insert(e.index, e.clone());
            }
        }
        if let super::EntryKind::Command(d) = &e.kind {
            peer.sm.push(d.clone());
        }
        peer.applied = e.index;
    }

    fn enqueue(&mut self, from: NodeId, to: NodeId, msg: RaftMsg) {
        if self.cut.contains(&(from, to)) || self.rng.gen_bool(self.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.rng.gen_range(self.delay_us.0..=self.delay_us.1);
            self.seq += 1;
            let at = self.now + Duration::from_micros(delay);
            self.queue.insert((at, self.seq), (from, to, msg.clone()));
        }
    }

    /// The per-input invariants for node `id`.
    fn check(&mut self, id: NodeId) {
        let Some(Some(peer)) = self.nodes.get(&id) else {
            return;
        };
        let r = &peer.raft;
        let st = r.status();
        assert!(st.commit <= st.last_index, "commit within the log");
        assert!(st.applied <= st.commit, "apply only committed entries");
        if st.role == Role::Leader {
            if let Some(prev) = self.leaders.get(&st.term) {
                assert_eq!(*prev, id, "two leaders in term {}", st.term);
            } else {
                self.leaders.insert(st.term, id);
                // Leader completeness: a new leader holds every committed entry.
                for (i, e) in self.committed.range(r.log().first_index()..) {
                    let held = r.log().entry(*i);
                    assert_eq!(held, Some(e), "new leader {id} lacks committed entry {i}");
                }
            }
        }
        // Committed entries never change, in any log.
        let lo = r.log().first_index();
        if lo <= st.commit {
            for (i, e) in self.committed.range(lo..=st.commit) {
                assert_eq!(
                    r.log().entry(*i),
                    Some(e),
                    "{id} holds a changed committed entry"
                );
            }
        }
    }

    /// Log matching: if two logs hold an entry with the same index and
    /// term, they are identical up to it.
    pub fn check_log_matching(&self) {
        let live: Vec<(&NodeId, &Peer)> = self
            .nodes
            .iter()
            .filter_map(|(id, p)| p.as_ref().map(|p| (id, p)))
            .collect();
        for (i, (a, pa)) in live.iter().enumerate() {
            for (b, pb) in live.iter().skip(i + 1) {
                let (la, lb) = (pa.raft.log(), pb.raft.log());
                let lo = la.first_index().max(lb.first_index());
                let hi = la.last_index().min(lb.last_index());
                let mut k = hi;
                while k >= lo && k > 0 {
                    if la.term_at(k) == lb.term_at(k) {
                        assert_eq!(
                            la.range(lo - 1, k),
                            lb.range(lo - 1, k),
                            "logs of {a} and {b} differ below {k}"
                        );
                        break;
                    }
                    k -= 1;
                }
            }
        }
    }

    /// Every live node has applied the same commands.
    pub fn assert_converged(&self) {
        let sms: Vec<(&NodeId, &Peer)> = self
            .nodes
            .iter()
            .filter_map(|(id, p)| p.as_ref().map(|p| (id, p)))
            .collect();
        let (first_id, first) = sms[0];
        for (id, p) in &sms[1..] {
            assert_eq!(
                p.applied, first.applied,
                "{id} and {first_id} applied different counts"
            );
            assert_eq!(p.sm, first.sm, "{id} and {first_id} diverged");
        }
    }
}
