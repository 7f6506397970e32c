//! A deterministic simulator for cohort nodes, and checkers for the
//! guarantees of DESIGN.md over the history it records.
//!
//! One `u64` seed decides everything: the fault plan, message latencies and
//! losses, crashes, pauses, partitions, task arrivals, task ids, handler
//! outcomes and each node's RNG. Time is virtual. The same seed replays the
//! same run bit for bit, which [`Report::trace_hash`] proves.
//!
//! A run has two phases. In the **safety phase** ([`SimConfig::safety_ms`])
//! clients submit tasks and the faults of the [`FaultPlan`] strike. Then
//! everything heals (partitions removed, crashed nodes restarted, paused
//! nodes resumed, loss and duplication off) and the **liveness phase**
//! ([`SimConfig::liveness_ms`]) must finish every task. The checkers
//! ([`checkers`]) then read the [`History`]: G1 no acknowledged task lost,
//! G2 one outcome, G3 fencing, G4 liveness, G5 reads never go back in
//! time; a mode adds its own invariants through [`Invariants`], checked
//! after every event and once more at the end. Faults can also be scripted
//! at fixed times ([`SimConfig::script`]) for scenario tests; [`scenario`]
//! helps such a test tell one task's story.
//!
//! # What the simulator does
//!
//! - **Events** wait in one queue ordered by `(time, sequence number)`, the
//!   sequence number a global counter: a total, replayable order.
//! - **Network.** Every `Send` is encoded with `cohort_core::encode` and
//!   decoded at delivery. It is lost with the plan's loss probability, maybe
//!   duplicated, delayed by `base + exponential tail (+ wide uniform jitter
//!   when reordering)`; without reordering every link is FIFO. A message
//!   is dropped if its link is cut when sent or when due, or if its
//!   receiver is down when due. Clients are not partitioned, but their
//!   requests and replies see latency and loss.
//! - **Disk.** A `Persist` takes an fsync (drawn from the plan). Every
//!   action after it — the rest of its batch *and of later batches* — waits
//!   until the fsync completes: one log writer per node, writes durable in
//!   order. A crash before completion loses the writes and everything
//!   queued behind them.
//! - **Crash** drops the node value and bumps its incarnation: its timers,
//!   handler completions and fsyncs in flight are void. It restarts after
//!   the drawn downtime with `N::boot` on its durable store and a fresh RNG
//!   drawn from the master RNG. At most a minority (at least one node) is
//!   down or paused at once by the drawn faults.
//! - **Pause** (GC pause, SIGSTOP): events for the node are held and handed
//!   over in order at resume, all with `now` = the resume time. Handlers it
//!   started keep running; their completions are held too, and so are its
//!   fsync completions (a crash during the pause loses those writes).
//! - **Execute** runs the simulated handler: the task's payload
//!   ([`workload::SimPayload`]) says how long; it fails with the workload's
//!   failure rate, or when it runs past `timeout_ms`; a success returns
//!   [`workload::result_bytes`] of `(task, epoch, node)`, so every execution
//!   returns different bytes.
//! - **Clients**, one per task, arrive as a Poisson process in the safety
//!   phase. A client sends `Submit` to a random node, follows
//!   `NotLeader{Some}` redirects, backs off and retries elsewhere on other
//!   retryable errors and on timeouts (same id, same task), and after the
//!   ack polls `Get{Linearizable}` until it reads a final state. A share of
//!   them ([`Workload::cancel_rate`]) first sends `Cancel`, racing the
//!   execution. Every answer is recorded.
//! - **End.** The run ends after the liveness phase, or earlier
//!   ([`SimConfig::stop_when_done`]) once every client is done and the
//!   liveness phase has lasted [`SimConfig::settle_ms`].
//! - **Trace**: FNV-1a 64 over every processed event (dropped ones too) and
//!   every action carried out ([`Report::trace_hash`]); with
//!   [`SimConfig::record_trace`], one readable line each as well, saying
//!   which messages were lost, cut off or dropped.
//!
//! ```
//! use cohort_sim::{run, FaultKinds, NoInvariants, SimConfig};
//! # use cohort_core::*;
//! # /// A node that refuses everything: enough to show the call.
//! # struct Refuser { id: NodeId, out: Vec<Action<()>> }
//! # impl Node for Refuser {
//! #     type Message = ();
//! #     type Config = ();
//! #     fn boot(p: &Peers, _: &(), _: &Stored, _: NodeRng, _: Time) -> Result<Self, BootError> {
//! #         Ok(Refuser { id: p.id, out: Vec::new() })
//! #     }
//! #     fn handle_message(&mut self, _: Time, _: NodeId, _: ()) {}
//! #     fn handle_timer(&mut self, _: Time, _: TimerToken) {}
//! #     fn handle_client(&mut self, _: Time, request: RequestId, _: ClientRequest) {
//! #         let reply = Err(ClientError::InvalidTask { reason: "no".into() });
//! #         self.out.push(Action::Reply { request, reply });
//! #     }
//! #     fn handle_task_finished(&mut self, _: Time, _: TaskId, _: Epoch, _: TaskOutcome) {}
//! #     fn actions(&mut self) -> std::vec::Drain<'_, Action<()>> { self.out.drain(..) }
//! #     fn id(&self) -> NodeId { self.id }
//! # }
//! let mut config = SimConfig::new(42, 3);
//! config.faults = "crash,loss".parse::<FaultKinds>().unwrap();
//! config.safety_ms = 2_000;
//! config.liveness_ms = 2_000;
//! let report = run::<Refuser>(&config, &(), &mut NoInvariants);
//! println!("{report}");
//! // A node that refuses every submit never acknowledges one: G4.
//! assert!(report.violations.iter().any(|v| v.guarantee == cohort_sim::Guarantee::G4));
//! ```
#![deny(missing_docs)]

pub mod checkers;
mod config;
mod driver;
pub mod history;
mod plan;
pub mod scenario;
pub mod trace;
pub mod workload;

pub use checkers::{Guarantee, Violation};
pub use config::{
    Fault, FaultKinds, FaultKindsError, ScriptedFault, ScriptedFaultError, SimConfig,
    SimConfigError, Workload, UNIQUE_EVERY_SIM,
};
pub use history::{History, TaskTimeline};
pub use plan::{FaultPlan, Recurring};

use cohort_core::{Node, Time};
use std::fmt;

/// A mode's own invariants, checked after every simulated event.
///
/// `nodes[i]` is node `n{i+1}`, `None` while it is down (crashed). A paused
/// node is `Some`. Return `Err(description)` when an invariant is broken.
pub trait Invariants<N> {
    /// Checks the cluster at `now`, after every event.
    fn check(&mut self, now: Time, nodes: &[Option<&N>]) -> Result<(), String>;

    /// Checks the cluster once more at the end of the liveness phase, for
    /// what must hold only after healing (e.g. "membership converged",
    /// "every node applied the same log"). Not called when the run was cut
    /// short (`events_max`) or had no liveness phase. Holds by default.
    fn check_final(&mut self, now: Time, nodes: &[Option<&N>]) -> Result<(), String> {
        let _ = (now, nodes);
        Ok(())
    }

    /// When the mode's operator first acts, in simulated ms since the
    /// start, if ever (never by default). See [`Invariants::operate`].
    fn first_operation_ms(&self) -> Option<u64> {
        None
    }

    /// What an operator does to a running cluster through a mode's own API
    /// (the node contract has no such input), e.g. asking a node to add or
    /// remove a member. `nodes[i]` is node `n{i+1}`, `None` while it is
    /// down or paused; `draw` is a fresh number from the run's RNG (the
    /// run stays a function of its seed). The simulator carries out the
    /// actions the nodes emit, as after any input. Returns when to act
    /// next (ms since the start), if ever.
    fn operate(&mut self, now: Time, draw: u64, nodes: &mut [Option<&mut N>]) -> Option<u64> {
        let _ = (now, draw, nodes);
        None
    }
}

/// No mode-specific invariant.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInvariants;

impl<N> Invariants<N> for NoInvariants {
    fn check(&mut self, _now: Time, _nodes: &[Option<&N>]) -> Result<(), String> {
        Ok(())
    }
}

impl<N, F> Invariants<N> for F
where
    F: FnMut(Time, &[Option<&N>]) -> Result<(), String>,
{
    fn check(&mut self, now: Time, nodes: &[Option<&N>]) -> Result<(), String> {
        self(now, nodes)
    }
}

/// What one run did and what it broke.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run's seed.
    pub seed: u64,
    /// The faults drawn from the seed.
    pub plan: FaultPlan,
    /// The violations found, at most [`SimConfig::violations_max`] of each
    /// guarantee, earliest first: `violations[0]` is the first symptom.
    pub violations: Vec<Violation>,
    /// How many violations were found in all.
    pub violation_count: u64,
    /// FNV-1a 64 over every processed event and action: equal for equal seeds.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated time covered.
    pub simulated_ms: u64,
    /// Tasks the clients created (a submit under a dedupe key that found
    /// the key's task alive created none).
    pub tasks_submitted: u64,
    /// Clients that submitted under a dedupe key ([`Workload::unique_every`]).
    pub unique_submits: u64,
    /// Of those, the ones answered with the key's live task.
    pub unique_deduplicated: u64,
    /// Tasks acknowledged to their client.
    pub tasks_acked: u64,
    /// Of those, tasks acknowledged by a batch submit
    /// ([`Workload::batch_rate`]).
    pub tasks_acked_in_batch: u64,
    /// Tasks with a final state reported (note or read).
    pub tasks_final: u64,
    /// Handler executions started.
    pub executions: u64,
    /// Heartbeats handlers sent (and replies `Continue` among them).
    pub heartbeats: (u64, u64),
    /// Peer messages sent.
    pub messages: u64,
    /// Encoded bytes of the peer messages sent.
    pub message_bytes: u64,
    /// Crashes, pauses and partitions injected.
    pub faults_injected: u64,
    /// One readable line per event, if [`SimConfig::record_trace`].
    pub trace: Vec<String>,
    /// The recorded history the checkers read, if
    /// [`SimConfig::keep_history`] (empty otherwise, to keep reports small
    /// when thousands of seeds run).
    pub history: History,
}

impl Report {
    /// Whether the run broke nothing.
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }

    /// How many violations of `g` were kept.
    pub fn count_of(&self, g: Guarantee) -> usize {
        self.violations.iter().filter(|v| v.guarantee == g).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "SEED={} {} violations, {} events, {} ms simulated, trace {:016x}",
            self.seed, self.violation_count, self.events, self.simulated_ms, self.trace_hash
        )?;
        writeln!(f, "  plan: {}", self.plan)?;
        writeln!(
            f,
            "  tasks: {} submitted, {} acked, {} final; {} executions; {} messages ({} bytes); {} faults",
            self.tasks_submitted,
            self.tasks_acked,
            self.tasks_final,
            self.executions,
            self.messages,
            self.message_bytes,
            self.faults_injected
        )?;
        if self.unique_submits > 0 {
            writeln!(
                f,
                "  dedupe keys: {} submits, {} deduplicated",
                self.unique_submits, self.unique_deduplicated
            )?;
        }
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        Ok(())
    }
}

/// Runs one simulation of `N` nodes and checks its history.
///
/// Pure in `config`: the same config gives the same [`Report`].
///
/// # Panics
///
/// If `config` does not pass [`SimConfig::validate`]; call it first to get
/// a typed error.
pub fn run<N: Node>(
    config: &SimConfig,
    node_config: &N::Config,
    invariants: &mut dyn Invariants<N>,
) -> Report {
    if let Err(e) = config.validate() {
        panic!("{e}");
    }
    driver::Sim::<N>::new(config, node_config).run(invariants)
}
