//! # Jepsen for Quorumlite
//!
//! Tries to break the guarantees of `docs/consistency.md` against real
//! `quorumlite` processes, talking to them only through `client`.
//!
//! ```text
//!   db::Cluster ── real node processes, each in its own network namespace
//!        │              (net::Net: veth + bridge, nftables drops for partitions)
//!   nemesis ─── seeded schedule: partition / kill / pause / heavy-read /
//!        │       stray-node, then heal
//!   workload ── concurrent clients ──> history::Recorder (invoke/ok/fail/info)
//!        │
//!   checker ─── verdict per property ──> report (results.json, latency.png)
//!               (consistency, and availability per fault window)
//! ```
//!
//! A run: build the network, (for `stray-node`) run and stop a throwaway
//! cluster in the same slots, start the nodes, let the workload's workers
//! run for `--time` while the nemesis injects faults on its schedule, heal
//! everything, let the workload do its final reads, then check the history
//! and write the report. A verdict is `valid`, `invalid` (with the
//! operations that show it) or `unknown` (the checker gave up). Besides
//! the workload's checkers every run is judged on availability: each fault
//! window's first successful write and read must come within a bound, and
//! no node may exit on its own.
pub mod checker;
pub mod db;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod run;
pub mod workload;

use std::path::PathBuf;

/// The `quorumlite` binary built beside this executable: `target/<profile>/`
/// holds both the `jepsen` binary and `quorumlite`, and a test binary sits
/// one level down in `deps/`.
pub fn default_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut dir = exe.parent().map(PathBuf::from);
    while let Some(d) = dir {
        let candidate = d.join("quorumlite");
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(PathBuf::from);
    }
    Err(format!(
        "no quorumlite binary near {}: build it with `cargo build -p quorumlite` (same profile) or pass --bin",
        exe.display()
    ))
}
