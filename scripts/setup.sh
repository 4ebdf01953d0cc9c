#!/usr/bin/env bash
# Installs every build, test and runtime dependency of vmsnap from Debian packages.
# Idempotent: safe to run again; installs only what is missing.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang git
  # libraries libvmsnap links against
  libjansson-dev libxxhash-dev libsqlite3-dev libmicrohttpd-dev libcurl4-openssl-dev
  libarchive-dev libzstd-dev libssl-dev uuid-dev libseccomp-dev
  # sandbox networking (src/net/): rtnetlink and nftables
  libnl-3-dev libnl-route-3-dev libnftables-dev
  # cluster mode (src/cluster/): libpq, and a throwaway PostgreSQL server for its tests
  libpq-dev postgresql
  # the FUSE memory file of lazy QEMU restores (`vmsnap mem-serve`, src/uffd/memfs.c)
  libfuse3-dev fuse3
  # unit tests
  libcmocka-dev
  # guest image and the QEMU VMM
  qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs zstd
  # guest/tools/extract-vmlinux: the bzImage's payload may be any of these (PVH boot)
  xz-utils lz4 bzip2
  # tools the tests and benches drive (grep tests/ bench/ guest/ for what they call; the
  # suite fails on a skip, so a tool missing here shows up as a red CI run, docs/testing.md)
  tar gzip curl sqlite3 python3 python3-yaml procps util-linux diffutils iproute2
  # cli/mem-reflink: merge on a loop-mounted XFS with reflinks (mkfs.xfs, xfs_io)
  xfsprogs
  # e2e/sandbox-network counts the nftables ruleset with nft
  nftables
  # the release (scripts/dist.sh) and its test in a clean Debian chroot (tests/dist/)
  patchelf debootstrap wget gpgv debian-archive-keyring binutils
  # a throwaway Ceph RGW for the remote store's tests (scripts/ceph.sh, docs/remote.md)
  ceph-mon ceph-osd ceph-common radosgw uuid-runtime
  # Node.js: the API tests' npm tools (redocly, prism; tests/api/tools.sh installs them) and
  # the dashboard's build (web/build.sh: esbuild, Preact)
  nodejs
  # the dashboard's browser test (tests/e2e/dashboard.sh drives it with playwright-core; the
  # fonts are a recommend of chromium that --no-install-recommends leaves out: legible
  # screenshots)
  chromium fonts-liberation
)
# npm: Debian's package, unless a Node.js build that ships its own npm is installed (such
# a nodejs package conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi

# The npm packages, pinned by their package-lock.json: the API tests' tools (tests/api:
# redocly, prism) and the dashboard's build and browser test (web/: esbuild, Preact,
# playwright-core), so that neither the build nor a test reaches the registry (a no-op when
# installed). Without a registry this is a warning, but on CI (CI=true) a failure: those
# tests would skip and the build would fail later, further from the cause.
top=$(cd "$(dirname "$0")/.." && pwd)
for dir in tests/api web; do
  bash "$top/scripts/npm-ci.sh" "$top/$dir" "setup: $dir" && continue
  [ "${CI:-}" = true ] && { echo "setup: npm ci in $dir failed (CI=true: stopping)" >&2; exit 1; }
  echo "setup: warning: npm ci in $dir failed; the API tests will skip and the dashboard" \
       "build fail (-DVMSNAP_WEB=OFF builds without it)" >&2
done
