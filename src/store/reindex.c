/* Reindex: rebuild the index from the snapshot directories. A directory whose envelope is
 * valid, names it, and whose files are all there (sizes; checksums with --verify) gets a
 * ready row when it has none; a ready row whose directory or envelope is gone is dropped.
 * Pending and deleting rows belong to recovery and GC, and directories without a valid
 * envelope to GC: both are left alone. */
#include "store/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct reindex {
        struct vmsnap_store *s;
        unsigned flags;
        vmsnap_store_problem_fn fn;
        void *ctx;
        struct vmsnap_reindex_result res;
};

static void problem(struct reindex *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct reindex *x, const char *fmt, ...)
{
        if (!x->fn)
                return;
        char msg[1200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        x->fn(x->ctx, msg);
}

/* Inserts a ready row from a checked envelope; a taken name is dropped (reported). */
static int insert_from(struct reindex *x, const struct store_envelope *env, int dirfd)
{
        struct vmsnap_snapshot r = env->rec;
        r.state = VMSNAP_SNAPSHOT_READY;
        r.last_accessed = r.state_changed = store_now();
        r.size_bytes = store_dir_allocated(dirfd);
        int ret = store_tx_begin(x->s, NULL);
        if (ret < 0)
                return ret;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (r.name[0] &&
            store_prepare(x->s, "SELECT id FROM snapshots WHERE name = ?1", &st, NULL) == 0) {
                sqlite3_bind_text(st, 1, r.name, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        problem(x, "%s: name '%s' is taken by %s; indexed without a name", r.id,
                                r.name, (const char *)sqlite3_column_text(st, 0));
                        r.name[0] = '\0';
                }
        }
        ret = store_row_insert(x->s, &r, NULL);
        if (ret < 0) {
                store_tx_rollback(x->s);
                return ret;
        }
        return store_tx_commit(x->s, NULL);
}

static void index_dir(struct reindex *x, const char *id)
{
        int lock = store_lock_take(x->s, id, true);
        if (lock < 0) {
                problem(x, "%s: busy (another process is working on it); skipped", id);
                x->res.skipped++;
                return;
        }
        _cleanup_close_ int fd = store_open_snapdir(x->s, id);
        struct store_envelope env;
        struct vmsnap_diag d = {0};
        int r = fd < 0 ? fd : store_envelope_load(fd, &env, &d);
        if (r == 0 && strcmp(env.rec.id, id) != 0) {
                snprintf(d.msg, sizeof(d.msg), "its envelope names id %s", env.rec.id);
                store_envelope_clear(&env);
                r = -EBADMSG;
        }
        if (r == 0) {
                r = store_envelope_check(fd, &env, x->flags & VMSNAP_REINDEX_VERIFY, NULL, NULL,
                                         &d);
                if (r == 0 && (r = insert_from(x, &env, fd)) < 0)
                        snprintf(d.msg, sizeof(d.msg), "cannot insert its row: %s", strerror(-r));
                store_envelope_clear(&env);
        }
        if (r == 0)
                x->res.added++;
        else {
                problem(x, "%s: not indexed: %s", id, d.msg[0] ? d.msg : strerror(-r));
                x->res.skipped++;
        }
        store_lock_release(x->s, id, lock);
}

static void scan_dirs(struct reindex *x)
{
        char **names;
        size_t n;
        if (store_list_names(x->s->snapfd, &names, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                struct vmsnap_snapshot r;
                if (!store_id_valid(names[i]))
                        continue;
                int e = store_row_get(x->s, names[i], &r, NULL);
                if (e == -ENOENT)
                        index_dir(x, names[i]);
        }
        store_strv_free(names);
}

/* Drops ready rows whose directory or envelope is gone. */
static void drop_lost_rows(struct reindex *x)
{
        struct vmsnap_snapshot *v;
        size_t n;
        if (vmsnap_store_list(x->s, 0, &v, &n, NULL) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                _cleanup_close_ int fd = store_open_snapdir(x->s, v[i].id);
                if (fd >= 0 && faccessat(fd, VMSNAP_ENVELOPE_NAME, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                        continue;
                int lock = store_lock_take(x->s, v[i].id, true);
                if (lock < 0)
                        continue;
                /* Only the row goes: what is left of the directory is GC's to judge. */
                if (store_tx_begin(x->s, NULL) == 0) {
                        if (store_row_delete(x->s, v[i].id, NULL) == 0 &&
                            store_tx_commit(x->s, NULL) == 0) {
                                problem(x, "%s: its directory or envelope is gone; row dropped",
                                        v[i].id);
                                x->res.removed++;
                        } else {
                                store_tx_rollback(x->s);
                        }
                }
                store_lock_release(x->s, v[i].id, lock);
        }
        free(v);
}

int vmsnap_store_reindex(struct vmsnap_store *s, unsigned flags, vmsnap_store_problem_fn fn,
                         void *ctx, struct vmsnap_reindex_result *ret, struct vmsnap_diag *d)
{
        if (!s)
                return vmsnap_diag(d, -EINVAL, "reindex: no store");
        struct reindex x = {.s = s, .flags = flags, .fn = fn, .ctx = ctx};
        scan_dirs(&x);
        drop_lost_rows(&x);
        struct vmsnap_snapshot *v;
        size_t n;
        if (vmsnap_store_list(s, 0, &v, &n, NULL) == 0) {
                x.res.kept = n - MIN(n, x.res.added);
                free(v);
        }
        if (ret)
                *ret = x.res;
        return 0;
}
