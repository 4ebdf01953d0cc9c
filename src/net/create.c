/* Building and removing one sandbox's network (docs/network.md, "Lifecycle"). */
#include "net/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "util/cleanup.h"
#include "util/sys.h"

/* What this call made, so a failure removes exactly that and nothing it found. */
struct made {
        bool pin;
        bool veth;
        bool host_table;
};

static int check_spec(const struct vmsnap_net_config *c, const struct vmsnap_net_spec *spec,
                      struct vmsnap_diag *d)
{
        if (!spec)
                return vmsnap_diag(d, -EINVAL, "network: no spec given");
        int r = net_id_check(spec->id, d);
        if (r < 0)
                return r;
        r = net_addrs_check(c, &spec->addrs, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "sandbox %s", spec->id);
        const struct vmsnap_net_egress *e = &spec->egress;
        if (e->kind > VMSNAP_NET_EGRESS_CIDRS ||
            (e->kind == VMSNAP_NET_EGRESS_CIDRS &&
             (e->n_cidrs == 0 || e->n_cidrs > VMSNAP_NET_EGRESS_MAX)))
                return vmsnap_diag(d, -EINVAL, "sandbox %s: invalid egress policy", spec->id);
        if (spec->tap_uid == 0 || spec->tap_uid == (uid_t)-1)
                return vmsnap_diag(d, -EINVAL,
                                   "sandbox %s: the TAP must belong to the jail's uid, not %d",
                                   spec->id, (int)spec->tap_uid);
        return 0;
}

/* Inside the sandbox namespace: no IPv6, forwarding on, lo, veth0 with the unique address,
 * tap0 as the guest's gateway, the default route to the host. */
static int sandbox_links(const struct vmsnap_net_spec *spec, struct vmsnap_diag *d)
{
        static const char *const sysctls[][2] = {
                {"/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"},
                {"/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"},
                {"/proc/sys/net/ipv4/ip_forward", "1"},
        };
        for (size_t i = 0; i < sizeof(sysctls) / sizeof(sysctls[0]); i++) {
                int r = net_sysctl_write(sysctls[i][0], sysctls[i][1], i < 2, d);
                if (r < 0)
                        return r;
        }
        int r = net_tap_create(VMSNAP_NET_TAP_NAME, spec->tap_uid, spec->tap_multi_queue, d);
        if (r < 0)
                return r;
        struct nl_sock *sk;
        r = net_nl_open(&sk, d);
        if (r < 0)
                return r;
        struct in_addr gateway;
        inet_pton(AF_INET, VMSNAP_NET_GATEWAY_IP, &gateway);
        if ((r = net_link_configure(sk, "lo", NULL, NULL, d)) < 0 ||
            (r = net_addr_add(sk, VMSNAP_NET_PEER_NAME, spec->addrs.sandbox, spec->addrs.prefix,
                              d)) < 0 ||
            (r = net_link_configure(sk, VMSNAP_NET_PEER_NAME, NULL, NULL, d)) < 0 ||
            (r = net_addr_add(sk, VMSNAP_NET_TAP_NAME, gateway, VMSNAP_NET_GUEST_PREFIX, d)) < 0 ||
            (r = net_link_configure(sk, VMSNAP_NET_TAP_NAME, VMSNAP_NET_GATEWAY_MAC, NULL, d)) <
                    0 ||
            (r = net_route_default(sk, VMSNAP_NET_PEER_NAME, spec->addrs.host, d)) < 0) {
                net_nl_close(sk);
                return r;
        }
        net_nl_close(sk);
        return 0;
}

/* Runs the namespace-side steps with this thread inside nsfd, then comes back. */
static int build_inside(int nsfd, const struct vmsnap_net_spec *spec, struct vmsnap_diag *d)
{
        int orig;
        int r = net_ns_enter(nsfd, &orig, d);
        if (r < 0)
                return r;
        r = sandbox_links(spec, d);
        if (r == 0) {
                vmsnap_crashpoint("net-create-sandbox-links");
                _cleanup_free_ char *rules = net_rules_sandbox(&spec->addrs);
                r = net_nft_run(rules, "sandbox table", d);
        }
        net_ns_leave(orig);
        close(orig);
        return r;
}

/* Host side of the veth: no IPv6, the host address, the alias naming the id, then up (after
 * its table exists). */
static int host_link(const char *id, const char *link, const struct vmsnap_net_addrs *a,
                     struct vmsnap_diag *d)
{
        char alias[sizeof(NET_ALIAS_PREFIX) + VMSNAP_NET_ID_MAX];
        snprintf(alias, sizeof(alias), NET_ALIAS_PREFIX "%s", id);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", link);
        int r = net_sysctl_write(path, "1", true, d);
        if (r < 0)
                return r;
        struct nl_sock *sk;
        r = net_nl_open(&sk, d);
        if (r < 0)
                return r;
        if ((r = net_addr_add(sk, link, a->host, a->prefix, d)) == 0)
                r = net_link_configure(sk, link, NULL, alias, d);
        net_nl_close(sk);
        return r;
}

static int make_veth(const struct vmsnap_net_config *c, const struct vmsnap_net_spec *spec,
                     const char *link, struct vmsnap_diag *d)
{
        _cleanup_close_ int nsfd = -1;
        int r = net_ns_open(c->netns_dir, spec->id, &nsfd, d);
        if (r < 0)
                return r;
        struct nl_sock *sk;
        r = net_nl_open(&sk, d);
        if (r < 0)
                return r;
        r = net_veth_create(sk, link, VMSNAP_NET_PEER_NAME, nsfd, d);
        net_nl_close(sk);
        return r;
}

static int build(const struct vmsnap_net_config *c, const struct vmsnap_net_spec *spec,
                 struct made *made, struct vmsnap_diag *d)
{
        char link[IFNAMSIZ];
        net_link_name(spec->id, link);
        int r = net_ns_pin(c->netns_dir, spec->id, d);
        if (r < 0)
                return r;
        made->pin = true;
        vmsnap_crashpoint("net-create-netns");
        if ((r = make_veth(c, spec, link, d)) < 0)
                return r;
        made->veth = true;
        vmsnap_crashpoint("net-create-veth");
        _cleanup_close_ int nsfd = -1;
        if ((r = net_ns_open(c->netns_dir, spec->id, &nsfd, d)) < 0 ||
            (r = build_inside(nsfd, spec, d)) < 0)
                return r;
        vmsnap_crashpoint("net-create-sandbox-rules");
        _cleanup_free_ char *rules =
                net_rules_host(spec->id, link, &spec->addrs, &c->pool, &spec->egress);
        made->host_table = true; /* a failed batch adds nothing; deleting it then is a no-op */
        if ((r = net_nft_run(rules, "host table", d)) < 0)
                return r;
        vmsnap_crashpoint("net-create-host-rules");
        if ((r = host_link(spec->id, link, &spec->addrs, d)) < 0)
                return r;
        vmsnap_crashpoint("net-create-host-links");
        return 0;
}

static void undo(const struct vmsnap_net_config *c, const char *id, const struct made *made)
{
        if (made->host_table) {
                _cleanup_free_ char *batch = net_rules_host_delete(id);
                (void)net_nft_run(batch, "delete host table", NULL);
        }
        if (made->veth) {
                char link[IFNAMSIZ];
                struct nl_sock *sk;
                net_link_name(id, link);
                if (net_nl_open(&sk, NULL) == 0) {
                        (void)net_link_delete(sk, link, NULL);
                        net_nl_close(sk);
                }
        }
        if (made->pin)
                (void)net_ns_unpin(c->netns_dir, id, NULL);
}

int vmsnap_net_create(const struct vmsnap_net_config *cfg, const struct vmsnap_net_spec *spec,
                      struct vmsnap_diag *d)
{
        struct vmsnap_net_config c;
        net_config_resolve(cfg, &c);
        int r = net_config_check(&c, d);
        if (r < 0 || (r = check_spec(&c, spec, d)) < 0)
                return r;
        if (vmsnap_net_exists(&c, spec->id))
                return vmsnap_diag(d, -EEXIST, "sandbox %s: its network namespace exists already",
                                   spec->id);
        struct made made = {0};
        r = build(&c, spec, &made, d);
        if (r < 0) {
                undo(&c, spec->id, &made);
                return vmsnap_diag_prefix(d, "sandbox %s: create network", spec->id);
        }
        return 0;
}

/* Deletes the host link named from id unless its alias says it belongs to another id. */
static int delete_host_link(const char *id, struct vmsnap_diag *d)
{
        char link[IFNAMSIZ], mine[sizeof(NET_ALIAS_PREFIX) + VMSNAP_NET_ID_MAX];
        net_link_name(id, link);
        snprintf(mine, sizeof(mine), NET_ALIAS_PREFIX "%s", id);
        struct nl_sock *sk;
        int r = net_nl_open(&sk, d);
        if (r < 0)
                return r;
        char *alias = NULL;
        r = net_link_alias(sk, link, &alias, d);
        if (r == 0 && (!alias || strcmp(alias, mine) == 0))
                r = net_link_delete(sk, link, d);
        else if (r == -ENODEV || r == 0)
                r = 0; /* gone, or another id's (a hash collision): not ours to touch */
        free(alias);
        net_nl_close(sk);
        return r;
}

int vmsnap_net_destroy(const struct vmsnap_net_config *cfg, const char *id, struct vmsnap_diag *d)
{
        struct vmsnap_net_config c;
        net_config_resolve(cfg, &c);
        int r = net_config_check(&c, d);
        if (r < 0 || (r = net_id_check(id, d)) < 0)
                return r;
        _cleanup_free_ char *batch = net_rules_host_delete(id);
        int first = net_nft_run(batch, "delete host table", d);
        vmsnap_crashpoint("net-destroy-host-rules");
        r = delete_host_link(id, first < 0 ? NULL : d);
        if (first == 0)
                first = r;
        vmsnap_crashpoint("net-destroy-host-link");
        r = net_ns_unpin(c.netns_dir, id, first < 0 ? NULL : d);
        if (first == 0)
                first = r;
        if (first < 0)
                return vmsnap_diag_prefix(d, "sandbox %s: destroy network", id);
        return 0;
}

bool vmsnap_net_exists(const struct vmsnap_net_config *cfg, const char *id)
{
        char path[PATH_MAX];
        if (vmsnap_net_netns_path(cfg, id, path, sizeof(path), NULL) < 0)
                return false;
        struct stat st;
        return lstat(path, &st) == 0;
}
