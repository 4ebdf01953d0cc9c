/* Streamed bodies and upgraded connections on libmicrohttpd (stream.h). */
#include "api/stream.h"
#include "api/files.h"
#include "api/forward-stream.h"
#include "api/transfer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void api_reply_stream(struct api_reply *rep, unsigned status, struct api_stream *st)
{
        api_reply_clear(rep);
        rep->status = status;
        rep->code = NULL;
        rep->message[0] = '\0';
        rep->stream = st;
}

void api_stream_free(struct api_stream *st)
{
        if (!st)
                return;
        if (st->free)
                st->free(st->ctx);
        free(st);
}

/* ---- bodies ------------------------------------------------------------------------------- */

static ssize_t on_read(void *cls, uint64_t pos, char *buf, size_t max)
{
        struct api_stream *st = cls;
        (void)pos;
        ssize_t n = st->read(st->ctx, buf, max);
        if (n < 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void on_free(void *cls)
{
        api_stream_free(cls);
}

/* ---- upgrades ----------------------------------------------------------------------------- */

/* libmicrohttpd calls this in the connection's thread once the 101 is sent; the session runs
 * here to its end, then the connection is closed. */
static void on_upgraded(void *cls, struct MHD_Connection *c, void *req_cls, const char *extra,
                        size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
        struct api_stream *st = cls;
        (void)c;
        (void)req_cls;
        st->run_upgraded(st->ctx, sock, extra, extra_len);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        api_stream_free(st);
}

enum MHD_Result api_stream_queue(struct MHD_Connection *c, struct api_reply *rep)
{
        struct api_stream *st = rep->stream;
        struct MHD_Response *r;
        rep->stream = NULL; /* the response owns it now (freed with it) */
        if (st->run_upgraded) {
                r = MHD_create_response_for_upgrade(on_upgraded, st);
                if (r)
                        MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, st->upgrade);
        } else {
                r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, API_STREAM_BLOCK, on_read,
                                                      st, on_free);
                if (r)
                        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                                st->content_type);
        }
        if (!r) {
                api_stream_free(st);
                return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        enum MHD_Result ok = MHD_queue_response(c, rep->status, r);
        MHD_destroy_response(r);
        /* An upgrade response does not free its closure: the session owns it until then. */
        return ok;
}

/* ---- uploads ------------------------------------------------------------------------------ */

bool api_route_uploads(enum api_route r)
{
        return r == API_ROUTE_FILE_WRITE || r == API_ROUTE_ARCHIVE_PUT;
}

bool api_request_uploads(enum api_route r, const char *content_type)
{
        return api_route_uploads(r) ||
               (r == API_ROUTE_SNAPSHOT_CREATE && api_import_upload_type(content_type));
}

/* The content type an upload route takes. */
static const char *upload_type(enum api_route r)
{
        return r == API_ROUTE_ARCHIVE_PUT ? "application/x-tar" : "application/octet-stream";
}

static bool type_is(const char *got, const char *want)
{
        size_t n = strlen(want);
        while (got && *got == ' ')
                got++;
        return got && strncasecmp(got, want, n) == 0 &&
               (got[n] == '\0' || got[n] == ';' || got[n] == ' ');
}

struct api_upload *api_upload_open(struct api_server *srv, const struct api_call *call,
                                   const char *content_type, struct api_reply *rep)
{
        enum api_route r = call->route;
        const char *ref = call->ref;
        if (r == API_ROUTE_SNAPSHOT_CREATE) {
                struct api_upload *u = calloc(1, sizeof(*u));
                if (u && api_import_upload_open(srv, call->query, call->query_ctx, u, rep) == 0)
                        return u;
                if (!u)
                        api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL),
                                        "out of memory");
                free(u);
                return NULL;
        }
        const char *want = upload_type(r);
        if (!type_is(content_type, want)) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_MEDIA_TYPE),
                                "this upload must be %s, not %.60s", want,
                                content_type ? content_type : "none");
                return NULL;
        }
        struct api_upload *u = calloc(1, sizeof(*u));
        if (!u) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "out of memory");
                return NULL;
        }
        int fw = api_forward_upload_open(srv, call, content_type, u, rep);
        if (fw < 0 ||
            (fw == 0 && api_files_upload_open(srv, r, ref, call->query, call->query_ctx, u, rep) < 0)) {
                free(u);
                return NULL;
        }
        return u;
}

void api_upload_feed(struct api_upload *u, const char *p, size_t n)
{
        if (u->err == 0)
                u->err = u->data(u->ctx, p, n, &u->d);
}

void api_upload_free(struct api_upload *u)
{
        if (!u)
                return;
        if (u->free)
                u->free(u->ctx);
        free(u);
}
