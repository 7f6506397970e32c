//! Settings of the leaderless mode, validated before boot.

use cohort_core::{NodeId, Peers};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of a leaderless cluster, identical on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderlessConfig {
    /// Replicas per task (`R`).
    pub replicas: usize,
    /// Replicas that must persist a submitted task before it is
    /// acknowledged (`W`, more than half of `R`).
    pub write_quorum: usize,
    /// The node's housekeeping period: retries, claims, re-claims.
    pub tick_interval_ms: u64,
    /// How long a client request (submit, read, cancel) may wait for
    /// replicas before it fails with a retryable `Unavailable`.
    pub request_timeout_ms: u64,
    /// A Paxos round with no decision after this long is retried with a
    /// higher ballot.
    pub paxos_round_timeout_ms: u64,
    /// The most a proposer waits after its round was pre-empted: the wait
    /// is drawn at random below a window that starts at
    /// `paxos_round_timeout_ms` and doubles with each failed round up to
    /// this.
    pub paxos_backoff_max_ms: u64,
    /// Most Paxos proposals this node runs at once.
    pub paxos_in_flight_max: usize,
    /// Most client requests waiting on replicas at once.
    pub requests_in_flight_max: usize,
    /// SWIM: how often a member is probed.
    pub swim_probe_period_ms: u64,
    /// SWIM: how long a direct probe waits for its ack before indirect probes.
    pub swim_probe_rtt_ms: u64,
    /// SWIM: how long a suspect has to refute before it is declared down.
    pub swim_suspect_to_down_ms: u64,
    /// SWIM: how often updates (suspicions, refutations, downs, load
    /// reports) are gossiped to 3 random members, besides riding on
    /// probes. Nothing is sent when there is nothing new.
    pub swim_gossip_interval_ms: u64,
    /// SWIM: how long a down member is remembered (so it cannot come back
    /// under the same identity).
    pub swim_remove_down_after_ms: u64,
    /// How often a node announces itself to ring members it does not see
    /// as live (joining, and re-joining after a partition).
    pub announce_interval_ms: u64,
    /// Most unseen members a node announces itself to per
    /// `announce_interval_ms` (in turn); an announce brings back the
    /// receiver's member list, and gossip spreads the rest.
    pub announce_fanout_max: usize,
    /// How many of its non-final records a replica offers to one peer per
    /// tick for anti-entropy.
    pub anti_entropy_batch_max: usize,
    /// How often a node re-broadcasts its load when it did not change.
    pub load_report_interval_ms: u64,
    /// Lifeguard: the cap of the local health multiplier that stretches
    /// SWIM timeouts while this node misses acks itself; 0 turns it off.
    pub local_health_max: u32,
    /// The ring at epoch 0, identical on every node; `None`: every
    /// configured member. A configured member outside it is a spare that
    /// serves clients and joins the ring when a join is agreed.
    pub initial_ring: Option<Vec<NodeId>>,
    /// How many earlier rings a node remembers, so reads also look where
    /// tasks not yet moved to the newest ring live.
    pub ring_history_max: usize,
    /// How often a node tells one random live node its ring epoch, so a
    /// node that missed a ring change catches up (changes themselves are
    /// sent to every member at once).
    pub ring_gossip_interval_ms: u64,
    /// Most tasks a node starts moving to their replicas under a newer
    /// ring per tick.
    pub rebalance_per_tick_max: usize,
    /// Most pending records one tick looks at to claim, fail or offer:
    /// that many from the head of the claim order (the highest priority,
    /// then the oldest ids) and as many more from a window that moves
    /// through the rest tick by tick. Running records are all looked at.
    /// A larger backlog is covered over several ticks instead of one tick
    /// walking all of it (which, at 100,000 pending tasks, took a third of
    /// the CPU and starved completions).
    pub claim_scan_per_tick_max: usize,
    /// Between ticks, a node claims again at the end of a batch of inputs
    /// in which a handler returned or a new record arrived, but at most
    /// once per this many ms (a claim scan costs what a tick's does).
    /// Waiting for the tick instead held each execution slot idle for up
    /// to `tick_interval_ms` after every task and each new task as long
    /// before it started.
    pub claim_interval_ms: u64,
    /// Claims between ticks look at every record while this node holds
    /// at most this many active (pending or running) ones, and with more
    /// at the first this many pending ones of the claim order only: a full
    /// scan per batch cost more CPU than it gained (5 nodes, 64 clients x
    /// 100 tasks: completions 4,154-4,336 -> 1,886-2,115/s), and claiming
    /// only at the tick bounded completions by the slots refilled per tick.
    pub claim_early_active_max: usize,
    /// A pending task its preferred replica has not claimed for this long
    /// is claimed by any other replica with room that holds it: the
    /// preferred one may lack the record (a first write that missed it and
    /// that the creation fence keeps it from creating) or hold a dead one.
    pub pending_claim_fallback_ms: u64,
    /// A pending task whose worker labels no live replica with room
    /// carries is offered to a live node that carries them; the offer is
    /// made again after this long while the task stays pending.
    pub offer_interval_ms: u64,
    /// A node with a free slot whose best pending task has a lower
    /// priority than one another live node announces it can place nowhere
    /// (its replicas are full) keeps that slot free for the other's offer
    /// for at most this long before it starts its own task; 0 never waits
    /// (priorities then hold per replica set only).
    pub priority_hold_ms: u64,
    /// Most messages for one peer packed into one bundle at the end of a
    /// driver batch (also bounded by the peer's `message_bytes_max`). A
    /// bundle with more is refused by its receiver, so it must be the same
    /// on every node.
    pub bundle_messages_max: usize,
    /// The highest `concurrency_max` a task's limit may carry here: a
    /// permit record holds at most this many places (a higher one is
    /// refused at submit).
    pub permit_holders_max: u32,
    /// The highest `rate_max` a task's limit may carry here: a permit
    /// record keeps at most this many start stamps.
    pub permit_starts_max: u32,
    /// How long a claimer waits for a keeper's grant before it asks again
    /// (the keeper may be down, or the key full); also how often a keeper
    /// tries again to write a permit record it lacks.
    pub permit_ask_interval_ms: u64,
    /// How often a keeper checks the places held in its permit records
    /// against their tasks, giving back those whose run ended unreported.
    pub permit_sweep_interval_ms: u64,
    /// A grant is claimed with only this soon after its stamp (the start
    /// its rate limit counts, and the one its history shows); later, the
    /// claimer asks for it again and the keeper stamps it anew.
    pub permit_grant_use_ms: u64,
    /// A grant whose claim has not come this long after it was stamped is
    /// fenced (the task's epoch moved past it), then given back.
    pub permit_fence_after_ms: u64,
    /// Most asks a keeper holds queued or in proposals, all keys.
    pub permit_asks_max: usize,
    /// A permit record its keeper has seen idle this long (no place held,
    /// nothing asked, its latest start outside every window) is retired:
    /// a decided change after which its replicas purge it, so a limit key
    /// no longer used does not keep a record for ever.
    pub permit_idle_retire_ms: u64,
    /// How long a retired permit record is kept before its replicas purge
    /// it (on each one's clock). A grant within that time brings the same
    /// record back; after it, the key's next ask creates a new one.
    pub permit_retired_retained_ms: u64,
    /// Most schedule definitions a node creates as a replica (tombstones
    /// of deleted schedules count with them, and are refused past twice
    /// this): both are kept for ever (`cohort_core::schedule::kept_for_ever`),
    /// so a new schedule past it is refused `429 overloaded` rather than
    /// growing storage without a bound. Records that exist already (learned,
    /// moved here) are always taken.
    pub schedules_kept_max: usize,
    /// Most tombstones a node keeps (one per record it purged, a few dozen
    /// bytes each, see [`crate::retention`]); past it the oldest goes.
    pub tombstones_max: usize,
    /// How long a node keeps a tombstone after the purge. A replica cut
    /// off for longer than this that still holds the record not final can
    /// bring the task back (it should be wiped before it rejoins).
    pub tombstone_retained_ms: u64,
}

impl Default for LeaderlessConfig {
    fn default() -> LeaderlessConfig {
        LeaderlessConfig {
            replicas: 3,
            write_quorum: 2,
            tick_interval_ms: 50,
            request_timeout_ms: 1_000,
            paxos_round_timeout_ms: 200,
            paxos_backoff_max_ms: 2_000,
            paxos_in_flight_max: 1_024,
            requests_in_flight_max: 4_096,
            swim_probe_period_ms: 700,
            swim_probe_rtt_ms: 250,
            swim_suspect_to_down_ms: 700,
            swim_gossip_interval_ms: 200,
            swim_remove_down_after_ms: 30_000,
            announce_interval_ms: 500,
            announce_fanout_max: 8,
            anti_entropy_batch_max: 64,
            local_health_max: 8,
            load_report_interval_ms: 30_000,
            initial_ring: None,
            ring_history_max: 8,
            rebalance_per_tick_max: 64,
            claim_scan_per_tick_max: 2_048,
            claim_interval_ms: 5,
            claim_early_active_max: 256,
            ring_gossip_interval_ms: 1_000,
            pending_claim_fallback_ms: 2_000,
            offer_interval_ms: 500,
            priority_hold_ms: 1_000,
            bundle_messages_max: 1_024,
            permit_holders_max: 1_024,
            permit_starts_max: 1_024,
            permit_ask_interval_ms: 200,
            permit_sweep_interval_ms: 500,
            permit_grant_use_ms: 1_000,
            permit_fence_after_ms: 2_000,
            permit_asks_max: 4_096,
            permit_idle_retire_ms: 600_000,
            permit_retired_retained_ms: 3_600_000,
            schedules_kept_max: 100_000,
            tombstones_max: 1_000_000,
            tombstone_retained_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// An invalid [`LeaderlessConfig`]. Nothing was started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaderlessConfigError {
    /// A setting that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// `W` must be a majority of `R`, and at most `R`.
    #[error("write_quorum {w} must be more than half of replicas {r} and at most {r}")]
    BadWriteQuorum {
        /// `W`.
        w: usize,
        /// `R`.
        r: usize,
    },
    /// The probe round trip must fit in the probe period.
    #[error("swim_probe_rtt_ms must be below swim_probe_period_ms")]
    ProbeRttTooLong,
    /// The initial ring must be a non-empty set of configured members.
    #[error("initial_ring must be a non-empty subset of the members")]
    BadInitialRing,
}

impl LeaderlessConfig {
    /// Checks the settings. `R` larger than the cluster is allowed: a task
    /// then has every member as a replica.
    pub fn validate(&self, peers: &Peers) -> Result<(), LeaderlessConfigError> {
        let positive = [
            ("replicas", self.replicas as u64),
            ("tick_interval_ms", self.tick_interval_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("paxos_round_timeout_ms", self.paxos_round_timeout_ms),
            ("paxos_backoff_max_ms", self.paxos_backoff_max_ms),
            ("paxos_in_flight_max", self.paxos_in_flight_max as u64),
            ("requests_in_flight_max", self.requests_in_flight_max as u64),
            ("swim_probe_period_ms", self.swim_probe_period_ms),
            ("swim_probe_rtt_ms", self.swim_probe_rtt_ms),
            ("swim_suspect_to_down_ms", self.swim_suspect_to_down_ms),
            ("swim_gossip_interval_ms", self.swim_gossip_interval_ms),
            ("swim_remove_down_after_ms", self.swim_remove_down_after_ms),
            ("announce_interval_ms", self.announce_interval_ms),
            ("announce_fanout_max", self.announce_fanout_max as u64),
            ("anti_entropy_batch_max", self.anti_entropy_batch_max as u64),
            ("load_report_interval_ms", self.load_report_interval_ms),
            ("ring_history_max", self.ring_history_max as u64),
            ("rebalance_per_tick_max", self.rebalance_per_tick_max as u64),
            (
                "claim_scan_per_tick_max",
                self.claim_scan_per_tick_max as u64,
            ),
            ("claim_interval_ms", self.claim_interval_ms),
            ("claim_early_active_max", self.claim_early_active_max as u64),
            ("ring_gossip_interval_ms", self.ring_gossip_interval_ms),
            ("pending_claim_fallback_ms", self.pending_claim_fallback_ms),
            ("offer_interval_ms", self.offer_interval_ms),
            ("bundle_messages_max", self.bundle_messages_max as u64),
            ("permit_holders_max", u64::from(self.permit_holders_max)),
            ("permit_starts_max", u64::from(self.permit_starts_max)),
            ("permit_ask_interval_ms", self.permit_ask_interval_ms),
            ("permit_sweep_interval_ms", self.permit_sweep_interval_ms),
            ("permit_grant_use_ms", self.permit_grant_use_ms),
            ("permit_fence_after_ms", self.permit_fence_after_ms),
            ("permit_asks_max", self.permit_asks_max as u64),
            ("permit_idle_retire_ms", self.permit_idle_retire_ms),
            (
                "permit_retired_retained_ms",
                self.permit_retired_retained_ms,
            ),
            ("schedules_kept_max", self.schedules_kept_max as u64),
            ("tombstones_max", self.tombstones_max as u64),
            ("tombstone_retained_ms", self.tombstone_retained_ms),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(LeaderlessConfigError::Zero(what));
            }
        }
        if self.write_quorum * 2 <= self.replicas || self.write_quorum > self.replicas {
            return Err(LeaderlessConfigError::BadWriteQuorum {
                w: self.write_quorum,
                r: self.replicas,
            });
        }
        if self.swim_probe_rtt_ms >= self.swim_probe_period_ms {
            return Err(LeaderlessConfigError::ProbeRttTooLong);
        }
        if let Some(ring) = &self.initial_ring {
            if ring.is_empty() || ring.iter().any(|n| !peers.members.contains(n)) {
                return Err(LeaderlessConfigError::BadInitialRing);
            }
        }
        Ok(())
    }

    /// The ring at epoch 0, ascending.
    pub(crate) fn ring_zero(&self, peers: &Peers) -> Vec<NodeId> {
        let mut ring = self
            .initial_ring
            .clone()
            .unwrap_or_else(|| peers.members.clone());
        ring.sort();
        ring.dedup();
        ring
    }

    pub(crate) fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.tick_interval_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(crate) fn paxos_round_timeout(&self) -> Duration {
        Duration::from_millis(self.paxos_round_timeout_ms)
    }

    pub(crate) fn announce_interval(&self) -> Duration {
        Duration::from_millis(self.announce_interval_ms)
    }

    /// The write quorum for a task with `n` replicas (a cluster smaller
    /// than `R` has fewer).
    pub(crate) fn write_quorum_for(&self, n: usize) -> usize {
        if n >= self.replicas {
            self.write_quorum
        } else {
            crate::paxos::majority(n).max(self.write_quorum.min(n))
        }
    }
}
