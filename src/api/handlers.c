/* Route handlers: parse the body (body.c), call libvmsnap, shape the reply (model.c). Every
 * failure goes out through api_reply_errno / api_reply_body_error, so statuses come from
 * errors.c alone. Handlers run in their connection's thread; the sandbox layer serializes
 * operations per sandbox, and the host's store is shared with it under
 * vmsnap_host_store_lock (held only for short reads and deletes; imports use their own
 * connection). */
#include "api/body.h"
#include "api/cluster.h"
#include "api/cluster-routes.h"
#include "api/forward.h"
#include "api/forward-stream.h"
#include "api/exec-routes.h"
#include "api/files.h"
#include "api/json.h"
#include "api/model.h"
#include "api/net-routes.h"
#include "api/remote-routes.h"
#include "api/reply.h"
#include "api/server.h"
#include "api/transfer.h"
#include "api/vmm-memory.h"
#include "util/cleanup.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef void handler_fn(struct api_server *srv, const struct api_call *call, struct api_reply *rep);

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *query(const struct api_call *call, const char *key)
{
        return call->query ? call->query(call->query_ctx, key) : NULL;
}

/* A boolean query parameter: absent = false; "", 1, true, yes = true; 0, false, no = false.
 * Returns 0, or -EINVAL with the 400 reply set. */
static int query_bool(const struct api_call *call, const char *key, bool *ret,
                      struct api_reply *rep)
{
        const char *v = query(call, key);
        if (!v || strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0) {
                *ret = false;
                return 0;
        }
        if (!v[0] || strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 ||
            strcasecmp(v, "yes") == 0) {
                *ret = true;
                return 0;
        }
        api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                        "query parameter '%s' must be 1 or 0", key);
        return -EINVAL;
}

static void reply_sandbox(struct api_reply *rep, unsigned status, const struct vmsnap_sandbox *sb)
{
        api_reply_json(rep, status, api_sandbox_json(sb));
        if (status == 201 && rep->status == 201)
                snprintf(rep->location, sizeof(rep->location), "/v1/sandboxes/%s", sb->id);
}

/* reply_sandbox plus its `network` object (GET, create, spawn). */
static void reply_sandbox_net(struct api_server *srv, struct api_reply *rep, unsigned status,
                              const struct vmsnap_sandbox *sb)
{
        json_t *o = api_sandbox_json(sb);
        api_add_network(srv->host, sb->id, o);
        api_reply_json(rep, status, o);
        if (status == 201 && rep->status == 201)
                snprintf(rep->location, sizeof(rep->location), "/v1/sandboxes/%s", sb->id);
}

static void reply_snapshot(struct api_reply *rep, unsigned status,
                           const struct vmsnap_snapshot *snap)
{
        api_reply_json(rep, status, api_snapshot_json(snap));
        if (status == 201 && rep->status == 201)
                snprintf(rep->location, sizeof(rep->location), "/v1/snapshots/%s", snap->id);
}

static struct vmsnap_sandbox_spec spec_of(const struct api_sandbox_body *b)
{
        return (struct vmsnap_sandbox_spec){
                .name = b->name[0] ? b->name : NULL,
                .vmm = b->vmm[0] ? b->vmm : NULL,
                .vcpus = b->vcpus,
                .memory = b->memory,
                .idle_timeout = b->idle_timeout,
                .no_network = b->no_network,
                .egress = b->has_egress ? &b->egress : NULL,
        };
}

/* Takes the host's store (shared with the lifecycle threads); pair with store_release. */
static struct vmsnap_store *store_take(struct api_server *srv)
{
        vmsnap_host_store_lock(srv->host);
        return vmsnap_host_store(srv->host);
}

static void store_release(struct api_server *srv)
{
        vmsnap_host_store_unlock(srv->host);
}

static void record_op(struct api_server *srv, enum api_op op, const struct timespec *t0, int r)
{
        api_metrics_op(&srv->metrics, op, api_elapsed(t0), r >= 0);
}

/* A pause snapshot from another host: a paused sandbox of it (vmsnap_sandbox_adopt), then
 * resumed. A failed resume leaves that sandbox paused, named in the message. */
static int adopt_and_resume(struct api_server *srv, const char *id,
                            const struct vmsnap_sandbox_spec *spec, struct vmsnap_sandbox *sb,
                            struct vmsnap_diag *d)
{
        int r = vmsnap_sandbox_adopt(srv->host, id, spec, sb, d);
        if (r < 0)
                return r;
        char sid[VMSNAP_ID_LEN + 1];
        memcpy(sid, sb->id, sizeof(sid));
        r = vmsnap_sandbox_resume(srv->host, sid, sb, d);
        return r < 0 ? vmsnap_diag_prefix(d, "sandbox %s (paused on snapshot %s) did not resume",
                                          sid, id)
                     : 0;
}

/* Spawns from ref — a template, or a pause snapshot from another host whose guest then
 * continues here — pulling it from the remote store first when it is not here
 * (docs/remote.md "Spawn from a remote snapshot"); records the spawn and sets the error
 * reply on failure. */
static int spawn_from(struct api_server *srv, const char *ref,
                      const struct vmsnap_sandbox_spec *spec, struct vmsnap_sandbox *sb,
                      struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        char id[VMSNAP_ID_LEN + 1];
        enum vmsnap_snapshot_kind kind = VMSNAP_SNAPSHOT_TEMPLATE;
        bool remote = false;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = api_remote_ensure_local(srv, ref, id, &kind, &remote, &d);
        if (r == 0 && kind == VMSNAP_SNAPSHOT_PAUSE)
                r = adopt_and_resume(srv, id, spec, sb, &d);
        else if (r == 0)
                r = vmsnap_sandbox_spawn(srv->host, id, spec, sb, &d);
        record_op(srv, API_OP_SPAWN, &t0, r);
        if (r < 0)
                api_reply_errno_as(rep, remote ? API_SUBJECT_REMOTE : API_SUBJECT_REF, r, &d);
        return r;
}

/* ---- health and metrics ------------------------------------------------------------------- */

static void h_healthz(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        (void)call;
        char accel[8], why[256];
        vmsnap_host_accel(srv->host, accel, why);
        api_reply_json(rep, 200,
                       json_pack("{s:s, s:I, s:s, s:s}", "status", "ok", "uptime_seconds",
                                 (json_int_t)api_elapsed(&srv->started), "accelerator", accel,
                                 "accelerator_reason", why));
}

static void gather_sandboxes(struct api_server *srv, struct api_gauges *g)
{
        _cleanup_free_ struct vmsnap_sandbox *list = NULL;
        size_t n = 0;
        if (vmsnap_sandbox_list(srv->host, true, &list, &n, NULL) < 0)
                return;
        g->n_states = VMSNAP_SANDBOX_ERROR + 1;
        for (size_t i = 0; i < g->n_states; i++)
                g->state_names[i] = vmsnap_sandbox_state_name((enum vmsnap_sandbox_state)i);
        for (size_t i = 0; i < n; i++)
                if ((size_t)list[i].state < g->n_states)
                        g->sandboxes[list[i].state]++;
        g->have_sandboxes = true;
        _cleanup_free_ pid_t *pids = calloc(n ? n : 1, sizeof(*pids));
        for (size_t i = 0; pids && i < n; i++)
                pids[i] = list[i].pid;
        struct api_vmm_memory mem;
        if (pids && api_vmm_memory(pids, n, &mem) == 0) {
                g->have_vmm_memory = true;
                g->vmm_rss = mem.rss;
                g->vmm_pss = mem.pss;
                g->vmm_processes = mem.processes;
        }
}

static void gather_snapshots(struct api_server *srv, struct api_gauges *g)
{
        _cleanup_free_ struct vmsnap_snapshot *list = NULL;
        size_t n = 0;
        int r = vmsnap_store_list(store_take(srv), 0, &list, &n, NULL);
        store_release(srv);
        if (r < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                unsigned k = list[i].kind == VMSNAP_SNAPSHOT_TEMPLATE ? 1 : 0;
                g->snapshots[k]++;
                g->snapshot_bytes[k] += list[i].size_bytes;
        }
        g->have_snapshots = true;
}

static void h_metrics(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        (void)call;
        struct api_gauges g = {0};
        gather_sandboxes(srv, &g);
        gather_snapshots(srv, &g);
        g.in_flight = api_server_in_flight(srv);
        g.uptime_seconds = api_elapsed(&srv->started);
        vmsnap_host_pause_stats(srv->host, &g.pause);
        g.have_pause = true;
        struct api_gate_stats gs;
        if ((g.have_gate = api_server_gate_stats(srv, &gs))) {
                g.gate_refused = gs.refused;
                g.gate_expired = gs.expired;
                g.gate_untrusted = gs.untrusted;
        }
        rep->text = api_metrics_render(&srv->metrics, &g, &rep->text_len);
        if (!rep->text) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_INTERNAL), "out of memory");
                return;
        }
        rep->status = 200;
        rep->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- cluster mode (api/cluster.h) --------------------------------------------------------- */

/* The cluster member, NULL in single-host mode; -EAGAIN (503) while a --cluster daemon has
 * not joined yet (its listeners open before it registers). */
static int cluster_of(struct api_server *srv, struct api_cluster **ret, struct vmsnap_diag *d)
{
        *ret = __atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE);
        if (srv->cluster_mode && !*ret)
                return vmsnap_diag(d, -EAGAIN, "this host is still joining the cluster; retry");
        return 0;
}

/* After a create or spawn (r its result, sb the sandbox when r == 0): a placed sandbox's
 * row takes its state (or is dropped when nothing was made); one made without placement
 * enters the cluster's table. A failure is logged, not returned: the sandbox exists here,
 * and its next operation adopts it. */
static void publish_new(struct api_server *srv, const char *placed, int r,
                        const struct vmsnap_sandbox *sb)
{
        struct vmsnap_diag d = {0};
        struct api_cluster *c = __atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE);
        struct vmsnap_sandbox local;
        if (!c)
                return;
        if (r == 0 && sb->template_id[0]) /* placement prefers hosts that have it */
                api_cluster_template_here(c, sb->template_id);
        if (placed[0])
                api_cluster_created(c, placed, r == 0 ? sb
                                    : vmsnap_sandbox_get(srv->host, placed, &local, NULL) == 0
                                            ? &local : NULL);
        else if (r == 0 && api_cluster_publish(c, sb, &d) < 0)
                log_warn("cluster: sandbox %s made here but not yet recorded: %s", sb->id, d.msg);
}

/* ---- sandboxes ---------------------------------------------------------------------------- */

static void h_sandbox_create(struct api_server *srv, const struct api_call *call,
                             struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_sandbox_body b;
        int r = api_parse_sandbox_body(call->body, call->body_len, true, &b, &d);
        if (r < 0) {
                api_reply_body_error(rep, r, &d);
                return;
        }
        struct vmsnap_sandbox_spec spec = spec_of(&b);
        struct vmsnap_sandbox sb;
        struct timespec t0;
        struct api_cluster *cluster;
        char placed[64];
        if ((r = cluster_of(srv, &cluster, &d)) < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        if (api_place(srv, call, b.template_ref[0] ? b.template_ref : NULL, &b, placed, rep))
                return; /* another host's (cluster mode), or refused */
        spec.id = placed[0] ? placed : NULL;
        if (b.template_ref[0]) {
                r = spawn_from(srv, b.template_ref, &spec, &sb, rep);
                publish_new(srv, placed, r, &sb);
                if (r == 0)
                        reply_sandbox_net(srv, rep, 201, &sb);
                return;
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = vmsnap_sandbox_create(srv->host, &spec, &sb, &d);
        record_op(srv, API_OP_CREATE, &t0, r);
        publish_new(srv, placed, r, &sb);
        if (r < 0) {
                api_reply_errno_as(rep, API_SUBJECT_NEW, r, &d);
                return;
        }
        reply_sandbox_net(srv, rep, 201, &sb);
}

static void h_sandbox_list(struct api_server *srv, const struct api_call *call,
                           struct api_reply *rep)
{
        bool all;
        if (query_bool(call, "all", &all, rep) < 0 || api_cluster_list_reply(srv, all, rep))
                return; /* in cluster mode: the cluster's rows */
        struct vmsnap_diag d = {0};
        _cleanup_free_ struct vmsnap_sandbox *list = NULL;
        size_t n = 0;
        int r = vmsnap_sandbox_list(srv->host, all, &list, &n, &d);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
                json_t *o = api_sandbox_json(&list[i]);
                api_add_network(srv->host, list[i].id, o);
                if (json_array_append_new(a, o) < 0) {
                        json_decref(a);
                        a = NULL;
                }
        }
        api_reply_json(rep, 200, a ? json_pack("{s:o}", "sandboxes", a) : NULL);
}

static void h_sandbox_get(struct api_server *srv, const struct api_call *call,
                          struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_sandbox sb;
        int r = vmsnap_sandbox_get(srv->host, call->ref, &sb, &d);
        if (r == -ENOENT && api_forward(srv, call, "GET", NULL, rep))
                return; /* another host's (cluster mode) */
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        reply_sandbox_net(srv, rep, 200, &sb);
}

static void h_sandbox_destroy(struct api_server *srv, const struct api_call *call,
                              struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        bool keep_name;
        if (query_bool(call, "keep_name", &keep_name, rep) < 0)
                return;
        struct vmsnap_sandbox sb;
        struct api_cluster *cluster;
        struct api_cluster_op op = {0};
        int r = cluster_of(srv, &cluster, &d);
        if (r == 0) /* the id: the ref may be the name it frees */
                r = vmsnap_sandbox_get(srv->host, call->ref, &sb, &d);
        if (r == -ENOENT &&
            api_forward(srv, call, "DELETE", keep_name ? "keep_name=true" : NULL, rep))
                return; /* another host's (cluster mode) */
        if (r == 0)
                r = api_cluster_op_begin(cluster, &sb, "destroy", "stopping", &op, &d);
        if (r == 0) {
                r = vmsnap_sandbox_destroy(srv->host, sb.id, &d);
                api_cluster_op_end(&op, srv->host, r == 0);
        }
        if (r == 0 && !keep_name)
                r = vmsnap_sandbox_release_name(srv->host, sb.id, &d);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        api_reply_json(rep, 204, NULL);
}

/* In cluster mode with a remote store: the pause snapshot goes there before the pause is
 * published, so that another host can resume the sandbox if this one is lost. A failed
 * push is logged; the pause stands (the sandbox then resumes only here). */
static void push_pause(struct api_server *srv, const struct vmsnap_sandbox *sb,
                       struct api_cluster_op *cop)
{
        struct vmsnap_diag d = {0};
        cop->pause = true;
        cop->pushed[0] = '\0';
        if (!srv->have_remote || !sb->snapshot_id[0])
                return;
        if (api_push_pause(srv, sb->snapshot_id, &d) < 0)
                log_warn("cluster: sandbox %s paused, but its snapshot %s is not in the remote "
                         "store (%s): it can resume only on this host", sb->id, sb->snapshot_id,
                         d.msg);
        else
                snprintf(cop->pushed, sizeof(cop->pushed), "%s", sb->snapshot_id);
}

/* pause and resume: no body (or {}), the sandbox back, the duration in the histogram. */
static void pause_or_resume(struct api_server *srv, const struct api_call *call,
                            struct api_reply *rep, enum api_op op)
{
        struct vmsnap_diag d = {0};
        int r = api_parse_empty_body(call->body, call->body_len, &d);
        if (r < 0) {
                api_reply_body_error(rep, r, &d);
                return;
        }
        struct vmsnap_sandbox sb;
        struct timespec t0;
        struct api_cluster *cluster;
        struct api_cluster_op cop = {0};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = cluster_of(srv, &cluster, &d);
        if (r == 0 && cluster) { /* the cluster's lease first (docs/cluster.md §6) */
                r = vmsnap_sandbox_get(srv->host, call->ref, &sb, &d);
                if (r == -ENOENT && op == API_OP_RESUME && api_takeover(srv, call, rep))
                        return; /* a lost host's, resumed here (or refused) */
                if (r == -ENOENT && api_forward(srv, call, "POST", NULL, rep))
                        return; /* another host's */
                if (r == 0)
                        r = api_cluster_op_begin(cluster, &sb, op == API_OP_PAUSE ? "pause" : "resume",
                                                 op == API_OP_PAUSE ? "pausing" : "resuming", &cop, &d);
        }
        if (r == 0) {
                const char *ref = cluster ? sb.id : call->ref;
                r = op == API_OP_PAUSE ? vmsnap_sandbox_pause(srv->host, ref, &sb, &d)
                                       : vmsnap_sandbox_resume(srv->host, ref, &sb, &d);
                if (r == 0 && op == API_OP_PAUSE && cluster)
                        push_pause(srv, &sb, &cop);
                api_cluster_op_end(&cop, srv->host, false);
        }
        record_op(srv, op, &t0, r);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        reply_sandbox(rep, 200, &sb);
}

static void h_sandbox_pause(struct api_server *srv, const struct api_call *call,
                            struct api_reply *rep)
{
        pause_or_resume(srv, call, rep, API_OP_PAUSE);
}

static void h_sandbox_resume(struct api_server *srv, const struct api_call *call,
                             struct api_reply *rep)
{
        pause_or_resume(srv, call, rep, API_OP_RESUME);
}

static void h_sandbox_exec(struct api_server *srv, const struct api_call *call,
                           struct api_reply *rep)
{
        api_exec_handle(srv, call, rep); /* api/exec-routes.c */
}

static void h_sandbox_ports(struct api_server *srv, const struct api_call *call,
                            struct api_reply *rep)
{
        api_ports_handle(srv->host, call->ref, call->body, call->body_len, rep);
}

static void h_sandbox_snapshot(struct api_server *srv, const struct api_call *call,
                               struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_snapshot_body b;
        int r = api_parse_snapshot_body(call->body, call->body_len, &b, &d);
        if (r < 0) {
                api_reply_body_error(rep, r, &d);
                return;
        }
        struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
        if (!snap) {
                api_reply_errno(rep, -ENOMEM, NULL);
                return;
        }
        r = vmsnap_sandbox_snapshot(srv->host, call->ref, b.name, snap, &d);
        if (r < 0)
                api_reply_errno(rep, r, &d);
        else
                reply_snapshot(rep, 201, snap);
        free(snap);
}

/* ---- snapshots ---------------------------------------------------------------------------- */

/* Opens the import source, which must be a regular file or a directory on the daemon's
 * host: opened O_NONBLOCK and checked on the open descriptor, so a FIFO or a device swapped
 * in after a check can neither hang the daemon nor be read. Returns the fd with *st, or
 * -EINVAL naming the 'path' field. */
static int open_import_path(const char *path, struct stat *st, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0 || fstat(fd, st) < 0)
                return vmsnap_diag(d, -EINVAL, "field 'path': %s: %s", path, strerror(errno));
        if (!S_ISDIR(st->st_mode) && !S_ISREG(st->st_mode))
                return vmsnap_diag(d, -EINVAL, "field 'path': %s is not a file or a directory",
                                   path);
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return vmsnap_diag(d, -EINVAL, "field 'path': %s: %s", path, strerror(errno));
        return TAKE_FD(fd);
}

/* Imports an export (tar file or directory) from the daemon's host. A long import uses a
 * store connection of its own (SQLite and the store's locks coordinate it with the host's),
 * so that it does not hold the host's store lock, and every lifecycle step, for minutes. */
static int import_path(struct api_server *srv, const struct api_snapshot_create_body *b,
                       int fd, const struct stat *st, struct vmsnap_snapshot *ret,
                       struct vmsnap_diag *d)
{
        struct vmsnap_store *s;
        int r = vmsnap_store_open(srv->root, &s, d);
        if (r < 0)
                return r;
        struct vmsnap_import_opts o = {
                .name = b->name[0] ? b->name : NULL,
                .description = b->description[0] ? b->description : NULL,
        };
        if (S_ISDIR(st->st_mode))
                r = vmsnap_store_import_dir(s, b->path, &o, ret, d);
        else
                r = vmsnap_store_import_fd(s, fd, &o, ret, d);
        vmsnap_store_close(s);
        return r;
}

/* Makes a template from a sandbox ({sandbox, name}) or imports an export ({path, ...}). */
static int snapshot_create(struct api_server *srv, const struct api_snapshot_create_body *b,
                           struct vmsnap_snapshot *ret, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct stat st;
        _cleanup_close_ int fd = -1;
        int r;
        if (b->sandbox[0]) {
                r = vmsnap_sandbox_snapshot(srv->host, b->sandbox, b->name, ret, &d);
        } else if ((r = fd = open_import_path(b->path, &st, &d)) < 0) {
                api_reply_body_error(rep, r, &d);
                return r;
        } else if ((r = import_path(srv, b, fd, &st, ret, &d)) < 0) {
                api_reply_errno_as(rep, API_SUBJECT_IMPORT, r, &d);
                return r;
        }
        if (r < 0)
                api_reply_errno(rep, r, &d);
        return r;
}

static void h_snapshot_create(struct api_server *srv, const struct api_call *call,
                              struct api_reply *rep)
{
        if (call->upload) { /* an archive as the body (api/transfer.c) */
                api_import_upload_finish(srv, call, rep);
                return;
        }
        struct vmsnap_diag d = {0};
        struct api_snapshot_create_body *b = malloc(sizeof(*b));
        struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
        int r = b && snap ? api_parse_snapshot_create_body(call->body, call->body_len, b, &d)
                          : -ENOMEM;
        if (r < 0)
                api_reply_body_error(rep, r, &d);
        else if (snapshot_create(srv, b, snap, rep) == 0)
                reply_snapshot(rep, 201, snap);
        free(b);
        free(snap);
}

/* "kind" query: NULL/absent → *any = true. Returns 0 or -EINVAL with the reply set. */
static int query_kind(const struct api_call *call, bool *any, enum vmsnap_snapshot_kind *kind,
                      struct api_reply *rep)
{
        const char *v = query(call, "kind");
        *any = !v;
        if (!v || vmsnap_snapshot_kind_parse(v, kind) == 0)
                return 0;
        api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                        "query parameter 'kind' must be pause or template");
        return -EINVAL;
}

/* Measures snap's usage (null when its directory cannot be read: a pending or deleting row,
 * or one deleted meanwhile) into j. */
static int add_usage(struct api_server *srv, const struct vmsnap_snapshot *snap, json_t *j)
{
        struct vmsnap_snapshot_usage u;
        int r = snap->state == VMSNAP_SNAPSHOT_READY
                        ? vmsnap_store_usage(store_take(srv), snap, &u, NULL)
                        : -ENOENT;
        if (snap->state == VMSNAP_SNAPSHOT_READY)
                store_release(srv);
        return api_snapshot_add_usage(j, r == 0 ? &u : NULL);
}

static void h_snapshot_list(struct api_server *srv, const struct api_call *call,
                            struct api_reply *rep)
{
        bool all, any, usage;
        enum vmsnap_snapshot_kind kind;
        if (query_bool(call, "all", &all, rep) < 0 || query_kind(call, &any, &kind, rep) < 0 ||
            query_bool(call, "usage", &usage, rep) < 0)
                return;
        struct vmsnap_diag d = {0};
        _cleanup_free_ struct vmsnap_snapshot *list = NULL;
        size_t n = 0;
        int r = vmsnap_store_list(store_take(srv), all ? VMSNAP_LIST_ALL : 0, &list, &n, &d);
        store_release(srv);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
                if (!any && list[i].kind != kind)
                        continue;
                json_t *j = api_snapshot_json(&list[i]);
                if (j && usage && add_usage(srv, &list[i], j) < 0) {
                        json_decref(j);
                        j = NULL;
                }
                if (json_array_append_new(a, j) < 0) {
                        json_decref(a);
                        a = NULL;
                }
        }
        api_reply_json(rep, 200, a ? json_pack("{s:o}", "snapshots", a) : NULL);
}

/* Resolves ref and reads its files and dependents, all under the store lock. */
static int snapshot_details(struct api_server *srv, const char *ref, json_t **ret,
                            struct vmsnap_diag *d)
{
        struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
        _cleanup_free_ struct vmsnap_snapshot_file *files = NULL;
        _cleanup_free_ struct vmsnap_dependent *deps = NULL;
        size_t n_files = 0, n_deps = 0;
        if (!snap)
                return -ENOMEM;
        struct vmsnap_store *s = store_take(srv);
        int r = vmsnap_store_resolve(s, ref, snap, d);
        if (r == 0)
                r = vmsnap_store_files(s, snap->id, &files, &n_files, d);
        if (r == 0)
                r = vmsnap_store_dependents(s, snap->id, &deps, &n_deps, d);
        struct vmsnap_snapshot_usage u;
        bool have_u = r == 0 && vmsnap_store_usage(s, snap, &u, NULL) == 0;
        store_release(srv);
        json_t *j = r == 0 ? api_snapshot_json(snap) : NULL;
        free(snap);
        if (r < 0)
                return r;
        if (!j || api_snapshot_add_details(j, files, n_files, deps, n_deps) < 0 ||
            api_snapshot_add_usage(j, have_u ? &u : NULL) < 0) {
                json_decref(j);
                return -ENOMEM;
        }
        *ret = j;
        return 0;
}

static void h_snapshot_get(struct api_server *srv, const struct api_call *call,
                           struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        json_t *j;
        int r = snapshot_details(srv, call->ref, &j, &d);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        api_reply_json(rep, 200, j);
}

static void h_snapshot_delete(struct api_server *srv, const struct api_call *call,
                              struct api_reply *rep)
{
        bool force;
        if (query_bool(call, "force", &force, rep) < 0)
                return;
        struct vmsnap_diag d = {0};
        struct vmsnap_snapshot *snap = malloc(sizeof(*snap));
        if (!snap) {
                api_reply_errno(rep, -ENOMEM, NULL);
                return;
        }
        struct vmsnap_store *s = store_take(srv);
        int r = vmsnap_store_resolve(s, call->ref, snap, &d);
        if (r == 0)
                r = vmsnap_store_delete(s, snap->id, force ? VMSNAP_DELETE_FORCE : 0, &d);
        store_release(srv);
        free(snap);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        api_reply_json(rep, 204, NULL);
}

static void h_snapshot_spawn(struct api_server *srv, const struct api_call *call,
                             struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_sandbox_body b;
        int r = api_parse_sandbox_body(call->body, call->body_len, false, &b, &d);
        if (r < 0) {
                api_reply_body_error(rep, r, &d);
                return;
        }
        struct vmsnap_sandbox_spec spec = spec_of(&b);
        struct vmsnap_sandbox sb;
        struct api_cluster *cluster;
        char placed[64];
        if ((r = cluster_of(srv, &cluster, &d)) < 0) {
                api_reply_errno(rep, r, &d);
                return;
        }
        if (api_place(srv, call, call->ref, &b, placed, rep))
                return; /* another host's (cluster mode), or refused */
        spec.id = placed[0] ? placed : NULL;
        r = spawn_from(srv, call->ref, &spec, &sb, rep);
        publish_new(srv, placed, r, &sb);
        if (r == 0)
                reply_sandbox_net(srv, rep, 201, &sb);
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static handler_fn *const handlers[API_ROUTE_COUNT] = {
        [API_ROUTE_HEALTHZ] = h_healthz,
        [API_ROUTE_METRICS] = h_metrics,
        [API_ROUTE_SANDBOX_CREATE] = h_sandbox_create,
        [API_ROUTE_SANDBOX_LIST] = h_sandbox_list,
        [API_ROUTE_SANDBOX_GET] = h_sandbox_get,
        [API_ROUTE_SANDBOX_DESTROY] = h_sandbox_destroy,
        [API_ROUTE_SANDBOX_PAUSE] = h_sandbox_pause,
        [API_ROUTE_SANDBOX_RESUME] = h_sandbox_resume,
        [API_ROUTE_SANDBOX_EXEC] = h_sandbox_exec,
        [API_ROUTE_SANDBOX_SNAPSHOT] = h_sandbox_snapshot,
        [API_ROUTE_SANDBOX_PORTS] = h_sandbox_ports,
        [API_ROUTE_SNAPSHOT_CREATE] = h_snapshot_create,
        [API_ROUTE_SNAPSHOT_LIST] = h_snapshot_list,
        [API_ROUTE_SNAPSHOT_GET] = h_snapshot_get,
        [API_ROUTE_SNAPSHOT_DELETE] = h_snapshot_delete,
        [API_ROUTE_SNAPSHOT_SPAWN] = h_snapshot_spawn,
        [API_ROUTE_SNAPSHOT_EXPORT] = api_snapshot_export, /* api/transfer.c */
        [API_ROUTE_PROCESS_LIST] = api_process_list,  /* api/exec-routes.c */
        [API_ROUTE_PROCESS_KILL] = api_process_kill,
        [API_ROUTE_FILE_READ] = api_file_read,        /* api/files.c */
        [API_ROUTE_FILE_WRITE] = api_file_write,
        [API_ROUTE_FILE_REMOVE] = api_file_remove,
        [API_ROUTE_FILE_STAT] = api_file_stat,
        [API_ROUTE_FILE_LIST] = api_file_list,
        [API_ROUTE_ARCHIVE_GET] = api_archive_get,
        [API_ROUTE_ARCHIVE_PUT] = api_archive_put,
        [API_ROUTE_REMOTE_LIST] = api_remote_list, /* api/remote-routes.c */
        [API_ROUTE_REMOTE_PUSH] = api_remote_push,
        [API_ROUTE_REMOTE_DELETE] = api_remote_delete,
        [API_ROUTE_REMOTE_PULL] = api_remote_pull,
        [API_ROUTE_REMOTE_GC] = api_remote_gc,
};

/* Cluster mode: the routes about a sandbox whose answers are JSON (or none) and whose
 * request is JSON or empty, forwarded to the owner when this host does not have the
 * sandbox; a file's bytes and archives relayed as streams (api/forward-stream.h). Uploads
 * were opened to the owner at their headers (docs/cluster.md "Forwarding"). */
static bool forward_elsewhere(struct api_server *srv, const struct api_call *call,
                              struct api_reply *rep)
{
        struct vmsnap_sandbox sb;
        switch (call->route) {
        case API_ROUTE_PROCESS_LIST:
        case API_ROUTE_PROCESS_KILL:
        case API_ROUTE_FILE_STAT:
        case API_ROUTE_FILE_LIST:
        case API_ROUTE_FILE_REMOVE:
        case API_ROUTE_SANDBOX_PORTS:
                break;
        case API_ROUTE_FILE_READ: /* streamed answers, relayed as they come */
        case API_ROUTE_ARCHIVE_GET:
                return api_forward_stream(srv, call, rep);
        default:
                return false;
        }
        if (!__atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE) ||
            vmsnap_sandbox_get(srv->host, call->ref, &sb, NULL) != -ENOENT)
                return false;
        return api_forward(srv, call, api_route_info(call->route)->method, call->raw_query, rep);
}

void api_handle(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        if ((unsigned)call->route >= API_ROUTE_COUNT || !handlers[call->route]) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_NO_ROUTE), "no such route");
                return;
        }
        if (call->upload && call->upload->forward) {
                api_forward_upload_finish(call->upload, rep); /* the owner's answer */
                return;
        }
        if (forward_elsewhere(srv, call, rep))
                return; /* another host's sandbox (cluster mode) */
        handlers[call->route](srv, call, rep);
}
