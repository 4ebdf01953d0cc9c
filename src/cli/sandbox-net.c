/* `vmsnap sandbox port`, and the network options and output of create, spawn and get
 * (docs/network.md "CLI"). The daemon validates policies and ports (400 with its message);
 * this file only shapes the request and prints the answer. */
#include "cli/sandbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "allow" / "deny" as they are; anything else a comma-separated CIDR list → JSON array
 * (an empty item is sent as "" so that the daemon names it). */
static json_t *egress_json(const char *v)
{
        if (strcmp(v, "allow") == 0 || strcmp(v, "deny") == 0)
                return json_string(v);
        json_t *list = json_array();
        const char *p = v;
        for (;;) {
                size_t n = strcspn(p, ",");
                json_array_append_new(list, json_stringn(p, n));
                if (!p[n])
                        break;
                p += n + 1;
        }
        return list;
}

void net_body(const struct args *a, json_t *body)
{
        if (a->no_network)
                json_object_set_new(body, "network", json_string("none"));
        else if (a->egress)
                json_object_set_new(body, "network",
                                    json_pack("{s:o}", "egress", egress_json(a->egress)));
}

/* "allow", "deny" or "a/b, c/d". */
static void egress_text(json_t *eg, char *out, size_t size)
{
        if (json_is_string(eg)) {
                snprintf(out, size, "%s", json_string_value(eg));
                return;
        }
        size_t i, n = 0;
        json_t *c;
        out[0] = '\0';
        json_array_foreach(eg, i, c)
        {
                if (n < size)
                        n += (size_t)snprintf(out + n, size - n, "%s%s", i ? ", " : "",
                                              json_string_value(c) ? json_string_value(c) : "?");
        }
}

void print_network(json_t *s)
{
        json_t *n = json_object_get(s, "network");
        if (!json_is_object(n)) {
                printf("%-13s none\n", "network");
                return;
        }
        char eg[2048];
        egress_text(json_object_get(n, "egress"), eg, sizeof(eg));
        printf("%-13s %s (guest %s; `vmsnap sandbox port %s PORT`)\n", "address",
               sget(n, "address"), sget(n, "guest_address"), sget(s, "id"));
        printf("%-13s %s\n", "egress", eg);
}

int run_port(struct client *c, const struct args *a)
{
        char path[512];
        int r = need_args(a, 2, 2, "SANDBOX GUEST_PORT");
        if (r)
                return r;
        const char *p = a->args[1];
        if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) > 5)
                return usage_error(a, "GUEST_PORT must be a number from 1 to 65535, not '%s'", p);
        if ((r = ref_path(c, "/v1/sandboxes", a->args[0], "/ports", path, sizeof(path))))
                return r;
        json_t *body = json_pack("{s:i}", "port", atoi(p)), *res = NULL;
        r = call(c, "POST", path, body, &res);
        json_decref(body);
        if (r == CLI_OK && a->json)
                print_json(res);
        else if (r == CLI_OK)
                printf("%s\n", sget(res, "address"));
        json_decref(res);
        return r;
}
