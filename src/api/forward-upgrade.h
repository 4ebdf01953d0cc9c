/* Cluster mode: the interactive exec (an upgraded connection, vmsnap-exec.v1) about another
 * host's sandbox, relayed to the owning host: the same request is sent there on a plain TCP
 * socket, and after its 101 the two connections are joined byte for byte
 * (docs/cluster.md "Forwarding of streams"). */
#ifndef VMSNAP_API_FORWARD_UPGRADE_H
#define VMSNAP_API_FORWARD_UPGRADE_H

#include <stdbool.h>

#include "api/reply.h"
#include "api/server.h"

/* For an exec asking for an upgrade about a sandbox this host does not have: when another
 * host owns it, asks the owner for the upgrade and fills rep with a 101 that joins the
 * client to it, or with the owner's refusal (JSON) or 503. Returns true when rep is filled,
 * false when the local answer stands. */
bool api_forward_upgrade(struct api_server *srv, const struct api_call *call,
                         struct api_reply *rep);

#endif
