#!/usr/bin/env python3
"""Attack (issue 8 B), end to end through vmsnapd with a real QEMU guest: the disk overlay of a
paused sandbox is swapped for one whose qcow2 header names a host file holding a secret (what
a hostile archive or a guest-chosen header could carry), made with `qemu-img rebase -u`.
After resume the guest reads /dev/vda where its overlay holds no data: it must see the
pinned base image there, never a byte of the secret. On a driver that lets QEMU follow the
header's backing name (`-drive file=...,format=qcow2`), the guest reads the secret.

Exit 0 pass, 1 fail, 77 skip (no vmsnapd, no qemu/qemu-img, no guest image).
"""
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_lifecycle as lc  # noqa: E402  (the Daemon harness, sh(), check())

BACKUP_SB_KIB = lc.BACKUP_SB_KIB
READ_KIB = 2


def log(*a):
    print("disk-backing-attack:", *a, flush=True)


def write_secret(path, size, marker):
    """A raw file the size of the base image, every 512-byte sector starting with marker."""
    sector = marker + b"\0" * (512 - len(marker))
    with open(path, "wb") as f:
        chunk = sector * 2048  # 1 MiB
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(sector * ((size % len(chunk)) // 512))
    os.chmod(path, 0o600)


def attack(d, work):
    sb = d.ok("POST", "/v1/sandboxes", {"name": "victim"})
    sid = sb["id"]
    p = d.ok("POST", "/v1/sandboxes/%s/pause" % sid)
    lc.check(p["state"] == "paused", "pause: %s" % p)
    overlay = os.path.join(d.root, "snapshots", p["snapshot_id"], "rootfs.qcow2")
    lc.check(os.path.exists(overlay), "no overlay at %s" % overlay)
    marker = b"VMSNAP-SECRET-" + secrets.token_hex(8).encode()
    secret = os.path.join(work, "host-secret.raw")
    write_secret(secret, os.path.getsize(os.path.join(d.guest, "rootfs.ext4")), marker)
    subprocess.check_call(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", secret,
                           "-F", "raw", overlay])
    info = subprocess.check_output(["qemu-img", "info", "-U", overlay]).decode()
    lc.check(secret in info, "the rebase did not name the secret: %s" % info)
    log("the paused sandbox's overlay now names %s as its backing file" % secret)

    r = d.ok("POST", "/v1/sandboxes/%s/resume" % sid)
    lc.check(r["state"] == "running", "resume: %s" % r)
    lc.sh(d, sid, "sync; echo 3 > /proc/sys/vm/drop_caches")
    # Blocks the guest never wrote: read through the overlay from its backing.
    raw = lc.sh(d, sid, "dd if=/dev/vda bs=1024 skip=%d count=%d 2>/dev/null | od -An -c | "
                "tr -d ' \\n'" % (BACKUP_SB_KIB, READ_KIB))
    lc.check(marker.decode() not in raw, "the guest read the host secret through the "
             "overlay's backing file name")
    got = lc.sh(d, sid, "dd if=/dev/vda bs=1024 skip=%d count=%d 2>/dev/null | md5sum"
                % (BACKUP_SB_KIB, READ_KIB)).split()[0]
    lc.check(got == d.base_md5, "the guest does not see the pinned base image (%s != %s)"
             % (got, d.base_md5))
    head = lc.sh(d, sid, "dd if=/dev/vda bs=512 count=1 2>/dev/null | od -An -c | tr -d ' \\n'")
    lc.check(marker.decode() not in head, "the guest read the secret at sector 0")
    log("the guest sees the pinned base, not the secret")
    d.ok("DELETE", "/v1/sandboxes/%s" % sid)


def main():
    if not lc.BUILD or not os.access(lc.VMSNAPD, os.X_OK):
        lc.skip("vmsnapd not built (VMSNAP_BUILD=%r)" % lc.BUILD)
    if not shutil.which("qemu-system-x86_64") or not shutil.which("qemu-img"):
        lc.skip("qemu-system-x86_64 or qemu-img is not installed")
    lc.build_guest()
    work = tempfile.mkdtemp(prefix="vmsnap-e2e-attack-")
    d = lc.Daemon(work, lc.GUEST)
    with open(os.path.join(lc.GUEST, "rootfs.ext4"), "rb") as f:
        f.seek(BACKUP_SB_KIB * 1024)
        d.base_md5 = hashlib.md5(f.read(READ_KIB * 1024)).hexdigest()
    ok = False
    try:
        d.start()
        attack(d, work)
        ok = True
        log("passed")
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        try:
            if d.proc and d.proc.poll() is None:
                for s in (d.call("GET", "/v1/sandboxes")[1] or {}).get("sandboxes", []):
                    d.call("DELETE", "/v1/sandboxes/%s" % s["id"])
        except Exception:
            pass
        d.stop()
        lc.remove_work(d, work)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)
