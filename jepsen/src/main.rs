//! `jepsen`: run a workload against a real cluster under faults, check it.
//!
//! ```text
//! cargo run -p jepsen -- --workload register --nemesis partition,kill --time 60 --seed 1
//! cargo run -p jepsen -- check --workload register runs/…/history.jsonl
//! ```

use clap::{Parser, Subcommand};
use jepsen::checker::Validity;
use jepsen::nemesis::Fault;
use jepsen::net::NetMode;
use jepsen::run::{self, RunConfig};
use jepsen::workload::Workload;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Fault injection and consistency checking against a real quorumlite cluster.
///
/// Exits 0 when every checker says valid, 1 when one says invalid (a
/// consistency checker, or availability: a fault window over the bound, a
/// node that exited on its own, a heavy-read window that moved the term),
/// 2 when one could not decide, 3 when the harness itself failed or was
/// interrupted.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    test: TestArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check a history written by an earlier run.
    Check {
        #[arg(long)]
        workload: String,
        history: PathBuf,
    },
}

#[derive(clap::Args)]
struct TestArgs {
    /// register, bank, set or session.
    #[arg(long, default_value = "register")]
    workload: String,
    /// Faults, comma-separated: none, partition, kill, pause, heavy-read,
    /// stray-node, all.
    #[arg(long, default_value = "partition,kill")]
    nemesis: String,
    /// Seconds of workload (the final reads come after).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Seed of the nemesis schedule and the workers' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent workers (worker w talks to node w mod nodes).
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Network: auto (namespaces when possible), namespaces, loopback.
    #[arg(long, default_value = "auto")]
    net: String,
    /// The quorumlite binary [default: next to this one].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Where runs go; each run gets its own directory inside.
    #[arg(long, default_value = "jepsen/runs")]
    out: PathBuf,
    /// Deadline of one client operation, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    op_timeout_ms: u64,
    /// Start the nodes with --unsafe-local-reads, the bug the register
    /// checker must find.
    #[arg(long)]
    broken_reads: bool,
    /// Longest a fault window may go, from its start, without a successful
    /// write or read on some node; longer fails the run.
    #[arg(long, default_value_t = jepsen::checker::availability::DEFAULT_BOUND.as_millis() as u64)]
    availability_bound_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { workload, history }) => check(&workload, &history),
        None => test(cli.test),
    }
}

fn exit_for(v: Validity) -> ExitCode {
    match v {
        Validity::Valid => ExitCode::SUCCESS,
        Validity::Invalid => ExitCode::from(1),
        Validity::Unknown => ExitCode::from(2),
    }
}

fn harness_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("jepsen: {e}");
    ExitCode::from(3)
}

fn check(workload: &str, path: &std::path::Path) -> ExitCode {
    let workload = match Workload::parse(workload) {
        Ok(w) => w,
        Err(e) => return harness_error(e),
    };
    let history = match jepsen::history::load(path) {
        Ok(h) => h,
        Err(e) => return harness_error(e),
    };
    let verdicts = workload.check(&history);
    for v in &verdicts {
        println!("{:<9} {:?}: {}", v.checker, v.valid, v.summary);
        for a in &v.anomalies {
            println!("  {}: {}", a.kind, a.message);
        }
    }
    exit_for(jepsen::report::overall(&verdicts))
}

fn test(args: TestArgs) -> ExitCode {
    let cfg = match config(args) {
        Ok(c) => c,
        Err(e) => return harness_error(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return harness_error(e),
    };
    // On an interrupt the run is dropped where it stands: dropping the
    // cluster kills the nodes, dropping the network deletes the namespaces.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run::run(&cfg) => r,
            why = interrupted() => Err(format!("{why}: stopped the run, killed the nodes, removed the namespaces")),
        }
    });
    // The nemesis task holds the cluster too; dropping the runtime drops it.
    drop(rt);
    match outcome {
        Ok(r) => {
            run::print_summary(&r);
            exit_for(r.valid)
        }
        Err(e) => harness_error(e),
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default action (exit) stands; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted (SIGINT)",
        _ = term.recv() => "terminated (SIGTERM)",
    }
}

fn config(a: TestArgs) -> Result<RunConfig, String> {
    let workload = Workload::parse(&a.workload)?;
    let faults = Fault::parse_list(&a.nemesis)?;
    let net = match a.net.as_str() {
        "auto" => NetMode::Auto,
        "namespaces" => NetMode::Namespaces,
        "loopback" => NetMode::Loopback,
        other => {
            return Err(format!(
                "--net {other:?}: expected auto, namespaces or loopback"
            ))
        }
    };
    if a.nodes == 0 || a.concurrency == 0 {
        return Err("--nodes and --concurrency must be at least 1".into());
    }
    let bin = match a.bin {
        Some(b) => b,
        None => jepsen::default_bin()?,
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = a.out.join(format!(
        "{}-{}-{}-{stamp}",
        workload.name(),
        a.nemesis.replace(',', "+"),
        a.seed
    ));
    Ok(RunConfig {
        workload,
        faults,
        nemesis: a.nemesis,
        time: Duration::from_secs(a.time),
        seed: a.seed,
        dir,
        bin,
        net,
        nodes: a.nodes,
        concurrency: a.concurrency,
        broken_reads: a.broken_reads,
        op_timeout: Duration::from_millis(a.op_timeout_ms),
        availability_bound: Duration::from_millis(a.availability_bound_ms),
    })
}
