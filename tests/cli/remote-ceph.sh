#!/bin/bash
# The remote store against a real Ceph RGW (scripts/ceph.sh, started once here): push,
# second push uploads only new chunks (counted in the bucket), pull on a second "host" with
# every file equal, ls/rm/gc --remote, a corrupt chunk and a missing chunk refused naming
# the chunk with nothing imported, a hostile manifest that neither hides the others from
# ls nor lets gc delete, push and pull SIGKILLed mid-transfer leaving nothing visible and
# resumed afterwards, the chunk cache (shared chunks and a second pull fetch nothing, a
# cache file changed on disk is refetched, private modes), lazy restore through uffd-serve
# and uffd-peer (memory fetched on fault, byte-exact; a second one fetches nothing from the
# bucket; a corrupt chunk kills the VMM, named, never served), lazy restore through the
# FUSE memory file of mem-serve (a read fetches only its chunks, byte-exact, writes refused,
# a corrupt chunk is EIO and named; concurrent readers straddling chunk boundaries while
# the status file is opened and closed hundreds of times), private config files, the REST
# routes of vmsnapd (push, ls, pull, rm, gc; 502 naming a corrupt chunk, also for a spawn
# that pulls; 404/400/409 refusals), and the secret key never printed or logged.
set -u

if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "${VMSNAP_CLI:-}" ]; then
        echo "remote-ceph: VMSNAP_CLI is unset or not an executable; skipping"
        exit 77
fi
for tool in ceph-mon ceph-osd radosgw curl python3 cmp; do
        if ! command -v "$tool" >/dev/null 2>&1; then
                echo "remote-ceph: $tool is needed (scripts/setup.sh installs it); skipping"
                exit 77
        fi
done
SRC=${VMSNAP_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-remote-ceph.XXXXXX") || exit 1
cleanup() {
        umount -l "$T"/mnt* 2>/dev/null
        bash "$SRC/scripts/ceph.sh" stop "$T/ceph" >/dev/null 2>&1
        rm -rf "$T"
}
trap cleanup EXIT
cd "$T" || exit 1

if ! bash "$SRC/scripts/ceph.sh" start "$T/ceph" >"$T/ceph.out" 2>&1; then
        echo "FAIL: scripts/ceph.sh start failed:" >&2
        tail -20 "$T/ceph.out" >&2
        tail -20 "$T"/ceph/log/*.log >&2 2>/dev/null
        exit 1
fi
set -a
# shellcheck disable=SC1091
. "$T/ceph/s3.env"
set +a

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
        wait 2>/dev/null
        cat "$T/out" "$T/err" >>"$T/all-output"
        if [ "$rc" != "$want" ]; then
                fail "vmsnap $* exited $rc, want $want; stderr: $(head -c 400 "$T/err")"
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
# s3 ARGS...: curl against the bucket, signed as any S3 client would
s3() {
        curl -sS --aws-sigv4 "aws:amz:$VMSNAP_S3_REGION:s3" \
                -u "$VMSNAP_S3_ACCESS_KEY:$VMSNAP_S3_SECRET_KEY" \
                -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}
count_chunks() {
        s3 "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/?list-type=2&prefix=chunks%2F" |
                grep -o '<Key>chunks/[0-9a-f]*</Key>' | wc -l
}

python3 - <<'PY'
import random
random.seed(7)
b = bytearray(24 << 20)                  # 6 chunks, one of them all zeros
for i in range(0, len(b), 4096):
    if not (8 << 20) <= i < (12 << 20):
        b[i:i + 4096] = random.randbytes(4096)
open("mem0", "wb").write(b)
for i in range(0, 4 << 20, 4096 * 5):   # the new generation touches the first chunk only
    b[i:i + 4096] = random.randbytes(4096)
open("mem1", "wb").write(b)
for i in range(16 << 20, 20 << 20, 4096 * 3):
    b[i:i + 4096] = random.randbytes(4096)
open("mem2", "wb").write(b)
with open("state", "wb") as f:          # a sparse device-state file: 16 MiB, 2 data blocks
    f.seek(1 << 20); f.write(random.randbytes(4096))
    f.seek(13 << 20); f.write(b"tail")
    f.truncate(16 << 20)
PY

A=(snapshot --root "$T/a")
B=(snapshot --root "$T/b")
expect 0 "${A[@]}" add mem0 --name base --kind template --snapfile state
expect 0 "${A[@]}" add mem1 --name gen1 --parent base --json
gen1=$(json 'd["id"]')

# ---- push, and a second push uploads only what the bucket lacks -----------------------------
expect 0 "${A[@]}" push base --json
sent=$(json 'd["chunks_sent"]')
[ "$(json 'd["zero_chunks"]')" -ge 1 ] || fail "the zero chunk of base was not skipped"
[ "$(count_chunks)" = "$sent" ] || fail "bucket holds $(count_chunks) chunks, push said $sent"
expect 0 "${A[@]}" push base --json
[ "$(json 'd["chunks_sent"]')" = 0 ] || fail "pushing base again uploaded $(json 'd["chunks_sent"]') chunks"
before=$(count_chunks)
expect 0 "${A[@]}" push gen1 --json
sent=$(json 'd["chunks_sent"]')
total=$(json 'd["chunks"]')
after=$(count_chunks)
[ "$((after - before))" = "$sent" ] || fail "gen1: $sent chunks sent, bucket grew by $((after - before))"
[ "$sent" -lt "$total" ] || fail "gen1: all $total chunks were uploaded, none shared with base"
[ "$sent" -ge 1 ] || fail "gen1 uploaded nothing"

expect 0 "${A[@]}" ls --remote --json
[ "$(json 'sorted(x["name"] for x in d)')" = "['base', 'gen1']" ] || fail "ls --remote: $(cat "$T/out")"

# ---- pull on host B: every file equal, verified -----------------------------------------
expect 0 "${B[@]}" pull gen1 --json
[ "$(json 'd["id"]')" = "$gen1" ] || fail "pull did not keep the id"
for f in "$T/a/snapshots/$gen1"/*; do
        [ "$(basename "$f")" = snapshot.json ] && continue
        cmp -s "$f" "$T/b/snapshots/$gen1/$(basename "$f")" || fail "pulled $(basename "$f") differs"
done
fetched=$(json 'd["transfer"]["chunks_fetched"]')
[ "$fetched" -ge 1 ] && [ "$(json 'd["transfer"]["chunks_cached"]')" = 0 ] ||
        fail "first pull on B: $(json 'd["transfer"]')"
expect 0 "${B[@]}" verify gen1

# ---- the chunk cache of B: shared chunks and a second pull fetch nothing; a cached file
# changed on disk is never used ------------------------------------------------------------
expect 0 "${B[@]}" pull base --name base-b --json
[ "$(json 'd["transfer"]["chunks_cached"]')" -ge 1 ] || fail "base shares no cached chunk with gen1: $(json 'd["transfer"]')"
[ "$(json 'd["transfer"]["chunks_fetched"]')" -lt "$(json 'd["transfer"]["chunks"]')" ] ||
        fail "base: every chunk fetched again: $(json 'd["transfer"]')"
[ "$(stat -c %a "$T/b/chunk-cache")" = 700 ] || fail "chunk-cache is not 0700"
[ -z "$(find "$T/b/chunk-cache" -type f ! -perm 600)" ] || fail "a cache file is not 0600"
expect 0 "${B[@]}" rm gen1
expect 0 "${B[@]}" pull gen1 --json
[ "$(json 'd["transfer"]["chunks_fetched"]')" = 0 ] || fail "second pull of gen1 fetched: $(json 'd["transfer"]')"
[ "$(json 'd["transfer"]["chunks_cached"]')" = "$(json 'd["transfer"]["chunks"]')" ] ||
        fail "second pull of gen1 not all from the cache: $(json 'd["transfer"]')"
expect 0 "${B[@]}" rm gen1
victim=$T/b/chunk-cache/$(s3 "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/manifests/$gen1.json" | python3 -c 'import json,sys; m=json.load(sys.stdin)
print([c for f in m["files"] if f["path"].startswith("memfile.") and f["size"] > 1<<20 for c in f["chunks"] if c][0])')
[ -f "$victim" ] || fail "the chunk of gen1 to corrupt is not in B's cache: $victim"
python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(4096); b=f.read(1); f.seek(4096); f.write(bytes([b[0]^0x80]))' "$victim"
expect 0 "${B[@]}" pull gen1 --json
[ "$(json 'd["transfer"]["cache_corrupt"]')" = 1 ] && [ "$(json 'd["transfer"]["chunks_fetched"]')" = 1 ] ||
        fail "a corrupt cache file was not refetched: $(json 'd["transfer"]')"
expect 0 "${B[@]}" verify gen1
for f in "$T/a/snapshots/$gen1"/*; do
        [ "$(basename "$f")" = snapshot.json ] && continue
        cmp -s "$f" "$T/b/snapshots/$gen1/$(basename "$f")" || fail "re-pulled $(basename "$f") differs"
done
VMSNAP_CHUNK_CACHE_SIZE=bad expect 1 "${B[@]}" pull gen1 && err_has VMSNAP_CHUNK_CACHE_SIZE
[ -z "$(ls -A "$T/b/remote/staging" 2>/dev/null)" ] || fail "pull left a staging directory"

# ---- lazy restore through the page server (uffd-peer plays Firecracker, which cannot run
# here): everything but the memory first, the memory fetched on fault, every byte checked;
# a second lazy restore on the host takes every chunk from the cache -----------------------
PEER=${VMSNAP_PEER_uffd_peer:-}
# lazy_serve DIR CACHE: uffd-serve --remote-lazy on DIR, uffd-peer touching every page of
# gen1 (mem1); sets peer_rc and serve_rc, the server's output in $T/serve.out and .err
lazy_serve() {
        rm -f "$T/serve.sock"
        "$VMSNAP_CLI" uffd-serve "$1" --socket "$T/serve.sock" --remote-lazy --chunk-cache "$2" \
                --json >"$T/serve.out" 2>"$T/serve.err" &
        local spid=$!
        for _ in $(seq 100); do [ -S "$T/serve.sock" ] && break; sleep 0.1; done
        "$PEER" --socket "$T/serve.sock" --expect "$T/mem1" --threads 4 >"$T/peer.out" 2>&1
        peer_rc=$?
        wait "$spid"
        serve_rc=$?
        cat "$T/serve.out" "$T/serve.err" >>"$T/all-output"
}
lazy_json() {
        python3 -c 'import json, sys; d = json.loads(open(sys.argv[1]).read() or "{}"); print(eval(sys.argv[2]))' \
                "$T/serve.out" "$1"
}
lazy_ok=1
if [ -z "$PEER" ] || [ ! -x "$PEER" ]; then
        fail "VMSNAP_PEER_uffd_peer is not set: the lazy restore is not tested"
        lazy_ok=0
fi
L=(snapshot --root "$T/l")
if [ "$lazy_ok" = 1 ]; then
        expect 0 "${L[@]}" pull gen1 --to-dir "$T/lazy1" --json
        [ "$(json 'd["chunks_fetched"]')" -ge 1 ] || fail "lazy pull fetched no file: $(cat "$T/out")"
        memsize=$(python3 -c 'import json,sys,re; m=json.load(open(sys.argv[1]))
print(sum(f["size"] for f in m["files"] if re.fullmatch(r"memfile\.[0-9a-f-]{36}", f["path"])))' "$T/lazy1/remote-manifest.json")
        used=$(du -B1 -s "$T/lazy1" | cut -f1)
        [ "$used" -lt "$((memsize / 4))" ] || fail "lazy dir holds $used bytes of $memsize bytes of memory before the guest runs"
        expect 0 "${L[@]}" ls --all --json
        [ "$(json 'len(d)')" = 0 ] || fail "a lazy pull imported a snapshot"
        lazy_serve "$T/lazy1" "$T/l/chunk-cache"
        if [ "$peer_rc" = 77 ]; then
                fail "uffd-peer cannot run here (userfaultfd): $(cat "$T/peer.out")"
        else
                [ "$peer_rc" = 0 ] || fail "lazy restore: the peer saw wrong memory ($peer_rc): $(cat "$T/peer.out")"
                [ "$serve_rc" = 0 ] || fail "lazy restore: uffd-serve exited $serve_rc: $(tail -3 "$T/serve.err")"
                [ "$(lazy_json 'd["remote"]["chunks_fetched"]')" -ge 2 ] ||
                        fail "lazy restore fetched no memory chunk: $(cat "$T/serve.out")"
                expect 0 "${L[@]}" pull gen1 --to-dir "$T/lazy2" --json
                [ "$(json 'd["chunks_fetched"]')" = 0 ] || fail "second lazy pull fetched files: $(cat "$T/out")"
                lazy_serve "$T/lazy2" "$T/l/chunk-cache"
                [ "$peer_rc" = 0 ] && [ "$serve_rc" = 0 ] || fail "second lazy restore: peer $peer_rc, server $serve_rc"
                [ "$(lazy_json 'd.get("remote", {}).get("chunks_fetched", 0)')" = 0 ] &&
                        [ "$(lazy_json 'd["remote"]["chunks_cached"]')" -ge 2 ] ||
                        fail "second lazy restore on the host fetched chunks: $(cat "$T/serve.out")"
        fi
fi

# ---- lazy restore through the FUSE memory file (mem-serve: what a QEMU clone maps):
# nothing fetched until read, a read fetches its chunks only, every byte equal, writes
# refused; a corrupt chunk is EIO, named, never served (below) ---------------------------
fuse_ok=1
if [ ! -e /dev/fuse ] || ! command -v mountpoint >/dev/null; then
        fail "/dev/fuse or mountpoint(1) missing: the FUSE memory file is not tested"
        fuse_ok=0
fi
# mem_mount DIR CACHE MNT: mem-serve --remote-lazy DIR on MNT, waits for the mount
mem_mount() {
        mkdir -p "$3"
        "$VMSNAP_CLI" mem-serve "$1" --mount "$3" --remote-lazy --chunk-cache "$2" --json \
                >"$T/mem.out" 2>"$T/mem.err" &
        mem_pid=$!
        for _ in $(seq 100); do mountpoint -q "$3" && break; sleep 0.1; done
        mountpoint -q "$3" || fail "mem-serve did not mount: $(cat "$T/mem.err")"
}
mem_umount() {
        umount "$1" 2>/dev/null || umount -l "$1"
        wait "$mem_pid"
        mem_rc=$?
        cat "$T/mem.out" "$T/mem.err" >>"$T/all-output"
}
# mem_stderr: mem-serve's whole stderr, for a failure message (a sanitizer report is long
# and its last lines say nothing)
mem_stderr() {
        printf '\n---- mem-serve stderr (%s) ----\n%s\n---- end of mem-serve stderr ----' \
                "$T/mem.err" "$(cat "$T/mem.err")"
}
# mem_alive WHEN: fails with mem-serve's whole stderr when it is no longer running
mem_alive() {
        local state
        state=$(ps -o stat= -p "$mem_pid" 2>/dev/null)
        case $state in "" | Z*) fail "mem-serve died $1$(mem_stderr)"; return 1 ;; esac
        return 0
}
mem_status() {
        python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
                "$1/status" "$2"
}
if [ "$fuse_ok" = 1 ]; then
        expect 0 snapshot --root "$T/f" pull gen1 --to-dir "$T/lazy4"
        nonzero=$(python3 -c 'import json,sys,re; m=json.load(open(sys.argv[1]))
print(sum(1 for f in m["files"] if re.fullmatch(r"memfile\.[0-9a-f-]{36}", f["path"]) for c in f["chunks"] if c))' "$T/lazy4/remote-manifest.json")
        mem_mount "$T/lazy4" "$T/f/chunk-cache" "$T/mnt4"
        [ "$(mem_status "$T/mnt4" 'd["remote"]["chunks_fetched"]')" = 0 ] || fail "mem-serve fetched before any read"
        [ "$(stat -c %s "$T/mnt4/memory")" = "$(stat -c %s "$T/mem1")" ] || fail "memory file has the wrong size"
        # one page in the middle: only the chunks the read (and its read-ahead) covers
        off=$(( $(stat -c %s "$T/mem1") / 2 / 4096 ))
        cmp -s <(dd if="$T/mnt4/memory" bs=4096 skip="$off" count=1 2>/dev/null) \
                <(dd if="$T/mem1" bs=4096 skip="$off" count=1 2>/dev/null) || fail "a page of the FUSE memory file differs"
        mem_alive "reading one page"
        got=$(mem_status "$T/mnt4" 'd["remote"]["chunks_fetched"]')
        [ "$got" -ge 1 ] && [ "$got" -lt "$nonzero" ] ||
                fail "one page read fetched $got of $nonzero memory chunks"
        cmp -s "$T/mnt4/memory" "$T/mem1" || fail "the FUSE memory file differs from the snapshot's memory"
        python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.close(fd)' "$T/mnt4/memory" ||
                fail "an O_RDWR open of the memory file (QEMU 7.2 does it) was refused"
        ( echo x >>"$T/mnt4/memory" ) 2>/dev/null && fail "a write to the memory file was accepted"
        truncate -s 0 "$T/mnt4/memory" 2>/dev/null && fail "a truncate of the memory file was accepted"
        [ "$(mem_status "$T/mnt4" 'd["writes_refused"]')" -ge 2 ] || fail "writes were not refused by the server"
        cmp -s "$T/mnt4/memory" "$T/mem1" || fail "the memory file changed"
        mem_umount "$T/mnt4"
        [ "$mem_rc" = 0 ] || fail "mem-serve exited $mem_rc$(mem_stderr)"
        grep -q '"errors":0' "$T/mem.out" || fail "mem-serve status at exit: $(cat "$T/mem.out")"
fi
# concurrent readers on a fresh lazy mount: reads straddling every chunk boundary from
# several processes at once (each chunk fetched once, by the first read that needs it, the
# others waiting for it), while the status file is opened, read once and closed hundreds of
# times (mem-serve once replied from the status text while another worker, answering the
# RELEASE of the close, freed it: AddressSanitizer killed it, and the mount was dead)
if [ "$fuse_ok" = 1 ]; then
        expect 0 snapshot --root "$T/h" pull gen1 --to-dir "$T/lazy6"
        mem_mount "$T/lazy6" "$T/h/chunk-cache" "$T/mnt6"
        python3 - "$T/mnt6" "$T/mem1" >"$T/fuse-conc.out" 2>&1 <<'PY' || fail "concurrent reads of the FUSE files: $(cat "$T/fuse-conc.out")"
import json, os, sys
mnt, want = sys.argv[1], open(sys.argv[2], "rb").read()
chunk = 4 << 20
bounds = list(range(chunk, len(want), chunk))
def reader(i):  # every boundary, each reader starting at another one
    fd = os.open(mnt + "/memory", os.O_RDONLY)
    for b in bounds[i:] + bounds[:i]:
        for off, n in ((b - 4096, 8192), (b - 5000, 10001), (b - (1 << 20), 2 << 20)):
            got = os.pread(fd, n, off)
            assert got == want[off:off + n], "reader %d: wrong bytes at %d+%d" % (i, off, n)
    os.close(fd)
def status(i):  # one read per open, closed at once
    for _ in range(400):
        fd = os.open(mnt + "/status", os.O_RDONLY)
        json.loads(os.read(fd, 65536))
        os.close(fd)
pids = []
for i in range(8):
    pid = os.fork()
    if pid == 0:
        try:
            (reader if i < 4 else status)(i % 4)
            os._exit(0)
        except BaseException as e:
            print("process %d: %r" % (i, e), file=sys.stderr)
            os._exit(1)
    pids.append(pid)
sys.exit(1 if any(os.waitpid(p, 0)[1] for p in pids) else 0)
PY
        if mem_alive "under concurrent reads"; then
                got=$(mem_status "$T/mnt6" 'd["remote"]["chunks_fetched"]')
                [ "$got" -le "$nonzero" ] || fail "concurrent reads fetched $got chunks, of $nonzero"
                cmp -s "$T/mnt6/memory" "$T/mem1" || fail "the FUSE memory file differs after concurrent reads"
        fi
        mem_umount "$T/mnt6"
        [ "$mem_rc" = 0 ] || fail "mem-serve exited $mem_rc after concurrent reads$(mem_stderr)"
        grep -q '"errors":0' "$T/mem.out" || fail "mem-serve status at exit: $(cat "$T/mem.out")"
fi

# ---- rm --remote refuses a parent; a corrupt and a missing chunk are refused, named ----
expect 1 "${A[@]}" rm --remote base && err_has "parent or template of $gen1"
manifest=$(s3 "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/manifests/$gen1.json")
chunk=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1])
print([c for f in m["files"] if f["path"].startswith("memfile.") and f["size"] > 1<<20 for c in f["chunks"] if c][0])' "$manifest")
s3 -o "$T/chunk.orig" "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/chunks/$chunk"
python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[100]^=1; open(sys.argv[2],"wb").write(b)' \
        "$T/chunk.orig" "$T/chunk.bad"
s3 -X PUT --data-binary @"$T/chunk.bad" "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/chunks/$chunk" >/dev/null
C=(snapshot --root "$T/c")
expect 1 "${C[@]}" pull gen1 && err_has "chunks/$chunk: corrupt chunk" && err_has "SHA-256 mismatch"
if [ "$lazy_ok" = 1 ]; then # a lazy restore meets the corrupt chunk on fault: the VMM dies
        M=(snapshot --root "$T/m")
        expect 0 "${M[@]}" pull gen1 --to-dir "$T/lazy3"
        lazy_serve "$T/lazy3" "$T/m/chunk-cache"
        [ "$peer_rc" = 137 ] || fail "lazy restore of a corrupt chunk: the peer was not killed ($peer_rc): $(cat "$T/peer.out")"
        [ "$serve_rc" = 1 ] || fail "lazy restore of a corrupt chunk: uffd-serve exited $serve_rc"
        grep -q "chunks/$chunk: corrupt chunk of memfile\..* SHA-256 mismatch" "$T/serve.err" ||
                fail "uffd-serve does not name the corrupt chunk: $(tail -3 "$T/serve.err")"
        grep -q "mismatch" "$T/peer.out" && fail "the peer saw a wrong byte: $(cat "$T/peer.out")"
        [ ! -e "$T/m/chunk-cache/$chunk" ] || fail "the corrupt chunk was cached"
fi
if [ "$fuse_ok" = 1 ]; then # the FUSE memory file: EIO for the corrupt chunk, never its bytes
        expect 0 snapshot --root "$T/g" pull gen1 --to-dir "$T/lazy5"
        mem_mount "$T/lazy5" "$T/g/chunk-cache" "$T/mnt5"
        python3 - "$T/mnt5/memory" "$T/mem1" >"$T/fuse-read.out" 2>&1 <<'PY' || fail "FUSE memory file with a corrupt chunk: $(cat "$T/fuse-read.out")"
import errno, os, sys
fd, want = os.open(sys.argv[1], os.O_RDONLY), open(sys.argv[2], "rb").read()
eio = 0
for off in range(0, len(want), 1 << 20):
    try:
        got = os.pread(fd, 1 << 20, off)
    except OSError as e:
        assert e.errno == errno.EIO, e
        eio += 1
        continue
    assert got == want[off:off + len(got)], "wrong bytes served at %d" % off
assert eio >= 1, "no read failed"
PY
        [ "$(mem_status "$T/mnt5" 'd["errors"]')" -ge 1 ] || fail "the FUSE status counts no failed read"
        mem_status "$T/mnt5" 'd["error"]' | grep -q "chunks/$chunk: corrupt chunk of memfile\..* SHA-256 mismatch" ||
                fail "the FUSE status does not name the corrupt chunk: $(cat "$T/mnt5/status")"
        mem_umount "$T/mnt5"
        [ "$mem_rc" = 1 ] || fail "mem-serve with a failed read exited $mem_rc$(mem_stderr)"
        grep -q "chunks/$chunk: corrupt chunk" "$T/mem.err" || fail "mem-serve does not name the corrupt chunk on stderr"
        [ ! -e "$T/g/chunk-cache/$chunk" ] || fail "the corrupt chunk was cached"
fi
s3 -X DELETE "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/chunks/$chunk" >/dev/null
expect 1 "${C[@]}" pull gen1 && err_has "chunk $chunk" && err_has "missing from the bucket"
expect 0 "${C[@]}" ls --json
[ "$(json 'len(d)')" = 0 ] || fail "a refused pull left a snapshot: $(cat "$T/out")"
[ -z "$(ls -A "$T/c/remote/staging" 2>/dev/null)" ] || fail "a refused pull left staging files"
# a push repairs the bucket (the chunk is uploaded again)
expect 0 "${A[@]}" push gen1 --json
[ "$(json 'd["chunks_sent"]')" = 1 ] || fail "repairing push sent $(json 'd["chunks_sent"]') chunks, want 1"
expect 0 "${C[@]}" pull gen1

# ---- a hostile manifest: listed as a problem, gc refuses to delete anything -----------
bad=0f0f0f0f-0000-4000-8000-000000000000
printf '{"format":"vmsnap-remote","version":1,"id":"%s","files":[{"path":"../../x"}]}' "$bad" |
        s3 -X PUT --data-binary @- "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/manifests/$bad.json" >/dev/null
expect 0 "${A[@]}" ls --remote
grep -q "manifests/$bad.json" "$T/out" || fail "ls --remote hides the bad manifest"
grep -q gen1 "$T/out" || fail "a bad manifest hid gen1 from ls --remote"
expect 1 "${A[@]}" gc --remote --grace 0 && err_has "refusing to collect garbage"
expect 1 "${A[@]}" pull "$bad" && err_has "manifests/$bad.json"
s3 -X DELETE "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/manifests/$bad.json" >/dev/null

# ---- killed push and pull: nothing visible; the next run resumes ---------------------------
expect 0 "${A[@]}" add mem2 --name gen2 --parent gen1 --json
gen2=$(json 'd["id"]')
before=$(count_chunks)
VMSNAP_CRASH_AT=remote.push.chunks expect 137 "${A[@]}" push gen2
expect 0 "${A[@]}" ls --remote --json
[ "$(json '[x["id"] for x in d].count("'"$gen2"'")')" = 0 ] || fail "a killed push is visible"
[ "$(count_chunks)" -gt "$before" ] || fail "the killed push uploaded no chunk (test is void)"
expect 0 "${A[@]}" push gen2 --json
[ "$(json 'd["chunks_sent"]')" = 0 ] || fail "resumed push re-sent $(json 'd["chunks_sent"]') chunks"
D=(snapshot --root "$T/d")
VMSNAP_CRASH_AT=remote.pull.chunk expect 137 "${D[@]}" pull gen2
expect 0 "${D[@]}" ls --all --json
[ "$(json 'len(d)')" = 0 ] || fail "a killed pull left a row: $(cat "$T/out")"
expect 0 "${D[@]}" pull gen2
[ "$(ls "$T/d/remote/staging" | wc -l)" = 0 ] || fail "the dead pull's staging dir was not swept"

# ---- rm and gc --remote ---------------------------------------------------------------------
expect 0 "${A[@]}" rm --remote gen2 --json
[ "$(json 'd["deleted"][0]')" = "$gen2" ] || fail "rm --remote --json does not name gen2 deleted"
expect 0 "${A[@]}" gc --remote --json
[ "$(json 'd["chunks_removed"]')" = 0 ] || fail "gc removed chunks within the grace period"
[ "$(json 'd["chunks_young"]')" -ge 1 ] || fail "gc saw no young unreferenced chunk"
n=$(count_chunks)
expect 0 "${A[@]}" gc --remote --grace 0 --json
removed=$(json 'd["chunks_removed"]')
[ "$removed" -ge 1 ] || fail "gc --grace 0 removed nothing"
[ "$(count_chunks)" = "$((n - removed))" ] || fail "gc said $removed removed; bucket went $n -> $(count_chunks)"
E=(snapshot --root "$T/e")
expect 0 "${E[@]}" pull gen1 # everything gen1 needs survived gc
expect 0 "${A[@]}" rm --remote gen1
expect 0 "${A[@]}" rm --remote base

# ---- config files: private only; the secret is never printed -------------------------------
mkdir -p "$T/a/remotes"
printf 'endpoint = %s\nbucket = %s\naccess_key = %s\nsecret_key = %s\n' "$VMSNAP_S3_ENDPOINT" \
        "$VMSNAP_S3_BUCKET" "$VMSNAP_S3_ACCESS_KEY" "$VMSNAP_S3_SECRET_KEY" >"$T/a/remotes/lab.conf"
chmod 644 "$T/a/remotes/lab.conf"
expect 1 "${A[@]}" ls --remote=lab && err_has "chmod 600"
chmod 600 "$T/a/remotes/lab.conf"
env -u VMSNAP_S3_ENDPOINT "$VMSNAP_CLI" "${A[@]}" ls --remote=lab >"$T/out" 2>"$T/err" ||
        fail "ls --remote=lab: $(cat "$T/err")"
printf 'endpoint = %s\nbucket = %s\naccess_key = %s\nsecret_key = wrong\n' "$VMSNAP_S3_ENDPOINT" \
        "$VMSNAP_S3_BUCKET" "$VMSNAP_S3_ACCESS_KEY" >"$T/a/remotes/lab.conf"
expect 1 "${A[@]}" push base --remote=lab && err_has "HTTP 403"

# ---- the REST routes of vmsnapd (docs/api.md "The remote store") ----------------------------
VMSNAPD=${VMSNAP_BUILD:-}/vmsnapd
R=(snapshot --root "$T/r")
expect 0 "${R[@]}" add mem1 --name rbase --kind template --snapfile state --json
rbase=$(json 'd["id"]')
mkdir -p "$T/r/remotes" && cp "$T/a/remotes/lab.conf" "$T/r/remotes/lab.conf"
"$VMSNAPD" --root "$T/r" --no-tcp --insecure-no-jail --tick-interval 0 --mem-root "$T/rmem" \
        >"$T/vmsnapd.log" 2>&1 &
dpid=$!
for _ in $(seq 200); do [ -S "$T/r/vmsnapd.sock" ] && break; sleep 0.1; done
# api METHOD PATH [BODY]: status in $status, body in $T/out
api() {
        status=$(curl -sS --unix-socket "$T/r/vmsnapd.sock" -o "$T/out" -w '%{http_code}' \
                -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "http://localhost$2")
        cat "$T/out" >>"$T/all-output"
}
want() { # STATUS [CODE] WHAT
        local code=${3:+$2} what=${3:-$2}
        [ "$status" = "$1" ] || { fail "$what: HTTP $status, want $1: $(head -c 300 "$T/out")"; return 1; }
        [ -z "$code" ] || [ "$(json 'd["error"]["code"]')" = "$code" ] ||
                { fail "$what: code $(json 'd["error"]["code"]'), want $code"; return 1; }
}
api POST /v1/remote/snapshots '{"snapshot":"rbase"}'
want 200 "push rbase" && [ "$(json 'sorted(d)')" = "['bytes', 'chunks', 'chunks_sent', 'id', 'retries', 'zero_chunks']" ] ||
        fail "push answer: $(cat "$T/out")"
api GET /v1/remote/snapshots
want 200 "list" && [ "$(json '[x["name"] for x in d["snapshots"] if x["id"] == "'"$rbase"'"]')" = "['rbase']" ] ||
        fail "list lacks rbase: $(cat "$T/out")"
api POST /v1/remote/snapshots/rbase/pull '{}'
want 409 already_exists "pull of what is here"
api DELETE /v1/snapshots/rbase
want 204 "local delete"
# the 409 pull above fetched (and cached) every chunk: empty the cache, so that the pulls
# below meet the bucket's bytes
rm -rf "$T/r/chunk-cache"
# a corrupt chunk: 502 naming it, nothing imported; restored, the pull succeeds
manifest=$(s3 "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/manifests/$rbase.json")
chunk=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1])
print([c for f in m["files"] if f["path"].startswith("memfile.") and f["size"] > 1<<20 for c in f["chunks"] if c][0])' "$manifest")
s3 -o "$T/chunk.orig" "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/chunks/$chunk"
python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[7]^=1; open(sys.argv[2],"wb").write(b)' \
        "$T/chunk.orig" "$T/chunk.bad"
s3 -X PUT --data-binary @"$T/chunk.bad" "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/chunks/$chunk" >/dev/null
api POST /v1/remote/snapshots/rbase/pull '{}'
want 502 remote_error "pull of a corrupt chunk" && grep -q "chunks/$chunk: corrupt chunk" "$T/out" ||
        fail "the 502 does not name the chunk: $(cat "$T/out")"
api POST /v1/snapshots/rbase/sandboxes '{}' # spawn of a template that is not here pulls it
want 502 remote_error "spawn pulling a corrupt chunk" && grep -q "chunks/$chunk" "$T/out" ||
        fail "the spawn's 502 does not name the chunk: $(cat "$T/out")"
s3 -X DELETE "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/chunks/$chunk" >/dev/null
api POST /v1/remote/snapshots/rbase/pull '{}'
want 502 remote_error "pull of a missing chunk" && grep -q "chunk $chunk.*missing from the bucket" "$T/out" ||
        fail "the 502 does not name the missing chunk: $(cat "$T/out")"
api GET /v1/snapshots/rbase
want 404 not_found "a refused pull left a snapshot"
s3 -X PUT --data-binary @"$T/chunk.orig" "$VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET/chunks/$chunk" >/dev/null
api POST /v1/remote/snapshots/rbase/pull '{"name":"rbase-2"}'
want 201 "pull" && [ "$(json 'd["id"]')" = "$rbase" ] && [ "$(json 'd["name"]')" = rbase-2 ] ||
        fail "pull answer: $(cat "$T/out")"
# the daemon's pulls go through its chunk cache too: pulled again, nothing is fetched
api DELETE /v1/snapshots/rbase-2
want 204 "local delete of rbase-2"
api POST /v1/remote/snapshots/rbase/pull '{}'
want 201 "pull from the cache"
grep -q "pulled $rbase: 0 chunks fetched, [1-9][0-9]* from the chunk cache" "$T/vmsnapd.log" ||
        fail "the daemon's second pull fetched chunks: $(grep "pulled $rbase" "$T/vmsnapd.log")"
# refusals: bad refs and bodies, unknown and refused remotes
api POST /v1/remote/snapshots '{"snapshot":"no-such"}'
want 404 not_found "push of an unknown snapshot"
api POST /v1/remote/snapshots '{"snap":"rbase"}'
want 400 invalid_field "push with an unknown field"
api DELETE /v1/remote/snapshots/no-such
want 404 not_found "rm of an unknown remote snapshot"
api POST /v1/remote/snapshots/no-such/pull ''
want 404 not_found "pull of an unknown remote snapshot"
api POST /v1/snapshots/no-such/sandboxes '{}'
want 404 not_found "spawn of a template neither here nor remote"
api GET '/v1/remote/snapshots?remote=nope'
want 404 not_found "an unknown ?remote="
api GET '/v1/remote/snapshots?remote=b.d'
want 400 invalid_query "a bad ?remote= name"
api GET '/v1/remote/snapshots?remote=lab' # lab.conf has a wrong secret now
want 502 remote_error "wrong credentials" && grep -q "HTTP 403" "$T/out" || fail "403 not said: $(cat "$T/out")"
api POST /v1/remote/gc '{"dry_run":true,"grace_seconds":0}'
want 200 "gc" && [ "$(json 'd["dry_run"]')" = True ] || fail "gc answer: $(cat "$T/out")"
api DELETE /v1/remote/snapshots/rbase
want 204 "remote rm"
kill -TERM "$dpid" && wait "$dpid"
grep -q "remote store: $VMSNAP_S3_ENDPOINT/$VMSNAP_S3_BUCKET" "$T/vmsnapd.log" ||
        fail "vmsnapd did not log its remote: $(tail -5 "$T/vmsnapd.log")"
cat "$T/vmsnapd.log" >>"$T/all-output"
if grep -q -- "$VMSNAP_S3_SECRET_KEY" "$T/all-output"; then
        fail "the secret key was printed"
fi

if [ "$failures" -gt 0 ]; then
        echo "remote-ceph: $failures failure(s)" >&2
        exit 1
fi
echo "remote-ceph: all checks passed"
