#!/usr/bin/env bash
# What the Jepsen harness needs for real network faults: iproute2 (`ip`:
# namespaces, veth, bridges) and nftables (`nft`: dropping packets).
# Installs them with apt-get when running as root and they are missing;
# otherwise says what the harness will do instead (loopback, partitions
# emulated by pausing; see docs/jepsen.md). Never fails the caller.
set -uo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)

if [ ${#missing[@]} -eq 0 ]; then
    echo "jepsen/setup.sh: ip and nft present"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "jepsen/setup.sh: missing ${missing[*]} and cannot install (needs root and apt-get);" \
         "Jepsen runs will use loopback with partitions emulated by pausing" >&2
    exit 0
fi
echo "jepsen/setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/jepsen-setup.log 2>&1; then
    apt-get update >>/tmp/jepsen-setup.log 2>&1 &&
        apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/jepsen-setup.log 2>&1 ||
        echo "jepsen/setup.sh: install failed (see /tmp/jepsen-setup.log); Jepsen runs will use loopback" >&2
fi
exit 0
