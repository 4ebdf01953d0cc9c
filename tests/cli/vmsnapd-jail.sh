#!/bin/bash
# vmsnapd's jail flags (issue 8): it refuses to start, exit 1, naming the missing piece, when
# VMMs cannot be jailed (here: a cgroup version this host does not mount, a jailer program
# that does not exist) unless --insecure-no-jail, which it then logs as a warning; a jailed
# start logs the uid range, the shared gid and the cgroup version; bad flag values are usage
# errors (exit 2). Jailed VMMs themselves are checked by e2e/sandbox-lifecycle. Needs root
# (jails do); no VM is started. No timing assertions.
set -u

VMSNAPD=${VMSNAPD:-${VMSNAP_BUILD:-}/vmsnapd}
if [ ! -x "$VMSNAPD" ]; then
        echo "vmsnapd-jail: vmsnapd is not built ($VMSNAPD); skipping"
        exit 77
fi
if [ "$(id -u)" != 0 ]; then
        echo "vmsnapd-jail: jails need root; skipping"
        exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-jailflags.XXXXXX") || exit 1
DPID=
cleanup() {
        if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
                kill -KILL "$DPID" 2>/dev/null
                wait "$DPID" 2>/dev/null
        fi
        rm -rf "$T"
}
trap cleanup EXIT

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}

# run_daemon NAME ARGS...: starts vmsnapd, waits until it serves or exits; sets RC (exit code,
# or "up" when it serves, then stops it with SIGTERM).
run_daemon() {
        local name=$1
        shift
        "$VMSNAPD" --root "$T/root-$name" --socket "$T/$name.sock" --no-tcp \
                --mem-root "$T/mem-$name" --guest-dir "$T/guest" --tick-interval 0 "$@" \
                >"$T/$name.out" 2>"$T/$name.log" &
        DPID=$!
        RC=
        for _ in $(seq 600); do
                if [ -S "$T/$name.sock" ]; then
                        RC=up
                        kill -TERM "$DPID"
                        wait "$DPID"
                        DPID=
                        return
                fi
                if ! kill -0 "$DPID" 2>/dev/null; then
                        wait "$DPID"
                        RC=$?
                        DPID=
                        return
                fi
                sleep 0.1
        done
        fail "$name: vmsnapd neither served nor exited"
}

log_has() { grep -q -- "$2" "$T/$1.log" || fail "$1: log lacks '$2': $(cat "$T/$1.log")"; }

# Jailed (the default): the probe passes on this host and the log says so.
run_daemon jailed
[ "$RC" = up ] || fail "jailed start: exit $RC: $(cat "$T/jailed.log")"
log_has jailed "VMMs run jailed: uids 1879113728..1879179263, shared gid 1879048192, cgroup v"
[ "$(stat -c %a "$T/mem-jailed")" = 700 ] || fail "--mem-root is not 0700"
[ "$(stat -c %a "$T/root-jailed/sandboxes")" = 700 ] || fail "sandboxes/ is not 0700"

run_daemon range --jail-uids 200000:16 --jail-gid 300000
[ "$RC" = up ] || fail "--jail-uids: exit $RC: $(cat "$T/range.log")"
log_has range "uids 200000..200015, shared gid 300000"

# A cgroup version this host does not have: refused, naming it.
other=2
if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -q memory /sys/fs/cgroup/cgroup.controllers; then
        other=1
fi
run_daemon nocgroup --cgroup-version $other
[ "$RC" = 1 ] || fail "--cgroup-version $other on this host: exit $RC, want 1"
log_has nocgroup "refusing to start: VMMs cannot be jailed on this host"
log_has nocgroup "cgroup"
log_has nocgroup "--insecure-no-jail"
[ ! -e "$T/nocgroup.sock" ] || fail "a refused daemon left its socket"

# The unjailed mode: starts anyway, with a warning.
run_daemon unjailed --cgroup-version $other --insecure-no-jail
[ "$RC" = up ] || fail "--insecure-no-jail: exit $RC: $(cat "$T/unjailed.log")"
log_has unjailed "VMMs run UNJAILED (--insecure-no-jail)"

# Usage errors.
for bad in "--jail-uids 0:10" "--jail-uids 5" "--jail-gid 0" "--jail-gid x" \
        "--cgroup-version 3"; do
        # shellcheck disable=SC2086
        "$VMSNAPD" --root "$T/root-bad" --no-tcp $bad >/dev/null 2>"$T/bad.log"
        rc=$?
        [ $rc = 2 ] || fail "vmsnapd $bad: exit $rc, want 2: $(cat "$T/bad.log")"
        grep -q -- "${bad%% *}" "$T/bad.log" || fail "vmsnapd $bad: message $(cat "$T/bad.log")"
done

if [ $failures -gt 0 ]; then
        echo "vmsnapd-jail: $failures failure(s)"
        exit 1
fi
echo "vmsnapd-jail: ok"
