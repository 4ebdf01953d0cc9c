#!/usr/bin/env bash
# Builds the vmsnap guest image from Debian packages only:
#
#   OUTDIR/vmlinuz              kernel of the linux-image-*-cloud-amd64 package that
#                               linux-image-cloud-amd64 depends on (downloaded, never installed)
#   OUTDIR/vmlinux              the same kernel uncompressed (guest/tools/extract-vmlinux), an
#                               ELF with a PVH entry note: VMSNAP_PVH=1 boots it (docs/guest.md)
#   OUTDIR/initramfs.cpio.gz    busybox-static + guest/init + the virtio modules + the agent
#   OUTDIR/rootfs.ext4          64 MiB ext4 made from guest/rootfs with mke2fs -d
#   OUTDIR/vmsnap-agent         the static guest agent, guest/agent/*.c (also inside the initramfs)
#   OUTDIR/tsc-khz              host tool: prints the host TSC frequency, which a TCG
#                               guest needs as tsc_early_khz= on microvm (docs/guest.md)
#   OUTDIR/guest.env            what was built: kernel package and version, modules loaded
#
# Usage: guest/build.sh [OUTDIR]        (default: <repo>/build/guest)
#
# Idempotent: each output is rebuilt only when one of its inputs is newer, and the
# kernel package is downloaded once per version into OUTDIR/cache. Needs apt-get,
# dpkg, busybox-static, cpio, gzip, e2fsprogs (mke2fs), gcc with a static libc, and for
# vmlinux python3 and the decompressors (xz-utils, lz4, zstd, bzip2).
# Exit status: 0 built (or up to date), 2 a prerequisite is missing (a tool, or the
# kernel package cannot be resolved/downloaded), 1 any other failure.
# See docs/guest.md.
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$GUEST_DIR")
OUTDIR=${1:-$REPO_DIR/build/guest}
mkdir -p "$OUTDIR/cache"
OUTDIR=$(cd "$OUTDIR" && pwd)
CACHE=$OUTDIR/cache

# One build at a time per output directory: tests that need the image run in parallel and
# each calls this script; the second waits and then finds everything up to date.
exec 9>"$OUTDIR/.build.lock"
flock 9

KERNEL_META=linux-image-cloud-amd64
# Drivers the guest needs (see docs/guest.md): the microvm machine exposes its devices
# as virtio-mmio; the agent port is virtio-serial; the rootfs is virtio-blk. ext4 is
# built into the cloud kernel, but it is checked the same way in case that changes.
# vsock: Firecracker and Cloud Hypervisor reach the agent on vsock port 1024; the
# loopback transport lets a test prove that listener inside a QEMU guest (no host vsock).
# virtio_net: the NIC of a sandbox with networking (docs/network.md).
NEEDED_MODULES=(virtio_mmio virtio_console virtio_blk ext4
                vmw_vsock_virtio_transport vsock_loopback virtio_net)
ROOTFS_SIZE=64M
CFLAGS=(-std=c11 -static -Os -s -Wall -Wextra -Wpedantic -Wshadow -Wvla -Wimplicit-fallthrough
        -Wmissing-prototypes)

log() { echo "guest/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
missing() { log "missing prerequisite: $*"; exit 2; }

# stale OUT INPUT... : true when OUT is missing or any INPUT (file or tree) is newer.
stale() {
  local out=$1 in
  shift
  [[ -e $out ]] || return 0
  for in in "$@"; do
    [[ -n $(find "$in" -newer "$out" -print -quit 2>/dev/null) ]] && return 0
  done
  return 1
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing "'$tool' not found; run scripts/setup.sh"
  done
}

# Prints the concrete kernel package (e.g. linux-image-6.1.0-56-cloud-amd64) that the
# metapackage depends on. Without apt lists, falls back to the newest cached .deb so
# that an offline rebuild still works.
resolve_kernel_package() {
  local pkg
  pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }' || true)
  if [[ -z $pkg ]]; then
    pkg=$(find "$CACHE" -maxdepth 1 -name 'linux-image-*-cloud-amd64_*.deb' -printf '%f\n' |
          sort -V | tail -n1 | cut -d_ -f1)
  fi
  [[ -n $pkg ]] || missing "cannot resolve $KERNEL_META (apt-get update?) and no cached kernel .deb"
  echo "$pkg"
}

# Downloads (once) and unpacks (once per .deb) the kernel package; sets KDIR and KVER.
fetch_kernel() {
  local pkg=$1 deb stamp
  deb=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)
  if [[ -z $deb ]]; then
    log "downloading $pkg"
    # apt-get download writes to the current directory.
    (cd "$CACHE" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
      true
    deb=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)
    [[ -n $deb ]] || missing "apt-get download $pkg failed"
  fi
  KDIR=$CACHE/$pkg
  stamp=$KDIR/.unpacked
  if stale "$stamp" "$deb"; then
    log "unpacking $(basename "$deb")"
    rm -rf "$KDIR"
    dpkg -x "$deb" "$KDIR"
    KVER=$(basename "$(find "$KDIR/lib/modules" -mindepth 1 -maxdepth 1 -type d -print -quit)")
    # The package ships no modules.dep (depmod runs at install time); busybox
    # depmod generates one without installing kmod.
    busybox depmod -b "$KDIR" "$KVER"
    touch "$stamp"
  fi
  KVER=$(basename "$(find "$KDIR/lib/modules" -mindepth 1 -maxdepth 1 -type d -print -quit)")
  # Drop kernels the metapackage no longer points at (about 100 MiB each unpacked).
  find "$CACHE" -maxdepth 1 -name 'linux-image-*' ! -name "$pkg" ! -name "${pkg}_*.deb" \
    -exec rm -rf {} +
}

build_kernel() {
  local src=$KDIR/boot/vmlinuz-$KVER
  [[ -f $src ]] || die "$src missing from the kernel package"
  # dpkg -x keeps the package's (old) mtimes, so compare with the unpack stamp.
  if stale "$OUTDIR/vmlinuz" "$KDIR/.unpacked"; then
    cp "$src" "$OUTDIR/vmlinuz.tmp"
    mv "$OUTDIR/vmlinuz.tmp" "$OUTDIR/vmlinuz"
    log "kernel $KVER -> $OUTDIR/vmlinuz"
  fi
}

# The uncompressed kernel for a PVH boot (docs/guest.md §3.7), extracted from vmlinuz.
build_vmlinux() {
  if stale "$OUTDIR/vmlinux" "$OUTDIR/vmlinuz"; then
    "$GUEST_DIR/tools/extract-vmlinux" "$OUTDIR/vmlinuz" "$OUTDIR/vmlinux" >/dev/null ||
      die "cannot extract vmlinux from $OUTDIR/vmlinuz (guest/tools/extract-vmlinux)"
    log "uncompressed kernel -> $OUTDIR/vmlinux"
  fi
}

# Prints, in load order, the .ko paths (relative to lib/modules/KVER) needed for
# NEEDED_MODULES and their dependencies per modules.dep; built-in ones need nothing.
module_load_order() {
  local mdir=$KDIR/lib/modules/$KVER
  awk -v want="${NEEDED_MODULES[*]}" '
    FILENAME ~ /modules\.builtin$/ { n = $0; sub(/.*\//, "", n); sub(/\.ko$/, "", n); builtin[n] = 1; next }
    {
      path = $1; sub(/:$/, "", path)
      n = path; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n); gsub(/-/, "_", n)
      file[n] = path; deps[n] = ""
      for (i = 2; i <= NF; i++) deps[n] = deps[n] " " $i
    }
    function visit(n,    d, parts, k, dn) {
      if (done[n]) return
      done[n] = 1
      split(deps[n], parts, " ")
      for (k in parts) { dn = parts[k]; sub(/.*\//, "", dn); sub(/\.ko(\.[a-z]+)?$/, "", dn); gsub(/-/, "_", dn); visit(dn) }
      print file[n]
    }
    END {
      split(want, w, " ")
      for (i = 1; i in w; i++) {
        if (w[i] in builtin) continue
        if (!(w[i] in file)) { print "missing module " w[i] > "/dev/stderr"; exit 1 }
        visit(w[i])
      }
    }' "$mdir/modules.builtin" "$mdir/modules.dep"
}

# The agent is every .c of guest/agent/ (docs/guest.md §2.5), linked statically.
build_agent() {
  local srcs=("$GUEST_DIR"/agent/*.c)
  if stale "$OUTDIR/vmsnap-agent" "$GUEST_DIR/agent" "$GUEST_DIR/build.sh"; then
    gcc "${CFLAGS[@]}" -o "$OUTDIR/vmsnap-agent.tmp" "${srcs[@]}"
    mv "$OUTDIR/vmsnap-agent.tmp" "$OUTDIR/vmsnap-agent"
    log "agent -> $OUTDIR/vmsnap-agent"
  fi
}

build_tsc_khz() {
  local src=$GUEST_DIR/tools/tsc-khz.c
  if stale "$OUTDIR/tsc-khz" "$src" "$GUEST_DIR/build.sh"; then
    gcc -std=c11 -O2 -Wall -Wextra -Wpedantic -Wshadow -Wvla -o "$OUTDIR/tsc-khz.tmp" "$src"
    mv "$OUTDIR/tsc-khz.tmp" "$OUTDIR/tsc-khz"
  fi
}

busybox_path() {
  local bb
  bb=$(command -v busybox) || missing "busybox not found; install busybox-static"
  bb=$(readlink -f "$bb")
  if readelf -l "$bb" 2>/dev/null | grep -q 'program interpreter'; then
    missing "$bb is dynamically linked; install busybox-static"
  fi
  echo "$bb"
}

# Lays out the initramfs tree in $1: busybox and its applet links, /init, the agent,
# and the modules with a load list that /init reads.
stage_initramfs() {
  local root=$1 bb=$2 order=$3 applet ko
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,mnt,run,root,etc,lib/modules}
  cp "$bb" "$root/bin/busybox"
  for applet in $("$bb" --list-full); do
    [[ $applet == bin/busybox || -e $root/$applet ]] && continue
    ln -s /bin/busybox "$root/$applet"
  done
  install -m 0755 "$GUEST_DIR/init" "$root/init"
  install -m 0755 "$OUTDIR/vmsnap-agent" "$root/sbin/vmsnap-agent"
  : > "$root/etc/modules.load"
  for ko in $order; do
    mkdir -p "$root/lib/modules/$(dirname "$ko")"
    cp "$KDIR/lib/modules/$KVER/$ko" "$root/lib/modules/$ko"
    echo "$ko" >> "$root/etc/modules.load"
  done
  echo "vmsnap" > "$root/etc/hostname"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\n' > "$root/etc/group"
}

build_initramfs() {
  local bb order root=$CACHE/initramfs-root out=$OUTDIR/initramfs.cpio.gz
  bb=$(busybox_path)
  order=$(module_load_order)
  MODULE_ORDER=$order
  # busybox keeps its package mtime on upgrade; dpkg's file list is rewritten then.
  local bb_pkg=/var/lib/dpkg/info/busybox-static.list
  [[ -e $bb_pkg ]] || bb_pkg=$bb
  if stale "$out" "$GUEST_DIR/init" "$OUTDIR/vmsnap-agent" "$bb" "$bb_pkg" "$KDIR/.unpacked" \
      "$GUEST_DIR/build.sh"; then
    stage_initramfs "$root" "$bb" "$order"
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
       cpio -o -H newc --owner=0:0 --reproducible --quiet) | gzip -9n > "$out.tmp"
    mv "$out.tmp" "$out"
    log "initramfs ($(wc -w <<<"$order") modules) -> $out"
  fi
}

build_rootfs() {
  local out=$OUTDIR/rootfs.ext4
  if stale "$out" "$GUEST_DIR/rootfs" "$GUEST_DIR/build.sh"; then
    rm -f "$out.tmp"
    truncate -s "$ROOTFS_SIZE" "$out.tmp" # an existing file keeps mke2fs quiet
    mke2fs -q -F -t ext4 -L vmsnap-root -E root_owner=0:0 -d "$GUEST_DIR/rootfs" "$out.tmp"
    mv "$out.tmp" "$out"
    log "rootfs -> $out"
  fi
}

write_manifest() {
  local tmp=$OUTDIR/guest.env.tmp
  {
    echo "KERNEL_PACKAGE=$KERNEL_PACKAGE"
    echo "KERNEL_VERSION=$KVER"
    echo "MODULES=\"${MODULE_ORDER//$'\n'/ }\""
    echo "KERNEL=$OUTDIR/vmlinuz"
    echo "VMLINUX=$OUTDIR/vmlinux"
    echo "INITRD=$OUTDIR/initramfs.cpio.gz"
    echo "ROOTFS=$OUTDIR/rootfs.ext4"
  } > "$tmp"
  if cmp -s "$tmp" "$OUTDIR/guest.env"; then rm -f "$tmp"; else mv "$tmp" "$OUTDIR/guest.env"; fi
}

main() {
  need apt-cache apt-get dpkg busybox cpio gzip mke2fs gcc readelf awk python3 xz lz4 zstd bzip2
  KERNEL_PACKAGE=$(resolve_kernel_package)
  fetch_kernel "$KERNEL_PACKAGE"
  build_kernel
  build_vmlinux
  build_agent
  build_tsc_khz
  build_initramfs
  build_rootfs
  write_manifest
  log "ready in $OUTDIR ($KERNEL_PACKAGE)"
}

main
