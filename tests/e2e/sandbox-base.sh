#!/usr/bin/env bash
# The first pause after a boot writes over a base copied in the background, through vmsnapd
# with a real QEMU guest; the test itself is tests/e2e/sandbox_base.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/sandbox_base.py"
