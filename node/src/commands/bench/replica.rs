//! The embedded replica's workloads of `quorumlite bench`:
//! - `read-replica`: point reads on a [`Replica`]'s file on one thread,
//!   then the same reads over the network on the `--addr` node (a
//!   follower, given its address) with one client and with `--clients`,
//!   in the same run, and the ratios;
//! - `replica-lag`: `--clients` clients write one row each per request
//!   while a replica follows `--addr`; the lag is the time from a write's
//!   acknowledgement to the moment the replica's file holds it.

use super::{new_histogram, prepare, worker, Report};
use crate::cli::{BenchArgs, Workload};
use client::{Client, ClientConfig, Replica, Statement, Value};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A replica file in the temporary directory, removed when dropped.
struct TempReplica {
    replica: Arc<Replica>,
    path: PathBuf,
}

impl TempReplica {
    async fn open(addrs: &[String], config: ClientConfig) -> Result<TempReplica, client::Error> {
        let path = std::env::temp_dir().join(format!(
            "quorumlite-bench-replica-{}.db",
            std::process::id()
        ));
        remove(&path);
        let replica = Replica::open(&path, addrs, config).await?;
        replica.sync(Duration::from_secs(60)).await?;
        Ok(TempReplica {
            replica: Arc::new(replica),
            path,
        })
    }
}

impl Drop for TempReplica {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// One measured phase: its name and what it measured.
struct Phase {
    name: &'static str,
    clients: usize,
    report: Report,
    /// Latencies in nanoseconds (local reads) rather than microseconds.
    nanos: bool,
}

pub async fn run(
    args: &BenchArgs,
    addrs: &[String],
    config: ClientConfig,
) -> Result<(), client::Error> {
    let setup = Client::with_config(addrs, config.clone())?;
    prepare(&setup, args).await?;
    let replica = TempReplica::open(addrs, config.clone()).await?;
    let phases = match args.workload {
        Workload::ReplicaLag => lag(args, addrs, &config, &replica.replica).await?,
        _ => {
            reads(
                args,
                addrs,
                &config,
                setup.token(),
                Arc::clone(&replica.replica),
            )
            .await?
        }
    };
    print(args, &phases);
    Ok(())
}

/// `read-replica`: the replica on one thread, then the network.
async fn reads(
    args: &BenchArgs,
    addrs: &[String],
    config: &ClientConfig,
    token: client::Token,
    replica: Arc<Replica>,
) -> Result<Vec<Phase>, client::Error> {
    let local = {
        let (replica, rows) = (Arc::clone(&replica), args.rows);
        let (warmup, duration) = (
            Duration::from_secs(args.warmup),
            Duration::from_secs(args.duration),
        );
        tokio::task::spawn_blocking(move || local_reads(&replica, rows, warmup, duration))
            .await
            .map_err(|e| client::Error::new(client::ErrorCode::Internal, e.to_string()))?
    };
    let mut phases = vec![Phase {
        name: "replica, local file, 1 thread",
        clients: 1,
        report: local,
        nanos: true,
    }];
    for (name, clients) in [
        ("over the network, 1 client", 1),
        ("over the network", args.clients),
    ] {
        let report = networked(args, addrs, config, &token, clients, Workload::ReadSession).await?;
        phases.push(Phase {
            name,
            clients,
            report,
            nanos: false,
        });
    }
    Ok(phases)
}

/// Point reads on the replica's file, closed loop, on this thread.
fn local_reads(replica: &Replica, rows: i64, warmup: Duration, duration: Duration) -> Report {
    let mut report = Report::new(duration);
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    let (measure, end) = (start + warmup, start + warmup + duration);
    loop {
        let started = Instant::now();
        if started >= end {
            return report;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let id = (rng % rows.max(1) as u64) as i64 + 1;
        let read = replica.query(Statement::with_params(
            "SELECT v FROM bench_read WHERE id = ?1",
            vec![Value::Integer(id)],
        ));
        if started < measure {
            continue;
        }
        match read {
            Ok(r) if r.rows.len() == 1 => {
                report.ops += 1;
                let ns = started.elapsed().as_nanos().max(1) as u64;
                let _ = report.latency_us.record(ns.min(60_000_000));
            }
            Ok(_) => *report.errors.entry("WRONG_ROWS".into()).or_default() += 1,
            Err(e) => *report.errors.entry(e.code.to_string()).or_default() += 1,
        }
    }
}

/// The bench's own closed-loop clients, `clients` of them.
async fn networked(
    args: &BenchArgs,
    addrs: &[String],
    config: &ClientConfig,
    token: &client::Token,
    clients: usize,
    workload: Workload,
) -> Result<Report, client::Error> {
    let warmup_end = Instant::now() + Duration::from_secs(args.warmup);
    let end = warmup_end + Duration::from_secs(args.duration);
    let sessions: Vec<Client> = (0..args.connections.clamp(1, clients))
        .map(|_| Client::with_config(addrs, config.clone()))
        .collect::<Result<_, _>>()?;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let client = sessions[i % sessions.len()].clone();
            client.observe(token.clone());
            let rows = args.rows;
            tokio::spawn(
                async move { worker(client, workload, rows, i as u64, warmup_end, end).await },
            )
        })
        .collect();
    let mut report = Report::new(Duration::from_secs(args.duration));
    report.absorb(tasks).await;
    Ok(report)
}

/// `replica-lag`: writes through the cluster, the lag of each to the replica.
async fn lag(
    args: &BenchArgs,
    addrs: &[String],
    config: &ClientConfig,
    replica: &Replica,
) -> Result<Vec<Phase>, client::Error> {
    let (tx, mut acks) = mpsc::unbounded_channel::<(u64, Instant)>();
    let warmup_end = Instant::now() + Duration::from_secs(args.warmup);
    let end = warmup_end + Duration::from_secs(args.duration);
    let sessions: Vec<Client> = (0..args.connections.clamp(1, args.clients))
        .map(|_| Client::with_config(addrs, config.clone()))
        .collect::<Result<_, _>>()?;
    let writers: Vec<_> = (0..args.clients)
        .map(|i| {
            let (client, tx) = (sessions[i % sessions.len()].clone(), tx.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    n += 1;
                    let written = client
                        .execute(vec![Statement::with_params(
                            "INSERT INTO bench_write(v) VALUES (?1)",
                            vec![Value::Text(format!("lag {i} {n}"))],
                        )])
                        .await;
                    let acked = Instant::now();
                    if let (Ok(w), true) = (written, acked >= warmup_end) {
                        let _ = tx.send((w.token.version(), acked));
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut versions = replica.versions();
    let mut lag = new_histogram();
    let mut waiting: BTreeMap<u64, Vec<Instant>> = BTreeMap::new();
    let mut writes = 0u64;
    let mut open = true;
    while open || !waiting.is_empty() {
        tokio::select! {
            ack = acks.recv(), if open => match ack {
                Some((version, at)) => {
                    writes += 1;
                    waiting.entry(version).or_default().push(at);
                }
                None => open = false,
            },
            changed = versions.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_secs(10)), if !open => break,
        }
        // Every write the file now holds: its lag ends now.
        let held = *versions.borrow();
        let now = Instant::now();
        let later = waiting.split_off(&(held + 1));
        for at in std::mem::replace(&mut waiting, later)
            .into_values()
            .flatten()
        {
            let us = now.saturating_duration_since(at).as_micros().max(1) as u64;
            let _ = lag.record(us.min(60_000_000));
        }
    }
    for w in writers {
        let _ = w.await;
    }
    let unseen = waiting.values().map(Vec::len).sum::<usize>() as u64;
    let mut errors = BTreeMap::new();
    if unseen > 0 {
        errors.insert("not on the replica within 10 s".into(), unseen);
    }
    Ok(vec![Phase {
        name: "lag: write acknowledged -> in the replica's file",
        clients: args.clients,
        report: Report {
            ops: writes,
            latency_us: lag,
            errors,
            ..Report::new(Duration::from_secs(args.duration))
        },
        nanos: false,
    }])
}

fn print(args: &BenchArgs, phases: &[Phase]) {
    let rate = |p: &Phase| p.report.ops as f64 / p.report.elapsed.as_secs_f64();
    let ms = |p: &Phase, q: f64| {
        let v = p.report.latency_us.value_at_quantile(q) as f64;
        if p.nanos {
            v / 1e6
        } else {
            v / 1e3
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ratios = match phases {
        [local, one, many] => Some((
            rate(local) / rate(one).max(1e-9),
            rate(local) / (rate(many) / cpus).max(1e-9),
        )),
        _ => None,
    };
    if args.connect.json {
        let list: Vec<_> = phases
            .iter()
            .map(|p| {
                json!({
                    "phase": p.name,
                    "clients": p.clients,
                    "ops_per_sec": rate(p),
                    "p50_ms": ms(p, 0.5),
                    "p99_ms": ms(p, 0.99),
                    "p999_ms": ms(p, 0.999),
                    "errors": p.report.errors,
                })
            })
            .collect();
        outln!(
            "{}",
            json!({
                "workload": format!("{:?}", args.workload),
                "phases": list,
                "replica_vs_one_client": ratios.map(|r| r.0),
                "replica_vs_network_per_core": ratios.map(|r| r.1),
                "cpus": cpus,
            })
        );
        return;
    }
    for p in phases {
        outln!(
            "{}, {} client(s), {} s: {:.0} ops/s; latency ms p50 {:.4} p99 {:.4} p999 {:.4}",
            p.name,
            p.clients,
            args.duration,
            rate(p),
            ms(p, 0.5),
            ms(p, 0.99),
            ms(p, 0.999)
        );
        for (code, n) in &p.report.errors {
            outln!("  errors {code}: {n}");
        }
    }
    if let Some((one, per_core)) = ratios {
        outln!(
            "replica / network, one client each: {one:.1}x; replica (1 thread) / network per core ({cpus} cores): {per_core:.1}x"
        );
    }
}
