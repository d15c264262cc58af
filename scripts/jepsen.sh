#!/usr/bin/env bash
# Long Jepsen runs with release binaries: every workload under each single
# nemesis (none, partition, kill, pause, heavy-read, stray-node) for
# SECONDS_PER_RUN, then every workload under `all` (every fault mixed) for
# SECONDS_ALL. Not part of the default suite (the defaults take about 45
# minutes); the short versions run in `scripts/test.sh`.
#
#   scripts/jepsen.sh [SECONDS_PER_RUN [SEED [SECONDS_ALL]]]   (default 60, 1, 300)
#   scripts/jepsen.sh --workload bank --nemesis pause --time 300   (one run)
#
# Runs go to jepsen/runs/<workload>-<nemesis>-<seed>-<time>/ with
# history.jsonl, results.json (verdicts and the availability table),
# latency.png and the nodes' logs. A run fails on a consistency violation
# and on availability (a fault window without a successful write or read
# for longer than --availability-bound-ms, a node that exited on its own);
# the matrix ends with one line per run and exits 1 if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
jepsen/setup.sh
cargo build --release --locked -p quorumlite -p jepsen
jepsen="${CARGO_TARGET_DIR:-target}/release/jepsen"
if [ "${1:-}" = "" ] || [[ "${1}" =~ ^[0-9]+$ ]]; then
    secs="${1:-60}"
    seed="${2:-1}"
    secs_all="${3:-300}"
    status=0
    summary=()
    run() { # workload nemesis seconds
        echo "== $1 / $2 / ${3}s / seed $seed"
        local code=0
        "$jepsen" --workload "$1" --nemesis "$2" --time "$3" --seed "$seed" || code=$?
        case $code in
            0) summary+=("valid    $1 / $2 / ${3}s") ;;
            1) summary+=("INVALID  $1 / $2 / ${3}s (a checker or availability)"); status=1 ;;
            2) summary+=("UNKNOWN  $1 / $2 / ${3}s"); status=1 ;;
            *) summary+=("HARNESS  $1 / $2 / ${3}s (exit $code)"); status=1 ;;
        esac
    }
    for workload in register bank set session; do
        for nemesis in none partition kill pause heavy-read stray-node; do
            run "$workload" "$nemesis" "$secs"
        done
    done
    for workload in register bank set session; do
        run "$workload" all "$secs_all"
    done
    echo "== summary (seed $seed)"
    printf '%s\n' "${summary[@]}"
    exit $status
fi
exec "$jepsen" "$@"
