/* Cluster mode: a request about a sandbox another host owns is sent on to that host's TCP
 * API with the cluster's shared token, and its answer is returned as it came
 * (docs/cluster.md "Forwarding"). */
#ifndef VMSNAP_API_FORWARD_H
#define VMSNAP_API_FORWARD_H

#include <stdbool.h>
#include <stddef.h>

#include "api/reply.h"
#include "api/server.h"

/* Header a forwarded request carries (the id of the host it is sent to): its receiver never
 * forwards again, so a disagreement about the owner can never loop. */
#define API_FORWARDED_HEADER "X-Vmsnap-Forwarded"

/* For a call about sandbox call->ref that this host does not have: when another host owns it
 * in the cluster, forwards method + the call's path (and query) + body to it and fills rep
 * with its answer; returns true when rep is filled (the answer, or 409 when the owner is
 * lost or forwarding is off, or 503/502 when it cannot be reached), false when the local
 * answer stands (single-host mode, a forwarded call, a sandbox the cluster does not know). */
bool api_forward(struct api_server *srv, const struct api_call *call, const char *method,
                 const char *query, struct api_reply *rep);

/* Sends call (method, its route's path with call->ref, query, body) to host at endpoint
 * ("HOST:PORT") with the cluster's token and fills rep with its answer (503 when it cannot
 * be reached). Returns the answer's status, 0 when there was none. */
long api_forward_to(struct api_server *srv, const struct api_call *call, const char *method,
                    const char *query, const char *host, const char *endpoint,
                    struct api_reply *rep);

/* Who answers a call about sandbox call->ref that this host does not have: 1 with the owner's
 * id and endpoint when it is another, live host and this one forwards; 0 when the local
 * answer stands; -1 with rep set (owner lost, forwarding off, Postgres failed). */
int api_forward_owner(struct api_server *srv, const struct api_call *call, char host[64],
                      char endpoint[256], struct api_reply *rep);

/* The path of call's route with its {ref}, and "?query" when query is not empty. */
void api_forward_path(const struct api_call *call, const char *query, char *out, size_t size);

/* Fills rep with the owner's JSON answer (or none) as it came: its status, its error's
 * message prefixed with the owner; 502 when the body is not JSON. */
void api_forward_relay(struct api_reply *rep, long status, const char *buf, size_t len,
                       const char *owner);

#endif
