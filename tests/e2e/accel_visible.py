#!/usr/bin/env python3
"""The accelerator is visible (issue 10), with a real vmsnapd and, for the last part, a
real QEMU guest:

  - VMSNAP_ACCEL=tcg: the start log line and /healthz say tcg, forced;
  - VMSNAP_KVM_DEVICE naming a missing device: tcg, and the reason names that device;
  - a .accel-probe verdict for this kernel, QEMU and boot is believed at start (no probe);
    one of another boot id, or another QEMU, is not;
  - VMSNAP_KVM_DEVICE=/dev/null (it opens, so KVM is probed) on this KVM-less machine: the
    first create boots the probe under -accel kvm, QEMU refuses it, the sandbox runs under
    TCG; GET and `vmsnap sandbox inspect` say tcg and QEMU's reason; .accel-probe is 0600
    with the kernel release, the QEMU version and the boot id; a restarted daemon reports
    the remembered verdict at start. (On a host where KVM works the verdict is kvm; the
    test checks that everything agrees with the file.)

Exit 0 pass, 1 fail, 77 skip. No timing assertions.
"""
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_lifecycle import Daemon, Fail, VMSNAPD, build_guest, check  # noqa: E402

CLI = os.environ.get("VMSNAP_CLI", os.path.join(os.environ.get("VMSNAP_BUILD", ""), "vmsnap"))


def log(*a):
    print("accel-visible:", *a, flush=True)


def skip(why):
    print("SKIP:", why, flush=True)
    sys.exit(77)


def qemu_version():
    out = subprocess.check_output(["qemu-system-x86_64", "--version"], text=True)
    return re.search(r"version (\d+\.\d+\.\d+)", out).group(1)


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def log_text(d):
    with open(os.path.join(d.work, "vmsnapd.log")) as f:
        return f.read()


def life(d, env, what):
    """Starts d with env, returns (/healthz, the daemon's accelerator log line); stops it."""
    open(os.path.join(d.work, "vmsnapd.log"), "w").close()
    d.start(env)
    try:
        h = d.ok("GET", "/healthz")
    finally:
        d.stop()
    lines = [l for l in log_text(d).splitlines() if "accelerator:" in l]
    check(len(lines) == 1, "%s: expected one accelerator log line, got %r" % (what, lines))
    check(h["accelerator"] in lines[0] and h["accelerator_reason"] in lines[0],
          "%s: log %r disagrees with /healthz %r" % (what, lines[0], h))
    log("%s: %s (%s)" % (what, h["accelerator"], h["accelerator_reason"]))
    return h


def write_verdict(d, accel, **key):
    fields = {"accel": accel, "qemu": qemu_version(), "kernel": platform.release(),
              "boot_id": boot_id(), "reason": "planted by the test", "time": 1}
    fields.update(key)
    os.makedirs(os.path.join(d.root, "sandboxes"), exist_ok=True)
    with open(os.path.join(d.root, "sandboxes", ".accel-probe"), "w") as f:
        json.dump(fields, f)


def test_without_guest(d, work):
    h = life(d, {"VMSNAP_ACCEL": "tcg"}, "forced")
    check(h["accelerator"] == "tcg" and "VMSNAP_ACCEL=tcg" in h["accelerator_reason"],
          "VMSNAP_ACCEL=tcg: %r" % h)
    missing = os.path.join(work, "no-kvm")
    h = life(d, {"VMSNAP_KVM_DEVICE": missing}, "no device")
    check(h["accelerator"] == "tcg" and missing in h["accelerator_reason"] and
          "does not open" in h["accelerator_reason"], "missing device: %r" % h)
    opens = {"VMSNAP_KVM_DEVICE": "/dev/null"}
    write_verdict(d, "kvm")
    h = life(d, opens, "remembered")
    check(h["accelerator"] == "kvm" and "planted by the test" in h["accelerator_reason"] and
          "remembered" in h["accelerator_reason"], "a matching verdict is not believed: %r" % h)
    for key in ({"boot_id": "00000000-0000-0000-0000-000000000000"}, {"qemu": "1.0.0"},
                {"kernel": "0.0.0-other"}):
        write_verdict(d, "kvm", **key)
        h = life(d, opens, "stale %s" % list(key)[0])
        check(h["accelerator"] == "unknown" and "probes" in h["accelerator_reason"],
              "a verdict of another %s is believed: %r" % (list(key)[0], h))
    os.unlink(os.path.join(d.root, "sandboxes", ".accel-probe"))


def inspect(d, ref):
    out = subprocess.run([CLI, "sandbox", "inspect", ref, "--socket", d.sock],
                         capture_output=True, text=True, timeout=60)
    check(out.returncode == 0, "inspect: %s" % out.stderr)
    return out.stdout


def test_probe(d):
    opens = {"VMSNAP_KVM_DEVICE": "/dev/null", "VMSNAP_KVM_PROBE_MS": "20000"}
    d.start(opens)
    sid = None
    try:
        sb = d.ok("POST", "/v1/sandboxes", {"name": "accel"})
        sid = sb["id"]
        path = os.path.join(d.root, "sandboxes", ".accel-probe")
        check(os.path.exists(path), "the probe left no %s" % path)
        st = os.stat(path)
        check(stat.S_IMODE(st.st_mode) == 0o600, ".accel-probe mode %o" % st.st_mode)
        with open(path) as f:
            v = json.load(f)
        check(v["kernel"] == platform.release() and v["boot_id"] == boot_id() and
              v["qemu"] == qemu_version(), ".accel-probe key: %r" % v)
        got = d.ok("GET", "/v1/sandboxes/accel")
        check(got["accelerator"] == v["accel"] and v["reason"] in got["accelerator_reason"],
              "GET says %r, the probe %r" % (got, v))
        if v["accel"] == "tcg":
            check("kvm" in v["reason"].lower(), "the TCG verdict does not say why: %r" % v)
        text = inspect(d, "accel")
        check(("accelerator   %s (" % v["accel"]) in text and v["reason"] in text,
              "inspect does not show the accelerator:\n%s" % text)
        h = d.ok("GET", "/healthz")
        check(h["accelerator"] == v["accel"], "/healthz %r after the probe %r" % (h, v))
        log("probe: %s (%s)" % (v["accel"], v["reason"]))
    finally:
        if sid:
            d.call("DELETE", "/v1/sandboxes/%s" % sid)
        d.stop()
    h = life(d, opens, "after the probe")
    check(h["accelerator"] == v["accel"] and "remembered" in h["accelerator_reason"],
          "a restarted daemon does not report the remembered verdict: %r" % h)


def main():
    if not os.access(VMSNAPD, os.X_OK) or not os.access(CLI, os.X_OK):
        skip("vmsnapd or vmsnap not built")
    if not shutil.which("qemu-system-x86_64"):
        skip("qemu-system-x86_64 is not installed (scripts/setup.sh installs it)")
    build_guest()
    work = tempfile.mkdtemp(prefix="vmsnap-accel-")
    d = Daemon(work)
    ok = False
    try:
        test_without_guest(d, work)
        test_probe(d)
        ok = True
    except Fail as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(d.mem, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
