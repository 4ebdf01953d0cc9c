#!/bin/bash
# `vmsnap sandbox …` (the CLI client, $VMSNAP_CLI) against the real vmsnapd ($VMSNAP_BUILD/
# vmsnapd or $VMSNAPD) on a temporary root: tables and --json over the Unix socket (--socket,
# --root, $VMSNAP_ROOT), TCP with --url and the token (--token, $VMSNAP_TOKEN, <root>/token),
# the daemon's errors as messages with exit code 1, usage errors with 2, and the message
# that says the daemon is not running. Needs no VM (create without a guest image is refused,
# and that refusal is what it checks). No timing assertions.
set -u

VMSNAPD=${VMSNAPD:-${VMSNAP_BUILD:-}/vmsnapd}
if [ ! -x "$VMSNAPD" ]; then
        echo "api-cli: vmsnapd is not built ($VMSNAPD); skipping"
        exit 77
fi
if [ -z "${VMSNAP_CLI:-}" ] || [ ! -x "$VMSNAP_CLI" ]; then
        echo "api-cli: VMSNAP_CLI is unset or not an executable (${VMSNAP_CLI:-unset}); skipping"
        exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
        echo "api-cli: python3 is needed to pick a port and read --json; skipping"
        exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-api-cli.XXXXXX") || exit 1
DPID=
cleanup() {
        if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
                kill -KILL "$DPID" 2>/dev/null
                wait "$DPID" 2>/dev/null
        fi
        rm -rf "$T"
}
trap cleanup EXIT
unset VMSNAP_TOKEN VMSNAP_ROOT

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}

ROOT=$T/root
SOCK=$T/d.sock

start_daemon() {
        local try
        for try in 1 2 3; do
                PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
                URL=http://127.0.0.1:$PORT
                "$VMSNAPD" --root "$ROOT" --socket "$SOCK" --listen "127.0.0.1:$PORT" \
                        --mem-root "$T/mem" --guest-dir "$T/no-guest" >"$T/dout" 2>"$T/dlog.$try" &
                DPID=$!
                for _ in $(seq 300); do
                        [ -S "$SOCK" ] && "$VMSNAP_CLI" sandbox ls --socket "$SOCK" >/dev/null 2>&1 && return 0
                        kill -0 "$DPID" 2>/dev/null || break
                        sleep 0.1
                done
                kill -KILL "$DPID" 2>/dev/null
                wait "$DPID" 2>/dev/null
                DPID=
                grep -q "in use" "$T/dlog.$try" || break
        done
        echo "FAIL: vmsnapd did not come up; its log:" >&2
        cat "$T"/dlog.* >&2
        exit 1
}

# run ARGS...: `vmsnap sandbox ARGS`, stdout in $T/out, stderr in $T/err, exit code in $rc.
run() {
        "$VMSNAP_CLI" sandbox "$@" >"$T/out" 2>"$T/err"
        rc=$?
}

# expect RC ARGS...
expect() {
        local want=$1
        shift
        run "$@"
        [ "$rc" = "$want" ] || fail "vmsnap sandbox $* exited $rc, want $want; stderr: $(head -c 300 "$T/err")"
}

err_has() {
        grep -qF -- "$1" "$T/err" || fail "stderr does not mention '$1': $(head -c 400 "$T/err")"
}

out_has() {
        grep -qF -- "$1" "$T/out" || fail "stdout does not mention '$1': $(head -c 400 "$T/out")"
}

check_json() {
        local got
        got=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$T/out" "$1" 2>&1)
        [ "$got" = True ] || fail "json check '$1' is '$got' for: $(head -c 400 "$T/out")"
}

# ---- before the daemon runs: the message says so ------------------------------------------
expect 1 ls --socket "$SOCK"
err_has "cannot reach vmsnapd at unix:$SOCK"
err_has "start it with \`vmsnapd\`"
expect 1 ls --root "$ROOT"
err_has "cannot reach vmsnapd at unix:$ROOT/vmsnapd.sock"

# ---- usage errors (no daemon needed) ----------------------------------------------------------
expect 2 bogus
expect 2 get
expect 2 get a b --socket "$SOCK"
expect 2 create --vcpus 0
err_has "--vcpus"
expect 2 create --memory lots
expect 2 exec some-ref
expect 2 exec --timeout soon some-ref -- true
expect 2 snapshot some-ref
err_has "--name"
expect 2 ls --template x
err_has "does not apply"
expect 2 ls --socket "$SOCK" --url http://127.0.0.1:1
expect 2 ls --token abc
expect 0 --help
out_has "usage: vmsnap sandbox"
expect 0 exec --help
out_has "exits with its exit code"

start_daemon
TOKEN=$(cat "$ROOT/token")

# ---- the Unix socket: --socket, --root, $VMSNAP_ROOT --------------------------------------------
expect 0 ls --socket "$SOCK"
out_has "ID"
out_has "STATE"
expect 0 ls --socket "$SOCK" --json
check_json 'd == []'
ln -s "$SOCK" "$ROOT/vmsnapd.sock" 2>/dev/null # the default name under --root
expect 0 ls --root "$ROOT" --json
VMSNAP_ROOT=$ROOT expect 0 ls --all --json
check_json 'isinstance(d, list)'

# ---- daemon errors: message and exit 1 -------------------------------------------------------------
expect 1 get no-such --socket "$SOCK"
err_has "no-such"
err_has "[not_found, HTTP 404]"
expect 1 get no-such --socket "$SOCK" --json
check_json 'd["error"]["code"] == "not_found"'
expect 1 pause no-such --socket "$SOCK"
err_has "HTTP 404"
expect 1 resume no-such --socket "$SOCK"
expect 1 exec no-such --socket "$SOCK" -- echo hi
err_has "HTTP 404"
expect 1 snapshot no-such --name tpl --socket "$SOCK"
expect 1 spawn no-such --socket "$SOCK"
err_has "HTTP 404"
expect 1 rm no-such also-no-such --socket "$SOCK"
[ "$(grep -c 'HTTP 404' "$T/err")" = 2 ] || fail "rm of two unknown refs: $(cat "$T/err")"
# No guest image under --guest-dir: create is refused with the daemon's reason.
expect 1 create --name web --vcpus 1 --memory 128 --socket "$SOCK"
err_has "HTTP 5"
# A bad value the CLI passes through is refused by the daemon, naming the field.
expect 1 create --name "bad name" --socket "$SOCK"
err_has "'name'"
err_has "[invalid_field, HTTP 400]"

# ---- TCP: --url with --token, $VMSNAP_TOKEN, <root>/token ------------------------------------------
expect 1 ls --url "$URL" --root "$T/elsewhere"
err_has "HTTP 401"
expect 1 ls --url "$URL" --token wrong --json
check_json 'd["error"]["code"] == "unauthorized"'
expect 0 ls --url "$URL" --token "$TOKEN" --json
check_json 'isinstance(d, list)'
VMSNAP_TOKEN=$TOKEN expect 0 ls --url "$URL/" --root "$T/elsewhere"
expect 0 ls --url "$URL" --root "$ROOT"
expect 1 get no-such --url "$URL" --token "$TOKEN"
err_has "HTTP 404"
kill -TERM "$DPID"
wait "$DPID"
DPID=
expect 1 ls --url "$URL" --token "$TOKEN"
err_has "cannot reach vmsnapd at $URL"

if [ $failures -gt 0 ]; then
        echo "api-cli: $failures check(s) failed"
        exit 1
fi
echo "api-cli: all checks passed"
