#!/usr/bin/env python3
"""Every answer of a live vmsnapd conforms to docs/openapi.yaml (issue 9).

The daemon runs with sandboxes on the Cloud Hypervisor driver, whose VMM is tests/peer/
ch-peer (Cloud Hypervisor needs KVM; the peer speaks its API and keeps real guest memory,
see sandbox_peer_vmm.py). A wrapper script in front of the peer can make the next VMM start
play another release, never create its API socket, or exit at once, so that the host
failures the API maps to incompatible_vmm, timeout and internal really happen.
Behind each peer VMM's vsock port runs the real guest agent built for the host (protocol 2,
one per VMM as in a guest, confined: make_agent_root), so exec (JSON, a stream of frames,
an upgraded connection with stdin, a PTY and a resize, background processes), the process
list and kill, and the file and archive routes are driven and checked too.

Requests go through Stoplight Prism in proxy mode (npm @stoplight/prism-cli, pinned in
tests/api/package.json), which validates each request and each response against the spec
and reports what does not conform in an `sl-violations` header. Any response violation
fails the test; a request the test means to be valid must have no request violation, and
one it means to be invalid must have one (the spec has to say what the server refuses).
Prism cannot check what matches no operation or has no body, so HEAD (same status and
headers as GET, no body), 405 (with `Allow` = the path's methods in the spec), unknown
paths, control characters in paths, the 503 of a stopping daemon and the 507 of a full
disk (a second daemon on a small tmpfs in its own mount namespace) are sent straight to
the daemon and checked here against the same spec: the status documented for the
operation (or the component response), required headers, and the error body against the
status's schema (exact keys, code in its enum, a message).

Every operation of the spec must be exercised with its success status and every error
code must be seen, except the few listed in NOT_PROVOKED with the reason. Exit 0 pass,
1 fail, 77 skip (no daemon, peer, host-built agent, root, guest image, Node.js tools).
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "e2e", "lib"))
from conformance_guest import (  # noqa: E402
    agent_log_check, guest_exec, guest_files, guest_refusals, make_agent_root, old_agent,
    status_coverage)
from conformance_harness import (  # noqa: E402
    JSON, TEST, Answer, Harness, Spec, fail, failures, send, set_mode)
from vmsnapd import VMSNAPD, Vmsnapd, free_port, kill_peers, skip, unix_request  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("VMSNAP_SRC", os.path.dirname(os.path.dirname(HERE)))
SPEC_PATH = os.path.join(SRC, "docs", "openapi.yaml")
PRISM = os.path.join(HERE, "node_modules", ".bin", "prism")
PEER = os.environ.get("VMSNAP_PEER_ch_peer", "")
CLI = os.environ.get("VMSNAP_CLI", "")
GUEST = os.environ.get("VMSNAP_GUEST_DIR", os.path.join(SRC, "build", "guest"))

# A sandbox with a network needs a --network daemon, which needs jailed VMMs; this test's
# daemon runs unjailed (its VMM is a wrapper script), so e2e/sandbox-network drives these.
NEEDS_NETWORK = {("POST", "/v1/sandboxes/{ref}/ports")}

# Success needs a real S3 store: cli/remote-ceph drives these against a Ceph RGW (with their
# answers' fields); here they are refused (no remote, a remote answering 403, bad refs).
NEEDS_REMOTE = {("GET", "/v1/remote/snapshots"), ("HEAD", "/v1/remote/snapshots"),
                ("POST", "/v1/remote/snapshots"), ("DELETE", "/v1/remote/snapshots/{ref}"),
                ("POST", "/v1/remote/snapshots/{ref}/pull"), ("POST", "/v1/remote/gc")}

NOT_PROVOKED = {
    "pool_exhausted": "needs a --network daemon (jailed); e2e/sandbox-network provokes it",
    "ambiguous_ref": "two ids sharing a 3-character prefix take ~80 random UUIDs, too slow "
                     "here; the store and sandbox resolvers' own tests cover it",
    "insufficient_memory": "ENOMEM comes only from a failed allocation in the daemon",
    "unavailable": "EAGAIN comes only from a VMM API answering 429, which no peer does",
    "no_capacity": "needs vmsnapd --cluster with Postgres; e2e/cluster-failover provokes it",
}


# ---- the VMM peer behind a switch ------------------------------------------------------------

def make_vmm_wrapper(work):
    """bin/cloud-hypervisor: the peer, playing what the file `mode` says, with its own
    confined guest agent (make_agent_root) behind its vsock port."""
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir)
    mode = os.path.join(work, "vmm-mode")
    root, run_agent = make_agent_root(work, bindir)
    wrapper = os.path.join(bindir, "cloud-hypervisor")
    with open(wrapper, "w") as f:
        f.write("""#!/bin/sh
case "$(cat '%(mode)s' 2>/dev/null)" in
v53) export CH_PEER_VERSION=53.0 ;;
nosocket) export CH_PEER_NO_SOCKET=1 ;;
exit) case " $* " in *" --version "*) ;; *) echo "told to fail by the test" >&2; exit 3 ;; esac ;;
v1agent) exec '%(peer)s' "$@" ;;  # the peer's stand-in agent, protocol 1
esac
case " $* " in *" --version "*) ;; *)
    # This VM's agent, killed when this process (the peer, after the exec) ends.
    sock="/sock/agent-$$.sock"
    setpriv --pdeathsig KILL '%(run)s' "$sock" >>'%(log)s' 2>&1 &
    export CH_PEER_AGENT='%(root)s'"$sock" ;;
esac
exec '%(peer)s' "$@"
""" % {"mode": mode, "run": run_agent, "log": os.path.join(work, "agent.log"), "root": root,
       "peer": PEER})
    os.chmod(wrapper, 0o755)
    return bindir, mode



def start_prism(port, upstream, log_path):
    env = dict(os.environ, NO_COLOR="1")
    log = open(log_path, "w")
    p = subprocess.Popen([PRISM, "proxy", SPEC_PATH, upstream, "--host", "127.0.0.1",
                          "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    for _ in range(1200):
        if p.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    p.wait()
    with open(log_path, errors="replace") as f:
        raise RuntimeError("prism did not start:\n" + f.read()[-2000:])


def make_export(work, size):
    mem = os.path.join(work, "mem-%d.raw" % size)
    with open(mem, "wb") as f:
        f.write(os.urandom(size))
    other = os.path.join(work, "other-%d" % size)
    exp = os.path.join(work, "exp-%d.tar" % size)
    for args in (["snapshot", "add", mem, "--name", "src", "--root", other],
                 ["snapshot", "export", "src", "-o", exp, "--root", other]):
        subprocess.run([CLI] + args, check=True, stdout=subprocess.DEVNULL)
    return exp


# ---- the walk ---------------------------------------------------------------------------------

def times(sb, what, started, last_paused):
    """A sandbox's started/last_paused are set exactly when they should be (docs/api.md)."""
    if not sb:
        return
    for field, want in (("started", started), ("last_paused", last_paused)):
        if (sb.get(field) is not None) != want:
            fail("%s sandbox: %s is %r (want %s)" % (what, field, sb.get(field),
                                                    "a time" if want else "null"))


def usage(P, clone):
    """A paused clone's snapshot shares the template's memory files (docs/store.md "Usage")."""
    if not clone or not clone.get("snapshot_id"):
        fail("the paused clone has no snapshot_id: %r" % clone)
        return
    snap = P("GET", "/v1/snapshots/" + clone["snapshot_id"], "/v1/snapshots/{ref}", 200) or {}
    tpl = P("GET", "/v1/snapshots/tpl", "/v1/snapshots/{ref}", 200) or {}
    u, tu = snap.get("usage") or {}, tpl.get("usage") or {}
    if not (0 < u.get("parent_shared_bytes", 0) <= u.get("shared_bytes", 0)
            <= u.get("allocated_bytes", 0)):
        fail("the clone's pause snapshot: usage %r (want 0 < parent_shared <= shared <= "
             "allocated)" % u)
    if u.get("allocated_bytes", 0) < snap.get("size_bytes", 1) // 2:
        fail("usage.allocated_bytes %r against size_bytes %r" % (u, snap.get("size_bytes")))
    if tu.get("shared_bytes", 0) < u.get("parent_shared_bytes", 1):
        fail("the template shares %r, less than its clone's snapshot takes from it %r"
             % (tu, u))
    listed = P("GET", "/v1/snapshots?usage=1", "/v1/snapshots", 200) or {}
    if not all("usage" in s for s in listed.get("snapshots", [])):
        fail("GET /v1/snapshots?usage=1: a snapshot without usage")
    plain = P("GET", "/v1/snapshots", "/v1/snapshots", 200) or {}
    if any("usage" in s for s in plain.get("snapshots", [])):
        fail("GET /v1/snapshots: usage without ?usage=1")


def lifecycle(t, work, mode):
    """Every route with its success status, and the conflicts a lifecycle meets."""
    P = t.via_prism
    P("GET", "/healthz", "/healthz", 200, token=False)
    P("GET", "/metrics", "/metrics", 200)
    sb = P("POST", "/v1/sandboxes", "/v1/sandboxes", 201, body={"name": "web-1", "memory_mib": 64})
    P("GET", "/v1/sandboxes", "/v1/sandboxes", 200)
    P("GET", "/v1/sandboxes?all=1", "/v1/sandboxes", 200)
    P("GET", "/v1/sandboxes/web-1", "/v1/sandboxes/{ref}", 200)
    P("GET", "/v1/sandboxes/" + sb["id"][:8], "/v1/sandboxes/{ref}", 200)
    P("POST", "/v1/sandboxes/web-1/exec", "/v1/sandboxes/{ref}/exec", 200,
      body={"cmd": "echo hi", "timeout_ms": 20000})
    times(sb, "created", started=True, last_paused=False)
    paused = P("POST", "/v1/sandboxes/web-1/pause", "/v1/sandboxes/{ref}/pause", 200)
    times(paused, "paused", started=False, last_paused=True)
    P("POST", "/v1/sandboxes/web-1/pause", "/v1/sandboxes/{ref}/pause", 409, "invalid_state")
    P("POST", "/v1/sandboxes/web-1/exec", "/v1/sandboxes/{ref}/exec", 409, "invalid_state",
      body={"cmd": "true"})
    resumed = P("POST", "/v1/sandboxes/web-1/resume", "/v1/sandboxes/{ref}/resume", 200, body={})
    times(resumed, "resumed", started=True, last_paused=True)
    if resumed and paused and resumed.get("last_paused") != paused.get("last_paused"):
        fail("resume changed last_paused: %r → %r" % (paused.get("last_paused"),
                                                     resumed.get("last_paused")))
    if resumed and paused and (resumed.get("started") or "") < (paused.get("last_paused") or ""):
        fail("resumed: started %r is before the pause %r" % (resumed.get("started"),
                                                            paused.get("last_paused")))
    P("POST", "/v1/sandboxes/web-1/snapshot", "/v1/sandboxes/{ref}/snapshot", 201,
      body={"name": "tpl"})
    P("POST", "/v1/snapshots", "/v1/snapshots", 201, body={"sandbox": "web-1", "name": "tpl-b"})
    P("POST", "/v1/snapshots", "/v1/snapshots", 409, "already_exists",
      body={"sandbox": "web-1", "name": "tpl-b"})
    P("GET", "/v1/snapshots", "/v1/snapshots", 200)
    P("GET", "/v1/snapshots?kind=template&all=1", "/v1/snapshots", 200)
    P("GET", "/v1/snapshots/tpl", "/v1/snapshots/{ref}", 200)
    P("POST", "/v1/snapshots/tpl/sandboxes", "/v1/snapshots/{ref}/sandboxes", 201,
      body={"name": "clone-1"})
    usage(P, P("POST", "/v1/sandboxes/clone-1/pause", "/v1/sandboxes/{ref}/pause", 200))
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 201, body={"template": "tpl", "name": "clone-2"})
    P("POST", "/v1/snapshots/tpl/sandboxes", "/v1/snapshots/{ref}/sandboxes", 409,
      "template_mismatch", body={"memory_mib": 128})
    P("DELETE", "/v1/snapshots/tpl", "/v1/snapshots/{ref}", 409, "invalid_state")
    for name in ("clone-1", "clone-2"):
        P("DELETE", "/v1/sandboxes/" + name, "/v1/sandboxes/{ref}", 204)
    # Host failures, played by the VMM: another major release, no API socket, an exit.
    set_mode(mode, "v53")
    P("POST", "/v1/snapshots/tpl/sandboxes", "/v1/snapshots/{ref}/sandboxes", 409,
      "incompatible_vmm", body={})
    set_mode(mode, "exit")
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 500, "internal", body={"memory_mib": 64})
    set_mode(mode, "nosocket")
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 504, "timeout", body={"memory_mib": 64})
    set_mode(mode, None)
    # A template whose memory header was damaged on disk.
    tpl_b = P("GET", "/v1/snapshots/tpl-b", "/v1/snapshots/{ref}", 200)
    with open(os.path.join(t.d.root, "snapshots", tpl_b["id"], "memfile.header"), "r+b") as f:
        f.seek(100)
        f.write(b"XXXX")
    P("POST", "/v1/snapshots/tpl-b/sandboxes", "/v1/snapshots/{ref}/sandboxes", 500,
      "corrupt_data", body={})
    P("DELETE", "/v1/snapshots/tpl-b?force=1", "/v1/snapshots/{ref}", 204)



def imports(t, work, exp):
    P = t.via_prism
    P("POST", "/v1/snapshots", "/v1/snapshots", 201, body={"path": exp, "name": "imp",
                                                           "description": "from the test"})
    P("POST", "/v1/snapshots", "/v1/snapshots", 409, "already_exists",
      body={"path": exp, "name": "imp"})
    junk = os.path.join(work, "junk.tar")
    with open(junk, "wb") as f:
        f.write(os.urandom(4096))
    P("POST", "/v1/snapshots", "/v1/snapshots", 400, "invalid_archive",
      body={"path": junk, "name": "junk"})
    P("DELETE", "/v1/snapshots/imp", "/v1/snapshots/{ref}", 204)
    transfer(t, work)


def transfer(t, work):
    """Export through GET …/export, import that stream as an upload (the dashboard's way).
    Prism re-encodes binary bodies as text, so the bytes go straight to the daemon; prism
    still judges the export's status and headers."""
    P, D = t.via_prism, t.direct
    got = {}
    # gzip is left out for time: the same code path with libarchive's other filter.
    for comp, magic in (("zstd", b"\x28\xb5\x2f\xfd"), ("none", None)):
        path = "/v1/snapshots/tpl/export?compression=" + comp
        a = D("GET", path, "/v1/snapshots/{ref}/export", 200)
        if a.status != 200 or (magic and not a.body.startswith(magic)) or \
                (not magic and a.body[257:262] != b"ustar"):
            fail("GET %s: %d, %d bytes starting %r" % (path, a.status, len(a.body), a.body[:8]))
            continue
        got[comp] = a.body
        p = send(t.prism_port, "GET", path, headers=t.auth(True))
        if p.status != 200 or json.loads(p.headers.get("sl-violations", "[]")):
            fail("GET %s (via prism): %d %s" % (path, p.status, p.headers.get("sl-violations")))
    D("HEAD", "/v1/snapshots/tpl/export", "/v1/snapshots/{ref}/export", 200)
    P("GET", "/v1/snapshots/tpl/export?compression=xz", "/v1/snapshots/{ref}/export", 400,
      "invalid_query", request_valid=False)
    P("GET", "/v1/snapshots/no-such/export", "/v1/snapshots/{ref}/export", 404, "not_found")
    if "zstd" not in got:
        return
    zst, tar = {"Content-Type": "application/zstd"}, {"Content-Type": "application/x-tar"}
    up = D("POST", "/v1/snapshots?name=up-zstd", "/v1/snapshots", 201, body=got["zstd"],
           headers=zst).json or {}
    if up.get("name") != "up-zstd" or up.get("kind") != "template":
        fail("the uploaded import: %r" % up)
    D("POST", "/v1/snapshots?name=up-zstd", "/v1/snapshots", 409, "already_exists",
      body=got["zstd"], headers=zst)
    if "none" in got:
        D("POST", "/v1/snapshots?name=up-tar", "/v1/snapshots", 201, body=got["none"],
          headers=tar)
        # Cut short: the import refuses it and nothing is left behind.
        D("POST", "/v1/snapshots?name=up-cut", "/v1/snapshots", 400, "invalid_archive",
          body=got["none"][:len(got["none"]) // 2], headers=tar)
        D("DELETE", "/v1/snapshots/up-tar", "/v1/snapshots/{ref}", 204)
    D("POST", "/v1/snapshots?name=up-junk", "/v1/snapshots", 400, "invalid_archive",
      body=os.urandom(70000), headers={"Content-Type": "application/octet-stream"})
    D("POST", "/v1/snapshots?name=-bad", "/v1/snapshots", 400, "invalid_query", body=b"x",
      headers=tar)
    D("DELETE", "/v1/snapshots/up-zstd", "/v1/snapshots/{ref}", 204)
    listed = D("GET", "/v1/snapshots?all=1", "/v1/snapshots", 200).json or {}
    left = [s["name"] for s in listed.get("snapshots", [])
            if (s.get("name") or "").startswith("up-")]
    if left:
        fail("refused uploads left snapshots behind: %s" % left)


def refusals(t):
    """The 4xx a client can cause, and whether the spec already says so."""
    P = t.via_prism
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 400, "invalid_field", body={"vcpus": 0},
      request_valid=False)
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 400, "invalid_field", body={"cpus": 2},
      request_valid=False)
    P("POST", "/v1/sandboxes/web-1/exec", "/v1/sandboxes/{ref}/exec", 400, "invalid_field",
      body={}, request_valid=False)
    P("GET", "/v1/sandboxes?all=maybe", "/v1/sandboxes", 400, "invalid_query",
      request_valid=False)
    P("GET", "/v1/snapshots?kind=other", "/v1/snapshots", 400, "invalid_query",
      request_valid=False)
    # A cluster pin on a single host is refused, not ignored (valid as the spec goes).
    P("POST", "/v1/sandboxes?host=host-b", "/v1/sandboxes", 400, "invalid_query", body={})
    # Valid as far as the body goes; the sandbox layer refuses the values.
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 400, "invalid_argument", body={"memory_mib": 1},
      request_valid=None)
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 400, "invalid_argument",
      body={"vmm": "nosuchvmm"})
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 503, "host_not_ready",
      body={"vmm": "firecracker", "memory_mib": 64})
    P("GET", "/v1/sandboxes", "/v1/sandboxes", 401, "unauthorized", token=False,
      request_valid=None)
    P("GET", "/metrics", "/metrics", 401, "unauthorized", token=False, request_valid=None)
    P("GET", "/v1/sandboxes/no-such", "/v1/sandboxes/{ref}", 404, "not_found")
    P("DELETE", "/v1/sandboxes/no-such", "/v1/sandboxes/{ref}", 404, "not_found")
    P("POST", "/v1/sandboxes/no-such/pause", "/v1/sandboxes/{ref}/pause", 404, "not_found")
    P("POST", "/v1/sandboxes/no-such/resume", "/v1/sandboxes/{ref}/resume", 404, "not_found")
    P("POST", "/v1/sandboxes/no-such/snapshot", "/v1/sandboxes/{ref}/snapshot", 404,
      "not_found", body={"name": "t9"})
    P("POST", "/v1/sandboxes/no-such/ports", "/v1/sandboxes/{ref}/ports", 404, "not_found",
      body={"port": 80})
    P("POST", "/v1/sandboxes/web-1/ports", "/v1/sandboxes/{ref}/ports", 409, "invalid_state",
      body={"port": 80})  # the conformance daemon runs without --network
    P("POST", "/v1/sandboxes/web-1/ports", "/v1/sandboxes/{ref}/ports", 400, "invalid_field",
      body={"port": 70000}, request_valid=False)
    P("GET", "/v1/snapshots/no-such", "/v1/snapshots/{ref}", 404, "not_found")
    P("DELETE", "/v1/snapshots/no-such", "/v1/snapshots/{ref}", 404, "not_found")
    P("POST", "/v1/snapshots/no-such/sandboxes", "/v1/snapshots/{ref}/sandboxes", 404,
      "not_found", body={})
    big = json.dumps({"cmd": "x" * 70000})
    P("POST", "/v1/sandboxes/web-1/exec", "/v1/sandboxes/{ref}/exec", 413, "body_too_large",
      body=big, headers=JSON, request_valid=None)
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 415, "unsupported_media_type", body="{}",
      headers={"Content-Type": "text/plain"}, request_valid=False)


class DenyingS3(threading.Thread):
    """An "S3 endpoint" that answers every request 403 AccessDenied, as a store does to
    wrong credentials (a final answer: no retries)."""

    def __init__(self):
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def deny(self):
                body = b"<Error><Code>AccessDenied</Code></Error>"
                self.send_response(403)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = deny

            def log_message(self, *a):
                pass
        super().__init__(daemon=True)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def run(self):
        self.server.serve_forever()


def remote_refusals(t):
    """The remote routes without a remote, with a remote that refuses, and with bad refs."""
    P = t.via_prism
    s3 = DenyingS3()
    s3.start()
    os.makedirs(os.path.join(t.d.root, "remotes"), mode=0o700, exist_ok=True)
    conf = os.path.join(t.d.root, "remotes", "deny.conf")
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, ("endpoint = http://127.0.0.1:%d\nbucket = vmsnap\naccess_key = a\n"
                  "secret_key = b\n" % s3.server.server_address[1]).encode())
    os.close(fd)
    try:
        P("GET", "/v1/remote/snapshots", "/v1/remote/snapshots", 409, "no_remote")
        P("GET", "/v1/remote/snapshots?remote=nope", "/v1/remote/snapshots", 404, "not_found")
        P("GET", "/v1/remote/snapshots?remote=deny", "/v1/remote/snapshots", 502,
          "remote_error")
        P("POST", "/v1/remote/snapshots?remote=deny", "/v1/remote/snapshots", 404,
          "not_found", body={"snapshot": "no-such"})
        P("POST", "/v1/remote/snapshots?remote=deny", "/v1/remote/snapshots", 502,
          "remote_error", body={"snapshot": "tpl"})
        P("POST", "/v1/remote/snapshots", "/v1/remote/snapshots", 400, "invalid_field",
          body={"snap": "tpl"}, request_valid=False)
        P("DELETE", "/v1/remote/snapshots/x?remote=deny", "/v1/remote/snapshots/{ref}", 502,
          "remote_error")
        P("POST", "/v1/remote/snapshots/x/pull?remote=deny", "/v1/remote/snapshots/{ref}/pull",
          502, "remote_error", body={})
        P("POST", "/v1/remote/snapshots/x/pull", "/v1/remote/snapshots/{ref}/pull", 400,
          "invalid_field", body={"name": "bad name"}, request_valid=False)
        P("POST", "/v1/remote/gc?remote=deny", "/v1/remote/gc", 502, "remote_error", body={})
        P("POST", "/v1/remote/gc", "/v1/remote/gc", 400, "invalid_field",
          body={"grace_seconds": -1}, request_valid=False)
    finally:
        s3.server.shutdown()


def direct_checks(t):
    """What prism cannot judge: HEAD, 405 with Allow, unknown paths, bad path bytes."""
    D = t.direct
    for path, template in (("/healthz", "/healthz"), ("/metrics", "/metrics"),
                           ("/v1/sandboxes", "/v1/sandboxes"),
                           ("/v1/sandboxes/web-1", "/v1/sandboxes/{ref}"),
                           ("/v1/snapshots", "/v1/snapshots"),
                           ("/v1/snapshots/tpl", "/v1/snapshots/{ref}"),
                           ("/v1/snapshots/no-such", "/v1/snapshots/{ref}")):
        t.head_like_get(path, template)
    samples = {"/healthz": "/healthz", "/metrics": "/metrics", "/v1/sandboxes": "/v1/sandboxes",
               "/v1/sandboxes/{ref}": "/v1/sandboxes/x",
               "/v1/sandboxes/{ref}/pause": "/v1/sandboxes/x/pause",
               "/v1/sandboxes/{ref}/resume": "/v1/sandboxes/x/resume",
               "/v1/sandboxes/{ref}/exec": "/v1/sandboxes/x/exec",
               "/v1/sandboxes/{ref}/snapshot": "/v1/sandboxes/x/snapshot",
               "/v1/sandboxes/{ref}/ports": "/v1/sandboxes/x/ports",
               "/v1/snapshots": "/v1/snapshots", "/v1/snapshots/{ref}": "/v1/snapshots/x",
               "/v1/snapshots/{ref}/sandboxes": "/v1/snapshots/x/sandboxes",
               "/v1/snapshots/{ref}/export": "/v1/snapshots/x/export",
               "/v1/sandboxes/{ref}/processes": "/v1/sandboxes/x/processes",
               "/v1/sandboxes/{ref}/processes/kill": "/v1/sandboxes/x/processes/kill",
               "/v1/sandboxes/{ref}/files": "/v1/sandboxes/x/files",
               "/v1/sandboxes/{ref}/files/stat": "/v1/sandboxes/x/files/stat",
               "/v1/sandboxes/{ref}/files/list": "/v1/sandboxes/x/files/list",
               "/v1/sandboxes/{ref}/archive": "/v1/sandboxes/x/archive",
               "/v1/remote/snapshots": "/v1/remote/snapshots",
               "/v1/remote/snapshots/{ref}": "/v1/remote/snapshots/x",
               "/v1/remote/snapshots/{ref}/pull": "/v1/remote/snapshots/x/pull",
               "/v1/remote/gc": "/v1/remote/gc"}
    for template in t.spec.doc["paths"]:
        path = samples[template]
        documented = t.spec.methods(template)
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            if method in documented:
                continue
            a = D(method, path, template, 405, "method_not_allowed", spec_method=None)
            allow = {m.strip() for m in a.headers.get("allow", "").split(",") if m.strip()}
            if allow != documented:
                fail("%s %s: Allow %s, the spec has %s" % (method, path, sorted(allow),
                                                          sorted(documented)))
    # Prism answers malformed JSON itself (invalid_json) without asking the daemon.
    D("POST", "/v1/sandboxes", "/v1/sandboxes", 400, "malformed_json", body='{"vcpus":',
      headers=JSON)
    D("POST", "/v1/sandboxes", "/v1/sandboxes", 400, "malformed_json", body='[1]', headers=JSON)
    D("GET", "/v1/nothing", None, 404, "no_such_route", spec_method=None)
    D("DELETE", "/v1/sandboxes/a/b/c", None, 404, "no_such_route", spec_method=None)
    for path, template in (("/v1/sandboxes/web%00-1", "/v1/sandboxes/{ref}"),
                           ("/v1/snapshots/tpl%0A", "/v1/snapshots/{ref}"),
                           ("/healthz%7F", "/healthz")):
        D("GET", path, template, 400, "invalid_path")
    D("GET", "/healthz%00", "/healthz", 401, "unauthorized", token=False)
    D("GET", "/v1/snapshots?kind=template%00", "/v1/snapshots", 400, "invalid_query")
    D("GET", "/healthz", "/healthz", 413, "body_too_large", body="{}",
      headers={"Content-Type": "application/json", "Content-Length": "70000"})


class LyingAgent:
    """Listens where a sandbox's vsock socket was: accepts the CONNECT to the agent's port,
    then answers every request line with something that is not JSON."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self.accept_all, daemon=True).start()

    def accept_all(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def serve(c):
        with c, c.makefile("rb") as lines:
            for n, _ in enumerate(lines):
                c.sendall(b"OK 1\n" if n == 0 else b"this is not JSON\n")

    def close(self):
        self.sock.close()


def agent_garbage(t):
    """502: the daemon restarted (sandboxes keep running) finds an agent that answers
    nonsense: the test listens where web-1's vsock socket was."""
    sid = t.via_prism("GET", "/v1/sandboxes/web-1", "/v1/sandboxes/{ref}", 200)["id"]
    if t.d.stop() != 0:
        fail("vmsnapd did not stop cleanly before the restart")
    path = os.path.join(t.d.root, "sandboxes", sid, "vsock.sock")
    os.unlink(path)
    liar = LyingAgent(path)
    t.d.start(same_port=True)
    t.via_prism("POST", "/v1/sandboxes/web-1/exec", "/v1/sandboxes/{ref}/exec", 502,
                "guest_agent_error", body={"cmd": "true"})
    liar.close()


def shutting_down(t):
    """503 shutting_down: a request on a connection opened before SIGTERM, while another
    request is still in flight (its body not sent yet), is refused and the daemon exits 0."""
    keep = http.client.HTTPConnection("127.0.0.1", t.d.port, timeout=60)
    keep.request("GET", "/v1/sandboxes", headers=t.auth(True))
    keep.getresponse().read()
    slow = socket.create_connection(("127.0.0.1", t.d.port), timeout=60)
    body = b'{"cmd":"true"}'
    slow.sendall(b"POST /v1/sandboxes/web-1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 + t.d.token.encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body[:3])
    deadline = time.monotonic() + 30
    while in_flight(t.d) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # until the daemon counts it (the scrape itself is the other one)
    t.d.proc.send_signal(signal.SIGTERM)
    while os.path.exists(t.d.sock) and time.monotonic() < deadline:
        time.sleep(0.05)  # quiesced: the socket file goes first
    keep.request("GET", "/healthz")
    r = keep.getresponse()
    a = Answer(r.status, r.getheaders(), r.read())
    t.expect("GET /healthz while stopping", a, 503, "shutting_down")
    if t.check_local("GET /healthz while stopping", "GET", "/healthz", a):
        t.record("GET", "/healthz", a)
    slow.sendall(body[3:])
    slow.recv(4096)
    slow.close()
    keep.close()
    if t.d.proc.wait(60) != 0:
        fail("vmsnapd exited %s after SIGTERM" % t.d.proc.returncode)


def in_flight(d):
    """vmsnapd_http_requests_in_flight, read over the Unix socket (0 when unreadable)."""
    try:
        body = d.unix("GET", "/metrics")[2].decode()
    except OSError:
        return 0
    m = re.search(r"^vmsnapd_http_requests_in_flight (\d+)$", body, re.M)
    return int(m.group(1)) if m else 0


def full_disk(t, work, exp_big):
    """507 insufficient_storage: a daemon whose root is a 3 MiB tmpfs (its own mount
    namespace) imports a 4 MiB export. Skipped (with a note) where unshare is not allowed."""
    root = os.path.join(work, "small")
    os.makedirs(root)
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs '%s'" % root],
                           capture_output=True)
    if probe.returncode != 0:
        NOT_PROVOKED["insufficient_storage"] = "no mount namespace here (unshare -m: %s)" % (
            probe.stderr.decode().strip()[:100])
        return
    sock = os.path.join(work, "small.sock")
    log = open(os.path.join(work, "small.log"), "w")
    p = subprocess.Popen(["unshare", "-m", "sh", "-c",
                          "mount -t tmpfs -o size=3m,mode=0700 tmpfs \"$1\" && shift && "
                          "exec \"$@\"", "sh", root, VMSNAPD, "--root", root + "/r",
                          "--socket", sock, "--no-tcp", "--tick-interval", "0",
                          "--mem-root", os.path.join(work, "small-mem")],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if os.path.exists(sock) or p.poll() is not None:
                break
            time.sleep(0.05)
        st, headers, body = unix_request(sock, "POST", "/v1/snapshots",
                                         json.dumps({"path": exp_big, "name": "big"}), JSON)
        a = Answer(st, headers, body)
        t.expect("import into a full disk", a, 507, "insufficient_storage")
        if t.check_local("POST /v1/snapshots (full disk)", "POST", "/v1/snapshots", a):
            t.record("POST", "/v1/snapshots", a)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def coverage(t):
    status_coverage(t)
    for op in sorted(set(t.spec.operations()) - t.ops - NEEDS_NETWORK - NEEDS_REMOTE):
        fail("operation %s %s was never answered with success" % op)
    for op in sorted(NEEDS_REMOTE - t.ops):
        print("%s: success not exercised here: %s %s (needs an S3 store: cli/remote-ceph)"
              % ((TEST,) + op))
    missing = t.spec.all_codes() - t.codes - set(NOT_PROVOKED)
    for code in sorted(missing):
        fail("error code %s was never seen" % code)
    for code, why in sorted(NOT_PROVOKED.items()):
        print("%s: not exercised: %s (%s)" % (TEST, code, why))


def main():
    for what, ok in (("vmsnapd is not built", os.access(VMSNAPD, os.X_OK)),
                     ("the ch-peer is not built ($VMSNAP_PEER_ch_peer)",
                      PEER and os.access(PEER, os.X_OK)),
                     ("the vmsnap CLI is not built ($VMSNAP_CLI)", CLI and os.access(CLI, os.X_OK))):
        if not ok:
            skip(TEST, what)
    # The peer boots nothing, but the sandbox layer wants the guest image (kernel, disk).
    rc = subprocess.call([os.path.join(SRC, "guest", "build.sh"), GUEST],
                         stdout=subprocess.DEVNULL)
    if rc != 0:
        skip(TEST, "no guest image (guest/build.sh exit %d)" % rc)
    rc = subprocess.call(["bash", os.path.join(HERE, "tools.sh")])
    if rc != 0:
        skip(TEST, "the npm tools are missing (tests/api/tools.sh exit %d)" % rc)
    try:
        import yaml  # noqa: F401
    except ImportError:
        skip(TEST, "python3 has no yaml module (python3-yaml) to read the spec")
    spec = Spec(SPEC_PATH)
    for var in [v for v in os.environ if v.startswith("VMSNAP_S3_")]:
        del os.environ[var]  # the daemon must start without a remote (409 no_remote)
    work = tempfile.mkdtemp(prefix="vs-cf-")  # short: socket paths are <= 107 bytes
    bindir, mode = make_vmm_wrapper(work)
    path = bindir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # Unjailed on purpose: this test is about the API's answers, and its VMM is a wrapper
    # script that reads a mode file and execs the peer by host paths a jail does not hold
    # (the jailed drivers are proven by e2e/sandbox-cloud-hypervisor and friends).
    d = Vmsnapd(os.path.join(work, "d"), ["--vmm", "cloud-hypervisor", "--guest-dir", GUEST,
                                          "--insecure-no-jail"],
                {"PATH": path, "VMSNAP_VMM_START_TIMEOUT_MS": "5000"})
    os.makedirs(d.work)
    prism = None
    try:
        d.start()
        prism_port = free_port()
        prism = start_prism(prism_port, "http://127.0.0.1:%d" % d.port,
                            os.path.join(work, "prism.log"))
        t = Harness(spec, d, prism_port)
        lifecycle(t, work, mode)
        guest_files(t)
        guest_exec(t)
        old_agent(t, mode)
        guest_refusals(t)
        imports(t, work, make_export(work, 64 << 10))
        refusals(t)
        remote_refusals(t)
        direct_checks(t)
        agent_garbage(t)
        shutting_down(t)
        full_disk(t, work, make_export(work, 4 << 20))
        coverage(t)
    except Exception as e:  # a broken daemon must fail the test, not crash it
        import traceback
        traceback.print_exc()
        fail("%s: %r" % (type(e).__name__, e))
    finally:
        if prism:
            prism.kill()
            prism.wait()
        d.kill()
        kill_peers(PEER, work)  # and their agents (pdeathsig)
        agent_log_check(work, bool(failures))
        if failures:
            print("---- vmsnapd log (tail) ----\n" + "\n".join(d.log().splitlines()[-20:]))
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(os.path.join(d.work, "mem"), ignore_errors=True)
    if failures:
        print("%s: %d check(s) failed" % (TEST, len(failures)))
        return 1
    print("%s: %d operations and %d error codes, every answer conforms to docs/openapi.yaml"
          % (TEST, len(t.ops), len(t.codes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
