//! Bad input gets a clear error and changes nothing: malformed SQL, wrong
//! parameter types and counts, a token from another cluster, requests over
//! the size caps, an address nobody serves.

mod common;
use client::{Client, ClientConfig, Consistency, ErrorCode, Statement, Token, Value};
use common::{int, rows, stmt, text, Cluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_clear_error_and_leaves_no_trace() {
    let cluster = Cluster::start(
        3,
        &[
            "--max-request-bytes",
            "65536",
            "--max-batch-bytes",
            "262144",
        ],
    );
    cluster.leader(Duration::from_secs(10)).await;
    let db = cluster.client();
    db.execute(vec![
        "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT".into(),
        "INSERT INTO t VALUES (1, 10)".into(),
    ])
    .await
    .expect("setup");
    let before = db.token();

    // (request, expected code, a word the message must hold)
    let big_sql = format!(
        "INSERT INTO t VALUES (2, length('{}'))",
        "x".repeat(100_000)
    );
    let cases: Vec<(Vec<Statement>, ErrorCode, &str)> = vec![
        (
            vec!["INSRT INTO t VALUES (2, 1)".into()],
            ErrorCode::SqlError,
            "syntax error",
        ),
        (
            vec!["INSERT INTO nowhere VALUES (1)".into()],
            ErrorCode::SqlError,
            "no such table",
        ),
        (
            vec![stmt(
                "INSERT INTO t VALUES (?, ?)",
                vec![int(2), text("not a number")],
            )],
            ErrorCode::SqlError,
            "cannot store TEXT value in INTEGER column",
        ),
        (
            vec![stmt("INSERT INTO t VALUES (?, ?)", vec![int(2)])],
            ErrorCode::BadParams,
            "parameters",
        ),
        (
            // The second statement fails: the first must not stay behind.
            vec![
                "INSERT INTO t VALUES (3, 30)".into(),
                "INSERT INTO t VALUES (1, 11)".into(),
            ],
            ErrorCode::SqlError,
            "UNIQUE constraint failed",
        ),
        (
            vec!["BEGIN".into()],
            ErrorCode::NotAllowed,
            "transaction control",
        ),
        (
            vec!["ATTACH 'x.db' AS x".into()],
            ErrorCode::NotAllowed,
            "ATTACH",
        ),
        (
            vec![big_sql.as_str().into()],
            ErrorCode::TooLarge,
            "size cap",
        ),
        (vec![], ErrorCode::BadRequest, "no statement"),
        (vec!["   ".into()], ErrorCode::BadRequest, "no SQL"),
    ];
    for (request, code, words) in cases {
        let what = format!(
            "{:?}",
            request.first().map(|s| &s.sql[..s.sql.len().min(40)])
        );
        let err = db.execute(request).await.expect_err(&what);
        assert_eq!(err.code, code, "{what}: {err}");
        assert!(err.message.contains(words), "{what}: {err}");
    }
    // A batch over the batch cap (big pages, not big SQL) is TOO_LARGE too.
    let err = db
        .execute(vec![
            "CREATE TABLE big(b BLOB)".into(),
            "INSERT INTO big VALUES (randomblob(400000))".into(),
        ])
        .await
        .expect_err("batch over the cap");
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");

    // Reads: a write sent as a read, a malformed token, another cluster's token.
    let err = db
        .query("DELETE FROM t", Consistency::Linearizable)
        .await
        .expect_err("a write as a read");
    assert_eq!(err.code, ErrorCode::NotAllowed, "{err}");
    let other = Cluster::start(1, &[]);
    let foreign = other.client();
    let foreign_token = foreign
        .execute(vec!["CREATE TABLE x(a)".into()])
        .await
        .expect("the other cluster writes")
        .token;
    assert_ne!(foreign_token.lineage(), before.lineage());
    for id in 1..=3 {
        let err = cluster
            .client_of(id)
            .query(
                "SELECT 1",
                Consistency::Session(Some(foreign_token.clone())),
            )
            .await
            .expect_err("a token from another cluster");
        assert_eq!(err.code, ErrorCode::LineageMismatch, "node {id}: {err}");
        assert!(err.message.contains("another cluster"), "{err}");
    }
    let far_future = Token::new(before.lineage(), before.version() + 1_000_000).expect("token");
    let err = Client::with_config(
        [cluster.addr(2)],
        ClientConfig {
            retry_budget: Duration::from_millis(100),
            ..ClientConfig::default()
        },
    )
    .expect("client")
    .query("SELECT 1", Consistency::Session(Some(far_future)))
    .await
    .expect_err("a version no node has");
    assert_eq!(err.code, ErrorCode::ReplicaBehind, "{err}");

    // An address nobody serves.
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let err = Client::with_config(
        [nowhere.as_str()],
        ClientConfig {
            retry_budget: Duration::from_millis(200),
            ..ClientConfig::default()
        },
    )
    .expect("client")
    .execute(vec!["INSERT INTO t VALUES (9, 9)".into()])
    .await
    .expect_err("nobody there");
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(err.message.contains(&nowhere), "{err}");

    // Nothing of the above was written; the cluster still works.
    assert_eq!(
        rows(&db, "SELECT id, n FROM t ORDER BY id").await,
        vec![vec![int(1), int(10)]]
    );
    let after = db
        .execute(vec![stmt(
            "INSERT INTO t VALUES (?, ?)",
            vec![int(2), int(20)],
        )])
        .await
        .expect("a good write after the bad ones");
    assert_eq!(after.results[0].rows_affected, 1);
    assert_eq!(
        rows(&db, "SELECT count(*) FROM t").await,
        vec![vec![Value::Integer(2)]]
    );
}
