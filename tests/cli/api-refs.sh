#!/bin/bash
# Refs, names and query values with NUL, control characters or an encoded '/' are refused
# with 400 on every route that takes one, and never cut short (issue 8, finding 2). The test
# is tests/api/refs.py.
set -u
command -v python3 >/dev/null || { echo "api-refs: SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/../api/refs.py"
