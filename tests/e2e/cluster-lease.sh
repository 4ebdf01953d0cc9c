#!/usr/bin/env bash
# Cluster leases around a real guest's operations through vmsnapd --cluster and a throwaway
# PostgreSQL; the test itself is tests/e2e/cluster_lease.py (see its docstring).
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/cluster_lease.py"
