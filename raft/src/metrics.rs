//! Names of the metrics this crate records (the `metrics` crate facade).
//!
//! Only names live here: the node binary installs the Prometheus recorder,
//! describes every metric and lists them all in one place
//! (`node/src/metrics.rs`, which re-exports these). Without an installed
//! recorder (this crate's tests) recording is a no-op.

/// Histogram: wall time of one state machine apply call (a run of committed
/// entries, usually one batch), in seconds.
pub const APPLY_DURATION: &str = "quorumlite_raft_apply_duration_seconds";
/// Gauge: the highest log index known committed, as openraft saves it in
/// the log store (every node, leader and followers).
pub const COMMIT_INDEX: &str = "quorumlite_raft_commit_index";
/// Counter: snapshots this node built (and compacted its log behind).
pub const SNAPSHOT_BUILDS: &str = "quorumlite_raft_snapshot_builds_total";
/// Counter: snapshots this node installed from a leader.
pub const SNAPSHOT_INSTALLS: &str = "quorumlite_raft_snapshot_installs_total";
