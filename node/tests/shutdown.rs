//! SIGTERM on the leader under write load: the node stops promptly, every
//! in-flight write either commits or fails with a clear error, nothing
//! acknowledged is lost, and the restarted node serves again.

mod common;
use client::{Client, ClientConfig, ErrorCode};
use common::{int, rows, stmt, Cluster};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster
        .client()
        .execute(vec!["CREATE TABLE g(id INTEGER PRIMARY KEY)".into()])
        .await
        .expect("create");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for c in 0..8i64 {
        // Each writer talks to the leader only, so it sees the shutdown itself.
        let client = Client::with_config(
            [cluster.addr(leader)],
            ClientConfig {
                retry_budget: Duration::from_millis(1),
                ..ClientConfig::default()
            },
        )
        .expect("client");
        let (acked, errors) = (Arc::clone(&acked), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                i += 8;
                match client
                    .execute(vec![stmt("INSERT INTO g VALUES (?)", vec![int(i)])])
                    .await
                {
                    Ok(_) => {
                        acked.lock().expect("acked").insert(i);
                    }
                    Err(e) => {
                        errors.lock().expect("errors").push(e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stopping = Instant::now();
    let status = tokio::task::block_in_place(|| cluster.stop(leader));
    let took = stopping.elapsed();
    assert!(status.success(), "the leader exited with {status}");
    assert!(took < Duration::from_secs(8), "stopping took {took:?}");
    for t in tasks {
        t.await.expect("writer");
    }
    let errors = errors.lock().expect("errors").clone();
    assert!(!errors.is_empty(), "no write noticed the shutdown");
    for e in &errors {
        assert!(
            matches!(
                e.code,
                ErrorCode::ShuttingDown
                    | ErrorCode::Unavailable
                    | ErrorCode::Indeterminate
                    | ErrorCode::NotLeader
                    | ErrorCode::NoLeader
            ),
            "unclear error during shutdown: {e}"
        );
        assert!(!e.message.is_empty());
    }
    assert!(
        cluster.log_of(leader).contains("node stopped"),
        "no clean stop in the log"
    );
    let present: BTreeSet<i64> = rows(&cluster.client(), "SELECT id FROM g")
        .await
        .into_iter()
        .map(|r| match r[0] {
            client::Value::Integer(i) => i,
            ref v => panic!("{v:?}"),
        })
        .collect();
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    cluster.restart(leader);
    let now_leading = cluster.leader(Duration::from_secs(10)).await;
    let v = cluster.status(now_leading).await.expect("status").version;
    cluster
        .wait_version(leader, v, Duration::from_secs(10))
        .await;
}

/// A leader keeps an open append stream to each follower, and a client a
/// `Calls` stream to each node it reads from. A follower stopping must end
/// them rather than wait for their other ends: its gRPC server's orderly
/// stop waits for open calls, up to 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_follower_ends_the_streams_it_holds_and_stops_promptly() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let client = cluster.client();
    client
        .execute(vec!["CREATE TABLE f(id INTEGER PRIMARY KEY)".into()])
        .await
        .expect("create");
    let v = cluster.status(leader).await.expect("status").version;
    cluster
        .wait_version(follower, v, Duration::from_secs(10))
        .await;
    // A reader of the follower: its client keeps a stream open there.
    let reader = cluster.client_of(follower);
    reader
        .query(
            "SELECT count(*) FROM f",
            client::Consistency::Stale { max_lag: None },
        )
        .await
        .expect("read on the follower");

    let stopping = Instant::now();
    let status = tokio::task::block_in_place(|| cluster.stop(follower));
    let took = stopping.elapsed();
    assert!(status.success(), "the follower exited with {status}");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    let log = cluster.log_of(follower);
    assert!(log.contains("node stopped"), "no clean stop in the log");
    assert!(
        !log.contains("did not close"),
        "connections were left open at the stop"
    );
    drop(reader);

    // The two others still commit, and the follower catches up on restart.
    client
        .execute(vec![stmt("INSERT INTO f VALUES (?)", vec![int(1)])])
        .await
        .expect("write with one follower down");
    cluster.restart(follower);
    let v = cluster.status(leader).await.expect("status").version;
    cluster
        .wait_version(follower, v, Duration::from_secs(10))
        .await;
}
