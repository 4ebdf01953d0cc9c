/* Sandboxes in the cluster: placing a new one, reading one, and the per-sandbox lease with
 * its fencing token that serializes operations across hosts (docs/cluster.md §4, §5). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/internal.h"
#include "util/cleanup.h"

/* How many times a create re-places after losing a race for a host's last room. */
#define PLACE_ATTEMPTS 8

static const char *const states[] = { "creating", "running", "pausing", "paused", "resuming",
                                      "stopping", "stopped", "error", "lost" };

static bool known_state(const char *s)
{
        for (size_t i = 0; s && i < ARRAY_SIZE(states); i++)
                if (strcmp(s, states[i]) == 0)
                        return true;
        return false;
}

/* Inside an open transaction: locks host_id's row, re-checks that r fits in what it has
 * free now, and inserts the sandbox row. -EAGAIN when the host is gone or full now. */
static int insert_on(struct vmsnap_cluster *c, const char *id, const char *template_id,
                     const struct vmsnap_cluster_request *r, const char *host_id,
                     struct vmsnap_diag *d)
{
        PGresult *res = NULL;
        const char *lock_params[] = { host_id };
        int err = cluster_query(c, "lock host",
                                "SELECT 1 FROM hosts WHERE id = $1 AND state = 'alive' FOR NO KEY UPDATE",
                                1, lock_params, &res, d);
        if (err < 0)
                return err;
        bool alive = PQntuples(res) == 1;
        PQclear(res);
        if (!alive)
                return -EAGAIN;

        _cleanup_free_ struct vmsnap_cluster_host *now = NULL;
        size_t n = 0, index;
        err = cluster_hosts_query(c, template_id, host_id, &now, &n, d);
        if (err < 0)
                return err;
        struct vmsnap_cluster_request pinned = *r;
        pinned.pin_host = host_id;
        if (vmsnap_cluster_place(now, n, &pinned, &index, NULL) < 0)
                return -EAGAIN;

        char vcpus[16], mem[32], disk[32];
        snprintf(vcpus, sizeof(vcpus), "%" PRIu32, r->vcpus);
        snprintf(mem, sizeof(mem), "%" PRIu64, r->memory_mib);
        snprintf(disk, sizeof(disk), "%" PRIu64, r->disk_mib);
        const char *params[] = { id, host_id, template_id, vcpus, mem, disk };
        return cluster_query(c, "insert sandbox",
                             "INSERT INTO sandboxes (id, host_id, state, template_id, vcpus,"
                             " memory_mib, disk_mib) VALUES ($1, $2, 'creating', $3,"
                             " $4::integer, $5::bigint, $6::bigint)",
                             6, params, NULL, d);
}

/* One attempt: place on a fresh read of the hosts, then commit on the chosen one. */
static int create_once(struct vmsnap_cluster *c, const char *id, const char *template_id,
                       const struct vmsnap_cluster_request *r, char ret_host_id[VMSNAP_CLUSTER_ID_MAX],
                       struct vmsnap_diag *d)
{
        _cleanup_free_ struct vmsnap_cluster_host *hosts = NULL;
        size_t n = 0, index;
        int err = cluster_hosts_query(c, template_id, NULL, &hosts, &n, d);
        if (err < 0)
                return err;
        err = vmsnap_cluster_place(hosts, n, r, &index, d);
        if (err < 0)
                return err;
        err = cluster_begin(c, d);
        if (err < 0)
                return err;
        err = insert_on(c, id, template_id, r, hosts[index].id, d);
        if (err < 0) {
                cluster_rollback(c);
                return err;
        }
        if (cluster_test_hook)
                cluster_test_hook("create.commit");
        err = cluster_commit(c, "commit placement", d);
        if (err < 0)
                return err;
        snprintf(ret_host_id, VMSNAP_CLUSTER_ID_MAX, "%s", hosts[index].id);
        return 0;
}

int vmsnap_cluster_sandbox_create(struct vmsnap_cluster *c, const char *id,
                                  const char *template_id, const struct vmsnap_cluster_request *r,
                                  char ret_host_id[VMSNAP_CLUSTER_ID_MAX], struct vmsnap_diag *d)
{
        if (!c || !r || !ret_host_id)
                return vmsnap_diag(d, -EINVAL, "create sandbox: missing argument");
        int err = cluster_check_id("sandbox", id, d);
        if (err >= 0 && template_id)
                err = cluster_check_id("template", template_id, d);
        if (err < 0)
                return err;
        for (int attempt = 0; attempt < PLACE_ATTEMPTS; attempt++) {
                err = create_once(c, id, template_id, r, ret_host_id, d);
                if (err == -EEXIST)
                        return vmsnap_diag(d, -EEXIST, "sandbox %s already exists", id);
                if (err != -EAGAIN)
                        return err;
        }
        return vmsnap_diag(d, -EAGAIN, "sandbox %s: placement kept losing races for room; retry",
                           id);
}

#define SANDBOX_COLUMNS "id, host_id, state, template_id, vcpus, memory_mib, disk_mib," \
                        " lease_host, lease_token, pause_snapshot"

/* Row i of a SELECT SANDBOX_COLUMNS. */
static void sandbox_row(const PGresult *res, int i, struct vmsnap_cluster_sandbox *s)
{
        memset(s, 0, sizeof(*s));
        cluster_text(res, i, 0, s->id, sizeof(s->id));
        cluster_text(res, i, 1, s->host_id, sizeof(s->host_id));
        cluster_text(res, i, 2, s->state, sizeof(s->state));
        cluster_text(res, i, 3, s->template_id, sizeof(s->template_id));
        s->vcpus = (uint32_t)cluster_u64(res, i, 4);
        s->memory_mib = cluster_u64(res, i, 5);
        s->disk_mib = cluster_u64(res, i, 6);
        cluster_text(res, i, 7, s->lease_host, sizeof(s->lease_host));
        s->lease_token = cluster_i64(res, i, 8);
        cluster_text(res, i, 9, s->pause_snapshot, sizeof(s->pause_snapshot));
}

int vmsnap_cluster_sandbox_get(struct vmsnap_cluster *c, const char *id,
                               struct vmsnap_cluster_sandbox *ret, struct vmsnap_diag *d)
{
        PGresult *res = NULL;

        if (!c || !id || !ret)
                return vmsnap_diag(d, -EINVAL, "read sandbox: missing argument");
        const char *params[] = { id };
        int err = cluster_query(c, "read sandbox",
                                "SELECT " SANDBOX_COLUMNS " FROM sandboxes WHERE id = $1",
                                1, params, &res, d);
        if (err < 0)
                return err;
        if (PQntuples(res) != 1) {
                PQclear(res);
                return vmsnap_diag(d, -ENOENT, "sandbox %s: no such sandbox in the cluster", id);
        }
        sandbox_row(res, 0, ret);
        PQclear(res);
        return 0;
}

int vmsnap_cluster_sandbox_list(struct vmsnap_cluster *c, bool all,
                                struct vmsnap_cluster_sandbox **ret, size_t *ret_n,
                                struct vmsnap_diag *d)
{
        PGresult *res = NULL;

        if (!c || !ret || !ret_n)
                return vmsnap_diag(d, -EINVAL, "list sandboxes: missing argument");
        const char *params[] = { all ? "t" : "f" };
        int err = cluster_query(c, "list sandboxes",
                                "SELECT " SANDBOX_COLUMNS " FROM sandboxes"
                                " WHERE $1::boolean OR state <> 'stopped'"
                                " ORDER BY created_at, id",
                                1, params, &res, d);
        if (err < 0)
                return err;
        int n = PQntuples(res);
        struct vmsnap_cluster_sandbox *rows = calloc(n ? (size_t)n : 1, sizeof(*rows));
        if (!rows) {
                PQclear(res);
                return vmsnap_diag(d, -ENOMEM, "list sandboxes: out of memory");
        }
        for (int i = 0; i < n; i++)
                sandbox_row(res, i, &rows[i]);
        PQclear(res);
        *ret = rows;
        *ret_n = (size_t)n;
        return 0;
}

int vmsnap_cluster_sandbox_created(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                   const char *state, uint32_t vcpus, uint64_t memory_mib,
                                   struct vmsnap_diag *d)
{
        PGresult *res = NULL;
        char v[16], m[32];

        if (!c || !id || !host_id)
                return vmsnap_diag(d, -EINVAL, "created sandbox: missing argument");
        if (state && !known_state(state))
                return vmsnap_diag(d, -EINVAL, "sandbox %s: unknown state '%s'", id, state);
        if (vcpus > INT32_MAX || memory_mib > INT64_MAX)
                return vmsnap_diag(d, -EINVAL, "sandbox %s: bad size", id);
        snprintf(v, sizeof(v), "%" PRIu32, vcpus);
        snprintf(m, sizeof(m), "%" PRIu64, memory_mib);
        const char *params[] = { id, host_id, state, v, m };
        int err = state ? cluster_query(c, "created sandbox",
                                        "UPDATE sandboxes SET state = $3, updated_at = now(),"
                                        " vcpus = CASE WHEN $4::integer > 0 THEN $4::integer"
                                        "  ELSE vcpus END,"
                                        " memory_mib = CASE WHEN $5::bigint > 0 THEN $5::bigint"
                                        "  ELSE memory_mib END"
                                        " WHERE id = $1 AND host_id = $2 AND state = 'creating'"
                                        " AND lease_host IS NULL",
                                        5, params, &res, d)
                        : cluster_query(c, "drop placed sandbox",
                                        "DELETE FROM sandboxes WHERE id = $1 AND host_id = $2"
                                        " AND state = 'creating' AND lease_host IS NULL",
                                        2, params, &res, d);
        if (err < 0)
                return err;
        bool done = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        if (!done)
                return vmsnap_diag(d, -ESTALE, "sandbox %s: no placed row in 'creating' on host %s",
                                   id, host_id);
        return 0;
}

int vmsnap_cluster_sandbox_set_snapshot(struct vmsnap_cluster *c, const char *id,
                                        const char *host_id, int64_t token, const char *snapshot,
                                        struct vmsnap_diag *d)
{
        char t[32];
        PGresult *res = NULL;

        if (!c || !id || !host_id)
                return vmsnap_diag(d, -EINVAL, "sandbox snapshot: missing argument");
        if (snapshot && *snapshot) {
                int err = cluster_check_id("snapshot", snapshot, d);
                if (err < 0)
                        return err;
        }
        snprintf(t, sizeof(t), "%" PRId64, token);
        const char *params[] = { id, host_id, t, snapshot && *snapshot ? snapshot : NULL };
        int err = cluster_query(
                c, "record pause snapshot",
                "UPDATE sandboxes s SET pause_snapshot = $4, updated_at = now()"
                " WHERE s.id = $1 AND s.lease_host = $2 AND s.lease_token = $3::bigint"
                " AND EXISTS (SELECT 1 FROM hosts h WHERE h.id = $2 AND h.epoch = s.lease_epoch"
                "  AND h.state = 'alive')",
                4, params, &res, d);
        if (err < 0)
                return err;
        bool updated = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        if (!updated)
                return vmsnap_diag(d, -ESTALE, "sandbox %s: lease token %" PRId64 " of host %s is "
                                   "no longer valid", id, token, host_id);
        return 0;
}

/* After an acquire that matched no row: says why (-ENOENT, -ESTALE or -EBUSY). */
static int why_not_acquired(struct vmsnap_cluster *c, const char *id, const char *host_id,
                            int64_t epoch, struct vmsnap_diag *d)
{
        struct vmsnap_cluster_sandbox s;
        bool alive;
        int64_t current;
        int err = vmsnap_cluster_host_state(c, host_id, &alive, &current, d);
        if (err < 0)
                return err;
        if (!alive || current != epoch)
                return vmsnap_diag(d, -ESTALE, "host %s (epoch %" PRId64 ") is not alive in that "
                                   "epoch: it cannot take leases", host_id, epoch);
        err = vmsnap_cluster_sandbox_get(c, id, &s, d);
        if (err < 0)
                return err;
        return vmsnap_diag(d, -EBUSY, "sandbox %s is busy: another operation holds it (host %s)",
                           id, s.lease_host[0] ? s.lease_host : "?");
}

int vmsnap_cluster_lease_acquire(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                 int64_t epoch, const char *op, int64_t *ret_token,
                                 struct vmsnap_diag *d)
{
        char e[32];
        PGresult *res = NULL;

        if (!c || !id || !host_id || !op || !ret_token)
                return vmsnap_diag(d, -EINVAL, "lease: missing argument");
        snprintf(e, sizeof(e), "%" PRId64, epoch);
        const char *params[] = { id, host_id, e, op };
        int err = cluster_query(
                c, "acquire lease",
                "UPDATE sandboxes s SET lease_host = $2, lease_epoch = $3::bigint, lease_op = $4,"
                " lease_token = nextval('lease_tokens'), updated_at = now()"
                " WHERE s.id = $1"
                " AND (s.lease_host IS NULL OR NOT EXISTS (SELECT 1 FROM hosts h"
                "  WHERE h.id = s.lease_host AND h.epoch = s.lease_epoch AND h.state = 'alive'))"
                " AND EXISTS (SELECT 1 FROM hosts me"
                "  WHERE me.id = $2 AND me.epoch = $3::bigint AND me.state = 'alive')"
                " RETURNING lease_token",
                4, params, &res, d);
        if (err < 0)
                return err;
        bool won = PQntuples(res) == 1;
        int64_t token = won ? cluster_i64(res, 0, 0) : 0;
        PQclear(res);
        if (!won)
                return why_not_acquired(c, id, host_id, epoch, d);
        *ret_token = token;
        return 0;
}

/* Writes under the fencing token: the state (state non-NULL, owner := host_id) and/or the
 * release of the lease, in one statement. */
static int fenced_update(struct vmsnap_cluster *c, const char *id, const char *host_id,
                         int64_t token, const char *state, bool release, struct vmsnap_diag *d)
{
        char t[32];
        PGresult *res = NULL;

        if (!c || !id || !host_id)
                return vmsnap_diag(d, -EINVAL, "sandbox update: missing argument");
        if (state && !known_state(state))
                return vmsnap_diag(d, -EINVAL, "sandbox %s: unknown state '%s'", id, state);
        snprintf(t, sizeof(t), "%" PRId64, token);
        const char *params[] = { id, host_id, t, state ? state : "", release ? "t" : "f" };
        int err = cluster_query(
                c, "fenced sandbox update",
                "UPDATE sandboxes s SET"
                " state = CASE WHEN $4 = '' THEN s.state ELSE $4 END,"
                " host_id = CASE WHEN $4 = '' THEN s.host_id ELSE $2 END,"
                " lease_host = CASE WHEN $5::boolean THEN NULL ELSE s.lease_host END,"
                " lease_epoch = CASE WHEN $5::boolean THEN NULL ELSE s.lease_epoch END,"
                " lease_op = CASE WHEN $5::boolean THEN NULL ELSE s.lease_op END,"
                " updated_at = now()"
                " WHERE s.id = $1 AND s.lease_host = $2 AND s.lease_token = $3::bigint"
                " AND EXISTS (SELECT 1 FROM hosts h WHERE h.id = $2 AND h.epoch = s.lease_epoch"
                "  AND h.state = 'alive')",
                5, params, &res, d);
        if (err < 0)
                return err;
        bool updated = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        if (!updated)
                return vmsnap_diag(d, -ESTALE,
                                   "sandbox %s: lease token %" PRId64 " of host %s is no longer "
                                   "valid (taken over or the host was marked lost): abandon the "
                                   "operation",
                                   id, token, host_id);
        return 0;
}

int vmsnap_cluster_sandbox_set_state(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                     int64_t token, const char *state, struct vmsnap_diag *d)
{
        if (!state)
                return vmsnap_diag(d, -EINVAL, "sandbox update: no state");
        return fenced_update(c, id, host_id, token, state, false, d);
}

int vmsnap_cluster_sandbox_finish(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                  int64_t token, const char *state, struct vmsnap_diag *d)
{
        if (!state)
                return vmsnap_diag(d, -EINVAL, "sandbox update: no state");
        return fenced_update(c, id, host_id, token, state, true, d);
}

int vmsnap_cluster_lease_release(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                 int64_t token, struct vmsnap_diag *d)
{
        return fenced_update(c, id, host_id, token, NULL, true, d);
}

int vmsnap_cluster_sandbox_adopt(struct vmsnap_cluster *c, const char *id, const char *host_id,
                                 int64_t epoch, const char *state, const char *template_id,
                                 uint32_t vcpus, uint64_t memory_mib, struct vmsnap_diag *d)
{
        char e[32], v[16], m[32];
        PGresult *res = NULL;

        if (!c || !host_id || !state)
                return vmsnap_diag(d, -EINVAL, "adopt sandbox: missing argument");
        int err = cluster_check_id("sandbox", id, d);
        if (err < 0)
                return err;
        if (!known_state(state) || vcpus == 0 || vcpus > INT32_MAX || memory_mib == 0 ||
            memory_mib > INT64_MAX)
                return vmsnap_diag(d, -EINVAL, "sandbox %s: bad state or size to adopt", id);
        snprintf(e, sizeof(e), "%" PRId64, epoch);
        snprintf(v, sizeof(v), "%" PRIu32, vcpus);
        snprintf(m, sizeof(m), "%" PRIu64, memory_mib);
        const char *params[] = { id, host_id, e, state, template_id && *template_id ? template_id : NULL,
                                 v, m };
        err = cluster_query(c, "adopt sandbox",
                            "INSERT INTO sandboxes (id, host_id, state, template_id, vcpus,"
                            " memory_mib, disk_mib)"
                            " SELECT $1, $2, $4, $5, $6::integer, $7::bigint, 0 FROM hosts me"
                            " WHERE me.id = $2 AND me.epoch = $3::bigint AND me.state = 'alive'"
                            " ON CONFLICT (id) DO NOTHING",
                            7, params, &res, d);
        if (err < 0)
                return err;
        bool inserted = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        if (inserted)
                return 0;
        struct vmsnap_cluster_sandbox s;
        err = vmsnap_cluster_sandbox_get(c, id, &s, d);
        if (err == -ENOENT)
                return vmsnap_diag(d, -ESTALE, "host %s (epoch %" PRId64 ") is not alive in that "
                                   "epoch: it cannot adopt sandbox %s", host_id, epoch, id);
        if (err < 0)
                return err;
        return vmsnap_diag(d, -EEXIST, "sandbox %s is already in the cluster (host %s, %s)", id,
                           s.host_id, s.state);
}
