#![no_main]
//! The peer handshake: the first frame as a Hello, a HelloReply.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::peer_handshake(data);
});
