#!/usr/bin/env bash
# What the HTTP API tests need: Node.js (18+) with npm, and @libsql/client
# at the version pinned in package-lock.json. Installs Node.js with apt-get
# when it is missing and this runs as root; then `npm ci` here unless the
# locked packages are already installed. Fails loudly: the tests cannot
# run without them.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "node/tests/http/setup.sh: installing nodejs and npm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends nodejs npm >/tmp/http-setup.log 2>&1 ||
            { apt-get update >>/tmp/http-setup.log 2>&1 &&
              apt-get install -y --no-install-recommends nodejs npm >>/tmp/http-setup.log 2>&1; }
    else
        echo "node/tests/http/setup.sh: Node.js 18+ and npm are needed for the HTTP API tests" >&2
        exit 1
    fi
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "node/tests/http/setup.sh: Node.js $major is too old; the tests need 18+ (global fetch)" >&2
    exit 1
fi
# npm ci only when the lock changed since the last install.
if [ -f node_modules/.package-lock.json ] && cmp -s package-lock.json node_modules/.quorumlite-lock; then
    echo "node/tests/http/setup.sh: @libsql/client installed (node $(node --version))"
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json node_modules/.quorumlite-lock
echo "node/tests/http/setup.sh: installed @libsql/client (node $(node --version))"
