/* The store handle: opening (directories, SQLite in WAL mode, migrations, recovery), and
 * the read side: get, list, touch, file lists, verify. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *vmsnap_store_default_root(void)
{
        const char *env = getenv("VMSNAP_ROOT");
        return env && env[0] ? env : VMSNAP_STORE_DEFAULT_ROOT;
}

/* mkdir -p; what it creates is private (0700). Returns 0 or -errno. */
static int mkdir_parents(const char *path)
{
        char buf[PATH_MAX];
        if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                int r = vmsnap_fs_mkdir_private(AT_FDCWD, buf);
                if (r < 0 && r != -EEXIST)
                        return r;
                *p = '/';
        }
        int r = vmsnap_fs_mkdir_private(AT_FDCWD, buf);
        return r == -EEXIST ? 0 : r;
}

/* Opens (making it when missing) a directory of the store under rootfd, mode 0700: made so,
 * or tightened when an older vmsnap (or a loose umask) made it wider. */
static int open_private_dir(struct vmsnap_store *s, const char *name, struct vmsnap_diag *d)
{
        int r = vmsnap_fs_mkdir_private(s->rootfd, name);
        if (r == -EEXIST)
                r = vmsnap_fs_make_private_dir(s->rootfd, name);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: cannot create: %s", s->root, name,
                                   strerror(-r));
        int fd = openat(s->rootfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        return fd < 0 ? vmsnap_diag(d, -errno, "%s/%s: cannot open: %s", s->root, name,
                                    strerror(errno))
                      : fd;
}

/* The database and its WAL files are 0600: SQLite creates them with 0644 minus the umask
 * (and the -wal and -shm files with the database's mode), so the database is made first,
 * and files an older vmsnap left wider are tightened. */
static int make_db_private(struct vmsnap_store *s, struct vmsnap_diag *d)
{
        static const char *const names[] = {STORE_DB_NAME, STORE_DB_NAME "-wal",
                                            STORE_DB_NAME "-shm"};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (i == 0 ? O_CREAT : 0);
                _cleanup_close_ int fd = openat(s->rootfd, names[i], flags, VMSNAP_FILE_MODE);
                if (fd < 0 && (i > 0 && errno == ENOENT))
                        continue;
                if (fd < 0 || fchmod(fd, VMSNAP_FILE_MODE) < 0)
                        return vmsnap_diag(d, -errno, "%s/%s: cannot make private: %s", s->root,
                                           names[i], strerror(errno));
        }
        return 0;
}

static int open_dirs(struct vmsnap_store *s, const char *root, struct vmsnap_diag *d)
{
        int r = mkdir_parents(root);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: cannot create the store directory: %s", root,
                                   strerror(-r));
        s->root = realpath(root, NULL);
        if (!s->root)
                return vmsnap_diag(d, -errno, "%s: %s", root, strerror(errno));
        s->rootfd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->rootfd < 0)
                return vmsnap_diag(d, -errno, "%s: cannot open: %s", s->root, strerror(errno));
        s->snapfd = open_private_dir(s, STORE_SNAPSHOTS_DIR, d);
        if (s->snapfd < 0)
                return s->snapfd;
        s->lockfd = open_private_dir(s, STORE_LOCKS_DIR, d);
        if (s->lockfd < 0)
                return s->lockfd;
        return make_db_private(s, d);
}

static int open_db(struct vmsnap_store *s, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/" STORE_DB_NAME, s->root) >= (int)sizeof(path))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", s->root);
        int rc = sqlite3_open_v2(
            path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL);
        if (rc != SQLITE_OK)
                return store_sql_error(s, rc, path, d);
        sqlite3_extended_result_codes(s->db, 1);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT);
        /* WAL: readers never block the writer. synchronous=FULL: the commit that makes a
         * row ready is a promise to the caller and must survive a power cut. */
        int r = store_exec(s, "PRAGMA journal_mode = WAL", d);
        if (r == 0)
                r = store_exec(s, "PRAGMA synchronous = FULL", d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "%s", path);
        return 0;
}

int vmsnap_store_open(const char *root, struct vmsnap_store **ret, struct vmsnap_diag *d)
{
        if (!root || !root[0] || !ret)
                return vmsnap_diag(d, -EINVAL, "store root must be a directory path");
        struct vmsnap_store *s = calloc(1, sizeof(*s));
        if (!s)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        s->rootfd = s->snapfd = s->lockfd = -1;
        int r = open_dirs(s, root, d);
        if (r == 0)
                r = open_db(s, d);
        if (r == 0)
                r = store_schema_migrate(s, d);
        if (r == 0)
                r = store_recover(s, d);
        if (r < 0) {
                vmsnap_store_close(s);
                return r;
        }
        *ret = s;
        return 0;
}

void vmsnap_store_close(struct vmsnap_store *s)
{
        if (!s)
                return;
        if (s->db)
                sqlite3_close_v2(s->db);
        if (s->snapfd >= 0)
                close(s->snapfd);
        if (s->lockfd >= 0)
                close(s->lockfd);
        if (s->rootfd >= 0)
                close(s->rootfd);
        free(s->root);
        free(s);
}

const char *vmsnap_store_root(const struct vmsnap_store *s)
{
        return s->root;
}

struct sqlite3 *vmsnap_store_db(struct vmsnap_store *s)
{
        return s->db;
}

int vmsnap_store_snapshot_dir(const struct vmsnap_store *s, const char *id, char *out, size_t size)
{
        int n = snprintf(out, size, "%s/" STORE_SNAPSHOTS_DIR "/%s", s->root, id);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int vmsnap_store_get(struct vmsnap_store *s, const char *id, struct vmsnap_snapshot *ret,
                     struct vmsnap_diag *d)
{
        if (!id || !ret)
                return vmsnap_diag(d, -EINVAL, "no snapshot id given");
        return store_row_get(s, id, ret, d);
}

int vmsnap_store_list(struct vmsnap_store *s, unsigned flags, struct vmsnap_snapshot **ret,
                      size_t *ret_n, struct vmsnap_diag *d)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(s,
                              (flags & VMSNAP_LIST_ALL)
                                  ? "SELECT " STORE_COLUMNS " FROM snapshots "
                                    "ORDER BY created, rowid"
                                  : "SELECT " STORE_COLUMNS " FROM snapshots "
                                    "WHERE state = 'ready' ORDER BY created, rowid",
                              &st, d);
        if (r < 0)
                return r;
        _cleanup_free_ struct vmsnap_snapshot *v = NULL;
        size_t n = 0, cap = 0;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == cap) {
                        cap = cap ? 2 * cap : 16;
                        struct vmsnap_snapshot *nv = realloc(v, cap * sizeof(*v));
                        if (!nv)
                                return vmsnap_diag(d, -ENOMEM, "out of memory");
                        v = nv;
                }
                store_row_read(st, &v[n++]);
        }
        if (rc != SQLITE_DONE)
                return store_sql_error(s, rc, "listing snapshots", d);
        if (!v && !(v = malloc(sizeof(*v))))
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

int vmsnap_store_touch(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d)
{
        int r = store_tx_begin(s, d);
        if (r < 0)
                return r;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = store_prepare(s, "UPDATE snapshots SET last_accessed = ?1 WHERE id = ?2", &st, d);
        if (r == 0) {
                sqlite3_bind_int64(st, 1, store_now());
                sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
                int rc = sqlite3_step(st);
                if (rc != SQLITE_DONE)
                        r = store_sql_error(s, rc, "touching a snapshot", d);
                else if (sqlite3_changes(s->db) != 1)
                        r = vmsnap_diag(d, -ENOENT, "snapshot %s not found", id);
        }
        if (r < 0) {
                store_tx_rollback(s);
                return r;
        }
        return store_tx_commit(s, d);
}

int store_open_ready(struct vmsnap_store *s, const char *id, struct store_envelope *env,
                     int *ret_lock, struct vmsnap_diag *d)
{
        /* Lock before reading the row: once we hold LOCK_SH no delete can start, so a row
         * that is ready now stays ready with its files until we release. */
        int lock = store_lock_take(s, id, false);
        if (lock < 0)
                return vmsnap_diag(d, lock,
                                   "snapshot %s is busy: another process is creating, "
                                   "deleting or cleaning it; try again",
                                   id);
        struct vmsnap_snapshot rec;
        int r = store_row_get(s, id, &rec, d);
        if (r == 0 && rec.state != VMSNAP_SNAPSHOT_READY)
                r = vmsnap_diag(d, -ENOENT, "snapshot %s is %s, not ready", id,
                                vmsnap_snapshot_state_name(rec.state));
        int fd = r < 0 ? r : store_open_snapdir(s, id);
        if (r == 0 && fd < 0)
                r = vmsnap_diag(d, fd, "%s/" STORE_SNAPSHOTS_DIR "/%s: %s", s->root, id,
                                strerror(-fd));
        if (r == 0 && (r = store_envelope_load(fd, env, d)) < 0)
                vmsnap_diag_prefix(d, "snapshot %s", id);
        if (r == 0 && strcmp(env->rec.id, id) != 0) {
                r = vmsnap_diag(d, -EBADMSG, "snapshot %s: its envelope names id %s", id,
                                env->rec.id);
                store_envelope_clear(env);
        }
        if (r < 0) {
                if (fd >= 0)
                        close(fd);
                store_lock_release(s, id, lock);
                return r;
        }
        *ret_lock = lock;
        return fd;
}

int vmsnap_store_files(struct vmsnap_store *s, const char *id, struct vmsnap_snapshot_file **ret,
                       size_t *ret_n, struct vmsnap_diag *d)
{
        struct store_envelope env;
        int lock = -1, fd = store_open_ready(s, id, &env, &lock, d);
        if (fd < 0)
                return fd;
        close(fd);
        store_lock_release(s, id, lock);
        *ret = TAKE_PTR(env.files);
        *ret_n = env.n_files;
        return 0;
}

int vmsnap_store_verify(struct vmsnap_store *s, const char *id, vmsnap_store_problem_fn fn,
                        void *ctx, struct vmsnap_diag *d)
{
        struct store_envelope env;
        int lock = -1, fd = store_open_ready(s, id, &env, &lock, d);
        if (fd < 0)
                return fd;
        int r = store_envelope_check(fd, &env, true, fn, ctx, d);
        bool has_mem = store_envelope_find(&env, VMSNAP_MEM_HEADER_NAME) != NULL;
        store_envelope_clear(&env);
        close(fd);
        if (r == 0 && has_mem) {
                char dir[PATH_MAX];
                vmsnap_store_snapshot_dir(s, id, dir, sizeof(dir));
                r = vmsnap_mem_verify(dir, fn, ctx, d);
        }
        store_lock_release(s, id, lock);
        return r;
}
