#!/usr/bin/env python3
"""Tiny clients for QEMU's QMP monitor and the vmsnap guest agent (stdlib only).

Both speak newline-delimited JSON over a Unix socket. Used by the e2e tests, either
imported (QMP, Agent) or as a command-line tool:

  qmp_agent.py qmp SOCK COMMAND [ARGS_JSON]       run one QMP command, print its return
  qmp_agent.py save SOCK STATE_FILE               stop + x-ignore-shared + migrate to a file
  qmp_agent.py load SOCK STATE_FILE               x-ignore-shared + migrate-incoming + cont
  qmp_agent.py agent SOCK OP [K=STR | K:=JSON]... one agent request, print the response
                 [--get K]                        (or just field K); exit 1 if not ok
  qmp_agent.py wait-agent SOCK                    wait until the agent answers health

Every command takes --timeout SECONDS (default 60). Exit status: 0 ok, 1 failure.
"""

import argparse
import base64
import itertools
import json
import os
import socket
import sys
import time


class Error(Exception):
    """A QMP or agent failure, with a message meant for a human."""


def _connect(path, deadline):
    """Connects to a Unix socket, retrying until it exists and accepts or the deadline."""
    last = None
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError as e:
            s.close()
            last = e
        if time.monotonic() >= deadline:
            raise Error(f"{path}: cannot connect: {last}")
        time.sleep(0.05)


class _LineSocket:
    """Newline-delimited JSON over a stream socket, with a deadline per read."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Error("timed out waiting for a response")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                raise Error("connection closed by peer")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        self.sock.close()


class QMP:
    """A QMP session: connects, negotiates capabilities, runs commands."""

    def __init__(self, path, timeout=30.0):
        self.timeout = timeout
        self.events = []
        self.conn = _LineSocket(_connect(path, time.monotonic() + timeout))
        greeting = self.conn.recv(time.monotonic() + timeout)
        if "QMP" not in greeting:
            raise Error(f"{path}: not a QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def execute(self, command, arguments=None, timeout=None):
        """Runs a command and returns its "return" value; raises Error on "error"."""
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.conn.send(msg)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self.conn.recv(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise Error(f"QMP {command}: {err.get('class')}: {err.get('desc')}")
            return reply.get("return")

    def set_ignore_shared(self):
        """Skips RAM that lives in a shared file; must be set on both sides (stream format)."""
        self.execute("migrate-set-capabilities",
                     {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})

    def wait_migration(self, timeout=None):
        """Polls query-migrate until the outgoing migration completes; returns its info."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            info = self.execute("query-migrate")
            status = info.get("status")
            if status == "completed":
                return info
            if status in ("failed", "cancelled"):
                raise Error(f"migration {status}: {info.get('error-desc', '')}")
            if time.monotonic() >= deadline:
                raise Error(f"migration still {status} at the deadline")
            time.sleep(0.01)

    def wait_not_status(self, status, timeout=None):
        """Polls query-status until the run state leaves `status`; returns the new one."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            now = self.execute("query-status")["status"]
            if now != status:
                return now
            if time.monotonic() >= deadline:
                raise Error(f"VM still {status} at the deadline")
            time.sleep(0.01)

    def save(self, state_path):
        """Pauses the VM and writes its device state (not the shared RAM) to state_path."""
        self.execute("stop")
        self.set_ignore_shared()
        self.execute("migrate", {"uri": "exec:cat > " + _shell_quote(state_path)})
        return self.wait_migration()

    def load(self, state_path):
        """Loads device state into a VM started with -incoming defer, then resumes it."""
        self.set_ignore_shared()
        self.execute("migrate-incoming", {"uri": "exec:cat " + _shell_quote(state_path)})
        status = self.wait_not_status("inmigrate")
        if status != "paused":
            raise Error(f"after migrate-incoming the VM is {status}, expected paused")
        self.execute("cont")

    def close(self):
        self.conn.close()


def _shell_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


class Agent:
    """A connection to the guest agent through QEMU's chardev socket.

    Requests carry an "id"; responses to earlier, abandoned requests are skipped.
    After a restore, make a new Agent on the new QEMU's socket: the guest sees the
    host side close and reopen and carries on.
    """

    _ids = itertools.count(1)

    def __init__(self, path, timeout=30.0):
        self.timeout = timeout
        self.conn = _LineSocket(_connect(path, time.monotonic() + timeout))

    def call(self, op, timeout=None, **fields):
        """Sends one request and returns the response dict (ok or not)."""
        rid = next(self._ids)
        self.conn.send({"op": op, "id": rid, **fields})
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self.conn.recv(deadline)
            # An error without an id answers a request the agent could not read
            # (malformed or over-long), which can only be the one in flight.
            if reply.get("id") == rid or ("id" not in reply and not reply.get("ok")):
                return reply

    def check(self, op, timeout=None, **fields):
        """Like call() but raises Error unless the response says ok."""
        reply = self.call(op, timeout, **fields)
        if not reply.get("ok"):
            raise Error(f"agent {op}: {reply.get('error')}")
        return reply

    def exec(self, cmd, timeout_ms=30000):
        return self.check("exec", timeout=timeout_ms / 1000 + 10, cmd=cmd, timeout_ms=timeout_ms)

    def write_file(self, path, data):
        return self.check("write_file", path=path, data_b64=base64.b64encode(data).decode())

    def read_file(self, path):
        return base64.b64decode(self.check("read_file", path=path)["data_b64"])

    def restore_hook(self, time_ns, seed):
        return self.check("restore_hook", time_ns=time_ns, seed_b64=base64.b64encode(seed).decode())

    def random_hex(self):
        return self.check("random")["hex"]

    def close(self):
        self.conn.close()


def _parse_fields(items):
    """KEY=STRING and KEY:=JSON arguments (httpie style) to a dict."""
    fields = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise Error(f"bad field {item!r}: expected KEY=STRING or KEY:=JSON")
        if key.endswith(":"):
            fields[key[:-1]] = json.loads(val)
        else:
            fields[key] = val
    return fields


def _main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=60.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("qmp")
    q.add_argument("sock")
    q.add_argument("command")
    q.add_argument("args", nargs="?")
    for name in ("save", "load"):
        s = sub.add_parser(name)
        s.add_argument("sock")
        s.add_argument("state")
    a = sub.add_parser("agent")
    a.add_argument("sock")
    a.add_argument("op")
    a.add_argument("fields", nargs="*", help="KEY=STRING or KEY:=JSON")
    a.add_argument("--get")
    w = sub.add_parser("wait-agent")
    w.add_argument("sock")
    o = p.parse_args(argv)

    if o.cmd in ("qmp", "save", "load"):
        qmp = QMP(o.sock, o.timeout)
        if o.cmd == "qmp":
            out = qmp.execute(o.command, json.loads(o.args) if o.args else None)
        elif o.cmd == "save":
            out = qmp.save(os.path.abspath(o.state))
        else:
            out = qmp.load(os.path.abspath(o.state))
        qmp.close()
        if out is not None:
            print(json.dumps(out))
        return 0

    agent = Agent(o.sock, o.timeout)
    if o.cmd == "wait-agent":
        out = agent.check("health", timeout=o.timeout)
    else:
        out = agent.call(o.op, timeout=o.timeout, **_parse_fields(o.fields))
    agent.close()
    if o.cmd == "agent" and o.get:
        val = out.get(o.get)
        print(val if isinstance(val, str) else json.dumps(val))
    else:
        print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except Error as e:
        print(f"qmp_agent: {e}", file=sys.stderr)
        sys.exit(1)
