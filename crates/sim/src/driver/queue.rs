//! The event queue: a min-heap of small keys over a slab of events.

use super::Event;
use cohort_core::Time;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A queue entry: the ordering key and where the event waits in the slab.
/// Small, so the heap moves 24 bytes, not whole events.
struct Scheduled {
    at: Time,
    seq: u64,
    slot: usize,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event goes first;
    /// ties go to the event scheduled first (`seq` is a global counter).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The event queue: a min-heap on `(time, sequence number)`, a total order.
#[derive(Default)]
pub(super) struct Queue {
    heap: BinaryHeap<Scheduled>,
    slab: Vec<Option<Event>>,
    free: Vec<usize>,
    seq: u64,
}

impl Queue {
    pub(super) fn push(&mut self, at: Time, event: Event) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot] = Some(event);
                slot
            }
            None => {
                self.slab.push(Some(event));
                self.slab.len() - 1
            }
        };
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            slot,
        });
    }

    /// The earliest event, if it is due at or before `until`.
    pub(super) fn pop_until(&mut self, until: Time) -> Option<(Time, Event)> {
        if self.heap.peek()?.at > until {
            return None;
        }
        let s = self.heap.pop()?;
        let event = self.slab[s.slot].take().expect("a queued event");
        self.free.push(s.slot);
        Some((s.at, event))
    }
}
