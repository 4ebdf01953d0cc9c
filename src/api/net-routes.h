/* Sandbox networking in the API: the `network` object and the ports route (net-routes.c). */
#ifndef VMSNAP_API_NET_ROUTES_H
#define VMSNAP_API_NET_ROUTES_H

#include <stddef.h>

#include <jansson.h>
#include <vmsnap/sandbox.h>

#include "api/reply.h"

/* A sandbox's network as JSON (new reference): null when it has none. */
json_t *api_network_json(const struct vmsnap_sandbox_net *n);

/* Sets sandbox["network"] (an object of api_sandbox_json) for the sandbox id. */
void api_add_network(struct vmsnap_host *h, const char *id, json_t *sandbox);

/* POST /v1/sandboxes/{ref}/ports {"port": N}: 200 {"host", "port", "address": "host:port"}
 * where the host reaches guest port N; 400 for a bad port, 409 without a network. */
void api_ports_handle(struct vmsnap_host *h, const char *ref, const char *body, size_t len,
                      struct api_reply *rep);

#endif
