#!/bin/bash
# Crash and recovery through the real binary ($VMSNAP_CLI): `vmsnap snapshot add`, `import`
# and `rm` are SIGKILLed at each step (VMSNAP_CRASH_AT); afterwards `ls` shows no half-made
# snapshot, every listed one verifies, `gc --dry-run` lists the leftovers with their bytes
# and `gc --grace 0` removes them; a lost database is rebuilt by `reindex`; `gc --budget`
# evicts an unused template but never a pause snapshot. Every check runs.
set -u

if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "${VMSNAP_CLI:-}" ]; then
        echo "snapshot-crash: VMSNAP_CLI is unset or not an executable; skipping"
        exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
        echo "snapshot-crash: python3 is needed; skipping"
        exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-snapshot-crash.XXXXXX") || exit 1
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
# crash POINT ARGS...: runs the CLI with VMSNAP_CRASH_AT=POINT; fails unless it was SIGKILLed
# there (the shell's "Killed" notice is kept out of the log).
crash() {
        local point=$1
        shift
        { VMSNAP_CRASH_AT=$point "$VMSNAP_CLI" "$@" >/dev/null 2>&1; rc=$?; } 2>/dev/null
        [ "$rc" = 137 ] || fail "vmsnap $*: crash point $point not reached (exit $rc)"
}
json() {
        python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$T/out" "$1"
}

python3 - <<'PY'
import random
random.seed(5)
b = bytearray(1 << 20)
for i in range(0, len(b), 4096 * 4):
    b[i:i + 4096] = random.randbytes(4096)
open("mem0", "wb").write(b)
b[0:4096] = random.randbytes(4096)
open("mem1", "wb").write(b)
PY

# consistent ROOT NAMES...: ls lists exactly NAMES (sorted), each verifies, no row is in a
# transitional state after gc --grace 0, and snapshots/ holds one directory per row.
consistent() {
        local root=$1
        shift
        local want=""
        [ $# -gt 0 ] && want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
        expect 0 snapshot --root "$root" gc --grace 0
        expect 0 snapshot --root "$root" ls --all --json
        local got
        got=$(json '" ".join(sorted(x["name"] for x in d)) + (" " if d else "")')
        [ "$got" = "$want" ] || fail "$root: snapshots are '$got', want '$want'"
        [ "$(json 'all(x["state"] == "ready" for x in d)')" = True ] || fail "$root: leftover rows"
        [ "$(ls "$root/snapshots" | wc -l)" = "$#" ] || fail "$root: stray directories"
        local n
        for n in "$@"; do
                expect 0 snapshot --root "$root" verify "$n"
        done
}

# ---- add ------------------------------------------------------------------------------------
for point in store.begin diff.header store.add.mem store.commit.files store.commit.envelope \
             store.commit.ready; do
        R="$T/add-$point"
        expect 0 snapshot --root "$R" add mem0 --name base
        crash "$point" snapshot --root "$R" add mem1 --name child --parent base
        expect 0 snapshot --root "$R" ls --json
        case $point in
        store.commit.envelope | store.commit.ready)
                [ "$(json 'len(d)')" = 2 ] || fail "$point: the complete child is not visible"
                consistent "$R" base child
                ;;
        *)
                [ "$(json 'len(d)')" = 1 ] || fail "$point: a half-made child is visible"
                expect 0 snapshot --root "$R" gc --dry-run --grace 0 --json
                [ "$(json 'd["count"] >= 1 and d["bytes"] > 0 and d["items"][0]["what"] == "pending"')" = True ] ||
                        fail "$point: gc --dry-run does not list the leftover: $(cat "$T/out")"
                consistent "$R" base
                expect 0 snapshot --root "$R" add mem1 --name child --parent base
                consistent "$R" base child
                ;;
        esac
done

# ---- import ---------------------------------------------------------------------------------
expect 0 snapshot --root "$T/src" add mem0 --name exported
expect 0 snapshot --root "$T/src" export exported -o "$T/x.tar.zst"
for point in store.import.envelope store.import.data store.import.verified \
             store.commit.envelope; do
        R="$T/import-$point"
        crash "$point" snapshot --root "$R" import "$T/x.tar.zst"
        if [ "$point" = store.commit.envelope ]; then
                consistent "$R" exported
        else
                consistent "$R"
                expect 0 snapshot --root "$R" import "$T/x.tar.zst"
                consistent "$R" exported
        fi
done

# ---- rm -------------------------------------------------------------------------------------
for point in store.delete.marked store.delete.envelope store.delete.files; do
        R="$T/rm-$point"
        expect 0 snapshot --root "$R" add mem0 --name base
        expect 0 snapshot --root "$R" add mem1 --name child --parent base
        crash "$point" snapshot --root "$R" rm child
        consistent "$R" base
        expect 0 snapshot --root "$R" rm base
done

# ---- a lost index ---------------------------------------------------------------------------
R="$T/reindex"
expect 0 snapshot --root "$R" add mem0 --name base --kind template
expect 0 snapshot --root "$R" add mem1 --name child --parent base
rm -f "$R"/vmsnap.db*
expect 0 snapshot --root "$R" gc --grace 0 --json
[ "$(json '[x["what"] for x in d["items"]] == ["unindexed", "unindexed"] and d["count"] == 0')" = True ] ||
        fail "gc must keep whole snapshots without rows: $(cat "$T/out")"
expect 0 snapshot --root "$R" reindex --verify --json
[ "$(json 'd["added"]')" = 2 ] || fail "reindex added $(json 'd["added"]'), want 2"
consistent "$R" base child
expect 1 snapshot --root "$R" rm base # the lineage came back

# ---- budget -----------------------------------------------------------------------------------
R="$T/budget"
expect 0 snapshot --root "$R" add mem0 --name t-old --kind template
expect 0 snapshot --root "$R" add mem1 --name t-new --kind template
expect 0 snapshot --root "$R" add mem1 --name paused
expect 0 snapshot --root "$R" gc --budget 1 --dry-run --json
[ "$(json 'd["count"] == 2 and all(x["what"] == "template-lru" for x in d["items"])')" = True ] ||
        fail "gc --budget --dry-run: $(cat "$T/out")"
expect 0 snapshot --root "$R" gc --budget 1
consistent "$R" paused

if [ "$failures" -ne 0 ]; then
        echo "snapshot-crash: $failures check(s) failed"
        exit 1
fi
echo "snapshot-crash: all checks passed"
