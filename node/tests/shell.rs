//! `quorumlite shell` against a real three-node cluster: typed at a
//! pseudo-terminal (multi-line statements, tables, errors, history recalled
//! with the up arrow after a restart, a session that survives the leader's
//! death), and fed from a pipe (statements in order, the exit code). Also
//! the human `quorumlite status` table. Also the sqlite3 habits: a piped
//! `.dump` as one transaction, `.dump` and `.import`, the output modes,
//! Ctrl-C, whole-statement history, a restore under an open shell.

mod common;
use common::{Cluster, BIN};
use rexpect::session::PtySession;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Generous: a debug build on two shared cores, and one failover.
const EXPECT_TIMEOUT_MS: u64 = 15_000;

fn shell_at_terminal(addrs: &[String], history: &std::path::Path) -> PtySession {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "shell",
        "--consistency",
        "session",
        "--addr",
        &addrs.join(","),
    ])
    .env("QUORUMLITE_HISTORY", history)
    .env("TERM", "xterm")
    .env("NO_COLOR", "1");
    let mut p = rexpect::session::spawn_command(cmd, Some(EXPECT_TIMEOUT_MS)).expect("spawn shell");
    p.exp_string("quorumlite> ").expect("first prompt");
    p
}

/// Wait for the prompt before typing: the line editor takes keys only
/// once it shows one (bytes sent earlier arrive with the line before).
fn ready(p: &mut PtySession) {
    p.exp_string("quorumlite> ").expect("prompt");
}

fn shell_with_stdin(addrs: &[String], input: &str, extra: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(["shell", "--addr", &addrs.join(",")])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shell");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("shell output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_shell_runs_multi_line_statements_survives_a_leader_death_and_recalls_history()
{
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let history = cluster.root.path().join("history");
    let addrs = cluster.addrs();

    let mut p = shell_at_terminal(&addrs, &history);
    // A statement over two lines, with a `;` inside a string literal.
    p.send_line("CREATE TABLE t(id INTEGER PRIMARY KEY,")
        .expect("send");
    p.exp_string("...> ").expect("continuation prompt");
    p.send_line("  name TEXT);").expect("send");
    p.exp_string("token: ql1.").expect("token of the CREATE");
    ready(&mut p);
    p.send_line("INSERT INTO t(name) VALUES ('semi;colon'),")
        .expect("send");
    p.exp_string("...> ").expect("continuation prompt");
    p.send_line("('ada');").expect("send");
    p.exp_string("(2 rows changed)")
        .expect("token of the INSERT");
    ready(&mut p);
    // An aligned table.
    p.send_line("SELECT id, name FROM t ORDER BY id;")
        .expect("send");
    p.exp_string("id  name").expect("table header");
    p.exp_string("1   semi;colon").expect("first row");
    p.exp_string("2   ada").expect("second row");
    ready(&mut p);
    // An error is one line, and the shell goes on.
    p.send_line("SELECT * FROM missing;").expect("send");
    p.exp_string("error: SQL_ERROR: no such table: missing")
        .expect("error line");
    ready(&mut p);

    // The leader dies; once another leads, the same session writes, then
    // reads its own write at the session level. (A write sent while no
    // leader is known can come back INDETERMINATE from a follower that was
    // forwarding it: correct, but not what this test is about.)
    cluster.kill(leader);
    cluster.leader(Duration::from_secs(10)).await;
    p.send_line("INSERT INTO t(name) VALUES ('after failover');")
        .expect("send");
    p.exp_string("(1 row changed)")
        .expect("write after failover");
    ready(&mut p);
    p.send_line(".consistency session").expect("send");
    ready(&mut p);
    p.send_line("SELECT count(*) AS n FROM t;").expect("send");
    p.exp_regex(r"n\s*\r\n-\s*\r\n3\s*\r\n")
        .expect("a session read after the failover sees all three rows");
    ready(&mut p);
    p.send_control('d').expect("Ctrl-D");
    p.exp_eof().expect("the shell exits on Ctrl-D");

    // A new shell: the up arrow brings back the last line of the old one.
    let saved = std::fs::read_to_string(&history).unwrap_or_default();
    assert!(
        saved.ends_with("SELECT count(*) AS n FROM t;\n"),
        "history file: {saved:?}"
    );
    let mut p = shell_at_terminal(&addrs, &history);
    p.send("\x1b[A").expect("up arrow");
    p.flush().expect("flush");
    p.exp_string("SELECT count(*) AS n FROM t;")
        .expect("recalled line");
    p.send("\r").expect("enter");
    p.flush().expect("flush");
    p.exp_regex(r"n\s*\r\n-\s*\r\n3\s*\r\n")
        .expect("the recalled statement runs");
    ready(&mut p);
    p.send_line(".quit").expect("send");
    p.exp_eof().expect("the shell exits on .quit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_sql_runs_in_order_and_any_failed_statement_makes_the_exit_non_zero() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let addrs = cluster.addrs();

    let out = shell_with_stdin(
        &addrs,
        "CREATE TABLE kv(k TEXT PRIMARY KEY, v);\n\
         INSERT INTO kv VALUES ('a', 1), ('b', 2);\n\
         .consistency session\n\
         .mode csv\n\
         SELECT k, v FROM kv ORDER BY k;\n",
        &[],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "k,v\na,1\nb,2\n", "only rows on stdout");
    assert!(!stderr.contains("error"), "{stderr}");

    // A failure in the middle: reported with its line, later statements
    // still run, and the exit code says something failed.
    let out = shell_with_stdin(
        &addrs,
        "INSERT INTO kv VALUES ('c', 3);\nINSERT INTO kv VALUES ('a', 9);\nSELECT count(*) AS n FROM kv\n",
        &[],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error near line 2: SQL_ERROR: UNIQUE constraint failed: kv.k"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error").count(), 1, "{stderr}");
    assert_eq!(stdout, "n\n-\n3\n", "the last statement (no `;`) ran");

    // With --bail, nothing after the failure runs.
    let out = shell_with_stdin(
        &addrs,
        "SELEC 1;\nINSERT INTO kv VALUES ('d', 4);\n",
        &["--bail"],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = shell_with_stdin(&addrs, "SELECT count(*) AS n FROM kv;", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n-\n3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_a_row_for_every_member_with_its_role_version_and_lag() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    // Under load a node can be mid-election: ask until the cluster settles.
    let status = || {
        Command::new(BIN)
            .args(["status", "--addr", &cluster.addr(1)])
            .output()
            .expect("run status")
    };
    let mut out = status();
    for _ in 0..20 {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.matches(" leader ").count() == 1 && text.matches(" follower ").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        out = status();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = text
        .lines()
        .position(|l| l.starts_with("id  address"))
        .unwrap_or_else(|| panic!("no members table: {text}"));
    assert!(
        text.lines()
            .nth(header)
            .is_some_and(|l| l.ends_with("role      version  lag  last contact")),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(header + 2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for (i, row) in rows.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(row[0], id.to_string(), "{text}");
        assert_eq!(row[1], cluster.addr(id), "{text}");
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(row[2], role, "{text}");
        assert!(row[3].parse::<u64>().is_ok(), "version: {text}");
        assert!(row[4].parse::<u64>().is_ok(), "lag: {text}");
    }
}

/// CPU seconds (user and system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks (100 per second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// The text `sqlite3 db .dump` prints for a database of `rows` people.
fn sqlite3_dump(rows: usize) -> String {
    let mut text = String::from(
        "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n\
         CREATE TABLE people(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, note TEXT, score REAL, pic BLOB);\n",
    );
    for i in 1..=rows {
        text.push_str(&format!(
            "INSERT INTO people VALUES({i},'n{i}',replace('it''s\\nline','\\n',char(10)),{i}.5,X'00ff');\n"
        ));
    }
    text.push_str(&format!(
        "DELETE FROM sqlite_sequence;\nINSERT INTO sqlite_sequence VALUES('people',{rows});\n\
         CREATE INDEX people_name ON people(name);\nCOMMIT;\n"
    ));
    text
}

fn run_ok(addrs: &[String], input: &str) -> (String, String) {
    let out = shell_with_stdin(addrs, input, &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{input:.200}\nstdout: {stdout:.2000}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_dump_imports_as_one_transaction_and_dump_reads_back_the_same_rows() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let addrs = cluster.addrs();

    // sqlite3's .dump of 5,000 rows: one write, so one token line.
    let started = std::time::Instant::now();
    let (_, stderr) = run_ok(&addrs, &sqlite3_dump(5_000));
    let took = started.elapsed();
    assert_eq!(
        stderr.matches("token:").count(),
        2,
        "PRAGMA, then the transaction: {stderr}"
    );
    assert!(stderr.contains("(5002 rows changed)"), "{stderr}");
    // Under 1 s in a release build; a debug build on two cores is slower.
    assert!(took < Duration::from_secs(10), "the import took {took:?}");
    let (stdout, _) = run_ok(
        &addrs,
        ".mode list\n.headers off\nSELECT count(*), sum(score), max(note) FROM people;\n",
    );
    assert_eq!(stdout, "5000|12505000|it's\nline\n");

    // All or nothing: a failing statement inside BEGIN ... COMMIT leaves
    // none of the transaction, and says so.
    let out = shell_with_stdin(
        &addrs,
        "BEGIN;\nINSERT INTO people(name) VALUES ('x');\nINSERT INTO missing VALUES (1);\nCOMMIT;\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no such table: missing")
            && stderr.contains("the transaction was not applied"),
        "{stderr}"
    );
    // An input that ends inside a transaction runs none of it.
    let out = shell_with_stdin(
        &addrs,
        "BEGIN;\nINSERT INTO people(name) VALUES ('y');\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BEGIN without COMMIT"));
    let (stdout, _) = run_ok(
        &addrs,
        ".mode list\n.headers off\nSELECT count(*) FROM people;\n",
    );
    assert_eq!(stdout, "5000\n");

    // `.dump` prints SQL that SQLite loads back into the same rows, types
    // included, with the AUTOINCREMENT counter and the index.
    let (dump, _) = run_ok(&addrs, ".dump\n");
    assert!(
        dump.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"),
        "{dump:.300}"
    );
    assert!(dump.ends_with("CREATE INDEX people_name ON people(name);\nCOMMIT;\n"));
    assert!(!dump.contains("_quorumlite"), "internal tables stay out");
    let copy = rusqlite::Connection::open_in_memory().expect("sqlite");
    copy.execute_batch(&dump)
        .expect("the dump loads into SQLite");
    let (n, seq, kinds): (i64, i64, String) = copy
        .query_row(
            "SELECT count(*), (SELECT seq FROM sqlite_sequence), \
             (SELECT typeof(id)||typeof(name)||typeof(score)||typeof(pic) FROM people LIMIT 1) FROM people",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("query the copy");
    assert_eq!(
        (n, seq, kinds.as_str()),
        (5000, 5000, "integertextrealblob")
    );

    // `.import` of a CSV file creates the table from the header; the
    // output modes and `.once` print it the way sqlite3 does.
    let csv = cluster.root.path().join("p.csv");
    std::fs::write(&csv, "id,name\n1,\"Ada, L\"\n2,\"two\nlines\"\n3\n").expect("write csv");
    let once = cluster.root.path().join("once.txt");
    let (stdout, stderr) = run_ok(
        &addrs,
        &format!(
            ".import {} csvt\n.mode box\nSELECT * FROM csvt ORDER BY id;\n.mode markdown\n\
             SELECT name FROM csvt WHERE id = '1';\n.mode line\n.nullvalue (none)\n\
             SELECT * FROM csvt WHERE id = '3';\n.mode csv\n.once {}\nSELECT count(*) AS n FROM csvt;\n",
            csv.display(),
            once.display()
        ),
    );
    assert!(stderr.contains("imported 3 row(s) into csvt"), "{stderr}");
    assert!(
        stderr.contains("1 record(s) had too few fields"),
        "{stderr}"
    );
    assert_eq!(
        stdout,
        "┌────┬────────────┐\n│ id │ name       │\n├────┼────────────┤\n\
         │ 1  │ Ada, L     │\n│ 2  │ two\\nlines │\n│ 3  │ NULL       │\n└────┴────────────┘\n\
         | name   |\n|--------|\n| Ada, L |\n  id = 3\nname = (none)\n"
    );
    assert_eq!(std::fs::read_to_string(&once).expect("once file"), "n\n3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_running_statement_and_a_restore_starts_a_new_session() {
    let cluster = Cluster::start(1, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let addrs = cluster.addrs();
    let history = cluster.root.path().join("history");
    let mut p = shell_at_terminal(&addrs, &history);

    // A statement typed over three lines is one history entry.
    p.send_line("CREATE TABLE t(").expect("send");
    p.exp_string("...> ").expect("continuation prompt");
    p.send_line("    x INTEGER").expect("send");
    p.exp_string("...> ").expect("continuation prompt");
    p.send_line(");").expect("send");
    p.exp_string("token: ql1.").expect("the CREATE ran");
    ready(&mut p);
    let saved = std::fs::read_to_string(&history).unwrap_or_default();
    assert!(
        saved.contains("CREATE TABLE t(\\n    x INTEGER\\n);"),
        "{saved:?}"
    );

    // A read that would run for minutes; Ctrl-C stops it and the prompt
    // comes back.
    p.send_line(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5000000000) SELECT count(*) FROM c;",
    )
    .expect("send");
    std::thread::sleep(Duration::from_millis(500));
    let interrupted = std::time::Instant::now();
    p.send_control('c').expect("Ctrl-C");
    p.exp_string("interrupted: the statement was cancelled")
        .expect("the read stops");
    assert!(interrupted.elapsed() < Duration::from_secs(5));
    // And the node stopped running it: it spends no more CPU on it.
    let before = cpu_seconds(cluster.pid(1));
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_seconds(cluster.pid(1)) - before;
    assert!(
        spent < 0.5,
        "the node spent {spent:.2} s of CPU in the 2 s after Ctrl-C"
    );
    ready(&mut p);
    p.send_line("INSERT INTO t VALUES (1);").expect("send");
    p.exp_string("(1 row changed)").expect("the shell goes on");
    ready(&mut p);

    // A restore elsewhere replaces the database: the shell's token names a
    // history that is gone. It says so, starts a new session, and reads.
    let file = cluster.root.path().join("other.db");
    {
        let db = rusqlite::Connection::open(&file).expect("sqlite");
        db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (7), (8);")
            .expect("fill");
    }
    let out = Command::new(BIN)
        .args([
            "restore",
            "--addr",
            &addrs[0],
            file.to_str().expect("utf-8"),
        ])
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.send_line("SELECT sum(x) AS s FROM t;").expect("send");
    p.exp_string("starting a new session")
        .expect("the shell says what happened");
    p.exp_regex(r"s\s*\r\n--\s*\r\n15\s*\r\n")
        .expect("and reads the restored rows");
    ready(&mut p);
    p.send_line(".quit").expect("send");
    p.exp_eof().expect("exit");
}

#[test]
fn a_shell_given_a_port_nobody_listens_on_says_so_at_once() {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let started = std::time::Instant::now();
    let out = shell_with_stdin(std::slice::from_ref(&addr), "SELECT 1;\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{addr} refused the connection: is the node running?"
        )),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
