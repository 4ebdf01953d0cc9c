#!/usr/bin/env bash
# Runs a cluster test program against its own throwaway PostgreSQL (scripts/postgres.sh):
# a fresh server in a temp dir, VMSNAP_PG_DIR and VMSNAP_PG_SCRIPT exported (the test makes
# its databases and may restart the server), the server stopped and the dir removed at exit.
# usage: pg-run.sh BINARY
set -uo pipefail
src=${VMSNAP_SRC:?}
script=$src/scripts/postgres.sh
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 ||
  { echo "SKIP: no PostgreSQL server (apt-get install postgresql; scripts/setup.sh)"; exit 77; }
if [ "$(id -u)" -eq 0 ] && ! getent passwd postgres >/dev/null; then
  echo "SKIP: running as root and there is no postgres user to run the server as"; exit 77
fi
dir=$(mktemp -d /tmp/vmsnap-pgtest.XXXXXX)
cleanup() { bash "$script" stop "$dir" immediate || true; rm -rf -- "$dir"; }
trap cleanup EXIT
bash "$script" start "$dir" || { echo "FAIL: postgres.sh start"; exit 1; }
export VMSNAP_PG_DIR=$dir VMSNAP_PG_SCRIPT=$script
bash "$src/tests/lib/cmocka-tap.sh" "$1"
