/* Property test: random sequences of guest writes (zero pages included), diffs from both
 * change sources, in place and into new directories, merges and automatic merges, checked
 * after every step against a brute-force per-block model. Every byte is compared. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmsnap/mem.h>

#include "memmodel.h"
#include "testlib.h"

/* Sequences per run: a fixed count that fits the default suite's budget (docs/testing.md);
 * VMSNAP_TEST_LONG=1 (CTest label `long`) runs the long one, VMSNAP_PROPERTY_SEQUENCES=N any
 * count. Sequence i always uses seed SEED_BASE + i: VMSNAP_PROPERTY_SEQUENCES=i+1 replays it. */
#define SEQUENCES_DEFAULT 100
#define SEQUENCES_LONG    1000
#define SEED_BASE         0x5eed0000ull
#define BLOCKS            48

struct run {
        char *root;
        uint64_t rng;
        unsigned dirs; /* directories made so far in this sequence */
};

static char *new_dir(struct run *r)
{
        char name[32];
        snprintf(name, sizeof(name), "s%u", r->dirs++);
        return test_path(r->root, name);
}

static unsigned current_sequence; /* named in failure messages: replay with count + 1 */

static void must(int rc, const struct vmsnap_diag *d, const char *what)
{
        if (rc < 0)
                fail_msg("sequence %u: %s failed: %s", current_sequence, what, d->msg);
}

/* One generation over the snapshot in *dir; returns the directory that now holds it. */
static char *step(struct run *r, struct memmodel *m, char *dir)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        memmodel_mutate(m, &r->rng, 1 + (unsigned)(test_rand(&r->rng) % 12));
        bool sparse = test_rand(&r->rng) % 2;
        char *mem = test_path(r->root, "mem");
        if (sparse)
                memmodel_write_sparse(m, mem);
        else
                memmodel_write_full(m, mem, &r->rng);
        bool in_place = test_rand(&r->rng) % 3 != 0;
        char *target = in_place ? strdup(dir) : new_dir(r);
        struct vmsnap_mem_opts o = {
                .source = sparse ? VMSNAP_MEM_SOURCE_SPARSE : VMSNAP_MEM_SOURCE_CONTENT,
                .merge_cap = 4};
        must(vmsnap_mem_diff(mem, target, dir, &o, &res, &d), &d, "diff");
        memmodel_clean(m);
        if (test_rand(&r->rng) % 8 == 0)
                must(vmsnap_mem_merge(target, &res, &d), &d, "merge");
        free(mem);
        free(dir);
        return target;
}

static void materialize_matches(struct run *r, const struct memmodel *m, const char *dir)
{
        struct vmsnap_diag d = {0};
        char *out = test_path(r->root, "materialized");
        must(vmsnap_mem_materialize(dir, out, NULL, &d), &d, "materialize");
        size_t len;
        uint8_t *bytes = test_read_file(out, &len);
        assert_non_null(bytes);
        assert_int_equal(len, m->blocks * m->block_size);
        assert_memory_equal(bytes, m->bytes, len);
        free(bytes);
        free(out);
        must(vmsnap_mem_verify(dir, NULL, NULL, &d), &d, "verify");
}

static void one_sequence(struct run *r)
{
        struct vmsnap_diag d = {0};
        struct memmodel m;
        memmodel_init(&m, 4096, BLOCKS);
        memmodel_randomize(&m, &r->rng);
        char *mem = test_path(r->root, "mem");
        memmodel_write_full(&m, mem, &r->rng);
        char *dir = new_dir(r);
        must(vmsnap_mem_process(mem, dir, NULL, NULL, &d), &d, "process");
        memmodel_clean(&m);
        assert_true(memmodel_matches(&m, dir));
        unsigned steps = 1 + (unsigned)(test_rand(&r->rng) % 10);
        for (unsigned i = 0; i < steps; i++) {
                dir = step(r, &m, dir);
                assert_true(memmodel_matches(&m, dir));
        }
        materialize_matches(r, &m, dir);
        free(dir);
        free(mem);
        memmodel_free(&m);
}

/* The number of sequences this run makes (see SEQUENCES_DEFAULT). */
static unsigned sequence_count(void)
{
        const char *n = getenv("VMSNAP_PROPERTY_SEQUENCES");
        if (n && *n) {
                char *end;
                unsigned long v = strtoul(n, &end, 10);
                if (*end || v == 0 || v > 1000000)
                        fail_msg("VMSNAP_PROPERTY_SEQUENCES=%s: expected a count from 1 to 1000000",
                                 n);
                return (unsigned)v;
        }
        const char *long_run = getenv("VMSNAP_TEST_LONG");
        return long_run && strcmp(long_run, "1") == 0 ? SEQUENCES_LONG : SEQUENCES_DEFAULT;
}

static void test_random_sequences(void **state)
{
        (void)state;
        unsigned sequences = sequence_count();
        print_message("%u random sequences (seeds %#llx..%#llx)\n", sequences, SEED_BASE,
                      SEED_BASE + sequences - 1);
        for (unsigned seq = 0; seq < sequences; seq++) {
                current_sequence = seq;
                struct run r = {.root = test_mkdtemp("prop"), .rng = SEED_BASE + seq};
                one_sequence(&r);
                test_rmtree(r.root);
                free(r.root);
        }
}

int main(void)
{
        /* tmpfs keeps a thousand fsynced sequences fast; the data paths are the same. */
        if (!getenv("TMPDIR") && access("/dev/shm", W_OK) == 0)
                setenv("TMPDIR", "/dev/shm", 1);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_random_sequences),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
