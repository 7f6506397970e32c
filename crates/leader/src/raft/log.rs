//! The in-memory Raft log and its persisted form.
//!
//! The log holds the entries `(offset, last_index]`; the entry at `offset`
//! itself was compacted away but its term is remembered, so an append whose
//! `prev_index == offset` can still be checked. Every mutation pushes the
//! matching [`StoreOp`]s so the caller persists exactly what changed:
//!
//! | key                        | value                         |
//! |----------------------------|-------------------------------|
//! | `raft/hard`                | [`super::HardState`]          |
//! | `raft/offset`              | `(index, term)` of the offset |
//! | `raft/log/<index, 8 B BE>` | one [`Entry`]                 |
//! | `raft/snap`                | the latest [`super::Snapshot`]|

use super::Entry;
use cohort_core::{decode, encode, StoreOp, Stored};

/// Key of the hard state (term, vote, commit).
pub const HARD_KEY: &[u8] = b"raft/hard";
/// Key of the log offset (index and term of the last compacted entry).
pub const OFFSET_KEY: &[u8] = b"raft/offset";
/// Key of the latest snapshot.
pub const SNAP_KEY: &[u8] = b"raft/snap";
/// Prefix of the log entries; the index follows as 8 big-endian bytes.
pub const LOG_PREFIX: &[u8] = b"raft/log/";

/// The storage key of the entry at `index`.
pub fn log_key(index: u64) -> Vec<u8> {
    let mut k = LOG_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The end of the log key space (exclusive bound for range deletes).
fn log_key_end() -> Vec<u8> {
    let mut k = LOG_PREFIX.to_vec();
    k.extend_from_slice(&[0xff; 9]);
    k
}

/// Why the persisted log could not be read back. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// A stored value did not decode.
    #[error("stored {what} ({}) is malformed: {reason}", key.escape_ascii())]
    Malformed {
        /// Which record.
        what: &'static str,
        /// Its key.
        key: Vec<u8>,
        /// The decoder's complaint.
        reason: String,
    },
    /// The stored entries are not contiguous after the offset.
    #[error("stored log has a gap at index {index}")]
    Gap {
        /// The first missing index.
        index: u64,
    },
    /// The stored log, offset and snapshot contradict each other.
    #[error("stored log and snapshot disagree: {reason}")]
    Inconsistent {
        /// What does not fit.
        reason: &'static str,
    },
}

impl From<LogError> for cohort_core::BootError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Malformed { key, reason, .. } => {
                cohort_core::BootError::corrupt(&key, reason)
            }
            other => cohort_core::BootError::Inconsistent {
                reason: other.to_string(),
            },
        }
    }
}

/// The Raft log: entries `(offset, last_index]` plus the offset's term.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    offset: u64,
    offset_term: u64,
    entries: Vec<Entry>,
    /// [`Entry::payload_bytes`] summed over `entries`.
    bytes: usize,
}

impl RaftLog {
    /// Reads the log back from `stored` (empty on first boot).
    pub fn restore(stored: &Stored, limit_bytes: usize) -> Result<RaftLog, LogError> {
        let (offset, offset_term) = match stored.get(OFFSET_KEY) {
            Some(b) => decode::<(u64, u64)>(b, limit_bytes).map_err(|e| LogError::Malformed {
                what: "offset",
                key: OFFSET_KEY.to_vec(),
                reason: e.to_string(),
            })?,
            None => (0, 0),
        };
        let mut log = RaftLog {
            offset,
            offset_term,
            entries: Vec::new(),
            bytes: 0,
        };
        for (k, v) in stored.scan_prefix(LOG_PREFIX) {
            let e: Entry = decode(v, limit_bytes).map_err(|e| LogError::Malformed {
                what: "log entry",
                key: k.to_vec(),
                reason: e.to_string(),
            })?;
            if e.index <= offset {
                continue; // compacted; its delete may simply not have happened yet
            }
            if e.index != log.last_index() + 1 {
                return Err(LogError::Gap {
                    index: log.last_index() + 1,
                });
            }
            log.bytes += e.payload_bytes();
            log.entries.push(e);
        }
        Ok(log)
    }

    /// The entries' payload bytes ([`Entry::payload_bytes`]), summed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Index of the last compacted entry (0 when nothing was compacted).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Index of the first entry held.
    pub fn first_index(&self) -> u64 {
        self.offset + 1
    }

    /// Index of the last entry (the offset when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The term of the entry at `index`, if it is known (held, or the offset).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries
            .get(usize::try_from(index - self.offset - 1).ok()?)
    }

    /// Up to `max` entries starting at `lo` (which must be held or one past
    /// the end), stopping before their payloads exceed `bytes_max` (but
    /// always at least one entry, so a large entry still moves).
    pub fn slice(&self, lo: u64, max: usize, bytes_max: usize) -> Vec<Entry> {
        assert!(lo > self.offset, "slice below the offset");
        assert!(lo <= self.last_index() + 1, "slice beyond the end");
        let start = (lo - self.offset - 1) as usize;
        let end = (start + max).min(self.entries.len());
        let mut bytes = 0;
        let mut out = Vec::new();
        for e in &self.entries[start..end] {
            bytes += e.payload_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Entries `(lo, hi]`, all of which must be held.
    pub fn range(&self, lo: u64, hi: u64) -> &[Entry] {
        assert!(lo >= self.offset, "range below the offset");
        assert!(hi <= self.last_index(), "range beyond the end");
        if hi <= lo {
            return &[];
        }
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }

    /// Whether a log ending at `(last_index, last_term)` is at least as
    /// up to date as this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of `term`'s run that ends at or before `index`, for a
    /// rejection hint: the leader can skip the whole run at once.
    pub fn first_index_of_term_run(&self, index: u64, term: u64) -> u64 {
        let mut i = index;
        while i > self.first_index() && self.term_at(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index holding an entry of `term`, if any.
    pub fn last_index_of_term(&self, term: u64) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    /// Appends entries that continue the log exactly.
    pub fn append(&mut self, entries: &[Entry], ops: &mut Vec<StoreOp>) {
        for e in entries {
            assert_eq!(e.index, self.last_index() + 1, "append must be contiguous");
            assert!(
                e.term >= self.last_term(),
                "terms in the log never decrease"
            );
            ops.push(StoreOp::Put {
                key: log_key(e.index),
                value: encode(e),
            });
            self.bytes += e.payload_bytes();
            self.entries.push(e.clone());
        }
    }

    /// Removes the entries at `index` and after.
    pub fn truncate_from(&mut self, index: u64, ops: &mut Vec<StoreOp>) {
        assert!(index > self.offset, "truncating compacted entries");
        if index > self.last_index() {
            return;
        }
        for e in self.entries.drain((index - self.offset - 1) as usize..) {
            self.bytes -= e.payload_bytes();
        }
        ops.push(StoreOp::DeleteRange {
            start: log_key(index),
            end: log_key_end(),
        });
    }

    /// Drops the entries up to and including `index` (which must be held or
    /// be the offset), remembering its term.
    pub fn compact_to(&mut self, index: u64, ops: &mut Vec<StoreOp>) {
        if index <= self.offset {
            return;
        }
        let term = self
            .term_at(index)
            .expect("compacting to an entry the log holds");
        for e in self.entries.drain(..(index - self.offset) as usize) {
            self.bytes -= e.payload_bytes();
        }
        self.offset = index;
        self.offset_term = term;
        ops.push(StoreOp::Put {
            key: OFFSET_KEY.to_vec(),
            value: encode(&(index, term)),
        });
        ops.push(StoreOp::DeleteRange {
            start: log_key(0),
            end: log_key(index + 1),
        });
    }

    /// Discards the whole log and restarts it after `(index, term)` (used
    /// when a snapshot replaces a log that does not contain its last entry).
    pub fn reset_to(&mut self, index: u64, term: u64, ops: &mut Vec<StoreOp>) {
        self.entries.clear();
        self.bytes = 0;
        self.offset = index;
        self.offset_term = term;
        ops.push(StoreOp::Put {
            key: OFFSET_KEY.to_vec(),
            value: encode(&(index, term)),
        });
        ops.push(StoreOp::DeleteRange {
            start: log_key(0),
            end: log_key_end(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::EntryKind;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Command(vec![index as u8]),
        }
    }

    #[test]
    fn persisted_form_round_trips_through_truncation_and_compaction() {
        let mut log = RaftLog::default();
        let mut ops = Vec::new();
        log.append(&[e(1, 1), e(2, 1), e(3, 2), e(4, 2)], &mut ops);
        log.truncate_from(4, &mut ops);
        log.append(&[e(4, 3)], &mut ops);
        log.compact_to(2, &mut ops);
        let mut stored = Stored::new();
        stored.apply(&ops);
        let back = RaftLog::restore(&stored, 1 << 20).unwrap();
        assert_eq!(back.offset(), 2);
        assert_eq!(back.term_at(2), Some(1));
        assert_eq!(back.last_index(), 4);
        assert_eq!(back.term_at(4), Some(3));
        assert_eq!(back.term_at(1), None);
        assert_eq!(back.range(2, 4), log.range(2, 4));
    }

    #[test]
    fn the_byte_count_follows_appends_truncations_compactions_and_restores() {
        let sum = |log: &RaftLog| {
            log.range(log.offset(), log.last_index())
                .iter()
                .map(Entry::payload_bytes)
                .sum::<usize>()
        };
        let mut log = RaftLog::default();
        let mut ops = Vec::new();
        log.append(&[e(1, 1), e(2, 1), e(3, 2), e(4, 2)], &mut ops);
        assert_eq!(log.bytes(), 4 * e(1, 1).payload_bytes());
        log.truncate_from(4, &mut ops);
        assert_eq!(log.bytes(), sum(&log));
        log.compact_to(2, &mut ops);
        assert_eq!(log.bytes(), sum(&log));
        assert_eq!(log.bytes(), e(3, 2).payload_bytes());
        let mut stored = Stored::new();
        stored.apply(&ops);
        assert_eq!(
            RaftLog::restore(&stored, 1 << 20).unwrap().bytes(),
            log.bytes()
        );
        log.reset_to(9, 3, &mut ops);
        assert_eq!(log.bytes(), 0);
    }

    #[test]
    fn append_batches_respect_the_byte_budget_but_always_carry_one_entry() {
        let big = |index| Entry {
            index,
            term: 1,
            kind: EntryKind::Command(vec![0; 100]),
        };
        let mut log = RaftLog::default();
        log.append(&[big(1), big(2), big(3)], &mut Vec::new());
        assert_eq!(log.slice(1, 10, 300).len(), 2);
        assert_eq!(log.slice(1, 10, 1).len(), 1);
        assert_eq!(log.slice(1, 2, 1 << 20).len(), 2);
        assert!(log.slice(4, 10, 1 << 20).is_empty());
    }

    #[test]
    fn conflict_hint_skips_a_whole_term_run() {
        let mut log = RaftLog::default();
        let mut ops = Vec::new();
        log.append(&[e(1, 1), e(2, 2), e(3, 2), e(4, 2)], &mut ops);
        assert_eq!(log.first_index_of_term_run(4, 2), 2);
        assert_eq!(log.last_index_of_term(1), Some(1));
        assert!(log.is_up_to_date(4, 2));
        assert!(!log.is_up_to_date(9, 1));
    }
}
