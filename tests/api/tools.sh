#!/bin/bash
# The npm tools of the API tests (package.json and package-lock.json beside this script:
# redocly, prism) in tests/api/node_modules: scripts/setup.sh installs them; this checks,
# and installs again when the lock file changed (scripts/npm-ci.sh).
# Exit 0 when the tools are there, 77 with the reason when they cannot be (no Node.js/npm,
# no registry), so that a test calling it can skip (and scripts/test.sh then fails).
set -u
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$DIR/../../scripts/npm-ci.sh" "$DIR" "api tools" 2>&1 || exit 77
