#!/bin/bash
# `vmsnap mem` from the command line, driving the real binary ($VMSNAP_CLI): process, diff
# (content and sparse sources), merge, materialize, verify, inspect on small deterministic
# memory files; --json output parsed with python3; exit codes 0 (ok), 1 (failure, message
# names the file), 2 (usage error); --help. Every check runs; the test fails if any did.
set -u

if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "${VMSNAP_CLI:-}" ]; then
        echo "mem-cli: VMSNAP_CLI is unset or not an executable (${VMSNAP_CLI:-unset}); skipping"
        exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
        echo "mem-cli: python3 is needed to make memory files and read --json; skipping"
        exit 77
fi

# Absolute, since the test runs inside its scratch directory.
VMSNAP_CLI=$(cd "$(dirname "$VMSNAP_CLI")" && pwd)/$(basename "$VMSNAP_CLI")

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-mem-cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}

# run ARGS...: runs the CLI with stdout in $T/out and stderr in $T/err; sets $rc.
run() {
        "$VMSNAP_CLI" "$@" >"$T/out" 2>"$T/err"
        rc=$?
}

# expect RC ARGS...: runs the CLI and checks its exit code.
expect() {
        local want=$1
        shift
        run "$@"
        if [ "$rc" != "$want" ]; then
                fail "vmsnap $* exited $rc, want $want; stderr: $(head -c 200 "$T/err")"
                return 1
        fi
        return 0
}

# json EXPR: evaluates a Python expression over the JSON document in $T/out (as `d`).
json() {
        python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$T/out" "$1"
}

# check_json EXPR: fails unless EXPR is true for the JSON in $T/out.
check_json() {
        local got
        got=$(json "$1" 2>&1)
        [ "$got" = "True" ] || fail "json check '$1' is '$got' for: $(head -c 600 "$T/out")"
}

# err_has TEXT: fails unless stderr of the last run mentions TEXT.
err_has() {
        grep -qF -- "$1" "$T/err" || fail "stderr does not mention '$1': $(head -c 600 "$T/err")"
}

same_file() {
        cmp -s "$1" "$2" || fail "$1 and $2 differ"
}

# ---- deterministic memory files ----------------------------------------------------------
# mem0: 256 blocks, every 4th block zero.  mem1: mem0 with blocks 8 and 10..17 rewritten and
# block 21 written to zeros.  dirty.raw: a Firecracker-style Diff file over mem1 (only blocks
# 30, 33 and 255 are data, everything else a hole; 33 is written with zeros); mem2 is mem1
# with those writes.  big.raw: 8 MiB for 2 MiB blocks (blocks 0 and 2 data).
python3 - <<'EOF' || { echo "mem-cli: cannot make memory files"; exit 1; }
import os, random
BS = 4096
def rnd(seed, i):
    b = bytearray(random.Random(seed * 100003 + i).randbytes(BS))
    b[0] |= 1
    return bytes(b)
mem0 = [b'\0' * BS if i % 4 == 0 else rnd(0, i) for i in range(256)]
mem1 = list(mem0)
for i in [8] + list(range(10, 18)):
    mem1[i] = rnd(1, i)
mem1[21] = b'\0' * BS
mem2 = list(mem1)
dirty = {30: rnd(2, 30), 33: b'\0' * BS, 255: rnd(2, 255)}
for i, blk in dirty.items():
    mem2[i] = blk
for name, m in (('mem0.raw', mem0), ('mem1.raw', mem1), ('mem2.raw', mem2)):
    with open(name, 'wb') as f:
        f.write(b''.join(m))
with open('dirty.raw', 'wb') as f:
    f.truncate(256 * BS)
    for i, blk in dirty.items():
        f.seek(i * BS)
        f.write(blk)
with open('big.raw', 'wb') as f:
    f.truncate(8 << 20)
    for i in (0, 2):
        f.seek(i << 21)
        f.write(random.Random(i).randbytes(2 << 20))
with open('odd.raw', 'wb') as f:
    f.write(b'\x01' * (10 * BS + 100))
EOF

# A Firecracker Diff file is only meaningful where holes are visible to SEEK_DATA.
if ! python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
sys.exit(0 if os.lseek(fd, 0, os.SEEK_DATA) == 30 * 4096 else 1)' dirty.raw 2>/dev/null; then
        echo "mem-cli: this filesystem does not keep holes (SEEK_DATA); skipping"
        exit 77
fi

# ---- help and usage errors ---------------------------------------------------------------
verbs="process diff merge materialize verify inspect"
if expect 0 --help; then
        grep -q "mem" "$T/out" || fail "vmsnap --help does not list the mem command"
fi
if expect 0 mem --help; then
        for v in $verbs; do
                grep -qw "$v" "$T/out" || fail "vmsnap mem --help does not mention '$v'"
        done
        grep -q -- "--json" "$T/out" || fail "vmsnap mem --help does not mention --json"
        grep -q -- "--source" "$T/out" || fail "vmsnap mem --help does not mention --source"
fi
for v in $verbs; do
        expect 0 mem "$v" --help && { grep -qw "$v" "$T/out" ||
                fail "vmsnap mem $v --help does not mention '$v'"; }
done

expect 2 mem
expect 2 frobnicate
expect 2 mem frobnicate
expect 2 mem process mem0.raw
expect 2 mem process mem0.raw a b
expect 2 mem diff mem1.raw snap
expect 2 mem diff mem1.raw --parent snap
expect 2 mem merge
expect 2 mem materialize snap
expect 2 mem verify
expect 2 mem inspect
expect 2 mem verify --frobnicate snap
expect 2 mem diff mem1.raw snap --parent snap --source nonsense
# A block size that is not a number is a usage error, not the default.
expect 2 mem process --block-size abc mem0.raw bs-abc
[ -e bs-abc/memfile.header ] && fail "process --block-size abc made a snapshot"
run mem process --block-size 1000 mem0.raw bs-1000
[ "$rc" = 1 ] || [ "$rc" = 2 ] || fail "process --block-size 1000 exited $rc, want 1 or 2"
[ -e bs-1000/memfile.header ] && fail "process --block-size 1000 made a snapshot"

# ---- process, inspect, materialize ---------------------------------------------------------
if expect 0 mem process --json mem0.raw snap; then
        check_json "d['op'] == 'process' and d['generation'] == 0"
        check_json "d['data_blocks'] == 192 and d['zero_blocks'] == 64 and d['same_blocks'] == 0"
        check_json "d['bytes_written'] == 192 * 4096 and d['merged'] is False"
        check_json "len(d['build_id']) == 36 and d['build_id'].count('-') == 4"
        build0=$(json "d['build_id']")
fi
if expect 0 mem process mem0.raw snap-text; then
        grep -q "generation 0" "$T/out" ||
                fail "process without --json does not report the generation: $(cat "$T/out")"
fi
if expect 0 mem inspect --json snap; then
        check_json "d['version'] == 2 and d['size'] == 256 * 4096 and d['block_size'] == 4096"
        check_json "d['generation'] == 0 and d['zero_bytes'] + d['data_bytes'] == d['size']"
        check_json "d['zero_bytes'] == 64 * 4096 and len(d['builds']) == 1"
        check_json "d['builds'][0]['id'] == d['build_id'] == '${build0:-}'"
fi
expect 0 mem inspect snap && { grep -q "generation" "$T/out" ||
        fail "inspect prints no generation: $(cat "$T/out")"; }
expect 0 mem materialize snap out0.raw && same_file out0.raw mem0.raw
expect 0 mem verify snap && { grep -q "ok" "$T/out" || fail "verify prints no ok"; }

# Refusals (exit 1, a message that names what is wrong).
expect 1 mem process mem0.raw snap && err_has "snap"
expect 1 mem process odd.raw odd-snap && err_has "odd.raw"
[ -e odd-snap/memfile.header ] && fail "process of a ragged file left a header"
expect 1 mem verify no-such-dir && err_has "no-such-dir"
expect 1 mem inspect no-such-dir && err_has "no-such-dir"
expect 1 mem diff odd.raw snap --parent snap && err_has "odd.raw"

# ---- diff (content), diff (sparse) into a new directory, merge -----------------------------
if expect 0 mem diff --json mem1.raw snap --parent snap; then
        check_json "d['op'] == 'diff' and d['generation'] == 1 and d['data_blocks'] == 9"
        check_json "d['zero_blocks'] >= 1 and d['build_id'] != '${build0:-}'"
fi
expect 0 mem materialize snap out1.raw && same_file out1.raw mem1.raw

if expect 0 mem diff --json --source sparse dirty.raw snap2 --parent snap; then
        check_json "d['generation'] == 2 and d['data_blocks'] == 2"
        check_json "d['bytes_scanned'] < 256 * 4096"
fi
expect 0 mem materialize snap2 out2.raw && same_file out2.raw mem2.raw
expect 0 mem materialize snap out1b.raw && same_file out1b.raw mem1.raw # parent unchanged
if expect 0 mem inspect --json snap2; then
        check_json "d['generation'] == 2 and len(d['builds']) == 3"
fi
expect 0 mem verify snap2

if expect 0 mem merge --json snap2; then
        check_json "d['op'] == 'merge' and d['generation'] == 0"
fi
expect 0 mem inspect --json snap2 && check_json "d['generation'] == 0 and len(d['builds']) == 1"
expect 0 mem materialize snap2 out3.raw && same_file out3.raw mem2.raw
expect 0 mem verify --json snap2 && check_json "d['ok'] is True and d['problems'] == []"

# The generation cap merges on its own.
if expect 0 mem diff --json --merge-cap 2 mem2.raw snap --parent snap; then
        check_json "d['merged'] is True and d['generation'] == 0"
fi
expect 0 mem materialize snap out4.raw && same_file out4.raw mem2.raw

# ---- a corrupt snapshot ----------------------------------------------------------------------
diff_file=$(cd snap2 && ls memfile.* | grep -v -e '\.hashes$' -e '^memfile\.header$' | head -n 1)
if [ -z "$diff_file" ]; then
        fail "snap2 holds no diff file"
else
        python3 - "snap2/$diff_file" <<'EOF'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(4096 + 7)
    b = f.read(1)
    f.seek(4096 + 7)
    f.write(bytes([b[0] ^ 0xff]))
EOF
        expect 1 mem verify snap2 && err_has "$diff_file" && err_has "4096"
        if expect 1 mem verify --json snap2; then
                check_json "d['ok'] is False and len(d['problems']) == 1"
                check_json "'$diff_file' in d['problems'][0]"
        fi
        truncate -s -4096 "snap2/$diff_file"
        expect 1 mem verify snap2 && err_has "$diff_file"
        expect 1 mem materialize snap2 out5.raw && err_has "$diff_file"
        [ -e out5.raw ] && fail "materialize of a damaged snapshot left its output"
fi

# ---- 2 MiB blocks ----------------------------------------------------------------------------
if expect 0 mem process --json --block-size 2097152 big.raw snap-big; then
        check_json "d['data_blocks'] == 2 and d['zero_blocks'] == 2"
fi
expect 0 mem inspect --json snap-big && check_json "d['block_size'] == 2097152"
expect 0 mem materialize snap-big out-big.raw && same_file out-big.raw big.raw
expect 0 mem verify snap-big

# ---- a FIFO or a symlink in place of a snapshot file: refused at once, never waited on ----
# (`timeout` turns a hang of the old code into a failure: exit 124)
cp -a snap-big snap-fifo
hdr=snap-fifo/memfile.header
for verb in inspect verify; do
        rm -f "$hdr" && mkfifo "$hdr"
        timeout 60 "$VMSNAP_CLI" mem "$verb" snap-fifo >"$T/out" 2>"$T/err"
        rc=$?
        [ "$rc" = 1 ] || fail "mem $verb with a FIFO header exited $rc, want 1"
        err_has "not a regular file"
done
timeout 60 "$VMSNAP_CLI" mem materialize snap-fifo out-fifo.raw >"$T/out" 2>"$T/err"
[ "$?" = 1 ] || fail "mem materialize with a FIFO header did not fail"
[ -e out-fifo.raw ] && fail "materialize with a FIFO header left its output"
rm -f "$hdr" && ln -s "$PWD/snap-big/memfile.header" "$hdr"
expect 1 mem inspect snap-fifo && err_has "symlink"

if [ "$failures" -gt 0 ]; then
        echo "mem-cli: $failures check(s) failed"
        exit 1
fi
echo "mem-cli: all checks passed"
exit 0
