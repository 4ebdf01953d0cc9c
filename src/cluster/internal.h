/* Internals of src/cluster/: the libpq connection and its query helpers (docs/cluster.md). */
#ifndef VMSNAP_CLUSTER_INTERNAL_H
#define VMSNAP_CLUSTER_INTERNAL_H

#include <libpq-fe.h>
#include <stdbool.h>

#include <vmsnap/cluster.h>

struct vmsnap_cluster {
        PGconn *conn;
        bool broken; /* the last call saw the connection break: reset it before the next */
        bool in_txn; /* between cluster_begin and its commit/rollback: never reconnect */
};

/* Runs sql with text params; on success returns 0 and, when ret_res is non-NULL, the result
 * (PQclear it). what names the step for the diagnostic. Errors: see cluster_error. A failure
 * inside an open transaction rolls it back. Reconnects first when the connection broke. */
int cluster_query(struct vmsnap_cluster *c, const char *what, const char *sql, int nparams,
                  const char *const *params, PGresult **ret_res, struct vmsnap_diag *d);

/* BEGIN / COMMIT / ROLLBACK. Rollback is best effort (a broken connection has none left). */
int cluster_begin(struct vmsnap_cluster *c, struct vmsnap_diag *d);
int cluster_commit(struct vmsnap_cluster *c, const char *what, struct vmsnap_diag *d);
void cluster_rollback(struct vmsnap_cluster *c);

/* Applies pending migrations (schema.c). */
int cluster_migrate(struct vmsnap_cluster *c, struct vmsnap_diag *d);

/* Validates an id (1..63 bytes of [A-Za-z0-9._-]); -EINVAL naming what it is. */
int cluster_check_id(const char *what, const char *id, struct vmsnap_diag *d);

/* Parses a result cell as an unsigned / signed 64-bit number (0 on garbage: the server's
 * own output of typed columns). */
uint64_t cluster_u64(const PGresult *res, int row, int col);
int64_t cluster_i64(const PGresult *res, int row, int col);

/* Copies a result cell into out (size bytes, truncated, NUL-terminated). */
void cluster_text(const PGresult *res, int row, int col, char *out, size_t size);

/* Loads all hosts (only_id NULL) or only only_id, with usage and template locality, into a
 * malloc'ed array (hosts.c). */
int cluster_hosts_query(struct vmsnap_cluster *c, const char *template_id, const char *only_id,
                        struct vmsnap_cluster_host **ret_hosts, size_t *ret_n, struct vmsnap_diag *d);

/* Test seam: called at named points while a transaction is open ("migration.V.I" after
 * statement I of migration V, "create.commit" before a placement commits), so a test can
 * restart the server there. NULL in production. */
extern void (*cluster_test_hook)(const char *point);

#endif
