#!/usr/bin/env python3
"""The first pause after a boot writes over a base (issue 11, docs/sandbox.md "The first pause
after a boot"): after a boot the daemon's background thread drops the VMM's page-table
entries of the memory file and copies the file into a pending snapshot; the first pause then
writes only the pages the VMM touched since, as generation 1 over that copy.

  a base is built after a create (/metrics vmsnap_pause_bases_total{event="built"}); data
  written before it (tmpfs) and after it (tmpfs: a token and 8 MiB of random bytes; a
  counter that keeps running) is all there after the pause and a resume; the pause used
  the base (event "used", the snapshot is generation 1) and no pending snapshot is left;
  a pause right after a create (the base not ready or just ready) is sound either way;
  a destroy of a sandbox whose base is ready removes the base (event "dropped"; the gauges
  vmsnap_pause_bases_waiting and _bytes say 1 and its size before, 0 after);
  the daemon SIGKILLed at base.begun and at base.built and restarted: recovery removes the
  pending snapshot, the sandbox still runs, and its first pause copies the whole RAM
  (generation 0) with everything intact.

Exit 0 pass, 1 fail, 77 skip. No timing assertions.
"""
import http.client
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_lifecycle import COUNTER, Fail, check, counter, sh  # noqa: E402
from sandbox_lifecycle import daemon_test, run_main  # noqa: E402
from sandbox_merge import counter_family, snapshot_dirs, wait_for  # noqa: E402


def log(*a):
    print("sandbox-base:", *a, flush=True)


def bases(d):
    return counter_family(d, "vmsnap_pause_bases_total")


def waiting(d):
    """The gauges vmsnap_pause_bases_waiting and _bytes."""
    status, text = d.call("GET", "/metrics")
    check(status == 200, "/metrics -> %s" % status)
    v = dict(line.rsplit(" ", 1) for line in text.splitlines()
             if line.startswith("vmsnap_pause_bases_waiting"))
    return (int(float(v.get("vmsnap_pause_bases_waiting", -1))),
            int(float(v.get("vmsnap_pause_bases_waiting_bytes", -1))))


def create(d):
    return d.ok("POST", "/v1/sandboxes", {})["id"]


def write_state(d, sid, tag):
    """Writes a token and 8 MiB of random bytes into the guest's tmpfs (its RAM); returns
    what a later check expects."""
    token = os.urandom(8).hex()
    sh(d, sid, "echo %s > /tmp/%s.token && head -c 8388608 /dev/urandom > /tmp/%s.big"
       % (token, tag, tag))
    return {"tag": tag, "token": token, "md5": sh(d, sid, "md5sum < /tmp/%s.big" % tag)}


def check_state(d, sid, s):
    check(sh(d, sid, "cat /tmp/%s.token" % s["tag"]) == s["token"],
          "the %s token changed" % s["tag"])
    check(sh(d, sid, "md5sum < /tmp/%s.big" % s["tag"]) == s["md5"],
          "the %s random bytes changed" % s["tag"])


def pending_left(d, sid):
    """The snapshot directories besides the sandbox's own (a base's pending one), or []."""
    sb = d.ok("GET", "/v1/sandboxes/%s" % sid)
    return [x for x in snapshot_dirs(d) if x != sb.get("snapshot_id")]


def test_used(d):
    before = bases(d)
    sid = create(d)
    early = write_state(d, sid, "early")  # most likely before the copy: in the base
    wait_for("a base after the boot",
             lambda: bases(d).get("built", 0) > before.get("built", 0))
    late = write_state(d, sid, "late")  # after the PAGEOUT: listed at the pause
    sh(d, sid, COUNTER)
    sh(d, sid, "i=0; while [ ! -e /tmp/counter ] && [ $i -lt 100 ]; do sleep 0.1; "
               "i=$((i+1)); done")
    c = counter(d, sid)
    sb = d.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    check(sb["generation"] == 1, "the first pause over a base made generation %d"
          % sb["generation"])
    # the base's release (its pending snapshot, its entry) comes after the answer
    after = wait_for("the base counted as used",
                     lambda: bases(d) if bases(d).get("used", 0) > before.get("used", 0)
                     else None, 60)
    log("first pause: generation %d, bases %s" % (sb["generation"], after))
    check(after.get("used", 0) == before.get("used", 0) + 1, "bases %s" % after)
    wait_for("no pending base left", lambda: pending_left(d, sid) == [], 60)
    d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    check_state(d, sid, early)
    check_state(d, sid, late)
    check(counter(d, sid) >= c, "the counter went back")
    # the next cycle diffs over that snapshot as any other
    sb = d.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    check(sb["generation"] == 2, "the second pause made generation %d" % sb["generation"])
    d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    check_state(d, sid, late)
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)


def test_pause_at_once(d):
    """A pause right after the create answered: the base is wanted, being built or ready."""
    sid = create(d)
    s = write_state(d, sid, "now")
    sb = d.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    log("pause at once: generation %d, bases %s" % (sb["generation"], bases(d)))
    wait_for("no pending base left", lambda: pending_left(d, sid) == [], 60)
    d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    check_state(d, sid, s)
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)


def test_destroy_drops(d):
    before = bases(d)
    sid = create(d)
    wait_for("a base after the boot",
             lambda: bases(d).get("built", 0) > before.get("built", 0))
    check(len(snapshot_dirs(d)) == 1, "no pending base directory: %s" % snapshot_dirs(d))
    count, size = waiting(d)
    log("a waiting base: %d, %.1f MB of data" % (count, size / 1e6))
    check(count == 1 and size > 0, "the waiting gauges say %d bases, %d bytes" % (count, size))
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)
    wait_for("the base dropped", lambda: bases(d).get("dropped", 0) > before.get("dropped", 0))
    wait_for("its directory removed", lambda: snapshot_dirs(d) == [], 30)
    check(waiting(d) == (0, 0), "after the drop the waiting gauges say %s" % (waiting(d),))


def test_crash(d, point):
    d.stop()
    d.start({"VMSNAP_CRASH_AT": point})
    sid = None
    try:
        sid = create(d)  # the background thread dies at the point right after
    except (OSError, http.client.HTTPException, Fail):
        pass  # it died before the answer was out: the row was written before
    d.wait_dead()
    d.start()
    if sid is None:
        live = [s for s in d.ok("GET", "/v1/sandboxes")["sandboxes"] if s["state"] != "stopped"]
        check(len(live) == 1, "after a crash at %s: sandboxes %s" % (point, live))
        sid = live[0]["id"]
    sb = d.ok("GET", "/v1/sandboxes/%s" % sid)
    check(sb["state"] == "running", "after a crash at %s the sandbox is %s" % (point, sb["state"]))
    check(snapshot_dirs(d) == [], "a crash at %s left %s" % (point, snapshot_dirs(d)))
    s = write_state(d, sid, "crash")
    sb = d.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    check(sb["generation"] == 0, "with no base the first pause made generation %d"
          % sb["generation"])
    d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    check_state(d, sid, s)
    log("killed at %s: recovered, the first pause copied the whole RAM" % point)
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)


def body(d):
    test_used(d)
    test_pause_at_once(d)
    test_destroy_drops(d)
    for point in ("base.begun", "base.built"):
        test_crash(d, point)


if __name__ == "__main__":
    run_main(lambda: daemon_test("vmsnap-base-", body, log))
