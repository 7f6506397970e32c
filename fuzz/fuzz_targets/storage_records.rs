#![no_main]
//! A data file's identity record and key-value records, booted by each mode.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::storage_identity(data);
    let _ = cohort_runtime::fuzzing::boot_from_records::<cohort_static::StaticNode>(data, &Default::default());
    let _ = cohort_runtime::fuzzing::boot_from_records::<cohort_leader::LeaderNode>(data, &Default::default());
    let _ = cohort_runtime::fuzzing::boot_from_records::<cohort_leaderless::LeaderlessNode>(data, &Default::default());
});
