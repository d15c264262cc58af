//! `quorumlite bench`: drive a real cluster and report throughput and latency.
//!
//! N closed-loop clients run one workload for a fixed time after a
//! warm-up. They share `--connections` client sessions (one by default, as
//! the tasks of one application would), whose calls the client library
//! coalesces into batch calls (`--max-batch 1` sends each alone). Latencies go into an HDR
//! histogram per client (microseconds, 3 significant digits), merged at the
//! end. Workloads:
//! - `write`: a one-row INSERT per request;
//! - `read-linearizable`, `read-session`, `read-stale`: a point SELECT by
//!   primary key over `--rows` rows (loaded first if missing); session reads
//!   carry the token of the load, so they are served without waiting.
//!
//! `--heavy-reads N` runs N heavy `stale` reads at a time (a recursive
//! count of about 3 s of CPU each, spread over the `--addr` nodes) for the
//! whole run, beside the workload: the workload's latency then shows what
//! long reads cost the rest (the node runs them on read threads of their
//! own, never where Raft's heartbeats are sent).
//!
//! `read-replica` and `replica-lag` measure the embedded replica
//! ([`replica`]).
//!
//! Errors are counted by code and do not stop the run. This is a
//! measurement command, not a test: it asserts nothing.

use client::{Client, Consistency, Statement, Value};
use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::{BenchArgs, Workload};

mod replica;

pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = match super::runtime(true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(bench(&args)) {
        Ok(report) => {
            if let Some(report) = report {
                report.print(&args);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            super::output::error(args.connect.json, e.code.as_str(), &e.message);
            ExitCode::FAILURE
        }
    }
}

struct Report {
    ops: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// Heavy reads completed beside the workload.
    heavy: u64,
}

/// About 3 s of CPU on the 2-core machine, in a release build.
const HEAVY_SQL: &str = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<30000000) SELECT count(*) FROM c";

/// Heavy reads on the node at `addr`, one after the other, until `end`;
/// how many completed.
async fn heavy_reads(
    addr: &str,
    config: client::ClientConfig,
    end: Instant,
) -> Result<u64, client::Error> {
    let client = Client::with_config([addr], config)?;
    let mut done = 0;
    while Instant::now() < end {
        client
            .query(HEAVY_SQL, Consistency::Stale { max_lag: None })
            .await?;
        done += 1;
    }
    Ok(done)
}

impl Report {
    fn new(elapsed: Duration) -> Report {
        Report {
            ops: 0,
            elapsed,
            latency_us: new_histogram(),
            errors: BTreeMap::new(),
            heavy: 0,
        }
    }

    /// Add what the workers measured.
    async fn absorb(&mut self, workers: Vec<tokio::task::JoinHandle<Part>>) {
        for task in workers {
            let Ok(part) = task.await else { continue };
            self.ops += part.ops;
            let _ = self.latency_us.add(&part.latency_us);
            for (code, n) in part.errors {
                *self.errors.entry(code).or_default() += n;
            }
        }
    }

    fn print(&self, args: &BenchArgs) {
        let secs = self.elapsed.as_secs_f64();
        let rate = self.ops as f64 / secs;
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        if args.connect.json {
            outln!(
                "{}",
                json!({
                    "workload": format!("{:?}", args.workload),
                    "clients": args.clients,
                    "sessions": args.connections.clamp(1, args.clients),
                    "max_batch": args.max_batch.max(1),
                    "seconds": secs,
                    "ops": self.ops,
                    "ops_per_sec": rate,
                    "p50_ms": ms(0.5),
                    "p99_ms": ms(0.99),
                    "p999_ms": ms(0.999),
                    "max_ms": self.latency_us.max() as f64 / 1000.0,
                    "heavy_reads": self.heavy,
                    "errors": self.errors,
                })
            );
            return;
        }
        outln!(
            "workload {:?}, {} clients, {} session(s), max batch {}, {:.1} s: {} ops, {:.0} ops/s",
            args.workload,
            args.clients,
            args.connections.clamp(1, args.clients),
            args.max_batch.max(1),
            secs,
            self.ops,
            rate
        );
        outln!(
            "latency ms: p50 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        );
        if args.heavy_reads > 0 {
            outln!(
                "beside it: {} heavy reads at a time, {} completed",
                args.heavy_reads,
                self.heavy
            );
        }
        for (code, n) in &self.errors {
            outln!("errors {code}: {n}");
        }
    }
}

/// The run's report; `None` when the workload printed its own.
async fn bench(args: &BenchArgs) -> Result<Option<Report>, client::Error> {
    if args.clients == 0 || args.duration == 0 {
        return Err(client::Error::new(
            client::ErrorCode::BadRequest,
            "--clients and --duration must be positive",
        ));
    }
    let (addrs, config) = super::target(&args.connect)
        .map_err(|m| client::Error::new(client::ErrorCode::BadRequest, m))?;
    let config = client::ClientConfig {
        max_batch: args.max_batch.max(1),
        ..config
    };
    let ca = config.tls.as_ref().map(|t| t.ca_pem.clone());
    if matches!(args.workload, Workload::ReadReplica | Workload::ReplicaLag) {
        super::reach::guard(&addrs, ca.as_deref(), replica::run(args, &addrs, config)).await?;
        return Ok(None);
    }
    let setup = Client::with_config(&addrs, config.clone())?;
    super::reach::guard(&addrs, ca.as_deref(), prepare(&setup, args)).await?;
    let token = setup.token();
    let warmup_end = Instant::now() + Duration::from_secs(args.warmup);
    let end = warmup_end + Duration::from_secs(args.duration);
    let mut tasks = Vec::with_capacity(args.clients);
    let connections: Vec<Client> = (0..args.connections.clamp(1, args.clients))
        .map(|_| Client::with_config(&addrs, config.clone()))
        .collect::<Result<_, _>>()?;
    for i in 0..args.clients {
        let client = connections[i % connections.len()].clone();
        client.observe(token.clone());
        let workload = args.workload;
        let rows = args.rows;
        tasks.push(tokio::spawn(async move {
            worker(client, workload, rows, i as u64, warmup_end, end).await
        }));
    }
    let heavy: Vec<_> = (0..args.heavy_reads)
        .map(|i| {
            let addr = addrs[i % addrs.len()].clone();
            let config = client::ClientConfig {
                statement_timeout: Duration::from_secs(120),
                ..config.clone()
            };
            tokio::spawn(async move { heavy_reads(&addr, config, end).await })
        })
        .collect();
    let mut report = Report::new(Duration::from_secs(args.duration));
    for task in heavy {
        match task.await {
            Ok(Ok(n)) => report.heavy += n,
            Ok(Err(e)) => {
                *report
                    .errors
                    .entry(format!("heavy read {}", e.code))
                    .or_default() += 1
            }
            Err(_) => {}
        }
    }
    report.absorb(tasks).await;
    Ok(Some(report))
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits; the bounds are constants.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

async fn prepare(client: &Client, args: &BenchArgs) -> Result<(), client::Error> {
    match args.workload {
        Workload::Write | Workload::ReplicaLag => {
            client
                .execute(vec![
                    "CREATE TABLE IF NOT EXISTS bench_write(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"
                        .into(),
                ])
                .await?;
        }
        _ => {
            client
                .execute(vec![
                    "CREATE TABLE IF NOT EXISTS bench_read(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"
                        .into(),
                    Statement::with_params(
                        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1) \
                         INSERT OR IGNORE INTO bench_read(id, v) SELECT i, hex(randomblob(16)) FROM s",
                        vec![Value::Integer(args.rows)],
                    ),
                ])
                .await?;
        }
    }
    Ok(())
}

struct Part {
    ops: u64,
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

async fn worker(
    client: Client,
    workload: Workload,
    rows: i64,
    seed: u64,
    warmup_end: Instant,
    end: Instant,
) -> Part {
    let mut part = Part {
        ops: 0,
        latency_us: new_histogram(),
        errors: BTreeMap::new(),
    };
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    loop {
        let started = Instant::now();
        if started >= end {
            return part;
        }
        let outcome = match workload {
            Workload::Write | Workload::ReplicaLag => client
                .execute(vec![Statement::with_params(
                    "INSERT INTO bench_write(v) VALUES (?1)",
                    vec![Value::Text(format!("{:016x}", next()))],
                )])
                .await
                .map(drop),
            read => {
                let id = (next() % rows.max(1) as u64) as i64 + 1;
                let consistency = match read {
                    Workload::ReadSession => Consistency::Session(None),
                    Workload::ReadStale => Consistency::Stale { max_lag: None },
                    _ => Consistency::Linearizable,
                };
                client
                    .query(
                        Statement::with_params(
                            "SELECT v FROM bench_read WHERE id = ?1",
                            vec![Value::Integer(id)],
                        ),
                        consistency,
                    )
                    .await
                    .and_then(|r| match r.rows.len() {
                        // Every id in 1..=rows exists: a read that finds
                        // nothing is wrong, not fast.
                        1 => Ok(()),
                        n => Err(client::Error::new(
                            client::ErrorCode::Internal,
                            format!("point read of id {id} returned {n} rows"),
                        )),
                    })
            }
        };
        if started < warmup_end {
            continue;
        }
        match outcome {
            Ok(()) => {
                part.ops += 1;
                let us = started.elapsed().as_micros().max(1) as u64;
                let _ = part.latency_us.record(us.min(60_000_000));
            }
            Err(e) => *part.errors.entry(e.code.to_string()).or_default() += 1,
        }
    }
}
