//! The node's log: one line per event on stderr, text or JSON, and every
//! line names its node.
//!
//! A process runs one node, so the node id is a property of the output,
//! not of a span: openraft runs on a runtime of its own and spawns its own
//! tasks, and `tokio::spawn` does not carry the caller's span, so a span
//! misses most of openraft's events and many of ours. [`WithNode`] writes
//! `node=N` after the timestamp of every text line, and `"node":N` first
//! in every JSON object.
//!
//! ```text
//! 2026-12-07T19:55:01.203114Z node=1  WARN quorumlite_raft::health: node 3 does not answer: ... peer=3 error="..."
//! {"node":1,"timestamp":"...","level":"WARN","fields":{...},"target":"quorumlite_raft::health"}
//! ```

use crate::config::{LogFormat, NodeConfig};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// openraft logs every failed call to a peer, hundreds of lines a second
/// while one is down, and its own fatal errors, which the node reports
/// itself (`watch_for_fatal`): `raft_inner` logs them as Rust `Debug`
/// dumps (`Io(Custom { kind: StorageFull, .. })`) on every call that
/// meets the stopped core. Peer failures are logged by `raft::PeerHealth`,
/// once per change of state: openraft's network, replication and core
/// chatter is off unless a filter names openraft.
const QUIET_OPENRAFT: &str = "openraft=error,openraft::replication=off,openraft::network=off,openraft::core=off,openraft::engine=off,openraft::progress=off,openraft::raft::raft_inner=off";

/// Install the process's subscriber for node `config.id`.
pub fn init(config: &NodeConfig) {
    let filter = if config.log_level == "info" {
        format!("info,{QUIET_OPENRAFT},sled=warn,h2=warn,hyper=warn,tower=warn")
    } else if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!("{},{QUIET_OPENRAFT}", config.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let node = config.id;
    let _ = match config.log_format {
        LogFormat::Json => builder
            .json()
            .event_format(WithNode {
                node,
                inner: format::format().json(),
                json: true,
            })
            .try_init(),
        LogFormat::Text => builder
            .event_format(WithNode {
                node,
                inner: format::format().without_time(),
                json: false,
            })
            .try_init(),
    };
}

/// An event format that puts the node id on every line (see the module
/// docs). `inner` formats the rest: without its timestamp for text (this
/// writes it, then `node=N`), as is for JSON (this inserts the field).
struct WithNode<F> {
    node: u64,
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if !self.json {
            SystemTime.format_time(&mut writer)?;
            write!(writer, " node={} ", self.node)?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"node\":{},{rest}", self.node),
            None => writer.write_str(&line),
        }
    }
}
