//! Writes whose changes are far bigger than one Raft log entry (tens of MiB
//! of pages from a few bytes of SQL) replicate in parts: no AppendEntries
//! call outlives its heartbeat-long timeout, so no follower stays behind
//! and no election starts, and every node ends up with the data.

mod common;
use common::{rows, Cluster};
use std::time::Duration;

const MB: i64 = 1000 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_tens_of_mib_replicate_in_parts_without_an_election() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let db = cluster.client();
    db.execute(vec![
        "CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB NOT NULL)".into(),
    ])
    .await
    .expect("create");
    // Asked after a committed write: at startup a node can lead term 1 for
    // a few milliseconds and step down.
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let term = cluster.status(leader).await.expect("leader status").term;
    let follower = leader % 3 + 1;

    // One through the leader, one forwarded by a follower. Before batches
    // went in parts, a 24 MB write cost two elections and a 40 MB one left
    // a follower still behind 10 s later.
    for (mb, via) in [(40, leader), (24, follower)] {
        cluster
            .client_of(via)
            .execute(vec![format!(
                "INSERT INTO b(v) VALUES (randomblob({}))",
                mb * MB
            )
            .into()])
            .await
            .unwrap_or_else(|e| panic!("{mb} MB write through node {via}: {e}"));
    }
    let version = cluster.status(leader).await.expect("leader status").version;
    for id in 1..=3 {
        let s = cluster
            .wait_version(id, version, Duration::from_secs(20))
            .await;
        assert_eq!(s.term, term, "node {id}: an election happened");
    }
    let digests: Vec<_> = futures::future::join_all((1..=3).map(|id| cluster.digest(id))).await;
    assert!(
        digests.iter().all(|d| d == &digests[0]),
        "replicas differ: {digests:?}"
    );
    let sizes = rows(&db, "SELECT count(*), sum(length(v)) FROM b").await;
    assert_eq!(
        sizes,
        vec![vec![
            client::Value::Integer(2),
            client::Value::Integer(64 * MB)
        ]]
    );

    // The cluster takes ordinary writes at once afterwards.
    db.execute(vec!["INSERT INTO b(v) VALUES (x'00')".into()])
        .await
        .expect("a small write after the large ones");
}
