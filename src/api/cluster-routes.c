/* The cluster-mode parts of the sandbox routes (docs/cluster.md §1, §4, §6.5): placement of
 * create/spawn through any host, the cluster-wide list, and the resume of a paused sandbox
 * whose host is lost. */
#include "api/cluster-routes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmsnap/cluster.h>
#include <vmsnap/remote.h>

#include "api/cluster.h"
#include "api/forward.h"
#include "api/model.h"
#include "api/json.h"
#include "api/net-routes.h"
#include "api/remote-routes.h"
#include "util/cleanup.h"
#include "util/ids.h"
#include "util/log.h"

static const char *query(const struct api_call *call, const char *key)
{
        return call->query ? call->query(call->query_ctx, key) : NULL;
}

static bool forwarded(const struct api_call *call)
{
        return call->header && call->header(call->query_ctx, API_FORWARDED_HEADER);
}

/* ---- placement ---------------------------------------------------------------------------- */

/* What placement needs to know of ref when this host has it: its id, kind and machine. */
static int local_snapshot(struct api_server *srv, const char *ref, struct vmsnap_snapshot *ret)
{
        vmsnap_host_store_lock(srv->host);
        int r = vmsnap_store_resolve(vmsnap_host_store(srv->host), ref, ret, NULL);
        vmsnap_host_store_unlock(srv->host);
        return r;
}

/* The request placement weighs: a local snapshot's machine, else the body's (or the
 * defaults); the template id for locality (a ref that is a UUID counts as one). */
static void request_of(struct api_server *srv, struct api_cluster *c, const char *ref,
                       const struct api_sandbox_body *b, char tid[VMSNAP_ID_LEN + 1],
                       uint32_t *vcpus, uint64_t *memory_mib)
{
        struct vmsnap_uuid u;
        *vcpus = b->vcpus;
        *memory_mib = b->memory >> 20;
        tid[0] = '\0';
        if (!ref || !*ref)
                return;
        struct vmsnap_snapshot *s = malloc(sizeof(*s));
        if (s && local_snapshot(srv, ref, s) == 0) {
                *vcpus = s->vcpus;
                *memory_mib = s->memory >> 20;
                if (s->kind == VMSNAP_SNAPSHOT_TEMPLATE) {
                        snprintf(tid, VMSNAP_ID_LEN + 1, "%s", s->id);
                        api_cluster_template_here(c, tid);
                }
        } else if (vmsnap_uuid_parse(ref, &u) == 0) {
                snprintf(tid, VMSNAP_ID_LEN + 1, "%s", ref);
        }
        free(s);
}

/* A forwarded create: the id placement reserved here (?placed=ID), checked against the
 * cluster's row. Returns true with the reply set when it is refused. */
static bool take_placed(struct api_cluster *c, const struct api_call *call, char placed[64],
                        struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        const char *id = query(call, "placed");
        if (!id)
                return false; /* no placement (an older host): local, published after */
        int r = api_cluster_placed_here(c, id, &d);
        if (r < 0)
                api_reply_errno(rep, r, &d);
        else if (r == 0)
                api_reply_error(rep, api_error_from_errno(-EBUSY, API_SUBJECT_REF),
                                "sandbox %s was not placed on host %s", id, api_cluster_self(c));
        else
                snprintf(placed, 64, "%s", id);
        return r <= 0;
}

bool api_place(struct api_server *srv, const struct api_call *call, const char *ref,
               const struct api_sandbox_body *b, char placed[64], struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_cluster *c = __atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE);
        placed[0] = '\0';
        if (!c && query(call, "host")) { /* a pin means nothing here: say so */
                api_reply_error(rep, api_error_problem(API_PROBLEM_INVALID_QUERY),
                                "query parameter 'host' needs a cluster host (vmsnapd --cluster)");
                return true;
        }
        if (!c)
                return false;
        if (forwarded(call))
                return take_placed(c, call, placed, rep);
        const char *pin = query(call, "host");
        char tid[VMSNAP_ID_LEN + 1], id[64], host[64], endpoint[256], q[80];
        uint32_t vcpus;
        uint64_t memory_mib;
        request_of(srv, c, ref, b, tid, &vcpus, &memory_mib);
        int r = api_cluster_place(c, tid, vcpus, memory_mib, pin && *pin ? pin : NULL, id, host,
                                  endpoint, &d);
        if (r == -ENOSPC) {
                api_reply_error(rep, api_error_problem(API_PROBLEM_NO_CAPACITY), "%s", d.msg);
                return true;
        }
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return true;
        }
        if (strcmp(host, api_cluster_self(c)) == 0) {
                snprintf(placed, 64, "%s", id);
                return false;
        }
        if (!srv->forward) {
                api_cluster_unplace(c, id, host);
                api_reply_error(rep, api_error_from_errno(-EBUSY, API_SUBJECT_REF),
                                "placement chose host %s (%s); this host forwards only with "
                                "--cluster-token", host, endpoint);
                return true;
        }
        snprintf(q, sizeof(q), "placed=%s", id);
        if (api_forward_to(srv, call, "POST", q, host, endpoint, rep) == 0)
                api_cluster_unplace(c, id, host); /* it never got there */
        return true;
}

/* ---- the cluster's list ------------------------------------------------------------------- */

/* A row of another host (or one this host no longer has): what the cluster knows. */
static json_t *row_json(const struct vmsnap_cluster_sandbox *s)
{
        return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:o}", "id", s->id, "host", s->host_id,
                         "state", s->state, "vcpus", (json_int_t)s->vcpus, "memory_mib",
                         (json_int_t)s->memory_mib, "template_id",
                         api_json_string_or_null(s->template_id[0] ? s->template_id : NULL),
                         "snapshot_id",
                         api_json_string_or_null(s->pause_snapshot[0] ? s->pause_snapshot : NULL));
}

/* This host's own row: the local sandbox in full, with its host. */
static json_t *own_json(struct api_server *srv, const struct vmsnap_cluster_sandbox *s)
{
        struct vmsnap_sandbox sb;
        if (vmsnap_sandbox_get(srv->host, s->id, &sb, NULL) < 0)
                return row_json(s);
        json_t *o = api_sandbox_json(&sb);
        api_add_network(srv->host, sb.id, o);
        if (o && json_object_set_new(o, "host", json_string(s->host_id)) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

bool api_cluster_list_reply(struct api_server *srv, bool all, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_cluster *c = __atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE);
        if (!c)
                return false;
        _cleanup_free_ struct vmsnap_cluster_sandbox *rows = NULL;
        size_t n = 0;
        int r = api_cluster_list(c, all, &rows, &n, &d);
        if (r < 0) {
                api_reply_errno(rep, r, &d);
                return true;
        }
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++) {
                bool mine = strcmp(rows[i].host_id, api_cluster_self(c)) == 0;
                if (json_array_append_new(a, mine ? own_json(srv, &rows[i]) : row_json(&rows[i])) < 0) {
                        json_decref(a);
                        a = NULL;
                }
        }
        api_reply_json(rep, 200, a ? json_pack("{s:o}", "sandboxes", a) : NULL);
        return true;
}

/* ---- failover: resume of a lost host's paused sandbox (§6.5) ------------------------------ */

int api_push_pause(struct api_server *srv, const char *snapshot_id, struct vmsnap_diag *d)
{
        struct vmsnap_remote *r = NULL;
        struct vmsnap_store *s = NULL;
        int x = vmsnap_remote_open(&srv->remote, &r, d);
        if (x == 0)
                x = vmsnap_store_open(srv->root, &s, d);
        if (x == 0)
                x = vmsnap_remote_push(r, s, snapshot_id, NULL, d);
        vmsnap_store_close(s);
        vmsnap_remote_close(r);
        return x;
}

/* Pulls the pause snapshot if needed, makes the paused sandbox here under its own id and
 * resumes it. */
static int adopt_here(struct api_server *srv, const struct vmsnap_cluster_sandbox *row,
                      struct vmsnap_sandbox *sb, struct vmsnap_diag *d)
{
        char sid[VMSNAP_ID_LEN + 1];
        enum vmsnap_snapshot_kind kind;
        bool remote;
        int r = api_remote_ensure_local(srv, row->pause_snapshot, sid, &kind, &remote, d);
        if (r == 0 && kind != VMSNAP_SNAPSHOT_PAUSE)
                r = vmsnap_diag(d, -EINVAL, "snapshot %s is not a pause snapshot", sid);
        struct vmsnap_sandbox_spec spec = { .id = row->id };
        if (r == 0)
                r = vmsnap_sandbox_adopt(srv->host, sid, &spec, sb, d);
        return r;
}

/* Under the takeover's lease, on the host the client asked: the host placement chooses for
 * the sandbox. Returns true with rep filled (and the lease given back) when it is not this
 * one: the request goes on to that host, which takes the lease itself; or 507. */
static bool replace_elsewhere(struct api_server *srv, struct api_cluster *c,
                              const struct api_call *call, const struct vmsnap_cluster_sandbox *row,
                              struct api_cluster_op *op, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        char host[64], endpoint[256];
        int r = api_cluster_choose(c, row->template_id, row->vcpus, row->memory_mib, host,
                                   endpoint, &d);
        if (r == 0 && (strcmp(host, api_cluster_self(c)) == 0 || !srv->forward))
                return false;
        api_cluster_op_abandon(op);
        if (r == -ENOSPC)
                api_reply_error(rep, api_error_problem(API_PROBLEM_NO_CAPACITY),
                                "sandbox %s (its host %s is lost): %s", row->id, row->host_id,
                                d.msg);
        else if (r < 0)
                api_reply_errno(rep, r, &d);
        else
                api_forward_to(srv, call, "POST", NULL, host, endpoint, rep);
        return true;
}

bool api_takeover(struct api_server *srv, const struct api_call *call, struct api_reply *rep)
{
        struct vmsnap_diag d = {0};
        struct api_cluster *c = __atomic_load_n(&srv->cluster, __ATOMIC_ACQUIRE);
        if (!c || !srv->have_remote)
                return false;
        struct vmsnap_cluster_sandbox row;
        struct api_cluster_op op;
        int r = api_cluster_takeover(c, call->ref, &row, &op, &d);
        if (r == -ENOENT || (r == -EBUSY && strstr(d.msg, "which is alive")))
                return false; /* not ours to move: forwarding or the local 404 answers */
        if (r == 0 && !forwarded(call) && replace_elsewhere(srv, c, call, &row, &op, rep))
                return true;
        struct vmsnap_sandbox sb;
        if (r == 0 && (r = adopt_here(srv, &row, &sb, &d)) < 0)
                api_cluster_op_abandon(&op); /* the row stays with the lost host */
        if (r == 0) {
                log_info("cluster: sandbox %s of lost host %s resumes here from snapshot %s",
                         row.id, row.host_id, row.pause_snapshot);
                r = vmsnap_sandbox_resume(srv->host, row.id, &sb, &d);
                api_cluster_op_end(&op, srv->host, false); /* owner := this host */
        }
        if (r < 0)
                api_reply_errno(rep, r, &d);
        else
                api_reply_json(rep, 200, api_sandbox_json(&sb));
        return true;
}
