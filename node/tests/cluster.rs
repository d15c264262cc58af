//! Three real `quorumlite` processes: the write path (leader and forwarded
//! writes), session reads with tokens on every node, linearizable reads on a
//! follower, and byte-identical replicas under non-deterministic SQL.

mod common;
use client::{Consistency, ErrorCode, Value};
use common::{int, stmt, text, Cluster};
use std::time::Duration;

const SECONDS_10: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_the_leader_and_on_a_follower_commit_once_and_session_reads_see_them_everywhere()
{
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(SECONDS_10).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let on_leader = cluster.client_of(leader);
    let on_follower = cluster.client_of(follower);

    on_leader
        .execute(vec![
            "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT NOT NULL)".into(),
        ])
        .await
        .expect("create");
    let a = on_leader
        .execute(vec![stmt(
            "INSERT INTO t(who) VALUES (?)",
            vec![text("leader")],
        )])
        .await
        .expect("write on the leader");
    let b = on_follower
        .execute(vec![stmt(
            "INSERT INTO t(who) VALUES (?)",
            vec![text("follower")],
        )])
        .await
        .expect("write sent to a follower (forwarded)");
    assert_eq!(a.results[0].rows_affected, 1);
    assert_eq!(b.results[0].rows_affected, 1);
    assert!(
        b.token.version() > a.token.version(),
        "{} then {}",
        a.token,
        b.token
    );
    assert_eq!(a.token.lineage(), b.token.lineage());

    // With the newest token, every node serves both writes, exactly once.
    for id in 1..=3 {
        let reader = cluster.client_of(id);
        let got = reader
            .query(
                "SELECT who FROM t ORDER BY id",
                Consistency::Session(Some(b.token.clone())),
            )
            .await
            .unwrap_or_else(|e| panic!("session read on node {id}: {e}"));
        assert_eq!(
            got.rows,
            vec![vec![text("leader")], vec![text("follower")]],
            "node {id}"
        );
        assert!(
            got.token.version() >= b.token.version(),
            "node {id}: {}",
            got.token
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_the_write_acknowledged_just_before() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(SECONDS_10).await;
    let writer = cluster.client_of(leader);
    writer
        .execute(vec![
            "CREATE TABLE c(k INTEGER PRIMARY KEY, n INTEGER NOT NULL)".into(),
            "INSERT INTO c VALUES (1, 0)".into(),
        ])
        .await
        .expect("create");
    for follower in (1..=3).filter(|&i| i != leader) {
        // A fresh client per read: no session token to lean on.
        for n in 1..=20 {
            writer
                .execute(vec![stmt("UPDATE c SET n = ? WHERE k = 1", vec![int(n)])])
                .await
                .expect("update");
            let reader = cluster.client_of(follower);
            let got = reader
                .query("SELECT n FROM c WHERE k = 1", Consistency::Linearizable)
                .await
                .expect("linearizable read on a follower");
            assert_eq!(got.rows, vec![vec![int(n)]], "follower {follower} read {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_now_and_autoincrement_read_back_identical_on_every_node_with_one_digest() {
    let cluster = Cluster::start(3, &[]);
    let client = cluster.client();
    client
        .execute(vec![
            "CREATE TABLE n(id INTEGER PRIMARY KEY AUTOINCREMENT, r INTEGER, b BLOB, at TEXT)"
                .into(),
        ])
        .await
        .expect("create");
    for _ in 0..20 {
        client
            .execute(vec![
                "INSERT INTO n(r, b, at) VALUES (random(), randomblob(64), datetime('now', 'subsec'))"
                    .into(),
                "DELETE FROM n WHERE id % 7 = 0".into(),
            ])
            .await
            .expect("insert");
    }
    let last = client
        .execute(vec![
            "INSERT INTO n(r) VALUES (random()) RETURNING id, r".into()
        ])
        .await
        .expect("returning");
    let token = last.token.clone();
    let mut seen = Vec::new();
    for id in 1..=3 {
        let got = cluster
            .client_of(id)
            .query(
                "SELECT id, r, hex(b), at FROM n ORDER BY id",
                Consistency::Session(Some(token.clone())),
            )
            .await
            .expect("read");
        assert_eq!(got.rows.len(), 21 - 2, "node {id}");
        seen.push(got.rows);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    // The RETURNING row the leader computed is the row every node holds.
    let returned = &last.results[0].rows[0];
    assert!(seen[0]
        .iter()
        .any(|r| r[0] == returned[0] && r[1] == returned[1]));
    let mut digests = Vec::new();
    for id in 1..=3 {
        cluster.wait_version(id, token.version(), SECONDS_10).await;
        digests.push(cluster.digest(id).await);
    }
    assert_eq!(digests[0], digests[1], "nodes 1 and 2");
    assert_eq!(digests[0], digests[2], "nodes 1 and 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_is_served_locally_and_refused_past_its_lag_bound_when_the_leader_is_gone() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(SECONDS_10).await;
    let client = cluster.client();
    client
        .execute(vec![
            "CREATE TABLE s(x)".into(),
            "INSERT INTO s VALUES (1)".into(),
        ])
        .await
        .expect("write");
    let follower = (1..=3).find(|&i| i != leader).expect("follower");
    cluster
        .wait_version(follower, client.token().version(), SECONDS_10)
        .await;
    let reader = cluster.client_of(follower);
    let got = reader
        .query(
            "SELECT x FROM s",
            Consistency::Stale {
                max_lag: Some(Duration::from_secs(5)),
            },
        )
        .await
        .expect("stale read with a fresh leader contact");
    assert_eq!(got.rows, vec![vec![int(1)]]);
    // Take away every other node: this one hears from no leader any more.
    for id in (1..=3).filter(|&i| i != follower) {
        cluster.kill(id);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = reader
        .query(
            "SELECT x FROM s",
            Consistency::Stale {
                max_lag: Some(Duration::from_millis(300)),
            },
        )
        .await
        .expect_err("too stale");
    assert_eq!(err.code, ErrorCode::TooStale, "{err}");
    let got = reader
        .query("SELECT x FROM s", Consistency::Stale { max_lag: None })
        .await
        .expect("an unbounded stale read is still served");
    assert_eq!(got.rows, vec![vec![Value::Integer(1)]]);
}

/// A delayed copy of a session's write (its caller was told INDETERMINATE
/// and wrote again) is refused with SUPERSEDED when it finally arrives,
/// here through a follower, and nothing of it is written. The Jepsen
/// session workload saw such a write land late before fencing existed.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_copy_of_a_session_write_is_superseded_and_not_applied() {
    use client::pb;
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster
        .client()
        .execute(vec!["CREATE TABLE f(v INTEGER)".into()])
        .await
        .expect("create");
    let mut raw = pb::quorumlite_client::QuorumliteClient::connect(format!(
        "http://{}",
        cluster.addr(follower)
    ))
    .await
    .expect("connect");
    let write = |v: i64, seq: u64, floor: u64| pb::ExecuteRequest {
        statements: vec![stmt("INSERT INTO f VALUES (?)", vec![int(v)]).into()],
        session: "jepsen-session-7".into(),
        seq,
        floor,
    };
    // Write 2 was sent after write 1 had returned (floor 1) and applies.
    raw.execute(write(2, 2, 1)).await.expect("write 2");
    // Write 1 arrives now: refused.
    let status = raw.execute(write(1, 1, 0)).await.expect_err("late write 1");
    let err = client::Error::from_status(&status, "follower");
    assert_eq!(err.code, ErrorCode::Superseded, "{err}");
    assert!(err.message.contains("not applied"), "{err}");
    // A malformed fence is a bad request.
    let status = raw.execute(write(3, 3, 3)).await.expect_err("floor = seq");
    assert_eq!(
        client::Error::from_status(&status, "follower").code,
        ErrorCode::BadRequest
    );
    let rows = cluster
        .client()
        .query("SELECT v FROM f ORDER BY v", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(rows.rows, vec![vec![int(2)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_write_through_a_follower_the_client_sends_the_next_one_to_the_leader() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = leader % 3 + 1;
    // This client knows only the follower.
    let client = cluster.client_of(follower);
    client
        .execute(vec![stmt("CREATE TABLE t(v)", vec![])])
        .await
        .expect("first write, forwarded");
    // With the follower frozen, the next write can only succeed if the
    // client learnt the leader's address from the first reply.
    common::signal(cluster.pid(follower), libc::SIGSTOP);
    let second = client
        .execute(vec![stmt("INSERT INTO t VALUES (1)", vec![])])
        .await;
    common::signal(cluster.pid(follower), libc::SIGCONT);
    second.expect("second write, straight to the leader");
}
