#!/bin/bash
# vmsnapd tells systemd when it is ready (Type=notify, dist/vmsnapd.service.in): started with
# $NOTIFY_SOCKET naming a datagram socket (a path, then an abstract "@name"), it sends
# READY=1 once it serves (the socket answers /healthz by then) and STOPPING=1 on SIGTERM;
# without $NOTIFY_SOCKET it runs as before. Needs no VM. No timing assertions (the waits
# are generous upper bounds).
set -u

VMSNAPD=${VMSNAPD:-${VMSNAP_BUILD:-}/vmsnapd}
if [ ! -x "$VMSNAPD" ]; then
        echo "daemon-notify: vmsnapd is not built ($VMSNAPD); skipping"
        exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
        echo "daemon-notify: python3 is needed to listen as the service manager; skipping"
        exit 77
fi

exec python3 - "$VMSNAPD" <<'PY'
import http.client, os, shutil, signal, socket, subprocess, sys, tempfile, time

vmsnapd = sys.argv[1]
work = tempfile.mkdtemp(prefix="vmsnap-notify-")
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, flush=True)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def healthz(sock):
    c = UnixHTTP(sock)
    c.request("GET", "/healthz")
    status = c.getresponse().status
    c.close()
    return status


def wait_serving(sock, d):
    """Without a service manager to tell us, polls until the daemon answers (bounded)."""
    for _ in range(600):
        try:
            if healthz(sock) == 200:
                return
        except OSError:
            pass
        check(d.poll() is None, "vmsnapd exited at start")
        time.sleep(0.1)
    check(False, "vmsnapd never answered /healthz")


def run(kind, notify_addr):
    """One daemon life with NOTIFY_SOCKET=notify_addr ('' for none); returns the messages."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_addr.replace("@", "\0", 1) if notify_addr else
                  os.path.join(work, "unused.sock"))
    listener.settimeout(120)
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    if notify_addr:
        env["NOTIFY_SOCKET"] = notify_addr
    root, sock = os.path.join(work, kind + "-root"), os.path.join(work, kind + ".sock")
    log = open(os.path.join(work, kind + ".log"), "w")
    d = subprocess.Popen([vmsnapd, "--root", root, "--socket", sock, "--no-tcp",
                          "--mem-root", os.path.join(work, "mem"),
                          "--guest-dir", os.path.join(work, "no-guest")],
                         env=env, stdout=log, stderr=subprocess.STDOUT)
    got = []
    try:
        if notify_addr:
            got.append(listener.recv(4096).decode())
            check(got[0] == "READY=1", "%s: first message %r, expected READY=1" % (kind, got[0]))
            check(healthz(sock) == 200, "%s: READY=1 before /healthz answers" % kind)
        else:
            wait_serving(sock, d)
        d.send_signal(signal.SIGTERM)
        if notify_addr:
            got.append(listener.recv(4096).decode())
            check(got[1] == "STOPPING=1", "%s: after SIGTERM %r" % (kind, got[1]))
        check(d.wait(60) == 0, "%s: vmsnapd exit status %s" % (kind, d.returncode))
        if not notify_addr:
            listener.settimeout(0)
            try:
                extra = listener.recv(4096)
                check(False, "no NOTIFY_SOCKET, yet %r arrived" % extra)
            except BlockingIOError:
                pass
    except socket.timeout:
        check(False, "%s: no message from vmsnapd (see %s.log)" % (kind, kind))
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()
        listener.close()
    print("daemon-notify: %s: %s" % (kind, got or "nothing sent"), flush=True)


try:
    run("path", os.path.join(work, "notify.sock"))
    run("abstract", "@vmsnap-notify-test-%d" % os.getpid())
    run("none", "")
finally:
    if failures:
        for kind in ("path", "abstract", "none"):
            p = os.path.join(work, kind + ".log")
            if os.path.exists(p):
                print("--- %s.log" % kind)
                print(open(p).read()[-2000:])
    shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if failures else 0)
PY
