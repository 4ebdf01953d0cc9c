#!/usr/bin/env python3
"""Templates across hosts (issue 13) with real QEMU guests, one real Ceph RGW and two vmsnapd
("hosts" A and B: separate roots, memory roots and sockets; both with the Ceph as remote):

  A: boot a sandbox, write 3 MB of random data to its /tmp (tmpfs: guest memory) and note
     its SHA-256; make template "tpl"; POST /v1/remote/snapshots -> the bucket grows by
     exactly the chunks the push says it sent.
  B (no local copy): three concurrent spawns of "tpl" -> one pull, three running guests,
     each with the data's hash in its memory.
  A: spawn from tpl, write more to /tmp, pause -> push the pause snapshot: it uploads only
     the chunks tpl lacks (counted from both manifests and in the bucket).
  Corrupt one chunk of that pause snapshot in the bucket -> B's spawn of it is a 502 that
     names the chunk; B has no snapshot and no sandbox of it afterwards.
  Chunk restored -> B "spawns" the pause snapshot: the paused guest continues on B (both
     files' hashes), as a sandbox of B's that pauses and resumes there.

Exit 0 pass, 1 fail, 77 skip. No timing assertions. VMMs are stopped through the API; any
left are killed by pid; Ceph is stopped by scripts/ceph.sh.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_lifecycle import (BUILD, SRC, VMSNAPD, Daemon, Fail, check, sh,  # noqa: E402
                               skip)
from sandbox_lifecycle import build_guest  # noqa: E402

PIDS = []     # VMMs of the sandboxes this test made: killed by pid if anything is left
DAEMONS = []
S3 = {}       # the VMSNAP_S3_* environment of the Ceph


def log(*a):
    print("remote-spawn:", *a, flush=True)


def daemon(tag):
    d = Daemon(tempfile.mkdtemp(prefix="vrs-%s-" % tag))
    DAEMONS.append(d)
    d.start(env_extra=S3)
    return d


def s3(*args, data=None):
    """curl against the bucket, signed as any S3 client would; returns stdout bytes."""
    cmd = ["curl", "-sS", "-f", "--aws-sigv4", "aws:amz:%s:s3" % S3["VMSNAP_S3_REGION"],
           "-u", "%s:%s" % (S3["VMSNAP_S3_ACCESS_KEY"], S3["VMSNAP_S3_SECRET_KEY"]),
           "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"] + list(args)
    p = subprocess.run(cmd, input=data, capture_output=True)
    check(p.returncode == 0, "curl %s: %s" % (args, p.stderr.decode(errors="replace")))
    return p.stdout


def url(key):
    return "%s/%s/%s" % (S3["VMSNAP_S3_ENDPOINT"], S3["VMSNAP_S3_BUCKET"], key)


def bucket_chunks():
    keys, token = set(), None
    while True:
        q = "?list-type=2&prefix=chunks%2F" + ("&continuation-token=" + token if token else "")
        out = s3(url(q)).decode()
        keys |= {k for k in out.split("<Key>")[1:] for k in [k.split("</Key>")[0]]}
        if "<IsTruncated>true</IsTruncated>" not in out:
            return keys
        token = out.split("<NextContinuationToken>")[1].split("</NextContinuationToken>")[0]


def manifest_chunks(sid):
    m = json.loads(s3(url("manifests/%s.json" % sid)))
    return {c for f in m["files"] for c in f["chunks"] if c}, m


def push(d, ref):
    before = bucket_chunks()
    st = d.ok("POST", "/v1/remote/snapshots", {"snapshot": ref})
    grown = len(bucket_chunks() - before)
    check(grown == st["chunks_sent"], "push %s said %d chunks sent, the bucket grew by %d"
          % (ref, st["chunks_sent"], grown))
    return st, before


def guest_hash(d, sid, path):
    return sh(d, sid, "sha256sum %s" % path).split()[0]


def make_template(a):
    sb = a.ok("POST", "/v1/sandboxes", {"name": "src", "memory_mib": 128})
    PIDS.append(sb["pid"])
    sh(a, sb["id"], "head -c 3000000 /dev/urandom > /tmp/known")
    want = guest_hash(a, sb["id"], "/tmp/known")
    t = a.ok("POST", "/v1/sandboxes/%s/snapshot" % sb["id"], {"name": "tpl"})
    a.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])
    return t, want


def spawn_three(b, want):
    """Three concurrent spawns of tpl on B, which does not have it."""
    check(b.call("GET", "/v1/snapshots/tpl")[0] == 404, "B has tpl before the spawns")
    results = [None] * 3

    def one(i):
        results[i] = b.call("POST", "/v1/snapshots/tpl/sandboxes", {"name": "b%d" % i})
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status, sb in results:
        check(status == 201, "spawn on B: %s %s" % (status, sb))
        PIDS.append(sb["pid"])
    snaps = b.ok("GET", "/v1/snapshots")["snapshots"]
    check([s["name"] for s in snaps] == ["tpl"], "B's snapshots after 3 spawns: %s" % snaps)
    for _, sb in results:
        check(guest_hash(b, sb["id"], "/tmp/known") == want,
              "sandbox %s on B lacks the template's memory" % sb["name"])
    for _, sb in results:
        b.ok("DELETE", "/v1/sandboxes/%s" % sb["id"])


def pause_on_a(a):
    sb = a.ok("POST", "/v1/snapshots/tpl/sandboxes", {"name": "mover"})
    PIDS.append(sb["pid"])
    sh(a, sb["id"], "head -c 2000000 /dev/urandom > /tmp/later")
    later = guest_hash(a, sb["id"], "/tmp/later")
    p = a.ok("POST", "/v1/sandboxes/%s/pause" % sb["id"])
    check(p["state"] == "paused" and p["snapshot_id"], "pause on A: %s" % p)
    return p, later


def second_push(a, tpl_id, pause_id):
    """The pause snapshot is one generation over tpl: only the chunks tpl lacks go up."""
    st, before = push(a, pause_id)
    mine, _ = manifest_chunks(pause_id)
    tpl, _ = manifest_chunks(tpl_id)
    new = mine - tpl
    check(st["chunks_sent"] == len(new - set(k[7:] for k in before)),
          "second push sent %d chunks; %d of its chunks are not tpl's"
          % (st["chunks_sent"], len(new)))
    check(0 < st["chunks_sent"] < st["chunks"], "second push: %s" % st)
    log("push of the pause snapshot: %d of %d chunks uploaded (tpl has the rest)"
        % (st["chunks_sent"], st["chunks"]))
    return new


def corrupt_then_resume(b, pause_id, new, want, later):
    chunk = sorted(new)[0]
    orig = s3(url("chunks/" + chunk))
    bad = bytearray(orig)
    bad[len(bad) // 2] ^= 0x40
    s3("-X", "PUT", "--data-binary", "@-", url("chunks/" + chunk), data=bytes(bad))
    status, body = b.call("POST", "/v1/snapshots/%s/sandboxes" % pause_id, {"name": "moved"})
    check(status == 502 and body["error"]["code"] == "remote_error"
          and "chunks/%s" % chunk in body["error"]["message"],
          "spawn of a corrupt chunk on B: %s %s" % (status, body))
    check(b.call("GET", "/v1/snapshots/%s" % pause_id)[0] == 404, "B kept a refused pull")
    check(b.call("GET", "/v1/sandboxes/moved")[0] == 404, "B made a sandbox of a refused pull")
    s3("-X", "PUT", "--data-binary", "@-", url("chunks/" + chunk), data=orig)
    sb = b.ok("POST", "/v1/snapshots/%s/sandboxes" % pause_id, {"name": "moved"})
    PIDS.append(sb["pid"])
    check(sb["state"] == "running" and sb["snapshot_id"] == pause_id, "resume on B: %s" % sb)
    check(guest_hash(b, sb["id"], "/tmp/known") == want, "the moved guest lost /tmp/known")
    check(guest_hash(b, sb["id"], "/tmp/later") == later, "the moved guest lost /tmp/later")
    status, body = b.call("POST", "/v1/snapshots/%s/sandboxes" % pause_id, {})
    check(status == 409, "a second adoption of one pause snapshot: %s %s" % (status, body))
    p = b.ok("POST", "/v1/sandboxes/moved/pause")
    b.ok("POST", "/v1/sandboxes/moved/resume")
    check(guest_hash(b, sb["id"], "/tmp/later") == later, "lost /tmp/later over B's own pause")
    check(p["snapshot_id"] != pause_id, "B's pause wrote no new generation")
    b.ok("DELETE", "/v1/sandboxes/moved")


def run():
    a = daemon("a")
    b = daemon("b")
    t, want = make_template(a)
    st, _ = push(a, "tpl")
    log("template %s pushed: %d chunks, %d zero" % (t["id"], st["chunks"], st["zero_chunks"]))
    spawn_three(b, want)
    p, later = pause_on_a(a)
    new = second_push(a, t["id"], p["snapshot_id"])
    corrupt_then_resume(b, p["snapshot_id"], new, want, later)
    for d in (a, b):
        d.stop()
        check(S3["VMSNAP_S3_SECRET_KEY"] not in open(os.path.join(d.work, "vmsnapd.log")).read(),
              "the secret key is in a log")


def main():
    if not BUILD or not os.access(VMSNAPD, os.X_OK):
        skip("vmsnapd not built (VMSNAP_BUILD=%r)" % BUILD)
    for tool in ("qemu-system-x86_64", "ceph-mon", "ceph-osd", "radosgw", "curl"):
        if not shutil.which(tool):
            skip("%s is not installed (scripts/setup.sh installs it)" % tool)
    build_guest()
    work = tempfile.mkdtemp(prefix="vmsnap-remote-spawn-")
    ceph = os.path.join(work, "ceph")
    t0 = time.time()
    try:
        p = subprocess.run(["bash", os.path.join(SRC, "scripts", "ceph.sh"), "start", ceph],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise Fail("scripts/ceph.sh start: %s" % (p.stdout + p.stderr)[-2000:])
        with open(os.path.join(ceph, "s3.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k.startswith("VMSNAP_S3_"):
                    S3[k] = v.strip("'\"")
        log("ceph up in %.0f s" % (time.time() - t0))
        run()
        log("passed in %.1f s" % (time.time() - t0))
        return 0
    except Fail as e:
        print("FAIL:", e, flush=True)
        for d in DAEMONS:
            subprocess.call(["tail", "-n", "20", os.path.join(d.work, "vmsnapd.log")])
        return 1
    finally:
        for d in DAEMONS:
            d.stop()
        for pid in PIDS:  # only if it still is a VMM of ours (its command line names it)
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmdline = f.read()
                if any(d.work.encode() in cmdline for d in DAEMONS):
                    os.kill(pid, 9)
            except (OSError, TypeError):
                pass
        subprocess.call(["bash", os.path.join(SRC, "scripts", "ceph.sh"), "stop", ceph],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.environ.get("VMSNAP_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
            for d in DAEMONS:
                shutil.rmtree(d.work, ignore_errors=True)
                shutil.rmtree(d.mem, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
