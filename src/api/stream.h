/* Bodies that do not fit the JSON request/response shape: a reply produced as it goes (exec
 * frames, a file's bytes, a tar), an upgraded connection (an interactive exec), and a request
 * body handed to its handler as it arrives (a file or a tar being uploaded, of any size).
 * Handlers build these (api/exec.c, api/files.c); server.c queues them with libmicrohttpd in
 * the connection's thread, where blocking is allowed (one thread per connection). */
#ifndef VMSNAP_API_STREAM_H
#define VMSNAP_API_STREAM_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <vmsnap/error.h>

#include "api/reply.h"
#include "api/routes.h"

struct api_server;

#define API_STREAM_BLOCK (64u * 1024 + 16) /* bytes per body read: one frame and its header */

struct api_stream {
        const char *content_type; /* of a body */
        /* A body: fills up to max bytes of buf; returns the count, 0 at the end, -1 to cut the
         * body off (the client sees an incomplete chunked body: an error). May block. */
        ssize_t (*read)(void *ctx, char *buf, size_t max);
        /* An upgrade (101): runs the session on the connection's socket until it is done.
         * extra: bytes the client sent after its request, already read. */
        void (*run_upgraded)(void *ctx, int fd, const char *extra, size_t extra_len);
        const char *upgrade; /* the protocol named in the Upgrade header */
        void (*free)(void *ctx);
        void *ctx;
};

/* Sets rep to stream st (200 with a body, or 101 with run_upgraded); takes st (a malloc'd
 * struct). */
void api_reply_stream(struct api_reply *rep, unsigned status, struct api_stream *st);

/* Frees a stream that was never queued. Accepts NULL. */
void api_stream_free(struct api_stream *st);

/* Queues rep's stream on c (server.c, from send_reply). */
enum MHD_Result api_stream_queue(struct MHD_Connection *c, struct api_reply *rep);

/* A request body handed over as it arrives. */
struct api_upload {
        /* Takes n bytes. Returns 0, or -errno: the upload failed and the rest is read away. */
        int (*data)(void *ctx, const char *p, size_t n, struct vmsnap_diag *d);
        void (*free)(void *ctx);
        void *ctx;
        int err; /* the first failure of data, 0 while none */
        bool forward; /* relayed to the owning host (api/forward-stream.h) */
        struct vmsnap_diag d;
};

/* True for the routes whose body is an upload (any size, not JSON): PUT files, PUT archive. */
bool api_route_uploads(enum api_route r);

/* True when this request's body is an upload: an upload route, or POST /v1/snapshots with an
 * archive's content type (an import, api/transfer.h). */
bool api_request_uploads(enum api_route r, const char *content_type);

/* At a request's headers, starts its upload: checks the content type, then lets the route
 * open what the bytes go to (call: route, ref, query, headers; no body yet); in cluster mode
 * another host's sandbox's upload is relayed to it. Returns the upload, or NULL with rep set to the refusal. */
struct api_upload *api_upload_open(struct api_server *srv, const struct api_call *call,
                                   const char *content_type, struct api_reply *rep);

/* Feeds a piece of the body (after a failure, drops it). */
void api_upload_feed(struct api_upload *u, const char *p, size_t n);

/* Frees an upload. Accepts NULL. */
void api_upload_free(struct api_upload *u);

#endif
