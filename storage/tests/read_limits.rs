//! A read is bounded: a statement past its time limit is stopped, one
//! whose caller went away is stopped, and a result past a cap fails
//! before it takes more memory. The connection serves the next read.
//! Issue 20 (robustness), "bounded reads".

mod common;

use common::Pair;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{Limits, ReadError, RequestError, Statement, Value};

/// About 3 s of CPU on this machine without a limit.
const HEAVY: &str = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<30000000) SELECT count(*) FROM c";

fn pair_with_rows(n: usize) -> Pair {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    p.exec(&format!(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<{n}) INSERT INTO t SELECT i, printf('%0100d', i) FROM c"
    ));
    p
}

#[test]
fn a_statement_past_its_time_limit_is_stopped_and_the_connection_serves_the_next_read() {
    let p = pair_with_rows(10);
    let limits = Limits {
        timeout: Some(Duration::from_millis(200)),
        ..Limits::none()
    };
    let started = Instant::now();
    let err = p
        .replica
        .reads
        .query(&Statement::new(HEAVY), &limits)
        .expect_err("stopped");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "stopped in {took:?}");
    match err {
        ReadError::Request(e @ RequestError::TimedOut { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("200 ms") && text.contains("timeout_ms"),
                "{text}"
            );
            assert_eq!(e.code(), "SQLITE_INTERRUPT");
        }
        other => panic!("{other:?}"),
    }
    let after = p
        .replica
        .reads
        .query(&Statement::new("SELECT count(*) FROM t"), &limits)
        .expect("the next read");
    assert_eq!(after.rows, vec![vec![Value::Integer(10)]]);
}

#[test]
fn a_statement_whose_caller_went_away_is_stopped() {
    let p = pair_with_rows(10);
    let cancel = Arc::new(AtomicBool::new(false));
    let limits = Limits {
        cancel: Some(Arc::clone(&cancel)),
        ..Limits::none()
    };
    let flag = Arc::clone(&cancel);
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, Ordering::Relaxed);
    });
    let started = Instant::now();
    let err = p
        .replica
        .reads
        .query(&Statement::new(HEAVY), &limits)
        .expect_err("cancelled");
    canceller.join().expect("join");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(err, ReadError::Request(RequestError::Cancelled { .. })),
        "{err:?}"
    );
}

#[test]
fn a_result_past_a_cap_fails_with_how_to_page_it() {
    let p = pair_with_rows(2000);
    let rows = Limits {
        max_rows: 1000,
        ..Limits::none()
    };
    let err = p
        .replica
        .reads
        .query(&Statement::new("SELECT * FROM t"), &rows)
        .expect_err("over the row cap");
    let text = err.to_string();
    assert!(
        text.contains("1000 rows") && text.contains("LIMIT") && text.contains("max_result_rows"),
        "{text}"
    );
    let bytes = Limits {
        max_bytes: 100_000,
        ..Limits::none()
    };
    let err = p
        .replica
        .reads
        .query(&Statement::new("SELECT * FROM t"), &bytes)
        .expect_err("over the byte cap");
    assert!(
        matches!(
            err,
            ReadError::Request(RequestError::ResultTooLarge { unit: "bytes", .. })
        ),
        "{err:?}"
    );
    // Within the caps: the whole result.
    let ok = p
        .replica
        .reads
        .query(&Statement::new("SELECT * FROM t WHERE id <= 500"), &bytes)
        .expect("within");
    assert_eq!(ok.rows.len(), 500);
}

#[test]
fn limits_apply_to_each_read_of_a_batch() {
    let p = pair_with_rows(10);
    let quick = Limits {
        timeout: Some(Duration::from_millis(100)),
        ..Limits::none()
    };
    let none = Limits::none();
    let heavy = Statement::new(HEAVY);
    let count = Statement::new("SELECT count(*) FROM t");
    let results = p
        .replica
        .reads
        .query_many(&[(&heavy, &quick), (&count, &none)], None)
        .expect("storage");
    assert!(matches!(
        results[0],
        Err(ReadError::Request(RequestError::TimedOut { .. }))
    ));
    assert_eq!(
        results[1].as_ref().expect("second read").rows,
        vec![vec![Value::Integer(10)]]
    );
}
