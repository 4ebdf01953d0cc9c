#!/usr/bin/env python3
"""Refs and names that could confuse vmsnapd (issue 8, finding 2): a percent-encoded NUL in
a path used to cut the ref short, so `DELETE /v1/snapshots/dup%00x` deleted `dup`.

With a real snapshot `dup` (an export made by the CLI, imported through the API):
  - every route that takes a {ref} (sandboxes, snapshots, templates) answers 400 invalid_path,
    naming what it found, for %00, %0A, %7F, %1F, a raw control byte, an encoded '/' and a
    raw NUL byte in the request line; over TCP without the token it is a 401 first;
  - query values with %00 or %0A are 400 invalid_query (`?force=1%00` does not force);
  - refs and names in bodies (template, sandbox, name) with NUL or control characters are
    400 (malformed_json for \\u0000, which JSON parsing refuses; invalid_field otherwise);
  - after all of it `dup` is still there, and plain `DELETE /v1/snapshots/dup` deletes it.
Exit 0 pass, 1 fail, 77 skip.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmsnapd import VMSNAPD, Vmsnapd, skip  # noqa: E402

TEST = "api-refs"
CLI = os.environ.get("VMSNAP_CLI", "")
JSON = {"Content-Type": "application/json"}
failures = []


def fail(what):
    print("FAIL:", what, flush=True)
    failures.append(what)


def expect(got, status, code, mention, what):
    st, _, body = got
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        err = {}
    if st != status or err.get("code") != code or mention not in err.get("message", ""):
        fail("%s: got %s %s, want %d %s mentioning %r" % (what, st, body[:200], status, code,
                                                            mention))


def raw_unix(d, request):
    """Sends a request as it is (it asks for Connection: close) on the Unix socket and
    reads the answer to the end; returns (status, body bytes)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(d.sock)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def make_snapshot(d, work, name):
    mem = os.path.join(work, "mem.raw")
    with open(mem, "wb") as f:
        f.write(os.urandom(1 << 20))
    other = os.path.join(work, "other")
    exp = os.path.join(work, "exp.tar.zst")
    for args in (["snapshot", "add", mem, "--name", "src", "--root", other],
                 ["snapshot", "export", "src", "-o", exp, "--root", other]):
        subprocess.run([CLI] + args, check=True, stdout=subprocess.DEVNULL)
    st, _, body = d.unix("POST", "/v1/snapshots", json.dumps({"path": exp, "name": name}), JSON)
    if st != 201:
        raise RuntimeError("import as %r: %s %s" % (name, st, body))


def check_paths(d):
    bad = {"%00": "%00 (NUL)", "%0A": "%0A", "%0a": "%0a", "%7F": "%7F", "%1F": "%1F",
           "%2F": "encoded '/'", "\x01": "0x01", "\x7f": "0x7f"}
    routes = [("GET", "/v1/sandboxes/%s"), ("DELETE", "/v1/sandboxes/%s"),
              ("POST", "/v1/sandboxes/%s/pause"), ("POST", "/v1/sandboxes/%s/resume"),
              ("POST", "/v1/sandboxes/%s/exec"), ("POST", "/v1/sandboxes/%s/snapshot"),
              ("GET", "/v1/snapshots/%s"), ("DELETE", "/v1/snapshots/%s"),
              ("POST", "/v1/snapshots/%s/sandboxes")]
    for method, pattern in routes:
        for seq, mention in bad.items():
            path = pattern % ("dup" + seq + "x")
            body = '{"cmd":"true"}' if path.endswith("/exec") else (
                '{"name":"t1"}' if path.endswith("/snapshot") else None)
            req = ("%s %s HTTP/1.1\r\nHost: vmsnapd\r\nConnection: close\r\n"
                   % (method, path)).encode()
            if body:
                req += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            req += b"\r\n" + (body or "").encode()
            st, out = raw_unix(d, req)
            expect((st, None, out), 400, "invalid_path", mention, "%s %r" % (method, path))
        # A raw NUL byte in the request line ends libmicrohttpd's string of the target.
        path = pattern % "dup\x00x"
        st, out = raw_unix(d, ("%s %s HTTP/1.1\r\nHost: vmsnapd\r\nConnection: close\r\n\r\n"
                               % (method, path)).encode())
        expect((st, None, out), 400, "invalid_path", "NUL byte", "%s %r (raw NUL)" % (method, path))
    # Over TCP the token comes first: a stranger learns nothing about the path.
    expect(d.tcp("DELETE", "/v1/snapshots/dup%00x", token=False), 401, "unauthorized", "",
           "TCP without the token")
    expect(d.tcp("DELETE", "/v1/snapshots/dup%00x"), 400, "invalid_path", "%00", "TCP with it")


def check_queries(d):
    for path, mention in (("/v1/snapshots/dup?force=1%00", "%00"),
                          ("/v1/snapshots/dup?force=1%0A", "%0A")):
        expect(d.unix("DELETE", path), 400, "invalid_query", mention, "DELETE " + path)
    expect(d.unix("GET", "/v1/snapshots?kind=template%00"), 400, "invalid_query", "%00",
           "GET ?kind=template%00")
    expect(d.unix("GET", "/v1/sandboxes?all=1%7F"), 400, "invalid_query", "%7F",
           "GET ?all=1%7F")


def check_bodies(d):
    cases = [
        ("/v1/sandboxes", {"template": "dup\u0000x"}, "malformed_json", "NUL"),
        ("/v1/sandboxes", {"template": "dup\nx"}, "invalid_field", "'template'"),
        ("/v1/sandboxes", {"template": "dup\u007f"}, "invalid_field", "'template'"),
        ("/v1/sandboxes", {"name": "web\u0000"}, "malformed_json", "NUL"),
        ("/v1/sandboxes", {"name": "web\u001f1"}, "invalid_field", "'name'"),
        ("/v1/snapshots/dup/sandboxes", {"name": "a\nb"}, "invalid_field", "'name'"),
        ("/v1/snapshots", {"sandbox": "dup\u0000", "name": "t"}, "malformed_json", "NUL"),
        ("/v1/snapshots", {"sandbox": "dup\t", "name": "t"}, "invalid_field", "'sandbox'"),
        ("/v1/snapshots", {"sandbox": "web", "name": "t\u007f"}, "invalid_field", "'name'"),
        ("/v1/sandboxes/web/snapshot", {"name": "dup\rx"}, "invalid_field", "'name'"),
    ]
    for path, body, code, mention in cases:
        text = json.dumps(body)  # \u0000 stays an escape: the JSON parser must refuse it
        expect(d.unix("POST", path, text, JSON), 400, code, mention, "POST %s %s" % (path, text))


def main():
    if not os.access(VMSNAPD, os.X_OK):
        skip(TEST, "vmsnapd is not built (%s)" % VMSNAPD)
    if not CLI or not os.access(CLI, os.X_OK):
        skip(TEST, "the vmsnap CLI is not built ($VMSNAP_CLI), needed to make an export")
    work = tempfile.mkdtemp(prefix="vmsnap-refs.")
    d = Vmsnapd(work)
    try:
        d.start()
        make_snapshot(d, work, "dup")
        check_paths(d)
        check_queries(d)
        check_bodies(d)
        st, _, body = d.unix("GET", "/v1/snapshots/dup")
        if st != 200:
            fail("snapshot 'dup' is gone after the attempts: %s %s" % (st, body[:200]))
        st, _, body = d.unix("DELETE", "/v1/snapshots/dup")
        if st != 204:
            fail("plain DELETE /v1/snapshots/dup: %s %s" % (st, body[:200]))
        rc = d.stop()
        if rc != 0:
            fail("vmsnapd exited %s after SIGTERM" % rc)
    except Exception as e:  # a broken daemon must fail the test, not crash it
        fail("%s: %r" % (type(e).__name__, e))
    finally:
        d.kill()
        if failures:
            print("---- vmsnapd log (tail) ----\n" + "\n".join(d.log().splitlines()[-15:]))
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("%s: %d check(s) failed" % (TEST, len(failures)))
        return 1
    print("%s: refs, names and query values with NUL, control characters or an encoded '/' "
          "are refused on every route; 'dup' survived" % TEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
