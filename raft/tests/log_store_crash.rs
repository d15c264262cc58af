//! The log store under SIGKILL: a child process appends entries one by one
//! and reports each index once openraft's flush callback fired. After a kill
//! at an arbitrary point, every acknowledged entry must be in the reopened
//! log, with no gap. (sled alone keeps only what its 500 ms timer flushed.)

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader};
use raft::{Command, Entry, LogStore};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "QUORUMLITE_LOG_CRASH_DIR";

/// Runs only inside the child process.
#[test]
fn log_crash_child_appends_entries() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut store = LogStore::open(&dir).expect("open");
        let mut out = std::io::stdout();
        for index in 1..=100_000u64 {
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Command::batch(vec![index as u8; 200])),
            };
            // Returns once the flush callback has fired.
            store.blocking_append([entry]).await.expect("append");
            writeln!(out, "{index}").expect("stdout");
            out.flush().expect("flush");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Process::new(exe)
        .args([
            "--exact",
            "log_crash_child_appends_entries",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = 0u64;
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Ok(i) = line.trim().parse::<u64>() {
            acked = i;
        }
        if acked >= 300 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(acked > 0, "the child acknowledged nothing");

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
