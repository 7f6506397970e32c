//! Schedules on real 3-node clusters of every mode: a 200 ms schedule
//! fires every tick exactly once (one task per tick, none missed) until it
//! is deleted, and nothing after; `skip` and `buffer_one` never start a
//! firing while the previous one runs, `allow` does and fires every tick;
//! typed refusals (a reserved kind submitted directly, bad definitions,
//! another definition under a name, a deleted name).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::real;

use cohort_core::schedule::{IdTag, ScheduleName, SCHEDULE_KIND};
use cohort_leader::{LeaderNode, ValidLeaderConfig};
use cohort_leaderless::{LeaderlessConfig, LeaderlessNode};
use cohort_runtime::client::{CallError, Client, ScheduleView, TaskEventsView};
use cohort_runtime::http::{ScheduleBody, SubmitBody};
use cohort_runtime::RunningNode;
use cohort_static::{StaticConfig, StaticNode};
use real::{echo, unix_ms_now};
use std::collections::BTreeSet;
use std::time::Duration;

const EVERY_MS: u64 = 200;
/// How many ticks of each schedule must have fired before it is deleted.
const RUN_TICKS: u64 = 10;

/// Waits until `count` ticks of `name` from `from` on fired (polling: a
/// loaded machine runs links late, which is allowed).
async fn wait_fired(client: &Client, name: &str, from: u64, count: usize) {
    for _ in 0..400 {
        if fired(client, name, from, unix_ms_now()).await.len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name}: fewer than {count} ticks fired from {from} within 20 s");
}

fn body(name: &str, overlap: &str, task: SubmitBody) -> ScheduleBody {
    ScheduleBody {
        name: name.into(),
        every_ms: Some(EVERY_MS),
        start_ms: None,
        cron: None,
        overlap: Some(overlap.into()),
        catch_up_window_ms: Some(60_000),
        task,
    }
}

fn sleep_ms(ms: u64) -> SubmitBody {
    SubmitBody {
        kind: "sleep".into(),
        payload: Some(ms.to_string()),
        ..echo("")
    }
}

/// Creates the schedule, retrying while the cluster forms.
async fn create(client: &Client, body: &ScheduleBody) {
    for _ in 0..200 {
        match client.schedule_create(body).await {
            Ok(_) => return,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("create {} refused: {e}", body.name),
        }
    }
    panic!("create {} not acknowledged within 10 s", body.name);
}

/// Waits until the definition ran and started the chain.
async fn started(client: &Client, name: &str) -> ScheduleView {
    for _ in 0..200 {
        match client.schedule_get(name).await {
            Ok(v) if v.started => return v,
            Ok(_) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("get {name}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("schedule {name} not started within 10 s");
}

/// The firing of `tick`, if one exists.
async fn firing(client: &Client, name: &str, tick: u64) -> Option<String> {
    let id = ScheduleName::new(name)
        .unwrap()
        .task_id(IdTag::Fire(tick))
        .to_string();
    for _ in 0..100 {
        match client.get(&id, false, None).await {
            Ok(_) => return Some(id),
            Err(CallError::Api { status: 404, .. }) => return None,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("read {id}: {e}"),
        }
    }
    panic!("no answer reading {id}");
}

/// The ticks in `[from, to]` whose firing exists.
async fn fired(client: &Client, name: &str, from: u64, to: u64) -> Vec<u64> {
    let mut ticks = Vec::new();
    let mut t = from;
    while t <= to {
        if firing(client, name, t).await.is_some() {
            ticks.push(t);
        }
        t += EVERY_MS;
    }
    ticks
}

async fn final_events(client: &Client, id: &str) -> TaskEventsView {
    let t = client
        .get(id, false, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(t.is_final(), "{t:?}");
    client.events(id, false).await.unwrap()
}

fn at_ms(v: &TaskEventsView, event: &str) -> u64 {
    v.events
        .iter()
        .find(|e| e.event == event)
        .unwrap_or_else(|| panic!("no {event} in {v:?}"))
        .at_ms
}

/// Every id a schedule's chain may create for ticks in `[from, to]`.
fn chain_ids(name: &str, from: u64, to: u64) -> BTreeSet<String> {
    let n = ScheduleName::new(name).unwrap();
    let mut ids: BTreeSet<String> = [IdTag::Spec, IdTag::First, IdTag::Deleted]
        .into_iter()
        .map(|t| n.task_id(t).to_string())
        .collect();
    let mut t = from;
    while t <= to {
        ids.insert(n.task_id(IdTag::Link(t)).to_string());
        ids.insert(n.task_id(IdTag::Fire(t)).to_string());
        // buffer_one's looks at a running firing.
        for w in 1..=100 {
            ids.insert(n.task_id(IdTag::Wait(t, w)).to_string());
        }
        t += EVERY_MS;
    }
    ids
}

async fn schedules_fire_once_per_tick(nodes: &[RunningNode]) {
    let client = Client::new(&nodes[0].http_addr().to_string());
    let elsewhere = Client::new(&nodes[2].http_addr().to_string());

    // Refusals first (nothing created): the reserved kind, bad definitions.
    let reserved = SubmitBody {
        kind: SCHEDULE_KIND.into(),
        ..echo("")
    };
    match client.submit(&reserved).await {
        Err(CallError::Api {
            status: 400, code, ..
        }) if code == "reserved_kind" => {}
        r => panic!("a direct submit of the reserved kind was answered {r:?}"),
    }
    let batch = serde_json::json!({"tasks": [echo("a"), reserved.clone()]});
    let (status, v) =
        real::post_batch(nodes[0].http_addr(), serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(
        (status, v["code"].as_str(), v["index"].as_u64()),
        (400, Some("reserved_kind"), Some(1)),
        "{v}"
    );
    for (bad, code) in [
        (
            ScheduleBody {
                every_ms: Some(1),
                ..body("fast", "skip", echo(""))
            },
            "invalid_schedule",
        ),
        (body("a b", "skip", echo("")), "invalid_schedule"),
        (body("x", "sometimes", echo("")), "invalid_schedule"),
        (
            ScheduleBody {
                cron: Some("61 * * * *".into()),
                every_ms: None,
                ..body("c", "skip", echo(""))
            },
            "invalid_schedule",
        ),
        (
            ScheduleBody {
                cron: Some("* * * * *".into()),
                ..body("both", "skip", echo(""))
            },
            "invalid_schedule",
        ),
        (body("r", "skip", reserved.clone()), "reserved_kind"),
        (
            body(
                "k",
                "skip",
                SubmitBody {
                    kind: "no-such-kind".into(),
                    ..echo("")
                },
            ),
            "unknown_kind",
        ),
    ] {
        match client.schedule_create(&bad).await {
            Err(CallError::Api { code: got, .. }) if got == code => {}
            r => panic!("{bad:?} was answered {r:?}, not {code}"),
        }
    }

    let each = body("each-tick", "allow", echo("tick"));
    let skip = body("skip", "skip", sleep_ms(500));
    let buffer = body("buffer", "buffer_one", sleep_ms(300));
    let allow = body("allow", "allow", sleep_ms(500));
    for b in [&each, &skip, &buffer, &allow] {
        create(&client, b).await;
    }
    match client.schedule_get("nothing-here").await {
        Err(CallError::Api { status: 404, .. }) => {}
        r => panic!("an unknown schedule read as {r:?}"),
    }
    // The same definition again, at another node: answered the same.
    create(&elsewhere, &each).await;
    let first = started(&client, "each-tick").await;
    let from = first
        .first_tick_ms
        .expect("a started schedule has a first tick");
    assert_eq!(from % EVERY_MS, 0, "ticks at multiples of every_ms");
    let other = ScheduleBody {
        catch_up_window_ms: Some(1),
        ..each.clone()
    };
    match client.schedule_create(&other).await {
        Err(CallError::Api {
            status: 409, code, ..
        }) if code == "schedule_exists" => {}
        r => panic!("another definition under the name was answered {r:?}"),
    }
    let mut firsts = Vec::new();
    for b in [&skip, &buffer, &allow] {
        firsts.push(started(&client, &b.name).await.first_tick_ms.unwrap());
    }
    wait_fired(&client, "each-tick", from, RUN_TICKS as usize + 1).await;
    wait_fired(&client, "skip", firsts[0], 2).await;
    wait_fired(&client, "buffer", firsts[1], 2).await;
    wait_fired(&client, "allow", firsts[2], 5).await;
    // The listing names every schedule once, from any node.
    let names = |l: &cohort_runtime::client::ScheduleListing| -> Vec<String> {
        l.schedules.iter().map(|v| v.name.clone()).collect()
    };
    let all_names = ["allow", "buffer", "each-tick", "skip"];
    let listed = elsewhere.schedules(100).await.unwrap();
    assert_eq!(names(&listed), all_names, "{listed:?}");
    assert!(listed.unreachable.is_empty() && !listed.truncated);
    for v in &listed.schedules {
        assert!(v.started && !v.deleted && v.next_tick_ms.is_some(), "{v:?}");
        assert!(v.definition.is_some(), "{v:?}");
    }
    let short = client.schedules(2).await.unwrap();
    assert_eq!(names(&short), all_names[..2], "{short:?}");
    assert!(short.truncated);
    for b in [&each, &skip, &buffer, &allow] {
        elsewhere.schedule_delete(&b.name).await.unwrap();
    }
    let listed = client.schedules(100).await.unwrap();
    assert_eq!(names(&listed), all_names, "{listed:?}");
    assert!(
        listed
            .schedules
            .iter()
            .all(|v| v.deleted && v.next_tick_ms.is_none()),
        "{listed:?}"
    );
    let deleted_at = unix_ms_now();
    let view = client.schedule_get("each-tick").await.unwrap();
    assert!(view.deleted && view.next_tick_ms.is_none(), "{view:?}");
    match client.schedule_create(&each).await {
        Err(CallError::Api {
            status: 409, code, ..
        }) if code == "schedule_deleted" => {}
        r => panic!("a deleted name was reused: {r:?}"),
    }
    // Links of ticks after the delete read the tombstone: wait past a few.
    tokio::time::sleep(Duration::from_millis(4 * EVERY_MS)).await;
    let to = unix_ms_now() + EVERY_MS;

    // Every tick from the first to the delete fired, once; none after.
    let ticks = fired(&client, "each-tick", from, to).await;
    let last = *ticks.last().expect("some tick fired");
    let every: Vec<u64> = (from..=last).step_by(EVERY_MS as usize).collect();
    assert_eq!(ticks, every, "a tick was missed");
    assert!(
        last >= from + RUN_TICKS * EVERY_MS,
        "the schedule stopped early: last tick {last}"
    );
    assert!(
        last < deleted_at + EVERY_MS,
        "a tick after the delete fired: {last} (deleted at {deleted_at})"
    );
    for t in &ticks {
        let id = firing(&client, "each-tick", *t).await.unwrap();
        let v = final_events(&client, &id).await;
        assert_eq!(v.task.state, "succeeded", "{v:?}");
        assert_eq!(v.task.result.as_deref(), Some("tick"));
    }
    // One task per tick: the cluster holds nothing of the schedule but its
    // own chain (a second firing of a tick would need another id).
    let listed = real::listed(&client).await;
    let expected: BTreeSet<String> = [&each, &skip, &buffer, &allow]
        .iter()
        .flat_map(|b| chain_ids(&b.name, from - 10 * EVERY_MS, to))
        .collect();
    let stray: Vec<&String> = listed.iter().filter(|id| !expected.contains(*id)).collect();
    assert!(stray.is_empty(), "tasks outside the chains: {stray:?}");

    // skip and buffer_one: a firing starts only once the previous one is
    // final; allow: every tick fires although each runs 500 ms.
    for b in [&skip, &buffer] {
        let ticks = fired(&client, &b.name, from - 10 * EVERY_MS, to).await;
        assert!(ticks.len() >= 2, "{}: fired {ticks:?}", b.name);
        assert!(
            ticks.len() < every.len(),
            "{}: every tick fired although each overlaps the next: {ticks:?}",
            b.name
        );
        let mut previous: Option<TaskEventsView> = None;
        for t in ticks {
            let id = firing(&client, &b.name, t).await.unwrap();
            let v = final_events(&client, &id).await;
            if let Some(p) = &previous {
                assert!(
                    at_ms(&v, "assigned") >= at_ms(p, "succeeded"),
                    "{}: tick {t} started before the previous firing ended: {p:?} then {v:?}",
                    b.name
                );
            }
            previous = Some(v);
        }
    }
    let allowed = fired(&client, "allow", from - 10 * EVERY_MS, to).await;
    let first_allowed = allowed[0];
    let last_allowed = *allowed.last().unwrap();
    let all: Vec<u64> = (first_allowed..=last_allowed)
        .step_by(EVERY_MS as usize)
        .collect();
    assert_eq!(allowed, all, "allow missed a tick");
    assert!(allowed.len() >= 5, "{allowed:?}");
}

async fn three<N: cohort_core::Node + Send + 'static>(
    dir: &std::path::Path,
    mode: &str,
    config: N::Config,
) -> Vec<RunningNode> {
    real::cluster_with::<N>(dir, 3, mode, config, |_, c| {
        c.peers.capacity_tasks = 8;
        c.shutdown_grace_ms = 500;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_schedules_fire_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three::<LeaderNode>(dir.path(), "leader", ValidLeaderConfig::default()).await;
    schedules_fire_once_per_tick(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_mode_schedules_fire_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let nodes =
        three::<LeaderlessNode>(dir.path(), "leaderless", LeaderlessConfig::default()).await;
    schedules_fire_once_per_tick(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_schedules_fire_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three::<StaticNode>(dir.path(), "static", StaticConfig::default()).await;
    schedules_fire_once_per_tick(&nodes).await;
}

/// The leader as `node` sees it, once it sees one.
async fn leader_of(node: &RunningNode) -> u64 {
    let client = Client::new(&node.http_addr().to_string());
    for _ in 0..200 {
        if let Ok(v) = client.cluster().await {
            if let Some(l) = v["leader"].as_u64() {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader within 10 s");
}

/// The scenario of a cron schedule across a leader failover: the leader
/// of a 3-node leader-mode cluster is killed while a 200 ms schedule runs;
/// every tick from the first to the delete fires exactly once (those due
/// during the election fire late, within the catch-up window), and nothing
/// fires twice although links were running when their leader died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_across_a_leader_failover_fires_every_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three::<LeaderNode>(dir.path(), "leader", ValidLeaderConfig::default()).await;
    let leader = leader_of(&nodes[0]).await;
    let survivor = nodes
        .iter()
        .find(|n| n.id().0 != leader)
        .map(|n| Client::new(&n.http_addr().to_string()))
        .unwrap();
    let each = body("failover", "allow", echo("tick"));
    create(&survivor, &each).await;
    let from = started(&survivor, "failover").await.first_tick_ms.unwrap();
    // Let a few ticks fire, then kill the leader.
    wait_fired(&survivor, "failover", from, 5).await;
    let at = nodes.iter().position(|n| n.id().0 == leader).unwrap();
    let killed_at = unix_ms_now();
    nodes.remove(at).kill().await;
    // A new leader, and ticks after it.
    let mut new_leader = leader;
    for _ in 0..200 {
        new_leader = leader_of(&nodes[0]).await;
        if new_leader != leader {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(new_leader, leader, "no new leader after the kill");
    let elected_at = unix_ms_now();
    // Ticks due after the election fire.
    let after = elected_at - elected_at % EVERY_MS + 3 * EVERY_MS;
    wait_fired(&survivor, "failover", after, 1).await;
    let mut deleted = false;
    for _ in 0..200 {
        match survivor.schedule_delete("failover").await {
            Ok(()) => {
                deleted = true;
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("delete: {e}"),
        }
    }
    assert!(deleted, "the delete was not acknowledged");
    let deleted_at = unix_ms_now();
    tokio::time::sleep(Duration::from_millis(4 * EVERY_MS)).await;
    let ticks = fired(&survivor, "failover", from, unix_ms_now() + EVERY_MS).await;
    let last = *ticks.last().unwrap();
    let every: Vec<u64> = (from..=last).step_by(EVERY_MS as usize).collect();
    assert_eq!(ticks, every, "a tick was missed across the failover");
    assert!(
        last > elected_at,
        "the chain stopped after the kill at {killed_at}: last tick {last}"
    );
    assert!(last < deleted_at + EVERY_MS, "fired after the delete");
    for t in &ticks {
        let id = firing(&survivor, "failover", *t).await.unwrap();
        let v = final_events(&survivor, &id).await;
        assert_eq!(v.task.state, "succeeded", "{v:?}");
    }
    let listed = real::listed(&survivor).await;
    let expected = chain_ids("failover", from - 10 * EVERY_MS, unix_ms_now() + EVERY_MS);
    let stray: Vec<&String> = listed.iter().filter(|id| !expected.contains(*id)).collect();
    assert!(stray.is_empty(), "tasks outside the chain: {stray:?}");
    for n in nodes {
        n.kill().await;
    }
}
