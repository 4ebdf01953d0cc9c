#!/usr/bin/env python3
"""End to end through vmsnapd's REST API with a real QEMU guest (issue 4):

  create -> exec (a file on the disk, a counter in RAM) -> pause (VMM gone, memory freed)
  -> resume (counter went on, file intact); more pause/resume cycles past the merge cap;
  template from a running sandbox -> 3 spawns, each runs, distinct RNG; a spawn asking for
  other memory -> 409; destroy racing a pause; the idle timeout pausing a sandbox by itself;
  a VMM killed behind the daemon's back -> error; the daemon SIGKILLed mid-pause (before
  and after the commit point) and restarted -> the sandbox is running or paused, never lost.

Exit 0 pass, 1 fail, 77 skip (no vmsnapd, no qemu, no guest image). No timing assertions.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("VMSNAP_BUILD", "")
SRC = os.environ.get("VMSNAP_SRC", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
VMSNAPD = os.path.join(BUILD, "vmsnapd")
GUEST = os.environ.get("VMSNAP_GUEST_DIR", os.path.join(SRC, "build", "guest"))
MERGE_CAP = 3
BACKUP_SB_KIB = 57345  # the last backup superblock of guest/build.sh's 64 MiB ext4 (1 KiB blocks)


def log(*a):
    print("sandbox-lifecycle:", *a, flush=True)


def skip(why):
    print("SKIP:", why, flush=True)
    sys.exit(77)


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Daemon:
    def __init__(self, work, guest=GUEST, extra_args=()):
        self.work = work
        self.guest = guest
        self.extra_args = list(extra_args)  # e.g. --insecure-no-jail for the unjailed mode
        self.root = os.path.join(work, "root")
        self.sock = os.path.join(work, "vmsnapd.sock")
        self.mem = os.path.join("/dev/shm", os.path.basename(work) + "-mem")
        self.proc = None

    def start(self, env_extra=None):
        env = dict(os.environ)
        env.pop("VMSNAP_CRASH_AT", None)
        env.update(env_extra or {})
        logf = open(os.path.join(self.work, "vmsnapd.log"), "a")
        self.proc = subprocess.Popen(
            [VMSNAPD, "--root", self.root, "--socket", self.sock, "--no-tcp",
             "--guest-dir", self.guest, "--mem-root", self.mem, "--merge-cap", str(MERGE_CAP),
             "--tick-interval", "1"] + self.extra_args,
            stdout=logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.call("GET", "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise Fail("vmsnapd exited at start (see %s/vmsnapd.log)" % self.work)
            time.sleep(0.1)
        raise Fail("vmsnapd did not answer /healthz")

    def call(self, method, path, body=None, timeout=300):
        c = UnixHTTP(self.sock, timeout)
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, raw.decode(errors="replace")

    def ok(self, method, path, body=None, want=(200, 201, 202, 204)):
        status, obj = self.call(method, path, body)
        check(status in want, "%s %s -> %s %s" % (method, path, status, obj))
        return obj

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_dead(self):
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            raise Fail("vmsnapd did not die at the crash point")


def sh(d, sid, cmd):
    r = d.ok("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": cmd, "timeout_ms": 20000})
    check(r["exit_code"] == 0, "exec %r failed: %s" % (cmd, r))
    return r["stdout"].strip()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


COUNTER = ("(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new;"
           " mv /tmp/counter.new /tmp/counter; sleep 0.2; done) >/dev/null 2>&1 &")


def counter(d, sid):
    return int(sh(d, sid, "cat /tmp/counter"))


def replace_base_image(d):
    """Rebuilding the guest image (a new rootfs.ext4 renamed into place, as guest/build.sh
    does) must not change the disk of an existing sandbox: its base is pinned."""
    path = os.path.join(d.guest, "rootfs.ext4")
    os.link(path, path + ".orig")  # put back by restore_base_image for the later tests
    with open(path + ".new", "wb") as f:
        f.truncate(os.path.getsize(path))  # all zeros: no filesystem at all
    os.rename(path + ".new", path)


def restore_base_image(d):
    path = os.path.join(d.guest, "rootfs.ext4")
    os.rename(path + ".orig", path)


def pause_and_check(d, sb):
    pid = sb["pid"]
    p = d.ok("POST", "/v1/sandboxes/%s/pause" % sb["id"])
    check(p["state"] == "paused", "pause left state %s" % p["state"])
    check(not alive(pid), "the VMM process %d still runs after pause" % pid)
    check(not os.path.exists(os.path.join(d.mem, sb["id"], "memory")),
          "the guest memory file is still there after pause")
    wait_released_gone(d)
    return p


def released_dirs(d):
    return [n for n in os.listdir(d.mem) if n.startswith(".released-")]


def wait_released_gone(d, seconds=30):
    """The pause renamed the guest's memory directory away; the background thread removes
    it after the answer (the RAM is freed then)."""
    deadline = time.monotonic() + seconds
    while released_dirs(d) and time.monotonic() < deadline:
        time.sleep(0.1)
    check(not released_dirs(d), "released memory not removed: %s" % released_dirs(d))


CGROUP = "/sys/fs/cgroup"
# the read-only system dirs (merged-/usr links as on the host), /dev nodes, the VMM's files
JAIL_ROOT_ALLOWED = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "dev", "run",
                     "memory", "base"}


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def cgroup_file(sid, controller, name):
    """The file of sandbox sid's cgroup: the unified hierarchy, else v1's per controller."""
    for path in (os.path.join(CGROUP, "vmsnap", sid, name),
                 os.path.join(CGROUP, controller, "vmsnap", sid, name)):
        if os.path.exists(path):
            return path
    return None


def cgroup_exists(sid):
    return any(os.path.isdir(os.path.join(CGROUP, *parts, "vmsnap", sid))
               for parts in ((), ("memory",), ("cpu",), ("pids",)))


def check_jailed(d, sb):
    """The VMM of sb runs in its jail: unprivileged uid, no capabilities, no_new_privs, a
    seccomp filter, its own mount namespace whose root holds only its files, a cgroup with
    the limits (issue 8)."""
    pid = sb["pid"]
    st = proc_status(pid)
    uids = st["Uid"].split()
    check(all(u == uids[0] for u in uids) and int(uids[0]) != 0, "VMM uid: %s" % st["Uid"])
    check(st["CapEff"] == "0000000000000000", "VMM CapEff %s" % st["CapEff"])
    check(st["NoNewPrivs"] == "1", "VMM NoNewPrivs %s" % st["NoNewPrivs"])
    check(st["Seccomp"] == "2", "VMM Seccomp %s (no filter)" % st["Seccomp"])
    check(os.readlink("/proc/%d/ns/mnt" % pid) != os.readlink("/proc/self/ns/mnt"),
          "the VMM shares the daemon's mount namespace")
    root = set(os.listdir("/proc/%d/root" % pid))
    check(root <= JAIL_ROOT_ALLOWED and {"run", "memory", "usr"} <= root,
          "the VMM's root holds %s" % sorted(root))
    check(not os.path.exists("/proc/%d/root/etc" % pid), "the VMM sees /etc")
    limit = cgroup_file(sb["id"], "memory", "memory.max") or \
        cgroup_file(sb["id"], "memory", "memory.limit_in_bytes")
    check(limit is not None, "no memory cgroup for %s" % sb["id"])
    with open(limit) as f:
        mem = int(f.read())
    check(mem == sb["memory_mib"] * 2**20 + 256 * 2**20, "memory limit %d" % mem)
    pids = cgroup_file(sb["id"], "pids", "pids.max")
    with open(pids) as f:
        check(f.read().strip() == str(128 + sb["vcpus"]), "pids.max")
    with open(cgroup_file(sb["id"], "pids", "cgroup.procs")) as f:
        check(str(pid) in f.read().split(), "the VMM is not in its cgroup")
    jail = os.path.join(d.root, "jails", sb["id"])
    check(os.path.isdir(jail) and not os.listdir(jail), "jail dir %s" % jail)
    run = os.stat(os.path.join(d.root, "sandboxes", sb["id"]))
    check(run.st_uid == int(uids[0]) and run.st_mode & 0o777 == 0o700, "run dir owner/mode")
    own = os.path.join(d.mem, sb["id"], "memory")
    tmpl = os.path.join(d.mem, sb["id"], "template")
    if not os.path.exists(own) and os.path.exists(tmpl):
        # a clone maps its template's memory, which no jail uid may write (docs/jail.md
        # "Read-only memory")
        t = os.stat(tmpl)
        check(t.st_uid == 0 and t.st_mode & 0o777 == 0o640, "template memory owner/mode")
    else:
        mem_file = os.stat(own)
        check(mem_file.st_uid == int(uids[0]) and mem_file.st_mode & 0o777 == 0o600,
              "memory file owner/mode")
    peak = cgroup_file(sb["id"], "memory", "memory.peak") or \
        cgroup_file(sb["id"], "memory", "memory.max_usage_in_bytes")
    with open(peak) as f:
        peak_mib = int(f.read()) >> 20
    log("VMM %d jailed: uid %s, CapEff 0, NoNewPrivs 1, Seccomp 2, root %s, memory.max %d MiB "
        "(peak so far %d MiB)" % (pid, uids[0], sorted(root), mem >> 20, peak_mib))
    return int(uids[0])


def check_unjailed_gone(d, sid):
    check(not cgroup_exists(sid), "cgroup of %s left behind" % sid)
    check(not os.path.exists(os.path.join(d.root, "jails", sid)), "jail dir of %s left" % sid)


def test_jail_restart(d, sid):
    """A daemon SIGKILLed and restarted re-attaches to the jailed VMM (by -name: its paths
    differ inside the jail)."""
    before = d.ok("GET", "/v1/sandboxes/%s" % sid)
    d.proc.kill()
    d.proc.wait()
    d.start()
    after = d.ok("GET", "/v1/sandboxes/%s" % sid)
    check(after["state"] == "running" and after["pid"] == before["pid"],
          "after a daemon SIGKILL: %s" % after)
    # The times the row keeps survive the restart (docs/api.md: started, last_paused).
    check(before.get("started") and after.get("started") == before["started"] and
          after.get("last_paused") == before.get("last_paused"),
          "started/last_paused across the restart: %s -> %s" %
          ({k: before.get(k) for k in ("started", "last_paused")},
           {k: after.get(k) for k in ("started", "last_paused")}))
    check(sh(d, sid, "echo attached") == "attached", "exec after re-attach")
    check_jailed(d, after)
    log("daemon SIGKILL + restart: re-attached to the jailed VMM %d" % after["pid"])


def test_lifecycle(d):
    sb = d.ok("POST", "/v1/sandboxes", {"name": "demo"})
    check(sb["state"] == "running", "create: %s" % sb)
    sid = sb["id"]
    uid = check_jailed(d, sb)
    sh(d, sid, "echo persisted > /mnt/data/hello.txt && sync")
    # The agent's vsock listener (Firecracker/Cloud Hypervisor use it), over vsock loopback.
    check('"ok":true' in sh(d, sid, "vmsnap-agent --vsock-selftest"), "agent on vsock")
    sh(d, sid, COUNTER)
    time.sleep(1)
    before = counter(d, sid)
    gens = []
    for cycle in range(MERGE_CAP + 1):
        p = pause_and_check(d, sb)
        gens.append(p["generation"])
        if cycle == 0:
            replace_base_image(d)
        check_unjailed_gone(d, sid)  # paused: no VMM, so no cgroup and no jail dir
        sb = d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
        check(sb["state"] == "running", "resume: %s" % sb)
        check(check_jailed(d, sb) == uid, "the jail uid changed over a pause")
        after = counter(d, sid)
        check(after >= before, "counter went back: %d -> %d" % (before, after))
        time.sleep(0.6)
        check(counter(d, sid) > after, "the counter stopped after resume")
        sh(d, sid, "sync; echo 3 > /proc/sys/vm/drop_caches")  # read through the disk
        check(sh(d, sid, "cat /mnt/data/hello.txt") == "persisted", "disk file lost")
        # The last backup superblock of the base image: never written by the guest, so it
        # is read from the base image through the overlay.
        got = sh(d, sid, "dd if=/dev/vda bs=1024 skip=%d count=2 2>/dev/null | md5sum"
                 % BACKUP_SB_KIB).split()[0]
        check(got == d.base_md5, "the base image changed under the sandbox's disk")
        before = counter(d, sid)
    restore_base_image(d)
    log("generations over %d pauses: %s" % (len(gens), gens))
    # The first pause writes generation 1 over the base copied after the boot, or 0 when
    # it came first (tests/e2e/sandbox_base.py). Each pause adds one; the pause at the cap
    # does not merge: its merge runs in the background, and may move the resumed sandbox
    # onto the merged generation 0 before the next pause (tests/e2e/sandbox_merge.py).
    check(gens[0] in (0, 1), "generations %s" % gens)
    for a, b in zip(gens, gens[1:]):
        check(b == a + 1 or (a >= MERGE_CAP and b == 1), "generations %s" % gens)
    return sid


def test_name_clash(d, sid):
    """A create with a taken name is refused; the sandbox holding the name is untouched."""
    status, err = d.call("POST", "/v1/sandboxes", {"name": "demo"})
    check(status == 409 and "error" in err, "name clash: %s %s" % (status, err))
    same = d.ok("GET", "/v1/sandboxes/demo")
    check(same["id"] == sid and same["state"] == "running", "name clash hurt it: %s" % same)


def test_templates(d, sid):
    t = d.ok("POST", "/v1/sandboxes/%s/snapshot" % sid, {"name": "tpl"})
    check(t["name"] == "tpl", "template: %s" % t)
    check(sh(d, sid, "echo still") == "still", "source sandbox stopped after snapshot")
    status, err = d.call("POST", "/v1/snapshots/tpl/sandboxes", {"memory_mib": 512})
    check(status == 409 and "error" in err, "spawn with other memory: %s %s" % (status, err))
    seeds, clones = set(), []
    for i in range(3):
        c = d.ok("POST", "/v1/snapshots/tpl/sandboxes", {})
        check(c["state"] == "running" and c["template_id"] == t["id"], "spawn: %s" % c)
        check_jailed(d, c)
        check(sh(d, c["id"], "cat /mnt/data/hello.txt") == "persisted", "clone lost the file")
        counter(d, c["id"])
        seeds.add(sh(d, c["id"], "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"))
        clones.append(c["id"])
    check(len(seeds) == 3, "clones share RNG output: %s" % seeds)
    return clones


def test_destroy_during_pause(d):
    sb = d.ok("POST", "/v1/sandboxes", {})
    results = {}

    def pause():
        results["pause"] = d.call("POST", "/v1/sandboxes/%s/pause" % sb["id"])[0]
    t = threading.Thread(target=pause)
    t.start()
    time.sleep(0.05)
    status, _ = d.call("DELETE", "/v1/sandboxes/%s" % sb["id"])
    t.join()
    check(status in (200, 204), "destroy during pause: %s" % status)
    final = d.ok("GET", "/v1/sandboxes/%s" % sb["id"])
    check(final["state"] == "stopped", "after destroy: %s" % final)
    check(not alive(sb["pid"]), "VMM survived destroy")
    check(not os.path.exists(os.path.join(d.root, "sandboxes", sb["id"])), "run dir left")
    check_unjailed_gone(d, sb["id"])
    log("destroy racing pause: pause -> %s, destroy -> %s" % (results.get("pause"), status))


def wait_state(d, sid, state, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        sb = d.ok("GET", "/v1/sandboxes/%s" % sid)
        if sb["state"] == state:
            return sb
        time.sleep(0.5)
    raise Fail("sandbox %s never became %s (last: %s)" % (sid, state, sb))


def test_watchers(d):
    """The idle timeout pauses a sandbox by itself; a VMM that dies is noticed."""
    idle = d.ok("POST", "/v1/sandboxes", {"idle_timeout": 2})
    wait_state(d, idle["id"], "paused")
    check(not alive(idle["pid"]), "idle pause left the VMM running")
    d.ok("POST", "/v1/sandboxes/%s/resume" % idle["id"])
    # A command that outlives the idle timeout, with no API call meanwhile: the sandbox is
    # busy, not idle (the auto-pause used to end the command); idle again once it ended.
    p = subprocess.run([os.path.join(BUILD, "vmsnap"), "sandbox", "exec", "--socket", d.sock,
                        idle["id"], "--", "sh", "-c", "sleep 6; echo survived"],
                       capture_output=True, timeout=120)
    check(p.returncode == 0 and p.stdout == b"survived\n",
          "a 6 s command with idle_timeout 2: exit %d, out %r, err %r"
          % (p.returncode, p.stdout, p.stderr[-300:]))
    check(d.ok("GET", "/v1/sandboxes/%s" % idle["id"])["state"] == "running",
          "the sandbox was paused while its command ran")
    wait_state(d, idle["id"], "paused")
    d.ok("POST", "/v1/sandboxes/%s/resume" % idle["id"])
    d.ok("DELETE", "/v1/sandboxes/%s" % idle["id"])
    doomed = d.ok("POST", "/v1/sandboxes", {})
    os.kill(doomed["pid"], signal.SIGKILL)
    err = wait_state(d, doomed["id"], "error")
    check("exited" in err["error"], "crash watcher message: %s" % err)
    check_unjailed_gone(d, doomed["id"])
    d.ok("DELETE", "/v1/sandboxes/%s" % doomed["id"])
    log("idle auto-pause (not during a command) and the crash watcher: ok")


def crash_pause(d, sid, point):
    d.stop()
    d.start({"VMSNAP_CRASH_AT": point})
    try:
        d.call("POST", "/v1/sandboxes/%s/pause" % sid, timeout=120)
    except (OSError, http.client.HTTPException):
        pass
    d.wait_dead()
    # released memory the dead daemon had not removed yet: its successor removes it
    planted = os.path.join(d.mem, ".released-planted.0")
    os.makedirs(planted, exist_ok=True)
    with open(os.path.join(planted, "memory"), "wb") as f:
        f.write(b"x" * 4096)
    logp = os.path.join(d.work, "vmsnapd.log")
    offset = os.path.getsize(logp)
    d.start()
    check(not os.path.exists(planted), "a daemon start left released memory: %s" % planted)
    with open(logp) as f:  # what the restarted daemon said of this sandbox's recovery
        f.seek(offset)
        d.recovery = [l for l in f.read().splitlines()
                      if "recovery: sandbox %s (no name): " % sid in l]
    return d.ok("GET", "/v1/sandboxes/%s" % sid)


def check_recovery_said(d, what):
    """Exactly one recovery line for the crashed pause, saying what it did."""
    check(len(d.recovery) == 1 and what in d.recovery[0],
          "recovery log: expected one line with %r, got %r" % (what, d.recovery))
    log("  " + d.recovery[0].split("recovery: ", 1)[1])


def test_daemon_crash(d):
    sb = d.ok("POST", "/v1/sandboxes", {})
    sid = sb["id"]
    sh(d, sid, "echo kept > /mnt/data/crash.txt && sync")
    sh(d, sid, COUNTER)
    after = crash_pause(d, sid, "capture.saved")
    log("killed before the commit point -> %s" % after["state"])
    check(after["state"] in ("running", "paused"), "lost: %s" % after)
    check_recovery_said(d, "pause rolled back (stopped at step begin)" +
                        (": its pending snapshot aborted, the VMM resumed; running"
                         if after["state"] == "running" else ""))
    if after["state"] == "paused":
        d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    check(sh(d, sid, "cat /mnt/data/crash.txt") == "kept", "file lost after crash")
    counter(d, sid)
    for point in ("store.commit.ready", "pause.committed"):
        # After the store's commit the new snapshot is the sandbox: recovery rolls forward.
        before = d.ok("GET", "/v1/sandboxes/%s" % sid)
        after = crash_pause(d, sid, point)
        log("killed at %s (after the store's commit) -> %s" % (point, after["state"]))
        check(after["state"] == "paused", "after a committed pause: %s" % after)
        check(after["snapshot_id"] != before["snapshot_id"], "not rolled forward: %s" % after)
        check_recovery_said(d, "pause finished (stopped at step %s, after the store's commit): "
                            "killed its leftover VMM (pid %d); kept snapshot %s; paused" %
                            ("committed" if point == "pause.committed" else "begin",
                             before["pid"], after["snapshot_id"]))
        d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
        check(sh(d, sid, "cat /mnt/data/crash.txt") == "kept", "file lost after crash")
        counter(d, sid)
    # After the answer (row paused on the new snapshot, step released, durable) the
    # superseded snapshot goes in the background: killed there, recovery removes it.
    before = d.ok("GET", "/v1/sandboxes/%s" % sid)
    after = crash_pause(d, sid, "pause.drop")
    log("killed after the answer, before the superseded snapshot went -> %s" % after["state"])
    check(after["state"] == "paused" and after["snapshot_id"] != before["snapshot_id"],
          "after an answered pause: %s" % after)
    check_recovery_said(d, "pause finished (stopped at step released, after its answer): its "
                        "superseded snapshot %s removed" % before["snapshot_id"])
    status, _ = d.call("GET", "/v1/snapshots/%s" % before["snapshot_id"])
    check(status == 404, "superseded snapshot %s still there: %s" % (before["snapshot_id"], status))
    d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    check(sh(d, sid, "cat /mnt/data/crash.txt") == "kept", "file lost after crash")
    counter(d, sid)


def kill_leftovers(d):
    """Any VMM of ours that survived, by the pids the daemon recorded (never by a pattern)."""
    import sqlite3
    try:
        db = sqlite3.connect(os.path.join(d.root, "vmsnap.db"))
        rows = list(db.execute("SELECT id, pid FROM sandboxes WHERE pid > 0"))
        db.close()
    except sqlite3.Error:
        rows = []
    for sid, pid in rows:
        try:  # still that sandbox's VMM (QEMU names itself vmsnap-<id>), not a reused pid
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if ("vmsnap-" + sid).encode() in f.read():
                    os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def build_guest():
    """Builds the guest image (guest/build.sh) into GUEST: skips (77) where it cannot be
    built here, fails when the build fails."""
    rc = subprocess.call([os.path.join(SRC, "guest", "build.sh"), GUEST],
                         stdout=subprocess.DEVNULL)
    if rc == 2:
        skip("the guest image cannot be built here (guest/build.sh exit 2)")
    if rc != 0 or not os.path.exists(os.path.join(GUEST, "vmlinuz")):
        raise Fail("guest/build.sh failed (%d)" % rc)


def shut_down(d):
    """Destroys every sandbox the daemon still has (if it still runs), stops it and kills
    any VMM of ours that survived."""
    try:
        if d.proc and d.proc.poll() is None:
            for s in (d.call("GET", "/v1/sandboxes")[1] or {}).get("sandboxes", []):
                d.call("DELETE", "/v1/sandboxes/%s" % s["id"])
    except Exception:
        pass
    d.stop()
    kill_leftovers(d)


def remove_work(d, work):
    """Removes the test's work and memory directories unless VMSNAP_KEEP=1."""
    if os.environ.get("VMSNAP_KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(d.mem, ignore_errors=True)


def need_qemu_guest():
    """Skips (77) without a built vmsnapd or QEMU; builds the guest image."""
    if not BUILD or not os.access(VMSNAPD, os.X_OK):
        skip("vmsnapd not built (VMSNAP_BUILD=%r)" % BUILD)
    if not shutil.which("qemu-system-x86_64"):
        skip("qemu-system-x86_64 is not installed (scripts/setup.sh installs it)")
    build_guest()


def daemon_test(prefix, body, say=log, make_daemon=Daemon):
    """need_qemu_guest, then body(d) with a started daemon (make_daemon(work)) in a fresh
    work directory: a Fail is printed with the daemon's log tail; the daemon and its
    sandboxes are always shut down and the work removed. Returns the exit code (0 pass, 1
    fail)."""
    need_qemu_guest()
    work = tempfile.mkdtemp(prefix=prefix)
    d = make_daemon(work)
    ok = False
    try:
        d.start()
        t0 = time.time()
        body(d)
        ok = True
        say("passed in %.1f s" % (time.time() - t0))
    except Fail as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        shut_down(d)
        remove_work(d, work)
    return 0 if ok else 1


def run_main(main):
    """Exits with main()'s code; a Fail that escapes it (a skip check, a setup) fails."""
    try:
        sys.exit(main())
    except Fail as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)


def daemon_with_own_guest(work):
    """A daemon on a private copy of the guest image (the test replaces its disk image),
    with the md5 of the image's last backup superblock in d.base_md5."""
    guest = os.path.join(work, "guest")
    os.makedirs(guest)
    for f in os.listdir(GUEST):
        if os.path.isfile(os.path.join(GUEST, f)):
            shutil.copy(os.path.join(GUEST, f), os.path.join(guest, f))
    d = Daemon(work, guest)
    with open(os.path.join(guest, "rootfs.ext4"), "rb") as f:
        f.seek(BACKUP_SB_KIB * 1024)
        d.base_md5 = __import__("hashlib").md5(f.read(2048)).hexdigest()
    return d


def body(d):
    sid = test_lifecycle(d)
    test_jail_restart(d, sid)
    test_name_clash(d, sid)
    test_templates(d, sid)
    test_destroy_during_pause(d)
    test_watchers(d)
    test_daemon_crash(d)


if __name__ == "__main__":
    run_main(lambda: daemon_test("vmsnap-e2e-", body, log, daemon_with_own_guest))
