/* Delete: refuse while something depends on the snapshot (the snapshot_dependents view,
 * which later layers extend) unless forced, and while another process holds its
 * directory; then mark the row deleting, remove the envelope, the files, the directory and
 * the row. Crash points store.delete.{marked,envelope,files,done}. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/sys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int query_dependents(struct vmsnap_store *s, const char *id, sqlite3_stmt **ret,
                            struct vmsnap_diag *d)
{
        int r = store_prepare(s,
                              "SELECT kind, dependent_id, label FROM snapshot_dependents "
                              "WHERE snapshot_id = ?1 ORDER BY kind, dependent_id",
                              ret, d);
        if (r == 0)
                sqlite3_bind_text(*ret, 1, id, -1, SQLITE_TRANSIENT);
        return r;
}

static void read_dependent(sqlite3_stmt *st, struct vmsnap_dependent *out)
{
        const char *k = (const char *)sqlite3_column_text(st, 0);
        const char *i = (const char *)sqlite3_column_text(st, 1);
        const char *l = (const char *)sqlite3_column_text(st, 2);
        snprintf(out->kind, sizeof(out->kind), "%s", k ? k : "");
        snprintf(out->id, sizeof(out->id), "%s", i ? i : "");
        snprintf(out->label, sizeof(out->label), "%s", l ? l : "");
}

int vmsnap_store_dependents(struct vmsnap_store *s, const char *id, struct vmsnap_dependent **ret,
                            size_t *ret_n, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = query_dependents(s, id, &st, d);
        if (r < 0)
                return r;
        _cleanup_free_ struct vmsnap_dependent *v = NULL;
        size_t n = 0;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct vmsnap_dependent *nv = realloc(v, (n + 1) * sizeof(*v));
                if (!nv)
                        return vmsnap_diag(d, -ENOMEM, "out of memory");
                v = nv;
                read_dependent(st, &v[n++]);
        }
        if (rc != SQLITE_DONE)
                return store_sql_error(s, rc, "reading dependents", d);
        if (!v && !(v = malloc(sizeof(*v))))
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

int store_dependents_check(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = query_dependents(s, id, &st, d);
        if (r < 0)
                return r;
        char list[700] = "";
        size_t len = 0;
        int count = 0, rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct vmsnap_dependent dep;
                read_dependent(st, &dep);
                if (++count > 8)
                        continue;
                int n = snprintf(list + len, sizeof(list) - len, "%s%s %s%s%s%s",
                                 count > 1 ? ", " : "", dep.kind, dep.id, dep.label[0] ? " (" : "",
                                 dep.label, dep.label[0] ? ")" : "");
                if (n > 0 && (size_t)n < sizeof(list) - len)
                        len += (size_t)n;
        }
        if (rc != SQLITE_DONE)
                return store_sql_error(s, rc, "reading dependents", d);
        if (count == 0)
                return 0;
        return vmsnap_diag(d, -EBUSY,
                           "snapshot %s is needed by %d dependent%s: %s%s; remove %s first, "
                           "or delete with --force",
                           id, count, count > 1 ? "s" : "", list, count > 8 ? ", ..." : "",
                           count > 1 ? "them" : "it");
}

int store_delete_finish(struct vmsnap_store *s, const char *id, const char *crash,
                        struct vmsnap_diag *d)
{
        int r = store_remove_snapdir(s, id, crash, d);
        if (r < 0 && r != -ENOENT)
                return r;
        if ((r = store_tx_begin(s, d)) < 0)
                return r;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = store_prepare(s, "DELETE FROM snapshots WHERE id = ?1 AND state = 'deleting'", &st, d);
        if (r == 0) {
                sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_DONE)
                        r = store_sql_error(s, sqlite3_errcode(s->db), "removing a row", d);
        }
        if (r < 0) {
                store_tx_rollback(s);
                return r;
        }
        if ((r = store_tx_commit(s, d)) < 0)
                return r;
        store_crashpoint(crash, "done");
        return 0;
}

/* Inside one write transaction: the row is still ready, nothing depends on it (unless
 * forced), and it becomes 'deleting'. */
static int mark_deleting(struct vmsnap_store *s, const char *id, bool force, struct vmsnap_diag *d)
{
        int r = store_tx_begin(s, d);
        if (r < 0)
                return r;
        struct vmsnap_snapshot rec;
        r = store_row_get(s, id, &rec, d);
        if (r == 0 && rec.state != VMSNAP_SNAPSHOT_READY)
                r = vmsnap_diag(d, -ENOENT, "snapshot %s is %s", id,
                                vmsnap_snapshot_state_name(rec.state));
        if (r == 0 && !force)
                r = store_dependents_check(s, id, d);
        if (r == 0)
                r = store_row_set_state(s, id, VMSNAP_SNAPSHOT_READY, VMSNAP_SNAPSHOT_DELETING, d);
        if (r < 0) {
                store_tx_rollback(s);
                return r;
        }
        return store_tx_commit(s, d);
}

int vmsnap_store_delete(struct vmsnap_store *s, const char *id, unsigned flags,
                        struct vmsnap_diag *d)
{
        if (!s || !id)
                return vmsnap_diag(d, -EINVAL, "delete: no snapshot id");
        /* The lock first: a process exporting the snapshot or making a child from it holds
         * LOCK_SH, and even --force must not pull files from under it. */
        int lock = store_lock_take(s, id, true);
        if (lock < 0)
                return vmsnap_diag(d, lock,
                                   "snapshot %s is in use by another process (an "
                                   "export, or a create reading it); try again later",
                                   id);
        int r = mark_deleting(s, id, flags & VMSNAP_DELETE_FORCE, d);
        if (r == 0) {
                vmsnap_crashpoint("store.delete.marked");
                r = store_delete_finish(s, id, "store.delete", d);
        }
        store_lock_release(s, id, lock);
        return r;
}
