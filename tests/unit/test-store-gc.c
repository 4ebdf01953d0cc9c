/* GC and reindex on real stores: the grace period, orphan directories (and the unindexed
 * snapshots GC must keep), leftovers inside snapshots, LRU template eviction under a budget
 * with dependencies and hard-linked files, dry runs that change nothing, and rebuilding a
 * lost index from the directories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>

#include "store/internal.h"
#include "test-store-lib.h"

struct fx {
        char *tmp, *root, *mem;
        struct vmsnap_store *s;
};

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("store-gc");
        f->root = test_path(f->tmp, "root");
        f->mem = test_path(f->tmp, "mem");
        make_memfile(f->mem, 31, 4);
        f->s = store_open_or_die(f->root);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        vmsnap_store_close(f->s);
        test_rmtree(f->tmp);
        free(f->root);
        free(f->mem);
        free(f->tmp);
        free(f);
        return 0;
}

struct seen {
        char what[16][24];
        char id[16][40];
        uint64_t bytes[16];
        int n;
};

static void record(void *ctx, const struct vmsnap_gc_item *it)
{
        struct seen *s = ctx;
        if (s->n == 16)
                return;
        snprintf(s->what[s->n], sizeof(s->what[0]), "%s", it->what);
        snprintf(s->id[s->n], sizeof(s->id[0]), "%s", it->id);
        s->bytes[s->n++] = it->bytes;
}

static struct vmsnap_gc_result gc(struct fx *f, int64_t grace, uint64_t budget, bool dry,
                                  struct seen *seen)
{
        memset(seen, 0, sizeof(*seen));
        struct vmsnap_gc_opts o = {
            .grace = grace, .budget = budget, .dry_run = dry, .fn = record, .ctx = seen};
        struct vmsnap_gc_result res;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_gc(f->s, &o, &res, &d) < 0)
                fail_msg("gc: %s", d.msg);
        return res;
}

static char *snapdir(struct fx *f, const char *id)
{
        char dir[PATH_MAX];
        vmsnap_store_snapshot_dir(f->s, id, dir, sizeof(dir));
        return strdup(dir);
}

static void age(const char *path, int64_t seconds)
{
        struct timespec t[2];
        clock_gettime(CLOCK_REALTIME, &t[0]);
        t[0].tv_sec -= seconds;
        t[1] = t[0];
        assert_int_equal(utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW), 0);
}

static void sql(struct fx *f, const char *text)
{
        assert_int_equal(sqlite3_exec(vmsnap_store_db(f->s), text, NULL, NULL, NULL), SQLITE_OK);
}

/* ---- GC ----------------------------------------------------------------------------------- */

static void test_gc_pending(void **state)
{
        struct fx *f = *state;
        vmsnap_store_close(f->s);
        pid_t pid = fork();
        if (pid == 0) {
                struct vmsnap_store *s = store_open_or_die(f->root);
                struct vmsnap_snapshot_spec spec = {.name = "abandoned"};
                struct vmsnap_store_txn *t;
                if (vmsnap_store_create_begin(s, &spec, &t, NULL) < 0)
                        _exit(1);
                char *p = test_path(vmsnap_store_txn_dir(t), "dump");
                test_write_file(p, "0123456789", 10);
                _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        f->s = store_open_or_die(f->root);
        struct seen seen;
        gc(f, -1, 0, false, &seen); /* default grace: too young */
        assert_int_equal(seen.n, 0);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 1);
        struct vmsnap_gc_result res = gc(f, 0, 0, true, &seen);
        assert_int_equal(seen.n, 1);
        assert_string_equal(seen.what[0], "pending");
        assert_true(seen.bytes[0] > 0);
        assert_int_equal(res.items, 1);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 1); /* dry run */
        gc(f, 0, 0, false, &seen);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 0);
        char *snaps = test_path(f->root, "snapshots");
        assert_int_equal(count_entries(snaps), 0);
        free(snaps);
        struct vmsnap_snapshot r;
        assert_int_equal(add_plain(f->s, "abandoned", VMSNAP_SNAPSHOT_PAUSE, NULL, &r, NULL), 0);
}

static void test_gc_orphans_and_unindexed(void **state)
{
        struct fx *f = *state;
        /* a directory a crash left before its row: no envelope */
        char *orphan = test_path(f->root, "snapshots/abc00000-0000-4000-8000-0000000000aa");
        mkdir(orphan, 0755);
        char *junk = test_path(orphan, "memfile.raw");
        test_write_file(junk, "half", 4);
        /* not ours: left alone whatever its age */
        char *foreign = test_path(f->root, "snapshots/lost+found");
        mkdir(foreign, 0755);
        age(foreign, 7200);
        /* a whole snapshot the index lost */
        struct vmsnap_snapshot lost;
        assert_int_equal(add_plain(f->s, "lost", VMSNAP_SNAPSHOT_PAUSE, NULL, &lost, NULL), 0);
        char q[256];
        snprintf(q, sizeof(q), "DELETE FROM snapshots WHERE id = '%s'", lost.id);
        sql(f, q);
        struct seen seen;
        gc(f, 3600, 0, false, &seen); /* the orphan is younger than the grace period */
        assert_int_equal(access(orphan, F_OK), 0);
        age(orphan, 7200);
        struct vmsnap_gc_result res = gc(f, 3600, 0, false, &seen);
        assert_int_equal(res.items, 1);
        assert_int_equal(seen.n, 2);
        int o = strcmp(seen.what[0], "orphan-dir") == 0 ? 0 : 1;
        assert_string_equal(seen.what[o], "orphan-dir");
        assert_string_equal(seen.what[1 - o], "unindexed");
        assert_string_equal(seen.id[1 - o], lost.id);
        assert_int_equal(access(orphan, F_OK), -1);
        assert_int_equal(access(foreign, F_OK), 0);
        char *lostdir = snapdir(f, lost.id);
        assert_int_equal(access(lostdir, F_OK), 0); /* kept */
        struct vmsnap_reindex_result rr;
        assert_int_equal(vmsnap_store_reindex(f->s, 0, NULL, NULL, &rr, NULL), 0);
        assert_int_equal(rr.added, 1);
        struct vmsnap_snapshot r;
        assert_int_equal(vmsnap_store_resolve(f->s, "lost", &r, NULL), 0);
        free(lostdir);
        free(junk);
        free(orphan);
        free(foreign);
}

static void test_gc_inside_snapshots(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot r;
        struct vmsnap_diag d = {0};
        /* one unreferenced diff file written before commit, so the envelope lists it */
        struct vmsnap_snapshot_spec spec = {.name = "s"};
        struct vmsnap_store_txn *t;
        assert_int_equal(vmsnap_store_create_begin(f->s, &spec, &t, &d), 0);
        assert_int_equal(vmsnap_mem_process(f->mem, vmsnap_store_txn_dir(t), NULL, NULL, &d), 0);
        char *listed =
            test_path(vmsnap_store_txn_dir(t), "memfile.11111111-2222-4333-8444-555555555555");
        test_write_file(listed, "stale generation", 16);
        assert_int_equal(vmsnap_store_txn_commit(t, &r, &d), 0);
        vmsnap_store_txn_free(t);
        char *dir = snapdir(f, r.id);
        char *tmp = test_path(dir, ".memfile.header.tmp.1.1");
        char *unl = test_path(dir, "memfile.66666666-7777-4888-8999-aaaaaaaaaaaa.hashes");
        char *ws = test_path(dir, "memfile.ws");
        test_write_file(tmp, "x", 1);
        test_write_file(unl, "y", 1);
        test_write_file(ws, "z", 1);
        struct seen seen;
        gc(f, 3600, 0, false, &seen); /* all young */
        assert_int_equal(seen.n, 0);
        age(tmp, 7200), age(unl, 7200), age(ws, 7200), age(listed, 7200);
        struct vmsnap_gc_result res = gc(f, 3600, 0, true, &seen);
        assert_int_equal(res.items, 3);
        assert_int_equal(access(listed, F_OK), 0); /* dry run */
        res = gc(f, 3600, 0, false, &seen);
        assert_int_equal(res.items, 3);
        assert_int_equal(access(tmp, F_OK), -1);
        assert_int_equal(access(unl, F_OK), -1);
        assert_int_equal(access(listed, F_OK), -1);
        assert_int_equal(access(ws, F_OK), 0); /* not a diff file: not GC's */
        /* the envelope no longer lists it, and the snapshot is whole */
        assert_int_equal(vmsnap_store_verify(f->s, r.id, NULL, NULL, &d), 0);
        struct vmsnap_snapshot_file *files;
        size_t n;
        assert_int_equal(vmsnap_store_files(f->s, r.id, &files, &n, &d), 0);
        for (size_t i = 0; i < n; i++)
                assert_null(strstr(files[i].name, "11111111"));
        free(files);
        free(listed);
        free(dir);
        free(tmp);
        free(unl);
        free(ws);
}

/* A base image an import was staging when it died: its temporary file in images/ goes after
 * the grace period; pinned images never do. */
static void test_gc_image_temps(void **state)
{
        struct fx *f = *state;
        char *images = test_path(f->root, "images");
        assert_int_equal(mkdir(images, 0700), 0);
        char *tmp = test_path(images, ".rootfs-0123456789abcdef.ext4.tmp.1.1");
        char *pinned = test_path(images, "rootfs-0123456789abcdef.ext4");
        test_write_file(tmp, "half", 4);
        test_write_file(pinned, "base", 4);
        age(tmp, 7200);
        age(pinned, 7200);
        struct seen seen;
        struct vmsnap_gc_result res = gc(f, 3600, 0, true, &seen);
        assert_int_equal(res.items, 1);
        assert_string_equal(seen.what[0], "temp-file");
        assert_int_equal(access(tmp, F_OK), 0); /* dry run */
        res = gc(f, 3600, 0, false, &seen);
        assert_int_equal(res.items, 1);
        assert_int_equal(access(tmp, F_OK), -1);
        assert_int_equal(access(pinned, F_OK), 0);
        free(tmp);
        free(pinned);
        free(images);
}

static void set_accessed(struct fx *f, const char *id, int64_t t)
{
        char q[256];
        snprintf(q, sizeof(q), "UPDATE snapshots SET last_accessed = %lld WHERE id = '%s'",
                 (long long)t, id);
        sql(f, q);
}

static void test_gc_lru_budget(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot t1, t2, t3, p, c, tp, tc;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_snapshot(f->s, f->mem, "t1", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &t1, &d),
                         0);
        mutate_memfile(f->mem, 1);
        assert_int_equal(add_snapshot(f->s, f->mem, "t2", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &t2, &d),
                         0);
        mutate_memfile(f->mem, 2);
        assert_int_equal(add_snapshot(f->s, f->mem, "c", VMSNAP_SNAPSHOT_PAUSE, t2.id, &c, &d), 0);
        assert_int_equal(add_snapshot(f->s, f->mem, "t3", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &t3, &d),
                         0);
        assert_int_equal(add_snapshot(f->s, f->mem, "p", VMSNAP_SNAPSHOT_PAUSE, NULL, &p, &d), 0);
        mutate_memfile(f->mem, 3);
        assert_int_equal(add_snapshot(f->s, f->mem, "tp", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &tp, &d),
                         0);
        mutate_memfile(f->mem, 4);
        assert_int_equal(add_snapshot(f->s, f->mem, "tc", VMSNAP_SNAPSHOT_TEMPLATE, tp.id, &tc, &d),
                         0);
        set_accessed(f, t2.id, 10); /* least recent, but c depends on it */
        set_accessed(f, tp.id, 20); /* tc depends on it until tc goes */
        set_accessed(f, t1.id, 30);
        set_accessed(f, tc.id, 40);
        set_accessed(f, t3.id, 50);
        struct seen seen;
        /* no budget, or a budget that fits: nothing */
        struct vmsnap_gc_result res = gc(f, 0, 0, false, &seen);
        assert_int_equal(res.items, 0);
        res = gc(f, 0, res.usage_before, false, &seen);
        assert_int_equal(res.items, 0);
        uint64_t usage = res.usage_before;
        /* a budget just under the usage: the LRU template nothing depends on goes (t1) */
        res = gc(f, 0, usage - 1, true, &seen);
        assert_int_equal(seen.n, 1);
        assert_string_equal(seen.what[0], "template-lru");
        assert_string_equal(seen.id[0], t1.id);
        assert_true(seen.bytes[0] > 0);
        assert_int_equal(count_rows(f->s, 0), 7); /* dry run */
        /* a tiny budget: every template nothing depends on, in LRU order; tc before tp */
        res = gc(f, 0, 1, true, &seen);
        assert_int_equal(seen.n, 4);
        assert_string_equal(seen.id[0], t1.id);
        assert_string_equal(seen.id[1], tc.id);
        assert_string_equal(seen.id[2], tp.id);
        assert_string_equal(seen.id[3], t3.id);
        /* tc hard-links tp's diff files: evicting tc alone frees only its own */
        assert_true(seen.bytes[2] > seen.bytes[1]);
        res = gc(f, 0, 1, false, &seen);
        assert_int_equal(seen.n, 4);
        assert_int_equal(count_rows(f->s, 0), 3); /* t2 (needed by c), c, p */
        assert_true(res.usage_after < res.usage_before);
        assert_int_equal(vmsnap_store_resolve(f->s, "t2", &t2, &d), 0);
        assert_int_equal(check_consistent(f->s), 3);
}

/* ---- reindex ------------------------------------------------------------------------------ */

static void test_reindex_lost_database(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot a, b, c;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_snapshot(f->s, f->mem, "a", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &a, &d),
                         0);
        mutate_memfile(f->mem, 5);
        assert_int_equal(add_snapshot(f->s, f->mem, "b", VMSNAP_SNAPSHOT_PAUSE, a.id, &b, &d), 0);
        assert_int_equal(add_plain(f->s, NULL, VMSNAP_SNAPSHOT_PAUSE, NULL, &c, &d), 0);
        vmsnap_store_close(f->s);
        f->s = NULL;
        static const char *const db[] = {"vmsnap.db", "vmsnap.db-wal", "vmsnap.db-shm"};
        for (int i = 0; i < 3; i++) {
                char *p = test_path(f->root, db[i]);
                unlink(p);
                free(p);
        }
        /* and a directory that is no snapshot: a broken envelope */
        char *broken = test_path(f->root, "snapshots/abc00000-0000-4000-8000-0000000000bb");
        mkdir(broken, 0755);
        char *env = test_path(broken, "snapshot.json");
        test_write_file(env, "{\"format\":", 10);
        f->s = store_open_or_die(f->root);
        assert_int_equal(count_rows(f->s, VMSNAP_LIST_ALL), 0);
        struct vmsnap_reindex_result res;
        assert_int_equal(vmsnap_store_reindex(f->s, VMSNAP_REINDEX_VERIFY, NULL, NULL, &res, &d),
                         0);
        assert_int_equal(res.added, 3);
        assert_int_equal(res.skipped, 1);
        struct vmsnap_snapshot r;
        assert_int_equal(vmsnap_store_resolve(f->s, "b", &r, &d), 0);
        assert_string_equal(r.parent_id, a.id);
        assert_int_equal(r.generation, 1);
        assert_int_equal(r.kind, VMSNAP_SNAPSHOT_PAUSE);
        assert_int_equal(vmsnap_store_resolve(f->s, "a", &r, &d), 0);
        assert_int_equal(r.kind, VMSNAP_SNAPSHOT_TEMPLATE);
        assert_int_equal(vmsnap_store_resolve(f->s, c.id, &r, &d), 0);
        assert_string_equal(r.name, "");
        assert_int_equal(check_consistent(f->s), 3);
        /* lineage is back: a cannot go while b needs it */
        assert_int_equal(vmsnap_store_delete(f->s, a.id, 0, &d), -EBUSY);
        /* a second run changes nothing */
        assert_int_equal(vmsnap_store_reindex(f->s, 0, NULL, NULL, &res, &d), 0);
        assert_int_equal(res.added, 0);
        assert_int_equal(res.kept, 3);
        free(env);
        free(broken);
}

static void count_problem(void *ctx, const char *problem)
{
        (void)problem;
        (*(int *)ctx)++;
}

static void test_reindex_rules(void **state)
{
        struct fx *f = *state;
        struct vmsnap_snapshot x, y, gone;
        struct vmsnap_diag d = {0};
        assert_int_equal(add_plain(f->s, "x", VMSNAP_SNAPSHOT_PAUSE, NULL, &x, &d), 0);
        assert_int_equal(add_plain(f->s, "gone", VMSNAP_SNAPSHOT_PAUSE, NULL, &gone, &d), 0);
        char q[256];
        snprintf(q, sizeof(q), "DELETE FROM snapshots WHERE id = '%s'", x.id);
        sql(f, q);
        /* its name is taken meanwhile */
        assert_int_equal(add_plain(f->s, "x", VMSNAP_SNAPSHOT_PAUSE, NULL, &y, &d), 0);
        /* a ready row whose directory vanished */
        char *gdir = snapdir(f, gone.id);
        test_rmtree(gdir);
        /* corruption that keeps sizes: only --verify sees it */
        char *xdir = snapdir(f, x.id), *xf = test_path(xdir, "snapfile");
        test_write_file(xf, "STATE of x", 10);
        int problems = 0;
        struct vmsnap_reindex_result res;
        assert_int_equal(
            vmsnap_store_reindex(f->s, VMSNAP_REINDEX_VERIFY, count_problem, &problems, &res, &d),
            0);
        assert_int_equal(res.added, 0);
        assert_int_equal(res.skipped, 1);
        assert_int_equal(res.removed, 1);
        assert_int_equal(problems, 2);
        assert_int_equal(vmsnap_store_reindex(f->s, 0, count_problem, &problems, &res, &d), 0);
        assert_int_equal(res.added, 1);
        struct vmsnap_snapshot r;
        assert_int_equal(vmsnap_store_get(f->s, x.id, &r, &d), 0);
        assert_string_equal(r.name, ""); /* "x" belongs to y */
        assert_int_equal(vmsnap_store_resolve(f->s, "x", &r, &d), 0);
        assert_string_equal(r.id, y.id);
        free(gdir);
        free(xdir);
        free(xf);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_gc_pending, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_orphans_and_unindexed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_inside_snapshots, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_image_temps, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_lru_budget, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reindex_lost_database, setup, teardown),
    cmocka_unit_test_setup_teardown(test_reindex_rules, setup, teardown),
};

int main(void)
{
        return cmocka_run_group_tests(tests, NULL, NULL);
}
