#!/usr/bin/env python3
"""bench/sandbox_net.py: what sandbox networking adds to a spawn (and a destroy), measured
against spawns without a network from the same daemon in the same run (issue 12 target:
network adds <= 20 ms to a spawn).

One vmsnapd with --network, inside a private network and mount namespace of this bench
(re-executed under `unshare --net --mount`, as e2e/sandbox-network does): two templates of
the same guest, one made from a sandbox with a network (allow), one from a sandbox made with
"network": "none". Round by round, taking turns (the order alternating) so that a change
of load hits both alike: spawn from each (POST /v1/snapshots/{t}/sandboxes: the networked one also allocates its
address, builds namespace, veth, TAP and both nftables tables, and restores a virtio-net
device), then destroy each (the networked one also tears that down).

usage: VMSNAP_BUILD=build/release python3 bench/sandbox_net.py [--rounds N]
Prints medians and p90 of spawn and destroy with and without a network, the ratio and the
milliseconds added. Run bench-net (bench/net.c) beside it for the network alone.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
from sandbox_lifecycle import Daemon, GUEST, kill_leftovers  # noqa: E402

PRIVATE = "VMSNAP_BENCH_NET_PRIVATE"


def p90(v):
    s = sorted(v)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def bench(d, rounds):
    times = {k: {"spawn": [], "destroy": []} for k in ("net", "none")}
    for k, body in (("net", {}), ("none", {"network": "none"})):
        sb = d.ok("POST", "/v1/sandboxes", body)
        d.ok("POST", "/v1/sandboxes/%s/snapshot" % sb["id"], {"name": "bench-" + k})
        d.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
    for i in range(rounds):
        for k in (("net", "none") if i % 2 == 0 else ("none", "net")):  # no order effect
            t = time.monotonic()
            c = d.ok("POST", "/v1/snapshots/bench-%s/sandboxes" % k, {})
            times[k]["spawn"].append(time.monotonic() - t)
            assert (c["network"] is not None) == (k == "net"), c
            t = time.monotonic()
            d.ok("DELETE", "/v1/sandboxes/%s" % c["id"])
            times[k]["destroy"].append(time.monotonic() - t)
    med = statistics.median
    print("%-8s %12s %12s %8s %10s   (%d rounds each, taking turns, 256 MiB guest)" %
          ("", "network ms", "none ms", "ratio", "added ms", rounds))
    for op in ("spawn", "destroy"):
        n, o = med(times["net"][op]), med(times["none"][op])
        print("%-8s %12.1f %12.1f %8.2f %10.1f   median" % (op, n * 1e3, o * 1e3, n / o,
                                                          (n - o) * 1e3))
        n, o = p90(times["net"][op]), p90(times["none"][op])
        print("%-8s %12.1f %12.1f %8.2f %10.1f   p90" % ("", n * 1e3, o * 1e3, n / o,
                                                       (n - o) * 1e3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    if not os.environ.get("VMSNAP_BUILD"):
        sys.exit("set VMSNAP_BUILD to the build directory (e.g. build/release)")
    if os.environ.get(PRIVATE) != "1":
        env = dict(os.environ, **{PRIVATE: "1"})
        sys.exit(subprocess.call(["unshare", "--net", "--mount", "--propagation", "private",
                                  sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
                                 env=env))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = tempfile.mkdtemp(prefix="vbn-")
    netns_dir = os.path.join(work, "netns")
    d = Daemon(work, GUEST, extra_args=["--network", "--netns-dir", netns_dir])
    try:
        d.start()
        bench(d, a.rounds)
    finally:
        d.stop()
        kill_leftovers(d)
        subprocess.call(["umount", netns_dir], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(d.mem, ignore_errors=True)


if __name__ == "__main__":
    main()
