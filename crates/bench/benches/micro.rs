//! Criterion micro-benchmarks of the hot paths: the codec, the Raft
//! append-to-commit path, one Paxos claim round, rendezvous placement over
//! 5,000 members. Everything is sans-IO and in memory: no fsync, no socket,
//! no encoding of the messages passed between cores (the codec bench prices
//! that separately). Run with `cargo bench -p cohort-bench`; `cargo test`
//! only builds it.
//!
//! criterion is built with `default-features = false`: no rayon, no
//! plotters, no HTML reports (the figures print to the terminal and go to
//! `target/criterion/*/new/estimates.json`), to keep the workspace's build
//! time down.
#![allow(missing_docs, clippy::disallowed_methods, clippy::disallowed_types)]

use cohort_core::{NodeId, NodeRng, Stored, Task, TaskId, Time};
use cohort_leader::raft::{Membership, RaftConfig, RaftMsg, RaftNode};
use cohort_leaderless::message::LeaderlessMessage;
use cohort_leaderless::paxos::acceptor::{on_accept, on_prepare, AcceptReply, PrepareReply};
use cohort_leaderless::paxos::proposer::{Intent, Outcome, Proposer};
use cohort_leaderless::record::{Record, TaskHeader, TaskValue};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::SeedableRng;
use std::collections::{BTreeMap, VecDeque};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn task() -> Task {
    Task {
        kind: "echo".into(),
        payload: vec![7u8; 256],
        timeout_ms: 30_000,
        max_attempts: 3,
        not_before: cohort_core::Time::ZERO,
        retry: cohort_core::RetryPolicy::default(),
        schedule_to_start_ms: 0,
        priority: 0,
        heartbeat_timeout_ms: 0,
        labels: Vec::new(),
        limit: None,
        lease_grace_ms: 0,
        retry_of: None,
    }
}

fn codec(c: &mut Criterion) {
    let task = task();
    let bytes = cohort_core::encode(&task);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode task (256 B payload)", |b| {
        b.iter(|| cohort_core::encode(black_box(&task)))
    });
    g.bench_function("decode task (256 B payload)", |b| {
        b.iter(|| {
            let t: Task = cohort_core::decode(black_box(&bytes), 1 << 20).expect("decodes");
            t
        })
    });
    g.finish();
}

fn placement(c: &mut Criterion) {
    let ring: Vec<NodeId> = (1..=5_000).map(NodeId).collect();
    let mut id = 0u128;
    c.bench_function("placement: 3 replicas over 5,000 members", |b| {
        b.iter(|| {
            id += 1;
            cohort_leaderless::placement::replicas(TaskId(id), black_box(&ring), 3)
        })
    });
}

/// Three Raft cores passing messages through a queue, node 1 leading.
struct RaftCluster {
    nodes: BTreeMap<NodeId, RaftNode>,
    queue: VecDeque<(NodeId, NodeId, RaftMsg)>,
    now: Time,
}

impl RaftCluster {
    fn new() -> RaftCluster {
        let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let (node, _) = RaftNode::restore(
                id,
                Membership::initial(&ids, ids.len()),
                RaftConfig::default(),
                &Stored::default(),
                NodeRng::seed_from_u64(id.0),
                Time::ZERO,
            )
            .expect("an empty store boots");
            nodes.insert(id, node);
        }
        let mut c = RaftCluster {
            nodes,
            queue: VecDeque::new(),
            now: Time::ZERO,
        };
        // Only node 1's timer fires, so it wins the (pre-)vote.
        c.now = c.nodes[&NodeId(1)].next_deadline();
        let now = c.now;
        c.nodes.get_mut(&NodeId(1)).expect("n1").tick(now);
        c.pump();
        assert!(c.nodes[&NodeId(1)].is_leader(), "node 1 leads");
        c
    }

    /// Carries out every node's ready batch (the writes are dropped: no
    /// disk here) and delivers messages until nothing moves.
    fn pump(&mut self) {
        loop {
            for (id, node) in &mut self.nodes {
                let ready = node.take_ready();
                for (to, msg) in ready.messages {
                    self.queue.push_back((*id, to, msg));
                }
            }
            if self.queue.is_empty() {
                return;
            }
            while let Some((from, to, msg)) = self.queue.pop_front() {
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.step(self.now, from, msg);
                }
            }
        }
    }

    /// Proposes `batch` commands at the leader and runs until they commit.
    fn propose_and_commit(&mut self, batch: usize) {
        let leader = self.nodes.get_mut(&NodeId(1)).expect("n1");
        let mut last = 0;
        for _ in 0..batch {
            last = leader
                .propose(self.now, vec![1u8; 64])
                .expect("the leader accepts");
        }
        self.pump();
        assert!(self.nodes[&NodeId(1)].commit() >= last, "committed");
    }
}

/// Entries one cluster takes before a fresh one is built (untimed), so the
/// log does not grow without bound over criterion's iterations.
const RAFT_ENTRIES_PER_CLUSTER: u64 = 20_000;

fn raft(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft append-to-commit (3 nodes, in memory)");
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("{batch} entries per round"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut cluster = RaftCluster::new();
                let mut used = 0u64;
                for _ in 0..iters {
                    if used >= RAFT_ENTRIES_PER_CLUSTER {
                        cluster = RaftCluster::new();
                        used = 0;
                    }
                    let start = Instant::now();
                    cluster.propose_and_commit(batch);
                    total += start.elapsed();
                    used += batch as u64;
                }
                total
            })
        });
    }
    g.finish();
}

/// One claim round (prepare, promise, accept, accepted, learn) of a fresh
/// task on three replicas, node 1 proposing; the acceptor functions run on
/// in-memory records, as a replica's core runs them before persisting.
fn paxos(c: &mut Criterion) {
    let replicas: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let header = TaskHeader {
        task: task(),
        replicas: replicas.clone(),
        ring_epoch: 1,
    };
    let mut proposer = Proposer::new(NodeId(1), 1, 1_024, 16);
    let mut next = 0u128;
    c.bench_function("paxos claim round, 3 replicas in memory", |b| {
        b.iter_batched(
            || {
                next += 1;
                let recs: BTreeMap<NodeId, Record> = replicas
                    .iter()
                    .map(|r| (*r, Record::new(header.clone(), Time::ZERO)))
                    .collect();
                (TaskId(next), recs)
            },
            |(id, mut recs)| {
                let base = TaskValue::initial(&header);
                let prepares = proposer
                    .start(
                        Time::ZERO,
                        id,
                        header.clone(),
                        0,
                        base,
                        Intent::Claim { permit: None },
                    )
                    .expect("a free proposer");
                let mut accepts = Vec::new();
                for (to, msg) in prepares {
                    let LeaderlessMessage::Prepare {
                        version,
                        base,
                        ballot,
                        ..
                    } = msg
                    else {
                        unreachable!("a claim starts with prepares")
                    };
                    let rec = recs.get_mut(&to).expect("a replica");
                    let (PrepareReply::Promise(acc), _) = on_prepare(rec, version, &base, ballot)
                    else {
                        unreachable!("fresh records promise")
                    };
                    if let Outcome::Send(m) = proposer.on_promise(to, id, version, ballot, acc) {
                        accepts.extend(m);
                    }
                }
                let mut chosen = None;
                for (to, msg) in accepts {
                    let LeaderlessMessage::Accept {
                        version,
                        ballot,
                        value,
                        ..
                    } = msg
                    else {
                        unreachable!("phase 2 sends accepts")
                    };
                    let rec = recs.get_mut(&to).expect("a replica");
                    let (AcceptReply::Accepted, _) = on_accept(rec, version, ballot, &value) else {
                        unreachable!("nothing competes")
                    };
                    if let Outcome::Chosen { version, value, .. } =
                        proposer.on_accepted(to, id, version, ballot)
                    {
                        chosen = Some((version, value));
                    }
                }
                let (version, value) = chosen.expect("a majority accepted");
                for rec in recs.values_mut() {
                    rec.learn(version, &value);
                }
                recs
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, codec, raft, paxos, placement);
criterion_main!(benches);
