#!/usr/bin/env bash
# Placement through one endpoint and the failover of a lost host's paused sandboxes, with
# real guests, a throwaway PostgreSQL and Ceph; the test is tests/e2e/cluster_failover.py.
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/cluster_failover.py"
