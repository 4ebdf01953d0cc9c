/* Export and import through the API (transfer.h). The store call runs in a thread writing
 * to (export) or reading from (import) a pipe, on its own store connection (SQLite and the
 * store's locks coordinate it with the host's), so a transfer of minutes never holds the
 * host's store lock. The HTTP side reads or writes the other end in the connection's
 * thread. */
#include "api/transfer.h"
#include "api/model.h"
#include "util/log.h"

#include <vmsnap/sandbox.h>
#include <vmsnap/store.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct transfer {
        struct vmsnap_store *store; /* its own connection */
        char id[VMSNAP_ID_LEN + 1]; /* export: the snapshot */
        int fd;                     /* our end of the pipe */
        int peer;                   /* the thread's end (it closes it) */
        pthread_t thread;
        bool running;
        int result; /* the store call's, once joined */
        struct vmsnap_diag d;
        struct vmsnap_export_opts eo;
        struct vmsnap_import_opts io;
        char name[VMSNAP_NAME_MAX + 1];
        struct vmsnap_snapshot snap; /* import: what was made */
};

static int transfer_join(struct transfer *t)
{
        if (t->running) {
                pthread_join(t->thread, NULL);
                t->running = false;
        }
        return t->result;
}

static void transfer_free(void *ctx)
{
        struct transfer *t = ctx;
        if (!t)
                return;
        if (t->fd >= 0)
                close(t->fd); /* the thread sees EPIPE or EOF and ends */
        t->fd = -1;
        transfer_join(t);
        if (t->peer >= 0)
                close(t->peer);
        vmsnap_store_close(t->store);
        free(t);
}

/* A transfer with its pipe (fds[our_end] ours) and its own store connection. */
static struct transfer *transfer_new(struct api_server *srv, int our_end, struct vmsnap_diag *d)
{
        struct transfer *t = calloc(1, sizeof(*t));
        int fds[2];
        if (!t) {
                vmsnap_diag(d, -ENOMEM, "out of memory");
                return NULL;
        }
        t->fd = t->peer = -1;
        if (pipe2(fds, O_CLOEXEC) < 0) {
                vmsnap_diag(d, -errno, "pipe: %s", strerror(errno));
                free(t);
                return NULL;
        }
        t->fd = fds[our_end];
        t->peer = fds[1 - our_end];
        if (vmsnap_store_open(srv->root, &t->store, d) < 0) {
                transfer_free(t);
                return NULL;
        }
        return t;
}

static int transfer_start(struct transfer *t, void *(*fn)(void *), struct vmsnap_diag *d)
{
        int r = pthread_create(&t->thread, NULL, fn, t);
        if (r != 0)
                return vmsnap_diag(d, -r, "cannot start a thread: %s", strerror(r));
        t->running = true;
        return 0;
}

/* ---- export ------------------------------------------------------------------------------- */

static void *export_thread(void *arg)
{
        struct transfer *t = arg;
        t->result = vmsnap_store_export_fd(t->store, t->id, t->peer, &t->eo, &t->d);
        close(t->peer);
        t->peer = -1;
        if (t->result < 0 && t->result != -EPIPE)
                log_warn("export of snapshot %s through the API failed: %s", t->id, t->d.msg);
        return NULL;
}

static ssize_t export_read(void *ctx, char *buf, size_t max)
{
        struct transfer *t = ctx;
        for (;;) {
                ssize_t n = read(t->fd, buf, max);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                if (n > 0)
                        return n;
                /* The end: complete only when the export succeeded; else cut the body off. */
                return transfer_join(t) == 0 ? 0 : -1;
        }
}

static const struct {
        const char *name, *type;
        enum vmsnap_compression c;
} compressions[] = {
        {"zstd", "application/zstd", VMSNAP_COMPRESSION_ZSTD},
        {"gzip", "application/gzip", VMSNAP_COMPRESSION_GZIP},
        {"none", "application/x-tar", VMSNAP_COMPRESSION_NONE},
};

/* The ?compression= value: its index in compressions, or -1. */
static int compression_pick(const char *v)
{
        for (int i = 0; i < 3; i++)
                if (strcmp(v ? v : "zstd", compressions[i].name) == 0)
                        return i;
        return -1;
}

/* Resolves ref among ready snapshots, under the host's store lock. */
static int resolve(struct api_server *srv, const char *ref, char id[VMSNAP_ID_LEN + 1],
                   struct vmsnap_diag *d)
{
        struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
        if (!snap)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        vmsnap_host_store_lock(srv->host);
        int r = vmsnap_store_resolve(vmsnap_host_store(srv->host), ref, snap, d);
        vmsnap_host_store_unlock(srv->host);
        if (r == 0)
                memcpy(id, snap->id, VMSNAP_ID_LEN + 1);
        free(snap);
        return r;
}

void api_snapshot_export(struct api_server *srv, const struct api_call *call,
                         struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        int c = compression_pick(call->query ? call->query(call->query_ctx, "compression")
                                             : NULL);
        if (c < 0) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                                "query parameter 'compression' must be zstd, gzip or none");
                return;
        }
        char id[VMSNAP_ID_LEN + 1];
        int r = resolve(srv, call->ref, id, &d);
        struct transfer *t = r < 0 ? NULL : transfer_new(srv, 0, &d);
        struct api_stream *st = t ? calloc(1, sizeof(*st)) : NULL;
        if (t && st) {
                memcpy(t->id, id, sizeof(t->id));
                /* One zstd thread: an export must not take every core of the host. */
                t->eo = (struct vmsnap_export_opts){.compression = compressions[c].c,
                                                    .threads = 1};
                r = transfer_start(t, export_thread, &d);
        } else if (r == 0) {
                r = d.err ? d.err : vmsnap_diag(&d, -ENOMEM, "out of memory");
        }
        if (r < 0) {
                free(st);
                transfer_free(t);
                api_reply_errno(rep, r, &d);
                return;
        }
        *st = (struct api_stream){.content_type = compressions[c].type, .read = export_read,
                                  .free = transfer_free, .ctx = t};
        api_reply_stream(rep, 200, st);
}

/* ---- import ------------------------------------------------------------------------------- */

static const char *const import_types[] = {"application/x-tar", "application/zstd",
                                           "application/gzip", "application/octet-stream"};

static bool type_is(const char *got, const char *want)
{
        size_t n = strlen(want);
        while (got && *got == ' ')
                got++;
        return got && strncasecmp(got, want, n) == 0 &&
               (got[n] == '\0' || got[n] == ';' || got[n] == ' ');
}

bool api_import_upload_type(const char *content_type)
{
        for (size_t i = 0; i < sizeof(import_types) / sizeof(*import_types); i++)
                if (type_is(content_type, import_types[i]))
                        return true;
        return false;
}

static void *import_thread(void *arg)
{
        struct transfer *t = arg;
        t->result = vmsnap_store_import_fd(t->store, t->peer, &t->io, &t->snap, &t->d);
        close(t->peer); /* a refusal before the end: the uploader's writes get EPIPE */
        t->peer = -1;
        return NULL;
}

/* Writes a piece of the body to the import. EPIPE: the import ended early (refused); the
 * rest is read away and the finish reports why. */
static int import_data(void *ctx, const char *p, size_t n, struct vmsnap_diag *d)
{
        struct transfer *t = ctx;
        while (n > 0) {
                ssize_t w = write(t->fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return vmsnap_diag(d, -errno, "import: %s", strerror(errno));
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

int api_import_upload_open(struct api_server *srv,
                           const char *(*query)(void *ctx, const char *key), void *query_ctx,
                           struct api_upload *u, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        const char *name = query ? query(query_ctx, "name") : NULL;
        if (name && !vmsnap_store_name_valid(name)) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                                "query parameter 'name' must match "
                                "^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$ and not be a UUID");
                return -EINVAL;
        }
        struct transfer *t = transfer_new(srv, 1, &d);
        int r = t ? 0 : d.err;
        if (t && name) {
                snprintf(t->name, sizeof(t->name), "%s", name);
                t->io.name = t->name;
        }
        if (t)
                r = transfer_start(t, import_thread, &d);
        if (r < 0) {
                transfer_free(t);
                api_reply_errno(rep, r, &d);
                return r;
        }
        *u = (struct api_upload){.data = import_data, .free = transfer_free, .ctx = t};
        return 0;
}

void api_import_upload_finish(struct api_server *srv, const struct api_call *call,
                              struct api_reply *rep)
{
        (void)srv;
        struct transfer *t = call->upload->ctx;
        close(t->fd); /* the end of the archive */
        t->fd = -1;
        int r = transfer_join(t);
        if (r < 0) {
                api_reply_errno_as(rep, API_SUBJECT_IMPORT, r, &t->d);
                return;
        }
        api_reply_json(rep, 201, api_snapshot_json(&t->snap));
        if (rep->status == 201)
                snprintf(rep->location, sizeof(rep->location), "/v1/snapshots/%s", t->snap.id);
}
