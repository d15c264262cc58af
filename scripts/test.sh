#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test of the workspace, then
# the checks of deploy/.
# This is the command README.md prints and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test dependencies (jepsen: ip, nft; HTTP API: Node.js and @libsql/client)"
jepsen/setup.sh
node/tests/http/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
# The Rust libsql crate's test program: a project of its own (libsql and
# rusqlite cannot link into one binary); tests/replica_rs.rs builds it.
cargo fmt --manifest-path node/tests/replica-rs/Cargo.toml --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== deploy/: systemd unit, compose file, Dockerfile (reuses the built binary)"
deploy/check.sh
