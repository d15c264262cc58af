//! The shell's dot commands: a line that starts with `.` where a statement
//! would start. Each is one line; its arguments are words, quoted with `'`
//! or `"` when they hold spaces.

use super::{consistency_name, render, Flow, Interrupted, Shell, MAX_READ_DEPTH};
use crate::cli::ConsistencyArg;
use crate::commands::{members, status_summary};
use client::{Consistency, Statement, Value};

pub const HELP: &str = "\
.consistency [LEVEL]   Show or set how fresh reads are: linearizable, session, stale
.dump [PATTERN]        The database (tables matching PATTERN, LIKE) as SQL text
.exit, .quit           Leave the shell (Ctrl-D does too)
.headers on|off        Column names above rows in table, list and csv modes
.help                  This list
.import [--skip N] FILE TABLE
                       Insert the rows of CSV FILE into TABLE (created from the
                       header line when missing); one write when FILE fits one
.indexes [TABLE]       Indexes, of TABLE if given
.mode [MODE]           Show or set the output: table, box, markdown, line, list, csv, json
.nullvalue TEXT        How NULL prints
.once FILE             Send the next command's output to FILE
.output [FILE]         Send output to FILE, or back to stdout without one
.read FILE             Run the statements and dot commands of FILE
.schema [PATTERN]      The CREATE statements, of tables matching PATTERN (LIKE) if given
.separator TEXT        Between values in list mode (default |)
.status                The session (token, read level) and every member: role, version, lag
.tables [PATTERN]      Tables and views, matching PATTERN (LIKE) if given
.timer on|off          Show how long each statement took
.width N ...           Widest each column gets in table, box and markdown modes (0: 60)
Statements end with \";\" and may span lines; reads go to any node, writes to the
leader. BEGIN ... COMMIT holds the statements between and sends them as one write.
Ctrl-C cancels a running statement.
";

/// Internal tables of Quorumlite and SQLite, hidden by `.tables` and `.schema`.
pub(super) const HIDDEN: &str =
    "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_quorumlite%' ESCAPE '\\'";

impl Shell {
    /// Run one dot command line (with its leading `.`).
    pub(super) fn dot(&mut self, line: &str) -> Flow {
        let words = match words(line) {
            Ok(w) => w,
            Err(e) => {
                self.fail(&e);
                return Flow::Continue;
            }
        };
        let (name, args) = match words.split_first() {
            Some((n, rest)) => (n.as_str(), rest),
            None => return Flow::Continue,
        };
        let arg = args.first().map(String::as_str);
        let mut redirects = false;
        let result = match (name, args.len()) {
            (".quit" | ".exit" | ".q", _) => return Flow::Quit,
            (".help", _) => {
                self.print(HELP);
                Ok(())
            }
            (".tables", 0 | 1) => self.tables(arg),
            (".schema", 0 | 1) => self.schema(arg),
            (".indexes" | ".indices", 0 | 1) => self.indexes(arg),
            (".dump", 0 | 1) => self.dump(arg),
            (".import", _) => self.import(args),
            (".status", 0) => self.status(),
            (".consistency", 0) => {
                self.print(&format!("{}\n", consistency_name(self.consistency)));
                Ok(())
            }
            (".consistency", 1) => self.set_consistency(args[0].as_str()),
            (".mode", 0) => {
                self.print(&format!("{}\n", self.style.mode.name()));
                Ok(())
            }
            (".mode", 1) => match render::Mode::parse(&args[0]) {
                Some(m) => {
                    self.style.mode = m;
                    Ok(())
                }
                None => Err(format!("unknown mode {:?}: use {}", args[0], render::MODES)),
            },
            (".headers" | ".header", 1) => on_off(".headers", &args[0]).map(|on| {
                self.style.headers = on;
            }),
            (".nullvalue", 1) => {
                self.style.null = Some(args[0].clone());
                Ok(())
            }
            (".separator", 1) => {
                self.style.separator = args[0].clone();
                Ok(())
            }
            (".width", _) => args
                .iter()
                .map(|w| {
                    w.parse::<usize>().map_err(|_| {
                        format!(
                            ".width takes whole numbers of characters (0: the default), not {w:?}"
                        )
                    })
                })
                .collect::<Result<Vec<usize>, String>>()
                .map(|widths| {
                    self.style.widths = widths;
                }),
            (".output", 0) => {
                redirects = true;
                self.set_output(None, false)
            }
            (".output", 1) => {
                redirects = true;
                self.set_output(arg, false)
            }
            (".once", 1) => {
                redirects = true;
                self.set_output(arg, true)
            }
            (".timer", 1) => on_off(".timer", &args[0]).map(|on| {
                self.timer = on;
            }),
            (".read", 1) => return self.read_file(&args[0]),
            (
                ".tables" | ".schema" | ".indexes" | ".indices" | ".dump" | ".status"
                | ".consistency" | ".mode" | ".headers" | ".header" | ".nullvalue" | ".separator"
                | ".once" | ".output" | ".timer" | ".read",
                _,
            ) => Err(format!("wrong arguments for {name}: enter \".help\"")),
            _ => Err(format!("unknown command {name}: enter \".help\"")),
        };
        if !redirects {
            self.once_done();
        }
        if let Err(message) = result {
            self.fail(&message);
            if self.bail {
                return Flow::Quit;
            }
        }
        Flow::Continue
    }

    fn set_consistency(&mut self, level: &str) -> Result<(), String> {
        self.consistency = match level.to_ascii_lowercase().as_str() {
            "linearizable" => ConsistencyArg::Linearizable,
            "session" => ConsistencyArg::Session,
            "stale" => ConsistencyArg::Stale,
            _ => {
                return Err(format!(
                    "unknown level {level:?}: use linearizable, session or stale"
                ))
            }
        };
        Ok(())
    }

    /// A read of the schema at the shell's level.
    fn schema_rows(&self, sql: String, pattern: Option<&str>) -> Result<Vec<Vec<Value>>, String> {
        let statement = Statement::with_params(
            sql,
            vec![pattern.map_or(Value::Null, |p| Value::Text(p.to_owned()))],
        );
        let level: Consistency = self.read_level();
        self.guarded(self.query(statement, level))
            .map_err(|Interrupted| "interrupted".to_owned())?
            .map(|r| r.rows)
            .map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// The first column of a schema read, one line each, `end` after each.
    fn print_schema_column(
        &mut self,
        sql: String,
        pattern: Option<&str>,
        end: &str,
    ) -> Result<(), String> {
        let rows = self.schema_rows(sql, pattern)?;
        let text: String = rows
            .iter()
            .filter_map(|r| r.first())
            .map(|v| format!("{}{end}\n", crate::commands::output::value_text(v)))
            .collect();
        self.print(&text);
        Ok(())
    }

    fn tables(&mut self, pattern: Option<&str>) -> Result<(), String> {
        self.print_schema_column(
            format!(
                "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND {HIDDEN} \
                 AND (?1 IS NULL OR name LIKE ?1) ORDER BY name"
            ),
            pattern,
            "",
        )
    }

    fn indexes(&mut self, table: Option<&str>) -> Result<(), String> {
        self.print_schema_column(
            format!(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND {HIDDEN} \
                 AND (?1 IS NULL OR tbl_name LIKE ?1) ORDER BY name"
            ),
            table,
            "",
        )
    }

    fn schema(&mut self, pattern: Option<&str>) -> Result<(), String> {
        self.print_schema_column(
            format!(
                "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND {HIDDEN} \
                 AND (?1 IS NULL OR tbl_name LIKE ?1) \
                 ORDER BY tbl_name, type DESC, name"
            ),
            pattern,
            ";",
        )
    }

    fn status(&mut self) -> Result<(), String> {
        let seen = self
            .guarded(self.client.status(false))
            .map_err(|Interrupted| "interrupted".to_owned())?
            .map_err(|e| format!("{}: {}", e.code, e.message))?;
        let views = self
            .block_on(members::survey(&self.config, &seen, self.deadline))
            .map_err(|Interrupted| "interrupted".to_owned())?;
        let last_write = self
            .last_write
            .as_ref()
            .map_or_else(|| "none yet".to_owned(), ToString::to_string);
        self.print(&format!(
            "session   reads {}, mode {}, newest token {}, last write {last_write}\n{}\n{}",
            consistency_name(self.consistency),
            self.style.mode.name(),
            self.client.token(),
            status_summary(&seen),
            members::table(&views),
        ));
        Ok(())
    }

    fn read_file(&mut self, path: &str) -> Flow {
        if self.depth >= MAX_READ_DEPTH {
            self.fail(&format!(
                ".read {path}: nested deeper than {MAX_READ_DEPTH} files"
            ));
            return if self.bail {
                Flow::Quit
            } else {
                Flow::Continue
            };
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.fail(&format!(".read {path}: {e}"));
                return if self.bail {
                    Flow::Quit
                } else {
                    Flow::Continue
                };
            }
        };
        self.depth += 1;
        let flow = self.script(std::io::BufReader::new(file), Some(path.to_owned()));
        self.depth -= 1;
        flow
    }
}

/// `on`/`off` (or `1`/`0`, `yes`/`no`) for `command`.
fn on_off(command: &str, word: &str) -> Result<bool, String> {
    match word.to_ascii_lowercase().as_str() {
        "on" | "1" | "yes" | "true" => Ok(true),
        "off" | "0" | "no" | "false" => Ok(false),
        _ => Err(format!("{command} takes on or off, not {word:?}")),
    }
}

/// Split a dot command into words; `'...'` and `"..."` group words.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut word = String::new();
        if first == '\'' || first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some(c) if c == first => break,
                    Some(c) => word.push(c),
                    None => return Err(format!("unclosed {first} in {line:?}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        out.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_command_words_may_be_quoted() {
        assert_eq!(
            words(".read  'my file.sql' x"),
            Ok(vec![".read".into(), "my file.sql".into(), "x".into()])
        );
        assert_eq!(
            words(".schema \"t\""),
            Ok(vec![".schema".into(), "t".into()])
        );
        assert!(words(".read 'open").is_err());
        assert_eq!(words("   "), Ok(vec![]));
    }
}
