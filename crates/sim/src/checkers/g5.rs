//! G5, linearizable reads, in the one form every mode shares: a task's
//! assignment epoch only grows, so once a client has received a read
//! showing `Running{epoch: e2}`, a read sent afterwards must not show
//! `Running{epoch: e1}` with `e1 < e2` — that answer came from a stale
//! replica. (A read going back from final to non-final is G2; a read
//! losing the task is G1.)

use super::{Guarantee, Violations};
use crate::history::{History, HistoryEvent};
use cohort_core::{Epoch, NodeId, TaskId, TaskState, Time};
use std::collections::BTreeMap;

/// Checks G5 over `history`.
pub fn check(history: &History, out: &mut Violations) {
    // For each task, the highest Running epoch a client has received, when, from whom.
    let mut seen: BTreeMap<TaskId, (Epoch, Time, NodeId)> = BTreeMap::new();
    for r in &history.records {
        let HistoryEvent::Read {
            task,
            node,
            sent_at,
            result: Ok(TaskState::Running { epoch, .. }),
        } = &r.event
        else {
            continue;
        };
        if let Some((high, at, by)) = seen.get(task) {
            if epoch < high && sent_at > at {
                out.push(
                    Guarantee::G5,
                    r.at,
                    format!(
                        "task {task:?}: {by} answered running under {high} at {at}, but a read \
                         sent at {sent_at} to {node} shows it running under {epoch}"
                    ),
                );
                continue;
            }
            if epoch <= high {
                continue;
            }
        }
        seen.insert(*task, (*epoch, r.at, *node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::*;

    fn running(node: u64, epoch: u64) -> TaskState {
        TaskState::Running {
            node: NodeId(node),
            epoch: Epoch(epoch),
        }
    }

    #[test]
    fn epochs_read_in_order_or_concurrently_pass() {
        let mut h = History::new();
        read(&mut h, 1, 2, 1, Ok(running(2, 1)));
        read(&mut h, 3, 4, 1, Ok(running(3, 2)));
        // Sent before the e2 answer arrived: concurrent, may show e1.
        read(&mut h, 3, 5, 2, Ok(running(2, 1)));
        read(&mut h, 6, 7, 2, Ok(TaskState::Pending));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 0, "{:?}", v.kept());
    }

    #[test]
    fn an_older_epoch_read_after_a_newer_one_is_a_violation() {
        let mut h = History::new();
        read(&mut h, 1, 2, 1, Ok(running(3, 2)));
        read(&mut h, 3, 4, 2, Ok(running(2, 1)));
        let mut v = Violations::new(10);
        check(&h, &mut v);
        assert_eq!(v.count(), 1);
        let text = v.kept()[0].to_string();
        assert!(text.starts_with("G5 at 4.000ms"), "{text}");
        assert!(text.contains("shows it running under e1"), "{text}");
    }
}
