#!/usr/bin/env bash
# Which accelerator (kvm|tcg) vmsnapd uses and why: log, /healthz, GET /v1/sandboxes/{ref},
# `vmsnap sandbox inspect`, and the KVM probe cache; the test is tests/e2e/accel_visible.py.
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/accel_visible.py"
