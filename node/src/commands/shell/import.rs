//! `.import [--csv] [--skip N] FILE TABLE`: the rows of a CSV file into a
//! table, as `sqlite3`'s `.import` does.
//!
//! - When TABLE does not exist, the file's first record names its columns
//!   and the table is created with them (`TEXT` each, as `sqlite3` does);
//!   when it exists, every record is a row (`--skip 1` skips a header).
//! - A record with too few fields gets NULL for the rest; one with too
//!   many is cut; both are counted and reported once, with the first
//!   record's line.
//! - Values are sent as text; the column's affinity converts them as
//!   SQLite's own `.import` would (`'42'` into an INTEGER column is 42).
//! - A file whose rows fit in one request ([`BATCH_BYTES`]) is one write:
//!   all rows or none. A larger one goes in writes of that size, in order;
//!   if one fails, the rows before it stay, and the error says how many
//!   records to `--skip` to carry on after them.

use super::dump::quote_name;
use super::{Interrupted, Shell};
use client::{Statement, Value};

/// Bytes of values per write: well under the node's 16 MiB request cap.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The parsed arguments of `.import`.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    file: String,
    table: String,
    skip: u64,
}

const USAGE: &str = "usage: .import [--csv] [--skip N] FILE TABLE";

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut skip = 0;
    let mut rest = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--csv" | "-csv" => {}
            "--skip" | "-skip" => {
                let n = words
                    .next()
                    .ok_or_else(|| format!("--skip needs a number; {USAGE}"))?;
                skip = n
                    .parse()
                    .map_err(|_| format!("--skip takes a number of records, not {n:?}"))?;
            }
            w if w.starts_with('-') && w.len() > 1 => {
                return Err(format!("unknown option {w}; {USAGE} (CSV only)"))
            }
            _ => rest.push(word.clone()),
        }
    }
    match <[String; 2]>::try_from(rest) {
        Ok([file, table]) => Ok(Args { file, table, skip }),
        Err(_) => Err(USAGE.into()),
    }
}

impl Shell {
    pub(super) fn import(&mut self, args: &[String]) -> Result<(), String> {
        let Args { file, table, skip } = parse_args(args)?;
        let input = std::fs::File::open(&file).map_err(|e| format!(".import {file}: {e}"))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(std::io::BufReader::new(input));
        let mut records = reader.byte_records();
        let mut skipped = 0;
        while skipped < skip {
            match records.next() {
                Some(Ok(_)) => skipped += 1,
                Some(Err(e)) => return Err(format!(".import {file}: {e}")),
                None => break,
            }
        }
        let quoted = quote_name(&table);
        let existing = self.import_columns(&quoted)?;
        let mut create = None;
        let columns = match existing {
            Some(n) => n,
            None => {
                let header = match records.next() {
                    Some(Ok(h)) => h,
                    Some(Err(e)) => return Err(format!(".import {file}: {e}")),
                    None => return Err(format!(".import {file}: the file is empty, and table {table} does not exist to take no rows")),
                };
                let names: Vec<String> = header
                    .iter()
                    .enumerate()
                    .map(|(i, name)| match String::from_utf8_lossy(name).trim() {
                        "" => format!("c{}", i + 1),
                        name => name.to_owned(),
                    })
                    .collect();
                let defs: Vec<String> = names
                    .iter()
                    .map(|n| format!("\"{}\" TEXT", n.replace('"', "\"\"")))
                    .collect();
                create = Some(format!("CREATE TABLE {quoted}({})", defs.join(", ")));
                names.len()
            }
        };
        let marks = vec!["?"; columns].join(",");
        let insert = format!("INSERT INTO {quoted} VALUES({marks})");
        let mut batch: Vec<Statement> = create.into_iter().map(Statement::from).collect();
        let mut bytes = 0;
        let mut imported: u64 = 0;
        let mut done: u64 = skipped;
        let mut in_batch: u64 = 0;
        let mut writes = 0;
        let mut short = (0u64, None);
        let mut long = (0u64, None);
        loop {
            let record = match records.next() {
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => {
                    return Err(self.import_stopped(&format!("{e}"), imported, done, &file, &table))
                }
                None => None,
            };
            if let Some(record) = &record {
                let line = record.position().map_or(0, csv::Position::line);
                let tally = if record.len() < columns {
                    Some(&mut short)
                } else if record.len() > columns {
                    Some(&mut long)
                } else {
                    None
                };
                if let Some((count, first)) = tally {
                    *count += 1;
                    first.get_or_insert(line);
                }
                let mut values = Vec::with_capacity(columns);
                for i in 0..columns {
                    values.push(match record.get(i) {
                        Some(field) => {
                            bytes += field.len() + 8;
                            match std::str::from_utf8(field) {
                                Ok(text) => Value::Text(text.to_owned()),
                                Err(_) => Value::Blob(field.to_vec()),
                            }
                        }
                        None => Value::Null,
                    });
                }
                batch.push(Statement::with_params(insert.clone(), values));
                in_batch += 1;
            }
            let last = record.is_none();
            if (bytes >= BATCH_BYTES || last) && !batch.is_empty() {
                let statements = std::mem::take(&mut batch);
                bytes = 0;
                match self.guarded(self.client.execute(statements)) {
                    Ok(Ok(result)) => {
                        writes += 1;
                        imported += in_batch;
                        done += in_batch;
                        in_batch = 0;
                        self.last_write = Some(result.token);
                    }
                    Ok(Err(e)) => {
                        let why = format!("{}: {}", e.code, e.message);
                        return Err(self.import_stopped(&why, imported, done, &file, &table));
                    }
                    Err(Interrupted) => {
                        return Err(self.import_stopped(
                            "interrupted (the write in flight may or may not have been applied)",
                            imported,
                            done,
                            &file,
                            &table,
                        ))
                    }
                }
            }
            if last {
                break;
            }
        }
        for (what, (count, first)) in [("too few", short), ("too many", long)] {
            if count > 0 {
                let fix = if what == "too few" {
                    "the missing ones are NULL"
                } else {
                    "the extra ones were dropped"
                };
                self.note(&format!(
                    "{file}: {count} record(s) had {what} fields for {columns} columns, the first on line {}: {fix}",
                    first.unwrap_or(0)
                ));
            }
        }
        let how = if writes > 1 {
            format!(" in {writes} writes")
        } else {
            String::new()
        };
        self.note(&format!("imported {imported} row(s) into {table}{how}"));
        Ok(())
    }

    /// The number of columns of `table`, or `None` when it does not exist.
    fn import_columns(&mut self, quoted: &str) -> Result<Option<usize>, String> {
        let statement = Statement::from(format!("SELECT * FROM {quoted} LIMIT 0"));
        let level = self.read_level();
        match self.guarded(self.query(statement, level)) {
            Ok(Ok(r)) => Ok(Some(r.columns.len())),
            Ok(Err(e)) if e.message.contains("no such table") => Ok(None),
            Ok(Err(e)) => Err(format!(".import: {}: {}", e.code, e.message)),
            Err(Interrupted) => Err(".import: interrupted".into()),
        }
    }

    fn import_stopped(
        &self,
        why: &str,
        imported: u64,
        done: u64,
        file: &str,
        table: &str,
    ) -> String {
        if imported == 0 {
            format!(".import {file}: {why}; no row was imported")
        } else {
            format!(
                ".import {file}: {why}; the first {imported} row(s) were imported: carry on after them with .import --skip {done} {file} {table}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn import_takes_a_file_a_table_and_how_many_records_to_skip() {
        assert_eq!(
            parse_args(&words("--csv --skip 3 people.csv people")),
            Ok(Args {
                file: "people.csv".into(),
                table: "people".into(),
                skip: 3
            })
        );
        assert_eq!(parse_args(&words("a.csv t")).map(|a| a.skip), Ok(0));
        assert!(parse_args(&words("a.csv")).is_err());
        assert!(parse_args(&words("--skip x a.csv t")).is_err());
        assert!(parse_args(&words("--ascii a.csv t"))
            .is_err_and(|e| e.contains("unknown option --ascii")));
    }
}
