#!/bin/bash
# Installs the npm tools of the API tests (package.json and package-lock.json beside this
# script: redocly, prism) into tests/api/node_modules with `npm ci`, again only when the lock
# file changed; concurrent callers (ctest -j) wait on a lock. Install scripts are not run.
# Exit 0 when the tools are there, 77 with the reason when they cannot be (no Node.js/npm,
# no registry), so that a test calling it can skip.
set -u
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for tool in node npm sha256sum flock; do
        if ! command -v $tool >/dev/null 2>&1; then
                echo "api tools: $tool is not installed (scripts/setup.sh installs Node.js and npm)"
                exit 77
        fi
done
want=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)
stamp=$DIR/node_modules/.vmsnap-lock-sha256
exec 9>"$DIR/.npm-ci.lock"
flock 9
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        exit 0
fi
echo "api tools: npm ci in $DIR (package-lock.json changed or node_modules missing)"
if ! (cd "$DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$DIR/.npm-ci.log" 2>&1); then
        echo "api tools: npm ci failed (is the npm registry reachable?):"
        tail -5 "$DIR/.npm-ci.log"
        exit 77
fi
echo "$want" >"$stamp"
