//! Two jobs before the build:
//! - compile `proto/cluster.proto`, the private node-to-node API, with
//!   protox (pure Rust: no system protoc); its messages borrowed from the
//!   public API are the `client::pb` types;
//! - the commit this binary is built from, for `quorumlite_build_info` and
//!   `--version`-style reports: `QUORUMLITE_COMMIT` from the environment if
//!   set (a build without a git checkout, e.g. a container build, passes it
//!   in), else `git rev-parse`, else nothing (the binary says "unknown").

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    println!("cargo:rerun-if-changed=../client/proto/quorumlite.proto");
    let fds = protox::compile(["proto/cluster.proto"], ["proto", "../client/proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".quorumlite.v1", "::client::pb")
        .compile_fds(fds)?;
    commit();
    Ok(())
}

fn commit() {
    println!("cargo:rerun-if-env-changed=QUORUMLITE_COMMIT");
    let commit = std::env::var("QUORUMLITE_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    if let Some(commit) = commit {
        println!("cargo:rustc-env=QUORUMLITE_COMMIT={}", commit.trim());
    }
    // Build again when HEAD moves: the files git reads it from, where
    // they exist (a missing path would make cargo rerun this every build).
    for path in ["HEAD", "packed-refs"] {
        watch(git(&["rev-parse", "--git-path", path]));
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", head.trim()]));
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn watch(path: Option<String>) {
    if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}
