#!/bin/bash
# Installs DIR's npm packages exactly as DIR/package-lock.json pins them (`npm ci` into
# DIR/node_modules), again only when the lock file changed since the last install (a stamp
# in node_modules); install scripts are not run; concurrent callers wait on a lock.
# Usage: scripts/npm-ci.sh DIR LABEL. Exit 0 installed, 1 failed (npm's last lines and
# the log's path on stderr, LABEL first), 2 node/npm/flock missing.
set -u
DIR=${1:?usage: npm-ci.sh DIR LABEL}
LABEL=${2:-npm}
for tool in node npm sha256sum flock; do
        command -v $tool >/dev/null 2>&1 || {
                echo "$LABEL: $tool is not installed (scripts/setup.sh installs Node.js and npm)" >&2
                exit 2
        }
done
want=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1) || exit 1
stamp=$DIR/node_modules/.vmsnap-lock-sha256
exec 9>"$DIR/.npm-ci.lock"
flock 9
[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && exit 0
echo "$LABEL: npm ci in $DIR (package-lock.json changed or node_modules missing)" >&2
if ! (cd "$DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
        >"$DIR/.npm-ci.log" 2>&1); then
        echo "$LABEL: npm ci failed (is the npm registry reachable, and its TLS certificate" \
             "trusted? npm config get cafile); log $DIR/.npm-ci.log:" >&2
        tail -5 "$DIR/.npm-ci.log" >&2
        exit 1
fi
echo "$want" >"$stamp"
