//! The acceptor side: pure functions on a replica's [`Record`]. The caller
//! persists the record (one `Persist`) before sending the reply, whenever the
//! function says the record changed.

use crate::paxos::Ballot;
use crate::record::{Record, TaskValue};

/// An acceptor's answer to `Prepare(version, ballot)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepareReply {
    /// Promised; carries the value accepted in this instance, if any.
    Promise(Option<(Ballot, TaskValue)>),
    /// Already promised a higher ballot.
    Reject(Ballot),
    /// This acceptor knows a later chosen version.
    Ahead(u64, TaskValue),
    /// This acceptor holds a different value at the base version: the
    /// proposer's base is not this task's chosen value (a second record
    /// created under another ring's placement). No answer, so it never
    /// mixes with this record's instances.
    Foreign,
}

/// An acceptor's answer to `Accept(version, ballot, value)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptReply {
    /// Accepted.
    Accepted,
    /// Already promised a higher ballot.
    Reject(Ballot),
    /// This acceptor knows a later chosen version.
    Ahead(u64, TaskValue),
    /// This acceptor is behind `version` and did not promise in it: no answer.
    Behind,
    /// This acceptor never promised this ballot (its prepare did not reach
    /// it, or it holds another body under the task's id and refused the
    /// prepare): no answer. Accepting only what it promised keeps a value
    /// proposed for one body out of a record holding another.
    Unpromised,
}

/// Handles `Prepare` for the instance deciding `version + 1`, whose base
/// `(version, base)` the proposer knows to be chosen. Returns the reply and
/// whether `rec` changed (and must be persisted before replying).
pub fn on_prepare(
    rec: &mut Record,
    version: u64,
    base: &TaskValue,
    ballot: Ballot,
) -> (PrepareReply, bool) {
    assert!(ballot > Ballot::ZERO, "real ballots are above ZERO");
    if rec.version > version {
        return (PrepareReply::Ahead(rec.version, rec.value.clone()), false);
    }
    if rec.version == version && rec.value != *base {
        return (PrepareReply::Foreign, false);
    }
    let mut changed = rec.learn(version, base);
    assert_eq!(rec.version, version);
    if ballot < rec.promised {
        return (PrepareReply::Reject(rec.promised), changed);
    }
    if ballot > rec.promised {
        rec.promised = ballot;
        changed = true;
    }
    (PrepareReply::Promise(rec.accepted.clone()), changed)
}

/// Handles `Accept` for the instance deciding `version + 1`. Returns the
/// reply and whether `rec` changed (persist before replying).
pub fn on_accept(
    rec: &mut Record,
    version: u64,
    ballot: Ballot,
    value: &TaskValue,
) -> (AcceptReply, bool) {
    assert!(ballot > Ballot::ZERO, "real ballots are above ZERO");
    if rec.version > version {
        return (AcceptReply::Ahead(rec.version, rec.value.clone()), false);
    }
    if rec.version < version {
        return (AcceptReply::Behind, false);
    }
    if ballot.is_runners() {
        return on_runners_accept(rec, version, ballot, value);
    }
    if ballot < rec.promised {
        return (AcceptReply::Reject(rec.promised), false);
    }
    if ballot > rec.promised {
        return (AcceptReply::Unpromised, false);
    }
    let next = Some((ballot, value.clone()));
    if rec.promised == ballot && rec.accepted == next {
        return (AcceptReply::Accepted, false); // a duplicate
    }
    rec.promised = ballot;
    rec.accepted = next;
    (AcceptReply::Accepted, true)
}

/// `Accept` under the runner's ballot ([`Ballot::runners`]), which comes
/// without a prepare. Taken only on top of a chosen `Running` value past
/// version 0 (so this replica holds the body that value was chosen for:
/// ALGORITHM.md *Racing bodies*) whose runner's ballot it is, and only
/// while nothing else was promised in the instance; a promise of a real
/// ballot is a `Reject`, which sends the runner to phase 1.
fn on_runners_accept(
    rec: &mut Record,
    version: u64,
    ballot: Ballot,
    value: &TaskValue,
) -> (AcceptReply, bool) {
    debug_assert_eq!(rec.version, version);
    if version == 0 || Ballot::runners(&rec.value) != Some(ballot) {
        return (AcceptReply::Unpromised, false);
    }
    if rec.promised > ballot {
        return (AcceptReply::Reject(rec.promised), false);
    }
    match &rec.accepted {
        Some((b, v)) if *b == ballot && v == value => (AcceptReply::Accepted, false), // a duplicate
        // The runner proposes one value under its ballot; a second one is
        // not taken (nothing a correct runner sends).
        Some(_) => (AcceptReply::Unpromised, false),
        None => {
            assert_eq!(
                rec.promised,
                Ballot::ZERO,
                "promised in the instance without accepting: a real ballot, refused above"
            );
            rec.promised = ballot;
            rec.accepted = Some((ballot, value.clone()));
            (AcceptReply::Accepted, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::{Epoch, NodeId, TaskState};

    fn rec() -> Record {
        Record::new(crate::record::test_header(10), cohort_core::Time::ZERO)
    }

    fn b(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
            generation: 0,
        }
    }

    fn running(node: u64, epoch: u64) -> TaskValue {
        TaskValue {
            state: TaskState::Running {
                node: NodeId(node),
                epoch: Epoch(epoch),
            },
            epoch: Epoch(epoch),
            attempts: 0,
            runner_boot: 0,
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
            ring_epoch: 0,
            ready_at: cohort_core::Time::ZERO,
            start_by: None,
            history: Default::default(),
            permits: Default::default(),
            granted: None,
        }
    }

    #[test]
    fn an_acceptor_never_accepts_below_its_promise() {
        let mut r = rec();
        let init = TaskValue::initial(&rec().header);
        assert_eq!(
            on_prepare(&mut r, 0, &init, b(2, 2)),
            (PrepareReply::Promise(None), true)
        );
        assert_eq!(
            on_accept(&mut r, 0, b(1, 1), &running(1, 1)),
            (AcceptReply::Reject(b(2, 2)), false)
        );
        assert_eq!(
            on_prepare(&mut r, 0, &init, b(1, 3)),
            (PrepareReply::Reject(b(2, 2)), false)
        );
        assert_eq!(
            on_accept(&mut r, 0, b(2, 2), &running(2, 1)),
            (AcceptReply::Accepted, true)
        );
        // A later prepare is told what was accepted, so it keeps it.
        assert_eq!(
            on_prepare(&mut r, 0, &init, b(3, 1)),
            (PrepareReply::Promise(Some((b(2, 2), running(2, 1)))), true)
        );
    }

    #[test]
    fn a_lagging_acceptor_catches_up_and_a_leading_one_says_so() {
        let mut r = rec();
        let v1 = running(1, 1);
        let (reply, changed) = on_prepare(&mut r, 1, &v1, b(1, 1));
        assert!(changed);
        assert_eq!(reply, PrepareReply::Promise(None));
        assert_eq!((r.version, &r.value), (1, &v1));
        assert_eq!(
            on_prepare(&mut r, 0, &TaskValue::initial(&rec().header), b(9, 9)),
            (PrepareReply::Ahead(1, v1.clone()), false)
        );
        assert_eq!(
            on_accept(&mut r, 2, b(9, 9), &v1),
            (AcceptReply::Behind, false)
        );
    }

    #[test]
    fn an_acceptor_accepts_only_a_ballot_it_promised() {
        // A replica holding another body under the id never answers that
        // body's prepares; its accept must not take that body's value.
        let mut r = rec();
        assert_eq!(
            on_accept(&mut r, 0, b(1, 2), &running(2, 1)),
            (AcceptReply::Unpromised, false)
        );
        assert_eq!(r.accepted, None);
        let init = TaskValue::initial(&rec().header);
        assert_eq!(
            on_prepare(&mut r, 0, &init, b(1, 2)),
            (PrepareReply::Promise(None), true)
        );
        assert_eq!(
            on_accept(&mut r, 0, b(2, 3), &running(3, 1)),
            (AcceptReply::Unpromised, false)
        );
        assert_eq!(
            on_accept(&mut r, 0, b(1, 2), &running(2, 1)),
            (AcceptReply::Accepted, true)
        );
    }

    /// A record at version 1, `Running` on n1 claimed in boot 5.
    fn claimed() -> Record {
        let mut r = rec();
        let mut v = running(1, 1);
        v.runner_boot = 5;
        assert!(r.learn(1, &v));
        r
    }

    #[test]
    fn the_runners_ballot_is_taken_without_a_prepare_while_nothing_is_promised() {
        let mut r = claimed();
        let runners = Ballot::runners(&r.value).expect("running");
        assert_eq!(
            runners,
            Ballot {
                round: 0,
                node: NodeId(1),
                generation: 5
            }
        );
        let done = running(1, 1); // any value: the acceptor does not judge it
        assert_eq!(
            on_accept(&mut r, 1, runners, &done),
            (AcceptReply::Accepted, true)
        );
        assert_eq!(
            on_accept(&mut r, 1, runners, &done),
            (AcceptReply::Accepted, false),
            "a duplicate"
        );
        // One value per ballot: a second one is not taken.
        assert_eq!(
            on_accept(&mut r, 1, runners, &running(2, 2)),
            (AcceptReply::Unpromised, false)
        );
        // A real ballot's prepare is told of it, so it keeps it.
        let base = r.value.clone();
        assert_eq!(
            on_prepare(&mut r, 1, &base, b(1, 2)),
            (PrepareReply::Promise(Some((runners, done))), true)
        );
    }

    #[test]
    fn the_runners_ballot_is_refused_after_a_real_promise_and_to_anyone_but_the_runners_boot() {
        let mut r = claimed();
        let runners = Ballot::runners(&r.value).expect("running");
        let base = r.value.clone();
        assert_eq!(
            on_prepare(&mut r, 1, &base, b(1, 2)),
            (PrepareReply::Promise(None), true)
        );
        assert_eq!(
            on_accept(&mut r, 1, runners, &base),
            (AcceptReply::Reject(b(1, 2)), false)
        );
        let mut r = claimed();
        for other in [
            Ballot {
                generation: 4,
                ..runners
            }, // the runner's earlier boot
            Ballot {
                generation: 6,
                ..runners
            }, // its later boot
            Ballot {
                node: NodeId(2),
                ..runners
            },
        ] {
            assert_eq!(
                on_accept(&mut r, 1, other, &base),
                (AcceptReply::Unpromised, false)
            );
        }
        // Not on top of a claim: a pending base has no runner.
        let mut pending = rec();
        let ballot = Ballot {
            round: 0,
            node: NodeId(1),
            generation: 5,
        };
        assert_eq!(pending.version, 0);
        assert_eq!(
            on_accept(&mut pending, 0, ballot, &base),
            (AcceptReply::Unpromised, false)
        );
        assert_eq!((pending.promised, &pending.accepted), (Ballot::ZERO, &None));
    }

    #[test]
    fn a_prepare_whose_base_differs_from_the_chosen_value_at_its_version_gets_no_answer() {
        // A second record of the task under another placement must never
        // mix with this record's instances.
        let mut r = rec();
        let mut other = TaskValue::initial(&r.header);
        other.replicas = vec![NodeId(1), NodeId(2), NodeId(6)];
        other.ring_epoch = 1;
        assert_eq!(
            on_prepare(&mut r, 0, &other, b(1, 6)),
            (PrepareReply::Foreign, false)
        );
        assert_eq!(r.promised, Ballot::ZERO);
    }
}
