#!/bin/bash
# Every vmsnap command that prints a result takes --json and prints one JSON document: the
# command list comes from the CLI's help, sandbox verbs run against vmsnapd with the ch-peer
# as VMM (no guest boots). The test is tests/cli/cli_json.py (see its docstring).
set -u
command -v python3 >/dev/null || { echo "cli-json: SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/cli_json.py"
