#!/bin/bash
# Builds the dashboard into OUTDIR (index.html, app.js, app.css, icon.svg): `npm ci` from
# package-lock.json into web/node_modules (scripts/npm-ci.sh: again only when the lock file
# changed; scripts/setup.sh already ran it), then build.mjs (esbuild).
# Usage: web/build.sh OUTDIR. Exit 0 built, 1 failed (the reason on stderr).
set -eu
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: web/build.sh OUTDIR}
bash "$DIR/../scripts/npm-ci.sh" "$DIR" web || {
        echo "web: configure with -DVMSNAP_WEB=OFF to build vmsnapd without the dashboard" >&2
        exit 1
}
exec node "$DIR/build.mjs" "$OUT"
