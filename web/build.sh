#!/bin/bash
# Builds the dashboard into OUTDIR (index.html, app.js, app.css, icon.svg): `npm ci` from
# package-lock.json into web/node_modules (again only when the lock file changed; install
# scripts are not run; concurrent builds wait on a lock), then build.mjs (esbuild).
# Usage: web/build.sh OUTDIR. Exit 0 built, 1 failed (the reason on stderr).
set -eu
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: web/build.sh OUTDIR}
want=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)
stamp=$DIR/node_modules/.vmsnap-lock-sha256
exec 9>"$DIR/.npm-ci.lock"
flock 9
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "web: npm ci in $DIR (package-lock.json changed or node_modules missing)"
        if ! (cd "$DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
                >"$DIR/.npm-ci.log" 2>&1); then
                echo "web: npm ci failed (is the npm registry reachable? configure with" \
                     "-DVMSNAP_WEB=OFF to build vmsnapd without the dashboard):" >&2
                tail -5 "$DIR/.npm-ci.log" >&2
                exit 1
        fi
        echo "$want" >"$stamp"
fi
exec node "$DIR/build.mjs" "$OUT"
