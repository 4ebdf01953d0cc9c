#!/bin/bash
# `vmsnap snapshot export | import` through the real binary ($VMSNAP_CLI): a two-generation
# snapshot with a sparse file travels through a file (zstd, gzip, none), a pipe (stdin and
# stdout), and a directory (--to-dir); every file compared with cmp, holes kept; GNU tar and
# zstd read our archives; name clashes, hostile and truncated archives refused with nothing
# left behind; no progress output when stderr is not a terminal. Every check runs.
set -u

if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "${VMSNAP_CLI:-}" ]; then
        echo "snapshot-transfer: VMSNAP_CLI is unset or not an executable; skipping"
        exit 77
fi
for tool in python3 cmp; do
        if ! command -v "$tool" >/dev/null 2>&1; then
                echo "snapshot-transfer: $tool is needed; skipping"
                exit 77
        fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-snapshot-transfer.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}
expect() {
        local want=$1
        shift
        "$VMSNAP_CLI" "$@" >"$T/out" 2>"$T/err"
        rc=$?
        if [ "$rc" != "$want" ]; then
                fail "vmsnap $* exited $rc, want $want; stderr: $(head -c 300 "$T/err")"
                return 1
        fi
        return 0
}
json() {
        python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$T/out" "$1"
}
err_has() {
        grep -q -- "$1" "$T/err" || fail "stderr lacks '$1': $(head -c 400 "$T/err")"
}

python3 - <<'PY'
import random
random.seed(3)
b = bytearray(4 << 20)
for i in range(0, len(b), 4096 * 3):
    b[i:i + 4096] = random.randbytes(2048) * 2
open("mem0", "wb").write(b)
for i in range(0, len(b), 4096 * 11):
    b[i:i + 4096] = random.randbytes(4096)
open("mem1", "wb").write(b)
with open("state", "wb") as f:          # a sparse device-state file: 32 MiB, 2 data blocks
    f.seek(1 << 20); f.write(random.randbytes(4096))
    f.seek(20 << 20); f.write(b"tail")
    f.truncate(32 << 20)
PY

A=(snapshot --root "$T/a")
B=(snapshot --root "$T/b")
expect 0 "${A[@]}" add mem0 --name base --kind template
expect 0 "${A[@]}" add mem1 --name gen1 --parent base --snapfile state --json
id=$(json 'd["id"]')
srcdir="$T/a/snapshots/$id"

# same_as DIR [exact]: every file of $srcdir equals DIR's (snapshot.json too when exact; an
# import rewrites it with the new id and name), and DIR's `snapfile` stays sparse
same_as() {
        local f
        for f in "$srcdir"/*; do
                [ "$(basename "$f")" = snapshot.json ] && [ "${2:-}" != exact ] && continue
                cmp -s "$f" "$1/$(basename "$f")" || fail "$(basename "$f") differs in $1"
        done
        local blocks
        blocks=$(stat -c %b "$1/snapfile")
        [ "$blocks" -lt 1024 ] || fail "snapfile in $1 is not sparse ($blocks blocks)"
}

# ---- through files, each compression ----------------------------------------------------
for c in zstd gzip none; do
        expect 0 "${A[@]}" export gen1 -o "gen1.$c" --compression "$c"
        [ -s "gen1.$c" ] || fail "export to gen1.$c wrote nothing"
        [ "$(stat -c %s "gen1.$c")" -lt $((8 << 20)) ] || fail "gen1.$c holds the holes"
        [ ! -s "$T/err" ] || fail "export printed on a non-terminal stderr: $(cat "$T/err")"
        expect 0 "${B[@]}" import "gen1.$c" --name "gen1-$c" --json
        same_as "$(json 'd["dir"]')"
done
ls gen1.*.partial.* >/dev/null 2>&1 && fail "a .partial file was left"

# ---- through a pipe -----------------------------------------------------------------------
"$VMSNAP_CLI" "${A[@]}" export gen1 | "$VMSNAP_CLI" "${B[@]}" import --name piped --json \
        >"$T/out" 2>"$T/err" || fail "export | import failed: $(cat "$T/err")"
same_as "$(json 'd["dir"]')"
"$VMSNAP_CLI" "${A[@]}" export gen1 --compression gzip -o - >piped.tgz
expect 0 "${B[@]}" import - --name from-stdin <piped.tgz

# ---- through a directory -------------------------------------------------------------------
expect 0 "${A[@]}" export gen1 --to-dir "$T/dir"
[ -f "$T/dir/snapshot.json" ] || fail "--to-dir wrote no snapshot.json"
same_as "$T/dir" exact
expect 1 "${A[@]}" export base --to-dir "$T/dir"
err_has "must be empty"
expect 0 "${B[@]}" import "$T/dir" --name from-dir --description "via a directory" --json
same_as "$(json 'd["dir"]')"
[ "$(json 'd["description"]')" = "via a directory" ] || fail "--description not applied"

# ---- other tools read it -------------------------------------------------------------------
if command -v tar >/dev/null 2>&1 && command -v zstd >/dev/null 2>&1; then
        first=$(zstd -dc gen1.zstd | tar -tf - | head -1)
        [ "$first" = "snapshot.json" ] || fail "first entry is '$first'"
        mkdir untar && zstd -dc gen1.zstd | tar -xf - -C untar || fail "GNU tar cannot extract"
        same_as "$T/untar" exact
fi

# ---- clashes and refusals -------------------------------------------------------------------
expect 0 "${B[@]}" import gen1.zstd # the archive's own name, free in b
expect 1 "${B[@]}" import gen1.zstd
err_has "name 'gen1' is already used"
err_has "--name"
expect 2 "${A[@]}" export gen1 -o x --to-dir y
head -c 100000 gen1.none >truncated.tar
expect 1 "${B[@]}" import truncated.tar --name cut
err_has "refusing the import"
python3 - <<'PY'
import io, json, tarfile
env = json.dumps({"format": "vmsnap-snapshot", "version": 1,
                  "id": "0d4e1f7a-5b6c-4d8e-9f0a-1b2c3d4e5f60", "kind": "pause",
                  "created": "2025-01-01T00:00:00Z",
                  "files": [{"name": "data", "size": 4,
                             "checksum": "xxh3-128:" + "0" * 32}]}).encode()
with tarfile.open("evil.tar", "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, data):
        i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
    add("snapshot.json", env)
    add("../evil", b"evil")
with tarfile.open("link.tar", "w", format=tarfile.PAX_FORMAT) as t:
    i = tarfile.TarInfo("snapshot.json"); i.size = len(env); t.addfile(i, io.BytesIO(env))
    i = tarfile.TarInfo("data"); i.type = tarfile.SYMTYPE; i.linkname = "/etc/passwd"
    t.addfile(i)
PY
before=$(ls "$T/b/snapshots" | wc -l)
expect 1 "${B[@]}" import evil.tar --name evil
err_has "not a plain file name"
expect 1 "${B[@]}" import link.tar --name evil
err_has "is a symlink"
[ -e "$T/b/evil" ] || [ -e "$T/b/snapshots/evil" ] && fail "a hostile entry was written"
[ "$(ls "$T/b/snapshots" | wc -l)" = "$before" ] || fail "a refused import left a directory"
expect 0 "${B[@]}" ls --all --json
[ "$(json 'sum(1 for x in d if x["state"] != "ready")')" = 0 ] || fail "a refused import left a row"
expect 0 "${B[@]}" gc --dry-run --grace 0 --json
[ "$(json 'd["count"]')" = 0 ] || fail "leftovers after refused imports: $(cat "$T/out")"

if [ "$failures" -ne 0 ]; then
        echo "snapshot-transfer: $failures check(s) failed"
        exit 1
fi
echo "snapshot-transfer: all checks passed"
