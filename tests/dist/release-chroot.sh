#!/usr/bin/env bash
# The release tarball installed and used in a clean Debian 12 chroot that has none of the
# project's packages (tests/dist/release_chroot.py says what runs inside). The tarball and
# the cached base chroot come from the dist/release-prepare fixture. The chroot is a fresh
# copy of the base each run; the driver runs in a private mount namespace, so its bind
# mounts never exist outside it and vanish with its last process, and the copy is removed
# with nothing mounted under it.
#
# Exit 0 pass, 1 fail, 77 skip (not root, a tool missing).
set -euo pipefail

SRC=${VMSNAP_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${VMSNAP_BUILD:-$SRC/build/ci}
# shellcheck source=tests/lib/release-lib.sh
. "$SRC/tests/lib/release-lib.sh"

[[ $(id -u) == 0 ]] || skip "needs root (chroot, mounts)"
for tool in unshare chroot mount python3; do
        command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/setup.sh installs it)"
done
base=$(base_dir)
[[ -f $base/$BASE_STAMP ]] || fail "no base chroot in $base (the dist/release-prepare fixture makes it)"
tarball=$(tarball)
for p in "${PROJECT_PACKAGES[@]}"; do
        ! installed_in "$base" "$p" || fail "the base chroot $base has $p installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-dist.XXXXXX")
mem_root=/dev/shm/$(basename "$work")-mem

# Kills what still runs in the chroot copy, by pid (each process whose root is the copy),
# then removes the copy, refusing to if anything is mounted under it.
cleanup() {
        local p
        for p in /proc/[0-9]*; do
                [[ $(readlink "$p/root" 2>/dev/null) == "$work/root" ]] && kill -KILL "${p#/proc/}" 2>/dev/null
        done
        if grep -qF " $work/" /proc/self/mountinfo; then
                echo "release-chroot: mounts left under $work; not removing it" >&2
                return
        fi
        rm -rf "$work" "$mem_root"
}
trap cleanup EXIT

cp -a "$base" "$work/root"
log "$(basename "$tarball") ($(du -h "$tarball" | cut -f1)) into a fresh copy of $base"
status=0
unshare --mount --propagation private -- \
        python3 "$SRC/tests/dist/release_chroot.py" "$work/root" "$tarball" "$mem_root" || status=$?
if ((status != 0)) && [[ -f $work/vmsnapd.log ]]; then
        echo "--- vmsnapd.log (last 40 lines)"
        tail -n 40 "$work/vmsnapd.log"
fi
exit "$status"
