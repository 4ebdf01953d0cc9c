#!/usr/bin/env python3
"""bench/boot.py: boot time of a sandbox through the kernel's PVH entry (VMSNAP_PVH=1: QEMU
loads the uncompressed vmlinux and enters it directly) against the bzImage (vmlinuz: QEMU's
boot protocol, then the kernel decompresses itself), in one run.

Two daemons on the same guest image (guest/build.sh: vmlinuz and vmlinux from the same
package), one started with VMSNAP_PVH=1. Each round creates one sandbox on each, taking turns
(A B, then B A), and times `POST /v1/sandboxes`, which returns once the guest agent answers:
process start, kernel boot, /init, the agent. Each sandbox is removed before the next. The
kernel a sandbox booted is checked by the size of the file linked into its run directory.

usage: VMSNAP_BUILD=build/release python3 bench/boot.py [--rounds N] [--memory MIB]
Prints the medians, their ratio PVH / bzImage (below 1: PVH boots faster) and the ratio of
each round's pair (the two boots ran back to back, so they saw about the same load).
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sandbox import REAPER, Daemon, GUEST, kill_leftovers  # noqa: E402  (bench/sandbox.py)


def boot_once(d, memory_mib):
    """Seconds from POST /v1/sandboxes to its answer, and the size of the kernel it booted."""
    t0 = time.monotonic()
    sb = REAPER.sandbox(d.ok("POST", "/v1/sandboxes", {"memory_mib": memory_mib}))
    dt = time.monotonic() - t0
    kernel = os.path.join(d.root, "sandboxes", sb["id"], "vmlinuz")
    size = os.stat(kernel).st_size
    d.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
    return dt, size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", type=int, default=256, help="guest memory, MiB")
    args = ap.parse_args()
    vmlinux = os.path.join(GUEST, "vmlinux")
    if not os.path.exists(vmlinux):
        sys.exit("no %s: run guest/build.sh (it extracts it)" % vmlinux)
    want = {"bzImage": os.stat(os.path.join(GUEST, "vmlinuz")).st_size,
            "PVH": os.stat(vmlinux).st_size}
    work = tempfile.mkdtemp(prefix="vs-boot-")
    daemons = {}
    times = {"bzImage": [], "PVH": []}
    try:
        for name, env in (("bzImage", {"VMSNAP_PVH": "0"}), ("PVH", {"VMSNAP_PVH": "1"})):
            d = Daemon(os.path.join(work, name))
            os.makedirs(d.work)
            d.start(env)
            REAPER.watch(d.proc.pid)
            daemons[name] = d
        order = ["bzImage", "PVH"]
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                dt, size = boot_once(daemons[name], args.memory)
                if size != want[name]:
                    sys.exit("%s: the sandbox booted a %d-byte kernel, not the %s (%d bytes)"
                             % (name, size, name, want[name]))
                times[name].append(dt)
                print("round %d %-8s %6.2f s" % (r + 1, name, dt), flush=True)
    finally:
        for d in daemons.values():
            d.stop()
        REAPER.kill_all()
        for d in daemons.values():
            kill_leftovers(d)
            shutil.rmtree(d.mem, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    b, p = statistics.median(times["bzImage"]), statistics.median(times["PVH"])
    print("boot to agent ready, %d MiB guest, %d rounds each, medians (min-max):"
          % (args.memory, args.rounds))
    for name, m in (("bzImage", b), ("PVH", p)):
        print("  %-8s %6.2f s  (%.2f-%.2f)" % (name, m, min(times[name]), max(times[name])))
    pairs = [x / y for x, y in zip(times["PVH"], times["bzImage"])]
    print("  ratio PVH / bzImage: %.2f (medians); per round: %s" % (
        p / b, " ".join("%.2f" % r for r in pairs)))


if __name__ == "__main__":
    main()
