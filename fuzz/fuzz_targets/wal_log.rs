#![no_main]
//! A write-ahead log's bytes, as a node reads them at open.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::wal_log(data);
});
