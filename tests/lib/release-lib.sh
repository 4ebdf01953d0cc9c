# Shared by tests/dist/release-prepare.sh and release-chroot.sh (sourced, not a test).
# Where the base chroot and the tarball are, and the project's packages that the clean
# chroot must not have.

CACHE=${VMSNAP_DIST_CACHE:-$SRC/build/dist-cache}
MIRROR=${VMSNAP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_STAMP=.vmsnap-base-complete
# The runtime packages of the libraries vmsnap links against (scripts/setup.sh's -dev
# packages) and QEMU's: the release must bring its own copies.
PROJECT_PACKAGES=(libjansson4 libxxhash0 libsqlite3-0 libmicrohttpd12 libcurl4 libarchive13
        libzstd1 libssl3 libuuid1 libseccomp2 qemu-system-x86 qemu-utils qemu-system-data)

log() { echo "${0##*/}: $*"; }
skip() { echo "${0##*/}: $*; skipping"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

base_dir() { echo "$CACHE/$SUITE-minbase"; }
tarball_dir() { echo "$BUILD/dist"; }

# The tarball release-prepare.sh made; fails when there is not exactly one.
tarball() {
        local found=("$(tarball_dir)"/vmsnap-*-x86_64.tar.gz)
        [[ ${#found[@]} == 1 && -f ${found[0]} ]] || fail "no release tarball in $(tarball_dir)"
        echo "${found[0]}"
}

# True when package $2 is installed in the tree at $1 (read from its dpkg database).
installed_in() {
        dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Status}' "$2" 2>/dev/null |
                grep -q "install ok installed"
}
