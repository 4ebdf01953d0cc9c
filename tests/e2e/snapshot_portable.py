#!/usr/bin/env python3
"""An exported snapshot restores on another host (issue 8 part C), with a real QEMU guest:

  root A: create a sandbox, write a file to its disk, make template "tpl"
  -> `vmsnap snapshot export tpl` (the archive carries images/rootfs-<hash>.ext4, once)
  root B (a fresh root: no base image, and a guest directory whose rootfs.ext4 is all zeros,
  so nothing but the archive can provide the base) -> POST /v1/snapshots {"path": archive}
  -> the base is pinned in B/images (same name and bytes), the overlay names it canonically
  -> spawn from tpl on B: the file written on A is there, and a block only the base image
  holds reads as on A.
  The same archive exported with --no-base is refused on a third root, naming the hash.

Exit 0 pass, 1 fail, 77 skip. No timing assertions. VMMs are stopped through the API; any
left are killed by pid.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_lifecycle import (BACKUP_SB_KIB, BUILD, GUEST, VMSNAPD, Daemon,  # noqa: E402
                               Fail, check, sh, skip)
from sandbox_lifecycle import build_guest  # noqa: E402

CLI = os.environ.get("VMSNAP_CLI", os.path.join(BUILD, "vmsnap"))


PIDS = []  # VMMs of the sandboxes this test made: killed by pid if anything is left


def log(*a):
    print("snapshot-portable:", *a, flush=True)


DAEMONS = []


def daemon(tag, guest):
    """A daemon in a short, unique directory of its own (sockets live under it)."""
    d = Daemon(tempfile.mkdtemp(prefix="vsp-%s-" % tag), guest)
    DAEMONS.append(d)
    return d


def cli(*args):
    p = subprocess.run([CLI, "snapshot"] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def base_block(d, sid):
    return sh(d, sid, "dd if=/dev/vda bs=1024 skip=%d count=2 2>/dev/null | md5sum"
              % BACKUP_SB_KIB).split()[0]


def make_template(a):
    sb = a.ok("POST", "/v1/sandboxes", {"name": "src"})
    PIDS.append(sb["pid"])
    sh(a, sb["id"], "echo travelled > /mnt/data/portable.txt && sync")
    want = base_block(a, sb["id"])
    t = a.ok("POST", "/v1/sandboxes/%s/snapshot" % sb["id"], {"name": "tpl"})
    a.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
    return t, want


def export(a, work, no_base):
    out = os.path.join(work, "tpl-nobase.tar.zst" if no_base else "tpl.tar.zst")
    rc, _, err = cli("--root", a.root, "export", "tpl", "-o", out,
                     *(["--no-base"] if no_base else []))
    check(rc == 0, "export: %s" % err)
    listing = subprocess.run(["tar", "-tf", out], capture_output=True, text=True).stdout
    bases = [n for n in listing.split() if n.startswith("images/")]
    check(len(bases) == (0 if no_base else 1), "base entries in the archive: %s" % bases)
    return out, bases


def check_pinned(a, b, name):
    pa, pb = os.path.join(a.root, "images", name), os.path.join(b.root, "images", name)
    check(os.path.exists(pb), "the base was not pinned on B: %s" % os.listdir(b.root))
    with open(pa, "rb") as x, open(pb, "rb") as y:
        check(hashlib.sha256(x.read()).digest() == hashlib.sha256(y.read()).digest(),
              "the pinned base differs from A's")
    check(os.stat(pb).st_mode & 0o777 == 0o600, "pinned base mode %o" % os.stat(pb).st_mode)


def spawn_on_b(b, want):
    c = b.ok("POST", "/v1/snapshots/tpl/sandboxes", {})
    PIDS.append(c["pid"])
    check(c["state"] == "running", "spawn on B: %s" % c)
    sh(b, c["id"], "sync; echo 3 > /proc/sys/vm/drop_caches")
    check(sh(b, c["id"], "cat /mnt/data/portable.txt") == "travelled", "the file did not travel")
    check(base_block(b, c["id"]) == want, "a block of the base reads differently on B")
    b.ok("DELETE", "/v1/sandboxes/%s" % c["id"])


def run(work, guest):
    a = daemon("a", guest)
    a.start()
    try:
        t, want = make_template(a)
        archive, bases = export(a, work, False)
        nobase, _ = export(a, work, True)
    finally:
        a.stop()
    log("template %s exported with %s" % (t["id"], bases[0]))
    # B's guest directory has a kernel but an empty disk image: only the archive has the base
    zero_guest = os.path.join(work, "zero-guest")
    shutil.copytree(guest, zero_guest)
    path = os.path.join(zero_guest, "rootfs.ext4")
    size = os.path.getsize(path)
    os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(size)
    b = daemon("b", zero_guest)
    b.start()
    try:
        check(not os.path.exists(os.path.join(b.root, "images", bases[0][7:])), "B has it")
        imp = b.ok("POST", "/v1/snapshots", {"path": archive})
        check(imp["name"] == "tpl", "import: %s" % imp)
        check_pinned(a, b, bases[0][7:])
        spawn_on_b(b, want)
    finally:
        b.stop()
    rc, _, err = cli("--root", os.path.join(work, "c"), "import", nobase)
    check(rc == 1 and bases[0][14:30] in err and "neither in the archive" in err,
          "a --no-base archive on a root without the base: %d %s" % (rc, err))


def main():
    if not BUILD or not os.access(VMSNAPD, os.X_OK) or not os.access(CLI, os.X_OK):
        skip("vmsnapd or vmsnap not built (VMSNAP_BUILD=%r)" % BUILD)
    if not shutil.which("qemu-system-x86_64"):
        skip("qemu-system-x86_64 is not installed (scripts/setup.sh installs it)")
    build_guest()
    work = tempfile.mkdtemp(prefix="vmsnap-portable-")
    guest = os.path.join(work, "guest")
    os.makedirs(guest)
    for f in os.listdir(GUEST):
        if os.path.isfile(os.path.join(GUEST, f)):
            shutil.copy(os.path.join(GUEST, f), os.path.join(guest, f))
    t0 = time.time()
    try:
        run(work, guest)
        log("passed in %.1f s" % (time.time() - t0))
        return 0
    except Fail as e:
        print("FAIL:", e, flush=True)
        for d in DAEMONS:
            subprocess.call(["tail", "-n", "20", os.path.join(d.work, "vmsnapd.log")])
        return 1
    finally:
        for pid in PIDS:  # only if it still is a VMM of ours (its command line names it)
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmdline = f.read()
                if any(d.work.encode() in cmdline for d in DAEMONS):
                    os.kill(pid, 9)
            except (OSError, TypeError):
                pass
        if os.environ.get("VMSNAP_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
            for d in DAEMONS:
                shutil.rmtree(d.work, ignore_errors=True)
                shutil.rmtree(d.mem, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
