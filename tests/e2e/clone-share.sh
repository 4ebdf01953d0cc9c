#!/usr/bin/env bash
# Clones of one template that share its memory through vmsnapd with a real QEMU guest; the
# test itself is tests/e2e/clone_share.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/clone_share.py"
