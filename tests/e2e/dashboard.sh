#!/usr/bin/env bash
# The web dashboard in a real browser against a real vmsnapd with real QEMU guests (issue
# 15): Playwright (playwright-core from web/package-lock.json) drives Debian's headless
# chromium. The test is tests/e2e/dashboard.mjs (see its header).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=${VMSNAP_SRC:-$(cd "$HERE/../.." && pwd)}
command -v node >/dev/null || { echo "SKIP: node is not installed (scripts/setup.sh)"; exit 77; }
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 is not installed"; exit 77; }
command -v chromium >/dev/null || { echo "SKIP: chromium is not installed (scripts/setup.sh)"; exit 77; }
[ -x "${VMSNAP_BUILD:-}/vmsnapd" ] || { echo "SKIP: vmsnapd is not built"; exit 77; }
[ -f "$VMSNAP_BUILD/ui/index.html" ] || { echo "SKIP: the dashboard was not built (no Node.js/npm at build time)"; exit 77; }
# playwright-core is a dev dependency of web/: installed by the build's web/build.sh.
[ -f "$SRC/web/node_modules/playwright-core/package.json" ] || { echo "SKIP: web/node_modules lacks playwright-core (run web/build.sh)"; exit 77; }
GUEST=${VMSNAP_GUEST_DIR:-$SRC/build/guest}
rc=0
"$SRC/guest/build.sh" "$GUEST" >/dev/null || rc=$?
[ $rc -ne 2 ] || { echo "SKIP: the guest image cannot be built here (guest/build.sh exit 2)"; exit 77; }
[ $rc -eq 0 ] || { echo "FAIL: guest/build.sh failed ($rc)"; exit 1; }
export VMSNAP_GUEST_DIR=$GUEST
exec node "$HERE/dashboard.mjs"
