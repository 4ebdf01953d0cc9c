/* bench-net: the cost of one sandbox's network, set-up + tear-down, against the floor
 * measured in the same run: a bare network namespace (unshare(CLONE_NEWNET), setns back,
 * nothing pinned). Target (issue 12): the network adds at most 20 ms per sandbox.
 *
 * Runs in its own network and mount namespaces (so nothing touches the host's), as root;
 * exits 77 otherwise. Build with the release preset.
 * usage: bench-net [--count N] */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include <vmsnap/net.h>

#include "net/internal.h"

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *what, const char *why)
{
        fprintf(stderr, "bench-net: %s: %s\n", what, why);
        exit(1);
}

/* A private host: new network and mount namespaces, and a tmpfs for the pins. */
static void private_host(char *dir, size_t size)
{
        if (geteuid() != 0 || unshare(CLONE_NEWNET | CLONE_NEWNS) < 0) {
                fprintf(stderr, "bench-net: skipped: needs root and network namespaces\n");
                exit(77);
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                die("make / private", strerror(errno));
        char tmpl[] = "/tmp/vmsnap-bench-net.XXXXXX";
        if (!mkdtemp(tmpl) || mount("tmpfs", tmpl, "tmpfs", 0, "mode=0700") < 0)
                die("tmpfs", strerror(errno));
        snprintf(dir, size, "%s/netns", tmpl);
}

/* The floor: a new namespace per iteration, left at once (the kernel frees it later). */
static double floor_ms(int count)
{
        int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (orig < 0)
                die("open own namespace", strerror(errno));
        double t0 = now_ms();
        for (int i = 0; i < count; i++)
                if (unshare(CLONE_NEWNET) < 0 || setns(orig, CLONE_NEWNET) < 0)
                        die("unshare/setns", strerror(errno));
        double t = (now_ms() - t0) / count;
        close(orig);
        return t;
}

/* The kernel's share: a bare namespace plus a bare veth pair into it, created and deleted
 * (no addresses, no TAP, no rules) — what any veth-based design pays. */
static double veth_floor_ms(int count, double *ret_delete)
{
        struct vmsnap_diag d = {0};
        struct nl_sock *sk;
        int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (orig < 0 || net_nl_open(&sk, &d) < 0)
                die("veth floor", d.msg);
        double total = 0, del = 0;
        for (int i = 0; i < count; i++) {
                double t0 = now_ms();
                if (unshare(CLONE_NEWNET) < 0)
                        die("unshare", strerror(errno));
                int ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
                if (ns < 0 || setns(orig, CLONE_NEWNET) < 0)
                        die("setns", strerror(errno));
                if (net_veth_create(sk, "benchveth", "peer0", ns, &d) < 0)
                        die("veth", d.msg);
                close(ns);
                double t1 = now_ms();
                if (net_link_delete(sk, "benchveth", &d) < 0)
                        die("veth delete", d.msg);
                double t2 = now_ms();
                total += t2 - t0;
                del += t2 - t1;
        }
        net_nl_close(sk);
        close(orig);
        *ret_delete = del / count;
        return total / count;
}

/* Creates and destroys count sandbox networks one after another; per-sandbox means. */
static void network_ms(const char *dir, int count, double *ret_create, double *ret_destroy)
{
        struct vmsnap_net_config cfg = {.netns_dir = dir};
        double create = 0, destroy = 0;
        for (int i = 0; i < count; i++) {
                struct vmsnap_net_spec s = {.tap_uid = 1879113728};
                struct vmsnap_diag d = {0};
                char id[32];
                snprintf(id, sizeof(id), "bench-%d", i);
                s.id = id;
                if (vmsnap_net_alloc(&cfg, NULL, 0, &s.addrs, &d) < 0 ||
                    vmsnap_net_egress_parse(i % 2 ? "10.0.0.0/8,192.0.2.0/24" : "allow", &s.egress,
                                            &d) < 0)
                        die("spec", d.msg);
                double t0 = now_ms();
                if (vmsnap_net_create(&cfg, &s, &d) < 0)
                        die("create", d.msg);
                double t1 = now_ms();
                if (vmsnap_net_destroy(&cfg, id, &d) < 0)
                        die("destroy", d.msg);
                create += t1 - t0;
                destroy += now_ms() - t1;
        }
        *ret_create = create / count;
        *ret_destroy = destroy / count;
}

int main(int argc, char **argv)
{
        int count = 50;
        static const struct option opts[] = {{"count", required_argument, NULL, 'n'}, {0}};
        for (int c; (c = getopt_long(argc, argv, "n:", opts, NULL)) != -1;) {
                if (c != 'n' || (count = atoi(optarg)) < 1) {
                        fprintf(stderr, "usage: bench-net [--count N]\n");
                        return 2;
                }
        }
        char dir[256];
        private_host(dir, sizeof(dir));
        network_ms(dir, 3, &(double){0}, &(double){0}); /* warm up: modules, caches */
        double base = floor_ms(count);
        double veth_delete;
        double veth = veth_floor_ms(count, &veth_delete);
        double create, destroy;
        network_ms(dir, count, &create, &destroy);
        double total = create + destroy;
        printf("sandboxes                    %d\n", count);
        printf("floor (bare netns)           %8.3f ms/sandbox\n", base);
        printf("bare netns + veth, made+deleted %5.3f ms/sandbox (of which the veth delete %.3f "
               "ms)\n",
               veth, veth_delete);
        printf("network create               %8.3f ms/sandbox\n", create);
        printf("network destroy              %8.3f ms/sandbox\n", destroy);
        printf("network create+destroy       %8.3f ms/sandbox (%.1fx the bare netns, %.2fx the "
               "bare "
               "netns + veth; target <= 20 ms: %s)\n",
               total, total / base, total / veth, total <= 20.0 ? "met" : "MISSED");
        printf("network create (spawn path)  %8.3f ms/sandbox (target <= 20 ms: %s)\n", create,
               create <= 20.0 ? "met" : "MISSED");
        return 0;
}
