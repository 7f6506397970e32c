//! One redb file per node holding the core's key-value space ([`StoreOp`]),
//! with a write-ahead log beside it (`node-N.wal`, [`crate::wal`]): a
//! batch is durable once appended there, and redb commits durably every
//! [`crate::wal::CHECKPOINT_BYTES`] of log on average (and at a clean close).
//!
//! The file has two tables: `meta` (one record: format version, cluster id,
//! node id) and `kv` (the core's keys). A new file is built under a
//! temporary name and renamed into place once its meta record is durable, so
//! a file at the final path without a matching meta record is never ours to
//! start from: it is refused, as is a file redb reports as corrupted.
//!
//! ```
//! use cohort_core::{NodeId, StoreOp};
//! use cohort_runtime::storage::{data_file, Storage};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = data_file(dir.path(), NodeId(1));
//! let (storage, stored) = Storage::open(&path, "prod", NodeId(1)).unwrap();
//! assert!(stored.is_empty());
//! storage.persist(&[StoreOp::Put { key: b"k".to_vec(), value: b"v".to_vec() }]).unwrap();
//! drop(storage);
//! let (_storage, stored) = Storage::open(&path, "prod", NodeId(1)).unwrap();
//! assert_eq!(stored.get(b"k"), Some(&b"v"[..]));
//! // Another cluster's node may not start from this file.
//! assert!(Storage::open(&path, "staging", NodeId(1)).is_err());
//! ```

use crate::error::RuntimeError;
use crate::wal::{wal_file, Wal};
use crate::write_behind::WriteBehind;
use cohort_core::{NodeId, StoreOp, Stored};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("cohort_meta");
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cohort_kv");
const META_KEY: &str = "identity";

/// The on-disk format this build writes and reads. 2: task records and
/// leader log entries carry the tasks' event history and its times. 3:
/// tasks carry `not_before`, a retry policy, a schedule-to-start timeout
/// and a priority, records when they may run
/// again, and leader results the retry jitter. 4: tasks carry a
/// heartbeat timeout, histories may hold heartbeats. 5: leader snapshots
/// carry each final record's purge time and the retention settings. 6:
/// tasks carry the worker labels that route them. 7: tasks carry their
/// concurrency and rate limit, the leader's state the limits' counts. 8:
/// a leader log entry may pack several commands (`Command::Many`), and
/// a leader snapshot holds each running task's lease. 9: an ended lease
/// (`Command::ExpireLease`) carries the jitter of its retry backoff. 10:
/// leaderless records carry a permit record's places and a limited
/// task's grant. 11: the latest writes may be only in the write-ahead log
/// beside the file (which a build of 10 would not read), and the identity
/// record carries the number that binds that log to the file. 12: a task
/// carries its own lease grace and a manual retry's link to its original.
/// 13: a leaderless permit record carries its longest rate window and
/// when it was retired, and its body an incarnation. 14: a leader snapshot
/// holds the records kept for ever (schedule definitions and tombstones)
/// apart from the finished ones retention and `tasks_retained_max` drop.
pub const FORMAT_VERSION: u32 = 14;

/// Who a data file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    cluster_id: String,
    node: u64,
    /// Drawn when the file was created: its write-ahead log names it.
    instance: u64,
}

/// The identity record of format versions 1 to 10, read only to say which
/// version a file is.
#[derive(Deserialize)]
struct MetaBefore11 {
    format_version: u32,
    cluster_id: String,
    node: u64,
}

fn decode_meta(bytes: &[u8]) -> Result<Meta, postcard::Error> {
    postcard::from_bytes(bytes).or_else(|e| match postcard::from_bytes::<MetaBefore11>(bytes) {
        Ok(m) if m.format_version < 11 => Ok(Meta {
            format_version: m.format_version,
            cluster_id: m.cluster_id,
            node: m.node,
            instance: 0,
        }),
        _ => Err(e),
    })
}

/// The digest of an identity record that the file's write-ahead log
/// carries (FNV-1a 64 of its encoding).
fn identity_digest(meta: &Meta) -> u64 {
    let bytes = postcard::to_stdvec(meta).expect("an identity record encodes");
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Decodes a data file's identity record: `(format version, cluster id,
/// node)`. What [`Storage::open`] reads first; public for fuzzing.
pub fn decode_identity(bytes: &[u8]) -> Result<(u32, String, NodeId), String> {
    decode_meta(bytes)
        .map(|m| (m.format_version, m.cluster_id, NodeId(m.node)))
        .map_err(|e| e.to_string())
}

/// A node's open data file.
pub struct Storage {
    db: Database,
    path: PathBuf,
    /// The log, and what it made durable that redb does not hold yet.
    wal: Mutex<(Wal, WriteBehind)>,
    /// Whether closing checkpoints: only once open succeeded, and never
    /// after a failed write (the log keeps what redb may lack).
    checkpoint_on_close: AtomicBool,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.path).finish()
    }
}

/// The file name of node `node`'s data under `data_dir`.
pub fn data_file(data_dir: &Path, node: NodeId) -> PathBuf {
    data_dir.join(format!("node-{}.redb", node.0))
}

impl Storage {
    /// Opens (or, when absent, creates) `path` for `node` of `cluster_id`
    /// and loads everything stored in it.
    ///
    /// Refuses a file of another cluster or node, of another format version,
    /// or one that is corrupted or truncated; the file is left as it was.
    pub fn open(
        path: &Path,
        cluster_id: &str,
        node: NodeId,
    ) -> Result<(Storage, Stored), RuntimeError> {
        let mut want = Meta {
            format_version: FORMAT_VERSION,
            cluster_id: cluster_id.to_string(),
            node: node.0,
            instance: 0,
        };
        if !path.exists() {
            create_new(path, &want)?;
        }
        let corrupt = |reason: String| RuntimeError::CorruptFile {
            path: path.to_path_buf(),
            reason,
        };
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        // redb may panic on some damaged files when opening; treat that as corruption.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.open(path)))
            .map_err(|_| corrupt("the storage engine could not read it".into()))?;
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => RuntimeError::Storage {
                path: path.to_path_buf(),
                reason: "already open by another process".into(),
            },
            other => corrupt(other.to_string()),
        })?;
        let have = read_meta(&db, path)?;
        match have {
            None => {
                return Err(corrupt(
                    "no cohort identity record (not a cohort data file, or truncated)".into(),
                ))
            }
            Some(have) if have.format_version != want.format_version => {
                return Err(RuntimeError::ForeignFile {
                    path: path.to_path_buf(),
                    reason: format!(
                        "format version {} but this build reads {}",
                        have.format_version, want.format_version
                    ),
                })
            }
            Some(have) if have.cluster_id != want.cluster_id => {
                return Err(RuntimeError::ForeignFile {
                    path: path.to_path_buf(),
                    reason: format!(
                        "it belongs to cluster {:?}, not {:?}",
                        have.cluster_id, want.cluster_id
                    ),
                })
            }
            Some(have) if have.node != want.node => {
                return Err(RuntimeError::ForeignFile {
                    path: path.to_path_buf(),
                    reason: format!("it belongs to node {}, not {}", NodeId(have.node), node),
                })
            }
            Some(have) => want.instance = have.instance,
        }
        let (wal, batches) = Wal::open(&wal_file(path), identity_digest(&want))?;
        let storage = Storage {
            db,
            path: path.to_path_buf(),
            wal: Mutex::new((wal, WriteBehind::default())),
            checkpoint_on_close: AtomicBool::new(false),
        };
        // What the log holds goes into redb durably before the log starts
        // over, and before anything is read: the state is redb's alone then.
        storage.apply(&batches.concat(), Durability::Immediate)?;
        storage.wal.lock().expect("wal lock").0.reset()?;
        let stored = storage.load()?;
        storage.checkpoint_on_close.store(true, Ordering::Relaxed);
        Ok((storage, stored))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Storage {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn load(&self) -> Result<Stored, RuntimeError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut stored = Stored::new();
        let table = match txn.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(stored),
            Err(e) => return Err(self.err(e)),
        };
        let mut batch = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            batch.push(StoreOp::Put {
                key: k.value().to_vec(),
                value: v.value().to_vec(),
            });
            if batch.len() >= 4096 {
                stored.apply(&batch);
                batch.clear();
            }
        }
        stored.apply(&batch);
        Ok(stored)
    }

    /// Applies `ops` in order, atomically, and makes them durable (one
    /// append to the write-ahead log and its `fdatasync`) before
    /// returning. On error the node must stop: whether the batch is
    /// durable is unknown.
    pub fn persist(&self, ops: &[StoreOp]) -> Result<(), RuntimeError> {
        let mut guard = self.wal.lock().expect("wal lock");
        let (wal, behind) = &mut *guard;
        let written = wal.append(ops).and_then(|()| {
            // redb is read only at open: it catches up in coalesced
            // flushes (`crate::write_behind`), and fully at a checkpoint.
            behind.add(ops);
            if wal.wants_checkpoint() {
                self.checkpoint(wal, behind)?;
            } else if behind.is_full() {
                self.apply(&behind.take(), Durability::None)?;
            }
            Ok(())
        });
        if written.is_err() {
            self.checkpoint_on_close.store(false, Ordering::Relaxed);
        }
        written
    }

    /// Makes redb hold, durably, everything up to the log's end, then
    /// starts the log over.
    fn checkpoint(&self, wal: &mut Wal, behind: &mut WriteBehind) -> Result<(), RuntimeError> {
        self.apply(&behind.take(), Durability::Immediate)?;
        wal.reset()
    }

    fn apply(&self, ops: &[StoreOp], durability: Durability) -> Result<(), RuntimeError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(KV).map_err(|e| self.err(e))?;
            for op in ops {
                match op {
                    StoreOp::Put { key, value } => {
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    StoreOp::Delete { key } => {
                        table.remove(key.as_slice()).map_err(|e| self.err(e))?;
                    }
                    StoreOp::DeleteRange { start, end } => {
                        if start < end {
                            table
                                .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| {
                                    false
                                })
                                .map_err(|e| self.err(e))?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Closes without the checkpoint of a clean close: what a crash leaves
    /// (the latest batches only in the log). For tests.
    #[doc(hidden)]
    pub fn close_as_if_crashed(self) {
        self.checkpoint_on_close.store(false, Ordering::Relaxed);
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // A clean close leaves redb complete and the log empty; if this
        // fails, the log still holds the batches and the next open
        // applies them.
        if !self.checkpoint_on_close.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut guard) = self.wal.lock() {
            let (wal, behind) = &mut *guard;
            if let Err(e) = self.checkpoint(wal, behind) {
                tracing::warn!(path = %self.path.display(), error = %e, "checkpoint at close failed");
            }
        }
    }
}

/// A number for a new file that no earlier file under its name had (in
/// all likelihood: 64 bits of the OS's per-process hash keys and the
/// time), and never 0, which marks identity records before version 11.
fn fresh_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish().max(1)
}

fn read_meta(db: &Database, path: &Path) -> Result<Option<Meta>, RuntimeError> {
    let err = |e: &dyn std::fmt::Display| RuntimeError::Storage {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let txn = db.begin_read().map_err(|e| err(&e))?;
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(err(&e)),
    };
    let Some(bytes) = table.get(META_KEY).map_err(|e| err(&e))? else {
        return Ok(None);
    };
    let meta = decode_meta(bytes.value()).map_err(|e| RuntimeError::CorruptFile {
        path: path.to_path_buf(),
        reason: format!("unreadable identity record: {e}"),
    })?;
    Ok(Some(meta))
}

/// Builds a new file under a temporary name, with its identity record
/// durable, then renames it into place and syncs the directory.
fn create_new(path: &Path, meta: &Meta) -> Result<(), RuntimeError> {
    let io = |what: &str, source: std::io::Error| RuntimeError::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    let tmp = path.with_extension("redb.new");
    let _ = std::fs::remove_file(&tmp);
    let meta = &Meta {
        instance: fresh_instance(),
        ..meta.clone()
    };
    // A log left by an earlier file under this name (deleted to start the
    // node afresh) must not be applied to this one; its digest would
    // refuse it anyway, but the node should start, not fail.
    match std::fs::remove_file(wal_file(path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing the old write-ahead log of", e)),
    }
    let err = |e: &dyn std::fmt::Display| RuntimeError::Storage {
        path: tmp.clone(),
        reason: e.to_string(),
    };
    {
        let db = Database::create(&tmp).map_err(|e| err(&e))?;
        let txn = db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| err(&e))?;
            let bytes = postcard::to_stdvec(meta).map_err(|e| err(&e))?;
            table
                .insert(META_KEY, bytes.as_slice())
                .map_err(|e| err(&e))?;
            txn.open_table(KV).map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> StoreOp {
        StoreOp::put(k, v)
    }

    #[test]
    fn persisted_ops_come_back_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(1));
        {
            let (s, stored) = Storage::open(&path, "c1", NodeId(1)).unwrap();
            assert!(stored.is_empty());
            s.persist(&[put(b"a1", b"x"), put(b"a2", b"y"), put(b"a3", b"z")])
                .unwrap();
            s.persist(&[
                StoreOp::DeleteRange {
                    start: b"a2".to_vec(),
                    end: b"a3".to_vec(),
                },
                StoreOp::Delete {
                    key: b"a1".to_vec(),
                },
                put(b"b", b"w"),
            ])
            .unwrap();
        }
        let (_s, stored) = Storage::open(&path, "c1", NodeId(1)).unwrap();
        let all: Vec<(&[u8], &[u8])> = stored.iter().collect();
        assert_eq!(all, vec![(&b"a3"[..], &b"z"[..]), (&b"b"[..], &b"w"[..])]);
    }

    #[test]
    fn a_file_of_another_cluster_or_node_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(1));
        drop(Storage::open(&path, "c1", NodeId(1)).unwrap());
        let err = Storage::open(&path, "c2", NodeId(1)).unwrap_err();
        assert!(matches!(err, RuntimeError::ForeignFile { .. }), "{err}");
        assert!(err.to_string().contains("node-1.redb"), "{err}");
        assert!(err.to_string().contains("\"c1\""), "{err}");
        let err = Storage::open(&path, "c1", NodeId(2)).unwrap_err();
        assert!(matches!(err, RuntimeError::ForeignFile { .. }), "{err}");
        assert!(err.to_string().contains("node n1"), "{err}");
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(3));
        {
            let (s, _) = Storage::open(&path, "c1", NodeId(3)).unwrap();
            s.persist(&[put(b"k", &[7; 10_000])]).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 3).unwrap();
        drop(f);
        let err = Storage::open(&path, "c1", NodeId(3)).unwrap_err();
        assert!(matches!(err, RuntimeError::CorruptFile { .. }), "{err}");
        assert!(err.to_string().contains("node-3.redb"), "{err}");
    }

    #[test]
    fn an_empty_or_garbage_file_is_refused_not_started_from_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(4));
        std::fs::write(&path, b"").unwrap();
        let err = Storage::open(&path, "c1", NodeId(4)).unwrap_err();
        assert!(matches!(err, RuntimeError::CorruptFile { .. }), "{err}");
        std::fs::write(&path, vec![0xA5; 64 * 1024]).unwrap();
        let err = Storage::open(&path, "c1", NodeId(4)).unwrap_err();
        assert!(matches!(err, RuntimeError::CorruptFile { .. }), "{err}");
    }

    #[test]
    fn flipped_bytes_in_the_data_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(5));
        {
            let (s, _) = Storage::open(&path, "c1", NodeId(5)).unwrap();
            for i in 0..200u32 {
                s.persist(&[put(&i.to_be_bytes(), &[i as u8; 300])])
                    .unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // Damage every page past the header region.
        let n = bytes.len();
        for i in (8192..n).step_by(512) {
            bytes[i] ^= 0xFF;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = Storage::open(&path, "c1", NodeId(5)).unwrap_err();
        assert!(matches!(err, RuntimeError::CorruptFile { .. }), "{err}");
    }

    #[test]
    fn a_batch_only_in_the_write_ahead_log_survives_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(6));
        let durable = dir.path().join("redb-as-synced");
        {
            let (s, _) = Storage::open(&path, "c1", NodeId(6)).unwrap();
            s.persist(&[put(b"a", b"1")]).unwrap();
            // Make redb durable up to here, and keep that file as it is.
            let mut guard = s.wal.lock().unwrap();
            let (wal, behind) = &mut *guard;
            s.checkpoint(wal, behind).unwrap();
            drop(guard);
            std::fs::copy(&path, &durable).unwrap();
            s.persist(&[put(b"b", b"2"), put(b"a", b"3")]).unwrap();
            s.persist(&[StoreOp::Delete { key: b"b".to_vec() }, put(b"c", b"4")])
                .unwrap();
            s.close_as_if_crashed();
        }
        // The crash kept none of redb's unsynced commits: the file is as
        // it was at the checkpoint, and the log holds the two batches.
        std::fs::copy(&durable, &path).unwrap();
        let (s, stored) = Storage::open(&path, "c1", NodeId(6)).unwrap();
        let all: Vec<(&[u8], &[u8])> = stored.iter().collect();
        assert_eq!(all, vec![(&b"a"[..], &b"3"[..]), (&b"c"[..], &b"4"[..])]);
        // Opening applied them durably and emptied the log: a second crash
        // right away loses nothing either.
        s.close_as_if_crashed();
        let (_s, again) = Storage::open(&path, "c1", NodeId(6)).unwrap();
        assert_eq!(again, stored);
    }

    #[test]
    fn replaying_a_log_over_a_file_that_already_holds_it_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(7));
        let wal = dir.path().join("wal-before-reset");
        {
            let (s, _) = Storage::open(&path, "c1", NodeId(7)).unwrap();
            s.persist(&[put(b"a", b"1"), put(b"b", b"2")]).unwrap();
            s.persist(&[StoreOp::DeleteRange {
                start: b"a".to_vec(),
                end: b"b".to_vec(),
            }])
            .unwrap();
            std::fs::copy(wal_file(&path), &wal).unwrap();
            // A crash between redb's durable commit and the log's reset.
            s.apply(&[], Durability::Immediate).unwrap();
            s.close_as_if_crashed();
        }
        std::fs::copy(&wal, wal_file(&path)).unwrap();
        let (_s, stored) = Storage::open(&path, "c1", NodeId(7)).unwrap();
        let all: Vec<(&[u8], &[u8])> = stored.iter().collect();
        assert_eq!(all, vec![(&b"b"[..], &b"2"[..])]);
    }

    #[test]
    fn a_log_left_by_a_deleted_data_file_is_not_applied_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(8));
        {
            let (s, _) = Storage::open(&path, "c1", NodeId(8)).unwrap();
            s.persist(&[put(b"old", b"1")]).unwrap();
            s.close_as_if_crashed();
        }
        std::fs::remove_file(&path).unwrap();
        let (_s, stored) = Storage::open(&path, "c1", NodeId(8)).unwrap();
        assert!(stored.is_empty(), "{stored:?}");
    }

    #[test]
    fn another_files_log_put_beside_this_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (
            data_file(dir.path(), NodeId(1)),
            data_file(dir.path(), NodeId(2)),
        );
        drop(Storage::open(&one, "c1", NodeId(1)).unwrap());
        {
            let (s, _) = Storage::open(&two, "c1", NodeId(2)).unwrap();
            s.persist(&[put(b"k", b"v")]).unwrap();
            s.close_as_if_crashed();
        }
        std::fs::copy(wal_file(&two), wal_file(&one)).unwrap();
        let err = Storage::open(&one, "c1", NodeId(1)).unwrap_err();
        assert!(matches!(err, RuntimeError::ForeignFile { .. }), "{err}");
        assert!(err.to_string().contains("node-1.wal"), "{err}");
    }

    #[test]
    fn a_file_of_an_earlier_format_is_refused_naming_its_version() {
        #[derive(Serialize)]
        struct Old(u32, String, u64);
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(dir.path(), NodeId(9));
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(META).unwrap();
                let bytes = postcard::to_stdvec(&Old(10, "c1".into(), 9)).unwrap();
                t.insert(META_KEY, bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = Storage::open(&path, "c1", NodeId(9)).unwrap_err();
        assert!(matches!(err, RuntimeError::ForeignFile { .. }), "{err}");
        assert!(err.to_string().contains("format version 10"), "{err}");
    }
}
