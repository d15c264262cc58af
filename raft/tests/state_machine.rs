//! The state machine with real frame batches: apply through openraft's
//! trait, stream a snapshot to another node, and reopen after a crash.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use raft::{Command, Entry, Response, StateMachine};
use storage::{Executor, Statement, StorageConfig, Value, WriteRequest};

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// A leader-side executor producing batches that the state machine applies,
/// as the node will do: execute, propose, apply, then execute the next.
struct Leader {
    executor: Executor,
    sm: StateMachine,
    next_index: u64,
}

impl Leader {
    async fn write(&mut self, sql: &str) -> Response {
        let out = self
            .executor
            .execute(&[WriteRequest::sql(sql)])
            .expect("execute");
        assert!(out.results[0].is_ok(), "{sql}: {:?}", out.results[0]);
        let entry = Entry {
            log_id: log_id(self.next_index),
            payload: EntryPayload::Normal(Command::Batch(out.batch.expect("batch").encode())),
        };
        self.next_index += 1;
        self.sm.apply([entry]).await.expect("apply")[0]
    }
}

fn digest(sm: &StateMachine) -> String {
    sm.reads().digest().expect("digest").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_apply_and_a_snapshot_rebuilds_an_identical_follower() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig::default();
    let sm = StateMachine::open(dir.path().join("leader"), &config).expect("open");
    let executor = Executor::open(dir.path().join("leader/data.db"), &config).expect("executor");
    let mut leader = Leader {
        executor,
        sm,
        next_index: 1,
    };
    let mut version = leader.sm.applied_version();
    assert_eq!(
        leader
            .write("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            .await,
        Response::Applied { version: 1 }
    );
    for _ in 0..30 {
        leader
            .write("INSERT INTO t(v) VALUES (randomblob(3000))")
            .await;
    }
    version.wait_for(|&v| v == 31).await.expect("watch");

    let snapshot = leader
        .sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(31)));

    let mut follower = StateMachine::open(dir.path().join("follower"), &config).expect("open");
    let mut incoming = follower.begin_receiving_snapshot().await.expect("begin");
    let mut source = *snapshot.snapshot;
    tokio::io::copy(&mut source, &mut *incoming)
        .await
        .expect("stream");
    follower
        .install_snapshot(&snapshot.meta, incoming)
        .await
        .expect("install");
    assert_eq!(digest(&follower), digest(&leader.sm));
    assert_eq!(
        follower.applied_state().await.expect("state").0,
        Some(log_id(31))
    );
    assert_eq!(*follower.applied_version().borrow(), 31);

    // Entries after the snapshot apply on top of it.
    let out = leader
        .executor
        .execute(&[WriteRequest::new(vec![Statement::with_params(
            "INSERT INTO t(v) VALUES (?1)",
            vec![Value::Blob(vec![1; 10])],
        )])])
        .expect("x");
    let entry = Entry {
        log_id: log_id(32),
        payload: EntryPayload::Normal(Command::Batch(out.batch.expect("batch").encode())),
    };
    for sm in [&mut leader.sm, &mut follower] {
        assert_eq!(
            sm.apply([entry.clone()]).await.expect("apply")[0],
            Response::Applied { version: 32 }
        );
    }
    assert_eq!(digest(&follower), digest(&leader.sm));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_reports_a_position_no_newer_than_the_data_and_replay_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig::default();
    let path = dir.path().join("node");
    let sm = StateMachine::open(&path, &config).expect("open");
    let executor = Executor::open(path.join("data.db"), &config).expect("executor");
    let mut leader = Leader {
        executor,
        sm,
        next_index: 1,
    };
    let mut entries = Vec::new();
    for i in 0..10 {
        let sql = if i == 0 {
            "CREATE TABLE t(a)".to_string()
        } else {
            format!("INSERT INTO t VALUES ({i})")
        };
        let out = leader
            .executor
            .execute(&[WriteRequest::sql(sql)])
            .expect("execute");
        let entry = Entry {
            log_id: log_id(i + 1),
            payload: EntryPayload::Normal(Command::Batch(out.batch.expect("batch").encode())),
        };
        leader.sm.apply([entry.clone()]).await.expect("apply");
        entries.push(entry);
    }
    let before = digest(&leader.sm);
    drop(leader);
    // Reopen: the reported position never passes the data's version, and
    // replaying the whole log skips every batch already applied.
    let mut sm = StateMachine::open(&path, &config).expect("reopen");
    let (applied, _) = sm.applied_state().await.expect("state");
    assert!(applied.is_none_or(|id| id.index <= 10));
    let replies = sm.apply(entries).await.expect("replay");
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, Response::AlreadyApplied { .. })),
        "{replies:?}"
    );
    assert_eq!(digest(&sm), before);
}
