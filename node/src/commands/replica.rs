//! `quorumlite replica FILE`: keep a SQLite file in sync with the cluster
//! ([`client::Replica`]) until Ctrl-C. Prints a line when following
//! starts or fails and, every `--report-ms`, the file's version; `--json`
//! prints the same as JSON lines.

use super::{output, runtime, shutdown_signal, target};
use crate::cli::ReplicaArgs;
use client::Replica;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(args: ReplicaArgs) -> ExitCode {
    let json = args.connect.json;
    let (addrs, config) = match target(&args.connect) {
        Ok(t) => t,
        Err(message) => {
            output::error(json, "BAD_REQUEST", &message);
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        // Follows for hours: a node down for a while is waited for, not
        // an error of the command.
        let config = client::ClientConfig {
            fail_fast_unreachable: false,
            ..config
        };
        let replica = Replica::open(&args.file, &addrs, config).await?;
        follow(&replica, &args, json).await;
        Ok::<_, client::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(json, e.code.as_str(), &e.message);
            ExitCode::FAILURE
        }
    }
}

/// Report until Ctrl-C.
async fn follow(replica: &Replica, args: &ReplicaArgs, json: bool) {
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let every = Duration::from_millis(args.report_ms.max(200));
    let mut tick = tokio::time::interval(every.min(Duration::from_millis(500)));
    let mut last_report = std::time::Instant::now();
    let mut last: Option<(Option<String>, Option<String>)> = None;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let status = replica.status();
        let state = (status.following.clone(), status.last_error.clone());
        let changed = last.as_ref() != Some(&state);
        let due = args.report_ms > 0 && last_report.elapsed() >= every;
        if !changed && !due {
            continue;
        }
        last = Some(state);
        last_report = std::time::Instant::now();
        let version = replica.version();
        if json {
            outln!(
                "{}",
                json!({
                    "file": replica.path().display().to_string(),
                    "version": version,
                    "token": replica.token().to_string(),
                    "following": status.following,
                    "error": status.last_error,
                    "batches": status.batches,
                    "snapshots": status.snapshots,
                })
            );
        } else {
            let whom = match (&status.following, &status.last_error) {
                (_, Some(e)) => format!("not following ({e}); retrying"),
                (Some(n), None) => format!("following {n}"),
                (None, None) => "connecting".into(),
            };
            outln!(
                "{}: version {version}, {} batches and {} snapshots applied; {whom}",
                replica.path().display(),
                status.batches,
                status.snapshots
            );
        }
    }
}
