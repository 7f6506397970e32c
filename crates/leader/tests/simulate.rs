//! Leader mode in the deterministic simulator (`cohort-sim`): G1–G4 from the
//! simulator's checkers, plus the Raft invariants checked after every
//! simulated event by [`RaftInvariants`].

use cohort_core::Time;
use cohort_leader::raft::{EntryKind, Role};
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_sim::{run, Invariants, Report, SimConfig};
use std::collections::BTreeMap;

/// Raft's safety properties, over the whole run:
/// - at most one leader per term (election safety);
/// - an entry at or below some node's commit index is the same everywhere,
///   forever (committed entries never change; state machine safety);
/// - log matching between every pair of live logs;
/// - a node's commit index never goes backwards while it is up.
#[derive(Default)]
struct RaftInvariants {
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, (u64, EntryKind)>,
    commits: BTreeMap<usize, u64>,
    checks: u64,
}

impl Invariants<LeaderNode> for RaftInvariants {
    fn check(&mut self, _now: Time, nodes: &[Option<&LeaderNode>]) -> Result<(), String> {
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
            // New commits only: entries (last_commit, commit] held in the log.
            let from = last_commit.max(log.offset()) + 1;
            for idx in from..=st.commit {
                let e = log
                    .entry(idx)
                    .expect("committed entries above the offset are held");
                let seen = self
                    .committed
                    .entry(idx)
                    .or_insert_with(|| (e.term, e.kind.clone()));
                if seen.0 != e.term || seen.1 != e.kind {
                    return Err(format!("{} committed a different entry at {idx}", st.id));
                }
            }
        }
        // Log matching, sampled every 64 events (it is quadratic in nodes).
        if self.checks & 63 == 0 {
            let logs: Vec<_> = nodes.iter().flatten().map(|n| n.raft_log()).collect();
            for (a, la) in logs.iter().enumerate() {
                for lb in &logs[a + 1..] {
                    let lo = la.first_index().max(lb.first_index());
                    let hi = la.last_index().min(lb.last_index());
                    if let Some(k) = (lo..=hi).rev().find(|k| la.term_at(*k) == lb.term_at(*k)) {
                        if la.range(lo - 1, k) != lb.range(lo - 1, k) {
                            return Err(format!("log matching broken below {k}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn sim(seed: u64, nodes: usize) -> Report {
    let mut c = SimConfig::new(seed, nodes);
    c.safety_ms = 10_000;
    c.liveness_ms = 20_000;
    let mut inv = RaftInvariants::default();
    run::<LeaderNode>(&c, &ValidLeaderConfig::default(), &mut inv)
}

#[test]
fn leader_mode_passes_all_checkers_with_all_faults_at_5_nodes() {
    for seed in 0..40 {
        let r = sim(seed, 5);
        assert!(r.passed(), "{r}");
        assert!(r.tasks_acked > 0, "{r}");
    }
}

#[test]
fn leader_mode_passes_all_checkers_with_all_faults_at_3_nodes() {
    for seed in 1_000..1_020 {
        let r = sim(seed, 3);
        assert!(r.passed(), "{r}");
    }
}

#[test]
fn the_same_seed_replays_bit_for_bit() {
    let r = sim(7, 5);
    eprintln!("{r}");
    assert_eq!(r.trace_hash, sim(7, 5).trace_hash);
}
