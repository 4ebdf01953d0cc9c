/* The nftables batches of a sandbox: its host table (egress policy, anti-spoofing, NAT to
 * the uplink) and the table inside its namespace (DNAT of its unique address to the guest,
 * SNAT of the guest). Each batch is one transaction. See docs/network.md, "Traffic". */
#include "net/internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#define REJECT "reject with icmpx type admin-prohibited"

/* What no policy opens: every sandbox slot (the pool) and link-local (cloud metadata). */
static void put_always_refused(FILE *f, const struct vmsnap_cidr *pool)
{
        char p[VMSNAP_CIDR_STRLEN];
        vmsnap_cidr_format(pool, p);
        fprintf(f, "    ip daddr { %s, 169.254.0.0/16 } " REJECT "\n", p);
}

static void put_egress(FILE *f, const struct vmsnap_net_egress *e)
{
        switch (e->kind) {
        case VMSNAP_NET_EGRESS_ALLOW:
                fputs("    accept\n", f);
                return;
        case VMSNAP_NET_EGRESS_DENY:
                fputs("    " REJECT "\n", f);
                return;
        case VMSNAP_NET_EGRESS_CIDRS:
                fputs("    ip daddr {", f);
                for (size_t i = 0; i < e->n_cidrs; i++) {
                        char c[VMSNAP_CIDR_STRLEN];
                        vmsnap_cidr_format(&e->cidrs[i], c);
                        fprintf(f, "%s %s", i ? "," : "", c);
                }
                fputs(" } accept\n    " REJECT "\n", f);
                return;
        }
}

/* Closes the stream that fills *buf (only then is *buf final); NULL on failure. */
static char *close_memstream(FILE *f, char **buf)
{
        if (fclose(f) != 0) {
                free(*buf);
                return NULL;
        }
        return *buf;
}

char *net_rules_host(const char *id, const char *link, const struct vmsnap_net_addrs *a,
                     const struct vmsnap_cidr *pool, const struct vmsnap_net_egress *e)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        char u[INET_ADDRSTRLEN];
        net_addr_format(a->sandbox, u);
        /* Replace any leftover of the same name in the same transaction. */
        fprintf(f, "add table inet " NET_TABLE_PREFIX "%s\ndelete table inet " NET_TABLE_PREFIX "%s\n", id, id);
        fprintf(f, "table inet " NET_TABLE_PREFIX "%s {\n", id);
        fprintf(f,
                "  chain forward {\n"
                "    type filter hook forward priority filter; policy accept;\n"
                "    iifname \"%s\" jump from_sandbox\n"
                "    oifname \"%s\" ct state established,related accept\n"
                "    oifname \"%s\" " REJECT "\n"
                "  }\n",
                link, link, link);
        fprintf(f,
                "  chain from_sandbox {\n"
                "    meta nfproto != ipv4 drop\n"
                "    ip saddr != %s " REJECT "\n",
                u);
        put_always_refused(f, pool);
        put_egress(f, e);
        fputs("  }\n", f);
        fprintf(f,
                "  chain input {\n"
                "    type filter hook input priority filter; policy accept;\n"
                "    iifname \"%s\" ct state established,related accept\n"
                "    iifname \"%s\" meta nfproto ipv4 " REJECT "\n"
                "    iifname \"%s\" drop\n"
                "  }\n",
                link, link, link);
        fprintf(f,
                "  chain postrouting {\n"
                "    type nat hook postrouting priority srcnat; policy accept;\n"
                "    ip saddr %s oifname != \"%s\" masquerade\n"
                "  }\n}\n",
                u, link);
        return close_memstream(f, &buf);
}

char *net_rules_sandbox(const struct vmsnap_net_addrs *a)
{
        char *buf = NULL;
        char u[INET_ADDRSTRLEN];
        net_addr_format(a->sandbox, u);
        int n = asprintf(
                &buf,
                "table inet " NET_SANDBOX_TABLE " {\n"
                "  chain prerouting {\n"
                "    type nat hook prerouting priority dstnat; policy accept;\n"
                "    iifname \"" VMSNAP_NET_PEER_NAME "\" ip daddr %s dnat ip to " VMSNAP_NET_GUEST_IP "\n"
                "  }\n"
                "  chain postrouting {\n"
                "    type nat hook postrouting priority srcnat; policy accept;\n"
                "    oifname \"" VMSNAP_NET_PEER_NAME "\" ip saddr " VMSNAP_NET_GUEST_IP " snat ip to %s\n"
                "  }\n"
                "  chain forward {\n"
                "    type filter hook forward priority filter; policy drop;\n"
                "    iifname \"" VMSNAP_NET_TAP_NAME "\" oifname \"" VMSNAP_NET_PEER_NAME "\" ip saddr " VMSNAP_NET_GUEST_IP " accept\n"
                "    iifname \"" VMSNAP_NET_PEER_NAME "\" oifname \"" VMSNAP_NET_TAP_NAME "\" ip daddr " VMSNAP_NET_GUEST_IP " accept\n"
                "    meta nfproto ipv4 " REJECT "\n"
                "  }\n"
                "  chain input {\n"
                "    type filter hook input priority filter; policy accept;\n"
                "    iifname \"" VMSNAP_NET_TAP_NAME "\" ct state established,related accept\n"
                "    iifname \"" VMSNAP_NET_TAP_NAME "\" meta nfproto ipv4 " REJECT "\n"
                "    iifname \"" VMSNAP_NET_TAP_NAME "\" drop\n"
                "  }\n"
                "}\n",
                u, u);
        return n < 0 ? NULL : buf;
}

/* Idempotent: adding a table that exists is a no-op, so the delete never fails on a missing
 * table; both in one transaction. */
char *net_rules_host_delete(const char *id)
{
        char *buf = NULL;
        int n = asprintf(&buf,
                         "add table inet " NET_TABLE_PREFIX "%s\n"
                         "delete table inet " NET_TABLE_PREFIX "%s\n",
                         id, id);
        return n < 0 ? NULL : buf;
}
