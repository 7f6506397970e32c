//! Raft's safety properties over a whole run, for simulators and tests.
//!
//! [`RaftInvariants::check`] takes every node (`None` while crashed) after
//! each event. It holds across crashes: what it has seen committed is
//! remembered. Wire it into `cohort-sim` with a closure:
//! `|_now, nodes| checker.check(nodes)`.

use crate::raft::{EntryKind, Role};
use crate::LeaderNode;
use std::collections::BTreeMap;

/// Checks, after every event:
/// - at most one leader per term (election safety);
/// - an entry at or below any node's commit index is the same on every
///   node, forever (committed entries never change: state machine safety);
/// - a node's commit index never goes backwards while it is up;
/// - log matching between every pair of live logs (every 64th check; it
///   is quadratic in the number of nodes).
#[derive(Debug, Default)]
pub struct RaftInvariants {
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, (u64, EntryKind)>,
    commits: BTreeMap<usize, u64>,
    checks: u64,
}

impl RaftInvariants {
    /// Checks the cluster; `nodes[i]` is `None` while node `i` is down.
    pub fn check(&mut self, nodes: &[Option<&LeaderNode>]) -> Result<(), String> {
        self.checks += 1;
        for (i, n) in nodes.iter().enumerate() {
            let Some(n) = n else {
                self.commits.remove(&i);
                continue;
            };
            let st = n.raft_status();
            if st.role == Role::Leader {
                let id = st.id.0;
                let prev = *self.leaders.entry(st.term).or_insert(id);
                if prev != id {
                    return Err(format!(
                        "two leaders in term {}: n{prev} and n{id}",
                        st.term
                    ));
                }
            }
            let last_commit = self.commits.insert(i, st.commit).unwrap_or(0);
            if st.commit < last_commit {
                return Err(format!(
                    "{} commit went back from {last_commit} to {}",
                    st.id, st.commit
                ));
            }
            let log = n.raft_log();
            let from = last_commit.max(log.offset()) + 1;
            for idx in from..=st.commit {
                let Some(e) = log.entry(idx) else {
                    return Err(format!("{} lacks committed entry {idx}", st.id));
                };
                let seen = self
                    .committed
                    .entry(idx)
                    .or_insert_with(|| (e.term, e.kind.clone()));
                if seen.0 != e.term || seen.1 != e.kind {
                    return Err(format!("{} committed a different entry at {idx}", st.id));
                }
            }
        }
        if self.checks & 63 == 0 {
            let logs: Vec<_> = nodes.iter().flatten().map(|n| n.raft_log()).collect();
            for (a, la) in logs.iter().enumerate() {
                for lb in &logs[a + 1..] {
                    let lo = la.first_index().max(lb.first_index());
                    let hi = la.last_index().min(lb.last_index());
                    let same = (lo..=hi).rev().find(|k| la.term_at(*k) == lb.term_at(*k));
                    if let Some(k) = same {
                        if la.range(lo - 1, k) != lb.range(lo - 1, k) {
                            return Err(format!("log matching broken below index {k}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// How many committed entries have been seen so far.
    pub fn committed_seen(&self) -> usize {
        self.committed.len()
    }
}
