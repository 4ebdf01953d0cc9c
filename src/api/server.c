/* The HTTP layer: libmicrohttpd daemons (one thread per connection) on the listening
 * sockets, the TCP connection gate's hooks, the per-request life cycle — refusals that need
 * no handler (shutdown, token, request target, route, size, content type), the capped body
 * buffer, dispatch, the reply — and one log line per request. Handlers run in the
 * connection's thread and run to completion even when the client goes away: an operation
 * is never cancelled half-way because a socket closed. */
#include "api/server.h"
#include "api/body.h"
#include "api/gate.h"
#include "api/json.h"
#include "api/reply.h"
#include "api/sockets.h"
#include "api/stream.h"
#include "api/ui.h"
#include "util/cleanup.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define API_CONNECTION_LIMIT 512
#define API_IDLE_TIMEOUT_S   120        /* an idle or stalled trusted connection is closed */
#define API_DISCARD_MAX      (1u << 20) /* bytes of an oversized chunked body we read away */
#define GATE_LOG_PERIOD_S    10         /* at most one log line about the gate this often */

/* What the gate did since its last log line (a flood of slow clients is one line). */
struct gate_log {
        pthread_mutex_t lock;
        struct timespec last;
        uint64_t refused, expired;
};

struct api_listener {
        struct api_server *srv;
        struct MHD_Daemon *mhd;
        int fd;                /* the listening socket; closed after MHD_stop_daemon */
        bool auth;             /* bearer token required (TCP) */
        struct api_gate *gate; /* TCP: per-address cap and deadline of untrusted connections */
        struct gate_log gate_log;
        char name[160];
        char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

/* One request, from its request line (on_uri) to its completion callback. */
struct request {
        struct timespec t0;
        bool started;     /* its headers are in and on_request has seen it */
        bool close_after; /* untrusted on TCP: "Connection: close" on the reply */
        enum api_route route;
        char ref[API_REF_MAX + 1];
        char method[16];
        char path[200];         /* decoded, printable: for messages */
        char target[200];       /* as sent (path and query), printable: for the log line */
        const char *target_end; /* where libmicrohttpd's copy of the target ends (never read) */
        enum api_target target_problem;
        char target_why[200];
        char *body;
        size_t len, discarded;
        bool too_large;
        struct api_upload *upload; /* the body of an upload route (api/stream.h) */
        unsigned status;
        char code[40];
        char message[300];
};

double api_elapsed(const struct timespec *t)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Copies s for a log line: printable ASCII, at most size - 1 bytes. */
static void printable(char *out, size_t size, const char *s)
{
        size_t i = 0;
        for (; s && s[i] && i + 1 < size; i++)
                out[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
        out[i] = '\0';
}

/* ---- replies ------------------------------------------------------------------------------ */

static enum MHD_Result send_reply(struct MHD_Connection *c, struct request *req,
                                  struct api_reply *rep)
{
        if (rep->stream) { /* a streamed body or an upgrade (api/stream.c) */
                req->status = rep->status;
                return api_stream_queue(c, rep);
        }
        char *buf = NULL;
        size_t len = 0;
        const char *type = "application/json";
        if (rep->text) {
                buf = TAKE_PTR(rep->text);
                len = rep->text_len;
                type = rep->content_type;
        } else if (rep->json) {
                buf = api_json_dump(rep->json, &len);
                if (!buf)
                        return MHD_NO;
        }
        struct MHD_Response *r = MHD_create_response_from_buffer(
                len, buf ? buf : (void *)"", buf ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!r) {
                free(buf);
                return MHD_NO;
        }
        if (buf)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        if (rep->location[0])
                MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, rep->location);
        if (rep->allow[0])
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rep->allow);
        if (rep->status == MHD_HTTP_UNAUTHORIZED)
                MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                        "Bearer realm=\"vmsnapd\"");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (req->close_after)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        enum MHD_Result ok = MHD_queue_response(c, rep->status, r);
        MHD_destroy_response(r);
        req->status = rep->status;
        printable(req->code, sizeof(req->code), rep->code);
        printable(req->message, sizeof(req->message), rep->code ? rep->message : NULL);
        return ok;
}

/* Sends an HTTP-level refusal. */
static enum MHD_Result refuse(struct MHD_Connection *c, struct request *req, enum api_problem p,
                              const char *allow, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static enum MHD_Result refuse(struct MHD_Connection *c, struct request *req, enum api_problem p,
                              const char *allow, const char *fmt, ...)
{
        struct api_reply rep = {0};
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        api_reply_error(&rep, api_error_problem(p), "%s", msg);
        if (allow)
                snprintf(rep.allow, sizeof(rep.allow), "%s", allow);
        enum MHD_Result r = send_reply(c, req, &rep);
        api_reply_clear(&rep);
        return r;
}

/* ---- checks before a handler runs --------------------------------------------------------- */

/* Constant-time comparison of a presented token with ours. */
static bool token_equal(const char *got, const char *want)
{
        size_t n = strlen(want);
        if (n == 0 || strlen(got) != n)
                return false;
        unsigned char diff = 0;
        for (size_t i = 0; i < n; i++)
                diff |= (unsigned char)got[i] ^ (unsigned char)want[i];
        return diff == 0;
}

/* Checks "Authorization: Bearer <token>". Returns NULL when authorized, else why not. */
static const char *auth_problem(const struct api_listener *l, struct MHD_Connection *c)
{
        const char *h =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!h)
                return "missing bearer token: send `Authorization: Bearer TOKEN` with the token "
                       "from the daemon's <root>/token";
        if (strncasecmp(h, "Bearer ", 7) != 0)
                return "the Authorization header must use the Bearer scheme";
        h += 7;
        while (*h == ' ')
                h++;
        if (!token_equal(h, l->srv->token))
                return "invalid bearer token";
        return NULL;
}

/* True for "application/json" with or without parameters (charset). */
static bool is_json_type(const char *t)
{
        if (!t)
                return false;
        while (*t == ' ')
                t++;
        static const char json[] = "application/json";
        if (strncasecmp(t, json, sizeof(json) - 1) != 0)
                return false;
        t += sizeof(json) - 1;
        return *t == '\0' || *t == ';' || *t == ' ';
}

/* Checks the declared body: size (Content-Length) and type. Returns MHD_YES with nothing
 * queued when the body may be read. */
static enum MHD_Result check_body(struct MHD_Connection *c, struct request *req, bool *refused)
{
        const char *cl =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *te =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
        *refused = true;
        if (declared > API_BODY_MAX)
                return refuse(c, req, API_PROBLEM_TOO_LARGE, NULL,
                              "request body of %llu bytes is over the limit of %u bytes", declared,
                              API_BODY_MAX);
        const char *type =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if ((declared > 0 || te) && !is_json_type(type)) {
                char shown[64];
                printable(shown, sizeof(shown), type ? type : "none");
                return refuse(c, req, API_PROBLEM_MEDIA_TYPE, NULL,
                              "request bodies must be application/json, not %s", shown);
        }
        *refused = false;
        return MHD_YES;
}

/* TCP: checks the token (when the route needs one, or the client sent one) and lets the
 * connection out of the gate when it is valid; else the reply will close the connection.
 * Returns NULL when the request may go on, else why not. */
static const char *authenticate(struct api_listener *l, struct MHD_Connection *c,
                                struct request *req, bool public)
{
        if (!l->auth)
                return NULL;
        const char *why = auth_problem(l, c);
        if (!why) {
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
                api_gate_trust(l->gate, ci ? ci->socket_context : NULL);
                return NULL;
        }
        req->close_after = true;
        return public ? NULL : why;
}

static const char *header_value(void *ctx, const char *name)
{
        return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

static const char *query_value(void *ctx, const char *key)
{
        const char *v = NULL;
        size_t len;
        if (MHD_lookup_connection_value_n(ctx, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, &len) !=
            MHD_YES)
                return NULL;
        return v ? v : ""; /* "?all" without a value */
}

/* The query re-encoded for forwarding (api/forward.h): every argument as k=v, percent-
 * encoded but for unreserved characters; one that does not fit is dropped from the end. */
struct query_text {
        char buf[2048];
        size_t len;
};

static void query_put(struct query_text *q, const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        for (; s && *s && q->len + 4 < sizeof(q->buf); s++) {
                unsigned char ch = (unsigned char)*s;
                if (isalnum(ch) || strchr("-._~", ch)) {
                        q->buf[q->len++] = (char)ch;
                } else {
                        q->buf[q->len++] = '%';
                        q->buf[q->len++] = hex[ch >> 4];
                        q->buf[q->len++] = hex[ch & 15];
                }
        }
        q->buf[q->len] = '\0';
}

static enum MHD_Result query_arg(void *ctx, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
        struct query_text *q = ctx;
        (void)kind;
        size_t start = q->len;
        if (q->len && q->len + 1 < sizeof(q->buf))
                q->buf[q->len++] = '&';
        query_put(q, key);
        if (value && q->len + 1 < sizeof(q->buf)) {
                q->buf[q->len++] = '=';
                query_put(q, value);
        }
        if (q->len + 4 >= sizeof(q->buf)) { /* cut: leave it out rather than send half */
                q->len = start;
                q->buf[start] = '\0';
                return MHD_NO;
        }
        q->buf[q->len] = '\0';
        return MHD_YES;
}

/* An upload route (any size, not JSON): its handler takes the body as it comes. */
static enum MHD_Result open_upload(struct api_listener *l, struct MHD_Connection *c,
                                   struct request *req)
{
        struct api_reply rep = {0};
        const char *type =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        struct query_text q = {.len = 0};
        q.buf[0] = '\0';
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_arg, &q);
        struct api_call call = {.route = req->route, .ref = req->ref, .body = "",
                                .query = query_value, .query_ctx = c, .header = header_value,
                                .raw_query = q.buf};
        req->upload = api_upload_open(l->srv, &call, type, &rep);
        if (req->upload)
                return MHD_YES;
        enum MHD_Result r = send_reply(c, req, &rep);
        api_reply_clear(&rep);
        return r;
}

/* ---- the dashboard's static files (docs/dashboard.md) ------------------------------------ */

static enum MHD_Result send_ui_file(struct MHD_Connection *c, struct request *req,
                                    const struct api_ui_file *f)
{
        struct MHD_Response *r = MHD_create_response_from_buffer(f->len, (void *)f->data,
                                                                 MHD_RESPMEM_PERSISTENT);
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, f->type);
        for (const char *const *h = api_ui_headers; *h; h += 2)
                MHD_add_response_header(r, h[0], h[1]);
        if (req->close_after)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        req->status = MHD_HTTP_OK;
        return ok;
}

/* A dashboard path: public like /healthz (the files hold no secret), GET and HEAD only, and
 * only the embedded files by exact name. A bad request target is never public. */
static enum MHD_Result on_ui(struct api_listener *l, struct MHD_Connection *c, const char *url,
                             struct request *req)
{
        bool target_ok = req->target_problem == API_TARGET_OK;
        req->route = API_ROUTE_UI; /* its own metrics label, whatever the answer */
        const char *why = authenticate(l, c, req, target_ok);
        if (why)
                return refuse(c, req, API_PROBLEM_UNAUTHORIZED, NULL, "%s", why);
        if (!target_ok)
                return refuse(c, req,
                              req->target_problem == API_TARGET_BAD_QUERY
                                      ? API_PROBLEM_INVALID_QUERY
                                      : API_PROBLEM_INVALID_PATH,
                              NULL, "%s", req->target_why);
        if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
                return refuse(c, req, API_PROBLEM_METHOD, "GET, HEAD",
                              "%s is not allowed on %s (allowed: GET, HEAD)", req->method,
                              req->path);
        const struct api_ui_file *f = api_ui_find(url);
        if (!f && api_ui_file_count == 0)
                return refuse(c, req, API_PROBLEM_NO_ROUTE, NULL,
                              "the dashboard was not built into this vmsnapd (no Node.js/npm at "
                              "build time, or -DVMSNAP_WEB=OFF)");
        if (!f)
                return refuse(c, req, API_PROBLEM_NO_ROUTE, NULL,
                              "no such file of the dashboard: %s", req->path);
        return send_ui_file(c, req, f);
}

/* The checks made when the headers are in: shutdown, token, request target, route, body. */
static enum MHD_Result on_headers(struct api_listener *l, struct MHD_Connection *c, const char *url,
                                  struct request *req)
{
        if (__atomic_load_n(&l->srv->shutting_down, __ATOMIC_SEQ_CST))
                return refuse(c, req, API_PROBLEM_SHUTTING_DOWN, NULL,
                              "vmsnapd is shutting down; retry when it is back");
        if (api_ui_path(url))
                return on_ui(l, c, url, req);
        char allow[64];
        int m = api_route_match(req->method, url, &req->route, req->ref, allow, sizeof(allow));
        /* A bad target is never public: the 400 below comes after the token check. */
        bool public = m == 0 && api_route_info(req->route)->public &&
                      req->target_problem == API_TARGET_OK;
        if (m < 0)
                req->route = API_ROUTE_NONE;
        const char *why = authenticate(l, c, req, public);
        if (why)
                return refuse(c, req, API_PROBLEM_UNAUTHORIZED, NULL, "%s", why);
        if (req->target_problem != API_TARGET_OK)
                return refuse(c, req,
                              req->target_problem == API_TARGET_BAD_QUERY
                                      ? API_PROBLEM_INVALID_QUERY
                                      : API_PROBLEM_INVALID_PATH,
                              NULL, "%s", req->target_why);
        if (m == -EOPNOTSUPP)
                return refuse(c, req, API_PROBLEM_METHOD, allow,
                              "%s is not allowed on %s (allowed: %s)", req->method, req->path,
                              allow);
        if (m == -ENAMETOOLONG)
                return refuse(c, req, API_PROBLEM_NO_ROUTE, NULL,
                              "no such resource: references are at most %d characters",
                              API_REF_MAX);
        if (m < 0)
                return refuse(c, req, API_PROBLEM_NO_ROUTE, NULL, "no route for %s %s", req->method,
                              req->path);
        if (api_request_uploads(req->route, MHD_lookup_connection_value(
                                                    c, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_TYPE)))
                return open_upload(l, c, req);
        bool refused;
        enum MHD_Result r = check_body(c, req, &refused);
        return refused ? r : MHD_YES;
}

/* ---- the request life cycle --------------------------------------------------------------- */

/* Appends upload data to the body, up to API_BODY_MAX; beyond that the rest is read away
 * (to answer 413) up to API_DISCARD_MAX, then the connection is dropped. */
static enum MHD_Result take_upload(struct request *req, const char *data, size_t size)
{
        if (req->too_large || req->len + size > API_BODY_MAX) {
                req->too_large = true;
                req->discarded += size;
                return req->discarded > API_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (!req->body && !(req->body = malloc(API_BODY_MAX + 1)))
                return MHD_NO;
        memcpy(req->body + req->len, data, size);
        req->len += size;
        req->body[req->len] = '\0';
        return MHD_YES;
}

/* The whole request is in: run the handler and send its reply. */
static enum MHD_Result dispatch(struct api_listener *l, struct MHD_Connection *c,
                                struct request *req)
{
        if (req->too_large)
                return refuse(c, req, API_PROBLEM_TOO_LARGE, NULL,
                              "request body is over the limit of %u bytes", API_BODY_MAX);
        struct query_text q = {.len = 0};
        q.buf[0] = '\0';
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_arg, &q);
        struct api_call call = {
                .raw_query = q.buf,
                .route = req->route,
                .ref = req->ref,
                .body = req->body ? req->body : "",
                .body_len = req->len,
                .query = query_value,
                .query_ctx = c,
                .header = header_value,
                .upload = req->upload,
        };
        struct api_reply rep = {0};
        api_handle(l->srv, &call, &rep);
        enum MHD_Result r = send_reply(c, req, &rep);
        api_reply_clear(&rep);
        return r;
}

/* MHD_OPTION_URI_LOG_CALLBACK: a request line came in. The target is seen here as the
 * client sent it, before libmicrohttpd decodes it (a decoded %00 would cut a ref short).
 * Returns the request, which libmicrohttpd hands to on_request and on_completed. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
        (void)cls, (void)c;
        struct request *req = calloc(1, sizeof(*req));
        if (!req)
                return NULL; /* on_request refuses the request */
        clock_gettime(CLOCK_MONOTONIC, &req->t0);
        req->route = API_ROUTE_NONE;
        printable(req->target, sizeof(req->target), uri);
        req->target_end = uri + strlen(uri);
        req->target_problem = api_target_check(uri, req->target_why, sizeof(req->target_why));
        return req;
}

/* A raw NUL byte in the request line ends libmicrohttpd's C string of the target early, so
 * on_uri saw only the part before it ("DELETE /v1/snapshots/dup<NUL>x" would name "dup").
 * libmicrohttpd parses the line in place: the version string starts right after the target
 * and the space that ended it. Anything else means the target held a NUL. */
static void check_target_whole(struct request *req, const char *version)
{
        if (!version || !version[0] || version == req->target_end + 1)
                return;
        if (req->target_problem == API_TARGET_OK) {
                req->target_problem = API_TARGET_BAD_PATH;
                snprintf(req->target_why, sizeof(req->target_why),
                         "the request target holds a NUL byte after '%.60s': ids, names and query "
                         "values never contain NUL or control characters",
                         req->target);
        }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        struct api_listener *l = cls;
        struct request *req = *con_cls;
        if (!req)
                return MHD_NO; /* out of memory in on_uri */
        if (!req->started) {
                req->started = true;
                check_target_whole(req, version);
                /* Counted before the shutdown flag is read (see api_server_quiesce). */
                __atomic_add_fetch(&l->srv->in_flight, 1, __ATOMIC_SEQ_CST);
                printable(req->method, sizeof(req->method), method);
                printable(req->path, sizeof(req->path), url);
                return on_headers(l, c, url, req);
        }
        if (req->status) {
                /* Answered already (a refusal at the headers): read away what still comes. */
                req->discarded += *upload_data_size;
                *upload_data_size = 0;
                return req->discarded > API_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (*upload_data_size && req->upload) {
                api_upload_feed(req->upload, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (*upload_data_size) {
                enum MHD_Result r = take_upload(req, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return r;
        }
        return dispatch(l, c, req);
}

static void log_request(const struct request *req, double seconds,
                        enum MHD_RequestTerminationCode toe)
{
        long long ms = (long long)(seconds * 1000 + 0.5);
        if (!req->status) {
                log_warn("%s %s - %lldms (connection ended before a response: %s)", req->method,
                         req->target, ms,
                         toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED   ? "timeout"
                         : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "shutdown"
                                                                         : "client or error");
                return;
        }
        /* The operation itself completed; only its answer was lost. */
        const char *lost = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK
                                   ? ""
                                   : " (not delivered: the client went away)";
        if (req->status >= 500)
                log_error("%s %s %u %lldms%s %s: %s", req->method, req->target, req->status, ms,
                          lost, req->code, req->message);
        else if (req->status >= 400)
                log_warn("%s %s %u %lldms%s %s: %s", req->method, req->target, req->status, ms,
                         lost, req->code, req->message);
        else
                log_info("%s %s %u %lldms%s", req->method, req->target, req->status, ms, lost);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        struct api_listener *l = cls;
        struct request *req = *con_cls;
        (void)c;
        if (!req)
                return;
        *con_cls = NULL;
        if (req->started) {
                log_request(req, api_elapsed(&req->t0), toe);
                api_metrics_request(&l->srv->metrics, req->route, req->method, req->status);
                __atomic_sub_fetch(&l->srv->in_flight, 1, __ATOMIC_SEQ_CST);
        } else {
                /* Its headers never came in full (a slow or vanished client): no request. */
                log_debug("%s: a request line without complete headers: %s", l->name, req->target);
        }
        api_upload_free(req->upload);
        free(req->body);
        free(req);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
        __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
        const struct api_listener *l = cls;
        char msg[512];
        vsnprintf(msg, sizeof(msg), fmt, ap);
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
                msg[--n] = '\0';
        log_warn("%s: %s", l->name, msg);
}

/* ---- the connection gate (TCP) ---------------------------------------------------------- */

/* Logs what the gate refused and closed since the last line, at most once per
 * GATE_LOG_PERIOD_S: a flood of slow clients must not become a flood of log lines. */
static void gate_log_note(struct api_listener *l, bool refused)
{
        struct gate_log *g = &l->gate_log;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        pthread_mutex_lock(&g->lock);
        if (refused)
                g->refused++;
        else
                g->expired++;
        bool due = g->last.tv_sec == 0 || now.tv_sec - g->last.tv_sec >= GATE_LOG_PERIOD_S;
        uint64_t n_refused = g->refused, n_expired = g->expired;
        if (due) {
                g->last = now;
                g->refused = g->expired = 0;
        }
        pthread_mutex_unlock(&g->lock);
        if (due)
                log_warn("%s: %llu connection(s) refused (their address had %u without a "
                         "token), %llu closed (no request with the token within %us)",
                         l->name, (unsigned long long)n_refused, l->srv->gate_limits.per_address,
                         (unsigned long long)n_expired, l->srv->gate_limits.deadline_s);
}

/* MHD_AcceptPolicyCallback: refuses a connection whose address is at its cap. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
        struct api_listener *l = cls;
        (void)len;
        if (!l->gate || api_gate_admit(l->gate, addr))
                return MHD_YES;
        gate_log_note(l, true);
        return MHD_NO;
}

/* MHD_NotifyConnectionCallback: a TCP connection enters the gate when it opens and leaves
 * it when it closes (libmicrohttpd closes the fd only after this returns). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
        struct api_listener *l = cls;
        if (!l->gate)
                return;
        if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
                if (api_gate_expired(l->gate, *socket_context))
                        gate_log_note(l, false);
                api_gate_close(l->gate, *socket_context);
                *socket_context = NULL;
                return;
        }
        const union MHD_ConnectionInfo *fd =
                MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *addr =
                MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!fd)
                return;
        *socket_context = addr ? api_gate_open(l->gate, fd->connect_fd, addr->client_addr) : NULL;
        if (!*socket_context)
                shutdown(fd->connect_fd, SHUT_RDWR); /* never an ungated stranger */
}

/* ---- listeners ---------------------------------------------------------------------------- */

static int start_daemon(struct api_server *srv, struct api_listener *l, struct vmsnap_diag *d)
{
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD |
                         MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
        l->srv = srv;
        l->mhd = MHD_start_daemon(
                flags, 0, on_accept, l, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, l,
                MHD_OPTION_LISTEN_SOCKET, l->fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                MHD_OPTION_NOTIFY_CONNECTION, on_connection, l, MHD_OPTION_URI_LOG_CALLBACK, on_uri,
                l, MHD_OPTION_CONNECTION_LIMIT, (unsigned)API_CONNECTION_LIMIT,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_IDLE_TIMEOUT_S, MHD_OPTION_END);
        if (!l->mhd)
                return vmsnap_diag(d, -EIO, "%s: cannot start the HTTP server", l->name);
        srv->listeners[srv->n_listeners++] = l;
        return 0;
}

static struct api_listener *listener_new(void)
{
        struct api_listener *l = calloc(1, sizeof(*l));
        if (!l)
                return NULL;
        l->fd = -1;
        pthread_mutex_init(&l->gate_log.lock, NULL);
        return l;
}

/* Frees a listener whose daemon is stopped (or never started); closes its socket. */
static void listener_free(struct api_listener *l)
{
        if (l->fd >= 0)
                close(l->fd);
        api_gate_free(l->gate);
        pthread_mutex_destroy(&l->gate_log.lock);
        free(l);
}

int api_listen_unix(struct api_server *srv, const char *path, struct vmsnap_diag *d)
{
        struct api_listener *l = listener_new();
        if (!l)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        l->fd = api_bind_unix(path, d);
        if (l->fd < 0) {
                int r = l->fd;
                listener_free(l);
                return r;
        }
        snprintf(l->unix_path, sizeof(l->unix_path), "%s", path);
        snprintf(l->name, sizeof(l->name), "unix:%s", path);
        int r = start_daemon(srv, l, d);
        if (r < 0) {
                unlink(path);
                listener_free(l);
        }
        return r;
}

int api_listen_tcp(struct api_server *srv, const char *addr, char *url, size_t url_size,
                   struct vmsnap_diag *d)
{
        struct api_listener *l = listener_new();
        if (!l)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        l->fd = api_bind_tcp(addr, url, url_size, d);
        int r = l->fd < 0 ? l->fd : api_gate_new(&srv->gate_limits, &l->gate);
        /* Published before the daemon starts: /metrics may run on the Unix listener already. */
        if (r == 0)
                __atomic_store_n(&srv->gate, l->gate, __ATOMIC_RELEASE);
        if (r < 0 && l->fd >= 0)
                vmsnap_diag(d, r,
                            "%s: cannot start the connection gate (limits %u per address, "
                            "%us): %s",
                            url, srv->gate_limits.per_address, srv->gate_limits.deadline_s,
                            strerror(-r));
        if (r == 0) {
                l->auth = true;
                snprintf(l->name, sizeof(l->name), "%s", url);
                r = start_daemon(srv, l, d);
        }
        if (r < 0) {
                __atomic_store_n(&srv->gate, NULL, __ATOMIC_RELEASE);
                listener_free(l);
        }
        return r;
}

void api_server_quiesce(struct api_server *srv)
{
        /* The flag is set before in_flight is read by the caller, and each request counts
         * itself before reading the flag: no request slips through unseen. */
        __atomic_store_n(&srv->shutting_down, true, __ATOMIC_SEQ_CST);
        for (unsigned i = 0; i < srv->n_listeners; i++) {
                struct api_listener *l = srv->listeners[i];
                MHD_quiesce_daemon(l->mhd);
                if (l->unix_path[0])
                        unlink(l->unix_path);
                l->unix_path[0] = '\0'; /* gone: new clients get "cannot connect" */
        }
}

unsigned api_server_in_flight(struct api_server *srv)
{
        return __atomic_load_n(&srv->in_flight, __ATOMIC_SEQ_CST);
}

void api_server_stop(struct api_server *srv)
{
        for (unsigned i = 0; i < srv->n_listeners; i++) {
                struct api_listener *l = srv->listeners[i];
                /* Closes every connection (each leaves the gate) and joins their threads. */
                MHD_stop_daemon(l->mhd);
                /* MHD_OPTION_LISTEN_SOCKET: the socket stays ours; closed after the stop. */
                if (l->unix_path[0])
                        unlink(l->unix_path);
                if (l->gate)
                        __atomic_store_n(&srv->gate, NULL, __ATOMIC_RELEASE);
                listener_free(l);
        }
        srv->n_listeners = 0;
}

bool api_server_gate_stats(struct api_server *srv, struct api_gate_stats *ret)
{
        struct api_gate *g = __atomic_load_n(&srv->gate, __ATOMIC_ACQUIRE);
        if (g)
                api_gate_stats(g, ret);
        return g != NULL;
}
