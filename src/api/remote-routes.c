/* The remote store in the API (docs/remote.md "REST"). Each request opens its own S3 client
 * (libcurl handles are not shared across connection threads) and, for push and pull, its own
 * store connection: a transfer takes minutes and must not hold the host's store lock that
 * every lifecycle step takes. Errors of the remote itself are 502 with the remote's message
 * (errors.c, API_SUBJECT_REMOTE); the secret key never reaches a message or the log. */
#include "api/remote-routes.h"

#include "api/body.h"
#include "api/json.h"
#include "api/model.h"
#include "util/cleanup.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <vmsnap/remote.h>

/* ---- configuration ------------------------------------------------------------------------ */

int api_remote_setup(struct api_server *srv, const char *name, struct vmsnap_diag *d)
{
        srv->have_remote = false;
        if (!name && !(getenv("VMSNAP_S3_ENDPOINT") && getenv("VMSNAP_S3_ENDPOINT")[0])) {
                char path[PATH_MAX + 32];
                struct stat st;
                snprintf(path, sizeof(path), "%s/remotes/default.conf", srv->root);
                if (lstat(path, &st) < 0 && errno == ENOENT)
                        return 0; /* no remote: the remote routes answer 409 no_remote */
        }
        int r = vmsnap_remote_config_load(srv->root, name, &srv->remote, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "remote store");
        srv->have_remote = true;
        return 0;
}

void api_remote_teardown(struct api_server *srv)
{
        vmsnap_remote_config_clear(&srv->remote);
        srv->have_remote = false;
        pthread_mutex_destroy(&srv->pull_lock);
}

/* The remote of a request: ?remote=NAME, else the daemon's. Returns 0 and an open client in
 * *ret, or -errno with the reply set. */
static int open_remote(struct api_server *srv, const struct api_call *call,
                       struct vmsnap_remote **ret, struct api_reply *rep)
{
        const char *name = call->query ? call->query(call->query_ctx, "remote") : NULL;
        struct vmsnap_remote_config c;
        struct vmsnap_diag d = {0};
        int r;
        if (name) {
                r = vmsnap_remote_config_load(srv->root, name, &c, &d);
                if (r == -EINVAL && strstr(d.msg, "not a valid remote name")) {
                        api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                                        "query parameter 'remote': %s", d.msg);
                        return r;
                }
                if (r < 0 && r != -ENOENT) {
                        api_reply_error(rep, api_error_problem(API_PROBLEM_NO_REMOTE),
                                        "remote '%s': %s", name, d.msg);
                        return r;
                }
        } else if (!srv->have_remote) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_NO_REMOTE),
                                "this vmsnapd has no remote store: start it with --remote NAME "
                                "(<root>/remotes/NAME.conf) or VMSNAP_S3_*, or pass "
                                "?remote=NAME");
                return -ENOENT;
        } else {
                c = srv->remote;
                r = 0;
        }
        if (r == 0)
                r = vmsnap_remote_open(&c, ret, &d);
        vmsnap_remote_config_clear(&c);
        if (r < 0)
                api_reply_errno_as(rep, API_SUBJECT_REMOTE, r, &d);
        return r;
}

/* ---- routes ------------------------------------------------------------------------------- */

static json_t *entry_json(const struct vmsnap_remote_entry *e)
{
        const struct vmsnap_remote_manifest *m = &e->m;
        return json_pack("{s:s, s:o, s:s, s:o, s:o, s:I, s:I, s:o, s:o}", "id", m->id, "name",
                         api_json_string_or_null(m->name), "kind",
                         vmsnap_snapshot_kind_name(m->kind), "parent",
                         api_json_string_or_null(m->parent_id), "template",
                         api_json_string_or_null(m->template_id), "size_bytes", (json_int_t)e->size,
                         "files", (json_int_t)m->nfiles, "created", api_json_time(m->created),
                         "pushed", api_json_time(m->pushed));
}

static json_t *list_json(const struct vmsnap_remote_entry *e, size_t n)
{
        json_t *snaps = json_array(), *problems = json_array();
        for (size_t i = 0; snaps && problems && i < n; i++) {
                json_t *o = e[i].problem[0] ? json_pack("{s:s, s:s}", "key", e[i].key, "problem",
                                                        e[i].problem)
                                            : entry_json(&e[i]);
                if (!o || json_array_append_new(e[i].problem[0] ? problems : snaps, o) < 0) {
                        json_decref(snaps);
                        snaps = NULL;
                }
        }
        if (!snaps || !problems) {
                json_decref(snaps);
                json_decref(problems);
                return NULL;
        }
        return json_pack("{s:o, s:o}", "snapshots", snaps, "problems", problems);
}

void api_remote_list(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_remote *r;
        if (open_remote(srv, call, &r, rep) < 0)
                return;
        struct vmsnap_diag d = {0};
        struct vmsnap_remote_entry *e = NULL;
        size_t n = 0;
        int x = vmsnap_remote_list(r, &e, &n, &d);
        vmsnap_remote_close(r);
        if (x < 0) {
                api_reply_errno_as(rep, API_SUBJECT_REMOTE, x, &d);
                return;
        }
        api_reply_json(rep, 200, list_json(e, n));
        vmsnap_remote_entries_free(e, n);
}

static json_t *stats_json(const char *id, const struct vmsnap_remote_stats *st)
{
        return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "id", id, "chunks",
                         (json_int_t)st->chunks, "zero_chunks", (json_int_t)st->zero_chunks,
                         "chunks_sent", (json_int_t)st->chunks_sent, "bytes", (json_int_t)st->bytes,
                         "retries", (json_int_t)st->retries);
}

/* Resolves a local ref to its id (and kind) under the host's store lock. */
static int local_snapshot(struct api_server *srv, const char *ref, char ret[VMSNAP_ID_LEN + 1],
                          enum vmsnap_snapshot_kind *ret_kind, struct vmsnap_diag *d)
{
        struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
        if (!snap)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        vmsnap_host_store_lock(srv->host);
        int r = vmsnap_store_resolve(vmsnap_host_store(srv->host), ref, snap, d);
        vmsnap_host_store_unlock(srv->host);
        if (r == 0) {
                memcpy(ret, snap->id, VMSNAP_ID_LEN + 1);
                if (ret_kind)
                        *ret_kind = snap->kind;
        }
        free(snap);
        return r;
}

void api_remote_push(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_remote_push_body b;
        char id[VMSNAP_ID_LEN + 1];
        int x = api_parse_remote_push_body(call->body, call->body_len, &b, &d);
        if (x < 0) {
                api_reply_body_error(rep, x, &d);
                return;
        }
        if ((x = local_snapshot(srv, b.snapshot, id, NULL, &d)) < 0) {
                api_reply_errno(rep, x, &d);
                return;
        }
        struct vmsnap_remote *r;
        if (open_remote(srv, call, &r, rep) < 0)
                return;
        struct vmsnap_store *s;
        struct vmsnap_remote_stats st = {0};
        if ((x = vmsnap_store_open(srv->root, &s, &d)) == 0) {
                x = vmsnap_remote_push(r, s, id, &st, &d);
                vmsnap_store_close(s);
        }
        vmsnap_remote_close(r);
        if (x < 0)
                api_reply_errno_as(rep, API_SUBJECT_REMOTE, x, &d);
        else
                api_reply_json(rep, 200, stats_json(id, &st));
}

void api_remote_delete(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        const char *f = call->query ? call->query(call->query_ctx, "force") : NULL;
        bool force = f && (!f[0] || strcmp(f, "1") == 0 || strcasecmp(f, "true") == 0);
        if (f && !force && strcmp(f, "0") != 0 && strcasecmp(f, "false") != 0) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                                "query parameter 'force' must be 1 or 0");
                return;
        }
        struct vmsnap_remote *r;
        if (open_remote(srv, call, &r, rep) < 0)
                return;
        struct vmsnap_diag d = {0};
        char id[VMSNAP_ID_LEN + 1];
        int x = vmsnap_remote_rm(r, call->ref, force ? VMSNAP_REMOTE_RM_FORCE : 0, id, &d);
        vmsnap_remote_close(r);
        if (x < 0)
                api_reply_errno_as(rep, API_SUBJECT_REMOTE, x, &d);
        else
                api_reply_json(rep, 204, NULL);
}

/* Pulls ref through a store connection of its own. */
static int pull(struct api_server *srv, struct vmsnap_remote *r, const char *ref, const char *name,
                struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        struct vmsnap_store *s;
        int x = vmsnap_store_open(srv->root, &s, d);
        if (x < 0)
                return x;
        struct vmsnap_import_opts io = {.name = name && name[0] ? name : NULL};
        struct vmsnap_remote_stats st = {0};
        vmsnap_remote_set_cache_size(r, srv->chunk_cache_size);
        x = vmsnap_remote_pull(r, s, ref, &io, ret, &st, d);
        vmsnap_store_close(s);
        if (x == 0) /* the log counts the GETs (e2e/remote-spawn reads it) */
                log_info("pulled %s: %llu chunks fetched, %llu from the chunk cache (%llu "
                         "corrupt there), %llu zero", ret->id, (unsigned long long)st.chunks_fetched,
                         (unsigned long long)st.chunks_cached, (unsigned long long)st.cache_corrupt,
                         (unsigned long long)st.zero_chunks);
        return x;
}

void api_remote_pull(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_remote_pull_body b;
        int x = api_parse_remote_pull_body(call->body, call->body_len, &b, &d);
        if (x < 0) {
                api_reply_body_error(rep, x, &d);
                return;
        }
        struct vmsnap_remote *r;
        if (open_remote(srv, call, &r, rep) < 0)
                return;
        struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
        x = snap ? pull(srv, r, call->ref, b.name, snap, &d) : -ENOMEM;
        vmsnap_remote_close(r);
        if (x < 0) {
                api_reply_errno_as(rep, API_SUBJECT_REMOTE, x, &d);
        } else {
                api_reply_json(rep, 201, api_snapshot_json(snap));
                if (rep->status == 201)
                        snprintf(rep->location, sizeof(rep->location), "/v1/snapshots/%s",
                                 snap->id);
        }
        free(snap);
}

void api_remote_gc(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_remote_gc_body b;
        int x = api_parse_remote_gc_body(call->body, call->body_len, &b, &d);
        if (x < 0) {
                api_reply_body_error(rep, x, &d);
                return;
        }
        struct vmsnap_remote *r;
        if (open_remote(srv, call, &r, rep) < 0)
                return;
        struct vmsnap_remote_gc_result g = {0};
        x = vmsnap_remote_gc(r, (int64_t)b.grace_seconds, b.dry_run, &g, &d);
        vmsnap_remote_close(r);
        if (x < 0) {
                api_reply_errno_as(rep, API_SUBJECT_REMOTE, x, &d);
                return;
        }
        api_reply_json(rep, 200,
                       json_pack("{s:b, s:I, s:I, s:I, s:I, s:I}", "dry_run", b.dry_run,
                                 "chunks_seen", (json_int_t)g.chunks_seen, "chunks_referenced",
                                 (json_int_t)g.chunks_referenced, "chunks_young",
                                 (json_int_t)g.chunks_young, "chunks_removed",
                                 (json_int_t)g.chunks_removed, "bytes_removed",
                                 (json_int_t)g.bytes_removed));
}

/* ---- spawn of a snapshot that is not here ------------------------------------------------- */

int api_remote_ensure_local(struct api_server *srv, const char *ref,
                            char ret_id[VMSNAP_ID_LEN + 1], enum vmsnap_snapshot_kind *ret_kind,
                            bool *ret_remote, struct vmsnap_diag *d)
{
        *ret_remote = false;
        int x = local_snapshot(srv, ref, ret_id, ret_kind, d);
        if (x != -ENOENT || !srv->have_remote)
                return x;
        pthread_mutex_lock(&srv->pull_lock);
        struct vmsnap_diag d2 = {0};
        x = local_snapshot(srv, ref, ret_id, ret_kind, &d2); /* pulled meanwhile? */
        if (x == -ENOENT) {
                struct vmsnap_remote *r = NULL;
                struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
                memset(d, 0, sizeof(*d));
                x = snap ? vmsnap_remote_open(&srv->remote, &r, d) : -ENOMEM;
                if (x == 0)
                        x = pull(srv, r, ref, NULL, snap, d);
                if (x == 0) {
                        memcpy(ret_id, snap->id, VMSNAP_ID_LEN + 1);
                        *ret_kind = snap->kind;
                } else {
                        vmsnap_diag_prefix(d, "'%s' is not here and its pull failed", ref);
                }
                vmsnap_remote_close(r);
                free(snap);
                *ret_remote = x < 0;
        } else if (x < 0) {
                *d = d2;
        }
        pthread_mutex_unlock(&srv->pull_lock);
        return x;
}
