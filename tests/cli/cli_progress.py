#!/usr/bin/env python3
"""cli/cli-progress: a CLI step that runs longer than a second shows its progress and then
the time it took on stderr when stderr is a terminal (a pty here), and nothing of it when
stderr is a file. Steps made long by construction, not by luck (no timing assertion):
- `snapshot export` into a pipe this test does not read for 1.5 s (the export blocks);
- `sandbox create` whose VMM (tests/peer/ch-peer behind a wrapper) waits 1.5 s to start.
push and pull use the same progress code (src/cli/progress.c) but need S3 object storage.

Exit 0 pass, 1 fail, 77 skip (no CLI, daemon, peer or guest image).
"""
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
from vmsnapd import (VMSNAPD, kill_peers, need_guest_image, skip,  # noqa: E402
                     start_peer_daemon)

TEST = "cli-progress"
SRC = os.environ.get("VMSNAP_SRC", os.path.dirname(os.path.dirname(HERE)))
CLI = os.environ.get("VMSNAP_CLI", "")
PEER = os.environ.get("VMSNAP_PEER_ch_peer", "")
GUEST = os.environ.get("VMSNAP_GUEST_DIR", os.path.join(SRC, "build", "guest"))
HOLD_S = 1.5

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def run_on_pty(argv, hold_stdout=False):
    """Runs argv with stderr on a new pty; with hold_stdout its stdout is a pipe read only
    after HOLD_S. Returns (exit code, what the pty got, stdout bytes)."""
    master, slave = pty.openpty()
    rd, wr = os.pipe() if hold_stdout else (None, subprocess.DEVNULL)
    p = subprocess.Popen(argv, stdout=wr, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    if hold_stdout:
        os.close(wr)
    got, out = b"", b""
    start = time.monotonic()
    fds = [master] + ([rd] if hold_stdout else [])
    while fds:
        ready, _, _ = select.select(fds, [], [], 0.1)
        for fd in ready:
            if fd == rd and time.monotonic() - start < HOLD_S:
                continue
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
        if rd in fds and time.monotonic() - start < HOLD_S:
            time.sleep(0.05)
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
    d = start_peer_daemon(work, PEER, GUEST, vmm_delay=HOLD_S)
    try:
        s = ["--socket", d.sock]
        rc, err, _ = run_on_pty([CLI, "sandbox", "create"] + s + ["--name", "p1", "--memory",
                                                                  "64"])
        check_progress("sandbox create (the VMM starts in 1.5 s)", rc, err, "booting p1")
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
    for what, ok in (("the vmsnap CLI is not built ($VMSNAP_CLI)", CLI and os.access(CLI, os.X_OK)),
                     ("vmsnapd is not built", os.access(VMSNAPD, os.X_OK)),
                     ("the ch-peer is not built ($VMSNAP_PEER_ch_peer)",
                      PEER and os.access(PEER, os.X_OK))):
        if not ok:
            skip(TEST, what)
    need_guest_image(TEST, SRC, GUEST)
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
