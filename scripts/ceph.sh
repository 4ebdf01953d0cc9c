#!/usr/bin/env bash
# A throwaway single-node Ceph with an S3 endpoint (radosgw), for the tests of the remote
# store (docs/remote.md) and for users trying it. Debian packages only (ceph-mon, ceph-osd,
# radosgw, ceph-common: scripts/setup.sh); no system service, no root-wide state: every
# file, socket and log lives under DIR, and the daemons are run by this script, as the
# calling user, on random loopback ports.
#
#   scripts/ceph.sh start DIR   starts mon, osd (memstore: data in RAM, 1 GiB) and radosgw,
#                               makes an S3 user and the bucket `vmsnap`, then prints the
#                               environment for vmsnap (as `env` does)
#   scripts/ceph.sh env DIR     prints VMSNAP_S3_* lines for `eval`
#   scripts/ceph.sh stop DIR    stops the daemons it started (by their pid files) and
#                               removes DIR
#
# VMSNAP_CEPH_ALSO_LISTEN=ADDR makes radosgw listen on ADDR (same port) too, for clients in
# another network namespace (bench/remote.py --shape).
# Exit codes: 0 success, 1 failure (the logs under DIR/log say why), 77 a program missing.
set -euo pipefail

cmd=${1:-}
DIR=${2:-}
if [ -z "$cmd" ] || [ -z "$DIR" ]; then
        echo "usage: $0 start|stop|env DIR" >&2
        exit 2
fi

need() {
        for p in "$@"; do
                if ! command -v "$p" >/dev/null 2>&1; then
                        echo "ceph.sh: $p is missing (scripts/setup.sh installs it)" >&2
                        exit 77
                fi
        done
}

conf() { echo "$DIR/ceph.conf"; }

# Prints the environment a vmsnap client needs to reach this Ceph's radosgw.
print_env() {
        [ -f "$DIR/s3.env" ] || { echo "ceph.sh: $DIR is not a started Ceph" >&2; exit 1; }
        cat "$DIR/s3.env"
}

free_port() {
        python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

write_conf() {
        local fsid=$1 monport=$2 rgwport=$3
        cat >"$(conf)" <<EOF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$monport
ms_bind_msgr1 = false
auth_allow_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 5
client_mount_timeout = 30
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
osd_objectstore = memstore
memstore_device_bytes = 1073741824
osd_crush_chooseleaf_type = 0
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
log_file = $DIR/log/\$name.log
pid_file = $DIR/run/\$name.pid
exec_log_file = $DIR/log/\$name.log
keyring = $DIR/keyring
[mon.a]
mon_data = $DIR/mon
[osd.0]
osd_data = $DIR/osd0
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:$rgwport${VMSNAP_CEPH_ALSO_LISTEN:+ endpoint=$VMSNAP_CEPH_ALSO_LISTEN:$rgwport}
rgw_data = $DIR/rgw
rgw_thread_pool_size = 64
EOF
}

# Waits up to $2 seconds for command $1 to succeed.
wait_for() {
        local what=$1 secs=$2 i
        for ((i = 0; i < secs * 5; i++)); do
                if eval "$what" >/dev/null 2>&1; then
                        return 0
                fi
                sleep 0.2
        done
        echo "ceph.sh: timed out waiting for: $what (logs: $DIR/log)" >&2
        return 1
}

start() {
        need ceph-authtool ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen curl python3
        if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
                echo "ceph.sh: $DIR exists and is not empty" >&2
                exit 1
        fi
        mkdir -p "$DIR"/{run,log,mon,osd0,rgw}
        chmod 700 "$DIR"
        local fsid monport rgwport ak sk
        fsid=$(uuidgen)
        monport=$(free_port)
        rgwport=$(free_port)
        write_conf "$fsid" "$monport" "$rgwport"
        local C
        C=$(conf)

        # cephx, one keyring for every entity of this throwaway cluster (the mon imports
        # them all at mkfs).
        local K=$DIR/keyring
        ceph-authtool --create-keyring "$K" --gen-key -n mon. --cap mon 'allow *' >/dev/null
        ceph-authtool "$K" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
                --cap mgr 'allow *' >/dev/null
        ceph-authtool "$K" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' \
                --cap mgr 'allow profile osd' >/dev/null
        ceph-authtool "$K" --gen-key -n client.rgw --cap mon 'allow rw' --cap osd 'allow rwx' \
                --cap mgr 'allow rw' >/dev/null
        monmaptool --create --addv a "[v2:127.0.0.1:$monport]" --fsid "$fsid" "$DIR/monmap" >/dev/null
        ceph-mon -c "$C" --mkfs -i a --monmap "$DIR/monmap" --keyring "$K" >/dev/null
        ceph-mon -c "$C" -i a
        wait_for "ceph -c '$C' --connect-timeout 5 mon stat" 30

        ceph -c "$C" osd create >/dev/null
        ceph-osd -c "$C" -i 0 --mkfs --osd-uuid "$(uuidgen)" >/dev/null 2>&1
        ceph-osd -c "$C" -i 0
        wait_for "ceph -c '$C' osd stat | grep -q '1 up'" 60

        radosgw -c "$C" -n client.rgw
        wait_for "curl -fsS -o /dev/null http://127.0.0.1:$rgwport/" 60

        ak=$(python3 -c 'import secrets; print("VMSNAP" + secrets.token_hex(7).upper())')
        sk=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
        radosgw-admin -c "$C" -n client.admin user create --uid=vmsnap --display-name=vmsnap \
                --access-key="$ak" --secret-key="$sk" >/dev/null
        umask 077
        cat >"$DIR/s3.env" <<EOF
VMSNAP_S3_ENDPOINT=http://127.0.0.1:$rgwport
VMSNAP_S3_BUCKET=vmsnap
VMSNAP_S3_REGION=us-east-1
VMSNAP_S3_ACCESS_KEY=$ak
VMSNAP_S3_SECRET_KEY=$sk
EOF
        # The bucket, made through S3 as any client would; radosgw may need a moment after
        # its user exists.
        # (curl 7.88 signs the payload hash only when the header is given, and radosgw wants it.)
        wait_for "curl -fsS -X PUT --aws-sigv4 aws:amz:us-east-1:s3 -u '$ak:$sk' -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' http://127.0.0.1:$rgwport/vmsnap" 30
        print_env
}

# Stops one daemon by its pid file, waiting up to 20 s, then SIGKILL.
stop_one() {
        local pidfile=$1 pid i
        [ -f "$pidfile" ] || return 0
        pid=$(cat "$pidfile")
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || return 0
                sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
}

stop() {
        [ -d "$DIR" ] || return 0
        [ -f "$(conf)" ] || { echo "ceph.sh: $DIR is not a Ceph dir made by this script" >&2; exit 1; }
        stop_one "$DIR/run/client.rgw.pid"
        stop_one "$DIR/run/osd.0.pid"
        stop_one "$DIR/run/mon.a.pid"
        rm -rf "$DIR"
}

case "$cmd" in
start) start ;;
stop) stop ;;
env) print_env ;;
*)
        echo "usage: $0 start|stop|env DIR" >&2
        exit 2
        ;;
esac
