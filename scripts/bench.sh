#!/usr/bin/env bash
# Start a fresh three-node release cluster on loopback, run every bench
# workload against it, stop it. Knobs: CLIENTS (32), DURATION (10 s),
# REPS (1), BASE_PORT (7401), NODE_ARGS (extra flags for each node, e.g.
# "--worker-threads 1": what `quorumlite dev` gives each node on 2 cores).
# Prints quorumlite bench's own lines.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-32}"
DURATION="${DURATION:-10}"
REPS="${REPS:-1}"
BASE_PORT="${BASE_PORT:-7401}"

cargo build --release --locked -p quorumlite >&2
Q="${CARGO_TARGET_DIR:-$PWD/target}/release/quorumlite"
DATA="$(mktemp -d)"
PEERS="1=127.0.0.1:$BASE_PORT,2=127.0.0.1:$((BASE_PORT + 1)),3=127.0.0.1:$((BASE_PORT + 2))"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT
for i in 1 2 3; do
  "$Q" node --id "$i" --data-dir "$DATA/n$i" --listen "127.0.0.1:$((BASE_PORT + i - 1))" \
    --peers "$PEERS" --log-level warn ${NODE_ARGS:-} 2>"$DATA/n$i.log" &
  PIDS+=($!)
done
for _ in $(seq 1 100); do
  if "$Q" status --addr "127.0.0.1:$BASE_PORT" --json 2>/dev/null | grep -q '"leader_id":[1-9]'; then break; fi
  sleep 0.1
done
STATUS=$("$Q" status --addr "127.0.0.1:$BASE_PORT" --json)
LEADER=$(echo "$STATUS" | sed -n 's/.*"leader_addr":"\([^"]*\)".*/\1/p')
LEADER_ID=$(echo "$STATUS" | sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p')
FOLLOWER_ID=$(( LEADER_ID % 3 + 1 ))
FOLLOWER="127.0.0.1:$((BASE_PORT + FOLLOWER_ID - 1))"
echo "leader $LEADER, follower used for reads $FOLLOWER"
for rep in $(seq 1 "$REPS"); do
  echo "== rep $rep"
  "$Q" bench --addr "$LEADER" --clients 1 --duration "$DURATION" --workload write
  "$Q" bench --addr "$LEADER" --clients "$CLIENTS" --duration "$DURATION" --workload write
  "$Q" bench --addr "$FOLLOWER" --clients "$CLIENTS" --duration "$DURATION" --workload write
  for w in read-session read-stale read-linearizable; do
    "$Q" bench --addr "$FOLLOWER" --clients "$CLIENTS" --duration "$DURATION" --workload "$w"
  done
done
