//! The log store under an emulated power cut. A child process appends
//! entries and reports each index once openraft's flush callback fired,
//! with `power_cut_shim.c` preloaded: it keeps beside the log what a disk
//! would hold if the power went out, that is what was fsynced, in the files
//! and in the directories. After a SIGKILL the log directory is replaced
//! with that state and reopened: every acknowledged entry must be there,
//! whole.
//!
//! `log_store_crash.rs` kills the process only; the kernel then still
//! writes out everything in its page cache, so it cannot tell a synced
//! write from one that was merely written. This test can: sled's own
//! `sync_file_range` (no disk cache flush, no metadata) and its unsynced
//! blob files (items over a quarter segment) both fail it.

mod common;

use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, RaftLogReader};
use raft::{Command, LogStore};
use std::path::{Path, PathBuf};
use std::process::Command as Process;

const CHILD_ENV: &str = "QUORUMLITE_POWER_CUT_DIR";

/// Entry `index`'s payload. Every tenth is over sled's blob threshold
/// (128 KiB with its 512 KiB segments), so it goes to a file of its own;
/// the rest fill the log's leaves until the leaves themselves are blobs.
fn payload(index: u64) -> Vec<u8> {
    let len = if index.is_multiple_of(10) {
        150 << 10
    } else {
        16 << 10
    };
    vec![(index % 251) as u8; len]
}

/// Runs only inside the child process.
#[test]
fn power_cut_child_appends_entries() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        common::append_and_report(&dir, payload);
    }
}

/// Build the shim with the C compiler the bundled SQLite builds with.
fn build_shim(out: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/power_cut_shim.c");
    let lib = out.join("power_cut_shim.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Process::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&source)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("running {cc} to build the power cut shim: {e}"));
    assert!(
        status.success(),
        "{cc} could not build {}",
        source.display()
    );
    lib
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_a_power_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shim = build_shim(dir.path());
    let log = dir.path().join("log");
    let shadow = dir.path().join("shadow");
    std::fs::create_dir(&log).expect("mkdir");

    let acked = common::acknowledged_before_sigkill(
        "power_cut_child_appends_entries",
        &[
            (CHILD_ENV, log.as_os_str()),
            ("LD_PRELOAD", shim.as_os_str()),
            ("QL_POWER_CUT_DATA", log.as_os_str()),
            ("QL_POWER_CUT_SHADOW", shadow.as_os_str()),
        ],
        120,
    );

    let blobs = std::fs::read_dir(log.join("blobs")).map_or(0, |d| d.count());
    assert!(blobs > 0, "sled wrote no blob file: the test missed them");

    // The power cut: the disk holds what was made durable, nothing more.
    std::fs::remove_dir_all(&log).expect("remove the log");
    copy_tree(&shadow.join("tree"), &log);

    let mut store = LogStore::open(&log).expect("reopen after the power cut");
    let state = store.get_log_state().await.expect("state");
    let last = state.last_log_id.map_or(0, |id| id.index);
    assert!(
        last >= acked,
        "acknowledged up to {acked}, only {last} survived the power cut"
    );
    let entries = store
        .try_get_log_entries(1..=acked)
        .await
        .expect("read the acknowledged entries");
    assert_eq!(entries.len() as u64, acked, "entries missing");
    for (entry, index) in entries.iter().zip(1..) {
        assert_eq!(entry.log_id.index, index, "gap in the log");
        let EntryPayload::Normal(Command::Batch { bytes, .. }) = &entry.payload else {
            panic!("entry {index} is not the batch appended");
        };
        assert!(*bytes == payload(index), "entry {index} came back changed");
    }
}
