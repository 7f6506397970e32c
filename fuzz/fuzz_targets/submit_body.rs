#![no_main]
//! The JSON body of POST /v1/tasks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::submit_body(data);
});
