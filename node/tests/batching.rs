//! Concurrent calls of one client session travel together: the client
//! library coalesces them into `ExecuteBatch` and `QueryBatch` calls, and
//! each call still gets exactly its own outcome, as if it had gone alone.

mod common;
use client::pb::quorumlite_client::QuorumliteClient;
use client::pb::{self, execute_outcome, query_outcome};
use client::{Consistency, ErrorCode, Value};
use common::{int, rows, samples, scrape, stmt, text, Cluster};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;

const TASKS: i64 = 96;
const WRITES: i64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_batch_calls_and_each_keeps_its_own_outcome() {
    let (cluster, metrics) = Cluster::start_with_metrics(3);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let db = cluster.client();
    db.execute(vec![
        "CREATE TABLE t(task INTEGER NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (task, k))".into(),
        "INSERT INTO t VALUES (-1, -1)".into(),
    ])
    .await
    .expect("setup");

    // Writes: 96 tasks of one session start together, each sending its 5
    // writes at once: 480 calls, far more than the client sends unbatched
    // (32 to a node), so some must travel together. Some are bad SQL or
    // break the primary key; those fail alone.
    let start = Arc::new(Barrier::new(TASKS as usize));
    let writers: Vec<_> = (0..TASKS)
        .map(|task| {
            let (db, start) = (db.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let writes = (0..WRITES).map(|k| {
                    let db = db.clone();
                    async move {
                        let (sql, params) = match (task % 8, k) {
                            (0, 2) => ("INSRT INTO t VALUES (?, ?)", vec![int(task), int(k)]),
                            (1, 3) => ("INSERT INTO t VALUES (?, ?)", vec![int(-1), int(-1)]),
                            _ => ("INSERT INTO t VALUES (?, ?)", vec![int(task), int(k)]),
                        };
                        let outcome = db.execute(vec![stmt(sql, params)]).await;
                        match (task % 8, k) {
                            (0, 2) => {
                                let e = outcome.expect_err("bad SQL");
                                assert_eq!(e.code, ErrorCode::SqlError, "{e}");
                                assert!(e.message.contains("syntax error"), "{e}");
                            }
                            (1, 3) => {
                                let e = outcome.expect_err("duplicate key");
                                assert_eq!(
                                    e.sqlite_code.as_deref(),
                                    Some("SQLITE_CONSTRAINT"),
                                    "{e}"
                                );
                            }
                            _ => {
                                let r = outcome.unwrap_or_else(|e| panic!("write {task}/{k}: {e}"));
                                assert_eq!(r.results[0].rows_affected, 1);
                                assert!(r.token.version() > 0);
                            }
                        }
                    }
                });
                futures::future::join_all(writes).await;
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer task");
    }
    let failed = TASKS / 8 * 2;
    let count = rows(&db, "SELECT count(*) FROM t WHERE task >= 0").await;
    assert_eq!(count, vec![vec![int(TASKS * WRITES - failed)]]);

    // Reads on a follower: each task reads its own rows at the session's
    // token, and sends a bad statement and a write, which fail alone.
    let reader = cluster.client_of(follower);
    reader.observe(db.token());
    let start = Arc::new(Barrier::new(TASKS as usize));
    let readers: Vec<_> = (0..TASKS)
        .map(|task| {
            let (reader, start) = (reader.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                for k in 0..WRITES {
                    let level = match k % 3 {
                        0 => Consistency::Session(None),
                        1 => Consistency::Linearizable,
                        _ => Consistency::Stale { max_lag: None },
                    };
                    let sql = stmt(
                        "SELECT k FROM t WHERE task = ? AND k = ?",
                        vec![int(task), int(k)],
                    );
                    let got = reader.query(sql, level).await.expect("read").rows;
                    let missing = (task % 8 == 0 && k == 2) || (task % 8 == 1 && k == 3);
                    let want: Vec<Vec<Value>> = if missing { vec![] } else { vec![vec![int(k)]] };
                    assert_eq!(got, want, "task {task} k {k}");
                }
                let e = reader
                    .query("SELEC 1", Consistency::Session(None))
                    .await
                    .expect_err("bad SQL");
                assert_eq!(e.code, ErrorCode::SqlError, "{e}");
                let e = reader
                    .query("DELETE FROM t", Consistency::Session(None))
                    .await
                    .expect_err("a write sent as a read");
                assert_eq!(e.code, ErrorCode::NotAllowed, "{e}");
            })
        })
        .collect();
    for r in readers {
        r.await.expect("reader task");
    }
    let count = rows(&db, "SELECT count(*) FROM t WHERE task >= 0").await;
    assert_eq!(
        count,
        vec![vec![int(TASKS * WRITES - failed)]],
        "a read wrote"
    );

    // They did travel in batches: batch calls of two items or more, on
    // any node (a leader change under this load moves them).
    let scraped = tokio::task::spawn_blocking(move || {
        metrics
            .iter()
            .map(|m| samples(&scrape(m).expect("scrape")))
            .collect::<Vec<_>>()
    })
    .await
    .expect("scrape task");
    let batched = |kind: &str| {
        let all = format!(r#"quorumlite_batch_call_items_count{{kind="{kind}"}}"#);
        let single = format!(r#"quorumlite_batch_call_items_bucket{{kind="{kind}",le="1"}}"#);
        scraped
            .iter()
            .map(|s| s.get(&all).copied().unwrap_or(0.0) - s.get(&single).copied().unwrap_or(0.0))
            .sum::<f64>()
    };
    assert!(batched("write") >= 1.0, "no write batch call");
    assert!(batched("read") >= 1.0, "no read batch call");
}

/// A batch call sent by hand: its items' outcomes in order, a follower
/// passing a write batch to the leader, and the limits on its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_call_answers_each_item_in_order_and_refuses_empty_or_huge_batches() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let db = cluster.client();
    db.execute(vec!["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)".into()])
        .await
        .expect("setup");
    let mut rpc = QuorumliteClient::connect(format!("http://{}", cluster.addr(follower)))
        .await
        .expect("connect");
    let write = |sql: &str| pb::ExecuteRequest {
        statements: vec![stmt(sql, vec![]).into()],
        ..Default::default()
    };
    // Through a follower: passed to the leader as one call.
    let reply = rpc
        .execute_batch(pb::ExecuteBatchRequest {
            writes: vec![
                write("INSERT INTO t VALUES (1, 'a')"),
                write("INSERT INTO nope VALUES (1)"),
                write("INSERT INTO t VALUES (1, 'again')"),
                write("INSERT INTO t VALUES (2, 'b')"),
            ],
        })
        .await
        .expect("execute batch")
        .into_inner();
    let codes: Vec<String> = reply
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(execute_outcome::Outcome::Ok(r)) => {
                assert_eq!(r.results[0].rows_affected, 1);
                "ok".to_owned()
            }
            Some(execute_outcome::Outcome::Error(e)) => e.code.clone(),
            None => "none".to_owned(),
        })
        .collect();
    assert_eq!(codes, ["ok", "SQL_ERROR", "SQL_ERROR", "ok"]);
    let token = match &reply.outcomes[3].outcome {
        Some(execute_outcome::Outcome::Ok(r)) => r.token.clone(),
        other => panic!("{other:?}"),
    };

    let read = |sql: &str| pb::QueryRequest {
        statement: Some(stmt(sql, vec![]).into()),
        consistency: pb::Consistency::Session as i32,
        token: token.clone(),
        max_lag_ms: 0,
        timeout_ms: 0,
    };
    let reply = rpc
        .query_batch(pb::QueryBatchRequest {
            queries: vec![
                read("SELECT v FROM t ORDER BY id"),
                read("SELECT * FROM nope"),
                pb::QueryRequest {
                    token: "not a token".into(),
                    ..read("SELECT 1")
                },
                read("SELECT count(*) FROM t"),
            ],
        })
        .await
        .expect("query batch")
        .into_inner();
    let summary: Vec<String> = reply
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(query_outcome::Outcome::Ok(r)) => format!("{} rows", r.rows.len()),
            Some(query_outcome::Outcome::Error(e)) => e.code.clone(),
            None => "none".to_owned(),
        })
        .collect();
    assert_eq!(summary, ["2 rows", "SQL_ERROR", "BAD_TOKEN", "1 rows"]);

    for n in [0, client::MAX_BATCH_ITEMS + 1] {
        let status = rpc
            .query_batch(pb::QueryBatchRequest {
                queries: vec![read("SELECT 1"); n],
            })
            .await
            .expect_err("refused");
        let e = client::Error::from_status(&status, "follower");
        assert_eq!(e.code, ErrorCode::BadRequest, "{n} items: {e}");
        let status = rpc
            .execute_batch(pb::ExecuteBatchRequest {
                writes: vec![write("INSERT INTO t(v) VALUES ('x')"); n],
            })
            .await
            .expect_err("refused");
        let e = client::Error::from_status(&status, "follower");
        assert_eq!(e.code, ErrorCode::BadRequest, "{n} items: {e}");
    }
    assert_eq!(
        rows(&db, "SELECT count(*) FROM t").await,
        vec![vec![int(2)]],
        "a refused batch wrote"
    );
}

/// Under a request cap smaller than a batch: reads that were coalesced
/// and refused together are sent again one by one and all succeed; writes
/// refused together fail `TOO_LARGE` and leave no trace (a write is never
/// sent twice: "too large" might have been its reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_small_request_cap_refused_read_batches_are_resent_alone() {
    let cluster = Cluster::start(3, &["--max-request-bytes", "1024"]);
    cluster.leader(Duration::from_secs(10)).await;
    let db = cluster.client();
    db.execute(vec!["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)".into()])
        .await
        .expect("setup");
    // About 300 bytes each: alone under the cap, four together over it.
    let padding = "x".repeat(250);
    let start = Arc::new(Barrier::new(40));
    let readers: Vec<_> = (0..40)
        .map(|i| {
            let (db, start, padding) = (db.clone(), start.clone(), padding.clone());
            tokio::spawn(async move {
                start.wait().await;
                let sql = stmt(&format!("SELECT ?1 /* {padding} */"), vec![int(i)]);
                let got = db.query(sql, Consistency::Session(None)).await;
                got.unwrap_or_else(|e| panic!("read {i}: {e}")).rows
            })
        })
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.await.expect("task"), vec![vec![int(i as i64)]]);
    }

    let start = Arc::new(Barrier::new(40));
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let (db, start, padding) = (db.clone(), start.clone(), padding.clone());
            tokio::spawn(async move {
                start.wait().await;
                let sql = stmt(
                    "INSERT INTO t VALUES (?1, ?2)",
                    vec![int(i), text(&padding)],
                );
                db.execute(vec![sql]).await
            })
        })
        .collect();
    let mut written = 0;
    for w in writers {
        match w.await.expect("task") {
            Ok(_) => written += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::TooLarge, "{e}"),
        }
    }
    assert!(written > 0, "even lone writes failed");
    assert_eq!(
        rows(&db, "SELECT count(*) FROM t").await,
        vec![vec![int(written)]],
        "a refused write left a trace, or a write was lost"
    );
}
