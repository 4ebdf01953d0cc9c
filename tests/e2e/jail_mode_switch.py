#!/usr/bin/env python3
"""The unjailed mode and a switch to jails (issue 8), through vmsnapd with a real QEMU guest:
a daemon started with --insecure-no-jail runs its VMM as root, unconfined (and says so in
its log); the sandbox is paused, the daemon restarted without the flag, and the resume
starts the VMM in a jail (a jail uid is given to the sandbox then): a jailed host never
runs an unjailed VMM, whenever the sandbox was made. Destroy frees the uid and leaves no
cgroup and no jail dir.

Exit 0 pass, 1 fail, 77 skip (no vmsnapd, no qemu, no guest image, not root).
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_lifecycle as lc  # noqa: E402


def log(*a):
    print("jail-mode-switch:", *a, flush=True)


def run(d, work):
    d.start()
    with open(os.path.join(work, "vmsnapd.log")) as f:
        lc.check("VMMs run UNJAILED" in f.read(), "the unjailed mode is not logged")
    sb = d.ok("POST", "/v1/sandboxes", {})
    sid = sb["id"]
    st = lc.proc_status(sb["pid"])
    lc.check(st["Uid"].split()[0] == "0" and st["CapEff"] != "0000000000000000",
             "--insecure-no-jail: the VMM is confined anyway: %s %s" % (st["Uid"], st["CapEff"]))
    lc.check(not lc.cgroup_exists(sid), "an unjailed VMM got a cgroup")
    lc.sh(d, sid, "echo before > /mnt/data/mode.txt && sync")
    lc.check(d.ok("POST", "/v1/sandboxes/%s/pause" % sid)["state"] == "paused", "pause")
    log("unjailed: VMM %d as uid 0; paused" % sb["pid"])
    d.stop()
    d.extra_args = []  # jailed, the default
    d.start()
    r = d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    lc.check(r["state"] == "running", "resume: %s" % r)
    uid = lc.check_jailed(d, r)
    lc.check(lc.sh(d, sid, "cat /mnt/data/mode.txt") == "before", "the disk lost its file")
    log("after the switch: VMM %d jailed as uid %d" % (r["pid"], uid))
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)
    lc.check_unjailed_gone(d, sid)
    again = d.ok("POST", "/v1/sandboxes", {})  # the freed uid is handed out again
    lc.check(lc.check_jailed(d, again) == uid, "the destroyed sandbox's uid was not freed")
    d.ok("DELETE", "/v1/sandboxes/%s" % again["id"])


def main():
    if not lc.BUILD or not os.access(lc.VMSNAPD, os.X_OK):
        lc.skip("vmsnapd not built (VMSNAP_BUILD=%r)" % lc.BUILD)
    if os.geteuid() != 0:
        lc.skip("jails need root")
    if not shutil.which("qemu-system-x86_64"):
        lc.skip("qemu-system-x86_64 is not installed")
    lc.build_guest()
    work = tempfile.mkdtemp(prefix="vmsnap-e2e-mode-")
    d = lc.Daemon(work, lc.GUEST, extra_args=["--insecure-no-jail"])
    ok = False
    try:
        run(d, work)
        ok = True
        log("passed")
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        lc.shut_down(d)
        lc.remove_work(d, work)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)
