#!/bin/bash
# Slow strangers cannot hold the TCP API: the per-address limit and the header deadline of
# vmsnapd's connection gate, under a slow-header attack from two loopback addresses (issue 8,
# finding 1). The test is tests/api/slow_clients.py.
set -u
command -v python3 >/dev/null || { echo "api-slow-clients: SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/../api/slow_clients.py"
