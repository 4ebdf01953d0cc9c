/* Every name this module gives an object is derived from the sandbox id, so destroy and the
 * recovery sweep need no state of their own (docs/network.md, "Names"). */
#include "net/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/ids.h"

int net_id_check(const char *id, struct vmsnap_diag *d)
{
        if (!id || !id[0])
                return vmsnap_diag(d, -EINVAL, "network: missing sandbox id");
        size_t n = strnlen(id, VMSNAP_NET_ID_MAX + 1);
        if (n > VMSNAP_NET_ID_MAX)
                return vmsnap_diag(d, -EINVAL, "network: sandbox id longer than %d characters",
                                   VMSNAP_NET_ID_MAX);
        if (id[0] == '-')
                return vmsnap_diag(d, -EINVAL, "network: sandbox id %s starts with '-'", id);
        for (size_t i = 0; i < n; i++) {
                char c = id[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '_';
                if (!ok)
                        return vmsnap_diag(d, -EINVAL,
                                           "network: sandbox id %.64s: character %zu is not one "
                                           "of [A-Za-z0-9_-]",
                                           id, i + 1);
        }
        return 0;
}

/* "vmsn" + the first 11 hex digits of XXH3-128(id): 15 characters, IFNAMSIZ's limit. */
void net_link_name(const char *id, char out[IFNAMSIZ])
{
        struct vmsnap_hash h;
        char hex[33];
        vmsnap_hash128(id, strlen(id), &h);
        vmsnap_hash_format(&h, hex);
        snprintf(out, IFNAMSIZ, "%s%.*s", NET_LINK_PREFIX, NET_LINK_HEX, hex);
}

bool net_is_link_name(const char *name)
{
        size_t prefix = strlen(NET_LINK_PREFIX);
        if (strncmp(name, NET_LINK_PREFIX, prefix) != 0 || strlen(name) != prefix + NET_LINK_HEX)
                return false;
        return strspn(name + prefix, "0123456789abcdef") == NET_LINK_HEX;
}

void net_config_resolve(const struct vmsnap_net_config *in, struct vmsnap_net_config *ret)
{
        struct vmsnap_net_config c = in ? *in : (struct vmsnap_net_config){0};
        if (!c.netns_dir)
                c.netns_dir = VMSNAP_NET_DEFAULT_DIR;
        if (c.pool.prefix == 0 && c.pool.addr.s_addr == 0)
                (void)vmsnap_cidr_parse(VMSNAP_NET_DEFAULT_POOL, &c.pool, NULL);
        if (c.slot_prefix == 0)
                c.slot_prefix = 30;
        *ret = c;
}

/* A resolved config: an absolute directory, a /30 or /31 slot, a pool that holds a slot. */
int net_config_check(const struct vmsnap_net_config *cfg, struct vmsnap_diag *d)
{
        if (cfg->netns_dir[0] != '/')
                return vmsnap_diag(d, -EINVAL, "network: netns_dir %s is not absolute",
                                   cfg->netns_dir);
        if (cfg->slot_prefix != 30 && cfg->slot_prefix != 31)
                return vmsnap_diag(d, -EINVAL,
                                   "network: slot prefix /%u: want /30 or /31 per sandbox",
                                   (unsigned)cfg->slot_prefix);
        char pool[VMSNAP_CIDR_STRLEN];
        vmsnap_cidr_format(&cfg->pool, pool);
        uint32_t mask = cfg->pool.prefix ? 0xffffffffu << (32 - cfg->pool.prefix) : 0;
        if (cfg->pool.prefix > 32 || (ntohl(cfg->pool.addr.s_addr) & ~mask))
                return vmsnap_diag(d, -EINVAL, "network: pool %s is not a network address", pool);
        if (cfg->pool.prefix < 8 || cfg->pool.prefix > cfg->slot_prefix)
                return vmsnap_diag(d, -EINVAL,
                                   "network: pool %s must be between /8 and one /%u slot", pool,
                                   (unsigned)cfg->slot_prefix);
        return 0;
}

/* The addresses of a slot must be exactly what vmsnap_net_alloc hands out for this pool. */
int net_addrs_check(const struct vmsnap_net_config *cfg, const struct vmsnap_net_addrs *a,
                    struct vmsnap_diag *d)
{
        char host[INET_ADDRSTRLEN], sandbox[INET_ADDRSTRLEN], pool[VMSNAP_CIDR_STRLEN];
        net_addr_format(a->host, host);
        net_addr_format(a->sandbox, sandbox);
        vmsnap_cidr_format(&cfg->pool, pool);
        uint32_t h = ntohl(a->host.s_addr), s = ntohl(a->sandbox.s_addr);
        uint32_t slot_size = 1u << (32 - cfg->slot_prefix);
        uint32_t first = cfg->slot_prefix == 31 ? 0 : 1;
        bool ok = a->prefix == cfg->slot_prefix && vmsnap_cidr_contains(&cfg->pool, a->host) &&
                  h % slot_size == first && s == h + 1;
        if (!ok)
                return vmsnap_diag(
                        d, -EINVAL, "network: addresses %s/%s (/%u) are not a /%u slot of pool %s",
                        host, sandbox, (unsigned)a->prefix, (unsigned)cfg->slot_prefix, pool);
        return 0;
}

void net_addr_format(struct in_addr a, char out[INET_ADDRSTRLEN])
{
        if (!inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN))
                snprintf(out, INET_ADDRSTRLEN, "?");
}

int vmsnap_net_netns_path(const struct vmsnap_net_config *cfg, const char *id, char *buf,
                          size_t size, struct vmsnap_diag *d)
{
        int r = net_id_check(id, d);
        if (r < 0)
                return r;
        struct vmsnap_net_config c;
        net_config_resolve(cfg, &c);
        int n = snprintf(buf, size, "%s/%s%s", c.netns_dir, NET_NS_PREFIX, id);
        if (n < 0 || (size_t)n >= size)
                return vmsnap_diag(d, -ENAMETOOLONG, "network: %s: namespace path too long", id);
        return 0;
}

void net_strv_free(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

int net_strv_push(char ***v, size_t *n, const char *s)
{
        char **grown = realloc(*v, (*n + 2) * sizeof(char *));
        if (!grown)
                return -ENOMEM;
        *v = grown;
        grown[*n] = strdup(s);
        if (!grown[*n]) {
                grown[*n] = NULL;
                return -ENOMEM;
        }
        grown[++*n] = NULL;
        return 0;
}
