/* Hostile snapshot directories and headers, as a guest-controlled or imported directory
 * could hold them: a symlink in place of a (seed) diff file is refused, never followed and
 * never copied into a materialized file or a new generation; a FIFO in place of any
 * snapshot file is refused at once, never waited on (each case runs in a child with an
 * alarm, so a hang fails the test instead of stalling it); and a v1 header with many
 * entries over many builds is parsed with O(n log n) build-id comparisons (counted by the
 * library, not timed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "mem/internal.h"
#include "util/cleanup.h"
#include "test-mem-lib.h"
#include "util/ids.h"

#define BS 4096u

struct fx {
        char *root, *dir, *secret, *out;
};

static const char secret_text[] = "root:$6$secret-hash-the-guest-must-never-read:19000::::::\n";

static void le64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++, v >>= 8)
                p[i] = (uint8_t)v;
}

static struct vmsnap_uuid numbered(uint32_t n)
{
        char s[37];
        struct vmsnap_uuid u;
        snprintf(s, sizeof(s), "%08x-7a11-4000-8000-%012x", n, n * 104729u + 3);
        assert_int_equal(vmsnap_uuid_parse(s, &u), 0);
        return u;
}

/* A v1 header of `blocks` 4 KiB blocks: block i is stored by build ids[i % n_ids] at
 * storage offset (i / n_ids) * BS. */
static uint8_t *v1_header(const struct vmsnap_uuid *ids, uint32_t n_ids, uint32_t blocks,
                          size_t *ret_len)
{
        size_t len = 64 + 40 * (size_t)blocks;
        uint8_t *h = calloc(1, len);
        assert_non_null(h);
        le64(h, 1);
        le64(h + 8, BS);
        le64(h + 16, (uint64_t)blocks * BS);
        le64(h + 24, 1);
        memcpy(h + 32, ids[0].b, 16);
        memcpy(h + 48, ids[0].b, 16);
        for (uint32_t i = 0; i < blocks; i++) {
                uint8_t *p = h + 64 + 40 * (size_t)i;
                le64(p, (uint64_t)i * BS);
                le64(p + 8, BS);
                memcpy(p + 16, ids[i % n_ids].b, 16);
                le64(p + 32, (uint64_t)(i / n_ids) * BS);
        }
        *ret_len = len;
        return h;
}

static void write_in(const char *dir, const char *name, const void *buf, size_t len)
{
        char *p = test_path(dir, name);
        test_write_file(p, buf, len);
        free(p);
}

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        f->root = test_mkdtemp("mem-hostile");
        f->dir = test_path(f->root, "snap");
        f->secret = test_path(f->root, "shadow");
        f->out = test_path(f->root, "out");
        assert_int_equal(mkdir(f->dir, 0700), 0);
        /* a host file as large as a diff file, so a followed link would serve every block */
        uint8_t *big = calloc(1, 4 * BS);
        for (size_t off = 0; off < 4 * BS; off += sizeof(secret_text) - 1)
                memcpy(big + off, secret_text,
                       MIN(sizeof(secret_text) - 1, (size_t)(4 * BS - off)));
        test_write_file(f->secret, big, 4 * BS);
        free(big);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        test_rmtree(f->root);
        free(f->root);
        free(f->dir);
        free(f->secret);
        free(f->out);
        free(f);
        return 0;
}

/* True when the host secret appears anywhere in the directory tree's regular files. */
static bool secret_leaked(const char *path)
{
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "grep -rqa -- 'secret-hash-the-guest' '%s' 2>/dev/null", path);
        return system(cmd) == 0;
}

/* A seed (v1) snapshot of two builds whose second diff file is a symlink to a host file. */
static void make_v1_with_symlink(struct fx *f, bool link_base)
{
        struct vmsnap_uuid ids[2] = {numbered(1), numbered(2)};
        size_t len;
        uint8_t *h = v1_header(ids, 2, 4, &len);
        write_in(f->dir, "memfile.header", h, len);
        free(h);
        uint8_t block[2 * BS];
        uint64_t rng = 7;
        test_fill_random(&rng, block, sizeof(block));
        char n2[64];
        vmsnap_mem_diff_name(&ids[1], n2);
        char *p1 = test_path(f->dir, "memfile"), *p2 = test_path(f->dir, n2);
        if (link_base) {
                assert_int_equal(symlink(f->secret, p1), 0);
                test_write_file(p2, block, sizeof(block));
        } else {
                test_write_file(p1, block, sizeof(block));
                assert_int_equal(symlink(f->secret, p2), 0);
        }
        free(p1);
        free(p2);
}

static void assert_symlink_refused(struct fx *f)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s = NULL;
        assert_int_equal(vmsnap_mem_open(f->dir, &s, &d), -EBADMSG);
        assert_null(s);
        assert_msg_has(&d, "symlink");
        assert_int_equal(vmsnap_mem_materialize(f->dir, f->out, NULL, &d), -EBADMSG);
        assert_int_equal(access(f->out, F_OK), -1);
        assert_true(vmsnap_mem_verify(f->dir, NULL, NULL, &d) < 0);
        /* a new generation over it brings nothing of the host file in */
        char *mem = test_path(f->root, "mem"), *next = test_path(f->root, "next");
        uint8_t *zero = calloc(1, 4 * BS);
        test_write_file(mem, zero, 4 * BS);
        free(zero);
        assert_true(vmsnap_mem_diff(mem, next, f->dir, NULL, NULL, &d) < 0);
        assert_false(secret_leaked(next));
        assert_true(vmsnap_mem_merge(f->dir, NULL, &d) < 0);
        assert_false(secret_leaked(f->dir)); /* grep -r: symlinks are not followed */
        free(mem);
        free(next);
}

static void test_symlinked_v1_diff_file(void **state)
{
        struct fx *f = *state;
        make_v1_with_symlink(f, false);
        assert_symlink_refused(f);
}

static void test_symlinked_v1_base_memfile(void **state)
{
        struct fx *f = *state;
        make_v1_with_symlink(f, true);
        assert_symlink_refused(f);
}

/* Runs fn in a child that an alarm kills after 60 s: returns fn's exit status, or fails
 * the test when the child hung (the old code blocked in open() on a FIFO forever). */
static int in_child(int (*fn)(struct fx *), struct fx *f)
{
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                alarm(60);
                _exit(fn(f));
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status))
                fail_msg("the operation hung on a FIFO (killed by signal %d)", WTERMSIG(status));
        return WEXITSTATUS(status);
}

static int open_fails(struct fx *f)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s = NULL;
        int r = vmsnap_mem_open(f->dir, &s, &d);
        return r == -EBADMSG && strstr(d.msg, "not a regular file") ? 0 : 1;
}

static int verify_fails(struct fx *f)
{
        struct vmsnap_diag d = {0};
        return vmsnap_mem_verify(f->dir, NULL, NULL, &d) < 0 ? 0 : 1;
}

static int materialize_fails(struct fx *f)
{
        struct vmsnap_diag d = {0};
        int r = vmsnap_mem_materialize(f->dir, f->out, NULL, &d);
        return r < 0 && access(f->out, F_OK) < 0 ? 0 : 1;
}

/* Each file of a real v2 snapshot in turn replaced by a FIFO. */
static void test_fifo_instead_of_a_file(void **state)
{
        struct fx *f = *state;
        char *mem = test_path(f->root, "mem");
        uint8_t buf[8 * BS];
        uint64_t rng = 11;
        test_fill_random(&rng, buf, sizeof(buf));
        test_write_file(mem, buf, sizeof(buf));
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_process(mem, f->dir, NULL, &res, &d), &d, "process");
        char diff[64], hashes[80];
        vmsnap_mem_diff_name(&res.build_id, diff);
        hashes_name(&res.build_id, hashes);
        const char *names[] = {diff, hashes, "memfile.header"};
        for (size_t i = 0; i < 3; i++) {
                char *p = test_path(f->dir, names[i]), *saved = test_path(f->root, "saved");
                assert_int_equal(rename(p, saved), 0);
                assert_int_equal(mkfifo(p, 0600), 0);
                assert_int_equal(in_child(open_fails, f), 0);
                assert_int_equal(in_child(verify_fails, f), 0);
                assert_int_equal(in_child(materialize_fails, f), 0);
                assert_int_equal(unlink(p), 0);
                assert_int_equal(rename(saved, p), 0);
                free(p);
                free(saved);
        }
        assert_int_equal(vmsnap_mem_verify(f->dir, NULL, NULL, &d), 0); /* intact again */
        free(mem);
}

/* 200 000 entries over 4096 builds: the old lookup compared each entry's id with the table
 * (~4 * 10^8 comparisons); a binary search in the sorted table of ids takes at most
 * log2(4096) + 1 = 13 per entry, and the duplicate check of the table b log b. */
static void test_v1_many_entries_many_builds(void **state)
{
        (void)state;
        enum { BUILDS = VMSNAP_MEM_MAX_BUILDS, ENTRIES = 200000 };
        struct vmsnap_uuid *ids = calloc(BUILDS, sizeof(*ids));
        assert_non_null(ids);
        for (uint32_t i = 0; i < BUILDS; i++)
                ids[i] = numbered(i + 1);
        size_t len;
        uint8_t *h = v1_header(ids, BUILDS, ENTRIES, &len);
        struct vmsnap_mem_header *hdr = NULL;
        struct vmsnap_diag d = {0};
        mem_build_id_compares = 0;
        must(vmsnap_mem_header_parse(h, len, "hostile", &hdr, &d), &d, "parse");
        uint64_t bound = 13ull * (ENTRIES + 1) + 2ull * BUILDS * 12; /* n log2 b + b log2 b */
        if (mem_build_id_compares > bound)
                fail_msg("%llu build-id comparisons for %d entries (bound %llu)",
                         (unsigned long long)mem_build_id_compares, ENTRIES,
                         (unsigned long long)bound);
        assert_int_equal(hdr->n_builds, BUILDS);
        assert_int_equal(hdr->n_extents, ENTRIES);
        /* order of first appearance, own build first; every entry kept its build */
        for (uint32_t i = 0; i < BUILDS; i++)
                assert_memory_equal(hdr->builds[i].id.b, ids[i].b, 16);
        for (uint32_t i = 0; i < ENTRIES; i += 997)
                assert_int_equal(hdr->extents[i].build, i % BUILDS);
        vmsnap_mem_header_free(hdr);
        /* one more build is one too many */
        struct vmsnap_uuid *more = calloc(BUILDS + 1, sizeof(*more));
        for (uint32_t i = 0; i <= BUILDS; i++)
                more[i] = numbered(i + 1);
        free(h);
        h = v1_header(more, BUILDS + 1, ENTRIES, &len);
        assert_int_equal(vmsnap_mem_header_parse(h, len, "hostile", &hdr, &d), -EBADMSG);
        assert_msg_has(&d, "more than 4096 builds");
        free(h);
        free(more);
        free(ids);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
            T(test_symlinked_v1_diff_file),
            T(test_symlinked_v1_base_memfile),
            T(test_fifo_instead_of_a_file),
            T(test_v1_many_entries_many_builds),
        };
#undef T
        return cmocka_run_group_tests(tests, NULL, NULL);
}
