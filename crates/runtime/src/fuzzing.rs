//! Entry points for the fuzz targets (`fuzz/`) and for the corpus replay
//! that runs in the normal test suite: each takes arbitrary bytes, runs the
//! same decoding the node runs on untrusted input, and must return without
//! panicking, whatever the bytes.

use crate::transport::{read_frame, FrameError, Hello, HelloReply, HANDSHAKE_BYTES_MAX};
use cohort_core::{Limits, Node, NodeId, NodeRng, Peers, StoreOp, Stored};
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Largest frame the fuzzed frame readers accept (small, so that a fuzzer
/// explores frames rather than allocations).
pub const FUZZ_FRAME_BYTES_MAX: usize = 64 * 1024;

/// Polls a future over in-memory input to completion (reading a `&[u8]` never waits).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The acceptor's side of the peer handshake: the first frame, decoded as a
/// [`Hello`], and the dialer's side: a [`HelloReply`].
pub fn peer_handshake(data: &[u8]) {
    let mut r = data;
    if let Ok(frame) = ready(read_frame(&mut r, HANDSHAKE_BYTES_MAX)) {
        if let Ok(h) = cohort_core::decode::<Hello>(&frame, HANDSHAKE_BYTES_MAX) {
            assert_eq!(
                cohort_core::decode::<Hello>(&cohort_core::encode(&h), HANDSHAKE_BYTES_MAX).ok(),
                Some(h)
            );
        }
    }
    let _ = cohort_core::decode::<HelloReply>(data, HANDSHAKE_BYTES_MAX);
}

/// A peer's byte stream after the handshake: length-prefixed frames, each
/// decoded as a [`crate::transport::PeerFrame`] of mode `M`, until the
/// input ends or a frame is bad. Returns how many frames decoded.
pub fn peer_frames<M: DeserializeOwned>(data: &[u8]) -> usize {
    let mut r = data;
    let mut n = 0;
    loop {
        match ready(read_frame(&mut r, FUZZ_FRAME_BYTES_MAX)) {
            Ok(frame) => match cohort_core::decode::<crate::transport::PeerFrame<M>>(
                &frame,
                FUZZ_FRAME_BYTES_MAX,
            ) {
                Ok(_) => n += 1,
                Err(_) => return n,
            },
            Err(FrameError::TooLarge { .. }) | Err(FrameError::Io(_)) => return n,
        }
    }
}

/// One message of mode `M`, as the transport decodes a frame.
pub fn message<M: DeserializeOwned>(data: &[u8]) {
    let _ = cohort_core::decode::<M>(data, Limits::default().message_bytes_max);
}

/// The body of `POST /v1/tasks`.
pub fn submit_body(data: &[u8]) {
    if let Ok((_, task)) = crate::http::parse_submit(data) {
        let _ = Limits::default().check_task(&task);
    }
}

/// A `cohort node --config` file.
pub fn node_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::NodeFile::parse(text);
    }
}

/// A data file's identity record.
pub fn storage_identity(data: &[u8]) {
    let _ = crate::storage::decode_identity(data);
}

/// A write-ahead log's bytes, as read at open (bound to the identity its
/// own header names, so the records behind a valid header are reached).
/// Whatever it yields must be a batch the bytes hold: parsing it again
/// from its own encoding gives the same batch.
pub fn wal_log(data: &[u8]) {
    let identity = data
        .get(8..16)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let path = std::path::Path::new("fuzz.wal");
    if let Ok(parsed) = crate::wal::parse(data, identity, path) {
        assert!(
            parsed.end <= data.len().max(24),
            "the end is within the log"
        );
        if let Some((from, to)) = parsed.torn {
            assert!(from == parsed.end && from <= to && to <= data.len());
        }
    }
}

/// A data file's key-value records (postcard `Vec<(key, value)>`, or else
/// the whole input as the value of each key the modes use), handed to mode
/// `N`'s boot (through [`crate::boot_checked`], as a node boots), which
/// decodes what it persisted and must refuse, not panic on, what it cannot.
/// Returns whether it booted.
pub fn boot_from_records<N: Node>(data: &[u8], config: &N::Config) -> bool {
    boot_error_from_records::<N>(data, config).is_none()
}

/// Like [`boot_from_records`], returning why mode `N` refused the records.
pub fn boot_error_from_records<N: Node>(
    data: &[u8],
    config: &N::Config,
) -> Option<cohort_core::BootError> {
    let ops: Vec<StoreOp> = match postcard::from_bytes::<Vec<(Vec<u8>, Vec<u8>)>>(data) {
        Ok(kv) => kv
            .into_iter()
            .map(|(key, value)| StoreOp::Put { key, value })
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut stored = Stored::new();
    stored.apply(&ops);
    let peers = Peers::new(
        NodeId(1),
        [NodeId(1), NodeId(2), NodeId(3)],
        2,
        Limits::default(),
    )
    .expect("a valid 3-node cluster");
    crate::boot_checked::<N>(
        &peers,
        config,
        &stored,
        NodeRng::seed_from_u64(1),
        cohort_core::Time::ZERO,
    )
    .err()
}
