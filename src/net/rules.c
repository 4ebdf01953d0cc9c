/* The nftables batches of a sandbox: its host table (egress policy, anti-spoofing, NAT to
 * the uplink) and the table inside its namespace (DNAT of its unique address to the guest,
 * SNAT of the guest). Each batch is one transaction. See docs/network.md, "Traffic". */
#include "net/internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#define PEER  VMSNAP_NET_PEER_NAME
#define TAP   VMSNAP_NET_TAP_NAME
#define GUEST VMSNAP_NET_GUEST_IP

#define REJECT_TCP   "meta l4proto tcp reject with tcp reset"
#define REJECT_OTHER "reject with icmpx type admin-prohibited"

/* Refuses what `match` selects: TCP with a reset, the rest with ICMP admin-prohibited. The
 * kernel rate-limits ICMP errors (icmp_ratelimit: the first is often dropped and the SYN
 * retried a second later), never resets, so a refused connect fails at once. */
static void put_reject(FILE *f, const char *match)
{
        fprintf(f, "    %s%s" REJECT_TCP "\n    %s%s" REJECT_OTHER "\n", match, match[0] ? " " : "",
                match, match[0] ? " " : "");
}

/* What no policy opens: every sandbox slot (the pool) and link-local (cloud metadata). */
static void put_always_refused(FILE *f, const struct vmsnap_cidr *pool)
{
        char p[VMSNAP_CIDR_STRLEN];
        vmsnap_cidr_format(pool, p);
        char match[80];
        snprintf(match, sizeof(match), "ip daddr { %s, 169.254.0.0/16 }", p);
        put_reject(f, match);
}

static void put_egress(FILE *f, const struct vmsnap_net_egress *e)
{
        switch (e->kind) {
        case VMSNAP_NET_EGRESS_ALLOW:
                fputs("    accept\n", f);
                return;
        case VMSNAP_NET_EGRESS_DENY:
                put_reject(f, "");
                return;
        case VMSNAP_NET_EGRESS_CIDRS:
                fputs("    ip daddr {", f);
                for (size_t i = 0; i < e->n_cidrs; i++) {
                        char c[VMSNAP_CIDR_STRLEN];
                        vmsnap_cidr_format(&e->cidrs[i], c);
                        fprintf(f, "%s %s", i ? "," : "", c);
                }
                fputs(" } accept\n", f);
                put_reject(f, "");
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
        fprintf(f,
                "add table inet " NET_TABLE_PREFIX "%s\ndelete table inet " NET_TABLE_PREFIX "%s\n",
                id, id);
        fprintf(f, "table inet " NET_TABLE_PREFIX "%s {\n", id);
        fprintf(f,
                "  chain forward {\n"
                "    type filter hook forward priority filter; policy accept;\n"
                "    iifname \"%s\" jump from_sandbox\n"
                "    oifname \"%s\" ct state established,related accept\n",
                link, link);
        char match[64];
        snprintf(match, sizeof(match), "oifname \"%s\"", link);
        put_reject(f, match);
        fputs("  }\n", f);
        fputs("  chain from_sandbox {\n    meta nfproto != ipv4 drop\n", f);
        snprintf(match, sizeof(match), "ip saddr != %s", u);
        put_reject(f, match);
        put_always_refused(f, pool);
        put_egress(f, e);
        fputs("  }\n", f);
        fprintf(f,
                "  chain input {\n"
                "    type filter hook input priority filter; policy accept;\n"
                "    iifname \"%s\" ct state established,related accept\n",
                link);
        snprintf(match, sizeof(match), "iifname \"%s\" meta nfproto ipv4", link);
        put_reject(f, match);
        fprintf(f, "    iifname \"%s\" drop\n  }\n", link);
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
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        char u[INET_ADDRSTRLEN];
        net_addr_format(a->sandbox, u);
        fprintf(f,
                "table inet " NET_SANDBOX_TABLE " {\n"
                "  chain prerouting {\n"
                "    type nat hook prerouting priority dstnat; policy accept;\n"
                "    iifname \"" PEER "\" ip daddr %s dnat ip to " GUEST "\n"
                "  }\n"
                "  chain postrouting {\n"
                "    type nat hook postrouting priority srcnat; policy accept;\n"
                "    oifname \"" PEER "\" ip saddr " GUEST " snat ip to %s\n"
                "  }\n"
                "  chain forward {\n"
                "    type filter hook forward priority filter; policy drop;\n"
                "    iifname \"" TAP "\" oifname \"" PEER "\" ip saddr " GUEST " accept\n"
                "    iifname \"" PEER "\" oifname \"" TAP "\" ip daddr " GUEST " accept\n",
                u, u);
        put_reject(f, "meta nfproto ipv4");
        fputs("  }\n"
              "  chain input {\n"
              "    type filter hook input priority filter; policy accept;\n"
              "    iifname \"" TAP "\" ct state established,related accept\n",
              f);
        put_reject(f, "iifname \"" TAP "\" meta nfproto ipv4");
        fputs("    iifname \"" TAP "\" drop\n  }\n}\n", f);
        return close_memstream(f, &buf);
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
