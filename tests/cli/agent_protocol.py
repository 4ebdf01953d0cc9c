#!/usr/bin/env python3
"""The guest agent's protocol 2 on the host, without a VM (docs/guest.md §2): the agent is
built from guest/agent/*.c and serves a Unix socket (`--listen-unix`). Checks: argv comes
back byte-exact (spaces, quotes, $, newlines, non-UTF-8); exit codes and signals; a timeout
that says it fired; stdin forwarded; 20 MB with NULs through stdout with the right sha256
while the agent's memory stays bounded; a PTY (stty size, resize, ^C kills the job and the
shell survives, ^D ends it); files written atomically and read back; stat/list/remove;
detached processes listed and killed; a disconnect hangs up attached commands but not
detached ones; the old line protocol still answers; a frame of an unknown type, and STDIN
beyond the credit window, make the agent drop the connection's streams.

Exit 0 pass, 1 fail, 77 skip (no gcc). No timing assertions.
"""
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("VMSNAP_SRC", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
from agent_frames import *  # noqa: E402,F403

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(60)
    c = FrameConn(s)
    check(c.hello().get("protocol") == 2, "hello does not say protocol 2")
    return c


def rss_kib(pid, field="VmRSS"):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def test_exec(c):
    argv = [b"printf", b"%s|", b"a b", b"'q'", b'"dq"', b"$HOME", b"l1\nl2", b"\xff\xfe\x80", b""]
    out, err, end = c.run(argv)
    check(out == b"a b|'q'|\"dq\"|$HOME|l1\nl2|\xff\xfe\x80||", "argv not byte-exact: %r" % out)
    check(end["exit_code"] == 0 and end["signal"] is None, "printf: %r" % end)
    out, err, end = c.run([b"sh", b"-c", b"echo out; echo err >&2; exit 3"])
    check((out, err, end["exit_code"]) == (b"out\n", b"err\n", 3), "sh -c: %r %r %r" % (out, err, end))
    out, err, end = c.run([b"sh", b"-c", b"kill -TERM $$"])
    check(end["signal"] == 15 and end["exit_code"] == 143, "killed by TERM: %r" % end)
    out, err, end = c.run([b"no-such-program-here"])
    check(end["exit_code"] == 127 and b"no-such-program-here" in err, "missing program: %r %r" % (err, end))
    out, err, end = c.run([b"sleep", b"30"], timeout_ms=200)
    check(end["timed_out"] is True and end["signal"] == 9, "timeout did not say so: %r" % end)
    out, err, end = c.run([b"sh", b"-c", b"echo $FOO; pwd"], env=[b"FOO=bar baz"], cwd=b"/tmp")
    check(out == b"bar baz\n/tmp\n", "env/cwd: %r" % out)
    data = bytes(range(256)) * 4096 * 3  # 3 MiB through stdin
    out, err, end = c.run([b"sha256sum"], stdin=data)
    check(out.split()[0].decode() == hashlib.sha256(data).hexdigest(), "stdin sha256: %r" % out)


def test_bulk(c, agent_pid):
    h = hashlib.sha256()
    peak = [0]
    seen = [0]

    def on_data(ftype, data):
        h.update(data)
        seen[0] += len(data)
        if seen[0] % (4 << 20) < len(data):
            peak[0] = max(peak[0], rss_kib(agent_pid))
    want = hashlib.sha256()
    block = (b"\0" * 1000 + b"vmsnap\n") * 100
    n = 20_000_000 // len(block) + 1
    for _ in range(n):
        want.update(block)
    script = b"i=0; while [ $i -lt %d ]; do cat /tmp/agent-proto-block; i=$((i+1)); done" % n
    open("/tmp/agent-proto-block", "wb").write(block)
    out, err, end = c.run([b"sh", b"-c", script], on_data=on_data)
    os.unlink("/tmp/agent-proto-block")
    check(end.get("exit_code") == 0, "bulk: %r %r" % (end, err))
    check(h.hexdigest() == want.hexdigest(), "bulk output sha256 differs (%d bytes)" % seen[0])
    # The agent holds at most its outbound buffer and a stream's window: a few MiB.
    # (ASan's shadow memory and quarantine make a sanitized agent bigger: 96 MiB then.)
    limit = 96 * 1024 if os.environ.get("ASAN_OPTIONS") else 24 * 1024
    check(peak[0] and peak[0] < limit, "agent RSS %d KiB while streaming" % peak[0])
    print("bulk: %d bytes, agent peak RSS %d KiB" % (seen[0], peak[0]), flush=True)


def pty_read_until(c, sid, pat, limit=10):
    acc = b""
    deadline = time.time() + limit
    while pat not in acc and time.time() < deadline:
        ftype, _, stream, data = c.recv()
        if stream == sid and ftype == STDOUT:
            acc += data
            c.send(CREDIT, sid, struct.pack("<I", len(data) + COST))
        elif stream == sid and ftype in (EXIT, ERROR):
            return acc + b"<END " + data + b">"
    return acc


def test_pty(c):
    sid, _ = c.start(start_payload(EXEC, [b"sh", b"-i"], [b"PS1=$ "], b"", TTY | WITH_STDIN,
                                   rows=30, cols=100))
    check(pty_read_until(c, sid, b"$ ").endswith(b"$ "), "no prompt on the PTY")
    c.send(STDIN, sid, b"stty size\n")
    check(b"30 100" in pty_read_until(c, sid, b"$ "), "stty size is not 30 100")
    c.send(RESIZE, sid, struct.pack("<HH", 40, 120))
    c.send(STDIN, sid, b"stty size\n")
    check(b"40 120" in pty_read_until(c, sid, b"$ "), "stty size after RESIZE is not 40 120")
    c.send(STDIN, sid, b"sleep 100; echo after\n")
    time.sleep(0.3)
    c.send(STDIN, sid, b"\x03")
    got = pty_read_until(c, sid, b"$ ")
    check(b"^C" in got, "^C was not echoed: %r" % got)
    c.send(STDIN, sid, b"echo alive\n")
    check(b"alive" in pty_read_until(c, sid, b"$ "), "the shell died with the ^C")
    c.send(STDIN, sid, b"\x04")
    check(b"<END" in pty_read_until(c, sid, b"<END"), "^D did not end the shell")


def test_files(c, work):
    data = os.urandom(1_500_000) + b"\0" * 100_000
    path = os.path.join(work, "f.bin").encode()
    sid, _ = c.start(start_payload(WRITE, last=path, arg=0o640))
    out, err, end = c.pump(sid, stdin=data)
    check(end.get("size") == len(data), "write: %r" % end)
    check(open(path, "rb").read() == data, "written file differs")
    check(os.stat(path).st_mode & 0o7777 == 0o640, "mode not kept")
    check(not [f for f in os.listdir(work) if ".vmsnap-" in f], "a temporary file stayed")
    sid, entry = c.start(start_payload(READ, last=path))
    check(entry["size"] == len(data) and entry["type"] == "file", "read STARTED: %r" % entry)
    out, err, end = c.pump(sid, send_eof=False)
    check(out == data and end.get("size") == len(data), "read back differs")
    # an abandoned write leaves the old file
    sid, _ = c.start(start_payload(WRITE, last=path, arg=0o600))
    c.send(STDIN, sid, b"partial")
    c.send(CLOSE, sid)
    check(c.call({"op": "health"})["ok"], "health after CLOSE")
    check(open(path, "rb").read() == data, "an abandoned write replaced the file")
    for bad, errno_ in ((b"/no/such/dir/x", 2), (work.encode(), 21)):
        try:
            c.start(start_payload(READ, last=bad))
            check(False, "read of %r did not fail" % bad)
        except OSError as e:
            check(e.errno == errno_, "read of %r: errno %s" % (bad, e.errno))
    st = c.call({"op": "stat", "path": path.decode()})
    check(st["ok"] and st["size"] == len(data), "stat: %r" % st)
    os.symlink("f.bin", os.path.join(work, "link"))
    ls = c.call({"op": "list", "path": work})
    names = {e["name"]: e for e in ls["entries"]}
    check(names.get("link", {}).get("target") == "f.bin", "list: %r" % ls)
    os.makedirs(os.path.join(work, "d", "e"))
    r = c.call({"op": "remove", "path": os.path.join(work, "d")})
    check(not r["ok"] and "recursive" in r["error"], "non-recursive remove of a tree: %r" % r)
    r = c.call({"op": "remove", "path": os.path.join(work, "d"), "recursive": True})
    check(r["ok"] and not os.path.exists(os.path.join(work, "d")), "recursive remove: %r" % r)


def test_processes(c, path):
    sid, st = c.start(start_payload(EXEC, [b"sh", b"-c", b"echo bg; sleep 100"], flags=DETACH))
    for _ in range(200):  # its output goes to its log as it runs
        if b"bg" in open(st["log"], "rb").read():
            break
        time.sleep(0.05)
    check(b"bg" in open(st["log"], "rb").read(), "the detached process's log lacks its output")
    ps = c.call({"op": "ps"})["processes"]
    check(any(p["pid"] == st["pid"] and p["detached"] for p in ps), "ps: %r" % ps)
    r = c.call({"op": "kill", "pid": st["pid"], "signal": 9})
    check(r["ok"], "kill: %r" % r)
    for _ in range(100):
        ps = {p["pid"]: p for p in c.call({"op": "ps"})["processes"]}
        if st["pid"] not in ps or not ps[st["pid"]]["running"]:
            break
        time.sleep(0.05)
    check(st["pid"] in ps and ps[st["pid"]]["signal"] == 9, "killed process: %r" % ps)
    r = c.call({"op": "kill", "pid": 1})
    check(not r["ok"], "kill of a process the agent did not start was allowed")
    # A disconnect hangs up attached commands, leaves detached ones.
    _, att = c.start(start_payload(EXEC, [b"sleep", b"100"]))
    _, det = c.start(start_payload(EXEC, [b"sleep", b"100"], flags=DETACH))
    c.sock.close()
    c2 = connect(path)
    for _ in range(100):
        procs = {p["pid"]: p for p in c2.call({"op": "ps"})["processes"]}
        if att["pid"] not in procs or not procs[att["pid"]]["running"]:
            break
        time.sleep(0.05)
    check(att["pid"] not in procs or not procs[att["pid"]]["running"],
          "an attached command survived the disconnect")
    check(procs.get(det["pid"], {}).get("running"), "a detached command died with the disconnect")
    c2.call({"op": "kill", "pid": det["pid"], "signal": 9})
    return c2


def test_protocol_errors(path):
    c = connect(path)
    c.sock.sendall(b'{"op":"exec","cmd":"echo legacy","id":7}\n')
    while b"\n" not in c.buf:
        c._fill(len(c.buf) + 1)
    line, c.buf = c.buf.split(b"\n", 1)
    check(b'"stdout":"legacy\\n"' in line and b'"id":7' in line, "old line exec: %r" % line)
    sid, _ = c.start(start_payload(EXEC, [b"sleep", b"100"], flags=WITH_STDIN))
    c.send(0x77, 9, b"")
    ftype, _, stream, data = c.recv()
    check(ftype == ERROR and stream == 0, "an unknown frame type was not a protocol error")
    check(c.call({"op": "health"})["ok"], "the agent stopped answering after a protocol error")
    # STDIN beyond the window: `sleep` never reads, so once its pipe is full (64 KiB, credited
    # back) the agent holds what comes next, up to the 256 KiB window, and no more.
    sid, _ = c.start(start_payload(EXEC, [b"sleep", b"100"], flags=WITH_STDIN))
    c.send(STDIN, sid, b"x" * (FRAME_MAX - COST))
    credited = 0
    while credited < FRAME_MAX:
        ftype, _, stream, data = c.recv()
        if ftype == CREDIT and stream == sid:
            credited += struct.unpack("<I", data)[0]
    for _ in range(WINDOW // FRAME_MAX + 1):
        c.send(STDIN, sid, b"y" * (FRAME_MAX - COST))
    ftype, _, stream, data = c.recv()
    check(ftype == ERROR and stream == 0, "STDIN beyond the window was accepted: 0x%02x" % ftype)
    c.sock.close()


def main():
    work = tempfile.mkdtemp(prefix="agent-proto-")
    agent = os.environ.get("VMSNAP_AGENT_HOST", "")  # built by tests/CMakeLists.txt
    if not os.access(agent, os.X_OK):
        if not shutil.which("gcc"):
            print("SKIP: no VMSNAP_AGENT_HOST and no gcc to build the agent for the host")
            return 77
        agent = os.path.join(work, "vmsnap-agent")
        srcs = sorted(os.path.join(SRC, "guest", "agent", f)
                      for f in os.listdir(os.path.join(SRC, "guest", "agent")) if f.endswith(".c"))
        subprocess.check_call(["gcc", "-std=c11", "-O1", "-Wall", "-Wextra", "-o", agent] + srcs)
    path = os.path.join(work, "agent.sock")
    log = open(os.path.join(work, "agent.log"), "w")
    proc = subprocess.Popen([agent, "--listen-unix", path], stderr=log, start_new_session=True)
    try:
        for _ in range(500):  # bind() makes the file before listen()
            try:
                socket.socket(socket.AF_UNIX).connect(path)
                break
            except OSError:
                time.sleep(0.02)
        files = os.path.join(work, "files")
        os.mkdir(files)
        c = connect(path)
        test_exec(c)
        test_bulk(c, proc.pid)
        test_pty(c)
        test_files(c, files)
        c = test_processes(c, path)
        c.sock.close()
        test_protocol_errors(path)
    except Exception as e:  # noqa: BLE001 (reported as a failure, the work dir kept)
        check(False, "%s: %s" % (type(e).__name__, e))
    finally:
        proc.kill()
        proc.wait()
        if not failures:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("agent-protocol: %d check(s) failed (work dir %s)" % (len(failures), work))
        return 1
    print("agent-protocol: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
