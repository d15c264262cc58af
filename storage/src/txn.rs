//! Interactive transactions: `BEGIN`, statements that arrive one at a time
//! from a client, then `COMMIT` or `ROLLBACK`.
//!
//! ```text
//! [foreign_keys as the client set it]  BEGIN IMMEDIATE; read base; arm capture
//!   drive(txn): txn.execute(statement) ... as the client sends them
//!               (no savepoint of ours: SQLite undoes a failed statement
//!                itself, and user SAVEPOINT/RELEASE/ROLLBACK TO are allowed)
//!   Commit + something written -> bump version, captured COMMIT -> FrameBatch
//!   Commit + nothing written   -> Unchanged (nothing to replicate)
//!   Rollback, or SQLite rolled the transaction back -> RolledBack
//! ROLLBACK (always: the writer never commits locally)
//! ```
//! Like a batch, nothing becomes visible here: the batch goes through Raft
//! and comes back through the applier. The caller (the node's writer
//! thread) runs nothing else on the writer while `drive` runs, so other
//! writes wait behind an open transaction; the caller bounds how long.
//!
//! The transaction's own statements see its writes, because they run on
//! the writer connection inside it.

use crate::batch::FrameBatch;
use crate::error::{Error, RequestError, Result};
use crate::executor::{build_batch, bump_version, Executor};
use crate::policy::{self, Gate, Leading};
use crate::stmt::{self, Keyed};
use crate::value::{Statement, StatementResult};
use crate::vfs::{self, Armed};
use rusqlite::{ffi, Connection};

/// How a transaction starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnOptions {
    /// `BEGIN TRANSACTION READONLY`: statements that write are refused.
    pub read_only: bool,
    /// `PRAGMA foreign_keys` for this transaction (`None`: SQLite's default, off).
    pub foreign_keys: Option<bool>,
}

/// How the driver wants the transaction to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnEnd {
    Commit,
    Rollback,
}

/// What came of a transaction.
#[derive(Debug)]
pub enum TxnOutcome {
    /// Committed: these frames must be replicated (the caller proposes them).
    Committed(FrameBatch),
    /// Committed, but nothing was written: nothing to replicate.
    Unchanged,
    /// Rolled back, by the driver or by SQLite (see [`Txn::is_open`]).
    RolledBack,
    /// The transaction's changes outgrew the batch size cap at COMMIT.
    TooLarge { cap_bytes: u64 },
}

/// An open interactive transaction on the writer connection.
///
/// Invariant: while `open`, the connection is inside the transaction that
/// [`Executor::transaction`] began, with the capture armed.
pub struct Txn<'a> {
    conn: &'a Connection,
    gate: &'a Gate,
    armed: Armed<'a>,
    options: TxnOptions,
    open: bool,
    /// Some statement that may write succeeded.
    wrote: bool,
    cap_bytes: u64,
    /// Caps on the rows a statement returns.
    results: crate::Limits,
    /// Why the transaction ended early, for the statements that follow.
    ended: Option<String>,
}

impl Txn<'_> {
    /// Run one statement inside the transaction. A failed statement leaves
    /// the transaction open unless SQLite rolled it back as a whole (see
    /// [`Txn::is_open`]); after that every statement is refused.
    pub fn execute(&mut self, st: &Statement) -> Result<StatementResult, RequestError> {
        if !self.open {
            return Err(RequestError::Refused {
                index: 0,
                reason: self
                    .ended
                    .clone()
                    .unwrap_or_else(|| "the transaction is no longer open".into()),
            });
        }
        match policy::leading(&st.sql) {
            Leading::Vacuum | Leading::VacuumInto => {
                return Err(RequestError::Refused {
                    index: 0,
                    reason: "VACUUM cannot run inside a transaction".into(),
                })
            }
            Leading::Other => {}
        }
        let (conn, gate) = (self.conn, self.gate);
        let readonly =
            gate.with_savepoints(|| stmt::is_readonly(conn, gate, &st.sql, Keyed::Interactive));
        if self.options.read_only && readonly == Some(false) {
            return Err(RequestError::Sql {
                index: 0,
                code: ffi::SQLITE_READONLY,
                message: "attempt to write in a read-only transaction".into(),
            });
        }
        let result = gate.with_savepoints(|| {
            stmt::run_keyed(conn, gate, 0, st, Keyed::Interactive, &self.results, None)
        });
        if self.armed.state().over_cap() {
            self.end(format!(
                "the transaction was rolled back: its changes exceed the batch size cap of {} bytes",
                self.cap_bytes
            ));
            return Err(RequestError::TooLarge {
                cap_bytes: self.cap_bytes,
            });
        }
        if conn.is_autocommit() {
            self.end("SQLite rolled the transaction back after a failed statement".into());
        } else if result.is_ok() && readonly != Some(true) {
            self.wrote = true;
        }
        result
    }

    /// False once SQLite rolled the transaction back by itself (an `OR
    /// ROLLBACK` conflict, `RAISE(ROLLBACK)`, a full cache...) or it outgrew
    /// the cap: then nothing of it will be committed.
    pub fn is_open(&self) -> bool {
        self.open
    }

    fn end(&mut self, why: String) {
        self.open = false;
        self.ended = Some(why);
    }
}

impl Executor {
    /// Run an interactive transaction: `drive` executes its statements and
    /// says how it ends (see the module docs). The writer is busy until
    /// `drive` returns.
    pub fn transaction(
        &mut self,
        options: TxnOptions,
        drive: impl FnOnce(&mut Txn<'_>) -> TxnEnd,
    ) -> Result<TxnOutcome> {
        let parts = self.parts();
        let (conn, gate) = (parts.conn, parts.gate);
        if let Some(on) = options.foreign_keys {
            gate.internal(|| conn.pragma_update(None, "foreign_keys", on))
                .map_err(Error::sqlite("setting foreign_keys"))?;
        }
        let outcome = (|| {
            gate.exec(conn, "BEGIN IMMEDIATE")
                .map_err(Error::sqlite("starting the transaction"))?;
            let base = gate
                .internal(|| crate::conn::data_version(conn))
                .map_err(Error::sqlite("reading the data version"))?;
            let armed = parts
                .capture
                .arm(conn, parts.page_size, parts.cap_bytes)
                .map_err(|m| Error::Capture(m.into()))?;
            vfs::set_last_insert_rowid(conn, 0);
            let mut txn = Txn {
                conn,
                gate,
                armed,
                options,
                open: true,
                wrote: false,
                cap_bytes: parts.cap_bytes,
                results: parts.results.clone(),
                ended: None,
            };
            let end = drive(&mut txn);
            if end == TxnEnd::Rollback || !txn.open {
                return Ok(TxnOutcome::RolledBack);
            }
            if !txn.wrote {
                return Ok(TxnOutcome::Unchanged);
            }
            let too_large = TxnOutcome::TooLarge {
                cap_bytes: parts.cap_bytes,
            };
            if let Err(e) = gate.internal(|| bump_version(conn, base)) {
                if txn.armed.state().over_cap() {
                    return Ok(too_large);
                }
                return Err(Error::sqlite("bumping the data version")(e));
            }
            let commit = gate.exec(conn, "COMMIT");
            let state = txn.armed.state();
            if state.over_cap() {
                return Ok(too_large);
            }
            if !state.commit_captured() {
                return Err(match commit {
                    Ok(()) => Error::Capture(
                        "the writer committed a transaction locally instead of being captured; \
                         this node's file may now differ from the cluster: stop it"
                            .into(),
                    ),
                    Err(e) => Error::sqlite("committing the transaction")(e),
                });
            }
            Ok(TxnOutcome::Committed(build_batch(
                state,
                parts.page_size,
                base,
            )?))
        })();
        if !conn.is_autocommit() {
            // Nothing of it was ever visible; see `Executor::rollback`.
            let _ = gate.exec(conn, "ROLLBACK");
        }
        if options.foreign_keys.is_some() {
            let _ = gate.internal(|| conn.pragma_update(None, "foreign_keys", false));
        }
        outcome
    }
}
