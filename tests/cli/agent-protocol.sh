#!/usr/bin/env bash
# The guest agent's protocol 2 on the host, without a VM: tests/cli/agent_protocol.py.
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/agent_protocol.py"
