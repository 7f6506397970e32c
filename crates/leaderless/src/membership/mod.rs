//! SWIM liveness through foca, driven through the node contract.
//!
//! foca is sans-IO already: it takes our seeded RNG, and hands back packets
//! to send and timers to schedule. Here its packets become
//! `LeaderlessMessage::Swim` sends, and its timers become `Action::SetTimer`
//! with tokens from a range reserved for SWIM ([`SWIM_TOKEN_BASE`] and up),
//! mapped back to foca's `Timer` when they fire.
//!
//! Liveness is distinct from the *ring membership* (the nodes that joined and
//! were not removed, from which placement is computed): SWIM only decides
//! which replica runs a task and who is worth waiting for.
//!
//! What foca lacks against false positives when this node is itself slow
//! is added here, after Lifeguard: a local health multiplier that rises
//! when one of this node's probes fails (foca 1.0 does not expose its own
//! incarnation, so refutations, Lifeguard's other input, are not counted),
//! falls after each probe cycle without a failure, and stretches by
//! `1 + multiplier` the wait for a direct ack (up to 90% of the probe
//! period) and the suspicion timeout of the timers foca asks for (foca
//! cannot change its probe timings at run time, but its timers pass
//! through here).
//!
//! Identities are `(node, generation)`. A node persists its generation and
//! takes the next one at every boot, so a restarted node rejoins at once
//! instead of waiting for the cluster to forget its old identity; foca's
//! `renew` bumps it too when the node learns it was declared down while
//! alive (after a partition heals).

pub mod load;

use crate::config::LeaderlessConfig;
use crate::message::LeaderlessMessage;
use cohort_core::{Action, NodeId, NodeRng, StoreOp, Time, TimerToken};
use foca::{
    AccumulatingRuntime, Config, Foca, Identity, OwnedNotification, PostcardCodec, Runtime, Timer,
};
use load::{LoadHandler, LoadReport, LoadTable};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a load report says that a change of sends again at once:
/// `(running, capacity, waiting, pending)`.
type LoadShown = (u32, u32, Option<i8>, Option<i8>);

/// Store key of this node's SWIM generation.
pub(crate) const GENERATION_KEY: &[u8] = b"lless/swim/generation";

/// How many down notifications are kept for [`Membership::downs`].
pub const DOWNS_KEPT_MAX: usize = 1024;

/// SWIM timers use tokens at and above this value; the node's own below.
pub const SWIM_TOKEN_BASE: u64 = 1 << 32;

/// A SWIM identity: the node and its generation (one per boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SwimId {
    /// The node.
    pub node: NodeId,
    /// Bumped at every boot and whenever the node learns it was declared down.
    pub generation: u64,
}

impl Identity for SwimId {
    type Addr = NodeId;

    /// foca's auto-rejoin: a member declared down while alive comes back
    /// under the next generation.
    fn renew(&self) -> Option<SwimId> {
        Some(SwimId {
            node: self.node,
            generation: self.generation.wrapping_add(1),
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &SwimId) -> bool {
        self.generation > adversary.generation
    }
}

/// This node's SWIM state and the liveness view derived from it.
pub struct Membership {
    me: NodeId,
    foca: Foca<SwimId, PostcardCodec, FocaRng, LoadHandler>,
    /// The latest load report of each node (written by foca's handler).
    loads: LoadTable,
    /// This node's load reports so far, this boot.
    load_seq: u64,
    /// What and when this node last reported.
    last_load: Option<(LoadShown, Time)>,
    generation: u64,
    runtime: AccumulatingRuntime<SwimId>,
    /// SWIM timers handed to the driver and not yet fired.
    timers: BTreeMap<u64, Timer<SwimId>>,
    next_token: u64,
    /// When this node last announced itself to each unseen ring member.
    last_announce: BTreeMap<NodeId, Time>,
    /// Down notifications: `(node, when)`, for tests and measurements.
    downs: Vec<(NodeId, Time)>,
    counters: SwimCounters,
    /// Counters, for reports.
    swim_errors: u64,
    /// Lifeguard's local health multiplier: 0 is healthy; SWIM timeouts
    /// are stretched by `1 + local_health`.
    local_health: u32,
    /// foca's probe period.
    probe_period: Duration,
    /// The cap on `local_health` (0 turns the adaptation off).
    local_health_max: u32,
    /// Whether a probe of this node failed in the current probe cycle.
    probe_failed_in_cycle: bool,
    /// The highest `local_health` reached, for measurements.
    local_health_peak: u32,
    /// foca's current timer token, read off the timers it schedules (foca
    /// keeps it private): a suspicion this node raises itself
    /// ([`Membership::suspect_closed`]) needs it for its down timer.
    foca_token: Option<u8>,
    /// foca's suspicion timeout, before local health stretches it.
    suspect_to_down: Duration,
    /// The other nodes foca counts as active, ascending: kept from foca's
    /// up/down notifications so that liveness questions, asked for every
    /// record on every tick, cost a binary search instead of a scan of
    /// foca's member list (which made a tick O(n²) at 500 nodes).
    live_others: Vec<NodeId>,
    /// When this node last looked for ring members it does not see.
    last_announce_scan: Option<Time>,
    /// Where the next announce scan starts in the ring, so that a bounded
    /// fan-out still reaches every unseen member in turn.
    announce_cursor: usize,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.me)
            .field("live", &self.live())
            .finish()
    }
}

impl Membership {
    /// A fresh SWIM member with identity `(me, generation)`, seeded by `rng`.
    pub fn new(
        me: NodeId,
        generation: u64,
        config: &LeaderlessConfig,
        members_max: usize,
        rng: NodeRng,
    ) -> Membership {
        let foca_config = Config {
            probe_period: Duration::from_millis(config.swim_probe_period_ms),
            probe_rtt: Duration::from_millis(config.swim_probe_rtt_ms),
            num_indirect_probes: NonZeroUsize::new(3).expect("3 > 0"),
            max_transmissions: NonZeroU8::new(10).expect("10 > 0"),
            suspect_to_down_after: Duration::from_millis(config.swim_suspect_to_down_ms),
            remove_down_after: Duration::from_millis(config.swim_remove_down_after_ms),
            max_packet_size: NonZeroUsize::new(1400).expect("1400 > 0"),
            notify_down_members: true,
            periodic_announce: None,
            periodic_announce_to_down_members: None,
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: Duration::from_millis(config.swim_gossip_interval_ms),
                num_members: NonZeroUsize::new(3).expect("3 > 0"),
            }),
        };
        let loads: LoadTable = Arc::new(Mutex::new(BTreeMap::new()));
        Membership {
            me,
            foca: Foca::with_custom_broadcast(
                SwimId {
                    node: me,
                    generation,
                },
                foca_config,
                FocaRng(rng),
                PostcardCodec,
                LoadHandler::new(loads.clone(), members_max),
            ),
            loads,
            load_seq: 0,
            last_load: None,
            generation,
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            next_token: SWIM_TOKEN_BASE,
            last_announce: BTreeMap::new(),
            downs: Vec::new(),
            counters: SwimCounters::default(),
            swim_errors: 0,
            local_health: 0,
            probe_period: Duration::from_millis(config.swim_probe_period_ms),
            local_health_max: config.local_health_max,
            probe_failed_in_cycle: false,
            local_health_peak: 0,
            foca_token: None,
            suspect_to_down: Duration::from_millis(config.swim_suspect_to_down_ms),
            live_others: Vec::new(),
            last_announce_scan: None,
            announce_cursor: 0,
        }
    }

    /// Lifeguard's local health multiplier now (0: healthy).
    pub fn local_health(&self) -> u32 {
        self.local_health
    }

    /// The highest local health multiplier reached since boot.
    pub fn local_health_peak(&self) -> u32 {
        self.local_health_peak
    }

    fn raise_local_health(&mut self) {
        self.local_health = (self.local_health + 1).min(self.local_health_max);
        self.local_health_peak = self.local_health_peak.max(self.local_health);
    }

    /// The latest load report of `node`, if any arrived.
    pub fn load(&self, node: NodeId) -> Option<LoadReport> {
        self.with_load(node, LoadReport::clone)
    }

    /// `f` of the latest load report of `node`, if any arrived (no copy).
    pub fn with_load<R>(&self, node: NodeId, f: impl FnOnce(&LoadReport) -> R) -> Option<R> {
        self.loads.lock().expect("never poisoned").get(&node).map(f)
    }

    /// The highest priority another live node reports it waits a slot for
    /// (`LoadReport::waiting`), if any does. Walks every report: asked
    /// only when this node is about to start a pending task.
    pub fn waiting_elsewhere(&self) -> Option<i8> {
        self.loads
            .lock()
            .expect("never poisoned")
            .values()
            .filter(|r| r.node != self.me && self.is_live(r.node))
            .filter_map(|r| r.waiting)
            .max()
    }

    /// Every load report held, in ascending node order.
    pub fn loads(&self) -> Vec<LoadReport> {
        self.loads
            .lock()
            .expect("never poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Broadcasts this node's load when it (the running tasks, the
    /// capacity: a draining node reports none, the highest priority it
    /// announces no node has room for, or the highest priority of the
    /// ready pending tasks it replicates) changed, or when the last report is older than
    /// `refresh`.
    pub fn report_load(
        &mut self,
        now: Time,
        (running, capacity): (u32, u32),
        (waiting, pending): (Option<i8>, Option<i8>),
        labels: &[String],
        refresh: Duration,
    ) {
        let due = match self.last_load {
            None => true,
            Some((r, at)) => {
                r != (running, capacity, waiting, pending) || now.saturating_since(at) >= refresh
            }
        };
        if !due {
            return;
        }
        self.load_seq += 1;
        let report = LoadReport {
            node: self.me,
            seq: (self.generation, self.load_seq),
            running,
            capacity,
            labels: labels.to_vec(),
            waiting,
            pending,
        };
        self.last_load = Some(((running, capacity, waiting, pending), now));
        if self
            .foca
            .add_broadcast(&cohort_core::encode(&report))
            .is_err()
        {
            self.swim_errors += 1;
        }
    }

    /// Has the next [`Membership::report_load`] broadcast this node's load
    /// even if unchanged. Called when a member comes up or this node
    /// rejoins: a load broadcast is carried a bounded number of times, so
    /// one sent while this node went unheard (a one-way partition spends
    /// them all) is lost, and an unchanged load is sent again only after
    /// the refresh interval (30 s). Without it a node that carries a label
    /// no other has was offered nothing that long (`cohort sim` 7 nodes,
    /// seed 24 with 700 ms SWIM timings: n1, the only carrier, unheard for
    /// its first 3.3 s).
    fn load_again(&mut self) {
        self.last_load = None;
    }

    /// Whether `token` belongs to SWIM.
    pub fn owns(token: TimerToken) -> bool {
        token.0 >= SWIM_TOKEN_BASE
    }

    /// Whether `node` is live in this node's view (this node always is).
    pub fn is_live(&self, node: NodeId) -> bool {
        node == self.me || self.live_others.binary_search(&node).is_ok()
    }

    /// Every live node, this one included, ascending.
    pub fn live(&self) -> Vec<NodeId> {
        self.check_live_cache();
        let mut v = self.live_others.clone();
        if let Err(at) = v.binary_search(&self.me) {
            v.insert(at, self.me);
        }
        v
    }

    /// The live nodes other than this one, ascending.
    pub fn live_others(&self) -> &[NodeId] {
        &self.live_others
    }

    /// The cache agrees with foca (checked in debug builds, where it is
    /// cheap enough: tests run small clusters).
    fn check_live_cache(&self) {
        if cfg!(debug_assertions) {
            let truth: BTreeSet<NodeId> = self
                .foca
                .iter_members()
                .map(|m| m.id().node)
                .filter(|&n| n != self.me)
                .collect();
            assert_eq!(
                truth.into_iter().collect::<Vec<_>>(),
                self.live_others,
                "the live cache must follow foca"
            );
        }
    }

    fn note_up(&mut self, node: NodeId) {
        if node == self.me {
            return;
        }
        if let Err(at) = self.live_others.binary_search(&node) {
            self.live_others.insert(at, node);
        }
    }

    fn note_down(&mut self, node: NodeId) {
        // A renamed member (a new generation) may be up already under the
        // same node id: only drop it when foca has no active member left.
        if self.foca.iter_members().any(|m| m.id().node == node) {
            return;
        }
        if let Ok(at) = self.live_others.binary_search(&node) {
            self.live_others.remove(at);
        }
    }

    /// This node's current SWIM identity.
    pub fn identity(&self) -> SwimId {
        *self.foca.identity()
    }

    /// What SWIM did at this node since boot.
    pub fn counters(&self) -> SwimCounters {
        self.counters
    }

    /// The last [`DOWNS_KEPT_MAX`] down notifications, with when they came.
    pub fn downs(&self) -> &[(NodeId, Time)] {
        &self.downs
    }

    /// foca errors so far (malformed or unexpected packets); each was dropped.
    pub fn errors(&self) -> u64 {
        self.swim_errors
    }

    /// A SWIM packet from a peer.
    pub fn handle_data<M: From<Swim>>(&mut self, now: Time, data: &[u8], out: &mut Vec<Action<M>>) {
        if self.foca.handle_data(data, &mut self.runtime).is_err() {
            self.swim_errors += 1;
        }
        self.drain(now, out);
    }

    /// A SWIM timer came due.
    pub fn handle_timer<M: From<Swim>>(
        &mut self,
        now: Time,
        token: TimerToken,
        out: &mut Vec<Action<M>>,
    ) {
        assert!(Self::owns(token));
        let Some(timer) = self.timers.remove(&token.0) else {
            return; // from before a restart
        };
        if matches!(timer, Timer::ProbeRandomMember(_)) {
            // A probe cycle ended: one without a failed probe is a sign of
            // health.
            if !self.probe_failed_in_cycle {
                self.local_health = self.local_health.saturating_sub(1);
            }
            self.probe_failed_in_cycle = false;
        }
        let suspect = match timer {
            Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id),
            _ => None,
        };
        if self.foca.handle_timer(timer, &mut self.runtime).is_err() {
            self.swim_errors += 1;
        }
        if let Some(id) = suspect {
            self.drop_turn_undead_to_refuted(id);
        }
        self.drain(now, out);
    }

    /// foca 1.0 sends `TurnUndead` ("the cluster thinks you are down") to
    /// a suspect whenever its suspicion timer fires, even when the suspect
    /// refuted in time and stays up (`apply_existing_if` answers `Some`
    /// whether or not its condition held). The suspect then throws its
    /// identity away and rejoins under a new generation: every refuted
    /// suspicion became a false positive. When the suspect is still active
    /// after its timer, the only packet that timer produced is that
    /// `TurnUndead`, so it is dropped here. The runtime's queue is empty
    /// when a timer is handled (every entry point drains it).
    fn drop_turn_undead_to_refuted(&mut self, suspect: SwimId) {
        let still_active = self.foca.iter_members().any(|m| *m.id() == suspect);
        if !still_active {
            return; // declared down for real: it should learn it
        }
        let mut kept = Vec::new();
        while let Some((to, data)) = self.runtime.to_send() {
            if to.node != suspect.node {
                kept.push((to, data));
            }
        }
        for (to, data) in kept {
            self.runtime.send_to(to, &data);
        }
    }

    /// The connection `node` opened to this node closed. A process that
    /// dies has its sockets closed by the kernel at once, so this is the
    /// earliest sign of a crash; it is only a hint (a restart or a reset
    /// link closes one too), so it raises a *suspicion*, exactly as a
    /// failed probe would: the suspicion spreads by gossip, a live member
    /// refutes it by bumping its incarnation, and only a suspect that stays
    /// silent for the suspicion timeout is declared down. A partition closes
    /// nothing, so probing still covers it. Returns whether a suspicion was
    /// raised (not when `node` is unknown, down, or already suspect).
    pub fn suspect_closed<M: From<Swim>>(
        &mut self,
        now: Time,
        node: NodeId,
        out: &mut Vec<Action<M>>,
    ) -> bool {
        let Some(token) = self.foca_token else {
            return false; // foca has not started yet: nothing to suspect
        };
        let Some(member) = self
            .foca
            .iter_members()
            .find(|m| m.id().node == node && m.state() == foca::State::Alive)
            .cloned()
        else {
            return false;
        };
        let suspect = foca::Member::new(*member.id(), member.incarnation(), foca::State::Suspect);
        if self
            .foca
            .apply_many(std::iter::once(suspect), true, &mut self.runtime)
            .is_err()
        {
            self.swim_errors += 1;
            return false;
        }
        self.counters.suspicions_raised += 1;
        self.counters.suspicions_from_closed_connections += 1;
        // foca only arms the down timer for suspicions its own probes
        // raise; arm it here the same way (stretched by local health in
        // `drain`). A refutation bumps the incarnation, which disarms it.
        self.runtime.submit_after(
            Timer::ChangeSuspectToDown {
                member_id: *member.id(),
                incarnation: member.incarnation(),
                token,
            },
            self.suspect_to_down,
        );
        self.drain(now, out);
        true
    }

    /// Announces this node to ring members it does not see as live, at
    /// most once per `interval` each, and to at most `fanout_max` of them
    /// per `interval` (taken in turn): joining at boot, re-joining after a
    /// partition heals. One announce brings back the receiver's member list
    /// and gossip spreads the rest, so a few suffice; announcing to every
    /// unseen member at once made a cluster's boot cost n² messages.
    pub fn announce_to_unseen<M: From<Swim>>(
        &mut self,
        now: Time,
        ring: &[NodeId],
        interval: Duration,
        fanout_max: usize,
        out: &mut Vec<Action<M>>,
    ) {
        if self
            .last_announce_scan
            .is_some_and(|t| now.saturating_since(t) < interval / 2)
        {
            return;
        }
        self.last_announce_scan = Some(now);
        if ring.is_empty() {
            return;
        }
        let start = self.announce_cursor % ring.len();
        let mut sent = 0;
        let mut scanned = 0;
        for i in 0..ring.len() {
            if sent >= fanout_max {
                break;
            }
            scanned = i + 1;
            let node = ring[(start + i) % ring.len()];
            if self.is_live(node) {
                continue;
            }
            let due = self
                .last_announce
                .get(&node)
                .is_none_or(|&t| now.saturating_since(t) >= interval);
            if !due {
                continue;
            }
            self.last_announce.insert(node, now);
            sent += 1;
            // foca ignores the destination identity; the generation is unknown.
            let dst = SwimId {
                node,
                generation: 0,
            };
            if self.foca.announce(dst, &mut self.runtime).is_err() {
                self.swim_errors += 1;
            }
        }
        self.announce_cursor = (start + scanned) % ring.len();
        self.drain(now, out);
    }

    fn drain<M: From<Swim>>(&mut self, now: Time, out: &mut Vec<Action<M>>) {
        while let Some((to, data)) = self.runtime.to_send() {
            out.push(Action::Send {
                to: to.node,
                msg: M::from(Swim(data.to_vec())),
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            // Lifeguard's local-health-aware probe and suspicion: while this
            // node misses acks itself, it gives a direct probe longer before
            // asking others (within the probe period, which foca fixes) and
            // gives a suspect longer to refute before declaring it down.
            // The probe interval itself is not stretched: a slow node that
            // probes less also spreads its own refutations more slowly.
            let scale = 1 + self.local_health;
            if let Timer::ProbeRandomMember(t)
            | Timer::SendIndirectProbe { token: t, .. }
            | Timer::ChangeSuspectToDown { token: t, .. }
            | Timer::PeriodicAnnounce(t)
            | Timer::PeriodicAnnounceDown(t)
            | Timer::PeriodicGossip(t) = timer
            {
                self.foca_token = Some(t);
            }
            let after = match timer {
                Timer::SendIndirectProbe { .. } => (after * scale).min(self.probe_period * 9 / 10),
                Timer::ChangeSuspectToDown { .. } => after * scale,
                _ => after,
            };
            let token = self.next_token;
            self.next_token = self
                .next_token
                .checked_add(1)
                .expect("timer tokens exhausted");
            self.timers.insert(token, timer);
            out.push(Action::SetTimer {
                token: TimerToken(token),
                at: now + after,
            });
        }
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::ProbeFailed(..) => {
                    self.counters.suspicions_raised += 1;
                    self.probe_failed_in_cycle = true;
                    self.raise_local_health();
                }
                OwnedNotification::MemberUp(id) => {
                    self.note_up(id.node);
                    self.load_again();
                }
                // foca renames a member it holds down too (a newer
                // generation heard of, not heard from): live only if active.
                OwnedNotification::Rename(_, id)
                    if self.foca.iter_members().any(|m| *m.id() == id) =>
                {
                    self.note_up(id.node);
                    self.load_again();
                }
                OwnedNotification::MemberDown(id) => {
                    self.note_down(id.node);
                    self.counters.members_declared_down += 1;
                    if self.downs.len() >= DOWNS_KEPT_MAX {
                        self.downs.remove(0);
                    }
                    self.downs.push((id.node, now));
                }
                OwnedNotification::Rejoin(id) => {
                    // The cluster declared this live node down: a false
                    // positive, seen from its victim.
                    self.counters.declared_down_while_alive += 1;
                    self.load_again();
                    // A later boot must start above this generation.
                    out.push(Action::Persist(vec![StoreOp::Put {
                        key: GENERATION_KEY.to_vec(),
                        value: cohort_core::encode(&id.generation),
                    }]));
                }
                _ => {}
            }
        }
    }
}

/// What SWIM did at this node since boot, for operators' metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwimCounters {
    /// Probes of a member that went unanswered (the member turns suspect).
    pub suspicions_raised: u64,
    /// Members this node learned were declared down.
    pub members_declared_down: u64,
    /// Times this node, alive, learned the cluster had declared it down and
    /// rejoined under a new identity: false positives about itself.
    pub declared_down_while_alive: u64,
    /// Suspicions raised because a member's connection to this node closed
    /// (also counted in `suspicions_raised`).
    pub suspicions_from_closed_connections: u64,
}

/// A SWIM packet on its way out.
#[derive(Debug)]
pub struct Swim(pub Vec<u8>);

impl From<Swim> for LeaderlessMessage {
    fn from(s: Swim) -> LeaderlessMessage {
        LeaderlessMessage::Swim(s.0)
    }
}

/// The node's seeded RNG (rand_core 0.6) as the rand_core 0.9 RNG foca 1.0
/// takes. Same stream of numbers, so runs replay bit for bit.
pub struct FocaRng(pub NodeRng);

impl rand_core_09::RngCore for FocaRng {
    fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut self.0)
    }

    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut self.0, dst);
    }
}
