#!/bin/sh
# Installs this vmsnap release (the directory holding this script) under a prefix, and the
# systemd unit of vmsnapd. Needs nothing but a POSIX shell and coreutils.
#
# usage: ./install.sh [--prefix DIR] [--state-dir DIR] [--unit-dir DIR] [--no-systemd]
#                     [--no-link]
#   --prefix DIR     where the release goes (default /opt/vmsnap); an older release there
#                    is replaced whole, in one rename, once the new one is on disk
#   --state-dir DIR  vmsnapd's store, sandboxes and token (default /var/lib/vmsnap, mode 0700;
#                    never touched but for its mode)
#   --unit-dir DIR   where vmsnapd.service goes (default /etc/systemd/system)
#   --no-systemd     no unit file
#   --no-link        no /usr/local/bin/vmsnap symlink to the CLI
# Then: systemctl enable --now vmsnapd   (docs: PREFIX/share/doc/vmsnap/release.md)
set -eu

prefix=/opt/vmsnap
state=/var/lib/vmsnap
unit_dir=/etc/systemd/system
systemd=1
link=1
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
        case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift ;;
        --state-dir) [ $# -ge 2 ] || die "--state-dir needs a directory"; state=$2; shift ;;
        --unit-dir) [ $# -ge 2 ] || die "--unit-dir needs a directory"; unit_dir=$2; shift ;;
        --no-systemd) systemd=0 ;;
        --no-link) link=0 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
        esac
        shift
done

# Paths go into a unit file and a shell: absolute, and made of plain characters only.
plain_path() {
        case $2 in
        /*) ;;
        *) die "$1 '$2' is not an absolute path" ;;
        esac
        case $2 in
        *[!A-Za-z0-9._/+-]*) die "$1 '$2' has characters other than A-Z a-z 0-9 . _ / + -" ;;
        esac
}
plain_path --prefix "$prefix"
plain_path --state-dir "$state"
plain_path --unit-dir "$unit_dir"
prefix=${prefix%/}
[ -n "$prefix" ] || die "--prefix / is not allowed"
[ -f "$here/VERSION" ] && [ -f "$here/MANIFEST" ] || die "$here is not an unpacked vmsnap release"

# Every file of the release is checked against its MANIFEST before anything is written.
(cd "$here" && sha256sum --quiet --strict -c MANIFEST) ||
        die "$here: files differ from MANIFEST (a damaged or altered tarball); nothing installed"

# The new tree beside the prefix (same filesystem), written and synced, then renamed in.
parent=$(dirname "$prefix")
mkdir -p "$parent"
new=$prefix.new.$$
old=$prefix.old.$$
trap 'rm -rf "$new"' EXIT
rm -rf "$new"
mkdir -m 0755 "$new"
(cd "$here" && tar -cf - .) | (cd "$new" && tar -xf - --no-same-owner)
# Modes whatever the umask: programs 0755, everything else readable, nothing writable but
# by the owner (root when root installs).
find "$new" -type d -exec chmod 0755 {} +
find "$new" -type f -exec chmod 0644 {} +
find "$new/bin" -type f -exec chmod 0755 {} +
chmod 0755 "$new/install.sh"
[ "$(id -u)" -ne 0 ] || chown -R 0:0 "$new"
sync
if [ -e "$prefix" ]; then
        [ -f "$prefix/VERSION" ] || die "$prefix exists and is not a vmsnap release; choose another --prefix"
        mv -T "$prefix" "$old"
fi
mv -T "$new" "$prefix"
trap - EXIT
sync
rm -rf "$old"
echo "install.sh: vmsnap $(cat "$prefix/VERSION") installed in $prefix"

mkdir -p "$state"
chmod 0700 "$state"

if [ "$link" = 1 ] && [ -d /usr/local/bin ]; then
        target=/usr/local/bin/vmsnap
        if [ ! -e "$target" ] || [ -L "$target" ]; then
                ln -sfn "$prefix/bin/vmsnap" "$target.new.$$" && mv -T "$target.new.$$" "$target"
        else
                echo "install.sh: $target exists and is not a symlink: left alone" >&2
        fi
fi

if [ "$systemd" = 1 ]; then
        mkdir -p "$unit_dir"
        unit=$unit_dir/vmsnapd.service
        sed -e "s|@PREFIX@|$prefix|g" -e "s|@STATE@|$state|g" \
                "$prefix/share/vmsnap/vmsnapd.service.in" >"$unit.new.$$"
        chmod 0644 "$unit.new.$$"
        sync
        mv -T "$unit.new.$$" "$unit"
        sync
        echo "install.sh: systemd unit $unit (state in $state)"
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
                systemctl daemon-reload
                echo "install.sh: start it with: systemctl enable --now vmsnapd" \
                        "(a running vmsnapd picks up this release on: systemctl restart vmsnapd)"
        fi
fi
