//! SQL text as the shell reads it, on `storage`'s rules, the ones the
//! node itself splits and classifies by: SQLite's own `sqlite3_complete`
//! and the policy's word lexer ([`storage::sql_words`]).
//!
//! The shell reads lines until the text typed so far is *complete*: it ends
//! with a `;` that is not inside a string literal, a quoted identifier, a
//! comment or the body of a `CREATE TRIGGER ... BEGIN ... END`. Then it
//! [`split`]s the text at those same semicolons and runs each statement.

/// Whether `text` ends with a complete statement: `sqlite3_complete`.
pub fn is_complete(text: &str) -> bool {
    storage::is_complete(text)
}

/// Whether a line holds no statement at all: only white space and closed
/// comments (a `/*` left open continues on the next line, so is not blank).
pub fn is_blank(line: &str) -> bool {
    storage::sql_words(line).next().is_none() && storage::is_complete(&format!("{line}\n;"))
}

/// The statements of a complete text, in order, without their final `;`
/// and surrounding white space; blank ones (`;;`) are skipped. Text after
/// the last complete statement is returned as one more statement, as
/// SQLite would prepare it.
pub fn split(text: &str) -> Vec<String> {
    storage::split_statements(text)
        .into_iter()
        .filter(|s| storage::sql_words(s).next().is_some())
        .map(|s| s.strip_suffix(';').unwrap_or(&s).trim_end().to_owned())
        .collect()
}

/// The first word of a statement after white space and comments,
/// upper-cased (`""` when there is none).
pub fn first_keyword(sql: &str) -> String {
    leading_words(sql, 1).pop().unwrap_or_default()
}

/// The first `n` words of a statement after white space, comments and
/// quoted text, upper-cased (fewer when the statement is shorter).
pub fn leading_words(sql: &str, n: usize) -> Vec<String> {
    storage::sql_words(sql)
        .take(n)
        .map(str::to_ascii_uppercase)
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
            // The shell ends every line it buffers with a line break.
            "SELECT 1; -- trailing comment\n",
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
