//! `quorumlite shell`: an interactive SQL prompt in the habits of the
//! `sqlite3` shell, over the client library.
//!
//! ```text
//!  line ──> dot command? ──> .tables .schema .status .mode ... (dot.rs)
//!    │
//!    └──> buffer until complete (sql.rs) ──> split into statements
//!           ──> read or write? (classify.rs) ──> Client::query / execute
//!           ──> rows in the current mode (render.rs), token line, errors
//! ```
//!
//! One [`Client`] lives as long as the shell, so the session is the
//! client's: it finds and follows the leader, retries what is safe, and
//! keeps the newest token, which `session` reads present. Reads and writes
//! of one shell therefore see its own writes at every level.
//!
//! On a terminal, lines are edited with rustyline and kept in a history
//! file. Otherwise SQL comes from stdin with no prompt and no history;
//! every statement runs (or up to the first failure with `--bail`) and the
//! exit code is 1 when any failed. `docs/shell.md` is the user's guide.

mod classify;
mod dot;
mod render;
mod sql;

use super::{client_config, output, runtime};
use crate::cli::{ConsistencyArg, ShellArgs};
use classify::Kind;
use client::{Client, ClientConfig, Column, Consistency, Token, Value};
use render::Mode;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const PROMPT: &str = "quorumlite> ";
const CONTINUE: &str = "       ...> ";
/// `.read` inside `.read` deeper than this is refused (a file reading itself).
const MAX_READ_DEPTH: usize = 16;

pub fn run(args: ShellArgs) -> ExitCode {
    let config = match client_config(&args.connect) {
        Ok(c) => c,
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
        Client::with_config(&args.connect.addr, config.clone())
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
        config,
        deadline: Duration::from_millis(args.connect.timeout_ms.min(2_000)),
        scratch: classify::scratch(),
        consistency: args.consistency,
        mode: if args.connect.json {
            Mode::Json
        } else {
            Mode::Table
        },
        timer: false,
        buffer: String::new(),
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

pub(super) struct Shell {
    runtime: tokio::runtime::Runtime,
    /// The session: leader, retries and the newest token live here.
    client: Client,
    /// For `.status`, which asks every member on its own.
    config: ClientConfig,
    /// How long `.status` waits for each member.
    deadline: Duration,
    /// An empty in-memory database that classifies statements.
    scratch: Option<rusqlite::Connection>,
    consistency: ConsistencyArg,
    mode: Mode,
    timer: bool,
    /// Lines of the statement being typed. Invariant: empty, or not yet a
    /// complete statement.
    buffer: String,
    at: Place,
    /// Statements and dot commands that failed.
    failures: usize,
    /// Input is a terminal (prompts, history, no line numbers in errors).
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
        loop {
            let prompt = if self.buffer.is_empty() {
                PROMPT
            } else {
                CONTINUE
            };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                // Ctrl-C drops the statement being typed, as in sqlite3.
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    self.buffer.clear();
                    continue;
                }
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => {
                    eprintln!("error: reading the terminal: {e}");
                    break;
                }
            };
            if !line.trim().is_empty() && editor.add_history_entry(line.as_str()).unwrap_or(false) {
                if let Some(path) = &history {
                    // Appended line by line: a killed shell keeps its history.
                    if let Err(e) = editor.append_history(path) {
                        eprintln!("warning: history file {}: {e}", path.display());
                    }
                }
            }
            if self.feed(&line) == Flow::Quit {
                break;
            }
        }
    }

    /// Run every line of `input` (stdin, or a `.read` file).
    fn script(&mut self, input: impl BufRead, file: Option<String>) -> Flow {
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
        flow
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
        for statement in sql::split(text) {
            if !self.run_sql(&statement) && self.bail {
                return Flow::Quit;
            }
        }
        Flow::Continue
    }

    /// Run one statement and print its outcome; false when it failed.
    fn run_sql(&mut self, statement: &str) -> bool {
        let started = Instant::now();
        let outcome = match classify::classify(self.scratch.as_ref(), statement) {
            Kind::Read => match self.read(statement) {
                Err(e) if classify::refused_as_write(&e) => self.write(statement),
                other => other,
            },
            Kind::Write => self.write(statement),
        };
        let elapsed = started.elapsed();
        let ok = match outcome {
            Ok(Outcome::Rows(columns, rows)) => {
                self.print(&render::rows(self.mode, &columns, &rows));
                true
            }
            Ok(Outcome::Wrote(result)) => {
                let mut changed = 0;
                for r in &result.results {
                    self.print(&render::rows(self.mode, &r.columns, &r.rows));
                    changed += r.rows_affected;
                }
                let changed = match changed {
                    0 => String::new(),
                    1 => " (1 row changed)".into(),
                    n => format!(" ({n} rows changed)"),
                };
                self.note(&format!("token: {}{changed}", result.token));
                self.last_write = Some(result.token);
                true
            }
            Err(e) => {
                // One statement per request: the node's "statement 0: "
                // prefix says nothing here.
                let message = e
                    .message
                    .strip_prefix("statement 0: ")
                    .unwrap_or(&e.message);
                self.fail(&format!("{}: {message}", e.code));
                false
            }
        };
        if self.timer {
            self.note(&format!("run time: {:.3} s", elapsed.as_secs_f64()));
        }
        ok
    }

    fn read(&self, statement: &str) -> Result<Outcome, client::Error> {
        let r = self.block_on(self.client.query(statement, self.read_level()))?;
        Ok(Outcome::Rows(r.columns, r.rows))
    }

    fn write(&self, statement: &str) -> Result<Outcome, client::Error> {
        let r = self.block_on(self.client.execute(vec![statement.into()]))?;
        Ok(Outcome::Wrote(r))
    }

    fn read_level(&self) -> Consistency {
        match self.consistency {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            // The session's newest token (every reply's is kept).
            ConsistencyArg::Session => Consistency::Session(None),
            ConsistencyArg::Stale => Consistency::Stale { max_lag: None },
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Rows on stdout.
    fn print(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
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
