#![no_main]
//! One static-mode message.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::message::<cohort_static::StaticMessage>(data);
});
