/* The HTTP layer: listening sockets, libmicrohttpd daemons (one thread per connection), the
 * per-request life cycle — refusals that need no handler (shutdown, token, route, size,
 * content type), the capped body buffer, dispatch, the reply — and one log line per
 * request. Handlers run in the connection's thread and run to completion even when the
 * client goes away: an operation is never cancelled half-way because a socket closed. */
#include "api/server.h"
#include "api/body.h"
#include "api/json.h"
#include "api/reply.h"
#include "api/stream.h"
#include "util/cleanup.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define API_CONNECTION_LIMIT 512
#define API_IDLE_TIMEOUT_S   120        /* an idle or stalled connection is closed */
#define API_DISCARD_MAX      (1u << 20) /* bytes of an oversized chunked body we read away */

struct api_listener {
        struct api_server *srv;
        struct MHD_Daemon *mhd;
        int fd;    /* the listening socket; closed after MHD_stop_daemon */
        bool auth; /* bearer token required */
        char name[160];
        char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

/* One request, from its first header to its completion callback. */
struct request {
        struct timespec t0;
        enum api_route route;
        char ref[API_REF_MAX + 1];
        char method[16];
        char path[200];
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

static const char *query_value(void *ctx, const char *key);

/* An upload route (any size, not JSON): its handler takes the body as it comes. */
static enum MHD_Result open_upload(struct api_listener *l, struct MHD_Connection *c,
                                   struct request *req)
{
        struct api_reply rep = {0};
        const char *type =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        req->upload = api_upload_open(l->srv, req->route, req->ref, query_value, c, type, &rep);
        if (req->upload)
                return MHD_YES;
        enum MHD_Result r = send_reply(c, req, &rep);
        api_reply_clear(&rep);
        return r;
}

/* The checks made when the headers are in: shutdown, token, route, body. */
static enum MHD_Result on_headers(struct api_listener *l, struct MHD_Connection *c, const char *url,
                                  struct request *req)
{
        if (__atomic_load_n(&l->srv->shutting_down, __ATOMIC_SEQ_CST))
                return refuse(c, req, API_PROBLEM_SHUTTING_DOWN, NULL,
                              "vmsnapd is shutting down; retry when it is back");
        char allow[64];
        int m = api_route_match(req->method, url, &req->route, req->ref, allow, sizeof(allow));
        bool public = m == 0 && api_route_info(req->route)->public;
        if (m < 0)
                req->route = API_ROUTE_NONE;
        const char *why = l->auth && !public ? auth_problem(l, c) : NULL;
        if (why)
                return refuse(c, req, API_PROBLEM_UNAUTHORIZED, NULL, "%s", why);
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
        if (api_route_uploads(req->route))
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

/* The whole request is in: run the handler and send its reply. */
static enum MHD_Result dispatch(struct api_listener *l, struct MHD_Connection *c,
                                struct request *req)
{
        if (req->too_large)
                return refuse(c, req, API_PROBLEM_TOO_LARGE, NULL,
                              "request body is over the limit of %u bytes", API_BODY_MAX);
        struct api_call call = {
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        struct api_listener *l = cls;
        struct request *req = *con_cls;
        (void)version;
        if (!req) {
                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                /* Counted before the shutdown flag is read (see api_server_quiesce). */
                __atomic_add_fetch(&l->srv->in_flight, 1, __ATOMIC_SEQ_CST);
                clock_gettime(CLOCK_MONOTONIC, &req->t0);
                req->route = API_ROUTE_NONE;
                printable(req->method, sizeof(req->method), method);
                printable(req->path, sizeof(req->path), url);
                *con_cls = req;
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
                         req->path, ms,
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
                log_error("%s %s %u %lldms%s %s: %s", req->method, req->path, req->status, ms, lost,
                          req->code, req->message);
        else if (req->status >= 400)
                log_warn("%s %s %u %lldms%s %s: %s", req->method, req->path, req->status, ms, lost,
                         req->code, req->message);
        else
                log_info("%s %s %u %lldms%s", req->method, req->path, req->status, ms, lost);
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
        log_request(req, api_elapsed(&req->t0), toe);
        api_metrics_request(&l->srv->metrics, req->route, req->status);
        api_upload_free(req->upload);
        free(req->body);
        free(req);
        __atomic_sub_fetch(&l->srv->in_flight, 1, __ATOMIC_SEQ_CST);
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

/* ---- listeners ---------------------------------------------------------------------------- */

static int start_daemon(struct api_server *srv, struct api_listener *l, struct vmsnap_diag *d)
{
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD |
                         MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
        l->srv = srv;
        l->mhd = MHD_start_daemon(
                flags, 0, NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, l,
                MHD_OPTION_LISTEN_SOCKET, l->fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned)API_CONNECTION_LIMIT,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_IDLE_TIMEOUT_S, MHD_OPTION_END);
        if (!l->mhd)
                return vmsnap_diag(d, -EIO, "%s: cannot start the HTTP server", l->name);
        srv->listeners[srv->n_listeners++] = l;
        return 0;
}

/* A socket file at path: removed when stale, -EADDRINUSE when a daemon answers on it. */
static int clear_stale_socket(const char *path, struct vmsnap_diag *d)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0
                                       : vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        if (!S_ISSOCK(st.st_mode))
                return vmsnap_diag(d, -EEXIST,
                                   "%s exists and is not a socket; remove it or "
                                   "pass --socket",
                                   path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                return vmsnap_diag(d, -EADDRINUSE, "%s: another vmsnapd is serving on it", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return vmsnap_diag(d, -errno, "%s: cannot remove the stale socket: %s", path,
                                   strerror(errno));
        return 0;
}

static int bind_unix(const char *path, struct vmsnap_diag *d)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: a Unix socket path is at most %zu bytes",
                                   path, sizeof(sa.sun_path) - 1);
        int r = clear_stale_socket(path, d);
        if (r < 0)
                return r;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "socket: %s", strerror(errno));
        /* Bound with mode 0660 from the start (no window where others may connect); the
         * umask is process-wide, so this runs before any thread starts. */
        mode_t old = umask(0117);
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        int saved = errno;
        umask(old);
        if (r < 0)
                return vmsnap_diag(d, -saved, "%s: cannot bind: %s", path, strerror(saved));
        if (chmod(path, 0660) < 0 || listen(fd, 128) < 0) {
                saved = errno;
                unlink(path);
                return vmsnap_diag(d, -saved, "%s: %s", path, strerror(saved));
        }
        return TAKE_FD(fd);
}

int api_listen_unix(struct api_server *srv, const char *path, struct vmsnap_diag *d)
{
        struct api_listener *l = calloc(1, sizeof(*l));
        if (!l)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        l->fd = bind_unix(path, d);
        if (l->fd < 0) {
                int r = l->fd;
                free(l);
                return r;
        }
        snprintf(l->unix_path, sizeof(l->unix_path), "%s", path);
        snprintf(l->name, sizeof(l->name), "unix:%s", path);
        int r = start_daemon(srv, l, d);
        if (r < 0) {
                unlink(path);
                close(l->fd);
                free(l);
        }
        return r;
}

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port. */
static int split_addr(const char *addr, char *host, size_t hsize, char *port, size_t psize)
{
        const char *colon = strrchr(addr, ':');
        if (!colon || !colon[1])
                return -EINVAL;
        const char *h = addr, *hend = colon;
        if (addr[0] == '[') {
                if (colon == addr || colon[-1] != ']')
                        return -EINVAL;
                h = addr + 1;
                hend = colon - 1;
        }
        if ((size_t)(hend - h) >= hsize || strlen(colon + 1) >= psize || hend == h)
                return -EINVAL;
        snprintf(host, hsize, "%.*s", (int)(hend - h), h);
        snprintf(port, psize, "%s", colon + 1);
        for (const char *p = port; *p; p++)
                if (!isdigit((unsigned char)*p))
                        return -EINVAL;
        return 0;
}

/* Binds and listens on addr; returns the fd and writes the bound URL. */
static int bind_tcp(const char *addr, char *url, size_t url_size, struct vmsnap_diag *d)
{
        char host[256], port[16];
        if (split_addr(addr, host, sizeof(host), port, sizeof(port)) < 0)
                return vmsnap_diag(d, -EINVAL,
                                   "--listen %s: expected HOST:PORT, e.g. "
                                   "127.0.0.1:7420 or [::1]:7420",
                                   addr);
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *ai;
        int e = getaddrinfo(host, port, &hints, &ai);
        if (e)
                return vmsnap_diag(d, -EINVAL, "--listen %s: %s", addr, gai_strerror(e));
        _cleanup_close_ int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        int one = 1, r = fd < 0 ? -errno : 0;
        if (r == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                r = -errno;
        if (r == 0 && (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0))
                r = -errno;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (r == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
                r = -errno;
        freeaddrinfo(ai);
        if (r < 0)
                return vmsnap_diag(d, r, "--listen %s: %s", addr, strerror(-r));
        char h[NI_MAXHOST], p[NI_MAXSERV];
        if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
                        NI_NUMERICHOST | NI_NUMERICSERV) != 0)
                snprintf(h, sizeof(h), "%s", host), snprintf(p, sizeof(p), "%s", port);
        snprintf(url, url_size, ss.ss_family == AF_INET6 ? "http://[%s]:%s" : "http://%s:%s", h, p);
        return TAKE_FD(fd);
}

int api_listen_tcp(struct api_server *srv, const char *addr, char *url, size_t url_size,
                   struct vmsnap_diag *d)
{
        struct api_listener *l = calloc(1, sizeof(*l));
        if (!l)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        l->fd = bind_tcp(addr, url, url_size, d);
        if (l->fd < 0) {
                int r = l->fd;
                free(l);
                return r;
        }
        l->auth = true;
        snprintf(l->name, sizeof(l->name), "%s", url);
        int r = start_daemon(srv, l, d);
        if (r < 0) {
                close(l->fd);
                free(l);
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
                MHD_stop_daemon(l->mhd);
                /* MHD_OPTION_LISTEN_SOCKET: the socket stays ours; closed after the stop. */
                close(l->fd);
                if (l->unix_path[0])
                        unlink(l->unix_path);
                free(l);
        }
        srv->n_listeners = 0;
}
