#!/bin/bash
# Unit tests of the web dashboard's pure helpers (web/test/*.test.mjs: the Prometheus text
# parser, formatting) with Node's own test runner; no npm package needed.
set -u
SRC=${VMSNAP_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
command -v node >/dev/null || { echo "web-unit: SKIP: node is not installed (scripts/setup.sh)"; exit 77; }
exec node --test "$SRC"/web/test/
