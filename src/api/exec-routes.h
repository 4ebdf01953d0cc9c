/* Routes that run programs in a sandbox (docs/api.md, Exec): POST /v1/sandboxes/{ref}/exec
 * answered as JSON, as a stream of frames, or on an upgraded connection; and the background
 * processes (GET …/processes, POST …/processes/kill). */
#ifndef VMSNAP_API_EXEC_ROUTES_H
#define VMSNAP_API_EXEC_ROUTES_H

#include <jansson.h>
#include <stddef.h>

#include "api/reply.h"

#include <vmsnap/error.h>

#define API_EXEC_FRAMES_TYPE "application/vnd.vmsnap.exec-frames"
#define API_EXEC_UPGRADE     "vmsnap-exec.v1"

/* POST /v1/sandboxes/{ref}/exec. */
void api_exec_handle(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

/* GET /v1/sandboxes/{ref}/processes and POST /v1/sandboxes/{ref}/processes/kill. */
void api_process_list(struct api_server *srv, const struct api_call *call, struct api_reply *rep);
void api_process_kill(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

/* A negative errno from the guest (or the agent channel) as the errno whose status fits it
 * (errors.c): ENOENT and ESRCH → ENOENT (404), path problems → EINVAL (400), a connection that
 * ended → ENOTCONN (409), an agent too old → EOPNOTSUPP (501), other guest errors → EPROTO
 * (502). */
int api_guest_errno(int err);

/* Sets the error reply for a failure of the guest or its agent (api_guest_errno's status). */
void api_reply_guest_error(struct api_reply *rep, int err, const struct vmsnap_diag *d);

/* An agent call (stat, list, remove, ps, kill) on sandbox ref; takes req. Returns 0 and the
 * parsed answer (caller decrefs), or -errno with d. */
int api_agent_call(struct api_server *srv, const char *ref, json_t *req, json_t **ret,
                   struct vmsnap_diag *d);

#endif
