//! Machines coming and going: boot, crash and restart, pause and resume,
//! partitions, scripted faults and the heal that ends the safety phase.

use super::{Event, Sim, TAG_FAULT};
use crate::config::Fault;
use cohort_core::{Node, NodeRng};
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeSet;

impl<N: Node> Sim<'_, N> {
    pub(super) fn boot(&mut self, i: usize) {
        let rng = NodeRng::seed_from_u64(self.rng.next_u64());
        let node = N::boot(
            &self.peers[i],
            self.node_cfg,
            &self.slots[i].durable,
            rng,
            self.now,
        )
        // The simulator only hands a node what it persisted itself, intact:
        // a refusal is a bug in the mode.
        .unwrap_or_else(|e| panic!("node {} refused to boot: {e}", self.slots[i].id));
        assert_eq!(
            node.id(),
            self.slots[i].id,
            "a node must boot as the id it was given"
        );
        self.slots[i].node = Some(node);
        self.drain(i);
        self.pump(i);
    }

    pub(super) fn faulty(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.node.is_none() || s.paused)
            .count()
    }

    /// At most a minority is down or paused at once (at least one node).
    pub(super) fn may_fault_another(&self) -> bool {
        self.faulty() < ((self.cfg.nodes - 1) / 2).max(1)
    }

    pub(super) fn on_crash(&mut self) {
        let Some(r) = self.plan.crash else { return };
        if self.healed || self.now >= self.safety_end {
            return;
        }
        let gap = self.exp_us(r.every_us);
        self.schedule_in(gap, Event::Crash);
        if !self.may_fault_another() {
            return;
        }
        let up: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].node.is_some())
            .collect();
        if up.is_empty() {
            return;
        }
        let i = up[self.rng.gen_range(0..up.len())];
        let down_us = self.lasting(r);
        self.crash(i, down_us);
    }

    /// Crashes node `i` (which is up) for `down_us`: its volatile state,
    /// unsynced writes, held actions and pending events are gone.
    pub(super) fn crash(&mut self, i: usize, down_us: u64) {
        self.faults += 1;
        self.hash_event(TAG_FAULT, i as u64, b"crash");
        let now = self.now;
        self.line(|| format!("{} crash n{} for {}us", now, i + 1, down_us));
        let slot = &mut self.slots[i];
        slot.node = None;
        slot.inc += 1;
        slot.unsynced.clear();
        slot.fsync_in_flight = false;
        slot.pipeline.clear();
        slot.paused = false;
        slot.held.clear();
        let inc = slot.inc;
        self.schedule_in(down_us, Event::Restart { node: i, inc });
        // The dead process's connections close: each live peer sees it
        // after what was already on the wire (unless the link is cut).
        for j in 0..self.slots.len() {
            if j != i && self.slots[j].node.is_some() {
                let at = self.link_arrival(i, j);
                self.schedule(at, Event::PeerLost { from: i, to: j });
            }
        }
    }

    pub(super) fn on_pause(&mut self) {
        let Some(r) = self.plan.pause else { return };
        if self.healed || self.now >= self.safety_end {
            return;
        }
        let gap = self.exp_us(r.every_us);
        self.schedule_in(gap, Event::Pause);
        if !self.may_fault_another() {
            return;
        }
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].node.is_some() && !self.slots[*i].paused)
            .collect();
        if running.is_empty() {
            return;
        }
        let i = running[self.rng.gen_range(0..running.len())];
        let us = self.lasting(r);
        self.pause(i, us);
    }

    /// Pauses node `i` (up, not paused) for `us`.
    pub(super) fn pause(&mut self, i: usize, us: u64) {
        self.faults += 1;
        self.hash_event(TAG_FAULT, i as u64, b"pause");
        let now = self.now;
        self.line(|| format!("{} pause n{} for {}us", now, i + 1, us));
        self.slots[i].paused = true;
        let inc = self.slots[i].inc;
        self.schedule_in(us, Event::Resume { node: i, inc });
    }

    /// Ends a pause: everything that arrived meanwhile is handled now, in order.
    pub(super) fn resume(&mut self, i: usize) {
        self.slots[i].paused = false;
        let held = std::mem::take(&mut self.slots[i].held);
        for event in held {
            self.dispatch(i, event);
        }
    }

    pub(super) fn on_partition_start(&mut self) {
        let Some(r) = self.plan.partition else { return };
        if self.healed || self.now >= self.safety_end {
            return;
        }
        let gap = self.exp_us(r.every_us);
        self.schedule_in(gap, Event::PartitionStart);
        let n = self.cfg.nodes;
        if n < 2 || self.partition.is_some() {
            return;
        }
        let kind = self.rng.gen_range(0..3u8);
        self.blocked.fill(false);
        let a = self.rng.gen_range(0..n);
        let description = match kind {
            0 => {
                for x in (0..n).filter(|x| *x != a) {
                    self.blocked[a * n + x] = true;
                    self.blocked[x * n + a] = true;
                }
                format!("n{} isolated", a + 1)
            }
            1 => {
                let mut order: Vec<usize> = (0..n).collect();
                for k in (1..n).rev() {
                    let j = self.rng.gen_range(0..=k);
                    order.swap(k, j);
                }
                let k = self.rng.gen_range(1..=n / 2);
                let side: BTreeSet<usize> = order[..k].iter().copied().collect();
                for x in 0..n {
                    for y in 0..n {
                        if side.contains(&x) != side.contains(&y) {
                            self.blocked[x * n + y] = true;
                        }
                    }
                }
                let names: Vec<String> = side.iter().map(|x| format!("n{}", x + 1)).collect();
                format!("split {{{}}} from the rest", names.join(","))
            }
            _ => {
                let inbound = self.rng.gen_bool(0.5);
                for x in (0..n).filter(|x| *x != a) {
                    if inbound {
                        self.blocked[x * n + a] = true;
                    } else {
                        self.blocked[a * n + x] = true;
                    }
                }
                let dir = if inbound {
                    "hears nobody"
                } else {
                    "is heard by nobody"
                };
                format!("one-way: n{} {dir}", a + 1)
            }
        };
        let us = self.lasting(r);
        self.cut(&description, us);
    }

    /// Starts the partition already written into `blocked`, for `us`.
    pub(super) fn cut(&mut self, description: &str, us: u64) {
        self.partitions += 1;
        let id = self.partitions;
        self.partition = Some(id);
        self.faults += 1;
        self.hash_event(TAG_FAULT, id, description.as_bytes());
        let now = self.now;
        self.line(|| format!("{} partition: {description} for {us}us", now));
        self.schedule_in(us, Event::PartitionEnd { id });
    }

    pub(super) fn on_scripted(&mut self, index: usize) {
        if self.healed {
            return;
        }
        let fault = self.cfg.script[index].fault.clone();
        let Some(i) = self.index_of(fault.node()) else {
            return;
        };
        let (up, paused) = (self.slots[i].node.is_some(), self.slots[i].paused);
        match fault {
            Fault::Crash { down_ms, .. } if up => self.crash(i, down_ms * 1000),
            Fault::Pause { for_ms, .. } if up && !paused => self.pause(i, for_ms * 1000),
            Fault::Isolate { for_ms, .. } => {
                let n = self.cfg.nodes;
                self.blocked.fill(false);
                for x in (0..n).filter(|x| *x != i) {
                    self.blocked[i * n + x] = true;
                    self.blocked[x * n + i] = true;
                }
                self.cut(&format!("n{} isolated (scripted)", i + 1), for_ms * 1000);
            }
            Fault::Crash { .. } | Fault::Pause { .. } => {
                let now = self.now;
                self.line(|| format!("{now} scripted {fault:?} skipped"));
            }
        }
    }

    pub(super) fn on_heal(&mut self) {
        self.healed = true;
        self.hash_event(TAG_FAULT, 0, b"heal");
        let now = self.now;
        self.line(|| format!("{} heal: liveness phase begins", now));
        self.blocked.fill(false);
        self.partition = None;
        for i in 0..self.slots.len() {
            if self.slots[i].node.is_none() {
                self.boot(i);
            } else if self.slots[i].paused {
                self.resume(i);
            }
        }
    }
}
