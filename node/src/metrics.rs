//! Every metric a node exports, in one place, and the Prometheus exporter.
//!
//! Code records through the `metrics` facade (`counter!`, `gauge!`,
//! `histogram!`) with the names below. The recorder is process-global and
//! installed only when `--metrics-listen` is set ([`install`]); without it
//! every record is a no-op. The `raft` crate records a few metrics itself
//! (apply time, commit index, snapshots): their names are constants in
//! `raft::metrics`, re-exported here, so [`SPECS`] and [`ALL`] list every
//! name the process can export.
//!
//! Where the values come from:
//! - Raft role, term, leader, indexes, replication lag and elections:
//!   [`RaftGauges::observe`], fed by the openraft metrics watch
//!   (`server::watch_roles`), so they change when openraft reports;
//! - write and read paths: `server/{mod,write,read,forward}.rs`, where the
//!   work happens;
//! - sizes on disk: [`sample_disk`], every [`DISK_SAMPLE_EVERY`].
//!
//! Histograms are exported as Prometheus summaries (the exporter's default):
//! quantiles [`QUANTILES`] over a sliding window of about a minute, plus
//! `_sum` and `_count` since start.
//!
//! `docs/operations.md` lists every metric; a test below checks the list
//! against [`SPECS`] in both directions.

use crate::server::tls::Tls;
use ::metrics::{counter, gauge, Unit};
use metrics_exporter_prometheus::PrometheusBuilder;
use openraft::{BasicNode, RaftMetrics, ServerState};
use raft::NodeId;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use raft::metrics::{APPLY_DURATION, COMMIT_INDEX, SNAPSHOT_BUILDS, SNAPSHOT_INSTALLS};

/// Gauge, label `role`: 1 for this node's current role, 0 for the others.
pub const RAFT_ROLE: &str = "quorumlite_raft_role";
/// Gauge: this node's current term.
pub const RAFT_TERM: &str = "quorumlite_raft_term";
/// Gauge: the leader's id as this node knows it (0: none known).
pub const RAFT_LEADER_ID: &str = "quorumlite_raft_leader_id";
/// Gauge: the last log index appended here.
pub const RAFT_LAST_LOG_INDEX: &str = "quorumlite_raft_last_log_index";
/// Gauge: the last log index applied to the state machine here.
pub const RAFT_APPLIED_INDEX: &str = "quorumlite_raft_applied_index";
/// Gauge: the last log index covered by this node's snapshot.
pub const RAFT_SNAPSHOT_INDEX: &str = "quorumlite_raft_snapshot_index";
/// Gauge: entries in the log (appended and not yet purged behind a snapshot).
pub const RAFT_LOG_ENTRIES: &str = "quorumlite_raft_log_entries";
/// Gauge: bytes of the Raft log's sled directory on disk.
pub const RAFT_LOG_DISK_BYTES: &str = "quorumlite_raft_log_disk_bytes";
/// Gauge, label `follower`: on the leader, entries a follower lacks.
pub const REPLICATION_LAG: &str = "quorumlite_raft_replication_lag_entries";
/// Counter: terms in which this node campaigned (seen as candidate or leader).
pub const ELECTIONS: &str = "quorumlite_raft_elections_total";
/// Counter: terms in which this node learned of a leader.
pub const LEADER_CHANGES: &str = "quorumlite_raft_leader_changes_total";
/// Gauge, label `peer`: 1 when this node's last call to that peer was
/// answered, 0 when it failed.
pub const PEER_REACHABLE: &str = "quorumlite_peer_reachable";
/// Gauge, label `peer`: seconds since that peer last answered a call of
/// this node (-1: never).
pub const PEER_LAST_CONTACT: &str = "quorumlite_peer_last_contact_seconds";
/// Gauge: 1 when this node can do its part (`/health` answers 200), 0 when
/// it leads without a majority or hears from no leader.
pub const HEALTHY: &str = "quorumlite_healthy";
/// Histogram: a write's time in the leader's writer, queue to reply.
pub const WRITE_DURATION: &str = "quorumlite_write_duration_seconds";
/// Histogram: requests per write batch.
pub const WRITE_BATCH_REQUESTS: &str = "quorumlite_write_batch_requests";
/// Histogram: a batch's execute + replicate + apply time.
pub const WRITE_BATCH_DURATION: &str = "quorumlite_write_batch_duration_seconds";
/// Histogram, label `consistency`: a successful read's time on this node.
pub const READ_DURATION: &str = "quorumlite_read_duration_seconds";
/// Counter: session reads that waited for this node to reach their token.
pub const TOKEN_WAITS: &str = "quorumlite_token_waits_total";
/// Counter: session reads that gave up waiting (`REPLICA_BEHIND`).
pub const TOKEN_WAIT_TIMEOUTS: &str = "quorumlite_token_wait_timeouts_total";
/// Counter, label `kind`: calls this node sent to the leader.
pub const FORWARDED: &str = "quorumlite_forwarded_requests_total";
/// Gauge: bytes of the SQLite database file.
pub const SQLITE_DB_BYTES: &str = "quorumlite_sqlite_db_bytes";
/// Gauge: bytes of the SQLite write-ahead log file.
pub const SQLITE_WAL_BYTES: &str = "quorumlite_sqlite_wal_bytes";
/// Counter, label `reason`: requests refused by authentication.
pub const AUTH_FAILURES: &str = "quorumlite_auth_failures_total";
/// Counter: interactive transactions begun on this node's writer.
pub const TXNS_STARTED: &str = "quorumlite_txns_started_total";
/// Histogram: how long an interactive transaction held the writer.
pub const TXN_DURATION: &str = "quorumlite_txn_duration_seconds";
/// Counter, label `outcome`: Hrana HTTP pipeline requests served here.
pub const HTTP_PIPELINES: &str = "quorumlite_http_pipelines_total";
/// Gauge: open Hrana streams owned by this node.
pub const HTTP_STREAMS: &str = "quorumlite_http_streams";

/// Histogram, label `kind` (read, write): items per `QueryBatch` /
/// `ExecuteBatch` call served here.
pub const BATCH_CALL_ITEMS: &str = "quorumlite_batch_call_items";

/// What kind of series a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[cfg(test)]
impl Kind {
    /// As the type column of docs/operations.md names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric: its name, kind, unit, label keys and help text.
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn spec(
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
) -> Spec {
    Spec {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};
const SECONDS: Option<Unit> = Some(Unit::Seconds);
const BYTES: Option<Unit> = Some(Unit::Bytes);
const COUNT: Option<Unit> = Some(Unit::Count);

/// Every metric this process exports.
#[rustfmt::skip]
pub const SPECS: &[Spec] = &[
    spec(RAFT_ROLE, Gauge, None, &["role"], "1 for this node's Raft role (leader, follower, candidate, learner, shutdown), 0 for the others"),
    spec(RAFT_TERM, Gauge, None, &[], "this node's current Raft term"),
    spec(RAFT_LEADER_ID, Gauge, None, &[], "the leader's node id as this node knows it; 0 when no leader is known"),
    spec(RAFT_LAST_LOG_INDEX, Gauge, None, &[], "the last log index appended to this node's log"),
    spec(COMMIT_INDEX, Gauge, None, &[], "the highest log index this node knows committed"),
    spec(RAFT_APPLIED_INDEX, Gauge, None, &[], "the last log index applied to this node's database"),
    spec(RAFT_SNAPSHOT_INDEX, Gauge, None, &[], "the last log index covered by this node's snapshot"),
    spec(RAFT_LOG_ENTRIES, Gauge, COUNT, &[], "entries in this node's Raft log (not yet purged behind a snapshot)"),
    spec(RAFT_LOG_DISK_BYTES, Gauge, BYTES, &[], "bytes of this node's Raft log directory on disk"),
    spec(REPLICATION_LAG, Gauge, COUNT, &["follower"], "on the leader: log entries a follower has not yet acknowledged; 0 on other nodes"),
    spec(PEER_REACHABLE, Gauge, None, &["peer"], "1 when this node's last Raft call to the peer (by node id) was answered, 0 when it failed; a leader calls every member every heartbeat"),
    spec(PEER_LAST_CONTACT, Gauge, SECONDS, &["peer"], "seconds since the peer last answered a Raft call of this node; -1 if it never did"),
    spec(HEALTHY, Gauge, None, &[], "1 when /health answers 200; 0 when this node leads without hearing from a majority, hears from no leader, or is stopping"),
    spec(ELECTIONS, Counter, None, &[], "terms in which this node campaigned (was seen as candidate or leader)"),
    spec(LEADER_CHANGES, Counter, None, &[], "terms in which this node learned of a leader, the first one after start included"),
    spec(WRITE_DURATION, Histogram, SECONDS, &[], "time of a write in the leader's writer, from queueing to its reply (committed or not)"),
    spec(WRITE_BATCH_REQUESTS, Histogram, COUNT, &[], "write requests per batch on the leader"),
    spec(WRITE_BATCH_DURATION, Histogram, SECONDS, &[], "time of one write batch on the leader: execute, replicate, apply"),
    spec(READ_DURATION, Histogram, SECONDS, &["consistency"], "time of a successful read on this node, waits included"),
    spec(TOKEN_WAITS, Counter, None, &[], "session reads that had to wait for this node to apply their token's version"),
    spec(TOKEN_WAIT_TIMEOUTS, Counter, None, &[], "session reads that waited session_wait_ms in vain and answered REPLICA_BEHIND"),
    spec(FORWARDED, Counter, None, &["kind"], "calls this node sent to the leader: forwarded writes (kind=write) and read barriers (kind=read_index)"),
    spec(APPLY_DURATION, Histogram, SECONDS, &[], "time of one state machine apply call (a run of committed entries)"),
    spec(SNAPSHOT_BUILDS, Counter, None, &[], "snapshots this node built"),
    spec(SNAPSHOT_INSTALLS, Counter, None, &[], "snapshots this node installed from the leader"),
    spec(SQLITE_DB_BYTES, Gauge, BYTES, &[], "bytes of the SQLite database file"),
    spec(SQLITE_WAL_BYTES, Gauge, BYTES, &[], "bytes of the SQLite write-ahead log file"),
    spec(AUTH_FAILURES, Counter, None, &["reason"], "requests refused by authentication, by reason"),
    spec(TXNS_STARTED, Counter, None, &[], "interactive transactions begun on this node's writer (Hrana streams)"),
    spec(TXN_DURATION, Histogram, SECONDS, &[], "how long an interactive transaction held the writer, BEGIN to its end"),
    spec(HTTP_PIPELINES, Counter, None, &["outcome"], "Hrana pipeline requests: served here (local), sent on (forwarded), or refused (error)"),
    spec(HTTP_STREAMS, Gauge, COUNT, &[], "open Hrana streams owned by this node"),
    spec(BATCH_CALL_ITEMS, Histogram, COUNT, &["kind"], "items per batch call (QueryBatch: kind=read, ExecuteBatch: kind=write) served by this node; the client library coalesces concurrent calls into these"),
];

const fn names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = SPECS[i].name;
        i += 1;
    }
    out
}

/// Every metric name this process exports (the names of [`SPECS`]).
#[cfg_attr(not(test), allow(dead_code))]
pub const ALL: &[&str] = &names::<{ SPECS.len() }>();

/// Summary quantiles of every histogram.
pub const QUANTILES: &[f64] = &[0.5, 0.9, 0.99, 0.999, 1.0];

/// How often [`sample_disk`] reads the sizes of the files on disk.
pub const DISK_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason} (is another process using the port?)")]
pub struct InstallError {
    addr: SocketAddr,
    reason: String,
}

/// Install the process-global Prometheus recorder and serve it at
/// `listen` (`GET /metrics`): plain HTTP from the exporter's own listener,
/// or, when the node has TLS, HTTPS with the node's certificate (reloaded
/// with it on SIGHUP). Call once, inside the node's Tokio runtime.
pub fn install(listen: SocketAddr, tls: Option<Arc<Tls>>) -> Result<(), InstallError> {
    let fail = |reason: String| InstallError {
        addr: listen,
        reason,
    };
    let builder = PrometheusBuilder::new()
        .set_quantiles(QUANTILES)
        .map_err(|e| fail(e.to_string()))?;
    match tls {
        None => builder
            .with_http_listener(listen)
            .install()
            .map_err(|e| fail(e.to_string()))?,
        Some(tls) => {
            let listener = std::net::TcpListener::bind(listen)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|e| fail(e.to_string()))?;
            let handle = builder
                .install_recorder()
                .map_err(|e| fail(e.to_string()))?;
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            tokio::spawn(crate::server::tls::serve_metrics(listener, tls, handle));
        }
    }
    describe();
    Ok(())
}

/// Register the help text and unit of every metric with the recorder, and
/// start the unlabelled counters at 0 so they are scraped before they move.
pub fn describe() {
    ::metrics::with_recorder(|r| {
        for s in SPECS {
            let (name, help) = (s.name.into(), s.help.into());
            match s.kind {
                Kind::Counter => r.describe_counter(name, s.unit, help),
                Kind::Gauge => r.describe_gauge(name, s.unit, help),
                Kind::Histogram => r.describe_histogram(name, s.unit, help),
            }
        }
    });
    for s in SPECS {
        if s.kind == Kind::Counter && s.labels.is_empty() {
            counter!(s.name).increment(0);
        }
    }
}

/// Count a request refused by authentication. `reason` must be a short
/// word from a fixed set (e.g. `missing_token`, `bad_token`), never the
/// credential or other request text: each distinct value is a new series.
pub fn auth_failure(reason: &str) {
    counter!(AUTH_FAILURES, "reason" => reason.to_owned()).increment(1);
}

/// Every Raft role, for the `role` label.
const ROLES: [ServerState; 5] = [
    ServerState::Leader,
    ServerState::Follower,
    ServerState::Candidate,
    ServerState::Learner,
    ServerState::Shutdown,
];

/// Turns snapshots of openraft's metrics watch into our gauges and counters.
#[derive(Default)]
pub struct RaftGauges {
    /// The role last exported (the role gauges change only with it).
    role: Option<ServerState>,
    /// The last term in which this node was seen campaigning.
    campaign_term: u64,
    /// The last term in which a leader was known.
    leader_term: Option<u64>,
    /// Followers with a lag series. Invariant: empty unless this node leads.
    followers: BTreeSet<NodeId>,
}

impl RaftGauges {
    pub fn observe(&mut self, m: &RaftMetrics<NodeId, BasicNode>) {
        if self.role != Some(m.state) {
            for state in ROLES {
                let value = if state == m.state { 1.0 } else { 0.0 };
                gauge!(RAFT_ROLE, "role" => crate::server::role_name(state)).set(value);
            }
            self.role = Some(m.state);
        }
        gauge!(RAFT_TERM).set(m.current_term as f64);
        gauge!(RAFT_LEADER_ID).set(m.current_leader.unwrap_or(0) as f64);
        gauge!(RAFT_LAST_LOG_INDEX).set(m.last_log_index.unwrap_or(0) as f64);
        gauge!(RAFT_APPLIED_INDEX).set(m.last_applied.map_or(0, |l| l.index) as f64);
        gauge!(RAFT_SNAPSHOT_INDEX).set(m.snapshot.map_or(0, |l| l.index) as f64);
        let entries = log_entries(m.last_log_index, m.purged.map(|l| l.index));
        gauge!(RAFT_LOG_ENTRIES).set(entries as f64);
        // A term counts once however many reports show it. A campaign that
        // failed between two reports (candidate, then follower) is missed.
        let campaigning = matches!(m.state, ServerState::Candidate | ServerState::Leader);
        if campaigning && m.current_term > self.campaign_term {
            self.campaign_term = m.current_term;
            counter!(ELECTIONS).increment(1);
        }
        if m.current_leader.is_some() && self.leader_term != Some(m.current_term) {
            self.leader_term = Some(m.current_term);
            counter!(LEADER_CHANGES).increment(1);
        }
        self.replication(m);
    }

    /// Lag per follower on the leader; a node that stops leading (or a
    /// follower that leaves) has its series set to 0, not left frozen.
    fn replication(&mut self, m: &RaftMetrics<NodeId, BasicNode>) {
        let mut seen = BTreeSet::new();
        if let Some(progress) = &m.replication {
            for (id, matched) in progress.iter().filter(|(id, _)| **id != m.id) {
                let lag = replication_lag(m.last_log_index, matched.map(|l| l.index));
                gauge!(REPLICATION_LAG, "follower" => id.to_string()).set(lag as f64);
                seen.insert(*id);
            }
        }
        for gone in self.followers.difference(&seen) {
            gauge!(REPLICATION_LAG, "follower" => gone.to_string()).set(0.0);
        }
        self.followers = seen;
    }
}

/// Each peer's reachability and last contact, from this node's calls.
pub fn observe_peers(peers: &[raft::PeerView]) {
    for p in peers {
        let id = p.id.to_string();
        gauge!(PEER_REACHABLE, "peer" => id.clone()).set(if p.reachable { 1.0 } else { 0.0 });
        gauge!(PEER_LAST_CONTACT, "peer" => id)
            .set(p.last_answer.map_or(-1.0, |d| d.as_secs_f64()));
    }
}

/// Entries a follower lacks: those up to the leader's last index it has
/// not matched (`None`: nothing in the log / nothing matched yet).
pub fn replication_lag(last: Option<u64>, matched: Option<u64>) -> u64 {
    let count = |i: Option<u64>| i.map_or(0, |i| i + 1);
    count(last).saturating_sub(count(matched))
}

/// Entries held in a log whose last index is `last` and whose entries up to
/// `purged` (inclusive) were removed behind a snapshot.
pub fn log_entries(last: Option<u64>, purged: Option<u64>) -> u64 {
    replication_lag(last, purged)
}

/// Export the sizes of the database, its WAL and the Raft log directory
/// every [`DISK_SAMPLE_EVERY`], until aborted.
pub async fn sample_disk(db: PathBuf, log_dir: PathBuf) {
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    loop {
        let (db, wal, log_dir) = (db.clone(), wal.clone(), log_dir.clone());
        let sizes = tokio::task::spawn_blocking(move || {
            (file_bytes(&db), file_bytes(&wal), dir_bytes(&log_dir))
        })
        .await;
        if let Ok((db, wal, log)) = sizes {
            gauge!(SQLITE_DB_BYTES).set(db as f64);
            gauge!(SQLITE_WAL_BYTES).set(wal as f64);
            gauge!(RAFT_LOG_DISK_BYTES).set(log as f64);
        }
        tokio::time::sleep(DISK_SAMPLE_EVERY).await;
    }
}

/// Size of a file; 0 if it does not exist.
fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Total size of the files under a directory (sled keeps a few files and
/// one directory of blobs).
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_the_entries_a_follower_has_not_matched() {
        let table = [
            (None, None, 0),
            (Some(0), None, 1),
            (Some(10), None, 11),
            (Some(10), Some(10), 0),
            (Some(10), Some(7), 3),
            // A matched index past the leader's last (never expected): 0, not a wrap.
            (Some(5), Some(9), 0),
        ];
        for (last, matched, lag) in table {
            assert_eq!(
                replication_lag(last, matched),
                lag,
                "last={last:?} matched={matched:?}"
            );
        }
        assert_eq!(log_entries(Some(1500), Some(999)), 501);
    }

    #[test]
    fn names_are_unique_prefixed_and_carry_their_unit() {
        let mut seen = BTreeSet::new();
        for s in SPECS {
            assert!(seen.insert(s.name), "{} listed twice", s.name);
            assert!(s.name.starts_with("quorumlite_"), "{}", s.name);
            assert_eq!(
                s.kind == Kind::Counter,
                s.name.ends_with("_total"),
                "{}",
                s.name
            );
            if s.unit == SECONDS {
                assert!(s.name.ends_with("_seconds"), "{}", s.name);
            }
            if s.unit == BYTES {
                assert!(s.name.ends_with("_bytes"), "{}", s.name);
            }
        }
        assert_eq!(ALL.len(), SPECS.len());
        assert!(ALL.iter().zip(SPECS).all(|(a, s)| *a == s.name));
    }

    /// The rows of the metric table in docs/operations.md's "## Metrics"
    /// section: name, type, labels. Also every `quorumlite_*` word of the
    /// section (alert expressions included).
    fn documented() -> (Vec<[String; 3]>, BTreeSet<String>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let text = std::fs::read_to_string(path).expect("docs/operations.md");
        let section: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != "## Metrics")
            .skip(1)
            .take_while(|l| !l.starts_with("## "))
            .collect();
        assert!(!section.is_empty(), "no \"## Metrics\" section");
        let rows = section
            .iter()
            .filter(|l| l.starts_with("| `quorumlite_"))
            .map(|l| {
                let cells: Vec<String> = l.split('|').map(|c| c.trim().replace('`', "")).collect();
                [cells[1].clone(), cells[2].clone(), cells[3].clone()]
            })
            .collect();
        let words = section
            .iter()
            .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
            .filter(|w| w.starts_with("quorumlite_"))
            .map(str::to_owned)
            .collect();
        (rows, words)
    }

    /// Issue 7: every metric in the code is in the operations guide, with
    /// its type and labels, and the guide names no metric the code lacks.
    #[test]
    fn every_metric_is_documented_and_the_docs_name_no_other() {
        let (rows, words) = documented();
        for s in SPECS {
            let row = rows
                .iter()
                .find(|r| r[0] == s.name)
                .unwrap_or_else(|| panic!("{} missing from docs/operations.md", s.name));
            assert_eq!(row[1], s.kind.as_str(), "type of {}", s.name);
            let labels = if s.labels.is_empty() {
                "-".to_owned()
            } else {
                s.labels.join(", ")
            };
            assert_eq!(row[2], labels, "labels of {}", s.name);
        }
        assert_eq!(rows.len(), SPECS.len(), "a metric is documented twice");
        for w in words {
            let base = ["_sum", "_count"]
                .iter()
                .find_map(|suffix| w.strip_suffix(suffix))
                .filter(|b| {
                    SPECS
                        .iter()
                        .any(|s| s.name == *b && s.kind == Kind::Histogram)
                })
                .unwrap_or(&w);
            assert!(
                ALL.contains(&base),
                "docs/operations.md names {w}, which the code does not export"
            );
        }
    }
}
