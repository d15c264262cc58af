//! What the tests that run JavaScript clients share: a cluster whose
//! nodes serve HTTP, and the npm packages of `tests/http`.

use super::{free_port, Cluster};
use std::path::{Path, PathBuf};

/// A cluster whose nodes also serve HTTP; the HTTP address of node N is
/// `http[N-1]`.
pub fn cluster(extra: &[&str]) -> (Cluster, Vec<String>) {
    let http: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let per_node = {
        let http = http.clone();
        move |id: u64| vec!["--http".to_string(), http[(id - 1) as usize].clone()]
    };
    (Cluster::start_with(3, extra, per_node), http)
}

/// Where the JavaScript tests and their `node_modules` live.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http")
}

/// `npm ci` unless `@libsql/client` is already installed (scripts/test.sh
/// installs it up front; this covers a bare `cargo test`).
pub fn npm_install() {
    let dir = js_dir();
    if dir
        .join("node_modules/@libsql/client/package.json")
        .exists()
    {
        return;
    }
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .expect("npm: Node.js and npm are needed for the JavaScript client tests (scripts/test.sh checks for them)");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
