//! Scripted scenarios and seeded random runs of the Raft core, each named
//! for what it guards. The [`Net`] harness checks the Raft invariants after
//! every single input.

use super::testnet::{ids, Net};
use super::{Membership, MembershipChange, RaftConfig, Role};
use cohort_core::NodeId;
use rand::Rng;

fn n(i: u64) -> NodeId {
    NodeId(i)
}

/// Proposes `count` commands at the current leader, running in between.
fn propose_many(net: &mut Net, count: usize, tag: u8) -> usize {
    let mut accepted = 0;
    for i in 0..count {
        if let Some(l) = net.leader() {
            if net.propose_at(l, &[tag, i as u8]).is_some() {
                accepted += 1;
            }
        }
        net.run_for(2);
    }
    accepted
}

#[test]
fn three_nodes_elect_one_leader_and_apply_the_same_commands() {
    let mut net = Net::new(1, 3);
    let leader = net.elect(2_000);
    assert_eq!(propose_many(&mut net, 20, 1), 20);
    net.run_for(200);
    net.assert_converged();
    net.check_log_matching();
    let p = net.peer(leader);
    assert_eq!(p.sm.len(), 20);
    assert_eq!(p.applied, 21, "20 commands after the leader's no-op");
}

#[test]
fn a_lone_voter_commits_on_its_own() {
    let mut net = Net::new(2, 1);
    let leader = net.elect(1_000);
    assert_eq!(leader, n(1));
    net.propose_at(leader, b"x");
    assert_eq!(net.peer(leader).sm, vec![b"x".to_vec()]);
}

#[test]
fn split_votes_under_heavy_loss_eventually_elect() {
    let mut net = Net::new(3, 5);
    net.loss = 0.4;
    net.delay_us = (1_000, 20_000);
    let leader = net.elect(20_000);
    net.heal();
    net.run_for(500);
    let leader = net.leader().unwrap_or(leader);
    net.propose_at(leader, b"after-loss");
    net.run_for(500);
    net.assert_converged();
}

#[test]
fn leader_crash_mid_replication_loses_no_committed_entry() {
    let mut net = Net::new(4, 5);
    let old = net.elect(2_000);
    assert_eq!(propose_many(&mut net, 10, 1), 10);
    net.run_for(100);
    let committed_before = net.committed.len();
    // Proposals left in flight: the leader crashes before they replicate.
    for i in 0..5u8 {
        net.propose_at(old, &[9, i]);
    }
    net.run_for(1);
    net.crash(old);
    let new = net.elect(3_000);
    assert_ne!(new, old);
    assert!(net.committed.len() >= committed_before);
    assert_eq!(propose_many(&mut net, 5, 2), 5);
    net.run_for(300);
    net.restart(old);
    net.run_for(1_000);
    net.assert_converged();
    net.check_log_matching();
    let sm = &net.peer(old).sm;
    assert!(sm.starts_with(&(0..10u8).map(|i| vec![1, i]).collect::<Vec<_>>()));
}

#[test]
fn leader_cut_off_in_a_minority_commits_nothing_and_steps_down() {
    let mut net = Net::new(5, 5);
    let old = net.elect(2_000);
    propose_many(&mut net, 3, 1);
    net.run_for(100);
    let commit_before = net.peer(old).raft.commit();
    let others: Vec<NodeId> = ids(5).into_iter().filter(|i| *i != old).collect();
    let (minority, majority) = (vec![old, others[0]], others[1..].to_vec());
    net.partition(&minority, &majority);
    // Clients keep sending to the old leader: none of it may commit.
    for i in 0..10u8 {
        net.propose_at(old, &[7, i]);
        net.run_for(5);
    }
    assert_eq!(net.peer(old).raft.commit(), commit_before);
    net.run_for(1_000);
    assert_ne!(
        net.peer(old).raft.status().role,
        Role::Leader,
        "check-quorum steps the old leader down"
    );
    let new = net.leader().expect("the majority elects");
    assert!(majority.contains(&new));
    net.propose_at(new, b"majority");
    net.heal();
    net.run_for(1_000);
    net.assert_converged();
    assert!(
        !net.peer(old).sm.iter().any(|c| c.first() == Some(&7)),
        "nothing accepted in the minority survives"
    );
}

#[test]
fn pre_vote_keeps_a_returning_partitioned_follower_from_disrupting_the_leader() {
    let mut net = Net::new(6, 3);
    let leader = net.elect(2_000);
    let lonely = ids(3).into_iter().find(|i| *i != leader).unwrap();
    let rest: Vec<NodeId> = ids(3).into_iter().filter(|i| *i != lonely).collect();
    let term = net.peer(leader).raft.term();
    net.partition(&[lonely], &rest);
    net.run_for(3_000);
    assert_eq!(
        net.peer(lonely).raft.term(),
        term,
        "pre-vote does not inflate terms"
    );
    net.heal();
    net.run_for(1_000);
    assert_eq!(net.leader(), Some(leader));
    assert_eq!(net.peer(leader).raft.term(), term);
}

#[test]
fn restart_from_persisted_state_keeps_term_vote_and_log() {
    let mut net = Net::new(7, 3);
    net.elect(2_000);
    propose_many(&mut net, 10, 1);
    net.run_for(200);
    let before: Vec<_> = ids(3).iter().map(|i| net.peer(*i).raft.status()).collect();
    for i in ids(3) {
        net.crash(i);
    }
    for i in ids(3) {
        net.restart(i);
        let st = net.peer(i).raft.status();
        let old = before.iter().find(|s| s.id == i).unwrap();
        assert_eq!(st.term, old.term);
        assert_eq!(st.vote, old.vote);
        assert_eq!(st.last_index, old.last_index);
        assert_eq!(
            net.peer(i).sm.len(),
            10,
            "committed entries re-applied at boot"
        );
    }
    let l = net.elect(3_000);
    net.propose_at(l, b"after restart");
    net.run_for(500);
    net.assert_converged();
}

#[test]
fn divergent_follower_is_repaired_by_conflict_term_hints() {
    let mut net = Net::new(8, 3);
    let old = net.elect(2_000);
    propose_many(&mut net, 5, 1);
    net.run_for(100);
    let others: Vec<NodeId> = ids(3).into_iter().filter(|i| *i != old).collect();
    // The old leader appends a long uncommitted tail alone.
    net.partition(&[old], &others);
    for i in 0..100u8 {
        net.propose_at(old, &[5, i]);
    }
    net.run_for(1_000);
    let new = net.leader().expect("the other two elect");
    assert_ne!(new, old);
    propose_many(&mut net, 5, 2);
    let sent_before = net.messages_sent;
    net.heal();
    net.run_for(500);
    net.assert_converged();
    net.check_log_matching();
    // 100 conflicting entries of one term are skipped in one round, not
    // one rejection per entry.
    assert!(
        net.messages_sent - sent_before < 150,
        "repair took {} messages",
        net.messages_sent - sent_before
    );
}

#[test]
fn lagging_follower_is_caught_up_by_a_chunked_snapshot() {
    let cfg = RaftConfig {
        snapshot_chunk_bytes: 16,
        ..RaftConfig::default()
    };
    let mut net = Net::with(9, Membership::initial(&ids(3), 3), cfg);
    net.compact_after = Some(10);
    net.keep_entries = 2;
    let leader = net.elect(2_000);
    let lagging = ids(3).into_iter().find(|i| *i != leader).unwrap();
    net.crash(lagging);
    propose_many(&mut net, 40, 3);
    net.run_for(100);
    assert!(
        net.peer(leader).raft.log().offset() > 0,
        "the leader compacted"
    );
    assert!(
        net.peer(leader).raft.log().len() <= 12,
        "the log stays bounded"
    );
    net.restart(lagging);
    net.run_for(1_000);
    assert!(net.snapshots_installed >= 1);
    net.assert_converged();
    // Reboot from the installed snapshot.
    net.crash(lagging);
    net.restart(lagging);
    assert_eq!(net.peer(lagging).sm.len(), 40);
}

#[test]
fn read_index_is_confirmed_by_a_quorum_and_aborted_in_a_minority() {
    let mut net = Net::new(10, 3);
    let leader = net.elect(2_000);
    propose_many(&mut net, 3, 1);
    net.run_for(100);
    let now = net.now;
    net.raft(leader).read_index(now, 42).unwrap();
    net.drain(leader);
    net.run_for(50);
    let commit = net.peer(leader).raft.commit();
    assert_eq!(net.peer(leader).reads, vec![(42, commit)]);
    // Cut off: the read can never be confirmed, and is aborted on step-down.
    let others: Vec<NodeId> = ids(3).into_iter().filter(|i| *i != leader).collect();
    net.partition(&[leader], &others);
    let now = net.now;
    net.raft(leader).read_index(now, 43).unwrap();
    net.drain(leader);
    net.run_for(1_000);
    assert_eq!(
        net.peer(leader).reads.len(),
        1,
        "no read confirmed in a minority"
    );
    assert_eq!(net.peer(leader).aborted, vec![43]);
    let follower = others[0];
    let now = net.now;
    assert!(net.raft(follower).read_index(now, 44).is_err() || net.leader() == Some(follower));
}

#[test]
fn leader_transfer_hands_over_to_the_target() {
    let mut net = Net::new(11, 5);
    let old = net.elect(2_000);
    propose_many(&mut net, 5, 1);
    let target = ids(5).into_iter().find(|i| *i != old).unwrap();
    let now = net.now;
    net.raft(old).transfer_leadership(now, target).unwrap();
    net.drain(old);
    net.run_for(100);
    assert_eq!(net.leader(), Some(target));
    net.propose_at(target, b"new leader");
    net.run_for(200);
    net.assert_converged();
}

#[test]
fn learner_replicates_without_voting_then_is_promoted_and_a_voter_removed() {
    let members = ids(4);
    let mut net = Net::with(12, Membership::initial(&members, 3), RaftConfig::default());
    let leader = net.elect(2_000);
    assert!(net.peer(n(4)).raft.membership().learners.contains(&n(4)));
    propose_many(&mut net, 5, 1);
    net.run_for(200);
    assert_eq!(net.peer(n(4)).sm.len(), 5, "the learner replicates");
    // The learner never campaigns, even with no leader around.
    net.partition(&[n(4)], &ids(3));
    net.run_for(2_000);
    assert_eq!(net.peer(n(4)).raft.status().role, Role::Follower);
    net.heal();
    net.run_for(300);
    let leader = net.leader().unwrap_or(leader);
    let now = net.now;
    net.raft(leader)
        .propose_membership(now, MembershipChange::PromoteLearner(n(4)))
        .unwrap();
    net.drain(leader);
    propose_many(&mut net, 5, 2);
    net.run_for(300);
    assert!(net.peer(n(1)).raft.membership().voters.contains(&n(4)));
    // Remove a voter that is not the leader, while commands flow.
    let leader = net.leader().unwrap();
    let gone = ids(4).into_iter().find(|i| *i != leader).unwrap();
    let now = net.now;
    net.raft(leader)
        .propose_membership(now, MembershipChange::Remove(gone))
        .unwrap();
    net.drain(leader);
    propose_many(&mut net, 5, 3);
    net.run_for(300);
    net.crash(gone);
    let st = net.peer(leader).raft.status();
    assert_eq!(st.membership.voters.len(), 3);
    assert!(!st.membership.is_member(gone));
    propose_many(&mut net, 5, 4);
    net.run_for(300);
    net.assert_converged();
    assert_eq!(net.peer(leader).sm.len(), 20);
}

#[test]
fn a_leader_that_removes_itself_steps_down_after_commit() {
    let mut net = Net::new(13, 3);
    let leader = net.elect(2_000);
    propose_many(&mut net, 2, 1);
    net.run_for(100);
    let now = net.now;
    net.raft(leader)
        .propose_membership(now, MembershipChange::Remove(leader))
        .unwrap();
    net.drain(leader);
    net.run_for(2_000);
    assert_ne!(net.peer(leader).raft.status().role, Role::Leader);
    let new = net.leader().expect("the remaining two elect");
    assert_ne!(new, leader);
}

/// Random faults: loss, duplication, reordering, partitions, crashes and
/// restarts, with compaction on; then healing, after which the cluster
/// must make progress. Invariants are checked after every input. Returns
/// (entries committed, snapshots installed).
fn random_run(seed: u64, size: u64) -> (usize, u64, usize) {
    random_run_with(seed, size, size as usize, false)
}

/// As [`random_run`], with `voters` of the `size` members voting and, if
/// `reconfigure`, random promotions, demotions and leader transfers.
fn random_run_with(seed: u64, size: u64, voters: usize, reconfigure: bool) -> (usize, u64, usize) {
    let mut net = Net::with(
        seed,
        Membership::initial(&ids(size), voters),
        RaftConfig::default(),
    );
    net.compact_after = Some(30);
    let mut chaos = net.rng.clone();
    net.loss = chaos.gen_range(0.0..0.3);
    net.dup = chaos.gen_range(0.0..0.1);
    net.delay_us = (100, chaos.gen_range(1_000..30_000));
    for step in 0..150u32 {
        match chaos.gen_range(0..20) {
            0 => {
                // Crash a node while a majority stays up; else restart one.
                let v = n(chaos.gen_range(1..=size));
                let down = ids(size).iter().filter(|i| !net.is_up(**i)).count() as u64;
                if !net.is_up(v) {
                    net.restart(v);
                } else if down < (size - 1) / 2 {
                    net.crash(v);
                }
            }
            1 => {
                let all = ids(size);
                let k = chaos.gen_range(1..size as usize);
                net.cut.clear();
                net.partition(&all[..k], &all[k..]);
            }
            2 => net.cut.clear(),
            3 | 4 if reconfigure => {
                if let Some(l) = net.leader() {
                    let m = net.peer(l).raft.membership().clone();
                    let pick = |set: &std::collections::BTreeSet<NodeId>, r: usize| {
                        set.iter().copied().nth(r % set.len().max(1))
                    };
                    let r = chaos.gen_range(0..100);
                    let now = net.now;
                    let change = match chaos.gen_range(0..3) {
                        0 => pick(&m.learners, r).map(MembershipChange::PromoteLearner),
                        1 if m.voters.len() > 3 => pick(&m.voters, r)
                            .filter(|v| *v != l)
                            .map(MembershipChange::DemoteVoter),
                        _ => {
                            if let Some(to) = pick(&m.voters, r).filter(|v| *v != l) {
                                let _ = net.raft(l).transfer_leadership(now, to);
                            }
                            None
                        }
                    };
                    if let Some(change) = change {
                        let _ = net.raft(l).propose_membership(now, change);
                    }
                    net.drain(l);
                }
            }
            _ => {
                if let Some(l) = net.leader() {
                    net.propose_at(l, &step.to_be_bytes());
                }
            }
        }
        net.run_for(chaos.gen_range(1..60));
    }
    net.check_log_matching();
    net.heal();
    for i in ids(size) {
        if !net.is_up(i) {
            net.restart(i);
        }
    }
    net.run_for(3_000);
    let leader = net
        .leader()
        .unwrap_or_else(|| panic!("seed {seed}: no leader after healing"));
    net.propose_at(leader, b"final")
        .expect("a healed leader takes proposals");
    net.run_for(2_000);
    net.assert_converged();
    net.check_log_matching();
    assert_eq!(
        net.peer(leader).sm.last().map(Vec::as_slice),
        Some(&b"final"[..]),
        "seed {seed}: the final command applied"
    );
    let configs = net
        .committed
        .values()
        .filter(|e| matches!(e.kind, super::EntryKind::Config(_)))
        .count();
    (net.committed.len(), net.snapshots_installed, configs)
}

#[test]
fn random_promotions_demotions_and_transfers_preserve_raft_invariants() {
    let (mut committed, mut configs) = (0, 0);
    for seed in 0..150 {
        let (c, _, k) = random_run_with(5_000 + seed, 5, 3, true);
        committed += c;
        configs += k;
    }
    // The faults must leave room for real work and real changes.
    assert!(committed > 150 * 30, "only {committed} entries committed");
    assert!(configs > 150, "only {configs} membership changes committed");
}

#[test]
fn random_faults_preserve_raft_invariants_at_3_and_5_nodes() {
    let (mut committed, mut snapshots) = (0, 0);
    for seed in 0..100 {
        for size in [3, 5] {
            let (c, s, _) = random_run(seed * 10 + size, size);
            committed += c;
            snapshots += s;
        }
    }
    // The faults must leave room for real work, or the run proves nothing.
    assert!(committed > 200 * 40, "only {committed} entries committed");
    assert!(snapshots > 50, "only {snapshots} snapshots installed");
}

#[test]
fn a_vote_is_persisted_in_the_batch_before_its_reply_and_survives_a_restart() {
    use super::{log::HARD_KEY, HardState, RaftMsg, RaftNode};
    use cohort_core::{decode, NodeRng, Stored, Time};
    use rand::SeedableRng;
    let members = Membership::initial(&ids(3), 3);
    let boot = |stored: &Stored| {
        let rng = NodeRng::seed_from_u64(1);
        RaftNode::restore(
            n(1),
            members.clone(),
            RaftConfig::default(),
            stored,
            rng,
            Time::ZERO,
        )
        .unwrap()
        .0
    };
    let mut stored = Stored::new();
    let mut raft = boot(&stored);
    let vote = |term| RaftMsg::Vote {
        term,
        last_index: 0,
        last_term: 0,
        transfer: false,
    };
    raft.step(Time::from_millis(1), n(2), vote(1));
    let ready = raft.take_ready();
    let hard: HardState = ready
        .persist
        .iter()
        .find_map(|op| match op {
            cohort_core::StoreOp::Put { key, value } if key == HARD_KEY => decode(value, 64).ok(),
            _ => None,
        })
        .expect("the vote is in this batch's persist");
    assert_eq!((hard.term, hard.vote), (1, Some(n(2))));
    assert_eq!(
        ready.messages,
        vec![(
            n(2),
            RaftMsg::VoteResp {
                term: 1,
                granted: true
            }
        )]
    );
    stored.apply(&ready.persist);
    // Crash and reboot: the vote holds, so n3 cannot get one in term 1.
    let mut raft = boot(&stored);
    raft.step(Time::from_millis(2), n(3), vote(1));
    let ready = raft.take_ready();
    assert_eq!(
        ready.messages,
        vec![(
            n(3),
            RaftMsg::VoteResp {
                term: 1,
                granted: false
            }
        )]
    );
}

#[test]
fn a_candidate_with_a_shorter_log_gets_no_vote() {
    let mut net = Net::new(14, 3);
    let leader = net.elect(2_000);
    propose_many(&mut net, 3, 1);
    net.run_for(100);
    let behind = ids(3).into_iter().find(|i| *i != leader).unwrap();
    net.crash(behind);
    propose_many(&mut net, 3, 2);
    net.run_for(100);
    net.restart(behind);
    let now = net.now;
    let st = net.peer(behind).raft.status();
    // Ask the leader's peer for a vote at a higher term with the stale log.
    let voter = ids(3)
        .into_iter()
        .find(|i| *i != leader && *i != behind)
        .unwrap();
    let msg = super::RaftMsg::Vote {
        term: st.term + 5,
        last_index: st.last_index,
        last_term: net.peer(behind).raft.log().last_term(),
        transfer: true,
    };
    net.raft(voter).step(now, behind, msg);
    let ready = net.raft(voter).take_ready();
    assert!(ready.messages.iter().any(
        |(to, m)| *to == behind && matches!(m, super::RaftMsg::VoteResp { granted: false, .. })
    ));
    net.stored.get_mut(&voter).unwrap().apply(&ready.persist);
}

#[test]
fn deferred_proposals_share_one_append_per_follower_until_flush() {
    let mut net = Net::new(31, 3);
    let leader = net.elect(2_000);
    assert_eq!(propose_many(&mut net, 3, 1), 3);
    net.run_for(200);
    let raft = net.raft(leader);
    let now = raft.clock;
    raft.defer_sends();
    for i in 0..10u8 {
        raft.propose(now, vec![7, i])
            .expect("the leader takes proposals");
    }
    let held = raft.take_ready();
    assert!(
        held.messages.is_empty(),
        "nothing is sent before the flush: {:?}",
        held.messages
    );
    assert_eq!(
        held.persist.len(),
        10,
        "each entry is still written at once"
    );
    raft.flush(now);
    let sent = raft.take_ready();
    let appends: Vec<(NodeId, usize)> = sent
        .messages
        .iter()
        .map(|(to, m)| match m {
            super::RaftMsg::Append { entries, .. } => (*to, entries.len()),
            other => panic!("only appends are sent, got {other:?}"),
        })
        .collect();
    let followers: Vec<NodeId> = ids(3).into_iter().filter(|i| *i != leader).collect();
    assert_eq!(
        appends,
        followers.iter().map(|f| (*f, 10)).collect::<Vec<_>>(),
        "one append per follower carrying all ten entries"
    );
}

/// Takes the node's ready batch and keeps its appends.
fn appends_taken(raft: &mut super::RaftNode) -> Vec<super::RaftMsg> {
    raft.take_ready()
        .messages
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| matches!(m, super::RaftMsg::Append { .. }))
        .collect()
}

#[test]
fn an_append_may_precede_the_leaders_own_write_only_once_its_term_is_durable() {
    use super::RaftMsg;
    let mut net = Net::new(32, 3);
    let leader = net.elect(2_000);
    net.run_for(200);
    let raft = net.raft(leader);
    let now = raft.clock;
    let term = raft.term();
    raft.defer_sends();
    // This node never flushed before: the term it leads was reached in a
    // batch whose writes it cannot know durable yet.
    raft.propose(now, vec![1])
        .expect("the leader takes proposals");
    raft.flush(now);
    let first = appends_taken(raft);
    assert_eq!(first.len(), 2, "one append per follower");
    assert!(
        first.iter().all(|m| !raft.may_precede_persist(m)),
        "an append of a term not yet durable waits for the batch's writes"
    );
    // The next batch: the driver made the previous one durable first.
    raft.propose(now, vec![2])
        .expect("the leader takes proposals");
    raft.flush(now);
    let second = appends_taken(raft);
    assert_eq!(second.len(), 2, "one append per follower");
    assert!(
        second.iter().all(|m| raft.may_precede_persist(m)),
        "an append of a durable term needs none of the batch's writes"
    );
    // What answers or asks for a vote always waits: it promises something
    // this node must not forget.
    for m in [
        RaftMsg::VoteResp {
            term,
            granted: true,
        },
        RaftMsg::Vote {
            term,
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ] {
        assert!(!raft.may_precede_persist(&m), "{m:?} went out early");
    }
}

#[test]
fn a_lone_voters_append_naming_a_commit_not_yet_on_its_disk_waits_for_the_write() {
    use super::RaftMsg;
    // One voter and a learner: the voter commits what it appends at once.
    let mut net = Net::with(33, Membership::initial(&ids(2), 1), RaftConfig::default());
    let leader = net.elect(2_000);
    assert_eq!(leader, n(1));
    net.run_for(200);
    let raft = net.raft(leader);
    let now = raft.clock;
    raft.defer_sends();
    raft.flush(now);
    raft.take_ready();
    raft.flush(now);
    raft.take_ready();
    // The term and the log so far are durable now; this batch appends and
    // commits an entry the learner would apply.
    let index = raft
        .propose(now, vec![1])
        .expect("the leader takes proposals");
    raft.flush(now);
    let appends: Vec<RaftMsg> = appends_taken(raft)
        .into_iter()
        .filter(|m| matches!(m, RaftMsg::Append { commit, .. } if *commit >= index))
        .collect();
    assert_eq!(appends.len(), 1, "the learner is told of the commit");
    assert!(
        !raft.may_precede_persist(&appends[0]),
        "a commit index beyond the durable log waits for the write"
    );
}

#[test]
fn a_flush_with_nothing_new_still_sends_to_the_follower_whose_ack_opened_its_window() {
    let cfg = super::RaftConfig {
        appends_inflight_max: 1,
        append_entries_max: 2,
        ..super::RaftConfig::default()
    };
    let mut net = Net::with(32, Membership::initial(&ids(5), 5), cfg);
    let leader = net.elect(2_000);
    assert_eq!(propose_many(&mut net, 2, 1), 2);
    net.run_for(200);
    let raft = net.raft(leader);
    let now = raft.clock;
    let (term, base) = (raft.status().term, raft.status().last_index);
    raft.defer_sends();
    for i in 0..6u8 {
        raft.propose(now, vec![9, i])
            .expect("the leader takes proposals");
    }
    let _ = raft.take_ready();
    raft.flush(now);
    let first = raft.take_ready();
    assert_eq!(
        first.messages.len(),
        4,
        "one append per follower: a window of one"
    );
    // One follower acknowledges its two entries: no quorum, so no new
    // commit index, and no new entry: only its own message changed anything.
    let acker = first.messages[0].0;
    let ack = super::RaftMsg::AppendResp {
        term,
        outcome: super::AppendOutcome::Success {
            match_index: base + 2,
        },
        read_seq: 0,
    };
    raft.step(now, acker, ack);
    assert_eq!(raft.status().commit, base, "one ack of five is no quorum");
    raft.flush(now);
    let sent = raft.take_ready();
    let appends: Vec<(NodeId, u64, usize)> = sent
        .messages
        .iter()
        .map(|(to, m)| match m {
            super::RaftMsg::Append {
                prev_index,
                entries,
                ..
            } => (*to, *prev_index, entries.len()),
            other => panic!("only appends are sent, got {other:?}"),
        })
        .collect();
    assert_eq!(
        appends,
        vec![(acker, base + 2, 2)],
        "the acknowledging follower gets its next entries; the others' windows are still full"
    );
    raft.flush(now);
    assert!(
        raft.take_ready().messages.is_empty(),
        "nothing is owed twice"
    );
}
