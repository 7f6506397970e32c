//! The wire and storage codec: postcard, with a size limit checked before decoding.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes could not be encoded or decoded. Decoding failures change nothing:
/// the caller drops the bytes (and, on a peer link, the connection).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The input is longer than the caller's limit.
    #[error("{size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// The input's length.
        size_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// The bytes are not a valid encoding.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Bytes were left over after a complete value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Encodes `value` with postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own in-memory types cannot fail: postcard only errors on
    // unsupported serde features, which no cohort type uses.
    postcard::to_stdvec(value).expect("postcard encoding of a cohort type")
}

/// The length of `value`'s encoding, without making it.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("postcard encoding of a cohort type")
}

/// Decodes a complete value of at most `limit_bytes` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit_bytes: usize) -> Result<T, CodecError> {
    if bytes.len() > limit_bytes {
        return Err(CodecError::TooLarge {
            size_bytes: bytes.len(),
            limit_bytes,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Task, TaskState};

    #[test]
    fn round_trips_and_rejects_garbage() {
        let t = Task {
            kind: "echo".into(),
            payload: vec![1, 2, 3],
            timeout_ms: 10,
            max_attempts: 3,
            not_before: crate::Time::ZERO,
            retry: crate::RetryPolicy::default(),
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        };
        let bytes = encode(&t);
        assert_eq!(decode::<Task>(&bytes, 1024).unwrap(), t);
        assert!(matches!(
            decode::<Task>(&bytes, 2),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            decode::<TaskState>(&[0xff, 0xff, 0xff], 1024),
            Err(CodecError::Malformed(_))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode::<Task>(&long, 1024), Err(CodecError::Trailing(1)));
    }
}
