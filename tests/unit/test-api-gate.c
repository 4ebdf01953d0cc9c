/* vmsnapd's TCP connection gate (src/api/gate.c) without a server: the per-address limit of
 * untrusted connections (IPv4, IPv6 per /64, IPv4-mapped IPv6 as IPv4), trust taking a
 * connection out of the limit and the deadline, and the reaper shutting down a real socket at
 * its deadline (the peer end of a socketpair reads EOF). No timing assertion: the test waits,
 * bounded, for what must happen, and checks that a trusted socket survives the same pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/gate.c"

static struct sockaddr_in v4(const char *ip)
{
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(40000)};
        assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
        return a;
}

static struct sockaddr_in6 v6(const char *ip)
{
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(40000)};
        assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
        return a;
}

#define SA(x) ((const struct sockaddr *)&(x))

static void test_limits_refused(void **state)
{
        (void)state;
        struct api_gate *g;
        assert_int_equal(api_gate_new(&(struct api_gate_limits){0, 10}, &g), -EINVAL);
        assert_int_equal(api_gate_new(&(struct api_gate_limits){2, 0}, &g), -EINVAL);
        api_gate_free(NULL);
}

/* Two untrusted connections per address; the third is refused, other addresses are not. */
static void test_per_address(void **state)
{
        (void)state;
        struct api_gate *g;
        assert_int_equal(api_gate_new(&(struct api_gate_limits){2, 3600}, &g), 0);
        struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2");
        struct sockaddr_in6 mapped = v6("::ffff:10.0.0.1");
        struct sockaddr_in6 x1 = v6("2001:db8::1"), x2 = v6("2001:db8::ffff:2"),
                            other64 = v6("2001:db8:0:1::1");

        struct api_gate_conn *c[6];
        assert_true(api_gate_admit(g, SA(a)));
        c[0] = api_gate_open(g, -1, SA(a));
        assert_true(api_gate_admit(g, SA(mapped))); /* the same address, one left */
        c[1] = api_gate_open(g, -1, SA(mapped));
        assert_false(api_gate_admit(g, SA(a)));
        assert_false(api_gate_admit(g, SA(mapped)));
        assert_true(api_gate_admit(g, SA(b)));

        /* IPv6: one /64 is one client. */
        c[2] = api_gate_open(g, -1, SA(x1));
        c[3] = api_gate_open(g, -1, SA(x2));
        assert_false(api_gate_admit(g, SA(x1)));
        assert_true(api_gate_admit(g, SA(other64)));

        struct api_gate_stats st;
        api_gate_stats(g, &st);
        assert_int_equal(st.refused, 3);
        assert_int_equal(st.untrusted, 4);

        /* A connection that sent the token leaves the count; a closed one too. */
        api_gate_trust(g, c[0]);
        assert_true(api_gate_admit(g, SA(a)));
        c[4] = api_gate_open(g, -1, SA(a));
        assert_false(api_gate_admit(g, SA(a)));
        api_gate_close(g, c[1]);
        assert_true(api_gate_admit(g, SA(a)));
        api_gate_trust(g, c[0]); /* twice: harmless */
        api_gate_trust(g, NULL);
        api_gate_stats(g, &st);
        assert_int_equal(st.untrusted, 3);

        api_gate_close(g, c[0]);
        api_gate_close(g, c[2]);
        api_gate_close(g, c[3]);
        api_gate_close(g, c[4]);
        api_gate_close(g, NULL);
        api_gate_stats(g, &st);
        assert_int_equal(st.untrusted, 0);
        assert_int_equal(st.expired, 0);
        api_gate_free(g);
}

/* Reads from fd without blocking: 0 at EOF, -EAGAIN when the socket is alive and empty. */
static int peek(int fd)
{
        char byte;
        ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
        return n < 0 ? -errno : (int)n;
}

/* The reaper shuts an untrusted socket down at its deadline whatever arrives on it; a
 * trusted one opened at the same moment stays up. */
static void test_deadline(void **state)
{
        (void)state;
        struct api_gate *g;
        assert_int_equal(api_gate_new(&(struct api_gate_limits){8, 1}, &g), 0);
        int slow[2], good[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, slow), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, good), 0);
        struct sockaddr_in a = v4("127.0.0.1");
        struct api_gate_conn *s = api_gate_open(g, slow[0], SA(a));
        struct api_gate_conn *t = api_gate_open(g, good[0], SA(a));
        assert_non_null(s);
        assert_non_null(t);
        api_gate_trust(g, t);

        /* The client trickles a byte now and then; the server end is shut down anyway. */
        int r = -EAGAIN;
        for (int i = 0; i < 300 && r != 0; i++) {
                if (send(slow[1], "G", 1, MSG_NOSIGNAL) != 1)
                        break; /* shut down: writing fails once the peer is gone */
                struct timespec tick = {.tv_nsec = 100 * 1000 * 1000};
                nanosleep(&tick, NULL);
                r = peek(slow[1]);
        }
        assert_int_equal(peek(slow[1]), 0);
        assert_true(api_gate_expired(g, s));
        assert_int_equal(peek(good[1]), -EAGAIN);
        assert_false(api_gate_expired(g, t));
        struct api_gate_stats st;
        api_gate_stats(g, &st);
        assert_int_equal(st.expired, 1);
        assert_int_equal(st.untrusted, 0);

        api_gate_close(g, s);
        api_gate_close(g, t);
        api_gate_free(g);
        for (int i = 0; i < 2; i++) {
                close(slow[i]);
                close(good[i]);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_limits_refused),
                cmocka_unit_test(test_per_address),
                cmocka_unit_test(test_deadline),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
