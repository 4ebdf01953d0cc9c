#!/usr/bin/env bash
# A throwaway PostgreSQL for the cluster tests (docs/cluster.md §8), from Debian's packages:
#   scripts/postgres.sh start DIR            initdb in DIR (if new), start, create db vmsnap
#   scripts/postgres.sh stop DIR [immediate] stop it (fast; immediate = crash-like)
#   scripts/postgres.sh env DIR              print VMSNAP_PG_URL=… for a client
# Unix socket in DIR only (listen_addresses = '', no TCP), trust auth on that 0700 dir,
# fsync off (test clusters only; acknowledged commits still survive a process crash), no
# system service. Postgres refuses to run as root, so when root starts it, it runs as the
# `postgres` user the Debian package creates.
set -euo pipefail
umask 077

usage() { echo "usage: $0 start|stop|env DIR [immediate]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m -- "$2")

pgbin() {
  local b
  for b in /usr/lib/postgresql/*/bin; do
    [ -x "$b/pg_ctl" ] && { echo "$b"; return 0; }
  done
  echo "postgres.sh: no PostgreSQL server found (apt-get install postgresql)" >&2
  return 1
}

# as_pg CMD...: runs CMD as the user the server runs as.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

url() { echo "postgresql://vmsnap@/vmsnap?host=$dir"; }

start() {
  local bin; bin=$(pgbin)
  case "$dir" in *[!A-Za-z0-9_./-]*) echo "postgres.sh: $dir: use a plain path" >&2; exit 2;; esac
  mkdir -p -- "$dir"
  chmod 0700 -- "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    getent passwd postgres >/dev/null || { echo "postgres.sh: no postgres user" >&2; exit 1; }
    chown postgres:postgres -- "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir/data" -U vmsnap --auth=trust --no-sync -E UTF8 \
      --locale=C >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  # fsync and full_page_writes off: only an OS crash could lose or tear what they protect.
  # synchronous_commit stays on: a commit must reach the kernel before the client hears of it,
  # since the tests' crash-like restarts (stop immediate) must not lose acknowledged commits.
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
    "-c listen_addresses='' -k $dir -c unix_socket_permissions=0700 -c fsync=off \
     -c full_page_writes=off -c max_connections=50" \
    >/dev/null || { tail -n 20 "$dir/server.log" >&2; exit 1; }
  if ! as_pg "$bin/psql" -h "$dir" -U vmsnap -d postgres -Atqc \
      "SELECT 1 FROM pg_database WHERE datname = 'vmsnap'" | grep -q 1; then
    as_pg "$bin/psql" -h "$dir" -U vmsnap -d postgres -qc "CREATE DATABASE vmsnap" >/dev/null
  fi
}

stop() {
  local bin; bin=$(pgbin)
  local mode=${1:-fast}
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_pg "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null
}

case "$cmd" in
  start) start ;;
  stop) stop "${3:-fast}" ;;
  env) echo "VMSNAP_PG_URL=$(url)" ;;
  *) usage ;;
esac
