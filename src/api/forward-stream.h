/* Cluster mode: the streamed routes about another host's sandbox (a streamed exec, a file's
 * bytes, archives, uploads) relayed to the owning host as the bytes come, in both directions,
 * through pipes of bounded size (docs/cluster.md "Forwarding of streams"). */
#ifndef VMSNAP_API_FORWARD_STREAM_H
#define VMSNAP_API_FORWARD_STREAM_H

#include <stdbool.h>

#include "api/reply.h"
#include "api/server.h"
#include "api/stream.h"

/* For a call whose answer is a stream (GET files, GET archive, a framed exec) about a sandbox
 * this host does not have: when another host owns it, sends the call there and fills rep
 * with the owner's status and body as they come (JSON answers relayed whole). Returns true
 * when rep is filled, false when the local answer stands. */
bool api_forward_stream(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

/* At the headers of an upload (PUT files, PUT archive) about a sandbox this host does not
 * have: when another host owns it, starts the request to it and fills u so that the body goes
 * on as it comes (u->forward set). Returns 1 then, 0 when the local upload stands, -1 with rep
 * set. */
int api_forward_upload_open(struct api_server *srv, const struct api_call *call,
                            const char *content_type, struct api_upload *u,
                            struct api_reply *rep);

/* The whole forwarded upload is in: ends its body and fills rep with the owner's answer. */
void api_forward_upload_finish(struct api_upload *u, struct api_reply *rep);

#endif
