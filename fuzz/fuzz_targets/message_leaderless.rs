#![no_main]
//! One leaderless-mode message (SWIM gossip, Paxos, task traffic).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_runtime::fuzzing::message::<cohort_leaderless::LeaderlessMessage>(data);
});
