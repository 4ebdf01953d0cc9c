#!/usr/bin/env python3
"""The sandbox lifecycle on the Firecracker or Cloud Hypervisor driver, through vmsnapd's
REST API: usage: sandbox_peer_vmm.py firecracker|cloud-hypervisor

Neither VMM can run on this machine (no working KVM), so the VMM is tests/peer/fc-peer or
ch-peer, which speak that VMM's API and keep real guest memory: `firecracker` (or
`cloud-hypervisor`) on the daemon's PATH is the peer. What is real: the daemon, the
sandbox layer and journal, the driver's API calls, the memory layer (Firecracker: Full
save -> generation 0, Diff save -> a sparse generation; Cloud Hypervisor: memory-ranges ->
content diffs), the store, and for Firecracker the lazy restore: every resume starts
`vmsnap uffd-serve` and the peer receives its memory page by page over userfaultfd, with
the recorded working set replayed before the guest runs. The guest's memory (played with
the peer's /peer/write) must read back byte for byte after every pause/resume and in every
clone of a template.

Exit 0 pass, 1 fail, 77 skip (no vmsnapd, no peer, no guest image).
"""
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_lifecycle import (Daemon, Fail, GUEST, SRC, UnixHTTP, VMSNAPD, alive,  # noqa: E402
                               check, log, skip)
import json  # noqa: E402

VMM = sys.argv[1] if len(sys.argv) > 1 else "firecracker"
PEERS = {"firecracker": ("VMSNAP_PEER_fc_peer", "firecracker.sock", True),
         "cloud-hypervisor": ("VMSNAP_PEER_ch_peer", "cloud-hypervisor.sock", False)}
PEER_ENV, API_SOCK, LAZY = PEERS[VMM]
PEER = os.environ.get(PEER_ENV, "")
JAILED = True  # both drivers run their VMM jailed (the peer stands in for it)


def peer(d, sid, method, path, body):
    sock = os.path.join(d.root, "sandboxes", sid, API_SOCK)
    c = UnixHTTP(sock, 60)
    c.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    check(r.status in (200, 204), "peer %s %s -> %s %s" % (method, path, r.status, raw))


def dump(d, sid, work, name):
    """The peer writes guest memory into its run dir (the only place a jailed VMM can write,
    /run inside), from where the file is moved into work."""
    run = os.path.join(d.root, "sandboxes", sid)
    peer(d, sid, "PUT", "/peer/dump", {"path": ("/run/" if JAILED else run + "/") + name})
    path = os.path.join(work, name)
    shutil.move(os.path.join(run, name), path)
    return path


def check_jail(d, sb):
    """The VMM and its page server run jailed: their own uid (the same), no capabilities,
    no_new_privs, another mount namespace, a cgroup each. The peer brings no seccomp filter
    of its own (Firecracker does); the page server installs vmsnap's."""
    from sandbox_lifecycle import proc_status, cgroup_exists
    st = proc_status(sb["pid"])
    uid = st["Uid"].split()[0]
    check(uid != "0" and st["CapEff"] == "0000000000000000" and st["NoNewPrivs"] == "1",
          "VMM not confined: %s %s %s" % (st["Uid"], st["CapEff"], st["NoNewPrivs"]))
    check(os.readlink("/proc/%d/ns/mnt" % sb["pid"]) != os.readlink("/proc/self/ns/mnt"),
          "the VMM shares the daemon's mount namespace")
    check(cgroup_exists(sb["id"]), "no cgroup for %s" % sb["id"])
    if LAZY and sb.get("_resumed"):
        pager = [int(p) for p in os.listdir("/proc") if p.isdigit() and
                 cmdline_has(int(p), b"uffd-serve") and cmdline_has(int(p), sb["id"].encode())]
        check(len(pager) == 1, "page server of %s: %s" % (sb["id"], pager))
        ps = proc_status(pager[0])
        check(ps["Uid"].split()[0] == uid and ps["Seccomp"] == "2" and
              ps["CapEff"] == "0000000000000000", "page server not jailed: %s" % ps)
        check(cgroup_exists(sb["id"] + ".pager"), "no cgroup for the page server")
    log("%s %d jailed as uid %s%s" % (VMM, sb["pid"], uid,
                                      ", page server too" if LAZY and sb.get("_resumed") else ""))


def cmdline_has(pid, what):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return what in f.read()
    except OSError:
        return False


def same(a, b, what):
    check(filecmp.cmp(a, b, shallow=False), "%s: guest memory differs" % what)


def pager_stats(d, sid):
    """The page server's stats (its control request), docs/uffd.md."""
    import socket as so
    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(d.root, "sandboxes", sid, "uffd.sock"))
    s.sendall(b'{"request":"stats"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        check(chunk, "the page server closed the control connection")
        buf += chunk
    s.close()
    return json.loads(buf)


def check_working_set(d, sid):
    # The first resume's page server recorded what the guest touched (the dump read all of
    # memory); the second pause saved it as memfile.ws; this resume replayed it first.
    st = pager_stats(d, sid)
    ws = st.get("working_set", {})
    check(ws.get("done") and st.get("ws_pages", 0) > 0,
          "working set not replayed on resume: %s" % st)
    log("working set replayed: %d pages before the guest ran; demand faults after: %d"
        % (st["ws_pages"], st.get("faults", -1)))


def pause_resume(d, sid, work, tag):
    before = dump(d, sid, work, tag + "-before")
    sb = d.ok("GET", "/v1/sandboxes/%s" % sid)
    p = d.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    check(p["state"] == "paused" and not alive(sb["pid"]), "pause: %s" % p)
    r = d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    check(r["state"] == "running", "resume: %s" % r)
    if JAILED:
        r["_resumed"] = True
        check_jail(d, r)
    uffd_log = os.path.join(d.root, "sandboxes", sid, "uffd.log")
    check(os.path.exists(uffd_log) == LAZY, "page server on resume: %s" % os.path.exists(uffd_log))
    same(before, dump(d, sid, work, tag + "-after"), tag)
    return p


def main():
    if not os.access(VMSNAPD, os.X_OK):
        skip("vmsnapd not built")
    if not PEER or not os.access(PEER, os.X_OK):
        skip("the %s peer is not built ($%s)" % (VMM, PEER_ENV))
    if LAZY and os.geteuid() != 0:
        skip("userfaultfd for the page server needs root here")
    rc = subprocess.call([os.path.join(SRC, "guest", "build.sh"), GUEST],
                         stdout=subprocess.DEVNULL)
    if rc != 0:
        skip("no guest image (guest/build.sh exit %d)" % rc)
    work = tempfile.mkdtemp(prefix="vs-%s-" % VMM[:2])  # short: socket paths are <= 107 bytes
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir)
    os.symlink(PEER, os.path.join(bindir, VMM))
    d = Daemon(work)  # jailed, the default
    ok = False
    try:
        d.start({"PATH": bindir + ":" + os.environ.get("PATH", "")})
        sb = d.ok("POST", "/v1/sandboxes", {"vmm": VMM, "memory_mib": 128})
        sid = sb["id"]
        check(sb["state"] == "running" and sb["vmm"] == VMM, "create: %s" % sb)
        if JAILED:
            check_jail(d, sb)
        peer(d, sid, "PUT", "/peer/write", {"offset": 4 << 20, "length": 3 << 20, "seed": 1})
        p = pause_resume(d, sid, work, "gen0")
        check(p["generation"] == 0, "first pause: %s" % p)
        peer(d, sid, "PUT", "/peer/write", {"offset": 5 << 20, "length": 1 << 20, "fill": 0})
        peer(d, sid, "PUT", "/peer/write", {"offset": 40 << 20, "length": 2 << 20, "seed": 2})
        p = pause_resume(d, sid, work, "gen1")
        check(p["generation"] == 1, "second pause: %s" % p)
        if LAZY:
            check_working_set(d, sid)
        # A daemon SIGKILLed and restarted re-attaches to the jailed VMM by its cgroup (its
        # API socket has the same path inside every jail).
        before = d.ok("GET", "/v1/sandboxes/%s" % sid)
        d.proc.kill()
        d.proc.wait()
        d.start({"PATH": bindir + ":" + os.environ.get("PATH", "")})
        after = d.ok("GET", "/v1/sandboxes/%s" % sid)
        check(after["state"] == "running" and after["pid"] == before["pid"],
              "after a daemon SIGKILL: %s" % after)
        peer(d, sid, "PUT", "/peer/write", {"offset": 6 << 20, "length": 1 << 20, "seed": 3})
        log("daemon SIGKILL + restart: re-attached to %s %d" % (VMM, after["pid"]))
        snap = d.ok("POST", "/v1/sandboxes/%s/snapshot" % sid, {"name": "tpl"})
        tpl_mem = dump(d, sid, work, "template")
        for i in range(2):
            c = d.ok("POST", "/v1/snapshots/tpl/sandboxes", {})
            check(c["template_id"] == snap["id"], "spawn: %s" % c)
            same(tpl_mem, dump(d, c["id"], work, "clone%d" % i), "clone %d" % i)
            d.ok("DELETE", "/v1/sandboxes/%s" % c["id"])
        d.ok("DELETE", "/v1/sandboxes/%s" % sid)
        if JAILED:
            from sandbox_lifecycle import cgroup_exists
            for name in (sid, sid + ".pager") if LAZY else (sid,):
                check(not cgroup_exists(name), "cgroup %s left after destroy" % name)
                check(not os.path.exists(os.path.join(d.root, "jails", name)),
                      "jail dir %s left after destroy" % name)
        ok = True
        log("%s (peer): create, 2 pause/resume generations, template, 2 clones: ok" % VMM)
    except Fail as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        d.stop()
        subprocess.call(["pkill", "-9", "-f", work])
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(d.mem, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
