#!/usr/bin/env bash
# End-to-end sandbox lifecycle through vmsnapd's REST API with a real QEMU guest; the test
# itself is tests/e2e/sandbox_lifecycle.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/sandbox_lifecycle.py"
