#!/usr/bin/env python3
"""Clones that share memory (issue 11), end to end through a jailed vmsnapd (the default) with
a real QEMU guest: two clones of one template map the template's memory, materialized once per host,
private (share=off) instead of private copies; the kernel shows their clean pages shared
(smaps_rollup Shared_Clean); each clone's writes stay its own; a clone's pause (QEMU's stream
split into its own memory file) and resume keep its memory, twice; a daemon restart under a
running clone still lets it pause; the template's file is never written; once no clone links
it (a clone resumed after a pause runs on a file of its own), the daemon's tick removes it.

Jailed (docs/jail.md "Read-only memory"): each clone's QEMU holds the template's file through
a read-only descriptor (the jailer's supervisor answered its O_RDWR open) while mapping it
private and writable; the file is root:shared_gid 0640, so no clone's uid can write it; the
supervisor runs beside each QEMU and is gone with it. `--insecure-no-jail` as argument runs
the same test unjailed.

Exit 0 pass, 1 fail, 77 skip (no vmsnapd, no qemu, no guest image). No timing assertions.
"""
import hashlib
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_lifecycle import (BUILD, VMSNAPD, Daemon, Fail, check,  # noqa: E402
                               kill_leftovers, sh, skip)
from sandbox_lifecycle import build_guest  # noqa: E402


def log(*a):
    print("clone-share:", *a, flush=True)


def mapping_of(pid, path):
    """(dev, inode, perms) of the mapping of path in process pid, or None."""
    st = os.stat(path)
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and int(parts[4]) == st.st_ino:
                return st.st_dev, st.st_ino, parts[1]
    return None


def smaps(pid, key):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise Fail("no %s in smaps_rollup of %d" % (key, pid))


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wait_for(what, fn, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.5)
    raise Fail("timed out waiting for " + what)


def memory_fds(pid, path):
    """The access modes (O_ACCMODE of fdinfo flags) of pid's descriptors of path's inode."""
    st = os.stat(path)
    modes = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            fst = os.stat("/proc/%d/fd/%s" % (pid, fd))
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                flags = next(int(l.split()[1], 8) for l in f if l.startswith("flags:"))
            modes.append(flags & 3)
        except (FileNotFoundError, StopIteration):
            continue
    return modes


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def check_jailed(cache, sb):
    """QEMU holds the template's memory read-only only; its supervisor runs as its child."""
    modes = memory_fds(sb["pid"], cache)
    check(modes and all(m == os.O_RDONLY for m in modes),
          "clone %s holds the template's memory with access modes %s, want read-only"
          % (sb["id"], modes))
    st = os.stat(cache)
    check(st.st_uid == 0 and (st.st_mode & 0o777) == 0o640,
          "the template's memory is %o uid %d, want 0640 root" % (st.st_mode & 0o777, st.st_uid))
    check(os.stat("/proc/%d" % sb["pid"]).st_uid != 0, "clone %s's QEMU runs as root" % sb["id"])
    kids = children(sb["pid"])
    check(len(kids) == 1, "clone %s's QEMU has children %s, want its supervisor" % (sb["id"], kids))
    with open("/proc/%d/status" % kids[0]) as f:
        status = dict(l.split(":", 1) for l in f if ":" in l)
    check(status["Seccomp"].strip() == "2",
          "the supervisor of clone %s runs without its own filter" % sb["id"])
    return kids[0]


def check_clone(d, sb, own, other):
    sid = sb["id"]
    check(sh(d, sid, "cat /tmp/base.txt") == "template-ram", "the template's RAM file")
    check(sh(d, sid, "cat /tmp/%s.txt" % own) == "clone-" + own, "the clone's own RAM file")
    check(sh(d, sid, "test -e /tmp/%s.txt && echo yes || echo no" % other) == "no",
          "a sibling's write is visible in clone " + own)


def run(d, jailed):
    base = d.ok("POST", "/v1/sandboxes", {})
    sh(d, base["id"], "echo template-ram > /tmp/base.txt")
    tpl = d.ok("POST", "/v1/sandboxes/%s/snapshot" % base["id"], {"name": "share-tpl"})
    d.ok("DELETE", "/v1/sandboxes/%s" % base["id"])
    a = d.ok("POST", "/v1/snapshots/share-tpl/sandboxes", {})
    b = d.ok("POST", "/v1/snapshots/share-tpl/sandboxes", {})
    cache = os.path.join(d.mem, "templates", tpl["id"], "memory")
    check(os.path.exists(cache), "no materialized template memory at " + cache)
    before = (os.stat(cache).st_mtime_ns, digest(cache))
    key = (os.stat(cache).st_dev, os.stat(cache).st_ino)
    for sb in (a, b):
        m = mapping_of(sb["pid"], cache)
        check(m is not None and m[:2] == key, "clone %s does not map the template's memory"
              % sb["id"])
        check(m[2].endswith("p"), "clone %s maps it shared (%s), not private" % (sb["id"], m[2]))
        check(not os.path.exists(os.path.join(d.mem, sb["id"], "memory")),
              "clone %s got a private copy" % sb["id"])
    supervisors = [check_jailed(cache, sb) for sb in (a, b)] if jailed else []
    sh(d, a["id"], "echo clone-a > /tmp/a.txt; head -c 10485760 /dev/urandom > /dev/shm/x")
    sh(d, b["id"], "echo clone-b > /tmp/b.txt")
    shared = smaps(a["pid"], "Shared_Clean")
    log("clone a: Rss %d KiB, Pss %d KiB, Shared_Clean %d KiB" %
        (smaps(a["pid"], "Rss") >> 10, smaps(a["pid"], "Pss") >> 10, shared >> 10))
    check(shared >= 1 << 20, "the clones share no clean pages (Shared_Clean %d)" % shared)
    check_clone(d, a, "a", "b")
    check_clone(d, b, "b", "a")

    for cycle in range(2):  # the first pause splits QEMU's stream, the second diffs a file
        d.ok("POST", "/v1/sandboxes/%s/pause" % a["id"])
        a = d.ok("POST", "/v1/sandboxes/%s/resume" % a["id"])
        check_clone(d, a, "a", "b")
        check(sh(d, a["id"], "wc -c < /dev/shm/x") == "10485760", "the clone's tmpfs file")
        log("clone a after pause/resume %d: generation %d" % (cycle + 1, a["generation"]))
    check_clone(d, b, "b", "a")
    check((os.stat(cache).st_mtime_ns, digest(cache)) == before,
          "the template's memory file was written")
    # clone a's first QEMU (and with it its supervisor) is gone; a resumed clone runs on a
    # file of its own, shared=on, without a hand-over
    check(not os.path.exists("/proc/%d" % supervisors[0]) if jailed else True,
          "clone a's supervisor outlived its QEMU")

    # a daemon restart under a running clone: it is attached again and can still pause
    d.stop()
    d.start()
    d.ok("POST", "/v1/sandboxes/%s/pause" % b["id"])
    b = d.ok("POST", "/v1/sandboxes/%s/resume" % b["id"])
    check_clone(d, b, "b", "a")

    # both clones now run on memory files of their own: nothing links the template's
    wait_for("the template's memory to be removed once no clone links it",
             lambda: not os.path.exists(os.path.dirname(cache)))
    for sb in (a, b):
        d.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])


def main():
    if not BUILD or not os.access(VMSNAPD, os.X_OK):
        skip("vmsnapd not built (VMSNAP_BUILD=%r)" % BUILD)
    if not shutil.which("qemu-system-x86_64"):
        skip("qemu-system-x86_64 is not installed (scripts/setup.sh installs it)")
    build_guest()
    jailed = "--insecure-no-jail" not in sys.argv[1:]
    work = tempfile.mkdtemp(prefix="vmsnap-share-")
    d = Daemon(work, extra_args=[] if jailed else ["--insecure-no-jail"])
    ok = False
    try:
        d.start()
        t0 = time.time()
        run(d, jailed)
        log("passed (%s) in %.0f s" % ("jailed" if jailed else "unjailed", time.time() - t0))
        ok = True
    except Fail as e:
        print("FAIL:", e, flush=True)
    finally:
        d.stop()
        kill_leftovers(d)
        shutil.rmtree(d.mem, ignore_errors=True)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept for inspection:", work, flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
