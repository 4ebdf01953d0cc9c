/* SQLite helpers: errors as -errno with context, immediate transactions, the row reader and
 * the few single-row writes the state machine needs. */
#include "store/internal.h"

#include <errno.h>
#include <string.h>

int store_sql_error(struct vmsnap_store *s, int rc, const char *what, struct vmsnap_diag *d)
{
        int err;
        switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                err = -EBUSY;
                break;
        case SQLITE_CONSTRAINT:
                err = -EEXIST;
                break;
        case SQLITE_NOMEM:
                err = -ENOMEM;
                break;
        case SQLITE_FULL:
                err = -ENOSPC;
                break;
        case SQLITE_READONLY:
                err = -EROFS;
                break;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                err = -EACCES;
                break;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                err = -EBADMSG;
                break;
        default:
                err = -EIO;
        }
        return vmsnap_diag(d, err, "%s: %s", what,
                           s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

int store_exec(struct vmsnap_store *s, const char *sql, struct vmsnap_diag *d)
{
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : store_sql_error(s, rc, "index", d);
}

int store_prepare(struct vmsnap_store *s, const char *sql, sqlite3_stmt **ret,
                  struct vmsnap_diag *d)
{
        int rc = sqlite3_prepare_v2(s->db, sql, -1, ret, NULL);
        return rc == SQLITE_OK ? 0 : store_sql_error(s, rc, "index query", d);
}

int store_tx_begin(struct vmsnap_store *s, struct vmsnap_diag *d)
{
        /* IMMEDIATE takes the write lock now (waiting up to the busy timeout) instead of at
         * the first write, where an upgrade from a read lock fails at once with BUSY. */
        return store_exec(s, "BEGIN IMMEDIATE", d);
}

int store_tx_commit(struct vmsnap_store *s, struct vmsnap_diag *d)
{
        int r = store_exec(s, "COMMIT", d);
        if (r < 0)
                store_tx_rollback(s);
        return r;
}

void store_tx_rollback(struct vmsnap_store *s)
{
        if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static void column_text(sqlite3_stmt *st, int i, char *out, size_t size)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        size_t n = t ? strlen((const char *)t) : 0;
        if (n >= size)
                n = size - 1;
        if (n)
                memcpy(out, t, n);
        out[n] = '\0';
}

void store_row_read(sqlite3_stmt *st, struct vmsnap_snapshot *r)
{
        char kind[16], state[16];
        memset(r, 0, sizeof(*r));
        column_text(st, 0, r->id, sizeof(r->id));
        column_text(st, 1, r->name, sizeof(r->name));
        column_text(st, 2, kind, sizeof(kind));
        vmsnap_snapshot_kind_parse(kind, &r->kind);
        column_text(st, 3, state, sizeof(state));
        r->state = strcmp(state, "pending") == 0    ? VMSNAP_SNAPSHOT_PENDING
                   : strcmp(state, "deleting") == 0 ? VMSNAP_SNAPSHOT_DELETING
                                                    : VMSNAP_SNAPSHOT_READY;
        column_text(st, 4, r->parent_id, sizeof(r->parent_id));
        column_text(st, 5, r->template_id, sizeof(r->template_id));
        column_text(st, 6, r->vmm, sizeof(r->vmm));
        column_text(st, 7, r->vmm_version, sizeof(r->vmm_version));
        r->vcpus = (uint32_t)sqlite3_column_int64(st, 8);
        r->memory = (uint64_t)sqlite3_column_int64(st, 9);
        r->generation = (uint64_t)sqlite3_column_int64(st, 10);
        r->created = sqlite3_column_int64(st, 11);
        r->last_accessed = sqlite3_column_int64(st, 12);
        r->state_changed = sqlite3_column_int64(st, 13);
        r->size_bytes = (uint64_t)sqlite3_column_int64(st, 14);
        column_text(st, 15, r->description, sizeof(r->description));
        column_text(st, 16, r->labels, sizeof(r->labels));
}

int store_row_get(struct vmsnap_store *s, const char *id, struct vmsnap_snapshot *ret,
                  struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s, "SELECT " STORE_COLUMNS " FROM snapshots WHERE id = ?1", &st, d);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return vmsnap_diag(d, -ENOENT, "snapshot %s not found", id);
        if (rc != SQLITE_ROW)
                return store_sql_error(s, rc, "reading a snapshot row", d);
        store_row_read(st, ret);
        return 0;
}

int store_row_delete(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s, "DELETE FROM snapshots WHERE id = ?1", &st, d);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        return rc == SQLITE_DONE ? 0 : store_sql_error(s, rc, "deleting a snapshot row", d);
}

int store_row_set_state(struct vmsnap_store *s, const char *id, enum vmsnap_snapshot_state from,
                        enum vmsnap_snapshot_state to, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s,
                              "UPDATE snapshots SET state = ?1, state_changed = ?2 "
                              "WHERE id = ?3 AND state = ?4",
                              &st, d);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, vmsnap_snapshot_state_name(to), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, store_now());
        sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, vmsnap_snapshot_state_name(from), -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return store_sql_error(s, rc, "updating a snapshot row", d);
        if (sqlite3_changes(s->db) != 1)
                return vmsnap_diag(d, -ESTALE, "snapshot %s is no longer %s", id,
                                   vmsnap_snapshot_state_name(from));
        return 0;
}

int store_row_insert(struct vmsnap_store *s, const struct vmsnap_snapshot *r, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int ret = store_prepare(
            s,
            "INSERT INTO snapshots (id, name, kind, state, parent_id, template_id, vmm, "
            "vmm_version, vcpus, memory, generation, created, last_accessed, state_changed, "
            "size_bytes, description, labels) VALUES (?1, ?2, ?3, ?15, ?4, ?5, ?6, "
            "?7, ?8, ?9, ?10, ?11, ?12, ?12, ?16, ?13, ?14)",
            &st, d);
        if (ret < 0)
                return ret;
        sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
        if (r->name[0])
                sqlite3_bind_text(st, 2, r->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, vmsnap_snapshot_kind_name(r->kind), -1, SQLITE_STATIC);
        if (r->parent_id[0])
                sqlite3_bind_text(st, 4, r->parent_id, -1, SQLITE_STATIC);
        if (r->template_id[0])
                sqlite3_bind_text(st, 5, r->template_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, r->vmm, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, r->vmm_version, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, r->vcpus);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)r->memory);
        sqlite3_bind_int64(st, 10, (sqlite3_int64)r->generation);
        sqlite3_bind_int64(st, 11, r->created);
        sqlite3_bind_int64(st, 12, r->last_accessed);
        sqlite3_bind_text(st, 13, r->description, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 14, r->labels, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 15, vmsnap_snapshot_state_name(r->state), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 16, (sqlite3_int64)r->size_bytes);
        int rc = sqlite3_step(st);
        return rc == SQLITE_DONE ? 0 : store_sql_error(s, rc, "inserting a snapshot row", d);
}
