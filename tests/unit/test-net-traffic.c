/* src/net/ carrying real traffic between real namespaces, all inside a private "host"
 * (test-net-util.h): no packet ever leaves the namespaces this test creates.
 *
 * Three sandboxes (egress allow, deny, 198.51.100.0/25). Each gets a stand-in guest: the
 * test replaces tap0 in the sandbox namespace by a veth of the same name whose other end is
 * eth0 in a "guest" namespace with the fixed guest IP and MAC — the same in all three — and
 * runs a TCP server there answering its sandbox id. A "world" namespace behind the host
 * holds the egress servers (198.51.100.2 inside the /25, .130 outside it). Attacks: another
 * sandbox's address, the host itself, a spoofed source from the guest and from the VMM's
 * position (a process in the sandbox namespace), traffic from outside to a sandbox's
 * address. Refusals are ICMP rejects, so a blocked connect fails at once; a 10 s socket
 * timeout is only a safety net, and a timeout is reported as a failure, never as "blocked".
 * A separate check: the real TAP's name, MAC and owner uid, as the jailed VMM will meet it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <grp.h>
#include <linux/if_tun.h>
#include <netlink/route/link.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "test-net-util.h"

enum { OK = 0, REFUSED = 1, TIMED_OUT = 2, OTHER = 3 };

struct sandbox {
        const char *id, *egress;
        struct vmsnap_net_spec spec;
        int nsfd, guestfd;
        char unique[INET_ADDRSTRLEN], host[INET_ADDRSTRLEN];
};

static struct sandbox boxes[] = {
        {.id = "box-allow", .egress = "allow"},
        {.id = "box-deny", .egress = "deny"},
        {.id = "box-cidr", .egress = "198.51.100.0/25"},
};
static int worldfd = -1;
static pid_t servers[16];
static size_t n_servers;
static int udp_log = -1; /* lines "payload from" written by the world's UDP server */

static void check(int r, const struct vmsnap_diag *d)
{
        if (r < 0)
                fail_msg("%s", d->msg);
}

static int test_ns(const char *name)
{
        struct vmsnap_diag d = {0};
        int fd;
        check(net_ns_pin(net_test_nsdir, name, &d), &d);
        check(net_ns_open(net_test_nsdir, name, &fd, &d), &d);
        return fd;
}

static struct in_addr ip(const char *text)
{
        struct in_addr a;
        assert_int_equal(inet_pton(AF_INET, text, &a), 1);
        return a;
}

/* Runs in a forked child: moves it into nsfd (-1 = stay in the host). */
static void child_enter(int nsfd)
{
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) < 0)
                _exit(OTHER);
}

static void serve_tcp(int sock, const char *tag)
{
        for (;;) {
                int c = accept(sock, NULL, NULL);
                if (c < 0)
                        continue;
                (void)!write(c, tag, strlen(tag));
                close(c);
        }
}

static void serve_udp(int sock, int log)
{
        for (;;) {
                char buf[64], line[128], from[INET_ADDRSTRLEN];
                struct sockaddr_in src;
                socklen_t len = sizeof(src);
                ssize_t n = recvfrom(sock, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&src, &len);
                if (n < 0)
                        continue;
                buf[n] = '\0';
                inet_ntop(AF_INET, &src.sin_addr, from, sizeof(from));
                int m = snprintf(line, sizeof(line), "%s %s\n", buf, from);
                (void)!write(log, line, (size_t)m);
        }
}

/* A server in nsfd on addr:port (TCP answering tag, or UDP logging to udp_log); returns
 * once it listens. */
static void start_server(int nsfd, const char *addr, int port, int type, const char *tag)
{
        int ready[2];
        assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                child_enter(nsfd);
                int s = socket(AF_INET, type | SOCK_CLOEXEC, 0);
                int one = 1;
                setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                struct sockaddr_in sa = {.sin_family = AF_INET,
                                         .sin_port = htons((uint16_t)port),
                                         .sin_addr = ip(addr)};
                if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
                    (type == SOCK_STREAM && listen(s, 64) < 0))
                        _exit(OTHER);
                (void)!write(ready[1], "r", 1);
                if (type == SOCK_STREAM)
                        serve_tcp(s, tag);
                serve_udp(s, udp_log);
        }
        close(ready[1]);
        char c;
        assert_int_equal(read(ready[0], &c, 1), 1);
        close(ready[0]);
        servers[n_servers++] = pid;
}

static int classify(int err)
{
        switch (err) {
        case EHOSTUNREACH:
        case ECONNREFUSED:
        case ENETUNREACH:
        case EACCES:
        case EPERM:
                return REFUSED;
        case EAGAIN:
        case EINPROGRESS:
        case ETIMEDOUT:
                return TIMED_OUT;
        default:
                return OTHER;
        }
}

/* Connects from nsfd (-1 = the host) to addr:port, optionally from source src, and reads
 * the server's answer into reply. Returns OK, REFUSED, TIMED_OUT or OTHER. */
static int tcp_from(int nsfd, const char *src, const char *addr, int port, char *reply, size_t size)
{
        int out[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                child_enter(nsfd);
                int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct timeval tv = {.tv_sec = 10};
                setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                struct sockaddr_in from = {.sin_family = AF_INET};
                if (src && (inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
                            bind(s, (struct sockaddr *)&from, sizeof(from)) < 0))
                        _exit(OTHER);
                struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
                inet_pton(AF_INET, addr, &sa.sin_addr);
                if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                        _exit(classify(errno));
                char buf[128];
                ssize_t n = read(s, buf, sizeof(buf));
                if (n <= 0)
                        _exit(n < 0 ? classify(errno) : OTHER);
                (void)!write(out[1], buf, (size_t)n);
                _exit(OK);
        }
        close(out[1]);
        ssize_t n = read(out[0], reply, size - 1);
        reply[n > 0 ? n : 0] = '\0';
        close(out[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

/* Sends one UDP datagram `payload` from nsfd (source src when non-NULL) to addr:port. */
static void udp_from(int nsfd, const char *src, const char *addr, int port, const char *payload)
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                child_enter(nsfd);
                int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in from = {.sin_family = AF_INET};
                if (src && (inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
                            bind(s, (struct sockaddr *)&from, sizeof(from)) < 0))
                        _exit(OTHER);
                struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
                inet_pton(AF_INET, addr, &sa.sin_addr);
                _exit(sendto(s, payload, strlen(payload), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0
                              ? classify(errno)
                              : OK);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
}

/* Reads the UDP server's log up to the line starting with `until`; returns what came
 * before it (datagrams that got through ahead of the control one on the same path). */
static void udp_log_until(const char *until, char *before, size_t size, char *control_src)
{
        size_t used = 0;
        before[0] = '\0';
        for (;;) {
                struct pollfd p = {.fd = udp_log, .events = POLLIN};
                if (poll(&p, 1, 20000) != 1)
                        fail_msg("the control datagram %s never reached the world server", until);
                char line[128];
                size_t n = 0;
                while (n < sizeof(line) - 1 && read(udp_log, line + n, 1) == 1 && line[n] != '\n')
                        n++;
                line[n] = '\0';
                if (strncmp(line, until, strlen(until)) == 0) {
                        strcpy(control_src, line + strlen(until) + 1);
                        return;
                }
                used += (size_t)snprintf(before + used, size - used, "%s;", line);
        }
}

/* Replaces tap0 of sandbox b by a veth "tap0" whose peer is eth0 of a guest namespace,
 * configured exactly as a guest is (fixed IP, MAC and gateway). */
static void install_guest(struct sandbox *b)
{
        struct vmsnap_diag d = {0};
        char name[64];
        snprintf(name, sizeof(name), "guest-%s", b->id);
        b->guestfd = test_ns(name);
        int orig;
        struct nl_sock *sk;
        check(net_ns_enter(b->nsfd, &orig, &d), &d);
        check(net_nl_open(&sk, &d), &d);
        check(net_link_delete(sk, VMSNAP_NET_TAP_NAME, &d), &d);
        check(net_veth_create(sk, VMSNAP_NET_TAP_NAME, "eth0", b->guestfd, &d), &d);
        check(net_addr_add(sk, VMSNAP_NET_TAP_NAME, ip(VMSNAP_NET_GATEWAY_IP),
                           VMSNAP_NET_GUEST_PREFIX, &d),
              &d);
        check(net_link_configure(sk, VMSNAP_NET_TAP_NAME, VMSNAP_NET_GATEWAY_MAC, NULL, &d), &d);
        net_nl_close(sk);
        net_ns_leave(orig);
        close(orig);
        check(net_ns_enter(b->guestfd, &orig, &d), &d);
        check(net_nl_open(&sk, &d), &d);
        check(net_link_configure(sk, "lo", NULL, NULL, &d), &d);
        check(net_addr_add(sk, "eth0", ip(VMSNAP_NET_GUEST_IP), VMSNAP_NET_GUEST_PREFIX, &d), &d);
        check(net_link_configure(sk, "eth0", VMSNAP_NET_GUEST_MAC, NULL, &d), &d);
        check(net_route_default(sk, "eth0", ip(VMSNAP_NET_GATEWAY_IP), &d), &d);
        net_nl_close(sk);
        net_ns_leave(orig);
        close(orig);
        start_server(b->guestfd, "0.0.0.0", 8080, SOCK_STREAM, b->id);
}

/* The world: 198.51.100.1/24 on the host's wl0 (the host's default route goes there, as to
 * an uplink), .2, .130 and a "metadata service" 169.254.169.254 on its eth0. */
static void make_world(void)
{
        struct vmsnap_diag d = {0};
        worldfd = test_ns("world");
        struct nl_sock *sk;
        int orig;
        check(net_nl_open(&sk, &d), &d);
        check(net_veth_create(sk, "wl0", "eth0", worldfd, &d), &d);
        check(net_addr_add(sk, "wl0", ip("198.51.100.1"), 24, &d), &d);
        check(net_link_configure(sk, "wl0", NULL, NULL, &d), &d);
        check(net_route_default(sk, "wl0", ip("198.51.100.2"), &d), &d); /* the uplink */
        net_nl_close(sk);
        check(net_ns_enter(worldfd, &orig, &d), &d);
        check(net_nl_open(&sk, &d), &d);
        check(net_link_configure(sk, "lo", NULL, NULL, &d), &d);
        check(net_addr_add(sk, "eth0", ip("198.51.100.2"), 24, &d), &d);
        check(net_addr_add(sk, "eth0", ip("198.51.100.130"), 24, &d), &d);
        check(net_addr_add(sk, "eth0", ip("169.254.169.254"), 32, &d), &d); /* "metadata" */
        check(net_link_configure(sk, "eth0", NULL, NULL, &d), &d);
        check(net_route_default(sk, "eth0", ip("198.51.100.1"), &d), &d);
        net_nl_close(sk);
        net_ns_leave(orig);
        close(orig);
        int log[2];
        assert_int_equal(pipe2(log, O_CLOEXEC), 0);
        udp_log = log[1];
        start_server(worldfd, "198.51.100.2", 9000, SOCK_STREAM, "world-2");
        start_server(worldfd, "198.51.100.130", 9000, SOCK_STREAM, "world-130");
        start_server(worldfd, "198.51.100.2", 9001, SOCK_DGRAM, NULL);
        start_server(worldfd, "169.254.169.254", 80, SOCK_STREAM, "metadata");
        close(log[1]);
        udp_log = log[0];
}

static int setup(void **state)
{
        (void)state;
        struct vmsnap_net_config cfg = net_test_config();
        struct vmsnap_net_addrs held[ARRAY_SIZE(boxes)];
        make_world();
        start_server(-1, "0.0.0.0", 9100, SOCK_STREAM, "host");
        for (size_t i = 0; i < ARRAY_SIZE(boxes); i++) {
                struct sandbox *b = &boxes[i];
                struct vmsnap_diag d = {0};
                b->spec = net_test_spec(b->id, held, i, b->egress);
                held[i] = b->spec.addrs;
                check(vmsnap_net_create(&cfg, &b->spec, &d), &d);
                check(net_ns_open(net_test_dir, b->id, &b->nsfd, &d), &d);
                net_addr_format(b->spec.addrs.sandbox, b->unique);
                net_addr_format(b->spec.addrs.host, b->host);
                install_guest(b);
        }
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        for (size_t i = 0; i < n_servers; i++) {
                kill(servers[i], SIGKILL);
                waitpid(servers[i], NULL, 0);
        }
        struct vmsnap_net_config cfg = net_test_config();
        for (size_t i = 0; i < ARRAY_SIZE(boxes); i++)
                vmsnap_net_destroy(&cfg, boxes[i].id, NULL);
        return 0;
}

static void expect_tcp(int nsfd, const char *src, const char *addr, int port, int want,
                       const char *want_reply, const char *what)
{
        char reply[128];
        int got = tcp_from(nsfd, src, addr, port, reply, sizeof(reply));
        if (got != want)
                fail_msg("%s: %s:%d: got result %d, want %d (0 ok, 1 refused, 2 timed out)", what,
                         addr, port, got, want);
        if (want_reply && strcmp(reply, want_reply) != 0)
                fail_msg("%s: answer '%s', want '%s'", what, reply, want_reply);
}

/* The host reaches each guest — all three at the same IP 192.168.241.2 — at its sandbox's
 * own address, and gets that sandbox's answer; a deny policy does not cut the host off. */
static void test_host_reaches_each_guest(void **state)
{
        (void)state;
        for (size_t i = 0; i < ARRAY_SIZE(boxes); i++) {
                char port[VMSNAP_NET_HOSTPORT_LEN];
                struct vmsnap_diag d = {0};
                check(vmsnap_net_port(&boxes[i].spec.addrs, 8080, port, &d), &d);
                assert_int_equal(strncmp(port, boxes[i].unique, strlen(boxes[i].unique)), 0);
                expect_tcp(-1, NULL, boxes[i].unique, 8080, OK, boxes[i].id, "host to guest");
        }
        /* twice more, interleaved: conntrack keeps the three identical guests apart */
        for (int round = 0; round < 2; round++)
                for (size_t i = ARRAY_SIZE(boxes); i-- > 0;)
                        expect_tcp(-1, NULL, boxes[i].unique, 8080, OK, boxes[i].id, "again");
}

static void test_egress_policies(void **state)
{
        (void)state;
        struct sandbox *allow = &boxes[0], *deny = &boxes[1], *cidr = &boxes[2];
        expect_tcp(allow->guestfd, NULL, "198.51.100.2", 9000, OK, "world-2", "allow");
        expect_tcp(allow->guestfd, NULL, "198.51.100.130", 9000, OK, "world-130", "allow");
        expect_tcp(deny->guestfd, NULL, "198.51.100.2", 9000, REFUSED, NULL, "deny");
        expect_tcp(deny->guestfd, NULL, "198.51.100.130", 9000, REFUSED, NULL, "deny");
        expect_tcp(cidr->guestfd, NULL, "198.51.100.2", 9000, OK, "world-2", "inside the /25");
        expect_tcp(cidr->guestfd, NULL, "198.51.100.130", 9000, REFUSED, NULL, "outside the /25");
}

/* The guest's traffic reaches the world from the host's own address (both NATs). */
static void test_masquerade(void **state)
{
        (void)state;
        char before[512], src[INET_ADDRSTRLEN + 8];
        udp_from(boxes[0].guestfd, NULL, "198.51.100.2", 9001, "nat-check");
        udp_log_until("nat-check", before, sizeof(before), src);
        assert_string_equal(src, "198.51.100.1");
}

static void test_attacks(void **state)
{
        (void)state;
        struct sandbox *a = &boxes[0], *b = &boxes[1];
        /* another sandbox, from the guest and from the VMM's position */
        expect_tcp(a->guestfd, NULL, b->unique, 8080, REFUSED, NULL, "guest to another sandbox");
        expect_tcp(a->nsfd, NULL, b->unique, 8080, REFUSED, NULL, "VMM to another sandbox");
        /* the host itself, at its uplink address and at the sandbox's own host end */
        expect_tcp(a->guestfd, NULL, "198.51.100.1", 9100, REFUSED, NULL, "guest to the host");
        expect_tcp(a->guestfd, NULL, a->host, 9100, REFUSED, NULL, "guest to its host end");
        expect_tcp(a->nsfd, NULL, "198.51.100.1", 9100, REFUSED, NULL, "VMM to the host");
        /* the VMM's position does not escape a deny policy */
        expect_tcp(b->nsfd, NULL, "198.51.100.2", 9000, REFUSED, NULL, "VMM under deny");
        /* the world cannot open a connection to a sandbox's address through the host */
        expect_tcp(worldfd, NULL, a->unique, 8080, REFUSED, NULL, "world to a sandbox");
        /* cloud metadata is refused even under allow (the host itself reaches it) */
        expect_tcp(a->guestfd, NULL, "169.254.169.254", 80, REFUSED, NULL, "metadata");
        expect_tcp(-1, NULL, "169.254.169.254", 80, OK, "metadata", "host to metadata");
}

/* Spoofed sources, by UDP (a spoofed TCP handshake could never complete anyway): each
 * spoofed datagram is followed on the same path by a genuine one; the world server must see
 * the genuine one and nothing before it. */
static void test_spoofing(void **state)
{
        (void)state;
        struct sandbox *a = &boxes[0];
        struct vmsnap_diag d = {0};
        struct nl_sock *sk;
        int orig;
        /* the guest takes another sandbox's address as its own */
        check(net_ns_enter(a->guestfd, &orig, &d), &d);
        check(net_nl_open(&sk, &d), &d);
        check(net_addr_add(sk, "eth0", boxes[1].spec.addrs.sandbox, 32, &d), &d);
        net_nl_close(sk);
        net_ns_leave(orig);
        close(orig);
        char before[512], src[INET_ADDRSTRLEN + 8];
        udp_from(a->guestfd, boxes[1].unique, "198.51.100.2", 9001, "spoof-guest");
        udp_from(a->guestfd, NULL, "198.51.100.2", 9001, "genuine-guest");
        udp_log_until("genuine-guest", before, sizeof(before), src);
        assert_string_equal(before, "");
        /* the VMM's position sends from the gateway address instead of the unique one */
        udp_from(a->nsfd, VMSNAP_NET_GATEWAY_IP, "198.51.100.2", 9001, "spoof-vmm");
        udp_from(a->nsfd, NULL, "198.51.100.2", 9001, "genuine-vmm");
        udp_log_until("genuine-vmm", before, sizeof(before), src);
        assert_string_equal(before, "");
}

/* Attaches to tap0 of nsfd as uid, the way an unprivileged VMM does; returns 0 or errno. */
static int attach_tap_as(int nsfd, uid_t uid, short flags)
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                child_enter(nsfd);
                /* opened first: the jail gives the VMM its own node, owned by its uid */
                int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
                if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 ||
                    setresuid(uid, uid, uid) < 0)
                        _exit(100);
                struct ifreq ifr = {0};
                strcpy(ifr.ifr_name, VMSNAP_NET_TAP_NAME);
                ifr.ifr_flags = flags;
                if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0)
                        _exit(errno);
                _exit(0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

static void tap_mac(int nsfd, char out[32])
{
        struct vmsnap_diag d = {0};
        struct nl_sock *sk;
        struct rtnl_link *link = NULL;
        int orig;
        check(net_ns_enter(nsfd, &orig, &d), &d);
        check(net_nl_open(&sk, &d), &d);
        assert_int_equal(rtnl_link_get_kernel(sk, 0, VMSNAP_NET_TAP_NAME, &link), 0);
        nl_addr2str(rtnl_link_get_addr(link), out, 32);
        rtnl_link_put(link);
        net_nl_close(sk);
        net_ns_leave(orig);
        close(orig);
}

/* The real TAP, twice: same name and gateway MAC in both sandboxes; only its owner uid can
 * attach (with the flags the drivers use), another uid cannot. */
static void test_tap_for_jailed_vmm(void **state)
{
        (void)state;
        struct vmsnap_net_config cfg = net_test_config();
        struct vmsnap_net_addrs held[ARRAY_SIZE(boxes) + 2];
        for (size_t i = 0; i < ARRAY_SIZE(boxes); i++)
                held[i] = boxes[i].spec.addrs;
        const char *ids[] = {"tap-a", "tap-b"};
        for (size_t i = 0; i < 2; i++) {
                struct vmsnap_net_spec s =
                        net_test_spec(ids[i], held, ARRAY_SIZE(boxes) + i, "deny");
                s.tap_uid = 1879113728 + (uid_t)i;
                held[ARRAY_SIZE(boxes) + i] = s.addrs;
                struct vmsnap_diag d = {0};
                check(vmsnap_net_create(&cfg, &s, &d), &d);
                int nsfd;
                check(net_ns_open(net_test_dir, ids[i], &nsfd, &d), &d);
                char mac[32];
                tap_mac(nsfd, mac);
                assert_string_equal(mac, VMSNAP_NET_GATEWAY_MAC);
                short flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
                assert_int_equal(attach_tap_as(nsfd, s.tap_uid, flags), 0);
                assert_int_equal(attach_tap_as(nsfd, s.tap_uid + 7, flags), EPERM);
                assert_int_equal(attach_tap_as(nsfd, s.tap_uid, flags | IFF_MULTI_QUEUE), EINVAL);
                close(nsfd);
        }
        for (size_t i = 0; i < 2; i++)
                vmsnap_net_destroy(&cfg, ids[i], NULL);
}

int main(void)
{
        net_test_private_host();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_host_reaches_each_guest),
                cmocka_unit_test(test_egress_policies),
                cmocka_unit_test(test_masquerade),
                cmocka_unit_test(test_attacks),
                cmocka_unit_test(test_spoofing),
                cmocka_unit_test(test_tap_for_jailed_vmm),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
