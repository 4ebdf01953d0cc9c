#!/bin/bash
# `vmsnap mem merge` on a file system with reflinks (a loop-mounted XFS made here): long runs
# are shared with the old diff files (FICLONERANGE) instead of written, short ones written.
# Checks: the merged snapshot verifies and materializes to exactly the guest's memory; the
# merge wrote far less than it stored (the shared runs cost no data blocks); a SIGKILL at the
# new crash point merge.reflink leaves the old chain readable and unchanged, and the next
# merge succeeds and cleans up. Needs root (mount) and xfsprogs (scripts/setup.sh).
set -u

if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "${VMSNAP_CLI:-}" ]; then
        echo "mem-reflink: VMSNAP_CLI is unset or not an executable; skipping"
        exit 77
fi
if [ "$(id -u)" != 0 ] || ! command -v mkfs.xfs >/dev/null || ! command -v losetup >/dev/null; then
        echo "mem-reflink: needs root, mkfs.xfs (xfsprogs) and losetup to mount an XFS; skipping"
        exit 77
fi
VMSNAP_CLI=$(cd "$(dirname "$VMSNAP_CLI")" && pwd)/$(basename "$VMSNAP_CLI")

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-mem-reflink.XXXXXX") || exit 1
MNT=$T/mnt
cleanup() {
        cd /
        mountpoint -q "$MNT" && umount "$MNT"
        rm -rf "$T"
}
trap cleanup EXIT
mkdir "$MNT"
truncate -s 512M "$T/xfs.img"
if ! mkfs.xfs -q -m reflink=1 "$T/xfs.img" || ! mount -o loop "$T/xfs.img" "$MNT"; then
        echo "FAIL: cannot make or mount an XFS with reflinks" >&2
        exit 1
fi
cd "$MNT" || exit 1

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}

# A 64 MiB guest: 4 runs of 4 MiB random data, 200 scattered random pages, the rest zeros.
python3 - <<'PY'
import os, random
r = random.Random(7)
size, page = 64 << 20, 4096
with open("memory", "wb") as f:
    f.truncate(size)
    for start in (1, 9, 20, 40):
        f.seek(start << 20); f.write(r.randbytes(4 << 20))
    for _ in range(200):
        f.seek(r.randrange(size // page) * page); f.write(r.randbytes(page))
PY
"$VMSNAP_CLI" mem process memory snap >/dev/null || fail "process"
# Generation 1 dirties 100 pages, some inside the long runs (which then split).
python3 - <<'PY'
import random
r = random.Random(8)
with open("memory", "r+b") as f:
    for _ in range(100):
        f.seek(r.randrange((64 << 20) // 4096) * 4096); f.write(r.randbytes(4096))
PY
"$VMSNAP_CLI" mem diff memory snap --parent snap >/dev/null || fail "diff"
cp memory expected

# SIGKILL right after the first shared run: the chain is untouched and still complete.
before=$(cat snap/memfile.header | sha256sum)
VMSNAP_CRASH_AT=merge.reflink "$VMSNAP_CLI" mem merge snap >/dev/null 2>&1
rc=$?
[ $rc = 137 ] || fail "merge with VMSNAP_CRASH_AT=merge.reflink exited $rc, not SIGKILL (no run shared?)"
[ "$(cat snap/memfile.header | sha256sum)" = "$before" ] || fail "the header changed before the commit"
"$VMSNAP_CLI" mem verify snap >/dev/null || fail "the old chain does not verify after the crash"
"$VMSNAP_CLI" mem materialize snap m1 >/dev/null && cmp -s m1 expected ||
        fail "the old chain does not read back the guest's memory after the crash"
rm -f m1

# The real merge: shares the long runs, writes the rest. The old diff files are kept alive
# by hard links outside the snapshot, so the blocks the merge shared stay counted once.
mkdir keep && ln snap/memfile.*[0-9a-f] keep/ || fail "cannot link the old diff files"
sync
used0=$(df --output=used -B1 . | tail -1)
"$VMSNAP_CLI" mem merge snap >/dev/null || fail "merge"
sync
used1=$(df --output=used -B1 . | tail -1)
"$VMSNAP_CLI" mem verify snap >/dev/null || fail "the merged snapshot does not verify"
"$VMSNAP_CLI" mem materialize snap m2 >/dev/null && cmp -s m2 expected ||
        fail "the merged snapshot does not read back the guest's memory"
rm -f m2
gen=$("$VMSNAP_CLI" mem inspect snap | awk '$1 == "generation" {print $2}')
[ "$gen" = 0 ] || fail "merged generation is $gen, not 0"
ls -a snap | grep -q '\.tmp\.' && fail "temporary files left after the merge: $(ls -a snap)"
# About 16 MiB + 300 pages are stored; the shared runs (most of the 16 MiB) cost no space
# while the old files live on in keep/: without reflinks the file system grows by all of it.
stored=$(stat -c %s snap/memfile.*[0-9a-f] | awk '{s += $1} END {print s}')
grown=$((used1 - used0))
[ "$grown" -lt $((stored / 2)) ] ||
        fail "the file system grew by $grown bytes for $stored stored: runs were not shared"
[ "$stored" -gt $((15 << 20)) ] || fail "merged diff file holds only $stored bytes"

if [ $failures -gt 0 ]; then
        echo "mem-reflink: $failures check(s) failed" >&2
        exit 1
fi
echo "mem-reflink: ok (merge stored $stored bytes, the file system grew by $grown;" \
        "crash at merge.reflink is safe)"
