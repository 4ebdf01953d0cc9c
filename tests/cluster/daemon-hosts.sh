#!/bin/bash
# vmsnapd --cluster with a real PostgreSQL (scripts/postgres.sh) and three real daemons
# (separate roots, sockets, ports, memory dirs; no guests): each registers with its
# capacity and advertised endpoint and heart-beats; a password on the command line and a
# connection file readable by others are refused; SIGKILL of one → marked lost by the others
# within the timeout, its running sandbox lost and its paused one still paused; it restarts
# with the same id (kept in its root) and a new epoch; a crash-like restart of Postgres
# longer than the timeout marks nobody lost (a host sweeps only after it has itself reached
# the database for a whole timeout); SIGTERM → exit 0. No timing assertions: waits poll.
set -u

VMSNAPD=${VMSNAPD:-${VMSNAP_BUILD:-}/vmsnapd}
SRC=${VMSNAP_SRC:?}
PGSH=$SRC/scripts/postgres.sh
[ -x "$VMSNAPD" ] || { echo "SKIP: vmsnapd is not built ($VMSNAPD)"; exit 77; }
PSQL=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | head -n 1)
[ -n "$PSQL" ] || { echo "SKIP: no PostgreSQL (apt-get install postgresql; scripts/setup.sh)"; exit 77; }
command -v curl >/dev/null || { echo "SKIP: curl is needed"; exit 77; }
if [ "$(id -u)" -eq 0 ] && ! getent passwd postgres >/dev/null; then
        echo "SKIP: running as root and there is no postgres user to run the server as"; exit 77
fi

T=$(mktemp -d /tmp/vmsnap-clhosts.XXXXXX) || exit 1
chmod 0755 "$T" # the postgres user reaches its dir below
PG=$T/pg
declare -A DPID PORT
cleanup() {
        local h
        for h in "${!DPID[@]}"; do
                if [ -n "${DPID[$h]}" ] && kill -0 "${DPID[$h]}" 2>/dev/null; then
                        kill -KILL "${DPID[$h]}" 2>/dev/null
                        wait "${DPID[$h]}" 2>/dev/null
                fi
        done
        bash "$PGSH" stop "$PG" immediate >/dev/null 2>&1
        rm -rf "$T"
}
trap cleanup EXIT

failures=0
fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}

bash "$PGSH" start "$PG" || { echo "FAIL: postgres.sh start"; exit 1; }
CONNINFO="host=$PG user=vmsnap dbname=vmsnap"
sql() { "$PSQL" -X -q -A -t -h "$PG" -U vmsnap -d vmsnap -c "$1" 2>&1; }

umask 077
printf '%s\n' "$CONNINFO" >"$T/cluster.conf"

free_port() {
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start HOST CAPACITY [extra args]: starts vmsnapd for HOST and waits until it registered.
start() {
        local h=$1 cap=$2
        shift 2
        PORT[$h]=$(free_port)
        local joined
        joined=$(cat "$T/$h.log" 2>/dev/null | grep -c "registered (epoch")
        "$VMSNAPD" --root "$T/$h/root" --socket "$T/$h.sock" --listen "127.0.0.1:${PORT[$h]}" \
                --mem-root "$T/$h/mem" --guest-dir "$T/guest" --tick-interval 0 \
                --cluster "@$T/cluster.conf" --capacity "$cap" \
                --heartbeat-interval 200 --lost-after 1500 "$@" \
                >"$T/$h.out" 2>>"$T/$h.log" &
        DPID[$h]=$!
        for _ in $(seq 600); do # /healthz answers before the host joined: wait for its log
                [ "$(grep -c "registered (epoch" "$T/$h.log")" -gt "$joined" ] && return 0
                kill -0 "${DPID[$h]}" 2>/dev/null || break
                sleep 0.1
        done
        echo "FAIL: vmsnapd $h did not come up; its log:" >&2
        cat "$T/$h.log" >&2
        exit 1
}

# wait_for SQL WANT: polls until the query answers WANT (30 s at most).
wait_for() {
        local got
        for _ in $(seq 300); do
                got=$(sql "$1")
                [ "$got" = "$2" ] && return 0
                sleep 0.1
        done
        echo "  $1 -> '$got', wanted '$2'" >&2
        return 1
}

# ---- refusals before anything starts -------------------------------------------------------
mkdir -p "$T/bad"
"$VMSNAPD" --root "$T/bad/root" --no-tcp --tick-interval 0 \
        --cluster "postgresql://vmsnap:secret@/vmsnap?host=$PG" >"$T/bad.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "password on the command line" "$T/bad.out" ||
        fail "a password in --cluster: exit $rc, $(cat "$T/bad.out")"
cp "$T/cluster.conf" "$T/open.conf"
chmod 0644 "$T/open.conf"
"$VMSNAPD" --root "$T/bad/root" --socket "$T/bad.sock" --listen 127.0.0.1:0 --tick-interval 0 \
        --cluster "@$T/open.conf" >"$T/bad.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "mode 0600" "$T/bad.out" ||
        fail "a connection file readable by others: exit $rc, $(cat "$T/bad.out")"
"$VMSNAPD" --root "$T/bad/root" --host-id x >"$T/bad.out" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "--host-id without --cluster: exit $rc"
[ "$(sql "SELECT to_regclass('hosts') IS NULL")" = t ] || fail "a refused daemon reached the database"

# ---- three hosts ---------------------------------------------------------------------------
start a 4,4096,20000 --host-id host-a
start b 8,8192,20000 --host-id host-b
start c 2,2048,20000 # its id: a UUID kept in its root
C=$(cat "$T/c/root/cluster-host-id")
[ -n "$C" ] || fail "host c has no cluster-host-id file"
[ "$(stat -c %a "$T/c/root/cluster-host-id")" = 600 ] || fail "cluster-host-id is not 0600"

got=$(sql "SELECT id || ' ' || endpoint || ' ' || vcpus || ' ' || memory_mib || ' ' || state FROM hosts ORDER BY vcpus")
want="$C 127.0.0.1:${PORT[c]} 2 2048 alive
host-a 127.0.0.1:${PORT[a]} 4 4096 alive
host-b 127.0.0.1:${PORT[b]} 8 8192 alive"
[ "$got" = "$want" ] || fail "hosts after registration:
$got
wanted:
$want"

# heart-beating: heartbeat_at of every host moves
before=$(sql "SELECT string_agg(heartbeat_at::text, ',' ORDER BY id) FROM hosts")
sleep 1
after=$(sql "SELECT string_agg(heartbeat_at::text, ',' ORDER BY id) FROM hosts")
[ "$before" != "$after" ] && [ "$(sql "SELECT count(*) FROM hosts WHERE heartbeat_at > now() - interval '1 second'")" = 3 ] ||
        fail "heartbeats do not advance: $before / $after"

# ---- Postgres restarted (crash-like) for longer than the timeout: nobody is marked lost ----
epochs=$(sql "SELECT string_agg(id || '=' || epoch, ',' ORDER BY id) FROM hosts")
bash "$PGSH" stop "$PG" immediate || fail "postgres stop"
sleep 2.5
bash "$PGSH" start "$PG" || { fail "postgres start"; exit 1; }
wait_for "SELECT count(*) FROM hosts WHERE heartbeat_at > now() - interval '1 second'" 3 ||
        fail "the hosts did not heart-beat again after the database came back"
sleep 2 # more than --lost-after: a wrong sweep would have happened by now
[ "$(sql "SELECT string_agg(id || '=' || epoch, ',' ORDER BY id) FROM hosts")" = "$epochs" ] &&
        [ "$(sql "SELECT count(*) FROM hosts WHERE state = 'alive'")" = 3 ] ||
        fail "a database restart changed the hosts: $(sql "SELECT id, state, epoch FROM hosts")"
grep -q "reachable again" "$T/a.log" || fail "host a did not log that the database is back"

# ---- kill host c: marked lost, its running sandbox lost, its paused one kept ---------------
sql "INSERT INTO sandboxes (id, host_id, state, vcpus, memory_mib, disk_mib)
     VALUES ('sb-run', '$C', 'running', 1, 256, 0), ('sb-paused', '$C', 'paused', 1, 256, 0),
            ('sb-a', 'host-a', 'running', 1, 256, 0)" >/dev/null
kill -KILL "${DPID[c]}"
wait "${DPID[c]}" 2>/dev/null
DPID[c]=
wait_for "SELECT state FROM hosts WHERE id = '$C'" lost || fail "host c was not marked lost"
[ "$(sql "SELECT string_agg(id || '=' || state, ',' ORDER BY id) FROM sandboxes")" = \
  "sb-a=running,sb-paused=paused,sb-run=lost" ] ||
        fail "sandboxes after host c was lost: $(sql "SELECT id, state FROM sandboxes")"
[ "$(sql "SELECT count(*) FROM hosts WHERE state = 'alive'")" = 2 ] || fail "a live host was marked lost"
grep -q "marked 1 host lost" "$T/a.log" "$T/b.log" || fail "no host logged marking c lost"

# ---- c comes back: same id, a new epoch -----------------------------------------------------
old_epoch=$(sql "SELECT epoch FROM hosts WHERE id = '$C'")
start c 2,2048,20000
wait_for "SELECT state FROM hosts WHERE id = '$C'" alive || fail "host c is not alive after its restart"
[ "$(sql "SELECT epoch FROM hosts WHERE id = '$C'")" -gt "$old_epoch" ] || fail "host c kept its epoch"
[ "$(sql "SELECT count(*) FROM hosts")" = 3 ] || fail "host c registered as a new host"

# ---- SIGTERM: clean exit ---------------------------------------------------------------------
for h in a b c; do
        kill -TERM "${DPID[$h]}"
        wait "${DPID[$h]}"
        rc=$?
        DPID[$h]=
        [ $rc -eq 0 ] || fail "vmsnapd $h exited $rc after SIGTERM"
done

if [ $failures -ne 0 ]; then
        for h in a b c; do echo "--- log of $h" >&2; cat "$T/$h.log" >&2; done
        echo "daemon-hosts: $failures failure(s)"
        exit 1
fi
echo "daemon-hosts: ok"
