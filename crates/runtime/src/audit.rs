//! An optional audit log of what a node did: one JSON line per handler it
//! started, per handler completion, and per [`Note`] it stated, each with the
//! node's id and a wall-clock timestamp in microseconds since the Unix epoch.
//!
//! The simulator records these facts itself; a real cluster has no observer
//! outside its processes, so each node writes its own and a test harness
//! merges the files of all nodes (same machine, same clock) with what its
//! clients saw into one history for the simulator's checkers.
//!
//! Ordering. Notes and executions are stamped with the time their batch
//! started to be carried out (before its fsync), not the time the line is
//! written. A fact caused by a message from another node is then always
//! stamped after the batch that sent the message started, even when the
//! sender states its own note a few microseconds after the send (a worker may
//! run a task before its leader wrote down the `Assigned` note of the same
//! batch). Completions are stamped when the handler returns, which precedes
//! the batch that handles them. Within one node the file keeps action order.
//!
//! Every line is written with one `write(2)` to a file opened for appending,
//! so a `kill -9` leaves whole lines (or none) behind; a restarted node
//! appends to the same file. Lines are written synchronously and never
//! fsynced: a line is a few hundred bytes, and the log only has to survive
//! a killed process, not a lost machine. The file is bounded by
//! [`AuditConfig::bytes_max`]: past it nothing more is written, and a warning
//! says so once.

use cohort_core::{Epoch, NodeId, Note, TaskId, TaskOutcome};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Default of [`AuditConfig::bytes_max`]: 64 MiB.
pub const AUDIT_BYTES_MAX_DEFAULT: u64 = 64 << 20;

/// Where a node writes its audit log, and how much of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The file (created if missing, appended to).
    pub path: PathBuf,
    /// Most bytes this process appends; later records are dropped with one
    /// warning.
    pub bytes_max: u64,
}

impl AuditConfig {
    /// An audit log at `path` with the default bound.
    pub fn new(path: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            path: path.into(),
            bytes_max: AUDIT_BYTES_MAX_DEFAULT,
        }
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Wall-clock microseconds since the Unix epoch.
    pub at_us: u64,
    /// The node that wrote it.
    pub node: NodeId,
    /// What happened.
    pub event: AuditEvent,
}

/// What an audit line records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditEvent {
    /// The node started a handler for `Action::Execute`.
    Executed {
        /// The task.
        task: TaskId,
        /// The fencing token it runs under.
        epoch: Epoch,
    },
    /// A handler returned (before the node's core is told).
    Completed {
        /// The task.
        task: TaskId,
        /// The fencing token it ran under.
        epoch: Epoch,
        /// What it returned.
        outcome: TaskOutcome,
    },
    /// The node stated a fact.
    Noted(Note),
}

/// An open audit log, shared by the event loop and the handler tasks.
#[derive(Debug)]
pub struct Audit {
    node: NodeId,
    file: Mutex<std::fs::File>,
    path: PathBuf,
    bytes_max: u64,
    written: AtomicU64,
    full: AtomicBool,
    batch_at_us: AtomicU64,
}

/// Wall-clock microseconds since the Unix epoch.
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Audit {
    /// Opens (or creates) the log for appending.
    pub fn open(node: NodeId, config: &AuditConfig) -> std::io::Result<Audit> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        Ok(Audit {
            node,
            file: Mutex::new(file),
            path: config.path.clone(),
            bytes_max: config.bytes_max,
            written: AtomicU64::new(0),
            full: AtomicBool::new(false),
            batch_at_us: AtomicU64::new(wall_clock_us()),
        })
    }

    /// Marks the start of carrying out a batch: its notes and executions are
    /// stamped with this time (see the module doc).
    pub fn batch_started(&self) {
        self.batch_at_us.store(wall_clock_us(), Ordering::Relaxed);
    }

    /// Records a started handler.
    pub fn executed(&self, task: TaskId, epoch: Epoch) {
        self.write(
            self.batch_at_us.load(Ordering::Relaxed),
            AuditEvent::Executed { task, epoch },
        );
    }

    /// Records a handler's return.
    pub fn completed(&self, task: TaskId, epoch: Epoch, outcome: &TaskOutcome) {
        self.write(
            wall_clock_us(),
            AuditEvent::Completed {
                task,
                epoch,
                outcome: outcome.clone(),
            },
        );
    }

    /// Records a note.
    pub fn noted(&self, note: &Note) {
        self.write(
            self.batch_at_us.load(Ordering::Relaxed),
            AuditEvent::Noted(note.clone()),
        );
    }

    fn write(&self, at_us: u64, event: AuditEvent) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let rec = AuditRecord {
            at_us,
            node: self.node,
            event,
        };
        let mut line = match serde_json::to_vec(&rec) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("audit record not encodable: {e}");
                return;
            }
        };
        line.push(b'\n');
        let len = line.len() as u64;
        let mut file = self.file.lock().expect("audit file lock");
        if self.written.load(Ordering::Relaxed) + len > self.bytes_max {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path = %self.path.display(),
                    bytes_max = self.bytes_max,
                    "audit log full: no more records are written"
                );
            }
            return;
        }
        // One write call per line: a killed process leaves whole lines.
        match file.write_all(&line) {
            Ok(()) => {
                self.written.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), "audit log write failed, stopped: {e}");
                }
            }
        }
    }
}

/// Reads an audit log: the records of every whole line, and how many lines
/// could not be read (a line cut short by a full disk, say).
pub fn read_log(text: &str) -> (Vec<AuditRecord>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::{SupersedeReason, TaskState};

    #[test]
    fn records_round_trip_through_the_file_and_the_bound_stops_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let t = TaskId(u128::MAX - 5);
        {
            let a = Audit::open(NodeId(3), &AuditConfig::new(&path)).unwrap();
            a.batch_started();
            a.noted(&Note::Assigned {
                task: t,
                epoch: Epoch(2),
                node: NodeId(3),
                at: cohort_core::Time::from_millis(7),
            });
            a.executed(t, Epoch(2));
            a.completed(t, Epoch(2), &TaskOutcome::Success(b"ok".to_vec()));
        }
        // A restarted node appends; a torn line is counted, not fatal.
        {
            let a = Audit::open(NodeId(3), &AuditConfig::new(&path)).unwrap();
            a.noted(&Note::Decided {
                task: t,
                state: TaskState::Succeeded {
                    result: b"ok".to_vec(),
                    node: NodeId(3),
                    epoch: Epoch(2),
                },
            });
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"at_us\":1,\"no");
        let (recs, bad) = read_log(&text);
        assert_eq!(bad, 1);
        assert_eq!(recs.len(), 4);
        assert!(recs.iter().all(|r| r.node == NodeId(3)));
        assert_eq!(
            recs[2].event,
            AuditEvent::Completed {
                task: t,
                epoch: Epoch(2),
                outcome: TaskOutcome::Success(b"ok".to_vec())
            }
        );
        assert!(recs[0].at_us <= recs[2].at_us);

        // The bound: a log with room for one and a half records keeps one.
        let line = |e: u64| {
            let rec = AuditRecord {
                at_us: wall_clock_us(),
                node: NodeId(1),
                event: AuditEvent::Noted(Note::Superseded {
                    task: t,
                    epoch: Epoch(e),
                    reason: SupersedeReason::LeaseExpired,
                }),
            };
            serde_json::to_vec(&rec).unwrap().len() as u64 + 1
        };
        let bytes_max = line(1) * 3 / 2;
        let small = dir.path().join("small.jsonl");
        let cfg = AuditConfig {
            path: small.clone(),
            bytes_max,
        };
        let a = Audit::open(NodeId(1), &cfg).unwrap();
        for e in 1..=5 {
            a.noted(&Note::Superseded {
                task: t,
                epoch: Epoch(e),
                reason: SupersedeReason::LeaseExpired,
            });
        }
        let (recs, bad) = read_log(&std::fs::read_to_string(&small).unwrap());
        assert_eq!((recs.len(), bad), (1, 0));
        assert!(std::fs::metadata(&small).unwrap().len() <= bytes_max);
    }
}
