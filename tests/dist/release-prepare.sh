#!/usr/bin/env bash
# Prepares what tests/dist/release-chroot.sh runs (a CTest fixture, so that this part, which
# boots no guest, runs beside the guest tests): the release tarball (scripts/dist.sh
# --with-qemu) in $VMSNAP_BUILD/dist/, and the base chroot in $VMSNAP_DIST_CACHE (default
# build/dist-cache): Debian 12 minbase from the Debian mirror, with the runtime packages of
# the libraries vmsnap links against purged (minbase's apt brings a few), made once and
# kept. debootstrap runs on tmpfs (dpkg's fsyncs cost nothing there), and the finished tree
# is moved into the cache only when complete.
#
# Exit 0 ready, 1 fail, 77 skip (not root, a tool missing, the mirror unreachable).
set -euo pipefail

SRC=${VMSNAP_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${VMSNAP_BUILD:-$SRC/build/ci}
GUEST=${VMSNAP_GUEST_DIR:-$SRC/build/guest}
# shellcheck source=tests/lib/release-lib.sh
. "$SRC/tests/lib/release-lib.sh"

[[ $(id -u) == 0 ]] || skip "needs root (debootstrap, chroot)"
for tool in debootstrap chroot patchelf objdump dpkg-query; do
        command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/setup.sh installs it)"
done

rc=0
"$SRC/guest/build.sh" "$GUEST" >/dev/null || rc=$?
((rc != 2)) || skip "the guest image cannot be built here (guest/build.sh exit 2)"
((rc == 0)) || fail "guest/build.sh exited $rc"

# ---- the base chroot, made once ---------------------------------------------------------------

# Purges the project's packages that minbase brought from the tree at $1.
purge_project_packages() {
        local present=() p
        for p in "${PROJECT_PACKAGES[@]}"; do
                installed_in "$1" "$p" && present+=("$p")
        done
        ((${#present[@]})) || return 0
        log "purging what minbase brought of the project's libraries: ${present[*]}"
        chroot "$1" dpkg --purge --force-depends --force-remove-essential "${present[@]}" \
                >"$CACHE/purge.log" 2>&1 || { cat "$CACHE/purge.log"; fail "dpkg --purge failed"; }
}

make_base() {
        local base tmp=/dev/shm/vmsnap-debootstrap.$$ new
        base=$(base_dir)
        new=$base.new.$$
        [[ -f $base/$BASE_STAMP ]] && return 0
        log "making the base chroot ($SUITE minbase from $MIRROR) into $base; later runs reuse it"
        rm -rf "$tmp"
        if ! debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$tmp" "$MIRROR" \
                >"$CACHE/debootstrap.log" 2>&1; then
                tail -5 "$CACHE/debootstrap.log"
                rm -rf "$tmp"
                skip "debootstrap from $MIRROR failed (log above, in $CACHE/debootstrap.log)"
        fi
        purge_project_packages "$tmp"
        rm -rf "$tmp"/var/cache/apt/archives/*.deb "$new"
        cp -a "$tmp" "$new"
        rm -rf "$tmp"
        touch "$new/$BASE_STAMP"
        sync -f "$new"
        mv -T "$new" "$base"
        sync -f "$CACHE"
}

mkdir -p "$CACHE/debs"
(
        flock 9
        make_base
) 9>"$CACHE/.lock"

# ---- the tarball ------------------------------------------------------------------------------

out=$(tarball_dir)
rm -rf "$out"
log "building the release: scripts/dist.sh --with-qemu --out $out"
"$SRC/scripts/dist.sh" --with-qemu --guest-dir "$GUEST" --out "$out" | tail -2
tarball >/dev/null
