#!/usr/bin/env bash
# Sandbox networking through vmsnapd with real QEMU guests; the test itself is
# tests/e2e/sandbox_network.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/sandbox_network.py" "$@"
