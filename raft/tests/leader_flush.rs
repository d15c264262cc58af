//! The leader replicates its entries while its own log flush runs, and
//! counts its own copy toward a commit only once that flush is done
//! (openraft patched: `vendor/README.md`). Three nodes over loopback gRPC;
//! the leader's log store is made slow (`LogStore::delay_flushes`).

mod common;

use common::{digest, listeners, start, TestNode};
use raft::{Command, Response};
use std::time::{Duration, Instant};
use storage::{Executor, Statement, StorageConfig, WriteRequest};

const SLOW_FLUSH: Duration = Duration::from_millis(1500);

/// Propose one batch; how long until it was committed and applied here.
async fn write(leader: &TestNode, executor: &mut Executor, sql: &str) -> Duration {
    let out = executor
        .execute(&[WriteRequest::new(vec![Statement::new(sql)])])
        .expect("execute");
    assert!(out.results[0].is_ok(), "{:?}", out.results[0]);
    let bytes = out.batch.expect("batch").encode();
    let started = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        leader.raft.client_write(Command::batch(bytes)),
    )
    .await
    .expect("committed within 10 s")
    .expect("propose");
    assert!(
        matches!(resp.data, Response::Applied { .. }),
        "{:?}",
        resp.data
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_commits_on_two_followers_before_the_leader_flushes_but_never_on_one() {
    let root = tempfile::tempdir().expect("tempdir");
    // Elections far above the slow flush: the leader must stay the leader.
    let config = common::config((3000, 4000), |c| c);
    let (listeners, members) = listeners(3).await;
    let mut nodes = Vec::new();
    for (id, l) in (1..).zip(listeners) {
        nodes.push(start(id, l, root.path(), config.clone()).await);
    }
    nodes[0].raft.initialize(members).await.expect("initialize");
    nodes[0]
        .raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("leader elected");
    let leader_id = nodes[0].raft.current_leader().await.expect("leader");
    let at = nodes
        .iter()
        .position(|n| n.raft.metrics().borrow().id == leader_id)
        .expect("leader among the nodes");
    let leader = nodes.remove(at);
    let mut executor =
        Executor::open(leader.dir.join("data.db"), &StorageConfig::default()).expect("executor");
    write(&leader, &mut executor, "CREATE TABLE t(x)").await;

    leader.log.delay_flushes(SLOW_FLUSH);

    // Both followers flush and answer: that quorum does not need the leader.
    let took = write(&leader, &mut executor, "INSERT INTO t VALUES (1)").await;
    assert!(
        took < SLOW_FLUSH / 2,
        "took {took:?}: the write waited for the leader's own flush"
    );

    // With one follower gone, the quorum is the leader and the other one:
    // the write must wait for the leader's flush.
    let gone = nodes.pop().expect("a follower");
    gone.stop().await;
    let took = write(&leader, &mut executor, "INSERT INTO t VALUES (2)").await;
    assert!(
        took >= SLOW_FLUSH,
        "took {took:?}: committed before the leader's own copy was on disk"
    );

    let follower = nodes.pop().expect("the other follower");
    let mut applied = follower.sm.applied_version();
    let version = *leader.sm.applied_version().borrow();
    tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|&v| v >= version))
        .await
        .expect("the follower applied in time")
        .expect("watch");
    assert_eq!(digest(&follower.sm), digest(&leader.sm));
    follower.stop().await;
    leader.stop().await;
}
