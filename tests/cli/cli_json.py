#!/usr/bin/env python3
"""cli/cli-json: every command of the vmsnap CLI that prints a result takes --json, and what it
prints then is one JSON document on stdout.

The command list is read from the CLI's own help (`vmsnap --help`, then `vmsnap C --help` for
each command with verbs), so a verb added later without a case here fails this test. Each
case runs a real invocation with --json and parses stdout with the standard library:
- mem and snapshot verbs on a temporary memory file and store root;
- sandbox verbs against a real vmsnapd whose VMM is tests/peer/ch-peer (Cloud Hypervisor's
  API with real guest memory; no guest boots), on the guest image's kernel and disk.
Paths with a quote, a backslash and a byte that is not UTF-8 check that strings are
escaped (the byte as U+FFFD). Verbs left out are in
EXEMPT with the reason (and where their --json is checked instead).

Exit 0 pass, 1 fail, 77 skip (no CLI, daemon, peer or guest image).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
from vmsnapd import kill_peers, need_peer_setup, start_peer_daemon  # noqa: E402

TEST = "cli-json"
SRC = os.environ.get("VMSNAP_SRC", os.path.dirname(os.path.dirname(HERE)))
CLI = os.environ.get("VMSNAP_CLI", "")
PEER = os.environ.get("VMSNAP_PEER_ch_peer", "")
GUEST = os.environ.get("VMSNAP_GUEST_DIR", os.path.join(SRC, "build", "guest"))

EXEMPT = {
    "uffd-serve": "a page server for a VMM: it serves, it prints no result",
    "mem-serve": "a FUSE server (needs /dev/fuse and S3 for its lazy mode): cli/remote-ceph "
                 "parses the status `mem-serve --json` prints at exit",
    "sandbox shell": "an interactive terminal session: no result to print",
    "sandbox exec": "needs agent protocol 2: e2e/sandbox-exec parses `exec --json`",
    "sandbox ps": "needs the guest agent's protocol 2 (the ch-peer speaks 1): "
                  "e2e/sandbox-exec parses `ps --json`",
    "sandbox kill": "needs agent protocol 2: e2e/sandbox-exec parses `kill --json`",
    "sandbox port": "needs a --network daemon (root, namespaces, a jailed QEMU): "
                    "e2e/sandbox-network parses `port --json`",
    "sandbox cp": "needs agent protocol 2: e2e/sandbox-exec parses `cp --json` (a path with a quote)",
    "snapshot push": "needs S3 object storage: cli/remote-ceph parses `push --json` against Ceph",
    "snapshot pull": "needs S3 object storage: cli/remote-ceph parses `pull --json` against Ceph",
}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def commands():
    """'mem process', 'sandbox create', ..., 'uffd-serve': every command and verb the help
    lists."""
    top = subprocess.run([CLI, "--help"], capture_output=True, text=True).stdout
    names = section_words(top, "commands:")
    out = []
    for name in names:
        sub = subprocess.run([CLI, name, "--help"], capture_output=True, text=True).stdout
        verbs = section_words(sub, "verbs:")
        out += ["%s %s" % (name, v) for v in verbs] if verbs else [name]
    return out


def section_words(text, header):
    """The names in a help section: lines indented by two spaces starting with a word, until
    the next unindented line; `(or NAME ...)` adds NAME."""
    words, inside = [], False
    for line in text.splitlines():
        if line.strip() == header:
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            break
        m = re.match(r"^  ([a-z][a-z-]*)\b", line) if inside else None
        if m:
            words.append(m.group(1))
            words += re.findall(r"\(or ([a-z][a-z-]*)\b", line)
    return words


def run_json(cmd, args, *, rc=0):
    """Runs `vmsnap CMD ARGS --json`; returns the parsed stdout (None on failure)."""
    argv = [CLI] + cmd.split() + list(args) + ["--json"]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True)
    print("%s: %s: exit %d in %.1fs" % (TEST, cmd, p.returncode, time.monotonic() - t0),
          flush=True)
    if p.returncode != rc:
        fail("%s exited %d, want %d; stderr: %s" % (" ".join(argv[1:]), p.returncode, rc,
                                                    p.stderr[-300:].decode(errors="replace")))
        return None
    try:
        return json.loads(p.stdout)
    except ValueError as e:
        fail("%s: stdout is not JSON (%s): %r" % (" ".join(argv[1:]), e, p.stdout[:300]))
        return None


def mem_and_snapshot_cases(work):
    """(command, args) in order; the files they need are made here."""
    m0, m1 = os.path.join(work, "m0"), os.path.join(work, 'm1 "q\\')
    with open(m0, "wb") as f:
        f.write(os.urandom(256 << 10) + bytes(256 << 10))
    shutil.copy(m0, m1)
    with open(m1, "r+b") as f:
        f.seek(5000)
        f.write(b"changed")
    s0, s1 = os.path.join(work, "s0"), os.path.join(work, 's1 "q\\')
    root = ["--root", os.path.join(work, "store")]
    tar, exp = os.path.join(work, 'a "q\\.tar'), os.path.join(work, "exp")
    return [
        ("mem process", [m0, s0]),
        ("mem diff", [m1, s1, "--parent", s0]),
        ("mem inspect", [s1]),
        ("mem verify", [s1]),
        ("mem merge", [s1]),
        ("mem materialize", [s1, os.path.join(work, "out")]),
        ("snapshot add", root + [m0, "--name", "a"]),
        ("snapshot ls", root),
        ("snapshot inspect", root + ["a"]),
        ("snapshot verify", root + ["a"]),
        ("snapshot export", root + ["a", "-o", tar]),
        ("snapshot export", root + ["a", "--to-dir", exp]),
        # a path that is not UTF-8 (byte 0xff): U+FFFD in the JSON, not a missing document
        ("snapshot export", root + ["a", "-o", os.path.join(work, "\udcff.tar")]),
        ("snapshot import", root + [tar, "--name", "b"]),
        ("snapshot import", root + [exp, "--name", "c"]),
        ("snapshot rm", root + ["b", "c"]),
        ("snapshot gc", root + ["--dry-run"]),
        ("snapshot reindex", root),
    ]


def sandbox_cases(d):
    s = ["--socket", d.sock]
    return [
        ("sandbox create", s + ["--name", "j1", "--vcpus", "1", "--memory", "64"]),
        ("sandbox ls", s),
        ("sandbox get", s + ["j1"]),
        ("sandbox inspect", s + ["j1"]),
        ("sandbox pause", s + ["j1"]),
        ("sandbox resume", s + ["j1"]),
        ("sandbox snapshot", s + ["j1", "--name", "tpl"]),
        ("sandbox spawn", s + ["tpl", "--name", "j2"]),
        ("sandbox rm", s + ["j1", "j2"]),
    ]


def main():
    need_peer_setup(TEST, CLI, PEER, SRC, GUEST)
    listed = commands()
    if len(listed) < 20:
        fail("the help lists only %d commands: %r" % (len(listed), listed))
    work = tempfile.mkdtemp(prefix="vs-cj-")  # short: socket paths are <= 107 bytes
    d = None
    checked = set()
    try:
        for cmd, args in mem_and_snapshot_cases(work):
            if run_json(cmd, args) is not None:
                checked.add(cmd)
        d = start_peer_daemon(work, PEER, GUEST)
        for cmd, args in sandbox_cases(d):
            if run_json(cmd, args) is not None:
                checked.add(cmd)
        # An error with --json is the API's error object, on stdout.
        err = run_json("sandbox get", ["--socket", d.sock, "no-such"], rc=1)
        if err is not None and not (isinstance(err, dict) and "error" in err):
            fail("sandbox get no-such --json: no error object: %r" % err)
    finally:
        if d:
            d.kill()
            kill_peers(PEER, work)
        shutil.rmtree(work, ignore_errors=True)
    for cmd in listed:
        if cmd in EXEMPT:
            print("%s: %s: not run here: %s" % (TEST, cmd, EXEMPT[cmd]))
        elif cmd not in checked:
            fail("%s: no --json output was checked (a new verb needs a case here)" % cmd)
    for cmd in sorted(set(EXEMPT) - set(listed)):
        fail("EXEMPT names %s, which the help does not list" % cmd)
    if failures:
        print("%s: %d check(s) failed" % (TEST, len(failures)))
        return 1
    print("%s: --json of %d commands parsed (%d exempt)" % (TEST, len(checked), len(EXEMPT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
