#![no_main]
//! A cohort node --config TOML file.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::node_file(data);
});
