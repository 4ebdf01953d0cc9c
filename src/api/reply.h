/* One request as handlers see it, and the reply they build. The HTTP layer (server.c) fills
 * the call and sends the reply; handlers (handlers.c) never touch libmicrohttpd. */
#ifndef VMSNAP_API_REPLY_H
#define VMSNAP_API_REPLY_H

#include <jansson.h>
#include <stddef.h>

#include <vmsnap/error.h>

#include "api/errors.h"
#include "api/routes.h"

struct api_server;
struct api_stream;
struct api_upload;

struct api_call {
        enum api_route route;
        const char *ref; /* the {ref} segment, "" when the route has none */
        const char *body;
        size_t body_len;
        /* Query parameter key, or NULL when absent. */
        const char *(*query)(void *ctx, const char *key);
        void *query_ctx;
        /* Request header name, or NULL when absent (ctx: query_ctx). */
        const char *(*header)(void *ctx, const char *name);
        struct api_upload *upload; /* the body of an upload route, as it came (api/stream.h) */
        const char *raw_query; /* the query re-encoded ("k=v&k2=v2", "" none): to forward it */
};

struct api_reply {
        unsigned status;
        json_t *json; /* owned; the body unless text is set; NULL: no body */
        char *text;   /* owned; a non-JSON body (metrics) */
        size_t text_len;
        const char *content_type; /* of text */
        char location[256];       /* Location header of a 201, "" = none */
        char allow[64];           /* Allow header of a 405 */
        const char *code;         /* error code, NULL on success (for the log line) */
        char message[1024];       /* error message (for the log line) */
        struct api_stream *stream; /* owned; a streamed body or an upgrade (api/stream.h) */
};

/* Runs the handler of call->route. */
void api_handle(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

/* Sets an error reply {"error":{"code","message"}} with e's status. */
void api_reply_error(struct api_reply *rep, struct api_error e, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Sets the error reply for a negative errno from libvmsnap about a ref'd resource (or, with
 * _as, about another subject); the message is d's, else strerror. */
void api_reply_errno(struct api_reply *rep, int err, const struct vmsnap_diag *d);
void api_reply_errno_as(struct api_reply *rep, enum api_subject subject, int err,
                        const struct vmsnap_diag *d);

/* Sets the error reply for a body parser's result. */
void api_reply_body_error(struct api_reply *rep, int err, const struct vmsnap_diag *d);

/* Sets a success reply (takes j; NULL j with a 2xx other than 204 means out of memory and
 * becomes a 500). */
void api_reply_json(struct api_reply *rep, unsigned status, json_t *j);

/* Frees what the reply owns. */
void api_reply_clear(struct api_reply *rep);

#endif
