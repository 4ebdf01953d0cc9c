/* The cluster-mode parts of the sandbox routes (docs/cluster.md §1, §4, §6.5): placement of
 * create/spawn through any host, the cluster-wide list, the pause snapshot pushed at pause
 * time, and the resume of a paused sandbox whose host is lost. Every function does nothing
 * (returns false) in single-host mode. */
#ifndef VMSNAP_API_CLUSTER_ROUTES_H
#define VMSNAP_API_CLUSTER_ROUTES_H

#include <stdbool.h>

#include "api/body.h"
#include "api/reply.h"
#include "api/server.h"

/* Before a create (ref NULL) or a spawn of ref: chooses the host (?host=ID pins one) and
 * reserves the new sandbox's row there. Returns false when the sandbox is to be made here,
 * with the reserved id in placed ("" when there is none: single-host mode, or a forwarded
 * request without one); true when rep is filled (forwarded to the chosen host and its
 * answer relayed, or 507 no_capacity, 404 for an unknown pinned host, 503). */
bool api_place(struct api_server *srv, const struct api_call *call, const char *ref,
               const struct api_sandbox_body *b, char placed[64], struct api_reply *rep);

/* GET /v1/sandboxes in cluster mode: every row of the cluster with its host (this host's
 * own in full). Returns false in single-host mode. */
bool api_cluster_list_reply(struct api_server *srv, bool all, struct api_reply *rep);

/* Pushes pause snapshot snapshot_id to the daemon's remote store (cluster mode with a remote:
 * before a pause is published, so another host can resume it). */
int api_push_pause(struct api_server *srv, const char *snapshot_id, struct vmsnap_diag *d);

/* A resume of a sandbox this host does not have: when the cluster says its owner is lost
 * and it is paused with its pause snapshot in the remote store, it is adopted here under
 * its id and resumed (this host its owner); returns true with rep filled (also with the
 * 409/503 of a refused takeover). False when it is not a lost host's sandbox. */
bool api_takeover(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

#endif
