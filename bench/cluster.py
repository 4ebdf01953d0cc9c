#!/usr/bin/env python3
"""bench/cluster.py: the API in cluster mode (docs/cluster.md) against single-host mode,
measured in the same run on this machine, with real guests and a throwaway PostgreSQL:

  latency  spawn (POST /v1/snapshots/tpl/sandboxes), pause and resume of one 128 MiB guest,
           one request at a time, against
             single    a vmsnapd without --cluster (the baseline);
             owner     a cluster of 3 hosts, the request sent to the owning host (placement,
                       leases and row updates in Postgres: the cluster's own cost);
             forwarded the same cluster, the request sent to another host, which places it
                       and forwards it to the owner (one more HTTP hop over TCP).
           The modes alternate within each round; medians over --runs; ratio to single
           (target <= 1.2x).
  placement throughput: --burst concurrent spawns through one host of the cluster (each
           host has room for burst/3, so they spread over the 3), against the same burst
           on the single host: spawns per second of wall time.

Every host gets the same template (exported from the single host, imported into each), so
no spawn pulls anything; no remote store, so pauses push nothing (the failover's push at
pause time costs what bench/remote.py measures for a push).

usage: VMSNAP_BUILD=build/release python3 bench/cluster.py [--runs N] [--burst N]
Needs root (jailed daemons), QEMU and PostgreSQL (scripts/postgres.sh).
"""
import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
import sandbox_lifecycle as lc  # noqa: E402
from cluster_failover import GUEST_MIB, Host, private  # noqa: E402
from cluster_lease import PG, joined  # noqa: E402


def log(*a):
    print("bench/cluster:", *a, flush=True)


def timed(d, method, path, body=None, want=(200, 201)):
    t0 = time.perf_counter()
    status, obj = d.call(method, path, body)
    dt = time.perf_counter() - t0
    lc.check(status in want, "%s %s -> %s %s" % (method, path, status, obj))
    return dt, obj


def one_round(mode, spawn_via, op_via, pin, out):
    q = "?host=%s" % pin if pin else ""
    dt, sb = timed(spawn_via, "POST", "/v1/snapshots/tpl/sandboxes" + q, {})
    out[mode]["spawn"].append(dt)
    lc.sh(op_via, sb["id"], "echo x > /tmp/x")
    dt, _ = timed(op_via, "POST", "/v1/sandboxes/%s/pause" % sb["id"])
    out[mode]["pause"].append(dt)
    dt, _ = timed(op_via, "POST", "/v1/sandboxes/%s/resume" % sb["id"])
    out[mode]["resume"].append(dt)
    op_via.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])


def burst(d, n):
    """n spawns at once through d; returns (seconds of wall time, ids)."""
    got = [None] * n

    def one(i):
        got[i] = d.call("POST", "/v1/snapshots/tpl/sandboxes", {})

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    for status, body in got:
        lc.check(status == 201, "burst spawn: %s %s" % (status, body))
    return dt, [b["id"] for _, b in got]


def setup_template(single, hosts, work):
    sb = single.ok("POST", "/v1/sandboxes", {"memory_mib": GUEST_MIB})
    single.ok("POST", "/v1/sandboxes/%s/snapshot" % sb["id"], {"name": "tpl"})
    single.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
    tar = os.path.join(work, "tpl.tar")
    c = lc.UnixHTTP(single.sock, 600)
    c.request("GET", "/v1/snapshots/tpl/export?compression=none")
    r = c.getresponse()
    with open(tar, "wb") as f:
        shutil.copyfileobj(r, f)
    c.close()
    lc.check(r.status == 200, "export: %s" % r.status)
    os.chmod(tar, 0o644)
    for h in hosts:
        h.ok("POST", "/v1/snapshots", {"path": tar, "name": "tpl"})


def report(out, runs):
    log("latency, median of %d (seconds; ratio to single host):" % runs)
    for op in ("spawn", "pause", "resume"):
        base = statistics.median(out["single"][op])
        line = "  %-7s single %.3f" % (op, base)
        for mode in ("owner", "forwarded"):
            m = statistics.median(out[mode][op])
            line += "   %s %.3f (%.2fx)" % (mode, m, m / base)
        log(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--burst", type=int, default=6)
    args = ap.parse_args()
    if not lc.BUILD or not os.access(lc.VMSNAPD, os.X_OK):
        sys.exit("set VMSNAP_BUILD to a build directory with vmsnapd")
    lc.build_guest()
    work = tempfile.mkdtemp(prefix="vmsnap-bench-cluster-")
    os.chmod(work, 0o755)
    pg = PG(os.path.join(work, "pg"))
    conf, token = os.path.join(work, "cluster.conf"), os.path.join(work, "cluster.token")
    private(conf, "host=%s user=vmsnap dbname=vmsnap\n" % pg.dir)
    private(token, secrets.token_hex(32) + "\n")
    slots = max(1, args.burst // 3)
    hosts = [Host(work, "host-%d" % i, conf, token, slots) for i in (1, 2, 3)]
    os.makedirs(os.path.join(work, "single"))
    single = lc.Daemon(os.path.join(work, "single"))
    try:
        pg.ctl("start")
        single.start()
        for h in hosts:
            h.start()
            joined(pg, h.name)
        setup_template(single, hosts, work)
        out = {m: {"spawn": [], "pause": [], "resume": []}
               for m in ("single", "owner", "forwarded")}
        one_round("owner", hosts[0], hosts[0], "host-1", {m: {"spawn": [], "pause": [],
                                                              "resume": []} for m in out})
        for _ in range(args.runs):  # the first round above warmed every path up
            one_round("single", single, single, None, out)
            one_round("owner", hosts[0], hosts[0], "host-1", out)
            one_round("forwarded", hosts[1], hosts[1], "host-1", out)
        report(out, args.runs)

        t_single, ids = burst(single, args.burst)
        for s in ids:
            single.ok("DELETE", "/v1/sandboxes/%s" % s)
        t_cluster, ids = burst(hosts[0], args.burst)
        spread = pg.sql("SELECT host_id || ':' || count(*) FROM sandboxes WHERE state = "
                        "'running' GROUP BY host_id ORDER BY host_id").split()
        for s in ids:
            hosts[0].ok("DELETE", "/v1/sandboxes/%s" % s)
        log("placement throughput: %d concurrent spawns: single host %.2f/s (%.1f s), "
            "3-host cluster through one host %.2f/s (%.1f s; spread %s)"
            % (args.burst, args.burst / t_single, t_single, args.burst / t_cluster, t_cluster,
               " ".join(spread)))
        with open("/proc/loadavg") as f:
            log("load average at the end: %s" % " ".join(f.read().split()[:3]))
    finally:
        for d in hosts + [single]:
            lc.shut_down(d)
        subprocess.call(["bash", os.path.join(SRC, "scripts", "postgres.sh"), "stop", pg.dir,
                         "immediate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.environ.get("VMSNAP_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
            for d in hosts + [single]:
                shutil.rmtree(d.mem, ignore_errors=True)


if __name__ == "__main__":
    main()
