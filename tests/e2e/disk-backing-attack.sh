#!/usr/bin/env bash
# Attack: a sandbox disk overlay whose qcow2 header names a host file must never make QEMU
# open that file; the test itself is tests/e2e/disk_backing_attack.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/disk_backing_attack.py"
