//! The state machine with real frame batches: apply through openraft's
//! trait, stream a snapshot to another node, and reopen after a crash.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use raft::{Command, Entry, Part, Proposal, Response, StateMachine, MAX_ENTRY_BYTES};
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
            payload: EntryPayload::Normal(Command::batch(out.batch.expect("batch").encode())),
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
        payload: EntryPayload::Normal(Command::batch(out.batch.expect("batch").encode())),
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
            payload: EntryPayload::Normal(Command::batch(out.batch.expect("batch").encode())),
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

fn entry(index: u64, payload: EntryPayload<raft::TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(index),
        payload,
    }
}

fn batch_of(executor: &mut Executor, sql: &str) -> Vec<u8> {
    let out = executor
        .execute(&[WriteRequest::sql(sql)])
        .expect("execute");
    assert!(out.results[0].is_ok(), "{sql}: {:?}", out.results[0]);
    out.batch.expect("batch").encode()
}

fn part(p: &Part) -> EntryPayload<raft::TypeConfig> {
    EntryPayload::Normal(Command::Part(p.clone()))
}

/// A state machine in `<dir>/node` and an executor on its file, with
/// `t(id INTEGER PRIMARY KEY, v BLOB)` created by the batch at index 1;
/// that batch too.
async fn with_table() -> (tempfile::TempDir, StateMachine, Executor, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node");
    let config = StorageConfig::default();
    let mut sm = StateMachine::open(&path, &config).expect("open");
    let mut executor = Executor::open(path.join("data.db"), &config).expect("executor");
    let create = batch_of(
        &mut executor,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
    );
    sm.apply([entry(
        1,
        EntryPayload::Normal(Command::batch(create.clone())),
    )])
    .await
    .expect("create");
    (dir, sm, executor, create)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_parts_is_applied_with_its_last_part_even_across_a_restart() {
    let (dir, mut sm, mut executor, create) = with_table().await;
    let (path, config) = (dir.path().join("node"), StorageConfig::default());
    let big = batch_of(
        &mut executor,
        "INSERT INTO t(v) VALUES (randomblob(3000000))",
    );
    let parts = Part::split(7, &big, MAX_ENTRY_BYTES);
    assert!(parts.len() >= 3, "{} parts", parts.len());

    // The log: the first part, a blank entry (a new term), the other parts.
    let mut log = vec![entry(2, part(&parts[0])), entry(3, EntryPayload::Blank)];
    for (i, p) in parts[1..].iter().enumerate() {
        log.push(entry(4 + i as u64, part(p)));
    }
    let last = 3 + parts.len() as u64 - 1;
    let replies = sm.apply(log[..3].to_vec()).await.expect("first parts");
    assert_eq!(
        replies,
        vec![Response::PartKept, Response::None, Response::PartKept]
    );

    // A snapshot taken now, and a restart, stand before the first part.
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1)));
    drop(sm);
    let mut sm = StateMachine::open(&path, &config).expect("reopen");
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(1)));

    // openraft replays every entry after that position.
    let replies = sm.apply(log.clone()).await.expect("replay");
    assert_eq!(replies.last(), Some(&Response::Applied { version: 2 }));
    assert!(replies[..replies.len() - 1]
        .iter()
        .all(|r| matches!(r, Response::PartKept | Response::None)));
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(last)));

    // Byte for byte what the whole batch in one entry makes.
    let mut whole = StateMachine::open(dir.path().join("whole"), &config).expect("open");
    whole
        .apply([
            entry(1, EntryPayload::Normal(Command::batch(create))),
            entry(2, EntryPayload::Normal(Command::batch(big))),
        ])
        .await
        .expect("whole");
    assert_eq!(digest(&sm), digest(&whole));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_of_a_batch_that_never_completes_are_dropped_unapplied() {
    let (dir, mut sm, mut executor, create) = with_table().await;
    let config = StorageConfig::default();
    let big = batch_of(
        &mut executor,
        "INSERT INTO t(v) VALUES (randomblob(2500000))",
    );
    let small = batch_of(&mut executor, "INSERT INTO t(v) VALUES (x'01')");
    let parts = Part::split(1, &big, MAX_ENTRY_BYTES);
    assert!(parts.len() >= 3);

    // The leader proposing the parts was deposed after the first; the next
    // leader's batch comes, then a straggler part of the dropped batch.
    let other_term = LogId::new(CommittedLeaderId::new(2, 2), 0);
    let replies = sm
        .apply([
            entry(2, part(&parts[0])),
            entry(3, EntryPayload::Normal(Command::batch(small.clone()))),
            entry(4, part(&parts[1])),
            // The same batch id under another leader names another batch.
            entry(5, part(&parts[0])),
            Entry {
                log_id: LogId::new(other_term.leader_id, 6),
                payload: part(&parts[1]),
            },
        ])
        .await
        .expect("apply");
    assert_eq!(
        replies,
        vec![
            Response::PartKept,
            Response::Applied { version: 2 },
            Response::PartsMissing,
            Response::PartKept,
            Response::PartsMissing,
        ]
    );
    let mut without = StateMachine::open(dir.path().join("without"), &config).expect("open");
    without
        .apply([
            entry(1, EntryPayload::Normal(Command::batch(create))),
            entry(2, EntryPayload::Normal(Command::batch(small))),
        ])
        .await
        .expect("apply");
    assert_eq!(digest(&sm), digest(&without));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_snapshot_opens_while_newer_ones_replace_it() {
    // openraft builds snapshots in a task of their own while its state
    // machine worker serves `get_current_snapshot` (to stream one to a
    // follower). Each build deletes the file of the one before; a reader
    // must get a snapshot it can read, never a "no such file" error (which
    // openraft treats as fatal: the node's Raft stops).
    let (_dir, mut sm, mut executor, _) = with_table().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (mut sm, stop) = (sm.clone(), stop.clone());
        tokio::spawn(async move {
            let mut opened = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(s) = sm.get_current_snapshot().await.expect("current snapshot") {
                    let len = s.snapshot.metadata().await.expect("image metadata").len();
                    assert!(len > 0, "{} is empty", s.meta.snapshot_id);
                    opened += 1;
                }
                tokio::task::yield_now().await;
            }
            opened
        })
    };
    for i in 0..100u64 {
        let bytes = batch_of(
            &mut executor,
            &format!("INSERT INTO t(v) VALUES (randomblob({}))", 100 + i),
        );
        sm.apply([entry(2 + i, EntryPayload::Normal(Command::batch(bytes)))])
            .await
            .expect("apply");
        sm.build_snapshot().await.expect("build");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = reader.await.expect("the reader did not fail");
    assert!(opened > 0, "the reader never opened a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposer_hears_its_batch_committed_before_it_is_applied_and_nothing_if_skipped() {
    let (_dir, mut sm, mut executor, _) = with_table().await;
    let insert = batch_of(&mut executor, "INSERT INTO t(v) VALUES (1)");
    let notices = sm.commit_notices();
    let ours = |number| Proposal {
        leader: CommittedLeaderId::new(1, 1),
        number,
    };
    let first = notices.register(ours(7));
    // The same bytes proposed again (base 1 again): skipped at apply.
    let mut again = notices.register(ours(8));
    // Number 7 of another leader: not the entry at index 2.
    let mut foreign = notices.register(Proposal {
        leader: CommittedLeaderId::new(1, 2),
        number: 7,
    });
    let batch = |proposal| {
        EntryPayload::Normal(Command::Batch {
            bytes: insert.clone(),
            proposal,
        })
    };
    let entries = [entry(2, batch(7)), entry(3, batch(8))];
    sm.delay_applies(std::time::Duration::from_millis(800));
    let mut applied = sm.applied_version();
    let apply = tokio::spawn(async move { sm.apply(entries).await });

    let version = tokio::time::timeout(std::time::Duration::from_millis(400), first)
        .await
        .expect("the notice comes before the (delayed) apply")
        .expect("the batch applies");
    assert_eq!(version, 2);
    assert_eq!(*applied.borrow_and_update(), 1, "not applied yet");
    // The apply goes through both entries before it sleeps: the skipped
    // one's notice is dropped unsent, not sent (no version).
    let skipped = tokio::time::timeout(std::time::Duration::from_millis(300), &mut again).await;
    assert!(
        matches!(skipped, Ok(Err(_))),
        "a batch that will be skipped is not announced: {skipped:?}"
    );

    let replies = apply.await.expect("join").expect("apply");
    assert_eq!(
        replies,
        vec![
            Response::Applied { version: 2 },
            Response::AlreadyApplied { current: 2 }
        ]
    );
    assert!(
        matches!(
            foreign.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ),
        "another leader's entry with the same number is not ours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_deletes_snapshot_images_a_crash_left_half_written() {
    let (dir, sm, _executor, _) = with_table().await;
    let mut builder = sm.clone();
    builder.build_snapshot().await.expect("snapshot");
    drop(builder);
    drop(sm);
    let snapshots = dir.path().join("node/snapshots");
    std::fs::write(snapshots.join("1-1-9-v3.4.tmp"), b"half an image").expect("tmp");
    std::fs::write(snapshots.join("incoming-2.part"), b"half a transfer").expect("part");
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&snapshots).len(), 3);

    let mut sm =
        StateMachine::open(dir.path().join("node"), &StorageConfig::default()).expect("reopen");
    let left = names(&snapshots);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(".snap"), "{left:?}");
    assert!(sm.get_current_snapshot().await.expect("current").is_some());
}
