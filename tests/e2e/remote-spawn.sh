#!/usr/bin/env bash
# End to end: templates across hosts through a real Ceph RGW (one start) and two vmsnapd;
# tests/e2e/remote_spawn.py (its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/remote_spawn.py"
