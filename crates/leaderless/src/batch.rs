//! Batch submits: a batch fans out into one ordinary submit per task (each
//! task lives on its own replicas), and the batch is answered once every
//! one of them is.
//!
//! What holds (docs/RUNTIME.md says the same to clients): the batch is
//! checked as a whole first (size, every task, distinct ids, room for its
//! operations) and a refusal there changes nothing. Past that point each
//! task is written on its own: the batch is acknowledged only when every
//! task is durable on `W` replicas; otherwise the answer is
//! [`ClientError::BatchIncomplete`] naming the tasks known durable and the
//! first failure. Ids are the client's, so resending the whole batch
//! creates nothing twice.

use cohort_core::{ClientError, ClientResponse, RequestId, TaskId};
use std::collections::BTreeMap;

/// Sub-request ids live above this bit: the drivers number client
/// requests from 1 upwards and never come near it.
const SUB_REQUEST_BIT: u64 = 1 << 63;

/// Whether `request` is one task's sub-request of a batch.
pub fn is_sub_request(request: RequestId) -> bool {
    request.0 & SUB_REQUEST_BIT != 0
}

/// One batch waiting for its tasks.
#[derive(Debug)]
struct Batch {
    ids: Vec<TaskId>,
    durable: Vec<bool>,
    left: usize,
    /// The first task refused: its index and why.
    failed: Option<(usize, ClientError)>,
}

/// The batches in flight at this node.
#[derive(Debug, Default)]
pub struct Batches {
    next: u64,
    /// Sub-request -> (batch request, index in the batch).
    subs: BTreeMap<RequestId, (RequestId, usize)>,
    open: BTreeMap<RequestId, Batch>,
}

impl Batches {
    /// Opens a batch answered to `request`; returns one sub-request per
    /// id, in order, to submit each task under.
    pub fn open(&mut self, request: RequestId, ids: Vec<TaskId>) -> Vec<RequestId> {
        let subs: Vec<RequestId> = (0..ids.len())
            .map(|index| {
                self.next += 1;
                let sub = RequestId(SUB_REQUEST_BIT | self.next);
                self.subs.insert(sub, (request, index));
                sub
            })
            .collect();
        self.open.insert(
            request,
            Batch {
                durable: vec![false; ids.len()],
                left: ids.len(),
                ids,
                failed: None,
            },
        );
        subs
    }

    /// Routes a reply: `Err(reply)` back if `request` is not a sub-request
    /// (answer it as usual); `Ok(None)` while its batch waits for others;
    /// `Ok(Some(..))` with the batch's own answer once the last is in.
    #[allow(clippy::type_complexity)]
    pub fn reply(
        &mut self,
        request: RequestId,
        reply: Result<ClientResponse, ClientError>,
    ) -> Result<
        Option<(RequestId, Result<ClientResponse, ClientError>)>,
        Result<ClientResponse, ClientError>,
    > {
        let Some((batch_request, index)) = self.subs.remove(&request) else {
            return Err(reply);
        };
        let Some(batch) = self.open.get_mut(&batch_request) else {
            return Ok(None);
        };
        match reply {
            Ok(_) => batch.durable[index] = true,
            Err(e) => {
                if batch.failed.as_ref().is_none_or(|(i, _)| index < *i) {
                    batch.failed = Some((index, e));
                }
            }
        }
        batch.left -= 1;
        if batch.left > 0 {
            return Ok(None);
        }
        let batch = self.open.remove(&batch_request).expect("just seen");
        let answer = match batch.failed {
            None => Ok(ClientResponse::AcceptedBatch { ids: batch.ids }),
            Some((index, error)) => Err(ClientError::BatchIncomplete {
                durable: batch
                    .ids
                    .iter()
                    .zip(&batch.durable)
                    .filter(|(_, d)| **d)
                    .map(|(id, _)| *id)
                    .collect(),
                error: Box::new(ClientError::BatchItem {
                    index,
                    error: Box::new(error),
                }),
            }),
        };
        Ok(Some((batch_request, answer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_answered_once_every_task_is_and_names_what_is_durable() {
        let mut b = Batches::default();
        let subs = b.open(RequestId(7), vec![TaskId(1), TaskId(2), TaskId(3)]);
        assert_eq!(subs.len(), 3);
        // Not a sub-request: handed back to be answered as usual.
        let own = Ok(ClientResponse::Accepted { id: TaskId(9) });
        assert_eq!(b.reply(RequestId(7), own.clone()), Err(own));
        let ok = |id| Ok(ClientResponse::Accepted { id: TaskId(id) });
        assert!(matches!(b.reply(subs[2], ok(3)), Ok(None)));
        let conflict = Err(ClientError::IdConflict { id: TaskId(2) });
        assert!(matches!(b.reply(subs[1], conflict), Ok(None)));
        let Ok(Some((req, Err(ClientError::BatchIncomplete { durable, error })))) =
            b.reply(subs[0], ok(1))
        else {
            panic!("the batch is over");
        };
        assert_eq!(req, RequestId(7));
        assert_eq!(durable, vec![TaskId(1), TaskId(3)]);
        assert!(matches!(*error, ClientError::BatchItem { index: 1, .. }));

        let subs = b.open(RequestId(8), vec![TaskId(4)]);
        assert_eq!(
            b.reply(subs[0], ok(4)).unwrap(),
            Some((
                RequestId(8),
                Ok(ClientResponse::AcceptedBatch {
                    ids: vec![TaskId(4)]
                })
            ))
        );
    }
}
