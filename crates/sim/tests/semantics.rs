//! The simulator's own semantics, scripted: FIFO links and reordering,
//! duplication, pauses that hold events, crashes that lose unsynced writes
//! and everything queued behind them, and partitions.
//!
//! The probe node ticks every millisecond: it persists its next sequence
//! number, then sends it to every peer. Receivers record what they got.

use cohort_core::{
    decode, encode, Action, BootError, ClientError, ClientRequest, Epoch, Node, NodeId, NodeRng,
    Peers, RequestId, StoreOp, Stored, TaskId, TaskOutcome, Time, TimerToken,
};
use cohort_sim::{run, Fault, FaultKinds, Guarantee, Report, ScriptedFault, SimConfig};
use std::cell::RefCell;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    /// Persist the sequence number, then send it (correct).
    PersistThenSend,
    /// Send, then persist (a crash can make it reuse numbers).
    SendThenPersist,
}

struct Probe {
    id: NodeId,
    others: Vec<NodeId>,
    order: Order,
    seq: u64,
    /// `(from, seq, now)` for every message handled.
    received: Vec<(NodeId, u64, Time)>,
    /// `now` of every input handled.
    handled: Vec<Time>,
    out: Vec<Action<u64>>,
}

impl Probe {
    fn tick(&mut self, now: Time) {
        self.seq += 1;
        let persist = Action::Persist(vec![StoreOp::Put {
            key: b"seq".to_vec(),
            value: encode(&self.seq),
        }]);
        if self.order == Order::PersistThenSend {
            self.out.push(persist.clone());
        }
        for to in self.others.clone() {
            self.out.push(Action::Send { to, msg: self.seq });
        }
        if self.order == Order::SendThenPersist {
            self.out.push(persist);
        }
        self.out.push(Action::SetTimer {
            token: TimerToken(0),
            at: now + Duration::from_millis(1),
        });
    }
}

impl Node for Probe {
    type Message = u64;
    type Config = Order;

    fn boot(
        peers: &Peers,
        order: &Order,
        stored: &Stored,
        _: NodeRng,
        now: Time,
    ) -> Result<Probe, BootError> {
        let seq = stored
            .get(b"seq")
            .map(|v| decode(v, 16).expect("own encoding"))
            .unwrap_or(0);
        let mut p = Probe {
            id: peers.id,
            others: peers.others().collect(),
            order: *order,
            seq,
            received: Vec::new(),
            handled: vec![now],
            out: Vec::new(),
        };
        p.tick(now);
        Ok(p)
    }
    fn handle_message(&mut self, now: Time, from: NodeId, seq: u64) {
        self.handled.push(now);
        self.received.push((from, seq, now));
    }
    fn handle_timer(&mut self, now: Time, _: TimerToken) {
        self.handled.push(now);
        self.tick(now);
    }
    fn handle_client(&mut self, _: Time, request: RequestId, _: ClientRequest) {
        let reply = Err(ClientError::Unavailable {
            reason: "a probe".into(),
        });
        self.out.push(Action::Reply { request, reply });
    }
    fn handle_task_finished(&mut self, _: Time, _: TaskId, _: Epoch, _: TaskOutcome) {}
    fn actions(&mut self) -> std::vec::Drain<'_, Action<u64>> {
        self.out.drain(..)
    }
    fn id(&self) -> NodeId {
        self.id
    }
}

fn config(seed: u64, faults: &str, script: Vec<ScriptedFault>) -> SimConfig {
    let mut c = SimConfig::new(seed, 3);
    c.faults = faults.parse::<FaultKinds>().expect("fault list");
    c.safety_ms = 4_000;
    c.liveness_ms = 0;
    c.workload.arrivals_per_sec = 0.0;
    c.stop_when_done = false;
    c.script = script;
    c
}

fn at(at_ms: u64, fault: Fault) -> ScriptedFault {
    ScriptedFault { at_ms, fault }
}

/// Everything each incarnation of each node received, gathered as the run
/// goes (the invariant hook sees every node after every event).
#[derive(Default)]
struct Seen {
    /// `(receiver, incarnation boot time, from, seq, now)`.
    receipts: Vec<(NodeId, Time, NodeId, u64, Time)>,
    /// `(node, now)` of every input handled.
    handled: Vec<(NodeId, Time)>,
    cursors: Vec<(usize, usize, Time)>,
}

fn observe(seed: u64, faults: &str, order: Order, script: Vec<ScriptedFault>) -> (Report, Seen) {
    let seen = RefCell::new(Seen::default());
    let mut hook = |_now: Time, nodes: &[Option<&Probe>]| -> Result<(), String> {
        let mut s = seen.borrow_mut();
        s.cursors.resize(nodes.len(), (0, 0, Time::ZERO));
        for (i, n) in nodes.iter().enumerate() {
            let Some(n) = n else {
                s.cursors[i] = (0, 0, Time::ZERO);
                continue;
            };
            let boot = n.handled[0];
            if s.cursors[i].2 != boot {
                s.cursors[i] = (0, 0, boot); // a new incarnation
            }
            let (r, h, _) = s.cursors[i];
            for (from, seq, now) in &n.received[r..] {
                s.receipts.push((n.id, boot, *from, *seq, *now));
            }
            for now in &n.handled[h..] {
                s.handled.push((n.id, *now));
            }
            s.cursors[i] = (n.received.len(), n.handled.len(), boot);
        }
        Ok(())
    };
    let report = run::<Probe>(&config(seed, faults, script), &order, &mut hook);
    (report, seen.into_inner())
}

/// How often a receiver got a lower number from a sender after a higher one.
fn inversions(seen: &Seen) -> usize {
    let mut last = std::collections::BTreeMap::new();
    let mut count = 0;
    for (to, boot, from, seq, _) in &seen.receipts {
        let l = last.entry((*to, *boot, *from)).or_insert(0);
        if *seq < *l {
            count += 1;
        }
        *l = (*l).max(*seq);
    }
    count
}

/// How often a receiver got a number from a sender it already had.
fn repeats(seen: &Seen) -> usize {
    let mut got = std::collections::BTreeSet::new();
    seen.receipts
        .iter()
        .filter(|(to, boot, from, seq, _)| !got.insert((*to, *boot, *from, *seq)))
        .count()
}

#[test]
fn links_are_fifo_unless_reordering_is_on() {
    for seed in 0..3 {
        let (r, seen) = observe(seed, "none", Order::PersistThenSend, vec![]);
        assert!(r.passed(), "{r}");
        assert!(seen.receipts.len() > 1_000, "{}", seen.receipts.len());
        assert_eq!(inversions(&seen), 0);
        assert_eq!(repeats(&seen), 0);

        let (_, seen) = observe(seed, "reorder", Order::PersistThenSend, vec![]);
        assert!(inversions(&seen) > 0, "wide jitter lets messages overtake");
        assert_eq!(repeats(&seen), 0);

        let (_, seen) = observe(seed, "dup", Order::PersistThenSend, vec![]);
        assert_eq!(inversions(&seen), 0);
        assert!(repeats(&seen) > 0, "some messages arrive twice");
    }
}

#[test]
fn a_paused_node_handles_nothing_until_it_resumes_then_everything_held() {
    let pause = at(
        1_000,
        Fault::Pause {
            node: NodeId(2),
            for_ms: 500,
        },
    );
    let (r, seen) = observe(1, "none", Order::PersistThenSend, vec![pause]);
    assert_eq!(r.faults_injected, 1);
    let (from, to) = (Time::from_millis(1_000), Time::from_millis(1_500));
    let n2: Vec<Time> = seen
        .handled
        .iter()
        .filter(|(n, _)| *n == NodeId(2))
        .map(|(_, t)| *t)
        .collect();
    assert!(
        !n2.iter().any(|t| *t > from && *t < to),
        "n2 handled an input while paused"
    );
    let burst = n2.iter().filter(|t| **t == to).count();
    assert!(
        burst > 100,
        "held events are handed over at resume, {burst} were"
    );
    // Held, not dropped: n2 got every number n1 sent, in order.
    let from_n1: Vec<u64> = seen
        .receipts
        .iter()
        .filter(|(to, _, from, _, _)| *to == NodeId(2) && *from == NodeId(1))
        .map(|(_, _, _, seq, _)| *seq)
        .collect();
    assert!(from_n1.len() > 1_000);
    assert!(
        from_n1.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap or reorder"
    );
    // n2's own ticks stopped too: the others heard nothing new from it meanwhile.
    assert!(!seen
        .receipts
        .iter()
        .any(|(_, _, from, _, now)| *from == NodeId(2)
            && *now > Time::from_millis(1_010)
            && *now < to));
}

#[test]
fn a_crash_loses_unsynced_writes_and_every_action_queued_behind_them() {
    let crashes: Vec<ScriptedFault> = (1..=30)
        .map(|k| {
            at(
                k * 100 + k % 7,
                Fault::Crash {
                    node: NodeId(1),
                    down_ms: 20,
                },
            )
        })
        .collect();
    // Persist, then send: no number is ever sent twice, across 30 crashes.
    let (r, seen) = observe(2, "none", Order::PersistThenSend, crashes.clone());
    assert_eq!(r.faults_injected, 30);
    assert_eq!(repeats(&seen), 0);
    assert_eq!(inversions(&seen), 0);
    // Send, then persist: a crash during the fsync loses the write but not
    // the sends, so the restarted node numbers from an older value.
    let (_, seen) = observe(2, "none", Order::SendThenPersist, crashes);
    assert!(repeats(&seen) > 0, "the lost write was never noticed");
}

#[test]
fn an_isolated_node_neither_hears_nor_is_heard() {
    let cut = at(
        1_000,
        Fault::Isolate {
            node: NodeId(3),
            for_ms: 700,
        },
    );
    let (r, seen) = observe(3, "none", Order::PersistThenSend, vec![cut]);
    assert!(r.passed(), "{r}");
    let window = |now: &Time| *now >= Time::from_millis(1_000) && *now < Time::from_millis(1_700);
    let across = |to: &NodeId, from: &NodeId| (*to == NodeId(3)) != (*from == NodeId(3));
    assert!(!seen
        .receipts
        .iter()
        .any(|(to, _, from, _, now)| across(to, from) && window(now)));
    assert!(
        seen.receipts
            .iter()
            .any(|(to, _, from, _, now)| !across(to, from) && window(now)),
        "n1 and n2 still talk"
    );
    assert!(
        seen.receipts
            .iter()
            .any(|(to, _, _, _, now)| *to == NodeId(3) && *now > Time::from_millis(1_710)),
        "healed"
    );
}

/// Breaks the node contract on every client request: answers twice, and
/// sends to a node that is not a member.
struct Rude {
    id: NodeId,
    out: Vec<Action<u64>>,
}

impl Node for Rude {
    type Message = u64;
    type Config = ();
    fn boot(peers: &Peers, _: &(), _: &Stored, _: NodeRng, _: Time) -> Result<Rude, BootError> {
        Ok(Rude {
            id: peers.id,
            out: Vec::new(),
        })
    }
    fn handle_message(&mut self, _: Time, _: NodeId, _: u64) {}
    fn handle_timer(&mut self, _: Time, _: TimerToken) {}
    fn handle_client(&mut self, _: Time, request: RequestId, _: ClientRequest) {
        for _ in 0..2 {
            let reply = Err(ClientError::Unavailable {
                reason: "rude".into(),
            });
            self.out.push(Action::Reply { request, reply });
        }
        self.out.push(Action::Send {
            to: NodeId(99),
            msg: 1,
        });
    }
    fn handle_task_finished(&mut self, _: Time, _: TaskId, _: Epoch, _: TaskOutcome) {}
    fn actions(&mut self) -> std::vec::Drain<'_, Action<u64>> {
        self.out.drain(..)
    }
    fn id(&self) -> NodeId {
        self.id
    }
}

#[test]
fn contract_breaches_are_reported_as_invariant_violations() {
    let mut c = SimConfig::new(4, 3);
    c.faults = FaultKinds::NONE;
    c.safety_ms = 1_000;
    c.liveness_ms = 1_000;
    c.violations_max = 10_000;
    let r = run::<Rude>(&c, &(), &mut cohort_sim::NoInvariants);
    let invariant = |needle: &str| {
        r.violations
            .iter()
            .any(|v| v.guarantee == Guarantee::Invariant && v.detail.contains(needle))
    };
    assert!(invariant("already answered: true"), "{r}");
    assert!(invariant("sent to n99, which is not a member"), "{r}");
    assert!(
        r.count_of(Guarantee::G4) > 0,
        "nothing was ever acknowledged: {r}"
    );
}

#[test]
fn a_scripted_run_is_the_unscripted_run_up_to_its_first_fault() {
    let mut plain = config(5, "loss,reorder", vec![]);
    plain.record_trace = true;
    plain.safety_ms = 1_500;
    let mut scripted = plain.clone();
    scripted.script = vec![at(
        1_000,
        Fault::Crash {
            node: NodeId(2),
            down_ms: 100,
        },
    )];
    let a = run::<Probe>(
        &plain,
        &Order::PersistThenSend,
        &mut cohort_sim::NoInvariants,
    );
    let b = run::<Probe>(
        &scripted,
        &Order::PersistThenSend,
        &mut cohort_sim::NoInvariants,
    );
    let fault = b
        .trace
        .iter()
        .position(|l| l.contains("crash n2"))
        .expect("the crash is in the trace");
    assert!(fault > 1_000, "{fault} lines before the crash");
    assert_eq!(a.trace[..fault], b.trace[..fault]);
    assert_ne!(a.trace[fault], b.trace[fault]);
    assert_ne!(a.trace_hash, b.trace_hash);
}
