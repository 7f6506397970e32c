//! Snapshots, log compaction and chunked InstallSnapshot.
//!
//! The state machine hands in its state at the applied index
//! ([`RaftNode::compact`]); the snapshot is persisted and the log is
//! truncated behind it, keeping a tail of entries so that slightly lagging
//! followers still catch up from the log. A follower whose next entry was
//! compacted away receives the snapshot in chunks of `snapshot_chunk_bytes`,
//! one chunk in flight, resumed from the follower's byte count after a loss.

use super::{log, Membership, ProgressState, RaftMsg, RaftNode, Role};
use cohort_core::{encode, NodeId, StoreOp, Time};
use serde::{Deserialize, Serialize};

/// What a snapshot covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last index included.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// A state-machine snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The state machine's encoded state at `meta.index`.
    pub data: Vec<u8>,
}

impl RaftNode {
    /// Records `data`, the state machine at the applied index, as the new
    /// snapshot and drops the log up to `keep_entries` before it.
    pub fn compact(&mut self, data: Vec<u8>, keep_entries: u64) {
        let index = self.applied;
        assert!(index <= self.commit, "snapshots hold only committed state");
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index >= index)
        {
            return;
        }
        let term = self.log.term_at(index).expect("applied entries are held");
        let meta = SnapshotMeta {
            index,
            term,
            membership: self.membership_at(index),
        };
        let snap = Snapshot { meta, data };
        self.ready.persist.push(StoreOp::Put {
            key: log::SNAP_KEY.to_vec(),
            value: encode(&snap),
        });
        self.base_membership = snap.meta.membership.clone();
        self.snapshot = Some(snap);
        let keep_from = index.saturating_sub(keep_entries).max(self.log.offset());
        self.log.compact_to(keep_from, &mut self.ready.persist);
    }

    /// The latest snapshot, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    pub(super) fn start_snapshot(&mut self, to: NodeId) {
        let index = self
            .snapshot
            .as_ref()
            .expect("the log is compacted only behind a snapshot")
            .meta
            .index;
        let pr = self.progress.get_mut(&to).expect("a follower's progress");
        pr.state = ProgressState::Snapshot { index, received: 0 };
        self.send_snapshot_chunk(to, 0);
    }

    pub(super) fn resend_snapshot_chunk(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let ProgressState::Snapshot { index, received } = pr.state else {
            return;
        };
        let current = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if current != index {
            self.start_snapshot(to); // compacted again meanwhile: send the newer one
        } else {
            self.send_snapshot_chunk(to, received);
        }
    }

    fn send_snapshot_chunk(&mut self, to: NodeId, offset: u64) {
        let snap = self
            .snapshot
            .as_ref()
            .expect("sending an existing snapshot");
        let len = snap.data.len();
        let start = usize::try_from(offset).unwrap_or(len).min(len);
        let end = (start + self.cfg.snapshot_chunk_bytes).min(len);
        let msg = RaftMsg::Snapshot {
            term: self.term,
            meta: snap.meta.clone(),
            offset: start as u64,
            chunk: snap.data[start..end].to_vec(),
            done: end == len,
        };
        self.send(to, msg);
    }

    pub(super) fn on_snapshot(
        &mut self,
        now: Time,
        from: NodeId,
        meta: super::SnapshotMeta,
        offset: u64,
        chunk: Vec<u8>,
        done: bool,
    ) {
        assert_ne!(self.role, Role::Leader, "two leaders in one term");
        if self.role != Role::Follower {
            self.become_follower(now, self.term, Some(from));
        }
        self.leader_heard(from);
        self.leader_contact = Some(now);
        self.reset_election_deadline(now);
        let index = meta.index;
        if index <= self.commit {
            let msg = RaftMsg::SnapshotResp {
                term: self.term,
                index,
                received: 0,
                installed: true,
            };
            self.send(from, msg);
            return;
        }
        let same = |m: &SnapshotMeta| m.index == meta.index && m.term == meta.term;
        if offset == 0 {
            self.incoming_snapshot = Some((meta.clone(), Vec::new()));
        }
        let received = match &mut self.incoming_snapshot {
            Some((m, buf)) if same(m) && buf.len() as u64 == offset => {
                buf.extend_from_slice(&chunk);
                buf.len() as u64
            }
            Some((m, buf)) if same(m) => buf.len() as u64,
            _ => 0,
        };
        let mut complete = done && received == offset + chunk.len() as u64;
        let mut received = received;
        if complete {
            let (meta, data) = self.incoming_snapshot.take().expect("assembled above");
            if (self.snapshot_check)(&data) {
                self.install_snapshot(Snapshot { meta, data });
            } else {
                // Not a state this node could restore (a peer's bug or a
                // forgery): nothing is installed, and a real leader sends
                // it again from the start.
                complete = false;
                received = 0;
            }
        }
        let msg = RaftMsg::SnapshotResp {
            term: self.term,
            index,
            received,
            installed: complete,
        };
        self.send(from, msg);
    }

    /// Sets the check every assembled incoming snapshot must pass before it
    /// is installed (by default every snapshot passes).
    pub fn check_snapshots_with(&mut self, check: fn(&[u8]) -> bool) {
        self.snapshot_check = check;
    }

    fn install_snapshot(&mut self, snap: Snapshot) {
        let SnapshotMeta { index, term, .. } = snap.meta;
        assert!(index > self.commit, "a snapshot never rolls back commits");
        if self.log.term_at(index) == Some(term) {
            self.log.compact_to(index, &mut self.ready.persist);
        } else {
            self.log.reset_to(index, term, &mut self.ready.persist);
        }
        self.ready.persist.push(StoreOp::Put {
            key: log::SNAP_KEY.to_vec(),
            value: encode(&snap),
        });
        self.base_membership = snap.meta.membership.clone();
        self.recompute_membership();
        self.commit = index;
        self.applied = index;
        self.ready.committed.clear();
        self.ready.snapshot = Some(snap.clone());
        self.snapshot = Some(snap);
    }

    pub(super) fn on_snapshot_resp(
        &mut self,
        _now: Time,
        from: NodeId,
        index: u64,
        received: u64,
        installed: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let ProgressState::Snapshot { index: sending, .. } = pr.state else {
            return;
        };
        if sending != index {
            return;
        }
        if installed {
            pr.match_index = pr.match_index.max(index);
            pr.become_probe();
            self.maybe_commit();
            self.replicate_to(from);
        } else {
            pr.state = ProgressState::Snapshot { index, received };
            self.send_snapshot_chunk(from, received);
        }
    }
}
