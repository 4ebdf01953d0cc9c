/* The cluster database connection: open, reconnect, queries with errno mapping. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/internal.h"
#include "util/cleanup.h"

/* Maps a failed result (or a broken connection) to a negative errno. A failure without a
 * SQLSTATE was made by libpq itself, not the server: the connection broke (libpq may still
 * report CONNECTION_OK when a write to a dead server failed before it read the EOF). */
static int error_of(struct vmsnap_cluster *c, const PGresult *res)
{
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

        if (PQstatus(c->conn) != CONNECTION_OK || !state)
                return -ECONNRESET;
        if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0)
                return -ECONNRESET; /* connection exception, admin/crash shutdown */
        if (strcmp(state, "23505") == 0)
                return -EEXIST;
        if (strcmp(state, "23514") == 0 || strcmp(state, "22P02") == 0)
                return -EINVAL;
        if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
                return -EAGAIN;
        return -EIO;
}

/* The server's message without its trailing newline. */
static const char *message_of(struct vmsnap_cluster *c, const PGresult *res, char *buf, size_t size)
{
        const char *m = res ? PQresultErrorMessage(res) : "";

        if (!m || !*m)
                m = PQerrorMessage(c->conn);
        snprintf(buf, size, "%s", m ? m : "unknown error");
        size_t n = strlen(buf);
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                buf[--n] = '\0';
        return buf;
}

/* Re-establishes a broken connection (the server restarted). */
static int ensure_connected(struct vmsnap_cluster *c, struct vmsnap_diag *d)
{
        char buf[512];

        /* An idle connection whose server went away still says CONNECTION_OK until libpq
         * reads its goodbye. Between statements the server sends nothing unasked (no
         * LISTEN here), so input waiting on an idle connection is that goodbye (a FATAL
         * 57P0x, or EOF): reset it here instead of failing the statement about to be sent. */
        struct pollfd p = { .fd = PQsocket(c->conn), .events = POLLIN };
        if (!c->broken && PQstatus(c->conn) == CONNECTION_OK && p.fd >= 0 && poll(&p, 1, 0) == 0)
                return 0;
        PQreset(c->conn);
        if (PQstatus(c->conn) == CONNECTION_OK) {
                c->broken = false;
                return 0;
        }
        return vmsnap_diag(d, -ECONNREFUSED, "cluster database: cannot reconnect: %s",
                           message_of(c, NULL, buf, sizeof(buf)));
}

int cluster_query(struct vmsnap_cluster *c, const char *what, const char *sql, int nparams,
                  const char *const *params, PGresult **ret_res, struct vmsnap_diag *d)
{
        char buf[512];
        if (c->in_txn && c->broken)
                return vmsnap_diag(d, -ECONNRESET, "cluster database: %s: the connection broke "
                                   "inside the transaction (rolled back by the server)", what);
        if (!c->in_txn) {
                int r = ensure_connected(c, d);
                if (r < 0)
                        return r;
        }
        PGresult *res = PQexecParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
                if (ret_res)
                        *ret_res = res;
                else
                        PQclear(res);
                return 0;
        }
        int err = error_of(c, res);
        if (err == -ECONNRESET)
                c->broken = true;
        vmsnap_diag(d, err, "cluster database: %s: %s", what, message_of(c, res, buf, sizeof(buf)));
        PQclear(res);
        cluster_rollback(c);
        return err;
}

int cluster_begin(struct vmsnap_cluster *c, struct vmsnap_diag *d)
{
        int r = cluster_query(c, "begin", "BEGIN", 0, NULL, NULL, d);
        if (r >= 0)
                c->in_txn = true;
        return r;
}

int cluster_commit(struct vmsnap_cluster *c, const char *what, struct vmsnap_diag *d)
{
        PGresult *res = NULL;
        int r = cluster_query(c, what, "COMMIT", 0, NULL, &res, d);
        c->in_txn = false;
        if (r < 0)
                return r;
        /* COMMIT of a transaction that had failed reports ROLLBACK, not an error. */
        bool rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
        PQclear(res);
        if (rolled_back)
                return vmsnap_diag(d, -EIO, "cluster database: %s: transaction rolled back", what);
        return 0;
}

void cluster_rollback(struct vmsnap_cluster *c)
{
        PGTransactionStatusType ts = PQtransactionStatus(c->conn);

        c->in_txn = false;
        if (c->broken)
                return; /* the server rolled it back when the connection died */
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
                PQclear(PQexec(c->conn, "ROLLBACK"));
}

int cluster_check_id(const char *what, const char *id, struct vmsnap_diag *d)
{
        if (!id || !*id || strlen(id) >= VMSNAP_CLUSTER_ID_MAX)
                return vmsnap_diag(d, -EINVAL, "%s: an id of 1 to %d bytes is required", what,
                                   VMSNAP_CLUSTER_ID_MAX - 1);
        for (const char *p = id; *p; p++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p))
                        return vmsnap_diag(d, -EINVAL, "%s '%s': only letters, digits, '.', '_' and '-'",
                                           what, id);
        return 0;
}

uint64_t cluster_u64(const PGresult *res, int row, int col)
{
        return strtoull(PQgetvalue(res, row, col), NULL, 10);
}

int64_t cluster_i64(const PGresult *res, int row, int col)
{
        return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

void cluster_text(const PGresult *res, int row, int col, char *out, size_t size)
{
        snprintf(out, size, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

/* Drops server NOTICEs (CREATE … IF NOT EXISTS) that libpq would print on stderr. */
static void ignore_notice(void *arg, const char *message)
{
        (void)arg;
        (void)message;
}

int vmsnap_cluster_open(const char *url, struct vmsnap_cluster **ret_c, struct vmsnap_diag *d)
{
        char buf[512];

        if (!url || !ret_c)
                return vmsnap_diag(d, -EINVAL, "cluster database: no URL given");
        struct vmsnap_cluster *c = calloc(1, sizeof(*c));
        if (!c)
                return vmsnap_diag(d, -ENOMEM, "cluster database: out of memory");
        c->conn = PQconnectdb(url);
        if (!c->conn || PQstatus(c->conn) != CONNECTION_OK) {
                int r = vmsnap_diag(d, -ECONNREFUSED, "cluster database: cannot connect: %s",
                                    c->conn ? message_of(c, NULL, buf, sizeof(buf)) : "out of memory");
                vmsnap_cluster_close(c);
                return r;
        }
        /* Quiet NOTICEs (CREATE … IF NOT EXISTS) instead of libpq's default print to stderr. */
        PQsetNoticeProcessor(c->conn, ignore_notice, NULL);
        int r = cluster_migrate(c, d);
        if (r < 0) {
                vmsnap_cluster_close(c);
                return r;
        }
        *ret_c = c;
        return 0;
}

void vmsnap_cluster_close(struct vmsnap_cluster *c)
{
        if (!c)
                return;
        PQfinish(c->conn);
        free(c);
}
