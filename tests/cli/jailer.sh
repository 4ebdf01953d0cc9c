#!/bin/bash
# vmsnap-jailer, the real program ($VMSNAP_JAILER) as root: it execs a real static program
# (busybox) inside a jail, which reports what it sees (uid, capabilities, no_new_privs, its
# root, read-only and writable binds, /dev/null, no fd leaked, an environment of only the
# --env pairs); the program keeps the jailer's pid and exit status; --system-dirs runs a
# dynamically linked /usr/bin/env. Every disallowed request (uid 0, a uid outside the range,
# relative paths, a symlinked bind source, a symlink in its path, not root, an unknown
# option) is refused with exit 125 and a clear message. Needs root, namespaces and
# busybox-static (else exit 77). Every check runs; the test fails if any did.
set -u

if [ -z "${VMSNAP_JAILER:-}" ] || [ ! -x "${VMSNAP_JAILER:-}" ]; then
        echo "jailer: VMSNAP_JAILER is unset or not an executable; skipping"
        exit 77
fi
if [ "$(id -u)" != 0 ]; then
        echo "jailer: needs root (jails switch uids and mount); skipping"
        exit 77
fi
if ! unshare -m -i -u -n true 2>/dev/null; then
        echo "jailer: no mount/IPC/UTS/network namespaces here; skipping"
        exit 77
fi
BB=$(command -v busybox || true)
if [ -z "$BB" ] || ! ldd "$BB" 2>&1 | grep -q "not a dynamic executable"; then
        echo "jailer: needs a static busybox (Debian: busybox-static); skipping"
        exit 77
fi
BB=$(readlink -f "$BB")

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-jailer.XXXXXX") || exit 1
chmod 755 "$T"
# The tests' own uid range (not the default one a vmsnapd here hands out): a jail sees the
# processes of its uid.
UIDS="2113929216:65536"
JUID=$((2113929216 + 1 + $$ % 65535))
PARENT=vmsnap-test
N=0
cleanup() {
        for c in memory cpu pids ""; do
                for g in /sys/fs/cgroup/$c/$PARENT/jailer-$$-*; do
                        [ -d "$g" ] && rmdir "$g"
                done
                rmdir "/sys/fs/cgroup/$c/$PARENT" 2>/dev/null
        done
        ip netns del "jailer-$$" 2>/dev/null
        umount "$T/uts" 2>/dev/null
        rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/root" "$T/data" "$T/rw"
echo "read-only data" >"$T/data/f"
chown "$JUID:$JUID" "$T/rw"
chmod 700 "$T/rw"

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}

# jail ARGS... -- VMM...: runs the jailer with a fresh name, the test config and the root;
# stdout in $T/out, stderr in $T/err, exit status in $rc.
jail() {
        N=$((N + 1))
        "$VMSNAP_JAILER" --name "jailer-$$-$N" --root "$T/root" --uid "$JUID" --uids "$UIDS" \
                --cgroup-parent "$PARENT" "$@" >"$T/out" 2>"$T/err"
        rc=$?
}

# expect_line TEXT: $T/out holds the line TEXT.
expect_line() {
        grep -qxF -- "$1" "$T/out" || fail "no line '$1' in: $(tr '\n' '|' <"$T/out") $(cat "$T/err")"
}

# refused WORDS ARGS...: the jailer (run with ARGS as given) exits 125 and says WORDS.
refused() {
        local words=$1
        shift
        "$@" >"$T/out" 2>"$T/err"
        rc=$?
        if [ "$rc" != 125 ] || ! grep -q -- "$words" "$T/err"; then
                fail "$* -> $rc, want 125 and '$words'; stderr: $(cat "$T/err")"
        elif [ "$(wc -l <"$T/err")" != 1 ]; then
                fail "$* -> more than one line on stderr: $(cat "$T/err")"
        fi
}

# 1. busybox inside the jail reports what it sees.
INSIDE='
id -u; id -g; id -G
echo $(ls /)
cat /data/f
echo x > /data/g 2>/dev/null && echo ro-writable || echo ro-refused
echo y > /rw/h && echo rw-ok
echo z > /dev/null && echo devnull-ok
cat /etc/shadow >/dev/null 2>&1 && echo shadow-read || echo shadow-hidden
[ -e /proc/self/fd/9 ] && echo fd9-leaked || echo fd9-closed
grep -E "^(CapEff|CapBnd|NoNewPrivs):" /proc/self/status | tr -d "\t "
hostname'
exec 9</dev/null
jail --bind "$BB:/busybox" --bind "$T/data:/data" --bind-rw "$T/rw:/rw" --dev /dev/null --proc \
        -- /busybox sh -c "$INSIDE"
exec 9<&-
[ "$rc" = 0 ] || fail "busybox in the jail exited $rc: $(cat "$T/err")"
expect_line "$JUID"
expect_line "$JUID 1879048192"
expect_line "busybox data dev proc rw" # and nothing else: no /etc, /home, /tmp...
for l in "read-only data" ro-refused rw-ok devnull-ok shadow-hidden fd9-closed \
        "CapEff:0000000000000000" "CapBnd:0000000000000000" "NoNewPrivs:1" "jailer-$$-$N"; do
        expect_line "$l"
done
[ "$(stat -c %u "$T/rw/h" 2>/dev/null)" = "$JUID" ] || fail "rw/h is not owned by $JUID"
[ ! -e "$T/data/g" ] || fail "the read-only bind was written"

# 2. the VMM keeps the jailer's pid; its exit status comes back unchanged.
N=$((N + 1))
"$VMSNAP_JAILER" --name "jailer-$$-$N" --root "$T/root" --uid "$JUID" --uids "$UIDS" \
        --cgroup-parent "$PARENT" --bind "$BB:/busybox" -- /busybox sh -c 'echo $$; exit 7' >"$T/out" 2>"$T/err" &
pid=$!
wait "$pid"
rc=$?
[ "$rc" = 7 ] || fail "exit status $rc, want the VMM's 7: $(cat "$T/err")"
[ "$(cat "$T/out")" = "$pid" ] || fail "the VMM's pid $(cat "$T/out") is not the jailer's $pid"

# 3. the environment is exactly the --env pairs; a dynamic binary runs with --system-dirs.
jail --bind "$BB:/busybox" --env FOO=bar --env "B=x y" -- /busybox env
[ "$(cat "$T/out")" = "$(printf 'FOO=bar\nB=x y')" ] || fail "environment: $(cat "$T/out")"
jail --system-dirs --env A=1 -- /usr/bin/env
[ "$rc" = 0 ] && [ "$(cat "$T/out")" = "A=1" ] || fail "/usr/bin/env: $rc $(cat "$T/out" "$T/err")"
jail --system-dirs -- /bin/ls /
[ "$(tr '\n' ' ' <"$T/out")" = "bin lib lib32 lib64 sbin usr " ] ||
        [ "$(tr '\n' ' ' <"$T/out")" = "bin lib lib64 sbin usr " ] ||
        fail "system dirs root: $(tr '\n' ' ' <"$T/out")"

# 3b. --netns joins a pinned network namespace (its marker link is visible inside), and
# without it the jail's namespace is a new, empty one.
NS="jailer-$$"
if ip netns add "$NS" 2>/dev/null; then
        ip -n "$NS" link add vmsnapmark type veth peer name vmsnapmark1
        jail --bind "$BB:/busybox" --netns "/run/netns/$NS" -- /busybox ip -o link
        [ "$rc" = 0 ] && grep -q vmsnapmark "$T/out" || fail "--netns: not in $NS: $rc $(cat "$T/out" "$T/err")"
        jail --bind "$BB:/busybox" -- /busybox ip -o link
        [ "$rc" = 0 ] && [ "$(grep -c . "$T/out")" = 1 ] && grep -q ": lo:" "$T/out" ||
                fail "no --netns: not an empty namespace: $rc $(cat "$T/out" "$T/err")"
        ln -s "/run/netns/$NS" "$T/ns-link"
        J0=("$VMSNAP_JAILER" --cgroup-parent "$PARENT" --root "$T/root" --uids "$UIDS" --uid "$JUID")
        refused "symbolic link\|Too many levels" "${J0[@]}" --name "jailer-$$-n1" \
                --netns "$T/ns-link" --bind "$BB:/busybox" -- /busybox true
        refused "not a namespace file" "${J0[@]}" --name "jailer-$$-n2" --netns "$T/data/f" \
                --bind "$BB:/busybox" -- /busybox true
        touch "$T/uts" && mount --bind /proc/self/ns/uts "$T/uts"
        refused "not a network one" "${J0[@]}" --name "jailer-$$-n3" --netns "$T/uts" \
                --bind "$BB:/busybox" -- /busybox true
        umount "$T/uts"
        refused "must be an absolute" "${J0[@]}" --name "jailer-$$-n4" --netns "run/netns/$NS" \
                --bind "$BB:/busybox" -- /busybox true
        ip netns del "$NS"
else
        fail "ip netns add $NS failed (iproute2 is a test dependency)"
fi

# 3c. --memory-readonly (the hand-over of a template's memory, docs/jail.md "Read-only
# memory"): the jailed program plays a hostile VMM. An O_RDWR open of the path succeeds with
# a read-only descriptor (a write through it: EBADF), an O_WRONLY|O_TRUNC one truncates
# nothing, the same file under another name is refused by the kernel, other paths behave as
# before; the file keeps its SHA-256 and mtime. A writable bind cannot be handed over.
"$VMSNAP_JAILER" --probe-handover >"$T/out" 2>"$T/err" || fail "--probe-handover: $(cat "$T/err")"
head -c 65536 /dev/urandom >"$T/mem" && chown 0:1879048192 "$T/mem" && chmod 0640 "$T/mem"
touch -d "2020-01-01 00:00:00" "$T/mem"
MEM_BEFORE="$(sha256sum <"$T/mem") $(stat -c %Y "$T/mem")"
HOSTILE='
exec 3<>/memory && echo rdwr-opened
grep -q "^flags:.*[0-7][0-7]0$" /proc/self/fdinfo/3 && echo rdwr-is-rdonly
echo x >&3 || echo write-ebadf
echo y >/memory || echo trunc-write-ebadf
wc -c </memory
(exec 4<>/./memory) 2>/dev/null && echo other-name-opened || echo other-name-refused
cat /data/f
echo z >/rw/m && cat /rw/m
cat /nonexistent 2>/dev/null || echo enoent-as-before'
jail --bind "$BB:/busybox" --bind "$T/mem:/memory" --bind "$T/data:/data" --bind-rw "$T/rw:/rw" \
        --proc --memory-readonly /memory -- /busybox sh -c "$HOSTILE"
[ "$rc" = 0 ] || fail "--memory-readonly: exit $rc: $(cat "$T/err")"
for l in rdwr-opened rdwr-is-rdonly write-ebadf trunc-write-ebadf 65536 other-name-refused \
        "read-only data" z enoent-as-before; do
        expect_line "$l"
done
[ "$(grep -c "Bad file descriptor" "$T/err")" = 2 ] || fail "writes not EBADF: $(cat "$T/err")"
[ "$(sha256sum <"$T/mem") $(stat -c %Y "$T/mem")" = "$MEM_BEFORE" ] ||
        fail "the read-only memory file changed"
refused "not the target of a read-only bind" "$VMSNAP_JAILER" --cgroup-parent "$PARENT" \
        --root "$T/root" --uids "$UIDS" --uid "$JUID" --name "jailer-$$-m1" \
        --bind-rw "$T/rw:/memory" --memory-readonly /memory -- /busybox true

# 4. refusals.
ln -s /etc/shadow "$T/link"
ln -s /etc "$T/etc-link"
J=("$VMSNAP_JAILER" --cgroup-parent "$PARENT" --root "$T/root" --uids "$UIDS")
refused "uid 0" "${J[@]}" --name "jailer-$$-r1" --uid 0 -- /busybox
refused "outside the jail range" "${J[@]}" --name "jailer-$$-r2" --uid 1000 -- /busybox
refused "absolute" "$VMSNAP_JAILER" --name "jailer-$$-r3" --root tmp/root --uid "$JUID" \
        --uids "$UIDS" -- /x
refused "absolute" "${J[@]}" --name "jailer-$$-r4" --uid "$JUID" -- busybox
refused "symbolic link" "${J[@]}" --name "jailer-$$-r5" --uid "$JUID" \
        --bind "$T/link:/shadow" -- /busybox
refused "symbolic link" "${J[@]}" --name "jailer-$$-r6" --uid "$JUID" \
        --bind "$T/etc-link/shadow:/shadow" -- /busybox
refused "unknown option" "${J[@]}" --name "jailer-$$-r7" --uid "$JUID" --seccomp -- /busybox
refused "expected '-- VMM" "${J[@]}" --name "jailer-$$-r8" --uid "$JUID"
refused "cannot execute /nonexistent" "${J[@]}" --name "jailer-$$-r9" --uid "$JUID" -- /nonexistent
mkdir -p "$T/bin" && cp "$VMSNAP_JAILER" "$T/bin/vmsnap-jailer" && chmod 755 "$T/bin"
refused "must be started by root" setpriv --reuid 65534 --regid 65534 --clear-groups \
        "$T/bin/vmsnap-jailer" --name "jailer-$$-r10" --root "$T/root" --uid "$JUID" \
        --uids "$UIDS" -- /busybox
setpriv --reuid 65534 --regid 65534 --clear-groups "$T/bin/vmsnap-jailer" --help >"$T/out" 2>&1
[ $? = 0 ] && grep -q "usage: vmsnap-jailer" "$T/out" || fail "--help as nobody"

if [ "$failures" != 0 ]; then
        echo "jailer: $failures check(s) failed"
        exit 1
fi
echo "jailer: all checks passed"
