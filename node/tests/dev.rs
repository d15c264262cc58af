//! `quorumlite dev` watches its nodes: a child that dies is reported at
//! once, with how it ended, and every line a child writes is tagged with
//! its node id.

mod common;
use common::{signal, BIN};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Three consecutive loopback ports nobody listens on, below the
/// ephemeral range, avoiding `not..not+3`.
fn three_free_ports(not: u16) -> u16 {
    loop {
        let p = common::free_port();
        if (p + 3 <= not || p >= not + 3)
            && (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        {
            return p;
        }
    }
}

/// The pid of the child of `parent` running `quorumlite node --id <id>`.
fn child_node_pid(parent: u32, id: u64) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let id_arg = id.to_string();
        if args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id_arg.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

#[test]
fn dev_reports_a_child_that_dies_at_once_with_its_signal_and_tags_its_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = three_free_ports(0);
    let mut dev = Command::new(BIN)
        .args(["dev", "--base-port", &base.to_string()])
        .args(["--metrics-base-port", "0", "--http-base-port", "0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("QUORUMLITE_LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dev");
    let (tx, lines) = mpsc::channel::<String>();
    let stderr = dev.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdout = dev.stdout.take().expect("stdout");
    let (out_tx, out_lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    // dev prints its banner once a leader is known.
    let started = Instant::now();
    loop {
        match out_lines.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.contains("leader: node") => break,
            _ => assert!(
                started.elapsed() < Duration::from_secs(30),
                "dev found no leader"
            ),
        }
    }
    let mut seen: Vec<String> = lines.try_iter().collect();
    let victim = child_node_pid(dev.id(), 2).expect("node 2's pid");
    signal(victim, libc::SIGKILL);
    let killed = Instant::now();
    let report = format!("dev: node 2 (pid {victim}) was killed by signal 9 (SIGKILL)");
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l == report => break,
            Ok(l) => seen.push(l),
            Err(_) => {}
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "no {report:?} within 2 s; stderr:\n{}",
            seen.join("\n")
        );
    }
    // Every line a child wrote is tagged with its node.
    let tagged: Vec<&String> = seen.iter().filter(|l| l.starts_with("[node ")).collect();
    assert!(!tagged.is_empty(), "{seen:?}");
    for id in [1, 3] {
        let tag = format!("[node {id}] ");
        assert!(
            seen.iter()
                .any(|l| l.starts_with(&tag) && l.contains(&format!(" node={id} "))),
            "no line of node {id}: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .all(|l| l.starts_with("[node ") || l.starts_with("dev: ")),
        "an untagged line: {seen:?}"
    );

    signal(dev.id(), libc::SIGINT);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = dev.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = dev.kill();
            panic!("dev did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for port in [base, base + 2] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a node still listens on {port}"
        );
    }
}
