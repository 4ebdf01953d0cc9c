#!/usr/bin/env bash
# Working inside a sandbox end to end with a real QEMU guest (argv, streams, PTY, cp, files,
# processes, 100 MB transfers with bounded daemon memory, a hostile archive); the test itself
# is tests/e2e/sandbox_exec.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/sandbox_exec.py"
