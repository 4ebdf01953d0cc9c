#!/usr/bin/env python3
"""cli/cli-progress: a CLI step that runs longer than a second shows its progress and then
the time it took on stderr when stderr is a terminal (a pty here), and nothing of it when
stderr is a file. Steps made long by construction, not by luck (no timing assertion):
- `snapshot export` into a pipe this test leaves full for 1.5 s (the export blocks);
- `sandbox create` whose VMM (tests/peer/ch-peer behind a wrapper) waits 2.5 s to start
  (libcurl calls the progress hook at least once a second while it waits).
push and pull use the same progress code (src/cli/progress.c) but need S3 object storage.

Exit 0 pass, 1 fail, 77 skip (no CLI, daemon, peer or guest image).
"""
import fcntl
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
from vmsnapd import kill_peers, need_peer_setup, start_peer_daemon  # noqa: E402

TEST = "cli-progress"
SRC = os.environ.get("VMSNAP_SRC", os.path.dirname(os.path.dirname(HERE)))
CLI = os.environ.get("VMSNAP_CLI", "")
PEER = os.environ.get("VMSNAP_PEER_ch_peer", "")
GUEST = os.environ.get("VMSNAP_GUEST_DIR", os.path.join(SRC, "build", "guest"))
HOLD_S = 1.5
VMM_DELAY_S = 2.5

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def pipe_full(fd):
    """True when the pipe holds 64 KiB unread: its writer is blocked."""
    n = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(n, sys.byteorder) >= 65536


def run_on_pty(argv, hold_stdout=False):
    """Runs argv with stderr on a new pty. With hold_stdout its stdout is a pipe that is
    read only once it has been full (the writer blocked) for HOLD_S: the step then runs
    longer than a second whatever the load. Returns (exit code, what the pty got, stdout)."""
    master, slave = pty.openpty()
    rd, wr = os.pipe() if hold_stdout else (None, subprocess.DEVNULL)
    p = subprocess.Popen(argv, stdout=wr, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    if hold_stdout:
        os.close(wr)
    got, out = b"", b""
    full_at = None
    fds = [master] + ([rd] if hold_stdout else [])
    while fds:
        held = rd in fds and (full_at is None or time.monotonic() - full_at < HOLD_S)
        if held and full_at is None and pipe_full(rd):
            full_at = time.monotonic()
        ready, _, _ = select.select([f for f in fds if not (held and f == rd)], [], [], 0.05)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                chunk = b""
            if not chunk:
                fds.remove(fd)
                os.close(fd)
            elif fd == master:
                got += chunk
            else:
                out += chunk
        if held and p.poll() is not None and full_at is None:
            full_at = 0.0  # it ended without filling the pipe: read what it wrote
    return p.wait(), got.decode(errors="replace"), out


def check_progress(what, rc, err, label):
    if rc != 0:
        fail("%s exited %d: %r" % (what, rc, err[-300:]))
    elif "%s: done in " % label not in err:
        fail("%s: stderr (a terminal) lacks '%s: done in': %r" % (what, label, err[-300:]))
    else:
        last = err.replace("\r", "\n").strip().splitlines()[-1]
        print("%s: %s: %r" % (TEST, what, last), flush=True)


def export_case(work):
    root = ["--root", os.path.join(work, "store")]
    mem = os.path.join(work, "mem")
    with open(mem, "wb") as f:
        f.write(os.urandom(4 << 20))
    subprocess.run([CLI, "snapshot", "add"] + root + [mem, "--name", "big"], check=True,
                   stdout=subprocess.DEVNULL)
    argv = [CLI, "snapshot", "export"] + root + ["big", "--compression", "none"]
    rc, err, out = run_on_pty(argv, hold_stdout=True)
    check_progress("snapshot export into a slow pipe", rc, err, "export big")
    if len(out) < 4 << 20:
        fail("the export wrote only %d bytes" % len(out))
    # stderr not a terminal: nothing but errors
    p = subprocess.run(argv, capture_output=True)
    if p.returncode != 0 or p.stderr:
        fail("export with stderr in a pipe: exit %d, stderr %r" % (p.returncode, p.stderr[:200]))


def create_case(work):
    d = start_peer_daemon(work, PEER, GUEST, vmm_delay=VMM_DELAY_S)
    try:
        s = ["--socket", d.sock]
        rc, err, _ = run_on_pty([CLI, "sandbox", "create"] + s + ["--name", "p1", "--memory",
                                                                  "64"])
        check_progress("sandbox create (the VMM starts 2.5 s late)", rc, err, "booting p1")
        if "booting p1… " not in err:
            fail("no progress line while it ran: %r" % err[-300:])
        p = subprocess.run([CLI, "sandbox", "create"] + s + ["--name", "p2", "--memory", "64"],
                           capture_output=True)
        if p.returncode != 0 or p.stderr:
            fail("create with stderr in a pipe: exit %d, stderr %r" % (p.returncode,
                                                                       p.stderr[:200]))
    finally:
        d.kill()
        kill_peers(PEER, work)


def main():
    need_peer_setup(TEST, CLI, PEER, SRC, GUEST)
    work = tempfile.mkdtemp(prefix="vs-cp-")  # short: socket paths are <= 107 bytes
    try:
        export_case(work)
        create_case(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("%s: %d check(s) failed" % (TEST, len(failures)))
        return 1
    print("%s: progress and elapsed time on a terminal, nothing on a pipe" % TEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
