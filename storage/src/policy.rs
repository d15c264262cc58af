//! What user SQL may do, decided statement by statement.
//!
//! SQLite's authorizer calls [`check`] for every action while a user
//! statement is prepared. Writes run inside the executor's own transaction
//! and savepoints, so transaction control is refused; `ATTACH` would write
//! files outside replication; the internal metadata table is ours. Reads run
//! on `query_only` connections, and nothing may turn that off.
//!
//! The policy is a pure function of the action so it can be table-tested.

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Table holding the data version; every name with this prefix is reserved.
pub const META_TABLE: &str = "_quorumlite_meta";
const RESERVED_PREFIX: &str = "_quorumlite";

/// Which kind of connection a statement is prepared on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Write,
    Read,
}

/// PRAGMAs that would change how the file is stored or synced, break the
/// capture, or lift `query_only`: never from users.
const DENIED_PRAGMAS: &[&str] = &[
    "journal_mode",
    "locking_mode",
    "wal_checkpoint",
    "wal_autocheckpoint",
    "page_size",
    "writable_schema",
    "schema_version",
    "query_only",
    "synchronous",
    "mmap_size",
    "journal_size_limit",
    "temp_store_directory",
    "data_store_directory",
    "cell_size_check",
    "trusted_schema",
];

fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX)
}

/// Decide one authorizer action for user SQL. `Err` carries the reason shown to the user.
pub(crate) fn check(action: &AuthAction<'_>, role: Role) -> Result<(), String> {
    use AuthAction as A;
    let table = match action {
        A::Transaction { .. } | A::Savepoint { .. } => {
            return Err(match role {
                Role::Write => "transaction control (BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE) is not allowed: each request already runs as one transaction",
                Role::Read => "transaction control is not allowed in a read",
            }
            .into())
        }
        A::Attach { .. } | A::Detach { .. } => {
            return Err("ATTACH and DETACH are not supported: only the main database is replicated".into())
        }
        A::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            // Reading a setting is fine; a checkpoint is an action even bare.
            let sets = pragma_value.is_some() || name == "wal_checkpoint";
            if sets && DENIED_PRAGMAS.contains(&name.as_str()) {
                return Err(format!("PRAGMA {name} is managed by Quorumlite and cannot be changed"));
            }
            return Ok(());
        }
        A::Read { table_name, .. } => {
            // Reading the metadata table is harmless; writing it is not.
            if role == Role::Write && is_reserved(table_name) {
                Some(*table_name)
            } else {
                None
            }
        }
        A::Insert { table_name }
        | A::Delete { table_name }
        | A::Update { table_name, .. }
        | A::CreateTable { table_name }
        | A::DropTable { table_name }
        | A::CreateIndex { table_name, .. }
        | A::DropIndex { table_name, .. }
        | A::CreateTrigger { table_name, .. }
        | A::DropTrigger { table_name, .. }
        | A::AlterTable { table_name, .. }
        | A::CreateVtable { table_name, .. }
        | A::DropVtable { table_name, .. }
        | A::Analyze { table_name } => {
            if role == Role::Read && !matches!(action, A::Analyze { .. }) {
                return Err("this statement writes: send it as a write (execute), not as a query".into());
            }
            Some(*table_name)
        }
        A::CreateView { view_name } | A::DropView { view_name } => {
            if role == Role::Read {
                return Err("this statement writes: send it as a write (execute), not as a query".into());
            }
            Some(*view_name)
        }
        A::CreateTempTable { .. }
        | A::CreateTempIndex { .. }
        | A::CreateTempTrigger { .. }
        | A::CreateTempView { .. }
        | A::DropTempTable { .. }
        | A::DropTempIndex { .. }
        | A::DropTempTrigger { .. }
        | A::DropTempView { .. } => {
            return Err("TEMP objects are not supported: they would live on one node only".into())
        }
        _ => None,
    };
    match table {
        Some(name) if name.eq_ignore_ascii_case("sqlite_dbpage") => {
            Err("sqlite_dbpage is reserved for replication".into())
        }
        Some(name) if is_reserved(name) => Err(format!(
            "{name}: names starting with _quorumlite are reserved for Quorumlite's internal metadata"
        )),
        _ => Ok(()),
    }
}

/// Shared between a connection's authorizer callback and its owner: whether
/// the statement being prepared is ours, and why the last user one was refused.
#[derive(Default)]
pub(crate) struct Gate {
    /// Set while our own statements are prepared and run: everything passes.
    internal: AtomicBool,
    /// Set while an interactive transaction's statements are prepared and
    /// run: user savepoints (SAVEPOINT, RELEASE, ROLLBACK TO) pass too.
    savepoints: AtomicBool,
    /// Why the last user statement was refused (the authorizer can only say "deny").
    refusal: Mutex<Option<String>>,
}

impl Gate {
    /// Install the authorizer for `role` on `conn`.
    pub(crate) fn install(
        conn: &mut rusqlite::Connection,
        role: Role,
    ) -> rusqlite::Result<Arc<Gate>> {
        let gate = Arc::new(Gate::default());
        let hook_gate = Arc::clone(&gate);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            hook_gate.authorize(&ctx, role)
        }))?;
        Ok(gate)
    }

    fn authorize(&self, ctx: &AuthContext<'_>, role: Role) -> Authorization {
        if self.internal.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        if matches!(ctx.action, AuthAction::Savepoint { .. })
            && self.savepoints.load(Ordering::Relaxed)
        {
            return Authorization::Allow;
        }
        match check(&ctx.action, role) {
            Ok(()) => Authorization::Allow,
            Err(reason) => {
                self.refusal().get_or_insert(reason);
                Authorization::Deny
            }
        }
    }

    fn refusal(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.refusal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` with the authorizer letting everything through (our own statements).
    pub(crate) fn internal<T>(&self, f: impl FnOnce() -> T) -> T {
        self.internal.store(true, Ordering::Relaxed);
        let out = f();
        self.internal.store(false, Ordering::Relaxed);
        out
    }

    /// Run `f` (user statements of an interactive transaction) with user
    /// savepoints admitted.
    pub(crate) fn with_savepoints<T>(&self, f: impl FnOnce() -> T) -> T {
        self.savepoints.store(true, Ordering::Relaxed);
        let out = f();
        self.savepoints.store(false, Ordering::Relaxed);
        out
    }

    /// Run one of our own statements that returns no rows (BEGIN, SAVEPOINT...).
    pub(crate) fn exec(&self, conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
        self.internal(|| conn.prepare_cached(sql)?.execute([]).map(drop))
    }

    /// Forget any refusal left from an earlier statement.
    pub(crate) fn clear(&self) {
        *self.refusal() = None;
    }

    /// The reason the last user statement was refused, if it was.
    pub(crate) fn take_refusal(&self) -> Option<String> {
        self.refusal().take()
    }
}

/// How a statement's text starts, as far as the executor must know before
/// handing it to SQLite: `VACUUM` cannot run inside a transaction and
/// `VACUUM INTO` writes a file outside replication.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Leading {
    Vacuum,
    VacuumInto,
    Other,
}

/// Classify a statement by its leading keywords, skipping comments.
pub(crate) fn leading(sql: &str) -> Leading {
    let mut words = Words { rest: sql };
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case("vacuum") => {
            if words.any(|w| w.eq_ignore_ascii_case("into")) {
                Leading::VacuumInto
            } else {
                Leading::Vacuum
            }
        }
        _ => Leading::Other,
    }
}

/// The keywords, identifiers and numbers of a SQL text, in order, skipping
/// comments, quoted strings and punctuation: enough to tell what a
/// statement starts with (`VACUUM`, `BEGIN`, `PRAGMA x = ...`).
pub fn sql_words(sql: &str) -> impl Iterator<Item = &str> {
    Words { rest: sql }
}

/// Keywords and identifiers of a SQL text, skipping comments, strings and
/// punctuation. Just enough lexing for [`leading`].
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        loop {
            let s = self.rest.trim_start();
            if let Some(after) = s.strip_prefix("--") {
                self.rest = after.split_once('\n').map_or("", |(_, r)| r);
            } else if let Some(after) = s.strip_prefix("/*") {
                self.rest = after.split_once("*/").map_or("", |(_, r)| r);
            } else if let Some(q) = s
                .chars()
                .next()
                .filter(|c| matches!(c, '\'' | '"' | '`' | '['))
            {
                let close = if q == '[' { ']' } else { q };
                self.rest = s[1..].split_once(close).map_or("", |(_, r)| r);
            } else if s.is_empty() {
                return None;
            } else {
                let end = s
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                if end == 0 {
                    self.rest = &s[s.chars().next().map_or(1, char::len_utf8)..];
                    continue;
                }
                self.rest = &s[end..];
                return Some(&s[..end]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::hooks::TransactionOperation;

    #[test]
    fn policy_table() {
        use AuthAction as A;
        let cases: Vec<(AuthAction<'_>, Role, bool)> = vec![
            (
                A::Transaction {
                    operation: TransactionOperation::Begin,
                },
                Role::Write,
                false,
            ),
            (
                A::Savepoint {
                    operation: TransactionOperation::Begin,
                    savepoint_name: "x",
                },
                Role::Write,
                false,
            ),
            (A::Attach { filename: "/tmp/x" }, Role::Write, false),
            (A::Detach { database_name: "x" }, Role::Read, false),
            (A::Insert { table_name: "t" }, Role::Write, true),
            (A::Insert { table_name: "t" }, Role::Read, false),
            (
                A::Insert {
                    table_name: META_TABLE,
                },
                Role::Write,
                false,
            ),
            (
                A::Update {
                    table_name: "_QUORUMLITE_META",
                    column_name: "version",
                },
                Role::Write,
                false,
            ),
            (
                A::DropTable {
                    table_name: META_TABLE,
                },
                Role::Write,
                false,
            ),
            (
                A::CreateTable {
                    table_name: "_quorumlite_other",
                },
                Role::Write,
                false,
            ),
            (
                A::Read {
                    table_name: META_TABLE,
                    column_name: "version",
                },
                Role::Read,
                true,
            ),
            (
                A::Read {
                    table_name: META_TABLE,
                    column_name: "version",
                },
                Role::Write,
                false,
            ),
            (
                A::Read {
                    table_name: "t",
                    column_name: "a",
                },
                Role::Read,
                true,
            ),
            (
                A::Insert {
                    table_name: "sqlite_dbpage",
                },
                Role::Write,
                false,
            ),
            (
                A::Pragma {
                    pragma_name: "journal_mode",
                    pragma_value: Some("delete"),
                },
                Role::Write,
                false,
            ),
            (
                A::Pragma {
                    pragma_name: "QUERY_ONLY",
                    pragma_value: Some("0"),
                },
                Role::Read,
                false,
            ),
            (
                A::Pragma {
                    pragma_name: "table_info",
                    pragma_value: Some("t"),
                },
                Role::Read,
                true,
            ),
            (
                A::Pragma {
                    pragma_name: "incremental_vacuum",
                    pragma_value: None,
                },
                Role::Write,
                true,
            ),
            (A::CreateTempTable { table_name: "x" }, Role::Write, false),
            (A::CreateView { view_name: "v" }, Role::Write, true),
            (A::CreateView { view_name: "v" }, Role::Read, false),
            (A::Select, Role::Read, true),
            (
                A::Function {
                    function_name: "random",
                },
                Role::Write,
                true,
            ),
        ];
        for (action, role, allowed) in cases {
            assert_eq!(
                check(&action, role).is_ok(),
                allowed,
                "{action:?} as {role:?}"
            );
        }
    }

    #[test]
    fn vacuum_is_recognised_through_comments_and_case() {
        assert_eq!(leading("VACUUM"), Leading::Vacuum);
        assert_eq!(leading("  vacuum main;"), Leading::Vacuum);
        assert_eq!(leading("/* c */ -- x\n Vacuum"), Leading::Vacuum);
        assert_eq!(leading("VACUUM INTO '/tmp/x.db'"), Leading::VacuumInto);
        assert_eq!(leading("vacuum main into 'f'"), Leading::VacuumInto);
        assert_eq!(leading("SELECT 'vacuum'"), Leading::Other);
        assert_eq!(leading("vacuumx"), Leading::Other);
        assert_eq!(leading(""), Leading::Other);
    }
}
