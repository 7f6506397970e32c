//! Idempotency keys: a client names a submit by a key of its own (the
//! HTTP `Idempotency-Key` header, `cohort submit --idempotency-key`), and
//! the key decides the task id. Every submit under one key therefore names
//! the same task, and the cluster's id-keyed submit does the rest, in both
//! modes and by consensus: the first submit creates the task, a repeat with
//! the same body gets the existing task's id back (`202`), a repeat with a
//! different body is refused (`409 id_conflict`), never a second task.
//!
//! The id is the first 128 bits of SHA-256 over a domain prefix and the
//! key, so it is the same on every node, in every version, and for the
//! library and the HTTP API; keys chosen to collide would need a SHA-256
//! collision. Retention: a task record, and so its key, is kept as long as
//! the task is (today: for ever).

use cohort_core::TaskId;
use sha2::{Digest, Sha256};

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// The HTTP header that carries the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// The key is empty.
    #[error("an idempotency key must not be empty")]
    Empty,
    /// The key is longer than [`IDEMPOTENCY_KEY_BYTES_MAX`].
    #[error("an idempotency key is at most {IDEMPOTENCY_KEY_BYTES_MAX} bytes, this one has {0}")]
    TooLong(usize),
    /// The key holds something other than visible ASCII.
    #[error("an idempotency key is visible ASCII (0x21 to 0x7e)")]
    NotVisibleAscii,
}

/// The task id an idempotency key names.
pub fn task_id_for_key(key: &[u8]) -> Result<TaskId, IdempotencyKeyError> {
    if key.is_empty() {
        return Err(IdempotencyKeyError::Empty);
    }
    if key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(IdempotencyKeyError::TooLong(key.len()));
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(IdempotencyKeyError::NotVisibleAscii);
    }
    let mut h = Sha256::new();
    h.update(b"cohort/idempotency-key/v1\0");
    h.update(key);
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    Ok(TaskId(u128::from_be_bytes(first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_one_stable_task_id() {
        let a = task_id_for_key(b"order-1234").unwrap();
        assert_eq!(a, task_id_for_key(b"order-1234").unwrap());
        assert_ne!(a, task_id_for_key(b"order-1235").unwrap());
        // Pinned (computed independently: Python's hashlib): the id of a
        // key must never change between versions, or a retry across an
        // upgrade would create a second task.
        assert_eq!(a.to_string(), "58b336c36bd3040ca30f666f255583ba");
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        assert_eq!(task_id_for_key(b""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            task_id_for_key(&[b'a'; 256]),
            Err(IdempotencyKeyError::TooLong(256))
        );
        assert!(task_id_for_key(&[b'a'; 255]).is_ok());
        assert_eq!(
            task_id_for_key(b"has space"),
            Err(IdempotencyKeyError::NotVisibleAscii)
        );
        assert_eq!(
            task_id_for_key("é".as_bytes()),
            Err(IdempotencyKeyError::NotVisibleAscii)
        );
    }
}
