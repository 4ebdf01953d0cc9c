/* Files in a sandbox (files.h). Contents and archives are streamed both ways with the flow
 * control of libvmsnap's streams: any size, memory bounded. Archives are made and unpacked
 * by the guest's own tar (busybox), so the daemon never interprets a guest's archive; the CLI
 * that receives one checks it (src/cli/tarx.c). */
#include "api/files.h"
#include "api/exec-routes.h"
#include "api/json.h"
#include "api/server.h"
#include "util/cleanup.h"
#include "util/log.h"

#include <vmsnap/exec.h>

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GUEST_PATH_MAX 4096
#define TAR_ERROR_MAX  2048 /* bytes of the guest tar's stderr kept for a message */

/* ---- the query ---------------------------------------------------------------------------- */

/* ?path=: an absolute guest path. Returns it, or NULL with the 400 set. */
static const char *path_param(const char *(*query)(void *, const char *), void *ctx,
                              struct api_reply *rep)
{
        const char *p = query ? query(ctx, "path") : NULL;
        if (p && p[0] == '/' && strlen(p) <= GUEST_PATH_MAX)
                return p;
        api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                        "query parameter 'path' must be an absolute path in the guest");
        return NULL;
}

static const char *call_path(const struct api_call *call, struct api_reply *rep)
{
        return path_param(call->query, call->query_ctx, rep);
}

/* ?recursive / ?mode. Return 0, or -EINVAL with the 400 set. */
static int recursive_param(const struct api_call *call, bool *ret, struct api_reply *rep)
{
        const char *v = call->query ? call->query(call->query_ctx, "recursive") : NULL;
        if (!v || !strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no")) {
                *ret = false;
                return 0;
        }
        if (!v[0] || !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes")) {
                *ret = true;
                return 0;
        }
        api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                        "query parameter 'recursive' must be 1 or 0");
        return -EINVAL;
}

static int mode_param(const char *(*query)(void *, const char *), void *ctx, unsigned *ret,
                      struct api_reply *rep)
{
        const char *v = query ? query(ctx, "mode") : NULL;
        char *end;
        unsigned long m = v ? strtoul(v, &end, 8) : 0644;
        if (!v || (v[0] && !*end && m <= 07777 && strspn(v, "01234567") == strlen(v))) {
                *ret = (unsigned)m;
                return 0;
        }
        api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                        "query parameter 'mode' must be octal permission bits, e.g. 0644");
        return -EINVAL;
}

/* ---- FileInfo ----------------------------------------------------------------------------- */

/* The agent's file entry in the API's shape: mtime as RFC 3339. */
static json_t *file_info(json_t *e)
{
        json_t *o = json_object();
        static const char *const keys[] = {"name", "path", "type", "mode", "size", "target"};
        for (size_t i = 0; o && i < sizeof(keys) / sizeof(keys[0]); i++) {
                json_t *v = json_object_get(e, keys[i]);
                api_json_set(o, keys[i], v ? json_incref(v) : json_null());
        }
        if (o)
                api_json_set(o, "mtime", api_json_time(json_integer_value(json_object_get(e, "mtime"))));
        return o;
}

static int stat_path(struct api_server *srv, const char *ref, const char *path, json_t **ret,
                     struct vmsnap_diag *d)
{
        return api_agent_call(srv, ref, json_pack("{s:s, s:s}", "op", "stat", "path", path), ret,
                              d);
}

void api_file_stat(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        const char *path = call_path(call, rep);
        json_t *e = NULL;
        if (!path)
                return;
        int r = stat_path(srv, call->ref, path, &e, &d);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        api_reply_json(rep, 200, file_info(e));
        json_decref(e);
}

void api_file_list(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        const char *path = call_path(call, rep);
        json_t *answer = NULL, *entries = json_array(), *e;
        size_t i;
        if (!path || !entries) {
                json_decref(entries);
                return;
        }
        int r = api_agent_call(srv, call->ref, json_pack("{s:s, s:s}", "op", "list", "path", path),
                               &answer, &d);
        if (r < 0) {
                json_decref(entries);
                api_reply_guest_error(rep, r, &d);
                return;
        }
        json_array_foreach(json_object_get(answer, "entries"), i, e)
                json_array_append_new(entries, file_info(e));
        api_reply_json(rep, 200,
                       json_pack("{s:s, s:o, s:b}", "path", path, "entries", entries, "truncated",
                                 json_is_true(json_object_get(answer, "truncated"))));
        json_decref(answer);
}

void api_file_remove(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        const char *path = call_path(call, rep);
        bool recursive;
        json_t *answer = NULL;
        if (!path || recursive_param(call, &recursive, rep) < 0)
                return;
        int r = api_agent_call(srv, call->ref,
                               json_pack("{s:s, s:s, s:b}", "op", "remove", "path", path,
                                         "recursive", recursive),
                               &answer, &d);
        json_decref(answer);
        if (r < 0)
                api_reply_guest_error(rep, r, &d);
        else
                api_reply_json(rep, 204, NULL);
}

/* ---- bytes out: a file's content, a tar --------------------------------------------------- */

struct bytes_out {
        struct vmsnap_stream *s;
        struct vmsnap_stream_event ev;
        size_t off;
        bool have;
        char what[GUEST_PATH_MAX + 32]; /* for the log when it fails half-way */
};

static ssize_t bytes_read(void *ctx, char *buf, size_t max)
{
        struct bytes_out *b = ctx;
        for (;;) {
                struct vmsnap_diag d = {0};
                if (!b->have && vmsnap_stream_next(b->s, &b->ev, &d) < 0) {
                        log_warn("%s: %s", b->what, d.msg);
                        return -1;
                }
                b->have = true;
                if (b->ev.kind == VMSNAP_STREAM_EXIT && b->ev.exit_code == 0)
                        return 0;
                if (b->ev.kind != VMSNAP_STREAM_STDOUT && b->ev.kind != VMSNAP_STREAM_STDERR) {
                        log_warn("%s: cut off: %s", b->what,
                                 b->ev.kind == VMSNAP_STREAM_ERROR ? b->ev.message
                                                                   : "the guest's tar failed");
                        return -1; /* the client sees an incomplete body: an error */
                }
                if (b->ev.kind == VMSNAP_STREAM_STDERR) { /* tar's warnings: not the body */
                        b->have = false;
                        continue;
                }
                size_t n = b->ev.len - b->off < max ? b->ev.len - b->off : max;
                memcpy(buf, (const char *)b->ev.data + b->off, n);
                b->off += n;
                if (b->off == b->ev.len) {
                        b->have = false;
                        b->off = 0;
                }
                return (ssize_t)n;
        }
}

static void bytes_free(void *ctx)
{
        struct bytes_out *b = ctx;
        vmsnap_stream_free(b->s);
        free(b);
}

/* Answers 200 with s's STDOUT as the body; takes s. */
static void reply_bytes(struct api_reply *rep, struct vmsnap_stream *s, const char *type,
                        const char *what)
{
        struct bytes_out *b = calloc(1, sizeof(*b));
        struct api_stream *st = calloc(1, sizeof(*st));
        if (!b || !st) {
                free(b);
                free(st);
                vmsnap_stream_free(s);
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "out of memory");
                return;
        }
        b->s = s;
        snprintf(b->what, sizeof(b->what), "%s", what);
        *st = (struct api_stream){.content_type = type, .read = bytes_read, .free = bytes_free,
                                  .ctx = b};
        api_reply_stream(rep, 200, st);
}

void api_file_read(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        const char *path = call_path(call, rep);
        struct vmsnap_stream *s;
        if (!path)
                return;
        int r = vmsnap_file_read_start(srv->host, call->ref, path, &s, &d);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        char what[GUEST_PATH_MAX + 32];
        snprintf(what, sizeof(what), "read of %s", path);
        reply_bytes(rep, s, "application/octet-stream", what);
}

/* Splits a guest path into the directory tar runs in and the name it archives. */
static void split_path(const char *path, char dir[GUEST_PATH_MAX + 1], char base[GUEST_PATH_MAX + 1])
{
        char a[GUEST_PATH_MAX + 1], b[GUEST_PATH_MAX + 1];
        snprintf(a, sizeof(a), "%s", path);
        snprintf(b, sizeof(b), "%s", path);
        snprintf(dir, GUEST_PATH_MAX + 1, "%s", dirname(a));
        const char *name = basename(b);
        snprintf(base, GUEST_PATH_MAX + 1, "%s", strcmp(name, "/") == 0 ? "." : name);
}

void api_archive_get(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        const char *path = call_path(call, rep);
        json_t *e = NULL;
        if (!path)
                return;
        int r = stat_path(srv, call->ref, path, &e, &d); /* a clear 404 before any byte */
        json_decref(e);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        char dir[GUEST_PATH_MAX + 1], base[GUEST_PATH_MAX + 1];
        split_path(path, dir, base);
        const char *argv[] = {"tar", "-c", "-f", "-", "-C", dir, base, NULL};
        struct vmsnap_exec_spec spec = {.argv = argv};
        struct vmsnap_stream *s;
        if ((r = vmsnap_exec_start(srv->host, call->ref, &spec, &s, NULL, &d)) < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        char what[GUEST_PATH_MAX + 32];
        snprintf(what, sizeof(what), "archive of %s", path);
        reply_bytes(rep, s, "application/x-tar", what);
}

/* ---- bytes in: a file's content, a tar ---------------------------------------------------- */

struct upload_to {
        struct vmsnap_stream *s;
        char path[GUEST_PATH_MAX + 1];
};

static int upload_data(void *ctx, const char *p, size_t n, struct vmsnap_diag *d)
{
        struct upload_to *t = ctx;
        return vmsnap_stream_write(t->s, p, n, d);
}

static void upload_free(void *ctx)
{
        struct upload_to *t = ctx;
        vmsnap_stream_free(t->s);
        free(t);
}

/* The stream's end after the body: EXIT, or ERROR as -errno with its message in d; what it
 * wrote on stderr is kept in err (tar's complaint). */
static int upload_end(struct api_upload *u, struct vmsnap_stream_event *ret, char *err,
                      size_t size, struct vmsnap_diag *d)
{
        struct upload_to *t = u->ctx;
        size_t len = 0;
        if (!u->err)
                vmsnap_stream_close_input(t->s, d);
        for (;;) {
                int r = vmsnap_stream_next(t->s, ret, d);
                if (r < 0)
                        return r;
                if (ret->kind == VMSNAP_STREAM_STDERR && len + 1 < size) {
                        size_t n = ret->len < size - 1 - len ? ret->len : size - 1 - len;
                        memcpy(err + len, ret->data, n);
                        err[len += n] = '\0';
                }
                if (ret->kind == VMSNAP_STREAM_EXIT)
                        return 0;
                if (ret->kind == VMSNAP_STREAM_ERROR)
                        return vmsnap_diag(d, ret->err, "%s", ret->message);
        }
}

static int open_file_write(struct api_server *srv, const char *ref, const char *path,
                           unsigned mode, struct upload_to *t, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        int r = vmsnap_file_write_start(srv->host, ref, path, mode, &t->s, &d);
        if (r < 0)
                api_reply_guest_error(rep, r, &d);
        return r;
}

/* PUT archive: DIR must be a directory; the guest's tar unpacks the body into it. */
static int open_tar_extract(struct api_server *srv, const char *ref, const char *dir,
                            struct upload_to *t, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        json_t *e = NULL;
        int r = stat_path(srv, ref, dir, &e, &d);
        const char *type = json_string_value(json_object_get(e, "type"));
        bool is_dir = r == 0 && type && strcmp(type, "dir") == 0;
        json_decref(e);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return r;
        }
        if (!is_dir) {
                vmsnap_diag(&d, -EINVAL, "%s is not a directory in the guest", dir);
                api_reply_errno(rep, -EINVAL, &d);
                return -EINVAL;
        }
        const char *argv[] = {"tar", "-x", "-f", "-", "-C", dir, NULL};
        struct vmsnap_exec_spec spec = {.argv = argv, .with_stdin = true};
        if ((r = vmsnap_exec_start(srv->host, ref, &spec, &t->s, NULL, &d)) < 0)
                api_reply_guest_error(rep, r, &d);
        return r;
}

int api_files_upload_open(struct api_server *srv, enum api_route r, const char *ref,
                          const char *(*query)(void *ctx, const char *key), void *query_ctx,
                          struct api_upload *u, struct api_reply *rep)
{
        const char *path = path_param(query, query_ctx, rep);
        unsigned mode = 0644;
        if (!path || (r == API_ROUTE_FILE_WRITE && mode_param(query, query_ctx, &mode, rep) < 0))
                return -1;
        struct upload_to *t = calloc(1, sizeof(*t));
        if (!t) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "out of memory");
                return -1;
        }
        snprintf(t->path, sizeof(t->path), "%s", path);
        int ret = r == API_ROUTE_FILE_WRITE ? open_file_write(srv, ref, path, mode, t, rep)
                                            : open_tar_extract(srv, ref, path, t, rep);
        if (ret < 0) {
                free(t);
                return -1;
        }
        *u = (struct api_upload){.data = upload_data, .free = upload_free, .ctx = t};
        return 0;
}

void api_file_write(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_stream_event ev;
        struct upload_to *t = call->upload->ctx;
        char err[64];
        int r = upload_end(call->upload, &ev, err, sizeof(err), &d);
        json_t *e = NULL;
        if (r == 0)
                r = stat_path(srv, call->ref, t->path, &e, &d);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        api_reply_json(rep, 200, file_info(e));
        json_decref(e);
}

void api_archive_put(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        (void)srv;
        struct vmsnap_diag d = {0};
        struct vmsnap_stream_event ev;
        char err[TAR_ERROR_MAX] = "";
        int r = upload_end(call->upload, &ev, err, sizeof(err), &d);
        if (r < 0) {
                api_reply_guest_error(rep, r, &d);
                return;
        }
        if (ev.exit_code != 0) {
                vmsnap_diag(&d, -EINVAL, "the guest's tar refused the archive (exit %d): %s",
                            ev.exit_code, err[0] ? err : "no message");
                api_reply_errno(rep, -EINVAL, &d);
                return;
        }
        api_reply_json(rep, 204, NULL);
}
