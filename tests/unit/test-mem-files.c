/* Memory snapshots as files on disk: what happens when a diff file, a hash table or the
 * input is wrong (every error names the file), what process/diff refuse to overwrite, which
 * files make up a snapshot, the 2 MiB block size, locate's runs and hash pointers, and the
 * seed's W1 bug (a block written to zeros must read as zeros, from both change sources).
 * Every snapshot here is made by the library itself (process + diff) from memory images
 * the test keeps, so every byte read back is checked against the test's own copy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmsnap/mem.h>

#include "testlib.h"
#include "test-mem-lib.h"
#include "util/ids.h"
#include "util/sys.h"

#define BS     4096u
#define BLOCKS 256u
#define SIZE   ((size_t)BLOCKS * BS)
#define MIB2   (2u << 20)

struct fixture {
        char *root;
        char *snap;            /* root/snap: generation 1 over generation 0, in place */
        char *memp;            /* root/mem.raw: the last memory file given to the library */
        uint8_t *mem;          /* what the snapshot in snap must read as */
        struct vmsnap_uuid b0; /* build of generation 0 */
        struct vmsnap_uuid b1; /* build of generation 1 */
};

/* ---- helpers ----------------------------------------------------------------------------- */

static char *hashes_file_name(const struct vmsnap_uuid *id)
{
        char name[64], *out;
        vmsnap_mem_diff_name(id, name);
        if (asprintf(&out, "%s.hashes", name) < 0)
                abort();
        return out;
}

static char *path_in(const char *dir, const char *name)
{
        return test_path(dir, name);
}

static bool exists_in(const char *dir, const char *name)
{
        char *p = path_in(dir, name);
        bool r = access(p, F_OK) == 0;
        free(p);
        return r;
}

static void fill_block(uint8_t *p, size_t len, uint64_t tag)
{
        uint64_t rng = 0xf11e5ull ^ (tag * 0x9e3779b97f4a7c15ull);
        test_fill_random(&rng, p, len);
        p[len / 2] |= 0x80;
}

/* Sorted names in dir, one per line. */
static char *list_dir(const char *dir)
{
        struct dirent **ents;
        int n = scandir(dir, &ents, NULL, alphasort);
        if (n < 0)
                return strdup("(no directory)\n");
        size_t cap = 1, len = 0;
        for (int i = 0; i < n; i++)
                cap += strlen(ents[i]->d_name) + 1;
        char *out = calloc(1, cap);
        assert_non_null(out);
        for (int i = 0; i < n; i++) {
                if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, ".."))
                        len += (size_t)sprintf(out + len, "%s\n", ents[i]->d_name);
                free(ents[i]);
        }
        free(ents);
        return out;
}

static uint8_t *read_in(const char *dir, const char *name, size_t *len)
{
        char *p = path_in(dir, name);
        uint8_t *buf = test_read_file(p, len);
        free(p);
        assert_non_null(buf);
        return buf;
}

static void write_in(const char *dir, const char *name, const void *buf, size_t len)
{
        char *p = path_in(dir, name);
        test_write_file(p, buf, len);
        free(p);
}

static void flip_byte(const char *dir, const char *name, off_t at)
{
        char *p = path_in(dir, name);
        int fd = open(p, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t b;
        assert_int_equal(pread(fd, &b, 1, at), 1);
        b ^= 0x40;
        assert_int_equal(pwrite(fd, &b, 1, at), 1);
        close(fd);
        free(p);
}

static void assert_bytes_equal(const uint8_t *got, const uint8_t *want, size_t len, size_t block)
{
        for (size_t i = 0; i < len; i++)
                if (got[i] != want[i])
                        fail_msg("first difference at byte %zu (block %zu): got 0x%02x, want "
                                 "0x%02x",
                                 i, i / block, got[i], want[i]);
}

/* The snapshot in dir reads exactly as want, whole and in pieces. */
static void assert_reads(const char *dir, const uint8_t *want, size_t size, size_t block)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(dir, &s, &d), &d, "open");
        assert_int_equal(vmsnap_mem_header(s)->size, size);
        uint8_t *got = malloc(size);
        assert_non_null(got);
        memset(got, 0xa5, size);
        must(vmsnap_mem_read(s, 0, got, size, &d), &d, "read");
        assert_bytes_equal(got, want, size, block);
        uint64_t rng = 7;
        for (int i = 0; i < 100; i++) {
                uint64_t off = test_rand(&rng) % size;
                size_t len = (size_t)(test_rand(&rng) % (2 * block + 1));
                if (len > size - off)
                        len = size - off;
                must(vmsnap_mem_read(s, off, got, len, &d), &d, "read piece");
                if (memcmp(got, want + off, len) != 0)
                        fail_msg("read of %zu bytes at %llu differs", len, (unsigned long long)off);
        }
        free(got);
        vmsnap_mem_close(s);
}

static unsigned n_problems;
static char first_problem[1024];

static void on_problem(void *ctx, const char *problem)
{
        (void)ctx;
        if (n_problems++ == 0)
                snprintf(first_problem, sizeof(first_problem), "%s", problem);
}

static void assert_verifies(const char *dir)
{
        struct vmsnap_diag d = {0};
        n_problems = 0;
        int r = vmsnap_mem_verify(dir, on_problem, NULL, &d);
        if (r != 0)
                fail_msg("verify of %s returned %d: %s", dir, r, d.msg);
        assert_int_equal(n_problems, 0);
}

static void assert_materializes(const char *dir, const char *out, const uint8_t *want, size_t size,
                                size_t block)
{
        struct vmsnap_diag d = {0};
        must(vmsnap_mem_materialize(dir, out, NULL, &d), &d, "materialize");
        size_t len;
        uint8_t *got = test_read_file(out, &len);
        assert_non_null(got);
        assert_int_equal(len, size);
        assert_bytes_equal(got, want, size, block);
        free(got);
}

/* ---- the fixture: generation 0 (process) and 1 (diff in place) -------------------------- */

static int teardown(void **state)
{
        struct fixture *f = *state;
        test_rmtree(f->root);
        free(f->root);
        free(f->snap);
        free(f->memp);
        free(f->mem);
        free(f);
        return 0;
}

/* A fixture that cannot be built fails every test that needs it, and leaves nothing behind
 * (cmocka runs no teardown after a failed setup). */
static int setup_failed(struct fixture *f, const char *what, int r, const struct vmsnap_diag *d)
{
        fprintf(stderr, "fixture: %s returned %d: %s\n", what, r, d->msg);
        teardown((void **)&f);
        return -1;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        f->root = test_mkdtemp("mem-files");
        f->snap = path_in(f->root, "snap");
        f->memp = path_in(f->root, "mem.raw");
        f->mem = malloc(SIZE);
        assert_non_null(f->mem);
        for (unsigned i = 0; i < BLOCKS; i++) {
                if (i % 5 == 0)
                        memset(f->mem + (size_t)i * BS, 0, BS);
                else
                        fill_block(f->mem + (size_t)i * BS, BS, i);
        }
        test_write_file(f->memp, f->mem, SIZE);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        int r = vmsnap_mem_process(f->memp, f->snap, NULL, &res, &d);
        if (r < 0 || res.generation != 0 || res.data_blocks != BLOCKS - BLOCKS / 5 - 1)
                return setup_failed(f, "process (or its result)", r, &d);
        f->b0 = res.build_id;

        for (unsigned i = 11; i < 20; i++) /* rewritten */
                fill_block(f->mem + (size_t)i * BS, BS, 1000 + i);
        memset(f->mem + 7 * BS, 0, BS); /* zeroed */
        f->mem[100 * BS + 17] ^= 1;     /* one byte */
        test_write_file(f->memp, f->mem, SIZE);
        r = vmsnap_mem_diff(f->memp, f->snap, f->snap, NULL, &res, &d);
        if (r < 0 || res.generation != 1)
                return setup_failed(f, "diff (or its result)", r, &d);
        f->b1 = res.build_id;
        *state = f;
        return 0;
}

static void test_fixture_reads_back(void **state)
{
        struct fixture *f = *state;
        assert_reads(f->snap, f->mem, SIZE, BS);
        assert_verifies(f->snap);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(f->snap, &s, &d), &d, "open");
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        assert_int_equal(h->version, 2);
        assert_int_equal(h->generation, 1);
        assert_int_equal(h->n_builds, 2);
        assert_memory_equal(h->build_id.b, f->b1.b, 16);
        assert_memory_equal(h->base_build_id.b, f->b0.b, 16);
        vmsnap_mem_close(s);
}

/* ---- damaged files ------------------------------------------------------------------------- */

static void test_truncated_diff_file(void **state)
{
        struct fixture *f = *state;
        const struct vmsnap_uuid *ids[] = {&f->b1, &f->b0};
        for (size_t i = 0; i < 2; i++) {
                char *name = diff_name(ids[i]);
                char *p = path_in(f->snap, name);
                struct stat st;
                assert_int_equal(stat(p, &st), 0);
                assert_int_equal(truncate(p, st.st_size - BS), 0);
                struct vmsnap_diag d = {0};
                struct vmsnap_mem_snapshot *s = NULL;
                assert_int_equal(vmsnap_mem_open(f->snap, &s, &d), -EBADMSG);
                assert_null(s);
                assert_msg_has(&d, name);
                assert_msg_has(&d, "truncated");
                char *out = path_in(f->root, "out");
                assert_true(vmsnap_mem_materialize(f->snap, out, NULL, &d) < 0);
                assert_msg_has(&d, name);
                assert_false(exists_in(f->root, "out"));
                assert_int_equal(vmsnap_mem_verify(f->snap, NULL, NULL, &d), -EBADMSG);
                assert_msg_has(&d, name);
                assert_int_equal(truncate(p, st.st_size), 0); /* size right, data wrong */
                free(out);
                free(p);
                free(name);
        }
}

/* One flipped byte: the structure is fine (open succeeds, nothing reads the data), verify
 * finds it and says where, and the page server's per-block check refuses the block. */
static void test_flipped_byte(void **state)
{
        struct fixture *f = *state;
        char *name = diff_name(&f->b1);
        flip_byte(f->snap, name, 2 * BS + 100);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s = NULL;
        must(vmsnap_mem_open(f->snap, &s, &d), &d, "open");

        /* Find the address stored at b1's storage offset 2 blocks and check it as the page
         * server would. */
        char *p = path_in(f->snap, name);
        struct stat want;
        assert_int_equal(stat(p, &want), 0);
        bool found = false;
        for (uint64_t off = 0; off < SIZE && !found; off += BS) {
                struct vmsnap_mem_location loc;
                assert_int_equal(vmsnap_mem_locate(s, off, &loc), 0);
                struct stat st;
                if (loc.zero || fstat(loc.fd, &st) < 0 || st.st_ino != want.st_ino ||
                    loc.storage_offset != 2 * BS)
                        continue;
                uint8_t block[BS];
                must(vmsnap_mem_read(s, off, block, BS, &d), &d, "read");
                assert_non_null(loc.hashes);
                assert_false(vmsnap_mem_block_ok(s, block, loc.hashes));
                found = true;
        }
        assert_true(found);
        vmsnap_mem_close(s);

        n_problems = 0;
        first_problem[0] = '\0';
        assert_int_equal(vmsnap_mem_verify(f->snap, on_problem, NULL, &d), -EBADMSG);
        assert_int_equal(n_problems, 1);
        char where[64];
        snprintf(where, sizeof(where), "offset %u", 2 * BS);
        if (!strstr(first_problem, name) || !strstr(first_problem, where))
                fail_msg("problem \"%s\" does not name %s and %s", first_problem, name, where);
        assert_msg_has(&d, name);
        assert_msg_has(&d, where);
        free(p);
        free(name);
}

/* Damaged hash tables are refused on open, naming the table. */
static void test_corrupt_hashes_file(void **state)
{
        struct fixture *f = *state;
        char *name = hashes_file_name(&f->b0);
        char *other = hashes_file_name(&f->b1);
        size_t len, other_len;
        uint8_t *orig = read_in(f->snap, name, &len);
        uint8_t *orig_other = read_in(f->snap, other, &other_len);
        for (int variant = 0; variant < 6; variant++) {
                char *p = path_in(f->snap, name);
                switch (variant) {
                case 0: /* a flipped bit in a block hash */
                        flip_byte(f->snap, name, 48 + 16 * 3 + 5);
                        break;
                case 1: /* a flipped bit in the fixed part */
                        flip_byte(f->snap, name, 20);
                        break;
                case 2: /* one hash short */
                        assert_int_equal(truncate(p, (off_t)len - 16), 0);
                        break;
                case 3: /* another build's (valid) table under this name */
                        write_in(f->snap, name, orig_other, other_len);
                        break;
                case 4: /* gone */
                        assert_int_equal(unlink(p), 0);
                        break;
                case 5: { /* self-consistent (trailer recomputed), but not what the header's
                             build checksum covers */
                        uint8_t *forged = malloc(len);
                        assert_non_null(forged);
                        memcpy(forged, orig, len);
                        forged[48 + 16 * 4] ^= 0xff;
                        struct vmsnap_hash sum;
                        vmsnap_hash128(forged, len - 16, &sum);
                        memcpy(forged + len - 16, sum.b, 16);
                        write_in(f->snap, name, forged, len);
                        free(forged);
                        break;
                }
                }
                struct vmsnap_diag d = {0};
                struct vmsnap_mem_snapshot *s = NULL;
                int r = vmsnap_mem_open(f->snap, &s, &d);
                if (r >= 0)
                        fail_msg("variant %d: open succeeded", variant);
                assert_null(s);
                assert_int_equal(r, variant == 4 ? -ENOENT : -EBADMSG);
                if (variant != 5) /* see test_forged_hashes_file */
                        assert_msg_has(&d, name);
                assert_true(vmsnap_mem_verify(f->snap, NULL, NULL, &d) < 0);
                if (variant != 5)
                        assert_msg_has(&d, name);
                write_in(f->snap, name, orig, len);
                free(p);
        }
        assert_reads(f->snap, f->mem, SIZE, BS);
        free(orig_other);
        free(orig);
        free(other);
        free(name);
}

/* A self-consistent table (trailer recomputed) whose hashes differ from the ones the header's
 * build checksum covers: refused, and the message names the table. */
static void test_forged_hashes_file(void **state)
{
        struct fixture *f = *state;
        char *name = hashes_file_name(&f->b0);
        size_t len;
        uint8_t *buf = read_in(f->snap, name, &len);
        buf[48 + 16 * 2] ^= 0xff;
        struct vmsnap_hash sum;
        vmsnap_hash128(buf, len - 16, &sum);
        memcpy(buf + len - 16, sum.b, 16);
        write_in(f->snap, name, buf, len);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s = NULL;
        assert_int_equal(vmsnap_mem_open(f->snap, &s, &d), -EBADMSG);
        assert_null(s);
        assert_msg_has(&d, f->snap);
        assert_msg_has(&d, name);
        free(buf);
        free(name);
}

static void test_deleted_diff_file(void **state)
{
        struct fixture *f = *state;
        char *name = diff_name(&f->b0);
        char *p = path_in(f->snap, name);
        assert_int_equal(unlink(p), 0);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s = NULL;
        assert_int_equal(vmsnap_mem_open(f->snap, &s, &d), -ENOENT);
        assert_null(s);
        assert_msg_has(&d, name);
        assert_msg_has(&d, f->snap);
        char **names = NULL;
        assert_true(vmsnap_mem_files(f->snap, &names, &d) < 0);
        assert_null(names);
        assert_msg_has(&d, name);
        assert_true(vmsnap_mem_verify(f->snap, NULL, NULL, &d) < 0);
        assert_msg_has(&d, name);
        free(p);
        free(name);
}

/* ---- what process and diff refuse ---------------------------------------------------------- */

static void expect_process_fails(struct fixture *f, size_t size, uint64_t block_size, bool make_dir)
{
        char *in = path_in(f->root, "odd.raw");
        char *dir = path_in(f->root, "odd-snap");
        uint8_t *buf = calloc(1, size ? size : 1);
        assert_non_null(buf);
        if (size)
                fill_block(buf, size, size);
        test_write_file(in, buf, size);
        if (make_dir)
                assert_int_equal(mkdir(dir, 0755), 0);
        struct vmsnap_mem_opts o = {.block_size = block_size};
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        int r = vmsnap_mem_process(in, dir, &o, &res, &d);
        if (r != -EINVAL)
                fail_msg("process of %zu bytes (block %llu) returned %d: %s", size,
                         (unsigned long long)block_size, r, d.msg);
        assert_msg_has(&d, in);
        assert_msg_has(&d, "block size");
        assert_false(exists_in(dir, "memfile.header"));
        char *listing = list_dir(dir);
        if (make_dir)
                assert_string_equal(listing, ""); /* nothing left behind */
        test_rmtree(dir);
        free(listing);
        free(buf);
        free(dir);
        free(in);
}

static void test_process_bad_size(void **state)
{
        struct fixture *f = *state;
        expect_process_fails(f, 10 * BS + 100, 0, false);
        expect_process_fails(f, 10 * BS + 100, BS, true);
        expect_process_fails(f, 0, BS, true);
        expect_process_fails(f, 2 * MIB2 + BS, MIB2, true);

        struct vmsnap_diag d = {0};
        struct vmsnap_mem_opts o = {.block_size = 8192};
        char *dir = path_in(f->root, "bs-snap");
        assert_int_equal(vmsnap_mem_process(f->memp, dir, &o, NULL, &d), -EINVAL);
        assert_msg_has(&d, "block size");
        assert_false(exists_in(dir, "memfile.header"));
        char *missing = path_in(f->root, "no-such-memfile");
        assert_true(vmsnap_mem_process(missing, dir, NULL, NULL, &d) < 0);
        assert_msg_has(&d, missing);
        assert_false(exists_in(dir, "memfile.header"));
        free(missing);
        free(dir);
}

static void test_process_over_existing_snapshot(void **state)
{
        struct fixture *f = *state;
        size_t len, len2;
        uint8_t *before = read_in(f->snap, "memfile.header", &len);
        char *listing = list_dir(f->snap);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        assert_int_equal(vmsnap_mem_process(f->memp, f->snap, NULL, &res, &d), -EEXIST);
        assert_msg_has(&d, f->snap);
        uint8_t *after = read_in(f->snap, "memfile.header", &len2);
        assert_int_equal(len, len2);
        assert_memory_equal(before, after, len);
        char *listing2 = list_dir(f->snap);
        assert_string_equal(listing, listing2);
        assert_reads(f->snap, f->mem, SIZE, BS);
        free(listing2);
        free(listing);
        free(after);
        free(before);
}

static void test_diff_size_mismatch(void **state)
{
        struct fixture *f = *state;
        static const size_t sizes[] = {SIZE - BS, SIZE + BS, SIZE * 2};
        size_t len;
        uint8_t *before = read_in(f->snap, "memfile.header", &len);
        char *listing = list_dir(f->snap);
        char *in = path_in(f->root, "other.raw");
        char *newdir = path_in(f->root, "child");
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                uint8_t *buf = malloc(sizes[i]);
                assert_non_null(buf);
                fill_block(buf, sizes[i], i);
                test_write_file(in, buf, sizes[i]);
                free(buf);
                for (int in_place = 0; in_place < 2; in_place++) {
                        const char *target = in_place ? f->snap : newdir;
                        struct vmsnap_diag d = {0};
                        int r = vmsnap_mem_diff(in, target, f->snap, NULL, NULL, &d);
                        if (r >= 0)
                                fail_msg("diff of %zu bytes over %zu succeeded", sizes[i], SIZE);
                        assert_msg_has(&d, in);
                        assert_false(exists_in(newdir, "memfile.header"));
                        size_t len2;
                        uint8_t *after = read_in(f->snap, "memfile.header", &len2);
                        assert_int_equal(len, len2);
                        assert_memory_equal(before, after, len);
                        free(after);
                        char *listing2 = list_dir(f->snap);
                        assert_string_equal(listing, listing2);
                        free(listing2);
                }
        }
        assert_reads(f->snap, f->mem, SIZE, BS);
        free(newdir);
        free(in);
        free(listing);
        free(before);
}

/* ---- which files make up a snapshot -------------------------------------------------------- */

/* vmsnap_mem_files lists exactly the header plus a diff file and a hash table per build, and
 * that is exactly what the directory holds (nothing stale left by the in-place diff). */
static void assert_files_are(const char *dir, const struct vmsnap_uuid *ids, size_t n)
{
        struct vmsnap_diag d = {0};
        char **names = NULL;
        must(vmsnap_mem_files(dir, &names, &d), &d, "files");
        size_t count = 0;
        while (names[count])
                count++;
        assert_int_equal(count, 1 + 2 * n);
        for (size_t k = 0; k < count; k++) {
                bool known = strcmp(names[k], "memfile.header") == 0;
                for (size_t i = 0; i < n && !known; i++) {
                        char *dn = diff_name(&ids[i]), *hn = hashes_file_name(&ids[i]);
                        known = strcmp(names[k], dn) == 0 || strcmp(names[k], hn) == 0;
                        free(dn);
                        free(hn);
                }
                if (!known)
                        fail_msg("vmsnap_mem_files lists unexpected %s", names[k]);
                for (size_t j = 0; j < k; j++)
                        assert_string_not_equal(names[j], names[k]);
                assert_true(exists_in(dir, names[k]));
        }
        /* The directory holds nothing else. */
        struct dirent **ents;
        int m = scandir(dir, &ents, NULL, alphasort);
        assert_true(m >= 0);
        size_t files = 0;
        for (int i = 0; i < m; i++) {
                if (ents[i]->d_name[0] != '.')
                        files++;
                free(ents[i]);
        }
        free(ents);
        assert_int_equal(files, count);
        vmsnap_mem_files_free(names);
}

static void test_files_list(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_uuid ids[2] = {f->b0, f->b1};
        assert_files_are(f->snap, ids, 2);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_merge(f->snap, &res, &d), &d, "merge");
        assert_files_are(f->snap, &res.build_id, 1);
        assert_reads(f->snap, f->mem, SIZE, BS);
        char **names = NULL;
        char *missing = path_in(f->root, "nothing-here");
        assert_true(vmsnap_mem_files(missing, &names, &d) < 0);
        assert_null(names);
        free(missing);
}

/* A child made into a new directory is self-contained: the parent may go away. */
static void test_child_is_self_contained(void **state)
{
        struct fixture *f = *state;
        char *child = path_in(f->root, "child");
        size_t len;
        uint8_t *before = read_in(f->snap, "memfile.header", &len);
        fill_block(f->mem + 50 * BS, BS, 5050);
        test_write_file(f->memp, f->mem, SIZE);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_diff(f->memp, child, f->snap, NULL, &res, &d), &d, "diff");
        assert_int_equal(res.generation, 2);
        size_t len2;
        uint8_t *after = read_in(f->snap, "memfile.header", &len2);
        assert_int_equal(len, len2);
        assert_memory_equal(before, after, len);
        test_rmtree(f->snap);
        assert_reads(child, f->mem, SIZE, BS);
        assert_verifies(child);
        struct vmsnap_uuid ids[3] = {f->b0, f->b1, res.build_id};
        assert_files_are(child, ids, 3);
        free(after);
        free(before);
        free(child);
}

/* defer_sync (a pause writing into the store's pending snapshot): process and a diff into
 * a new directory call no fsync at all and make the same snapshot; a diff in place ignores
 * it (the previous generation must stay readable at every step). */
static int fsyncs;
static int counting_fsync(int fd)
{
        fsyncs++;
        return fsync(fd);
}

static void test_defer_sync(void **state)
{
        struct fixture *f = *state;
        char *gen0 = path_in(f->root, "deferred0"), *child = path_in(f->root, "deferred1");
        struct vmsnap_mem_opts o = {.defer_sync = true};
        struct vmsnap_diag d = {0};
        int (*real)(int) = vmsnap_sys.fsync;
        vmsnap_sys.fsync = counting_fsync;
        fsyncs = 0;
        must(vmsnap_mem_process(f->memp, gen0, &o, NULL, &d), &d, "process");
        fill_block(f->mem + 7 * BS, BS, 7007);
        test_write_file(f->memp, f->mem, SIZE);
        must(vmsnap_mem_diff(f->memp, child, gen0, &o, NULL, &d), &d, "diff");
        assert_int_equal(fsyncs, 0);
        fill_block(f->mem + 9 * BS, BS, 9009);
        test_write_file(f->memp, f->mem, SIZE);
        must(vmsnap_mem_diff(f->memp, child, child, &o, NULL, &d), &d, "diff in place");
        assert_true(fsyncs >= 3); /* diff file, header, directory */
        vmsnap_sys.fsync = real;
        assert_reads(child, f->mem, SIZE, BS);
        assert_verifies(child);
        free(gen0);
        free(child);
}

/* ---- 2 MiB blocks ---------------------------------------------------------------------- */

static void test_2mib_roundtrip(void **state)
{
        struct fixture *f = *state;
        const size_t nblk = 8, size = nblk * MIB2;
        uint8_t *mem = calloc(1, size);
        assert_non_null(mem);
        static const unsigned data[] = {0, 1, 3, 6};
        for (size_t i = 0; i < sizeof(data) / sizeof(data[0]); i++)
                fill_block(mem + (size_t)data[i] * MIB2, MIB2, 70 + data[i]);
        char *in = path_in(f->root, "huge.raw");
        char *dir = path_in(f->root, "huge");
        test_write_file(in, mem, size);
        struct vmsnap_mem_opts o = {.block_size = MIB2};
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_process(in, dir, &o, &res, &d), &d, "process");
        assert_int_equal(res.data_blocks, 4);
        assert_int_equal(res.bytes_written, 4 * (uint64_t)MIB2);
        assert_reads(dir, mem, size, MIB2);

        mem[1 * MIB2 + MIB2 - 1] ^= 0x5a;     /* last byte of block 1 */
        memset(mem + 3 * MIB2, 0, MIB2);      /* block 3 zeroed */
        fill_block(mem + 4 * MIB2, MIB2, 74); /* block 4 new */
        mem[4 * MIB2] = 0;                    /* ... with a zero first byte */
        test_write_file(in, mem, size);
        must(vmsnap_mem_diff(in, dir, dir, NULL, &res, &d), &d, "diff");
        assert_int_equal(res.generation, 1);
        assert_int_equal(res.data_blocks, 2);
        assert_int_equal(res.zero_blocks, 1);
        assert_int_equal(res.same_blocks, 5);
        assert_reads(dir, mem, size, MIB2);
        assert_verifies(dir);

        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(dir, &s, &d), &d, "open");
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        assert_int_equal(h->block_size, MIB2);
        for (uint64_t i = 0; i < h->n_extents; i++) {
                assert_int_equal(h->extents[i].offset % MIB2, 0);
                assert_int_equal(h->extents[i].length % MIB2, 0);
                assert_int_equal(h->extents[i].storage_offset % MIB2, 0);
        }
        struct vmsnap_mem_location loc;
        must(vmsnap_mem_locate(s, 1 * MIB2 + 12345, &loc), &d, "locate");
        assert_false(loc.zero);
        assert_non_null(loc.hashes);
        assert_int_equal(loc.run % MIB2, MIB2 - 12345);
        uint8_t *block = malloc(MIB2);
        assert_non_null(block);
        must(vmsnap_mem_read(s, MIB2, block, MIB2, &d), &d, "read");
        assert_true(vmsnap_mem_block_ok(s, block, loc.hashes));
        free(block);
        vmsnap_mem_close(s);

        must(vmsnap_mem_merge(dir, &res, &d), &d, "merge");
        assert_int_equal(res.generation, 0);
        assert_reads(dir, mem, size, MIB2);
        assert_verifies(dir);
        char *out = path_in(f->root, "huge.out");
        assert_materializes(dir, out, mem, size, MIB2);

        /* A file that is 4 KiB-aligned but not 2 MiB-aligned cannot be the next generation. */
        assert_int_equal(truncate(in, (off_t)(size + BS)), 0);
        assert_true(vmsnap_mem_diff(in, dir, dir, NULL, NULL, &d) < 0);
        assert_msg_has(&d, in);
        assert_reads(dir, mem, size, MIB2);
        free(out);
        free(dir);
        free(in);
        free(mem);
}

/* ---- locate ------------------------------------------------------------------------------ */

static const struct vmsnap_mem_extent *extent_holding(const struct vmsnap_mem_header *h,
                                                      uint64_t off)
{
        for (uint64_t i = 0; i < h->n_extents; i++)
                if (h->extents[i].offset <= off &&
                    off - h->extents[i].offset < h->extents[i].length)
                        return &h->extents[i];
        fail_msg("no extent holds %llu", (unsigned long long)off);
        return NULL;
}

static void check_location(const struct vmsnap_mem_snapshot *s, const uint8_t *mem, uint64_t off,
                           bool whole_run)
{
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        const struct vmsnap_mem_extent *e = extent_holding(h, off);
        struct vmsnap_mem_location loc;
        assert_int_equal(vmsnap_mem_locate(s, off, &loc), 0);
        assert_int_equal(loc.run, e->offset + e->length - off);
        assert_true(loc.run > 0 && loc.run <= h->size - off);
        if (e->build == VMSNAP_MEM_ZERO) {
                assert_true(loc.zero);
                assert_int_equal(loc.fd, -1);
                assert_null(loc.hashes);
                return;
        }
        assert_false(loc.zero);
        assert_true(loc.fd >= 0);
        assert_int_equal(loc.storage_offset, e->storage_offset + (off - e->offset));
        assert_non_null(loc.hashes);
        /* hashes[j] is the hash of the j-th block from the one holding the address. */
        uint64_t first = loc.storage_offset / BS * BS, addr = off / BS * BS;
        uint64_t nblocks = whole_run ? (loc.run + (off - addr)) / BS : 1;
        for (uint64_t j = 0; j < nblocks; j++) {
                uint8_t block[BS];
                assert_int_equal(pread(loc.fd, block, BS, (off_t)(first + j * BS)), BS);
                assert_memory_equal(block, mem + addr + j * BS, BS);
                struct vmsnap_hash hh;
                vmsnap_hash128(block, BS, &hh);
                assert_memory_equal(hh.b, loc.hashes[j].b, 16);
                assert_true(vmsnap_mem_block_ok(s, block, &loc.hashes[j]));
        }
}

static void test_locate(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(f->snap, &s, &d), &d, "open");
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        assert_true(h->n_extents > 4);
        for (uint64_t off = 0; off < SIZE; off += BS) {
                bool at_start = h->extents[vmsnap_mem_header_find(h, off)].offset == off;
                check_location(s, f->mem, off, at_start);
                check_location(s, f->mem, off + 1234, false);
                check_location(s, f->mem, off + BS - 1, false);
        }
        /* Walking by runs visits each extent once and ends exactly at the end. */
        uint64_t off = 0, steps = 0;
        while (off < SIZE) {
                struct vmsnap_mem_location loc;
                assert_int_equal(vmsnap_mem_locate(s, off, &loc), 0);
                off += loc.run;
                steps++;
        }
        assert_int_equal(off, SIZE);
        assert_int_equal(steps, h->n_extents);
        struct vmsnap_mem_location loc;
        assert_int_equal(vmsnap_mem_locate(s, SIZE, &loc), -EINVAL);
        assert_int_equal(vmsnap_mem_locate(s, UINT64_MAX, &loc), -EINVAL);
        vmsnap_mem_close(s);
}

/* ---- zero writes (seed bug W1) ------------------------------------------------------------ */

static void assert_block_is_zero(const char *dir, uint64_t block)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(dir, &s, &d), &d, "open");
        uint8_t buf[BS], zero[BS] = {0};
        must(vmsnap_mem_read(s, block * BS, buf, BS, &d), &d, "read");
        assert_memory_equal(buf, zero, BS);
        struct vmsnap_mem_location loc;
        assert_int_equal(vmsnap_mem_locate(s, block * BS, &loc), 0);
        assert_true(loc.zero);
        vmsnap_mem_close(s);
}

/* Content source: a full memory file with a non-zero parent block now all zeros. */
static void test_zeroed_block_content(void **state)
{
        struct fixture *f = *state;
        assert_true(f->mem[12 * BS + BS / 2] != 0);
        memset(f->mem + 12 * BS, 0, BS);
        memset(f->mem + 100 * BS, 0, BS); /* the one-byte-changed block of generation 1 */
        test_write_file(f->memp, f->mem, SIZE);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        struct vmsnap_mem_opts o = {.source = VMSNAP_MEM_SOURCE_CONTENT};
        must(vmsnap_mem_diff(f->memp, f->snap, f->snap, &o, &res, &d), &d, "diff");
        assert_int_equal(res.zero_blocks, 2);
        assert_int_equal(res.data_blocks, 0);
        assert_block_is_zero(f->snap, 12);
        assert_block_is_zero(f->snap, 100);
        assert_reads(f->snap, f->mem, SIZE, BS);
        assert_verifies(f->snap);
}

/* A hole in a full memory file reads as zeros too (the VMM never wrote it, or punched it). */
static void test_content_hole_is_zero(void **state)
{
        struct fixture *f = *state;
        memset(f->mem + 40 * BS, 0, 24 * BS); /* blocks 40..63 become a hole */
        char *in = path_in(f->root, "holey.raw");
        int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, SIZE), 0);
        assert_int_equal(pwrite(fd, f->mem, 40 * BS, 0), 40 * BS);
        assert_int_equal(pwrite(fd, f->mem + 64 * BS, SIZE - 64 * BS, 64 * BS),
                         (ssize_t)(SIZE - 64 * BS));
        close(fd);
        struct vmsnap_diag d = {0};
        must(vmsnap_mem_diff(in, f->snap, f->snap, NULL, NULL, &d), &d, "diff");
        assert_block_is_zero(f->snap, 41);
        assert_reads(f->snap, f->mem, SIZE, BS);
        assert_verifies(f->snap);
        free(in);
}

/* Sparse source (a Firecracker Diff file): only dirty blocks are data, the rest holes. A
 * dirty block of zeros over non-zero parent data must read as zeros; holes keep the
 * parent's bytes. */
static void test_zeroed_block_sparse(void **state)
{
        struct fixture *f = *state;
        if (!keeps_holes(f->root)) {
                fprintf(stderr, "%s: no SEEK_DATA holes here; a sparse source cannot work\n",
                        f->root);
                skip();
        }
        char *in = path_in(f->root, "dirty.raw");
        int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, SIZE), 0);
        static const unsigned dirty[] = {12, 13, 30, 40, 100, 255};
        assert_true(f->mem[12 * BS + BS / 2] != 0 && f->mem[100 * BS + 17] != 0);
        memset(f->mem + 12 * BS, 0, BS);         /* data -> zeros */
        fill_block(f->mem + 13 * BS, BS, 7013);  /* data -> new data */
        fill_block(f->mem + 30 * BS, BS, 7030);  /* ZERO -> data */
        memset(f->mem + 100 * BS, 0, BS);        /* generation 1's one-byte block -> zeros */
        fill_block(f->mem + 255 * BS, BS, 7255); /* the last block */
        /* 40 was ZERO and is written with zeros again. */
        for (size_t i = 0; i < sizeof(dirty) / sizeof(dirty[0]); i++)
                assert_int_equal(
                    pwrite(fd, f->mem + (size_t)dirty[i] * BS, BS, (off_t)dirty[i] * BS), BS);
        close(fd);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        struct vmsnap_mem_opts o = {.source = VMSNAP_MEM_SOURCE_SPARSE};
        must(vmsnap_mem_diff(in, f->snap, f->snap, &o, &res, &d), &d, "diff");
        assert_int_equal(res.data_blocks, 3);
        assert_true(res.bytes_scanned < SIZE); /* holes cost no reads */
        assert_block_is_zero(f->snap, 12);
        assert_block_is_zero(f->snap, 100);
        assert_block_is_zero(f->snap, 40);
        assert_reads(f->snap, f->mem, SIZE, BS);
        assert_verifies(f->snap);
        char *out = path_in(f->root, "sparse.out");
        assert_materializes(f->snap, out, f->mem, SIZE, BS);
        free(out);
        free(in);
}

/* The generation cap merges automatically. */
static void test_merge_cap(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_mem_opts o = {.merge_cap = 2};
        fill_block(f->mem + 77 * BS, BS, 7777);
        test_write_file(f->memp, f->mem, SIZE);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_diff(f->memp, f->snap, f->snap, &o, &res, &d), &d, "diff");
        assert_true(res.merged);
        assert_int_equal(res.generation, 0);
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(f->snap, &s, &d), &d, "open");
        assert_int_equal(vmsnap_mem_header(s)->generation, 0);
        assert_int_equal(vmsnap_mem_header(s)->n_builds, 1);
        assert_memory_equal(vmsnap_mem_header(s)->build_id.b, res.build_id.b, 16);
        vmsnap_mem_close(s);
        assert_reads(f->snap, f->mem, SIZE, BS);
        assert_verifies(f->snap);
        assert_files_are(f->snap, &res.build_id, 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
            T(test_fixture_reads_back),
            T(test_truncated_diff_file),
            T(test_flipped_byte),
            T(test_corrupt_hashes_file),
            T(test_forged_hashes_file),
            T(test_deleted_diff_file),
            T(test_process_bad_size),
            T(test_process_over_existing_snapshot),
            T(test_diff_size_mismatch),
            T(test_files_list),
            T(test_child_is_self_contained),
            T(test_2mib_roundtrip),
            T(test_locate),
            T(test_zeroed_block_content),
            T(test_content_hole_is_zero),
            T(test_zeroed_block_sparse),
            T(test_merge_cap),
            T(test_defer_sync),
        };
#undef T
        return cmocka_run_group_tests(tests, NULL, NULL);
}
