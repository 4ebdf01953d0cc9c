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
  # unit tests
  libcmocka-dev
  # guest image and the QEMU VMM
  qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs zstd
  # tools the tests and benches drive
  tar gzip curl sqlite3 python3
)

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
