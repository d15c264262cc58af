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

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== deploy/: systemd unit, compose file, Dockerfile (reuses the built binary)"
deploy/check.sh
