//! The command line: every subcommand and flag, with its `--help` text.

use crate::config::NodeArgs;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// A replicated SQLite: a Raft cluster of SQLite files kept byte-identical.
#[derive(Parser, Debug)]
#[command(name = "quorumlite", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node of a cluster.
    Node(Box<NodeArgs>),
    /// Start a local three-node cluster (child processes) with defaults; Ctrl-C stops it.
    Dev(DevArgs),
    /// Run a write: several SQL arguments run as one transaction.
    Exec(ExecArgs),
    /// Run a read-only query.
    Query(QueryArgs),
    /// Show the cluster: every member's role, applied version, lag and last
    /// contact with the leader.
    Status(StatusArgs),
    /// Change who is in the cluster: list, add, promote, remove, transfer-leader.
    Members(MembersArgs),
    /// An interactive SQL prompt (like the sqlite3 shell); reads SQL from
    /// stdin when it is not a terminal.
    Shell(ShellArgs),
    /// Drive a real cluster with a workload and print throughput and latency percentiles.
    Bench(BenchArgs),
    /// Make a CA and certificates for a test or development cluster.
    Cert(CertArgs),
    /// Copy the database of a running cluster to an ordinary SQLite file,
    /// without blocking writes.
    Backup(BackupArgs),
    /// Replace the cluster's data with a SQLite file, through Raft; starts
    /// a new lineage (older tokens are refused). Needs an `admin` token.
    Restore(RestoreArgs),
    /// Keep a SQLite file in sync with the cluster as batches commit (an
    /// embedded replica: for analytics, warm standbys, local reads); runs
    /// until Ctrl-C, and resumes from the file when started again.
    Replica(ReplicaArgs),
}

#[derive(clap::Args, Debug)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make a CA: DIR/ca.pem and DIR/ca.key. Refuses to replace an
    /// existing CA (its certificates would stop verifying) without --force.
    Ca {
        /// Where the files go (created).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Quorumlite CA")]
        name: String,
        #[command(flatten)]
        out: CertOutArgs,
    },
    /// Issue a certificate signed by DIR's CA: DIR/NAME.pem and DIR/NAME.key,
    /// good for serving and for client authentication.
    Issue {
        /// The directory holding ca.pem and ca.key; the files go there too.
        #[arg(long)]
        dir: PathBuf,
        /// File name and common name, e.g. node1.
        #[arg(long)]
        name: String,
        /// An IP address or DNS name the certificate is for (repeat; at
        /// least one: clients check the host they dial against these).
        #[arg(long, required = true, value_name = "HOST")]
        host: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[command(flatten)]
        out: CertOutArgs,
    },
}

/// Output options of `cert ca` and `cert issue`.
#[derive(clap::Args, Debug)]
pub struct CertOutArgs {
    /// Replace files that exist (a replaced CA key can no longer sign for
    /// the certificates it issued, and they stop verifying against a new
    /// ca.pem).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object: {"files":[...]} (errors too, as {"error":{...}}).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the three nodes keep their data (reused on the next run).
    #[arg(long, default_value = "quorumlite-data")]
    pub data_dir: PathBuf,
    /// Node N listens on 127.0.0.1:(base_port + N - 1).
    #[arg(long, default_value_t = 4001)]
    pub base_port: u16,
    /// Node N serves metrics on 127.0.0.1:(metrics_base_port + N - 1); 0: no metrics.
    #[arg(long, default_value_t = 9101)]
    pub metrics_base_port: u16,
    /// Node N serves the HTTP API (Hrana, for @libsql/client) on
    /// 127.0.0.1:(http_base_port + N - 1); 0: no HTTP API.
    #[arg(long, default_value_t = 8081)]
    pub http_base_port: u16,
    /// Print the cluster's addresses as one JSON object (one line) once it
    /// has started, instead of the text for people.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by the commands that talk to a cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Node address(es), comma-separated or repeated: HOST:PORT (the
    /// node's gRPC port, its --listen), http://HOST:PORT, or
    /// https://HOST:PORT (TLS: needs --ca).
    #[arg(
        long,
        env = "QUORUMLITE_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:4001"
    )]
    pub addr: Vec<String>,
    /// Print one JSON object (errors too, as {"error":{...}}).
    #[arg(long)]
    pub json: bool,
    /// Per-call deadline in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Bearer token for clusters that require one.
    #[arg(long, env = "QUORUMLITE_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Talk TLS, trusting this CA (PEM) for the nodes' certificates.
    #[arg(long, env = "QUORUMLITE_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that ask for one; with --key.
    #[arg(long, env = "QUORUMLITE_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Key of --cert (PEM).
    #[arg(long, env = "QUORUMLITE_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Continue the session of this token (reads after it see this write).
    #[arg(long)]
    pub token: Option<String>,
    /// SQL statements, one per argument, run in order as one transaction.
    #[arg(required = true, value_name = "SQL")]
    pub sql: Vec<String>,
    /// A parameter of the SQL argument before it, as JSON: 1, 2.5, "text",
    /// null, {"int":"<integer>"}, {"blob":"<base64>"}; NAME=JSON for a
    /// named parameter. Integers beyond 64 bits are refused.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
    pub param: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    Linearizable,
    Session,
    Stale,
}

#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How fresh the result must be.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
    /// For `session`: read at least this token's state.
    #[arg(long)]
    pub token: Option<String>,
    /// For `stale`: refuse if the node last heard from a leader longer ago (ms).
    #[arg(long, value_name = "MS")]
    pub max_lag_ms: Option<u64>,
    /// Let the statement run this long on the node before it is stopped
    /// (ms) [default: 30000].
    #[arg(long, value_name = "MS")]
    pub statement_timeout_ms: Option<u64>,
    /// A read-only SQL statement.
    #[arg(value_name = "SQL")]
    pub sql: String,
    /// A parameter, as for `exec`.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
    pub param: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Also compute the replica digest (reads the whole database).
    #[arg(long)]
    pub digest: bool,
}

#[derive(clap::Args, Debug)]
pub struct MembersArgs {
    #[command(subcommand)]
    pub command: MembersCommand,
}

#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Every member with its kind, role, applied version, lag and last contact.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Add a running node (started with --join): it catches up as a learner
    /// (snapshot, then log), then becomes a voter unless --learner.
    /// Returns once done. Needs the admin permission.
    Add {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The new node's id (unused in the cluster).
        #[arg(long)]
        id: u64,
        /// The address members and clients reach the new node at, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        node_addr: String,
        /// Keep it a learner: a read replica that never votes.
        #[arg(long)]
        learner: bool,
        /// How long to wait for the node to catch up, in seconds.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
    },
    /// Make a learner a voter, once it has caught up.
    Promote {
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        id: u64,
    },
    /// Remove a voter or learner; removing the leader hands leadership over first.
    Remove {
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        id: u64,
    },
    /// Make voter --to the leader (the current leader steps aside).
    TransferLeader {
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        to: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How fresh reads must be (`.consistency` changes it).
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
    /// History file [default: $XDG_STATE_HOME/quorumlite/history, else
    /// ~/.quorumlite_history].
    #[arg(long, env = "QUORUMLITE_HISTORY", value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// With SQL from stdin: stop at the first statement that fails
    /// (without it, every statement runs and the exit code reports failures).
    #[arg(long)]
    pub bail: bool,
}

/// Parse the command line, keeping the raw matches (exec pairs each
/// `--param` with the SQL argument before it by position).
pub fn parse() -> (Cli, clap::ArgMatches) {
    let matches = Cli::command().get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, matches),
        Err(e) => e.exit(),
    }
}

/// `quorumlite backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How fresh the copy must be: `linearizable` holds every write
    /// acknowledged before the backup started; `session` at least
    /// --token's state; `stale` whatever the node asked has applied.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
    /// For `session`: the copy holds at least this token's state.
    #[arg(long)]
    pub token: Option<String>,
    /// The SQLite file to write (written to FILE.partial, then renamed;
    /// an existing FILE is replaced).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `quorumlite restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The SQLite file whose contents replace the cluster's data.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `quorumlite replica`.
#[derive(clap::Args, Debug)]
pub struct ReplicaArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The SQLite file to keep in sync (created if missing; a file another
    /// cluster filled starts over from this cluster's data).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the replica's version every this many milliseconds (0: only
    /// when following starts, fails or catches up).
    #[arg(long, default_value_t = 5_000)]
    pub report_ms: u64,
}

/// What `quorumlite bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Write,
    ReadLinearizable,
    ReadSession,
    ReadStale,
    /// Point reads on an embedded replica's file against the same reads
    /// over the network (give a follower's --addr).
    ReadReplica,
    /// Writes with a replica following: acknowledgement to visibility in
    /// the replica's file.
    ReplicaLag,
}

/// `quorumlite bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The nodes, as every command takes them: `--addr` (reads go to these
    /// nodes in turn; writes reach the leader, followers forward),
    /// `--auth-token`, `--ca`, `--cert`/`--key`, `--timeout-ms`, `--json`.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Concurrent clients, each waiting for its reply before the next request.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    #[arg(long, value_enum, default_value = "write")]
    pub workload: Workload,
    /// Client sessions (each with its own connection per node) the clients
    /// share, each client using one, in turn. Fewer let the library
    /// coalesce more concurrent calls into one batch call.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Most concurrent calls of one session sent as one batch call (the
    /// client library's `max_batch`); 1 sends every call on its own.
    #[arg(long, default_value_t = client::ClientConfig::default().max_batch)]
    pub max_batch: usize,
    /// Rows in the table point reads select from.
    #[arg(long, default_value_t = 10_000)]
    pub rows: i64,
    /// Heavy reads (about 3 s of CPU each) kept running at a time beside
    /// the workload, spread over the --addr nodes.
    #[arg(long, default_value_t = 0)]
    pub heavy_reads: usize,
}
