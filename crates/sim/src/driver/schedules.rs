//! The simulated schedule (`Workload::schedule_every_ms`): a client
//! submits its first link; every link the nodes execute is run the way the
//! runtime's handler runs it: the sans-IO [`ScheduleRun`] sends its
//! requests to the node running it, and a `NotLeader` naming the deciding
//! node is forwarded there once (the runtime's in-node client).

use super::clients::{ClientOp, Pending, Phase, RequestKind};
use super::{Event, Reply, Sim, TAG_CLIENT};
use crate::history::HistoryEvent;
use crate::workload::SimPayload;
use cohort_core::schedule::{
    IdTag, Overlap, RunStep, Schedule, ScheduleName, SchedulePayload, ScheduleRun, Spec,
    CATCH_UP_WINDOW_MS_MAX, SCHEDULE_FIRINGS_PER_RUN_MAX_DEFAULT,
};
use cohort_core::{
    decode, encode, ClientError, Epoch, Node, RequestId, RetryPolicy, Task, TaskId, TaskOutcome,
    Time,
};

/// How long after healing the run must go on for a tick to be checked:
/// a link's backoff is at most `LINK_BACKOFF_MAX_MS` (10 s), then the
/// chain catches up at `SCHEDULE_FIRINGS_PER_RUN_MAX_DEFAULT` ticks a run.
pub(super) const SCHEDULE_CATCH_UP_SLACK_MS: u64 = 15_000;

/// One link being run by a node.
pub(super) struct LinkRunner {
    node: usize,
    inc: u64,
    task: TaskId,
    epoch: Epoch,
    /// The execution (see `Sim::live`).
    exec: u64,
    run: ScheduleRun,
    current: Option<RequestId>,
    forwarded: bool,
}

impl<N: Node> Sim<'_, N> {
    /// The run's schedule.
    pub(super) fn sim_schedule(&self) -> Schedule {
        let w = &self.cfg.workload;
        Schedule {
            name: ScheduleName::new("sim-schedule").expect("a valid name"),
            spec: Spec::Every {
                every_ms: w.schedule_every_ms,
                start_ms: 0,
            },
            overlap: Overlap::Allow,
            catch_up_window_ms: CATCH_UP_WINDOW_MS_MAX,
            task: Task {
                kind: "sleep".into(),
                payload: SimPayload {
                    duration_ms: w.task_ms_min,
                    seq: u64::MAX,
                }
                .encode(),
                timeout_ms: w.task_ms_max * 2 + 100,
                max_attempts: w.max_attempts,
                not_before: Time::ZERO,
                retry: RetryPolicy::backoff(w.retry_backoff_initial_ms, w.retry_backoff_max_ms),
                schedule_to_start_ms: 0,
                priority: 0,
                heartbeat_timeout_ms: 0,
                labels: Vec::new(),
                limit: None,
                lease_grace_ms: 0,
                retry_of: None,
            },
            link_attempts: self.cfg.limits.attempts_max,
        }
    }

    /// The first tick of the run's schedule.
    pub(super) fn schedule_first_tick_ms(&self) -> u64 {
        self.cfg.workload.schedule_every_ms
    }

    /// A client submits the schedule's first link (as the definition's run
    /// would) and polls it until final, like any client.
    pub(super) fn start_schedule(&mut self) {
        let schedule = self.sim_schedule();
        let id = schedule.name.task_id(IdTag::First);
        let task = schedule.link_task(self.schedule_first_tick_ms(), None);
        let op = self.ops.len();
        self.hash_event(TAG_CLIENT, op as u64, &encode(&(id, &task)));
        self.history.push(
            self.now,
            HistoryEvent::Submitted {
                task: id,
                content: task.clone(),
            },
        );
        self.ops.push(ClientOp {
            id,
            task,
            phase: Phase::Submitting,
            current: None,
            generation: 0,
            redirects: 0,
            acked: false,
            acked_in_batch: false,
            unique: None,
            deduplicated: false,
            arrived_at: self.now,
        });
        self.ops_open += 1;
        let to = self.random_node();
        self.client_send(op, to);
    }

    /// Node `i` executes a task of the reserved kind.
    pub(super) fn start_link(&mut self, i: usize, task: TaskId, epoch: Epoch, body: &Task) {
        let inc = self.slots[i].inc;
        // Counted by the caller just before.
        let exec = self.executions;
        self.live.insert(exec);
        let now_ms = self.now.as_millis();
        let firings_max = SCHEDULE_FIRINGS_PER_RUN_MAX_DEFAULT;
        let run = match decode::<SchedulePayload>(&body.payload, self.cfg.limits.payload_bytes_max)
        {
            Ok(SchedulePayload::Link {
                schedule,
                tick_ms,
                prev_fire_ms,
                waits,
            }) => ScheduleRun::link(schedule, tick_ms, prev_fire_ms, waits, now_ms, firings_max),
            Ok(SchedulePayload::Spec(schedule)) => ScheduleRun::start(schedule, now_ms),
            Ok(SchedulePayload::Deleted) | Err(_) => {
                let outcome = TaskOutcome::Success(Vec::new());
                let ev = Event::TaskDone {
                    node: i,
                    inc,
                    task,
                    epoch,
                    outcome,
                    exec,
                };
                self.schedule_in(0, ev);
                return;
            }
        };
        let r = self.next_runner;
        self.next_runner += 1;
        self.links.insert(
            r,
            LinkRunner {
                node: i,
                inc,
                task,
                epoch,
                exec,
                run,
                current: None,
                forwarded: false,
            },
        );
        self.link_send(r, i);
    }

    /// Sends runner `r`'s current request to node `to`.
    fn link_send(&mut self, r: u64, to: usize) {
        let Some(runner) = self.links.get_mut(&r) else {
            return;
        };
        let Some(req) = runner.run.request() else {
            return;
        };
        let request = RequestId(self.next_request);
        self.next_request += 1;
        runner.current = Some(request);
        self.requests.insert(
            request,
            Pending {
                op: usize::MAX,
                node: to,
                sent_at: self.now,
                kind: RequestKind::Get,
                answered: false,
                batch: Vec::new(),
                runner: Some(r),
            },
        );
        self.hash_event(TAG_CLIENT, r, &encode(&(request, &req)));
        let now = self.now;
        self.line(|| {
            format!(
                "{now} link runner {r} -> n{} r{} {req:?}",
                to + 1,
                request.0
            )
        });
        if !self.lost() {
            let us = self.latency_us();
            self.schedule_in(
                us,
                Event::Request {
                    node: to,
                    request,
                    req,
                },
            );
        }
        let timeout = self.cfg.workload.client_timeout_ms * 1000;
        self.schedule_in(timeout, Event::LinkTimeout { runner: r, request });
    }

    /// Whether runner `r` is still alive (its node has not crashed since).
    fn link_alive(&mut self, r: u64) -> bool {
        let alive = self
            .links
            .get(&r)
            .is_some_and(|l| self.slots[l.node].inc == l.inc && self.slots[l.node].node.is_some());
        if !alive {
            self.links.remove(&r);
        }
        alive
    }

    /// A request of runner `r` went unanswered: sent again to its node
    /// (its requests are idempotent).
    pub(super) fn on_link_timeout(&mut self, r: u64, request: RequestId) {
        self.hash_event(TAG_CLIENT, r, &request.0.to_le_bytes());
        if !self.link_alive(r) || self.links[&r].current != Some(request) {
            return;
        }
        let node = self.links[&r].node;
        self.links.get_mut(&r).expect("alive").forwarded = false;
        self.link_send(r, node);
    }

    /// The answer to a request of runner `r`.
    pub(super) fn on_link_response(&mut self, r: u64, request: RequestId, reply: Reply) {
        if !self.link_alive(r) || self.links[&r].current != Some(request) {
            return;
        }
        let leader = match &reply {
            Err(ClientError::NotLeader { leader: Some(l) }) => self.index_of(*l),
            _ => None,
        };
        let runner = self.links.get_mut(&r).expect("alive");
        runner.current = None;
        if let Some(j) = leader.filter(|_| !runner.forwarded) {
            runner.forwarded = true;
            self.link_send(r, j);
            return;
        }
        runner.forwarded = false;
        match runner.run.handle_reply(reply) {
            RunStep::Send(_) => {
                let node = runner.node;
                self.link_send(r, node);
            }
            RunStep::Done(result) => {
                let runner = self.links.remove(&r).expect("alive");
                let outcome = match result {
                    Ok(report) => TaskOutcome::Success(format!("{report:?}").into_bytes()),
                    Err(e) => TaskOutcome::Failure(format!("schedule: {e}")),
                };
                let now = self.now;
                self.line(|| format!("{now} link runner {r} done: {outcome:?}"));
                self.schedule_in(
                    0,
                    Event::TaskDone {
                        node: runner.node,
                        inc: runner.inc,
                        task: runner.task,
                        epoch: runner.epoch,
                        outcome,
                        exec: runner.exec,
                    },
                );
            }
        }
    }
}
