//! `quorumlite shell`: an interactive SQL prompt in the habits of the
//! `sqlite3` shell, over the client library.
//!
//! ```text
//!  line ──> dot command? ──> .tables .dump .import .mode ... (dot.rs, dump.rs, import.rs)
//!    │
//!    └──> buffer until complete (sql.rs) ──> split into statements
//!           ──> BEGIN ... COMMIT? held, then sent as one write
//!           ──> read or write? (classify.rs) ──> Client::query / execute
//!           ──> rows in the current style (render.rs) to stdout or .output
//! ```
//!
//! One [`Client`] lives as long as the shell, so the session is the
//! client's: it finds and follows the leader, retries what is safe, and
//! keeps the newest token, which `session` reads present. Reads and writes
//! of one shell therefore see its own writes at every level. When a
//! restore replaces the database, the token names a history that is gone
//! (`LINEAGE_MISMATCH`): the shell says so, starts a new session
//! ([`Client::new_session`]) and runs the read again.
//!
//! **Transactions.** Every request is one transaction on the cluster, and
//! the public API holds no transaction open between requests. So the
//! statements between `BEGIN` and `COMMIT` (or `END`) are held by the
//! shell and sent together as one write at `COMMIT`: all of them apply or
//! none does, and a script piped from `sqlite3 .dump` imports as one batch
//! instead of one round trip per row. `ROLLBACK` drops what is held.
//! Output of statements inside the transaction (a `SELECT` sees the
//! transaction's own writes) is printed at `COMMIT`.
//!
//! On a terminal, lines are edited with rustyline and each statement is
//! kept whole in a history file. Ctrl-C while a statement runs cancels it
//! (the node stops the read; a write may or may not have been applied)
//! and returns to the prompt. Otherwise SQL comes from stdin with no
//! prompt and no history; every statement runs (or up to the first
//! failure with `--bail`) and the exit code is 1 when any failed.
//! `docs/shell.md` is the user's guide.

mod classify;
mod dot;
mod dump;
mod import;
mod render;
mod sql;

use super::{output, reach, runtime, target};
use crate::cli::{ConsistencyArg, ShellArgs};
use classify::Kind;
use client::{Client, ClientConfig, Column, Consistency, ErrorCode, Statement, Token, Value};
use render::{Mode, Style};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const PROMPT: &str = "quorumlite> ";
const CONTINUE: &str = "       ...> ";
/// The prompt while a `BEGIN` is open: statements are being held.
const IN_TXN: &str = "quorumlite*> ";
/// `.read` inside `.read` deeper than this is refused (a file reading itself).
const MAX_READ_DEPTH: usize = 16;

pub fn run(args: ShellArgs) -> ExitCode {
    let (addrs, config) = match target(&args.connect) {
        Ok(t) => t,
        Err(message) => {
            output::error(false, "BAD_REQUEST", &message);
            return ExitCode::FAILURE;
        }
    };
    // Multi-threaded: the shell blocks its own thread waiting for the next
    // line, and the connections' tasks must keep running meanwhile, so a
    // node that died is noticed (its connection closed and redialled)
    // before the next statement is sent to it, instead of the statement
    // failing on the dead connection as possibly applied (INDETERMINATE).
    let runtime = match runtime(true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // tonic's channels start their worker tasks where they are made.
    let client = {
        let _in_runtime = runtime.enter();
        Client::with_config(&addrs, config.clone())
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            output::error(false, e.code.as_str(), &e.message);
            return ExitCode::FAILURE;
        }
    };
    let interactive = std::io::stdin().is_terminal();
    let mut shell = Shell {
        runtime,
        client,
        ca: config.tls.as_ref().map(|t| t.ca_pem.clone()),
        addrs,
        config,
        deadline: Duration::from_millis(args.connect.timeout_ms.min(2_000)),
        scratch: classify::scratch(),
        consistency: args.consistency,
        style: Style {
            mode: if args.connect.json {
                Mode::Json
            } else {
                Mode::Table
            },
            ..Style::default()
        },
        out: Sink::Stdout,
        timer: false,
        buffer: String::new(),
        txn: None,
        at: Place::default(),
        failures: 0,
        interactive,
        bail: args.bail && !interactive,
        depth: 0,
        last_write: None,
        dim: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    if interactive {
        let history = args.history.or_else(default_history);
        shell.interactive(history, &args.connect.addr);
        ExitCode::SUCCESS
    } else {
        shell.script(std::io::stdin().lock(), None);
        if shell.failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// `$XDG_STATE_HOME/quorumlite/history`, else `~/.quorumlite_history`.
fn default_history() -> Option<PathBuf> {
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").and_then(nonempty) {
        return Some(state.join("quorumlite").join("history"));
    }
    std::env::var_os("HOME")
        .and_then(nonempty)
        .map(|home| home.join(".quorumlite_history"))
}

/// Whether the input goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// Where the statement being read started, for error messages of scripts.
#[derive(Clone, Debug, Default)]
struct Place {
    /// `.read`'s file; `None` for stdin or the terminal.
    file: Option<String>,
    /// Lines read so far from this input.
    line: usize,
    /// The line the buffered statement started on.
    start: usize,
}

/// Where rows go: stdout, or a file from `.output` / `.once`.
enum Sink {
    Stdout,
    File {
        path: String,
        writer: std::io::BufWriter<std::fs::File>,
        /// `.once`: back to stdout after the next command's output.
        once: bool,
    },
}

/// A call stopped by Ctrl-C before it returned.
struct Interrupted;

pub(super) struct Shell {
    runtime: tokio::runtime::Runtime,
    /// The session: leader, retries and the newest token live here.
    client: Client,
    /// The nodes given (`HOST:PORT`), and the CA for TLS: probed to say
    /// why none can be talked to (`reach::guard`).
    addrs: Vec<String>,
    ca: Option<Vec<u8>>,
    /// For `.status`, which asks every member on its own.
    config: ClientConfig,
    /// How long `.status` waits for each member.
    deadline: Duration,
    /// An empty in-memory database that classifies statements.
    scratch: Option<rusqlite::Connection>,
    consistency: ConsistencyArg,
    style: Style,
    out: Sink,
    timer: bool,
    /// Lines of the statement being typed. Invariant: empty, or not yet a
    /// complete statement.
    buffer: String,
    /// Statements held since `BEGIN`, sent as one write at `COMMIT`;
    /// `None` outside a transaction.
    txn: Option<Held>,
    at: Place,
    /// Statements and dot commands that failed.
    failures: usize,
    /// Input is a terminal (prompts, history, Ctrl-C cancels a statement).
    interactive: bool,
    /// Stop reading at the first failure (stdin with `--bail` only).
    bail: bool,
    /// `.read` nesting.
    depth: usize,
    /// The token of this shell's newest write.
    last_write: Option<Token>,
    /// Dim the token and timer lines (stderr is a terminal, no NO_COLOR).
    dim: bool,
}

/// What a statement produced.
enum Outcome {
    Rows(Vec<Column>, Vec<Vec<Value>>),
    Wrote(client::ExecuteResult),
}

/// Why a statement produced nothing.
enum Failure {
    Client(client::Error),
    Interrupted,
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Failure {
        Failure::Client(e)
    }
}

/// Most SQL text a transaction holds: past it, no request could carry
/// the transaction (the client's message cap).
const MAX_HELD_BYTES: usize = client::MAX_MESSAGE_BYTES;

/// The statements of an open transaction. Invariant: until `overflowed`,
/// `statements` holds every statement since `BEGIN` and `bytes` their
/// length; past [`MAX_HELD_BYTES`] they are dropped and only counted, so
/// the transaction fails whole at `COMMIT` instead of holding memory for
/// a request that cannot be sent (or running in pieces).
#[derive(Default)]
struct Held {
    statements: Vec<String>,
    bytes: usize,
    count: usize,
    overflowed: bool,
}

impl Held {
    fn push(&mut self, statement: String) {
        self.push_within(statement, MAX_HELD_BYTES);
    }

    fn push_within(&mut self, statement: String, limit: usize) {
        self.count += 1;
        if self.overflowed {
            return;
        }
        self.bytes += statement.len();
        if self.bytes > limit {
            self.overflowed = true;
            self.statements = Vec::new();
        } else {
            self.statements.push(statement);
        }
    }
}

/// Transaction control the shell handles itself.
#[derive(Debug, PartialEq, Eq)]
enum TxnWord {
    Begin,
    Commit,
    Rollback,
}

fn txn_word(statement: &str) -> Option<TxnWord> {
    let words = sql::leading_words(statement, 3);
    match words.first().map(String::as_str) {
        Some("BEGIN") => Some(TxnWord::Begin),
        Some("COMMIT" | "END") => Some(TxnWord::Commit),
        // `ROLLBACK [TRANSACTION] TO savepoint` undoes part of a
        // transaction: it belongs in the batch.
        Some("ROLLBACK") if !words[1..].iter().any(|w| w == "TO") => Some(TxnWord::Rollback),
        _ => None,
    }
}

impl Shell {
    fn interactive(&mut self, history: Option<PathBuf>, addrs: &[String]) {
        let config = rustyline::Config::builder()
            .max_history_size(2_000)
            .and_then(|b| b.history_ignore_dups(true))
            .map(|b| b.history_ignore_space(true).build())
            .unwrap_or_default();
        let mut editor = match rustyline::DefaultEditor::with_config(config) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: cannot edit lines on this terminal: {e}");
                self.script(std::io::stdin().lock(), None);
                return;
            }
        };
        if let Some(path) = &history {
            // A missing file is a first run.
            let _ = editor.load_history(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        println!(
            "quorumlite {} shell on {} (reads: {}). Statements end with \";\"; \".help\" lists commands.",
            env!("CARGO_PKG_VERSION"),
            addrs.join(","),
            consistency_name(self.consistency),
        );
        // The lines of the entry being typed: a statement goes into the
        // history whole, not line by line.
        let mut entry = String::new();
        loop {
            let prompt = match (self.buffer.is_empty(), self.txn.is_some()) {
                (false, _) => CONTINUE,
                (true, true) => IN_TXN,
                (true, false) => PROMPT,
            };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                // Ctrl-C drops the statement being typed, as in sqlite3.
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    self.buffer.clear();
                    entry.clear();
                    continue;
                }
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => {
                    eprintln!("error: reading the terminal: {e}");
                    break;
                }
            };
            if !entry.is_empty() {
                entry.push('\n');
            }
            entry.push_str(&line);
            let flow = self.feed(&line);
            if self.buffer.is_empty() {
                let whole = std::mem::take(&mut entry);
                if !whole.trim().is_empty()
                    && editor.add_history_entry(whole.trim_end()).unwrap_or(false)
                {
                    if let Some(path) = &history {
                        // Appended entry by entry: a killed shell keeps its history.
                        if let Err(e) = editor.append_history(path) {
                            eprintln!("warning: history file {}: {e}", path.display());
                        }
                    }
                }
            }
            if flow == Flow::Quit {
                break;
            }
        }
        self.end_of_input();
    }

    /// Run every line of `input` (stdin, or a `.read` file).
    fn script(&mut self, input: impl BufRead, file: Option<String>) -> Flow {
        let top = file.is_none();
        let outer = std::mem::replace(
            &mut self.at,
            Place {
                file,
                ..Place::default()
            },
        );
        let pending = std::mem::take(&mut self.buffer);
        let mut flow = Flow::Continue;
        for line in input.lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    self.fail(&format!("reading input: {e}"));
                    break;
                }
            };
            flow = self.feed(&line);
            if flow == Flow::Quit {
                break;
            }
        }
        // A last statement without its `;` runs too, as in sqlite3.
        if flow == Flow::Continue && !self.buffer.is_empty() {
            let text = std::mem::take(&mut self.buffer);
            flow = self.run_text(&text);
        }
        self.buffer = pending;
        self.at = outer;
        if top {
            self.end_of_input();
        }
        flow
    }

    /// The input ended: a transaction still open is dropped, as SQLite
    /// rolls back one its connection closes with; held statements did not
    /// run, which counts as a failure.
    fn end_of_input(&mut self) {
        if let Some(held) = self.txn.take() {
            self.fail(&format!(
                "the input ended inside a transaction (BEGIN without COMMIT): its {} statement(s) were not run",
                held.count
            ));
        }
        self.flush_output();
    }

    /// Take one input line.
    fn feed(&mut self, line: &str) -> Flow {
        self.at.line += 1;
        if self.buffer.is_empty() {
            if line.trim_start().starts_with('.') {
                self.at.start = self.at.line;
                return self.dot(line.trim());
            }
            if sql::is_blank(line) {
                return Flow::Continue;
            }
            self.at.start = self.at.line;
        }
        self.buffer.push_str(line);
        self.buffer.push('\n');
        if !sql::is_complete(&self.buffer) {
            return Flow::Continue;
        }
        let text = std::mem::take(&mut self.buffer);
        self.run_text(&text)
    }

    /// Run each statement of a complete text in order.
    fn run_text(&mut self, text: &str) -> Flow {
        let mut flow = Flow::Continue;
        for statement in sql::split(text) {
            if !self.statement(statement) && self.bail {
                flow = Flow::Quit;
                break;
            }
        }
        self.once_done();
        flow
    }

    /// One statement: transaction control, held in a transaction, or run.
    fn statement(&mut self, statement: String) -> bool {
        match (txn_word(&statement), &mut self.txn) {
            (Some(TxnWord::Begin), Some(_)) => {
                self.fail("a transaction is already open: COMMIT or ROLLBACK it first");
                false
            }
            (Some(TxnWord::Begin), None) => {
                self.txn = Some(Held::default());
                if self.interactive {
                    self.note(
                        "transaction open: statements are held and run together, as one write, at COMMIT (ROLLBACK drops them)",
                    );
                }
                true
            }
            (Some(TxnWord::Commit), None) | (Some(TxnWord::Rollback), None) => {
                self.fail("no transaction is open (BEGIN starts one)");
                false
            }
            (Some(TxnWord::Commit), Some(_)) => {
                let held = self.txn.take().unwrap_or_default();
                self.commit(held)
            }
            (Some(TxnWord::Rollback), Some(_)) => {
                let held = self.txn.take().unwrap_or_default();
                if self.interactive {
                    self.note(&format!(
                        "rolled back: {} held statement(s) dropped, none had run",
                        held.count
                    ));
                }
                true
            }
            (None, Some(held)) => {
                held.push(statement);
                true
            }
            (None, None) => self.run_sql(&statement),
        }
    }

    /// Send a transaction's held statements as one write.
    fn commit(&mut self, held: Held) -> bool {
        if held.overflowed {
            self.fail(&format!(
                "TOO_LARGE: the transaction's {} statements hold over {} MiB of SQL, more than one request can carry: none was applied. Drop BEGIN/COMMIT to send the statements one by one, or load a whole SQLite file with `quorumlite restore`",
                held.count,
                MAX_HELD_BYTES >> 20
            ));
            return false;
        }
        let held = held.statements;
        if held.is_empty() {
            return true;
        }
        let started = Instant::now();
        let count = held.len();
        let statements: Vec<Statement> = held.into_iter().map(Statement::from).collect();
        let outcome = self
            .guarded(self.client.execute(statements))
            .map_err(|Interrupted| Failure::Interrupted)
            .and_then(|r| r.map(Outcome::Wrote).map_err(Failure::from));
        let ok = match outcome {
            Ok(outcome) => {
                self.show(outcome);
                true
            }
            Err(Failure::Client(e)) if e.code == ErrorCode::TooLarge => {
                self.fail(&format!(
                    "{}: {}; the transaction's {count} statements were not applied. A transaction is one request: make it smaller, drop BEGIN/COMMIT to send the statements one by one, or load a whole SQLite file with `quorumlite restore`",
                    e.code, e.message
                ));
                false
            }
            Err(failure) => {
                self.failed(failure, Kind::Write, true);
                false
            }
        };
        if self.timer {
            self.note(&format!(
                "run time: {:.3} s",
                started.elapsed().as_secs_f64()
            ));
        }
        ok
    }

    /// Run one statement and print its outcome; false when it failed.
    fn run_sql(&mut self, statement: &str) -> bool {
        let started = Instant::now();
        let kind = classify::classify(self.scratch.as_ref(), statement);
        let outcome = match kind {
            Kind::Read => match self.read(statement) {
                Err(Failure::Client(e)) if classify::refused_as_write(&e) => self.write(statement),
                Err(Failure::Client(e)) if e.code == ErrorCode::LineageMismatch => {
                    self.note(
                        "the cluster's database was replaced (a restore) since this session's last read: starting a new session",
                    );
                    self.client.new_session();
                    self.read(statement)
                }
                other => other,
            },
            Kind::Write => self.write(statement),
        };
        let ok = match outcome {
            Ok(outcome) => {
                self.show(outcome);
                true
            }
            Err(failure) => {
                self.failed(failure, kind, false);
                false
            }
        };
        if self.timer {
            self.note(&format!(
                "run time: {:.3} s",
                started.elapsed().as_secs_f64()
            ));
        }
        ok
    }

    /// Print rows, or a write's results and its token line.
    fn show(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Rows(columns, rows) => {
                let text = self.style.rows(&columns, &rows);
                self.print(&text);
            }
            Outcome::Wrote(result) => {
                let mut changed = 0;
                for r in &result.results {
                    let text = self.style.rows(&r.columns, &r.rows);
                    self.print(&text);
                    changed += r.rows_affected;
                }
                let changed = match changed {
                    0 => String::new(),
                    1 => " (1 row changed)".into(),
                    n => format!(" ({n} rows changed)"),
                };
                self.note(&format!("token: {}{changed}", result.token));
                self.last_write = Some(result.token);
            }
        }
    }

    fn failed(&mut self, failure: Failure, kind: Kind, batch: bool) {
        match failure {
            Failure::Interrupted if kind == Kind::Read => {
                self.fail("interrupted: the statement was cancelled");
            }
            Failure::Interrupted => self
                .fail("interrupted: the write may or may not have been applied; read to find out"),
            Failure::Client(e) => {
                // One statement per request: the node's "statement 0: "
                // prefix says nothing there; in a transaction it does.
                let message = if batch {
                    e.message.as_str()
                } else {
                    e.message
                        .strip_prefix("statement 0: ")
                        .unwrap_or(&e.message)
                };
                let tail = if batch && e.code != ErrorCode::Indeterminate {
                    " (the transaction was not applied)"
                } else {
                    ""
                };
                let text = format!("{}: {message}{tail}", e.code);
                self.fail(&text);
            }
        }
    }

    fn read(&self, statement: &str) -> Result<Outcome, Failure> {
        let r = self
            .guarded(self.query(statement, self.read_level()))
            .map_err(|Interrupted| Failure::Interrupted)??;
        Ok(Outcome::Rows(r.columns, r.rows))
    }

    fn write(&self, statement: &str) -> Result<Outcome, Failure> {
        let r = self
            .guarded(self.client.execute(vec![statement.into()]))
            .map_err(|Interrupted| Failure::Interrupted)??;
        Ok(Outcome::Wrote(r))
    }

    /// A read sent as a call of its own, not gathered into a batch call
    /// with others: dropping it (Ctrl-C) then ends its stream, and the
    /// node stops the statement. Batching buys a shell that runs one
    /// statement at a time nothing.
    fn query(
        &self,
        statement: impl Into<Statement>,
        level: Consistency,
    ) -> impl std::future::Future<Output = Result<client::QueryResult, client::Error>> + '_ {
        let statement: Statement = statement.into();
        self.client
            .query_with_timeout(statement, level, self.config.statement_timeout)
    }

    fn read_level(&self) -> Consistency {
        match self.consistency {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            // The session's newest token (every reply's is kept).
            ConsistencyArg::Session => Consistency::Session(None),
            ConsistencyArg::Stale => Consistency::Stale { max_lag: None },
        }
    }

    /// Run a call to its end, or until Ctrl-C on a terminal: the call is
    /// dropped, which cancels it on the node.
    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output, Interrupted> {
        if !self.interactive {
            return Ok(self.runtime.block_on(f));
        }
        self.runtime.block_on(async {
            tokio::select! {
                out = f => Ok(out),
                _ = tokio::signal::ctrl_c() => Err(Interrupted),
            }
        })
    }

    /// A call to the cluster, failing at once with the reason when no
    /// node can be talked to (refused, an HTTP port, TLS on one side).
    fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, client::Error>>,
    ) -> Result<Result<T, client::Error>, Interrupted> {
        self.block_on(reach::guard(&self.addrs, self.ca.as_deref(), call))
    }

    /// Rows on stdout, or in the `.output` file.
    fn print(&mut self, text: &str) {
        let result = match &mut self.out {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                // A closed stdout (`| head`) is the reader's choice.
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
                Ok(())
            }
            Sink::File { path, writer, .. } => writer
                .write_all(text.as_bytes())
                .map_err(|e| format!("writing {path}: {e}; output goes to stdout again")),
        };
        if let Err(message) = result {
            self.out = Sink::Stdout;
            self.fail(&message);
        }
    }

    /// After a command's output: `.once` sends only one command's.
    fn once_done(&mut self) {
        if matches!(self.out, Sink::File { once: true, .. }) {
            // Back to stdout: nothing to open, cannot fail.
            let _ = self.set_output(None, false);
        }
    }

    /// Write out what the `.output` file buffered.
    fn flush_output(&mut self) {
        if let Sink::File { path, writer, .. } = &mut self.out {
            if let Err(e) = writer.flush() {
                let message = format!("writing {path}: {e}");
                self.out = Sink::Stdout;
                self.fail(&message);
            }
        }
    }

    /// Send rows to `path` (created or truncated), or to stdout (`None`).
    fn set_output(&mut self, path: Option<&str>, once: bool) -> Result<(), String> {
        self.flush_output();
        self.out = Sink::Stdout;
        if let Some(path) = path {
            let file = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
            self.out = Sink::File {
                path: path.to_owned(),
                writer: std::io::BufWriter::new(file),
                once,
            };
        }
        Ok(())
    }

    /// A side note (token, timer) on stderr, dim on a terminal: stdout
    /// keeps only rows, for scripts.
    fn note(&self, text: &str) {
        if self.dim {
            eprintln!("\x1b[2m{text}\x1b[0m");
        } else {
            eprintln!("{text}");
        }
    }

    /// One error line on stderr; scripts say where.
    fn fail(&mut self, message: &str) {
        self.failures += 1;
        match (&self.at.file, self.at.start) {
            (Some(file), line) => eprintln!("error near line {line} of {file}: {message}"),
            (None, line) if !self.interactive => eprintln!("error near line {line}: {message}"),
            _ => eprintln!("error: {message}"),
        }
    }
}

fn consistency_name(c: ConsistencyArg) -> &'static str {
    match c {
        ConsistencyArg::Linearizable => "linearizable",
        ConsistencyArg::Session => "session",
        ConsistencyArg::Stale => "stale",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_too_large_for_one_request_drops_its_statements_but_counts_them() {
        let mut held = Held::default();
        held.push_within("INSERT 1".into(), 20);
        held.push_within("INSERT 2".into(), 20);
        assert_eq!((held.statements.len(), held.overflowed), (2, false));
        held.push_within("INSERT 3".into(), 20);
        held.push_within("INSERT 4".into(), 20);
        assert!(held.overflowed);
        assert!(held.statements.is_empty());
        assert_eq!(held.count, 4);
    }

    #[test]
    fn the_shell_holds_transactions_but_passes_savepoints_on() {
        assert_eq!(txn_word("BEGIN TRANSACTION"), Some(TxnWord::Begin));
        assert_eq!(txn_word("  begin immediate"), Some(TxnWord::Begin));
        assert_eq!(txn_word("COMMIT"), Some(TxnWord::Commit));
        assert_eq!(txn_word("end transaction"), Some(TxnWord::Commit));
        assert_eq!(txn_word("ROLLBACK"), Some(TxnWord::Rollback));
        assert_eq!(txn_word("rollback transaction"), Some(TxnWord::Rollback));
        assert_eq!(txn_word("ROLLBACK TO sp1"), None);
        assert_eq!(txn_word("ROLLBACK TRANSACTION TO sp1"), None);
        assert_eq!(txn_word("SAVEPOINT sp1"), None);
        assert_eq!(txn_word("INSERT INTO t VALUES (1)"), None);
        assert_eq!(txn_word("SELECT 'BEGIN'"), None);
    }
}
