#!/usr/bin/env python3
"""Background merge end to end (issue 11): a paused sandbox whose memory chain reaches the
merge cap is merged by the daemon's merge thread, not by the pause.

  pause/resume many times: every pause answers, merges happen behind it (/metrics
  vmsnap_merges_total), the sandbox moves onto a generation-0 snapshot, and each resume
  finds the guest's RAM (a counter that only goes up, a token in tmpfs) and disk intact;
  a resume right after the pause that reached the cap: the merge goes on under the running
  sandbox and moves it onto the merged snapshot (its next pause is generation 1); pauses
  racing merges: whichever wins, the guest is intact and no snapshot is left behind;
  the daemon SIGKILLed at each merge crash point (merge.begun, merge.merged,
  merge.committed, merge.swapped) and restarted: the sandbox is paused on a sound
  snapshot, the merge is finished or redone, nothing leaks (pending or superseded
  snapshots), and the guest resumes intact.

Exit 0 pass, 1 fail, 77 skip. No timing assertions.
"""
import http.client
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_lifecycle import COUNTER, MERGE_CAP, Fail, check, counter, sh  # noqa: E402
from sandbox_lifecycle import daemon_test, run_main  # noqa: E402


def log(*a):
    print("sandbox-merge:", *a, flush=True)


def counter_family(d, name):
    """The daemon's counter `name` (/metrics) as {its one label's value: count}."""
    status, text = d.call("GET", "/metrics")
    check(status == 200, "/metrics -> %s" % status)
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            out[line.split('"')[1]] = int(float(line.rsplit(" ", 1)[1]))
    return out


def merges(d):
    return counter_family(d, "vmsnap_merges_total")


def wait_for(what, fn, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise Fail("timed out waiting for " + what)


def snapshot_dirs(d):
    p = os.path.join(d.root, "snapshots")
    return sorted(e for e in os.listdir(p) if not e.startswith("."))


def leak(d, sid):
    """What is left over besides the sandbox's own pause snapshot (a pending or superseded
    snapshot, a stray directory), or None."""
    sb = d.ok("GET", "/v1/sandboxes/%s" % sid)
    ids = sorted(s["id"] for s in d.ok("GET", "/v1/snapshots")["snapshots"])
    if ids != [sb["snapshot_id"]]:
        return "snapshots %s, the sandbox stands on %s" % (ids, sb["snapshot_id"])
    if snapshot_dirs(d) != ids:
        return "snapshot directories %s, ready %s" % (snapshot_dirs(d), ids)
    return None


def check_no_leak(d, sid, seconds=30):
    """Waits (a merge may still be finishing) until nothing is left over."""
    deadline = time.time() + seconds
    while leak(d, sid) and time.time() < deadline:
        time.sleep(0.2)
    problem = leak(d, sid)
    check(problem is None, "left over: %s" % problem)


def merged(d, sid):
    sb = d.ok("GET", "/v1/sandboxes/%s" % sid)
    return sb if sb["state"] == "paused" and sb["generation"] < MERGE_CAP else None


def resume_check(d, sid, state):
    """Resumes and checks the guest's memory and disk against state (updated)."""
    d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    c = counter(d, sid)
    check(c >= state["counter"], "counter went back: %d -> %d" % (state["counter"], c))
    check(sh(d, sid, "cat /tmp/token") == state["token"], "the tmpfs token changed")
    check(sh(d, sid, "cat /mnt/data/merge.txt") == "kept", "the disk file changed")
    state["counter"] = c


def pause(d, sid):
    return d.ok("POST", "/v1/sandboxes/%s/pause" % sid)


def test_background(d, sid, state):
    before = merges(d).get("done", 0)
    for i in range(2 * MERGE_CAP + 2):
        sb = pause(d, sid)
        check(sb["generation"] <= MERGE_CAP * 4, "the chain grew past the pause's own cap")
        if sb["generation"] >= MERGE_CAP:  # the merge runs behind this pause
            wait_for("a merge to generation 0", lambda: merged(d, sid))
        resume_check(d, sid, state)
    after = merges(d)
    log("merges after %d cycles: %s" % (2 * MERGE_CAP + 2, after))
    check(after.get("done", 0) >= before + 2, "no background merges: %s" % after)
    check(after.get("failed", 0) == 0, "failed merges: %s" % after)


def running_merged(d, sid):
    sb = d.ok("GET", "/v1/sandboxes/%s" % sid)
    return sb if sb["state"] == "running" and sb["generation"] < MERGE_CAP else None


def test_race(d, sid, state):
    """A resume right after the cap pause never waits for the merge, which moves the running
    sandbox onto the merged snapshot; its next pause diffs against that. Then pauses right
    after resumes, racing the merges: whichever wins, nothing is lost or left over."""
    while pause(d, sid)["generation"] < MERGE_CAP:
        resume_check(d, sid, state)
    resume_check(d, sid, state)
    wait_for("a merge under the running sandbox", lambda: running_merged(d, sid))
    sb = pause(d, sid)
    check(sb["generation"] == 1, "the pause after a merge made generation %d" % sb["generation"])
    resume_check(d, sid, state)
    for _ in range(2 * MERGE_CAP):
        pause(d, sid)  # right after the resume: races the merge its predecessor started
        resume_check(d, sid, state)
    pause(d, sid)
    wait_for("the merges to settle", lambda: merged(d, sid))
    check_no_leak(d, sid)
    log("after the races: %s" % merges(d))
    check(merges(d).get("failed", 0) == 0, "failed merges: %s" % merges(d))
    resume_check(d, sid, state)


def test_crash(d, sid, state, point):
    d.stop()
    d.start({"VMSNAP_CRASH_AT": point})
    try:
        while True:
            if pause(d, sid)["generation"] >= MERGE_CAP:
                break  # the merge thread now dies at the crash point
            resume_check(d, sid, state)
    except (OSError, http.client.HTTPException, Fail):
        pass  # the daemon died at the point while we talked to it
    d.wait_dead()
    d.start()
    sb = wait_for("the merge to be finished or redone", lambda: merged(d, sid))
    log("killed at %s -> %s generation %d" % (point, sb["state"], sb["generation"]))
    check_no_leak(d, sid)
    resume_check(d, sid, state)


def body(d):
    sid = d.ok("POST", "/v1/sandboxes", {})["id"]
    token = os.urandom(8).hex()
    sh(d, sid, "echo %s > /tmp/token && echo kept > /mnt/data/merge.txt && sync" % token)
    sh(d, sid, COUNTER)
    # its first write may come after the next exec (TCG, a loaded host): wait for it
    sh(d, sid, "i=0; while [ ! -e /tmp/counter ] && [ $i -lt 100 ]; do sleep 0.1; "
               "i=$((i+1)); done")
    state = {"counter": counter(d, sid), "token": token}
    test_background(d, sid, state)
    test_race(d, sid, state)
    for point in ("merge.begun", "merge.merged", "merge.committed", "merge.swapped"):
        test_crash(d, sid, state, point)


if __name__ == "__main__":
    run_main(lambda: daemon_test("vmsnap-merge-", body, log))
