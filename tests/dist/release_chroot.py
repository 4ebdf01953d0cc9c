#!/usr/bin/env python3
"""The release tarball as a user gets it, in a clean Debian chroot (driven by
tests/dist/release-chroot.sh, which runs this in a private mount namespace so that every
mount below vanishes with it):

  bind /dev, /dev/shm, /proc, /sys (recursively: cgroups) into the chroot -> copy the tarball in -> unpack it and
  run its install.sh there (default prefix /opt/vmsnap, state /var/lib/vmsnap, systemd unit)
  -> every library any installed program or QEMU module loads resolves inside /opt/vmsnap
  or is glibc's (the chroot's loader says so) -> vmsnapd started exactly as the installed
  unit's ExecStart and PATH say, with $NOTIFY_SOCKET: READY=1 -> with the installed CLI:
  create -> exec -> pause -> resume -> template -> spawn (bundled QEMU, TCG) -> rm ->
  SIGTERM: STOPPING=1, exit 0.

usage: release_chroot.py ROOT TARBALL MEM_ROOT
Exit 0 pass, 1 fail. No timing assertions (waits are generous upper bounds).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

PREFIX = "/opt/vmsnap"
STATE = "/var/lib/vmsnap"
GLIBC = re.compile(r"^(ld-linux-x86-64\.so\.2|lib(c|m|mvec|dl|rt|pthread|resolv|util|anl|"
                   r"BrokenLocale|thread_db|nss_[a-z]+|c_malloc_debug)\.so\.[0-9.]+)$")


class Fail(Exception):
    pass


def log(*a):
    print("release-chroot:", *a, flush=True)


def check(cond, what):
    if not cond:
        raise Fail(what)


def bind_mounts(root):
    """The root itself, then /sys recursively: vmsnapd jails its VMMs and needs the cgroup
    mounts below it, as on a real host."""
    # The chroot's / must be a mount point, as a host's or a container's is: the jail makes
    # it private and pivots away from it.
    subprocess.check_call(["mount", "--bind", root, root])
    for path in ("/dev", "/dev/shm", "/proc", "/sys"):
        target = root + path
        os.makedirs(target, exist_ok=True)
        subprocess.check_call(["mount", "--rbind" if path == "/sys" else "--bind", path, target])


def in_chroot(root, argv, env=None, check_rc=True, timeout=600):
    """Runs argv inside the chroot with a clean environment; returns stdout."""
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8"}
    base.update(env or {})
    p = subprocess.run(["chroot", root] + argv, env=base, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise Fail("in the chroot, %s exited %d:\n%s%s" % (" ".join(argv), p.returncode,
                                                          p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout


def install(root, tarball):
    shutil.copy(tarball, os.path.join(root, "root"))
    name = os.path.basename(tarball)
    in_chroot(root, ["tar", "-xzf", "/root/" + name, "-C", "/root"])
    top = "/root/" + name[:-len(".tar.gz")]
    log(in_chroot(root, ["sh", top + "/install.sh"]).strip().replace("\n", "; "))
    st = os.stat(root + STATE)
    check(st.st_mode & 0o777 == 0o700, "%s has mode %o, not 0700" % (STATE, st.st_mode & 0o777))


def elf_files(root):
    for d in ("bin", "lib/x86_64-linux-gnu/qemu"):
        top = os.path.join(root + PREFIX, d)
        for f in sorted(os.listdir(top)) if os.path.isdir(top) else []:
            with open(os.path.join(top, f), "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    yield os.path.join(PREFIX, d, f)


def check_libraries(root):
    """Each library the chroot's loader resolves is bundled, or glibc's."""
    count = 0
    for f in elf_files(root):
        out = in_chroot(root, ["/lib64/ld-linux-x86-64.so.2", "--list", f])
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (.*) \(0x", line) or re.match(r"\s*(\S+) => (not found)", line)
            if not m:
                continue
            soname, path = m.group(1), m.group(2)
            check(path != "not found", "%s: %s not found in the chroot" % (f, soname))
            path = os.path.normpath(path)  # $ORIGIN/../lib comes out as bin/../lib
            check(path.startswith(PREFIX + "/lib/") or GLIBC.match(soname),
                  "%s loads %s from %s, not from the release" % (f, soname, path))
            count += 1
    log("every library of the installed programs resolves in %s/lib or is glibc's "
        "(%d resolutions)" % (PREFIX, count))


def unit_service(root):
    """ExecStart (as argv) and PATH from the installed unit file."""
    with open(root + "/etc/systemd/system/vmsnapd.service") as f:
        text = f.read()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()
    path = re.search(r"^Environment=PATH=(.*)$", text, re.M).group(1)
    check(re.search(r"^Type=notify$", text, re.M), "the unit is not Type=notify")
    return exec_start, path


class Daemon:
    def __init__(self, root, mem_root):
        self.root, self.mem_root = root, mem_root
        self.notify_path = root + "/run/vmsnap-notify.sock"
        self.proc = None

    def start(self):
        argv, path = unit_service(self.root)
        os.makedirs(os.path.dirname(self.notify_path), exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.listener.bind(self.notify_path)
        self.listener.settimeout(300)
        # as the unit says, plus what a shared test machine needs: its own guest-RAM folder
        # and a free TCP port
        argv += ["--mem-root", self.mem_root, "--listen", "127.0.0.1:0", "--tick-interval", "1"]
        self.log = open(os.path.join(os.path.dirname(self.root), "vmsnapd.log"), "w")
        self.proc = subprocess.Popen(
            ["chroot", self.root] + argv, stdout=self.log, stderr=subprocess.STDOUT,
            env={"PATH": path, "NOTIFY_SOCKET": "/run/vmsnap-notify.sock", "LANG": "C.UTF-8"})
        try:
            msg = self.listener.recv(4096).decode()
        except socket.timeout:
            raise Fail("vmsnapd sent no READY=1 (see vmsnapd.log)")
        check(msg == "READY=1", "vmsnapd's first notification: %r" % msg)
        log("vmsnapd (pid %d) started as the unit says; READY=1" % self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            msg = self.listener.recv(4096).decode()
        except socket.timeout:
            msg = None
        check(msg == "STOPPING=1", "vmsnapd on SIGTERM notified %r" % msg)
        check(self.proc.wait(120) == 0, "vmsnapd exited %s" % self.proc.returncode)
        log("SIGTERM: STOPPING=1, exit 0")


def cli(root, verb, *args):
    """The installed CLI, `vmsnap sandbox VERB --json ARGS`; returns the parsed object."""
    out = in_chroot(root, [PREFIX + "/bin/vmsnap", "sandbox", verb, "--json"] + list(args))
    return json.loads(out)


def sh(root, ref, cmd):
    r = cli(root, "exec", "--shell", ref, "--", cmd)
    check(r["exit_code"] == 0, "exec %r in %s: %s" % (cmd, ref, r))
    return r["stdout"].strip()


def lifecycle(root):
    sb = cli(root, "create", "--name", "box")
    check(sb["state"] == "running", "create: %s" % sb)
    log("create: %s running, pid %s" % (sb["id"], sb["pid"]))
    check(sh(root, "box", "echo kept > /mnt/data/f && sync && cat /mnt/data/f") == "kept",
          "exec wrote no file")
    log("exec: ok")
    p = cli(root, "pause", "box")
    check(p["state"] == "paused", "pause: %s" % p)
    check(not os.path.exists("/proc/%d" % sb["pid"]) or
          open("/proc/%d/stat" % sb["pid"]).read().split(")")[-1].split()[0] == "Z",
          "the VMM %d still runs after pause" % sb["pid"])
    log("pause: paused, VMM gone")
    r = cli(root, "resume", "box")
    check(r["state"] == "running", "resume: %s" % r)
    check(sh(root, "box", "cat /mnt/data/f") == "kept", "the file is lost after resume")
    log("resume: running, file kept")
    t = cli(root, "snapshot", "box", "--name", "tpl")
    check(t["name"] == "tpl", "template: %s" % t)
    log("template: %s" % t["id"])
    c = cli(root, "spawn", "tpl")
    check(c["state"] == "running", "spawn: %s" % c)
    check(sh(root, c["id"], "cat /mnt/data/f") == "kept", "the spawned sandbox lost the file")
    log("spawn: %s running, file kept" % c["id"])
    for ref in ("box", c["id"]):
        in_chroot(root, [PREFIX + "/bin/vmsnap", "sandbox", "rm", ref])


def main():
    root, tarball, mem_root = sys.argv[1], sys.argv[2], sys.argv[3]
    bind_mounts(root)
    install(root, tarball)
    check_libraries(root)
    d = Daemon(root, mem_root)
    try:
        d.start()
        lifecycle(root)
        d.stop()
    finally:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    log("passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Fail, subprocess.TimeoutExpired) as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)
