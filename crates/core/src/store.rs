//! What a node persists: one ordered key-value space per node.
//!
//! Modes prefix their keys (Raft log, hard state, Paxos acceptor records).
//! The runtime maps it onto one redb table; the simulator onto a `BTreeMap`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A write, part of an [`crate::Action::Persist`] batch applied atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Remove every key in `start..end`.
    DeleteRange {
        /// First key removed.
        start: Vec<u8>,
        /// First key kept after the range.
        end: Vec<u8>,
    },
}

impl StoreOp {
    /// A [`StoreOp::Put`] of copies of `key` and `value`.
    pub fn put(key: &[u8], value: &[u8]) -> StoreOp {
        StoreOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }
}

/// Everything a node persisted, as handed back to [`crate::Node::boot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Stored {
    /// An empty store (a node's first boot).
    pub fn new() -> Stored {
        Stored::default()
    }

    /// Applies one batch in order.
    pub fn apply(&mut self, ops: &[StoreOp]) {
        for op in ops {
            match op {
                StoreOp::Put { key, value } => {
                    self.entries.insert(key.clone(), value.clone());
                }
                StoreOp::Delete { key } => {
                    self.entries.remove(key);
                }
                StoreOp::DeleteRange { start, end } => {
                    if start < end {
                        let doomed: Vec<Vec<u8>> = self
                            .entries
                            .range(start.clone()..end.clone())
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            self.entries.remove(&k);
                        }
                    }
                }
            }
        }
    }

    /// The value at `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Every entry in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> StoreOp {
        StoreOp::put(k, v)
    }

    #[test]
    fn delete_range_removes_exactly_the_half_open_range() {
        let mut s = Stored::new();
        s.apply(&[
            put(b"a1", b"x"),
            put(b"a2", b"x"),
            put(b"a3", b"x"),
            put(b"b1", b"x"),
        ]);
        s.apply(&[StoreOp::DeleteRange {
            start: b"a2".to_vec(),
            end: b"a3".to_vec(),
        }]);
        let keys: Vec<&[u8]> = s.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&b"a1"[..], b"a3", b"b1"]);
        assert_eq!(s.scan_prefix(b"a").count(), 2);
    }
}
