//! `quorumlite dev`: a local three-node cluster as child processes.
//!
//! Each node is this same binary running `quorumlite node` on
//! 127.0.0.1:(base_port + id - 1), with its data under `<data-dir>/node<id>`
//! (kept, so the next run continues the same cluster), and metrics at
//! http://127.0.0.1:(metrics_base_port + id - 1)/metrics, and the HTTP API
//! (Hrana) at http://127.0.0.1:(http_base_port + id - 1). Ctrl-C reaches the
//! children too (same process group); a SIGTERM to `dev` is passed on. The
//! command returns once all three have stopped.
//!
//! Each child's output is passed on line by line, tagged `[node N]`
//! (its log lines also carry `node=N`; panics and other plain lines do
//! not). A child that dies is reported at once (`dev` wakes on SIGCHLD),
//! with how: its exit code, or the signal that killed it.

use crate::cli::DevArgs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub fn run(args: &DevArgs) -> ExitCode {
    // Signals are caught from the start: a Ctrl-C while the nodes boot
    // must still stop them.
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (signal, child_exits) = {
        let _guard = runtime.enter();
        let exits = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        (super::shutdown_signal(), exits)
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find the quorumlite binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addrs: Vec<String> = (0..3u16)
        .map(|i| format!("127.0.0.1:{}", args.base_port.saturating_add(i)))
        .collect();
    let metrics: Vec<Option<String>> = (0..3u16)
        .map(|i| {
            (args.metrics_base_port != 0)
                .then(|| format!("127.0.0.1:{}", args.metrics_base_port.saturating_add(i)))
        })
        .collect();
    let http: Vec<Option<String>> = (0..3u16)
        .map(|i| {
            (args.http_base_port != 0)
                .then(|| format!("127.0.0.1:{}", args.http_base_port.saturating_add(i)))
        })
        .collect();
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    // Three nodes share this machine: each gets a third of it, not a
    // thread per CPU (on 2 cores: writes +8-16 %, reads within noise;
    // node/DESIGN.md).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (cpus / 3).max(1).to_string();
    let mut children: Vec<(usize, Child)> = Vec::new();
    let mut relays: Vec<JoinHandle<()>> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i + 1;
        let dir = args.data_dir.join(format!("node{id}"));
        let mut command = Command::new(&exe);
        command
            .args([
                "node",
                "--id",
                &id.to_string(),
                "--listen",
                addr,
                "--peers",
                &peers,
                "--worker-threads",
                &workers,
            ])
            .arg("--data-dir")
            .arg(&dir);
        if let Some(m) = &metrics[i] {
            command.args(["--metrics-listen", m]);
        }
        if let Some(h) = &http[i] {
            command.args(["--http", h]);
        }
        let spawned = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(mut child) => {
                if let Some(out) = child.stdout.take() {
                    relays.push(relay(id, out, false));
                }
                if let Some(err) = child.stderr.take() {
                    relays.push(relay(id, err, true));
                }
                children.push((id, child))
            }
            Err(e) => {
                eprintln!("error: starting node {id}: {e}");
                stop_all(&mut children);
                return ExitCode::FAILURE;
            }
        }
    }
    let leader = runtime.block_on(wait_for_leader(&addrs, Duration::from_secs(15)));
    if args.json {
        let nodes: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                serde_json::json!({
                    "id": i + 1,
                    "addr": addr,
                    "http": http[i].as_ref().map(|h| format!("http://{h}")),
                    "metrics": metrics[i].as_ref().map(|m| format!("http://{m}/metrics")),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "data_dir": args.data_dir.display().to_string(),
                "nodes": nodes,
                "leader_id": leader,
            })
        );
    } else {
        print_banner(args, &addrs, &http, &metrics, leader);
    }
    wait_then_stop(&runtime, signal, child_exits, children, relays);
    ExitCode::SUCCESS
}

/// What `dev` prints for people once the cluster is up.
fn print_banner(
    args: &DevArgs,
    addrs: &[String],
    http: &[Option<String>],
    metrics: &[Option<String>],
    leader: Option<u64>,
) {
    outln!();
    outln!(
        "Quorumlite dev cluster: 3 nodes, data in {}",
        args.data_dir.display()
    );
    for (i, addr) in addrs.iter().enumerate() {
        let mut line = format!("  node {}  {addr}", i + 1);
        if let Some(h) = &http[i] {
            line.push_str(&format!("  http: http://{h}"));
        }
        if let Some(m) = &metrics[i] {
            line.push_str(&format!("  metrics: http://{m}/metrics"));
        }
        outln!("{line}");
    }
    match leader {
        Some(id) => outln!("  leader: node {id}"),
        None => outln!("  no leader yet: see the nodes' logs above"),
    }
    outln!();
    outln!("Try:");
    outln!("  quorumlite exec  --addr {} \"CREATE TABLE IF NOT EXISTS t(x)\" \"INSERT INTO t VALUES (1)\"", addrs[0]);
    outln!("  quorumlite query --addr {} \"SELECT * FROM t\"", addrs[1]);
    outln!("  quorumlite status --addr {}", addrs[2]);
    outln!("(with cargo: cargo run -p quorumlite -- exec ...)");
    if let Some(h) = &http[0] {
        outln!("  curl -s http://{h}/v2/pipeline -d '{{\"requests\":[{{\"type\":\"execute\",\"stmt\":{{\"sql\":\"SELECT 1\"}}}},{{\"type\":\"close\"}}]}}'");
        outln!("  @libsql/client: createClient({{ url: \"http://{h}\" }})");
    }
    outln!("Ctrl-C stops all three.");
}

/// Wait for a signal or for every child to exit on its own (reporting
/// each that does), then stop the rest. SIGCHLD (`child_exits`) wakes
/// this at once; the poll is a fallback if it could not be caught.
fn wait_then_stop(
    runtime: &tokio::runtime::Runtime,
    signal: impl std::future::Future<Output = ()>,
    mut child_exits: Option<tokio::signal::unix::Signal>,
    mut children: Vec<(usize, Child)>,
    relays: Vec<JoinHandle<()>>,
) {
    runtime.block_on(async {
        tokio::pin!(signal);
        loop {
            let exited = async {
                match child_exits.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut signal => break,
                _ = exited => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            children.retain_mut(|(id, child)| match child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!(
                        "dev: node {id} (pid {}) {}",
                        child.id(),
                        how_it_ended(status)
                    );
                    false
                }
                _ => true,
            });
            if children.is_empty() {
                break;
            }
        }
    });
    stop_all(&mut children);
    // The children are gone, so their pipes are closed: the relays end
    // once they passed on the last lines.
    for r in relays {
        let _ = r.join();
    }
}

/// How a child ended, as `dev` reports it: `exited with code 1`, `was
/// killed by signal 9 (SIGKILL)`.
fn how_it_ended(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => {
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            match signal_name(sig) {
                Some(name) => format!("was killed by signal {sig} ({name}){core}"),
                None => format!("was killed by signal {sig}{core}"),
            }
        }
        (None, None) => format!("ended ({status})"),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// Pass a child's output on, each line tagged `[node N]`: its stderr to
/// this process's stderr, its stdout to stdout.
fn relay(id: usize, from: impl Read + Send + 'static, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let tag = format!("[node {id}] ");
        for line in BufReader::new(from).split(b'\n') {
            let Ok(line) = line else { break };
            let mut text = tag.clone().into_bytes();
            text.extend_from_slice(&line);
            text.push(b'\n');
            // A reader that went away (`dev | head`): drop the line.
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(&text)
            } else {
                std::io::stdout().lock().write_all(&text)
            };
        }
    })
}

/// SIGTERM every child, wait for each (SIGKILL after 10 s).
fn stop_all(children: &mut Vec<(usize, Child)>) {
    for (_, child) in children.iter() {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("dev: node {id} did not stop in 10 s: killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    children.clear();
}

/// Poll the nodes until one reports a leader; its id.
async fn wait_for_leader(addrs: &[String], limit: Duration) -> Option<u64> {
    let started = Instant::now();
    async {
        let config = client::ClientConfig {
            request_timeout: Duration::from_millis(500),
            ..client::ClientConfig::default()
        };
        let client = client::Client::with_config(addrs, config).ok()?;
        while started.elapsed() < limit {
            if let Ok(s) = client.status(false).await {
                if s.leader_id != 0 {
                    return Some(s.leader_id);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_end_is_told_by_its_code_or_its_signal() {
        assert_eq!(
            how_it_ended(ExitStatus::from_raw(1 << 8)),
            "exited with code 1"
        );
        assert_eq!(
            how_it_ended(ExitStatus::from_raw(libc::SIGKILL)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            how_it_ended(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            "was killed by signal 11 (SIGSEGV), core dumped"
        );
    }
}
