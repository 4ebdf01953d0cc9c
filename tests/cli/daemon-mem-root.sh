#!/bin/bash
# vmsnapd's default --mem-root is one per --root (/dev/shm/vmsnap-<16 hex>), so two daemons
# with different roots never share guest memory; an existing mem root owned by another uid,
# or not 0700, is refused at start with an error naming it, and nothing is changed. Needs no
# VM. No timing assertions.
set -u

VMSNAPD=${VMSNAPD:-${VMSNAP_BUILD:-}/vmsnapd}
if [ ! -x "$VMSNAPD" ]; then
        echo "daemon-mem-root: vmsnapd is not built ($VMSNAPD); skipping"
        exit 77
fi
if [ "$(id -u)" != 0 ]; then
        echo "daemon-mem-root: needs root (to hand a directory to another uid); skipping"
        exit 77
fi

exec python3 - "$VMSNAPD" <<'PY'
import os, re, shutil, signal, socket, stat, subprocess, sys, tempfile, time

vmsnapd = sys.argv[1]
work = tempfile.mkdtemp(prefix="vmsnap-memroot-")
made = []  # mem roots the daemons made under /dev/shm, removed at the end
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, flush=True)


def start(name, mem_root=None):
    """Runs vmsnapd on root work/<name>; returns (process, log path)."""
    root, sock = os.path.join(work, name), os.path.join(work, name + ".sock")
    logp = os.path.join(work, name + ".log")
    args = [vmsnapd, "--root", root, "--socket", sock, "--no-tcp", "--insecure-no-jail",
            "--guest-dir", os.path.join(work, "no-guest")]
    if mem_root:
        args += ["--mem-root", mem_root]
    env = dict(os.environ, VMSNAP_ACCEL="tcg")
    p = subprocess.Popen(args, stdout=open(logp, "w"), stderr=subprocess.STDOUT, env=env)
    return p, logp, sock


def serving(p, sock):
    for _ in range(600):
        if p.poll() is not None:
            return False
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def mem_root_of(logp):
    m = re.search(r"guest memory in (\S+)", open(logp).read())
    return m.group(1) if m else None


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        p.wait(60)


try:
    roots = []
    for name in ("a", "b"):
        p, logp, sock = start(name)
        ok = serving(p, sock)
        check(ok, "%s: vmsnapd did not start: %s" % (name, open(logp).read()[-500:]))
        stop(p)
        m = mem_root_of(logp)
        check(m is not None and re.fullmatch(r"/dev/shm/vmsnap-[0-9a-f]{16}", m),
              "%s: default mem root %r" % (name, m))
        if m:
            made.append(m)
            st = os.lstat(m)
            check(stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and
                  st.st_uid == os.geteuid(), "%s: %s is not a 0700 dir of ours" % (name, m))
        roots.append(m)
    check(roots[0] != roots[1], "two roots share the mem root %s" % roots[0])
    p, logp, sock = start("a")  # the same root again: the same directory
    check(serving(p, sock), "a again: did not start")
    stop(p)
    check(mem_root_of(logp) == roots[0], "a again: %s, first %s" % (mem_root_of(logp), roots[0]))

    for kind in ("foreign", "mode"):
        bad = os.path.join(work, kind + "-mem")
        os.mkdir(bad, 0o700)
        os.chmod(bad, 0o700)
        if kind == "foreign":
            os.chown(bad, 65534, 65534)
        else:
            os.chmod(bad, 0o755)
        before = os.lstat(bad)
        p, logp, sock = start(kind, bad)
        try:
            rc = p.wait(120)
        except subprocess.TimeoutExpired:
            stop(p)
            rc = None
        text = open(logp).read()
        want = "owned by uid 65534" if kind == "foreign" else "mode 0755, not 0700"
        check(rc not in (0, None), "%s mem root: vmsnapd started (exit %s)" % (kind, rc))
        check(bad in text and want in text, "%s mem root: error does not say %r:\n%s" %
              (kind, want, text[-600:]))
        after = os.lstat(bad)
        check((after.st_mode, after.st_uid) == (before.st_mode, before.st_uid) and
              os.listdir(bad) == [], "%s mem root: changed by the refused start" % kind)
        print("daemon-mem-root: %s refused: %s" % (kind, [l for l in text.splitlines()
                                                         if bad in l][:1]), flush=True)
finally:
    for m in made:
        shutil.rmtree(m, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if failures else 0)
PY
