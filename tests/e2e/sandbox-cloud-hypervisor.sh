#!/usr/bin/env bash
# The sandbox lifecycle on the Cloud Hypervisor driver against tests/peer/ch-peer; the test
# is tests/e2e/sandbox_peer_vmm.py.
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/sandbox_peer_vmm.py" cloud-hypervisor
