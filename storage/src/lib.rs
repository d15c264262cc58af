//! # Quorumlite storage: SQLite as a replicated state machine
//!
//! This crate owns the SQLite file of one node and the path data takes
//! through it. It knows nothing of Raft, tokio or the network: every call is
//! synchronous and testable on its own.
//!
//! ```text
//!   leader                                   every node (leader included)
//!   ------                                   ----------------------------
//!   WriteRequest x N                         FrameBatch (from the Raft log)
//!        |                                         |
//!   Executor::execute  -- capture VFS -->   Applier::apply
//!   (one transaction, one savepoint          (sqlite_dbpage writes, page 1
//!    per request, commit failed on            last, truncation alone, one
//!    purpose: nothing visible here)           commit with the data version)
//!        |                                         |
//!   FrameBatch { base, version, pages }      ReadPool::query (query_only,
//!        '---------> Raft ------------------->  rows + the version they saw)
//! ```
//!
//! - [`Executor`] runs many write requests as one captured transaction and
//!   returns each request's results plus one [`FrameBatch`].
//! - [`FrameBatch`] is the replicated unit: page images, database size and
//!   the data versions it goes from and to, with a checksummed encoding.
//! - [`Applier`] writes a batch (or a whole snapshot) with the apply recipe;
//!   the data version lives inside the database, so replay is idempotent.
//! - [`Txn`] (through [`Executor::transaction`]) runs an interactive
//!   transaction whose statements arrive one by one, ending in one batch.
//! - [`ReadPool`] serves reads, [`SnapshotReader`] streams consistent images
//!   (and [`BackupReader`] the same as an ordinary SQLite file),
//!   [`Digest`] proves two replicas are byte-identical.
//! - [`Image`]: a whole database made on the leader for the changes that
//!   rewrite every page ([`Executor::vacuum_image`], and a restore:
//!   [`prepare_restore`] checks an uploaded SQLite file,
//!   [`Executor::restore_image`] makes it the next state with a new
//!   lineage), installed on every node by [`Applier::install_image`] as a
//!   snapshot is, never carried in a batch.
//!
//! `storage/DESIGN.md` gives the invariants and traps, and the tests that
//! guard each. All `unsafe` code of the project lives in the `vfs` module.

mod apply;
mod batch;
mod config;
mod conn;
mod digest;
mod error;
mod executor;
mod image;
mod limits;
mod policy;
mod read;
mod restore;
mod snapshot;
mod stmt;
mod txn;
mod value;
mod vfs;

pub use apply::{Applier, ApplyOutcome, Fate};
pub use batch::{FrameBatch, Page};
pub use config::StorageConfig;
pub use digest::{file_digest, Digest};
pub use error::{code_name, Error, RequestError, Result};
pub use executor::{is_vacuum, is_vacuum_sql, BatchOutcome, Executor, RequestResult};
pub use image::{hash_file, hash_reader, hex, remove_with_journal, Image, IMAGE_CHUNK_BYTES};
pub use limits::{value_bytes, Limits, PROGRESS_OPS};
pub use policy::{sql_words, META_TABLE};
pub use read::{Description, QueryResult, ReadError, ReadPool};
pub use restore::{prepare_restore, RestoreError, RestoreImage};
pub use snapshot::{BackupReader, SnapshotMeta, SnapshotReader};
pub use stmt::{is_complete, is_keyword, split_statements};
pub use txn::{Txn, TxnEnd, TxnOptions, TxnOutcome};
pub use value::{Column, Fence, Params, Statement, StatementResult, Value, WriteRequest};
pub use vfs::{register as register_vfs, VFS_NAME};

/// The page that holds SQLite's lock bytes (offset 1 GiB): never used for
/// data, read back as zeros, and never written by apply.
pub fn pending_byte_page(page_size: u32) -> u32 {
    (0x4000_0000 / page_size) + 1
}
