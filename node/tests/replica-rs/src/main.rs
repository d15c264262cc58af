//! The Rust `libsql` crate's embedded replica
//! (`Builder::new_remote_replica`), unchanged, against a real Quorumlite
//! cluster (issue 23).
//!
//! `node/tests/replica_rs.rs` builds this program, starts the cluster and
//! runs one scenario per process:
//!
//! ```text
//! replica-rs <scenario>
//! ```
//!
//! with `QL_SYNC_URL` (a node's HTTP URL), `QL_REPLICA` (the replica's
//! file) and, when the nodes check tokens, `QL_AUTH_TOKEN`. The program
//! does what an application does with its replica and prints the facts the
//! test checks as one JSON line on stdout, last. What must happen on the
//! cluster while it runs (a write, the leader killed, a restore) it asks
//! of the test, one JSON line each way, as `tests/http/replica.test.mjs`
//! does:
//!
//! ```text
//! stdout  {"ask": "write", "sql": ["INSERT ..."]}   a request
//! stdin   {"version": 7}                            its answer
//! stdout  {...}                                     the facts, last
//! ```
//!
//! A failed expectation exits non-zero with the reason on stderr.
//!
//! Why a program of its own: the `libsql` crate bundles its own SQLite,
//! which cannot link beside `rusqlite`'s bundled one in the node's test
//! binaries (the same `sqlite3_*` symbols twice), so this is a separate
//! cargo project with its own lock file.
//!
//! - `first-sync`: a new replica is empty, syncs, and reads the cluster's
//!   `posts` from its own file.
//! - `resync`: a replica reopened from its file holds what it had and syncs
//!   on from there; it reports every table's rows before and after the
//!   sync, so a restore (other tables) or a compacted log (an image instead
//!   of batches) shows in what it held and what it holds.
//! - `read-your-writes`: writes with positional and named parameters, and
//!   every value type, go to the cluster and are read back from the file at
//!   once; a refused write is the cluster's SQLite error.
//! - `transactions`: interactive transactions commit or roll back as a
//!   whole; a transactional batch likewise.
//! - `sync-interval`: with `sync_interval`, a cluster write reaches the
//!   file without a call to `sync()`.
//! - `wrong-token`: opening and syncing with a token the nodes do not know
//!   fails, and says why.
//! - `kill-leader`: writes and syncs through a follower while the test
//!   kills the leader, each retried until a new leader serves it; nothing
//!   acknowledged is lost, and nothing else appears.
//! - `restore`: the test restores a file while the replica is open; the
//!   replica's next sync starts over from the restored image, and writes
//!   go on from there.

use libsql::params::IntoParams;
use libsql::{named_params, params, Builder, Connection, Database, Value};
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A scenario's failure: what went wrong, for stderr.
type Result<T> = std::result::Result<T, String>;

/// What a scenario runs against, from the environment.
struct Env {
    /// A node's HTTP URL (`QL_SYNC_URL`).
    sync_url: String,
    /// The replica's SQLite file (`QL_REPLICA`).
    replica: PathBuf,
    /// `QL_AUTH_TOKEN`; empty when the nodes check none.
    token: String,
}

/// The scenarios, for the usage message.
const SCENARIOS: &[&str] = &[
    "first-sync",
    "resync",
    "read-your-writes",
    "transactions",
    "sync-interval",
    "wrong-token",
    "kill-leader",
    "restore",
];

#[tokio::main]
async fn main() -> ExitCode {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let (Ok(sync_url), Some(replica)) =
        (std::env::var("QL_SYNC_URL"), std::env::var_os("QL_REPLICA"))
    else {
        eprintln!("QL_SYNC_URL and QL_REPLICA must be set");
        return ExitCode::from(2);
    };
    let env = Env {
        sync_url,
        replica: replica.into(),
        token: std::env::var("QL_AUTH_TOKEN").unwrap_or_default(),
    };
    let facts = match scenario.as_str() {
        "first-sync" => first_sync(&env).await,
        "resync" => resync(&env).await,
        "read-your-writes" => read_your_writes(&env).await,
        "transactions" => transactions(&env).await,
        "sync-interval" => sync_interval(&env).await,
        "wrong-token" => wrong_token(&env).await,
        "kill-leader" => kill_leader(&env).await,
        "restore" => restore(&env).await,
        _ => {
            eprintln!("usage: replica-rs <{}>", SCENARIOS.join("|"));
            return ExitCode::from(2);
        }
    };
    match facts {
        Ok(facts) => {
            println!("{facts}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scenario {scenario} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The table the test creates: `posts(id INTEGER PRIMARY KEY, title TEXT
/// NOT NULL, body BLOB)`; no blob in what is compared.
const POSTS: &str = "SELECT id, title, length(body) FROM posts ORDER BY id";

/// A new replica: empty until its first sync, then the cluster's rows,
/// read from its own file. A second sync with nothing new stays where the
/// first left it.
async fn first_sync(env: &Env) -> Result<Json> {
    assert!(
        !env.replica.exists(),
        "{} should not exist yet",
        env.replica.display()
    );
    let db = open(env, None).await?;
    let conn = db.connect().context("connect")?;
    assert_eq!(
        rows(&conn, "SELECT name FROM sqlite_schema", ()).await?,
        Vec::<Vec<Json>>::new(),
        "nothing before the first sync"
    );
    let synced = db.sync().await.context("first sync")?;
    let posts = rows(&conn, POSTS, ()).await?;
    assert!(!posts.is_empty(), "the test writes posts first");
    let again = db.sync().await.context("second sync")?;
    assert_eq!(
        (again.frame_no(), again.frames_synced()),
        (synced.frame_no(), 0),
        "a sync with nothing new stays where it was"
    );
    Ok(json!({
        "frame_no": synced.frame_no(),
        "frames_synced": synced.frames_synced(),
        "rows": posts.len(),
    }))
}

/// An existing replica reopened (the application restarted): it holds
/// what it had before it syncs, and syncs on from there. What it held and
/// what it holds are the row counts of every table, so the test sees a
/// restore's tables replace the old ones.
async fn resync(env: &Env) -> Result<Json> {
    assert!(
        env.replica.exists(),
        "{} should exist",
        env.replica.display()
    );
    let db = open(env, None).await?;
    let conn = db.connect().context("connect")?;
    let held = tables(&conn).await?;
    let synced = db.sync().await.context("sync")?;
    let rows = tables(&conn).await?;
    Ok(json!({
        "frame_no": synced.frame_no(),
        "frames_synced": synced.frames_synced(),
        "held": held,
        "rows": rows,
    }))
}

/// Writes go to the cluster through the replica, which reads them back
/// from its own file as soon as they return.
async fn read_your_writes(env: &Env) -> Result<Json> {
    let db = open(env, None).await?;
    db.sync().await.context("sync")?;
    let conn = db.connect().context("connect")?;
    let mut rowids = Vec::new();
    for i in 1..=10 {
        let title = format!("from the replica {i}");
        let affected = conn
            .execute(
                "INSERT INTO posts(title) VALUES (?1)",
                params![title.as_str()],
            )
            .await
            .context(&title)?;
        assert_eq!(affected, 1, "{title}: rows affected");
        let rowid = conn.last_insert_rowid();
        assert_eq!(
            rows(
                &conn,
                "SELECT title FROM posts WHERE id = ?1",
                params![rowid]
            )
            .await?,
            vec![vec![json!(title)]],
            "write {i} is in the replica's file once it returns"
        );
        rowids.push(rowid);
    }

    // A write that returns rows (RETURNING) goes to the cluster too.
    let returned = rows(
        &conn,
        "INSERT INTO posts(title) VALUES ('returning') RETURNING id, title",
        (),
    )
    .await?;
    let id = returned
        .first()
        .and_then(|row| row.first())
        .and_then(Json::as_i64)
        .ok_or_else(|| format!("RETURNING gave {returned:?}"))?;
    assert_eq!(
        rows(
            &conn,
            "SELECT id, title FROM posts WHERE id = ?1",
            params![id]
        )
        .await?,
        returned,
        "the row RETURNING named is in the replica's file"
    );

    // Schema changes, named parameters (each prefix SQLite knows) and
    // every value type, through the proxy and back from the replica's
    // pages. (A scenario run before on the same cluster left a `vals`.)
    conn.execute("DROP TABLE IF EXISTS vals", ())
        .await
        .context("DROP TABLE vals")?;
    conn.execute(
        "CREATE TABLE vals(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n)",
        (),
    )
    .await
    .context("CREATE TABLE vals")?;
    conn.execute(
        "INSERT INTO vals(i, r, t, b, n) VALUES (:i, :r, :t, :b, :n)",
        named_params! {
            ":i": i64::MIN,
            ":r": 2.5,
            ":t": "héllo ☃",
            ":b": vec![0u8, 1, 254, 255],
            ":n": Value::Null,
        },
    )
    .await
    .context("INSERT INTO vals with :names")?;
    conn.execute(
        "INSERT INTO vals(i, r, t, b, n) VALUES (@i, $r, :t, @b, $n)",
        named_params! {
            "@i": i64::MAX,
            "$r": -0.125,
            ":t": "",
            "@b": Vec::<u8>::new(),
            "$n": Value::Null,
        },
    )
    .await
    .context("INSERT INTO vals with @ and $ names")?;
    let vals = rows(&conn, "SELECT i, r, t, hex(b), n FROM vals ORDER BY id", ()).await?;
    assert_eq!(
        vals,
        vec![
            vec![
                json!(i64::MIN),
                json!(2.5),
                json!("héllo ☃"),
                json!("0001FEFF"),
                Json::Null
            ],
            vec![
                json!(i64::MAX),
                json!(-0.125),
                json!(""),
                json!(""),
                Json::Null
            ],
        ],
        "the values the replica wrote, read back from its file"
    );

    // A refused write comes back as the cluster's SQLite error, and
    // changes nothing.
    let refused = match conn
        .execute("INSERT INTO posts(id, title) VALUES (1, 'duplicate')", ())
        .await
    {
        Ok(n) => return Err(format!("a duplicate key was accepted ({n} rows)")),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("UNIQUE constraint failed"),
        "the error should be SQLite's: {refused:?}"
    );
    db.sync().await.context("sync")?;
    Ok(json!({
        "rowids": rowids,
        "returned": returned,
        "vals": vals,
        "refused": refused,
    }))
}

/// Interactive transactions and transactional batches through the
/// replica run on the cluster, and commit or roll back as a whole. Counts
/// are relative: the scenario may run again on the same cluster.
async fn transactions(env: &Env) -> Result<Json> {
    let db = open(env, None).await?;
    db.sync().await.context("sync")?;
    let conn = db.connect().context("connect")?;
    // Another connection of the same replica: it reads the local file.
    let other = db.connect().context("connect")?;
    let tx_rows = "SELECT count(*) FROM posts WHERE title LIKE 'tx %'";
    let batch_rows = "SELECT count(*) FROM posts WHERE title LIKE 'batch %'";
    let committed = count(&conn, tx_rows).await?;

    let tx = conn.transaction().await.context("BEGIN")?;
    tx.execute("INSERT INTO posts(title) VALUES ('tx a')", ())
        .await
        .context("tx a")?;
    tx.execute("INSERT INTO posts(title) VALUES (?1)", params!["tx b"])
        .await
        .context("tx b")?;
    assert_eq!(
        count(&tx, tx_rows).await?,
        committed + 2,
        "the transaction reads its own writes"
    );
    assert_eq!(
        count(&other, tx_rows).await?,
        committed,
        "nothing is in the replica's file before COMMIT"
    );
    tx.commit().await.context("COMMIT")?;
    assert_eq!(
        count(&conn, tx_rows).await?,
        committed + 2,
        "the replica holds the commit once it returns"
    );

    let before = rows(&conn, POSTS, ()).await?;
    let undone = conn.transaction().await.context("BEGIN")?;
    undone
        .execute("DELETE FROM posts", ())
        .await
        .context("DELETE")?;
    undone
        .execute("INSERT INTO posts(title) VALUES ('rolled back')", ())
        .await
        .context("INSERT")?;
    assert_eq!(count(&undone, "SELECT count(*) FROM posts").await?, 1);
    undone.rollback().await.context("ROLLBACK")?;
    assert_eq!(
        rows(&conn, POSTS, ()).await?,
        before,
        "a rolled back transaction leaves nothing"
    );

    // A transactional batch: BEGIN, the statements, COMMIT if all went
    // well and ROLLBACK otherwise, as one program of conditional steps.
    let batched = count(&conn, batch_rows).await?;
    conn.execute_transactional_batch(
        "INSERT INTO posts(title) VALUES ('batch 1'); INSERT INTO posts(title) VALUES ('batch 2');",
    )
    .await
    .context("transactional batch")?;
    assert_eq!(
        count(&conn, batch_rows).await?,
        batched + 2,
        "the replica holds the batch once it returns"
    );
    let refused = match conn
        .execute_transactional_batch(
            "INSERT INTO posts(title) VALUES ('batch 3'); \
             INSERT INTO posts(id, title) VALUES (1, 'duplicate');",
        )
        .await
    {
        Ok(_) => return Err("a batch with a duplicate key was accepted".into()),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("UNIQUE constraint failed"),
        "the error should be SQLite's: {refused:?}"
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM posts WHERE title = 'batch 3'").await?,
        0,
        "a failed batch leaves nothing"
    );

    // The cluster takes writes again: no transaction was left open on it.
    conn.execute(
        "INSERT INTO posts(title) VALUES ('after the transactions')",
        (),
    )
    .await
    .context("a write after the transactions")?;
    db.sync().await.context("sync")?;
    Ok(json!({ "posts": rows(&conn, POSTS, ()).await?.len(), "refused": refused }))
}

/// With `sync_interval`, a write made on the cluster reaches the replica
/// without a call to `sync()`.
async fn sync_interval(env: &Env) -> Result<Json> {
    let db = open(env, Some(Duration::from_secs(1))).await?;
    let conn = db.connect().context("connect")?;
    let periodic = "SELECT count(*) FROM posts WHERE title = 'periodic'";
    ask(json!({ "ask": "write", "sql": ["INSERT INTO posts(title) VALUES ('periodic')"] })).await?;
    let started = Instant::now();
    // Until a periodic sync brought the table, it does not exist here.
    while !matches!(count(&conn, periodic).await, Ok(n) if n > 0) {
        if started.elapsed() > Duration::from_secs(15) {
            return Err("the periodic sync did not bring the write within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(json!({ "seen_after_ms": started.elapsed().as_millis() as u64 }))
}

/// A token the nodes do not know (or none, when they check tokens) is
/// refused before anything is synced.
async fn wrong_token(env: &Env) -> Result<Json> {
    let refused = match open(env, None).await {
        Err(e) => e,
        Ok(db) => match db.sync().await {
            Err(e) => e.to_string(),
            Ok(_) => return Err("a replica with a wrong token synced".into()),
        },
    };
    Ok(json!({ "message": refused }))
}

/// The rows the leader-kill scenario writes: ids of its own, far above the
/// cluster's.
const SURVIVORS: &str = "SELECT id FROM posts WHERE title LIKE 'survivor %' ORDER BY id";

/// How long the leader-kill scenario goes on writing after it asked for
/// the kill (300 ms later): well past a failover (under 1.5 s, see
/// `node/tests/failover.rs`), so writes are in flight when the leader dies,
/// meet the election, and reach the new leader.
const THROUGH_THE_KILL: Duration = Duration::from_secs(3);

/// The leader is killed while the replica writes and syncs through a
/// follower: it goes on once a new leader is elected, and loses nothing.
/// Until then a write or a sync may fail, and each is retried. A write
/// whose answer was lost may have landed: `INSERT OR IGNORE` of a given id
/// makes its retry harmless, and the rows, equal to the ids acknowledged,
/// show that none was lost and none made up.
async fn kill_leader(env: &Env) -> Result<Json> {
    let db = open(env, None).await?;
    db.sync().await.context("first sync")?;
    let conn = db.connect().context("connect")?;
    let mut retries = Retries::default();
    let mut ids = Vec::new();
    let mut id = 1_000_000;
    for _ in 0..5 {
        id += 1;
        survivor(&conn, id, &mut retries).await?;
        ids.push(id);
    }
    let killed = ask(json!({ "ask": "kill_leader", "after_ms": 300 })).await?;
    let asked = Instant::now();
    let mut rounds = 0;
    while rounds < 30 || asked.elapsed() < THROUGH_THE_KILL {
        rounds += 1;
        id += 1;
        survivor(&conn, id, &mut retries).await?;
        ids.push(id);
        retries.run("sync", || db.sync()).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors = rows(&conn, SURVIVORS, ()).await?;
    assert_eq!(
        survivors,
        ids.iter().map(|id| vec![json!(id)]).collect::<Vec<_>>(),
        "every write the replica was told of is in its file, once"
    );
    Ok(json!({
        "killed": killed["killed"],
        "written": ids.len(),
        "ms_after_the_ask": asked.elapsed().as_millis() as u64,
        "survivors": survivors,
        "posts": rows(&conn, POSTS, ()).await?,
        "failures": retries.failed,
        "errors": retries.errors,
    }))
}

/// Write post `id` through the replica, retrying until it is acknowledged;
/// it is in the replica's file once it is.
async fn survivor(conn: &Connection, id: i64, retries: &mut Retries) -> Result<()> {
    let title = format!("survivor {id}");
    retries
        .run(&format!("write {id}"), || {
            conn.execute(
                "INSERT OR IGNORE INTO posts(id, title) VALUES (?1, ?2)",
                params![id, title.as_str()],
            )
        })
        .await?;
    assert_eq!(
        rows(conn, "SELECT id FROM posts WHERE id = ?1", params![id]).await?,
        vec![vec![json!(id)]],
        "read-your-writes for {id}"
    );
    Ok(())
}

/// How long a failing call is retried.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long one attempt may take before the scenario fails as hung. It is
/// not cancelled and retried: a sync dropped halfway could leave the
/// replicator in a state no application would see.
const ATTEMPT: Duration = Duration::from_secs(30);

/// The failed attempts of a scenario that retries, for its facts.
#[derive(Default)]
struct Retries {
    failed: u32,
    /// What the crate said, each message once (a gRPC status without its
    /// metadata, which carries the reply's date).
    errors: BTreeSet<String>,
}

impl Retries {
    /// `action` until it succeeds, 200 ms apart, for at most [`RETRY_FOR`].
    async fn run<T, E, F, Fut>(&mut self, what: &str, mut action: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Display,
    {
        let started = Instant::now();
        loop {
            let e = match tokio::time::timeout(ATTEMPT, action()).await {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(e)) => e.to_string(),
                Err(_) => return Err(format!("{what} hung for {ATTEMPT:?}")),
            };
            self.failed += 1;
            let message = e.split(", metadata: ").next().unwrap_or_default();
            self.errors.insert(message.to_owned());
            if started.elapsed() > RETRY_FOR {
                return Err(format!("{what} still failing after {RETRY_FOR:?}: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A restore starts a new lineage while the replica is open: its next
/// sync starts over from the restored image (the old table is gone), and
/// writes go on from there.
async fn restore(env: &Env) -> Result<Json> {
    let db = open(env, None).await?;
    db.sync().await.context("first sync")?;
    let conn = db.connect().context("connect")?;
    let held = count(&conn, "SELECT count(*) FROM posts").await?;
    assert!(held > 0, "the test writes posts first");
    let restored = ask(json!({ "ask": "restore", "rows": 300 })).await?;
    let restored_rows = restored["rows"]
        .as_i64()
        .ok_or_else(|| format!("restore answered {restored}"))?;
    let synced = db.sync().await.context("sync after the restore")?;
    assert_eq!(
        tables(&conn).await?,
        json!({ "restored": restored_rows }),
        "the replica holds the restored table, and nothing of the old data"
    );
    conn.execute("INSERT INTO restored(v) VALUES ('after the restore')", ())
        .await
        .context("a write after the restore")?;
    assert_eq!(
        count(&conn, "SELECT count(*) FROM restored").await?,
        restored_rows + 1,
        "writes go on"
    );
    Ok(json!({
        "version": restored["version"],
        "frame_no": synced.frame_no(),
        "held": held,
        "restored": rows(&conn, "SELECT id, v FROM restored ORDER BY id", ()).await?,
    }))
}

/// Ask the test to act on the cluster (one JSON line on stdout); its
/// answer (one JSON line on stdin).
async fn ask(request: Json) -> Result<Json> {
    println!("{request}");
    // Off the runtime's workers: a periodic sync may run on them.
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("wait for the test")?
    .context("read the test's answer")?;
    if line.is_empty() {
        return Err(format!("the test hung up when asked {request}"));
    }
    serde_json::from_str(&line).context(&format!("the answer to {request}"))
}

/// The replica of `env`, syncing every `interval` if one is given.
async fn open(env: &Env, interval: Option<Duration>) -> Result<Database> {
    let mut builder =
        Builder::new_remote_replica(&env.replica, env.sync_url.clone(), env.token.clone());
    if let Some(interval) = interval {
        builder = builder.sync_interval(interval);
    }
    builder.build().await.context("open the replica")
}

/// Rows of `sql` on `conn` (read locally unless in a transaction), as
/// JSON arrays.
async fn rows(conn: &Connection, sql: &str, params: impl IntoParams) -> Result<Vec<Vec<Json>>> {
    let mut rows = conn.query(sql, params).await.context(sql)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.context(sql)? {
        let values = (0..row.column_count())
            .map(|i| row.get_value(i).map(json_of))
            .collect::<std::result::Result<Vec<_>, _>>()
            .context(sql)?;
        out.push(values);
    }
    Ok(out)
}

/// Every table of `conn`'s database and its number of rows, by name;
/// SQLite's own tables and the node's (`_quorumlite_*`, which replicate
/// with the pages) aside.
async fn tables(conn: &Connection) -> Result<Json> {
    let names = rows(
        conn,
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT GLOB 'sqlite_*' AND name NOT GLOB '_quorumlite_*' ORDER BY name",
        (),
    )
    .await?;
    let mut counts = serde_json::Map::new();
    for name in names {
        let Some(name) = name.first().and_then(Json::as_str) else {
            return Err(format!("a table without a name: {name:?}"));
        };
        let n = count(conn, &format!("SELECT count(*) FROM \"{name}\"")).await?;
        counts.insert(name.to_owned(), json!(n));
    }
    Ok(Json::Object(counts))
}

/// The single integer `sql` returns.
async fn count(conn: &Connection, sql: &str) -> Result<i64> {
    match rows(conn, sql, ()).await?.as_slice() {
        [row] => match row.as_slice() {
            [n] => n
                .as_i64()
                .ok_or_else(|| format!("{sql}: {n} is no integer")),
            _ => Err(format!("{sql}: {row:?} is not one value")),
        },
        rows => Err(format!("{sql}: {rows:?} is not one row")),
    }
}

/// A value as the test compares it: a blob as an array of bytes.
fn json_of(v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!(b),
    }
}

/// `?` with what was being done, for the failure report.
trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}
