#!/usr/bin/env python3
"""bench/remote.py: the remote store (docs/remote.md) against a real Ceph RGW started here
(scripts/ceph.sh), with baselines measured in the same run:

  push   `vmsnap snapshot push` of a snapshot of --size-mib random (incompressible) memory
         (export, SHA-256 of every chunk, HEAD + PUT of each, manifest) against `curl`
         PUTting the very same 4 MiB chunks, 8 at a time (xargs -P 8), to other keys
  pull   `vmsnap snapshot pull` into an empty root (GET, SHA-256 check, sparse pwrite,
         then the store's import: checksums of every file, fsyncs) against `curl` GETting
         the same chunk objects, 8 at a time, into files
  spawn  time to first exec on host B: POST /v1/snapshots/tpl/sandboxes + the first
         exec `true` answered, from the remote (B has no copy: pull, then spawn) against
         the same on a host B' that holds a local copy (pulled before the clock starts);
         and the bytes fetched before B's guest runs against the template's size

  lazy   page-server level (uffd-serve + tests/peer/uffd-peer playing Firecracker, which
         cannot run here), a snapshot of --size-mib random memory: seconds until the VMM
         can start and until it has touched --lazy-fraction of its pages (random pages;
         1.0 = all), for a host with a local copy (uffd-serve on it), a lazy restore
         (pull --to-dir + uffd-serve --remote-lazy, empty cache), a lazy restore with the
         host's chunk cache warm, and the full pull first (pull, then uffd-serve); plus
         the bytes fetched before the VMM can start

--shape runs every client (the CLI, curl, host B's vmsnapd and its VMMs) in a network
namespace of its own, joined to the host's (where radosgw listens) by a veth pair shaped
with tc netem on both ends: 1 Gbit/s and 2.5 ms each way (5 ms RTT); on a kernel without
sch_netem, tbf at 1 Gbit/s without added delay (the output says which). Without --shape the
link is loopback. radosgw then listens on the veth's host address too.

usage: VMSNAP_BUILD=build/release python3 bench/remote.py [--size-mib N] [--runs N]
           [--only transfer|spawn|lazy] [--lazy-fraction F] [--shape]
Prints medians over --runs of MB/s (ours, curl, ours/curl) and seconds (remote, local,
remote/local; target <= 1.5x). Needs root for --shape and for the jailed daemons.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
from sandbox_lifecycle import Daemon  # noqa: E402

BUILD = os.environ.get("VMSNAP_BUILD", "")
CLI = os.path.join(BUILD, "vmsnap")
CHUNK = 4 << 20
NS = "vsbench-%d" % os.getpid()
S3 = {}             # the clients' VMSNAP_S3_* (the shaped address with --shape)
VMMS = []           # pidfds of every VMM the daemons reported, killed at the end


def log(*a):
    print("bench/remote:", *a, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---- the shaped link -----------------------------------------------------------------------

class Link:
    """A veth pair between the host and a network namespace, netem-shaped both ways."""

    HOST, PEER = "10.213.%d.1" % (os.getpid() % 250), "10.213.%d.2" % (os.getpid() % 250)

    def __init__(self, shape):
        self.on = shape
        self.prefix = ["nsenter", "--net=/run/netns/" + NS] if shape else []

    def up(self):
        if not self.on:
            return
        h, p = "vsb%dh" % (os.getpid() % 100000), "vsb%dp" % (os.getpid() % 100000)
        self.dev = h
        for cmd in (["ip", "netns", "add", NS],
                    ["ip", "link", "add", h, "type", "veth", "peer", "name", p],
                    ["ip", "link", "set", p, "netns", NS],
                    ["ip", "addr", "add", self.HOST + "/30", "dev", h],
                    ["ip", "link", "set", h, "up"],
                    ["ip", "netns", "exec", NS, "ip", "addr", "add", self.PEER + "/30", "dev", p],
                    ["ip", "netns", "exec", NS, "ip", "link", "set", p, "up"],
                    ["ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"]):
            subprocess.check_call(cmd)
        netem = ["netem", "delay", "2500us", "rate", "1gbit", "limit", "100000"]
        tbf = ["tbf", "rate", "1gbit", "burst", "256kb", "latency", "50ms"]
        self.how = "netem: 1 Gbit/s, 2.5 ms each way"
        if subprocess.call(["tc", "qdisc", "add", "dev", h, "root"] + netem,
                           stderr=subprocess.DEVNULL) != 0:
            # A kernel without sch_netem: the rate only (tbf), no added delay.
            self.how = "tbf: 1 Gbit/s, NO added delay (this kernel has no sch_netem)"
            netem = tbf
            subprocess.check_call(["tc", "qdisc", "add", "dev", h, "root"] + tbf)
        subprocess.check_call(["ip", "netns", "exec", NS, "tc", "qdisc", "add", "dev", p,
                               "root"] + netem)
        log("shaped link up: %s <-> %s (netns %s), %s" % (self.HOST, self.PEER, NS, self.how))

    def down(self):
        if self.on:
            subprocess.call(["ip", "link", "del", self.dev], stderr=subprocess.DEVNULL)
            subprocess.call(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)


LINK = None


def run(cmd, env=None, **kw):
    """A client command, in the shaped namespace when there is one."""
    e = dict(os.environ)
    e.update(S3)
    e.update(env or {})
    return subprocess.run(LINK.prefix + cmd, env=e, **kw)


def cli(*args):
    p = run([CLI, "snapshot"] + list(args), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("vmsnap snapshot %s: %s" % (" ".join(args), p.stderr))
    return json.loads(p.stdout) if "--json" in args else p.stdout


def timed(fn):
    t = time.monotonic()
    r = fn()
    return time.monotonic() - t, r


# ---- curl, the baseline --------------------------------------------------------------------

def curl_many(method, pairs, parallel=8):
    """curl for each (key, file): PUT the file to key, or GET key into file; 8 at a time,
    as our client runs 8 requests in flight. One curl process per object."""
    auth = "%s:%s" % (S3["VMSNAP_S3_ACCESS_KEY"], S3["VMSNAP_S3_SECRET_KEY"])
    base = "%s/%s/" % (S3["VMSNAP_S3_ENDPOINT"], S3["VMSNAP_S3_BUCKET"])
    lines = "".join("%s %s\n" % kf for kf in pairs)
    io = '-T "$2"' if method == "PUT" else '-o "$2"'
    script = ('curl -sS -f --aws-sigv4 "aws:amz:%s:s3" -u "$AUTH" -H "x-amz-content-sha256: '
              'UNSIGNED-PAYLOAD" %s "$BASE$1"' % (S3["VMSNAP_S3_REGION"], io))
    p = run(["xargs", "-P", str(parallel), "-L", "1", "sh", "-c", script, "curl"],
            env={"AUTH": auth, "BASE": base}, input=lines, text=True, capture_output=True)
    if p.returncode != 0:
        sys.exit("curl %s: %s" % (method, p.stderr[-500:]))


def chunk_files(path, outdir):
    """Cuts path into the 4 MiB pieces our push makes; returns their paths (no zero ones:
    the data is random)."""
    os.makedirs(outdir, exist_ok=True)
    out = []
    with open(path, "rb") as f:
        i = 0
        while True:
            b = f.read(CHUNK)
            if not b:
                return out
            p = os.path.join(outdir, "%05d" % i)
            with open(p, "wb") as g:
                g.write(b)
            out.append(p)
            i += 1


# ---- push and pull -------------------------------------------------------------------------

def bench_transfer(work, size_mib, runs):
    root = os.path.join(work, "a")
    mem = os.path.join(work, "mem")
    with open(mem, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    cli("--root", root, "add", mem, "--name", "big", "--kind", "template")
    pieces = chunk_files(mem, os.path.join(work, "pieces"))
    nbytes = size_mib << 20
    rows = {"push": [], "curl PUT": [], "pull": [], "curl GET": []}
    for i in range(runs):
        cli("--root", root, "gc", "--remote", "--grace", "0")  # the bucket empty of chunks
        t, st = timed(lambda: cli("--root", root, "push", "big", "--json"))
        if st["chunks_sent"] < len(pieces):
            sys.exit("push sent %d chunks, want %d" % (st["chunks_sent"], len(pieces)))
        rows["push"].append(st["bytes"] / t)
        keys = ["curlbench/%d/%05d" % (i, j) for j in range(len(pieces))]
        t, _ = timed(lambda: curl_many("PUT", list(zip(keys, pieces))))
        rows["curl PUT"].append(nbytes / t)
        b = os.path.join(work, "b%d" % i)
        t, _ = timed(lambda: cli("--root", b, "pull", "big", "--json"))
        rows["pull"].append(st["bytes"] / t)
        manifest = json.loads(run(["curl", "-sS", "-f", "--aws-sigv4",
                                   "aws:amz:%s:s3" % S3["VMSNAP_S3_REGION"], "-u",
                                   "%s:%s" % (S3["VMSNAP_S3_ACCESS_KEY"],
                                              S3["VMSNAP_S3_SECRET_KEY"]),
                                   "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                                   "%s/%s/manifests/%s.json" % (S3["VMSNAP_S3_ENDPOINT"],
                                                                S3["VMSNAP_S3_BUCKET"],
                                                                st["id"])],
                                  capture_output=True).stdout)
        chunks = [c for f in manifest["files"] for c in f["chunks"] if c]
        got = os.path.join(work, "got%d" % i)
        os.makedirs(got)
        t, _ = timed(lambda: curl_many("GET", [("chunks/" + c, os.path.join(got, "%05d" % j))
                                               for j, c in enumerate(chunks)]))
        rows["curl GET"].append(sum(os.path.getsize(os.path.join(got, n))
                                    for n in os.listdir(got)) / t)
        shutil.rmtree(got)
        shutil.rmtree(b)
        cli("--root", root, "rm", "--remote", "big")
        for k in keys:  # curl's copies out again (the memstore OSD holds 1 GiB)
            run(["curl", "-sS", "-X", "DELETE", "--aws-sigv4",
                 "aws:amz:%s:s3" % S3["VMSNAP_S3_REGION"], "-u",
                 "%s:%s" % (S3["VMSNAP_S3_ACCESS_KEY"], S3["VMSNAP_S3_SECRET_KEY"]),
                 "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                 "%s/%s/%s" % (S3["VMSNAP_S3_ENDPOINT"], S3["VMSNAP_S3_BUCKET"], k)],
                capture_output=True)
    cli("--root", root, "gc", "--remote", "--grace", "0")
    mb = lambda v: v / 1e6  # noqa: E731
    print("\n%d MiB of random memory, %d runs, medians (MB/s):" % (size_mib, runs))
    print("  %-6s %8s %8s %7s" % ("", "ours", "curl", "ratio"))
    for ours, base in (("push", "curl PUT"), ("pull", "curl GET")):
        o, c = median(rows[ours]), median(rows[base])
        print("  %-6s %8.1f %8.1f %6.2fx" % (ours, mb(o), mb(c), o / c))


# ---- time to first exec on host B ----------------------------------------------------------

class ShapedDaemon(Daemon):
    """vmsnapd in the shaped namespace (nsenter --net only: mounts and cgroups stay the
    host's, so the jails work as usual)."""

    def start(self, env_extra=None):
        if LINK.on:
            real = sys.modules["sandbox_lifecycle"].VMSNAPD
            wrapper = os.path.join(self.work, "vmsnapd-in-ns")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec nsenter --net=/run/netns/%s %s \"$@\"\n" % (NS, real))
            os.chmod(wrapper, 0o700)
            sys.modules["sandbox_lifecycle"].VMSNAPD = wrapper
            try:
                return super().start(env_extra)
            finally:
                sys.modules["sandbox_lifecycle"].VMSNAPD = real
        return super().start(env_extra)


def watch(sb):
    if sb.get("pid"):
        try:
            VMMS.append(os.pidfd_open(sb["pid"]))
        except ProcessLookupError:
            pass
    return sb


def first_exec(d, ref):
    """Seconds from the spawn request to the first exec answered."""
    t0 = time.monotonic()
    sb = watch(d.ok("POST", "/v1/snapshots/%s/sandboxes" % ref, {}))
    r = d.ok("POST", "/v1/sandboxes/%s/exec" % sb["id"], {"argv": ["true"], "timeout_ms": 60000})
    t = time.monotonic() - t0
    if r["exit_code"] != 0:
        sys.exit("exec on B: %s" % r)
    d.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
    return t


def bench_spawn(work, runs):
    a = Daemon(tempfile.mkdtemp(prefix="vrb-a-", dir=work))
    a.start(env_extra=S3 if not LINK.on else {k: v for k, v in S3.items()})
    try:
        sb = watch(a.ok("POST", "/v1/sandboxes", {"name": "src"}))
        a.ok("POST", "/v1/sandboxes/%s/exec" % sb["id"],
             {"cmd": "head -c 50000000 /dev/urandom > /tmp/fill", "timeout_ms": 120000})
        tpl = a.ok("POST", "/v1/sandboxes/%s/snapshot" % sb["id"], {"name": "tpl"})
        a.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
        st = a.ok("POST", "/v1/remote/snapshots", {"snapshot": "tpl"})
    finally:
        a.stop()
    remote, local = [], []
    for i in range(runs):
        b = ShapedDaemon(tempfile.mkdtemp(prefix="vrb-b%d-" % i, dir=work))
        b.start(env_extra=S3)
        try:
            remote.append(first_exec(b, "tpl"))
        finally:
            b.stop()
        c = ShapedDaemon(tempfile.mkdtemp(prefix="vrb-c%d-" % i, dir=work))
        c.start(env_extra=S3)
        try:
            c.ok("POST", "/v1/remote/snapshots/tpl/pull", {})
            local.append(first_exec(c, "tpl"))
        finally:
            c.stop()
    r, lo = median(remote), median(local)
    size = tpl["memory_mib"] << 20
    print("\ntime to first exec on B (%d runs, medians): from the remote %.2f s, from a local "
          "copy %.2f s: %.2fx (target <= 1.5x)" % (runs, r, lo, r / lo))
    print("bytes fetched before B's guest runs: %.1f MiB (every non-zero chunk: a full "
          "download) of a template of %d MiB guest memory + disk; %d chunks, %d zero"
          % (st["chunks"] * CHUNK / 2**20, size >> 20, st["chunks"], st["zero_chunks"]))


# ---- lazy restore at the page-server level -------------------------------------------------

PEER = os.path.join(BUILD, "tests", "uffd-peer")


def serve_and_touch(work, snapdir, expect, fraction, extra, env=None):
    """uffd-serve on snapdir (plus extra flags) and uffd-peer touching fraction of the pages.
    Returns (seconds until the server listens, seconds until the peer is done, stats)."""
    sock = os.path.join(work, "serve-%d.sock" % time.monotonic_ns())
    t0 = time.monotonic()
    srv = subprocess.Popen(LINK.prefix + [CLI, "uffd-serve", snapdir, "--socket", sock,
                                          "--json"] + extra,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, **S3, **(env or {})))
    while not os.path.exists(sock):
        if srv.poll() is not None:
            sys.exit("uffd-serve: %s" % srv.stderr.read())
        time.sleep(0.002)
    listening = time.monotonic() - t0
    p = run([PEER, "--socket", sock, "--expect", expect, "--threads", "2",
             "--fraction", str(fraction)], capture_output=True, text=True)
    done = time.monotonic() - t0
    out, err = srv.communicate(timeout=60)
    if p.returncode != 0 or srv.returncode != 0:
        sys.exit("lazy bench: peer %d (%s), uffd-serve %d (%s)" % (p.returncode, p.stdout,
                                                                   srv.returncode, err[-400:]))
    return listening, done, json.loads(out.strip().splitlines()[-1])


def bench_lazy(work, size_mib, runs, fraction):
    if not os.access(PEER, os.X_OK):
        sys.exit("%s is not built (cmake --build %s --target uffd-peer)" % (PEER, BUILD))
    mem = os.path.join(work, "lazymem")
    with open(mem, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    a = os.path.join(work, "la")
    snap = cli("--root", a, "add", mem, "--name", "lazy", "--kind", "template", "--json")
    cli("--root", a, "push", "lazy")
    rows = {"local copy": [], "lazy, cold cache": [], "lazy, warm cache": [],
            "full pull first": []}
    starts = {k: [] for k in rows}
    fetched = []
    for i in range(runs):
        b = os.path.join(work, "lb%d" % i)
        cli("--root", b, "pull", "lazy")  # the local copy (its cache stays out of the way)
        shutil.rmtree(os.path.join(b, "chunk-cache"))
        st, dt, _ = serve_and_touch(work, os.path.join(b, "snapshots", snap["id"]), mem,
                                    fraction, [])
        starts["local copy"].append(st)
        rows["local copy"].append(dt)
        c = os.path.join(work, "lc%d" % i)
        for label in ("lazy, cold cache", "lazy, warm cache"):
            d = os.path.join(work, "lazy%d-%s" % (i, label[6:10]))
            t0 = time.monotonic()
            pre = cli("--root", c, "pull", "lazy", "--to-dir", d, "--json")
            t_pre = time.monotonic() - t0
            st, dt, stats = serve_and_touch(work, d, mem, fraction,
                                            ["--remote-lazy", "--chunk-cache",
                                             os.path.join(c, "chunk-cache")])
            starts[label].append(t_pre + st)
            rows[label].append(t_pre + dt)
            if label.endswith("cold cache"):
                fetched.append(pre["bytes"])
                if stats.get("remote", {}).get("chunks_fetched", 0) == 0 and fraction > 0.01:
                    sys.exit("the cold lazy restore fetched no chunk: %s" % stats)
        e = os.path.join(work, "le%d" % i)
        t0 = time.monotonic()
        cli("--root", e, "pull", "lazy")
        t_pull = time.monotonic() - t0
        st, dt, _ = serve_and_touch(work, os.path.join(e, "snapshots", snap["id"]), mem,
                                    fraction, [])
        starts["full pull first"].append(t_pull + st)
        rows["full pull first"].append(t_pull + dt)
    base_s, base_d = median(starts["local copy"]), median(rows["local copy"])
    print("\nlazy restore, page-server level, %d MiB random memory, %.0f %% of the pages "
          "touched (%d runs, medians; ratios against the local copy of the same run):"
          % (size_mib, fraction * 100, runs))
    print("%-18s %14s %8s %16s %8s" % ("", "VMM can start", "ratio", "pages touched", "ratio"))
    for k in rows:
        s_, d_ = median(starts[k]), median(rows[k])
        print("%-18s %12.3f s %7.2fx %14.3f s %7.2fx" % (k, s_, s_ / base_s, d_, d_ / base_d))
    print("bytes fetched before the VMM can start: lazy %.1f KiB, full pull %d MiB"
          % (median(fetched) / 1024, size_mib))


def main():
    global LINK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("transfer", "spawn", "lazy"))
    ap.add_argument("--lazy-fraction", type=float, default=1.0)
    ap.add_argument("--shape", action="store_true")
    a = ap.parse_args()
    if not BUILD or not os.access(CLI, os.X_OK):
        sys.exit("set VMSNAP_BUILD to the build directory (e.g. build/release)")
    LINK = Link(a.shape)
    work = tempfile.mkdtemp(prefix="vrb-")
    ceph = os.path.join(work, "ceph")
    try:
        LINK.up()
        env = dict(os.environ)
        if a.shape:
            env["VMSNAP_CEPH_ALSO_LISTEN"] = Link.HOST
        subprocess.check_call(["bash", os.path.join(SRC, "scripts", "ceph.sh"), "start", ceph],
                              env=env, stdout=subprocess.DEVNULL)
        with open(os.path.join(ceph, "s3.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k.startswith("VMSNAP_S3_"):
                    S3[k] = v
        if a.shape:
            S3["VMSNAP_S3_ENDPOINT"] = S3["VMSNAP_S3_ENDPOINT"].replace("127.0.0.1", Link.HOST)
        if a.only in (None, "transfer"):
            bench_transfer(work, a.size_mib, a.runs)
        if a.only in (None, "spawn"):
            bench_spawn(work, a.runs)
        if a.only in (None, "lazy"):
            bench_lazy(work, a.size_mib, a.runs, a.lazy_fraction)
    finally:
        for fd in VMMS:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.call(["bash", os.path.join(SRC, "scripts", "ceph.sh"), "stop", ceph],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        LINK.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
