//! One test run, start to verdict.
//!
//! Network, then (with `stray-node`) the throwaway cluster in the real
//! cluster's slots, then the real cluster; workload and nemesis side by
//! side; heal; final reads; the workload's checkers, then the run's own:
//! `availability` (every window's first ok write and read within the
//! bound), `nodes` (no node exited on its own), with `heavy-read`
//! `elections` (no heavy-read window changed the term) and, with
//! `stray-node`, `stray` (the throwaway's data never reached the real
//! cluster).

use crate::checker::availability::{self, WindowAvailability};
use crate::checker::{Validity, Verdict};
use crate::db::{self, Cluster};
use crate::history::Recorder;
use crate::nemesis::{self, stray, Fault, Window};
use crate::net::{Net, NetMode};
use crate::report::{self, Counts, Results};
use crate::workload::{Ctx, Workload};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub workload: Workload,
    pub faults: Vec<Fault>,
    /// The `--nemesis` text, for the report.
    pub nemesis: String,
    pub time: Duration,
    pub seed: u64,
    /// Where the run's files go (created).
    pub dir: PathBuf,
    /// The `quorumlite` binary.
    pub bin: PathBuf,
    pub net: NetMode,
    pub nodes: u64,
    pub concurrency: usize,
    /// Start nodes with `--unsafe-local-reads` (linearizable reads served
    /// without a read index): the bug the register checker must catch.
    pub broken_reads: bool,
    /// Deadline of one client operation.
    pub op_timeout: Duration,
    /// Longest a fault window may go without a successful write or read
    /// (`checker::availability`).
    pub availability_bound: Duration,
}

/// What a run found.
pub struct RunResult {
    pub valid: Validity,
    pub verdicts: Vec<Verdict>,
    pub counts: Counts,
    pub windows: Vec<Window>,
    /// One row per window.
    pub availability: Vec<WindowAvailability>,
    pub availability_bound: Duration,
    pub network: String,
    pub dir: PathBuf,
}

/// Build the network and cluster, run workload and nemesis, heal, check,
/// report. Errors are about the harness (could not start nodes...), never
/// about the database's correctness, which the verdicts carry.
pub async fn run(cfg: &RunConfig) -> Result<RunResult, String> {
    std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
    let ids: Vec<u64> = (1..=cfg.nodes).collect();
    let net = Net::new(cfg.net, &ids)?;
    let network = net.describe();
    eprintln!("[jepsen] network: {network}");
    // JEPSEN_NODE_LOG sets the nodes' log filter (default `info`), e.g.
    // `info,openraft=info` to see openraft's elections and replication.
    let log_level = std::env::var("JEPSEN_NODE_LOG").unwrap_or_else(|_| "info".to_string());
    let mut extra = vec![
        "--log-level".to_string(),
        log_level,
        // Compact often, so snapshots and log truncation are exercised.
        "--snapshot-threshold".to_string(),
        "500".to_string(),
        "--log-keep".to_string(),
        "100".to_string(),
    ];
    if cfg.broken_reads {
        extra.push("--unsafe-local-reads".into());
    }
    let data = cfg.dir.join("data");
    let cluster = Cluster::plan(net, &cfg.bin, &data, cfg.nodes, &extra)?;
    let nodes: Vec<(u64, String)> = ids.iter().map(|id| (*id, cluster.addr(*id))).collect();
    let cluster = Arc::new(Mutex::new(cluster));
    // Same slots, same addresses: the throwaway must be gone before the
    // real cluster starts.
    let strays = if cfg.faults.contains(&Fault::StrayNode) {
        Some(stray::prepare(&cluster, &data.join("stray")).await?)
    } else {
        None
    };
    lock(&cluster).start_all()?;
    let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    if let Err(e) = db::wait_ready(&addrs, Duration::from_secs(60)).await {
        return Err(with_logs(&cluster, e));
    }

    let rec = Recorder::new(Some(&cfg.dir.join("history.jsonl")))
        .map_err(|e| format!("history file: {e}"))?;
    let start = rec.start();
    let ctx = Arc::new(Ctx {
        nodes: nodes.clone(),
        rec: rec.clone(),
        until: Instant::now() + cfg.time,
        seed: cfg.seed,
        concurrency: cfg.concurrency,
        timeout: cfg.op_timeout,
        counter: Default::default(),
    });
    cfg.workload.setup(&ctx).await?;
    eprintln!(
        "[jepsen] {} for {:?} with nemesis {:?}, seed {}",
        cfg.workload.name(),
        cfg.time,
        cfg.nemesis,
        cfg.seed
    );
    let plan = nemesis::Plan {
        faults: cfg.faults.clone(),
        seed: cfg.seed,
        start,
        until: ctx.until,
        strays: strays.clone(),
    };
    let nemesis = tokio::spawn(nemesis::run(Arc::clone(&cluster), plan));
    cfg.workload.run(Arc::clone(&ctx)).await;
    let run_end_s = start.elapsed().as_secs_f64();
    let windows = nemesis.await.unwrap_or_default();
    if !cfg.faults.is_empty() && windows.is_empty() {
        eprintln!(
            "[jepsen] the nemesis injected no fault: --time {:?} left no room for one window (1-3 s quiet, then 2-5 s of fault)",
            cfg.time
        );
    }
    nemesis::heal_all(&cluster, start.elapsed().as_secs_f64());
    if let Err(e) = db::wait_ready(&addrs, Duration::from_secs(60)).await {
        eprintln!("[jepsen] after healing: {e}");
    }
    cfg.workload.finish(&ctx).await;
    rec.finish().map_err(|e| format!("history file: {e}"))?;

    let history = rec.snapshot();
    let mut verdicts = cfg.workload.check(&history);
    let table = availability::measure(&history, &windows, run_end_s, cfg.availability_bound);
    verdicts.push(availability::check(&table, cfg.availability_bound));
    // Exits noticed after healing (a node that died in the final reads)
    // count too.
    let exits = {
        let mut c = lock(&cluster);
        c.reap_exited(start.elapsed().as_secs_f64());
        c.exits().to_vec()
    };
    verdicts.push(availability::check_exits(&exits));
    if cfg.faults.contains(&Fault::HeavyRead) {
        verdicts.push(availability::check_elections(&windows));
    }
    if strays.is_some() {
        verdicts.push(stray::leak_check(&nodes, cfg.op_timeout).await);
    }
    let valid = report::overall(&verdicts);
    let counts = Counts::of(&history);
    let results = Results {
        workload: cfg.workload.name(),
        nemesis: &cfg.nemesis,
        seed: cfg.seed,
        seconds: cfg.time.as_secs_f64(),
        network: network.clone(),
        broken_reads: cfg.broken_reads,
        valid,
        counts: counts.clone(),
        events: history.len(),
        windows: &windows,
        availability: report::AvailabilityReport {
            bound_ms: cfg.availability_bound.as_millis() as u64,
            windows: &table,
        },
        exits: &exits,
        verdicts: &verdicts,
    };
    report::write_json(&cfg.dir.join("results.json"), &results)?;
    let title = format!(
        "{} / nemesis {} / seed {}{}",
        cfg.workload.name(),
        cfg.nemesis,
        cfg.seed,
        if cfg.broken_reads {
            " / BROKEN READS"
        } else {
            ""
        }
    );
    if let Err(e) = report::plot(&cfg.dir.join("latency.png"), &history, &windows, &title) {
        eprintln!("[jepsen] {e}");
    }
    Ok(RunResult {
        valid,
        verdicts,
        counts,
        windows,
        availability: table,
        availability_bound: cfg.availability_bound,
        network,
        dir: cfg.dir.clone(),
    })
}

fn lock(c: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn with_logs(cluster: &Mutex<Cluster>, e: String) -> String {
    let c = lock(cluster);
    let mut out = e;
    for id in c.ids() {
        out.push_str(&format!("\n--- node {id} log ---\n{}", c.log_tail(id, 15)));
    }
    out
}

/// Print a run's outcome for a terminal.
pub fn print_summary(r: &RunResult) {
    println!("network:  {}", r.network);
    println!(
        "history:  {} operations: {} ok, {} fail, {} info; {} fault windows",
        r.counts.invoked,
        r.counts.ok,
        r.counts.fail,
        r.counts.info,
        r.windows.len()
    );
    for v in &r.verdicts {
        println!("{:<9} {:?}: {}", v.checker, v.valid, v.summary);
        for a in &v.anomalies {
            println!("  {}: {}", a.kind, a.message);
            for op in &a.ops {
                println!(
                    "    {}",
                    serde_json::to_string(op).unwrap_or_else(|_| format!("{op:?}"))
                );
            }
        }
    }
    if !r.availability.is_empty() {
        print!(
            "{}",
            availability::format_table(&r.availability, r.availability_bound)
        );
    }
    println!("verdict:  {:?}", r.valid);
    println!("files:    {}", r.dir.display());
}
