#!/usr/bin/env bash
# Start a fresh three-node release cluster on loopback, run every bench
# workload against it, stop it. Knobs: CLIENTS (32), DURATION (10 s),
# REPS (1), BASE_PORT (7401), NODE_ARGS (extra flags for each node, e.g.
# "--worker-threads 1": what `quorumlite dev` gives each node on 2 cores),
# NODE_BIN (the nodes' binary, for an A/B against another build; the bench
# client is always this build's), WORKLOADS (a subset, space-separated,
# of: write1 write32 write32-follower write32-alone read-session
# read-session-alone read-stale read-linearizable write32-heavy
# read-replica replica-lag; the last two, the embedded replica's, run only
# when named).
# Prints quorumlite bench's own lines.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-32}"
DURATION="${DURATION:-10}"
REPS="${REPS:-1}"
BASE_PORT="${BASE_PORT:-7401}"

cargo build --release --locked -p quorumlite >&2
Q="${CARGO_TARGET_DIR:-$PWD/target}/release/quorumlite"
NODE_BIN="${NODE_BIN:-$Q}"
WORKLOADS="${WORKLOADS:-write1 write32 write32-follower write32-alone read-session read-session-alone read-stale read-linearizable write32-heavy}"
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
  "$NODE_BIN" node --id "$i" --data-dir "$DATA/n$i" --listen "127.0.0.1:$((BASE_PORT + i - 1))" \
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
ALL="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
B=("$Q" bench --clients "$CLIENTS" --duration "$DURATION")
for rep in $(seq 1 "$REPS"); do
  echo "== rep $rep"
  for w in $WORKLOADS; do
    echo "-- $w"
    case "$w" in
      write1) "$Q" bench --addr "$LEADER" --clients 1 --duration "$DURATION" --workload write ;;
      write32) "${B[@]}" --addr "$LEADER" --workload write ;;
      write32-follower) "${B[@]}" --addr "$FOLLOWER" --workload write ;;
      # What the peers' benchmarks do: a connection per client, no batching.
      write32-alone) "${B[@]}" --addr "$LEADER" --workload write --connections "$CLIENTS" --max-batch 1 ;;
      read-session|read-stale|read-linearizable) "${B[@]}" --addr "$FOLLOWER" --workload "$w" ;;
      read-session-alone) "${B[@]}" --addr "$FOLLOWER" --workload read-session --connections "$CLIENTS" --max-batch 1 ;;
      # Writes while two reads of seconds of CPU each run on every node
      # (the client finds the leader from the first reply).
      write32-heavy) "${B[@]}" --addr "$ALL" --workload write --heavy-reads 6 ;;
      # An embedded replica's file against the follower over the network;
      # the lag of a streaming replica of the follower under 32 writers.
      read-replica|replica-lag) "${B[@]}" --addr "$FOLLOWER" --workload "$w" ;;
      *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
  done
done
