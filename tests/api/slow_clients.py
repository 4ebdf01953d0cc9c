#!/usr/bin/env python3
"""Slow strangers cannot hold vmsnapd's TCP API (issue 8, finding 1).

The attack: from 127.0.0.1 and from 127.0.0.2, more connections than the per-address limit,
each trickling a request line and headers one byte per second (which keeps an idle timeout
from ever firing); from 127.0.0.4 a complete unauthenticated request to the public /healthz
whose body trickles in the same way. Checked, with the daemon's defaults (32 per address,
10 s) so that the same test can be pointed at an older vmsnapd ($VMSNAPD) and fails there:

  - each address gets exactly its limit of connections and the rest are refused at accept:
    the per-address limit is per address (127.0.0.2 is served while 127.0.0.1 is full);
  - a good client with the token, from another address and on the Unix socket, gets 200 on
    /healthz and /v1/sandboxes throughout the attack, and a keep-alive connection that sent
    the token is not closed at the deadline (trusted connections leave the gate);
  - every slow connection is closed by the daemon, none before the deadline from accept and
    none answered; the counters in /metrics say how many were refused and closed;
  - afterwards 127.0.0.1 is served again; an unauthenticated reply carries Connection: close;
  - --per-address-limit and --header-timeout set the two limits.

Bounded: 2 x 36 + 1 + 3 connections to 127.0.0.1 (loopback only), at most ~70 s even when
the daemon never closes anything. No timing assertion beyond "not closed before the deadline",
which a slow machine can only make later. Exit 0 pass, 1 fail, 77 skip.
"""
import http.client
import os
import re
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmsnapd import VMSNAPD, Vmsnapd, skip  # noqa: E402

TEST = "api-slow-clients"
PER_ADDRESS, DEADLINE = 32, 10  # the daemon's defaults (docs/api.md)
EXTRA = 4                       # connections per attacking address over the limit
ATTACKERS = ("127.0.0.1", "127.0.0.2")
GIVE_UP = 60                    # seconds past the deadline after which "never closed" is a fail

failures = []


def fail(what):
    print("FAIL:", what, flush=True)
    failures.append(what)


class Slow:
    """One connection that sends its payload one byte per trickle() call."""

    def __init__(self, port, source, payload):
        self.source = source
        self.payload = payload
        self.sent = 0
        self.received = b""
        self.closed_at = None
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.t0 = time.monotonic()
        self.sock.setblocking(False)

    def lived(self):
        return self.closed_at - self.t0

    def poll(self):
        """Notices a close by the daemon (EOF or reset); keeps any bytes it sent."""
        if self.closed_at is not None:
            return
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.received += data
            return
        self.closed_at = time.monotonic()
        self.sock.close()

    def trickle(self):
        self.poll()
        if self.closed_at is not None or self.sent >= len(self.payload):
            return
        try:
            self.sock.send(self.payload[self.sent:self.sent + 1])
            self.sent += 1
        except BlockingIOError:
            pass
        except OSError:
            self.poll()
            if self.closed_at is None:
                self.closed_at = time.monotonic()
                self.sock.close()


def metric(d, name):
    status, _, body = d.unix("GET", "/metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), body.decode(), re.M)
    return int(m.group(1)) if status == 200 and m else None


def good_requests(d, keepalive, when):
    """The good clients: token over TCP from 127.0.0.3, the Unix socket, a kept-alive
    connection that sent the token. Each must get 200."""
    for path in ("/healthz", "/v1/sandboxes"):
        try:
            status = d.tcp("GET", path, source="127.0.0.3", timeout=20)[0]
        except OSError as e:
            status = "error %s" % e
        if status != 200:
            fail("%s: GET %s with the token from 127.0.0.3: %s" % (when, path, status))
    if d.unix("GET", "/healthz")[0] != 200:
        fail("%s: GET /healthz on the Unix socket failed" % when)
    try:
        keepalive.request("GET", "/v1/sandboxes", headers={"Authorization": "Bearer " + d.token})
        r = keepalive.getresponse()
        r.read()
        if r.status != 200 or (r.getheader("Connection") or "").lower() == "close":
            fail("%s: kept-alive connection with the token: %s %s"
                 % (when, r.status, r.getheader("Connection")))
    except (OSError, http.client.HTTPException) as e:
        fail("%s: the kept-alive connection with the token was dropped: %r" % (when, e))


def attack(d):
    header = b"GET /v1/sandboxes HTTP/1.1\r\nHost: vmsnapd\r\nX-Slow: " + b"x" * 200
    body_first = (b"GET /healthz HTTP/1.1\r\nHost: vmsnapd\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 200\r\n\r\n")
    keepalive = http.client.HTTPConnection("127.0.0.1", d.port, timeout=20,
                                           source_address=("127.0.0.6", 0))
    slow = {a: [Slow(d.port, a, header) for _ in range(PER_ADDRESS + EXTRA)] for a in ATTACKERS}
    trickler = Slow(d.port, "127.0.0.4", b"{" + b" " * 198 + b"}")
    trickler.sock.sendall(body_first)
    everyone = [s for conns in slow.values() for s in conns] + [trickler]
    start = time.monotonic()
    rounds = 0
    while any(s.closed_at is None for s in everyone):
        if time.monotonic() - start > DEADLINE + GIVE_UP:
            break
        for s in everyone:
            s.trickle()
        if rounds % 2 == 0:
            good_requests(d, keepalive, "during the attack (%.0fs in)" % (time.monotonic() - start))
        rounds += 1
        time.sleep(0.5 if rounds < 4 else 1.0)
    good_requests(d, keepalive, "after the attack")
    keepalive.close()
    return slow, trickler


def check_attack(d, slow, trickler):
    for addr, conns in slow.items():
        open_still = [c for c in conns if c.closed_at is None]
        if open_still:
            fail("%s: %d slow connection(s) still open %ds past the deadline (sent %d bytes)"
                 % (addr, len(open_still), GIVE_UP, open_still[0].sent))
        held = [c for c in conns if c.closed_at is not None and c.lived() >= DEADLINE - 1]
        if len(held) != PER_ADDRESS:
            fail("%s: %d connections were held until the deadline, want the limit %d"
                 % (addr, len(held), PER_ADDRESS))
        answered = [c for c in conns if c.received]
        if answered:
            fail("%s: a slow connection got an answer: %r" % (addr, answered[0].received[:80]))
    if trickler.closed_at is None:
        fail("the unauthenticated /healthz with a trickling body was never closed")
    elif trickler.lived() < DEADLINE - 1:
        fail("the body trickler was closed after %.1fs, before the deadline" % trickler.lived())
    refused, expired = (metric(d, "vmsnapd_tcp_connections_refused_total"),
                        metric(d, "vmsnapd_tcp_connections_expired_total"))
    if refused != EXTRA * len(ATTACKERS):
        fail("vmsnapd_tcp_connections_refused_total is %s, want %d"
             % (refused, EXTRA * len(ATTACKERS)))
    if expired != PER_ADDRESS * len(ATTACKERS) + 1:
        fail("vmsnapd_tcp_connections_expired_total is %s, want %d"
             % (expired, PER_ADDRESS * len(ATTACKERS) + 1))
    status, headers, _ = d.tcp("GET", "/healthz", token=False)
    if status != 200:
        fail("127.0.0.1 is not served again after the attack: %s" % status)
    if dict((k.lower(), v) for k, v in headers).get("connection", "").lower() != "close":
        fail("an unauthenticated reply does not close the connection: %s" % headers)
    if "closed (no request with the token within" not in d.log():
        fail("the daemon logged nothing about the connections it closed")


def check_flags(work):
    """--per-address-limit 2 --header-timeout 2: the third connection is refused, the two
    others closed at the deadline."""
    d = Vmsnapd(work, ["--per-address-limit", "2", "--header-timeout", "2"])
    d.start()
    try:
        conns = [Slow(d.port, "127.0.0.5", b"GET /metrics HTTP/1.1\r\n") for _ in range(3)]
        start = time.monotonic()
        while any(c.closed_at is None for c in conns) and time.monotonic() - start < 2 + GIVE_UP:
            for c in conns:
                c.trickle()
            time.sleep(0.25)
        held = [c for c in conns if c.closed_at is not None and c.lived() >= 1]
        if any(c.closed_at is None for c in conns) or len(held) != 2:
            fail("flags: %d of 3 connections held until the 2 s deadline, want 2 (open: %d)"
                 % (len(held), sum(c.closed_at is None for c in conns)))
        if metric(d, "vmsnapd_tcp_connections_refused_total") != 1:
            fail("flags: refused_total %s, want 1"
                 % metric(d, "vmsnapd_tcp_connections_refused_total"))
    finally:
        rc = d.stop()
    if rc != 0:
        fail("flags: vmsnapd exited %s after SIGTERM" % rc)


def main():
    if not os.access(VMSNAPD, os.X_OK):
        skip(TEST, "vmsnapd is not built (%s)" % VMSNAPD)
    try:
        socket.create_connection(("127.0.0.1", 9), source_address=("127.0.0.2", 0)).close()
    except ConnectionRefusedError:
        pass
    except OSError as e:
        skip(TEST, "cannot use 127.0.0.2 as a source address: %s" % e)
    work = tempfile.mkdtemp(prefix="vmsnap-slow.")
    d = Vmsnapd(os.path.join(work, "a"))
    os.makedirs(d.work)
    try:
        d.start()
        slow, trickler = attack(d)
        check_attack(d, slow, trickler)
        rc = d.stop()
        if rc != 0:
            fail("vmsnapd exited %s after SIGTERM" % rc)
        os.makedirs(os.path.join(work, "b"))
        check_flags(os.path.join(work, "b"))
    except Exception as e:  # a broken daemon must fail the test, not crash it
        fail("%s: %r" % (type(e).__name__, e))
    finally:
        d.kill()
        if failures:
            print("---- vmsnapd log (tail) ----\n" + "\n".join(d.log().splitlines()[-15:]))
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("%s: %d check(s) failed" % (TEST, len(failures)))
        return 1
    print("%s: %d slow connections per address held at most until the %ds deadline, %d "
          "refused over the limit, good clients served throughout" % (TEST, PER_ADDRESS, DEADLINE,
                                                                       EXTRA))
    return 0


if __name__ == "__main__":
    sys.exit(main())
