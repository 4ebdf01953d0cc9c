#!/usr/bin/env python3
"""Sandbox networking through vmsnapd with real QEMU guests (issue 12, docs/network.md).

The whole test runs in a private network and mount namespace of its own (it re-executes
itself under `unshare --net --mount`): its daemon cannot collide with another `--network`
daemon on this host, it may turn on IPv4 forwarding, the objects it counts are only its own,
and whatever a failure leaves dies with the namespace. A "world" namespace, joined to it by a
veth, runs HTTP servers at 198.51.100.2 and 198.51.100.130.

Default run (one daemon, a 4-slot pool):
- bad `network` bodies -> 400 and nothing made (CLI: a bad CIDR named, exit 1;
  --egress with --network none, exit 2);
- B, booted by `vmsnap sandbox create --egress deny`, serves busybox httpd on 8080 at
  192.168.241.2; the host fetches its page at the address `vmsnap sandbox port` and POST
  /ports give; `get` shows address and egress; B is refused both world servers; ports out of
  range -> 400 (CLI: exit 1, or 2 when not a number);
- a template made without --network spawns with no network on a --network daemon;
- template T from B; clone C1 spawned without a network inherits `deny`, and its guest forgot
  the neighbours B remembered (the agent's restore hook); C2 `--egress allow` reaches both
  world servers; C3 `--egress 198.51.100.0/25` reaches .2 and is refused .130; the pool is
  then full: a spawn -> 409 pool_exhausted, nothing left; C1, C2, C3 serve their own page at
  the same time, each through its own port, each guest at 192.168.241.2;
- pause -> resume of C2: namespace kept, a new connection to its port works, egress too;
- destroy -> pins, nsfs mounts, links, addresses, routes and the nft ruleset as before;
- 5 spawn/destroy cycles -> the same counts;
- the daemon SIGKILLed mid-create (net-create-host-rules; the sandbox is left in error,
  without a network) and mid-destroy (net-destroy-host-rules), restarted -> the same counts.

--long runs only: A, T from A, 50 cycles, the counts.
Exit 0 pass, 1 fail, 77 skip (no vmsnapd, no qemu, no guest image, not root, no unshare).
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_lifecycle as lc  # noqa: E402

CLI = os.environ.get("VMSNAP_CLI", os.path.join(lc.BUILD, "vmsnap"))
WORLD_IN, WORLD_OUT, CIDR = "198.51.100.2", "198.51.100.130", "198.51.100.0/25"
PRIVATE = "VMSNAP_NET_E2E_PRIVATE"
WORLD_SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("world %s\n" % self.connection.getsockname()[0]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("0.0.0.0", 9000), H)
print("ready", flush=True)
s.serve_forever()
"""


T0 = time.monotonic()


def log(*a):
    print("sandbox-network: [%5.1f s]" % (time.monotonic() - T0), *a, flush=True)


def run_cmd(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


# ---- what the daemon may leave behind, counted in this private namespace ---------------------

def pins(netns_dir):
    try:
        return sorted(n for n in os.listdir(netns_dir) if n.startswith("vmsnap-"))
    except FileNotFoundError:
        return []


def host_links(sysfs):
    """The host ends of sandbox veths (src/net/ names them vmsn<11 hex>)."""
    return sorted(n for n in os.listdir(os.path.join(sysfs, "class/net")) if n.startswith("vmsn"))


def counts(netns_dir, sysfs):
    with open("/proc/self/mountinfo") as f:
        nsfs = sorted(l.split()[4] for l in f if " - nsfs " in l)
    return {"pins": pins(netns_dir), "nsfs": nsfs,
            "links": sorted(os.listdir(os.path.join(sysfs, "class/net"))),
            "addresses": run_cmd("ip", "-o", "addr", "show").splitlines(),
            "routes": run_cmd("ip", "route", "show", "table", "all").splitlines(),
            "nft": run_cmd("nft", "list", "ruleset").splitlines()}


def check_counts(netns_dir, sysfs, base, what):
    now = counts(netns_dir, sysfs)
    for k in base:
        lc.check(now[k] == base[k], "%s left %s behind: %s (before: %s)" %
                 (what, k, sorted(set(now[k]) - set(base[k])), len(base[k])))


# ---- the private namespace and the world -----------------------------------------------------

def world_up(work):
    """A process in a new netns serving :9000 at both world addresses, joined to us by a veth
    wld0 (198.51.100.1) <-> wld1. Returns the process."""
    p = subprocess.Popen(["unshare", "--net", sys.executable, "-c", WORLD_SERVER],
                         stdout=subprocess.PIPE, text=True)
    lc.check(p.stdout.readline().strip() == "ready", "the world server did not start")
    run_cmd("ip", "link", "add", "wld0", "type", "veth", "peer", "name", "wld1")
    run_cmd("ip", "link", "set", "wld1", "netns", str(p.pid))
    with open("/proc/sys/net/ipv6/conf/wld0/disable_ipv6", "w") as f:  # no late link-local
        f.write("1")
    run_cmd("ip", "addr", "add", "198.51.100.1/24", "dev", "wld0")
    run_cmd("ip", "link", "set", "wld0", "up")
    inside = ["nsenter", "-t", str(p.pid), "-n", "ip"]
    for a in (WORLD_IN, WORLD_OUT):
        run_cmd(*inside, "addr", "add", a + "/24", "dev", "wld1")
    run_cmd(*inside, "link", "set", "wld1", "up")
    run_cmd(*inside, "link", "set", "lo", "up")
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this namespace's only
        f.write("1")
    return p


def sysfs_of_this_netns(work):
    """/sys/class/net lists the netns of whoever mounted sysfs: a fresh mount shows ours."""
    path = os.path.join(work, "sys")
    os.mkdir(path)
    run_cmd("mount", "-t", "sysfs", "sysfs", path)
    return path


# ---- guests ------------------------------------------------------------------------------------

def fetch(address, path="/index.html"):
    with urllib.request.urlopen("http://%s%s" % (address, path), timeout=30) as r:
        return r.read().decode().strip()


def reaches(d, sid, addr):
    """True when the guest fetched the world server at addr, False when it was refused."""
    # busybox nc, not wget: Debian's static busybox wget dies of SIGSEGV
    r = d.ok("POST", "/v1/sandboxes/%s/exec" % sid,
             {"cmd": "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 %s 9000" % addr,
              "timeout_ms": 20000})
    if r["exit_code"] == 0:
        lc.check(r["stdout"].strip().endswith("world " + addr), "odd world answer %s" % r)
        return True
    lc.check("refused" in r["stderr"], "neither reached nor refused %s: %s" % (addr, r))
    return False


def check_egress(d, sb, want_in, want_out):
    got = (reaches(d, sb["id"], WORLD_IN), reaches(d, sb["id"], WORLD_OUT))
    lc.check(got == (want_in, want_out), "%s (egress %s) reached %s/%s = %s, want %s" %
             (sb["name"], sb["network"]["egress"], WORLD_IN, WORLD_OUT, got,
              (want_in, want_out)))


def serve(d, sid, text, start=True):
    """busybox httpd in the guest on port 8080 serving `text` (it daemonizes)."""
    lc.sh(d, sid, "mkdir -p /tmp/www && echo %s > /tmp/www/index.html%s" %
          (text, " && busybox httpd -p 8080 -h /tmp/www" if start else ""))


def port(d, sid, p=8080):
    return d.ok("POST", "/v1/sandboxes/%s/ports" % sid, {"port": p})["address"]


def cli(d, *args, want=0):
    r = subprocess.run([CLI, "sandbox", *args, "--socket", d.sock], capture_output=True,
                       text=True)
    lc.check(r.returncode == want, "vmsnap sandbox %s -> %d, want %d: %s%s" %
             (" ".join(args), r.returncode, want, r.stdout, r.stderr))
    return r.stdout + r.stderr


def cli_json(d, *args):
    return json.loads(cli(d, *args, "--json"))


# ---- the steps ---------------------------------------------------------------------------------

def bad_input(d, netns_dir, sysfs, base):
    for body in ({"network": {"egress": ["10.0.0.1/8"]}}, {"network": 5},
                 {"network": {"egress": "maybe"}}, {"network": {"egress": []}},
                 {"network": {"egress": "allow", "x": 1}}):
        st, obj = d.call("POST", "/v1/sandboxes", body)
        lc.check(st == 400, "create %r -> %s %s, want 400" % (body, st, obj))
    st, obj = d.call("POST", "/v1/sandboxes", {"network": {"egress": ["10.0.0.1/8"]}})
    lc.check("host bits" in obj["error"]["message"], "no clear CIDR message: %s" % obj)
    out = cli(d, "create", "--egress", "10.0.0.0/8,300.1.2.0/24", want=1)
    lc.check("300.1.2.0/24" in out, "the CLI does not name the bad CIDR: %s" % out)
    cli(d, "create", "--egress", "deny", "--network", "none", want=2)
    check_counts(netns_dir, sysfs, base, "bad input")


def first_sandbox(d):
    """B: booted with --egress deny through the CLI, serving its page."""
    b = cli_json(d, "create", "--name", "net-b", "--egress", "deny")
    nb = b["network"]
    lc.check(nb and nb["egress"] == "deny", "B's network: %s" % nb)
    lc.check(d.ok("GET", "/v1/sandboxes/net-b")["network"] == nb, "GET network != create's")
    shown = cli(d, "get", "net-b")
    lc.check(nb["address"] in shown and "egress        deny" in shown, "get: %s" % shown)
    ip = lc.sh(d, b["id"], "ip -4 -o addr show eth0")
    lc.check("192.168.241.2/30" in ip, "guest eth0: %s" % ip)
    serve(d, b["id"], "page-net-b")
    pb = cli(d, "port", "net-b", "8080").strip()
    lc.check(pb == nb["address"] + ":8080", "port address %s" % pb)
    lc.check(cli_json(d, "port", "net-b", "8080")["address"] == pb, "port --json")
    lc.check(port(d, b["id"]) == pb, "POST /ports")
    lc.check(fetch(pb) == "page-net-b", "B's page")
    check_egress(d, b, False, False)
    for bad in ({"port": 0}, {"port": 70000}, {"port": "80"}, {}):
        st, obj = d.call("POST", "/v1/sandboxes/%s/ports" % b["id"], bad)
        lc.check(st == 400, "ports %r -> %s %s, want 400" % (bad, st, obj))
    lc.check("65535" in cli(d, "port", "net-b", "70000", want=1), "CLI port 70000")
    cli(d, "port", "net-b", "http", want=2)
    log("B (egress deny) serves at %s and is refused the world" % pb)
    return b


def clones(d, b, netns_dir, sysfs):
    """Three clones of a template of B: inherited deny, --egress allow, --egress CIDR."""
    neigh = lc.sh(d, b["id"], "ip neigh show dev eth0")
    lc.check("192.168.241.1" in neigh, "B remembers no gateway: %r" % neigh)
    d.ok("POST", "/v1/sandboxes/%s/snapshot" % b["id"], {"name": "net-tpl"})
    log("template net-tpl made from B")
    c1 = d.ok("POST", "/v1/snapshots/net-tpl/sandboxes", {"name": "net-c1"})
    lc.check(c1["network"]["egress"] == "deny", "C1 did not inherit deny: %s" % c1["network"])
    neigh = lc.sh(d, c1["id"], "ip neigh show dev eth0")
    lc.check("192.168.241.1" not in neigh, "the restore hook kept B's neighbours: %r" % neigh)
    c2 = cli_json(d, "spawn", "net-tpl", "--name", "net-c2", "--egress", "allow")
    lc.check(c2["network"]["egress"] == "allow", "C2's override: %s" % c2["network"])
    c3 = cli_json(d, "spawn", "net-tpl", "--name", "net-c3", "--egress", CIDR)
    lc.check(c3["network"]["egress"] == [CIDR], "C3's override: %s" % c3["network"])
    # B and the three clones hold the 4 slots: a spawn is refused and leaves nothing.
    before = counts(netns_dir, sysfs)
    st, obj = d.call("POST", "/v1/snapshots/net-tpl/sandboxes", {"name": "net-c4"})
    lc.check(st == 409 and obj["error"]["code"] == "pool_exhausted" and
             "pool is used up" in obj["error"]["message"],
             "a fifth sandbox -> %s %s, want 409 pool_exhausted" % (st, obj))
    check_counts(netns_dir, sysfs, before, "the refused spawn")
    lc.check(d.call("GET", "/v1/sandboxes/net-c4")[0] == 404, "the refused sandbox has a row")
    cs = (c1, c2, c3)
    lc.check(len({c["network"]["address"] for c in cs + (b,)}) == 4, "addresses collide")
    for c in cs:  # the template's httpd runs in every clone; each gets its own page
        lc.check("192.168.241.2/30" in lc.sh(d, c["id"], "ip -4 -o addr show eth0"), "clone IP")
        serve(d, c["id"], "page-" + c["name"], start=False)
    addrs = [port(d, c["id"]) for c in cs]
    for _ in range(2):  # interleaved: all three serve at the same time
        for c, addr in zip(cs, addrs):
            lc.check(fetch(addr) == "page-" + c["name"], "%s's page at %s" % (c["name"], addr))
    log("three clones serve at %s, each guest 192.168.241.2" % ", ".join(addrs))
    check_egress(d, c1, False, False)
    check_egress(d, c2, True, True)
    check_egress(d, c3, True, False)
    log("egress: inherited deny, allow override, %s reaches %s only" % (CIDR, WORLD_IN))
    # Pause keeps the namespace and the address; after resume a new connection works.
    d.ok("POST", "/v1/sandboxes/%s/pause" % c2["id"])
    lc.check("vmsnap-" + c2["id"] in pins(netns_dir), "pause removed the namespace")
    d.ok("POST", "/v1/sandboxes/%s/resume" % c2["id"])
    lc.check(d.ok("GET", "/v1/sandboxes/%s" % c2["id"])["network"] == c2["network"],
             "resume changed the network")
    lc.check(fetch(addrs[1]) == "page-net-c2", "C2's page after resume")
    check_egress(d, c2, True, True)
    log("pause/resume: C2 still serves at %s and reaches the world" % addrs[1])
    for s in (b,) + cs:
        d.ok("DELETE", "/v1/sandboxes/%s" % s["id"])


def cycles(d, n, netns_dir, sysfs, base):
    for _ in range(n):
        s = d.ok("POST", "/v1/snapshots/net-tpl/sandboxes", {})
        lc.check(s["network"], "a spawn without a network")
        d.ok("DELETE", "/v1/sandboxes/%s" % s["id"])
    check_counts(netns_dir, sysfs, base, "%d spawn/destroy cycles" % n)
    log("%d spawn/destroy cycles left nothing behind" % n)


def crash(d, point, method, path, body=None):
    d.stop()
    d.start({"VMSNAP_CRASH_AT": point})
    try:
        d.call(method, path, body, timeout=120)
    except OSError:
        pass
    except Exception:  # http.client's errors of a connection the daemon dropped by dying
        pass
    d.wait_dead()
    d.start()


def crashes(d, netns_dir, sysfs, base):
    crash(d, "net-create-host-rules", "POST", "/v1/snapshots/net-tpl/sandboxes", {})
    check_counts(netns_dir, sysfs, base, "a daemon killed mid-create")
    log("killed mid-create: recovery left nothing behind")
    crashed = [s for s in d.ok("GET", "/v1/sandboxes")["sandboxes"]]
    lc.check(len(crashed) == 1 and crashed[0]["state"] == "error" and
             crashed[0]["network"] is None, "the crashed create: %s" % crashed)
    d.ok("DELETE", "/v1/sandboxes/%s" % crashed[0]["id"])
    s = d.ok("POST", "/v1/snapshots/net-tpl/sandboxes", {})
    crash(d, "net-destroy-host-rules", "DELETE", "/v1/sandboxes/%s" % s["id"])
    check_counts(netns_dir, sysfs, base, "a daemon killed mid-destroy")
    log("killed mid-create and mid-destroy: recovery left nothing behind")


def template_without_network(d):
    """A template made while the daemon ran without --network (its VM has no NIC)."""
    net_args, d.extra_args = d.extra_args, []
    d.start()
    a = d.ok("POST", "/v1/sandboxes", {"name": "plain"})
    d.ok("POST", "/v1/sandboxes/%s/snapshot" % a["id"], {"name": "plain-tpl"})
    d.ok("DELETE", "/v1/sandboxes/%s" % a["id"])
    d.stop()
    d.extra_args = net_args
    log("template plain-tpl made by the daemon without --network")


def spawn_without_network(d):
    """On a --network daemon it spawns with no network (a NIC would not match its VM)."""
    s = d.ok("POST", "/v1/snapshots/plain-tpl/sandboxes", {})
    lc.check(s["network"] is None, "plain-tpl's clone got a network: %s" % s["network"])
    lc.check(lc.sh(d, s["id"], "echo up").strip() == "up", "plain-tpl's clone does not run")
    d.ok("DELETE", "/v1/sandboxes/%s" % s["id"])
    log("a template without a NIC spawns with network none")


def run(d, netns_dir, sysfs, long_run):
    base = counts(netns_dir, sysfs)
    if not long_run:
        template_without_network(d)
    d.start()
    if not long_run:
        spawn_without_network(d)
    if long_run:
        a = d.ok("POST", "/v1/sandboxes", {"name": "net-a"})
        d.ok("POST", "/v1/sandboxes/%s/snapshot" % a["id"], {"name": "net-tpl"})
        d.ok("DELETE", "/v1/sandboxes/%s" % a["id"])
        cycles(d, 50, netns_dir, sysfs, base)
        return
    bad_input(d, netns_dir, sysfs, base)
    log("daemon up, bad input refused")
    b = first_sandbox(d)
    clones(d, b, netns_dir, sysfs)
    check_counts(netns_dir, sysfs, base, "destroy")
    log("destroy left nothing behind")
    cycles(d, 5, netns_dir, sysfs, base)
    crashes(d, netns_dir, sysfs, base)


def prerequisites():
    if os.geteuid() != 0:
        lc.skip("needs root (namespaces, jails)")
    if not os.access(lc.VMSNAPD, os.X_OK):
        lc.skip("no vmsnapd at %s" % lc.VMSNAPD)
    for tool in ("qemu-system-x86_64", "unshare", "nsenter", "ip", "nft"):
        if not shutil.which(tool):
            lc.skip("%s is not installed (scripts/setup.sh installs it)" % tool)
    if not os.path.exists("/dev/net/tun"):
        lc.skip("no /dev/net/tun")
    lc.build_guest()


def main():
    long_run = "--long" in sys.argv[1:]
    if os.environ.get(PRIVATE) != "1":
        prerequisites()
        env = dict(os.environ, **{PRIVATE: "1"})
        return subprocess.call(["unshare", "--net", "--mount", "--propagation", "private",
                                sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
                               env=env)
    run_cmd("ip", "link", "set", "lo", "up")
    work = tempfile.mkdtemp(prefix="vmsnap-e2e-net-")
    netns_dir = os.path.join(work, "netns")
    pool = "10.201.%d.%d/28" % (random.randint(0, 255), 16 * random.randint(0, 15))
    d = lc.Daemon(work, lc.GUEST, extra_args=["--network", "--net-pool", pool,
                                              "--netns-dir", netns_dir])
    world, ok = None, False
    try:
        sysfs = sysfs_of_this_netns(work)
        world = world_up(work)
        run(d, netns_dir, sysfs, long_run)
        ok = True
        log("passed")
    except (lc.Fail, OSError, subprocess.CalledProcessError) as e:
        print("FAIL:", e, flush=True)
        subprocess.call(["tail", "-n", "30", os.path.join(work, "vmsnapd.log")])
    finally:
        lc.shut_down(d)
        if world:
            world.kill()
            world.wait()
        mounted = subprocess.call(["umount", os.path.join(work, "sys")],
                                  stderr=subprocess.DEVNULL) != 0 and \
            os.path.ismount(os.path.join(work, "sys"))
        subprocess.call(["umount", netns_dir], stderr=subprocess.DEVNULL)
        if os.environ.get("VMSNAP_KEEP") != "1" and not mounted:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(d.mem, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except lc.Fail as e:
        print("FAIL:", e, flush=True)
        sys.exit(1)
