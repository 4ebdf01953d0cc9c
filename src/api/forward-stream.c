/* Relaying a streamed request and its answer to the owning host (forward-stream.h).
 *
 * One thread per forwarded call runs libcurl; the bytes go through two pipes: the client's
 * body (an upload) from the connection's thread to libcurl's read callback, the owner's body
 * from libcurl's write callback to the stream libmicrohttpd reads. A pipe holds at most 64
 * KiB, so a slow client (or a slow owner) blocks the other side instead of growing a buffer.
 * Whoever goes away closes its end: the other side then gets EPIPE or end of file. */
#include "api/forward-stream.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>
#include <fcntl.h>

#include <vmsnap/sandbox.h>

#include "api/forward.h"
#include "util/log.h"

#define JSON_MAX (1u << 20) /* an owner's JSON answer (an error, a file's info) */

struct fwd {
        int refs; /* the stream, the upload, the call in progress: the last one joins, frees */
        int abandoned; /* no one reads the answer any more: libcurl stops (on_progress) */
        pthread_t thread;
        bool started;
        CURL *h;
        struct curl_slist *hdr;
        char *body; /* the JSON body of an exec */
        int up[2];   /* the client's body: [1] written by the connection, [0] read by libcurl */
        int down[2]; /* the owner's body: [1] written by libcurl, [0] read by the stream */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool head_done; /* the owner's status and headers are in, or the transfer ended */
        long status;    /* the owner's, 0 while none */
        char type[128]; /* the owner's Content-Type */
        int failed;     /* set before down[1] closes when the transfer failed */
        char err[CURL_ERROR_SIZE];
        char host[64], endpoint[256], what[480];
};

static void close_fd(int *fd)
{
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

static void fwd_unref(struct fwd *f)
{
        if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) > 0)
                return;
        __atomic_store_n(&f->abandoned, 1, __ATOMIC_SEQ_CST); /* an owner that sends nothing */
        close_fd(&f->down[0]); /* a libcurl still writing gets EPIPE and stops */
        close_fd(&f->up[1]);   /* a libcurl still reading gets the end */
        if (f->started)
                pthread_join(f->thread, NULL);
        close_fd(&f->down[1]);
        close_fd(&f->up[0]);
        curl_slist_free_all(f->hdr);
        curl_easy_cleanup(f->h);
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->lock);
        free(f->body);
        free(f);
}

static void head_is_done(struct fwd *f)
{
        pthread_mutex_lock(&f->lock);
        f->head_done = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
}

/* libcurl: one header line of the owner's answer (a 1xx answer's lines start over). */
static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
        struct fwd *f = ctx;
        size_t len = size * n;
        long status;
        if (len >= 5 && strncmp(p, "HTTP/", 5) == 0 && sscanf(p, "HTTP/%*s %ld", &status) == 1) {
                f->status = status;
                f->type[0] = '\0';
        } else if (len > 13 && strncasecmp(p, "Content-Type:", 13) == 0) {
                size_t i = 13, end = len;
                while (i < end && p[i] == ' ')
                        i++;
                while (end > i && (p[end - 1] == '\r' || p[end - 1] == '\n' || p[end - 1] == ' '))
                        end--;
                snprintf(f->type, sizeof(f->type), "%.*s", (int)(end - i), p + i);
        } else if ((len == 2 && p[0] == '\r') || (len == 1 && p[0] == '\n')) {
                if (f->status >= 200)
                        head_is_done(f);
        }
        return len;
}

/* libcurl: a piece of the owner's body, into the pipe (blocks while it is full). */
static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
        struct fwd *f = ctx;
        size_t len = size * n, off = 0;
        while (off < len) {
                ssize_t w = write(f->down[1], p + off, len - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return 0; /* the client went away: the transfer stops */
                off += (size_t)w;
        }
        return len;
}

/* libcurl: a piece of the client's body, from the pipe (blocks until some comes). */
static size_t on_upload(char *p, size_t size, size_t n, void *ctx)
{
        struct fwd *f = ctx;
        for (;;) {
                ssize_t r = read(f->up[0], p, size * n);
                if (r < 0 && errno == EINTR)
                        continue;
                return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
        }
}

/* libcurl, about once a second even when no byte moves: stop when abandoned. */
static int on_progress(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
        struct fwd *f = ctx;
        (void)a, (void)b, (void)c, (void)d;
        return __atomic_load_n(&f->abandoned, __ATOMIC_SEQ_CST);
}

static void *run(void *ctx)
{
        struct fwd *f = ctx;
        CURLcode rc = curl_easy_perform(f->h);
        if (rc != CURLE_OK) {
                if (!f->err[0])
                        snprintf(f->err, sizeof(f->err), "%s", curl_easy_strerror(rc));
                __atomic_store_n(&f->failed, 1, __ATOMIC_SEQ_CST);
                log_warn("forwarded %s to host %s: %s", f->what, f->host, f->err);
        }
        close_fd(&f->up[0]); /* a client still uploading gets EPIPE */
        close_fd(&f->down[1]);
        head_is_done(f);
        log_debug("forwarded %s to host %s: %ld", f->what, f->host, f->status);
        return NULL; /* the last reference joins this thread */
}

/* Sets up the request to the owner; the body is call's JSON body, or the upload pipe when
 * upload. Returns NULL with rep set on failure. */
static struct fwd *fwd_new(struct api_server *srv, const struct api_call *call, const char *host,
                           const char *endpoint, bool upload, const char *content_type,
                           struct api_reply *rep)
{
        struct fwd *f = calloc(1, sizeof(*f));
        if (f)
                f->up[0] = f->up[1] = f->down[0] = f->down[1] = -1;
        if (!f || !(f->h = curl_easy_init()) || pipe2(f->down, O_CLOEXEC) < 0 ||
            (upload && pipe2(f->up, O_CLOEXEC) < 0)) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL),
                                "forwarding to host %s: %s", host, strerror(errno ? errno : ENOMEM));
                if (f) {
                        curl_easy_cleanup(f->h);
                        close_fd(&f->down[0]);
                        close_fd(&f->down[1]);
                }
                free(f);
                return NULL;
        }
        f->refs = 1;
        pthread_mutex_init(&f->lock, NULL);
        pthread_cond_init(&f->cond, NULL);
        snprintf(f->host, sizeof(f->host), "%s", host);
        snprintf(f->endpoint, sizeof(f->endpoint), "%s", endpoint);
        const char *method = api_route_info(call->route)->method;
        char path[400], url[700], line[300];
        api_forward_path(call, call->raw_query, path, sizeof(path));
        snprintf(url, sizeof(url), "http://%s%s", endpoint, path);
        snprintf(f->what, sizeof(f->what), "%s %s", method, path);
        snprintf(line, sizeof(line), "Authorization: Bearer %s", srv->token);
        f->hdr = curl_slist_append(f->hdr, line);
        snprintf(line, sizeof(line), API_FORWARDED_HEADER ": %s", host);
        f->hdr = curl_slist_append(f->hdr, line);
        f->hdr = curl_slist_append(f->hdr, "Expect:"); /* no 100-continue round trip */
        const char *accept = call->header ? call->header(call->query_ctx, "Accept") : NULL;
        if (accept) {
                snprintf(line, sizeof(line), "Accept: %.200s", accept);
                f->hdr = curl_slist_append(f->hdr, line);
        }
        if (content_type || call->body_len) {
                snprintf(line, sizeof(line), "Content-Type: %.200s",
                         content_type ? content_type : "application/json");
                f->hdr = curl_slist_append(f->hdr, line);
        }
        CURL *h = f->h;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, f->hdr);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, f);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, f->err);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, f);
        if (upload) {
                const char *cl = call->header(call->query_ctx, "Content-Length");
                char *end = NULL;
                long long size = cl ? strtoll(cl, &end, 10) : -1;
                curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
                curl_easy_setopt(h, CURLOPT_READDATA, f);
                curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE,
                                 (curl_off_t)(cl && *end == '\0' && size >= 0 ? size : -1));
        } else if (strcmp(method, "GET") != 0) {
                f->body = malloc(call->body_len + 1);
                if (f->body)
                        memcpy(f->body, call->body, call->body_len);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, f->body ? f->body : "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, f->body ? (long)call->body_len : 0L);
        }
        int e = pthread_create(&f->thread, NULL, run, f);
        if (e != 0) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL),
                                "forwarding to host %s: %s", host, strerror(e));
                fwd_unref(f);
                return NULL;
        }
        f->started = true;
        return f;
}

/* ---- the owner's answer ------------------------------------------------------------------- */

static ssize_t stream_read(void *ctx, char *buf, size_t max)
{
        struct fwd *f = ctx;
        for (;;) {
                ssize_t r = read(f->down[0], buf, max);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r == 0 && __atomic_load_n(&f->failed, __ATOMIC_SEQ_CST))
                        return -1; /* cut off: the client sees an incomplete body */
                return r < 0 ? -1 : r;
        }
}

static void stream_free(void *ctx)
{
        fwd_unref(ctx);
}

/* Reads the owner's whole (JSON) body, at most JSON_MAX bytes. */
static void relay_json(struct fwd *f, struct api_reply *rep)
{
        char *buf = malloc(JSON_MAX);
        size_t len = 0;
        ssize_t r = 0;
        while (buf && len < JSON_MAX && (r = stream_read(f, buf + len, JSON_MAX - len)) > 0)
                len += (size_t)r;
        if (!buf || r != 0)
                api_reply_error(rep, (struct api_error){502, "upstream_error"},
                                "%s: host %s answered %ld with a body cut off or too large",
                                f->what, f->host, f->status);
        else
                api_forward_relay(rep, f->status, buf, len, f->host);
        free(buf);
}

/* Waits for the owner's status and headers, then fills rep: the body as it comes, or the
 * owner's JSON answer whole (errors, a file's info, a 204), or 503 when there was none.
 * Takes the caller's reference on f. */
static void answer(struct fwd *f, struct api_reply *rep)
{
        pthread_mutex_lock(&f->lock);
        while (!f->head_done)
                pthread_cond_wait(&f->cond, &f->lock);
        pthread_mutex_unlock(&f->lock);
        bool json = strncasecmp(f->type, "application/json", 16) == 0;
        struct api_stream *st = NULL;
        if (f->status < 200 || (__atomic_load_n(&f->failed, __ATOMIC_SEQ_CST) && f->status == 0)) {
                api_reply_error(rep, (struct api_error){503, "unavailable"}, "%s: host %s at %s: %s",
                                f->what, f->host, f->endpoint, f->err[0] ? f->err : "no answer");
        } else if (json || f->status == 204 || f->status >= 400 || !f->type[0]) {
                relay_json(f, rep);
        } else if (!(st = calloc(1, sizeof(*st)))) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "out of memory");
        } else {
                st->content_type = f->type;
                st->read = stream_read;
                st->free = stream_free;
                st->ctx = f;
                api_reply_stream(rep, (unsigned)f->status, st);
                return; /* the stream holds the reference now */
        }
        fwd_unref(f);
}

bool api_forward_stream(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_sandbox sb;
        char host[64], endpoint[256];
        if (!__atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE) ||
            vmsnap_sandbox_get(srv->host, call->ref, &sb, NULL) != -ENOENT)
                return false;
        int r = api_forward_owner(srv, call, host, endpoint, rep);
        if (r <= 0)
                return r < 0;
        struct fwd *f = fwd_new(srv, call, host, endpoint, false, NULL, rep);
        if (f)
                answer(f, rep);
        return true;
}

/* ---- uploads ------------------------------------------------------------------------------ */

static int upload_data(void *ctx, const char *p, size_t n, struct vmsnap_diag *d)
{
        struct fwd *f = ctx;
        size_t off = 0;
        while (off < n) {
                ssize_t w = write(f->up[1], p + off, n - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0) /* the owner's request ended (it answered, or failed) */
                        return vmsnap_diag(d, -EPIPE, "%s: host %s stopped taking the body",
                                           f->what, f->host);
                off += (size_t)w;
        }
        return 0;
}

static void upload_free(void *ctx)
{
        fwd_unref(ctx);
}

int api_forward_upload_open(struct api_server *srv, const struct api_call *call,
                            const char *content_type, struct api_upload *u,
                            struct api_reply *rep)
{
        struct vmsnap_sandbox sb;
        char host[64], endpoint[256];
        if (!__atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE) ||
            vmsnap_sandbox_get(srv->host, call->ref, &sb, NULL) != -ENOENT)
                return 0;
        int r = api_forward_owner(srv, call, host, endpoint, rep);
        if (r <= 0)
                return r;
        struct fwd *f = fwd_new(srv, call, host, endpoint, true, content_type, rep);
        if (!f)
                return -1;
        *u = (struct api_upload){.data = upload_data, .free = upload_free, .ctx = f,
                                 .forward = true};
        return 1;
}

void api_forward_upload_finish(struct api_upload *u, struct api_reply *rep)
{
        struct fwd *f = u->ctx;
        close_fd(&f->up[1]); /* the end of the body */
        __atomic_add_fetch(&f->refs, 1, __ATOMIC_ACQ_REL); /* answer's; the upload keeps its */
        answer(f, rep);
}
