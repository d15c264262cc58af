//! Node configuration: one struct, defaults in code, overridden by a TOML
//! file, then by environment variables, then by flags.
//!
//! Every option is declared once, in the `node_options!` list below: its
//! name (the flag `--<name>` and the file key `<name>`), its type, its
//! default, its environment variable and its help. From that list come
//! [`NodeArgs`], the flag and the environment layer (clap reads
//! `QUORUMLITE_*` for every flag left unset); [`FileConfig`], the file
//! layer; and `Options`, the two merged over the defaults.
//! [`NodeConfig::resolve`] turns `Options` into the typed [`NodeConfig`]
//! the node runs with, and [`NodeConfig::validate`] refuses a bad value
//! with a message naming it. `docs/configuration.md` and
//! `quorumlite.sample.toml` list every option; tests check they stay in
//! step with this file.

use crate::tokens::AuthToken;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the PEM files are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// This node's certificate chain (server and, toward peers, client).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The cluster CA: signs every node's certificate.
    pub ca: PathBuf,
    /// Another CA whose client certificates are accepted (clients only).
    pub client_ca: Option<PathBuf>,
}

/// Generates the layers of the node's configuration from one list of
/// options. Each entry is one of:
///
/// - `name: Type, env = "VAR", value_name = "NAME";` a flag taking a value,
///   and the file key `name`, with no default (`Options` holds an
///   `Option<Type>`). `value_name` may be left out.
/// - `name: Type = default, env = ..;` the same with a default (`Options`
///   holds a `Type`). The help states the default in words; a test checks
///   it and the reference against `default`.
/// - `name: switch, env = "VAR";` a flag without a value, set by the flag,
///   by its variable or by `name = true` in the file.
/// - `name: Type, file only;` a file key that is no flag (`Options` holds
///   an `Option<Type>`).
///
/// An entry's doc comment is its flag's `--help`. The list's order is the
/// order of `--help`, and of the keys a file error lists.
///
/// The macro reads the list one entry at a time, turning each into a
/// record of its pieces (its field of `NodeArgs`, of `FileConfig` and of
/// `Options`, how it merges, its default), then emits the three structs
/// from the records.
macro_rules! node_options {
    (@read [$($done:tt)*]
        $(#[doc = $doc:tt])* $name:ident: switch, env = $env:tt;
        $($rest:tt)*
    ) => {
        node_options!(@read [$($done)* {
            name: $name,
            doc: [$(#[doc = $doc])*],
            flag: [$(#[doc = $doc])* #[arg(long, env = $env)] pub $name: bool,],
            key: [bool],
            given: [bool],
            merge: [switch],
            default: [],
        }] $($rest)*);
    };
    (@read [$($done:tt)*]
        $(#[doc = $doc:tt])* $name:ident: $ty:ty, file only;
        $($rest:tt)*
    ) => {
        node_options!(@read [$($done)* {
            name: $name,
            doc: [$(#[doc = $doc])*],
            flag: [],
            key: [$ty],
            given: [Option<$ty>],
            merge: [file],
            default: [],
        }] $($rest)*);
    };
    (@read [$($done:tt)*]
        $(#[doc = $doc:tt])* $name:ident: $ty:ty $(= $default:expr)?,
        env = $env:tt $(, value_name = $value:tt)?;
        $($rest:tt)*
    ) => {
        node_options!(@read [$($done)* {
            name: $name,
            doc: [$(#[doc = $doc])*],
            flag: [
                $(#[doc = $doc])*
                #[arg(long, env = $env $(, value_name = $value)?)]
                pub $name: Option<$ty>,
            ],
            key: [$ty],
            given: [node_options!(@given $ty $(= $default)?)],
            merge: [value $(= $default)?],
            default: [$($default)?],
        }] $($rest)*);
    };
    (@read [$($done:tt)*] $($bad:tt)+) => {
        compile_error!(concat!("node_options!: no form of entry matches ", stringify!($($bad)+)));
    };
    (@read [$({
        name: $name:ident,
        doc: [$($doc:tt)*],
        flag: [$($flag:tt)*],
        key: [$key:ty],
        given: [$given:ty],
        merge: [$($merge:tt)*],
        default: [$($default:expr)?],
    })*]) => {
        /// Flags of `quorumlite node`. Every flag also reads `QUORUMLITE_<NAME>`.
        #[derive(clap::Args, Debug, Default, Clone)]
        pub struct NodeArgs {
            /// A TOML file with any of the options below (flags and environment
            /// variables override it).
            #[arg(long, env = "QUORUMLITE_CONFIG", value_name = "FILE")]
            pub config: Option<PathBuf>,
            /// Check the configuration (file, environment and flags) and exit
            /// without starting: 0 and the main settings if it is valid, 2 and
            /// what is wrong if not. Nothing is opened, created or bound.
            #[arg(long)]
            pub check_config: bool,
            $($($flag)*)*
        }

        /// The file layer: the same options, by the same names.
        #[derive(Deserialize, Debug, Default)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $($($doc)* pub $name: Option<$key>,)*
        }

        /// Every option as given: its flag or variable, else its file key,
        /// else its default (`None`: given nowhere, and no default).
        struct Options {
            $($name: $given,)*
        }

        impl Options {
            fn merge(args: &NodeArgs, file: FileConfig) -> Options {
                Options {
                    $($name: node_options!(@merge args.$name, file.$name, $($merge)*),)*
                }
            }

            /// Each option with a default, and that default as a file value.
            #[cfg(test)]
            fn defaults() -> Vec<(&'static str, toml::Value)> {
                vec![$($(
                    (
                        stringify!($name),
                        toml::Value::try_from::<$given>($default)
                            .expect("a default is a TOML value"),
                    ),
                )?)*]
            }
        }
    };
    (@given $ty:ty) => { Option<$ty> };
    (@given $ty:ty = $default:expr) => { $ty };
    (@merge $flag:expr, $key:expr, switch) => { $flag || $key == Some(true) };
    (@merge $flag:expr, $key:expr, file) => { $key };
    (@merge $flag:expr, $key:expr, value) => { $flag.clone().or($key) };
    (@merge $flag:expr, $key:expr, value = $default:expr) => {
        $flag.clone().or($key).unwrap_or($default)
    };
    ($($list:tt)*) => {
        node_options!(@read [] $($list)*);
    };
}

node_options! {
    /// This node's id: a positive integer, unique in the cluster, listed in --peers.
    id: u64, env = "QUORUMLITE_ID";
    /// Directory for the database, the Raft log and snapshots (created if missing).
    data_dir: PathBuf, env = "QUORUMLITE_DATA_DIR", value_name = "DIR";
    /// Address to listen on for clients and peers, HOST:PORT.
    listen: String, env = "QUORUMLITE_LISTEN", value_name = "HOST:PORT";
    /// Address to serve Prometheus metrics on (`GET /metrics`; HTTPS when TLS is on),
    /// HOST:PORT [default: none, no metrics endpoint].
    metrics_listen: String, env = "QUORUMLITE_METRICS_LISTEN", value_name = "HOST:PORT";
    /// Address to serve the HTTP API on (Hrana over HTTP, for `@libsql/client`;
    /// HTTPS when TLS is on), HOST:PORT [default: none, no HTTP API].
    http: String, env = "QUORUMLITE_HTTP", value_name = "HOST:PORT";
    /// The longest an interactive transaction (an HTTP stream's BEGIN) may
    /// stay open before it is rolled back; other writes wait behind it, in
    /// milliseconds [default: 5000].
    txn_timeout_ms: u64 = 5000, env = "QUORUMLITE_TXN_TIMEOUT_MS", value_name = "MS";
    /// An HTTP stream unused this long is closed (rolling back its
    /// transaction), in milliseconds [default: 10000].
    stream_idle_ms: u64 = 10_000, env = "QUORUMLITE_STREAM_IDLE_MS", value_name = "MS";
    /// Join an existing cluster through any member, HOST:PORT, instead of
    /// forming one from --peers: the node catches up as a learner, then
    /// becomes a voter (unless --learner). Ignored once the node has joined.
    join: String, env = "QUORUMLITE_JOIN", value_name = "HOST:PORT";
    /// With --join: stay a learner (a read replica that never votes).
    learner: switch, env = "QUORUMLITE_LEARNER";
    /// The address other members and clients reach this node at, HOST:PORT
    /// [default: this node's address in --peers, else --listen].
    advertise: String, env = "QUORUMLITE_ADVERTISE", value_name = "HOST:PORT";
    /// Every voter of the cluster, this node included: ID=HOST:PORT,...
    /// Nodes started with the same list form the cluster on their own.
    peers: String, env = "QUORUMLITE_PEERS", value_name = "ID=HOST:PORT,...";
    /// Leader heartbeat interval in milliseconds [default: 100].
    heartbeat_ms: u64 = 100, env = "QUORUMLITE_HEARTBEAT_MS", value_name = "MS";
    /// Shortest election timeout in milliseconds [default: 300].
    election_timeout_min_ms: u64 = 300,
        env = "QUORUMLITE_ELECTION_TIMEOUT_MIN_MS", value_name = "MS";
    /// Longest election timeout in milliseconds [default: 500].
    election_timeout_max_ms: u64 = 500,
        env = "QUORUMLITE_ELECTION_TIMEOUT_MAX_MS", value_name = "MS";
    /// Build a snapshot (and compact the log) every this many log entries [default: 10000].
    snapshot_threshold: u64 = 10_000,
        env = "QUORUMLITE_SNAPSHOT_THRESHOLD", value_name = "ENTRIES";
    /// Log entries kept behind a snapshot for followers slightly behind [default: 100].
    log_keep: u64 = 100, env = "QUORUMLITE_LOG_KEEP", value_name = "ENTRIES";
    /// Also build a snapshot (and compact the log) once this many bytes of
    /// entries were appended since the last one [default: 16777216].
    snapshot_log_bytes: u64 = 16 * 1024 * 1024,
        env = "QUORUMLITE_SNAPSHOT_LOG_BYTES", value_name = "BYTES";
    /// Bytes kept free on the data directory's disk: below it the leader
    /// refuses writes (DISK_FULL) and a follower refuses new entries, and
    /// both go on serving reads [default: 134217728].
    min_free_disk_bytes: u64 = 128 * 1024 * 1024,
        env = "QUORUMLITE_MIN_FREE_DISK_BYTES", value_name = "BYTES";
    /// How long a write may take from proposal to apply before its outcome is
    /// reported as indeterminate, in milliseconds [default: 10000].
    write_timeout_ms: u64 = 10_000, env = "QUORUMLITE_WRITE_TIMEOUT_MS", value_name = "MS";
    /// How long a session read waits for this node to reach its token's
    /// version before answering REPLICA_BEHIND, in milliseconds [default: 2000].
    session_wait_ms: u64 = 2000, env = "QUORUMLITE_SESSION_WAIT_MS", value_name = "MS";
    /// Largest request accepted from a client, in bytes [default: 16777216].
    max_request_bytes: usize = 16 * 1024 * 1024,
        env = "QUORUMLITE_MAX_REQUEST_BYTES", value_name = "BYTES";
    /// Largest set of changed pages one write batch may carry, in bytes [default: 67108864].
    max_batch_bytes: u64 = 64 * 1024 * 1024,
        env = "QUORUMLITE_MAX_BATCH_BYTES", value_name = "BYTES";
    /// Most write requests grouped into one batch [default: 1000].
    max_batch_requests: usize = 1000, env = "QUORUMLITE_MAX_BATCH_REQUESTS", value_name = "N";
    /// How long the leader waits for more requests before it starts a
    /// batch smaller than the previous one, in microseconds [default: 500].
    batch_linger_us: u64 = 500, env = "QUORUMLITE_BATCH_LINGER_US", value_name = "US";
    /// Read connections to the database, each with a thread of its own
    /// that runs reads off the network and Raft threads [default: 8].
    read_connections: usize = 8, env = "QUORUMLITE_READ_CONNECTIONS", value_name = "N";
    /// Longest a read statement may run before it is stopped, in
    /// milliseconds; a request may ask for another limit [default: 30000].
    statement_timeout_ms: u64 = 30_000,
        env = "QUORUMLITE_STATEMENT_TIMEOUT_MS", value_name = "MS";
    /// Most rows one statement's result may hold; 0: no cap [default: 1000000].
    max_result_rows: u64 = 1_000_000, env = "QUORUMLITE_MAX_RESULT_ROWS", value_name = "N";
    /// Most bytes one statement's result may hold; 0: no cap [default: 67108864].
    max_result_bytes: u64 = 64 * 1024 * 1024,
        env = "QUORUMLITE_MAX_RESULT_BYTES", value_name = "BYTES";
    /// Threads running the node's network and Raft tasks [default: one per
    /// CPU]. Nodes sharing a machine do better with their share of it
    /// (`quorumlite dev` gives each a third).
    worker_threads: usize, env = "QUORUMLITE_WORKER_THREADS", value_name = "N";
    /// TLS: this node's certificate chain (PEM), used to serve clients and
    /// peers and to connect to peers. With --tls-key and --tls-ca.
    tls_cert: PathBuf, env = "QUORUMLITE_TLS_CERT", value_name = "FILE";
    /// TLS: the private key of --tls-cert (PEM).
    tls_key: PathBuf, env = "QUORUMLITE_TLS_KEY", value_name = "FILE";
    /// TLS: the cluster CA (PEM). Peers must present a certificate it signed.
    tls_ca: PathBuf, env = "QUORUMLITE_TLS_CA", value_name = "FILE";
    /// TLS: another CA whose client certificates are accepted (clients
    /// only, never as peers) [default: none].
    tls_client_ca: PathBuf, env = "QUORUMLITE_TLS_CLIENT_CA", value_name = "FILE";
    /// The cluster secret, which nodes prove to each other on every
    /// node-to-node call when TLS is off: the same file on every node. The
    /// founder of a new cluster creates it if it is missing; copy it to the
    /// others [default: a loopback-only cluster's founder draws one into its
    /// data directory and hands it to the other founders].
    cluster_secret_file: PathBuf, env = "QUORUMLITE_CLUSTER_SECRET_FILE", value_name = "FILE";
    /// This network is private: allow auth tokens without TLS on a
    /// non-loopback address (tokens then cross the network in clear text).
    private_network: switch, env = "QUORUMLITE_PRIVATE_NETWORK";
    /// Bearer tokens (file only: secrets do not belong in flags or `ps`).
    auth_tokens: Vec<AuthTokenEntry>, file only;
    /// TESTING ONLY, BREAKS LINEARIZABILITY: serve `linearizable` reads
    /// from local state without a read index. The Jepsen harness uses it to
    /// prove its checker sees stale reads.
    unsafe_local_reads: switch, env = "QUORUMLITE_UNSAFE_LOCAL_READS";
    /// Log output: "text" or "json" [default: text].
    log_format: String = "text".into(), env = "QUORUMLITE_LOG_FORMAT", value_name = "FORMAT";
    /// Log filter, as RUST_LOG (e.g. "info", "quorumlite=debug") [default: info].
    log_level: String = "info".into(), env = "QUORUMLITE_LOG_LEVEL", value_name = "FILTER";
}

/// One `[[auth_tokens]]` entry of the config file.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthTokenEntry {
    pub name: String,
    pub secret: String,
    pub permissions: Vec<String>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything a node runs with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where to serve metrics; `None`: no exporter (nothing is recorded).
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve the Hrana HTTP API; `None`: not served.
    pub http_listen: Option<SocketAddr>,
    pub txn_timeout: Duration,
    pub stream_idle: Duration,
    /// Voters by id when forming a cluster. Invariant (after `validate`):
    /// contains `id`, unless the node joins (`join`), when it may be empty.
    pub peers: BTreeMap<u64, String>,
    /// A member to join the cluster through; `None`: form it from `peers`.
    pub join: Option<String>,
    /// With `join`: stay a learner.
    pub learner: bool,
    /// The address peers and clients reach this node at.
    pub advertise: Option<String>,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_threshold: u64,
    pub log_keep: u64,
    /// Bytes of entries appended that also trigger a snapshot.
    pub snapshot_log_bytes: u64,
    /// Bytes kept free on the data directory's disk.
    pub min_free_disk_bytes: u64,
    pub write_timeout: Duration,
    pub session_wait: Duration,
    pub max_request_bytes: usize,
    pub max_batch_bytes: u64,
    pub max_batch_requests: usize,
    pub batch_linger: Duration,
    pub read_connections: usize,
    /// Longest a read statement may run (a request may ask for another).
    pub statement_timeout: Duration,
    /// Result caps of one statement; 0: none.
    pub max_result_rows: u64,
    pub max_result_bytes: u64,
    /// Tokio worker threads; `None`: one per CPU.
    pub worker_threads: Option<usize>,
    /// TLS on the listener and toward peers; `None`: plain text.
    pub tls: Option<TlsFiles>,
    /// The cluster secret's file (peers prove it without TLS); `None`: see
    /// `server::peers` for where the secret comes from then.
    pub cluster_secret_file: Option<PathBuf>,
    /// Auth tokens without TLS are allowed off loopback.
    pub private_network: bool,
    /// Bearer tokens; empty: the client API admits everyone.
    pub auth_tokens: Vec<AuthToken>,
    /// Testing only: linearizable reads skip the read index (see NodeArgs).
    pub unsafe_local_reads: bool,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// TLS is all or nothing: certificate, key and CA together.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
            cert,
            key,
            ca,
            client_ca,
        })),
        (None, None, None) if client_ca.is_none() => Ok(None),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert (tls_cert)"),
                (key.is_none(), "--tls-key (tls_key)"),
                (ca.is_none(), "--tls-ca (tls_ca)"),
            ]
            .into_iter()
            .filter(|(m, _)| *m)
            .map(|(_, name)| name)
            .collect();
            Err(err(format!(
                "TLS needs a certificate, its key and the cluster CA: {} missing",
                missing.join(", ")
            )))
        }
    }
}

/// The `[[auth_tokens]]` of the file; names are unique.
fn auth_tokens(entries: Vec<AuthTokenEntry>) -> Result<Vec<AuthToken>, ConfigError> {
    let mut tokens: Vec<AuthToken> = Vec::new();
    for entry in &entries {
        let token = AuthToken::new(&entry.name, &entry.secret, &entry.permissions)
            .map_err(|m| err(format!("auth_tokens: {m}")))?;
        if tokens.iter().any(|t| t.name == token.name) {
            return Err(err(format!(
                "auth_tokens: two tokens are named {:?}",
                token.name
            )));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

fn parse_log_format(text: &str) -> Result<LogFormat, ConfigError> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(err(format!(
            "--log-format (log_format) = {other:?}: must be \"text\" or \"json\""
        ))),
    }
}

/// A configuration value that cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl NodeConfig {
    /// Merge flags/environment over the file over the defaults, then validate.
    pub fn resolve(args: &NodeArgs) -> Result<NodeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let o = Options::merge(args, file);
        let id =
            o.id.ok_or_else(|| err("--id (id) is required: this node's id"))?;
        let data_dir = o.data_dir.ok_or_else(|| {
            err("--data-dir (data_dir) is required: where this node keeps its data")
        })?;
        let listen_text = o
            .listen
            .ok_or_else(|| err("--listen (listen) is required: HOST:PORT"))?;
        let listen = parse_listen(&listen_text)?;
        if let Some(v) = &o.advertise {
            parse_addr_text("--advertise (advertise)", v)?;
        }
        let peers = match (o.peers, &o.join) {
            (Some(peers), _) => parse_peers(&peers)?,
            (None, Some(join)) => {
                parse_addr_text("--join (join)", join)?;
                BTreeMap::new()
            }
            (None, None) => {
                return Err(err(
                    "--peers (peers) is required to form a cluster (every voter as ID=HOST:PORT,... including this node), or --join HOST:PORT to join one",
                ))
            }
        };
        if o.learner && o.join.is_none() {
            return Err(err(
                "--learner (learner) needs --join: a node forming a cluster from --peers is a voter",
            ));
        }
        let metrics_listen = o
            .metrics_listen
            .map(|v| parse_addr("--metrics-listen (metrics_listen)", &v))
            .transpose()?;
        let http_listen = o
            .http
            .map(|v| parse_addr("--http (http)", &v))
            .transpose()?;
        let tls = tls_files(o.tls_cert, o.tls_key, o.tls_ca, o.tls_client_ca)?;
        let auth_tokens = auth_tokens(o.auth_tokens.unwrap_or_default())?;
        let log_format = parse_log_format(&o.log_format)?;
        let ms = Duration::from_millis;
        let c = NodeConfig {
            id,
            data_dir,
            listen,
            metrics_listen,
            http_listen,
            txn_timeout: ms(o.txn_timeout_ms),
            stream_idle: ms(o.stream_idle_ms),
            peers,
            join: o.join,
            learner: o.learner,
            advertise: o.advertise,
            heartbeat: ms(o.heartbeat_ms),
            election_timeout_min: ms(o.election_timeout_min_ms),
            election_timeout_max: ms(o.election_timeout_max_ms),
            snapshot_threshold: o.snapshot_threshold,
            log_keep: o.log_keep,
            snapshot_log_bytes: o.snapshot_log_bytes,
            min_free_disk_bytes: o.min_free_disk_bytes,
            write_timeout: ms(o.write_timeout_ms),
            session_wait: ms(o.session_wait_ms),
            max_request_bytes: o.max_request_bytes,
            max_batch_bytes: o.max_batch_bytes,
            max_batch_requests: o.max_batch_requests,
            batch_linger: Duration::from_micros(o.batch_linger_us),
            read_connections: o.read_connections,
            statement_timeout: ms(o.statement_timeout_ms),
            max_result_rows: o.max_result_rows,
            max_result_bytes: o.max_result_bytes,
            worker_threads: o.worker_threads,
            tls,
            cluster_secret_file: o.cluster_secret_file,
            private_network: o.private_network,
            auth_tokens,
            unsafe_local_reads: o.unsafe_local_reads,
            log_format,
            log_level: o.log_level,
        };
        c.validate()?;
        Ok(c)
    }

    /// Check every value; the message names the offending option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(err("--id (id) = 0: ids start at 1"));
        }
        if self.join.is_none() && !self.peers.contains_key(&self.id) {
            return Err(err(format!(
                "--peers (peers) does not list this node's id {}: list every voter, this node included",
                self.id
            )));
        }
        let hb = self.heartbeat.as_millis();
        let (lo, hi) = (
            self.election_timeout_min.as_millis(),
            self.election_timeout_max.as_millis(),
        );
        if hb == 0 {
            return Err(err("--heartbeat-ms (heartbeat_ms) = 0: must be positive"));
        }
        if lo <= hb * 2 {
            return Err(err(format!(
                "--election-timeout-min-ms (election_timeout_min_ms) = {lo}: must be more than twice the heartbeat ({hb} ms)"
            )));
        }
        if hi <= lo {
            return Err(err(format!(
                "--election-timeout-max-ms (election_timeout_max_ms) = {hi}: must be above the minimum ({lo} ms)"
            )));
        }
        if self.snapshot_threshold == 0 {
            return Err(err(
                "--snapshot-threshold (snapshot_threshold) = 0: must be positive",
            ));
        }
        if self.snapshot_log_bytes < 1024 * 1024 {
            return Err(err(format!(
                "--snapshot-log-bytes (snapshot_log_bytes) = {}: must be at least 1048576 (1 MiB)",
                self.snapshot_log_bytes
            )));
        }
        if self.write_timeout < Duration::from_millis(100) {
            return Err(err(format!(
                "--write-timeout-ms (write_timeout_ms) = {}: must be at least 100",
                self.write_timeout.as_millis()
            )));
        }
        if self.max_request_bytes < 1024 {
            return Err(err(format!(
                "--max-request-bytes (max_request_bytes) = {}: must be at least 1024",
                self.max_request_bytes
            )));
        }
        if self.statement_timeout < Duration::from_millis(10) {
            return Err(err(format!(
                "--statement-timeout-ms (statement_timeout_ms) = {}: must be at least 10",
                self.statement_timeout.as_millis()
            )));
        }
        if self.max_batch_requests == 0 {
            return Err(err(
                "--max-batch-requests (max_batch_requests) = 0: must be positive",
            ));
        }
        if let Some(n) = self.worker_threads {
            if !(1..=1024).contains(&n) {
                return Err(err(format!(
                    "--worker-threads (worker_threads) = {n}: must be 1 to 1024"
                )));
            }
        }
        if self.txn_timeout < Duration::from_millis(100) {
            return Err(err(format!(
                "--txn-timeout-ms (txn_timeout_ms) = {}: must be at least 100",
                self.txn_timeout.as_millis()
            )));
        }
        if self.stream_idle < Duration::from_millis(100) {
            return Err(err(format!(
                "--stream-idle-ms (stream_idle_ms) = {}: must be at least 100",
                self.stream_idle.as_millis()
            )));
        }
        if let Some(http) = self.http_listen {
            if http == self.listen || Some(http) == self.metrics_listen {
                return Err(err(format!(
                    "--http (http) = {http}: the same address as --listen or --metrics-listen; choose another port"
                )));
            }
        }
        if self.metrics_listen == Some(self.listen) {
            return Err(err(format!(
                "--metrics-listen (metrics_listen) = {}: the same address as --listen; choose another port",
                self.listen
            )));
        }
        if !self.auth_tokens.is_empty() && self.tls.is_none() && !self.private_network {
            let exposed = std::iter::once(self.listen)
                .chain(self.http_listen)
                .find(|a| !a.ip().is_loopback());
            if let Some(addr) = exposed {
                return Err(err(format!(
                    "auth tokens are configured but TLS is off, and {addr} is not a loopback address: the tokens would cross the network in clear text. Turn TLS on (tls_cert, tls_key, tls_ca; `quorumlite cert` makes them), listen on loopback only, or, if this network is private, say so with --private-network (private_network = true)"
                )));
            }
        }
        self.storage()
            .validate()
            .map_err(|m| err(format!("storage: {m}")))?;
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            err(format!(
                "--log-level (log_level) = {:?}: {e}",
                self.log_level
            ))
        })?;
        Ok(())
    }

    /// This node's address as its peers know it.
    pub fn advertised(&self) -> String {
        match (&self.advertise, self.peers.get(&self.id)) {
            (Some(a), _) => a.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => self.listen.to_string(),
        }
    }

    pub fn storage(&self) -> storage::StorageConfig {
        storage::StorageConfig {
            max_batch_bytes: self.max_batch_bytes,
            read_pool_size: self.read_connections,
            max_result_rows: self.max_result_rows,
            max_result_bytes: self.max_result_bytes,
            ..storage::StorageConfig::default()
        }
    }

    pub fn raft(&self) -> Result<openraft::Config, ConfigError> {
        openraft::Config {
            cluster_name: "quorumlite".into(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 5_000,
            // The node decides when to build one (by entries and by bytes,
            // and only with room on disk): `server::compaction`.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.log_keep,
            snapshot_max_chunk_size: 1024 * 1024,
            max_payload_entries: 64,
            replication_lag_threshold: self.snapshot_threshold.max(self.log_keep) + 1,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| err(format!("raft settings: {e}")))
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "--config (config): cannot read {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

fn parse_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    parse_addr("--listen (listen)", text)
}

/// Parse the HOST:PORT value of `option` (named as in messages).
fn parse_addr(option: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            err(format!(
                "{option} = {text:?}: expected HOST:PORT with a resolvable host"
            ))
        })
}

/// Parse `ID=HOST:PORT,...`.
/// Check a HOST:PORT given as text (the host may be a name).
fn parse_addr_text(option: &str, text: &str) -> Result<(), ConfigError> {
    match text.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(err(format!("{option} = {text:?}: expected HOST:PORT"))),
    }
}

pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| {
            err(format!(
                "--peers (peers): {item:?} {why}; expected ID=HOST:PORT"
            ))
        };
        let (id, addr) = item.split_once('=').ok_or_else(|| bad("has no '='"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("does not start with a numeric id"))?;
        if id == 0 {
            return Err(bad("uses id 0 (ids start at 1)"));
        }
        let addr = addr.trim();
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(bad("has no valid HOST:PORT")),
        }
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(bad("repeats an id"));
        }
    }
    if peers.is_empty() {
        return Err(err(
            "--peers (peers) is empty: list every voter as ID=HOST:PORT,...",
        ));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> NodeArgs {
        NodeArgs {
            id: Some(1),
            data_dir: Some("/tmp/x".into()),
            listen: Some("127.0.0.1:4001".into()),
            peers: Some("1=127.0.0.1:4001,2=127.0.0.1:4002".into()),
            ..NodeArgs::default()
        }
    }

    #[test]
    fn defaults_apply_when_only_the_required_options_are_given() {
        let c = NodeConfig::resolve(&args()).expect("valid");
        assert_eq!(c.heartbeat, Duration::from_millis(100));
        assert_eq!(c.session_wait, Duration::from_secs(2));
        assert_eq!(c.advertised(), "127.0.0.1:4001");
        assert_eq!(c.metrics_listen, None, "no metrics endpoint unless asked");
        c.raft().expect("raft config");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("q.toml");
        std::fs::write(&file, "session_wait_ms = 500\nheartbeat_ms = 50\n").expect("write");
        let a = NodeArgs {
            config: Some(file),
            heartbeat_ms: Some(120),
            ..args()
        };
        let c = NodeConfig::resolve(&a).expect("valid");
        assert_eq!(c.session_wait, Duration::from_millis(500));
        assert_eq!(c.heartbeat, Duration::from_millis(120));
    }

    #[test]
    fn each_bad_value_is_refused_with_its_name() {
        let cases: Vec<(NodeArgs, &str)> = vec![
            (NodeArgs { id: None, ..args() }, "--id"),
            (
                NodeArgs {
                    id: Some(3),
                    ..args()
                },
                "does not list this node's id 3",
            ),
            (
                NodeArgs {
                    listen: Some("nowhere".into()),
                    ..args()
                },
                "--listen",
            ),
            (
                NodeArgs {
                    peers: Some("1=a".into()),
                    ..args()
                },
                "--peers",
            ),
            (
                NodeArgs {
                    peers: Some("x=a:1".into()),
                    ..args()
                },
                "numeric id",
            ),
            (
                NodeArgs {
                    peers: Some("1=a:1,1=b:2".into()),
                    ..args()
                },
                "repeats",
            ),
            (
                NodeArgs {
                    heartbeat_ms: Some(300),
                    ..args()
                },
                "--election-timeout-min-ms",
            ),
            (
                NodeArgs {
                    election_timeout_max_ms: Some(100),
                    ..args()
                },
                "--election-timeout-max-ms",
            ),
            (
                NodeArgs {
                    log_format: Some("xml".into()),
                    ..args()
                },
                "--log-format",
            ),
            (
                NodeArgs {
                    max_batch_bytes: Some(10),
                    ..args()
                },
                "max_batch_bytes",
            ),
            (
                NodeArgs {
                    read_connections: Some(0),
                    ..args()
                },
                "read_pool_size",
            ),
            (
                NodeArgs {
                    worker_threads: Some(0),
                    ..args()
                },
                "--worker-threads (worker_threads) = 0",
            ),
            (
                NodeArgs {
                    metrics_listen: Some("nowhere".into()),
                    ..args()
                },
                "--metrics-listen",
            ),
            (
                NodeArgs {
                    metrics_listen: Some("127.0.0.1:4001".into()),
                    ..args()
                },
                "the same address as --listen",
            ),
            (
                NodeArgs {
                    config: Some("/nonexistent.toml".into()),
                    ..args()
                },
                "--config",
            ),
            (
                NodeArgs {
                    tls_cert: Some("/etc/node.pem".into()),
                    ..args()
                },
                "--tls-key (tls_key), --tls-ca (tls_ca) missing",
            ),
            (
                NodeArgs {
                    tls_client_ca: Some("/etc/clients.pem".into()),
                    ..args()
                },
                "--tls-cert (tls_cert), --tls-key (tls_key), --tls-ca (tls_ca) missing",
            ),
        ];
        for (a, needle) in cases {
            let e = NodeConfig::resolve(&a).expect_err(needle).to_string();
            assert!(e.contains(needle), "{e:?} should name {needle:?}");
        }
    }

    #[test]
    fn auth_tokens_come_from_the_file_and_bad_ones_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        let with = |body: &str| {
            std::fs::write(&file, body).expect("write");
            NodeConfig::resolve(&NodeArgs {
                config: Some(file.clone()),
                ..args()
            })
        };
        let ok = with(
            "[[auth_tokens]]\nname = \"app\"\nsecret = \"0123456789abcdef\"\npermissions = [\"read\", \"write\"]\n",
        )
        .expect("valid token");
        assert_eq!(ok.auth_tokens.len(), 1);
        assert!(
            !format!("{ok:?}").contains("0123456789abcdef"),
            "secrets never print"
        );
        let short =
            with("[[auth_tokens]]\nname = \"app\"\nsecret = \"short\"\npermissions = [\"read\"]\n")
                .expect_err("short secret")
                .to_string();
        assert!(
            short.contains("\"app\"") && short.contains("16 characters"),
            "{short}"
        );
        assert!(!short.contains("short\""), "{short}");
        let twice = with(
            "[[auth_tokens]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\npermissions = [\"read\"]\n[[auth_tokens]]\nname = \"a\"\nsecret = \"fedcba9876543210\"\npermissions = [\"read\"]\n",
        )
        .expect_err("duplicate name")
        .to_string();
        assert!(twice.contains("two tokens"), "{twice}");
    }

    #[test]
    fn tokens_without_tls_off_loopback_need_the_network_declared_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "[[auth_tokens]]\nname = \"app\"\nsecret = \"0123456789abcdef\"\npermissions = [\"read\"]\n",
        )
        .expect("write");
        let exposed = |listen: &str, private: bool| {
            NodeConfig::resolve(&NodeArgs {
                config: Some(file.clone()),
                listen: Some(listen.into()),
                advertise: Some("10.0.0.1:4001".into()),
                private_network: private,
                ..args()
            })
        };
        let refused = exposed("0.0.0.0:4001", false)
            .expect_err("tokens in clear text off loopback")
            .to_string();
        assert!(
            refused.contains("0.0.0.0:4001") && refused.contains("--private-network"),
            "{refused}"
        );
        exposed("0.0.0.0:4001", true).expect("declared private");
        exposed("127.0.0.1:4001", false).expect("loopback");
    }

    /// Every flag of `quorumlite node` is documented, and the sample file
    /// holds every key (and nothing the code does not know).
    #[test]
    fn every_option_is_in_the_reference_and_the_sample() {
        use clap::{Args, Command};
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let docs = std::fs::read_to_string(format!("{root}/docs/configuration.md"))
            .expect("docs/configuration.md");
        let sample = std::fs::read_to_string(format!("{root}/quorumlite.sample.toml"))
            .expect("quorumlite.sample.toml");
        let command = NodeArgs::augment_args(Command::new("node"));
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(
                docs.contains(&format!("`--{long}`")),
                "--{long} missing from docs/configuration.md"
            );
            // --config names the file, --check-config is an action.
            if long != "config" && long != "check-config" {
                let key = long.replace('-', "_");
                assert!(
                    docs.contains(&format!("`{key}`")),
                    "{key} missing from docs/configuration.md"
                );
                // Keys that exclude others (join vs forming) appear commented.
                assert!(
                    sample.contains(&format!("\n{key} = "))
                        || sample.contains(&format!("\n# {key} = ")),
                    "{key} missing from the sample config"
                );
            }
        }
        let parsed: FileConfig = toml::from_str(&sample).expect("the sample parses");
        assert_eq!(parsed.id, Some(1));
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("q.toml");
        std::fs::write(&file, "sesion_wait_ms = 500\n").expect("write");
        let e = NodeConfig::resolve(&NodeArgs {
            config: Some(file),
            ..args()
        })
        .expect_err("typo");
        assert!(e.to_string().contains("sesion_wait_ms"), "{e}");
    }

    /// The help and the reference state each default in words; they
    /// state the one the list of options declares.
    #[test]
    fn the_help_and_the_reference_state_each_declared_default() {
        use clap::{Args, Command};
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let docs = std::fs::read_to_string(format!("{root}/docs/configuration.md"))
            .expect("docs/configuration.md");
        let command = NodeArgs::augment_args(Command::new("node"));
        for (key, default) in Options::defaults() {
            let long = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .expect("every defaulted option is a flag");
            let text = match &default {
                toml::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.contains(&format!("[default: {text}]")),
                "--{long}: the help should say [default: {text}]: {help:?}"
            );
            let row = format!("| `--{long}` | `{key}` |");
            assert!(
                docs.contains(&format!("{row} {text} |"))
                    || docs.contains(&format!("{row} `{text}` |")),
                "{key}: docs/configuration.md should give {text} as the default"
            );
        }
    }

    #[test]
    fn every_flag_but_check_config_reads_the_variable_of_its_name() {
        use clap::{Args, Command};
        let command = NodeArgs::augment_args(Command::new("node"));
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let want = (long != "check-config")
                .then(|| format!("QUORUMLITE_{}", long.replace('-', "_").to_uppercase()));
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env, want, "--{long}");
        }
    }
}
