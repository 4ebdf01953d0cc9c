/* Crash safety: a child process runs process / diff / merge and is SIGKILLed at each named
 * step (VMSNAP_CRASH_AT). Afterwards the snapshot must read back byte-exact as the previous
 * generation (crash before the header rename) or the new one (after it) — never a mix —
 * and the next operation must succeed and leave no leftovers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmsnap/mem.h>

#include "memmodel.h"
#include "testlib.h"

static const char *const steps[] = {"data", "hashes", "linked", "header", "committed",
                                    "cleaned"};
#define N_STEPS 6
#define FIRST_NEW_STEP 3 /* "header": the rename has happened */

enum op { OP_PROCESS, OP_DIFF_IN_PLACE, OP_DIFF_NEW_DIR, OP_MERGE, OP_AUTOMERGE };
static const char *const op_names[] = {"process", "diff", "diff", "merge", "merge"};

struct scene {
        char *root, *mem, *parent, *target;
        struct memmodel before, after;
};

static void run_op(enum op op, struct scene *s)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_opts o = {.merge_cap = op == OP_AUTOMERGE ? 2 : 8};
        int r;
        switch (op) {
        case OP_PROCESS:
                r = vmsnap_mem_process(s->mem, s->target, NULL, NULL, &d);
                break;
        case OP_MERGE:
                r = vmsnap_mem_merge(s->target, NULL, &d);
                break;
        default:
                r = vmsnap_mem_diff(s->mem, s->target, s->parent, &o, NULL, &d);
        }
        if (r < 0) {
                fprintf(stderr, "op failed: %s\n", d.msg);
                _exit(3);
        }
}

/* Runs op in a child told to die at `point`; returns true when it was killed there. */
static bool crash_at(enum op op, struct scene *s, const char *point)
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                setenv("VMSNAP_CRASH_AT", point, 1);
                run_op(op, s);
                _exit(0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

/* Builds the state before the operation: generation 0 (and 1 for merges) in `parent`. */
static void setup_scene(struct scene *s, enum op op, uint64_t seed)
{
        struct vmsnap_diag d = {0};
        uint64_t rng = seed;
        s->root = test_mkdtemp("crash");
        s->mem = test_path(s->root, "mem");
        s->parent = test_path(s->root, "parent");
        memmodel_init(&s->before, 4096, 64);
        memmodel_randomize(&s->before, &rng);
        memmodel_write_full(&s->before, s->mem, &rng);
        memmodel_clean(&s->before);
        if (op != OP_PROCESS)
                assert_int_equal(vmsnap_mem_process(s->mem, s->parent, NULL, NULL, &d), 0);
        if (op == OP_MERGE || op == OP_AUTOMERGE) {
                memmodel_mutate(&s->before, &rng, 10);
                memmodel_write_full(&s->before, s->mem, &rng);
                assert_int_equal(vmsnap_mem_diff(s->mem, s->parent, s->parent, NULL, NULL, &d),
                                 0);
        }
        memmodel_copy(&s->after, &s->before);
        if (op != OP_MERGE) {
                memmodel_mutate(&s->after, &rng, 10);
                memmodel_write_full(&s->after, s->mem, &rng);
        }
        s->target = op == OP_DIFF_NEW_DIR || op == OP_PROCESS ? test_path(s->root, "target")
                                                              : strdup(s->parent);
}

static void free_scene(struct scene *s)
{
        test_rmtree(s->root);
        free(s->root);
        free(s->mem);
        free(s->parent);
        free(s->target);
        memmodel_free(&s->before);
        memmodel_free(&s->after);
}

static bool has_header(const char *dir)
{
        char *p = test_path(dir, VMSNAP_MEM_HEADER_NAME);
        bool yes = access(p, F_OK) == 0;
        free(p);
        return yes;
}

/* Only the files the header references remain (plus nothing temporary). */
static void assert_no_leftovers(const char *dir)
{
        struct vmsnap_diag d = {0};
        char **files;
        assert_int_equal(vmsnap_mem_files(dir, &files, &d), 0);
        DIR *dh = opendir(dir);
        struct dirent *e;
        while ((e = readdir(dh))) {
                if (e->d_name[0] == '.' && (!e->d_name[1] || !strcmp(e->d_name, "..")))
                        continue;
                bool listed = false;
                for (size_t i = 0; files[i]; i++)
                        listed |= strcmp(files[i], e->d_name) == 0;
                if (!listed)
                        fail_msg("%s: leftover file %s", dir, e->d_name);
        }
        closedir(dh);
        vmsnap_mem_files_free(files);
}

static void check_after_crash(struct scene *s, enum op op, int step)
{
        /* An automatic merge runs after its diff committed: the new content is already in. */
        bool new_state = step >= FIRST_NEW_STEP || op == OP_AUTOMERGE;
        if (op == OP_DIFF_NEW_DIR) /* the parent is never touched */
                assert_true(memmodel_matches(&s->before, s->parent));
        if (new_state) {
                assert_true(memmodel_matches(&s->after, s->target));
        } else if (op == OP_PROCESS || op == OP_DIFF_NEW_DIR) {
                assert_false(has_header(s->target)); /* nothing half-made is visible */
        } else {
                assert_true(memmodel_matches(&s->before, s->target));
        }
}

static void crash_every_step(enum op op)
{
        for (int step = 0; step < N_STEPS; step++) {
                struct scene s;
                setup_scene(&s, op, 0xc0ffee00u + (unsigned)step);
                char point[64];
                snprintf(point, sizeof(point), "%s.%s", op_names[op], steps[step]);
                if (!crash_at(op, &s, point))
                        fail_msg("the child was not killed at %s", point);
                check_after_crash(&s, op, step);
                /* Recovery: doing the operation again (or the next one) works, cleanly. */
                if (step < FIRST_NEW_STEP || op == OP_MERGE || op == OP_AUTOMERGE)
                        run_op(op == OP_AUTOMERGE ? OP_MERGE : op, &s);
                assert_true(memmodel_matches(&s.after, s.target));
                struct vmsnap_diag d = {0};
                assert_int_equal(vmsnap_mem_verify(s.target, NULL, NULL, &d), 0);
                assert_no_leftovers(s.target);
                free_scene(&s);
        }
}

static void test_crash_process(void **state)
{
        (void)state;
        crash_every_step(OP_PROCESS);
}

static void test_crash_diff_in_place(void **state)
{
        (void)state;
        crash_every_step(OP_DIFF_IN_PLACE);
}

static void test_crash_diff_new_dir(void **state)
{
        (void)state;
        crash_every_step(OP_DIFF_NEW_DIR);
}

static void test_crash_merge(void **state)
{
        (void)state;
        crash_every_step(OP_MERGE);
}

static void test_crash_automerge(void **state)
{
        (void)state;
        crash_every_step(OP_AUTOMERGE);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_crash_process),
                cmocka_unit_test(test_crash_diff_in_place),
                cmocka_unit_test(test_crash_diff_new_dir),
                cmocka_unit_test(test_crash_merge),
                cmocka_unit_test(test_crash_automerge),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
