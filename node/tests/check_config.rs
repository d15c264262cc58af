//! `quorumlite node --check-config`: the whole configuration (file,
//! environment, flags) is checked without starting anything, as
//! `deploy/check.sh` uses it on the compose file and the systemd config.

mod common;
use common::BIN;
use std::process::Command;

#[test]
fn check_config_accepts_a_valid_configuration_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["node", "--id", "2", "--listen", "0.0.0.0:4001"])
        .args(["--peers", "1=node1:4001,2=node2:4001,3=node3:4001"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--check-config")
        .env_remove("QUORUMLITE_CONFIG")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("configuration OK: node 2 listen 0.0.0.0:4001 advertise node2:4001"),
        "{stdout}"
    );
    assert!(!data.exists(), "--check-config created the data directory");
}

#[test]
fn check_config_refuses_a_bad_configuration_with_exit_code_2_naming_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("q.toml");
    std::fs::write(
        &file,
        "id = 4\ndata_dir = \"/nonexistent\"\nlisten = \"0.0.0.0:4001\"\npeers = \"1=a:4001,2=b:4001\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["node", "--check-config", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--peers (peers) does not list this node's id 4"),
        "{stderr}"
    );
}
