/* Seed (v1) snapshots: directories built by hand exactly as wrenn writes them (docs/format.md
 * "Header v1", wrenn.md §2.2: 64-byte LE metadata + 40-byte entries, nil UUID = ZERO, the
 * base build in `memfile`, later builds in `memfile.<uuid>`), read byte by byte, and carried
 * forward into v2 by diff (into a new directory and in place) and by merge. The expected
 * memory comes from the test's own resolution of the entries against the diff files it
 * wrote, never from the implementation. */
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

#define BS 4096u
#define NB 16u /* blocks of guest memory in the main scenario */

/* One v1 entry, in blocks; id NULL = nil (ZERO); bso in bytes (any value for nil). */
struct v1_entry {
        uint64_t off, len;
        const struct vmsnap_uuid *id;
        uint64_t bso;
};

struct fixture {
        char *root;           /* scratch directory */
        char *dir;            /* root/v1: the seed snapshot */
        struct vmsnap_uuid a; /* generation 0 (base): stored in `memfile` */
        struct vmsnap_uuid b; /* generation 1: stored in `memfile.<b>` */
        uint8_t *a_file, *b_file;
        size_t a_len, b_len;
        uint8_t *expect; /* NB * BS bytes: what the snapshot must read as */
        uint8_t *header; /* the v1 header bytes as written */
        size_t header_len;
};

/* ---- writing seed files ------------------------------------------------------------------- */

static void le64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++, v >>= 8)
                p[i] = (uint8_t)v;
}

static struct vmsnap_uuid parse_uuid(const char *s)
{
        struct vmsnap_uuid u;
        assert_int_equal(vmsnap_uuid_parse(s, &u), 0);
        return u;
}

static struct vmsnap_uuid numbered_uuid(uint32_t n)
{
        char s[37];
        snprintf(s, sizeof(s), "%08x-5eed-4000-8000-%012x", n, n * 7919u + 1);
        return parse_uuid(s);
}

/* Deterministic, non-zero content for one block, keyed by tag. */
static void block_content(uint8_t *p, size_t len, uint64_t tag)
{
        uint64_t rng = 0x5eed0000ull + tag * 0x9e3779b97f4a7c15ull;
        test_fill_random(&rng, p, len);
        p[0] |= 1;
}

/* The v1 header: metadata {1, bs, size, gen, build, base} then the entries. */
static uint8_t *v1_header(uint64_t bs, uint64_t size, uint64_t gen, const struct vmsnap_uuid *build,
                          const struct vmsnap_uuid *base, const struct v1_entry *e, size_t n,
                          size_t *ret_len)
{
        size_t len = 64 + 40 * n;
        uint8_t *h = calloc(1, len);
        assert_non_null(h);
        le64(h, 1);
        le64(h + 8, bs);
        le64(h + 16, size);
        le64(h + 24, gen);
        memcpy(h + 32, build->b, 16);
        memcpy(h + 48, base->b, 16);
        for (size_t i = 0; i < n; i++) {
                uint8_t *p = h + 64 + 40 * i;
                le64(p, e[i].off * bs);
                le64(p + 8, e[i].len * bs);
                if (e[i].id)
                        memcpy(p + 16, e[i].id->b, 16);
                le64(p + 32, e[i].bso);
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

static bool exists_in(const char *dir, const char *name)
{
        char *p = test_path(dir, name);
        bool r = access(p, F_OK) == 0;
        free(p);
        return r;
}

/* Sorted names in dir, one per line (a fingerprint of the directory). */
static char *list_dir(const char *dir)
{
        struct dirent **ents;
        int n = scandir(dir, &ents, NULL, alphasort);
        assert_true(n >= 0);
        size_t cap = 1, len = 0;
        for (int i = 0; i < n; i++)
                cap += strlen(ents[i]->d_name) + 1;
        char *out = calloc(1, cap);
        assert_non_null(out);
        for (int i = 0; i < n; i++) {
                if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, "..")) {
                        len += (size_t)sprintf(out + len, "%s\n", ents[i]->d_name);
                }
                free(ents[i]);
        }
        free(ents);
        return out;
}

/* ---- the main scenario ------------------------------------------------------------------- */

/* Generation 0 stored blocks 0,1,2,5,6,9,10,11 of its memory in `memfile`; generation 1
 * stored blocks 1,4,12 in memfile.<b>. Nil entries carry the arbitrary storage offsets the
 * seed's arithmetic produces (readers must ignore them); entries are not normalized. */
static const unsigned a_blocks[] = {0, 1, 2, 5, 6, 9, 10, 11};
static const unsigned b_blocks[] = {1, 4, 12};

static void resolve(struct fixture *f, const struct v1_entry *e, size_t n)
{
        memset(f->expect, 0, NB * BS);
        for (size_t i = 0; i < n; i++) {
                if (!e[i].id)
                        continue;
                const uint8_t *src = e[i].id == &f->a ? f->a_file : f->b_file;
                memcpy(f->expect + e[i].off * BS, src + e[i].bso, e[i].len * BS);
        }
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        f->root = test_mkdtemp("mem-v1");
        f->dir = test_path(f->root, "v1");
        assert_int_equal(mkdir(f->dir, 0755), 0);
        f->a = parse_uuid("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        f->b = parse_uuid("1b4e28ba-2fa1-41d2-883f-0016d3cca427");
        f->a_len = sizeof(a_blocks) / sizeof(a_blocks[0]) * BS;
        f->b_len = sizeof(b_blocks) / sizeof(b_blocks[0]) * BS;
        f->a_file = malloc(f->a_len);
        f->b_file = malloc(f->b_len);
        f->expect = malloc(NB * BS);
        assert_non_null(f->a_file);
        assert_non_null(f->b_file);
        assert_non_null(f->expect);
        for (size_t i = 0; i < f->a_len / BS; i++)
                block_content(f->a_file + i * BS, BS, 100 + a_blocks[i]);
        for (size_t i = 0; i < f->b_len / BS; i++)
                block_content(f->b_file + i * BS, BS, 200 + b_blocks[i]);
        const struct v1_entry e[] = {
            {0, 1, &f->a, 0},     {1, 1, &f->b, 0},      {2, 1, &f->a, 2 * BS},
            {3, 1, NULL, 3 * BS}, {4, 1, &f->b, 1 * BS}, {5, 2, &f->a, 3 * BS},
            {7, 2, NULL, 1 * BS}, {9, 3, &f->a, 5 * BS}, {12, 1, &f->b, 2 * BS},
            {13, 3, NULL, 0},
        };
        size_t n = sizeof(e) / sizeof(e[0]);
        resolve(f, e, n);
        f->header = v1_header(BS, NB * BS, 1, &f->b, &f->a, e, n, &f->header_len);
        write_in(f->dir, "memfile.header", f->header, f->header_len);
        write_in(f->dir, "memfile", f->a_file, f->a_len);
        char *bn = diff_name(&f->b);
        write_in(f->dir, bn, f->b_file, f->b_len);
        free(bn);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        test_rmtree(f->root);
        free(f->root);
        free(f->dir);
        free(f->a_file);
        free(f->b_file);
        free(f->expect);
        free(f->header);
        free(f);
        return 0;
}

/* ---- assertions ---------------------------------------------------------------------- */

static void assert_bytes_equal(const uint8_t *got, const uint8_t *want, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (got[i] != want[i])
                        fail_msg("first difference at byte %zu (block %zu): got 0x%02x, want "
                                 "0x%02x",
                                 i, i / BS, got[i], want[i]);
}

/* The snapshot in dir reads as want: whole, block by block, and in seeded unaligned pieces
 * that cross extent boundaries. */
static void assert_reads(const char *dir, const uint8_t *want, size_t size)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(dir, &s, &d), &d, "open");
        assert_int_equal(vmsnap_mem_header(s)->size, size);
        uint8_t *got = malloc(size);
        assert_non_null(got);
        memset(got, 0xa5, size);
        must(vmsnap_mem_read(s, 0, got, size, &d), &d, "read all");
        assert_bytes_equal(got, want, size);
        uint64_t rng = 42;
        for (int i = 0; i < 300; i++) {
                uint64_t off = test_rand(&rng) % size;
                size_t len = (size_t)(test_rand(&rng) % (3 * BS));
                if (len > size - off)
                        len = size - off;
                memset(got, 0xa5, len);
                must(vmsnap_mem_read(s, off, got, len, &d), &d, "read piece");
                if (memcmp(got, want + off, len) != 0)
                        fail_msg("read of %zu bytes at %llu differs", len, (unsigned long long)off);
        }
        assert_int_equal(vmsnap_mem_read(s, size - 1, got, 2, &d), -EINVAL);
        free(got);
        vmsnap_mem_close(s);
}

static void assert_materializes(const char *dir, const char *out, const uint8_t *want, size_t size)
{
        struct vmsnap_diag d = {0};
        must(vmsnap_mem_materialize(dir, out, NULL, &d), &d, "materialize");
        size_t len;
        uint8_t *got = test_read_file(out, &len);
        assert_non_null(got);
        assert_int_equal(len, size);
        assert_bytes_equal(got, want, size);
        free(got);
}

static unsigned problems;

static void count_problem(void *ctx, const char *problem)
{
        (void)ctx;
        fprintf(stderr, "verify problem: %s\n", problem);
        problems++;
}

static void assert_verifies(const char *dir)
{
        struct vmsnap_diag d = {0};
        problems = 0;
        int r = vmsnap_mem_verify(dir, count_problem, NULL, &d);
        if (r != 0)
                fail_msg("verify of %s returned %d: %s", dir, r, d.msg);
        assert_int_equal(problems, 0);
}

/* ---- reading a seed snapshot ------------------------------------------------------------- */

static void test_v1_parse(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_header *h = NULL, *v2 = NULL;
        must(vmsnap_mem_header_parse(f->header, f->header_len, "v1/memfile.header", &h, &d), &d,
             "parse");
        assert_int_equal(h->version, 1);
        assert_int_equal(h->block_size, BS);
        assert_int_equal(h->size, NB * BS);
        assert_int_equal(h->generation, 1);
        assert_memory_equal(h->build_id.b, f->b.b, 16);
        assert_memory_equal(h->base_build_id.b, f->a.b, 16);
        assert_int_equal(h->n_builds, 2);
        assert_int_equal(h->n_extents, 10);
        for (uint32_t i = 0; i < 2; i++)
                assert_true(h->builds[i].file_size == UINT64_MAX); /* unknown until opened */
        int ia = memcmp(h->builds[0].id.b, f->a.b, 16) == 0 ? 0 : 1;
        assert_memory_equal(h->builds[ia].id.b, f->a.b, 16);
        assert_memory_equal(h->builds[1 - ia].id.b, f->b.b, 16);
        assert_int_equal(h->extents[3].build, VMSNAP_MEM_ZERO);
        assert_int_equal(h->extents[3].storage_offset, 0); /* the seed's garbage is ignored */
        assert_int_equal(h->extents[6].storage_offset, 0);
        assert_int_equal(h->extents[8].build, (uint32_t)(1 - ia));
        assert_int_equal(h->extents[8].storage_offset, 2 * BS);
        assert_int_equal(h->extents[7].offset, 9 * BS);
        assert_int_equal(h->extents[7].length, 3 * BS);
        assert_int_equal(h->extents[7].build, (uint32_t)ia);

        /* Without file sizes it cannot be written; with them it becomes an equal v2. */
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_true(vmsnap_mem_header_serialize(h, &buf, &len, &d) < 0);
        h->builds[ia].file_size = f->a_len;
        h->builds[1 - ia].file_size = f->b_len;
        must(vmsnap_mem_header_serialize(h, &buf, &len, &d), &d, "serialize");
        must(vmsnap_mem_header_parse(buf, len, "v2", &v2, &d), &d, "parse v2");
        assert_int_equal(v2->version, 2);
        assert_int_equal(v2->n_extents, h->n_extents);
        for (uint64_t i = 0; i < h->n_extents; i++)
                assert_memory_equal(&v2->extents[i], &h->extents[i], sizeof(h->extents[i]));
        free(buf);
        vmsnap_mem_header_free(v2);
        vmsnap_mem_header_free(h);
}

static void test_v1_read_every_byte(void **state)
{
        struct fixture *f = *state;
        assert_reads(f->dir, f->expect, NB * BS);

        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(f->dir, &s, &d), &d, "open");
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        assert_int_equal(h->version, 1);
        for (uint32_t i = 0; i < h->n_builds; i++) {
                bool is_a = memcmp(h->builds[i].id.b, f->a.b, 16) == 0;
                assert_int_equal(h->builds[i].file_size, is_a ? f->a_len : f->b_len);
        }
        /* Seed snapshots carry no hash tables. */
        struct vmsnap_mem_location loc;
        must(vmsnap_mem_locate(s, 5 * BS + 100, &loc), &d, "locate");
        assert_false(loc.zero);
        assert_true(loc.fd >= 0);
        assert_int_equal(loc.storage_offset, 3 * BS + 100);
        assert_int_equal(loc.run, 2 * BS - 100);
        assert_null(loc.hashes);
        must(vmsnap_mem_locate(s, 8 * BS, &loc), &d, "locate");
        assert_true(loc.zero);
        assert_int_equal(loc.run, BS);
        vmsnap_mem_close(s);
}

static void test_v1_materialize(void **state)
{
        struct fixture *f = *state;
        char *out = test_path(f->root, "materialized");
        assert_materializes(f->dir, out, f->expect, NB * BS);
        /* The ZERO tail [13, 16) is a hole. */
        if (keeps_holes(f->root)) {
                int fd = open(out, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                off_t data = lseek(fd, 13 * BS, SEEK_DATA);
                assert_true(data < 0 && errno == ENXIO);
                close(fd);
        }
        free(out);
}

static void test_v1_verify_and_files(void **state)
{
        struct fixture *f = *state;
        assert_verifies(f->dir);
        struct vmsnap_diag d = {0};
        char **names = NULL;
        must(vmsnap_mem_files(f->dir, &names, &d), &d, "files");
        char *bn = diff_name(&f->b);
        size_t n = 0;
        bool header = false, base = false, b = false;
        for (; names[n]; n++) {
                header |= strcmp(names[n], "memfile.header") == 0;
                base |= strcmp(names[n], "memfile") == 0;
                b |= strcmp(names[n], bn) == 0;
        }
        assert_int_equal(n, 3);
        assert_true(header && base && b);
        free(bn);
        vmsnap_mem_files_free(names);
}

/* A header of exactly 64 bytes means one extent {0, size, build_id, 0}. */
static void test_v1_header_only(void **state)
{
        struct fixture *f = *state;
        char *dir = test_path(f->root, "only64");
        assert_int_equal(mkdir(dir, 0755), 0);
        uint8_t *mem = malloc(8 * BS);
        assert_non_null(mem);
        for (unsigned i = 0; i < 8; i++)
                block_content(mem + i * BS, BS, 500 + i);
        memset(mem + 3 * BS, 0, BS); /* a zero block stored as data, as the seed may */
        size_t len;
        uint8_t *h = v1_header(BS, 8 * BS, 0, &f->a, &f->a, NULL, 0, &len);
        assert_int_equal(len, 64);
        write_in(dir, "memfile.header", h, len);
        write_in(dir, "memfile", mem, 8 * BS);
        assert_reads(dir, mem, 8 * BS);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(dir, &s, &d), &d, "open");
        const struct vmsnap_mem_header *hh = vmsnap_mem_header(s);
        assert_int_equal(hh->n_extents, 1);
        assert_int_equal(hh->extents[0].offset, 0);
        assert_int_equal(hh->extents[0].length, 8 * BS);
        assert_int_equal(hh->extents[0].storage_offset, 0);
        assert_memory_equal(hh->builds[hh->extents[0].build].id.b, f->a.b, 16);
        vmsnap_mem_close(s);
        free(h);

        /* A later generation's 64-byte header reads memfile.<build>, never `memfile`. */
        uint8_t *mem2 = malloc(8 * BS);
        assert_non_null(mem2);
        for (unsigned i = 0; i < 8; i++)
                block_content(mem2 + i * BS, BS, 600 + i);
        h = v1_header(BS, 8 * BS, 2, &f->b, &f->a, NULL, 0, &len);
        write_in(dir, "memfile.header", h, len);
        char *bn = diff_name(&f->b);
        write_in(dir, bn, mem2, 8 * BS);
        assert_reads(dir, mem2, 8 * BS);
        free(bn);
        free(h);
        free(mem);
        free(mem2);
        free(dir);
}

/* A later build's missing diff file is an error naming it: never served from `memfile`
 * (which here is big enough to serve every extent: seed bug W6). */
static void test_v1_missing_diff_file(void **state)
{
        struct fixture *f = *state;
        char *bn = diff_name(&f->b);
        char *bp = test_path(f->dir, bn);
        assert_int_equal(unlink(bp), 0);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s = NULL;
        int r = vmsnap_mem_open(f->dir, &s, &d);
        assert_true(r < 0);
        assert_null(s);
        assert_msg_has(&d, bn);
        char *out = test_path(f->root, "out");
        assert_true(vmsnap_mem_materialize(f->dir, out, NULL, &d) < 0);
        assert_msg_has(&d, bn);
        assert_false(exists_in(f->root, "out"));
        assert_true(vmsnap_mem_verify(f->dir, NULL, NULL, &d) < 0);
        assert_msg_has(&d, bn);

        /* Without `memfile` either, the base build's absence is named too. */
        test_write_file(bp, f->b_file, f->b_len);
        char *mp = test_path(f->dir, "memfile");
        assert_int_equal(unlink(mp), 0);
        r = vmsnap_mem_open(f->dir, &s, &d);
        assert_true(r < 0);
        assert_msg_has(&d, f->dir);
        assert_msg_has(&d, "/memfile");
        assert_null(strstr(d.msg, "memfile.header")); /* the diff file, not the header */
        free(mp);
        free(out);
        free(bp);
        free(bn);
}

static void test_v1_partial_trailing_entry(void **state)
{
        struct fixture *f = *state;
        for (size_t extra = 1; extra < 40; extra += 13) {
                size_t len = f->header_len + extra;
                uint8_t *buf = calloc(1, len);
                assert_non_null(buf);
                memcpy(buf, f->header, f->header_len);
                struct vmsnap_diag d = {0};
                struct vmsnap_mem_header *h = NULL;
                assert_int_equal(vmsnap_mem_header_parse(buf, len, "seed/memfile.header", &h, &d),
                                 -EBADMSG);
                assert_null(h);
                assert_msg_has(&d, "seed/memfile.header");
                write_in(f->dir, "memfile.header", buf, len);
                struct vmsnap_mem_snapshot *s = NULL;
                assert_int_equal(vmsnap_mem_open(f->dir, &s, &d), -EBADMSG);
                assert_msg_has(&d, "memfile.header");
                assert_msg_has(&d, f->dir);
                free(buf);
        }
        /* Shorter than the metadata. */
        for (size_t len = 0; len < 64; len++) {
                struct vmsnap_diag d = {0};
                struct vmsnap_mem_header *h = NULL;
                uint8_t *buf = malloc(len ? len : 1);
                assert_non_null(buf);
                memcpy(buf, f->header, len);
                assert_int_equal(vmsnap_mem_header_parse(buf, len, "seed/memfile.header", &h, &d),
                                 -EBADMSG);
                assert_msg_has(&d, "truncated");
                free(buf);
        }
}

/* Every whole-entry prefix parses or fails cleanly (coverage); none crashes. */
static void test_v1_every_prefix(void **state)
{
        struct fixture *f = *state;
        for (size_t len = 0; len <= f->header_len; len++) {
                struct vmsnap_diag d = {0};
                struct vmsnap_mem_header *h = NULL;
                uint8_t *buf = malloc(len ? len : 1);
                assert_non_null(buf);
                memcpy(buf, f->header, len);
                int r = vmsnap_mem_header_parse(buf, len, "seed", &h, &d);
                /* Only the full header and the 64-byte convention are complete headers. */
                if (len == 64 || len == f->header_len)
                        assert_int_equal(r, 0);
                else
                        assert_int_equal(r, -EBADMSG);
                vmsnap_mem_header_free(h);
                free(buf);
        }
}

/* Storage past the real end of a diff file (or a ragged diff file) is refused on open. */
static void test_v1_storage_beyond_diff_file(void **state)
{
        struct fixture *f = *state;
        char *bn = diff_name(&f->b);
        char *bp = test_path(f->dir, bn);
        assert_int_equal(truncate(bp, 2 * BS), 0); /* entry {12, 1, b, 2 blocks} needs 3 */
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s = NULL;
        assert_int_equal(vmsnap_mem_open(f->dir, &s, &d), -EBADMSG);
        assert_msg_has(&d, "beyond");
        assert_int_equal(truncate(bp, 3 * BS + 100), 0);
        assert_int_equal(vmsnap_mem_open(f->dir, &s, &d), -EBADMSG);
        assert_msg_has(&d, "not block-aligned");
        assert_null(s);
        free(bp);
        free(bn);
}

/* ---- carrying a seed snapshot forward ----------------------------------------------------- */

/* The next memory: block 0 rewritten, block 5 (generation 0's data) written to all zeros,
 * block 14 new, everything else as the snapshot holds it. */
static uint8_t *next_memory(const struct fixture *f, const char *path)
{
        uint8_t *mem = malloc(NB * BS);
        assert_non_null(mem);
        memcpy(mem, f->expect, NB * BS);
        block_content(mem, BS, 300);
        memset(mem + 5 * BS, 0, BS);
        block_content(mem + 14 * BS, BS, 314);
        test_write_file(path, mem, NB * BS);
        return mem;
}

static void assert_v2_over_v1(const struct fixture *f, const char *dir,
                              const struct vmsnap_mem_result *res)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(dir, &s, &d), &d, "open");
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        assert_int_equal(h->version, 2);
        assert_int_equal(h->generation, 2);
        assert_int_equal(res->generation, 2);
        assert_memory_equal(h->build_id.b, res->build_id.b, 16);
        assert_memory_equal(h->base_build_id.b, f->a.b, 16);
        assert_int_equal(h->n_builds, 3); /* a (blocks 2, 6, 9-11), b (1, 4, 12), the new one */
        assert_int_equal(res->data_blocks, 2);
        assert_true(res->zero_blocks >= 1);
        /* Block 5 was generation 0's data and is now zeros: ZERO, not the stale bytes. */
        struct vmsnap_mem_location loc;
        must(vmsnap_mem_locate(s, 5 * BS, &loc), &d, "locate");
        assert_true(loc.zero);
        /* Blocks still served by the seed's base build come from memfile.<a> now. */
        must(vmsnap_mem_locate(s, 2 * BS, &loc), &d, "locate");
        assert_false(loc.zero);
        assert_non_null(loc.hashes);
        char *an = diff_name(&f->a);
        char *ap = test_path(dir, an);
        struct stat st_loc, st_file;
        assert_int_equal(fstat(loc.fd, &st_loc), 0);
        assert_int_equal(stat(ap, &st_file), 0);
        assert_int_equal(st_loc.st_ino, st_file.st_ino);
        uint8_t block[BS];
        must(vmsnap_mem_read(s, 2 * BS, block, BS, &d), &d, "read");
        assert_true(vmsnap_mem_block_ok(s, block, loc.hashes));
        vmsnap_mem_close(s);
        free(ap);
        free(an);

        char **names = NULL;
        must(vmsnap_mem_files(dir, &names, &d), &d, "files");
        size_t n = 0;
        for (; names[n]; n++) {
                assert_string_not_equal(names[n], "memfile");
                assert_true(exists_in(dir, names[n]));
        }
        assert_int_equal(n, 1 + 2 * 3);
        vmsnap_mem_files_free(names);
}

static void test_v1_diff_into_new_dir(void **state)
{
        struct fixture *f = *state;
        char *memp = test_path(f->root, "mem.raw");
        char *out = test_path(f->root, "gen2");
        uint8_t *mem = next_memory(f, memp);
        char *before = list_dir(f->dir);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_diff(memp, out, f->dir, NULL, &res, &d), &d, "diff");
        assert_v2_over_v1(f, out, &res);
        assert_reads(out, mem, NB * BS);
        assert_verifies(out);
        assert_false(exists_in(out, "memfile"));
        char *m = test_path(f->root, "m.out");
        assert_materializes(out, m, mem, NB * BS);

        /* The seed snapshot is untouched and still reads as before. */
        char *after = list_dir(f->dir);
        assert_string_equal(before, after);
        char *hp = test_path(f->dir, "memfile.header");
        size_t len;
        uint8_t *hdr = test_read_file(hp, &len);
        assert_non_null(hdr);
        assert_int_equal(len, f->header_len);
        assert_memory_equal(hdr, f->header, len);
        assert_reads(f->dir, f->expect, NB * BS);
        free(hdr);
        free(hp);
        free(after);
        free(before);
        free(m);
        free(mem);
        free(out);
        free(memp);
}

static void test_v1_diff_in_place(void **state)
{
        struct fixture *f = *state;
        char *memp = test_path(f->root, "mem.raw");
        uint8_t *mem = next_memory(f, memp);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_diff(memp, f->dir, f->dir, NULL, &res, &d), &d, "diff in place");
        assert_v2_over_v1(f, f->dir, &res);
        /* The seed name is gone; its data is served as memfile.<a>, with a hash table. */
        assert_false(exists_in(f->dir, "memfile"));
        char *an = diff_name(&f->a);
        char hn[80];
        snprintf(hn, sizeof(hn), "%s.hashes", an);
        assert_true(exists_in(f->dir, an));
        assert_true(exists_in(f->dir, hn));
        assert_reads(f->dir, mem, NB * BS);
        assert_verifies(f->dir);
        char *m = test_path(f->root, "m.out");
        assert_materializes(f->dir, m, mem, NB * BS);
        free(m);
        free(an);
        free(mem);
        free(memp);
}

/* Two generations over the seed, then a merge: every step reads back exactly. */
static void test_v1_diff_twice_then_merge(void **state)
{
        struct fixture *f = *state;
        char *memp = test_path(f->root, "mem.raw");
        uint8_t *mem = next_memory(f, memp);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_diff(memp, f->dir, f->dir, NULL, &res, &d), &d, "diff 1");
        memset(mem + 9 * BS, 0, 3 * BS);      /* a's last run zeroed */
        block_content(mem + 4 * BS, BS, 404); /* b's block rewritten */
        test_write_file(memp, mem, NB * BS);
        must(vmsnap_mem_diff(memp, f->dir, f->dir, NULL, &res, &d), &d, "diff 2");
        assert_int_equal(res.generation, 3);
        assert_reads(f->dir, mem, NB * BS);
        assert_verifies(f->dir);
        must(vmsnap_mem_merge(f->dir, &res, &d), &d, "merge");
        assert_int_equal(res.generation, 0);
        assert_reads(f->dir, mem, NB * BS);
        assert_verifies(f->dir);
        char **names = NULL;
        must(vmsnap_mem_files(f->dir, &names, &d), &d, "files");
        size_t n = 0;
        while (names[n])
                n++;
        assert_int_equal(n, 3);
        vmsnap_mem_files_free(names);
        free(mem);
        free(memp);
}

/* Merge straight from the seed format. */
static void test_v1_merge(void **state)
{
        struct fixture *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_result res;
        must(vmsnap_mem_merge(f->dir, &res, &d), &d, "merge");
        assert_int_equal(res.generation, 0);
        assert_false(exists_in(f->dir, "memfile"));
        char *bn = diff_name(&f->b);
        assert_false(exists_in(f->dir, bn));
        struct vmsnap_mem_snapshot *s;
        must(vmsnap_mem_open(f->dir, &s, &d), &d, "open");
        const struct vmsnap_mem_header *h = vmsnap_mem_header(s);
        assert_int_equal(h->version, 2);
        assert_int_equal(h->n_builds, 1);
        assert_memory_equal(h->build_id.b, h->base_build_id.b, 16);
        assert_int_equal(h->builds[0].file_size, 10 * BS); /* every data block, once */
        vmsnap_mem_close(s);
        assert_reads(f->dir, f->expect, NB * BS);
        assert_verifies(f->dir);
        free(bn);
}

/* A seed snapshot with many builds (the table allows 4096): one long extent of the base
 * build, then one block of each of 255 later builds. Every operation that reads the diff
 * files must cope, whatever its per-build buffers. Returns the memory it holds. */
enum { MANY_BUILDS = 256, MANY_LONG = 80, MANY_BLOCKS = MANY_LONG + MANY_BUILDS - 1 + 1 };

static uint8_t *many_builds(const char *dir)
{
        assert_int_equal(mkdir(dir, 0755), 0);
        struct vmsnap_uuid *ids = calloc(MANY_BUILDS, sizeof(*ids));
        struct v1_entry *e = calloc(MANY_BUILDS + 1, sizeof(*e));
        uint8_t *mem = calloc(MANY_BLOCKS, BS);
        assert_non_null(ids);
        assert_non_null(e);
        assert_non_null(mem);
        for (unsigned i = 0; i < MANY_BUILDS; i++)
                ids[i] = numbered_uuid(i + 1);
        for (unsigned i = 0; i < MANY_LONG; i++)
                block_content(mem + (size_t)i * BS, BS, 1000 + i);
        write_in(dir, "memfile", mem, (size_t)MANY_LONG * BS);
        e[0] = (struct v1_entry){0, MANY_LONG, &ids[0], 0};
        for (unsigned i = 1; i < MANY_BUILDS; i++) {
                uint64_t blk = MANY_LONG + i - 1;
                block_content(mem + blk * BS, BS, 2000 + i);
                char *n = diff_name(&ids[i]);
                write_in(dir, n, mem + blk * BS, BS);
                free(n);
                e[i] = (struct v1_entry){blk, 1, &ids[i], 0};
        }
        e[MANY_BUILDS] = (struct v1_entry){MANY_BLOCKS - 1, 1, NULL, 0};
        size_t len;
        uint8_t *h = v1_header(BS, (uint64_t)MANY_BLOCKS * BS, 7, &ids[MANY_BUILDS - 1], &ids[0], e,
                               MANY_BUILDS + 1, &len);
        write_in(dir, "memfile.header", h, len);
        assert_reads(dir, mem, (size_t)MANY_BLOCKS * BS);
        free(h);
        free(e);
        free(ids);
        return mem;
}

static void test_v1_many_builds_materialize(void **state)
{
        struct fixture *f = *state;
        char *dir = test_path(f->root, "many");
        char *out = test_path(f->root, "many.out");
        uint8_t *mem = many_builds(dir);
        assert_materializes(dir, out, mem, (size_t)MANY_BLOCKS * BS);
        free(mem);
        free(out);
        free(dir);
}

static void test_v1_many_builds_merge(void **state)
{
        struct fixture *f = *state;
        char *dir = test_path(f->root, "many");
        uint8_t *mem = many_builds(dir);
        struct vmsnap_diag d = {0};
        must(vmsnap_mem_merge(dir, NULL, &d), &d, "merge");
        assert_reads(dir, mem, (size_t)MANY_BLOCKS * BS);
        assert_verifies(dir);
        free(mem);
        free(dir);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
            T(test_v1_parse),
            T(test_v1_read_every_byte),
            T(test_v1_materialize),
            T(test_v1_verify_and_files),
            T(test_v1_header_only),
            T(test_v1_missing_diff_file),
            T(test_v1_partial_trailing_entry),
            T(test_v1_every_prefix),
            T(test_v1_storage_beyond_diff_file),
            T(test_v1_diff_into_new_dir),
            T(test_v1_diff_in_place),
            T(test_v1_diff_twice_then_merge),
            T(test_v1_merge),
            T(test_v1_many_builds_materialize),
            T(test_v1_many_builds_merge),
        };
#undef T
        return cmocka_run_group_tests(tests, NULL, NULL);
}
