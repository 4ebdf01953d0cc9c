#!/bin/bash
# Every answer of a live vmsnapd, on every route and for every error code it can be made to
# give, conforms to docs/openapi.yaml: Stoplight Prism in proxy mode validates requests and
# responses (npm tools pinned in tests/api/package.json), and what prism cannot see (HEAD,
# 405, unknown paths, a stopping daemon, a full disk, binary bodies, upgrades, 501s) is
# checked against the same spec. VMs run on tests/peer/ch-peer, each with the real guest
# agent built for the host behind its vsock, confined (chroot, namespaces, uid 65534). The
# test is tests/api/conformance.py (+ conformance_harness.py, conformance_guest.py).
set -u
command -v python3 >/dev/null || { echo "api-conformance: SKIP: python3 is not installed"; exit 77; }
exec python3 "$(dirname "$0")/../api/conformance.py"
