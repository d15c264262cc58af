#!/usr/bin/env bash
# Measure the peers (dqlite, etcd: ../shared/bench/peers; hiqlite:
# ../shared/bench/hiqlite) and Quorumlite on this machine in one command,
# one after the other, so the ratios come from the same conditions.
# Knobs: REPS (peers and hiqlite, 1), QREPS (quorumlite, 3), DURATION (5 s).
# Takes about 15 minutes (hiqlite's first build is most of it).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="$(cd .. && pwd)/shared/bench"
REPS="${REPS:-1}"
OUT="${OUT:-/tmp/quorumlite-compare/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
echo "== results in $OUT"
echo "== peers (dqlite, etcd)"
REPS="$REPS" TMPFS=0 bash "$SHARED/peers/run.sh" >"$OUT/peers.md" 2>"$OUT/peers.log" || echo "peers failed: see $OUT/peers.log"
echo "== hiqlite"
REPS="$REPS" bash "$SHARED/hiqlite/run.sh" >"$OUT/hiqlite.md" 2>"$OUT/hiqlite.log" || echo "hiqlite failed: see $OUT/hiqlite.log"
echo "== quorumlite"
REPS="${QREPS:-3}" DURATION="${DURATION:-5}" scripts/bench.sh >"$OUT/quorumlite.txt" 2>"$OUT/quorumlite.log"
cat "$OUT/peers.md" "$OUT/hiqlite.md" "$OUT/quorumlite.txt"
