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
//! - the process (CPU, memory, open files) and the free space of the data
//!   directory's disk: [`sample_disk`] too.
//!
//! Every series exists from the start ([`register`]): counters at 0, each
//! label value known in advance (every error code, every auth failure
//! reason...) included, so that `rate()` and alerts see a series before its
//! first event, and a fresh node shows everything it can export.
//!
//! Histograms are exported as Prometheus histograms (buckets
//! [`SECONDS_BUCKETS`] or [`COUNTS_BUCKETS`], `_sum` and `_count` since start), not summaries: a
//! summary's quantiles read 0 while nothing was measured (the exporter
//! cannot leave them out), they cover a fixed window, and they cannot be
//! added across nodes. Buckets can: `histogram_quantile(0.99,
//! sum(rate(quorumlite_write_duration_seconds_bucket[5m])) by (le))`, and
//! an idle histogram gives no quantile (NaN), not a false 0.
//!
//! `docs/operations.md` lists every metric; a test below checks the list
//! against [`SPECS`] in both directions.

use ::metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::{BasicNode, RaftMetrics, ServerState};
use raft::NodeId;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use raft::metrics::{APPLY_DURATION, COMMIT_INDEX, SNAPSHOT_BUILDS, SNAPSHOT_INSTALLS};

mod process;

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
/// Counter: libSQL replication protocol calls served, by `call`.
pub const REPLICA_CALLS: &str = "quorumlite_replica_calls_total";
/// Counter: frames (pages) sent to libSQL replicas, batches and snapshots.
pub const REPLICA_FRAMES: &str = "quorumlite_replica_frames_total";
/// Gauge: libSQL replicas' proxy sessions open on this node.
pub const REPLICA_SESSIONS: &str = "quorumlite_replica_sessions";

/// Histogram, label `kind` (read, write): items per `QueryBatch` /
/// `ExecuteBatch` call served here.
pub const BATCH_CALL_ITEMS: &str = "quorumlite_batch_call_items";
/// Counter, label `code`: errors this node answered, by wire code.
pub const ERRORS: &str = "quorumlite_errors_total";
/// Gauge, labels `version`, `commit`: always 1.
pub const BUILD_INFO: &str = "quorumlite_build_info";
/// Gauge: bytes free for the node on the data directory's filesystem.
pub const DISK_FREE: &str = "quorumlite_disk_free_bytes";
/// Gauge: CPU time (user and system) this process used, in seconds.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// Gauge: resident memory of this process.
pub const PROCESS_RESIDENT: &str = "process_resident_memory_bytes";
/// Gauge: virtual memory of this process.
pub const PROCESS_VIRTUAL: &str = "process_virtual_memory_bytes";
/// Gauge: when this process started, seconds since the Unix epoch.
pub const PROCESS_START: &str = "process_start_time_seconds";
/// Gauge: file descriptors this process has open.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// Gauge: the most file descriptors this process may open (`RLIMIT_NOFILE`).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";

/// The version and commit this binary was built from (`build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = match option_env!("QUORUMLITE_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

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
    spec(FORWARDED, Counter, None, &["kind"], "calls this node sent to the leader: forwarded writes (kind=write), HTTP pipelines (kind=http), libSQL replicas' programs (kind=replica) and read barriers (kind=read_index)"),
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
    spec(REPLICA_CALLS, Counter, None, &["call"], "libSQL replication protocol calls served: hello, batch (BatchLogEntries), stream (LogEntries), snapshot, execute and describe (the proxy)"),
    spec(REPLICA_FRAMES, Counter, None, &[], "frames (pages) sent to embedded replicas, in batches and snapshots"),
    spec(REPLICA_SESSIONS, Gauge, COUNT, &[], "embedded replicas' proxy sessions open on this node (the leader's are used)"),
    spec(BATCH_CALL_ITEMS, Histogram, COUNT, &["kind"], "items per batch call (QueryBatch: kind=read, ExecuteBatch: kind=write) served by this node; the client library coalesces concurrent calls into these"),
    spec(ERRORS, Counter, None, &["code"], "errors this node answered to clients (gRPC and HTTP), by Quorumlite error code (NOT_LEADER, SQL_ERROR, DISK_FULL...); every code exists from start at 0"),
    spec(BUILD_INFO, Gauge, None, &["version", "commit"], "always 1; the labels say which build this node runs"),
    spec(DISK_FREE, Gauge, BYTES, &[], "bytes free for this node on the filesystem of its data directory (statvfs); writes are refused below min_free_disk_bytes"),
    spec(PROCESS_CPU, Gauge, None, &[], "CPU time this process used, user and system, in seconds (/proc/self/stat); use rate()"),
    spec(PROCESS_RESIDENT, Gauge, BYTES, &[], "resident memory of this process (/proc/self/statm)"),
    spec(PROCESS_VIRTUAL, Gauge, BYTES, &[], "virtual memory of this process (/proc/self/statm)"),
    spec(PROCESS_START, Gauge, SECONDS, &[], "start time of this process, seconds since the Unix epoch"),
    spec(PROCESS_OPEN_FDS, Gauge, None, &[], "file descriptors this process has open"),
    spec(PROCESS_MAX_FDS, Gauge, None, &[], "the most file descriptors this process may open (RLIMIT_NOFILE)"),
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

/// Bucket bounds of the histograms in seconds: 250 µs to 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Bucket bounds of the histograms of counts (requests per batch, items
/// per call): powers of two up to 1024.
pub const COUNTS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every value a label takes that is known before it is first used: these
/// series are registered at start ([`register`]). Labels with values known
/// only at run time (peers: from the configuration) are added there.
#[rustfmt::skip]
const KNOWN_LABELS: &[(&str, &str, &[&str])] = &[
    (RAFT_ROLE, "role", &["leader", "follower", "candidate", "learner", "shutdown"]),
    (READ_DURATION, "consistency", &["linearizable", "session", "stale"]),
    (FORWARDED, "kind", &["write", "http", "replica", "read_index"]),
    (AUTH_FAILURES, "reason", &AUTH_FAILURE_REASONS),
    (HTTP_PIPELINES, "outcome", &["local", "forwarded", "error"]),
    (REPLICA_CALLS, "call", &["hello", "batch", "stream", "snapshot", "execute", "describe"]),
    (BATCH_CALL_ITEMS, "kind", &["read", "write"]),
];

/// The `reason` label of [`AUTH_FAILURES`]: a token is missing, invalid,
/// lacks the permission, or a node-to-node call proves no peer.
pub const AUTH_FAILURE_REASONS: [&str; 4] = ["missing", "invalid", "forbidden", "not-a-peer"];

/// How often [`sample_disk`] reads the sizes of the files on disk, the
/// free space and the process's CPU, memory and files.
pub const DISK_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason} (is another process using the port?)")]
pub struct InstallError {
    addr: SocketAddr,
    reason: String,
}

/// Serves the exporter over HTTPS on the listener it is given (the
/// server's TLS endpoint, `server::tls::serve_metrics`): given by the
/// caller, so that this module needs nothing of the server's.
pub type ServeHttps = Box<dyn FnOnce(tokio::net::TcpListener, PrometheusHandle) + Send>;

/// Install the process-global Prometheus recorder and serve it at
/// `listen` (`GET /metrics`): plain HTTP from the exporter's own listener,
/// or, when the node has TLS (`https`), HTTPS with the node's certificate
/// (reloaded with it on SIGHUP). Call once, inside the node's Tokio runtime.
/// `peers`: the other nodes this one knows of at start, whose series are
/// registered with the others ([`register`]).
pub fn install(
    listen: SocketAddr,
    https: Option<ServeHttps>,
    peers: &[NodeId],
) -> Result<(), InstallError> {
    let fail = |reason: String| InstallError {
        addr: listen,
        reason,
    };
    let mut builder = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)
        .map_err(|e| fail(e.to_string()))?;
    for s in SPECS
        .iter()
        .filter(|s| s.kind == Kind::Histogram && s.unit == COUNT)
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(s.name.to_owned()), COUNTS_BUCKETS)
            .map_err(|e| fail(e.to_string()))?;
    }
    match https {
        None => builder
            .with_http_listener(listen)
            .install()
            .map_err(|e| fail(e.to_string()))?,
        Some(serve) => {
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
            serve(listener, handle);
        }
    }
    register(peers);
    Ok(())
}

/// Register the help text and unit of every metric with the recorder, and
/// every series whose labels are known at start (see [`KNOWN_LABELS`];
/// `peers` for the replication lag): counters and histograms empty, gauges
/// at the value that means "nothing yet".
pub fn register(peers: &[NodeId]) {
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
    for s in SPECS.iter().filter(|s| s.labels.is_empty()) {
        match s.kind {
            Kind::Counter => counter!(s.name).increment(0),
            Kind::Gauge => drop(gauge!(s.name)),
            Kind::Histogram => drop(histogram!(s.name)),
        }
    }
    for (name, key, values) in KNOWN_LABELS {
        let kind = SPECS.iter().find(|s| s.name == *name).map(|s| s.kind);
        for v in values.iter() {
            let labels = [(*key, v.to_string())];
            match kind {
                Some(Kind::Counter) => counter!(*name, &labels).increment(0),
                Some(Kind::Gauge) => drop(gauge!(*name, &labels)),
                Some(Kind::Histogram) => drop(histogram!(*name, &labels)),
                None => {}
            }
        }
    }
    for code in client::ErrorCode::ALL {
        counter!(ERRORS, "code" => code.as_str()).increment(0);
    }
    // A peer's reachability appears with this node's first call to it:
    // before that, neither 0 (down) nor 1 would be true, and a follower
    // calls its peers only when it campaigns.
    for p in peers {
        gauge!(REPLICATION_LAG, "follower" => p.to_string()).set(0.0);
    }
    gauge!(BUILD_INFO, "version" => VERSION, "commit" => COMMIT).set(1.0);
    gauge!(PROCESS_START).set(process::start_time().unwrap_or(0.0));
}

/// Count an error answered to a client, by its wire code. Called where
/// errors become wire statuses (`server::error`, `server::hrana::exec`).
pub fn error_answered(code: client::ErrorCode) {
    counter!(ERRORS, "code" => code.as_str()).increment(1);
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
                gauge!(RAFT_ROLE, "role" => raft::role_name(state)).set(value);
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

/// Export the sizes of the database, its WAL and the Raft log directory,
/// the free space of the data directory's disk (`disk`, the reading the
/// writes' reserve check uses) and the process's CPU, memory and files,
/// at once and then every [`DISK_SAMPLE_EVERY`], until aborted.
pub async fn sample_disk(db: PathBuf, log_dir: PathBuf, disk: Arc<raft::DiskSpace>) {
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    loop {
        let (db, wal, log_dir, disk) = (db.clone(), wal.clone(), log_dir.clone(), disk.clone());
        let sizes = tokio::task::spawn_blocking(move || {
            let sizes = (file_bytes(&db), file_bytes(&wal), dir_bytes(&log_dir));
            (sizes, disk.free(), process::sample())
        })
        .await;
        if let Ok(((db, wal, log), free, proc)) = sizes {
            gauge!(SQLITE_DB_BYTES).set(db as f64);
            gauge!(SQLITE_WAL_BYTES).set(wal as f64);
            gauge!(RAFT_LOG_DISK_BYTES).set(log as f64);
            if let Some(free) = free {
                gauge!(DISK_FREE).set(free as f64);
            }
            gauge!(PROCESS_CPU).set(proc.cpu_seconds);
            gauge!(PROCESS_RESIDENT).set(proc.resident_bytes);
            gauge!(PROCESS_VIRTUAL).set(proc.virtual_bytes);
            gauge!(PROCESS_OPEN_FDS).set(proc.open_fds);
            gauge!(PROCESS_MAX_FDS).set(proc.max_fds);
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
            // The process series keep the names every Prometheus client
            // library gives them, so that dashboards find them.
            assert!(
                s.name.starts_with("quorumlite_") || s.name.starts_with("process_"),
                "{}",
                s.name
            );
            // process_cpu_seconds_total is a gauge here (the metrics
            // crate's counters hold integers), under its standard name.
            assert_eq!(
                s.kind == Kind::Counter,
                s.name.ends_with("_total") && s.name != PROCESS_CPU,
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
            .filter(|l| l.starts_with("| `quorumlite_") || l.starts_with("| `process_"))
            .map(|l| {
                let cells: Vec<String> = l.split('|').map(|c| c.trim().replace('`', "")).collect();
                [cells[1].clone(), cells[2].clone(), cells[3].clone()]
            })
            .collect();
        let words = section
            .iter()
            .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
            .filter(|w| w.starts_with("quorumlite_") || w.starts_with("process_"))
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
            let base = ["_sum", "_count", "_bucket"]
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
