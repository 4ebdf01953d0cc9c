/* Crash safety and concurrency on real files: a child process is SIGKILLed (VMSNAP_CRASH_AT)
 * at every step of create, import and delete; the parent reopens the store and checks that
 * nothing is half-visible and nothing needed is lost, that GC clears the leftovers, and that
 * the operation then succeeds. Two processes create (and collide on names) at once; a GC
 * with no grace period runs against a creating process without taking anything from it.
 * The parent never holds a store open across fork. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

#include "test-store-lib.h"

struct fx {
        char *tmp;
        char *mem, *snapfile, *archive;
};

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("store-crash");
        f->mem = test_path(f->tmp, "mem");
        f->snapfile = test_path(f->tmp, "snapfile");
        f->archive = test_path(f->tmp, "base.tar.zst");
        make_memfile(f->mem, 21, 6);
        test_write_file(f->snapfile, "device state", 12);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        test_rmtree(f->tmp);
        free(f->mem);
        free(f->snapfile);
        free(f->archive);
        free(f->tmp);
        free(f);
        return 0;
}

/* A store at <tmp>/<tag> holding "base" (a template) and, when child, "child" over it.
 * Leaves the mutated memory image in f->mem. Returns the root (malloc'd). */
static char *make_store(struct fx *f, const char *tag, bool child)
{
        char *root = test_path(f->tmp, tag);
        struct vmsnap_store *s = store_open_or_die(root);
        struct vmsnap_snapshot base, c;
        struct vmsnap_diag d = {0};
        make_memfile(f->mem, 21, 6);
        if (add_snapshot(s, f->mem, "base", VMSNAP_SNAPSHOT_TEMPLATE, NULL, &base, &d) < 0)
                die("base: %s", d.msg);
        mutate_memfile(f->mem, 22);
        if (child && add_snapshot(s, f->mem, "child", VMSNAP_SNAPSHOT_PAUSE, base.id, &c, &d) < 0)
                die("child: %s", d.msg);
        vmsnap_store_close(s);
        return root;
}

/* Runs op in a child with VMSNAP_CRASH_AT=point; true when it was killed there. */
static bool crash_at(const char *point, void (*op)(struct fx *f, const char *root), struct fx *f,
                     const char *root)
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                setenv("VMSNAP_CRASH_AT", point, 1);
                op(f, root);
                _exit(0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
                fail_msg("%s: the child failed before the crash point", point);
        return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

static void op_add_child(struct fx *f, const char *root)
{
        struct vmsnap_store *s = store_open_or_die(root);
        struct vmsnap_snapshot base;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_resolve(s, "base", &base, &d) < 0)
                _exit(3);
        struct vmsnap_snapshot_spec spec = {.name = "child", .parent_id = base.id};
        if (vmsnap_store_add(s, &spec, f->mem, f->snapfile, NULL, NULL, &d) < 0) {
                fprintf(stderr, "add: %s\n", d.msg);
                _exit(4);
        }
        vmsnap_store_close(s);
}

/* After a crash: reopen, check the invariant, check visibility, GC, and redo the work. */
static void after_crash(struct fx *f, const char *root, const char *point, bool visible,
                        void (*redo)(struct fx *f, const char *root), size_t ready_after)
{
        struct vmsnap_store *s = store_open_or_die(root);
        size_t ready = check_consistent(s);
        struct vmsnap_snapshot r;
        int found = vmsnap_store_resolve(s, "child", &r, NULL);
        if (visible != (found == 0))
                fail_msg("%s: child %s visible after reopen", point, visible ? "not" : "is");
        struct vmsnap_gc_opts o = {.grace = 0};
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_store_gc(s, &o, NULL, &d), 0);
        assert_int_equal(check_consistent(s), ready);
        assert_int_equal(count_rows(s, VMSNAP_LIST_ALL), ready); /* no leftovers */
        char *snaps = test_path(root, "snapshots");
        assert_int_equal(count_entries(snaps), (int)ready);
        free(snaps);
        vmsnap_store_close(s);
        if (!visible && redo) {
                redo(f, root);
                s = store_open_or_die(root);
                assert_int_equal(check_consistent(s), ready_after);
                vmsnap_store_close(s);
        }
}

static void test_crash_create(void **state)
{
        struct fx *f = *state;
        static const struct {
                const char *point;
                bool visible;
        } points[] = {
            {"store.begin", false},        {"diff.data", false},
            {"diff.header", false},        {"diff.committed", false},
            {"store.add.mem", false},      {"store.add.snapfile", false},
            {"store.commit.files", false}, {"store.commit.envelope", true},
            {"store.commit.ready", true},
        };
        for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
                char tag[32];
                snprintf(tag, sizeof(tag), "create-%zu", i);
                char *root = make_store(f, tag, false);
                if (!crash_at(points[i].point, op_add_child, f, root))
                        fail_msg("%s: crash point not reached", points[i].point);
                after_crash(f, root, points[i].point, points[i].visible, op_add_child, 2);
                free(root);
        }
}

static void op_import(struct fx *f, const char *root)
{
        struct vmsnap_store *s = store_open_or_die(root);
        int fd = open(f->archive, O_RDONLY | O_CLOEXEC);
        struct vmsnap_import_opts o = {.name = "child"};
        struct vmsnap_diag d = {0};
        if (vmsnap_store_import_fd(s, fd, &o, NULL, &d) < 0) {
                fprintf(stderr, "import: %s\n", d.msg);
                _exit(4);
        }
        close(fd);
        vmsnap_store_close(s);
}

static void test_crash_import(void **state)
{
        struct fx *f = *state;
        /* the archive: "child" of a source store, exported once */
        char *src = make_store(f, "source", true);
        struct vmsnap_store *s = store_open_or_die(src);
        struct vmsnap_snapshot c;
        assert_int_equal(vmsnap_store_resolve(s, "child", &c, NULL), 0);
        int fd = open(f->archive, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_int_equal(vmsnap_store_export_fd(s, c.id, fd, NULL, NULL), 0);
        close(fd);
        vmsnap_store_close(s);
        static const struct {
                const char *point;
                bool visible;
        } points[] = {
            {"store.begin", false},        {"store.import.envelope", false},
            {"store.import.data", false},  {"store.import.verified", false},
            {"store.commit.files", false}, {"store.commit.envelope", true},
            {"store.commit.ready", true},
        };
        for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
                char tag[32];
                snprintf(tag, sizeof(tag), "import-%zu", i);
                char *root = test_path(f->tmp, tag);
                struct vmsnap_store *empty = store_open_or_die(root);
                vmsnap_store_close(empty);
                if (!crash_at(points[i].point, op_import, f, root))
                        fail_msg("%s: crash point not reached", points[i].point);
                after_crash(f, root, points[i].point, points[i].visible, op_import, 1);
                free(root);
        }
        free(src);
}

static void op_delete_child(struct fx *f, const char *root)
{
        (void)f;
        struct vmsnap_store *s = store_open_or_die(root);
        struct vmsnap_snapshot c;
        struct vmsnap_diag d = {0};
        if (vmsnap_store_resolve(s, "child", &c, &d) < 0 ||
            vmsnap_store_delete(s, c.id, 0, &d) < 0) {
                fprintf(stderr, "delete: %s\n", d.msg);
                _exit(4);
        }
        vmsnap_store_close(s);
}

static void test_crash_delete(void **state)
{
        struct fx *f = *state;
        static const char *const points[] = {"store.delete.marked", "store.delete.envelope",
                                             "store.delete.files", "store.delete.done"};
        for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
                char tag[32];
                snprintf(tag, sizeof(tag), "delete-%zu", i);
                char *root = make_store(f, tag, true);
                if (!crash_at(points[i], op_delete_child, f, root))
                        fail_msg("%s: crash point not reached", points[i]);
                /* the delete was decided: after reopen it is finished, base untouched */
                after_crash(f, root, points[i], false, NULL, 1);
                struct vmsnap_store *s = store_open_or_die(root);
                struct vmsnap_snapshot base;
                struct vmsnap_diag d = {0};
                assert_int_equal(vmsnap_store_resolve(s, "base", &base, &d), 0);
                assert_int_equal(vmsnap_store_delete(s, base.id, 0, &d), 0); /* no dependent */
                vmsnap_store_close(s);
                free(root);
        }
}

/* ---- concurrency -------------------------------------------------------------------------- */

#define PER_PROCESS 12

/* Creates own-<tag>-<i> and tries shared-<i>; writes how many shared names it won. */
static void creator(const char *root, char tag, int out)
{
        struct vmsnap_store *s = store_open_or_die(root);
        int won = 0;
        for (int i = 0; i < PER_PROCESS; i++) {
                char name[32];
                struct vmsnap_diag d = {0};
                snprintf(name, sizeof(name), "own-%c-%d", tag, i);
                if (add_plain(s, name, VMSNAP_SNAPSHOT_PAUSE, NULL, NULL, &d) < 0) {
                        fprintf(stderr, "%s: %s\n", name, d.msg);
                        _exit(2);
                }
                snprintf(name, sizeof(name), "shared-%d", i);
                int r = add_plain(s, name, VMSNAP_SNAPSHOT_PAUSE, NULL, NULL, &d);
                if (r == 0)
                        won++;
                else if (r != -EEXIST) {
                        fprintf(stderr, "%s: %s\n", name, d.msg);
                        _exit(3);
                }
        }
        vmsnap_store_close(s);
        if (write(out, &won, sizeof(won)) != sizeof(won))
                _exit(4);
        _exit(0);
}

static void test_concurrent_creates(void **state)
{
        struct fx *f = *state;
        char *root = test_path(f->tmp, "concurrent"); /* does not exist yet: both migrate */
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pids[2];
        for (int k = 0; k < 2; k++) {
                pids[k] = fork();
                if (pids[k] == 0) {
                        close(p[0]);
                        creator(root, (char)('a' + k), p[1]);
                }
        }
        close(p[1]);
        int total = 0;
        for (int k = 0; k < 2; k++) {
                int status, won = 0;
                waitpid(pids[k], &status, 0);
                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
                assert_int_equal(read(p[0], &won, sizeof(won)), sizeof(won));
                total += won;
        }
        close(p[0]);
        assert_int_equal(total, PER_PROCESS); /* each shared name exactly once */
        struct vmsnap_store *s = store_open_or_die(root);
        assert_int_equal(check_consistent(s), 3 * PER_PROCESS);
        assert_int_equal(count_rows(s, VMSNAP_LIST_ALL), 3 * PER_PROCESS);
        vmsnap_store_close(s);
        free(root);
}

/* GC with no grace period, over and over, while another process creates: the lock keeps
 * every create in progress out of GC's reach. */
static void test_gc_races_create(void **state)
{
        struct fx *f = *state;
        char *root = test_path(f->tmp, "gcrace");
        vmsnap_store_close(store_open_or_die(root));
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t maker = fork();
        if (maker == 0) {
                close(p[0]);
                creator(root, 'm', p[1]);
        }
        close(p[1]);
        pid_t gcer = fork();
        if (gcer == 0) {
                struct vmsnap_store *s = store_open_or_die(root);
                struct vmsnap_gc_opts o = {.grace = 0};
                /* until the maker is done (or clearly stuck: a bounded loop, no timing) */
                for (int i = 0; i < 100000 && count_rows(s, 0) < 2 * PER_PROCESS; i++)
                        if (vmsnap_store_gc(s, &o, NULL, NULL) < 0)
                                _exit(2);
                vmsnap_store_close(s);
                _exit(0);
        }
        int status, won;
        waitpid(maker, &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_int_equal(read(p[0], &won, sizeof(won)), sizeof(won));
        close(p[0]);
        waitpid(gcer, &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        struct vmsnap_store *s = store_open_or_die(root);
        assert_int_equal(check_consistent(s), 2 * PER_PROCESS);
        vmsnap_store_close(s);
        free(root);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_crash_create, setup, teardown),
    cmocka_unit_test_setup_teardown(test_crash_import, setup, teardown),
    cmocka_unit_test_setup_teardown(test_crash_delete, setup, teardown),
    cmocka_unit_test_setup_teardown(test_concurrent_creates, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_races_create, setup, teardown),
};

int main(void)
{
        return cmocka_run_group_tests(tests, NULL, NULL);
}
