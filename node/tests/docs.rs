//! The docs run: every ```sh block of README.md and docs/*.md is executed,
//! in order, against a fresh `quorumlite dev` cluster, so a command the
//! docs show is a command that works.
//!
//! The blocks run with bash (`set -euo pipefail`), one script per file so
//! a variable set in one block (`H=...`) serves the next, in a scratch
//! directory with the binary under test first on `PATH`. The cluster's
//! ports replace the defaults the docs show (`127.0.0.1:4001`, `:8081`,
//! `:9101`). A block fails the test when it exits non-zero or prints a
//! Hrana error result (`"type":"error"`), which curl does not turn into an
//! exit code.
//!
//! A block that cannot run here says so in its info string, with the
//! reason the reader sees too: ```sh no-run (long: the whole suite)```.
//! Those are blocks that start a cluster or a long run (`dev`,
//! `scripts/test.sh`, `scripts/jepsen.sh`, benchmarks) or need other
//! machines (`10.0.0.1`, docker); the test lists them and checks each
//! names its reason.

mod common;
use common::{free_port, BIN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One ```sh block: where it is, and its text.
struct Block {
    file: String,
    line: usize,
    text: String,
    run: bool,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// README.md, then docs/*.md by name.
fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    std::iter::once(root.join("README.md"))
        .chain(docs)
        .collect()
}

fn sh_blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).expect("read doc");
    let name = path
        .strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut blocks = Vec::new();
    // The block being read, and its fence's indentation (a block inside a
    // list item is indented; so are its lines).
    let mut open: Option<(Block, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) if info == "sh" || info.starts_with("sh ") => {
                let info = info.trim_start_matches("sh").trim();
                if !info.is_empty() {
                    assert!(
                        info.starts_with("no-run (") && info.ends_with(')'),
                        "{name}:{}: a ```sh block's info string is `no-run (why)` or nothing, not {info:?}",
                        i + 1
                    );
                }
                let block = Block {
                    file: name.clone(),
                    line: i + 1,
                    text: String::new(),
                    run: info.is_empty(),
                };
                open = Some((block, indent));
            }
            (Some(_), Some("")) => blocks.extend(open.take().map(|(b, _)| b)),
            (Some((block, indent)), _) => {
                let cut = line.len() - line.trim_start().len();
                block.text.push_str(&line[cut.min(*indent)..]);
                block.text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The first of nine free consecutive loopback ports: three nodes' gRPC,
/// HTTP and metrics ports.
fn nine_ports() -> u16 {
    loop {
        let p = free_port();
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if p < u16::MAX - 9 && (1..9).all(|i| free(p + i)) {
            // Step `free_port` past them.
            for _ in 1..9 {
                free_port();
            }
            return p;
        }
    }
}

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        // SIGINT: dev stops its three nodes on Ctrl-C.
        common::signal(self.0.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

#[test]
fn every_shell_block_of_the_docs_runs_against_a_fresh_dev_cluster() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let base = nine_ports();
    let (grpc, http, metrics) = (base, base + 3, base + 6);
    let log = std::fs::File::create(scratch.path().join("dev.log")).expect("log");
    let dev = Dev(Command::new(BIN)
        .args(["dev", "--data-dir"])
        .arg(scratch.path().join("data"))
        .args(["--base-port", &grpc.to_string()])
        .args(["--http-base-port", &http.to_string()])
        .args(["--metrics-base-port", &metrics.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start dev"));
    // Ready when a write goes through.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(BIN)
            .args(["exec", "--addr", &format!("127.0.0.1:{grpc}"), "SELECT 1"])
            .output()
            .expect("exec");
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dev cluster did not start: {}",
            std::fs::read_to_string(scratch.path().join("dev.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let bin_dir = scratch.path().join("bin");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("quorumlite")).expect("symlink");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = scratch.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let ports = |text: &str| {
        let mut text = text.to_owned();
        for i in 0..3u16 {
            for (default, base) in [(4001, grpc), (8081, http), (9101, metrics)] {
                text = text.replace(
                    &format!("127.0.0.1:{}", default + i),
                    &format!("127.0.0.1:{}", base + i),
                );
            }
        }
        text
    };

    let mut ran = 0;
    let mut skipped = Vec::new();
    for file in doc_files() {
        let blocks = sh_blocks(&file);
        let mut script = String::from("set -euo pipefail\n");
        for block in &blocks {
            if !block.run {
                skipped.push(format!("{}:{}", block.file, block.line));
                continue;
            }
            ran += 1;
            script.push_str(&format!(
                "echo '@@ {}:{}' >&2\n{}\n",
                block.file,
                block.line,
                ports(&block.text)
            ));
        }
        if script.lines().count() == 1 {
            continue;
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&work)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let at = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("@@ "))
            .unwrap_or("?")
            .to_owned();
        assert!(
            out.status.success(),
            "the block at {at} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        assert!(
            !stdout.contains("\"type\":\"error\""),
            "a block of {} printed a Hrana error:\n{stdout}",
            file.display()
        );
    }
    drop(dev);
    eprintln!(
        "ran {ran} blocks; not run here (no-run): {}",
        skipped.join(", ")
    );
    assert!(
        ran >= 6,
        "only {ran} blocks ran: did the docs lose their examples?"
    );
}
