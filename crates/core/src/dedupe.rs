//! Unique tasks by a dedupe key: at most one task per key is pending or
//! running at any time, decided by the cluster's consensus, not by a lock.
//!
//! # The generation scheme
//!
//! A dedupe key `K` names a chain of task ids, one per generation
//! `g = 0, 1, 2, ...`:
//!
//! ```text
//! id(K, g) = first 128 bits of SHA-256("cohort/dedupe-key/v1\0" || K || g as 8 bytes big-endian)
//! ```
//!
//! Nothing else is stored: every mode's id-keyed submit is already a
//! consensus decision (exclusive creation: one body wins an id, a repeat of
//! the same body is acknowledged again, another body is
//! [`ClientError::IdConflict`]), and every mode serves linearizable reads
//! (G5). [`DedupeSubmit`] drives both, so it works unchanged in every mode.
//!
//! **Rule R.** Generation `g + 1` is only ever submitted after a
//! linearizable read found generation `g` final.
//!
//! **Claim.** At every moment, (P1) existence is prefix-closed: if `id(K, g)`
//! exists then `id(K, g - 1)` exists; and (P2) at most one generation of `K`
//! is not final.
//!
//! *Proof*, by induction over the creations of generations (nothing else
//! changes which generations exist, and a task never stops existing while
//! records are not purged; see below for where they are). Initially none
//! exists. Let `id(K, g + 1)` be created at time `t`. By R, a linearizable read found `g` final at some `t' < t`, so
//! `g` existed at `t'` and, because a final state never changes (G2), `g` is
//! final at `t` and ever after. P1 holds for `g + 1` because `g` exists, and
//! for `g` and below by induction. For P2: take any other generation `h`
//! that exists at `t`. If `h < g + 1` then `h ≤ g`; `h = g` is final; for
//! `h < g`, `g` existed at `t'` and so (by P1 and R applied to `h + 1 ≤ g`) a
//! read found `h` final before `h + 1` was created: `h` is final. If
//! `h > g + 1`, then by P1 `g + 1` existed before `t`, which contradicts its
//! creation at `t`. So right after `t`, only `g + 1` can be non-final. ∎
//!
//! # What a submit with a key does
//!
//! 1. Find the last existing generation `g` by linearizable `Get`s:
//!    exponential probing (`0, 1, 3, 7, ...`) then binary search, which P1
//!    makes sound — `O(log g)` reads.
//! 2. None exists: submit `id(K, 0)`.
//! 3. `g` was read not final: answer [`DedupeOutcome::Existing`] (at the
//!    moment of that read `g` was the only non-final generation, by P2).
//! 4. `g` was read final: submit `id(K, g + 1)` (allowed by R).
//!    - `Accepted`: [`DedupeOutcome::Created`]. A concurrent submitter with
//!      an identical body is also acknowledged for the same id: still one
//!      task, and both answers are true (it was created during each call).
//!    - `IdConflict`: someone else created `g + 1` with another body; read
//!      it. Not final: [`DedupeOutcome::Existing`]. Final: go on with
//!      `g + 2`, at most `rounds_max` submits in all, then
//!      [`DedupeError::Contention`] (retryable).
//!
//! Every other error of the cluster (`NotLeader`, `Unavailable`,
//! `Overloaded`, `InvalidTask`, ...) ends the machine and is handed back
//! unchanged in [`DedupeError::Client`]. Starting over (with a new
//! [`DedupeSubmit`]) is always safe: the worst a retry after an unknown
//! outcome sees is its own task, reported as `Existing`.
//!
//! # What is and is not guaranteed
//!
//! - At most one task per key is pending or running at any moment, in
//!   every mode, across partitions and crashes (only consensus decisions
//!   and linearizable reads are used).
//! - An `Existing` answer names a task that was pending or running at some
//!   moment during the call; it may be final by the time the caller reads
//!   it, and its body may differ from the caller's (the key, not the body,
//!   is what is deduplicated).
//! - The property rests on every generation staying readable: purging a
//!   final task breaks P1 (a purged `g` reads as absent, and a new `g`
//!   could be created beside a live `g + 1`). Every mode purges final
//!   records after their retention (`Limits::*_retained_ms`) and drops the
//!   oldest past `Limits::tasks_retained_max` (per cluster in leader mode
//!   and the static baseline, per node in leaderless mode), so the
//!   guarantee holds while a key's chain has lost nothing to either
//!   (docs/RUNTIME.md, *Dedupe keys*).
//! - Progress rests on the mode settling racing creates of one id with
//!   different bodies, which dedupe keys make routine: one body is
//!   acknowledged and runs (in leaderless mode a replica that stored the
//!   losing body adopts the winner's once one of its values is chosen).
//! - A task submitted by its id (not through a key) that happens to equal
//!   some `id(K, g)` takes part in the chain; finding such an id needs a
//!   SHA-256 preimage, so only a client that computes it on purpose can.
//!
//! # Driving it
//!
//! ```
//! use cohort_core::dedupe::{DedupeKey, DedupeOutcome, DedupeStep, DedupeSubmit};
//! use cohort_core::{ClientError, ClientRequest, ClientResponse, Task, Time};
//!
//! let task = Task { kind: "echo".into(), payload: vec![], timeout_ms: 1000, max_attempts: 1,
//!                    not_before: Time::ZERO, retry: Default::default(), schedule_to_start_ms: 0,
//!                    priority: 0, heartbeat_timeout_ms: 0, labels: vec![], limit: None,
//!                    lease_grace_ms: 0, retry_of: None };
//! let key = DedupeKey::new(b"nightly-report").unwrap();
//! let mut submit = DedupeSubmit::new(key, task, 8);
//! // An empty cluster: generation 0 does not exist, so it is submitted.
//! let mut request = submit.request().unwrap();
//! let outcome = loop {
//!     let reply = match &request {
//!         ClientRequest::Get { id, .. } => Err(ClientError::NotFound { id: *id }),
//!         ClientRequest::Submit { id, .. } => Ok(ClientResponse::Accepted { id: *id }),
//!         _ => unreachable!("only reads and submits"),
//!     };
//!     match submit.handle_reply(reply) {
//!         DedupeStep::Send(next) => request = next,
//!         DedupeStep::Done(outcome) => break outcome,
//!     }
//! };
//! assert!(matches!(outcome, Ok(DedupeOutcome::Created { generation: 0, .. })));
//! ```

use crate::client::{ClientError, ClientRequest, ClientResponse, Consistency};
use crate::ids::TaskId;
use crate::task::{Task, TaskState};
use sha2::{Digest, Sha256};

/// Longest dedupe key, in bytes.
pub const DEDUPE_KEY_BYTES_MAX: usize = 255;

/// Default for the most submits one [`DedupeSubmit`] makes before it gives
/// up with [`DedupeError::Contention`]. Each extra round means another
/// submitter created a generation and it went final while this one was
/// looking, so more than a few are rare.
pub const DEDUPE_ROUNDS_MAX_DEFAULT: u32 = 8;

/// The domain prefix hashed before the key: ids of dedupe keys never
/// collide with those of idempotency keys.
const DOMAIN: &[u8] = b"cohort/dedupe-key/v1\0";

/// Why a dedupe key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DedupeKeyError {
    /// The key is empty.
    #[error("a dedupe key must not be empty")]
    Empty,
    /// The key is longer than [`DEDUPE_KEY_BYTES_MAX`].
    #[error("a dedupe key is at most {DEDUPE_KEY_BYTES_MAX} bytes, this one has {0}")]
    TooLong(usize),
    /// The key holds something other than visible ASCII.
    #[error("a dedupe key is visible ASCII (0x21 to 0x7e)")]
    NotVisibleAscii,
}

/// A valid dedupe key: 1 to [`DEDUPE_KEY_BYTES_MAX`] bytes of visible ASCII
/// (so it fits an HTTP header unchanged).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DedupeKey(Vec<u8>);

impl DedupeKey {
    /// Checks `key`.
    pub fn new(key: &[u8]) -> Result<DedupeKey, DedupeKeyError> {
        if key.is_empty() {
            return Err(DedupeKeyError::Empty);
        }
        if key.len() > DEDUPE_KEY_BYTES_MAX {
            return Err(DedupeKeyError::TooLong(key.len()));
        }
        if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(DedupeKeyError::NotVisibleAscii);
        }
        Ok(DedupeKey(key.to_vec()))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id of generation `generation` of this key.
    pub fn task_id(&self, generation: u64) -> TaskId {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(&self.0);
        h.update(generation.to_be_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        TaskId(u128::from_be_bytes(first))
    }
}

/// How a submit with a dedupe key ended well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DedupeOutcome {
    /// The caller's task was made durable (G1) as generation `generation`.
    Created {
        /// Its id.
        id: TaskId,
        /// Its generation.
        generation: u64,
    },
    /// Generation `generation` was pending or running: nothing was created.
    Existing {
        /// Its id.
        id: TaskId,
        /// Its generation.
        generation: u64,
        /// Its state as read (not final).
        state: TaskState,
    },
}

impl DedupeOutcome {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        match self {
            DedupeOutcome::Created { id, .. } | DedupeOutcome::Existing { id, .. } => *id,
        }
    }

    /// Whether an existing task was found (nothing created).
    pub fn is_deduplicated(&self) -> bool {
        matches!(self, DedupeOutcome::Existing { .. })
    }
}

/// Why a submit with a dedupe key failed. Whatever the variant, at most
/// the caller's task was created (as one generation); starting over is safe.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DedupeError {
    /// The cluster refused a read or submit with this error, passed on
    /// unchanged (a `NotLeader` names where to send the whole submit).
    /// Whether the caller's task was created is unknown only if the
    /// refused request was a submit and the error is retryable.
    #[error("{0}")]
    Client(ClientError),
    /// `rounds` submits each lost to another submitter whose generation
    /// went final before it could be read. Nothing of this call's is
    /// pending; retrying later may succeed.
    #[error("dedupe key contended: {rounds} submits each found a newer generation already final")]
    Contention {
        /// Submits made (`rounds_max`).
        rounds: u32,
    },
    /// The node answered a request with something that does not answer
    /// it (a broken contract). Nothing is known about what changed.
    #[error("unexpected answer {answer:?} to {request:?}")]
    Unexpected {
        /// What was asked.
        request: Box<ClientRequest>,
        /// What came back.
        answer: Box<ClientResponse>,
    },
}

impl DedupeError {
    /// Whether running the submit again (perhaps elsewhere, perhaps later)
    /// may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DedupeError::Client(e) => e.is_retryable(),
            DedupeError::Contention { .. } => true,
            DedupeError::Unexpected { .. } => false,
        }
    }
}

/// What to do after [`DedupeSubmit::handle_reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DedupeStep {
    /// Send this request and hand its answer to `handle_reply`.
    Send(ClientRequest),
    /// Finished.
    Done(Result<DedupeOutcome, DedupeError>),
}

/// Where the machine is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// Reading generation `at`; `last` is the highest generation read to
    /// exist so far, with its state.
    Probe {
        at: u64,
        last: Option<(u64, TaskState)>,
    },
    /// `lo` exists (read as `lo_state`), `hi` does not; reading `at`
    /// strictly between them.
    Bisect {
        lo: u64,
        lo_state: TaskState,
        hi: u64,
        at: u64,
    },
    /// Submitting generation `generation`.
    Submit { generation: u64 },
    /// Reading generation `generation`, which another body won.
    ReadWinner { generation: u64 },
    /// Finished.
    Done,
}

/// One submit with a dedupe key, as a sans-IO state machine: it names the
/// request to send, the caller sends it to one node (or cluster) and hands
/// back the answer, until [`DedupeStep::Done`].
///
/// Call order: [`DedupeSubmit::new`], then [`DedupeSubmit::request`] and
/// [`DedupeSubmit::handle_reply`] alternately. A caller may also send the
/// current [`DedupeSubmit::request`] again (after a timeout or a retryable
/// error it chose not to hand in): reads and id-keyed submits are
/// idempotent.
#[derive(Clone, Debug)]
pub struct DedupeSubmit {
    key: DedupeKey,
    task: Task,
    rounds_max: u32,
    rounds: u32,
    stage: Stage,
}

impl DedupeSubmit {
    /// A submit of `task` under `key`, giving up after `rounds_max` (at
    /// least 1) lost submits.
    pub fn new(key: DedupeKey, task: Task, rounds_max: u32) -> DedupeSubmit {
        DedupeSubmit {
            key,
            task,
            rounds_max: rounds_max.max(1),
            rounds: 0,
            stage: Stage::Probe { at: 0, last: None },
        }
    }

    /// The key.
    pub fn key(&self) -> &DedupeKey {
        &self.key
    }

    /// The task to create.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Submits made so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The request whose answer the machine waits for; `None` once done.
    pub fn request(&self) -> Option<ClientRequest> {
        let read = |g: u64| ClientRequest::Get {
            id: self.key.task_id(g),
            consistency: Consistency::Linearizable,
        };
        match &self.stage {
            Stage::Probe { at, .. } | Stage::Bisect { at, .. } => Some(read(*at)),
            Stage::ReadWinner { generation } => Some(read(*generation)),
            Stage::Submit { generation } => Some(ClientRequest::Submit {
                id: self.key.task_id(*generation),
                task: self.task.clone(),
            }),
            Stage::Done => None,
        }
    }

    /// Hands in the answer to [`DedupeSubmit::request`].
    ///
    /// # Panics
    /// If the machine is done.
    pub fn handle_reply(&mut self, reply: Result<ClientResponse, ClientError>) -> DedupeStep {
        let request = self.request().expect("handle_reply after Done");
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        let found = match reply {
            Err(e) if !is_expected(&request, &e) => {
                return DedupeStep::Done(Err(DedupeError::Client(e)))
            }
            Ok(answer) if !answers(&request, &answer) => {
                return DedupeStep::Done(Err(DedupeError::Unexpected {
                    request: Box::new(request),
                    answer: Box::new(answer),
                }))
            }
            // A read found the generation (a submit: it was accepted).
            Ok(ClientResponse::State { state, .. }) => Some(state),
            // `Accepted` (the state is not used: a submit that was
            // accepted finishes the machine).
            Ok(_) => Some(TaskState::Pending),
            // NotFound to a read, IdConflict to a submit.
            Err(_) => None,
        };
        let next = match (stage, found) {
            (Stage::Probe { at, .. }, Some(state)) => match at.checked_mul(2) {
                Some(doubled) if doubled < u64::MAX => Next::Stage(Stage::Probe {
                    at: doubled + 1,
                    last: Some((at, state)),
                }),
                // Every generation up to 2^64 - 1 exists: none above.
                _ => self.decide(at, state),
            },
            (Stage::Probe { last: None, .. }, None) => self.submit(0),
            (
                Stage::Probe {
                    at,
                    last: Some((lo, lo_state)),
                },
                None,
            ) => self.bisect(lo, lo_state, at),
            (Stage::Bisect { hi, at, .. }, Some(state)) => self.bisect(at, state, hi),
            (
                Stage::Bisect {
                    lo, lo_state, at, ..
                },
                None,
            ) => self.bisect(lo, lo_state, at),
            (Stage::Submit { generation }, Some(_)) => Next::Finish(Ok(DedupeOutcome::Created {
                id: self.key.task_id(generation),
                generation,
            })),
            // Another body won this generation: read it.
            (Stage::Submit { generation }, None) => Next::Stage(Stage::ReadWinner { generation }),
            (Stage::ReadWinner { generation }, Some(state)) => self.decide(generation, state),
            // Cannot happen after a conflict on a linearizable store;
            // submitting again settles it and is what rule R allows.
            (Stage::ReadWinner { generation }, None) => self.submit(generation),
            (Stage::Done, _) => unreachable!("request() was Some"),
        };
        match next {
            Next::Stage(stage) => {
                self.stage = stage;
                DedupeStep::Send(self.request().expect("a stage that is not Done"))
            }
            Next::Finish(outcome) => DedupeStep::Done(outcome),
        }
    }

    /// `generation` is the last one known to exist, read as `state`.
    fn decide(&mut self, generation: u64, state: TaskState) -> Next {
        if !state.is_final() {
            return Next::Finish(Ok(DedupeOutcome::Existing {
                id: self.key.task_id(generation),
                generation,
                state,
            }));
        }
        match generation.checked_add(1) {
            Some(next) => self.submit(next),
            None => Next::Finish(Err(DedupeError::Contention {
                rounds: self.rounds,
            })),
        }
    }

    /// Submits `generation` unless `rounds_max` submits were made.
    fn submit(&mut self, generation: u64) -> Next {
        if self.rounds >= self.rounds_max {
            return Next::Finish(Err(DedupeError::Contention {
                rounds: self.rounds,
            }));
        }
        self.rounds += 1;
        Next::Stage(Stage::Submit { generation })
    }

    /// `lo` exists (read as `lo_state`), `hi` does not.
    fn bisect(&mut self, lo: u64, lo_state: TaskState, hi: u64) -> Next {
        assert!(lo < hi, "generation {lo} exists, {hi} does not");
        if hi - lo == 1 {
            self.decide(lo, lo_state)
        } else {
            Next::Stage(Stage::Bisect {
                lo,
                lo_state,
                hi,
                at: lo + (hi - lo) / 2,
            })
        }
    }
}

/// What a transition leads to.
enum Next {
    Stage(Stage),
    Finish(Result<DedupeOutcome, DedupeError>),
}

/// Whether `e` is an answer the machine steps on (not one to hand back):
/// `NotFound` for the read's id, `IdConflict` for the submit's.
fn is_expected(request: &ClientRequest, e: &ClientError) -> bool {
    match (request, e) {
        (ClientRequest::Get { id, .. }, ClientError::NotFound { id: e }) => id == e,
        (ClientRequest::Submit { id, .. }, ClientError::IdConflict { id: e }) => id == e,
        _ => false,
    }
}

/// Whether `answer` answers `request`.
fn answers(request: &ClientRequest, answer: &ClientResponse) -> bool {
    match (request, answer) {
        (ClientRequest::Get { id, .. }, ClientResponse::State { id: a, .. }) => id == a,
        (ClientRequest::Submit { id, .. }, ClientResponse::Accepted { id: a }) => id == a,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Epoch, NodeId};
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// A linearizable in-memory cluster with exclusive creation by id.
    #[derive(Default)]
    struct Cluster {
        tasks: BTreeMap<TaskId, (Task, TaskState)>,
        reads: usize,
        submits: usize,
    }

    impl Cluster {
        fn serve(&mut self, req: &ClientRequest) -> Result<ClientResponse, ClientError> {
            match req {
                ClientRequest::Get { id, .. } => {
                    self.reads += 1;
                    match self.tasks.get(id) {
                        Some((_, state)) => Ok(ClientResponse::State {
                            id: *id,
                            state: state.clone(),
                        }),
                        None => Err(ClientError::NotFound { id: *id }),
                    }
                }
                ClientRequest::Submit { id, task } => {
                    self.submits += 1;
                    match self.tasks.get(id) {
                        Some((t, _)) if t != task => Err(ClientError::IdConflict { id: *id }),
                        Some(_) => Ok(ClientResponse::Accepted { id: *id }),
                        None => {
                            self.tasks.insert(*id, (task.clone(), TaskState::Pending));
                            Ok(ClientResponse::Accepted { id: *id })
                        }
                    }
                }
                other => panic!("the machine only reads and submits, not {other:?}"),
            }
        }

        fn finish(&mut self, id: TaskId) {
            self.tasks.get_mut(&id).expect("exists").1 = TaskState::Cancelled;
        }

        /// Runs `m` to the end against this cluster.
        fn run(&mut self, m: &mut DedupeSubmit) -> Result<DedupeOutcome, DedupeError> {
            let mut req = m.request().expect("fresh");
            loop {
                let reply = self.serve(&req);
                match m.handle_reply(reply) {
                    DedupeStep::Send(next) => req = next,
                    DedupeStep::Done(outcome) => return outcome,
                }
            }
        }

        fn not_final(&self, key: &DedupeKey, generations: u64) -> Vec<u64> {
            (0..generations)
                .filter(|g| {
                    self.tasks
                        .get(&key.task_id(*g))
                        .is_some_and(|(_, s)| !s.is_final())
                })
                .collect()
        }
    }

    fn task(n: u8) -> Task {
        Task {
            kind: "echo".into(),
            payload: vec![n],
            timeout_ms: 1000,
            max_attempts: 1,
            not_before: crate::Time::ZERO,
            retry: crate::RetryPolicy::default(),
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        }
    }

    fn key(k: &str) -> DedupeKey {
        DedupeKey::new(k.as_bytes()).unwrap()
    }

    fn submit(k: &str, n: u8) -> DedupeSubmit {
        DedupeSubmit::new(key(k), task(n), DEDUPE_ROUNDS_MAX_DEFAULT)
    }

    #[test]
    fn generation_ids_are_pinned_and_distinct() {
        let k = key("nightly-report");
        // Pinned (computed independently with Python's hashlib): an id
        // must never change between versions, or an upgrade would start
        // a second chain beside a live task.
        assert_eq!(k.task_id(0).to_string(), "d61fd093b1113637543a30ec8316febb");
        assert_eq!(k.task_id(1).to_string(), "5c0bdb2675b11f160d83560bc56b3138");
        assert_ne!(k.task_id(0), key("nightly-report2").task_id(0));
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        assert_eq!(DedupeKey::new(b""), Err(DedupeKeyError::Empty));
        assert_eq!(
            DedupeKey::new(&[b'a'; 256]),
            Err(DedupeKeyError::TooLong(256))
        );
        assert!(DedupeKey::new(&[b'a'; 255]).is_ok());
        assert_eq!(
            DedupeKey::new(b"has space"),
            Err(DedupeKeyError::NotVisibleAscii)
        );
        assert_eq!(
            DedupeKey::new("é".as_bytes()),
            Err(DedupeKeyError::NotVisibleAscii)
        );
    }

    #[test]
    fn a_second_submit_while_the_first_is_pending_gets_the_first() {
        let mut c = Cluster::default();
        let first = c.run(&mut submit("k", 1)).unwrap();
        let id0 = key("k").task_id(0);
        assert_eq!(
            first,
            DedupeOutcome::Created {
                id: id0,
                generation: 0
            }
        );
        let submits = c.submits;
        let second = c.run(&mut submit("k", 2)).unwrap();
        assert_eq!(
            second,
            DedupeOutcome::Existing {
                id: id0,
                generation: 0,
                state: TaskState::Pending
            }
        );
        assert!(second.is_deduplicated());
        assert_eq!(c.submits, submits, "a deduplicated submit submits nothing");
        // Running is not final either.
        c.tasks.get_mut(&id0).unwrap().1 = TaskState::Running {
            node: NodeId(1),
            epoch: Epoch(1),
        };
        assert!(c.run(&mut submit("k", 3)).unwrap().is_deduplicated());
    }

    #[test]
    fn once_the_task_is_final_the_next_generation_is_created() {
        let mut c = Cluster::default();
        let k = key("k");
        c.run(&mut submit("k", 1)).unwrap();
        c.finish(k.task_id(0));
        let next = c.run(&mut submit("k", 2)).unwrap();
        assert_eq!(
            next,
            DedupeOutcome::Created {
                id: k.task_id(1),
                generation: 1
            }
        );
        // Other keys are independent.
        let other = c.run(&mut submit("other", 2)).unwrap();
        assert_eq!(other.id(), key("other").task_id(0));
    }

    #[test]
    fn finding_the_last_generation_takes_logarithmically_many_reads() {
        for last in [1u64, 2, 5, 63, 64, 100, 1000] {
            let mut c = Cluster::default();
            let k = key("k");
            for g in 0..last {
                c.tasks
                    .insert(k.task_id(g), (task(0), TaskState::Cancelled));
            }
            let out = c.run(&mut submit("k", 1)).unwrap();
            assert_eq!(
                out,
                DedupeOutcome::Created {
                    id: k.task_id(last),
                    generation: last
                }
            );
            let bound = 2 * (64 - last.leading_zeros() as usize) + 2;
            assert!(c.reads <= bound, "{} reads for {last} generations", c.reads);
            // And the live one in a long chain is found.
            let live = last / 2;
            let mut c = Cluster::default();
            for g in 0..=live {
                let s = if g == live {
                    TaskState::Pending
                } else {
                    TaskState::Cancelled
                };
                c.tasks.insert(k.task_id(g), (task(0), s));
            }
            let out = c.run(&mut submit("k", 1)).unwrap();
            assert_eq!(out.id(), k.task_id(live), "live generation {live}");
            assert!(out.is_deduplicated());
        }
    }

    /// Runs `a` and `b` one request at a time, in the order `schedule`
    /// gives (`true`: a steps), against `c`, calling `between` after every
    /// step.
    fn interleave(
        c: &mut Cluster,
        machines: [&mut DedupeSubmit; 2],
        schedule: &[bool],
        mut between: impl FnMut(&mut Cluster, usize),
    ) -> [Option<Result<DedupeOutcome, DedupeError>>; 2] {
        let [a, b] = machines;
        let ms = [a, b];
        let mut done = [None, None];
        let mut steps = 0;
        for &pick_a in schedule.iter().chain(std::iter::repeat_n(&true, 200)) {
            let mut i = usize::from(!pick_a);
            if done[i].is_some() {
                i = 1 - i;
            }
            if done[i].is_some() {
                break;
            }
            let req = ms[i].request().unwrap();
            let reply = c.serve(&req);
            if let DedupeStep::Done(o) = ms[i].handle_reply(reply) {
                done[i] = Some(o);
            }
            steps += 1;
            between(c, steps);
        }
        done
    }

    #[test]
    fn two_racing_submitters_make_one_task_and_the_loser_gets_it() {
        let mut c = Cluster::default();
        let k = key("k");
        c.run(&mut submit("k", 0)).unwrap();
        c.finish(k.task_id(0));
        let (mut a, mut b) = (submit("k", 1), submit("k", 2));
        // Both read generation 0 (probe 0, 1 missing) before either submits.
        let [ra, rb] = interleave(
            &mut c,
            [&mut a, &mut b],
            &[true, false, true, false, true, false],
            |_, _| {},
        );
        let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        assert_eq!(
            ra,
            DedupeOutcome::Created {
                id: k.task_id(1),
                generation: 1
            }
        );
        assert_eq!(
            rb,
            DedupeOutcome::Existing {
                id: k.task_id(1),
                generation: 1,
                state: TaskState::Pending
            }
        );
        assert_eq!(b.rounds(), 1, "b submitted once and lost");
        assert_eq!(c.not_final(&k, 4), vec![1]);
    }

    #[test]
    fn identical_bodies_racing_are_both_acknowledged_for_one_task() {
        let mut c = Cluster::default();
        let (mut a, mut b) = (submit("k", 7), submit("k", 7));
        let [ra, rb] = interleave(&mut c, [&mut a, &mut b], &[true, false], |_, _| {});
        let id0 = key("k").task_id(0);
        assert_eq!(ra.unwrap().unwrap().id(), id0);
        assert_eq!(rb.unwrap().unwrap().id(), id0);
        assert_eq!(c.tasks.len(), 1);
    }

    #[test]
    fn a_loser_whose_winner_already_finished_goes_on_to_the_next_generation() {
        let mut c = Cluster::default();
        let k = key("k");
        let (mut a, mut b) = (submit("k", 1), submit("k", 2));
        // Both probe generation 0 (missing); a submits it; the winner
        // finishes at once; b's submit conflicts, reads it final, goes on.
        let w = k.task_id(0);
        let [ra, rb] = interleave(&mut c, [&mut a, &mut b], &[true, false, true], |c, _| {
            if c.tasks.get(&w).is_some_and(|(_, s)| !s.is_final()) {
                c.finish(w);
            }
        });
        assert_eq!(ra.unwrap().unwrap().id(), k.task_id(0));
        assert_eq!(
            rb.unwrap().unwrap(),
            DedupeOutcome::Created {
                id: k.task_id(1),
                generation: 1
            }
        );
        assert_eq!(b.rounds(), 2);
    }

    #[test]
    fn a_submitter_that_always_loses_gives_up_after_rounds_max_with_a_retryable_error() {
        let mut c = Cluster::default();
        let k = key("k");
        let mut m = DedupeSubmit::new(k.clone(), task(1), 3);
        let mut req = m.request().unwrap();
        let outcome = loop {
            // An adversary creates and finishes each generation right
            // before this submitter's submit of it lands.
            if let ClientRequest::Submit { id, .. } = &req {
                c.tasks.insert(*id, (task(9), TaskState::Cancelled));
            }
            let reply = c.serve(&req);
            match m.handle_reply(reply) {
                DedupeStep::Send(next) => req = next,
                DedupeStep::Done(o) => break o,
            }
        };
        let err = outcome.unwrap_err();
        assert_eq!(err, DedupeError::Contention { rounds: 3 });
        assert!(err.is_retryable());
        assert_eq!(c.submits, 3);
        assert!(m.request().is_none());
    }

    #[test]
    fn cluster_errors_are_handed_back_unchanged() {
        let not_leader = ClientError::NotLeader {
            leader: Some(NodeId(2)),
        };
        let mut m = submit("k", 1);
        assert_eq!(
            m.handle_reply(Err(not_leader.clone())),
            DedupeStep::Done(Err(DedupeError::Client(not_leader)))
        );
        // An error on the submit, after a read.
        let mut m = submit("k", 1);
        let id0 = key("k").task_id(0);
        let DedupeStep::Send(ClientRequest::Submit { .. }) =
            m.handle_reply(Err(ClientError::NotFound { id: id0 }))
        else {
            panic!("generation 0 is missing: submit it")
        };
        let overloaded = ClientError::Overloaded {
            what: "requests_waiting_max".into(),
            limit: 1,
        };
        let DedupeStep::Done(Err(e)) = m.handle_reply(Err(overloaded.clone())) else {
            panic!("an overloaded submit ends the machine")
        };
        assert_eq!(e, DedupeError::Client(overloaded));
        assert!(e.is_retryable());
        // A NotFound for another id is no answer to this read.
        let mut m = submit("k", 1);
        let wrong = ClientError::NotFound { id: TaskId(5) };
        assert_eq!(
            m.handle_reply(Err(wrong.clone())),
            DedupeStep::Done(Err(DedupeError::Client(wrong)))
        );
        // An answer that does not answer the request.
        let mut m = submit("k", 1);
        let DedupeStep::Done(Err(e)) = m.handle_reply(Ok(ClientResponse::Accepted { id: id0 }))
        else {
            panic!("Accepted does not answer a read")
        };
        assert!(matches!(e, DedupeError::Unexpected { .. }));
        assert!(!e.is_retryable());
    }

    /// Many submitters of two keys, stepped in a seeded random order while
    /// tasks finish at random: never two live tasks of one key, every
    /// created generation follows a final one, every answer names a real task.
    #[test]
    fn random_interleavings_never_leave_two_live_tasks_of_one_key() {
        for seed in 0..200u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut c = Cluster::default();
            let keys = [key("a"), key("b")];
            let mut machines: Vec<(usize, DedupeSubmit)> = (0..12)
                .map(|i| {
                    let k = rng.gen_range(0..2);
                    (k, DedupeSubmit::new(keys[k].clone(), task(i), 4))
                })
                .collect();
            let mut open: Vec<usize> = (0..machines.len()).collect();
            while !open.is_empty() {
                if rng.gen_bool(0.3) {
                    let live: Vec<TaskId> = c
                        .tasks
                        .iter()
                        .filter(|(_, (_, s))| !s.is_final())
                        .map(|(id, _)| *id)
                        .collect();
                    if !live.is_empty() {
                        c.finish(live[rng.gen_range(0..live.len())]);
                    }
                }
                let pick = rng.gen_range(0..open.len());
                let (k, m) = &mut machines[open[pick]];
                let req = m.request().unwrap();
                let reply = c.serve(&req);
                if let DedupeStep::Done(outcome) = m.handle_reply(reply) {
                    open.swap_remove(pick);
                    match outcome {
                        Ok(o) => assert!(c.tasks.contains_key(&o.id()), "seed {seed}"),
                        Err(e) => {
                            assert!(matches!(e, DedupeError::Contention { .. }), "seed {seed}")
                        }
                    }
                }
                for key in &keys {
                    assert!(c.not_final(key, 64).len() <= 1, "seed {seed} key {k}");
                    // Prefix-closed: generations exist from 0 without gaps.
                    let exists: Vec<bool> = (0..64)
                        .map(|g| c.tasks.contains_key(&key.task_id(g)))
                        .collect();
                    let first_missing = exists.iter().position(|e| !e).unwrap_or(64);
                    assert!(
                        exists[first_missing..].iter().all(|e| !e),
                        "seed {seed}: a gap"
                    );
                }
            }
        }
    }
}
