//! The write-ahead log in front of a node's redb file.
//!
//! A redb commit rewrites about nine scattered pages and syncs them (0.88 ms
//! per commit of 40 small keys on the 2-core machine, 1.9 ms with three
//! nodes committing at once), while an append to a preallocated file and
//! one `fdatasync` take 0.29 / 0.48 ms. So a batch of writes is made durable
//! here first, as one record appended to `node-N.wal`, then applied to redb
//! without a sync; once the log holds about [`CHECKPOINT_BYTES`] (a length
//! drawn per node and per cycle, see [`checkpoint_threshold`]), redb
//! commits durably (which makes every earlier unsynced commit durable too)
//! and the log starts over. At open, whatever records the log still holds are applied
//! again before the node reads its state.
//!
//! Applying a record again is harmless: a batch's writes set or remove
//! keys, so the state after a sequence of batches does not depend on
//! whether some prefix of them was already applied (the last write of each
//! key decides it). A crash between redb's durable commit and the log's
//! reset therefore loses nothing and doubles nothing.
//!
//! The log is bound to its redb file: its header holds a digest of the
//! file's identity, including a number drawn when the file was created, so
//! a log left beside a newer file (or copied next to another node's) is
//! never applied to it.
//!
//! Layout: a 24-byte header (`MAGIC`, the identity digest, the length the
//! file was extended to: a file shorter than that was cut short), then records
//! of a 16-byte head (payload length u32, sequence number u64, CRC-32 of
//! the sequence number and payload u32, all little-endian) and the
//! payload (the batch, postcard). The rest of the file is zeros (it is
//! preallocated by extending it). Only the last record can be torn, since
//! an append starts only once the previous one is durable: a bad record
//! followed by nothing but zeros is that torn append, never acknowledged,
//! and is dropped; a bad record with anything after it is corruption, and
//! the node refuses to start.

use crate::error::RuntimeError;
use cohort_core::StoreOp;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Log bytes after which, on average, redb commits durably and the log
/// starts over. Each cycle's threshold is drawn from half to one and a half
/// times this ([`checkpoint_threshold`]): the most a crash makes a node
/// replay at its next open is 48 MiB of log.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;

/// How far the file is extended ahead of the appends, so an append
/// rewrites allocated length and its sync is a data sync only.
const PREALLOCATE_BYTES: u64 = CHECKPOINT_BYTES * 3 / 2 + (4 << 20);

/// The log length at which the checkpoint after `resets` resets of the log
/// bound to `identity` is due: between half and one and a half times
/// [`CHECKPOINT_BYTES`], drawn from both.
///
/// Why not a fixed length: a checkpoint stalls its node's event loop (the
/// redb commit that syncs everything since the last one: 31 ms, and the
/// log's reset 9 ms, at 32 MiB and 8,000 submits/s on the 2-core machine).
/// The replicas of a leader-mode cluster append the same log, so with one
/// length they checkpointed within a few ms of each other: the leader
/// stalled, and so did the followers it needs a majority from, one after
/// the other (submit->ack p99 40.3 and 40.8 ms at 8,000 submits/s with no
/// disk stall, about 1% of submits waiting 30-100 ms). Drawn per node (the
/// identity holds a number drawn when the file was created) and per cycle,
/// the replicas' checkpoints fall apart, and a follower's stall is hidden
/// by the other's answer.
pub fn checkpoint_threshold(identity: u64, resets: u64) -> u64 {
    // splitmix64: a fixed, well-mixed function of its input.
    let mut z = identity ^ resets.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    CHECKPOINT_BYTES / 2 + z % CHECKPOINT_BYTES
}

const MAGIC: &[u8; 8] = b"cohwal01";
const HEADER_BYTES: u64 = 24;
const RECORD_HEAD_BYTES: u64 = 16;

/// The log file of the data file `data_file`.
pub fn wal_file(data_file: &Path) -> PathBuf {
    data_file.with_extension("wal")
}

/// An open log, positioned after its last record.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    identity: u64,
    /// Where the next record goes.
    end: u64,
    /// The next record's sequence number.
    seq: u64,
    /// The length a reset extends the file to.
    preallocate_bytes: u64,
    /// Resets since open.
    resets: u64,
    /// The log length at which the next checkpoint is due.
    checkpoint_at: u64,
}

impl Wal {
    /// Opens (or creates) the log at `path` of the data file whose
    /// identity digest is `identity`, and returns it with the batches it
    /// holds, in order. The log is not reset here: the caller applies the
    /// batches durably first, then calls [`Wal::reset`].
    pub fn open(path: &Path, identity: u64) -> Result<(Wal, Vec<Vec<StoreOp>>), RuntimeError> {
        Wal::open_preallocating(path, identity, PREALLOCATE_BYTES)
    }

    fn open_preallocating(
        path: &Path,
        identity: u64,
        preallocate_bytes: u64,
    ) -> Result<(Wal, Vec<Vec<StoreOp>>), RuntimeError> {
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| RuntimeError::Io { what, source }
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("opening"))?;
        let bytes = std::fs::read(path).map_err(io("reading"))?;
        let mut wal = Wal {
            file,
            path: path.to_path_buf(),
            identity,
            end: HEADER_BYTES,
            seq: 1,
            preallocate_bytes,
            resets: 0,
            checkpoint_at: checkpoint_threshold(identity, 0),
        };
        let batches = wal.replay(&bytes)?;
        Ok((wal, batches))
    }

    fn replay(&mut self, bytes: &[u8]) -> Result<Vec<Vec<StoreOp>>, RuntimeError> {
        let parsed = parse(bytes, self.identity, &self.path)?;
        if let Some((from, to)) = parsed.torn {
            // The torn last append: never durable, never acknowledged.
            // Zeroed, so that a shorter append over it does not leave its
            // remains after the new end.
            self.file
                .write_all_at(&vec![0u8; to - from], from as u64)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| self.storage_err(e))?;
        }
        self.end = parsed.end as u64;
        self.seq = parsed.batches.len() as u64 + 1;
        Ok(parsed.batches)
    }

    /// Appends `ops` as one record and makes it durable.
    pub fn append(&mut self, ops: &[StoreOp]) -> Result<(), RuntimeError> {
        let payload = postcard::to_stdvec(ops).map_err(|e| self.storage_err(e))?;
        let len = u32::try_from(payload.len())
            .map_err(|_| self.storage_err("a batch of 4 GiB or more"))?;
        let seq = self.seq.to_le_bytes();
        let mut record = Vec::with_capacity(RECORD_HEAD_BYTES as usize + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&seq);
        record.extend_from_slice(&crc32(&[&seq, &payload]).to_le_bytes());
        record.extend_from_slice(&payload);
        self.file
            .write_all_at(&record, self.end)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.storage_err(e))?;
        self.end += record.len() as u64;
        self.seq += 1;
        Ok(())
    }

    /// Whether the log holds enough that the caller should checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        self.end >= self.checkpoint_at
    }

    /// Starts the log over, empty. Only once everything it held is durable
    /// elsewhere.
    pub fn reset(&mut self) -> Result<(), RuntimeError> {
        let mut header = [0u8; HEADER_BYTES as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&self.identity.to_le_bytes());
        header[16..].copy_from_slice(&self.preallocate_bytes.to_le_bytes());
        // Truncation zeroes what the file held: no record of before the
        // reset can follow the new ones.
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(&header, 0))
            .and_then(|()| self.file.set_len(self.preallocate_bytes))
            .and_then(|()| self.file.sync_all())
            .map_err(|e| self.storage_err(e))?;
        self.end = HEADER_BYTES;
        self.seq = 1;
        self.resets += 1;
        self.checkpoint_at = checkpoint_threshold(self.identity, self.resets);
        Ok(())
    }

    fn storage_err(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Storage {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

/// What a log's bytes hold.
#[derive(Debug)]
pub struct Parsed {
    /// The batches, in order.
    pub batches: Vec<Vec<StoreOp>>,
    /// Where the next record goes.
    pub end: usize,
    /// The byte range of a torn last append, to be zeroed.
    pub torn: Option<(usize, usize)>,
}

/// Reads the log `bytes` of the data file whose identity digest is
/// `identity` (`path` names the log in errors): its batches, or why it is
/// refused. Public for fuzzing; [`Wal::open`] is the way to open a log.
pub fn parse(bytes: &[u8], identity: u64, path: &Path) -> Result<Parsed, RuntimeError> {
    let corrupt = |reason: String| RuntimeError::CorruptFile {
        path: path.to_path_buf(),
        reason,
    };
    let empty = Parsed {
        batches: Vec::new(),
        end: HEADER_BYTES as usize,
        torn: None,
    };
    if bytes.len() <= HEADER_BYTES as usize {
        // Created, or reset, and cut short at or in its header: nothing
        // was appended to it yet.
        return Ok(empty);
    }
    let header = &bytes[..HEADER_BYTES as usize];
    if header.iter().all(|b| *b == 0) {
        if bytes.iter().any(|b| *b != 0) {
            return Err(corrupt("a log without a header holds data".into()));
        }
        return Ok(empty);
    }
    if &header[..8] != MAGIC {
        return Err(corrupt("not a cohort write-ahead log".into()));
    }
    let owner = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if owner != identity {
        return Err(RuntimeError::ForeignFile {
            path: path.to_path_buf(),
            reason: "the write-ahead log belongs to another data file".into(),
        });
    }
    let given = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if (bytes.len() as u64) < given {
        return Err(corrupt(format!(
            "cut short: {} bytes of the {given} it was given",
            bytes.len()
        )));
    }
    let mut batches = Vec::new();
    let mut at = HEADER_BYTES as usize;
    let mut torn = None;
    loop {
        let seq = batches.len() as u64 + 1;
        match read_record(bytes, at, seq) {
            Record::Batch(ops, next) => {
                batches.push(ops);
                at = next;
            }
            Record::End => break,
            Record::Bad { why, extent } => {
                let extent = extent.min(bytes.len());
                if bytes[extent..].iter().any(|b| *b != 0) {
                    return Err(corrupt(format!(
                        "record {seq} at byte {at}: {why}, and data follows it"
                    )));
                }
                torn = Some((at, extent));
                break;
            }
        }
    }
    Ok(Parsed {
        batches,
        end: at,
        torn,
    })
}

enum Record {
    /// A batch and where the next record starts.
    Batch(Vec<StoreOp>, usize),
    /// Zeros: no more records.
    End,
    /// Not a valid record; `extent` is where it would end if its length
    /// can be believed (else just past its head).
    Bad { why: String, extent: usize },
}

fn read_record(bytes: &[u8], at: usize, want_seq: u64) -> Record {
    let head_end = at + RECORD_HEAD_BYTES as usize;
    let Some(head) = bytes.get(at..head_end) else {
        return if bytes[at.min(bytes.len())..].iter().all(|b| *b == 0) {
            Record::End
        } else {
            Record::Bad {
                why: "cut short in its head".into(),
                extent: bytes.len(),
            }
        };
    };
    if head.iter().all(|b| *b == 0) {
        return Record::End;
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let seq = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    let Some(payload) = bytes.get(head_end..head_end + len) else {
        return Record::Bad {
            why: format!("a length of {len} bytes past the end of the file"),
            extent: head_end,
        };
    };
    let extent = head_end + len;
    if crc32(&[&head[4..12], payload]) != crc {
        return Record::Bad {
            why: "checksum mismatch".into(),
            extent,
        };
    }
    if seq != want_seq {
        return Record::Bad {
            why: format!("sequence number {seq}, expected {want_seq}"),
            extent,
        };
    }
    match postcard::from_bytes::<Vec<StoreOp>>(payload) {
        Ok(ops) => Record::Batch(ops, extent),
        Err(e) => Record::Bad {
            why: format!("undecodable batch: {e}"),
            extent,
        },
    }
}

/// CRC-32 (IEEE, as zlib's) of the concatenated parts.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for part in parts {
        for b in *part {
            c = CRC_TABLE[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
        }
    }
    !c
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> StoreOp {
        StoreOp::put(k, v)
    }

    #[test]
    fn checkpoint_thresholds_are_drawn_apart_per_node_and_cycle_within_their_bounds() {
        let (low, high) = (CHECKPOINT_BYTES / 2, CHECKPOINT_BYTES * 3 / 2);
        let mut firsts = Vec::new();
        for identity in 0..64u64 {
            let digest = identity.wrapping_mul(0x2545_f491_4f6c_dd1d);
            for resets in 0..16 {
                let t = checkpoint_threshold(digest, resets);
                assert!((low..high).contains(&t), "{t}");
                assert_eq!(t, checkpoint_threshold(digest, resets), "not a function");
                assert!(
                    t + (4 << 20) <= PREALLOCATE_BYTES,
                    "a cycle outgrows the file"
                );
            }
            firsts.push(checkpoint_threshold(digest, 0));
        }
        // Nodes (and one node's cycles) do not share a length.
        let spread = firsts.iter().max().unwrap() - firsts.iter().min().unwrap();
        assert!(spread > CHECKPOINT_BYTES / 2, "{spread}");
        let cycles: Vec<u64> = (0..16).map(|r| checkpoint_threshold(7, r)).collect();
        assert!(cycles.windows(2).any(|w| w[0] != w[1]), "{cycles:?}");
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    }

    /// What the tests' logs are extended to: small files, same rules.
    const SMALL: u64 = 8192;

    fn open(path: &Path, identity: u64) -> Result<(Wal, Vec<Vec<StoreOp>>), RuntimeError> {
        Wal::open_preallocating(path, identity, SMALL)
    }

    fn written(dir: &Path, batches: &[Vec<StoreOp>]) -> PathBuf {
        let path = dir.join("n.wal");
        let (mut wal, held) = open(&path, 42).unwrap();
        assert!(held.is_empty());
        wal.reset().unwrap();
        for b in batches {
            wal.append(b).unwrap();
        }
        path
    }

    #[test]
    fn appended_batches_come_back_in_order_and_appends_continue_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let batches = vec![
            vec![put(b"a", b"1")],
            vec![put(b"b", b"2"), put(b"a", b"3")],
        ];
        let path = written(dir.path(), &batches);
        let (mut wal, held) = open(&path, 42).unwrap();
        assert_eq!(held, batches);
        wal.append(&[put(b"c", b"4")]).unwrap();
        let (mut wal, held) = open(&path, 42).unwrap();
        assert_eq!(held.len(), 3);
        assert_eq!(held[2], vec![put(b"c", b"4")]);
        wal.reset().unwrap();
        assert!(open(&path, 42).unwrap().1.is_empty());
    }

    #[test]
    fn a_torn_last_append_is_dropped_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let batches = vec![vec![put(b"a", b"1")], vec![put(b"b", &[9; 300])]];
        let path = written(dir.path(), &batches);
        let mut bytes = std::fs::read(&path).unwrap();
        // Cut the last record's payload short, as a crash mid-write would.
        let last = HEADER_BYTES as usize
            + RECORD_HEAD_BYTES as usize
            + postcard::to_stdvec(&batches[0]).unwrap().len();
        let tail = last + RECORD_HEAD_BYTES as usize + 100;
        bytes[tail..].iter_mut().for_each(|b| *b = 0);
        std::fs::write(&path, &bytes).unwrap();
        let (mut wal, held) = open(&path, 42).unwrap();
        assert_eq!(held, batches[..1].to_vec());
        // The next append overwrites the torn one.
        wal.append(&[put(b"c", b"3")]).unwrap();
        let held = open(&path, 42).unwrap().1;
        assert_eq!(held, vec![batches[0].clone(), vec![put(b"c", b"3")]]);
    }

    #[test]
    fn a_damaged_record_with_records_after_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let batches = vec![vec![put(b"a", &[1; 50])], vec![put(b"b", b"2")]];
        let path = written(dir.path(), &batches);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES as usize + RECORD_HEAD_BYTES as usize + 20] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = open(&path, 42).unwrap_err();
        assert!(matches!(err, RuntimeError::CorruptFile { .. }), "{err}");
        assert!(err.to_string().contains("n.wal"), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn a_log_of_another_data_file_or_not_a_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), &[vec![put(b"a", b"1")]]);
        let err = open(&path, 43).unwrap_err();
        assert!(matches!(err, RuntimeError::ForeignFile { .. }), "{err}");
        std::fs::write(&path, b"garbage that is not a log at all").unwrap();
        let err = open(&path, 42).unwrap_err();
        assert!(matches!(err, RuntimeError::CorruptFile { .. }), "{err}");
    }

    #[test]
    fn no_damage_to_a_log_makes_open_panic_or_return_a_batch_it_did_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let batches: Vec<Vec<StoreOp>> = (0..6u8)
            .map(|i| vec![put(&[i], &vec![i; 20 + usize::from(i) * 30])])
            .collect();
        let path = written(dir.path(), &batches);
        let good = std::fs::read(&path).unwrap();
        let used = good.iter().rposition(|b| *b != 0).unwrap() + 1;
        // A fixed xorshift: the same damages every run.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut opened = 0;
        for round in 0..400 {
            let mut bytes = good.clone();
            match round % 4 {
                0 => bytes.truncate((next() as usize) % (used + 64)),
                1 => {
                    let at = (next() as usize) % used;
                    bytes[at] ^= 1 << (next() % 8);
                }
                2 => {
                    let at = (next() as usize) % used;
                    let n = (next() as usize) % 64;
                    for b in bytes.iter_mut().skip(at).take(n) {
                        *b = next() as u8;
                    }
                }
                _ => bytes = (0..(next() as usize % 512)).map(|_| next() as u8).collect(),
            }
            std::fs::write(&path, &bytes).unwrap();
            if let Ok((_, held)) = open(&path, 42) {
                opened += 1;
                // Whatever comes back is a prefix of what was appended:
                // a damaged log never yields a batch of its own making.
                assert!(held.len() <= batches.len(), "round {round}");
                assert_eq!(held[..], batches[..held.len()], "round {round}");
            }
        }
        // Some damages (to the last record, or cuts within a header) open.
        assert!(opened > 0);
    }

    #[test]
    fn a_log_shorter_than_it_was_extended_to_is_refused_as_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), &[vec![put(b"a", b"1")], vec![put(b"b", b"2")]]);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, SMALL);
        // Cut after the first record: the second's loss would be silent
        // if a short file passed for a torn append.
        let first = HEADER_BYTES as usize + RECORD_HEAD_BYTES as usize + 12;
        std::fs::write(&path, &bytes[..first + 4]).unwrap();
        let err = open(&path, 42).unwrap_err();
        assert!(matches!(err, RuntimeError::CorruptFile { .. }), "{err}");
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    #[test]
    fn the_fuzz_corpus_seeds_hold_what_their_names_say() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wal_log");
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let at = Path::new("seed.wal");
        let valid = parse(&read("valid-two-batches"), 42, at).unwrap();
        assert_eq!(
            valid.batches,
            vec![
                vec![put(b"a", b"1")],
                vec![put(b"b", b"2"), StoreOp::Delete { key: b"a".to_vec() }]
            ]
        );
        let torn = parse(&read("torn-last-append"), 42, at).unwrap();
        assert_eq!(torn.batches.len(), 1);
        assert!(torn.torn.is_some());
        assert!(parse(&read("header-only"), 42, at)
            .unwrap()
            .batches
            .is_empty());
        assert!(parse(&read("flipped-first-record"), 42, at).is_err());
    }
}
