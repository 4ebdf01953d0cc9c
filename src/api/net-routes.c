/* Sandbox networking in the API (docs/network.md "API"): the `network` object of a sandbox
 * and POST /v1/sandboxes/{ref}/ports. */
#include "api/net-routes.h"

#include "api/errors.h"
#include "api/json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include <vmsnap/net.h>

json_t *api_network_json(const struct vmsnap_sandbox_net *n)
{
        if (!n->on)
                return json_null();
        char host[INET_ADDRSTRLEN], sb[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &n->addrs.host, host, sizeof(host));
        inet_ntop(AF_INET, &n->addrs.sandbox, sb, sizeof(sb));
        json_t *eg;
        if (n->egress.kind == VMSNAP_NET_EGRESS_CIDRS) {
                eg = json_array();
                for (size_t i = 0; eg && i < n->egress.n_cidrs; i++) {
                        char c[VMSNAP_CIDR_STRLEN];
                        vmsnap_cidr_format(&n->egress.cidrs[i], c);
                        json_array_append_new(eg, json_string(c));
                }
        } else {
                eg = json_string(n->egress.kind == VMSNAP_NET_EGRESS_DENY ? "deny" : "allow");
        }
        return json_pack("{s:s, s:s, s:s, s:o}", "address", sb, "host_address", host,
                         "guest_address", VMSNAP_NET_GUEST_IP, "egress", eg);
}

void api_add_network(struct vmsnap_host *h, const char *id, json_t *sandbox)
{
        struct vmsnap_sandbox_net n;
        if (!json_is_object(sandbox) || vmsnap_sandbox_network(h, id, &n, NULL) < 0)
                return;
        json_object_set_new(sandbox, "network", api_network_json(&n));
}

/* {"port": N} with 1 <= N <= 65535. */
static int parse_port(const char *text, size_t len, long *ret, struct vmsnap_diag *d)
{
        json_error_t je;
        json_t *o = json_loadb(text ? text : "", len, JSON_REJECT_DUPLICATES, &je);
        json_t *p = json_object_get(o, "port");
        int r = 0;
        if (!json_is_object(o))
                r = vmsnap_diag(d, -EBADMSG, "the body is not a JSON object");
        else if (json_object_size(o) != 1 || !json_is_integer(p) ||
                 json_integer_value(p) < 1 || json_integer_value(p) > 65535)
                r = vmsnap_diag(d, -EINVAL,
                                "expected {\"port\": N}, N a guest port from 1 to 65535");
        else
                *ret = (long)json_integer_value(p);
        json_decref(o);
        return r;
}

void api_ports_handle(struct vmsnap_host *h, const char *ref, const char *body, size_t len,
                      struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        long port = 0;
        int r = parse_port(body, len, &port, &d);
        if (r < 0) {
                api_reply_body_error(rep, r, &d);
                return;
        }
        struct vmsnap_sandbox_net n;
        r = vmsnap_sandbox_network(h, ref, &n, &d);
        if (r == 0 && !n.on)
                r = vmsnap_diag(&d, -ENOTCONN, "sandbox %s has no network", ref);
        char hostport[VMSNAP_NET_HOSTPORT_LEN];
        if (r == 0)
                r = vmsnap_net_port(&n.addrs, port, hostport, &d);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        char addr[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &n.addrs.sandbox, addr, sizeof(addr));
        api_reply_json(rep, 200,
                       json_pack("{s:i, s:s, s:i, s:s}", "guest_port", (int)port, "host", addr,
                                 "port", (int)port, "address", hostport));
}
