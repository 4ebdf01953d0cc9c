#!/usr/bin/env bash
# End to end: a template exported from one vmsnapd root restores on another root that never
# had its base image (the archive carries it); tests/e2e/snapshot_portable.py (its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/snapshot_portable.py"
