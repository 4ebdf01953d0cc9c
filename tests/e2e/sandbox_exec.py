#!/usr/bin/env python3
"""Working inside a sandbox, end to end with a real QEMU guest (issue 9), one sandbox, many
checks, through the CLI (`vmsnap sandbox exec/shell/cp/ps/kill`) and the REST API:

  - argv with spaces, quotes, $, newlines and non-UTF-8 bytes comes back byte-exact (CLI, and
    argv_b64 over the API); exit codes and signals reach the CLI's exit status; stdin (-i);
  - --timeout says it fired and exits 124;
  - streaming: the first line of a command that prints 1, waits for a gate file, then 2 and 3
    arrives while the command still runs (the CLI, and the chunked frames of the API);
  - 100 MB of binary output (with NULs) through exec, and through cp both ways, with
    matching sha256, while the daemon's peak RSS (VmHWM) grows by less than a bound;
  - a PTY session driven through python's pty module: stty size, a resize, ^C kills the
    running sleep and the shell survives, ^D ends it;
  - background processes listed and killed; the files routes; the old {"cmd"} JSON exec;
  - a pause while a command streams ends the stream with an error; exec works after resume;
  - `rm` frees the sandbox's name (a new one may take it), `rm --keep-name` does not;
  - the host side of cp refuses a hostile archive (the guest's tar replaced by one that
    emits "..", absolute and symlink-escaping entries): nothing lands outside the
    destination.

Exit 0 pass, 1 fail, 77 skip. No timing assertions: ordering and state only.
"""
import errno
import fcntl
import hashlib
import io
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import termios
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from agent_frames import (EXIT, ERROR, STARTED, STDOUT,  # noqa: E402
                          http_frames, parse_header, HEADER)
from sandbox_lifecycle import (BUILD, GUEST, SRC, VMSNAPD, Daemon, Fail, UnixHTTP,  # noqa: E402
                               check, skip)
from sandbox_lifecycle import remove_work, run_main  # noqa: E402

CLI = os.environ.get("VMSNAP_CLI", os.path.join(BUILD, "vmsnap"))
BIG = 100_000_000
# The daemon moves 100 MB three times; a design that buffered a transfer would grow by about
# that much. Allowed growth: 64 MiB (the ASan build's quarantine and shadow memory included;
# the streams themselves hold 256 KiB windows).
RSS_GROWTH_MAX_KIB = 64 * 1024


def log(*a):
    print("sandbox-exec:", *a, flush=True)


class Box:
    def __init__(self, d, name):
        self.d, self.name = d, name

    def cli(self, *args, stdin=None, check_rc=None):
        p = subprocess.run([CLI, "sandbox"] + list(args[:1]) + ["--socket", self.d.sock] +
                           list(args[1:]), input=stdin, capture_output=True)
        if check_rc is not None:
            check(p.returncode == check_rc, "vmsnap sandbox %s -> %d (want %d): %s" % (
                " ".join(map(str, args))[:200], p.returncode, check_rc, p.stderr[-400:]))
        return p

    def exec(self, *argv, **kw):
        return self.cli("exec", self.name, "--", *argv, **kw)

    def sh(self, line):
        p = self.exec("/bin/sh", "-c", line, check_rc=0)
        return p.stdout.decode(errors="replace")


def daemon_hwm_kib(d):
    for line in open("/proc/%d/status" % d.proc.pid):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_argv(b):
    words = [b"a b", b"'single'", b'"double"', b"$HOME $(id)", b"l1\nl2", b"\xff\xfe\x80", b"",
             b"tab\there"]
    p = b.cli("exec", b.name, "--", "printf", "%s\\0", *words, check_rc=0)
    check(p.stdout == b"".join(w + b"\0" for w in words), "argv not byte-exact: %r" % p.stdout)
    import base64
    r = b.d.ok("POST", "/v1/sandboxes/%s/exec" % b.name,
               {"argv_b64": [base64.b64encode(x).decode() for x in [b"printf", b"%s"] + words[:6]]})
    check(r["stdout"].encode() != b"" and r["exit_code"] == 0, "argv_b64: %r" % r)
    check(b.exec("sh", "-c", "exit 3").returncode == 3, "exit 3 did not reach the CLI")
    check(b.exec("sh", "-c", "kill -TERM $$").returncode == 143, "a TERM did not give 143")
    p = b.exec("no-such-program")
    check(p.returncode == 127 and b"no-such-program" in p.stderr, "missing program: %r" % p)
    data = os.urandom(3_000_000) + b"\0" * 1000
    p = b.cli("exec", "-i", b.name, "--", "sha256sum", stdin=data, check_rc=0)
    check(p.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest(), "stdin (-i) differs")
    p = b.cli("exec", "--shell", b.name, "--", "echo", "$((6*7))", "|", "cat", check_rc=0)
    check(p.stdout == b"42\n", "--shell: %r" % p.stdout)
    r = b.d.ok("POST", "/v1/sandboxes/%s/exec" % b.name, {"cmd": "echo old; exit 4"})
    check(r["stdout"] == "old\n" and r["exit_code"] == 4, "old JSON exec: %r" % r)


def test_timeout(b):
    p = b.cli("exec", "--timeout", "1s", b.name, "--", "sleep", "30")
    check(p.returncode == 124, "--timeout exit status %d, not 124" % p.returncode)
    check(b"timed out" in p.stderr, "--timeout did not say it fired: %r" % p.stderr)


def gated(gate):
    """Prints 1, then 2 and 3 only once `gate` exists (or after 60 s): output that is not
    streamed cannot reach the test before the gate, whatever the load."""
    return ("echo 1; i=0; while [ ! -e %s ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); "
            "done; echo 2; echo 3" % gate)


def test_streaming(b):
    p = subprocess.Popen([CLI, "sandbox", "exec", "--socket", b.d.sock, b.name, "--", "sh", "-c",
                          gated("/tmp/gate-cli")], stdout=subprocess.PIPE)
    first = p.stdout.readline()
    still_running = p.poll() is None  # it waits for the gate
    b.cli("exec", b.name, "--", "touch", "/tmp/gate-cli", check_rc=0)
    rest = p.stdout.read()
    p.wait()
    check(first == b"1\n", "first line %r" % first)
    check(still_running, "the CLI ended before the first line of output came: not streamed")
    check(rest == b"2\n3\n" and p.returncode == 0, "rest %r rc %d" % (rest, p.returncode))
    # the API's chunked frames: the first STDOUT frame before the response ends
    c = UnixHTTP(b.d.sock, 60)
    c.request("POST", "/v1/sandboxes/%s/exec" % b.name,
              body=json.dumps({"argv": ["sh", "-c", gated("/tmp/gate-frames")]}),
              headers={"Content-Type": "application/json",
                       "Accept": "application/vnd.vmsnap.exec-frames"})
    r = c.getresponse()
    check(r.status == 200, "frames: status %d" % r.status)
    got, frames = b"", []
    while not any(t == STDOUT for t, _ in frames):
        chunk = r.read1(65536)
        check(chunk, "the frame stream ended before any output")
        got += chunk
        frames = complete_frames(got)
    check(not r.isclosed(), "the response had ended before its first STDOUT frame")
    b.cli("exec", b.name, "--", "touch", "/tmp/gate-frames", check_rc=0)
    got += r.read()
    frames = http_frames(got)
    out = b"".join(p for t, p in frames if t == STDOUT)
    check(frames[0][0] == STARTED and frames[-1][0] == EXIT and out == b"1\n2\n3\n",
          "frames: %r" % frames)
    c.close()


def complete_frames(data):
    frames, i = [], 0
    while len(data) - i >= HEADER:
        t, _, _, n = parse_header(data[i:i + HEADER])
        if len(data) - i < HEADER + n:
            break
        frames.append((t, data[i + HEADER:i + HEADER + n]))
        i += HEADER + n
    return frames


def test_big(b, work):
    hwm0 = daemon_hwm_kib(b.d)
    b.sh("head -c %d /dev/urandom > /tmp/big" % BIG)
    want = b.sh("sha256sum /tmp/big").split()[0]
    p = subprocess.Popen([CLI, "sandbox", "exec", "--socket", b.d.sock, b.name, "--", "cat",
                          "/tmp/big"], stdout=subprocess.PIPE)
    h, n = hashlib.sha256(), 0
    for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
        h.update(chunk)
        n += len(chunk)
    check(p.wait() == 0 and n == BIG, "exec cat of 100 MB: rc %d, %d bytes" % (p.returncode, n))
    check(h.hexdigest() == want, "100 MB through exec: sha256 differs")
    local = os.path.join(work, "big.out")
    b.cli("cp", "%s:/tmp/big" % b.name, local, check_rc=0)
    check(sha256_file(local) == want, "100 MB cp out of the guest: sha256 differs")
    b.sh("rm /tmp/big")
    b.cli("cp", local, "%s:/tmp/big2" % b.name, check_rc=0)
    check(b.sh("sha256sum /tmp/big2").split()[0] == want, "100 MB cp into the guest differs")
    b.sh("rm /tmp/big2")
    os.unlink(local)
    growth = daemon_hwm_kib(b.d) - hwm0
    log("3 x 100 MB: vmsnapd VmHWM %d -> %d KiB (+%d)" % (hwm0, hwm0 + growth, growth))
    check(growth < RSS_GROWTH_MAX_KIB, "vmsnapd grew by %d KiB moving 100 MB" % growth)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pty_until(fd, pat, limit=60):
    acc, deadline = b"", time.time() + limit
    while pat not in acc and time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError as e:
                if e.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            acc += chunk
    return acc


def wait_bounded(pid, seconds):
    """waitpid without hanging the test: the status, or None when it did not end in time."""
    for _ in range(int(seconds * 10)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    return None


def test_pty(b):
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.execv(CLI, [CLI, "sandbox", "shell", "--socket", b.d.sock, b.name, "-e", "PS1=$ "])
    try:
        check(b"$ " in pty_until(fd, b"$ "), "no prompt from `vmsnap sandbox shell`")
        os.write(fd, b"stty size\n")
        check(b"30 100" in pty_until(fd, b"$ "), "stty size is not 30 100")
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 120, 0, 0))
        os.kill(pid, signal.SIGWINCH)  # what the terminal does when it resizes
        for _ in range(20):  # the resize crosses the session asynchronously
            os.write(fd, b"stty size\n")
            out = pty_until(fd, b"$ ", limit=10)
            if b"45 120" in out:
                break
        check(b"45 120" in out, "stty size after the resize: %r" % out[-200:])
        # (what the shell prints differs from what is typed: the echo of the line never matches)
        # ^C once `sleep` runs in the foreground (seen through a second stream): typed sooner,
        # it would reach the shell alone, or be a plain byte while the line editor has the
        # terminal raw (as on any terminal)
        os.write(fd, b"sleep 101; echo went-$((1+1))-on\n")
        for _ in range(100):
            if b.exec("sh", "-c", "ps | grep -q '[s]leep 101'").returncode == 0:
                break
        os.write(fd, b"\x03")
        out = pty_until(fd, b"$ ")
        check(b"went-2-on" not in out, "^C did not stop the sleep: %r" % out)
        os.write(fd, b"echo ali$((0))ve\n")
        out = pty_until(fd, b"ali0ve")
        check(b"ali0ve" in out, "the shell did not survive ^C: %r" % out)
        if b"$ " not in out.split(b"ali0ve")[-1]:
            pty_until(fd, b"$ ")
        os.write(fd, b"\x04")
        out = pty_until(fd, b"never", limit=30)  # until the CLI closes the terminal
        status = wait_bounded(pid, 30)
        check(status is not None, "the shell did not end after ^D: %r" % out[-300:])
        check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
              "shell after ^D: status %r" % status)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        os.close(fd)


def test_processes_and_files(b):
    b.cli("exec", "-d", b.name, "--", "sleep", "300", check_rc=0)
    ps = json.loads(b.cli("ps", b.name, "--json", check_rc=0).stdout)
    bg = [x for x in ps if x["command"] == "sleep 300" and x["running"]]
    check(bg and bg[0]["detached"], "ps does not list the background process: %r" % ps)
    k = b.cli("kill", b.name, str(bg[0]["pid"]), "--signal", "KILL", "--json", check_rc=0)
    check(json.loads(k.stdout)["pid"] == bg[0]["pid"], "kill --json: %r" % k.stdout)
    e = json.loads(b.cli("exec", "--json", b.name, "--", "printf", 'a"b\\', check_rc=0).stdout)
    check(e["exit_code"] == 0, "exec --json: %r" % e)
    for _ in range(100):
        ps = json.loads(b.cli("ps", b.name, "--json", check_rc=0).stdout)
        mine = [x for x in ps if x["pid"] == bg[0]["pid"]]
        if not mine or not mine[0]["running"]:
            break
        time.sleep(0.1)
    check(not mine or mine[0]["signal"] == 9, "kill did not end it: %r" % mine)
    c = UnixHTTP(b.d.sock, 60)
    data = bytes(range(256)) * 1000
    c.request("PUT", "/v1/sandboxes/%s/files?path=/tmp/f.bin&mode=0640" % b.name, body=data,
              headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    info = json.loads(r.read())
    check(r.status == 200 and info["size"] == len(data) and info["mode"] == 0o640,
          "PUT files: %d %r" % (r.status, info))
    c.request("GET", "/v1/sandboxes/%s/files?path=/tmp/f.bin" % b.name)
    r = c.getresponse()
    check(r.status == 200 and r.read() == data, "GET files differs")
    st, ls = b.d.call("GET", "/v1/sandboxes/%s/files/list?path=/tmp" % b.name)
    check(st == 200 and any(e["name"] == "f.bin" for e in ls["entries"]), "list: %r" % ls)
    st, _ = b.d.call("DELETE", "/v1/sandboxes/%s/files?path=/tmp/f.bin" % b.name)
    check(st == 204, "DELETE files: %d" % st)
    st, e = b.d.call("GET", "/v1/sandboxes/%s/files/stat?path=/tmp/f.bin" % b.name)
    check(st == 404 and e["error"]["code"] == "not_found", "stat after delete: %d %r" % (st, e))
    c.close()


def test_pause_ends_stream(b):
    c = UnixHTTP(b.d.sock, 120)
    c.request("POST", "/v1/sandboxes/%s/exec" % b.name, body=json.dumps({"argv": ["sleep", "600"]}),
              headers={"Content-Type": "application/json",
                       "Accept": "application/vnd.vmsnap.exec-frames"})
    r = c.getresponse()
    check(r.status == 200, "frames for sleep: %d" % r.status)
    b.d.ok("POST", "/v1/sandboxes/%s/pause" % b.name)
    frames = http_frames(r.read())
    check(frames and frames[-1][0] == ERROR, "a pause did not end the stream: %r" % frames[-2:])
    c.close()
    b.d.ok("POST", "/v1/sandboxes/%s/resume" % b.name)
    check(b.sh("echo back") == "back\n", "exec after resume")


def test_rm_frees_name(b):
    sid = b.d.ok("GET", "/v1/sandboxes/box")["id"]
    p = b.cli("rm", "box", check_rc=0)
    check(sid.encode() in p.stdout and b"name is free again" in p.stdout, "rm said %r" % p.stdout)
    st, _ = b.d.call("GET", "/v1/sandboxes/box")
    check(st == 404, "the removed sandbox still answers to its name: %d" % st)
    gone = b.d.ok("GET", "/v1/sandboxes/%s" % sid)
    check(gone["state"] == "stopped" and gone["name"] is None, "the row: %r" % gone)
    again = b.d.ok("POST", "/v1/sandboxes", {"name": "box"})  # the 409 before
    b.cli("rm", "--keep-name", "box", check_rc=0)
    st, err = b.d.call("POST", "/v1/sandboxes", {"name": "box"})
    check(st == 409 and err["error"]["code"] == "already_exists",
          "--keep-name did not keep it: %d %r" % (st, err))
    check(b.d.ok("GET", "/v1/sandboxes/%s" % again["id"])["name"] == "box", "kept name lost")


def hostile_tar():
    """What a hostile guest's `tar` might send for `cp box:/etc DEST`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        def add(name, data=b"pwned", kind=tarfile.REGTYPE, link=""):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.linkname = link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("etc", kind=tarfile.DIRTYPE)
        add("etc/ok.txt", b"fine")
        add("etc/escape", kind=tarfile.SYMTYPE, link="../../outside")
        add("etc/escape/pwned.txt")
    return buf.getvalue()


def test_cp_attack(b, work):
    evil = os.path.join(work, "evil.tar")
    open(evil, "wb").write(hostile_tar())
    b.cli("cp", evil, "%s:/tmp/evil.tar" % b.name, check_rc=0)
    # the guest (root in its VM) replaces its tar with one that sends the hostile archive
    b.sh("mv /bin/tar /bin/tar.real && printf '#!/bin/sh\\ncat /tmp/evil.tar\\n' > /bin/tar"
         " && chmod 755 /bin/tar")
    dest = os.path.join(work, "cp-dest", "inner")
    outside = os.path.join(work, "cp-dest", "outside")
    os.makedirs(dest)
    os.makedirs(outside)
    try:
        p = b.cli("cp", "%s:/etc" % b.name, dest)
    finally:
        b.sh("mv /bin/tar.real /bin/tar")
    check(p.returncode == 1 and b"refused" in p.stderr, "the hostile archive was not refused: "
          "rc %d %r" % (p.returncode, p.stderr))
    check(os.listdir(outside) == [], "the hostile archive wrote outside: %r" % os.listdir(outside))
    check(not os.path.exists(os.path.join(work, "outside")), "it wrote next to the destination")
    # and a normal copy still works afterwards
    # --json names the paths escaped (a quote and a backslash in this one)
    p = b.cli("cp", "%s:/etc/hostname" % b.name, os.path.join(dest, 'h "q\\'), "--json",
              check_rc=0)
    got = json.loads(p.stdout)
    check(got["files"] == 1 and got["to"] == os.path.join(dest, 'h "q\\'), "cp --json: %r" % got)


def kill_leftover_vmms(work):
    """SIGKILLs a VMM of this test that outlived its daemon: only processes whose command line
    names this test's work directory (never by a broad name)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read()
        except OSError:
            continue
        if work.encode() in cmd and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def main():
    if not BUILD or not os.access(VMSNAPD, os.X_OK) or not os.access(CLI, os.X_OK):
        skip("vmsnapd or vmsnap not built (VMSNAP_BUILD=%r)" % BUILD)
    if not shutil.which("qemu-system-x86_64"):
        skip("qemu-system-x86_64 is not installed (scripts/setup.sh installs it)")
    rc = subprocess.call([os.path.join(SRC, "guest", "build.sh"), GUEST], stdout=subprocess.DEVNULL)
    if rc == 2:
        skip("the guest image cannot be built here (guest/build.sh exit 2)")
    if rc != 0:
        raise Fail("guest/build.sh failed (%d)" % rc)
    work = tempfile.mkdtemp(prefix="vmsnap-exec-")
    d = Daemon(work)

    def too_long(signo, frame):
        raise Fail("the test ran for 10 minutes: something hangs")
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(600)
    ok = False
    try:
        d.start()
        t0 = time.time()
        d.ok("POST", "/v1/sandboxes", {"name": "box", "memory_mib": 512})
        b = Box(d, "box")
        for name, fn in (("argv", lambda: test_argv(b)), ("timeout", lambda: test_timeout(b)),
                         ("streaming", lambda: test_streaming(b)), ("pty", lambda: test_pty(b)),
                         ("processes+files", lambda: test_processes_and_files(b)),
                         ("100 MB", lambda: test_big(b, work)),
                         ("cp attack", lambda: test_cp_attack(b, work)),
                         ("pause", lambda: test_pause_ends_stream(b)),
                         ("rm frees the name", lambda: test_rm_frees_name(b))):
            t = time.time()
            fn()
            log("%s: ok (%.1f s)" % (name, time.time() - t))
        ok = True
        log("passed in %.1f s" % (time.time() - t0))
    except Fail as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        try:
            if d.proc and d.proc.poll() is None:
                d.call("DELETE", "/v1/sandboxes/box")
        except Exception:
            pass
        d.stop()
        kill_leftover_vmms(work)
        remove_work(d, work)
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
