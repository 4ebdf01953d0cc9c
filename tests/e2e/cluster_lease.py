#!/usr/bin/env python3
"""Operations of a cluster host serialized through the Postgres control plane, with a real
QEMU guest (issue 14, docs/cluster.md §5, §6): a throwaway PostgreSQL (scripts/postgres.sh),
vmsnapd --cluster (host-a) and a second live host registered in the database (host-b).

  create -> the cluster row: host-a, running, no lease;
  host-b holds the sandbox's lease -> pause on host-a is 409 and nothing happens (the guest
  still runs); lease free -> pause 200 (row paused, lease released), resume 200 (running);
  a pause and a destroy at the same moment -> never both applied against each other: one
  409 or one after the other, and the row agrees with the host; Postgres down -> 503 and
  nothing started; Postgres back -> destroy 204, row stopped.

Exit 0 pass, 1 fail, 77 skip. No timing assertions.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_lifecycle as lc  # noqa: E402

PGSH = os.path.join(lc.SRC, "scripts", "postgres.sh")


def log(*a):
    print("cluster-lease:", *a, flush=True)


class PG:
    def __init__(self, d):
        self.dir = d
        self.psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]

    def ctl(self, verb, *args):
        subprocess.check_call(["bash", PGSH, verb, self.dir] + list(args),
                              stdout=subprocess.DEVNULL)

    def sql(self, q):
        out = subprocess.run([self.psql, "-X", "-q", "-A", "-t", "-h", self.dir, "-U", "vmsnap",
                              "-d", "vmsnap", "-v", "ON_ERROR_STOP=1", "-c", q],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise lc.Fail("psql %r: %s" % (q, out.stderr.strip()))
        return out.stdout.strip()


def row(pg, sid):
    return pg.sql("SELECT state || ' ' || host_id || ' ' || coalesce(lease_host, '-') "
                  "FROM sandboxes WHERE id = '%s'" % sid)


def run(d, pg):
    d.start()
    for _ in range(300):  # /healthz answers before the daemon has joined the cluster
        if pg.sql("SELECT to_regclass('hosts') IS NOT NULL AND EXISTS (SELECT 1 FROM "
                  "pg_tables WHERE tablename = 'hosts')") == "t" and \
           pg.sql("SELECT count(*) FROM hosts WHERE id = 'host-a' AND state = 'alive'") == "1":
            break
        time.sleep(0.1)
    pg.sql("INSERT INTO hosts (id, endpoint, vcpus, memory_mib, disk_mib, state, epoch, "
           "heartbeat_at) VALUES ('host-b', '127.0.0.1:1', 4, 4096, 0, 'alive', 1, now())")
    sb = d.ok("POST", "/v1/sandboxes", {})
    sid = sb["id"]
    lc.check(row(pg, sid) == "running host-a -", "after create: %s" % row(pg, sid))
    lc.sh(d, sid, "echo 41 > /tmp/n")

    # host-b holds the lease: host-a's pause is refused, nothing happens.
    pg.sql("UPDATE sandboxes SET lease_host = 'host-b', lease_epoch = 1, lease_op = 'resume', "
           "lease_token = nextval('lease_tokens') WHERE id = '%s'" % sid)
    status, body = d.call("POST", "/v1/sandboxes/%s/pause" % sid)
    lc.check(status == 409 and "busy" in body["error"]["message"],
             "pause under host-b's lease: %s %s" % (status, body))
    lc.check(d.ok("GET", "/v1/sandboxes/%s" % sid)["state"] == "running", "guest touched")
    lc.check(lc.sh(d, sid, "cat /tmp/n") == "41", "guest state changed under a refused pause")
    pg.sql("UPDATE sandboxes SET lease_host = NULL, lease_epoch = NULL, lease_op = NULL "
           "WHERE id = '%s'" % sid)

    d.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    lc.check(row(pg, sid) == "paused host-a -", "after pause: %s" % row(pg, sid))
    d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    lc.check(row(pg, sid) == "running host-a -", "after resume: %s" % row(pg, sid))
    lc.check(lc.sh(d, sid, "cat /tmp/n") == "41", "memory lost across pause/resume")

    # A pause and a destroy at the same moment.
    results = {}

    def call(name, method, path):
        results[name] = d.call(method, path)[0]

    ts = [threading.Thread(target=call, args=("pause", "POST", "/v1/sandboxes/%s/pause" % sid)),
          threading.Thread(target=call, args=("destroy", "DELETE", "/v1/sandboxes/%s" % sid))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log("pause and destroy raced:", results)
    lc.check(results["pause"] in (200, 404, 409) and results["destroy"] in (204, 409),
             "race statuses %s" % results)
    lc.check(not (results["pause"] == 409 and results["destroy"] == 409), "both refused")
    status, local = d.call("GET", "/v1/sandboxes/%s" % sid)
    r = row(pg, sid)
    if results["destroy"] == 204:
        gone = status == 404 or (status == 200 and local["state"] == "stopped")
        lc.check(gone and r == "stopped host-a -", "destroyed: %s %s / %s" % (status, local, r))
        sb = d.ok("POST", "/v1/sandboxes", {})  # a sandbox for the rest
        sid = sb["id"]
    else:
        lc.check(status == 200 and r == "%s host-a -" % local["state"],
                 "pause won: host says %s, cluster %s" % (local, r))
        d.ok("POST", "/v1/sandboxes/%s/resume" % sid)

    # The cluster database down: 503, nothing started; back: works again.
    pg.ctl("stop", "immediate")
    status, body = d.call("POST", "/v1/sandboxes/%s/pause" % sid)
    lc.check(status == 503 and body["error"]["code"] == "unavailable",
             "pause without the database: %s %s" % (status, body))
    lc.check(d.ok("GET", "/v1/sandboxes/%s" % sid)["state"] == "running",
             "a refused pause touched the sandbox")
    pg.ctl("start")
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)
    lc.check(row(pg, sid) == "stopped host-a -", "after destroy: %s" % row(pg, sid))


def main():
    if os.geteuid() != 0:
        lc.skip("needs root (jails)")
    if not os.access(lc.VMSNAPD, os.X_OK):
        lc.skip("no vmsnapd at %s" % lc.VMSNAPD)
    if not shutil.which("qemu-system-x86_64"):
        lc.skip("qemu-system-x86_64 is not installed")
    if not glob.glob("/usr/lib/postgresql/*/bin/psql"):
        lc.skip("no PostgreSQL (apt-get install postgresql; scripts/setup.sh)")
    rc = subprocess.call([os.path.join(lc.SRC, "guest", "build.sh"), lc.GUEST],
                         stdout=subprocess.DEVNULL)
    if rc == 2:
        lc.skip("the guest image cannot be built here (guest/build.sh exit 2)")
    if rc != 0:
        raise lc.Fail("guest/build.sh failed (%d)" % rc)
    work = tempfile.mkdtemp(prefix="vmsnap-e2e-cluster-")
    os.chmod(work, 0o755)  # the postgres user reaches its dir inside
    pg = PG(os.path.join(work, "pg"))
    pg.ctl("start")
    conf = os.path.join(work, "cluster.conf")
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, ("host=%s user=vmsnap dbname=vmsnap\n" % pg.dir).encode())
    os.close(fd)
    d = lc.Daemon(work, lc.GUEST, extra_args=[
        "--cluster", "@" + conf, "--host-id", "host-a", "--advertise", "127.0.0.1:1",
        "--heartbeat-interval", "500", "--lost-after", "3600000"])
    ok = False
    try:
        run(d, pg)
        ok = True
        log("passed")
    except (lc.Fail, OSError) as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        try:
            if d.proc and d.proc.poll() is None:
                for s in (d.call("GET", "/v1/sandboxes")[1] or {}).get("sandboxes", []):
                    d.call("DELETE", "/v1/sandboxes/%s" % s["id"])
        except Exception:
            pass
        d.stop()
        lc.kill_leftovers(d)
        subprocess.call(["bash", PGSH, "stop", pg.dir, "immediate"], stdout=subprocess.DEVNULL)
        if os.environ.get("VMSNAP_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(d.mem, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)
