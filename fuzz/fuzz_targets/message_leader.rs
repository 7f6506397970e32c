#![no_main]
//! One leader-mode message.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::message::<cohort_leader::LeaderMsg>(data);
});
