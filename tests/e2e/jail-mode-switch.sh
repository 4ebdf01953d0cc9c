#!/usr/bin/env bash
# The unjailed mode (--insecure-no-jail) and a switch to jails: the test itself is
# tests/e2e/jail_mode_switch.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/jail_mode_switch.py"
