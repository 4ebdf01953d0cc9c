/* src/net/'s pure parts, no privileges: CIDR parsing and its messages, egress policies, the
 * pool allocator (lowest free slot, never a held one, /30 and /31, exhaustion) and ports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <vmsnap/net.h>

/* Parses text, which must fail with err and a message mentioning `mention`. */
static void cidr_fails(const char *text, int err, const char *mention)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_cidr c = {.prefix = 77};
        int r = vmsnap_cidr_parse(text, &c, &d);
        if (r != err || !strstr(d.msg, mention) || c.prefix != 77)
                fail_msg("'%s': got %d '%s', want %d mentioning '%s'", text, r, d.msg, err,
                         mention);
}

static void cidr_roundtrip(const char *text)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_cidr c;
        char out[VMSNAP_CIDR_STRLEN];
        if (vmsnap_cidr_parse(text, &c, &d) != 0)
                fail_msg("'%s': %s", text, d.msg);
        vmsnap_cidr_format(&c, out);
        assert_string_equal(out, text);
}

static void test_cidr(void **state)
{
        (void)state;
        cidr_roundtrip("10.0.0.0/8");
        cidr_roundtrip("0.0.0.0/0");
        cidr_roundtrip("255.255.255.255/32");
        cidr_roundtrip("192.0.2.128/25");
        cidr_fails("10.0.0.0/33", -EINVAL, "10.0.0.0/33: prefix length out of range");
        cidr_fails("10.0.0.1/8", -EINVAL, "host bits set (did you mean 10.0.0.0/8?)");
        cidr_fails("10.0.0.0", -EINVAL, "missing /prefix length");
        cidr_fails("10.0.0.0/", -EINVAL, "prefix length is not a number");
        cidr_fails("10.0.0.0/08", -EINVAL, "prefix length is not a number");
        cidr_fails("10.0.0.0/8x", -EINVAL, "prefix length is not a number");
        cidr_fails("10.0.0.0/-1", -EINVAL, "prefix length is not a number");
        cidr_fails("256.0.0.0/8", -EINVAL, "not an IPv4 CIDR");
        cidr_fails("10.00.0.0/16", -EINVAL, "not an IPv4 CIDR");
        cidr_fails("10.0.0/24", -EINVAL, "not an IPv4 CIDR");
        cidr_fails(" 10.0.0.0/8", -EINVAL, "not an IPv4 CIDR");
        cidr_fails("fe80::/10", -EINVAL, "not an IPv4 CIDR");
        cidr_fails("", -EINVAL, "not an IPv4 CIDR");

        struct vmsnap_cidr net;
        assert_int_equal(vmsnap_cidr_parse("192.0.2.0/25", &net, NULL), 0);
        struct in_addr in, out;
        inet_pton(AF_INET, "192.0.2.127", &in);
        inet_pton(AF_INET, "192.0.2.128", &out);
        assert_true(vmsnap_cidr_contains(&net, in));
        assert_false(vmsnap_cidr_contains(&net, out));
}

static void test_egress(void **state)
{
        (void)state;
        struct vmsnap_net_egress e;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_net_egress_parse("deny", &e, &d), 0);
        assert_int_equal(e.kind, VMSNAP_NET_EGRESS_DENY);
        assert_int_equal(vmsnap_net_egress_parse("allow", &e, &d), 0);
        assert_int_equal(e.kind, VMSNAP_NET_EGRESS_ALLOW);
        assert_int_equal(vmsnap_net_egress_parse("10.0.0.0/8,192.0.2.0/24", &e, &d), 0);
        assert_int_equal(e.kind, VMSNAP_NET_EGRESS_CIDRS);
        assert_int_equal(e.n_cidrs, 2);
        assert_int_equal(e.cidrs[1].prefix, 24);

        struct vmsnap_net_egress before = e;
        assert_int_equal(vmsnap_net_egress_parse("10.0.0.0/8,10.0.0.0/33", &e, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "egress: 10.0.0.0/33: prefix length out of range"));
        assert_memory_equal(&e, &before, sizeof(e)); /* unchanged on error */
        assert_int_equal(vmsnap_net_egress_parse("", &e, &d), -EINVAL);
        assert_int_equal(vmsnap_net_egress_parse("Allow", &e, &d), -EINVAL);
        assert_int_equal(vmsnap_net_egress_parse(",", &e, &d), -EINVAL);

        struct vmsnap_net_egress big = {0};
        for (int i = 0; i < VMSNAP_NET_EGRESS_MAX; i++)
                assert_int_equal(vmsnap_net_egress_add(&big, "10.0.0.0/8", &d), 0);
        assert_int_equal(vmsnap_net_egress_add(&big, "10.0.0.0/8", &d), -E2BIG);
        assert_int_equal(big.n_cidrs, VMSNAP_NET_EGRESS_MAX);
}

static struct vmsnap_net_config pool_config(const char *pool, uint8_t slot)
{
        struct vmsnap_net_config c = {.slot_prefix = slot};
        assert_int_equal(vmsnap_cidr_parse(pool, &c.pool, NULL), 0);
        return c;
}

static void assert_addrs(const struct vmsnap_net_addrs *a, const char *host, const char *sandbox)
{
        char h[INET_ADDRSTRLEN], s[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a->host, h, sizeof(h));
        inet_ntop(AF_INET, &a->sandbox, s, sizeof(s));
        assert_string_equal(h, host);
        assert_string_equal(s, sandbox);
}

static void test_alloc_default_pool(void **state)
{
        (void)state;
        struct vmsnap_net_addrs a;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_net_alloc(NULL, NULL, 0, &a, &d), 0);
        assert_addrs(&a, "10.201.0.1", "10.201.0.2");
        assert_int_equal(a.prefix, 30);
}

/* Holds slots 0, 1 and 3 (paused sandboxes count the same: the caller passes them): slot 2
 * is the answer, then 4 once 2 is held; a freed slot comes back. */
static void test_alloc_lowest_free(void **state)
{
        (void)state;
        struct vmsnap_net_config c = pool_config("10.9.0.0/24", 30);
        struct vmsnap_net_addrs held[4], a;
        struct vmsnap_diag d = {0};
        for (int i = 0; i < 2; i++)
                assert_int_equal(vmsnap_net_alloc(&c, held, (size_t)i, &held[i], &d), 0);
        assert_addrs(&held[1], "10.9.0.5", "10.9.0.6");
        inet_pton(AF_INET, "10.9.0.13", &held[2].host);
        inet_pton(AF_INET, "10.9.0.14", &held[2].sandbox);
        held[2].prefix = 30;
        assert_int_equal(vmsnap_net_alloc(&c, held, 3, &a, &d), 0);
        assert_addrs(&a, "10.9.0.9", "10.9.0.10");
        held[3] = a;
        assert_int_equal(vmsnap_net_alloc(&c, held, 4, &a, &d), 0);
        assert_addrs(&a, "10.9.0.17", "10.9.0.18");
        /* addresses outside the pool are ignored; slot 0 freed comes back first */
        struct vmsnap_net_addrs others[2] = {held[1], {.host.s_addr = htonl(0x0a0a0a01)}};
        assert_int_equal(vmsnap_net_alloc(&c, others, 2, &a, &d), 0);
        assert_addrs(&a, "10.9.0.1", "10.9.0.2");
}

static void test_alloc_slash31(void **state)
{
        (void)state;
        struct vmsnap_net_config c = pool_config("10.9.0.0/30", 31);
        struct vmsnap_net_addrs held[2];
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_net_alloc(&c, held, 0, &held[0], &d), 0);
        assert_addrs(&held[0], "10.9.0.0", "10.9.0.1");
        assert_int_equal(vmsnap_net_alloc(&c, held, 1, &held[1], &d), 0);
        assert_addrs(&held[1], "10.9.0.2", "10.9.0.3");
        assert_int_equal(held[1].prefix, 31);
        struct vmsnap_net_addrs a;
        assert_int_equal(vmsnap_net_alloc(&c, held, 2, &a, &d), -ENOSPC);
}

/* A /29 pool holds two /30 sandboxes; the third gets -ENOSPC and a message that says so. */
static void test_alloc_exhausted(void **state)
{
        (void)state;
        struct vmsnap_net_config c = pool_config("10.9.0.0/29", 30);
        struct vmsnap_net_addrs held[2], a = {.prefix = 99};
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_net_alloc(&c, held, 0, &held[0], &d), 0);
        assert_int_equal(vmsnap_net_alloc(&c, held, 1, &held[1], &d), 0);
        assert_int_equal(vmsnap_net_alloc(&c, held, 2, &a, &d), -ENOSPC);
        assert_non_null(strstr(d.msg, "address pool 10.9.0.0/29 exhausted: all 2 /30 slots"));
        assert_int_equal(a.prefix, 99); /* untouched */
}

static void test_alloc_bad_config(void **state)
{
        (void)state;
        struct vmsnap_net_addrs a;
        struct vmsnap_diag d = {0};
        struct vmsnap_net_config c = pool_config("10.9.0.0/24", 29);
        assert_int_equal(vmsnap_net_alloc(&c, NULL, 0, &a, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "want /30 or /31"));
        c = pool_config("10.9.0.0/31", 30);
        assert_int_equal(vmsnap_net_alloc(&c, NULL, 0, &a, &d), -EINVAL);
        c = pool_config("10.0.0.0/24", 30);
        c.pool.addr.s_addr = htonl(0x0a000001); /* host bits set behind the parser's back */
        assert_int_equal(vmsnap_net_alloc(&c, NULL, 0, &a, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "not a network address"));
}

static void test_port(void **state)
{
        (void)state;
        struct vmsnap_net_addrs a;
        struct vmsnap_diag d = {0};
        char out[VMSNAP_NET_HOSTPORT_LEN];
        assert_int_equal(vmsnap_net_alloc(NULL, NULL, 0, &a, &d), 0);
        assert_int_equal(vmsnap_net_port(&a, 8080, out, &d), 0);
        assert_string_equal(out, "10.201.0.2:8080");
        assert_int_equal(vmsnap_net_port(&a, 65535, out, &d), 0);
        assert_int_equal(vmsnap_net_port(&a, 0, out, &d), -ERANGE);
        assert_non_null(strstr(d.msg, "port 0 out of range (1-65535)"));
        assert_int_equal(vmsnap_net_port(&a, 65536, out, &d), -ERANGE);
        assert_int_equal(vmsnap_net_port(&a, -1, out, &d), -ERANGE);
}

static void test_netns_path(void **state)
{
        (void)state;
        char buf[128];
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_net_netns_path(NULL, "abc-1", buf, sizeof(buf), &d), 0);
        assert_string_equal(buf, "/run/netns/vmsnap-abc-1");
        assert_int_equal(vmsnap_net_netns_path(NULL, "../etc", buf, sizeof(buf), &d), -EINVAL);
        assert_int_equal(vmsnap_net_netns_path(NULL, "-x", buf, sizeof(buf), &d), -EINVAL);
        assert_int_equal(vmsnap_net_netns_path(NULL, "a b", buf, sizeof(buf), &d), -EINVAL);
        assert_int_equal(vmsnap_net_netns_path(NULL, "abc", buf, 8, &d), -ENAMETOOLONG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cidr),
                cmocka_unit_test(test_egress),
                cmocka_unit_test(test_alloc_default_pool),
                cmocka_unit_test(test_alloc_lowest_free),
                cmocka_unit_test(test_alloc_slash31),
                cmocka_unit_test(test_alloc_exhausted),
                cmocka_unit_test(test_alloc_bad_config),
                cmocka_unit_test(test_port),
                cmocka_unit_test(test_netns_path),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
