//! How the shell prints rows: the modes of `sqlite3`'s `.mode` that make
//! sense over a network, shaped by `.headers`, `.nullvalue`, `.width` and
//! `.separator`.
//!
//! - `table` (default): aligned columns under a dashed rule, like every
//!   `quorumlite` command prints (`sqlite3`'s `column`).
//! - `box`: the same inside Unicode box-drawing lines; `markdown`: a
//!   GitHub table (`|` in a value is escaped).
//! - `line`: one `name = value` line per column, a blank line between rows.
//! - `list`: values joined by the separator (`|`), one row per line.
//! - `csv`: RFC 4180: a field is quoted when it holds a comma, a quote, a
//!   line break or leading or trailing space, with quotes doubled. A blob
//!   is its hex digits. Lines end with `\n`.
//! - `json`: JSON Lines, one object per row, keys in column order, values
//!   as `quorumlite query --json` writes them (blobs as `{"blob": base64}`).
//!   One line per row streams and feeds `jq` directly.
//!
//! The aligned modes (`table`, `box`, `markdown`) show a value on one line:
//! a line break, tab or other control character is written as its escape
//! (`\n`, `\t`, `\x01`), so a row never spills into the next. A value
//! wider than its column's limit (`.width`, else [`DEFAULT_MAX_WIDTH`]
//! characters) ends in `…`; `list`, `csv`, `json` and `line` never cut.

use super::super::output;
use client::{Column, Value};
use unicode_width::UnicodeWidthStr;

/// Widest a column of the aligned modes gets without `.width`.
pub const DEFAULT_MAX_WIDTH: usize = 60;

/// The output mode (`.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    Box,
    Markdown,
    Line,
    List,
    Csv,
    Json,
}

pub const MODES: &str = "table, box, markdown, line, list, csv or json";

impl Mode {
    pub fn parse(word: &str) -> Option<Mode> {
        Some(match word.to_ascii_lowercase().as_str() {
            "table" | "column" => Mode::Table,
            "box" => Mode::Box,
            "markdown" => Mode::Markdown,
            "line" => Mode::Line,
            "list" => Mode::List,
            "csv" => Mode::Csv,
            "json" => Mode::Json,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Box => "box",
            Mode::Markdown => "markdown",
            Mode::Line => "line",
            Mode::List => "list",
            Mode::Csv => "csv",
            Mode::Json => "json",
        }
    }
}

/// Everything the dot commands set about printing rows.
#[derive(Clone, Debug)]
pub struct Style {
    pub mode: Mode,
    /// A header line in `table`, `list` and `csv` (`.headers`); `box`,
    /// `markdown` and `line` always name their columns, `json` always does.
    pub headers: bool,
    /// How NULL prints (`.nullvalue`); `None`: `NULL` in the aligned and
    /// `line` modes, empty in `list` and `csv`.
    pub null: Option<String>,
    /// Per-column width limits (`.width`); 0 or missing: the default.
    pub widths: Vec<usize>,
    /// Between values in `list` mode (`.separator`).
    pub separator: String,
}

impl Default for Style {
    fn default() -> Style {
        Style {
            mode: Mode::Table,
            headers: true,
            null: None,
            widths: Vec::new(),
            separator: "|".into(),
        }
    }
}

impl Style {
    /// Rows in the current mode, ending with a newline (empty when there is
    /// nothing to print: no columns).
    pub fn rows(&self, columns: &[Column], rows: &[Vec<Value>]) -> String {
        if columns.is_empty() {
            return String::new();
        }
        let names = || columns.iter().map(|c| c.name.clone());
        match self.mode {
            Mode::Table | Mode::Box | Mode::Markdown => self.aligned(columns, rows),
            Mode::Line => self.line(columns, rows),
            Mode::List => {
                let mut out = String::new();
                let join = |fields: Vec<String>| fields.join(&self.separator) + "\n";
                if self.headers {
                    out.push_str(&join(names().collect()));
                }
                for r in rows {
                    out.push_str(&join(r.iter().map(|v| self.plain(v, "")).collect()));
                }
                out
            }
            Mode::Csv => {
                let mut out = String::new();
                if self.headers {
                    out.push_str(&csv_line(names()));
                }
                for r in rows {
                    out.push_str(&csv_line(r.iter().map(|v| self.plain(v, ""))));
                }
                out
            }
            Mode::Json => rows.iter().map(|r| json_line(columns, r)).collect(),
        }
    }

    /// A value in full, for the modes that never cut: blobs as hex, NULL
    /// as `.nullvalue` or `default_null`.
    fn plain(&self, v: &Value, default_null: &str) -> String {
        match v {
            Value::Null => self.null.clone().unwrap_or_else(|| default_null.into()),
            Value::Blob(b) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
            other => output::value_text(other),
        }
    }

    /// A value on one line, for the aligned modes.
    fn cell(&self, v: &Value) -> String {
        match v {
            Value::Null => self.null.clone().unwrap_or_else(|| "NULL".into()),
            other => escape_controls(&output::value_text(other)),
        }
    }

    fn limit(&self, column: usize) -> usize {
        match self.widths.get(column) {
            Some(&w) if w > 0 => w,
            _ => DEFAULT_MAX_WIDTH,
        }
    }

    fn aligned(&self, columns: &[Column], rows: &[Vec<Value>]) -> String {
        // A `|` inside a markdown cell would end it.
        let markdown = self.mode == Mode::Markdown;
        let fit = |text: String, column: usize| {
            let text = if markdown {
                text.replace('|', "\\|")
            } else {
                text
            };
            truncate(&text, self.limit(column))
        };
        let header: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| fit(escape_controls(&c.name), i))
            .collect();
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(i, v)| fit(self.cell(v), i))
                    .collect()
            })
            .collect();
        // Markdown needs three dashes under each column name.
        let least = if markdown { 3 } else { 0 };
        let mut widths: Vec<usize> = header.iter().map(|h| h.width().max(least)).collect();
        for row in &body {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.width());
            }
        }
        let pad = |cells: &[String]| -> Vec<String> {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, &w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.width()))))
                .collect()
        };
        let mut out = String::new();
        match self.mode {
            Mode::Box => {
                let rule = |l: &str, m: &str, r: &str| {
                    let parts: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
                    format!("{l}{}{r}\n", parts.join(m))
                };
                let line = |cells: Vec<String>| format!("│ {} │\n", cells.join(" │ "));
                out.push_str(&rule("┌", "┬", "┐"));
                out.push_str(&line(pad(&header)));
                out.push_str(&rule("├", "┼", "┤"));
                for row in &body {
                    out.push_str(&line(pad(row)));
                }
                out.push_str(&rule("└", "┴", "┘"));
            }
            Mode::Markdown => {
                let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
                out.push_str(&line(pad(&header)));
                let rules: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
                out.push_str(&format!("|{}|\n", rules.join("|")));
                for row in body {
                    out.push_str(&line(pad(&row)));
                }
            }
            _ => {
                let line = |cells: Vec<String>| cells.join("  ").trim_end().to_owned() + "\n";
                if self.headers {
                    out.push_str(&line(pad(&header)));
                    let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                    out.push_str(&line(rules));
                }
                for row in &body {
                    out.push_str(&line(pad(row)));
                }
            }
        }
        out
    }

    fn line(&self, columns: &[Column], rows: &[Vec<Value>]) -> String {
        let width = columns.iter().map(|c| c.name.width()).max().unwrap_or(0);
        let mut out = String::new();
        for (n, row) in rows.iter().enumerate() {
            if n > 0 {
                out.push('\n');
            }
            for (c, v) in columns.iter().zip(row) {
                let fill = " ".repeat(width.saturating_sub(c.name.width()));
                out.push_str(&format!("{fill}{} = {}\n", c.name, self.plain(v, "NULL")));
            }
        }
        out
    }
}

/// Control characters as escapes, so a value stays on one line.
fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to `max` display columns, the last one `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.width() <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

fn json_line(columns: &[Column], row: &[Value]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .zip(row)
        .map(|(c, v)| {
            format!(
                "{}:{}",
                serde_json::Value::String(c.name.clone()),
                output::value_json(v)
            )
        })
        .collect();
    format!("{{{}}}\n", fields.join(","))
}

fn csv_line(fields: impl Iterator<Item = String>) -> String {
    let mut line = fields.map(|f| csv_field(&f)).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

fn csv_field(f: &str) -> String {
    let needs_quotes = f.contains([',', '"', '\n', '\r'])
        || f.starts_with(char::is_whitespace)
        || f.ends_with(char::is_whitespace);
    if needs_quotes {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: (*n).into(),
                decltype: None,
            })
            .collect()
    }

    fn sample() -> (Vec<Column>, Vec<Vec<Value>>) {
        (
            cols(&["id", "name"]),
            vec![
                vec![Value::Integer(1), Value::Text("ada".into())],
                vec![Value::Integer(2), Value::Text("a, \"b\"\nc".into())],
                vec![Value::Real(2.5), Value::Null],
                vec![Value::Blob(vec![0, 255]), Value::Text(" x".into())],
            ],
        )
    }

    fn style(mode: Mode) -> Style {
        Style {
            mode,
            ..Style::default()
        }
    }

    #[test]
    fn csv_quotes_exactly_the_fields_that_need_it() {
        let (c, r) = sample();
        assert_eq!(
            style(Mode::Csv).rows(&c, &r),
            "id,name\n1,ada\n2,\"a, \"\"b\"\"\nc\"\n2.5,\n00ff,\" x\"\n"
        );
        let bare = Style {
            headers: false,
            null: Some("-".into()),
            ..style(Mode::Csv)
        };
        assert_eq!(bare.rows(&c, &r[2..3]), "2.5,-\n");
    }

    #[test]
    fn json_is_one_object_per_row_in_column_order() {
        let (c, r) = sample();
        let out = style(Mode::Json).rows(&c, &r);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], r#"{"id":1,"name":"ada"}"#);
        assert_eq!(lines[1], r#"{"id":2,"name":"a, \"b\"\nc"}"#);
        assert_eq!(lines[2], r#"{"id":2.5,"name":null}"#);
        assert_eq!(lines[3], r#"{"id":{"blob":"AP8="},"name":" x"}"#);
        assert_eq!(lines.len(), 4);
        for line in lines {
            assert!(serde_json::from_str::<serde_json::Value>(line).is_ok());
        }
    }

    #[test]
    fn table_aligns_columns_and_prints_nothing_without_columns() {
        let c = cols(&["n", "s"]);
        let r = vec![
            vec![Value::Integer(10), Value::Text("a".into())],
            vec![Value::Integer(7), Value::Null],
        ];
        assert_eq!(
            style(Mode::Table).rows(&c, &r),
            "n   s\n--  ----\n10  a\n7   NULL\n"
        );
        assert_eq!(style(Mode::Table).rows(&[], &[]), "");
        let bare = Style {
            headers: false,
            null: Some("∅".into()),
            ..style(Mode::Table)
        };
        assert_eq!(bare.rows(&c, &r), "10  a\n7   ∅\n");
        assert_eq!(Mode::parse("CSV"), Some(Mode::Csv));
        assert_eq!(Mode::parse("html"), None);
    }

    #[test]
    fn aligned_modes_keep_a_value_on_one_line_and_cut_wide_ones() {
        let c = cols(&["v"]);
        let r = vec![vec![Value::Text("one\ntwo\tthree".into())]];
        assert_eq!(
            style(Mode::Table).rows(&c, &r),
            "v\n---------------\none\\ntwo\\tthree\n"
        );
        let wide = vec![vec![Value::Text("x".repeat(200))]];
        let out = style(Mode::Table).rows(&c, &wide);
        let last = out.lines().last().unwrap_or_default();
        assert_eq!(last.chars().count(), DEFAULT_MAX_WIDTH);
        assert!(last.ends_with('…'));
        let narrow = Style {
            widths: vec![5],
            ..style(Mode::Box)
        };
        assert_eq!(
            narrow.rows(&c, &wide),
            "┌───────┐\n│ v     │\n├───────┤\n│ xxxx… │\n└───────┘\n"
        );
        // list keeps the value whole.
        assert_eq!(style(Mode::List).rows(&c, &wide).len(), 2 + 201);
    }

    #[test]
    fn markdown_line_and_list_print_as_sqlite3_does() {
        let c = cols(&["id", "name"]);
        let r = vec![
            vec![Value::Integer(1), Value::Text("a|b".into())],
            vec![Value::Integer(22), Value::Null],
        ];
        assert_eq!(
            style(Mode::Markdown).rows(&c, &r),
            "| id  | name |\n|-----|------|\n| 1   | a\\|b |\n| 22  | NULL |\n"
        );
        assert_eq!(
            style(Mode::Line).rows(&c, &r),
            "  id = 1\nname = a|b\n\n  id = 22\nname = NULL\n"
        );
        assert_eq!(style(Mode::List).rows(&c, &r), "id|name\n1|a|b\n22|\n");
    }
}
