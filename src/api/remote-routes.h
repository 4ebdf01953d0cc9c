/* The remote store in the API (docs/remote.md "REST"): push, pull, list, remove and GC of
 * snapshots in S3 object storage, and the pull of a snapshot a spawn names that is not
 * here (remote-routes.c). */
#ifndef VMSNAP_API_REMOTE_ROUTES_H
#define VMSNAP_API_REMOTE_ROUTES_H

#include <stdbool.h>

#include <vmsnap/error.h>
#include <vmsnap/store.h>

#include "api/reply.h"
#include "api/server.h"

/* Sets srv's remote at start: name != NULL reads <root>/remotes/<name>.conf (refusing a
 * missing or non-private file); name == NULL takes the VMSNAP_S3_* environment when
 * VMSNAP_S3_ENDPOINT is set, else <root>/remotes/default.conf when it exists, else none.
 * srv->pull_lock is initialized by the caller (before any request). Returns 0 or -errno
 * with d (naming the file or variable, never a secret). */
int api_remote_setup(struct api_server *srv, const char *name, struct vmsnap_diag *d);

/* Wipes srv's remote (its secret) and its lock. */
void api_remote_teardown(struct api_server *srv);

/* GET /v1/remote/snapshots, POST /v1/remote/snapshots (push), DELETE
 * /v1/remote/snapshots/{ref}, POST /v1/remote/snapshots/{ref}/pull, POST /v1/remote/gc.
 * Every one takes ?remote=NAME (<root>/remotes/NAME.conf) instead of the daemon's remote. */
void api_remote_list(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_remote_push(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_remote_delete(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_remote_pull(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_remote_gc(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

/* For spawn: when ref names no local snapshot and the daemon has a remote, pulls ref from
 * it first (one pull at a time; a pull another request finished meanwhile is reused).
 * Writes the local id and kind. Returns 0, or -errno with d (-ENOENT: neither here nor
 * remote); *ret_remote is set when the pull failed, so the caller answers as the remote
 * routes do (502 for the remote's failures). */
int api_remote_ensure_local(struct api_server *srv, const char *ref,
                            char ret_id[VMSNAP_ID_LEN + 1], enum vmsnap_snapshot_kind *ret_kind,
                            bool *ret_remote, struct vmsnap_diag *d);

#endif
