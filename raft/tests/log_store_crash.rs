//! The log store under SIGKILL: a child process appends entries one by one
//! and reports each index once openraft's flush callback fired. After a kill
//! at an arbitrary point, every acknowledged entry must be in the reopened
//! log, with no gap. (sled alone keeps only what its 500 ms timer flushed.)

mod common;

use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;
use raft::LogStore;

const CHILD_ENV: &str = "QUORUMLITE_LOG_CRASH_DIR";

/// Runs only inside the child process.
#[test]
fn log_crash_child_appends_entries() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        common::append_and_report(&dir, |index| vec![index as u8; 200]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = common::acknowledged_before_sigkill(
        "log_crash_child_appends_entries",
        &[(CHILD_ENV, dir.path().as_os_str())],
        300,
    );

    let mut store = LogStore::open(dir.path()).expect("reopen");
    let state = store.get_log_state().await.expect("state");
    let last = state.last_log_id.map_or(0, |id| id.index);
    assert!(
        last >= acked,
        "acknowledged up to {acked}, only {last} survived"
    );
    let entries = store.try_get_log_entries(1..=last).await.expect("read");
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (1..=last).collect::<Vec<_>>(), "gap in the log");
}
