#!/bin/bash
# Everything vmsnap writes is private whatever the umask: with `umask 000` this runs the
# store and memory-snapshot flows through the real binary ($VMSNAP_CLI) — snapshot add (a
# generation 0 and a diff over it), export to a file and to a directory, import of both, gc,
# rm; mem process, diff, merge, materialize — and then finds no file or directory under any
# root or output that its group or others may read, write or enter (`find -perm /077`).
set -u

if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "${VMSNAP_CLI:-}" ]; then
        echo "umask: VMSNAP_CLI is unset or not an executable; skipping"
        exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
        echo "umask: python3 is needed; skipping"
        exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-umask.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}
run() {
        "$VMSNAP_CLI" "$@" >"$T/out" 2>"$T/err" ||
                fail "vmsnap $* exited $?; stderr: $(head -c 300 "$T/err")"
}

python3 - <<'PY'
import random
random.seed(5)
b = bytearray(2 << 20)
for i in range(0, len(b), 4096 * 3):
    b[i:i + 4096] = random.randbytes(4096)
open("mem0", "wb").write(b)
for i in range(0, len(b), 4096 * 7):
    b[i:i + 4096] = random.randbytes(4096)
open("mem1", "wb").write(b)
open("state", "wb").write(random.randbytes(5000))
PY

umask 000

# The store: create, diff, export (file and directory), import (both), gc, rm.
A=(snapshot --root "$T/a")
B=(snapshot --root "$T/b")
run "${A[@]}" add mem0 --name base --kind template
run "${A[@]}" add mem1 --name gen1 --parent base --snapfile state
run "${A[@]}" export gen1 -o "$T/gen1.tar.zst"
run "${A[@]}" export gen1 --to-dir "$T/gen1.dir"
run "${B[@]}" import "$T/gen1.tar.zst"
run "${B[@]}" import "$T/gen1.dir" --name from-dir
run "${B[@]}" rm from-dir
run "${A[@]}" gc --grace 0
run "${B[@]}" gc --grace 0
run "${A[@]}" ls

# Memory snapshots outside a store: process, diff (into a new directory and in place),
# merge, materialize.
run mem process mem0 "$T/m0"
run mem diff mem1 "$T/m1" --parent "$T/m0"
run mem diff mem0 "$T/m0" --parent "$T/m0"
run mem merge "$T/m1"
run mem materialize "$T/m1" "$T/m1.raw"

# Sanity: the flows really wrote something under each root.
for p in a/vmsnap.db a/snapshots b/snapshots m0/memfile.header m1/memfile.header m1.raw \
        gen1.tar.zst gen1.dir/snapshot.json; do
        [ -e "$T/$p" ] || fail "$p was not written"
done

loose=$(find "$T/a" "$T/b" "$T/m0" "$T/m1" "$T/m1.raw" "$T/gen1.tar.zst" "$T/gen1.dir" \
        -perm /077 -printf '%m %p\n' 2>&1)
if [ -n "$loose" ]; then
        fail "readable, writable or enterable by group or others under umask 000:"
        echo "$loose" >&2
fi

if [ "$failures" -ne 0 ]; then
        echo "umask: $failures failure(s)" >&2
        exit 1
fi
echo "umask: every file 0600 and every directory 0700 under umask 000"
