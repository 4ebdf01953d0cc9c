/* Recovery on open: rows left in a transitional state by a process that died. A row's
 * owner is alive exactly when it holds the row's store lock (flock, dropped by the kernel
 * when the process dies), so a lock we can take means nobody will finish the work but us. Pending
 * creates that got as far as a complete envelope are rolled forward; incomplete ones are left for
 * the sandbox layer to resume or for GC to remove after the grace period; interrupted deletes are
 * finished. */
#include "store/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int roll_forward(struct vmsnap_store *s, const char *id, int fd)
{
        struct store_envelope env;
        if (store_envelope_load(fd, &env, NULL) < 0)
                return -ENOENT; /* the create never reached its envelope */
        int r = strcmp(env.rec.id, id) == 0 ? store_envelope_check(fd, &env, true, NULL, NULL, NULL)
                                            : -EBADMSG;
        uint64_t generation = env.rec.generation, memory = env.rec.memory;
        char parent[VMSNAP_ID_LEN + 1], template[VMSNAP_ID_LEN + 1];
        memcpy(parent, env.rec.parent_id, sizeof(parent));
        memcpy(template, env.rec.template_id, sizeof(template));
        store_envelope_clear(&env);
        if (r < 0)
                return r;
        if ((r = store_tx_begin(s, NULL)) < 0)
                return r;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = store_prepare(s,
                          "UPDATE snapshots SET state = 'ready', state_changed = ?1, "
                          "size_bytes = ?2, generation = ?3, memory = ?4, "
                          STORE_SET_LINEAGE("?6", "?7")
                          " WHERE id = ?5 AND state = 'pending'",
                          &st, NULL);
        if (r == 0) {
                sqlite3_bind_int64(st, 1, store_now());
                sqlite3_bind_int64(st, 2, (sqlite3_int64)store_dir_allocated(fd));
                sqlite3_bind_int64(st, 3, (sqlite3_int64)generation);
                sqlite3_bind_int64(st, 4, (sqlite3_int64)memory);
                sqlite3_bind_text(st, 5, id, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 6, parent, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 7, template, -1, SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_DONE)
                        r = -EIO;
        }
        if (r < 0) {
                store_tx_rollback(s);
                return r;
        }
        return store_tx_commit(s, NULL);
}

/* A pending row whose directory is gone (a crash during abort): drop the row. */
static void drop_dirless_pending(struct vmsnap_store *s, const char *id)
{
        if (store_tx_begin(s, NULL) < 0)
                return;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (store_prepare(s, "DELETE FROM snapshots WHERE id = ?1 AND state = 'pending'", &st,
                          NULL) == 0) {
                sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
                sqlite3_step(st);
        }
        store_tx_commit(s, NULL);
}

static void recover_one(struct vmsnap_store *s, const char *id, bool deleting)
{
        int lock = store_lock_take(s, id, true);
        if (lock < 0)
                return; /* its owner is alive (or we cannot tell): not ours */
        _cleanup_close_ int fd = store_open_snapdir(s, id);
        if (deleting)
                store_delete_finish(s, id, NULL, NULL);
        else if (fd == -ENOENT)
                drop_dirless_pending(s, id);
        else if (fd >= 0)
                roll_forward(s, id, fd);
        store_lock_release(s, id, lock);
}

int store_recover(struct vmsnap_store *s, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s,
                              "SELECT id, state FROM snapshots "
                              "WHERE state IN ('pending', 'deleting') ORDER BY id",
                              &st, d);
        if (r < 0)
                return r;
        struct item {
                char id[VMSNAP_ID_LEN + 1];
                bool deleting;
        } *items = NULL;
        size_t n = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
                struct item *ni = realloc(items, (n + 1) * sizeof(*items));
                if (!ni)
                        break;
                items = ni;
                const char *id = (const char *)sqlite3_column_text(st, 0);
                const char *state = (const char *)sqlite3_column_text(st, 1);
                snprintf(items[n].id, sizeof(items[n].id), "%s", id ? id : "");
                items[n++].deleting = state && strcmp(state, "deleting") == 0;
        }
        sqlite3_finalize(st);
        st = NULL;
        /* Best effort: whatever cannot be recovered now stays for the next open or GC. */
        for (size_t i = 0; i < n; i++)
                if (store_id_valid(items[i].id))
                        recover_one(s, items[i].id, items[i].deleting);
        free(items);
        return 0;
}
