#!/usr/bin/env bash
# Restore a large backup with default settings and measure what it costs.
#
#  1. A fresh three-node release cluster (A) is filled to SIZE_MB (500)
#     with writes of 8 MB, then backed up with `quorumlite backup`.
#  2. A second fresh cluster (B), default settings, restores that file with
#     `quorumlite restore`. Meanwhile every node's data directory size is
#     sampled every 0.2 s.
#  3. Prints the restore's time, each node's peak disk use during it, peak
#     RSS (VmHWM, the process's high-water mark), and final database size;
#     checks the three replicas are byte-identical (status --digest).
#  4. Deletes 90 % of the rows and times a VACUUM (`quorumlite exec`),
#     with each node's database size after it and the digests again.
#  5. Writes a million rows of 200 bytes and reads them on a follower:
#     whole (refused by the default 64 MiB result cap, with how to page)
#     and in pages of 200,000 through the CLI; the node's RSS before and
#     after, the CLI's peak RSS.
#
# Knobs: SIZE_MB (500), BASE_PORT (7501; uses 3 ports from there and 3
# after), KEEP=1 (keep the data directory, printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${SIZE_MB:-500}"
BASE_PORT="${BASE_PORT:-7501}"

cargo build --release --locked -p quorumlite >&2
Q="${CARGO_TARGET_DIR:-$PWD/target}/release/quorumlite"
DATA="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "data kept in $DATA"; else rm -rf "$DATA"; fi
}
trap cleanup EXIT

# start_cluster NAME PORT: three nodes with default settings; sets ADDRS
# and NODE_PIDS.
start_cluster() {
  local name=$1 port=$2
  local peers="1=127.0.0.1:$port,2=127.0.0.1:$((port + 1)),3=127.0.0.1:$((port + 2))"
  NODE_PIDS=()
  for i in 1 2 3; do
    "$Q" node --id "$i" --data-dir "$DATA/$name$i" --listen "127.0.0.1:$((port + i - 1))" \
      --peers "$peers" --log-level info 2>"$DATA/$name$i.log" &
    PIDS+=($!)
    NODE_PIDS+=($!)
  done
  ADDRS="127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))"
  for _ in $(seq 1 100); do
    if "$Q" status --addr "127.0.0.1:$port" --json 2>/dev/null | grep -q '"leader_id":[1-9]'; then return; fi
    sleep 0.1
  done
  echo "cluster $name has no leader" >&2
  exit 1
}

# Whether cluster B's three replicas hold the same bytes (status --digest).
check_replicas() {
  for i in 1 2 3; do
    "$Q" status --addr "127.0.0.1:$((BASE_PORT + 2 + i))" --digest --json |
      sed -n 's/.*"digest":"\([0-9a-f]*\)".*/\1/p'
  done | sort -u | awk 'END { if (NR == 1) print "replicas: byte-identical (one digest)"; else print "replicas DIFFER: " NR " digests" }'
}

# Seconds from $START to $END, with $1 decimals (1 if not given).
elapsed() {
  awk -v a="$START" -v b="$END" -v d="${1:-1}" 'BEGIN { printf "%.*f", d, b - a }'
}

stop_cluster() {
  for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

echo "== cluster A: $SIZE_MB MB of writes, then a backup"
start_cluster a "$BASE_PORT"
"$Q" exec --addr "$ADDRS" "CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)" >/dev/null
for _ in $(seq 1 $(( SIZE_MB / 8 ))); do
  "$Q" exec --addr "$ADDRS" --timeout-ms 60000 \
    "INSERT INTO big(v) SELECT randomblob(8000) FROM (WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 1000) SELECT x FROM s)" >/dev/null
done
"$Q" backup --addr "$ADDRS" "$DATA/backup.db" 2>/dev/null
BYTES=$(stat -c %s "$DATA/backup.db")
echo "backup: $BYTES bytes"
stop_cluster
rm -rf "$DATA"/a?

echo "== cluster B: restore it, default settings"
start_cluster b "$((BASE_PORT + 3))"
: >"$DATA/peaks"
sample() {
  while :; do
    for i in 1 2 3; do echo "$i $(du -sb "$DATA/b$i" 2>/dev/null | cut -f1)"; done >>"$DATA/peaks"
    sleep 0.2
  done
}
sample &
SAMPLER=$!
START=$(date +%s.%N)
"$Q" restore --addr "$ADDRS" "$DATA/backup.db"
END=$(date +%s.%N)
sleep 1
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
echo "restore of $BYTES bytes: $(elapsed) s (upload, check, copy to the members, install on every node)"
for i in 1 2 3; do
  peak=$(awk -v n="$i" '$1 == n && $2 > m { m = $2 } END { print m + 0 }' "$DATA/peaks")
  pid=${NODE_PIDS[$((i - 1))]}
  hwm=$(awk '/VmHWM/ { print $2 * 1024 }' "/proc/$pid/status")
  db=$(stat -c %s "$DATA/b$i/data.db")
  now=$(du -sb "$DATA/b$i" | cut -f1)
  echo "node $i: peak disk $peak bytes ($(( peak / BYTES )).$(( peak * 10 / BYTES % 10 ))x the file), peak RSS $hwm bytes, data.db $db bytes, data dir now $now bytes"
done
check_replicas

echo "== VACUUM after deleting 90 % of the rows"
"$Q" exec --addr "$ADDRS" --timeout-ms 120000 "DELETE FROM big WHERE id % 10 != 0" >/dev/null
sleep 1
BEFORE=$(stat -c %s "$DATA/b1/data.db")
START=$(date +%s.%N)
"$Q" exec --addr "$ADDRS" "VACUUM" >/dev/null
END=$(date +%s.%N)
echo "VACUUM of a $BEFORE-byte database: $(elapsed) s"
sleep 1
for i in 1 2 3; do
  echo "node $i: data.db $(stat -c %s "$DATA/b$i/data.db") bytes, data dir $(du -sb "$DATA/b$i" | cut -f1) bytes"
done
check_replicas

echo "== a read of a million rows of 200 bytes"
"$Q" exec --addr "$ADDRS" "CREATE TABLE wide(id INTEGER PRIMARY KEY, v TEXT)" >/dev/null
# In writes of 100,000 rows (about 25 MB of pages, under max_batch_bytes).
for k in $(seq 0 9); do
  "$Q" exec --addr "$ADDRS" --timeout-ms 60000 \
    "INSERT INTO wide SELECT x, printf('%0200d', x) FROM (WITH RECURSIVE s(x) AS (SELECT $(( k * 100000 + 1 )) UNION ALL SELECT x + 1 FROM s WHERE x < $(( (k + 1) * 100000 ))) SELECT x FROM s)" >/dev/null
done
LEADER=$("$Q" status --addr "$ADDRS" --json | sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p')
FOLLOWER=$(( LEADER % 3 + 1 ))
FADDR="127.0.0.1:$((BASE_PORT + 2 + FOLLOWER))"
FPID=${NODE_PIDS[$((FOLLOWER - 1))]}
# Anonymous memory and mapped file pages apart: SQLite maps the database
# (mmap_size), and its pages count in RSS without being the node's own.
rss() { awk '/RssAnon/ { a = $2 * 1024 } /RssFile/ { f = $2 * 1024 } END { print a " anonymous, " f " mapped file" }' "/proc/$1/status"; }
"$Q" query --addr "$FADDR" --consistency stale "SELECT count(*) FROM wide" >/dev/null 2>&1
sleep 1
echo "follower $FOLLOWER: RSS $(rss "$FPID") bytes before"
START=$(date +%s.%N)
"$Q" query --addr "$FADDR" --consistency stale "SELECT * FROM wide" >"$DATA/all.json" 2>&1 || true
END=$(date +%s.%N)
echo "SELECT * (about 210 MB, default cap): $(elapsed 2) s: $(head -c 300 "$DATA/all.json")"
# The same rows in pages of 200,000 (about 42 MB each) through the CLI;
# its peak RSS with GNU time where there is one.
TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "%M" -o "$DATA/cli.time")
START=$(date +%s.%N)
last=0 pages=0 rows=0 cli_peak=0
while :; do
  "${TIME[@]}" "$Q" query --addr "$FADDR" --consistency stale --json \
    "SELECT * FROM wide WHERE id > $last ORDER BY id LIMIT 200000" >"$DATA/page.json"
  n=$(python3 -c 'import json, sys; print(len(json.load(sys.stdin)["rows"]))' <"$DATA/page.json")
  [ "$n" -gt 0 ] || break
  if [ -f "$DATA/cli.time" ]; then
    kb=$(tail -n 1 "$DATA/cli.time")
    [ "$kb" -gt "$cli_peak" ] && cli_peak=$kb
  fi
  rows=$(( rows + n )); pages=$(( pages + 1 )); last=$(( last + 200000 ))
  [ "$n" -eq 200000 ] || break
done
END=$(date +%s.%N)
echo "paged: $rows rows in $pages pages, $(elapsed) s, CLI peak RSS $(( cli_peak * 1024 )) bytes (0: no GNU time)"
sleep 2
echo "follower $FOLLOWER: RSS $(rss "$FPID") bytes after, peak $(awk '/VmHWM/ { print $2 * 1024 }' "/proc/$FPID/status") bytes over the whole run"
