//! `quorumlite backup` and `quorumlite restore`: whole database files
//! to and from a running cluster (docs/operations.md, "Backup and restore").
//!
//! Progress goes to stderr: an `indicatif` bar (bytes, rate, ETA) when
//! stderr is a terminal, plain lines otherwise (every 10 % or every
//! second), so logs of scripted runs stay readable. The result goes to
//! stdout, as one JSON object with `--json`.

use super::{bad_request, parse_token, with_client};
use crate::cli::{BackupArgs, ConsistencyArg, RestoreArgs};
use client::{Client, Consistency, ErrorCode};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn run_backup(args: BackupArgs) -> ExitCode {
    let connect = args.connect.clone();
    with_client(&connect, |c| backup(c, args))
}

pub fn run_restore(args: RestoreArgs) -> ExitCode {
    let connect = args.connect.clone();
    with_client(&connect, |c| restore(c, args))
}

async fn backup(client: Client, args: BackupArgs) -> Result<(), client::Error> {
    let token = parse_token(args.token.as_deref())?;
    let consistency = match args.consistency {
        ConsistencyArg::Linearizable => Consistency::Linearizable,
        ConsistencyArg::Session => Consistency::Session(Some(token.ok_or_else(|| {
            bad_request("--consistency session needs --token (from an earlier reply)")
        })?)),
        ConsistencyArg::Stale => Consistency::Stale { max_lag: None },
    };
    let partial = partial_path(&args.file);
    let mut stream = client.backup(consistency).await?;
    let header = stream.header().clone();
    let progress = Progress::new("backup", header.total_bytes);
    let written = receive(&mut stream, &partial, &progress).await;
    let written = match written.and_then(|n| finish(&partial, &args.file).map(|()| n)) {
        Ok(n) => n,
        Err(e) => {
            progress.abandon();
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    progress.finish();
    let file = args.file.display().to_string();
    if args.connect.json {
        outln!(
            "{}",
            json!({
                "file": file,
                "bytes": written,
                "version": header.version,
                "lineage": header.lineage,
                "token": header.token.to_string(),
                "node": header.node,
            })
        );
    } else {
        outln!(
            "backup written to {file}: {written} bytes, version {}, lineage {} (from {})",
            header.version,
            header.lineage,
            header.node
        );
        outln!("token: {}", header.token);
    }
    Ok(())
}

/// `FILE.partial`, beside FILE (so the final rename stays on one filesystem).
fn partial_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

fn io_error(path: &Path, e: std::io::Error) -> client::Error {
    client::Error::new(ErrorCode::BadRequest, format!("{}: {e}", path.display()))
}

/// Write the stream to `partial`, fsynced; the bytes written.
async fn receive(
    stream: &mut client::Backup,
    partial: &Path,
    progress: &Progress,
) -> Result<u64, client::Error> {
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(partial).map_err(|e| io_error(partial, e))?);
    let mut written = 0u64;
    while let Some(chunk) = stream.next_chunk().await? {
        out.write_all(&chunk).map_err(|e| io_error(partial, e))?;
        written += chunk.len() as u64;
        progress.set(written);
    }
    let file = out
        .into_inner()
        .map_err(|e| io_error(partial, e.into_error()))?;
    file.sync_all().map_err(|e| io_error(partial, e))?;
    Ok(written)
}

/// Rename `partial` to `file` and make the rename durable.
fn finish(partial: &Path, file: &Path) -> Result<(), client::Error> {
    std::fs::rename(partial, file).map_err(|e| io_error(file, e))?;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

async fn restore(client: Client, args: RestoreArgs) -> Result<(), client::Error> {
    let total = std::fs::metadata(&args.file)
        .map_err(|e| io_error(&args.file, e))?
        .len();
    let progress = Arc::new(Progress::new("restore", total));
    let report = Arc::clone(&progress);
    let result = client
        .restore(&args.file, move |sent| {
            if sent == total {
                report.set(sent);
                report.installing();
            } else {
                report.uploading();
                report.set(sent);
            }
        })
        .await;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    progress.finish();
    let file = args.file.display().to_string();
    if args.connect.json {
        outln!(
            "{}",
            json!({
                "file": file,
                "bytes": result.bytes,
                "version": result.version,
                "lineage": result.lineage,
                "token": result.token.to_string(),
                "converted_from_page_size": result.converted_from_page_size,
                "node": result.node,
            })
        );
    } else {
        if let Some(from) = result.converted_from_page_size {
            outln!("converted from {from}-byte pages to the cluster's page size");
        }
        outln!(
            "restored {file}: {} bytes, version {}, new lineage {} (tokens from before the restore are refused)",
            result.bytes, result.version, result.lineage
        );
        outln!("token: {}", result.token);
    }
    Ok(())
}

/// Progress on stderr: a bar on a terminal, plain lines otherwise. A
/// restore has two phases: the upload (bytes), then the install on the
/// cluster (a spinner and the time it has taken: the leader checks the
/// file, copies it to the members, and every node installs it).
struct Progress {
    what: &'static str,
    total: u64,
    bar: Option<ProgressBar>,
    plain: Mutex<Plain>,
    /// Since when the install phase runs (`None`: uploading).
    installing: Mutex<Option<Instant>>,
}

/// What the install phase says it does.
const INSTALLING: &str =
    "installing on the cluster: the leader checks the file, copies it to the members, every node installs it";

/// When the last plain line was printed, and at what share (in tenths).
struct Plain {
    started: Instant,
    last_at: Instant,
    last_tenth: u64,
    done: u64,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(Self::bytes_style());
            bar.set_prefix(what);
            bar
        });
        let now = Instant::now();
        Progress {
            what,
            total,
            bar,
            plain: Mutex::new(Plain {
                started: now,
                last_at: now,
                last_tenth: 0,
                done: 0,
            }),
            installing: Mutex::new(None),
        }
    }

    fn bytes_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }

    /// The upload is complete: show the install phase until the end.
    fn installing(&self) {
        let mut since = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_some() {
            return;
        }
        *since = Some(Instant::now());
        match &self.bar {
            Some(bar) => {
                let style = ProgressStyle::with_template("{prefix} {spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.set_message("installing on the cluster");
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            None => eprintln!(
                "{}: uploaded {}; {INSTALLING}",
                self.what,
                HumanBytes(self.total)
            ),
        }
    }

    /// The upload (re)starts (a retry on another node): bytes again.
    fn uploading(&self) {
        let mut since = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        if since.take().is_some() {
            if let Some(bar) = &self.bar {
                bar.disable_steady_tick();
                bar.set_style(Self::bytes_style());
                bar.set_message("");
            }
        }
    }

    fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let mut p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        p.done = done;
        let tenth = (done * 10).checked_div(self.total).unwrap_or(10);
        if tenth > p.last_tenth || p.last_at.elapsed() >= Duration::from_secs(1) {
            p.last_tenth = tenth;
            p.last_at = Instant::now();
            eprintln!("{}", self.line(&p));
        }
    }

    fn line(&self, p: &Plain) -> String {
        let secs = p.started.elapsed().as_secs_f64().max(0.001);
        let percent = (p.done * 100).checked_div(self.total).unwrap_or(100);
        format!(
            "{}: {} of {} ({percent}%), {}/s",
            self.what,
            HumanBytes(p.done),
            HumanBytes(self.total),
            HumanBytes((p.done as f64 / secs) as u64)
        )
    }

    fn finish(&self) {
        let installed = *self.installing.lock().unwrap_or_else(|e| e.into_inner());
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => {
                let p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
                match installed {
                    Some(since) => eprintln!(
                        "{}: installed on the cluster in {:.1} s ({:.1} s in all)",
                        self.what,
                        since.elapsed().as_secs_f64(),
                        p.started.elapsed().as_secs_f64()
                    ),
                    None => eprintln!(
                        "{} done in {:.1} s",
                        self.line(&p),
                        p.started.elapsed().as_secs_f64()
                    ),
                }
            }
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
