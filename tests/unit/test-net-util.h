/* Shared by the real-namespace tests of src/net/: each test process moves into its own
 * network and mount namespaces first, which play "the host" (so no address, link, rule or
 * mount outside them is ever touched, and everything dies with the process), and counts
 * every kind of object the module makes. Needs root, namespaces, /dev/net/tun and nftables;
 * exits 77 naming what is missing. */
#ifndef VMSNAP_TEST_NET_UTIL_H
#define VMSNAP_TEST_NET_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/internal.h"
#include "util/cleanup.h"

static char net_test_dir[PATH_MAX];   /* the sandbox pins (the module's netns_dir) */
static char net_test_nsdir[PATH_MAX]; /* the test's own namespaces ("world", guests) */

static inline void net_test_skip(const char *why)
{
        fprintf(stderr, "skipped: %s\n", why);
        exit(77);
}

static inline void net_test_die(const char *what, const char *msg)
{
        fprintf(stderr, "test setup: %s: %s\n", what, msg);
        exit(1);
}

/* The private host: new network + mount namespaces, lo up, IPv4 forwarding on (in it only). */
static inline void net_test_private_host(void)
{
        if (geteuid() != 0)
                net_test_skip("needs root (network namespaces, nftables)");
        if (access("/dev/net/tun", R_OK | W_OK) != 0)
                net_test_skip("no /dev/net/tun");
        if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0)
                net_test_skip("unshare(CLONE_NEWNET|CLONE_NEWNS) refused");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                net_test_die("make / private", strerror(errno));
        char tmpl[] = "/tmp/vmsnap-net-test.XXXXXX";
        if (!mkdtemp(tmpl))
                net_test_die("mkdtemp", strerror(errno));
        /* a tmpfs of our own: it disappears with this mount namespace */
        if (mount("tmpfs", tmpl, "tmpfs", 0, "mode=0700") < 0)
                net_test_die("tmpfs", strerror(errno));
        snprintf(net_test_dir, sizeof(net_test_dir), "%s/netns", tmpl);
        snprintf(net_test_nsdir, sizeof(net_test_nsdir), "%s/test-ns", tmpl);
        struct vmsnap_diag d = {0};
        struct nl_sock *sk;
        if (net_nl_open(&sk, &d) < 0 || net_link_configure(sk, "lo", NULL, NULL, &d) < 0)
                net_test_die("lo", d.msg);
        net_nl_close(sk);
        if (net_sysctl_write("/proc/sys/net/ipv4/ip_forward", "1", false, &d) < 0)
                net_test_die("ip_forward", d.msg);
        char **tables = NULL;
        size_t n = 0;
        if (net_nft_run("add table inet probe\ndelete table inet probe\n", "probe", &d) < 0 ||
            net_nft_tables(&tables, &n, &d) < 0)
                net_test_skip("nftables unusable here");
        net_strv_free(tables);
}

static inline struct vmsnap_net_config net_test_config(void)
{
        return (struct vmsnap_net_config){.netns_dir = net_test_dir};
}

struct net_counts {
        size_t pins, nsfs_mounts, links, addrs, routes, tables;
};

static inline size_t count_dir(const char *dir)
{
        char **ids = NULL;
        size_t n = 0;
        struct vmsnap_diag d = {0};
        if (net_ns_list(dir, &ids, &n, &d) < 0)
                net_test_die("list pins", d.msg);
        net_strv_free(ids);
        return n;
}

static inline size_t count_nsfs_mounts(void)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                net_test_die("mountinfo", strerror(errno));
        char line[4096];
        size_t n = 0;
        while (fgets(line, sizeof(line), f))
                if (strstr(line, net_test_dir) && strstr(line, " - nsfs "))
                        n++;
        fclose(f);
        return n;
}

static inline size_t cache_count(struct nl_sock *sk, int kind)
{
        struct nl_cache *cache = NULL;
        int err = kind == 0 ? rtnl_addr_alloc_cache(sk, &cache)
                            : rtnl_route_alloc_cache(sk, AF_UNSPEC, 0, &cache);
        if (err < 0)
                net_test_die("netlink cache", nl_geterror(err));
        size_t n = (size_t)nl_cache_nitems(cache);
        nl_cache_free(cache);
        return n;
}

/* Everything the module can leave behind in the (private) host. */
static inline struct net_counts net_test_count(void)
{
        struct net_counts c = {0};
        struct vmsnap_diag d = {0};
        struct nl_sock *sk;
        char **v = NULL;
        c.pins = count_dir(net_test_dir);
        c.nsfs_mounts = count_nsfs_mounts();
        if (net_nl_open(&sk, &d) < 0 || net_link_list(sk, &v, &c.links, &d) < 0)
                net_test_die("count links", d.msg);
        net_strv_free(v);
        c.addrs = cache_count(sk, 0);
        c.routes = cache_count(sk, 1);
        net_nl_close(sk);
        v = NULL;
        if (net_nft_tables(&v, &c.tables, &d) < 0)
                net_test_die("count tables", d.msg);
        net_strv_free(v);
        return c;
}

static inline void net_test_print(const char *label, struct net_counts c)
{
        fprintf(stderr, "%s: pins %zu nsfs %zu links %zu addrs %zu routes %zu tables %zu\n", label,
                c.pins, c.nsfs_mounts, c.links, c.addrs, c.routes, c.tables);
}

static inline bool net_counts_equal(struct net_counts a, struct net_counts b)
{
        return a.pins == b.pins && a.nsfs_mounts == b.nsfs_mounts && a.links == b.links &&
               a.addrs == b.addrs && a.routes == b.routes && a.tables == b.tables;
}

/* A spec with the next free slot given the ones in held[0..n). */
static inline struct vmsnap_net_spec
net_test_spec(const char *id, const struct vmsnap_net_addrs *held, size_t n, const char *egress)
{
        struct vmsnap_net_config cfg = net_test_config();
        struct vmsnap_net_spec s = {.id = id, .tap_uid = 1879113728};
        struct vmsnap_diag d = {0};
        if (vmsnap_net_alloc(&cfg, held, n, &s.addrs, &d) < 0 ||
            vmsnap_net_egress_parse(egress, &s.egress, &d) < 0)
                net_test_die(id, d.msg);
        return s;
}

#endif
