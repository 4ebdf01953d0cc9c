#!/usr/bin/env python3
"""bench/sandbox.py: sandbox pause/resume latency through vmsnapd against a bare QEMU
save/restore of the same guest (the very same QEMU command line, read from the sandbox's
process) in the same run; and host memory of N clones of one template against N
independently booted guests.

  pause  ours: POST /pause (agent sync, stop, save, new memory generation + disk overlay
               into a new store snapshot, fsyncs, VMM exit, files released)
         bare: QMP stop + x-ignore-shared migrate to a file + quit
  resume ours: POST /resume (materialize memory into tmpfs, copy the overlay, QEMU
               -incoming, migrate-incoming, cont, agent restore_hook answered)
         bare: copy of the memory file into tmpfs, QEMU -incoming, migrate-incoming, cont,
               agent health answered
  memory N clones of one template against N independent boots, each guest writing 10 % of
         its RAM: the VMMs' anonymous RSS + the allocated bytes of every distinct guest-RAM
         file they map (a template file shared by clones counted once); target <= 0.3
  jail   resume and spawn through a jailed vmsnapd (every VMM in its jail, the default)
         against a vmsnapd started with --insecure-no-jail, one daemon after the other in
         the same run; target: the jail costs <= 10 % of resume time

  breakdown  where the pauses' time went, by phase: the daemon's
         vmsnap_pause_phase_seconds_total counters (/metrics) before and after the rounds,
         divided by the pauses made; and the background merges that ran meanwhile
  The rounds start once the daemon has built the booted sandbox's base for its first pause
  (as for a sandbox that ran a moment; it is printed how long that took).

usage: VMSNAP_BUILD=build/release python3 bench/sandbox.py [--rounds N] [--pause-rounds N]
           [--clones N] [--only latency|jail|density]
Prints medians, pause p50/p99 and ratios (ours / bare, jail / no jail); targets: resume <=
1.2x, pause p50 <= 2x the bare save, pause p99 <= 1.3x its p50.
The ours/bare rows use the unjailed daemon: the bare QEMU reuses its command line, whose
paths a jailed QEMU sees only inside its jail.
"""
import argparse
import math
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
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
from sandbox_lifecycle import Daemon, GUEST, MERGE_CAP, kill_leftovers  # noqa: E402
import qmp_agent  # noqa: E402


class Reaper:
    """Every process this bench started or was handed by the daemon (VMM pids from the API's
    answers), held as pidfds from the moment its pid is known, so that the cleanup kills
    exactly those processes, by pid, even if the pid is reused meanwhile; never a pattern."""

    def __init__(self):
        self.fds = []

    def watch(self, pid):
        try:
            self.fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            pass  # already gone: nothing to kill later
        return pid

    def sandbox(self, sb):
        """Watches the VMM of a sandbox the API just returned; returns sb."""
        if sb.get("pid"):
            self.watch(sb["pid"])
        return sb

    def kill_all(self):
        for fd in self.fds:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(fd)
        self.fds = []


REAPER = Reaper()


def cmdline_of(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def rebase(argv, old_run, new_run, old_mem, new_mem):
    return [a.replace(old_run, new_run).replace(old_mem, new_mem) for a in argv]


class Bare:
    """The same guest driven by hand: one QEMU process at a time in `run`."""

    def __init__(self, argv, run, mem):
        self.argv, self.run, self.mem, self.proc = argv, run, mem, None

    def start(self, incoming=False):
        for s in ("qmp.sock", "agent.sock"):
            if os.path.exists(os.path.join(self.run, s)):
                os.unlink(os.path.join(self.run, s))
        argv = [a for a in self.argv if a != "-daemonize"]
        if "-sandbox" in argv:  # its spawn=deny would refuse the exec: migration used below
            i = argv.index("-sandbox")
            del argv[i:i + 2]
        if incoming:
            argv += ["-incoming", "defer"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        REAPER.watch(self.proc.pid)
        self.qmp = qmp_agent.QMP(os.path.join(self.run, "qmp.sock"), timeout=60)

    def agent_ok(self):
        """health answered, asked again every 2 s as vmsnapd does (agent_wait_healthy): a
        request sent while the guest had not yet reopened its side after a restore is
        lost."""
        a = qmp_agent.Agent(os.path.join(self.run, "agent.sock"), timeout=60)
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    a.check("health", timeout=2)
                    return
                except qmp_agent.Error:
                    if time.monotonic() > deadline:
                        raise
        finally:
            a.close()

    def save(self, state):
        self.qmp.save(state)
        self.qmp.execute("quit")
        self.qmp.close()
        self.proc.wait(30)

    def restore(self, state, snapshot_mem):
        subprocess.check_call(["cp", "--sparse=always", snapshot_mem, self.mem])
        self.start(incoming=True)
        self.qmp.load(state)
        self.agent_ok()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def vmm_memory(d, pid, seen):
    """Host memory of one VMM: its anonymous RSS (a clone's private copies of pages it wrote
    included) plus the allocated bytes of each guest-RAM file it maps (a file on the daemon's
    memory root, whatever its name inside a jail) that no VMM counted before (`seen`:
    (dev, inode) pairs), so a template file shared by clones counts once."""
    anon = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    mem_dev = os.stat(d.mem).st_dev
    files = 0
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 6 or int(parts[4]) == 0:
                continue
            try:
                st = os.stat("/proc/%d/map_files/%s" % (pid, parts[0]))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_dev != mem_dev or key in seen:
                continue
            seen.add(key)
            files += st.st_blocks * 512
    return anon + files


def anon_breakdown(d, pid):
    """A VMM's anonymous memory by where it sits, from /proc/PID/smaps: `ram` the private
    copies of guest-RAM pages (Anonymous of a mapping of a file on the memory root: the
    pages a clone wrote since the template), `tcg` the translation cache (anonymous mappings
    that are executable, or the writable alias of QEMU's split-wx code buffer, which has the
    same size; under KVM there is none), `other` the rest (QEMU's heap, thread stacks,
    libraries' data). Bytes."""
    mem_dev = os.stat(d.mem).st_dev
    out = {"ram": 0, "tcg": 0, "other": 0}
    cur, sizes = None, []
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = "other"
                if int(parts[4]) != 0:
                    try:
                        st = os.stat("/proc/%d/map_files/%s" % (pid, parts[0]))
                        cur = "ram" if st.st_dev == mem_dev else "other"
                    except OSError:
                        pass
                elif "x" in parts[1]:
                    cur = "tcg"
                    sizes.append(hi - lo)
                sizes_key = hi - lo
                pending = (cur, sizes_key, parts[4] == "0" and "x" not in parts[1])
            elif parts[0] == "Anonymous:" and cur:
                kind, size, maybe_alias = pending
                if maybe_alias and size in sizes:  # split-wx: the rw alias follows the rx one
                    kind = "tcg"
                out[kind] += int(parts[1]) * 1024
    return out


def touch_memory(d, sid, mib):
    """The guest writes mib MiB of random bytes into its tmpfs (guest RAM)."""
    d.ok("POST", "/v1/sandboxes/%s/exec" % sid,
         {"cmd": "head -c %d /dev/urandom > /dev/shm/touch" % (mib << 20)})


def metrics(d):
    """The daemon's counters as {(name, labels text): value}."""
    status, text = d.call("GET", "/metrics")
    if status != 200:
        raise RuntimeError("GET /metrics -> %s" % status)
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        name, _, labels = key.partition("{")
        out[(name, labels.rstrip("}"))] = float(value)
    return out


def percentile(v, q):
    """The q-quantile of v (nearest rank: the smallest sample >= q of them)."""
    return sorted(v)[max(0, math.ceil(q * len(v)) - 1)]


def print_breakdown(before, after):
    n = after[("vmsnap_pauses_total", "")] - before[("vmsnap_pauses_total", "")]
    phases = sorted(((after[k] - before.get(k, 0), k[1].split('"')[1]) for k in after
                     if k[0] == "vmsnap_pause_phase_seconds_total"), reverse=True)
    total = sum(s for s, _ in phases)
    print("pause breakdown (mean ms over %d pauses; phases sum to %.1f ms):" %
          (n, total * 1e3 / max(n, 1)))
    for s, name in phases:
        print("  %-14s %8.1f" % (name, s * 1e3 / max(n, 1)))
    merges = ["%s %d" % (k[1].split('"')[1], after[k] - before.get(k, 0)) for k in sorted(after)
              if k[0] == "vmsnap_merges_total"]
    if merges:
        print("background merges meanwhile: " + ", ".join(merges))
    bases = ["%s %d" % (k[1].split('"')[1], after[k] - before.get(k, 0)) for k in sorted(after)
             if k[0] == "vmsnap_pause_bases_total"]
    if bases:
        print("first-pause bases meanwhile: " + ", ".join(bases))


def phase_delta(before, after):
    """{phase: seconds} between two /metrics readings taken around one pause."""
    return {k[1].split('"')[1]: after[k] - before.get(k, 0) for k in after
            if k[0] == "vmsnap_pause_phase_seconds_total"}


def print_by_generation(gens, times, phases_by_gen):
    """The pause median and mean phases by the generation the pause made (a chain's length
    is what a pause's fixed costs may grow with)."""
    by_gen = {}
    for g, p in zip(gens, times):
        by_gen.setdefault(g, []).append(p)
    print("by the generation the pause made (median ms; mean ms of the largest phases):")
    for g, v in sorted(by_gen.items()):
        rows = phases_by_gen.get(g, [])
        mean = {k: statistics.mean(r.get(k, 0) for r in rows) for k in (rows[0] if rows else {})}
        top = sorted(mean.items(), key=lambda kv: -kv[1])[:5]
        print("  generation %d: %.1f ms over %d pauses; %s" % (
            g, statistics.median(v) * 1e3, len(v),
            ", ".join("%s %.1f" % (k, x * 1e3) for k, x in top)))


def wait_base(d, before, seconds=120):
    """Waits until the daemon has built the booted sandbox's base for its first pause
    (docs/sandbox.md "The first pause after a boot"), as a sandbox that ran a moment would
    have; returns the seconds waited (None: not built in time, the first pause copies the
    whole RAM)."""
    key = ("vmsnap_pause_bases_total", 'event="built"')
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        m = metrics(d)
        if key not in m:
            return None  # a daemon without bases (an older build, for a comparison)
        if m.get(key, 0) > before.get(key, 0):
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def bench_latency(d, rounds, work):
    before = metrics(d)
    sb = REAPER.sandbox(d.ok("POST", "/v1/sandboxes", {}))
    sid, pid = sb["id"], sb["pid"]
    argv = cmdline_of(pid)
    run = os.path.join(d.root, "sandboxes", sid)
    bare_run = os.path.join(work, "bare")
    bare_mem_dir = os.path.join(d.mem, "bare")
    os.makedirs(bare_run)
    os.makedirs(bare_mem_dir)
    bare_mem = os.path.join(bare_mem_dir, "memory")
    for f in ("vmlinuz", "initramfs.cpio.gz"):  # the driver boots from copies in its run dir
        shutil.copy(os.path.join(run, f), os.path.join(bare_run, f))
    old_mem = os.path.join(d.mem, sid)
    subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                           os.path.join(GUEST, "rootfs.ext4"),
                           os.path.join(bare_run, "rootfs.qcow2")])
    bare = Bare(rebase(argv, run, bare_run, old_mem, bare_mem_dir), bare_run, bare_mem)
    subprocess.check_call(["truncate", "-s", str(sb["memory_mib"] << 20), bare_mem])
    bare.start()
    bare.agent_ok()
    # The bare guest's state and the "snapshot" of its RAM stay in its tmpfs: a move of the
    # RAM to the disk would leave 256 MiB of dirty page cache that the next pause's fsyncs
    # (ours) would have to write back, charging the baseline's bookkeeping to vmsnap.
    state = os.path.join(bare_mem_dir, "bare.state")
    saved_mem = os.path.join(bare_mem_dir, "bare.snapshot-mem")
    ours_p, ours_r, bare_p, bare_r, gens = [], [], [], [], []
    waited = wait_base(d, before)
    print("the first pause's base: %s" % ("built %.1f s after the boot was answered" % waited
                                          if waited is not None else "none"))
    before = metrics(d)
    phases_by_gen = {}  # generation made -> [{phase: seconds} per pause]
    for _ in range(rounds):
        m0 = metrics(d)
        t = time.monotonic()
        gens.append(d.ok("POST", "/v1/sandboxes/%s/pause" % sid)["generation"])
        ours_p.append(time.monotonic() - t)
        phases_by_gen.setdefault(gens[-1], []).append(phase_delta(m0, metrics(d)))
        t = time.monotonic()
        REAPER.sandbox(d.ok("POST", "/v1/sandboxes/%s/resume" % sid))
        ours_r.append(time.monotonic() - t)
        t = time.monotonic()
        bare.save(state)
        bare_p.append(time.monotonic() - t)
        os.replace(bare_mem, saved_mem)  # the "snapshot" of the bare guest's RAM (a rename)
        t = time.monotonic()
        bare.restore(state, saved_mem)
        bare_r.append(time.monotonic() - t)
    after = metrics(d)
    bare.stop()
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)
    med = statistics.median
    print("%-8s %10s %10s %8s   (%d rounds, %d MiB guest, merge cap %d, medians)" %
          ("", "ours ms", "bare ms", "ratio", rounds, sb["memory_mib"], MERGE_CAP))
    for name, o, b in (("pause", ours_p, bare_p), ("resume", ours_r, bare_r)):
        print("%-8s %10.1f %10.1f %8.2f" % (name, med(o) * 1e3, med(b) * 1e3, med(o) / med(b)))
    p50, p99 = percentile(ours_p, 0.5), percentile(ours_p, 0.99)
    print("pause p50 %.1f ms, p99 %.1f ms, max %.1f ms; p99/p50 %.2f; p50 / bare save p50 %.2f"
          % (p50 * 1e3, p99 * 1e3, max(ours_p) * 1e3, p99 / p50, p50 / percentile(bare_p, 0.5)))
    print("the first pause after the boot: %.1f ms (generation %d: %s)" % (
        ours_p[0] * 1e3, gens[0], "over its base" if gens[0] == 1 else "the whole RAM"))
    slow = sorted(range(len(ours_p)), key=lambda i: -ours_p[i])[:3]
    print("slowest pauses: " + ", ".join("round %d %.1f ms (generation %d)"
                                         % (i + 1, ours_p[i] * 1e3, gens[i]) for i in slow))
    print_by_generation(gens, ours_p, phases_by_gen)
    print_breakdown(before, after)


def bench_density(d, n):
    """n clones of one template and n independent boots, each guest writing 10 % of its
    memory; host memory of each group summed over its VMMs (vmm_memory)."""
    base = REAPER.sandbox(d.ok("POST", "/v1/sandboxes", {}))
    mib = base["memory_mib"] // 10
    d.ok("POST", "/v1/sandboxes/%s/snapshot" % base["id"], {"name": "bench-tpl"})
    d.ok("DELETE", "/v1/sandboxes/%s" % base["id"])

    def group(make):
        sbs = [REAPER.sandbox(make()) for _ in range(n)]
        for sb in sbs:
            touch_memory(d, sb["id"], mib)
        seen = set()
        total = sum(vmm_memory(d, sb["pid"], seen) for sb in sbs)
        parts = [anon_breakdown(d, sb["pid"]) for sb in sbs]
        for sb in sbs:
            d.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
        mean = {k: sum(p[k] for p in parts) / len(parts) / 2**20 for k in parts[0]}
        return total, mean

    clone_mem, per_clone = group(lambda: d.ok("POST", "/v1/snapshots/bench-tpl/sandboxes", {}))
    fresh_mem, per_boot = group(lambda: d.ok("POST", "/v1/sandboxes", {}))
    for name, m in (("clone", per_clone), ("independent boot", per_boot)):
        print("  anonymous memory per %s: %.1f MiB guest RAM written (private copies), "
              "%.1f MiB TCG translation cache (none under KVM), %.1f MiB QEMU's own (heap, "
              "stacks, libraries' data)" % (name, m["ram"], m["tcg"], m["other"]), flush=True)
    print("memory of %d guests, each writing %d MiB: clones of one template %.1f MiB, "
          "independent boots %.1f MiB, ratio %.2f (target <= 0.3)" %
          (n, mib, clone_mem / 2**20, fresh_mem / 2**20, clone_mem / fresh_mem), flush=True)


def sub(work, name):
    """A daemon's own directory under work, named uniquely (its memory root is derived from
    the name: /dev/shm/<name>-mem)."""
    return os.path.join(work, "%s-%s" % (os.path.basename(work)[3:], name))


def bench_jail(work, rounds):
    """Resume and spawn with every VMM jailed against --insecure-no-jail, same guest. Both
    daemons run at once and take turns, round by round, so that a change of load on the
    machine hits both alike."""
    modes = (("jail", []), ("no jail", ["--insecure-no-jail"]))
    daemons = {m: Daemon(sub(work, m[0]), extra_args=a) for m, a in modes}  # short: socket paths
    times = {m: {"resume": [], "spawn": []} for m, _ in modes}
    try:
        sbs = {}
        for m, d in daemons.items():
            os.makedirs(d.work)
            d.start()
            sbs[m] = d.ok("POST", "/v1/sandboxes", {})
        for _ in range(rounds):
            for m, d in daemons.items():
                d.ok("POST", "/v1/sandboxes/%s/pause" % sbs[m]["id"])
                t = time.monotonic()
                d.ok("POST", "/v1/sandboxes/%s/resume" % sbs[m]["id"])
                times[m]["resume"].append(time.monotonic() - t)
        for m, d in daemons.items():
            d.ok("POST", "/v1/sandboxes/%s/snapshot" % sbs[m]["id"], {"name": "jail-bench"})
            d.ok("DELETE", "/v1/sandboxes/%s" % sbs[m]["id"])
        for _ in range(rounds):
            for m, d in daemons.items():
                t = time.monotonic()
                c = d.ok("POST", "/v1/snapshots/jail-bench/sandboxes", {})
                times[m]["spawn"].append(time.monotonic() - t)
                d.ok("DELETE", "/v1/sandboxes/%s" % c["id"])
    finally:
        for d in daemons.values():
            d.stop()
            kill_leftovers(d)
            shutil.rmtree(d.mem, ignore_errors=True)
    med = statistics.median
    print("%-8s %10s %10s %8s   (%d rounds each, taking turns, 256 MiB guest, medians)" %
          ("", "jail ms", "no-jail ms", "ratio", rounds))
    for name in ("resume", "spawn"):
        j, n = med(times["jail"][name]), med(times["no jail"][name])
        print("%-8s %10.1f %10.1f %8.2f" % (name, j * 1e3, n * 1e3, j / n))


def with_daemon(work, name, extra_args, fn):
    """Runs fn(d) with a fresh daemon of its own, then stops it and kills what it left."""
    d = Daemon(sub(work, name), extra_args=extra_args)
    os.makedirs(d.work)
    try:
        d.start()
        REAPER.watch(d.proc.pid)
        fn(d)
    finally:
        d.stop()
        REAPER.kill_all()  # any process of ours that survived, by pidfd
        kill_leftovers(d)
        shutil.rmtree(d.mem, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="jail rounds")
    ap.add_argument("--pause-rounds", type=int, default=50, help="latency rounds")
    ap.add_argument("--clones", type=int, default=10)
    ap.add_argument("--only", choices=("latency", "jail", "density"))
    a = ap.parse_args()
    if not os.environ.get("VMSNAP_BUILD"):
        sys.exit("set VMSNAP_BUILD to the build directory (e.g. build/release)")
    work = tempfile.mkdtemp(prefix="vb-")  # short: the run dirs' socket paths are <= 107 bytes
    try:
        if a.only in (None, "jail"):
            bench_jail(work, a.rounds)
        if a.only in (None, "latency"):
            # unjailed: the bare QEMU reuses its command line (see the top of this file)
            with_daemon(work, "b", ["--insecure-no-jail"],
                        lambda d: bench_latency(d, a.pause_rounds, d.work))
        if a.only in (None, "density"):  # unjailed: clones map the template's file
            print("density, vmsnapd --insecure-no-jail:", flush=True)
            with_daemon(work, "u", ["--insecure-no-jail"], lambda d: bench_density(d, a.clones))
            print("density, jailed vmsnapd (the default; clones share the template's file "
                  "through the jailer's read-only hand-over):", flush=True)
            with_daemon(work, "d", [], lambda d: bench_density(d, a.clones))
    finally:
        REAPER.kill_all()  # any process of ours that survived, by pidfd
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
