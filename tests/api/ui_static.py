#!/usr/bin/env python3
"""The dashboard's static route of vmsnapd (issue 15, docs/dashboard.md "How vmsnapd serves it").

A real vmsnapd on a random loopback port, checked over raw sockets (the request target goes
out byte for byte, nothing normalizes it):

  - "/", "/ui", "/ui/" and every embedded file are served WITHOUT the token, byte-identical
    to the build's <build>/ui files, with their content type and the security headers (CSP
    default-src 'self' + frame-ancestors 'none', nosniff, X-Frame-Options DENY,
    Referrer-Policy no-referrer) and, without a token, Connection: close; HEAD has no body;
  - the API still needs the token: /v1/sandboxes and /metrics are 401 without it and with a
    wrong one, 200 with it;
  - path traversal is an attack: "..", "%2e%2e", an encoded '/', "//", backslashes, NUL,
    "./", case games and a query never reach the token file or /etc/passwd: every answer
    is 400, 401 or 404, never 200, and holds neither the token nor passwd's first line;
    the same with the token (a trusted client);
  - other methods are 405 with Allow: GET, HEAD; the Unix socket serves the files too.

Exit 0 pass, 1 fail, 77 skip (vmsnapd or the dashboard build missing).
"""
import os
import re
import shutil
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmsnapd import BUILD, VMSNAPD, Vmsnapd, skip  # noqa: E402

TEST = "ui-static"
UI = os.path.join(BUILD, "ui")
FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css",
         "icon.svg": "image/svg+xml"}
TRAVERSALS = [
    "/ui/../token", "/ui/../../etc/passwd", "/ui/%2e%2e/token", "/ui/%2E%2E/%2E%2E/etc/passwd",
    "/ui/..%2ftoken", "/ui/..%2Ftoken", "/ui//etc/passwd", "/ui/app.js/../../token",
    "/../token", "/ui/..\\token", "/ui/%5c..%5ctoken", "/ui/./app.js", "/ui/.%2fapp.js",
    "/ui/app.js%00.html", "/ui/APP.JS", "/ui/app.js/", "/ui/token",
    "/ui/../vmsnap.db", "/ui/" + "../" * 20 + "etc/passwd", "/ui/....//....//token",
    "/ui/~/token", "/ui/%252e%252e/token", "//ui/app.js", "/UI/app.js", "/ui/.../token",
]
failures = []


def fail(what):
    print("FAIL:", what, flush=True)
    failures.append(what)


def raw(port, method, target, token=None):
    """One request with the target sent exactly as given: (status, {header: value}, body)."""
    req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, target)
    if token is not None:
        req += "Authorization: Bearer %s\r\n" % token
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(req.encode("latin-1") + b"\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return status, headers, body


def check_headers(name, h, untrusted):
    csp = h.get("content-security-policy", "")
    if "default-src 'self'" not in csp or "frame-ancestors 'none'" not in csp:
        fail("%s: Content-Security-Policy %r" % (name, csp))
    for k, v in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                 ("referrer-policy", "no-referrer")):
        if h.get(k) != v:
            fail("%s: %s is %r, not %r" % (name, k, h.get(k), v))
    if untrusted and h.get("connection", "").lower() != "close":
        fail("%s without the token: no Connection: close (%r)" % (name, h.get("connection")))


def check_files(d):
    for path, name in [("/", "index.html"), ("/ui", "index.html"), ("/ui/", "index.html")] + \
            [("/ui/" + f, f) for f in FILES]:
        with open(os.path.join(UI, name), "rb") as f:
            want = f.read()
        st, h, body = raw(d.port, "GET", path)
        if st != 200 or body != want:
            fail("GET %s without the token: %d, %d bytes (want 200, %s's %d bytes)"
                 % (path, st, len(body), name, len(want)))
            continue
        if not h.get("content-type", "").startswith(FILES[name]):
            fail("GET %s: Content-Type %r" % (path, h.get("content-type")))
        check_headers("GET " + path, h, True)
        st, h, body = raw(d.port, "HEAD", path)
        if st != 200 or body or h.get("content-length") != str(len(want)):
            fail("HEAD %s: %d, body %d bytes, Content-Length %r" % (path, st, len(body),
                                                                    h.get("content-length")))
        st, h, body = raw(d.port, "GET", path, d.token)
        if st != 200 or body != want:
            fail("GET %s with the token: %d" % (path, st))
    st, _, body = d.unix("GET", "/ui/app.js")
    with open(os.path.join(UI, "app.js"), "rb") as f:
        if st != 200 or body != f.read():
            fail("GET /ui/app.js on the Unix socket: %d" % st)


def check_api_auth(d):
    for path in ("/v1/sandboxes", "/metrics", "/v1/snapshots"):
        for tok, name in ((None, "no token"), ("0" * 64, "a wrong token"),
                          (d.token[:-1] + ("0" if d.token[-1] != "0" else "1"), "a token off by one")):
            st, h, body = raw(d.port, "GET", path, tok)
            if st != 401 or b"unauthorized" not in body:
                fail("GET %s with %s: %d %r (want 401 unauthorized)" % (path, name, st, body[:80]))
        st, _, _ = raw(d.port, "GET", path, d.token)
        if st != 200:
            fail("GET %s with the token: %d" % (path, st))


def check_traversal(d):
    secrets = [d.token.encode()]
    with open("/etc/passwd", "rb") as f:
        secrets.append(f.readline().strip())
    for target in TRAVERSALS:
        for tok, who in ((None, "without"), (d.token, "with")):
            st, _, body = raw(d.port, "GET", target, tok)
            leaked = [s for s in secrets if s and s in body]
            if st not in (400, 401, 404) or leaked:
                fail("GET %s %s the token: %d, %d bytes%s" % (target, who, st, len(body),
                                                            " LEAKS a secret" if leaked else ""))
    # A query is not part of the file name; it reaches nothing else either.
    st, _, body = raw(d.port, "GET", "/ui/app.js?path=../../token")
    if st != 200 or d.token.encode() in body:
        fail("GET /ui/app.js?path=../../token: %d" % st)


def check_methods(d):
    for method, target in (("POST", "/ui/app.js"), ("DELETE", "/"), ("PUT", "/ui/index.html"),
                           ("OPTIONS", "/ui/")):
        st, h, _ = raw(d.port, method, target, d.token)
        if st != 405 or h.get("allow") != "GET, HEAD":
            fail("%s %s: %d, Allow %r (want 405, GET, HEAD)" % (method, target, st, h.get("allow")))


def check_metrics_label(d):
    """The dashboard's requests have their own route label, not "unmatched"."""
    st, _, body = raw(d.port, "GET", "/metrics", d.token)
    text = body.decode()
    ok = re.search(r'^vmsnapd_http_requests_total\{route="/ui/\{file\}",method="GET",'
                   r'code="200"\} (\d+)$', text, re.M)
    if st != 200 or not ok or int(ok.group(1)) < len(FILES):
        fail("/metrics: no route=\"/ui/{file}\" count of the files served: %d" % st)
    miss = re.search(r'^vmsnapd_http_requests_total\{route="/ui/\{file\}",method="GET",'
                     r'code="404"\} \d+$', text, re.M)
    if not miss:
        fail("/metrics: the dashboard's 404s are not under route=\"/ui/{file}\"")
    if re.search(r'route="unmatched",method="(GET|HEAD)",code="200"', text):
        fail("/metrics: a 200 counted as unmatched")


def main():
    if not BUILD or not os.access(VMSNAPD, os.X_OK):
        skip(TEST, "vmsnapd not built (VMSNAP_BUILD=%r)" % BUILD)
    if not os.path.exists(os.path.join(UI, "index.html")):
        skip(TEST, "the dashboard was not built (%s missing: no Node.js/npm at build time)" % UI)
    work = tempfile.mkdtemp(prefix="vmsnap-ui-static-")
    d = Vmsnapd(work)
    try:
        d.start()
        check_files(d)
        check_api_auth(d)
        check_traversal(d)
        check_methods(d)
        check_metrics_label(d)
        if d.proc.poll() is not None:
            fail("vmsnapd died during the test")
    finally:
        rc = d.stop()
        if rc not in (0, None):
            fail("vmsnapd exited %s; log:\n%s" % (rc, d.log()[-3000:]))
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("%s: %d failure(s)" % (TEST, len(failures)))
        return 1
    print("%s: static files without the token, API with it, %d traversal targets refused"
          % (TEST, len(TRAVERSALS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
