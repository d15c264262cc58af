#!/usr/bin/env bash
# Check deploy/ where no container engine or systemd runs (scripts/test.sh
# calls this after the tests):
#
# - quorumlite.service: `systemd-analyze verify` (ExecStart pointed at the
#   built binary, the config at deploy/quorumlite.toml; any warning fails),
#   and the config it names passes `quorumlite node --check-config`;
# - docker-compose.yml: parsed (python3 yaml); every node's command line
#   passes `--check-config` with the real binary; peers, advertised
#   addresses, service names, ports, volumes and the secret agree;
# - Dockerfile: the builder stage runs `cargo build --release -p quorumlite
#   --locked`; the runtime stage copies what that leaves; non-root user,
#   data volume, ports, health check. The builder's RUN line itself is run
#   here (output and target directories mapped to this machine's) when a
#   release build already exists, so that it costs an incremental build at
#   most: DEPLOY_CHECK_BUILD=1 always runs it, =0 never. The health check
#   command is run against a live single node.
#
# The binary: $QUORUMLITE_BIN, else the newest of target/{release,debug}
# (under $CARGO_TARGET_DIR if set); it is never built here except by the
# builder's own command above.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
bin=${QUORUMLITE_BIN:-}
if [[ -z $bin ]]; then
    for b in "$target/release/quorumlite" "$target/debug/quorumlite"; do
        if [[ -x $b && ( -z $bin || $b -nt $bin ) ]]; then bin=$b; fi
    done
fi
if [[ -z $bin || ! -x $bin ]]; then
    echo "deploy/check.sh: no quorumlite binary (build it, or set QUORUMLITE_BIN)" >&2
    exit 1
fi
bin=$(realpath "$bin")
scratch=$(mktemp -d)
node_pid=
cleanup() {
    if [[ -n $node_pid ]]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

echo "== deploy: checking with $bin"

echo "-- quorumlite.service: systemd-analyze verify"
unit="$scratch/quorumlite.service"
sed -e "s|/usr/local/bin/quorumlite|$bin|g" \
    -e "s|/etc/quorumlite/quorumlite.toml|$PWD/deploy/quorumlite.toml|g" \
    deploy/quorumlite.service > "$unit"
grep -q "^ExecStart=$bin node --config $PWD/deploy/quorumlite.toml$" "$unit" || {
    echo "deploy/quorumlite.service: ExecStart is not '/usr/local/bin/quorumlite node --config /etc/quorumlite/quorumlite.toml'" >&2
    exit 1
}
if ! out=$(systemd-analyze verify "$unit" 2>&1) || [[ -n $out ]]; then
    echo "systemd-analyze verify deploy/quorumlite.service:" >&2
    echo "$out" >&2
    exit 1
fi
exposure=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null | grep -o 'Overall exposure level[^:]*: [0-9.]*' | grep -o '[0-9.]*$' || true)
if [[ -n $exposure ]]; then
    echo "   systemd-analyze security: exposure $exposure"
    python3 -c "import sys; sys.exit(0 if float('$exposure') <= 3.0 else 1)" || {
        echo "deploy/quorumlite.service: exposure $exposure above 3.0: hardening lost" >&2
        exit 1
    }
fi

echo "-- quorumlite.toml: quorumlite node --check-config"
"$bin" node --config deploy/quorumlite.toml --check-config | sed 's/^/   /'

echo "-- docker-compose.yml and Dockerfile"
python3 deploy/check.py "$bin" "$scratch"

echo "-- Dockerfile: the builder's RUN line"
build=${DEPLOY_CHECK_BUILD:-auto}
if [[ $build == 1 || ( $build == auto && -x $target/release/quorumlite ) ]]; then
    cmd=$(cat "$scratch/builder-run")
    # Its output directory and its target directory, mapped to this machine's.
    cmd=${cmd//\/out\//$scratch\/out\/}
    cmd=${cmd//target\/release\//$target\/release\/}
    echo "   $cmd"
    CARGO_TARGET_DIR=$target bash -euo pipefail -c "$cmd"
    "$scratch/out/quorumlite" --help > /dev/null
    echo "   the builder leaves an executable quorumlite at what the runtime stage copies"
else
    echo "   skipped: no release build in $target (DEPLOY_CHECK_BUILD=1 runs it)"
    cargo metadata --locked --format-version 1 > /dev/null
    echo "   Cargo.lock is up to date: --locked will not refuse the build"
fi

echo "-- Dockerfile: HEALTHCHECK against a live node"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" node --id 1 --listen "127.0.0.1:$port" --peers "1=127.0.0.1:$port" \
    --http "127.0.0.1:$http" --data-dir "$scratch/node" 2> "$scratch/node.log" &
node_pid=$!
health=$(cat "$scratch/healthcheck")
health=${health//127.0.0.1\/8080/127.0.0.1\/$http}
for _ in $(seq 1 100); do
    if bash -c "$health" 2>/dev/null; then break; fi
    sleep 0.2
done
bash -c "$health" || {
    echo "the HEALTHCHECK command did not pass against a live node:" >&2
    tail -20 "$scratch/node.log" >&2
    exit 1
}
echo "   passes once the node serves"
echo "== deploy: OK"
