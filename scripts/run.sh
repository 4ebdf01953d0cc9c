#!/usr/bin/env bash
# The main job on a fresh Debian machine: installs the dependencies, builds vmsnap and the
# guest image, then starts vmsnapd in the foreground with a demo sandbox (create, exec,
# pause, resume) and leaves it serving. Ctrl-C stops the daemon (guests keep running;
# `vmsnap sandbox rm` removes them).
set -euo pipefail
cd "$(dirname "$0")/.."

root=${VMSNAP_ROOT:-/var/lib/vmsnap}
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build build/release
guest/build.sh "$root/guest"
exec build/release/vmsnapd --root "$root" --guest-dir "$root/guest" --demo "$@"
