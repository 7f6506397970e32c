//! One redb file per node holding the core's key-value space ([`StoreOp`]).
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
use cohort_core::{NodeId, StoreOp, Stored};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
/// task's grant.
pub const FORMAT_VERSION: u32 = 10;

/// Who a data file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    cluster_id: String,
    node: u64,
}

fn decode_meta(bytes: &[u8]) -> Result<Meta, postcard::Error> {
    postcard::from_bytes(bytes)
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
        let want = Meta {
            format_version: FORMAT_VERSION,
            cluster_id: cluster_id.to_string(),
            node: node.0,
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
        let storage = Storage {
            db,
            path: path.to_path_buf(),
        };
        let have = storage.read_meta()?;
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
            Some(_) => {}
        }
        let stored = storage.load()?;
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

    fn read_meta(&self) -> Result<Option<Meta>, RuntimeError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let Some(bytes) = table.get(META_KEY).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let meta = decode_meta(bytes.value()).map_err(|e| RuntimeError::CorruptFile {
            path: self.path.clone(),
            reason: format!("unreadable identity record: {e}"),
        })?;
        Ok(Some(meta))
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

    /// Applies `ops` in order in one transaction and makes it durable (fsync)
    /// before returning. On error the node must stop: whether the
    /// transaction is durable is unknown.
    pub fn persist(&self, ops: &[StoreOp]) -> Result<(), RuntimeError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
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
        StoreOp::Put {
            key: k.to_vec(),
            value: v.to_vec(),
        }
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
}
