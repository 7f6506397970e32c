//! Replays every input under `fuzz/corpus/<target>/` through the function
//! its fuzz target calls, on stable Rust in the normal test suite: a decoder
//! change that panics on an input the fuzzers once found fails here, fast.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use cohort_runtime::fuzzing;
use std::path::Path;

fn run(target: &str, data: &[u8]) {
    match target {
        "peer_handshake" => fuzzing::peer_handshake(data),
        "peer_frames" => {
            fuzzing::peer_frames::<cohort_static::StaticMessage>(data);
            fuzzing::peer_frames::<cohort_leader::LeaderMsg>(data);
            fuzzing::peer_frames::<cohort_leaderless::LeaderlessMessage>(data);
        }
        "message_static" => fuzzing::message::<cohort_static::StaticMessage>(data),
        "message_leader" => fuzzing::message::<cohort_leader::LeaderMsg>(data),
        "message_leaderless" => fuzzing::message::<cohort_leaderless::LeaderlessMessage>(data),
        "submit_body" => fuzzing::submit_body(data),
        "node_config" => fuzzing::node_file(data),
        "storage_records" => {
            fuzzing::storage_identity(data);
            let _ =
                fuzzing::boot_from_records::<cohort_static::StaticNode>(data, &Default::default());
            let _ =
                fuzzing::boot_from_records::<cohort_leader::LeaderNode>(data, &Default::default());
            let _ = fuzzing::boot_from_records::<cohort_leaderless::LeaderlessNode>(
                data,
                &Default::default(),
            );
        }
        "wal_log" => fuzzing::wal_log(data),
        other => panic!("fuzz/corpus/{other} has no replay here: add its target to this match"),
    }
}

#[test]
fn every_fuzz_corpus_input_decodes_without_panicking() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut inputs = 0;
    let mut targets = 0;
    for dir in std::fs::read_dir(&corpus).expect("fuzz/corpus exists") {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        targets += 1;
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| run(&target, &data));
            assert!(r.is_ok(), "{} panics", f.display());
            inputs += 1;
        }
    }
    assert_eq!(targets, 9, "one corpus per fuzz target");
    assert!(inputs >= targets, "empty corpora");
}

/// Found by `storage_records` (2026-11-28): a `raft/log/` record that ends
/// early made `LeaderNode::boot` panic ("the node's own store decodes"),
/// taking the process down. `Node::boot` is now fallible: the record is
/// refused as corrupt, named in the error, and the runtime refuses the file.
#[test]
fn regression_a_truncated_leader_log_record_is_refused_not_a_panic() {
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions/storage_records-leader-truncated-log-entry"),
    )
    .unwrap();
    match fuzzing::boot_error_from_records::<cohort_leader::LeaderNode>(&data, &Default::default())
    {
        Some(cohort_core::BootError::Corrupt { record, .. }) => {
            assert!(record.starts_with("raft/log/"), "{record}")
        }
        other => panic!("a truncated log record booted or was misreported: {other:?}"),
    }
}

fn records(kv: &[(&[u8], &[u8])]) -> Vec<u8> {
    let kv: Vec<(Vec<u8>, Vec<u8>)> = kv.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    cohort_core::encode(&kv)
}

/// The leaderless mode's records, damaged three ways, are each refused as
/// corrupt naming the record (each was a panic in `LeaderlessNode::boot`).
#[test]
fn leaderless_boot_refuses_a_damaged_generation_record_or_task_key_naming_it() {
    let cases: [(&[u8], &[u8], &str); 3] = [
        // A generation that does not decode.
        (b"lless/swim/generation", &[0xff], "lless/swim/generation"),
        // A generation with no successor.
        (
            b"lless/swim/generation",
            &cohort_core::encode(&u64::MAX),
            "lless/swim/generation",
        ),
        // A task record that does not decode (under an odd key, too).
        (b"lless/task/short", &[], "lless/task/short"),
    ];
    for (key, value, named) in cases {
        let data = records(&[(key, value)]);
        match fuzzing::boot_error_from_records::<cohort_leaderless::LeaderlessNode>(
            &data,
            &Default::default(),
        ) {
            Some(cohort_core::BootError::Corrupt { record, .. }) => assert_eq!(record, named),
            other => panic!("{named}: booted or misreported: {other:?}"),
        }
    }
    // And the empty store boots.
    assert!(fuzzing::boot_from_records::<
        cohort_leaderless::LeaderlessNode,
    >(&records(&[]), &Default::default()));
}
