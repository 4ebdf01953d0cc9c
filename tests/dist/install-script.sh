#!/usr/bin/env bash
# dist/install.sh on a small fake release (no build, no chroot; release-chroot runs the real
# one): a fresh install under umask 077 gets the documented modes and a filled-in unit; an
# upgrade replaces the release whole and leaves no temp tree; and what an attacker or a
# slip could make of it is refused with nothing changed: a file altered after MANIFEST was
# made, a --prefix that is an existing directory but no vmsnap release (/usr, say), a
# relative prefix, a path with characters a unit file would misread.
set -euo pipefail

SRC=${VMSNAP_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-install.XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# A release tree like scripts/dist.sh makes, version $1, in $T/rel-$1.
fake_release() {
        local r=$T/rel-$1
        mkdir -p "$r/bin" "$r/lib" "$r/share/vmsnap"
        printf '#!/bin/sh\necho vmsnap %s\n' "$1" >"$r/bin/vmsnap"
        echo "lib $1" >"$r/lib/libfake.so.1"
        cp "$SRC/dist/vmsnapd.service.in" "$r/share/vmsnap/"
        cp "$SRC/dist/install.sh" "$r/install.sh"
        echo "$1" >"$r/VERSION"
        (cd "$r" && find . -type f ! -name MANIFEST -printf '%P\n' | sort | xargs sha256sum >MANIFEST)
        echo "$r"
}

mode() { stat -c %a "$1"; }
install_it() { (umask 077 && sh "$1/install.sh" "${@:2}" --no-link) >"$T/out" 2>&1; }

prefix=$T/opt/vmsnap
args=(--prefix "$prefix" --state-dir "$T/state" --unit-dir "$T/units")
r1=$(fake_release 1.0)
r2=$(fake_release 2.0)

# 1. fresh install, umask 077
install_it "$r1" "${args[@]}" || fail "fresh install: $(cat "$T/out")"
[[ $(cat "$prefix/VERSION" 2>/dev/null) == 1.0 ]] || fail "no release 1.0 in $prefix"
[[ $(mode "$prefix/bin/vmsnap") == 755 ]] || fail "bin/vmsnap mode $(mode "$prefix/bin/vmsnap")"
[[ $(mode "$prefix/lib/libfake.so.1") == 644 ]] || fail "lib mode $(mode "$prefix/lib/libfake.so.1")"
[[ $(mode "$prefix/lib") == 755 ]] || fail "lib/ mode $(mode "$prefix/lib")"
[[ $(mode "$T/state") == 700 ]] || fail "state dir mode $(mode "$T/state")"
unit=$T/units/vmsnapd.service
[[ $(mode "$unit") == 644 ]] || fail "unit mode $(mode "$unit")"
grep -q "^ExecStart=$prefix/bin/vmsnapd --root $T/state --guest-dir $prefix/share/vmsnap/guest$" "$unit" ||
        fail "unit ExecStart: $(grep ExecStart "$unit")"
! grep -q @ "$unit" || fail "unfilled @...@ left in the unit"

# 2. upgrade: replaced whole, nothing left beside it
install_it "$r2" "${args[@]}" || fail "upgrade: $(cat "$T/out")"
[[ $(cat "$prefix/VERSION") == 2.0 && $("$prefix/bin/vmsnap") == "vmsnap 2.0" ]] || fail "upgrade did not take"
leftovers=$(find "$T/opt" "$T/units" -maxdepth 1 -name '*.new.*' -o -maxdepth 1 -name '*.old.*')
[[ -z $leftovers ]] || fail "left behind: $leftovers"

# 3. a file altered after MANIFEST: refused, the installed release untouched
echo 'echo owned' >>"$r1/bin/vmsnap"
if install_it "$r1" "${args[@]}"; then fail "an altered release was installed"; fi
grep -q MANIFEST "$T/out" || fail "altered release: the message does not say why: $(cat "$T/out")"
[[ $(cat "$prefix/VERSION") == 2.0 && $("$prefix/bin/vmsnap") == "vmsnap 2.0" ]] ||
        fail "a refused install changed the installed release"

# 4. a prefix that exists but is no vmsnap release: refused, left exactly as it was
mkdir -p "$T/usr/bin" && echo keep >"$T/usr/bin/precious"
if install_it "$r2" --prefix "$T/usr" --state-dir "$T/state" --unit-dir "$T/units"; then
        fail "installed over a directory that is not a vmsnap release"
fi
[[ $(cat "$T/usr/bin/precious" 2>/dev/null) == keep && ! -e $T/usr/VERSION ]] ||
        fail "the foreign prefix was changed"
[[ -z $(find "$T" -maxdepth 1 -name 'usr.*') ]] || fail "a temp tree was left beside $T/usr"

# 5. paths that are relative or would be misread in a unit file: refused before any write
for bad in "relative/prefix" "$T/with space" "$T/semi;colon" "$T/new
line"; do
        if install_it "$r2" --prefix "$bad" --state-dir "$T/state" --unit-dir "$T/units"; then
                fail "prefix '$bad' was accepted"
        fi
        [[ ! -e $bad ]] || fail "prefix '$bad' was created"
done

if ((failures)); then
        echo "install-script: $failures failure(s)"
        exit 1
fi
echo "install-script: passed"
