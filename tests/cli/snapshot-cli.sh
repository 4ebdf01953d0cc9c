#!/bin/bash
# `vmsnap snapshot` from the command line, driving the real binary ($VMSNAP_CLI): add (with
# --parent, --snapfile, labels), ls and inspect (tables and --json), refs by id, name and
# prefix (too short, unknown), rm with dependents (refused, ordered, --force), verify,
# --root before or after the verb and $VMSNAP_ROOT, exit codes 0 / 1 / 2, --help per verb.
# Every check runs; the test fails if any did.
set -u

if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "${VMSNAP_CLI:-}" ]; then
        echo "snapshot-cli: VMSNAP_CLI is unset or not an executable; skipping"
        exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
        echo "snapshot-cli: python3 is needed to make memory files and read --json; skipping"
        exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-snapshot-cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
R="$T/root"

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}
run() {
        "$VMSNAP_CLI" "$@" >"$T/out" 2>"$T/err"
        rc=$?
}
expect() {
        local want=$1
        shift
        run "$@"
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
check_json() {
        local got
        got=$(json "$1" 2>&1)
        [ "$got" = "True" ] || fail "json check '$1' is '$got' for: $(head -c 600 "$T/out")"
}
err_has() {
        grep -q -- "$1" "$T/err" || fail "stderr lacks '$1': $(head -c 400 "$T/err")"
}
out_has() {
        grep -q -- "$1" "$T/out" || fail "stdout lacks '$1': $(head -c 400 "$T/out")"
}

python3 - <<'PY'
import random
random.seed(7)
b = bytearray(2 << 20)
for i in range(0, len(b), 4096 * 5):
    b[i:i + 4096] = random.randbytes(4096)
open("mem0", "wb").write(b)
for i in range(0, len(b), 4096 * 17):
    b[i:i + 4096] = random.randbytes(4096)
open("mem1", "wb").write(b)
open("state", "wb").write(b"device state\n")
PY

S=(snapshot --root "$R")

# ---- add, ls, inspect ------------------------------------------------------------------
expect 0 "${S[@]}" add mem0 --name base --kind template --vmm qemu --vmm-version 7.2.0 \
        --vcpus 2 --snapfile state --label team=ml --description "the base" --json
check_json 'd["name"] == "base" and d["kind"] == "template" and d["generation"] == 0'
check_json 'd["memory"] == 2 << 20 and d["vcpus"] == 2 and d["labels"] == {"team": "ml"}'
base=$(json 'd["id"]')
expect 0 "${S[@]}" add mem1 --name child --parent base
out_has "generation 1"
expect 0 "${S[@]}" ls --json
check_json 'len(d) == 2 and d[1]["parent"] == "'"$base"'" and d[1]["vmm"]["type"] == "qemu"'
child=$(json 'd[1]["id"]')
expect 0 "${S[@]}" ls
out_has "^ID"
out_has "base"
expect 0 "${S[@]}" ls --kind template --json
check_json 'len(d) == 1'
expect 0 "${S[@]}" inspect child --json
check_json 'd[0]["generation"] == 1 and any(f["name"] == "memfile.header" for f in d[0]["files"])'
check_json 'all(f["checksum"].startswith("xxh3-128:") for f in d[0]["files"])'
expect 0 "${S[@]}" inspect base
out_has "snapfile"
out_has "child snapshot $child (child)"

# ---- refs -------------------------------------------------------------------------------
expect 0 "${S[@]}" inspect "${child:0:8}" --json
check_json 'd[0]["id"] == "'"$child"'"'
expect 0 "${S[@]}" inspect "$(echo "$child" | tr a-f A-F)" --json
expect 1 "${S[@]}" inspect "${child:0:2}"
err_has "at least 3"
expect 1 "${S[@]}" inspect nosuch
err_has "no snapshot matches 'nosuch'"
# (ambiguous prefixes need chosen ids: tests/unit/test-store.c test_refs covers them)

# ---- verify, rm -------------------------------------------------------------------------
expect 0 "${S[@]}" verify base child
out_has "ok $base (base)"
expect 1 "${S[@]}" rm base
err_has "needed by 1 dependent: child snapshot $child (child)"
expect 0 "${S[@]}" rm base child --json # children first, in one command
check_json 'len(d["deleted"]) == 2 and d["failed"] == []'
expect 0 "${S[@]}" add mem0 --name base2
expect 0 "${S[@]}" add mem1 --name child2 --parent base2
expect 0 "${S[@]}" rm base2 --force
expect 0 "${S[@]}" verify child2
expect 1 "${S[@]}" rm nosuch
err_has "nosuch"
# a ref with a control character is refused, and never resolves to the name before it
expect 0 "${S[@]}" add mem0 --name dup
expect 1 "${S[@]}" rm $'dup\tx'
err_has "control character"
expect 1 "${S[@]}" rm dup $'dup\n'
err_has "control character"
expect 0 "${S[@]}" inspect dup
expect 0 "${S[@]}" rm dup

# ---- roots, usage errors, help ------------------------------------------------------------
expect 0 snapshot ls --root "$R" --json
check_json 'any(x["name"] == "child2" for x in d)'
VMSNAP_ROOT="$R" expect 0 snapshot ls --json
check_json 'any(x["name"] == "child2" for x in d)'
expect 0 snapshot --root="$R" ls
expect 2 "${S[@]}"
expect 2 "${S[@]}" frobnicate
expect 2 "${S[@]}" ls --bogus
expect 2 "${S[@]}" ls --force
err_has "does not apply"
expect 2 "${S[@]}" add mem0
err_has "--name is required"
expect 2 "${S[@]}" add mem0 --name x --kind vm
expect 2 "${S[@]}" inspect
expect 1 "${S[@]}" add mem0 --name "bad name"
err_has "not a valid name"
expect 1 "${S[@]}" add mem0 --name child2
err_has "already used"
expect 1 "${S[@]}" add /nonexistent --name nothere
expect 0 "${S[@]}" ls --all --json
check_json 'not any(x["name"] == "nothere" for x in d) and all(x["state"] == "ready" for x in d)'
expect 0 snapshot --help
out_has "reindex"
for verb in ls inspect add rm export import gc reindex verify; do
        expect 0 "${S[@]}" "$verb" --help
        out_has "usage: vmsnap snapshot $verb"
done

if [ "$failures" -ne 0 ]; then
        echo "snapshot-cli: $failures check(s) failed"
        exit 1
fi
echo "snapshot-cli: all checks passed"
