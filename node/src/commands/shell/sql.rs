//! Where one SQL statement ends, without a database: the rule of SQLite's
//! `sqlite3_complete`, in safe Rust.
//!
//! The shell reads lines until the text typed so far is *complete*: it ends
//! with a `;` that is not inside a string literal, a quoted identifier, a
//! comment or the body of a `CREATE TRIGGER ... BEGIN ... END`. Then it
//! [`split`]s the text at those same semicolons and runs each statement.
//!
//! The scanner is SQLite's own state machine (`complete.c`): the text is cut
//! into tokens (semicolon, white space or comment, the keywords `CREATE`,
//! `TEMP`/`TEMPORARY`, `TRIGGER`, `EXPLAIN`, `END`, and everything else), and
//! eight states track whether a trigger body is open. rusqlite exposes
//! `sqlite3_complete` only through raw FFI, and `unsafe` stays in the
//! capture VFS (STYLE.md), so the rule is re-stated here and table-tested
//! against the cases `complete.c` documents.

/// The token kinds of `sqlite3_complete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tk {
    Semi,
    Ws,
    Other,
    Explain,
    Create,
    Temp,
    Trigger,
    End,
}

/// `complete.c`'s transition table: `TRANS[state][token]`. States: 0
/// invalid (nothing yet), 1 start (after a statement's `;`), 2 normal, 3
/// after EXPLAIN, 4 after CREATE, 5 in a trigger, 6 `;` in a trigger, 7
/// END in a trigger.
const TRANS: [[u8; 8]; 8] = [
    //  SEMI WS OTHER EXPLAIN CREATE TEMP TRIGGER END
    [1, 0, 2, 3, 4, 2, 2, 2], // 0 invalid
    [1, 1, 2, 3, 4, 2, 2, 2], // 1 start
    [1, 2, 2, 2, 2, 2, 2, 2], // 2 normal
    [1, 3, 3, 2, 4, 2, 2, 2], // 3 explain
    [1, 4, 2, 2, 2, 4, 5, 2], // 4 create
    [6, 5, 5, 5, 5, 5, 5, 5], // 5 trigger
    [6, 6, 5, 5, 5, 5, 5, 7], // 6 semi in trigger
    [1, 7, 5, 5, 5, 5, 5, 5], // 7 end in trigger
];

const START: u8 = 1;

/// One token: its kind and its byte range in the text.
#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Tk,
    start: usize,
    end: usize,
}

/// SQLite's identifier characters: ASCII letters, digits, `_`, `$`, and
/// every byte of a multi-byte UTF-8 character.
fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Cut `text` into tokens; `true` with them when the text ends inside a
/// string, a quoted identifier or a `/* */` comment (the open piece is the
/// last token), so it cannot be complete yet.
fn tokens(text: &str) -> (Vec<Token>, bool) {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut open = false;
    let mut i = 0;
    // The end of a piece closed by `close` searched from `from`, or the
    // end of the text (and `open`) when it never closes.
    let until = |from: usize, close: &str, open: &mut bool| match text[from..].find(close) {
        Some(n) => from + n + close.len(),
        None => {
            *open = true;
            b.len()
        }
    };
    while i < b.len() {
        let start = i;
        let kind = match b[i] {
            b';' => {
                i += 1;
                Tk::Semi
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                Tk::Ws
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = until(i + 2, "*/", &mut open);
                Tk::Ws
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                // To the end of the line; a comment on the last line ends
                // the text (and does not leave it open).
                i = text[i..].find('\n').map_or(b.len(), |n| i + n + 1);
                Tk::Ws
            }
            q @ (b'\'' | b'"' | b'`') => {
                // A doubled quote inside is two adjacent literals to this
                // scanner, which is the same thing for finding the end.
                let close = match q {
                    b'\'' => "'",
                    b'"' => "\"",
                    _ => "`",
                };
                i = until(i + 1, close, &mut open);
                Tk::Other
            }
            b'[' => {
                i = until(i + 1, "]", &mut open);
                Tk::Other
            }
            c if id_char(c) => {
                while i < b.len() && id_char(b[i]) {
                    i += 1;
                }
                keyword(&text[start..i])
            }
            _ => {
                // One ASCII character: every byte >= 0x80 is an id char.
                i += 1;
                Tk::Other
            }
        };
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    (out, open)
}

fn keyword(word: &str) -> Tk {
    let is = |k: &str| word.eq_ignore_ascii_case(k);
    if is("create") {
        Tk::Create
    } else if is("temp") || is("temporary") {
        Tk::Temp
    } else if is("trigger") {
        Tk::Trigger
    } else if is("explain") {
        Tk::Explain
    } else if is("end") {
        Tk::End
    } else {
        Tk::Other
    }
}

/// Whether `text` ends with a complete statement: `sqlite3_complete`.
pub fn is_complete(text: &str) -> bool {
    let (tokens, open) = tokens(text);
    if open {
        return false;
    }
    let mut state = 0u8;
    for t in tokens {
        state = TRANS[state as usize][t.kind as usize];
    }
    state == START
}

/// Whether `text` holds no statement at all: only white space and closed
/// comments.
pub fn is_blank(text: &str) -> bool {
    let (tokens, open) = tokens(text);
    !open && tokens.iter().all(|t| t.kind == Tk::Ws)
}

/// The statements of a complete text, in order, without their final `;`
/// and surrounding white space; blank ones (`;;`) are skipped. Text after
/// the last complete statement is returned as one more statement, as
/// SQLite would prepare it.
pub fn split(text: &str) -> Vec<String> {
    let (tokens, _) = tokens(text);
    let mut out = Vec::new();
    let mut state = 0u8;
    let mut from = 0;
    let mut push = |piece: &str| {
        if !is_blank(piece) {
            out.push(piece.trim().to_owned());
        }
    };
    for t in tokens {
        state = TRANS[state as usize][t.kind as usize];
        if t.kind == Tk::Semi && state == START {
            push(&text[from..t.start]);
            from = t.end;
        }
    }
    push(&text[from..]);
    out
}

/// The first word of a statement after white space and comments,
/// upper-cased (`""` when there is none).
pub fn first_keyword(sql: &str) -> String {
    leading_words(sql, 1).pop().unwrap_or_default()
}

/// The first `n` tokens of a statement after white space and comments,
/// upper-cased (fewer when the statement is shorter).
pub fn leading_words(sql: &str, n: usize) -> Vec<String> {
    tokens(sql)
        .0
        .into_iter()
        .filter(|t| t.kind != Tk::Ws)
        .take(n)
        .map(|t| sql[t.start..t.end].to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_complete_only_at_a_semicolon_outside_strings_and_comments() {
        let complete = [
            "SELECT 1;",
            "SELECT 1;\n",
            "SELECT 1; -- trailing comment",
            "SELECT 1; /* c */",
            "SELECT 'a;b';",
            "SELECT \"a;b\" FROM t;",
            "SELECT [a;b], `c;d`;",
            "SELECT 'it''s';",
            "SELECT 1 -- ; not here\n;",
            "SELECT /* ; */ 1;",
            ";",
            "SELECT 1; SELECT 2;",
            "SELECT 'ü;';",
        ];
        for text in complete {
            assert!(is_complete(text), "{text:?} is complete");
        }
        let incomplete = [
            "",
            "SELECT 1",
            "SELECT 'a;",
            "SELECT 'a;b'",
            "SELECT \"a;",
            "SELECT [a;",
            "SELECT 1 -- ;",
            "SELECT /* ; */ 1",
            "SELECT /* ;",
            "SELECT 1; SELECT 2",
            "-- only a comment\n",
            "SELECT 'it''s;",
        ];
        for text in incomplete {
            assert!(!is_complete(text), "{text:?} is not complete");
        }
    }

    #[test]
    fn a_trigger_body_ends_only_at_end_semicolon() {
        let body = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE c SET n = n + 1;\n";
        assert!(!is_complete(body));
        assert!(!is_complete(&format!(
            "{body}  INSERT INTO log VALUES (1);"
        )));
        assert!(is_complete(&format!("{body}END;")));
        assert!(is_complete(
            "create temp trigger tr after delete on t begin select 1; end;"
        ));
        assert!(is_complete(
            "EXPLAIN CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;"
        ));
        // Not a trigger: CREATE TABLE with a column named "trigger"-ish.
        assert!(is_complete("CREATE TABLE t(x); "));
        // END outside a trigger is just a word.
        assert!(is_complete("SELECT 1 AS end;"));
    }

    #[test]
    fn split_cuts_at_statement_ends_and_drops_blank_statements() {
        assert_eq!(
            split("SELECT 1; SELECT 'a;b' ;\n-- c\n;INSERT INTO t VALUES (1);"),
            vec!["SELECT 1", "SELECT 'a;b'", "INSERT INTO t VALUES (1)"]
        );
        let trigger = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END";
        assert_eq!(
            split(&format!("{trigger};SELECT 3;")),
            vec![trigger, "SELECT 3"]
        );
        assert_eq!(split("  ;  ; "), Vec::<String>::new());
        assert_eq!(split("SELECT 1; SELECT 2"), vec!["SELECT 1", "SELECT 2"]);
    }

    #[test]
    fn blank_means_only_white_space_and_comments() {
        assert!(is_blank(""));
        assert!(is_blank("  \n\t"));
        assert!(is_blank("-- a comment"));
        assert!(is_blank("/* a */ -- b\n"));
        assert!(!is_blank("/* still open"), "the next line continues it");
        assert!(!is_blank("SELECT"));
        assert!(!is_blank("/* a */ x"));
        assert!(!is_blank("'open string"));
    }

    #[test]
    fn the_first_keyword_skips_comments() {
        assert_eq!(first_keyword("  /* x */ -- y\n select 1"), "SELECT");
        assert_eq!(
            first_keyword("with x as (select 1) select * from x"),
            "WITH"
        );
        assert_eq!(first_keyword("-- nothing"), "");
    }
}
