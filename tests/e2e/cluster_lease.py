#!/usr/bin/env python3
"""Operations of cluster hosts serialized through the Postgres control plane, with a real
QEMU guest (issue 14, docs/cluster.md §5, §6, "Forwarding"): a throwaway PostgreSQL
(scripts/postgres.sh), two vmsnapd --cluster hosts with one shared --cluster-token (host-a
runs the guest, host-b forwards to it) and a third live host registered in the database
(host-c, a lease holder).

  create on host-a -> the cluster row: host-a, running, no lease; GET through host-b is
  forwarded; an unknown id through host-b -> 404;
  the streamed routes through host-b, relayed as they come: a framed exec of
  `head -c 300000 /dev/urandom | sha256sum` (its digest checked against the guest's data) and
  of `head -c 200000 /dev/zero` (binary stdout byte-exact), a PUT of 1 MB of random bytes
  then its GET (identical), a missing file's 404 relayed, and an archive round trip (GET
  archive of a directory, PUT of it into another one, the files compared); a client that
  leaves a framed exec through host-b mid-stream -> the owner's command ends; a GET of
  48 MiB through host-b by a client that pauses 3 s -> exact, host-b's peak memory grows
  by less than 24 MiB; `vmsnap sandbox exec` (an upgraded connection) through host-b:
  stdin, binary stdout and the exit code pass;
  host-c holds the sandbox's lease -> pause through host-a and through host-b is 409 and
  nothing happens (the guest still runs); lease free -> pause and resume through host-b
  (row paused, then running, lease released; memory intact); while paused, a framed and an
  upgraded exec through host-b get the owner's 409 as it came;
  a resume through host-a and a destroy through host-b at the same moment -> never both
  applied against each other: one 409 (or one after the other), the row agrees with host-a;
  Postgres down -> 503 and nothing started; Postgres back -> destroy through host-b 204,
  row stopped.

Exit 0 pass, 1 fail, 77 skip. No timing assertions.
"""
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import hashlib
import io
import json
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import sandbox_lifecycle as lc  # noqa: E402
from agent_frames import EXIT, STDOUT, http_frames  # noqa: E402

FRAMES = "application/vnd.vmsnap.exec-frames"

PGSH = os.path.join(lc.SRC, "scripts", "postgres.sh")


def log(*a):
    print("cluster-lease:", *a, flush=True)


class PG:
    def __init__(self, d):
        self.dir = d
        self.psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]

    def ctl(self, verb, *args):
        subprocess.check_call(["bash", PGSH, verb, self.dir] + list(args),
                              stdout=subprocess.DEVNULL)

    def sql(self, q):
        out = subprocess.run([self.psql, "-X", "-q", "-A", "-t", "-h", self.dir, "-U", "vmsnap",
                              "-d", "vmsnap", "-v", "ON_ERROR_STOP=1", "-c", q],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise lc.Fail("psql %r: %s" % (q, out.stderr.strip()))
        return out.stdout.strip()


def row(pg, sid):
    return pg.sql("SELECT state || ' ' || host_id || ' ' || coalesce(lease_host, '-') "
                  "FROM sandboxes WHERE id = '%s'" % sid)


class ClusterDaemon(lc.Daemon):
    """A vmsnapd --cluster host: TCP on a free port with the cluster's token, its own root."""

    def __init__(self, work, name, conf, token_file):
        os.makedirs(os.path.join(work, name))
        super().__init__(os.path.join(work, name), lc.GUEST)
        self.mem = os.path.join("/dev/shm", "%s-%s-mem" % (os.path.basename(work), name))
        self.name = name
        self.args = ["--cluster", "@" + conf, "--cluster-token", token_file, "--host-id", name,
                     "--heartbeat-interval", "500", "--lost-after", "3600000"]

    def start(self, env_extra=None):
        for _ in range(3):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            logf = open(os.path.join(self.work, "vmsnapd.log"), "a")
            self.proc = subprocess.Popen(
                [lc.VMSNAPD, "--root", self.root, "--socket", self.sock,
                 "--listen", "127.0.0.1:%d" % port, "--guest-dir", self.guest,
                 "--mem-root", self.mem, "--tick-interval", "1"] + self.args,
                stdout=logf, stderr=subprocess.STDOUT)
            deadline = time.time() + 60
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    if self.call("GET", "/healthz", timeout=2)[0] == 200:
                        return
                except OSError:
                    pass
                time.sleep(0.1)
            self.stop()
        raise lc.Fail("vmsnapd %s did not come up (see %s/vmsnapd.log)" % (self.name, self.work))


def joined(pg, name):
    for _ in range(300):  # /healthz answers before the daemon has joined the cluster
        if pg.sql("SELECT EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'hosts')") == "t" \
           and pg.sql("SELECT count(*) FROM hosts WHERE id = '%s' AND state = 'alive'" % name) == "1":
            return
        time.sleep(0.1)
    raise lc.Fail("host %s did not join the cluster" % name)


def race(calls):
    """Runs (daemon, method, path) calls at the same moment; their statuses."""
    out = [None] * len(calls)
    gate = threading.Barrier(len(calls))

    def one(i, d, method, path):
        gate.wait()
        out[i] = d.call(method, path)[0]

    ts = [threading.Thread(target=one, args=(i,) + c) for i, c in enumerate(calls)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def raw(d, method, path, body=None, headers=None):
    """One request to d; (status, content type, body bytes)."""
    c = lc.UnixHTTP(d.sock, 300)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), data


def framed_exec(d, sid, cmd):
    """A streamed exec of sh -c cmd through d: (stdout bytes, exit frame)."""
    st, ctype, data = raw(d, "POST", "/v1/sandboxes/%s/exec" % sid,
                          json.dumps({"argv": ["sh", "-c", cmd]}),
                          {"Content-Type": "application/json", "Accept": FRAMES})
    lc.check(st == 200 and ctype == FRAMES, "framed exec %r: %s %s %r" % (cmd, st, ctype,
                                                                       data[:200]))
    frames = http_frames(data)
    lc.check(frames and frames[-1][0] == EXIT, "framed exec %r ended with %r" % (cmd, frames[-1:]))
    return b"".join(p for t, p in frames if t == STDOUT), json.loads(frames[-1][1])


def client_goes_away(a, b, sid):
    """A framed exec through host-b whose client leaves mid-stream: the relay ends and the
    owner's command is ended (SIGHUP), nothing left running."""
    c = lc.UnixHTTP(b.sock, 60)
    c.request("POST", "/v1/sandboxes/%s/exec" % sid,
              body=json.dumps({"argv": ["sh", "-c", "while :; do echo tick-away; sleep 0.2; done"]}),
              headers={"Content-Type": "application/json", "Accept": FRAMES})
    r = c.getresponse()
    lc.check(r.status == 200, "framed exec to leave: %s" % r.status)
    lc.check(b"tick-away" in r.read1(65536) + r.read1(65536), "no output before leaving")

    def mine():
        ps = a.ok("GET", "/v1/sandboxes/%s/processes" % sid)["processes"]
        return [p for p in ps if "tick-away" in (p["command"] or "") and p["running"]]
    lc.check(mine(), "the command does not run on host-a")
    c.close()
    for _ in range(300):  # a deadline, not a timing assertion
        if not mine():
            return
        time.sleep(0.1)
    raise lc.Fail("the owner's command still runs after its client left host-b: %r" % mine())


SLOW_SIZE = 48 << 20


def hwm_kib(d):
    for line in open("/proc/%d/status" % d.proc.pid):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def slow_client(a, b, sid):
    """A GET of 48 MiB through host-b by a client that stops reading for 3 s after its first
    MiB: host-b's peak memory grows by far less than the file (the relay holds at most its
    pipe and libcurl's buffer; the owner is held back by TCP), and the bytes are exact."""
    lc.sh(a, sid, "head -c %d /dev/urandom > /tmp/slow" % SLOW_SIZE)
    want = lc.sh(a, sid, "sha256sum < /tmp/slow").split()[0]
    hwm0 = hwm_kib(b)
    c = lc.UnixHTTP(b.sock, 300)
    c.request("GET", "/v1/sandboxes/%s/files?path=/tmp/slow" % sid)
    r = c.getresponse()
    lc.check(r.status == 200, "GET of 48 MiB through host-b: %s" % r.status)
    h, n = hashlib.sha256(), 0
    first = r.read(1 << 20)
    h.update(first)
    n += len(first)
    time.sleep(3)  # the slow client: the owner goes on producing; host-b must not take it all
    t0 = time.time()
    for chunk in iter(lambda: r.read(1 << 20), b""):
        h.update(chunk)
        n += len(chunk)
    c.close()
    growth = hwm_kib(b) - hwm0
    log("48 MiB through host-b to a client pausing 3 s: host-b VmHWM +%d KiB; the rest came "
        "at %.1f MiB/s (what an unbounded buffer would have taken in during the pause)"
        % (growth, (n - len(first)) / (1 << 20) / max(time.time() - t0, 1e-3)))
    lc.check(n == SLOW_SIZE and h.hexdigest() == want, "48 MiB through host-b: %d bytes, "
             "sha256 %s" % (n, "equal" if h.hexdigest() == want else "differs"))
    lc.check(growth < 24 * 1024, "host-b grew by %d KiB relaying 48 MiB to a slow client" % growth)
    lc.sh(a, sid, "rm /tmp/slow")


def cli_exec(b, sid, argv, stdin=None):
    """`vmsnap sandbox exec` (an upgraded connection) against host-b: (rc, stdout bytes)."""
    cli = os.environ.get("VMSNAP_CLI", os.path.join(lc.BUILD, "vmsnap"))
    args = [cli, "sandbox", "exec", "--socket", b.sock] + (["-i"] if stdin is not None else [])
    p = subprocess.run(args + [sid, "--"] + argv, input=stdin, capture_output=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def upgraded(b, sid):
    """The interactive exec through host-b: stdin in, binary stdout out, the exit code."""
    data = secrets.token_bytes(300000)
    rc, out, err = cli_exec(b, sid, ["sha256sum"], stdin=data)
    lc.check(rc == 0 and out.decode().split()[:1] == [hashlib.sha256(data).hexdigest()],
             "exec -i through host-b: rc %d %r %r" % (rc, out[:100], err[:300]))
    rc, out, err = cli_exec(b, sid, ["head", "-c", "200000", "/dev/zero"])
    lc.check(rc == 0 and out == bytes(200000), "exec through host-b: rc %d, %d bytes %r"
             % (rc, len(out), err[:300]))
    rc, _, err = cli_exec(b, sid, ["sh", "-c", "exit 7"])
    lc.check(rc == 7, "the exit code through host-b: %d %r" % (rc, err[:300]))


def refused_while_paused(b, sid):
    """The owner's refusal of a streamed or upgraded exec comes back through host-b as it
    came (its status and message); a client's own X-Vmsnap-Forwarded only turns forwarding
    off (the local 404)."""
    st, ctype, body = raw(b, "POST", "/v1/sandboxes/%s/exec" % sid,
                          json.dumps({"argv": ["true"]}),
                          {"Content-Type": "application/json", "Accept": FRAMES})
    lc.check(st == 409 and ctype == "application/json" and b"paused" in body,
             "framed exec of a paused sandbox through host-b: %s %r" % (st, body))
    rc, _, err = cli_exec(b, sid, ["true"])
    lc.check(rc == 1 and b"paused" in err, "exec of a paused sandbox through host-b: rc %d %r"
             % (rc, err))
    st, _, body = raw(b, "GET", "/v1/sandboxes/%s/files?path=/etc/hostname" % sid,
                      headers={"X-Vmsnap-Forwarded": "host-b"})
    lc.check(st == 404, "a client's X-Vmsnap-Forwarded through host-b: %s %r" % (st, body))


def streams(a, b, sid):
    """The streamed routes through host-b (not the owner): relayed byte for byte."""
    t0 = time.time()
    out, end = framed_exec(b, sid, "head -c 300000 /dev/urandom | tee /tmp/r | sha256sum")
    want = lc.sh(a, sid, "sha256sum < /tmp/r")
    lc.check(end["exit_code"] == 0 and out.decode().split()[0] == want.split()[0],
             "sha256 through host-b %r, the guest's %r" % (out, want))
    out, end = framed_exec(b, sid, "head -c 200000 /dev/zero")
    lc.check(out == bytes(200000), "binary stdout through host-b: %d bytes, not all zero"
             % len(out))
    data = secrets.token_bytes(1 << 20)
    path = "/v1/sandboxes/%s/files?path=/tmp/up.bin" % sid
    st, _, info = raw(b, "PUT", path, data, {"Content-Type": "application/octet-stream"})
    lc.check(st == 200 and json.loads(info)["size"] == len(data), "PUT 1 MB through host-b: %s %r"
             % (st, info))
    lc.check(lc.sh(a, sid, "sha256sum < /tmp/up.bin").split()[0] ==
             hashlib.sha256(data).hexdigest(), "the guest's copy of the PUT differs")
    st, ctype, got = raw(b, "GET", path)
    lc.check(st == 200 and got == data, "GET through host-b: %s, %d bytes, equal %s"
             % (st, len(got), got == data))
    st, _, body = raw(b, "GET", "/v1/sandboxes/%s/files?path=/tmp/none" % sid)
    lc.check(st == 404 and b"/tmp/none: No such file" in body,
             "a missing file through host-b: %s %r" % (st, body))
    lc.sh(a, sid, "mkdir -p /tmp/tree/sub /tmp/dest && echo one > /tmp/tree/a && "
                  "head -c 5000 /dev/urandom > /tmp/tree/sub/b")
    st, ctype, tar = raw(b, "GET", "/v1/sandboxes/%s/archive?path=/tmp/tree" % sid)
    lc.check(st == 200 and ctype == "application/x-tar", "GET archive: %s %s" % (st, ctype))
    names = sorted(tarfile.open(fileobj=io.BytesIO(tar)).getnames())
    lc.check(names == ["tree", "tree/a", "tree/sub", "tree/sub/b"], "archive: %r" % names)
    st, _, body = raw(b, "PUT", "/v1/sandboxes/%s/archive?path=/tmp/dest" % sid, tar,
                      {"Content-Type": "application/x-tar"})
    lc.check(st == 204, "PUT archive through host-b: %s %r" % (st, body))
    same = lc.sh(a, sid, "cmp /tmp/tree/a /tmp/dest/tree/a && "
                         "cmp /tmp/tree/sub/b /tmp/dest/tree/sub/b && echo same")
    lc.check(same == "same", "the archive's round trip differs: %r" % same)
    client_goes_away(a, b, sid)
    upgraded(b, sid)
    slow_client(a, b, sid)
    log("streamed exec, file PUT/GET and archive round trip through host-b: byte-exact; a "
        "client leaving ends the owner's command "
        "(%.1f s)" % (time.time() - t0))


def run(a, b, pg):
    a.start()
    joined(pg, "host-a")
    b.start()
    joined(pg, "host-b")
    pg.sql("INSERT INTO hosts (id, endpoint, vcpus, memory_mib, disk_mib, state, epoch, "
           "heartbeat_at) VALUES ('host-c', '127.0.0.1:1', 4, 4096, 0, 'alive', 1, now())")
    sb = a.ok("POST", "/v1/sandboxes?host=host-a", {})  # pinned: host-c is not real
    sid = sb["id"]
    lc.check(row(pg, sid) == "running host-a -", "after create: %s" % row(pg, sid))
    lc.sh(a, sid, "echo 41 > /tmp/n")

    # Through host-b: forwarded to the owner, host-a.
    lc.check(b.ok("GET", "/v1/sandboxes/%s" % sid)["id"] == sid, "GET through host-b")
    lc.check(b.call("GET", "/v1/sandboxes/%s" % ("0" * 8 + sid[8:]))[0] == 404,
             "an unknown sandbox through host-b")
    streams(a, b, sid)

    # host-c holds the lease: pause through host-a and through host-b is refused, untouched.
    pg.sql("UPDATE sandboxes SET lease_host = 'host-c', lease_epoch = 1, lease_op = 'resume', "
           "lease_token = nextval('lease_tokens') WHERE id = '%s'" % sid)
    for d in (a, b):
        status, body = d.call("POST", "/v1/sandboxes/%s/pause" % sid)
        lc.check(status == 409 and "busy" in body["error"]["message"],
                 "pause through %s under host-c's lease: %s %s" % (d.name, status, body))
    lc.check(a.ok("GET", "/v1/sandboxes/%s" % sid)["state"] == "running", "guest touched")
    lc.check(lc.sh(a, sid, "cat /tmp/n") == "41", "guest state changed under a refused pause")
    pg.sql("UPDATE sandboxes SET lease_host = NULL, lease_epoch = NULL, lease_op = NULL "
           "WHERE id = '%s'" % sid)

    b.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    lc.check(row(pg, sid) == "paused host-a -", "after pause through b: %s" % row(pg, sid))
    refused_while_paused(b, sid)
    b.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    lc.check(row(pg, sid) == "running host-a -", "after resume through b: %s" % row(pg, sid))
    got = lc.sh(a, sid, "cat /tmp/n")
    lc.check(got == "41", "memory lost across pause/resume: /tmp/n is %r" % got)

    # A resume through host-a and a destroy through host-b at the same moment.
    a.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    resume, destroy = race([(a, "POST", "/v1/sandboxes/%s/resume" % sid),
                            (b, "DELETE", "/v1/sandboxes/%s" % sid)])
    log("resume (host-a) and destroy (host-b) raced: %s, %s" % (resume, destroy))
    lc.check(resume in (200, 404, 409) and destroy in (204, 409), "race statuses")
    lc.check(not (resume == 409 and destroy == 409), "both refused")
    status, local = a.call("GET", "/v1/sandboxes/%s" % sid)
    r = row(pg, sid)
    if destroy == 204:
        gone = status == 404 or (status == 200 and local["state"] == "stopped")
        lc.check(gone and r == "stopped host-a -", "destroyed: %s %s / %s" % (status, local, r))
        sid = a.ok("POST", "/v1/sandboxes?host=host-a", {})["id"]  # a sandbox for the rest
    else:
        lc.check(status == 200 and local["state"] == "running" and r == "running host-a -",
                 "resume won: host says %s, cluster %s" % (local, r))

    # The cluster database down: 503, nothing started; back: works again.
    pg.ctl("stop", "immediate")
    status, body = a.call("POST", "/v1/sandboxes/%s/pause" % sid)
    lc.check(status == 503 and body["error"]["code"] == "unavailable",
             "pause without the database: %s %s" % (status, body))
    lc.check(a.ok("GET", "/v1/sandboxes/%s" % sid)["state"] == "running",
             "a refused pause touched the sandbox")
    pg.ctl("start")
    b.ok("DELETE", "/v1/sandboxes/%s" % sid)
    lc.check(row(pg, sid) == "stopped host-a -", "after destroy through b: %s" % row(pg, sid))


def main():
    if os.geteuid() != 0:
        lc.skip("needs root (jails)")
    if not os.access(lc.VMSNAPD, os.X_OK):
        lc.skip("no vmsnapd at %s" % lc.VMSNAPD)
    if not shutil.which("qemu-system-x86_64"):
        lc.skip("qemu-system-x86_64 is not installed")
    if not glob.glob("/usr/lib/postgresql/*/bin/psql"):
        lc.skip("no PostgreSQL (apt-get install postgresql; scripts/setup.sh)")
    lc.build_guest()
    work = tempfile.mkdtemp(prefix="vmsnap-e2e-cluster-")
    os.chmod(work, 0o755)  # the postgres user reaches its dir inside
    pg = PG(os.path.join(work, "pg"))
    pg.ctl("start")
    conf = os.path.join(work, "cluster.conf")
    token = os.path.join(work, "cluster.token")
    for path, text in ((conf, "host=%s user=vmsnap dbname=vmsnap\n" % pg.dir),
                       (token, secrets.token_hex(32) + "\n")):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, text.encode())
        os.close(fd)
    a = ClusterDaemon(work, "host-a", conf, token)
    b = ClusterDaemon(work, "host-b", conf, token)
    ok = False
    try:
        run(a, b, pg)
        ok = True
        log("passed")
    except (lc.Fail, OSError) as e:
        print("FAIL:", e, flush=True)
        for d in (a, b):
            subprocess.call(["tail", "-n", "30", os.path.join(d.work, "vmsnapd.log")])
    finally:
        for d in (a, b):
            lc.shut_down(d)
        subprocess.call(["bash", PGSH, "stop", pg.dir, "immediate"], stdout=subprocess.DEVNULL)
    if os.environ.get("VMSNAP_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
            for d in (a, b):
                shutil.rmtree(d.mem, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)
