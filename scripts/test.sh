#!/usr/bin/env bash
# Builds vmsnap with warnings as errors and sanitizers (the `ci` preset) and runs the whole
# test suite: unit, property, crash, fuzz-corpus replay, CLI and end-to-end (real QEMU
# guest) tests. Tests that need something this machine lacks are reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh # a no-op check when everything is installed
cmake --preset ci >/dev/null
cmake --build build/ci
ctest --preset ci -j2 "$@"
