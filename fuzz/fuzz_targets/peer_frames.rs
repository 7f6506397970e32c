#![no_main]
//! A peer's frame stream after the handshake, decoded as each mode's messages.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::peer_frames::<cohort_static::StaticMessage>(data);
    cohort_runtime::fuzzing::peer_frames::<cohort_leader::LeaderMsg>(data);
    cohort_runtime::fuzzing::peer_frames::<cohort_leaderless::LeaderlessMessage>(data);
});
