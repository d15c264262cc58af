//! Storage settings, with defaults in code.

use std::time::Duration;

/// Settings for one node's database file.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Page size for a new database. Every node of a cluster must use the
    /// same value; an existing file keeps the size it was created with.
    pub page_size: u32,
    /// Largest frame batch one write transaction may produce, in bytes of
    /// WAL frames. A request that alone exceeds it fails with `TooLarge`.
    pub max_batch_bytes: u64,
    /// Read connections kept open for queries.
    pub read_pool_size: usize,
    /// How long a connection waits on a lock before giving up.
    pub busy_timeout: Duration,
    /// Page cache of each connection, in KiB.
    pub cache_size_kib: u32,
    /// Most rows one statement's result may hold (reads, and `RETURNING`
    /// rows of writes); 0: no cap.
    pub max_result_rows: u64,
    /// Most bytes one statement's result may hold (see
    /// `limits::value_bytes`); 0: no cap.
    pub max_result_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            page_size: 4096,
            max_batch_bytes: 64 * 1024 * 1024,
            read_pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 16 * 1024,
            max_result_rows: 1_000_000,
            max_result_bytes: 64 * 1024 * 1024,
        }
    }
}

impl StorageConfig {
    /// The result caps of one statement, without a time limit.
    pub fn result_limits(&self) -> crate::Limits {
        crate::Limits {
            max_rows: self.max_result_rows,
            max_bytes: self.max_result_bytes,
            ..crate::Limits::none()
        }
    }

    /// Check the values; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if !self.page_size.is_power_of_two() || !(512..=65536).contains(&self.page_size) {
            return Err(format!(
                "page_size = {}: must be a power of two between 512 and 65536",
                self.page_size
            ));
        }
        if self.max_batch_bytes < 16 * u64::from(self.page_size) {
            return Err(format!(
                "max_batch_bytes = {}: must hold at least 16 pages ({} bytes)",
                self.max_batch_bytes,
                16 * u64::from(self.page_size)
            ));
        }
        if self.read_pool_size == 0 {
            return Err("read_pool_size = 0: at least one read connection is needed".into());
        }
        Ok(())
    }
}
