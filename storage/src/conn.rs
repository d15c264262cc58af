//! Opening connections to the node's database file.
//!
//! Every connection goes through the capture VFS (unarmed it is stock
//! `unix`), uses WAL mode, and has one role: the writer (captures, never
//! commits), the applier (the only connection that commits), or a reader
//! (`query_only`).

use crate::config::StorageConfig;
use crate::error::{Error, Result};
use crate::policy::{Gate, Role};
use crate::vfs;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

/// Create the file if needed with the configured page size, in WAL mode.
/// Returns the page size the file actually uses.
pub(crate) fn prepare_file(path: &Path, config: &StorageConfig) -> Result<u32> {
    config
        .validate()
        .map_err(|m| Error::corrupt("configuration", m))?;
    let conn = open(path, config)?;
    // page_size only takes effect before the file has content.
    conn.pragma_update(None, "page_size", config.page_size)
        .map_err(Error::sqlite("setting page_size"))?;
    enter_wal(&conn)?;
    page_size(&conn)
}

/// Switch `conn` to WAL mode (a no-op when the file already is).
pub(crate) fn enter_wal(conn: &Connection) -> Result<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .map_err(Error::sqlite("switching to WAL mode"))?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(Error::corrupt(
            "database",
            format!("could not enter WAL mode (got {mode})"),
        ))
    }
}

/// Open one connection through the capture VFS, with common settings.
pub(crate) fn open(path: &Path, config: &StorageConfig) -> Result<Connection> {
    let vfs_name = vfs::register().map_err(Error::sqlite("registering the capture VFS"))?;
    let vfs_name = vfs_name
        .to_str()
        .map_err(|_| Error::Capture("VFS name".into()))?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let conn = Connection::open_with_flags_and_vfs(path, flags, vfs_name)
        .map_err(Error::sqlite("opening the database file"))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(Error::sqlite("setting busy_timeout"))?;
    conn.pragma_update(None, "cache_size", -i64::from(config.cache_size_kib))
        .map_err(Error::sqlite("setting cache_size"))?;
    conn.pragma_update(None, "mmap_size", 1i64 << 30)
        .map_err(Error::sqlite("setting mmap_size"))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Open a connection for user SQL in `role`, with its authorizer installed.
pub(crate) fn open_role(
    path: &Path,
    config: &StorageConfig,
    role: Role,
) -> Result<(Connection, Arc<Gate>)> {
    let mut conn = open(path, config)?;
    enter_wal(&conn)?;
    if role == Role::Read {
        conn.pragma_update(None, "query_only", true)
            .map_err(Error::sqlite("setting query_only"))?;
    }
    let gate =
        Gate::install(&mut conn, role).map_err(Error::sqlite("installing the authorizer"))?;
    Ok((conn, gate))
}

pub(crate) fn page_size(conn: &Connection) -> Result<u32> {
    conn.pragma_query_value(None, "page_size", |r| r.get(0))
        .map_err(Error::sqlite("reading page_size"))
}

/// The data version stored in the database; 0 before the first batch.
/// Run inside a transaction for a value consistent with what else it reads.
pub(crate) fn data_version(conn: &Connection) -> rusqlite::Result<u64> {
    let mut stmt = match conn.prepare_cached("SELECT version FROM _quorumlite_meta WHERE id = 1") {
        Ok(stmt) => stmt,
        // No batch applied yet: the table is created by the first one.
        Err(rusqlite::Error::SqliteFailure(_, Some(msg))) if msg.starts_with("no such table") => {
            return Ok(0)
        }
        Err(e) => return Err(e),
    };
    let v: Option<i64> = stmt.query_row([], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// The cluster lineage drawn by the first batch; `None` before it.
pub(crate) fn lineage(conn: &Connection) -> rusqlite::Result<Option<String>> {
    match conn.prepare_cached("SELECT lineage FROM _quorumlite_meta WHERE id = 1") {
        Ok(mut stmt) => stmt.query_row([], |r| r.get(0)).optional(),
        Err(rusqlite::Error::SqliteFailure(_, Some(msg))) if msg.starts_with("no such table") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
