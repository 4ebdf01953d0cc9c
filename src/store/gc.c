/* GC: dead pending creates past the grace period, row-less directories without a valid
 * envelope, staged-write leftovers and diff files no header references inside ready
 * snapshots, and, under a disk budget, the least-recently-used templates nothing depends on.
 * Never a directory with a valid envelope and no row (that is a snapshot the index lost:
 * reported as unindexed, for reindex). Everything it would touch is taken under the store
 * lock with LOCK_NB; what is busy is skipped. Rules: docs/store.md. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

#include <vmsnap/disk.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct gc {
        struct vmsnap_store *s;
        const struct vmsnap_gc_opts *o;
        int64_t cutoff; /* older than this (unix seconds) is past the grace period */
        struct vmsnap_gc_result res;
};

static void report(struct gc *g, const char *what, const char *id, const char *name, uint64_t bytes,
                   bool counted)
{
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/" STORE_SNAPSHOTS_DIR "/%s%s%s", g->s->root, id,
                 name ? "/" : "", name ? name : "");
        if (counted) {
                g->res.items++;
                g->res.bytes += bytes;
        }
        if (g->o->fn) {
                struct vmsnap_gc_item it = {.what = what, .id = id, .path = path, .bytes = bytes};
                g->o->fn(g->o->ctx, &it);
        }
}

/* Names under snapshots/ (or locks/) that are ids; everything else is not ours. */
static int list_ids(int dirfd, char ***ret, size_t *ret_n)
{
        char **v;
        size_t n, k = 0;
        int r = store_list_names(dirfd, &v, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (store_id_valid(v[i]))
                        v[k++] = v[i];
                else
                        free(v[i]);
        }
        v[k] = NULL;
        *ret = v;
        *ret_n = k;
        return 0;
}

/* ---- pending rows ------------------------------------------------------------------------- */

static void collect_pending(struct gc *g)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (store_prepare(g->s,
                          "SELECT id FROM snapshots WHERE state = 'pending' AND "
                          "state_changed <= ?1 ORDER BY id",
                          &st, NULL) < 0)
                return;
        sqlite3_bind_int64(st, 1, g->cutoff);
        char **ids = calloc(1, sizeof(*ids));
        size_t n = 0;
        while (ids && sqlite3_step(st) == SQLITE_ROW) {
                char **nv = realloc(ids, (n + 2) * sizeof(*ids));
                if (!nv)
                        break;
                ids = nv;
                ids[n] = strdup((const char *)sqlite3_column_text(st, 0));
                ids[n + 1] = NULL;
                if (ids[n])
                        n++;
        }
        sqlite3_finalize(TAKE_PTR(st));
        for (size_t i = 0; ids && i < n; i++) {
                int lock = store_lock_take(g->s, ids[i], true);
                if (lock < 0)
                        continue; /* its creator is alive */
                struct vmsnap_snapshot r;
                if (store_row_get(g->s, ids[i], &r, NULL) == 0 &&
                    r.state == VMSNAP_SNAPSHOT_PENDING) {
                        _cleanup_close_ int fd = store_open_snapdir(g->s, ids[i]);
                        report(g, "pending", ids[i], NULL, fd < 0 ? 0 : store_dir_allocated(fd),
                               true);
                        if (!g->o->dry_run)
                                store_pending_remove(g->s, ids[i], NULL);
                }
                store_lock_release(g->s, ids[i], lock);
        }
        store_strv_free(ids);
}

/* ---- directories -------------------------------------------------------------------------- */

/* True when dirfd holds a whole snapshot by its envelope: valid, naming id, files present
 * with their sizes. */
static bool whole_snapshot(int dirfd, const char *id)
{
        struct store_envelope env;
        if (store_envelope_load(dirfd, &env, NULL) < 0)
                return false;
        bool ok = strcmp(env.rec.id, id) == 0 &&
                  store_envelope_check(dirfd, &env, false, NULL, NULL, NULL) == 0;
        store_envelope_clear(&env);
        return ok;
}

static void collect_orphan(struct gc *g, const char *id)
{
        int lock = store_lock_take(g->s, id, true);
        if (lock < 0)
                return;
        struct vmsnap_snapshot r;
        _cleanup_close_ int fd = store_open_snapdir(g->s, id);
        struct stat st;
        if (fd >= 0 && store_row_get(g->s, id, &r, NULL) == -ENOENT && fstat(fd, &st) == 0) {
                if (whole_snapshot(fd, id))
                        report(g, "unindexed", id, NULL, store_dir_allocated(fd), false);
                else if (st.st_mtime <= g->cutoff) {
                        report(g, "orphan-dir", id, NULL, store_dir_allocated(fd), true);
                        if (!g->o->dry_run)
                                store_remove_snapdir(g->s, id, NULL, NULL);
                }
        }
        store_lock_release(g->s, id, lock);
}

static bool old_file(struct gc *g, int dirfd, const char *name, struct stat *st)
{
        return fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st->st_mode) &&
               st->st_mtime <= g->cutoff;
}

/* memfile, memfile.<uuid> or memfile.<uuid>.hashes: names of the memory layer's data. */
static bool diff_file_name(const char *name)
{
        if (strcmp(name, "memfile") == 0)
                return true;
        if (strncmp(name, "memfile.", 8) != 0 || strlen(name) < 8 + 36)
                return false;
        char id[37];
        memcpy(id, name + 8, 36);
        id[36] = '\0';
        struct vmsnap_uuid u;
        const char *rest = name + 8 + 36;
        return vmsnap_uuid_parse(id, &u) == 0 && (!rest[0] || strcmp(rest, ".hashes") == 0);
}

/* Whether name is a file the v2 header in dirfd uses (diff file or hash table of a build
 * in its table). Parsing the header alone is enough: no diff file is opened. Returns 1, 0,
 * or -errno when the header cannot tell (missing, v1, damaged: then nothing is collected). */
static int header_uses(const struct vmsnap_mem_header *h, const char *name)
{
        for (uint32_t i = 0; i < h->n_builds; i++) {
                char diff[64], hashes[80];
                vmsnap_mem_diff_name(&h->builds[i].id, diff);
                snprintf(hashes, sizeof(hashes), "%s.hashes", diff);
                if (strcmp(name, diff) == 0 || strcmp(name, hashes) == 0)
                        return 1;
        }
        return 0;
}

static struct vmsnap_mem_header *load_header(int dirfd)
{
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len;
        struct vmsnap_mem_header *h = NULL;
        if (vmsnap_fs_read_file(dirfd, VMSNAP_MEM_HEADER_NAME, 1u << 30, &buf, &len) < 0 ||
            vmsnap_mem_header_parse(buf, len, VMSNAP_MEM_HEADER_NAME, &h, NULL) < 0)
                return NULL;
        if (h->version != 2) { /* v1 may name its base build's file "memfile": leave it */
                vmsnap_mem_header_free(h);
                return NULL;
        }
        return h;
}

static bool in_list(char **v, const char *name)
{
        for (size_t i = 0; v && v[i]; i++)
                if (strcmp(v[i], name) == 0)
                        return true;
        return false;
}

/* Drops name from the envelope (rewritten atomically) when it is listed there. */
static int unlist(int dirfd, const char *name)
{
        struct store_envelope env;
        int r = store_envelope_load(dirfd, &env, NULL);
        if (r < 0)
                return r;
        const struct vmsnap_snapshot_file *f = store_envelope_find(&env, name);
        if (f && env.n_files > 1) {
                size_t i = (size_t)(f - env.files);
                memmove(&env.files[i], &env.files[i + 1],
                        (env.n_files - i - 1) * sizeof(*env.files));
                env.n_files--;
                r = store_envelope_write(dirfd, &env, NULL);
        } else if (f) {
                r = -EINVAL;
        }
        store_envelope_clear(&env);
        return r;
}

static void update_size(struct gc *g, const char *id, int dirfd)
{
        if (store_tx_begin(g->s, NULL) < 0)
                return;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (store_prepare(g->s, "UPDATE snapshots SET size_bytes = ?1 WHERE id = ?2", &st, NULL) ==
            0) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)store_dir_allocated(dirfd));
                sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
                sqlite3_step(st);
        }
        store_tx_commit(g->s, NULL);
}

/* Inside a ready snapshot: old temp files, and diff/hash files its header does not use. */
static void collect_inside(struct gc *g, const char *id)
{
        int lock = store_lock_take(g->s, id, true);
        if (lock < 0)
                return;
        _cleanup_close_ int fd = store_open_snapdir(g->s, id);
        char **all = NULL;
        size_t n_all = 0;
        struct vmsnap_mem_header *used = NULL;
        bool changed = false;
        if (fd >= 0 && store_list_names(fd, &all, &n_all) == 0) {
                /* A header that does not parse is verify's business, not GC's: then no
                 * diff file counts as unreferenced. */
                used = in_list(all, VMSNAP_MEM_HEADER_NAME) ? load_header(fd) : NULL;
                for (size_t i = 0; i < n_all; i++) {
                        struct stat st;
                        const char *name = all[i];
                        bool temp = name[0] == '.';
                        bool diff = used && diff_file_name(name) && !header_uses(used, name);
                        if (!(temp || diff) || !old_file(g, fd, name, &st))
                                continue;
                        int u = diff && !g->o->dry_run ? unlist(fd, name) : 0;
                        if (u < 0 && u != -ENOENT)
                                continue;
                        report(g, temp ? "temp-file" : "unreferenced-diff", id, name,
                               (uint64_t)st.st_blocks * 512, true);
                        if (!g->o->dry_run && unlinkat(fd, name, 0) == 0)
                                changed = true;
                }
        }
        if (changed)
                update_size(g, id, fd);
        vmsnap_mem_header_free(used);
        store_strv_free(all);
        store_lock_release(g->s, id, lock);
}

static void collect_dirs(struct gc *g)
{
        char **ids;
        size_t n;
        if (list_ids(g->s->snapfd, &ids, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                struct vmsnap_snapshot r;
                int e = store_row_get(g->s, ids[i], &r, NULL);
                if (e == -ENOENT)
                        collect_orphan(g, ids[i]);
                else if (e == 0 && r.state == VMSNAP_SNAPSHOT_READY)
                        collect_inside(g, ids[i]);
        }
        store_strv_free(ids);
}

/* Lock files nobody holds (left by crashes) go; held ones stay. */
static void collect_locks(struct gc *g)
{
        char **ids;
        size_t n;
        if (g->o->dry_run || list_ids(g->s->lockfd, &ids, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                int lock = store_lock_take(g->s, ids[i], true);
                if (lock >= 0)
                        store_lock_release(g->s, ids[i], lock);
        }
        store_strv_free(ids);
}

/* Temporary files of base images an import was staging in <root>/images when it died
 * (older than the grace period: a running import's own is younger). Pinned images stay. */
static void collect_image_temps(struct gc *g)
{
        _cleanup_close_ int fd = openat(g->s->rootfd, VMSNAP_IMAGES_DIR,
                                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        char **names;
        size_t n;
        if (fd < 0 || store_list_names(fd, &names, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (names[i][0] != '.' || !old_file(g, fd, names[i], &st))
                        continue;
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s/" VMSNAP_IMAGES_DIR "/%s", g->s->root, names[i]);
                g->res.items++;
                g->res.bytes += (uint64_t)st.st_blocks * 512;
                if (g->o->fn) {
                        struct vmsnap_gc_item it = {.what = "temp-file", .id = VMSNAP_IMAGES_DIR,
                                                    .path = path,
                                                    .bytes = (uint64_t)st.st_blocks * 512};
                        g->o->fn(g->o->ctx, &it);
                }
                if (!g->o->dry_run)
                        unlinkat(fd, names[i], 0);
        }
        store_strv_free(names);
}

/* ---- disk usage (each inode once) and LRU eviction ---------------------------------------- */

struct inode {
        dev_t dev;
        ino_t ino;
        uint64_t bytes;
        nlink_t links, gone;
};

struct usage {
        struct inode *v;
        size_t n;
        uint64_t total;
};

static int cmp_inode(const void *a, const void *b)
{
        const struct inode *x = a, *y = b;
        if (x->dev != y->dev)
                return x->dev < y->dev ? -1 : 1;
        return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Calls fn for each regular file's stat in snapshots/<id>. */
static void for_each_stat(struct vmsnap_store *s, const char *id,
                          void (*fn)(void *ctx, const struct stat *st), void *ctx)
{
        _cleanup_close_ int fd = store_open_snapdir(s, id);
        char **names;
        size_t n;
        if (fd < 0 || store_list_names(fd, &names, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (fstatat(fd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                        fn(ctx, &st);
        }
        store_strv_free(names);
}

static void usage_add(void *ctx, const struct stat *st)
{
        struct usage *u = ctx;
        struct inode *nv = realloc(u->v, (u->n + 1) * sizeof(*nv));
        if (!nv)
                return;
        u->v = nv;
        u->v[u->n++] =
            (struct inode){st->st_dev, st->st_ino, (uint64_t)st->st_blocks * 512, st->st_nlink, 0};
}

/* Real disk usage of every directory under snapshots/, each inode counted once. */
static void usage_build(struct vmsnap_store *s, struct usage *u)
{
        memset(u, 0, sizeof(*u));
        char **ids;
        size_t n;
        if (list_ids(s->snapfd, &ids, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++)
                for_each_stat(s, ids[i], usage_add, u);
        store_strv_free(ids);
        if (!u->v)
                return;
        qsort(u->v, u->n, sizeof(*u->v), cmp_inode);
        size_t k = 0;
        for (size_t i = 0; i < u->n; i++) {
                if (k > 0 && cmp_inode(&u->v[k - 1], &u->v[i]) == 0)
                        continue;
                u->v[k++] = u->v[i];
                u->total += u->v[i].bytes;
        }
        u->n = k;
}

struct evict_sum {
        struct usage *u;
        uint64_t freed;
};

/* One more link of this inode goes; its blocks are freed with its last link. */
static void evict_file(void *ctx, const struct stat *st)
{
        struct evict_sum *e = ctx;
        struct inode key = {.dev = st->st_dev, .ino = st->st_ino};
        struct inode *in = bsearch(&key, e->u->v, e->u->n, sizeof(key), cmp_inode);
        if (in && ++in->gone == in->links)
                e->freed += in->bytes;
}

/* True when every dependent of id is itself in evicted (a dry run deletes nothing). */
static bool evictable(struct gc *g, const char *id, char **evicted)
{
        struct vmsnap_dependent *deps;
        size_t n;
        if (vmsnap_store_dependents(g->s, id, &deps, &n, NULL) < 0)
                return false;
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++)
                ok = in_list(evicted, deps[i].id);
        free(deps);
        return ok;
}

static int lru_templates(struct gc *g, char ***ret, size_t *ret_n)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = store_prepare(g->s,
                              "SELECT id FROM snapshots WHERE state = 'ready' AND "
                              "kind = 'template' ORDER BY last_accessed, created, id",
                              &st, NULL);
        if (r < 0)
                return r;
        char **v = calloc(1, sizeof(*v));
        size_t n = 0;
        while (v && sqlite3_step(st) == SQLITE_ROW) {
                char **nv = realloc(v, (n + 2) * sizeof(*v));
                if (!nv)
                        break;
                v = nv;
                if ((v[n] = strdup((const char *)sqlite3_column_text(st, 0))))
                        n++;
                v[n] = NULL;
        }
        if (!v)
                return -ENOMEM;
        *ret = v;
        *ret_n = n;
        return 0;
}

/* Evicts templates, least recently used first, while usage is above the budget. */
static void collect_lru(struct gc *g, struct usage *u)
{
        char **cands;
        size_t n;
        if (u->total <= g->o->budget || lru_templates(g, &cands, &n) < 0)
                return;
        char **evicted = calloc(n + 1, sizeof(*evicted));
        size_t k = 0;
        uint64_t usage = u->total;
        bool progress = true;
        while (evicted && usage > g->o->budget && progress) {
                progress = false;
                for (size_t i = 0; i < n && usage > g->o->budget; i++) {
                        if (in_list(evicted, cands[i]) || !evictable(g, cands[i], evicted))
                                continue;
                        struct evict_sum e = {.u = u};
                        for_each_stat(g->s, cands[i], evict_file, &e);
                        if (!g->o->dry_run && vmsnap_store_delete(g->s, cands[i], 0, NULL) < 0)
                                continue; /* raced with a user: skip it this time */
                        report(g, "template-lru", cands[i], NULL, e.freed, true);
                        evicted[k++] = cands[i];
                        usage -= MIN(usage, e.freed);
                        progress = true;
                        break; /* restart: LRU order first, dependents may have cleared */
                }
        }
        free(evicted);
        store_strv_free(cands);
}

int vmsnap_store_gc(struct vmsnap_store *s, const struct vmsnap_gc_opts *opts,
                    struct vmsnap_gc_result *ret, struct vmsnap_diag *d)
{
        struct vmsnap_gc_opts none = {.grace = -1};
        struct gc g = {.s = s, .o = opts ? opts : &none};
        if (!s)
                return vmsnap_diag(d, -EINVAL, "gc: no store");
        int64_t grace = g.o->grace < 0 ? VMSNAP_GC_DEFAULT_GRACE : g.o->grace;
        g.cutoff = store_now() - grace;
        struct usage u;
        usage_build(s, &u);
        g.res.usage_before = u.total;
        collect_pending(&g);
        collect_dirs(&g);
        collect_locks(&g);
        collect_image_temps(&g);
        if (g.o->budget > 0) {
                free(u.v);
                usage_build(s, &u); /* after the removals above */
                if (g.o->dry_run)
                        u.total -= MIN(u.total, g.res.bytes);
                collect_lru(&g, &u);
        }
        free(u.v);
        if (g.o->dry_run) {
                g.res.usage_after = g.res.usage_before - MIN(g.res.usage_before, g.res.bytes);
        } else {
                usage_build(s, &u);
                g.res.usage_after = u.total;
                free(u.v);
        }
        if (ret)
                *ret = g.res;
        return 0;
}
