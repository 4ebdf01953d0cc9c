#!/usr/bin/env bash
# Builds the vmsnap release: a relocatable tarball that runs on any x86-64 Linux with
# glibc >= 2.36 without installing packages (docs/release.md).
#
#   vmsnap-VERSION-x86_64/
#     bin/        vmsnap, vmsnapd, vmsnap-jailer (when built); with --with-qemu also
#                 qemu-system-x86_64 and qemu-img (vmsnapd finds them on its PATH)
#     lib/        every shared library they need but glibc's, found by following DT_NEEDED;
#                 programs find it through an $ORIGIN/../lib run path, libraries through $ORIGIN
#     lib/x86_64-linux-gnu/qemu/   QEMU's TCG accelerator module (--with-qemu)
#     share/qemu/ the microvm firmware QEMU loads (--with-qemu); QEMU looks next to itself
#     share/vmsnap/guest/   the prebuilt guest image (vmlinuz, initramfs, rootfs) unless --no-guest
#     share/vmsnap/vmsnapd.service.in, share/doc/vmsnap/ (docs, third-party copyright files)
#     install.sh  installs under a prefix and the systemd unit (see its --help)
#     MANIFEST    sha256 of every file
#
# usage: scripts/dist.sh [--with-qemu] [--no-guest] [--guest-dir DIR] [--build-dir DIR]
#                        [--out DIR]
# Prints the tarball's path and size last. Needs patchelf, binutils (objdump) and dpkg.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

with_qemu=0
with_guest=1
guest_dir=$SRC/build/guest
build_dir=$SRC/build/release
out_dir=$SRC/build/dist
GLIBC_MAX=2.36 # the oldest glibc the release promises to run on

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "dist.sh: $*" >&2; exit 1; }

while (($#)); do
        case $1 in
        --with-qemu) with_qemu=1 ;;
        --no-guest) with_guest=0 ;;
        --guest-dir) guest_dir=$(realpath "$2"); shift ;;
        --build-dir) build_dir=$(realpath -m "$2"); shift ;;
        --out) out_dir=$(realpath -m "$2"); shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
        esac
        shift
done

for tool in patchelf objdump dpkg-query tar gzip sha256sum; do
        command -v "$tool" >/dev/null || die "$tool is needed (scripts/setup.sh installs it)"
done

version=$(sed -n 's/^project(vmsnap VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[[ -n $version ]] || die "no version in CMakeLists.txt's project()"
name=vmsnap-$version-x86_64
stage=$out_dir/stage/$name

# ---- build ------------------------------------------------------------------------------------

build() {
        if [[ $build_dir == "$SRC/build/release" ]]; then
                cmake --preset release >/dev/null
        else
                [[ -f $build_dir/CMakeCache.txt ]] || die "$build_dir is not a configured build"
        fi
        local targets=(vmsnap-cli vmsnapd)
        ninja -C "$build_dir" -t query vmsnap-jailer >/dev/null 2>&1 && targets+=(vmsnap-jailer)
        cmake --build "$build_dir" --target "${targets[@]}"
}

# ---- shared libraries -------------------------------------------------------------------------

# glibc's own libraries (libc, libm, ld-linux, libpthread, ...): the one thing the release
# takes from the host. Everything else is bundled.
list_glibc_sonames() {
        dpkg-query -L libc6 | sed -n 's|.*/\(l[di][^/]*\.so[.0-9]*\)$|\1|p' | sort -u >"$out_dir/glibc-sonames"
        grep -qx libc.so.6 "$out_dir/glibc-sonames" || die "cannot list glibc's libraries (dpkg -L libc6)"
}

# Prints "soname path" for every library an ELF file needs, transitively, but glibc's.
needed_libs() {
        { ldd "$1" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
                while read -r soname path; do
                        grep -qxF "$soname" "$out_dir/glibc-sonames" || echo "$soname $path"
                done
}

# The Debian packages that hold the files listed in $1, one a line (dpkg records a library
# under /lib or /usr/lib: both are asked, in one dpkg-query call).
packages_of() {
        local f
        sort -u "$1" | while read -r f; do
                echo "$f"
                case $f in
                /usr/*) echo "${f#/usr}" ;;
                *) echo "/usr$f" ;;
                esac
        done | { xargs -r dpkg-query -S 2>/dev/null || true; } | sed 's/: .*//; s/:[a-z0-9]*//g' | tr -d ' ' |
                tr ',' '\n' | sort -u
}

# Copies the libraries `files` need into lib/ (dereferenced, under their soname).
bundle_libs() {
        local f soname path
        for f in "$@"; do
                needed_libs "$f"
        done | sort -u | while read -r soname path; do
                [[ -e $stage/lib/$soname ]] || install -m 0644 "$(realpath "$path")" "$stage/lib/$soname"
                echo "$path" >>"$out_dir/bundled-from"
        done
}

# Run paths: programs look in ../lib, libraries next to themselves, QEMU's module two up.
set_run_paths() {
        local f
        for f in "$stage"/bin/*; do
                if [[ $(head -c 4 "$f") == $'\x7fELF' ]]; then
                        patchelf --set-rpath '$ORIGIN/../lib' "$f"
                fi
        done
        for f in "$stage"/lib/*.so*; do
                patchelf --set-rpath '$ORIGIN' "$f"
        done
        if [[ -d $stage/lib/x86_64-linux-gnu/qemu ]]; then
                for f in "$stage"/lib/x86_64-linux-gnu/qemu/*.so; do
                        patchelf --set-rpath '$ORIGIN/../..' "$f"
                done
        fi
}

# The newest glibc symbol version any file needs; fails above GLIBC_MAX.
check_glibc() {
        local newest
        newest=$(find "$stage" -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
                xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
                sort -uV | tail -1)
        if [[ $(printf '%s\n%s\n' "$newest" "$GLIBC_MAX" | sort -V | tail -1) != "$GLIBC_MAX" ]]; then
                die "a bundled file needs glibc $newest; the release promises $GLIBC_MAX"
        fi
        echo "dist.sh: the newest glibc symbol any file needs: $newest (promised: >= $GLIBC_MAX)"
}

# ---- QEMU -------------------------------------------------------------------------------------

# QEMU is relocatable: it looks for firmware in <bin>/../share/qemu and for modules in
# <bin>/../lib/x86_64-linux-gnu/qemu. Debian builds TCG as a module.
stage_qemu() {
        local fw
        command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null ||
                die "--with-qemu: qemu-system-x86_64 and qemu-img must be installed (scripts/setup.sh)"
        install -m 0755 "$(command -v qemu-system-x86_64)" "$(command -v qemu-img)" "$stage/bin/"
        install -d -m 0755 "$stage/lib/x86_64-linux-gnu/qemu" "$stage/share/qemu"
        install -m 0644 /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so \
                "$stage/lib/x86_64-linux-gnu/qemu/"
        # microvm's firmware (bios-microvm.bin is qboot), and the boot ROMs other machines load
        for fw in bios-microvm.bin qboot.rom pvh.bin linuxboot_dma.bin; do
                install -m 0644 "$(realpath /usr/share/qemu/$fw)" "$stage/share/qemu/$fw"
        done
        qemu_packages=(qemu-system-x86 qemu-system-data qemu-utils seabios)
}

# ---- the tree ---------------------------------------------------------------------------------

stage_programs() {
        local p
        install -d -m 0755 "$stage/bin" "$stage/lib" "$stage/share/vmsnap" "$stage/share/doc/vmsnap"
        for p in vmsnap vmsnapd vmsnap-jailer; do
                [[ -x $build_dir/$p ]] || continue
                install -m 0755 "$build_dir/$p" "$stage/bin/$p"
                strip --strip-unneeded "$stage/bin/$p"
        done
        [[ -x $stage/bin/vmsnap && -x $stage/bin/vmsnapd ]] || die "$build_dir has no vmsnap or vmsnapd"
}

stage_guest() {
        local f
        for f in vmlinuz initramfs.cpio.gz rootfs.ext4; do
                [[ -f $guest_dir/$f ]] || die "$guest_dir/$f is missing: run guest/build.sh $guest_dir"
        done
        install -d -m 0755 "$stage/share/vmsnap/guest"
        for f in vmlinuz initramfs.cpio.gz rootfs.ext4; do
                install -m 0644 "$guest_dir/$f" "$stage/share/vmsnap/guest/$f"
        done
}

# The copyright file of every Debian package a bundled file came from.
stage_copyrights() {
        local pkg dir=$stage/share/doc/vmsnap/third-party
        install -d -m 0755 "$dir"
        {
                packages_of "$out_dir/bundled-from"
                printf '%s\n' "${qemu_packages[@]}"
        } | sed '/^$/d' | sort -u >"$out_dir/packages"
        while read -r pkg; do
                [[ -f /usr/share/doc/$pkg/copyright ]] &&
                        install -m 0644 "/usr/share/doc/$pkg/copyright" "$dir/$pkg.copyright"
        done <"$out_dir/packages"
        # the exact versions: their sources are Debian's source packages of these versions
        xargs -r dpkg-query -W -f='${Package} ${Version}\n' <"$out_dir/packages" >"$dir/PACKAGES"
        chmod 0644 "$dir/PACKAGES"
        install -m 0644 LICENSE* "$stage/share/doc/vmsnap/" 2>/dev/null || true
}

stage_files() {
        install -m 0755 dist/install.sh "$stage/install.sh"
        install -m 0644 dist/vmsnapd.service.in "$stage/share/vmsnap/vmsnapd.service.in"
        install -m 0644 README.md docs/release.md "$stage/share/doc/vmsnap/"
        echo "$version" >"$stage/VERSION"
        chmod 0644 "$stage/VERSION"
}

# A gzip tarball (every Linux can unpack it), owned by root, files in a stable order.
pack() {
        local tarball=$out_dir/$name.tar.gz
        (cd "$stage" && find . -type f ! -name MANIFEST -printf '%P\n' | LC_ALL=C sort |
                xargs sha256sum >MANIFEST && chmod 0644 MANIFEST)
        tar -C "$out_dir/stage" --sort=name --owner=0 --group=0 --numeric-owner \
                -cf - "$name" | gzip -6 >"$tarball.tmp"
        sync "$tarball.tmp"
        mv "$tarball.tmp" "$tarball"
        sync "$out_dir"
        echo "dist.sh: $(du -b "$tarball" | cut -f1) bytes ($(du -h "$tarball" | cut -f1))" \
                "compressed, $(du -sb "$stage" | cut -f1) unpacked: $tarball"
}

main() {
        build
        rm -rf "$out_dir/stage"
        install -d -m 0755 "$stage"
        : >"$out_dir/bundled-from"
        list_glibc_sonames
        qemu_packages=()
        stage_programs
        ((with_qemu)) && stage_qemu
        bundle_libs "$stage"/bin/* $( ((with_qemu)) && echo "$stage"/lib/x86_64-linux-gnu/qemu/*.so)
        set_run_paths
        check_glibc
        ((with_guest)) && stage_guest
        stage_copyrights
        stage_files
        pack
}

main
