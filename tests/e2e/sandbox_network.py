#!/usr/bin/env python3
"""Sandbox networking through vmsnapd with real QEMU guests (issue 12, docs/network.md):
a daemon with --network, a 2-slot pool and its own netns dir; bad `network` bodies -> 400
and nothing made; sandbox A (egress allow) and B (egress deny) each run busybox httpd in the
guest, both guests have the same address 192.168.241.2 on eth0, and the host fetches each
page through the address POST /ports returns; a third sandbox -> 409 pool_exhausted leaving
nothing; a port out of range -> 400; pause -> resume of A keeps its address and a new TCP
connection reaches its guest again; destroy leaves no namespace pin and no host link.

Exit 0 pass, 1 fail, 77 skip (no vmsnapd, no qemu, no guest image, not root).
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_lifecycle as lc  # noqa: E402


def log(*a):
    print("sandbox-network:", *a, flush=True)


def host_links():
    """The host ends of sandbox veths (src/net/ names them vmsn<11 hex>)."""
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith("vmsn"))


def pins(netns_dir):
    try:
        return sorted(n for n in os.listdir(netns_dir) if n.startswith("vmsnap-"))
    except FileNotFoundError:
        return []


def fetch(address, path="/index.html"):
    with urllib.request.urlopen("http://%s%s" % (address, path), timeout=30) as r:
        return r.read().decode().strip()


def serve(d, sid, text):
    """busybox httpd in the guest on port 8080 serving `text` (it daemonizes)."""
    lc.sh(d, sid, "mkdir -p /tmp/www && echo %s > /tmp/www/index.html && "
                  "busybox httpd -p 8080 -h /tmp/www" % text)


def port(d, sid, p=8080):
    r = d.ok("POST", "/v1/sandboxes/%s/ports" % sid, {"port": p})
    return r["address"]


def run(d, work, netns_dir, before_links):
    d.start()
    # Bad input: 400, nothing made.
    for body in ({"network": {"egress": ["10.0.0.1/8"]}}, {"network": 5},
                 {"network": {"egress": "maybe"}}, {"network": {"egress": []}},
                 {"network": {"egress": "allow", "x": 1}}):
        st, obj = d.call("POST", "/v1/sandboxes", body)
        lc.check(st == 400, "create %r -> %s %s, want 400" % (body, st, obj))
    st, obj = d.call("POST", "/v1/sandboxes", {"network": {"egress": ["10.0.0.1/8"]}})
    lc.check("host bits" in obj["error"]["message"], "no clear CIDR message: %s" % obj)
    lc.check(pins(netns_dir) == [] and host_links() == before_links, "bad input left objects")

    a = d.ok("POST", "/v1/sandboxes", {"name": "net-a"})
    b = d.ok("POST", "/v1/sandboxes", {"name": "net-b", "network": {"egress": "deny"}})
    na, nb = a["network"], b["network"]
    lc.check(na and nb and na["address"] != nb["address"], "addresses: %s %s" % (na, nb))
    lc.check(na["egress"] == "allow" and nb["egress"] == "deny", "egress: %s %s" % (na, nb))
    got = d.ok("GET", "/v1/sandboxes/net-a")["network"]
    lc.check(got == na, "GET network %s != create's %s" % (got, na))
    for s in (a, b):
        ip = lc.sh(d, s["id"], "ip -4 -o addr show eth0")
        lc.check("192.168.241.2/30" in ip, "guest eth0: %s" % ip)
        serve(d, s["id"], "page-" + s["name"])
    pa, pb = port(d, a["id"]), port(d, b["id"])
    lc.check(pa == na["address"] + ":8080", "port address %s" % pa)
    lc.check(fetch(pa) == "page-net-a", "A's page")
    lc.check(fetch(pb) == "page-net-b", "B's page")
    log("A at %s, B at %s: each guest 192.168.241.2 serves its own page" % (pa, pb))

    # The pool has two slots: a third sandbox is refused and leaves nothing.
    n_pins, n_links = len(pins(netns_dir)), len(host_links())
    st, obj = d.call("POST", "/v1/sandboxes", {"name": "net-c"})
    lc.check(st == 409 and obj["error"]["code"] == "pool_exhausted" and
             "pool is used up" in obj["error"]["message"],
             "third sandbox -> %s %s, want 409 pool_exhausted" % (st, obj))
    lc.check(len(pins(netns_dir)) == n_pins and len(host_links()) == n_links,
             "the refused create left objects")
    lc.check(d.call("GET", "/v1/sandboxes/net-c")[0] == 404, "the refused sandbox has a row")
    for bad in ({"port": 0}, {"port": 70000}, {"port": "80"}, {}):
        st, obj = d.call("POST", "/v1/sandboxes/%s/ports" % a["id"], bad)
        lc.check(st == 400, "ports %r -> %s %s, want 400" % (bad, st, obj))

    # Pause keeps the namespace and the address; after resume a new connection works.
    d.ok("POST", "/v1/sandboxes/%s/pause" % a["id"])
    lc.check("vmsnap-" + a["id"] in pins(netns_dir), "pause removed the namespace")
    r = d.ok("POST", "/v1/sandboxes/%s/resume" % a["id"])
    lc.check(d.ok("GET", "/v1/sandboxes/%s" % a["id"])["network"] == na,
             "resume changed the network: %s" % r)
    lc.check(fetch(pa) == "page-net-a", "A's page after resume")
    log("pause/resume: A still serves at %s" % pa)

    for s in (a, b):
        d.ok("DELETE", "/v1/sandboxes/%s" % s["id"])
    lc.check(pins(netns_dir) == [], "pins left: %s" % pins(netns_dir))
    lc.check(host_links() == before_links, "links left: %s" % host_links())
    log("destroy left no pin and no link")


def main():
    if os.geteuid() != 0:
        lc.skip("needs root (namespaces, jails)")
    if not os.access(lc.VMSNAPD, os.X_OK):
        lc.skip("no vmsnapd at %s" % lc.VMSNAPD)
    if not shutil.which("qemu-system-x86_64"):
        lc.skip("qemu-system-x86_64 is not installed")
    if not os.path.exists("/dev/net/tun"):
        lc.skip("no /dev/net/tun")
    rc = subprocess.call([os.path.join(lc.SRC, "guest", "build.sh"), lc.GUEST],
                         stdout=subprocess.DEVNULL)
    if rc == 2:
        lc.skip("the guest image cannot be built here (guest/build.sh exit 2)")
    if rc != 0:
        raise lc.Fail("guest/build.sh failed (%d)" % rc)
    work = tempfile.mkdtemp(prefix="vmsnap-e2e-net-")
    netns_dir = os.path.join(work, "netns")
    pool = "10.201.%d.%d/29" % (random.randint(0, 255), 8 * random.randint(0, 31))
    d = lc.Daemon(work, lc.GUEST, extra_args=["--network", "--net-pool", pool,
                                              "--netns-dir", netns_dir])
    before_links = host_links()
    ok = False
    try:
        run(d, work, netns_dir, before_links)
        ok = True
        log("passed")
    except (lc.Fail, OSError) as e:
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
        lc.kill_leftovers(d)
        subprocess.call(["umount", netns_dir], stderr=subprocess.DEVNULL)
        if os.environ.get("VMSNAP_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(d.mem, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)
