//! The event loop: one per node, owning the core.
//!
//! Each turn takes one input (a peer message, a client request, a finished
//! task, or due timers), then up to `inputs_per_batch_max - 1` more that are
//! already waiting, handing each to the core and collecting the actions of
//! all of them in order. Then it carries the batch out:
//!
//! Before carrying the batch out it calls [`Node::flush`], so the node can
//! merge what the batch's inputs would send to each peer (leader mode: one
//! AppendEntries per follower carrying every entry the batch proposed).
//!
//! 1. every [`Action::Persist`] of the batch, in order, as one record of
//!    the write-ahead log, synced with one `fdatasync` (group commit;
//!    [`crate::storage`]);
//! 2. then, in order: `Send` to the transport, `Execute` to the executor,
//!    `Reply` to the waiting request, `SetTimer` into the timer map, `Note`
//!    to the log, metrics and observer.
//!
//! Holding every later action until the writes of the whole batch are
//! durable keeps the contract (a persist is durable before any later send,
//! reply or execute) while sharing one fsync among many inputs; a send or
//! reply can only be delayed by it, which the contract allows.

use crate::config::RuntimeConfig;
use crate::handlers::{HandlerInput, Heartbeat, Registry};
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::transport::Outbound;
use crate::RuntimeError;
use cohort_core::{
    Action, ClientError, ClientRequest, ClientResponse, DrainRefusal, DrainStatus, Epoch, Node,
    NodeId, Note, RequestId, RingRefusal, RingRequest, RingView, StoreOp, TaskId, TaskOutcome,
    Time, TimerToken,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

/// A client's answer channel.
pub type ReplyTx = oneshot::Sender<Result<ClientResponse, ClientError>>;

/// A client request in the core: where to answer, since when, and what it was.
pub(crate) struct Pending {
    tx: ReplyTx,
    since: std::time::Instant,
    kind: &'static str,
}

/// Called with every [`Note`] a node states (for demos and tests).
pub type NoteObserver = Arc<dyn Fn(NodeId, &Note) + Send + Sync>;

/// Inputs other than peer messages.
pub enum Control {
    /// A client request and where to send its answer.
    Client {
        /// The request.
        req: ClientRequest,
        /// Its answer.
        reply: ReplyTx,
    },
    /// A handler returned.
    Finished {
        /// The task.
        id: TaskId,
        /// The assignment it ran under.
        epoch: Epoch,
        /// What it returned.
        outcome: TaskOutcome,
    },
    /// A handler beats (see [`Node::handle_heartbeat`]).
    Heartbeat {
        /// The task.
        id: TaskId,
        /// The execution's epoch.
        epoch: Epoch,
        /// Progress to record, when due.
        progress: Option<String>,
        /// What to tell the handler.
        reply: oneshot::Sender<cohort_core::HeartbeatReply>,
    },
    /// List the tasks the node holds (see [`Node::visit_tasks`]).
    List {
        /// Start strictly after this id.
        after: Option<TaskId>,
        /// Only tasks in this state (by [`cohort_core::TaskState::name`]).
        state: Option<&'static str>,
        /// Most tasks in the page.
        limit: usize,
        /// Where to send the page.
        reply: oneshot::Sender<TaskPage>,
    },
    /// List the schedule definitions the node holds (tasks of the
    /// reserved kind whose payload is a definition).
    Schedules {
        /// Start strictly after this id.
        after: Option<TaskId>,
        /// Most definitions in the page.
        limit: usize,
        /// Where to send the page.
        reply: oneshot::Sender<SchedulePage>,
    },
    /// Count the tasks the node holds by state, and read its protocol
    /// counters (for `/metrics`).
    Inspect {
        /// Where to send them.
        reply: oneshot::Sender<Inspection>,
    },
    /// Read the ring this node knows (see [`Node::ring_view`]).
    Ring {
        /// Where to send it (`None`: the mode has no ring).
        reply: oneshot::Sender<Option<RingView>>,
    },
    /// Ask the node to change the ring (see [`Node::change_ring`]).
    ChangeRing {
        /// The change.
        change: RingRequest,
        /// The ring right after the call, or why it was refused.
        reply: oneshot::Sender<Result<RingView, RingRefusal>>,
    },
    /// Read the node's own view of its role.
    Status {
        /// Where to send it.
        reply: tokio::sync::oneshot::Sender<cohort_core::NodeStatus>,
    },
    /// The workers this node places work on (see [`Node::workers`]).
    Workers {
        /// Where to send them.
        reply: tokio::sync::oneshot::Sender<Vec<cohort_core::WorkerInfo>>,
    },
    /// Drain the node (see [`Node::begin_drain`]): `deadline` from now.
    Drain {
        /// How long running tasks may go on before they are handed back.
        deadline: Duration,
        /// The drain's status right after the call, or why it was refused.
        reply: oneshot::Sender<Result<DrainReport, DrainRefusal>>,
    },
    /// Read where the node's drain stands (see [`Node::drain_status`]).
    DrainStatus {
        /// Where to send it.
        reply: oneshot::Sender<DrainReport>,
    },
}

/// A node's drain status with the node's clock, so a deadline can be told
/// relative to now.
#[derive(Clone, Debug)]
pub struct DrainReport {
    /// `None` when the node is not draining.
    pub status: Option<DrainStatus>,
    /// The node's clock when it was read.
    pub now: Time,
}

impl DrainReport {
    /// How long until the hand-back (zero once it has begun); `None` when
    /// not draining.
    pub fn deadline_in(&self) -> Option<Duration> {
        self.status
            .as_ref()
            .map(|s| s.deadline.saturating_since(self.now))
    }
}

/// Most tasks one listing request scans in the core, matching or not.
pub const LIST_SCAN_MAX: usize = 100_000;

/// A page of a task listing.
#[derive(Debug, Default)]
pub struct TaskPage {
    /// The tasks, ascending by id.
    pub tasks: Vec<(TaskId, cohort_core::TaskState)>,
    /// Where the next page starts (`after`), if there may be more.
    pub next: Option<TaskId>,
}

/// A page of a schedule listing.
#[derive(Debug, Default)]
pub struct SchedulePage {
    /// The definitions, ascending by their task's id.
    pub schedules: Vec<cohort_core::schedule::Schedule>,
    /// Where the next page starts (`after`), if there may be more.
    pub next: Option<TaskId>,
}

/// What `/metrics` reads from the core.
#[derive(Debug, Default)]
pub struct Inspection {
    /// Tasks held, by state name.
    pub tasks_by_state: BTreeMap<&'static str, u64>,
    /// [`Node::counters`].
    pub counters: Vec<(&'static str, u64)>,
}

pub(crate) struct EventLoop<N: Node> {
    pub node: N,
    pub config: Arc<RuntimeConfig>,
    pub storage: Arc<Storage>,
    pub boot: tokio::time::Instant,
    /// The node's [`Time`] at `boot`: microseconds since the Unix epoch.
    pub epoch_us: u64,
    pub timers: BTreeMap<(Time, u64), TimerToken>,
    pub timer_seq: u64,
    pub pending: BTreeMap<RequestId, Pending>,
    pub next_request: u64,
    pub outbound: Arc<Outbound>,
    pub control_tx: mpsc::Sender<Control>,
    pub executor: Arc<Semaphore>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub decided: Arc<Notify>,
    pub observer: Option<NoteObserver>,
    pub stop: watch::Receiver<bool>,
    /// Turns true when a graceful shutdown begins: the core hands over,
    /// then the loop ends (see [`EventLoop::run`]).
    pub handover: watch::Receiver<bool>,
    pub batch: Vec<Action<N::Message>>,
    pub loopback: mpsc::Sender<(NodeId, N::Message)>,
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// Answers to ring changes asked this turn, sent after its batch (at
    /// most `inputs_per_batch_max`: drained every turn).
    pub ring_replies: Vec<RingReply>,
    /// When a drain's deadline passes and the handlers still running are
    /// stopped (their assignments are handed back by the core).
    pub handback_at: Option<tokio::time::Instant>,
    /// Turns true at `handback_at`: every running handler is stopped.
    pub handback: watch::Sender<bool>,
}

/// Aborts a spawned handler when the future awaiting it is dropped (the
/// node stops, or hands the assignment back).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Returns once `rx` is true; never if its sender is gone (the guard
/// `wait_for` returns is not `Send`).
async fn turned_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// An answer to [`Control::ChangeRing`] waiting for its turn's batch.
pub(crate) type RingReply = (
    oneshot::Sender<Result<RingView, RingRefusal>>,
    Result<RingView, RingRefusal>,
);

impl<N: Node + Send + 'static> EventLoop<N> {
    fn now(&self) -> Time {
        let since_boot_us = u64::try_from(self.boot.elapsed().as_micros()).unwrap_or(u64::MAX);
        Time(self.epoch_us.saturating_add(since_boot_us))
    }

    /// The monotonic instant of the node's time `at`.
    fn instant_of(&self, at: Time) -> tokio::time::Instant {
        self.boot + Duration::from_micros(at.0.saturating_sub(self.epoch_us))
    }

    fn take_actions(&mut self) {
        self.batch.extend(self.node.actions());
    }

    fn input_control(&mut self, c: Control) {
        let now = self.now();
        match c {
            Control::Client { req, reply } => {
                self.metrics.inc("cohort_inputs_total", "kind=\"client\"");
                if self.pending.len() >= self.config.client.requests_in_flight_max {
                    self.pending.retain(|_, p| !p.tx.is_closed());
                }
                if self.pending.len() >= self.config.client.requests_in_flight_max {
                    let _ = reply.send(Err(ClientError::Overloaded {
                        what: "requests_in_flight_max".into(),
                        limit: self.config.client.requests_in_flight_max,
                    }));
                    return;
                }
                self.next_request += 1;
                let rid = RequestId(self.next_request);
                let kind = match &req {
                    ClientRequest::Submit { .. } | ClientRequest::SubmitBatch { .. } => "submit",
                    ClientRequest::Get { .. } | ClientRequest::Events { .. } => "get",
                    ClientRequest::Cancel { .. } => "cancel",
                };
                self.pending.insert(
                    rid,
                    Pending {
                        tx: reply,
                        since: std::time::Instant::now(),
                        kind,
                    },
                );
                self.node.handle_client(now, rid, req);
            }
            Control::Finished { id, epoch, outcome } => {
                self.metrics
                    .inc("cohort_inputs_total", "kind=\"task_finished\"");
                self.node.handle_task_finished(now, id, epoch, outcome);
            }
            Control::Heartbeat {
                id,
                epoch,
                progress,
                reply,
            } => {
                let label = if progress.is_some() {
                    "kind=\"heartbeat_progress\""
                } else {
                    "kind=\"heartbeat\""
                };
                self.metrics.inc("cohort_inputs_total", label);
                let said = self.node.handle_heartbeat(now, id, epoch, progress);
                let _ = reply.send(said);
            }
            Control::Status { reply } => {
                let _ = reply.send(self.node.status());
            }
            Control::Workers { reply } => {
                let _ = reply.send(self.node.workers());
            }
            Control::Drain { deadline, reply } => {
                self.metrics.inc("cohort_inputs_total", "kind=\"drain\"");
                let at = now + deadline;
                let r = self.node.begin_drain(now, at).map(|()| DrainReport {
                    status: self.node.drain_status(),
                    now,
                });
                if r.is_ok() {
                    // The handlers still running at the deadline are
                    // stopped then (see `execute`); a second drain may
                    // only bring it earlier, as in the core.
                    let at = self.instant_of(at);
                    self.handback_at = Some(self.handback_at.map_or(at, |h| h.min(at)));
                }
                tracing::info!(node = %self.node.id(), deadline_ms = deadline.as_millis() as u64, outcome = ?r.as_ref().map(|_| ()), "drain asked");
                let _ = reply.send(r);
            }
            Control::DrainStatus { reply } => {
                let _ = reply.send(DrainReport {
                    status: self.node.drain_status(),
                    now,
                });
            }
            Control::Ring { reply } => {
                let _ = reply.send(self.node.ring_view());
            }
            Control::ChangeRing { change, reply } => {
                self.metrics
                    .inc("cohort_inputs_total", "kind=\"ring_change\"");
                let r = self.node.change_ring(now, change).and_then(|()| {
                    // A mode that changes rings shows one.
                    self.node.ring_view().ok_or(RingRefusal::NotSupported)
                });
                tracing::info!(node = %self.node.id(), ?change, outcome = ?r, "ring change asked");
                // Answered once this turn's writes are durable, as a reply
                // from the core would be.
                self.ring_replies.push((reply, r));
            }
            Control::List {
                after,
                state,
                limit,
                reply,
            } => {
                let mut page = TaskPage::default();
                let mut scanned = 0usize;
                let mut last_scanned = None;
                self.node.visit_tasks(after, &mut |id, _, s| {
                    if scanned == LIST_SCAN_MAX {
                        // A sparse filter must not hold the event loop for
                        // a whole scan: the client continues from here.
                        page.next = last_scanned;
                        return false;
                    }
                    scanned += 1;
                    last_scanned = Some(id);
                    if state.is_some_and(|want| want != s.name()) {
                        return true;
                    }
                    if page.tasks.len() == limit {
                        // One more matching task exists: the page is full.
                        page.next = page.tasks.last().map(|(id, _)| *id);
                        return false;
                    }
                    page.tasks.push((id, s.clone()));
                    true
                });
                let _ = reply.send(page);
            }
            Control::Schedules {
                after,
                limit,
                reply,
            } => {
                use cohort_core::schedule::{IdTag, SchedulePayload, SCHEDULE_KIND};
                let mut page = SchedulePage::default();
                let mut scanned = 0usize;
                let mut last_scanned = None;
                let payload_max = self.config.peers.limits.payload_bytes_max;
                self.node.visit_tasks(after, &mut |id, task, _| {
                    if scanned == LIST_SCAN_MAX {
                        page.next = last_scanned;
                        return false;
                    }
                    scanned += 1;
                    last_scanned = Some(id);
                    if task.kind != SCHEDULE_KIND {
                        return true;
                    }
                    let Ok(SchedulePayload::Spec(schedule)) =
                        cohort_core::decode::<SchedulePayload>(&task.payload, payload_max)
                    else {
                        return true;
                    };
                    if schedule.name.task_id(IdTag::Spec) != id {
                        return true; // not where its name puts it: not a definition
                    }
                    if page.schedules.len() == limit {
                        page.next = page.schedules.last().map(|s| s.name.task_id(IdTag::Spec));
                        return false;
                    }
                    page.schedules.push(schedule);
                    true
                });
                let _ = reply.send(page);
            }
            Control::Inspect { reply } => {
                let mut tasks_by_state = BTreeMap::new();
                self.node.visit_tasks(None, &mut |_, _, s| {
                    *tasks_by_state.entry(s.name()).or_insert(0) += 1;
                    true
                });
                let _ = reply.send(Inspection {
                    tasks_by_state,
                    counters: self.node.counters(),
                });
            }
        }
        self.take_actions();
    }

    /// The batch is complete: the node makes the sends it held back.
    fn flush(&mut self) {
        let now = self.now();
        self.node.flush(now);
        self.take_actions();
    }

    fn input_message(&mut self, from: NodeId, msg: N::Message) {
        self.metrics.inc("cohort_inputs_total", "kind=\"message\"");
        let now = self.now();
        self.node.handle_message(now, from, msg);
        self.take_actions();
    }

    fn fire_due_timers(&mut self) {
        loop {
            let now = self.now();
            let Some((&(at, seq), _)) = self.timers.first_key_value() else {
                break;
            };
            if at > now {
                break;
            }
            let token = self.timers.remove(&(at, seq)).expect("first key present");
            self.metrics.inc("cohort_inputs_total", "kind=\"timer\"");
            self.node.handle_timer(now, token);
            self.take_actions();
        }
        self.metrics
            .set("cohort_timers_pending", "", self.timers.len() as i64);
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let timer = self
            .timers
            .first_key_value()
            .map(|(&(at, _), _)| self.instant_of(at));
        let handback = self.handback_at.filter(|_| !*self.handback.borrow());
        match (timer, handback) {
            (Some(t), Some(h)) => Some(t.min(h)),
            (t, h) => t.or(h),
        }
    }

    /// At a drain's deadline (after the core's timers for it fired, so the
    /// core has handed the assignments back): stops the handlers still
    /// running, whose results no longer count.
    fn hand_back_handlers(&mut self) {
        let due = self
            .handback_at
            .is_some_and(|at| tokio::time::Instant::now() >= at);
        if due && !*self.handback.borrow() {
            tracing::info!(node = %self.node.id(), "drain deadline: stopping the handlers still running");
            let _ = self.handback.send(true);
        }
    }

    /// Runs until `stop` turns true or storage fails.
    pub async fn run(
        mut self,
        mut control_rx: mpsc::Receiver<Control>,
        mut peer_rx: mpsc::Receiver<(NodeId, N::Message)>,
        mut lost_rx: mpsc::Receiver<NodeId>,
    ) -> Result<(), RuntimeError> {
        // Boot left its first actions in the node.
        self.take_actions();
        self.flush();
        self.carry_out().await?;
        let mut stop = self.stop.clone();
        let mut handover = self.handover.clone();
        let mut draining_until: Option<tokio::time::Instant> = None;
        loop {
            if let Some(until) = draining_until {
                // Checked after every turn's actions were carried out, so
                // whatever the hand-over needed sent has been sent.
                if self.node.shutdown_ready() {
                    self.metrics
                        .inc("cohort_shutdowns_total", "outcome=\"ready\"");
                    break;
                }
                if tokio::time::Instant::now() >= until {
                    tracing::warn!(
                        node = %self.node.id(),
                        grace_ms = self.config.shutdown_grace_ms,
                        "shutdown grace expired before the hand-over completed"
                    );
                    self.metrics
                        .inc("cohort_shutdowns_total", "outcome=\"grace_expired\"");
                    break;
                }
            }
            let deadline = match (self.next_deadline(), draining_until) {
                (Some(t), Some(d)) => Some(t.min(d)),
                (t, d) => t.or(d),
            };
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Ok(()) = handover.changed(), if draining_until.is_none() => {
                    draining_until = Some(tokio::time::Instant::now() + self.config.shutdown_grace());
                    let now = self.now();
                    tracing::info!(node = %self.node.id(), "graceful shutdown: handing over");
                    self.node.begin_shutdown(now);
                    self.take_actions();
                }
                Some((from, m)) = peer_rx.recv() => self.input_message(from, m),
                Some(c) = control_rx.recv() => self.input_control(c),
                Some(peer) = lost_rx.recv() => {
                    self.metrics.inc("cohort_inputs_total", "kind=\"peer_lost\"");
                    let now = self.now();
                    self.node.handle_peer_lost(now, peer);
                    self.take_actions();
                }
                _ = sleep_until_opt(deadline) => {}
            }
            // Peers' messages before clients' requests, here and in the
            // select above: they finish work already accepted (commits,
            // results, claims) and keep leadership and membership alive,
            // while new requests wait, which is the backpressure a client
            // flood should meet. Control first let a flood of submits
            // starve completions (3 nodes, 256 clients, single submits:
            // completions 10,830-11,537 -> 12,563-14,085/s).
            let mut taken = 1;
            while taken < self.config.inputs_per_batch_max {
                if let Ok((from, m)) = peer_rx.try_recv() {
                    self.input_message(from, m);
                } else if let Ok(c) = control_rx.try_recv() {
                    self.input_control(c);
                } else {
                    break;
                }
                taken += 1;
            }
            self.fire_due_timers();
            self.hand_back_handlers();
            self.flush();
            self.carry_out().await?;
            for (tx, r) in self.ring_replies.drain(..) {
                let _ = tx.send(r);
            }
            self.metrics.set(
                "cohort_client_requests_pending",
                "",
                self.pending.len() as i64,
            );
            self.metrics.set(
                "cohort_queue_depth",
                "queue=\"control\"",
                control_rx.len() as i64,
            );
            self.metrics.set(
                "cohort_queue_depth",
                "queue=\"peer_inbound\"",
                peer_rx.len() as i64,
            );
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.tx.send(Err(ClientError::Unavailable {
                reason: "node shutting down".into(),
            }));
        }
        Ok(())
    }

    async fn carry_out(&mut self) -> Result<(), RuntimeError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut actions = std::mem::take(&mut self.batch);
        if let Some(a) = &self.audit {
            a.batch_started();
        }
        // The writes are moved out, not copied: they hold every log entry.
        let mut ops: Vec<StoreOp> = Vec::new();
        let mut persists = 0u64;
        for a in &mut actions {
            if let Action::Persist(batch) = a {
                ops.append(batch);
                persists += 1;
            }
        }
        // Sends and replies the node marks as needing none of the batch's
        // writes go out before the fsync, so the peers' work overlaps it
        // (leader mode: the followers store and acknowledge an append while
        // the leader stores it) and a client told of an earlier commit does
        // not wait for it. Peers' answers wait in the channels until the
        // writes are durable: no input is taken before this returns.
        let mut sent_by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
        if persists > 0 {
            let me = self.node.id();
            let node = &self.node;
            let (early, later): (Vec<_>, Vec<_>) = actions.into_iter().partition(|a| match a {
                Action::Send { to, msg } => *to != me && node.may_precede_persist(msg),
                Action::Reply { request, .. } => node.reply_may_precede_persist(*request),
                _ => false,
            });
            actions = later;
            let replies = early
                .iter()
                .filter(|a| matches!(a, Action::Reply { .. }))
                .count() as u64;
            self.metrics.add(
                "cohort_sends_before_fsync_total",
                "",
                early.len() as u64 - replies,
            );
            self.metrics
                .add("cohort_replies_before_fsync_total", "", replies);
            for a in early {
                match a {
                    Action::Send { to, msg } => {
                        *sent_by_type
                            .entry(crate::kind::message_kind(&msg))
                            .or_default() += 1;
                        self.outbound
                            .send(to, crate::transport::encode_message(&msg));
                    }
                    Action::Reply { request, reply } => self.answer(request, reply),
                    _ => unreachable!("only sends and replies are taken early"),
                }
            }
        }
        if persists > 0 {
            let storage = self.storage.clone();
            let n = ops.len() as u64;
            let started = std::time::Instant::now();
            tokio::task::spawn_blocking(move || storage.persist(&ops))
                .await
                .map_err(|e| RuntimeError::Storage {
                    path: self.storage.path().to_path_buf(),
                    reason: format!("storage thread failed: {e}"),
                })??;
            self.metrics
                .observe("cohort_fsync_seconds", started.elapsed());
            self.metrics.inc("cohort_persist_batches_total", "");
            self.metrics.add("cohort_persist_ops_total", "", n);
            self.metrics
                .add("cohort_persist_actions_total", "", persists);
        }
        // Counted per batch: a label per message would cost an allocation each.
        for a in actions {
            match a {
                Action::Persist(_) => {}
                Action::Send { to, msg } => {
                    *sent_by_type
                        .entry(crate::kind::message_kind(&msg))
                        .or_default() += 1;
                    if to == self.node.id() {
                        let _ = self.loopback.try_send((to, msg));
                    } else {
                        self.outbound
                            .send(to, crate::transport::encode_message(&msg));
                    }
                }
                Action::Execute { id, epoch, task } => self.execute(id, epoch, task),
                Action::Reply { request, reply } => self.answer(request, reply),
                Action::SetTimer { token, at } => {
                    self.timer_seq += 1;
                    self.timers.insert((at, self.timer_seq), token);
                }
                Action::Note(note) => self.note(note),
            }
        }
        for (kind, n) in sent_by_type {
            self.metrics.add(
                "cohort_messages_sent_by_type_total",
                &format!("type=\"{kind}\""),
                n,
            );
        }
        Ok(())
    }

    /// Hands `reply` to the client waiting on `request`, if it still waits.
    fn answer(&mut self, request: RequestId, reply: Result<ClientResponse, ClientError>) {
        let label = match &reply {
            Ok(_) => "outcome=\"ok\"",
            Err(_) => "outcome=\"error\"",
        };
        self.metrics.inc("cohort_client_replies_total", label);
        if let Some(p) = self.pending.remove(&request) {
            let name = match p.kind {
                "submit" => "cohort_client_submit_seconds",
                "get" => "cohort_client_get_seconds",
                _ => "cohort_client_cancel_seconds",
            };
            self.metrics.observe(name, p.since.elapsed());
            let _ = p.tx.send(reply);
        }
    }

    fn note(&self, note: Note) {
        let me = self.node.id();
        let label = match &note {
            Note::Assigned {
                task, epoch, node, ..
            } => {
                tracing::debug!(node = %me, ?task, %epoch, runner = %node, "assigned");
                "note=\"assigned\"".to_string()
            }
            Note::Superseded {
                task,
                epoch,
                reason,
            } => {
                tracing::info!(node = %me, ?task, %epoch, ?reason, "superseded");
                format!("note=\"superseded\",reason=\"{reason:?}\"")
            }
            Note::Decided { task, state } => {
                tracing::debug!(node = %me, ?task, state = state.name(), "decided");
                self.decided.notify_waiters();
                format!("note=\"decided\",state=\"{}\"", state.name())
            }
            Note::Heartbeat { task, epoch, node } => {
                tracing::trace!(node = %me, ?task, %epoch, runner = %node, "heartbeat recorded");
                "note=\"heartbeat\"".to_string()
            }
            Note::Purged { task } => {
                tracing::trace!(node = %me, ?task, "purged");
                "note=\"purged\"".to_string()
            }
        };
        self.metrics.inc("cohort_notes_total", &label);
        if let Some(a) = &self.audit {
            a.noted(&note);
        }
        if let Some(obs) = &self.observer {
            obs(me, &note);
        }
    }

    fn execute(&self, id: TaskId, epoch: Epoch, task: cohort_core::Task) {
        let sem = self.executor.clone();
        let ctl = self.control_tx.clone();
        let metrics = self.metrics.clone();
        let handler = self.registry.get(&task.kind);
        let node = self.node.id();
        let mut stop = self.stop.clone();
        let mut handback = self.handback.subscribe();
        let audit = self.audit.clone();
        let beat_timeout = (task.heartbeat_timeout_ms > 0)
            .then(|| Duration::from_millis(task.heartbeat_timeout_ms));
        let record_interval = Duration::from_millis(self.config.heartbeat_record_interval_ms);
        let missed_error = task.heartbeat_timeout_error();
        if let Some(a) = &audit {
            a.executed(id, epoch);
        }
        tokio::spawn(async move {
            let run = async {
                let Ok(_permit) = sem.acquire_owned().await else {
                    return None;
                };
                let started = std::time::Instant::now();
                let timeout = task.timeout();
                let outcome = match handler {
                    None => TaskOutcome::Failure(format!(
                        "unknown_kind: no handler for kind {:?} on {node}",
                        task.kind
                    )),
                    Some(h) => {
                        // Counted from the start, not from the wait for a slot.
                        let heartbeat =
                            Heartbeat::new(id, epoch, ctl.clone(), beat_timeout, record_interval);
                        let watchdog = heartbeat.clone();
                        let fut = h.run(HandlerInput {
                            id,
                            epoch,
                            node,
                            payload: task.payload,
                            heartbeat,
                        });
                        let spawned =
                            tokio::spawn(async move { tokio::time::timeout(timeout, fut).await });
                        let _abort = AbortOnDrop(spawned.abort_handle());
                        // A handler that misses its heartbeat timeout is
                        // stopped (dropping `spawned` aborts it) and the
                        // attempt fails, to be retried like any other.
                        let joined = tokio::select! {
                            j = spawned => j,
                            _ = watchdog.missed() => Ok(Ok(Err(missed_error))),
                        };
                        match joined {
                            Ok(Ok(Ok(bytes))) => TaskOutcome::Success(bytes),
                            Ok(Ok(Err(e))) => TaskOutcome::Failure(e),
                            Ok(Err(_)) => TaskOutcome::Failure(format!(
                                "timeout: timed out after {}ms",
                                timeout.as_millis()
                            )),
                            Err(e) if e.is_panic() => {
                                TaskOutcome::Failure("panic: handler panicked".into())
                            }
                            Err(e) => {
                                TaskOutcome::Failure(format!("cancelled: handler cancelled: {e}"))
                            }
                        }
                    }
                };
                metrics.observe("cohort_task_run_seconds", started.elapsed());
                let label = match &outcome {
                    TaskOutcome::Success(_) => "outcome=\"success\"",
                    TaskOutcome::Failure(_) => "outcome=\"failure\"",
                };
                metrics.inc("cohort_tasks_executed_total", label);
                Some(outcome)
            };
            // Stopping the node, or handing its assignments back at a
            // drain's deadline, drops `run` and with it the handler.
            let outcome = tokio::select! {
                o = run => o,
                _ = stop.changed() => None,
                _ = turned_true(&mut handback) => None,
            };
            if let Some(outcome) = outcome {
                if let Some(a) = &audit {
                    a.completed(id, epoch, &outcome);
                }
                let _ = ctl.send(Control::Finished { id, epoch, outcome }).await;
            }
        });
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
