"""api-conformance (conformance.py), the routes that need the guest agent's protocol 2:
exec (JSON, frames, upgraded), background processes, files and archives, driven against the
real agent built for the host, one per peer VMM, confined (make_agent_root)."""
import base64
import http.client
import io
import json
import os
import re
import shutil
import socket
import struct
import tarfile
import threading
import time

import agent_frames
from conformance_harness import FRAMES, JSON, TEST, Answer, fail, send, set_mode
from vmsnapd import skip


AGENT_UID = 65534  # nobody: the confined agents' uid and gid


def make_agent_root(work, bindir):
    """The real guest agent (protocol 2, VMSNAP_AGENT_HOST) that each peer VMM relays its
    vsock port to, one per VMM as in a guest, confined so that it cannot touch the host
    outside WORK/agent-root (bin/run-agent SOCKET starts one):
    - new mount, PID, network, IPC and UTS namespaces (unshare): it sees only its own
      processes (a /proc of its PID namespace), has no network but loopback, and its mounts
      vanish with it; it dies with the peer that started it (pdeathsig, set again after the
      uid change), and its namespace's processes with it (it is their PID 1);
    - chrooted into WORK/agent-root, which holds the agent, a read-only nosuid bind of /usr
      (sh, tar, coreutils, the sanitizer runtime; /bin and /lib are symlinks into it), binds
      of /dev/null, /dev/zero and /dev/urandom, a private devpts instance for PTYs, and its
      own /tmp, /run and /home;
    - as uid/gid 65534 with no supplementary groups, no capabilities (bounding set empty)
      and no_new_privs (setpriv), so it can write only what the test made for it there;
    - in `--listen-unix` mode, where restore_hook sets no clock, seeds no RNG and touches no
      network (docs/guest.md §2.1): those are the host's.
    Every path the daemon names is resolved in that root. Returns (root, run-agent)."""
    agent = os.environ.get("VMSNAP_AGENT_HOST", "")
    if not os.access(agent, os.X_OK):
        skip(TEST, "the agent is not built for the host ($VMSNAP_AGENT_HOST)")
    for tool in ("unshare", "chroot", "setpriv"):
        if not shutil.which(tool):
            skip(TEST, "no %s (util-linux, coreutils) to confine the guest agent" % tool)
    if os.geteuid() != 0:
        skip(TEST, "not root: the guest agent is confined with namespaces, a chroot and a uid")
    root = os.path.join(work, "agent-root")
    os.makedirs(root)
    os.chmod(root, 0o755)
    for d, mode, owner in (("usr", 0o755, 0), ("proc", 0o555, 0), ("dev", 0o755, 0),
                           ("dev/pts", 0o755, 0), ("tmp", 0o1777, 0), ("sock", 0o755, AGENT_UID),
                           ("run", 0o755, AGENT_UID), ("home", 0o755, AGENT_UID)):
        path = os.path.join(root, d)
        os.makedirs(path, exist_ok=True)
        os.chown(path, owner, owner)
        os.chmod(path, mode)
    for link in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        if os.path.islink("/" + link):
            os.symlink(os.readlink("/" + link), os.path.join(root, link))
    for node in ("null", "zero", "urandom"):
        open(os.path.join(root, "dev", node), "w").close()
    os.symlink("pts/ptmx", os.path.join(root, "dev", "ptmx"))
    shutil.copy(agent, os.path.join(root, "vmsnap-agent"))
    os.chmod(os.path.join(root, "vmsnap-agent"), 0o755)
    inner = ('set -e; r="$1"; mount --bind /usr "$r/usr"; '
             'mount -o remount,bind,ro,nosuid,nodev "$r/usr"; '
             'for n in null zero urandom; do mount --bind "/dev/$n" "$r/dev/$n"; done; '
             'mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec '
             'devpts "$r/dev/pts"; '
             'exec env -i PATH=/usr/bin:/bin HOME=/home ASAN_OPTIONS="$ASAN_OPTIONS" '
             'UBSAN_OPTIONS="$UBSAN_OPTIONS" %s "$r" /usr/bin/setpriv '
             '--reuid=%d --regid=%d --clear-groups --bounding-set=-all --inh-caps=-all '
             '--no-new-privs --pdeathsig KILL /vmsnap-agent --listen-unix "$2"'
             % (shutil.which("chroot"), AGENT_UID, AGENT_UID))
    run = os.path.join(bindir, "run-agent")
    with open(run, "w") as f:
        f.write("#!/bin/sh\nexec %s --mount --pid --net --ipc --uts --fork --kill-child "
                "--propagation private --mount-proc='%s/proc' sh -c '%s' sh '%s' \"$1\"\n"
                % (shutil.which("unshare"), root, inner, root))
    os.chmod(run, 0o755)
    return root, run

def agent_log_check(work, show):
    """The agents' log (WORK/agent.log) holds no sanitizer report; its tail when show."""
    try:
        with open(os.path.join(work, "agent.log"), errors="replace") as f:
            log = f.read()
    except OSError:
        return
    if re.search(r"Sanitizer|runtime error:", log):
        fail("a guest agent's sanitizer spoke (agent.log)")
        show = True
    if show:
        print("---- agent.log (tail) ----\n" + "\n".join(log.splitlines()[-30:]))


def tar_of(name, data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o640
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def guest_files(t):
    """The file and archive routes against the real agent (confined, see make_agent_root)."""
    P = t.via_prism
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 201, body={"name": "fs-1", "memory_mib": 64})
    b, T = "/v1/sandboxes/fs-1/", "/v1/sandboxes/{ref}/"
    oct_h = {"Content-Type": "application/octet-stream"}
    tar_h = {"Content-Type": "application/x-tar"}
    # Prism re-encodes binary bodies as UTF-8 (each byte >= 0x80 becomes U+FFFD) both ways:
    # through it the bodies are ASCII; binary ones go straight to the daemon, checked here.
    P("PUT", b + "files?path=/tmp/a.txt", T + "files", 200, body=b"ascii\n", headers=oct_h)
    P("GET", b + "files?path=/tmp/a.txt", T + "files", 200)
    if t.last.body != b"ascii\n":
        fail("GET files (via prism): %r, want what was PUT" % t.last.body[:100])
    data = bytes(range(256)) * 1024 + b"\0end"  # binary, NULs, more than one frame
    a = t.direct("PUT", b + "files?path=/tmp/a.bin&mode=0600", T + "files", 200, body=data,
                 headers=oct_h)
    info = a.json or {}
    if (info.get("size"), info.get("mode"), info.get("type")) != (len(data), 0o600, "file"):
        fail("PUT files: %r" % info)
    a = t.direct("GET", b + "files?path=/tmp/a.bin", T + "files", 200)
    if a.body != data:
        fail("GET files: %d bytes, want the %d PUT" % (len(a.body), len(data)))
    st = P("GET", b + "files/stat?path=/tmp/a.bin", T + "files/stat", 200)
    if st and (st.get("size"), st.get("type"), st.get("path")) != (len(data), "file",
                                                                    "/tmp/a.bin"):
        fail("files/stat: %r" % st)
    P("PUT", b + "archive?path=/tmp", T + "archive", 204, body=tar_of("d/in.txt", b"tar\n"),
      headers=tar_h)
    P("GET", b + "files?path=/tmp/d/in.txt", T + "files", 200)
    if t.last.body != b"tar\n":
        fail("PUT archive: /tmp/d/in.txt holds %r" % t.last.body[:100])
    ls = P("GET", b + "files/list?path=/tmp", T + "files/list", 200)
    names = sorted(e.get("name") for e in (ls or {}).get("entries", []))
    if ls and names != ["a.bin", "a.txt", "d"]:
        fail("files/list /tmp: %r" % ls)
    P("GET", b + "archive?path=/tmp/d", T + "archive", 200)
    a = t.direct("GET", b + "archive?path=/tmp/d", T + "archive", 200)
    try:
        with tarfile.open(fileobj=io.BytesIO(a.body)) as tf:
            names = sorted(tf.getnames())
    except tarfile.TarError as e:
        names = ["not a tar: %s" % e]
    if names != ["d", "d/in.txt"]:
        fail("GET archive /tmp/d: entries %r" % names)
    for path, template in (("files?path=/tmp/a.bin", "files"),
                           ("files/stat?path=/tmp/a.bin", "files/stat"),
                           ("files/list?path=/tmp", "files/list"),
                           ("archive?path=/tmp/d", "archive"),
                           ("files?path=/no/such", "files")):
        t.head_like_get(b + path, T + template)
    for route in ("files", "files/stat", "files/list", "archive"):
        P("GET", b + route + "?path=/no/such", T + route, 404, "not_found")
        P("GET", b + route + "?path=relative", T + route, 400, "invalid_query",
          request_valid=False)
        P("GET", b + route, T + route, 400, "invalid_query", request_valid=False)
    P("GET", b + "files?path=/tmp", T + "files", 400, "invalid_argument")  # a directory
    P("GET", b + "files/list?path=/tmp/a.bin", T + "files/list", 400, "invalid_argument")
    P("PUT", b + "files?path=/no/such/x", T + "files", 404, "not_found", body=b"x",
      headers=oct_h)
    P("PUT", b + "files?path=/tmp/b&mode=9z", T + "files", 400, "invalid_query", body=b"x",
      headers=oct_h, request_valid=False)
    P("PUT", b + "files?path=/tmp/c", T + "files", 415, "unsupported_media_type", body=b"x",
      headers={"Content-Type": "text/plain"}, request_valid=False)
    P("PUT", b + "archive?path=/no/such", T + "archive", 404, "not_found",
      body=tar_of("x", b"x"), headers=tar_h)
    P("PUT", b + "archive?path=/tmp", T + "archive", 400, "invalid_argument",
      body=b"not a tar archive" * 64, headers=tar_h)
    P("DELETE", b + "files?path=/tmp/d", T + "files", 400, "invalid_argument")  # not empty
    P("DELETE", b + "files?path=/tmp/a.bin", T + "files", 204)
    P("DELETE", b + "files?path=/tmp/a.bin", T + "files", 404, "not_found")
    P("DELETE", b + "files?path=/tmp/d&recursive=1", T + "files", 204)
    P("GET", b + "files/stat?path=/tmp/d", T + "files/stat", 404, "not_found")
    P("GET", "/v1/sandboxes/nope/files?path=/x", T + "files", 404, "not_found")
    # HEAD of an endless file answers at once (the guest's read is not run to its end), and
    # the agent serves the next requests.
    t.direct("HEAD", b + "files?path=/dev/zero", T + "files", 200)
    t.direct("HEAD", b + "archive?path=/dev/zero", T + "archive", 200)
    P("GET", b + "files?path=/tmp/a.txt/x", T + "files", 400, "invalid_argument")  # ENOTDIR
    P("GET", b + "files/stat?path=/tmp/a.txt/x", T + "files/stat", 400, "invalid_argument")
    P("PUT", b + "files?path=/usr/x", T + "files", 400, "invalid_argument", body=b"x",
      headers=oct_h)  # a read-only file system
    P("PUT", b + "archive?path=/usr", T + "archive", 400, "invalid_argument",
      body=tar_of("x", b"x"), headers=tar_h)
    P("DELETE", b + "files?path=/", T + "files", 409, "invalid_state")  # EBUSY
    # A failure once the body has started cuts it off (docs/openapi.yaml): the chunked body
    # never ends, so no client mistakes a part for the whole. /proc/1/mem opens but cannot
    # be read; /secret (root's, 0600) is not readable by the agent's uid, so tar fails.
    secret = os.path.join(t.d.work, "..", "agent-root", "secret")
    with open(secret, "w") as f:
        f.write("x")
    os.chmod(secret, 0o600)
    for q in ("files?path=/proc/1/mem", "archive?path=/secret"):
        try:
            a = send(t.d.port, "GET", b + q, headers=t.auth(True))
            fail("GET %s: a complete %d answer of %d bytes, want a body cut off"
                 % (q, a.status, len(a.body)))
        except http.client.IncompleteRead:
            pass
    P("POST", b + "pause", T + "pause", 200)
    P("GET", b + "files?path=/x", T + "files", 409, "invalid_state")
    P("PUT", b + "files?path=/tmp/x", T + "files", 409, "invalid_state", body=b"x",
      headers=oct_h)
    P("PUT", b + "archive?path=/", T + "archive", 409, "invalid_state", body=tar_of("x", b"x"),
      headers=tar_h)
    P("DELETE", b[:-1], "/v1/sandboxes/{ref}", 204)


def frames_of(t, what, a):
    """The frames of an exec stream (docs/api.md, Exec): STARTED first, then data, then
    exactly one EXIT or ERROR, last. Returns {type: [payload, ...]} or None."""
    if a.headers.get("content-type") != FRAMES:
        fail("%s: content type %r, want %s" % (what, a.headers.get("content-type"), FRAMES))
        return None
    try:
        frames = agent_frames.http_frames(a.body)
    except (ValueError, struct.error) as e:
        fail("%s: the body is not a sequence of frames: %s" % (what, e))
        return None
    types = [f[0] for f in frames]
    ends = (agent_frames.EXIT, agent_frames.ERROR)
    if (not types or types[0] != agent_frames.STARTED or types[-1] not in ends
            or any(x in ends for x in types[:-1])
            or not set(types[1:-1]) <= {agent_frames.STDOUT, agent_frames.STDERR}):
        fail("%s: frame types %r (want STARTED, STDOUT/STDERR..., EXIT|ERROR)" % (what, types))
        return None
    by = {}
    for ftype, payload in frames:
        by.setdefault(ftype, []).append(payload)
    return by


def frames_end(by):
    return json.loads((by.get(agent_frames.EXIT) or by.get(agent_frames.ERROR))[0])


def exec_stream(t, path, body, want_out, want_end):
    """An exec answered with a stream of frames: through prism (the request, the status and
    headers; prism mangles the binary body, see guest_files), then straight to the daemon for
    the frames: byte-exact output, its end."""
    h = {"Accept": FRAMES, "Content-Type": "application/json"}
    t.via_prism("POST", path, "/v1/sandboxes/{ref}/exec", 200, body=body, headers=h)
    what = "POST %s %s (frames)" % (path, json.dumps(body)[:80])
    by = frames_of(t, what, t.direct("POST", path, "/v1/sandboxes/{ref}/exec", 200,
                                     body=json.dumps(body), headers=h))
    if by is None:
        return
    out, end = b"".join(by.get(agent_frames.STDOUT, [])), frames_end(by)
    if want_out is not None and out != want_out:
        fail("%s: stdout %r, want %r" % (what, out[:200], want_out[:200]))
    if any(end.get(k) != v for k, v in want_end.items()):
        fail("%s: end %r, want %r" % (what, end, want_end))


def read_head(sock):
    """An HTTP response head off a raw socket: (Answer without body, bytes after it)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    hdrs = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ":" in ln]
    return Answer(status, hdrs, b""), rest


def exec_upgraded(t, path, body, stdin, want_out, resize=None):
    """An exec on an upgraded connection (101, frames both ways), straight to the daemon
    (prism cannot proxy an upgrade): a RESIZE when asked, stdin as STDIN frames then
    STDIN_EOF; the 101 checked against the spec, the frames as a stream's."""
    raw = json.dumps(body).encode()
    what = "POST %s %s (upgrade)" % (path, raw[:60].decode())
    with socket.create_connection(("127.0.0.1", t.d.port), timeout=60) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     b"Connection: Upgrade\r\nUpgrade: vmsnap-exec.v1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % (path.encode(), t.d.token.encode(), len(raw)) + raw)
        a, data = read_head(sock)
        t.expect(what, a, 101, None)
        if a.status != 101:
            return
        if (a.headers.get("upgrade"), a.headers.get("connection", "").lower()) != (
                "vmsnap-exec.v1", "upgrade"):
            fail("%s: Upgrade %r, Connection %r" % (what, a.headers.get("upgrade"),
                                                  a.headers.get("connection")))
        if t.check_local(what, "POST", "/v1/sandboxes/{ref}/exec", a):
            t.record("POST", "/v1/sandboxes/{ref}/exec", a)
        if resize:
            sock.sendall(agent_frames.header(agent_frames.RESIZE, 0, 4)
                         + struct.pack("<HH", *resize))
        for i in range(0, len(stdin), 60000):
            part = stdin[i:i + 60000]
            sock.sendall(agent_frames.header(agent_frames.STDIN, 0, len(part)) + part)
        sock.sendall(agent_frames.header(agent_frames.STDIN_EOF, 0, 0))
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    a.headers["content-type"], a.body = FRAMES, data
    by = frames_of(t, what, a)
    if by is None:
        return
    out, end = b"".join(by.get(agent_frames.STDOUT, [])), frames_end(by)
    if not want_out(out):
        fail("%s: stdout %r" % (what, out[:300]))
    if end.get("exit_code") != 0:
        fail("%s: ended %r" % (what, end))


def confinement(t, path):
    """The attack on the host, as a guest would try it through exec: the agent and what it
    runs are uid 65534 without capabilities, see only the agent root, only the processes of
    their PID namespace and only loopback, cannot signal the daemon, and a file they write
    lands inside the root."""
    root = os.path.join(t.d.work, "..", "agent-root")
    r = t.via_prism("POST", path, "/v1/sandboxes/{ref}/exec", 200, body={"cmd": (
        "id -u; id -G; ls /; ls /proc | grep -c '^[0-9]'; grep -c : /proc/net/dev; "
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status | tr -d ' \\t'; "
        "echo x > /tmp/proof; touch /usr/x 2>/dev/null && echo wrote-usr; "
        "kill -0 %d 2>/dev/null && echo reached-the-daemon; true") % t.d.proc.pid}) or {}
    lines = (r.get("stdout") or "").split("\n")
    numbers = [int(x) for x in lines[2:] if x.isdigit()]
    listed = {x for x in lines[2:] if x and not x.isdigit() and ":" not in x}
    if lines[:2] != ["65534", "65534"]:
        fail("confinement: uid and groups %r, want 65534 and 65534" % lines[:2])
    if not listed or not listed <= set(os.listdir(root)):
        fail("confinement: / holds %r, not only the agent root's %r" % (
            sorted(listed), sorted(os.listdir(root))))
    if len(numbers) != 2 or numbers[0] > 8 or numbers[1] != 1:  # pids; interfaces: lo
        fail("confinement: %r processes and %r interfaces visible: %r" % (
            numbers[:1], numbers[1:], lines))
    for field in ("CapEff:0000000000000000", "CapBnd:0000000000000000", "NoNewPrivs:1"):
        if field not in lines:
            fail("confinement: no %s: %r" % (field, lines))
    for bad in ("wrote-usr", "reached-the-daemon"):
        if bad in lines:
            fail("confinement: %s: %r" % (bad, lines))
    if not os.path.exists(os.path.join(root, "tmp", "proof")):
        fail("confinement: /tmp/proof did not land in the agent root %s" % root)


def guest_exec(t):
    """Exec against the real agent: argv byte-exact as JSON, as frames and upgraded."""
    P = t.via_prism
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 201, body={"name": "ex-1", "memory_mib": 64})
    path, T = "/v1/sandboxes/ex-1/exec", "/v1/sandboxes/{ref}/exec"
    args = ["a b", "$HOME", "q'\"", "nl\nx", ""]
    r = P("POST", path, T, 200, body={"argv": ["printf", "%s|"] + args})
    if r and (r.get("stdout"), r.get("exit_code"), r.get("timed_out")) != (
            "|".join(args) + "|", 0, False):
        fail("exec argv: %r" % r)
    r = P("POST", path, T, 200, body={"cmd": "echo err >&2; exit 3", "timeout_ms": 20000})
    if r and (r.get("stderr"), r.get("exit_code")) != ("err\n", 3):
        fail("exec cmd exit 3: %r" % r)
    r = P("POST", path, T, 200, body={"argv": ["sleep", "5"], "timeout_ms": 300})
    if r and (r.get("timed_out"), r.get("signal")) != (True, 9):
        fail("exec timeout: %r" % r)
    odd = b"\xff\xfe\0\n"
    exec_stream(t, path, {"argv_b64": [base64.b64encode(x).decode()
                                       for x in (b"printf", b"%s", odd[:2] + b"\n")]},
                odd[:2] + b"\n", {"exit_code": 0})
    exec_stream(t, path, {"cmd": "head -c 300000 /dev/zero; printf end"},
                b"\0" * 300000 + b"end", {"exit_code": 0})
    exec_stream(t, path, {"argv": ["sleep", "5"], "timeout_ms": 300}, b"",
                {"timed_out": True, "signal": 9})
    exec_stream(t, path, {"argv": ["/no/such/program"]}, b"", {"exit_code": 127})
    big = os.urandom(200000)
    exec_upgraded(t, path, {"argv": ["cat"]}, big, lambda out: out == big)
    exec_upgraded(t, path, {"cmd": "stty size", "tty": True, "rows": 30, "cols": 100}, b"",
                  lambda out: out.strip() == b"30 100")
    exec_upgraded(t, path, {"cmd": "read x; stty size", "tty": True}, b"go\n",
                  lambda out: out.strip().endswith(b"40 120"), resize=(40, 120))
    for body in ({"argv": ["true"], "cmd": "true"}, {"argv": []}, {"argv": ["true"], "x": 1},
                 {"cmd": "true", "timeout_ms": 0}):
        P("POST", path, T, 400, "invalid_field", body=body, request_valid=False)
    P("POST", path, T, 415, "unsupported_media_type", body="x",
      headers={"Content-Type": "text/plain"}, request_valid=False)
    P("POST", "/v1/sandboxes/nope/exec", T, 404, "not_found", body={"argv": ["true"]})
    confinement(t, path)
    guest_processes(t, "/v1/sandboxes/ex-1/")
    stream_cut_by_pause(t, path)
    P("DELETE", "/v1/sandboxes/ex-1", "/v1/sandboxes/{ref}", 204)


def stream_cut_by_pause(t, path):
    """A stream does not hold the sandbox's lock: a pause goes ahead and the stream ends
    with an ERROR frame (docs/api.md, Exec), a complete body."""
    got, up = [], threading.Event()
    h = dict(t.auth(True), Accept=FRAMES, **JSON)

    def stream():  # reads the body as it comes; says when the command's output arrived
        c = http.client.HTTPConnection("127.0.0.1", t.d.port, timeout=120)
        try:
            c.request("POST", path, json.dumps({"cmd": "echo up; exec sleep 60"}), h)
            r, data = c.getresponse(), b""
            while True:
                chunk = r.read1(1 << 16)
                if not chunk:
                    break
                data += chunk
                if b"up\n" in data:
                    up.set()
            got.append(Answer(r.status, r.getheaders(), data))
        finally:
            c.close()
            up.set()
    th = threading.Thread(target=stream)
    th.start()
    up.wait(60)
    t.via_prism("POST", path.replace("/exec", "/pause"), "/v1/sandboxes/{ref}/pause", 200)
    th.join(120)
    what = "POST %s (frames, paused under it)" % path
    by = frames_of(t, what, got[0]) if got else fail("%s: no answer" % what)
    if by is not None and (agent_frames.ERROR not in by
                           or b"".join(by.get(agent_frames.STDOUT, [])) != b"up\n"):
        fail("%s: frames %r, want STDOUT up, then ERROR" % (what, sorted(by)))
    t.via_prism("POST", path.replace("/exec", "/resume"), "/v1/sandboxes/{ref}/resume", 200,
                body={})


def old_agent(t, mode):
    """501 not_supported: a guest agent that predates protocol 2 (the peer's stand-in) runs
    only `cmd` with a JSON answer. Straight to the daemon: prism answers a 501 from upstream
    with a mock of its own (its way of proxying unimplemented routes)."""
    P, D = t.via_prism, t.direct
    set_mode(mode, "v1agent")
    P("POST", "/v1/sandboxes", "/v1/sandboxes", 201, body={"name": "old-1", "memory_mib": 64})
    set_mode(mode, None)
    b, T = "/v1/sandboxes/old-1/", "/v1/sandboxes/{ref}/"
    P("POST", b + "exec", T + "exec", 200, body={"cmd": "true"})
    oct_h = {"Content-Type": "application/octet-stream"}
    for method, path, template, body, h in (
            ("POST", "exec", "exec", {"argv": ["true"]}, JSON),
            ("POST", "exec", "exec", {"cmd": "true"}, dict(JSON, Accept=FRAMES)),
            ("POST", "exec", "exec", {"cmd": "sleep 1", "background": True}, JSON),
            ("GET", "processes", "processes", None, {}),
            ("POST", "processes/kill", "processes/kill", {"pid": 1}, JSON),
            ("GET", "files/stat?path=/", "files/stat", None, {}),
            ("GET", "files/list?path=/", "files/list", None, {}),
            ("GET", "files?path=/x", "files", None, {}),
            ("PUT", "files?path=/x", "files", b"x", oct_h),
            ("DELETE", "files?path=/x", "files", None, {}),
            ("GET", "archive?path=/", "archive", None, {}),
            ("PUT", "archive?path=/", "archive", tar_of("x", b"x"),
             {"Content-Type": "application/x-tar"})):
        if isinstance(body, dict):
            body = json.dumps(body)
        D(method, b + path, T + template, 501, "not_supported", body=body, headers=h)
    P("DELETE", b[:-1], "/v1/sandboxes/{ref}", 204)


def guest_processes(t, b):
    """Background processes: started, listed, their log read, killed; the refusals."""
    P, T = t.via_prism, "/v1/sandboxes/{ref}/"
    bg = P("POST", b + "exec", T + "exec", 201, body={"cmd": "echo started; exec sleep 60",
                                                      "background": True}) or {}
    pid = bg.get("pid", 0)
    ps = P("GET", b + "processes", T + "processes", 200) or {}
    mine = [p for p in ps.get("processes", []) if p.get("pid") == pid]
    if not mine or not mine[0].get("running") or not mine[0].get("detached"):
        fail("processes: %d is not listed running and detached: %r" % (pid, ps))
    t.head_like_get(b + "processes", T + "processes")
    deadline = time.monotonic() + 30
    while True:
        got = send(t.d.port, "GET", b + "files?path=" + bg.get("log", "/none"),
                   headers=t.auth(True))
        if got.body == b"started\n" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if got.body != b"started\n":
        fail("the background process's log %s: %r" % (bg.get("log"), got.body[:100]))
    P("POST", b + "processes/kill", T + "processes/kill", 400, "invalid_field",
      body={"pid": pid, "signal": "NOSUCH"})
    P("POST", b + "processes/kill", T + "processes/kill", 400, "invalid_field",
      body={"pid": 0}, request_valid=False)
    P("POST", b + "processes/kill", T + "processes/kill", 404, "not_found",
      body={"pid": 999999})
    P("POST", b + "processes/kill", T + "processes/kill", 204, body={"pid": pid, "signal": "KILL"})
    deadline = time.monotonic() + 30
    while True:
        ps = P("GET", b + "processes", T + "processes", 200) or {}
        ended = [p for p in ps.get("processes", []) if p.get("pid") == pid]
        if ended and not ended[0].get("running") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not ended or ended[0].get("running") or ended[0].get("signal") != 9:
        fail("processes after KILL: %r" % ended)
    P("POST", b + "pause", T + "pause", 200)
    P("GET", b + "processes", T + "processes", 409, "invalid_state")
    P("POST", b + "processes/kill", T + "processes/kill", 409, "invalid_state", body={"pid": pid})
    P("POST", b + "exec", T + "exec", 409, "invalid_state", body={"argv": ["true"]},
      headers={"Accept": FRAMES})
    P("POST", b + "resume", T + "resume", 200, body={})


# Statuses of the protocol-2 operations no request here provokes, and why.
NOT_PROVOKED_STATUS = {
    500: "internal: a failure inside the daemon (out of memory, a broken store)",
    503: "unavailable, insufficient_memory: EAGAIN/ENOMEM inside the daemon",
}


def status_coverage(t):
    """Every status the spec documents for a protocol-2 operation was seen conforming."""
    for method, template in sorted(t.spec.operations()):
        if not re.search(r"/(exec|processes|files|archive)", template):
            continue
        op = t.spec.doc["paths"][template][method.lower()]
        documented = {int(s) for s in op["responses"] if s != "default"}
        seen = t.statuses.get((method, template), set())
        for status in sorted(documented - seen - set(NOT_PROVOKED_STATUS)):
            fail("%s %s: its documented %d was never seen" % (method, template, status))
    for status, why in sorted(NOT_PROVOKED_STATUS.items()):
        print("%s: not exercised on the protocol-2 routes: %d %s" % (TEST, status, why))


# The protocol-2 operations: (method, route, a valid body, its content type).
GUEST_OPS = (
    ("POST", "exec", {"argv": ["true"]}, "application/json"),
    ("GET", "processes", None, None), ("HEAD", "processes", None, None),
    ("POST", "processes/kill", {"pid": 1}, "application/json"),
    ("GET", "files?path=/x", None, None), ("HEAD", "files?path=/x", None, None),
    ("PUT", "files?path=/x", b"x", "application/octet-stream"),
    ("DELETE", "files?path=/x", None, None),
    ("GET", "files/stat?path=/x", None, None), ("HEAD", "files/stat?path=/x", None, None),
    ("GET", "files/list?path=/x", None, None), ("HEAD", "files/list?path=/x", None, None),
    ("GET", "archive?path=/x", None, None), ("HEAD", "archive?path=/x", None, None),
    ("PUT", "archive?path=/x", "tar", "application/x-tar"))


def guest_refusals(t):
    """The refusals every protocol-2 operation documents: 401 without the token, 404 for
    an unknown sandbox, 409 for a paused one, 400 without ?path=, 413 and 415 for bodies.
    HEAD goes straight to the daemon (prism cannot check what has no body)."""
    t.via_prism("POST", "/v1/sandboxes", "/v1/sandboxes", 201,
                body={"name": "rf-1", "memory_mib": 64})
    t.via_prism("POST", "/v1/sandboxes/rf-1/pause", "/v1/sandboxes/{ref}/pause", 200)
    for method, route, body, ctype in GUEST_OPS:
        template = "/v1/sandboxes/{ref}/" + route.split("?")[0]
        body = tar_of("x", b"x") if body == "tar" else body
        h = {"Content-Type": ctype} if ctype else {}

        def req(ref, want, code, token=True, query=True, b=body, hh=h):
            path = "/v1/sandboxes/%s/%s" % (ref, route if query else route.split("?")[0])
            raw = json.dumps(b) if isinstance(b, dict) else b
            if method == "HEAD":
                t.direct(method, path, template, want, code, token=token)
            else:  # 401 and 413 are refused before the body is looked at
                valid = None if want in (401, 413) else want not in (400, 415)
                t.via_prism(method, path, template, want, code, body=raw, headers=hh,
                            token=token, request_valid=valid)
        req("rf-1", 401, None if method == "HEAD" else "unauthorized", token=False)
        req("nope", 404, None if method == "HEAD" else "not_found")
        req("rf-1", 409, None if method == "HEAD" else "invalid_state")
        if "?path=" in route:
            req("rf-1", 400, None if method == "HEAD" else "invalid_query", query=False)
        if route == "processes/kill":
            req("rf-1", 413, "body_too_large", b={"pid": 1, "x": "y" * 70000})
            req("rf-1", 415, "unsupported_media_type", b="{}", hh={"Content-Type": "text/plain"})
        if method == "PUT":
            req("rf-1", 415, "unsupported_media_type", hh={"Content-Type": "text/plain"})
    t.via_prism("DELETE", "/v1/sandboxes/rf-1", "/v1/sandboxes/{ref}", 204)
