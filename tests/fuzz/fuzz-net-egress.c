/* Fuzz target for the network policy parsers (src/net/cidr.c), which will read REST input:
 * every input goes through vmsnap_net_egress_parse and vmsnap_cidr_parse; each either
 * refuses it with -EINVAL/-E2BIG and a message, or returns a policy whose every CIDR is a
 * network address (host bits zero, prefix <= 32) that formats back to text parsing to
 * itself. Seeds: tests/fuzz/corpus/net-egress/. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <vmsnap/net.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
        if (!ok)
                abort();
}

static void check_cidr(const struct vmsnap_cidr *c)
{
        check(c->prefix <= 32);
        uint32_t mask = c->prefix ? 0xffffffffu << (32 - c->prefix) : 0;
        check((ntohl(c->addr.s_addr) & ~mask) == 0);
        char text[VMSNAP_CIDR_STRLEN];
        struct vmsnap_cidr again;
        vmsnap_cidr_format(c, text);
        check(vmsnap_cidr_parse(text, &again, NULL) == 0);
        check(again.addr.s_addr == c->addr.s_addr && again.prefix == c->prefix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        struct vmsnap_diag d = {0};
        struct vmsnap_net_egress e;
        int r = vmsnap_net_egress_parse(text, &e, &d);
        if (r < 0) {
                check((r == -EINVAL || r == -E2BIG || r == -ENOMEM) && d.msg[0]);
        } else {
                check(e.kind <= VMSNAP_NET_EGRESS_CIDRS);
                check(e.kind != VMSNAP_NET_EGRESS_CIDRS ||
                      (e.n_cidrs >= 1 && e.n_cidrs <= VMSNAP_NET_EGRESS_MAX));
                for (size_t i = 0; e.kind == VMSNAP_NET_EGRESS_CIDRS && i < e.n_cidrs; i++)
                        check_cidr(&e.cidrs[i]);
        }
        struct vmsnap_cidr c;
        struct vmsnap_diag d2 = {0};
        r = vmsnap_cidr_parse(text, &c, &d2);
        if (r == 0)
                check_cidr(&c);
        else
                check(r == -EINVAL && d2.msg[0]);
        free(text);
        return 0;
}
