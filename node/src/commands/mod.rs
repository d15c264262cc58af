//! The subcommands. Each returns the process exit code: 0 on success, 1 on
//! an error (printed by `output::error`), 2 on a usage error (clap).

/// `println!` for command output: a reader that went away (`quorumlite
/// query ... | head -1`) ends the command quietly instead of a panic.
macro_rules! outln {
    () => {
        $crate::commands::output::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::commands::output::write(format_args!($($arg)*), true)
    };
}

/// `print!` for command output, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::output::write(format_args!($($arg)*), false)
    };
}

pub mod backup;
pub mod bench;
mod cert;
mod dev;
mod members;
mod membership;
pub mod output;
pub mod reach;
mod replica;
mod shell;

use crate::cli::{Cli, Command, ConnectArgs, ConsistencyArg, ExecArgs, QueryArgs, StatusArgs};
use crate::config::NodeConfig;
use client::{Client, ClientConfig, Consistency, Statement, Token};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(cli: Cli, matches: &clap::ArgMatches) -> ExitCode {
    match cli.command {
        Command::Node(args) => node(&args),
        Command::Dev(args) => dev::run(&args),
        Command::Exec(args) => {
            let json = args.connect.json;
            let statements = match exec_statements(&args, matches) {
                Ok(s) => s,
                Err(message) => {
                    output::error(json, "BAD_REQUEST", &message);
                    return ExitCode::FAILURE;
                }
            };
            let connect = args.connect.clone();
            with_client(&connect, |c| exec(c, args, statements))
        }
        Command::Query(args) => {
            let connect = args.connect.clone();
            with_client(&connect, |c| query(c, args))
        }
        Command::Status(args) => {
            let connect = args.connect.clone();
            with_client(&connect, |c| status(c, args))
        }
        Command::Members(args) => membership::run(args.command),
        Command::Shell(args) => shell::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Cert(args) => cert::run(args),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Replica(args) => replica::run(args),
    }
}

/// The Tokio runtime of a subcommand: multi-threaded for the node and the
/// bench, one thread for a client call. Reports its own failure.
pub fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    runtime_with(multi_thread, None)
}

/// [`runtime`], with `workers` worker threads (multi-threaded only; `None`:
/// one per CPU).
fn runtime_with(
    multi_thread: bool,
    workers: Option<usize>,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    if let (true, Some(n)) = (multi_thread, workers) {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .thread_name("quorumlite")
        .build()
        .map_err(|e| {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn node(args: &crate::config::NodeArgs) -> ExitCode {
    let config = match NodeConfig::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        outln!("{}", check_summary(&config));
        return ExitCode::SUCCESS;
    }
    crate::logging::init(&config);
    let runtime = match runtime_with(true, config.worker_threads) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let signal = {
        let _guard = runtime.enter();
        shutdown_signal()
    };
    // Every log line names the node (`crate::logging`), so no span.
    let result = runtime.block_on(crate::server::run(config, signal));
    // A blocking task stuck on a failed disk (after a fatal error) must not
    // keep the process alive: dropping the runtime would wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `quorumlite node --check-config` prints for a valid configuration.
fn check_summary(c: &NodeConfig) -> String {
    let addr =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let members = match &c.join {
        Some(via) => format!("join {via}{}", if c.learner { " as a learner" } else { "" }),
        None => {
            let peers: Vec<String> = c.peers.iter().map(|(id, a)| format!("{id}={a}")).collect();
            format!("peers {}", peers.join(","))
        }
    };
    format!(
        "configuration OK: node {} listen {} advertise {} {members} data_dir {} http {} metrics {} tls {} auth tokens {}",
        c.id,
        c.listen,
        c.advertised(),
        c.data_dir.display(),
        addr(c.http_listen),
        addr(c.metrics_listen),
        if c.tls.is_some() { "on" } else { "off" },
        c.auth_tokens.len(),
    )
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed
/// when this is called (inside a runtime), not when the future is polled,
/// so a signal that arrives in between is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// The client configuration the connection flags ask for.
pub fn client_config(connect: &ConnectArgs) -> Result<ClientConfig, String> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let tls = match &connect.ca {
        Some(ca) => Some(client::TlsConfig {
            ca_pem: read(ca)?,
            identity: match (&connect.cert, &connect.key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            },
            domain: None,
        }),
        None if connect.cert.is_some() => {
            return Err("--cert needs --ca (the CA of the nodes' certificates)".into())
        }
        None => None,
    };
    Ok(ClientConfig {
        request_timeout: Duration::from_millis(connect.timeout_ms),
        retry_budget: Duration::from_millis(connect.timeout_ms),
        tls,
        auth_token: connect.auth_token.clone(),
        // A command run by hand: a port nobody listens on is an answer.
        fail_fast_unreachable: true,
        ..ClientConfig::default()
    })
}

/// The nodes' `HOST:PORT` addresses and the client configuration the
/// connection flags ask for (`--addr` may be a URL: see `reach::addrs`).
pub fn target(connect: &ConnectArgs) -> Result<(Vec<String>, ClientConfig), String> {
    let addrs = reach::addrs(&connect.addr, connect.ca.is_some())?;
    Ok((addrs, client_config(connect)?))
}

/// Build a client from the connect flags and run `f` on a small runtime,
/// failing at once with the reason when no node can be talked to
/// (`reach::guard`); print any error the way every command does.
pub(crate) fn with_client<F, Fut>(connect: &ConnectArgs, f: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), client::Error>>,
{
    let (addrs, config) = match target(connect) {
        Ok(t) => t,
        Err(message) => {
            output::error(connect.json, "BAD_REQUEST", &message);
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let ca = config.tls.as_ref().map(|t| t.ca_pem.clone());
    let result = runtime.block_on(async {
        let client = Client::with_config(&addrs, config)?;
        reach::guard(&addrs, ca.as_deref(), f(client)).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(connect.json, e.code.as_str(), &e.message);
            ExitCode::FAILURE
        }
    }
}

fn bad_request(message: impl Into<String>) -> client::Error {
    client::Error::new(client::ErrorCode::BadRequest, message)
}

fn parse_token(text: Option<&str>) -> Result<Option<Token>, client::Error> {
    text.map(|t| {
        t.parse::<Token>()
            .map_err(|e| client::Error::new(client::ErrorCode::BadToken, e.to_string()))
    })
    .transpose()
}

/// Bind a list of `--param` values to one statement. An argument holding
/// several statements is refused here, naming the cause: the node takes
/// exactly one statement per argument, and its own error hides why
/// (`no such table: m` for `CREATE TABLE m(x); INSERT INTO m VALUES (1)`).
fn bind(sql: String, params: &[String]) -> Result<Statement, String> {
    let count = storage::split_statements(&sql).len();
    if count > 1 {
        return Err(format!(
            "{sql:?} holds {count} statements: one statement per argument (exec runs its arguments in order, as one transaction: quorumlite exec \"CREATE TABLE t(x)\" \"INSERT INTO t VALUES (1)\")"
        ));
    }
    let mut statement = Statement::new(sql);
    for p in params {
        match output::parse_param(p)? {
            (Some(name), v) => statement.named.push((name, v)),
            (None, v) => statement.positional.push(v),
        }
    }
    if !statement.named.is_empty() && !statement.positional.is_empty() {
        return Err("a statement takes either positional or named --param values, not both".into());
    }
    Ok(statement)
}

/// Pair each `--param` with the SQL argument before it on the command line.
fn exec_statements(args: &ExecArgs, matches: &clap::ArgMatches) -> Result<Vec<Statement>, String> {
    let sub = matches
        .subcommand_matches("exec")
        .ok_or("exec: no arguments")?;
    let sql_at: Vec<usize> = sub
        .indices_of("sql")
        .map(Iterator::collect)
        .unwrap_or_default();
    let param_at: Vec<usize> = sub
        .indices_of("param")
        .map(Iterator::collect)
        .unwrap_or_default();
    let mut per_sql: Vec<Vec<String>> = vec![Vec::new(); args.sql.len()];
    for (param, at) in args.param.iter().zip(param_at) {
        let owner = sql_at.iter().rposition(|&s| s < at).unwrap_or(0);
        per_sql[owner].push(param.clone());
    }
    args.sql
        .iter()
        .zip(per_sql)
        .map(|(sql, params)| bind(sql.clone(), &params))
        .collect()
}

/// How long `exec` asks the nodes who leads before its write.
const LEADER_DISCOVERY: Duration = Duration::from_millis(150);

async fn exec(
    client: Client,
    args: ExecArgs,
    statements: Vec<Statement>,
) -> Result<(), client::Error> {
    if let Some(token) = parse_token(args.token.as_deref())? {
        client.observe(token);
    }
    // A fresh process knows no leader: ask every --addr at once who leads,
    // so the write does not start at a node that stopped answering.
    client.discover_leader(LEADER_DISCOVERY).await;
    let result = client.execute(statements).await?;
    if args.connect.json {
        let results: Vec<_> = result
            .results
            .iter()
            .map(|r| {
                json!({
                    "rows_affected": r.rows_affected,
                    "last_insert_rowid": r.last_insert_rowid,
                    "columns": output::columns_json(&r.columns),
                    "rows": output::rows_json(&r.rows),
                })
            })
            .collect();
        outln!(
            "{}",
            json!({ "results": results, "token": result.token.to_string() })
        );
        return Ok(());
    }
    for r in &result.results {
        if !r.columns.is_empty() {
            out!("{}", output::rows_table(&r.columns, &r.rows));
        }
        outln!(
            "{} row(s) affected, last insert rowid {}",
            r.rows_affected,
            r.last_insert_rowid
        );
    }
    outln!("token: {}", result.token);
    Ok(())
}

async fn query(client: Client, args: QueryArgs) -> Result<(), client::Error> {
    let token = parse_token(args.token.as_deref())?;
    let consistency = match args.consistency {
        ConsistencyArg::Linearizable => Consistency::Linearizable,
        ConsistencyArg::Session => Consistency::Session(Some(token.clone().ok_or_else(|| {
            bad_request("--consistency session needs --token (from an earlier reply)")
        })?)),
        ConsistencyArg::Stale => Consistency::Stale {
            max_lag: args.max_lag_ms.map(Duration::from_millis),
        },
    };
    if let Some(token) = token {
        client.observe(token);
    }
    let statement = bind(args.sql, &args.param).map_err(bad_request)?;
    let result = match args.statement_timeout_ms {
        Some(ms) => {
            client
                .query_with_timeout(statement, consistency, Duration::from_millis(ms))
                .await?
        }
        None => client.query(statement, consistency).await?,
    };
    if args.connect.json {
        outln!(
            "{}",
            json!({
                "columns": output::columns_json(&result.columns),
                "rows": output::rows_json(&result.rows),
                "token": result.token.to_string(),
            })
        );
    } else {
        out!("{}", output::rows_table(&result.columns, &result.rows));
        eprintln!("token: {}", result.token);
    }
    Ok(())
}

async fn status(client: Client, args: StatusArgs) -> Result<(), client::Error> {
    let s = client.status(args.digest).await?;
    let config = client_config(&args.connect).map_err(bad_request)?;
    let deadline = Duration::from_millis(args.connect.timeout_ms.min(2_000));
    let views = members::survey(&config, &s, deadline).await;
    if args.connect.json {
        outln!(
            "{}",
            json!({
                "id": s.id,
                "role": s.role,
                "leader_id": s.leader_id,
                "leader_addr": s.leader_addr,
                "term": s.term,
                "version": s.version,
                "lineage": s.lineage,
                "digest": s.digest,
                "digest_version": s.digest_version,
                "members": members::json(&views),
                "last_log_index": s.last_log_index,
                "applied_index": s.applied_index,
                "snapshot_index": s.snapshot_index,
                "purged_index": s.purged_index,
                "leader_contact_ms": s.leader_contact_ms,
                "token": s.token,
                "health": s.health,
                "health_reason": s.health_reason,
            })
        );
        return Ok(());
    }
    out!("{}", status_summary(&s));
    if !s.digest.is_empty() {
        outln!("digest    {} (version {})", s.digest, s.digest_version);
    }
    outln!();
    out!("{}", members::table(&views));
    Ok(())
}

/// The lines above the members table of `status` and the shell's
/// `.status`: the leader and term, the lineage, and the log of the node
/// that answered.
pub fn status_summary(s: &client::pb::StatusResponse) -> String {
    let leader = if s.leader_id == 0 {
        "none known".to_owned()
    } else {
        format!("{} ({})", s.leader_id, s.leader_addr)
    };
    let health = match (s.health.as_str(), s.health_reason.as_str()) {
        ("ok" | "", _) => String::new(),
        (status, "") => format!("health    {status}\n"),
        (status, reason) => format!("health    {status}: {reason}\n"),
    };
    format!(
        "leader    {leader}, term {}\nlineage   {}\nasked     node {} ({}): version {}, log last {}, applied {}, snapshot {}, purged {}\n{health}",
        s.term,
        if s.lineage.is_empty() { "none yet" } else { &s.lineage },
        s.id,
        s.role,
        s.version,
        s.last_log_index,
        s.applied_index,
        s.snapshot_index,
        s.purged_index
    )
}
