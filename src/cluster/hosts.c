/* Hosts of the cluster: registration with capacity, heartbeats, marking silent hosts lost
 * (docs/cluster.md §3). Every time is the server's now(). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/internal.h"

int vmsnap_cluster_host_register(struct vmsnap_cluster *c, const struct vmsnap_cluster_host_info *h,
                                 int64_t *ret_epoch, struct vmsnap_diag *d)
{
        char vcpus[16], mem[32], disk[32];
        PGresult *res = NULL;

        if (!c || !h || !ret_epoch)
                return vmsnap_diag(d, -EINVAL, "host register: missing argument");
        int r = cluster_check_id("host", h->id, d);
        if (r < 0)
                return r;
        if (h->vcpus == 0 || h->memory_mib == 0 || h->memory_mib > INT64_MAX ||
            h->disk_mib > INT64_MAX || h->vcpus > INT32_MAX)
                return vmsnap_diag(d, -EINVAL, "host %s: capacity needs vCPUs and memory", h->id);
        snprintf(vcpus, sizeof(vcpus), "%" PRIu32, h->vcpus);
        snprintf(mem, sizeof(mem), "%" PRIu64, h->memory_mib);
        snprintf(disk, sizeof(disk), "%" PRIu64, h->disk_mib);
        const char *params[] = { h->id, h->endpoint, vcpus, mem, disk };
        r = cluster_query(c, "register host",
                          "INSERT INTO hosts (id, endpoint, vcpus, memory_mib, disk_mib, state, epoch,"
                          " heartbeat_at) VALUES ($1, $2, $3::integer, $4::bigint, $5::bigint,"
                          " 'alive', 1, now())"
                          " ON CONFLICT (id) DO UPDATE SET endpoint = EXCLUDED.endpoint,"
                          " vcpus = EXCLUDED.vcpus, memory_mib = EXCLUDED.memory_mib,"
                          " disk_mib = EXCLUDED.disk_mib, state = 'alive',"
                          " epoch = hosts.epoch + 1, heartbeat_at = now()"
                          " RETURNING epoch",
                          5, params, &res, d);
        if (r < 0)
                return r;
        *ret_epoch = cluster_i64(res, 0, 0);
        PQclear(res);
        return 0;
}

int vmsnap_cluster_host_heartbeat(struct vmsnap_cluster *c, const char *id, int64_t epoch,
                                  struct vmsnap_diag *d)
{
        char e[32];
        PGresult *res = NULL;

        if (!c || !id)
                return vmsnap_diag(d, -EINVAL, "heartbeat: missing argument");
        snprintf(e, sizeof(e), "%" PRId64, epoch);
        const char *params[] = { id, e };
        int r = cluster_query(c, "heartbeat",
                              "UPDATE hosts SET heartbeat_at = now()"
                              " WHERE id = $1 AND epoch = $2::bigint AND state = 'alive'",
                              2, params, &res, d);
        if (r < 0)
                return r;
        bool updated = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        if (!updated)
                return vmsnap_diag(d, -ESTALE,
                                   "host %s (epoch %" PRId64 ") was marked lost or registered "
                                   "again: register anew before serving",
                                   id, epoch);
        return 0;
}

int vmsnap_cluster_hosts_mark_lost(struct vmsnap_cluster *c, uint32_t timeout_ms,
                                   const char *except_id, struct vmsnap_diag *d)
{
        char ms[16];
        PGresult *res = NULL;

        if (!c)
                return vmsnap_diag(d, -EINVAL, "mark lost: no connection");
        snprintf(ms, sizeof(ms), "%" PRIu32, timeout_ms);
        const char *params[] = { ms, except_id ? except_id : "" };
        /* One statement, so one transaction: the hosts and the sandboxes whose memory died
         * with them change together or not at all. Paused ones stay paused (docs/cluster.md §3). */
        int r = cluster_query(c, "mark lost hosts",
                              "WITH lost AS (UPDATE hosts SET state = 'lost' WHERE state = 'alive'"
                              "  AND id <> $2"
                              "  AND heartbeat_at < now() - $1::integer * interval '1 millisecond'"
                              "  RETURNING id),"
                              " gone AS (UPDATE sandboxes SET state = 'lost', updated_at = now()"
                              "  WHERE host_id IN (SELECT id FROM lost) AND state IN ('creating',"
                              "  'running', 'pausing', 'resuming', 'stopping') RETURNING id)"
                              " SELECT (SELECT count(*) FROM lost), (SELECT count(*) FROM gone)",
                              2, params, &res, d);
        if (r < 0)
                return r;
        int n = (int)cluster_i64(res, 0, 0);
        PQclear(res);
        return n;
}

int vmsnap_cluster_host_state(struct vmsnap_cluster *c, const char *id, bool *ret_alive,
                              int64_t *ret_epoch, struct vmsnap_diag *d)
{
        PGresult *res = NULL;

        if (!c || !id || !ret_alive || !ret_epoch)
                return vmsnap_diag(d, -EINVAL, "host state: missing argument");
        const char *params[] = { id };
        int r = cluster_query(c, "read host", "SELECT state = 'alive', epoch FROM hosts WHERE id = $1",
                              1, params, &res, d);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                return vmsnap_diag(d, -ENOENT, "host %s: not registered", id);
        }
        *ret_alive = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        *ret_epoch = cluster_i64(res, 0, 1);
        PQclear(res);
        return 0;
}

/* Usage counts resources of sandboxes that hold them: not paused, stopped, lost or error. */
#define HOSTS_SELECT                                                                               \
        "SELECT h.id, h.state = 'alive', h.vcpus, h.memory_mib, h.disk_mib,"                      \
        " coalesce(sum(s.vcpus) FILTER (WHERE s.state IN ('creating', 'running', 'pausing',"       \
        "  'resuming', 'stopping')), 0),"                                                          \
        " coalesce(sum(s.memory_mib) FILTER (WHERE s.state IN ('creating', 'running', 'pausing',"  \
        "  'resuming', 'stopping')), 0),"                                                          \
        " coalesce(sum(s.disk_mib) FILTER (WHERE s.state IN ('creating', 'running', 'pausing',"    \
        "  'resuming', 'stopping')), 0),"                                                          \
        " EXISTS (SELECT 1 FROM host_templates t WHERE t.host_id = h.id AND t.template_id = $1)"   \
        " FROM hosts h LEFT JOIN sandboxes s ON s.host_id = h.id"

/* Fills hosts[i] from result row i. */
static void host_of_row(const PGresult *res, int i, struct vmsnap_cluster_host *h)
{
        cluster_text(res, i, 0, h->id, sizeof(h->id));
        h->alive = strcmp(PQgetvalue(res, i, 1), "t") == 0;
        h->vcpus = (uint32_t)cluster_u64(res, i, 2);
        h->memory_mib = cluster_u64(res, i, 3);
        h->disk_mib = cluster_u64(res, i, 4);
        h->used_vcpus = cluster_u64(res, i, 5);
        h->used_memory_mib = cluster_u64(res, i, 6);
        h->used_disk_mib = cluster_u64(res, i, 7);
        h->has_template = strcmp(PQgetvalue(res, i, 8), "t") == 0;
}

/* Loads all hosts (only_id NULL) or one, with usage; see vmsnap_cluster_hosts_load. */
int cluster_hosts_query(struct vmsnap_cluster *c, const char *template_id, const char *only_id,
                        struct vmsnap_cluster_host **ret_hosts, size_t *ret_n, struct vmsnap_diag *d)
{
        PGresult *res = NULL;
        const char *params[] = { template_id ? template_id : "", only_id ? only_id : "" };
        int r = cluster_query(c, "load hosts",
                              only_id ? HOSTS_SELECT " WHERE h.id = $2 GROUP BY h.id"
                                      : HOSTS_SELECT " GROUP BY h.id ORDER BY h.id",
                              only_id ? 2 : 1, params, &res, d);
        if (r < 0)
                return r;
        size_t n = (size_t)PQntuples(res);
        struct vmsnap_cluster_host *hosts = calloc(n ? n : 1, sizeof(*hosts));
        if (!hosts) {
                PQclear(res);
                return vmsnap_diag(d, -ENOMEM, "load hosts: out of memory");
        }
        for (size_t i = 0; i < n; i++)
                host_of_row(res, (int)i, &hosts[i]);
        PQclear(res);
        *ret_hosts = hosts;
        *ret_n = n;
        return 0;
}

int vmsnap_cluster_hosts_load(struct vmsnap_cluster *c, const char *template_id,
                              struct vmsnap_cluster_host **ret_hosts, size_t *ret_n,
                              struct vmsnap_diag *d)
{
        if (!c || !ret_hosts || !ret_n)
                return vmsnap_diag(d, -EINVAL, "load hosts: missing argument");
        return cluster_hosts_query(c, template_id, NULL, ret_hosts, ret_n, d);
}

int vmsnap_cluster_template_cached(struct vmsnap_cluster *c, const char *host_id,
                                   const char *template_id, struct vmsnap_diag *d)
{
        if (!c)
                return vmsnap_diag(d, -EINVAL, "template cached: no connection");
        int r = cluster_check_id("host", host_id, d);
        if (r >= 0)
                r = cluster_check_id("template", template_id, d);
        if (r < 0)
                return r;
        const char *params[] = { host_id, template_id };
        return cluster_query(c, "record template cache",
                             "INSERT INTO host_templates (host_id, template_id) VALUES ($1, $2)"
                             " ON CONFLICT DO NOTHING",
                             2, params, NULL, d);
}

int vmsnap_cluster_host_endpoint(struct vmsnap_cluster *c, const char *id,
                                 char endpoint[VMSNAP_CLUSTER_ENDPOINT_MAX], bool *ret_alive,
                                 struct vmsnap_diag *d)
{
        PGresult *res = NULL;

        if (!c || !id || !endpoint || !ret_alive)
                return vmsnap_diag(d, -EINVAL, "host endpoint: missing argument");
        const char *params[] = { id };
        int r = cluster_query(c, "read host endpoint",
                              "SELECT endpoint, state = 'alive' FROM hosts WHERE id = $1", 1,
                              params, &res, d);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1) {
                PQclear(res);
                return vmsnap_diag(d, -ENOENT, "host %s: not registered", id);
        }
        cluster_text(res, 0, 0, endpoint, VMSNAP_CLUSTER_ENDPOINT_MAX);
        *ret_alive = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        PQclear(res);
        return 0;
}
