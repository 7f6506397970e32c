//! Writes the write-ahead log made durable but redb does not hold yet,
//! coalesced: the latest write of each key, and the range deletes since
//! the last flush.
//!
//! Why: a node reads its file only when it opens, so redb need only catch
//! up before a checkpoint (which makes it durable and starts the log over).
//! Applied batch by batch, a leaderless task's record went into redb six
//! times per replica (its first write, then a promise, an accept and a
//! learn of its claim, an accept and a learn of its result), and every
//! Raft entry went in once only to be deleted at the next compaction.
//! Held here until [`WRITE_BEHIND_KEYS_MAX`] keys or
//! [`WRITE_BEHIND_BYTES_MAX`] bytes, those become one insert, or none.
//!
//! Applying a flush (every range delete, then every key's latest write)
//! leaves redb as applying the batches one by one would have: a key's
//! write that came before a range delete covering it was dropped from
//! here when the delete came, so each write held here is later than every
//! range delete that covers it.

use cohort_core::StoreOp;
use std::collections::BTreeMap;

/// Most distinct keys held before a flush.
pub const WRITE_BEHIND_KEYS_MAX: usize = 4_096;
/// Most key and value bytes held before a flush.
pub const WRITE_BEHIND_BYTES_MAX: usize = 8 << 20;
/// Most range deletes held before a flush.
pub const WRITE_BEHIND_RANGES_MAX: usize = 64;

/// See the module docs.
#[derive(Debug, Default)]
pub struct WriteBehind {
    /// Range deletes `[start, end)`, in order.
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// The latest write of each key: a value, or `None` for a delete.
    keys: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Key and value bytes in `keys`.
    bytes: usize,
}

fn size(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len)
}

impl WriteBehind {
    /// Takes `ops`, in order, after the earlier ones.
    pub fn add(&mut self, ops: &[StoreOp]) {
        for op in ops {
            match op {
                StoreOp::Put { key, value } => self.set(key, Some(value.clone())),
                StoreOp::Delete { key } => self.set(key, None),
                StoreOp::DeleteRange { start, end } => {
                    if start >= end {
                        continue; // empty, as `Stored::apply` and redb take it
                    }
                    let covered: Vec<Vec<u8>> = self
                        .keys
                        .range(start.clone()..end.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in covered {
                        let v = self.keys.remove(&k).expect("listed above");
                        self.bytes -= size(&k, &v);
                    }
                    self.ranges.push((start.clone(), end.clone()));
                }
            }
        }
    }

    fn set(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        self.bytes += size(key, &value);
        if let Some(old) = self.keys.insert(key.to_vec(), value) {
            self.bytes -= size(key, &old);
        }
    }

    /// Whether a flush is due (a bound is reached).
    pub fn is_full(&self) -> bool {
        self.keys.len() >= WRITE_BEHIND_KEYS_MAX
            || self.bytes >= WRITE_BEHIND_BYTES_MAX
            || self.ranges.len() >= WRITE_BEHIND_RANGES_MAX
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.ranges.is_empty()
    }

    /// What is held, as ops to apply in order (range deletes first), and
    /// nothing held after.
    pub fn take(&mut self) -> Vec<StoreOp> {
        let ranges = std::mem::take(&mut self.ranges);
        let keys = std::mem::take(&mut self.keys);
        self.bytes = 0;
        let mut ops = Vec::with_capacity(ranges.len() + keys.len());
        ops.extend(
            ranges
                .into_iter()
                .map(|(start, end)| StoreOp::DeleteRange { start, end }),
        );
        ops.extend(keys.into_iter().map(|(key, value)| match value {
            Some(value) => StoreOp::Put { key, value },
            None => StoreOp::Delete { key },
        }));
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::Stored;
    use rand::{Rng, SeedableRng};

    fn key(i: u8) -> Vec<u8> {
        vec![b'k', i]
    }

    /// Random batches of puts, deletes and range deletes over a few keys,
    /// flushed at random moments: redb (modelled by `Stored`, which applies
    /// ops the way `Storage::apply` does) ends as if every batch had been
    /// applied in turn.
    #[test]
    fn flushing_what_is_held_leaves_the_same_state_as_applying_every_batch() {
        for seed in 0..500u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (mut direct, mut behind_store) = (Stored::new(), Stored::new());
            let mut behind = WriteBehind::default();
            for _ in 0..rng.gen_range(1..40) {
                let batch: Vec<StoreOp> = (0..rng.gen_range(1..6))
                    .map(|_| match rng.gen_range(0..10) {
                        0..=5 => StoreOp::Put {
                            key: key(rng.gen_range(0..12)),
                            value: vec![rng.gen(); rng.gen_range(0..4)],
                        },
                        6..=7 => StoreOp::Delete {
                            key: key(rng.gen_range(0..12)),
                        },
                        _ => {
                            let a = rng.gen_range(0..13);
                            StoreOp::DeleteRange {
                                start: key(a),
                                end: key(rng.gen_range(0..13).max(a)),
                            }
                        }
                    })
                    .collect();
                direct.apply(&batch);
                behind.add(&batch);
                let expected: usize = behind.keys.iter().map(|(k, v)| size(k, v)).sum();
                assert_eq!(behind.bytes, expected, "seed {seed}");
                if rng.gen_bool(0.2) {
                    behind_store.apply(&behind.take());
                    assert!(behind.is_empty());
                }
            }
            behind_store.apply(&behind.take());
            assert_eq!(
                format!("{:?}", direct.iter().collect::<Vec<_>>()),
                format!("{:?}", behind_store.iter().collect::<Vec<_>>()),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_key_written_many_times_is_held_once_and_a_deleted_range_not_at_all() {
        let mut b = WriteBehind::default();
        for v in 0..6u8 {
            b.add(&[StoreOp::Put {
                key: key(1),
                value: vec![v],
            }]);
        }
        b.add(&[StoreOp::Put {
            key: key(5),
            value: vec![9; 100],
        }]);
        b.add(&[StoreOp::DeleteRange {
            start: key(4),
            end: key(9),
        }]);
        assert_eq!(
            b.take(),
            vec![
                StoreOp::DeleteRange {
                    start: key(4),
                    end: key(9)
                },
                StoreOp::Put {
                    key: key(1),
                    value: vec![5]
                },
            ]
        );
        assert!(!b.is_full());
        for i in 0..WRITE_BEHIND_KEYS_MAX {
            b.add(&[StoreOp::Delete {
                key: i.to_be_bytes().to_vec(),
            }]);
        }
        assert!(b.is_full());
    }
}
