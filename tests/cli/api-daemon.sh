#!/bin/bash
# vmsnapd over real HTTP, with curl: the real daemon ($VMSNAP_BUILD/vmsnapd, or $VMSNAPD) on
# a temporary root, a temporary Unix socket and a free TCP port on 127.0.0.1. Checks /healthz;
# the token file (0600, printed once, kept across restarts); the bearer token on TCP (401
# without or with a wrong one, 200 with it; /healthz public) and none on the Unix socket
# (mode 0600); 400 for malformed JSON and bad fields, naming them; 413 for oversized bodies
# (declared and chunked); 404 for unknown sandbox/snapshot refs and unknown routes; 405 with
# Allow; 415 for non-JSON bodies; the error body shape on every error; a snapshot imported
# from the host, read, refused under a taken name, deleted (and 400 for a junk archive),
# with the export made by $VMSNAP_CLI; /metrics as valid Prometheus text; a second daemon on
# a live socket refused; SIGTERM → exit 0, socket gone.
# Needs no VM: creating one is covered by the end-to-end tests. No timing assertions.
set -u

VMSNAPD=${VMSNAPD:-${VMSNAP_BUILD:-}/vmsnapd}
if [ ! -x "$VMSNAPD" ]; then
        echo "api-daemon: vmsnapd is not built ($VMSNAPD); skipping"
        exit 77
fi
for tool in curl python3; do
        if ! command -v $tool >/dev/null 2>&1; then
                echo "api-daemon: $tool is needed to talk to the daemon and read JSON; skipping"
                exit 77
        fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-api.XXXXXX") || exit 1
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

ROOT=$T/root
SOCK=$T/api.sock

# start_daemon: starts vmsnapd on $SOCK and a free port ($PORT, $URL); waits for /healthz.
start_daemon() {
        local try
        for try in 1 2 3; do
                PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
                URL=http://127.0.0.1:$PORT
                "$VMSNAPD" --root "$ROOT" --socket "$SOCK" --listen "127.0.0.1:$PORT" \
                        --mem-root "$T/mem" --guest-dir "$T/guest" --tick-interval 1 \
                        >"$T/out.$try" 2>"$T/log.$try" &
                DPID=$!
                for _ in $(seq 300); do
                        if curl -s -o /dev/null --unix-socket "$SOCK" http://localhost/healthz; then
                                cp "$T/out.$try" "$T/out"
                                return 0
                        fi
                        kill -0 "$DPID" 2>/dev/null || break
                        sleep 0.1
                done
                kill -KILL "$DPID" 2>/dev/null
                wait "$DPID" 2>/dev/null
                DPID=
                grep -q "in use" "$T/log.$try" || break # only a port race is worth a retry
        done
        echo "FAIL: vmsnapd did not come up; its log:" >&2
        cat "$T"/log.* >&2
        exit 1
}

# req [curl args...]: one request; sets $status, the body is in $T/body, headers in $T/hdr.
req() {
        status=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' "$@")
}
unix_req() {
        req --unix-socket "$SOCK" "$@"
}

# json EXPR: a Python expression over the JSON body (as `d`).
json() {
        python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$T/body" "$1" 2>&1
}

# expect_error STATUS CODE [TEXT] -- CURL ARGS: the request fails with STATUS, the body is
# exactly {"error":{"code":CODE,"message":...}} and the message mentions TEXT.
expect_error() {
        local want=$1 code=$2 text=${3:-}
        shift 3
        [ "${1:-}" = "--" ] && shift
        req "$@"
        if [ "$status" != "$want" ]; then
                fail "curl $*: HTTP $status, want $want; body: $(head -c 300 "$T/body")"
                return
        fi
        local got
        got=$(json 'sorted(d) == ["error"] and sorted(d["error"]) == ["code", "message"] and isinstance(d["error"]["message"], str) and d["error"]["code"]')
        [ "$got" = "$code" ] || fail "curl $*: error code '$got', want '$code'; body: $(head -c 300 "$T/body")"
        if [ -n "$text" ] && ! grep -qF -- "$text" "$T/body"; then
                fail "curl $*: the message does not mention '$text': $(head -c 300 "$T/body")"
        fi
}

start_daemon
TOKEN=$(cat "$ROOT/token" 2>/dev/null)
AUTH="Authorization: Bearer $TOKEN"
JSON="Content-Type: application/json"
U=http://localhost

# ---- files: socket mode, token --------------------------------------------------------------
[ "$(stat -c %a "$SOCK")" = 600 ] || fail "socket mode $(stat -c %a "$SOCK"), want 600"
[ "$(stat -c %a "$ROOT/token")" = 600 ] || fail "token mode $(stat -c %a "$ROOT/token"), want 600"
[[ $TOKEN =~ ^[0-9a-f]{64}$ ]] || fail "token is not 64 hex digits: '$TOKEN'"
grep -qF "$TOKEN" "$T/out" || fail "the new token was not printed on first start"

# ---- health ---------------------------------------------------------------------------------
unix_req $U/healthz
[ "$status" = 200 ] || fail "healthz over the socket: HTTP $status"
[ "$(json 'd["status"]')" = ok ] || fail "healthz body: $(cat "$T/body")"
grep -qi '^content-type: application/json' "$T/hdr" || fail "healthz is not application/json"
req -I --unix-socket "$SOCK" $U/healthz
[ "$status" = 200 ] || fail "HEAD /healthz: HTTP $status"

# ---- auth -----------------------------------------------------------------------------------
expect_error 401 unauthorized "missing bearer token" -- "$URL/v1/sandboxes"
grep -qi '^www-authenticate: Bearer' "$T/hdr" || fail "401 without WWW-Authenticate: Bearer"
expect_error 401 unauthorized "invalid bearer token" -- -H "Authorization: Bearer 0000" "$URL/v1/sandboxes"
expect_error 401 unauthorized "invalid bearer token" -- -H "Authorization: Bearer ${TOKEN}0" "$URL/v1/sandboxes"
expect_error 401 unauthorized "Bearer scheme" -- -u "user:$TOKEN" "$URL/v1/sandboxes"
expect_error 401 unauthorized "" -- "$URL/metrics"
expect_error 401 unauthorized "" -- "$URL/v1/no/such/route" # no route discovery without a token
req -H "$AUTH" "$URL/v1/sandboxes"
[ "$status" = 200 ] || fail "TCP with the token: HTTP $status: $(head -c 300 "$T/body")"
[ "$(json 'd["sandboxes"]')" = "[]" ] || fail "sandboxes of a new root: $(cat "$T/body")"
req "$URL/healthz"
[ "$status" = 200 ] || fail "TCP /healthz without a token: HTTP $status (it is public)"
unix_req $U/v1/sandboxes
[ "$status" = 200 ] || fail "Unix socket without a token: HTTP $status"

# ---- 400: malformed JSON and bad fields ------------------------------------------------------
expect_error 400 malformed_json "not valid JSON" -- --unix-socket "$SOCK" -H "$JSON" -d '{"vcpus":' $U/v1/sandboxes
expect_error 400 malformed_json "JSON object" -- --unix-socket "$SOCK" -H "$JSON" -d '[1]' $U/v1/sandboxes
expect_error 400 invalid_field "'vcpus'" -- --unix-socket "$SOCK" -H "$JSON" -d '{"vcpus":"two"}' $U/v1/sandboxes
expect_error 400 invalid_field "'memory_mib'" -- --unix-socket "$SOCK" -H "$JSON" -d '{"memory_mib":0}' $U/v1/sandboxes
expect_error 400 invalid_field "unknown field 'cpus'" -- --unix-socket "$SOCK" -H "$JSON" -d '{"cpus":2}' $U/v1/sandboxes
expect_error 400 invalid_field "'cmd' is required" -- --unix-socket "$SOCK" -H "$JSON" -d '{}' $U/v1/sandboxes/any/exec
expect_error 400 invalid_field "'name' is required" -- --unix-socket "$SOCK" -H "$JSON" -d '{}' $U/v1/sandboxes/any/snapshot
expect_error 400 invalid_field "'path'" -- --unix-socket "$SOCK" -H "$JSON" -d "{\"path\":\"$T/missing.tar\"}" $U/v1/snapshots
expect_error 400 invalid_query "'all'" -- --unix-socket "$SOCK" "$U/v1/sandboxes?all=maybe"
expect_error 400 invalid_query "'kind'" -- --unix-socket "$SOCK" "$U/v1/snapshots?kind=other"

# ---- 413: oversized bodies, declared and chunked -----------------------------------------------
python3 -c 'import sys; sys.stdout.write("{\"cmd\":\"" + "x" * 70000 + "\"}")' >"$T/big.json"
expect_error 413 body_too_large "65536" -- --unix-socket "$SOCK" -H "$JSON" --data-binary @"$T/big.json" $U/v1/sandboxes/any/exec
expect_error 413 body_too_large "65536" -- --unix-socket "$SOCK" -H "$JSON" -H "Transfer-Encoding: chunked" --data-binary @"$T/big.json" $U/v1/sandboxes/any/exec

# ---- 415: bodies that are not JSON -------------------------------------------------------------
expect_error 415 unsupported_media_type "application/x-www-form-urlencoded" -- --unix-socket "$SOCK" -d '{}' $U/v1/sandboxes
expect_error 415 unsupported_media_type "text/plain" -- --unix-socket "$SOCK" -H "Content-Type: text/plain" -d '{"cmd":"ls"}' $U/v1/sandboxes/any/exec
req --unix-socket "$SOCK" -H "Content-Type: application/json; charset=utf-8" -d '{"vcpus":0}' $U/v1/sandboxes
[ "$status" = 400 ] || fail "application/json with a charset: HTTP $status, want 400 (accepted, then refused for vcpus)"

# ---- 404: unknown refs and routes ----------------------------------------------------------------
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" $U/v1/sandboxes/no-such
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -X DELETE $U/v1/sandboxes/no-such
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -X POST $U/v1/sandboxes/no-such/pause
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -X POST $U/v1/sandboxes/no-such/resume
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -H "$JSON" -d '{"cmd":"true"}' $U/v1/sandboxes/no-such/exec
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -H "$JSON" -d '{"name":"t1"}' $U/v1/sandboxes/no-such/snapshot
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" $U/v1/snapshots/no-such
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -X DELETE "$U/v1/snapshots/no-such?force=1"
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -H "$JSON" -d '{}' $U/v1/snapshots/no-such/sandboxes
expect_error 404 not_found "no-such" -- --unix-socket "$SOCK" -H "$JSON" -d '{"template":"no-such"}' $U/v1/sandboxes
expect_error 404 no_such_route "/v1/nothing" -- --unix-socket "$SOCK" $U/v1/nothing
expect_error 404 no_such_route "" -- --unix-socket "$SOCK" $U/v1/sandboxes/a/b/c
expect_error 404 no_such_route "" -- --unix-socket "$SOCK" "$U/v1/sandboxes/$(printf 'r%.0s' $(seq 200))"

# ---- 405: the path exists, not with this method ----------------------------------------------------
expect_error 405 method_not_allowed "PUT" -- --unix-socket "$SOCK" -X PUT $U/v1/sandboxes
grep -qi '^allow: POST, GET, HEAD' "$T/hdr" || fail "405 Allow header: $(grep -i '^allow' "$T/hdr")"
expect_error 405 method_not_allowed "" -- --unix-socket "$SOCK" -X DELETE $U/healthz
expect_error 405 method_not_allowed "" -- --unix-socket "$SOCK" $U/v1/sandboxes/x/pause

# ---- snapshots list ---------------------------------------------------------------------------------
unix_req "$U/v1/snapshots?kind=template&all=1"
[ "$status" = 200 ] && [ "$(json 'd["snapshots"]')" = "[]" ] || fail "GET /v1/snapshots: HTTP $status $(head -c 200 "$T/body")"

# ---- snapshots: import from the host, get, name clash, delete; a refused archive ------------
head -c 1000 /dev/urandom >"$T/junk.tar"
expect_error 400 invalid_archive "" -- --unix-socket "$SOCK" -H "$JSON" -d "{\"path\":\"$T/junk.tar\",\"name\":\"junk\"}" $U/v1/snapshots
if [ -n "${VMSNAP_CLI:-}" ] && [ -x "$VMSNAP_CLI" ]; then
        head -c $((1 << 20)) /dev/urandom >"$T/mem.raw"
        if "$VMSNAP_CLI" snapshot add "$T/mem.raw" --name exported --root "$T/other" >/dev/null 2>"$T/err" &&
                "$VMSNAP_CLI" snapshot export exported -o "$T/exp.tar.zst" --root "$T/other" 2>"$T/err"; then
                unix_req -H "$JSON" -d "{\"path\":\"$T/exp.tar.zst\",\"name\":\"imported\",\"description\":\"d\"}" $U/v1/snapshots
                [ "$status" = 201 ] || fail "import: HTTP $status $(head -c 300 "$T/body")"
                [ "$(json 'd["name"], d["kind"], d["description"]')" = "('imported', 'pause', 'd')" ] || fail "import body: $(head -c 300 "$T/body")"
                grep -qi "^location: /v1/snapshots/$(json 'd["id"]')" "$T/hdr" || fail "import: no Location header"
                unix_req $U/v1/snapshots/imported
                [ "$status" = 200 ] && [ "$(json 'len(d["files"]) > 0 and d["dependents"] == []')" = True ] || fail "GET imported: HTTP $status $(head -c 300 "$T/body")"
                expect_error 409 already_exists "imported" -- --unix-socket "$SOCK" -H "$JSON" -d "{\"path\":\"$T/exp.tar.zst\",\"name\":\"imported\"}" $U/v1/snapshots
                req -H "$AUTH" -X DELETE "$URL/v1/snapshots/imported"
                [ "$status" = 204 ] || fail "DELETE imported: HTTP $status $(head -c 300 "$T/body")"
                expect_error 404 not_found "imported" -- --unix-socket "$SOCK" $U/v1/snapshots/imported
        else
                fail "cannot make an export to import: $(head -c 300 "$T/err")"
        fi
else
        echo "api-daemon: VMSNAP_CLI is not set; the import checks are skipped"
fi

# ---- /metrics: Prometheus text ---------------------------------------------------------------------
req -H "$AUTH" "$URL/metrics"
[ "$status" = 200 ] || fail "/metrics with the token: HTTP $status"
grep -qi '^content-type: text/plain; version=0.0.4' "$T/hdr" || fail "/metrics content type: $(grep -i '^content-type' "$T/hdr")"
python3 - "$T/body" <<'PY' || fail "/metrics is not valid Prometheus text (see above)"
import re, sys
text = open(sys.argv[1]).read()
assert text.endswith("\n"), "no final newline"
name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
sample = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?\})? ([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|\+Inf|-Inf))(?: -?[0-9]+)?$" % (name_re, label, label))
types, seen, buckets = {}, set(), {}
for n, line in enumerate(text.splitlines(), 1):
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ", 3)
        assert name not in types, f"line {n}: TYPE of {name} twice"
        assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
        types[name] = kind
        continue
    if line.startswith("# HELP ") or line == "":
        continue
    assert not line.startswith("#") or line.startswith("# "), f"line {n}: {line}"
    if line.startswith("#"):
        continue
    m = sample.match(line)
    assert m, f"line {n} is not a sample: {line!r}"
    name, labels, value = m.group(1), m.group(2) or "", m.group(3)
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    family = name if name in types else base
    assert family in types, f"line {n}: {name} has no TYPE before it"
    assert (name, labels) not in seen, f"line {n}: duplicate series {name}{labels}"
    seen.add((name, labels))
    if name.endswith("_bucket"):
        key = re.sub(r',?le="[^"]*"', "", labels)
        le = re.search(r'le="([^"]*)"', labels).group(1)
        prev = buckets.get(key, (-1.0, 0))
        bound = float("inf") if le == "+Inf" else float(le)
        assert bound > prev[0] and float(value) >= prev[1], f"line {n}: buckets not cumulative"
        buckets[key] = (bound, float(value))
for family in ("vmsnapd_http_requests_total", "vmsnap_sandboxes", "vmsnap_snapshots",
               "vmsnap_snapshot_bytes", "vmsnap_operation_duration_seconds"):
    assert family in types, f"no {family}"
for op in ("create", "pause", "resume", "spawn"):
    assert any(f'op="{op}"' in l for l in text.splitlines()), f"no histogram for {op}"
assert re.search(r'vmsnapd_http_requests_total\{route="/v1/sandboxes/\{ref\}",method="GET",code="404"\} [1-9]', text), "404s of GET /v1/sandboxes/{ref} not counted"
assert re.search(r'vmsnapd_http_requests_total\{route="unmatched",method="GET",code="404"\} [1-9]', text), "unmatched routes not counted"
assert re.search(r'vmsnapd_http_requests_total\{route="unmatched",method="PUT",code="405"\} [1-9]', text), "PUT /v1/sandboxes (405) not counted with method PUT"
assert 'method="-"' not in text, "a request counted without its method"
assert re.search(r'^vmsnapd_tcp_connections_refused_total 0$', text, re.M), "no TCP gate counters"
assert 'vmsnap_sandboxes{state="running"}' in text, "no running-sandbox gauge"
PY

# ---- one daemon per socket -------------------------------------------------------------------------
"$VMSNAPD" --root "$ROOT" --socket "$SOCK" --no-tcp --mem-root "$T/mem" >"$T/out2" 2>"$T/log2"
rc=$?
[ $rc = 1 ] || fail "a second daemon on a live socket exited $rc, want 1"
grep -q "another vmsnapd" "$T/log2" || fail "second daemon: $(cat "$T/log2")"
unix_req $U/healthz
[ "$status" = 200 ] || fail "the first daemon stopped serving after the second was refused"

# ---- SIGTERM: clean exit, socket removed; a restart keeps the token and does not print it --------
kill -TERM "$DPID"
wait "$DPID"
rc=$?
DPID=
[ $rc = 0 ] || fail "vmsnapd exited $rc after SIGTERM, want 0; log: $(tail -5 "$T"/log.*)"
[ ! -e "$SOCK" ] || fail "the socket file is still there after SIGTERM"
grep -q "GET /healthz 200" "$T"/log.* || fail "no request log line: $(head -5 "$T"/log.*)"
grep -q "stopped" "$T"/log.* || fail "no shutdown log line"

start_daemon
[ "$(cat "$ROOT/token")" = "$TOKEN" ] || fail "the token changed across a restart"
grep -qF "$TOKEN" "$T/out" && fail "the token was printed again on restart"
req -H "$AUTH" "$URL/v1/snapshots"
[ "$status" = 200 ] || fail "the old token is refused after a restart: HTTP $status"
kill -INT "$DPID"
wait "$DPID"
rc=$?
DPID=
[ $rc = 0 ] || fail "vmsnapd exited $rc after SIGINT, want 0"

if [ $failures -gt 0 ]; then
        echo "api-daemon: $failures check(s) failed"
        exit 1
fi
echo "api-daemon: all checks passed"
