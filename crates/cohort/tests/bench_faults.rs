//! `cohort bench`'s partition and slow-node scenarios on real `cohort node`
//! processes: who is cut off or stopped, and that no acknowledged task is
//! lost. Short windows: structure and safety, not speed.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use cohort_bench::faults::{run_scenario, FaultSettings, Scenario};

const BIN: &str = env!("CARGO_BIN_EXE_cohort");

fn settings(mode: &str) -> FaultSettings {
    FaultSettings {
        binary: BIN.into(),
        mode: mode.into(),
        nodes: 3,
        rate: 60.0,
        before_s: 0.5,
        fault_s: 1.0,
        after_s: 0.5,
    }
}

fn check_every_scenario(mode: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let s = settings(mode);
    for scenario in Scenario::ALL {
        let r = rt
            .block_on(run_scenario(&s, scenario))
            .unwrap_or_else(|e| panic!("{mode} {}: {e}", scenario.name()));
        eprintln!(
            "{mode} {}: victims {:?}, events {:?}, {} acked, {} rerun, {} unfinished",
            scenario.name(),
            r.victims,
            r.events,
            r.acked,
            r.tasks_rerun,
            r.unfinished
        );
        assert_eq!(r.scenario, scenario);
        assert!(
            r.acked > 0,
            "{mode} {}: nothing acknowledged",
            scenario.name()
        );
        assert_eq!(
            r.ack_before.count + r.ack_during.count + r.ack_after.count,
            r.acked,
            "every ack falls in one phase"
        );
        match scenario {
            Scenario::PartitionOne => {
                assert_eq!(r.victims.len(), 1);
                assert!(!r.leader_hit, "the node cut off is not the leader");
            }
            Scenario::PartitionMinorityWithLeader => {
                assert_eq!(r.victims.len(), 1, "a minority of 3 is one node");
                assert!(r.leader_hit, "the minority holds the leader");
            }
            Scenario::SlowNode => {
                assert_eq!(r.victims.len(), 1);
                assert!(r.leader_hit, "the leader is the one stopped");
            }
        }
        assert_eq!(
            r.lost,
            0,
            "{mode} {}: acknowledged task lost",
            scenario.name()
        );
        assert_eq!(
            r.unfinished,
            0,
            "{mode} {}: acknowledged tasks never decided",
            scenario.name()
        );
        if mode == "leader" && r.leader_hit {
            // A leader unreachable for 1 s (election timeout 150-300 ms) is
            // given up on by the followers, whatever the machine's load.
            assert!(
                r.declared_down > 0,
                "leader {}: no election: {:?}",
                scenario.name(),
                r.events
            );
        }
    }
}

#[test]
fn leader_mode_loses_nothing_under_partitions_and_a_stopped_leader() {
    check_every_scenario("leader");
}

#[test]
fn leaderless_mode_loses_nothing_under_partitions_and_a_stopped_node() {
    check_every_scenario("leaderless");
}
