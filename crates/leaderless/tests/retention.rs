//! Retention by count in leaderless mode (`Limits::tasks_retained_max`,
//! per node): a node over the bound purges the final records due soonest,
//! and takes none of them back from a replica that kept them.

mod common;

use cohort_core::{ClientResponse, Limits, Node, NodeId, TaskId, TaskState};
use cohort_leaderless::LeaderlessConfig;
use common::{tid, Sim};

/// Where a node keeps its purge horizon (`retention::HORIZON_KEY`).
const HORIZON_KEY: &[u8] = b"lless/purge_horizon";

fn holds(sim: &Sim, node: NodeId, id: TaskId) -> bool {
    sim.node(node).record(id).is_some()
}

fn finals(sim: &Sim, node: NodeId) -> Vec<TaskId> {
    sim.node(node)
        .records()
        .filter(|(_, _, v)| v.state.is_final())
        .map(|(id, _, _)| id)
        .collect()
}

#[test]
fn a_node_keeps_at_most_tasks_retained_max_final_records_and_takes_no_purged_one_back() {
    let (n1, n2, n3) = (NodeId(1), NodeId(2), NodeId(3));
    let three = Limits {
        tasks_retained_max: 3,
        ..Limits::default()
    };
    // Three nodes, three replicas: every node holds every task. n3 may keep
    // many more than n1 and n2.
    let mut sim = Sim::with_limits(71, 3, LeaderlessConfig::default(), three.clone());
    sim.set_limits(
        n3,
        Limits {
            tasks_retained_max: 100,
            ..Limits::default()
        },
    );
    sim.run_for(1_000);
    let ids: Vec<TaskId> = (1..=6).map(tid).collect();
    // One after the other: they finish, and come due, in this order.
    for (i, &id) in ids.iter().enumerate() {
        let r = sim.submit(NodeId(1 + i as u64 % 3), id, b"x");
        assert!(sim.run_until(5_000, |s| matches!(
            s.reply(r),
            Some(Ok(ClientResponse::Accepted { .. }))
        )));
        assert!(sim.run_until(5_000, |s| s.members().iter().all(|&n| s
            .node(n)
            .record(id)
            .is_some_and(|(_, v)| v.state.is_final()))));
        assert!(matches!(sim.decided(id), Some(TaskState::Succeeded { .. })));
    }
    sim.run_for(1_000); // a few ticks
    let (old, kept) = ids.split_at(3);
    for n in [n1, n2] {
        assert_eq!(finals(&sim, n), {
            let mut k = kept.to_vec();
            k.sort();
            k
        });
        assert!(sim.store(n).get(HORIZON_KEY).is_some(), "{n}: horizon kept");
    }
    assert_eq!(finals(&sim, n3).len(), 6, "n3 is under its own bound");

    // n3 offers the purged records back (anti-entropy) for a long while; n1
    // and n2 take none of them at any moment, before and after a restart.
    let took_back = |s: &Sim| {
        [n1, n2]
            .iter()
            .any(|&n| s.is_up(n) && old.iter().any(|&id| holds(s, n, id)))
    };
    assert!(
        !sim.run_until(10_000, took_back),
        "a purged record came back"
    );
    sim.crash(n1);
    sim.restart(n1);
    assert!(
        !sim.run_until(10_000, took_back),
        "a purged record came back after a restart"
    );
    for n in [n1, n2] {
        for &id in old {
            // `record::record_key`: the prefix, then the id big-endian.
            let key = [&b"lless/task/"[..], &id.0.to_be_bytes()].concat();
            assert!(sim.store(n).get(&key).is_none(), "{n} stored {id:?} again");
        }
        assert_eq!(finals(&sim, n).len(), 3);
        assert_eq!(sim.node(n).tombstones_held(), 3, "{n}");
    }
    assert_eq!(finals(&sim, n3).len(), 6);
    // What an operator sees (counters start at boot, and n1 restarted).
    let counters: std::collections::BTreeMap<_, _> = sim.node(n2).counters().into_iter().collect();
    assert_eq!(counters["records_purged"], 3);
    assert!(counters["purged_copies_refused"] > 0, "{counters:?}");
    assert_eq!(
        counters["purged_copies_dropped"], 0,
        "n3's copies are final"
    );
}

/// A schedule's definition and tombstone are kept for ever, so a node
/// creates at most `schedules_kept_max` definitions (tombstones count with
/// them): the next new schedule is refused `overloaded`, naming the limit,
/// and changes nothing; a delete still goes through (up to twice the
/// bound), an existing definition is acknowledged again, and the count
/// survives a restart.
#[test]
fn a_node_creates_at_most_schedules_kept_max_schedules_and_a_delete_still_goes_through() {
    use cohort_core::schedule::{IdTag, Overlap, Schedule, ScheduleName, Spec};
    use cohort_core::{ClientError, ClientRequest};
    let config = LeaderlessConfig {
        schedules_kept_max: 2,
        ..LeaderlessConfig::default()
    };
    // Three nodes, three replicas: every node holds every record.
    let mut sim = Sim::new(73, 3, config);
    sim.run_for(1_000);
    let schedule = |name: &str| Schedule {
        name: ScheduleName::new(name).expect("a valid name"),
        spec: Spec::Every {
            every_ms: 60_000,
            start_ms: 0,
        },
        overlap: Overlap::Skip,
        catch_up_window_ms: 60_000,
        task: common::task(b"tick"),
        link_attempts: 3,
    };
    let define = |sim: &mut Sim, name: &str| {
        let s = schedule(name);
        let id = s.name.task_id(IdTag::Spec);
        let r = sim.client(
            NodeId(1),
            ClientRequest::Submit {
                id,
                task: s.spec_task(),
            },
        );
        assert!(sim.run_until(2_000, |s| s.reply(r).is_some()));
        (id, sim.reply(r).expect("answered").clone())
    };
    let accepted =
        |r: &Result<ClientResponse, ClientError>| matches!(r, Ok(ClientResponse::Accepted { .. }));
    let (first, r) = define(&mut sim, "first");
    assert!(accepted(&r), "{r:?}");
    let (_, r) = define(&mut sim, "second");
    assert!(accepted(&r), "{r:?}");
    let over = |r: &Result<ClientResponse, ClientError>| matches!(r, Err(ClientError::Overloaded { what, limit: 2 }) if what == "schedules_kept_max");
    let (third, r) = define(&mut sim, "third");
    assert!(over(&r), "{r:?}");
    for n in sim.members().to_vec() {
        assert!(
            !holds(&sim, n, third),
            "a refused schedule is stored nowhere"
        );
        assert!(holds(&sim, n, first));
    }
    // The same definition again: it exists, acknowledged.
    let (_, r) = define(&mut sim, "first");
    assert!(accepted(&r), "{r:?}");
    // Deleting one still goes through.
    let deleted = ScheduleName::new("first")
        .expect("valid")
        .task_id(IdTag::Deleted);
    let r = sim.client(
        NodeId(2),
        ClientRequest::Submit {
            id: deleted,
            task: Schedule::tombstone_task(),
        },
    );
    assert!(sim.run_until(2_000, |s| s.reply(r).is_some()));
    assert!(accepted(sim.reply(r).expect("answered")));
    // A restarted node counts what it keeps from its store.
    for n in sim.members().to_vec() {
        sim.crash(n);
        sim.restart(n);
    }
    sim.run_for(2_000);
    let (_, r) = define(&mut sim, "fourth");
    assert!(over(&r), "{r:?}");
}
