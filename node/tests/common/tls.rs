//! Certificates for TLS clusters, made by `quorumlite cert` itself.

use super::BIN;
use std::path::Path;
use std::process::Command;

/// Run `quorumlite cert ARGS`.
pub fn cert(args: &[&str]) {
    let out = Command::new(BIN)
        .arg("cert")
        .args(args)
        .output()
        .expect("run cert");
    assert!(
        out.status.success(),
        "quorumlite cert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir` and certificates node1..node3 for 127.0.0.1.
pub fn pki(dir: &Path) {
    let d = dir.to_str().expect("utf-8 path");
    cert(&["ca", "--dir", d]);
    for i in 1..=3 {
        cert(&[
            "issue",
            "--dir",
            d,
            "--name",
            &format!("node{i}"),
            "--host",
            "127.0.0.1",
        ]);
    }
}

/// The TLS flags of node `id`, with the certificates of [`pki`] in `dir`.
pub fn tls_flags(dir: &Path, id: u64) -> Vec<String> {
    let f = |name: &str| dir.join(name).to_string_lossy().into_owned();
    vec![
        "--tls-cert".into(),
        f(&format!("node{id}.pem")),
        "--tls-key".into(),
        f(&format!("node{id}.key")),
        "--tls-ca".into(),
        f("ca.pem"),
    ]
}
