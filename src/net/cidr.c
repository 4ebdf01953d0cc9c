/* IPv4 CIDRs and egress policies: strict parsing with errors that say what is wrong. */
#include "net/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/cleanup.h"

static uint32_t prefix_mask(unsigned prefix)
{
        return prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
}

/* Parses one decimal octet at *p (no sign, no leading zero, <= 255); advances *p. */
static int parse_octet(const char **p, unsigned *ret)
{
        const char *s = *p;
        if (*s < '0' || *s > '9')
                return -EINVAL;
        unsigned v = 0;
        size_t n = 0;
        while (s[n] >= '0' && s[n] <= '9') {
                v = v * 10 + (unsigned)(s[n] - '0');
                if (++n > 3 || v > 255)
                        return -EINVAL;
        }
        if (n > 1 && s[0] == '0')
                return -EINVAL;
        *p = s + n;
        *ret = v;
        return 0;
}

/* Parses "a.b.c.d" at the start of text; *ret_end points past it. Host byte order. */
static int parse_ipv4(const char *text, uint32_t *ret, const char **ret_end)
{
        uint32_t v = 0;
        const char *p = text;
        for (int i = 0; i < 4; i++) {
                unsigned octet;
                if (i > 0 && *p++ != '.')
                        return -EINVAL;
                if (parse_octet(&p, &octet) < 0)
                        return -EINVAL;
                v = v << 8 | octet;
        }
        *ret = v;
        *ret_end = p;
        return 0;
}

int vmsnap_cidr_parse(const char *text, struct vmsnap_cidr *ret, struct vmsnap_diag *d)
{
        if (!text || !ret)
                return vmsnap_diag(d, -EINVAL, "CIDR: missing text");
        uint32_t ip;
        const char *p;
        if (parse_ipv4(text, &ip, &p) < 0)
                return vmsnap_diag(d, -EINVAL, "%.64s: not an IPv4 CIDR (want a.b.c.d/len)", text);
        if (*p != '/')
                return vmsnap_diag(d, -EINVAL, "%.64s: missing /prefix length", text);
        p++;
        if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '\0') || strlen(p) > 2)
                return vmsnap_diag(d, -EINVAL, "%.64s: prefix length is not a number 0-32", text);
        char *end;
        unsigned long prefix = strtoul(p, &end, 10);
        if (*end != '\0')
                return vmsnap_diag(d, -EINVAL, "%.64s: prefix length is not a number 0-32", text);
        if (prefix > 32)
                return vmsnap_diag(d, -EINVAL, "%.64s: prefix length out of range (0-32)", text);
        uint32_t mask = prefix_mask((unsigned)prefix);
        if (ip & ~mask) {
                struct vmsnap_cidr net = {.addr.s_addr = htonl(ip & mask),
                                          .prefix = (uint8_t)prefix};
                char fixed[VMSNAP_CIDR_STRLEN];
                vmsnap_cidr_format(&net, fixed);
                return vmsnap_diag(d, -EINVAL, "%.64s: host bits set (did you mean %s?)", text,
                                   fixed);
        }
        ret->addr.s_addr = htonl(ip);
        ret->prefix = (uint8_t)prefix;
        return 0;
}

void vmsnap_cidr_format(const struct vmsnap_cidr *c, char out[VMSNAP_CIDR_STRLEN])
{
        uint32_t ip = ntohl(c->addr.s_addr);
        snprintf(out, VMSNAP_CIDR_STRLEN, "%u.%u.%u.%u/%u", ip >> 24, (ip >> 16) & 0xff,
                 (ip >> 8) & 0xff, ip & 0xff, (unsigned)(c->prefix & 63));
}

bool vmsnap_cidr_contains(const struct vmsnap_cidr *c, struct in_addr addr)
{
        uint32_t mask = prefix_mask(c->prefix);
        return (ntohl(addr.s_addr) & mask) == ntohl(c->addr.s_addr);
}

int vmsnap_net_egress_add(struct vmsnap_net_egress *e, const char *cidr, struct vmsnap_diag *d)
{
        if (!e)
                return vmsnap_diag(d, -EINVAL, "egress: no policy given");
        size_t n = e->kind == VMSNAP_NET_EGRESS_CIDRS ? e->n_cidrs : 0;
        if (n >= VMSNAP_NET_EGRESS_MAX)
                return vmsnap_diag(d, -E2BIG, "egress: more than %d CIDRs", VMSNAP_NET_EGRESS_MAX);
        struct vmsnap_cidr c;
        int r = vmsnap_cidr_parse(cidr, &c, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "egress");
        e->kind = VMSNAP_NET_EGRESS_CIDRS;
        e->cidrs[n] = c;
        e->n_cidrs = n + 1;
        return 0;
}

int vmsnap_net_egress_parse(const char *text, struct vmsnap_net_egress *ret, struct vmsnap_diag *d)
{
        if (!text || !ret)
                return vmsnap_diag(d, -EINVAL, "egress: missing policy");
        struct vmsnap_net_egress e = {.kind = VMSNAP_NET_EGRESS_ALLOW};
        if (strcmp(text, "allow") == 0 || strcmp(text, "deny") == 0) {
                e.kind = text[0] == 'a' ? VMSNAP_NET_EGRESS_ALLOW : VMSNAP_NET_EGRESS_DENY;
                *ret = e;
                return 0;
        }
        if (text[0] == '\0')
                return vmsnap_diag(d, -EINVAL,
                                   "egress: empty policy (want allow, deny or a CIDR list)");
        _cleanup_free_ char *copy = strdup(text);
        if (!copy)
                return vmsnap_diag(d, -ENOMEM, "egress: out of memory");
        char *save = NULL;
        for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                int r = vmsnap_net_egress_add(&e, item, d);
                if (r < 0)
                        return r;
        }
        if (e.kind != VMSNAP_NET_EGRESS_CIDRS)
                return vmsnap_diag(d, -EINVAL, "egress: %.64s: no CIDR in the list", text);
        *ret = e;
        return 0;
}
