/* Links, addresses and routes over rtnetlink through libnl-route-3. A socket works in the
 * network namespace its thread was in when it was opened. */
#include "net/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <string.h>

/* libnl's error codes back to a negative errno the callers understand. */
static int nl_to_errno(int nlerr)
{
        switch (-nlerr) {
        case NLE_EXIST:
                return -EEXIST;
        case NLE_NODEV:
        case NLE_OBJ_NOTFOUND:
                return -ENODEV;
        case NLE_PERM:
        case NLE_NOACCESS:
                return -EPERM;
        case NLE_NOMEM:
                return -ENOMEM;
        case NLE_INVAL:
                return -EINVAL;
        case NLE_BUSY:
                return -EBUSY;
        case NLE_OPNOTSUPP:
                return -EOPNOTSUPP;
        default:
                return -EIO;
        }
}

static int nl_fail(struct vmsnap_diag *d, int nlerr, const char *what, const char *name)
{
        return vmsnap_diag(d, nl_to_errno(nlerr), "%s %s: %s", what, name, nl_geterror(nlerr));
}

int net_nl_open(struct nl_sock **ret, struct vmsnap_diag *d)
{
        struct nl_sock *sk = nl_socket_alloc();
        if (!sk)
                return vmsnap_diag(d, -ENOMEM, "netlink: out of memory");
        int err = nl_connect(sk, NETLINK_ROUTE);
        if (err < 0) {
                nl_socket_free(sk);
                return nl_fail(d, err, "netlink", "connect");
        }
        *ret = sk;
        return 0;
}

void net_nl_close(struct nl_sock *sk)
{
        if (sk)
                nl_socket_free(sk);
}

int net_veth_create(struct nl_sock *sk, const char *name, const char *peer_name, int peer_nsfd,
                    struct vmsnap_diag *d)
{
        struct rtnl_link *link = rtnl_link_veth_alloc();
        if (!link)
                return vmsnap_diag(d, -ENOMEM, "veth %s: out of memory", name);
        rtnl_link_set_name(link, name);
        struct rtnl_link *peer = rtnl_link_veth_get_peer(link);
        rtnl_link_set_name(peer, peer_name);
        rtnl_link_set_ns_fd(peer, peer_nsfd);
        int err = rtnl_link_add(sk, link, NLM_F_CREATE | NLM_F_EXCL);
        rtnl_link_put(peer);
        rtnl_link_put(link);
        if (err == -NLE_EXIST)
                return vmsnap_diag(d, -EEXIST,
                                   "veth %s: a link of that name exists (another sandbox id "
                                   "with the same hash prefix, or a leftover: sweep)",
                                   name);
        return err < 0 ? nl_fail(d, err, "create veth", name) : 0;
}

int net_link_configure(struct nl_sock *sk, const char *name, const char *mac, const char *alias,
                       struct vmsnap_diag *d)
{
        struct rtnl_link *orig = NULL, *change = NULL;
        struct nl_addr *lladdr = NULL;
        int err = rtnl_link_get_kernel(sk, 0, name, &orig);
        if (err < 0)
                return nl_fail(d, err, "find link", name);
        int r = 0;
        change = rtnl_link_alloc();
        if (!change) {
                r = vmsnap_diag(d, -ENOMEM, "link %s: out of memory", name);
                goto out;
        }
        if (mac) {
                err = nl_addr_parse(mac, AF_LLC, &lladdr);
                if (err < 0) {
                        r = nl_fail(d, err, "parse MAC of", name);
                        goto out;
                }
                rtnl_link_set_addr(change, lladdr);
        }
        if (alias)
                rtnl_link_set_ifalias(change, alias); /* the kernel ignores it on creation */
        rtnl_link_set_flags(change, IFF_UP);
        err = rtnl_link_change(sk, orig, change, 0);
        if (err < 0)
                r = nl_fail(d, err, "bring up link", name);
out:
        nl_addr_put(lladdr);
        rtnl_link_put(change);
        rtnl_link_put(orig);
        return r;
}

static int ifindex_of(const char *ifname, struct vmsnap_diag *d)
{
        unsigned idx = if_nametoindex(ifname);
        if (idx == 0)
                return vmsnap_diag(d, -ENODEV, "link %s: %s", ifname, strerror(errno));
        return (int)idx;
}

int net_addr_add(struct nl_sock *sk, const char *ifname, struct in_addr addr, int prefix,
                 struct vmsnap_diag *d)
{
        int idx = ifindex_of(ifname, d);
        if (idx < 0)
                return idx;
        struct rtnl_addr *a = rtnl_addr_alloc();
        struct nl_addr *local = nl_addr_build(AF_INET, &addr, sizeof(addr));
        int err = -NLE_NOMEM;
        if (a && local) {
                nl_addr_set_prefixlen(local, prefix);
                rtnl_addr_set_ifindex(a, idx);
                rtnl_addr_set_local(a, local);
                err = rtnl_addr_add(sk, a, NLM_F_EXCL);
        }
        nl_addr_put(local);
        rtnl_addr_put(a);
        return err < 0 ? nl_fail(d, err, "add address on", ifname) : 0;
}

int net_route_default(struct nl_sock *sk, const char *ifname, struct in_addr gateway,
                      struct vmsnap_diag *d)
{
        int idx = ifindex_of(ifname, d);
        if (idx < 0)
                return idx;
        struct in_addr any = {0};
        struct rtnl_route *route = rtnl_route_alloc();
        struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
        struct nl_addr *dst = nl_addr_build(AF_INET, &any, sizeof(any));
        struct nl_addr *gw = nl_addr_build(AF_INET, &gateway, sizeof(gateway));
        int err = -NLE_NOMEM;
        if (route && nh && dst && gw) {
                nl_addr_set_prefixlen(dst, 0);
                rtnl_route_set_family(route, AF_INET);
                rtnl_route_set_table(route, RT_TABLE_MAIN);
                rtnl_route_set_protocol(route, RTPROT_STATIC);
                rtnl_route_set_dst(route, dst);
                rtnl_route_nh_set_ifindex(nh, idx);
                rtnl_route_nh_set_gateway(nh, gw);
                rtnl_route_add_nexthop(route, nh);
                nh = NULL; /* owned by the route now */
                err = rtnl_route_add(sk, route, NLM_F_CREATE | NLM_F_EXCL);
        }
        if (nh)
                rtnl_route_nh_free(nh);
        nl_addr_put(gw);
        nl_addr_put(dst);
        rtnl_route_put(route);
        return err < 0 ? nl_fail(d, err, "add default route via", ifname) : 0;
}

int net_link_delete(struct nl_sock *sk, const char *name, struct vmsnap_diag *d)
{
        struct rtnl_link *link = rtnl_link_alloc();
        if (!link)
                return vmsnap_diag(d, -ENOMEM, "link %s: out of memory", name);
        rtnl_link_set_name(link, name);
        int err = rtnl_link_delete(sk, link);
        rtnl_link_put(link);
        if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND)
                return 0;
        return err < 0 ? nl_fail(d, err, "delete link", name) : 0;
}

int net_link_list(struct nl_sock *sk, char ***ret_names, size_t *ret_n, struct vmsnap_diag *d)
{
        struct nl_cache *cache = NULL;
        int err = rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache);
        if (err < 0)
                return nl_fail(d, err, "list links", "");
        char **names = NULL;
        size_t n = 0;
        int r = 0;
        for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
                const char *name = rtnl_link_get_name((struct rtnl_link *)o);
                if (name && net_strv_push(&names, &n, name) < 0) {
                        r = vmsnap_diag(d, -ENOMEM, "list links: out of memory");
                        break;
                }
        }
        nl_cache_free(cache);
        if (r < 0) {
                net_strv_free(names);
                return r;
        }
        *ret_names = names;
        *ret_n = n;
        return 0;
}

int net_link_alias(struct nl_sock *sk, const char *name, char **ret_alias, struct vmsnap_diag *d)
{
        struct rtnl_link *link = NULL;
        int err = rtnl_link_get_kernel(sk, 0, name, &link);
        if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND)
                return -ENODEV;
        if (err < 0)
                return nl_fail(d, err, "find link", name);
        const char *alias = rtnl_link_get_ifalias(link);
        char *copy = alias ? strdup(alias) : NULL;
        rtnl_link_put(link);
        if (alias && !copy)
                return vmsnap_diag(d, -ENOMEM, "link %s: out of memory", name);
        *ret_alias = copy;
        return 0;
}
