#!/bin/bash
# Long CLI steps show progress and the time they took on a terminal's stderr, nothing on a
# pipe: `snapshot export` into a slow reader, `sandbox create` with a VMM that starts late.
# The test is tests/cli/cli_progress.py (see its docstring).
set -u
command -v python3 >/dev/null || { echo "cli-progress: SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/cli_progress.py"
