//! Errors, classified by what the caller must do next.
//!
//! - [`RequestError`]: one request failed; nothing it did was written, the
//!   rest of its batch went on. The client must fix the request.
//! - [`Error`]: the storage call itself failed. `Conflict`-like outcomes are
//!   not errors (see [`crate::ApplyOutcome`]); an `Error` from apply means the
//!   node cannot continue safely and must stop rather than diverge.

use rusqlite::ffi;
use std::fmt;

/// Why one write request (or read) failed. Nothing it did was kept.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// SQLite refused the statement (syntax, constraint, type...).
    #[error("statement {index}: {message} ({})", code_name(*code))]
    Sql {
        /// Index of the failing statement within its request.
        index: usize,
        /// SQLite's extended result code.
        code: i32,
        message: String,
    },
    /// The statement is valid SQLite but not allowed here.
    #[error("statement {index}: {reason}")]
    Refused { index: usize, reason: String },
    /// The parameters do not match the statement.
    #[error("statement {index}: {message}")]
    Params { index: usize, message: String },
    /// The request's changes do not fit in one replicated batch.
    #[error("the request's changes exceed the batch size cap of {cap_bytes} bytes: split it into smaller requests (or raise max_batch_bytes)")]
    TooLarge { cap_bytes: u64 },
    /// A request must hold at least one statement.
    #[error("the request holds no statement")]
    Empty,
    /// The statement ran past its time limit and was stopped (see
    /// `limits`). Nothing it did was kept.
    #[error("statement {index} ran longer than its {} ms time limit and was stopped: make it cheaper (an index, a narrower WHERE), fetch the result in pages, or allow it longer (per request: timeout_ms, `quorumlite query --statement-timeout-ms`; per node: statement_timeout_ms)", .limit.as_millis())]
    TimedOut {
        index: usize,
        limit: std::time::Duration,
    },
    /// The statement's caller went away (it cancelled, or its connection
    /// closed), so the statement was stopped.
    #[error("statement {index} was stopped: its caller went away")]
    Cancelled { index: usize },
    /// The statement's result passed a cap (see `limits`); nothing of it
    /// is returned.
    #[error("statement {index}: the result holds more than {cap} {unit} (the node's {option}): fetch it in pages (WHERE key > last_key ORDER BY key LIMIT n, or LIMIT n OFFSET m), select fewer columns, or raise {option}")]
    ResultTooLarge {
        index: usize,
        cap: u64,
        unit: &'static str,
        option: &'static str,
    },
    /// The write arrived after its session had moved past it (see
    /// `value::Fence`): it was not applied, and its caller is gone.
    #[error("write {seq} of this session arrived after the client had been told the outcome of every write up to {floor}; it was not applied")]
    Superseded { seq: u64, floor: u64 },
}

impl RequestError {
    /// The SQLite-style error code name (`SQLITE_CONSTRAINT`...), for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Sql { code, .. } => code_name(*code),
            RequestError::Refused { .. } => "SQLITE_AUTH",
            RequestError::Params { .. } => "SQLITE_RANGE",
            RequestError::TooLarge { .. } => "SQLITE_TOOBIG",
            RequestError::Empty => "SQLITE_MISUSE",
            RequestError::Superseded { .. } => "SQLITE_ABORT",
            RequestError::TimedOut { .. } | RequestError::Cancelled { .. } => "SQLITE_INTERRUPT",
            RequestError::ResultTooLarge { .. } => "SQLITE_TOOBIG",
        }
    }

    /// The message as SQLite would word it, without the statement's index
    /// (the protocols that carry a code of their own beside it).
    pub fn sqlite_message(&self) -> String {
        match self {
            RequestError::Sql { message, .. } => message.clone(),
            RequestError::Refused { reason, .. } => reason.clone(),
            RequestError::Params { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// SQLite's extended result code: the statement's own, else that of
    /// [`RequestError::code`]'s name.
    pub fn extended_code(&self) -> i32 {
        match self {
            RequestError::Sql { code, .. } => *code,
            RequestError::Refused { .. } => rusqlite::ffi::SQLITE_AUTH,
            RequestError::Params { .. } => rusqlite::ffi::SQLITE_RANGE,
            RequestError::TooLarge { .. } | RequestError::ResultTooLarge { .. } => {
                rusqlite::ffi::SQLITE_TOOBIG
            }
            RequestError::Empty => rusqlite::ffi::SQLITE_MISUSE,
            RequestError::Superseded { .. } => rusqlite::ffi::SQLITE_ABORT,
            RequestError::TimedOut { .. } | RequestError::Cancelled { .. } => {
                rusqlite::ffi::SQLITE_INTERRUPT
            }
        }
    }

    pub(crate) fn from_sqlite(index: usize, err: rusqlite::Error) -> Self {
        match err {
            rusqlite::Error::SqliteFailure(e, msg) => RequestError::Sql {
                index,
                code: e.extended_code,
                message: msg.unwrap_or_else(|| e.to_string()),
            },
            // A statement that does not prepare: SQLite's message, without
            // the text rusqlite appends (our cache-key prefix would show).
            rusqlite::Error::SqlInputError { error, msg, .. } => RequestError::Sql {
                index,
                code: error.extended_code,
                message: msg,
            },
            rusqlite::Error::MultipleStatement => RequestError::Refused {
                index,
                reason: "one SQL statement per entry: split the text into separate statements"
                    .into(),
            },
            rusqlite::Error::InvalidParameterCount(given, expected) => RequestError::Params {
                index,
                message: format!(
                    "the statement takes {expected} parameters but {given} were given"
                ),
            },
            rusqlite::Error::InvalidParameterName(name) => RequestError::Params {
                index,
                message: format!("the statement has no parameter named {name}"),
            },
            other => RequestError::Sql {
                index,
                code: ffi::SQLITE_ERROR,
                message: other.to_string(),
            },
        }
    }
}

/// The base SQLite result code name for an (extended) code.
pub fn code_name(code: i32) -> &'static str {
    match code & 0xff {
        ffi::SQLITE_OK => "SQLITE_OK",
        ffi::SQLITE_ERROR => "SQLITE_ERROR",
        ffi::SQLITE_INTERNAL => "SQLITE_INTERNAL",
        ffi::SQLITE_PERM => "SQLITE_PERM",
        ffi::SQLITE_ABORT => "SQLITE_ABORT",
        ffi::SQLITE_BUSY => "SQLITE_BUSY",
        ffi::SQLITE_LOCKED => "SQLITE_LOCKED",
        ffi::SQLITE_NOMEM => "SQLITE_NOMEM",
        ffi::SQLITE_READONLY => "SQLITE_READONLY",
        ffi::SQLITE_INTERRUPT => "SQLITE_INTERRUPT",
        ffi::SQLITE_IOERR => "SQLITE_IOERR",
        ffi::SQLITE_CORRUPT => "SQLITE_CORRUPT",
        ffi::SQLITE_NOTFOUND => "SQLITE_NOTFOUND",
        ffi::SQLITE_FULL => "SQLITE_FULL",
        ffi::SQLITE_CANTOPEN => "SQLITE_CANTOPEN",
        ffi::SQLITE_PROTOCOL => "SQLITE_PROTOCOL",
        ffi::SQLITE_EMPTY => "SQLITE_EMPTY",
        ffi::SQLITE_SCHEMA => "SQLITE_SCHEMA",
        ffi::SQLITE_TOOBIG => "SQLITE_TOOBIG",
        ffi::SQLITE_CONSTRAINT => "SQLITE_CONSTRAINT",
        ffi::SQLITE_MISMATCH => "SQLITE_MISMATCH",
        ffi::SQLITE_MISUSE => "SQLITE_MISUSE",
        ffi::SQLITE_NOLFS => "SQLITE_NOLFS",
        ffi::SQLITE_AUTH => "SQLITE_AUTH",
        ffi::SQLITE_FORMAT => "SQLITE_FORMAT",
        ffi::SQLITE_RANGE => "SQLITE_RANGE",
        ffi::SQLITE_NOTADB => "SQLITE_NOTADB",
        _ => "SQLITE_ERROR",
    }
}

/// A storage call that failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed outside any one request (opening, I/O, a full disk...).
    #[error("{context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The capture VFS did not behave as the recipe requires. The writer
    /// connection may not be trusted: stop the node and report a bug.
    #[error("capture failed: {0}")]
    Capture(String),
    /// A frame batch or snapshot failed validation (bad magic, format,
    /// checksum, or shape): it came from another program or was damaged.
    #[error("refused a corrupt or foreign {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// The batch or snapshot was made for a different page size.
    #[error("page size mismatch: this database uses {local} bytes, the data uses {remote}; every node must use the same page_size")]
    PageSize { local: u32, remote: u32 },
}

impl Error {
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
        move |source| Error::Sqlite { context, source }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl fmt::Display) -> Error {
        Error::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
