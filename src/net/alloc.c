/* The address pool: a pure allocator over the slots the caller says are held, and ports. */
#include "net/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/cleanup.h"

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

/* The slot index of every held address inside the pool, sorted (outsiders are ignored:
 * they cannot collide with a slot of this pool). */
static uint32_t *held_slots(const struct vmsnap_net_config *c,
                            const struct vmsnap_net_addrs *in_use, size_t n, size_t *ret_n)
{
        uint32_t *slots = malloc((n ? n : 1) * sizeof(*slots));
        if (!slots)
                return NULL;
        uint32_t base = ntohl(c->pool.addr.s_addr);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                struct in_addr ends[2] = {in_use[i].host, in_use[i].sandbox};
                for (int e = 0; e < 2; e++) {
                        if (!vmsnap_cidr_contains(&c->pool, ends[e]))
                                continue;
                        slots[k++] = (ntohl(ends[e].s_addr) - base) >> (32 - c->slot_prefix);
                        break; /* both ends are in one slot */
                }
        }
        qsort(slots, k, sizeof(*slots), cmp_u32);
        *ret_n = k;
        return slots;
}

int vmsnap_net_alloc(const struct vmsnap_net_config *cfg, const struct vmsnap_net_addrs *in_use,
                     size_t n_in_use, struct vmsnap_net_addrs *ret, struct vmsnap_diag *d)
{
        struct vmsnap_net_config c;
        net_config_resolve(cfg, &c);
        int r = net_config_check(&c, d);
        if (r < 0)
                return r;
        if (!ret || (n_in_use && !in_use))
                return vmsnap_diag(d, -EINVAL, "network: alloc: missing argument");
        size_t n_held;
        _cleanup_free_ uint32_t *held = held_slots(&c, in_use, n_in_use, &n_held);
        if (!held)
                return vmsnap_diag(d, -ENOMEM, "network: alloc: out of memory");
        uint64_t n_slots = 1ull << (c.slot_prefix - c.pool.prefix);
        uint64_t pick = 0;
        for (size_t i = 0; i < n_held && held[i] <= pick; i++)
                if (held[i] == pick)
                        pick++;
        if (pick >= n_slots) {
                char pool[VMSNAP_CIDR_STRLEN];
                vmsnap_cidr_format(&c.pool, pool);
                return vmsnap_diag(d, -ENOSPC,
                                   "network: address pool %s exhausted: all %llu /%u slots are "
                                   "held by sandboxes (destroy some or configure a larger pool)",
                                   pool, (unsigned long long)n_slots, (unsigned)c.slot_prefix);
        }
        uint32_t slot_base = ntohl(c.pool.addr.s_addr) + ((uint32_t)pick << (32 - c.slot_prefix));
        uint32_t host = slot_base + (c.slot_prefix == 31 ? 0 : 1);
        ret->host.s_addr = htonl(host);
        ret->sandbox.s_addr = htonl(host + 1);
        ret->prefix = c.slot_prefix;
        return 0;
}

int vmsnap_net_port(const struct vmsnap_net_addrs *a, long guest_port,
                    char out[VMSNAP_NET_HOSTPORT_LEN], struct vmsnap_diag *d)
{
        if (!a || !out)
                return vmsnap_diag(d, -EINVAL, "network: port: missing argument");
        if (guest_port < 1 || guest_port > 65535)
                return vmsnap_diag(d, -ERANGE, "port %ld out of range (1-65535)", guest_port);
        char ip[INET_ADDRSTRLEN];
        net_addr_format(a->sandbox, ip);
        snprintf(out, VMSNAP_NET_HOSTPORT_LEN, "%s:%ld", ip, guest_port);
        return 0;
}
