"""The real vmsnapd for the API tests: started on a temporary root with its Unix socket and a
free TCP port on 127.0.0.1, stopped with SIGTERM. Shared by tests/api/*.py."""
import http.client
import os
import signal
import socket
import subprocess
import sys
import time

BUILD = os.environ.get("VMSNAP_BUILD", "")
VMSNAPD = os.environ.get("VMSNAPD", os.path.join(BUILD, "vmsnapd"))


def skip(test, why):
    print("%s: SKIP: %s" % (test, why), flush=True)
    sys.exit(77)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def unix_request(sock, method, path, body=None, headers=None):
    """One request on a daemon's Unix socket: (status, headers, body bytes)."""
    c = UnixHTTP(sock)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


class Vmsnapd:
    """One daemon. args are extra command-line options; env_extra extra environment."""

    def __init__(self, work, args=(), env_extra=None):
        self.work = work
        self.root = os.path.join(work, "root")
        self.sock = os.path.join(work, "api.sock")
        self.args = list(args)
        self.env_extra = env_extra or {}
        self.proc = None
        self.port = None
        self.log_path = os.path.join(work, "vmsnapd.log")

    def start(self, same_port=False):
        """Starts the daemon (again with the same port when same_port, e.g. behind a proxy)
        and waits until it answers."""
        for _ in range(1 if same_port else 3):  # only a port race is worth a retry
            if not same_port or not self.port:
                self.port = free_port()
            env = dict(os.environ)
            env.update(self.env_extra)
            with open(self.log_path, "a") as log:
                self.proc = subprocess.Popen(
                    [VMSNAPD, "--root", self.root, "--socket", self.sock,
                     "--listen", "127.0.0.1:%d" % self.port,
                     "--mem-root", os.path.join(self.work, "mem"),
                     "--guest-dir", os.path.join(self.work, "guest"),
                     "--tick-interval", "0"] + self.args,
                    stdout=log, stderr=subprocess.STDOUT, env=env)
            for _ in range(600):
                if self.proc.poll() is not None:
                    break
                try:
                    if self.unix("GET", "/healthz")[0] == 200:
                        with open(os.path.join(self.root, "token")) as f:
                            self.token = f.read().strip()
                        return
                except OSError:
                    pass
                time.sleep(0.05)
            self.kill()
            if "in use" not in self.log():
                break
        raise RuntimeError("vmsnapd did not come up; its log:\n" + self.log())

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def unix(self, method, path, body=None, headers=None):
        """One request on the Unix socket: (status, headers, body bytes)."""
        return unix_request(self.sock, method, path, body, headers)

    def tcp(self, method, path, body=None, headers=None, token=True, source="127.0.0.1",
            timeout=30):
        """One request over TCP from the loopback address source: (status, headers, body)."""
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + self.token
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                       source_address=(source, 0))
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            c.close()

    def stop(self):
        """SIGTERM and wait; returns the exit code (None if it was not running)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def kill_peers(peer, work):
    """The VMM peers (tests/peer) a test's daemon started under work (they outlive the daemon
    by design), by pid: every process whose command line starts with the peer's path and
    names work."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(peer.encode()) and work.encode() in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def start_peer_daemon(work, peer, guest, vmm_delay=0):
    """A started vmsnapd under work/d whose sandboxes run on the Cloud Hypervisor driver with
    tests/peer/ch-peer as the VMM (no guest boots; the guest image's kernel and disk are
    still needed). vmm_delay: seconds each VMM start waits first (a step that takes long).
    Unjailed: the VMM is the peer by a host path, which a jail does not hold (the jailed
    driver is e2e/sandbox-cloud-hypervisor's). Kill the peers with kill_peers(peer, work)."""
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir)
    vmm = os.path.join(bindir, "cloud-hypervisor")
    with open(vmm, "w") as f:
        f.write("#!/bin/sh\ncase \" $* \" in *\" --version \"*) ;; *) sleep %s ;; esac\n"
                "exec '%s' \"$@\"\n" % (vmm_delay, peer))
    os.chmod(vmm, 0o755)
    path = bindir + ":" + os.environ.get("PATH", "/usr/bin:/bin")
    d = Vmsnapd(os.path.join(work, "d"), ["--vmm", "cloud-hypervisor", "--guest-dir", guest,
                                          "--insecure-no-jail"],
                {"PATH": path, "VMSNAP_VMM_START_TIMEOUT_MS": "%d" % (5000 + vmm_delay * 1000)})
    os.makedirs(d.work)
    d.start()
    return d


def need_peer_setup(test, cli, peer, src, guest):
    """Skips test unless the CLI, vmsnapd and the ch-peer are built and the guest image's
    kernel and disk are in guest (built there by guest/build.sh when missing): what a test
    of sandboxes on the peer (start_peer_daemon) needs."""
    for what, ok in (("the vmsnap CLI is not built ($VMSNAP_CLI)", cli and os.access(cli, os.X_OK)),
                     ("vmsnapd is not built", os.access(VMSNAPD, os.X_OK)),
                     ("the ch-peer is not built ($VMSNAP_PEER_ch_peer)",
                      peer and os.access(peer, os.X_OK))):
        if not ok:
            skip(test, what)
    if all(os.path.exists(os.path.join(guest, f)) for f in ("vmlinuz", "rootfs.ext4")):
        return
    rc = subprocess.call([os.path.join(src, "guest", "build.sh"), guest],
                         stdout=subprocess.DEVNULL)
    if rc != 0:
        skip(test, "no guest image (guest/build.sh exit %d)" % rc)
