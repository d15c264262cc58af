#!/usr/bin/env bash
# Long Jepsen runs: every workload under every nemesis, with release
# binaries. Not part of the default suite (it takes SECONDS x 4 x 5 plus
# start-up); the short versions run in `scripts/test.sh`.
#
#   scripts/jepsen.sh [SECONDS_PER_RUN] [SEED]       (default 60, 1)
#   scripts/jepsen.sh --workload bank --nemesis pause --time 300   (one run)
#
# Runs go to jepsen/runs/<workload>-<nemesis>-<seed>-<time>/ with
# history.jsonl, results.json, latency.png and the nodes' logs.
set -euo pipefail
cd "$(dirname "$0")/.."
jepsen/setup.sh
cargo build --release --locked -p quorumlite -p jepsen
if [ "${1:-}" = "" ] || [[ "${1}" =~ ^[0-9]+$ ]]; then
    secs="${1:-60}"
    seed="${2:-1}"
    status=0
    for workload in register bank set session; do
        for nemesis in none partition kill pause all; do
            echo "== $workload / $nemesis / ${secs}s / seed $seed"
            target/release/jepsen --workload "$workload" --nemesis "$nemesis" \
                --time "$secs" --seed "$seed" || status=1
        done
    done
    exit $status
fi
exec target/release/jepsen "$@"
