#!/usr/bin/env bash
# Prepares what tests/dist/release-chroot.sh runs (a CTest fixture, so that this part, which
# boots no guest, runs beside the guest tests): the release tarball (scripts/dist.sh
# --with-qemu) in $VMSNAP_BUILD/dist/, and the base chroot in $VMSNAP_DIST_CACHE (default
# build/dist-cache): Debian 12 minbase from the Debian mirror, with the runtime packages of
# the libraries vmsnap links against purged (minbase's apt brings a few), made once and
# kept. debootstrap runs on a private tmpfs (dpkg's fsyncs cost nothing there), and the tree
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
for tool in debootstrap chroot unshare patchelf objdump dpkg-query; do
        command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/setup.sh installs it)"
done

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

# Runs inside a private mount namespace (see make_base): debootstrap into a tmpfs of its
# own, where dpkg's fsyncs cost nothing (1 minute instead of 7 on a loaded machine) and
# programs and device nodes work whatever /dev/shm's mount options; then the project's
# packages purged and the tree copied to $1. The tmpfs vanishes with the namespace.
bootstrap_into() {
        local tmp=$CACHE/tmpfs
        mkdir -p "$tmp"
        mount -t tmpfs -o mode=0755 vmsnap-debootstrap "$tmp"
        if ! debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$tmp/root" \
                "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
                tail -5 "$CACHE/debootstrap.log"
                skip "debootstrap from $MIRROR failed (log above, in $CACHE/debootstrap.log)"
        fi
        purge_project_packages "$tmp/root"
        rm -rf "$tmp"/root/var/cache/apt/archives/*.deb
        cp -a "$tmp/root" "$1"
}

make_base() {
        local base new
        base=$(base_dir)
        new=$base.new.$$
        [[ -f $base/$BASE_STAMP ]] && return 0
        log "making the base chroot ($SUITE minbase from $MIRROR) into $base; later runs reuse it"
        rm -rf "$new"
        unshare --mount --propagation private -- bash "$0" --bootstrap-into "$new" || {
                local rc=$?
                rm -rf "$new"
                exit "$rc"
        }
        touch "$new/$BASE_STAMP"
        sync -f "$new"
        mv -T "$new" "$base"
        sync -f "$CACHE"
}

if [[ ${1:-} == --bootstrap-into ]]; then
        bootstrap_into "$2"
        exit 0
fi

mkdir -p "$CACHE/debs"
(
        flock 9
        make_base
) 9>"$CACHE/.lock"

# ---- the tarball ------------------------------------------------------------------------------

rc=0
"$SRC/guest/build.sh" "$GUEST" >/dev/null || rc=$?
((rc != 2)) || skip "the guest image cannot be built here (guest/build.sh exit 2)"
((rc == 0)) || fail "guest/build.sh exited $rc"
out=$(tarball_dir)
rm -rf "$out"
log "building the release: scripts/dist.sh --with-qemu --out $out"
"$SRC/scripts/dist.sh" --with-qemu --guest-dir "$GUEST" --out "$out" | tail -2
tarball >/dev/null
