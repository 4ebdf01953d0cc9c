/* The v2 block-mapping header as a value: serialize/parse round trips, the byte layout of
 * docs/format.md, and one test per validation rule. Broken headers are encoded by the
 * test's own encoder (written from docs/format.md, not from the implementation) and
 * resealed with a fresh trailer, so the structural rule under test is what fails, not the
 * checksum; the same broken value is also given to vmsnap_mem_header_serialize, which must
 * refuse it (a header that could not be read back is never written). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmsnap/mem.h>

#include "testlib.h"
#include "util/ids.h"

#define NAME    "snapdir-under-test/memfile.header"
#define WNAME   "memfile.header" /* what serialize's messages name */
#define BS      4096ull
#define FIXED   96u
#define BUILD   48u
#define EXTENT  32u
#define TRAILER 16u

/* ---- an independent encoder (docs/format.md, byte by byte) ----------------------------- */

static void le32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++, v >>= 8)
                p[i] = (uint8_t)v;
}

static void le64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++, v >>= 8)
                p[i] = (uint8_t)v;
}

static size_t build_at(uint32_t i)
{
        return FIXED + BUILD * (size_t)i;
}

static size_t extent_at(const struct vmsnap_mem_header *h, uint64_t i)
{
        return FIXED + BUILD * (size_t)h->n_builds + EXTENT * (size_t)i;
}

/* Recomputes the trailer: XXH3-128 (canonical order) of every byte before it. */
static void reseal(uint8_t *buf, size_t len)
{
        struct vmsnap_hash sum;
        vmsnap_hash128(buf, len - TRAILER, &sum);
        memcpy(buf + len - TRAILER, sum.b, 16);
}

/* Encodes h as the doc says, without validating anything (storage offsets as given). */
static uint8_t *raw_encode(const struct vmsnap_mem_header *h, size_t *ret_len)
{
        size_t len = FIXED + BUILD * (size_t)h->n_builds + EXTENT * (size_t)h->n_extents + TRAILER;
        uint8_t *b = calloc(1, len);
        assert_non_null(b);
        memcpy(b, "VMSNAPMH", 8);
        le32(b + 8, 2);
        le64(b + 16, h->block_size);
        le64(b + 24, h->size);
        le64(b + 32, h->generation);
        memcpy(b + 40, h->build_id.b, 16);
        memcpy(b + 56, h->base_build_id.b, 16);
        le32(b + 72, h->n_builds);
        le64(b + 80, h->n_extents);
        for (uint32_t i = 0; i < h->n_builds; i++) {
                uint8_t *p = b + build_at(i);
                memcpy(p, h->builds[i].id.b, 16);
                le64(p + 16, h->builds[i].file_size);
                memcpy(p + 24, h->builds[i].checksum.b, 16);
        }
        for (uint64_t i = 0; i < h->n_extents; i++) {
                uint8_t *p = b + extent_at(h, i);
                le64(p, h->extents[i].offset);
                le64(p + 8, h->extents[i].length);
                le32(p + 16, h->extents[i].build);
                le64(p + 24, h->extents[i].storage_offset);
        }
        reseal(b, len);
        *ret_len = len;
        return b;
}

/* ---- sample headers --------------------------------------------------------------------- */

static struct vmsnap_uuid uuid_of(uint8_t tag)
{
        struct vmsnap_uuid u;
        for (int i = 0; i < 16; i++)
                u.b[i] = (uint8_t)(tag * 17 + i * 31 + 1);
        u.b[6] = (uint8_t)(0x40 | (u.b[6] & 0x0f)); /* a v4-looking id */
        u.b[8] = (uint8_t)(0x80 | (u.b[8] & 0x3f));
        return u;
}

static struct vmsnap_hash hash_of(uint8_t tag)
{
        struct vmsnap_hash h;
        for (int i = 0; i < 16; i++)
                h.b[i] = (uint8_t)(tag ^ (i * 13));
        return h;
}

static struct vmsnap_mem_header *alloc_header(uint32_t n_builds, uint64_t n_extents)
{
        struct vmsnap_mem_header *h = calloc(1, sizeof(*h));
        assert_non_null(h);
        h->builds = calloc(n_builds ? n_builds : 1, sizeof(*h->builds));
        h->extents = calloc(n_extents ? n_extents : 1, sizeof(*h->extents));
        assert_non_null(h->builds);
        assert_non_null(h->extents);
        h->n_builds = n_builds;
        h->n_extents = n_extents;
        return h;
}

/* Generation 3 of a 64-block chain: three builds (the last is this generation's own), six
 * extents mixing data of every build and ZERO runs; the base build is no longer in the
 * table (base_build_id is informational). */
static struct vmsnap_mem_header *sample(void)
{
        struct vmsnap_mem_header *h = alloc_header(3, 6);
        h->version = 2;
        h->block_size = BS;
        h->size = 64 * BS;
        h->generation = 3;
        h->build_id = uuid_of(3);
        h->base_build_id = uuid_of(0xb0);
        h->builds[0] = (struct vmsnap_mem_build){uuid_of(1), 10 * BS, hash_of(1)};
        h->builds[1] = (struct vmsnap_mem_build){uuid_of(2), 4 * BS, hash_of(2)};
        h->builds[2] = (struct vmsnap_mem_build){uuid_of(3), 6 * BS, hash_of(3)};
        h->extents[0] = (struct vmsnap_mem_extent){0, 4 * BS, 0, 0};
        h->extents[1] = (struct vmsnap_mem_extent){4 * BS, 8 * BS, VMSNAP_MEM_ZERO, 0};
        h->extents[2] = (struct vmsnap_mem_extent){12 * BS, 2 * BS, 1, 2 * BS};
        h->extents[3] = (struct vmsnap_mem_extent){14 * BS, 6 * BS, 2, 0};
        h->extents[4] = (struct vmsnap_mem_extent){20 * BS, 6 * BS, 0, 4 * BS};
        h->extents[5] = (struct vmsnap_mem_extent){26 * BS, 38 * BS, VMSNAP_MEM_ZERO, 0};
        return h;
}

/* ---- assertions ---------------------------------------------------------------------- */

static void assert_msg_has(const struct vmsnap_diag *d, const char *what)
{
        if (!strstr(d->msg, what))
                fail_msg("diagnostic \"%s\" does not contain \"%s\"", d->msg, what);
}

static void assert_headers_equal(const struct vmsnap_mem_header *a,
                                 const struct vmsnap_mem_header *b)
{
        assert_int_equal(a->block_size, b->block_size);
        assert_int_equal(a->size, b->size);
        assert_int_equal(a->generation, b->generation);
        assert_memory_equal(a->build_id.b, b->build_id.b, 16);
        assert_memory_equal(a->base_build_id.b, b->base_build_id.b, 16);
        assert_int_equal(a->n_builds, b->n_builds);
        for (uint32_t i = 0; i < a->n_builds; i++) {
                assert_memory_equal(a->builds[i].id.b, b->builds[i].id.b, 16);
                assert_int_equal(a->builds[i].file_size, b->builds[i].file_size);
                assert_memory_equal(a->builds[i].checksum.b, b->builds[i].checksum.b, 16);
        }
        assert_int_equal(a->n_extents, b->n_extents);
        for (uint64_t i = 0; i < a->n_extents; i++) {
                assert_int_equal(a->extents[i].offset, b->extents[i].offset);
                assert_int_equal(a->extents[i].length, b->extents[i].length);
                assert_int_equal(a->extents[i].build, b->extents[i].build);
                assert_int_equal(a->extents[i].storage_offset, b->extents[i].storage_offset);
        }
}

/* Parses a copy of buf in an allocation of exactly len bytes (so ASan sees any over-read). */
static int parse_exact(const uint8_t *buf, size_t len, struct vmsnap_mem_header **ret,
                       struct vmsnap_diag *d)
{
        uint8_t *copy = malloc(len ? len : 1);
        assert_non_null(copy);
        if (len)
                memcpy(copy, buf, len);
        int r = vmsnap_mem_header_parse(copy, len, NAME, ret, d);
        free(copy);
        return r;
}

/* The parser must refuse buf with -EBADMSG, leave *ret alone, and say what is wrong. */
static void expect_parse_fails(const uint8_t *buf, size_t len, const char *phrase)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_header *h = NULL;
        int r = parse_exact(buf, len, &h, &d);
        if (r != -EBADMSG) {
                vmsnap_mem_header_free(r == 0 ? h : NULL);
                fail_msg("parse returned %d, expected -EBADMSG (phrase \"%s\", diag \"%s\")", r,
                         phrase ? phrase : "", d.msg);
        }
        assert_null(h);
        assert_int_equal(d.err, -EBADMSG);
        assert_msg_has(&d, NAME);
        if (phrase)
                assert_msg_has(&d, phrase);
}

static void expect_serialize_fails(const struct vmsnap_mem_header *h, const char *phrase)
{
        struct vmsnap_diag d = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        int r = vmsnap_mem_header_serialize(h, &buf, &len, &d);
        if (r != -EBADMSG) {
                free(r == 0 ? buf : NULL);
                fail_msg("serialize returned %d, expected -EBADMSG (phrase \"%s\", diag \"%s\")", r,
                         phrase, d.msg);
        }
        assert_null(buf);
        assert_msg_has(&d, WNAME);
        assert_msg_has(&d, phrase);
        assert_int_equal(vmsnap_mem_header_validate(h, NAME, &d), -EBADMSG);
}

/* A broken header value is refused both ways: encoded and resealed it does not parse, and
 * serialize will not write it. */
static void expect_rejected(struct vmsnap_mem_header *h, const char *parse_phrase,
                            const char *write_phrase)
{
        size_t len;
        uint8_t *buf = raw_encode(h, &len);
        expect_parse_fails(buf, len, parse_phrase);
        free(buf);
        expect_serialize_fails(h, write_phrase ? write_phrase : parse_phrase);
        vmsnap_mem_header_free(h);
}

/* The sample, encoded: callers patch a field and reseal. */
static uint8_t *sample_bytes(size_t *len)
{
        struct vmsnap_mem_header *h = sample();
        uint8_t *buf = raw_encode(h, len);
        vmsnap_mem_header_free(h);
        return buf;
}

/* ---- round trips and layout -------------------------------------------------------------- */

static void test_sample_is_valid(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_mem_header_validate(h, NAME, &d), 0);
        vmsnap_mem_header_free(h);
}

static void test_roundtrip(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample(), *p = NULL;
        struct vmsnap_diag d = {0};
        uint8_t *buf = NULL, *again = NULL;
        size_t len = 0, len2 = 0;
        assert_int_equal(vmsnap_mem_header_serialize(h, &buf, &len, &d), 0);
        assert_int_equal(len, FIXED + 3 * BUILD + 6 * EXTENT + TRAILER);
        assert_int_equal(parse_exact(buf, len, &p, &d), 0);
        assert_non_null(p);
        assert_int_equal(p->version, 2);
        assert_headers_equal(h, p);
        /* Serializing what was parsed gives the same bytes. */
        assert_int_equal(vmsnap_mem_header_serialize(p, &again, &len2, &d), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(again, buf, len);
        free(buf);
        free(again);
        vmsnap_mem_header_free(p);
        vmsnap_mem_header_free(h);
}

/* serialize writes exactly the bytes docs/format.md describes. */
static void test_serialize_layout(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        struct vmsnap_diag d = {0};
        uint8_t *buf = NULL, *want;
        size_t len = 0, want_len;
        assert_int_equal(vmsnap_mem_header_serialize(h, &buf, &len, &d), 0);
        want = raw_encode(h, &want_len);
        assert_int_equal(len, want_len);
        assert_memory_equal(buf, "VMSNAPMH", 8);
        assert_memory_equal(buf, want, len);
        /* Spot checks against hand-written little-endian bytes. */
        static const uint8_t version_flags[8] = {2, 0, 0, 0, 0, 0, 0, 0};
        static const uint8_t bs[8] = {0x00, 0x10, 0, 0, 0, 0, 0, 0};
        static const uint8_t size[8] = {0x00, 0x00, 0x04, 0, 0, 0, 0, 0}; /* 64 * 4096 */
        static const uint8_t zero_build[4] = {0xff, 0xff, 0xff, 0xff};
        assert_memory_equal(buf + 8, version_flags, 8);
        assert_memory_equal(buf + 16, bs, 8);
        assert_memory_equal(buf + 24, size, 8);
        assert_int_equal(buf[32], 3);
        assert_int_equal(buf[72], 3);
        assert_int_equal(buf[80], 6);
        assert_memory_equal(buf + extent_at(h, 1) + 16, zero_build, 4);
        struct vmsnap_hash sum;
        vmsnap_hash128(buf, len - TRAILER, &sum);
        assert_memory_equal(buf + len - TRAILER, sum.b, 16);
        free(buf);
        free(want);
        vmsnap_mem_header_free(h);
}

static void test_roundtrip_2mib(void **state)
{
        (void)state;
        const uint64_t big = 2ull << 20;
        struct vmsnap_mem_header *h = alloc_header(1, 3), *p = NULL;
        h->version = 2;
        h->block_size = big;
        h->size = 8 * big;
        h->build_id = h->base_build_id = uuid_of(9);
        h->builds[0] = (struct vmsnap_mem_build){uuid_of(9), 3 * big, hash_of(9)};
        h->extents[0] = (struct vmsnap_mem_extent){0, 2 * big, 0, 0};
        h->extents[1] = (struct vmsnap_mem_extent){2 * big, 5 * big, VMSNAP_MEM_ZERO, 0};
        h->extents[2] = (struct vmsnap_mem_extent){7 * big, big, 0, 2 * big};
        struct vmsnap_diag d = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(vmsnap_mem_header_serialize(h, &buf, &len, &d), 0);
        assert_int_equal(parse_exact(buf, len, &p, &d), 0);
        assert_headers_equal(h, p);
        free(buf);
        vmsnap_mem_header_free(p);
        vmsnap_mem_header_free(h);
}

/* Readers accept non-normalized extents (ZERO next to ZERO, same build contiguous). */
static void test_accepts_non_normalized(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = alloc_header(1, 4), *p = NULL;
        h->version = 2;
        h->block_size = BS;
        h->size = 8 * BS;
        h->build_id = uuid_of(4);
        h->builds[0] = (struct vmsnap_mem_build){uuid_of(4), 4 * BS, hash_of(4)};
        h->extents[0] = (struct vmsnap_mem_extent){0, BS, 0, 0};
        h->extents[1] = (struct vmsnap_mem_extent){BS, 3 * BS, 0, BS};
        h->extents[2] = (struct vmsnap_mem_extent){4 * BS, 2 * BS, VMSNAP_MEM_ZERO, 0};
        h->extents[3] = (struct vmsnap_mem_extent){6 * BS, 2 * BS, VMSNAP_MEM_ZERO, 0};
        size_t len;
        uint8_t *buf = raw_encode(h, &len);
        struct vmsnap_diag d = {0};
        if (parse_exact(buf, len, &p, &d) != 0)
                fail_msg("non-normalized header refused: %s", d.msg);
        assert_headers_equal(h, p);
        free(buf);
        vmsnap_mem_header_free(p);
        vmsnap_mem_header_free(h);
}

/* The generation's own build needs no extent (a generation that changed nothing), and a
 * build may be referenced out of order (the table is "sorted by nothing"). */
static void test_own_build_may_be_unreferenced(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = alloc_header(2, 2), *p = NULL;
        h->version = 2;
        h->block_size = BS;
        h->size = 4 * BS;
        h->generation = 1;
        h->build_id = uuid_of(2);
        h->base_build_id = uuid_of(1);
        h->builds[0] = (struct vmsnap_mem_build){uuid_of(2), 0, hash_of(2)};
        h->builds[1] = (struct vmsnap_mem_build){uuid_of(1), 2 * BS, hash_of(1)};
        h->extents[0] = (struct vmsnap_mem_extent){0, 2 * BS, 1, 0};
        h->extents[1] = (struct vmsnap_mem_extent){2 * BS, 2 * BS, VMSNAP_MEM_ZERO, 0};
        struct vmsnap_diag d = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        if (vmsnap_mem_header_serialize(h, &buf, &len, &d) != 0)
                fail_msg("serialize refused: %s", d.msg);
        assert_int_equal(parse_exact(buf, len, &p, &d), 0);
        assert_headers_equal(h, p);
        free(buf);
        vmsnap_mem_header_free(p);
        vmsnap_mem_header_free(h);
}

/* size may be exactly the 16 TiB cap. */
static void test_size_cap_boundary(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = alloc_header(1, 1), *p = NULL;
        h->version = 2;
        h->block_size = 2ull << 20;
        h->size = VMSNAP_MEM_MAX_SIZE;
        h->build_id = uuid_of(5);
        h->builds[0] = (struct vmsnap_mem_build){uuid_of(5), 0, hash_of(5)};
        h->extents[0] = (struct vmsnap_mem_extent){0, VMSNAP_MEM_MAX_SIZE, VMSNAP_MEM_ZERO, 0};
        size_t len;
        uint8_t *buf = raw_encode(h, &len);
        struct vmsnap_diag d = {0};
        if (parse_exact(buf, len, &p, &d) != 0)
                fail_msg("16 TiB header refused: %s", d.msg);
        vmsnap_mem_header_free(p);
        free(buf);
        h->size += h->block_size;
        h->extents[0].length = h->size;
        expect_rejected(h, "cap", NULL);
}

/* 4096 builds is allowed (every one but the own build referenced); 4097 is not. */
static struct vmsnap_mem_header *many_builds(uint32_t n)
{
        struct vmsnap_mem_header *h = alloc_header(n, n - 1);
        h->version = 2;
        h->block_size = BS;
        h->size = (n - 1) * BS;
        for (uint32_t i = 0; i < n; i++) {
                struct vmsnap_uuid u = {{0}};
                le32(u.b, i + 1);
                u.b[15] = 0x5a;
                h->builds[i] = (struct vmsnap_mem_build){u, BS, hash_of((uint8_t)i)};
        }
        h->build_id = h->builds[n - 1].id;
        for (uint32_t i = 0; i + 1 < n; i++)
                h->extents[i] = (struct vmsnap_mem_extent){i * BS, BS, i, 0};
        return h;
}

static void test_build_cap(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = many_builds(VMSNAP_MEM_MAX_BUILDS), *p = NULL;
        struct vmsnap_diag d = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        if (vmsnap_mem_header_serialize(h, &buf, &len, &d) != 0)
                fail_msg("4096 builds refused on write: %s", d.msg);
        if (parse_exact(buf, len, &p, &d) != 0)
                fail_msg("4096 builds refused on read: %s", d.msg);
        assert_headers_equal(h, p);
        free(buf);
        vmsnap_mem_header_free(p);
        vmsnap_mem_header_free(h);
        expect_rejected(many_builds(VMSNAP_MEM_MAX_BUILDS + 1), "caps", "4097 builds");
}

/* Binary search: every block finds the extent that holds it. */
static void test_find(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        for (uint64_t off = 0; off < h->size; off += BS / 2) {
                uint64_t i = vmsnap_mem_header_find(h, off);
                assert_true(i < h->n_extents);
                assert_true(h->extents[i].offset <= off);
                assert_true(off < h->extents[i].offset + h->extents[i].length);
        }
        assert_int_equal(vmsnap_mem_header_find(h, h->size - 1), h->n_extents - 1);
        vmsnap_mem_header_free(h);
}

static void test_bad_arguments(void **state)
{
        (void)state;
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_header *p = NULL;
        uint8_t byte = 0, *buf = NULL;
        size_t len = 0;
        assert_int_equal(vmsnap_mem_header_parse(NULL, 0, NAME, &p, &d), -EINVAL);
        assert_int_equal(vmsnap_mem_header_parse(&byte, 1, NAME, NULL, &d), -EINVAL);
        assert_int_equal(vmsnap_mem_header_serialize(NULL, &buf, &len, &d), -EINVAL);
        assert_int_equal(vmsnap_mem_header_validate(NULL, NAME, &d), -EINVAL);
        assert_null(p);
        assert_null(buf);
}

/* ---- the trailer and the fixed part (byte-level rules) --------------------------------- */

static void test_checksum_mismatch(void **state)
{
        (void)state;
        size_t len;
        uint8_t *buf = sample_bytes(&len);
        const size_t at = FIXED + 3 * BUILD + 2 * EXTENT + 8; /* extent 2's length */
        buf[at] ^= 0x10;
        expect_parse_fails(buf, len, "checksum mismatch");
        buf[at] ^= 0x10;
        buf[len - 1] ^= 0x01; /* the trailer itself */
        expect_parse_fails(buf, len, "checksum mismatch");
        free(buf);
}

/* No single-bit error anywhere in a valid header goes unnoticed. */
static void test_every_bit_flip_rejected(void **state)
{
        (void)state;
        size_t len;
        uint8_t *buf = sample_bytes(&len);
        for (size_t i = 0; i < len; i++) {
                for (int bit = 0; bit < 8; bit++) {
                        struct vmsnap_diag d = {0};
                        struct vmsnap_mem_header *p = NULL;
                        buf[i] ^= (uint8_t)(1u << bit);
                        int r = parse_exact(buf, len, &p, &d);
                        if (r != -EBADMSG)
                                vmsnap_mem_header_free(r == 0 ? p : NULL);
                        if (r != -EBADMSG)
                                fail_msg("bit %d of byte %zu flipped: parse returned %d (%s)", bit,
                                         i, r, d.msg);
                        assert_null(p);
                        buf[i] ^= (uint8_t)(1u << bit);
                }
        }
        free(buf);
}

static void test_bad_magic(void **state)
{
        (void)state;
        size_t len;
        uint8_t *buf = sample_bytes(&len);
        memcpy(buf, "VMSNAPMX", 8);
        reseal(buf, len);
        expect_parse_fails(buf, len, "bad magic");
        memcpy(buf, "VMSNAPBH", 8); /* a block-hash table is not a header */
        reseal(buf, len);
        expect_parse_fails(buf, len, "bad magic");
        /* A first byte other than 'V' is not v2 at all: still refused (as a bad v1). */
        memcpy(buf, "WMSNAPMH", 8);
        reseal(buf, len);
        expect_parse_fails(buf, len, NULL);
        free(buf);
}

static void test_unsupported_version(void **state)
{
        (void)state;
        static const uint32_t bad[] = {0, 1, 3, 0xffffffffu};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                size_t len;
                uint8_t *buf = sample_bytes(&len);
                le32(buf + 8, bad[i]);
                reseal(buf, len);
                expect_parse_fails(buf, len, "unsupported header version");
                free(buf);
        }
}

static void test_unknown_flags(void **state)
{
        (void)state;
        static const uint32_t bad[] = {1, 0x80000000u};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                size_t len;
                uint8_t *buf = sample_bytes(&len);
                le32(buf + 12, bad[i]);
                reseal(buf, len);
                expect_parse_fails(buf, len, "flags");
                free(buf);
        }
}

/* Reserved fields (fixed part at 76 and 88, build +40, extent +20) must be zero. */
static void test_reserved_fields(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        const size_t where[] = {76,
                                88,
                                91,
                                build_at(0) + 40,
                                build_at(2) + 47,
                                extent_at(h, 0) + 20,
                                extent_at(h, 5) + 23};
        for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
                size_t len;
                uint8_t *buf = raw_encode(h, &len);
                buf[where[i]] = 0x01;
                reseal(buf, len);
                expect_parse_fails(buf, len, "reserved");
                free(buf);
        }
        vmsnap_mem_header_free(h);
}

/* The file length must be exactly 96 + 48 builds + 32 extents + 16. */
static void test_length_must_match_counts(void **state)
{
        (void)state;
        size_t len;
        uint8_t *buf = sample_bytes(&len);
        uint8_t *longer = calloc(1, len + 1);
        assert_non_null(longer);
        memcpy(longer, buf, len - TRAILER);
        reseal(longer, len + 1);
        expect_parse_fails(longer, len + 1, "truncated or padded");
        /* One extent missing, counts unchanged, trailer valid for what is there. */
        memcpy(longer, buf, len - TRAILER - EXTENT);
        reseal(longer, len - EXTENT);
        expect_parse_fails(longer, len - EXTENT, "truncated");
        /* Counts claim one more extent than the file holds. */
        le64(buf + 80, 7);
        reseal(buf, len);
        expect_parse_fails(buf, len, "truncated");
        free(longer);
        free(buf);
}

/* Every proper prefix of a valid header fails cleanly: never a crash, never a header. */
static void test_truncated_every_length(void **state)
{
        (void)state;
        size_t len;
        uint8_t *buf = sample_bytes(&len);
        for (size_t n = 0; n < len; n++) {
                struct vmsnap_diag d = {0};
                struct vmsnap_mem_header *p = NULL;
                int r = parse_exact(buf, n, &p, &d);
                if (r != -EBADMSG)
                        vmsnap_mem_header_free(r == 0 ? p : NULL);
                if (r != -EBADMSG)
                        fail_msg("prefix of %zu/%zu bytes: parse returned %d (%s)", n, len, r,
                                 d.msg);
                assert_null(p);
                assert_msg_has(&d, NAME);
        }
        free(buf);
}

/* Counts far past the caps are refused before any length arithmetic can overflow. */
static void test_count_caps(void **state)
{
        (void)state;
        size_t len;
        uint8_t *buf = sample_bytes(&len);
        le64(buf + 80, VMSNAP_MEM_MAX_EXTENTS + 1);
        reseal(buf, len);
        expect_parse_fails(buf, len, "caps");
        le64(buf + 80, UINT64_MAX);
        reseal(buf, len);
        expect_parse_fails(buf, len, "caps");
        /* A count whose byte length (32 * ne) wraps around 2^64: still refused. */
        le64(buf + 80, (UINT64_MAX / 32) + 2);
        reseal(buf, len);
        expect_parse_fails(buf, len, "caps");
        le64(buf + 80, 6);
        le32(buf + 72, UINT32_MAX);
        reseal(buf, len);
        expect_parse_fails(buf, len, "caps");
        free(buf);

        struct vmsnap_mem_header *h = sample();
        h->n_extents = VMSNAP_MEM_MAX_EXTENTS + 1; /* refused before the array is read */
        expect_serialize_fails(h, "16777217 extents");
        h->n_extents = 6;
        vmsnap_mem_header_free(h);
}

/* A ZERO extent's storage offset must be 0 on disk. */
static void test_zero_extent_storage_offset(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[1].storage_offset = BS;
        size_t len;
        uint8_t *buf = raw_encode(h, &len);
        expect_parse_fails(buf, len, "zero-extent storage");
        free(buf);
        vmsnap_mem_header_free(h);
}

/* ---- geometry ---------------------------------------------------------------------------- */

static void test_block_size(void **state)
{
        (void)state;
        static const uint64_t bad[] = {0, 512, 8192, (2ull << 20) + 4096, 1ull << 30, 1};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct vmsnap_mem_header *h = sample();
                h->block_size = bad[i];
                expect_rejected(h, "block size", NULL);
        }
}

static void test_size_rules(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->size = 0;
        expect_rejected(h, "positive multiple of the block size", NULL);
        h = sample();
        h->size += 512;
        expect_rejected(h, "positive multiple of the block size", NULL);
}

static void test_build_count_zero(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = alloc_header(0, 1);
        h->version = 2;
        h->block_size = BS;
        h->size = 4 * BS;
        h->build_id = uuid_of(1);
        h->extents[0] = (struct vmsnap_mem_extent){0, 4 * BS, VMSNAP_MEM_ZERO, 0};
        expect_rejected(h, "0 builds", NULL);
}

static void test_extent_count_zero(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->n_extents = 0;
        expect_rejected(h, "0 extents", NULL);
}

/* ---- the build table ------------------------------------------------------------------- */

static void test_build_id_nil(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        memset(&h->build_id, 0, sizeof(h->build_id));
        memset(&h->builds[2].id, 0, sizeof(h->builds[2].id));
        expect_rejected(h, "nil", NULL);
        h = sample();
        memset(&h->build_id, 0, sizeof(h->build_id));
        expect_rejected(h, "nil", NULL);
}

static void test_build_entry_nil(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        memset(&h->builds[1].id, 0, sizeof(h->builds[1].id));
        expect_rejected(h, "nil", NULL);
}

static void test_build_id_not_in_table(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->build_id = uuid_of(0x77);
        expect_rejected(h, "build table", NULL);
}

static void test_build_listed_twice(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->builds[1].id = h->builds[0].id;
        expect_rejected(h, "listed twice", NULL);
}

static void test_build_file_size_unaligned(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->builds[0].file_size = 10 * BS + 1;
        expect_rejected(h, "not block-aligned", NULL);
}

/* UINT64_MAX is not a multiple of the block size: no v2 header on disk may claim it (it is
 * only the in-memory "unknown" of a freshly parsed v1 header). */
static void test_build_file_size_all_ones(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->builds[0].file_size = UINT64_MAX;
        h->extents[4].storage_offset = 1ull << 40; /* would be "beyond" any real size */
        size_t len;
        uint8_t *buf = raw_encode(h, &len);
        expect_parse_fails(buf, len, NULL);
        free(buf);
        struct vmsnap_diag d = {0};
        uint8_t *out = NULL;
        size_t out_len = 0;
        assert_true(vmsnap_mem_header_serialize(h, &out, &out_len, &d) < 0);
        assert_null(out);
        vmsnap_mem_header_free(h);
}

/* Every build but the generation's own is used by at least one extent. */
static void test_build_unreferenced(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[2].build = 0; /* build 1 no longer used; storage 2..4 of build 0 is fine */
        expect_rejected(h, "no extent uses it", NULL);
}

/* ---- extents ----------------------------------------------------------------------------- */

static void test_extent_first_not_at_zero(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[0].offset = BS;
        h->extents[0].length = 3 * BS;
        expect_rejected(h, "sorted, contiguous", NULL);
}

static void test_extent_gap(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[1].length = 7 * BS; /* [11, 12) is covered by nothing */
        expect_rejected(h, "sorted, contiguous", NULL);
}

static void test_extent_overlap(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[1].length = 9 * BS; /* overlaps extent 2's first block */
        h->extents[5].length = 37 * BS;
        expect_rejected(h, "sorted, contiguous", NULL);
}

static void test_extent_unsorted(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        struct vmsnap_mem_extent t = h->extents[2];
        h->extents[2] = h->extents[3];
        h->extents[3] = t;
        expect_rejected(h, "sorted, contiguous", NULL);
}

static void test_extent_length_zero(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        /* A zero-length extent between two that meet: still refused. */
        struct vmsnap_mem_extent *e = calloc(7, sizeof(*e));
        assert_non_null(e);
        memcpy(e, h->extents, 3 * sizeof(*e));
        e[3] = (struct vmsnap_mem_extent){14 * BS, 0, VMSNAP_MEM_ZERO, 0};
        memcpy(e + 4, h->extents + 3, 3 * sizeof(*e));
        free(h->extents);
        h->extents = e;
        h->n_extents = 7;
        expect_rejected(h, "multiple of the block size", NULL);
}

static void test_extent_length_unaligned(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[1].length = 8 * BS - 512;
        h->extents[2].offset -= 512;
        expect_rejected(h, "multiple of the block size", NULL);
}

static void test_extents_do_not_cover(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[5].length -= BS;
        expect_rejected(h, "cover", NULL);
        h = sample();
        h->n_extents = 5; /* the ZERO tail dropped */
        expect_rejected(h, "cover", NULL);
}

static void test_extent_past_end(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[5].length += BS;
        expect_rejected(h, "past the end", NULL);
        h = sample();
        h->extents[5].length = UINT64_MAX - BS + 1; /* offset + length wraps */
        expect_rejected(h, "past the end", NULL);
}

static void test_extent_unknown_build(void **state)
{
        (void)state;
        static const uint32_t bad[] = {3, 4096, 0xfffffffeu};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct vmsnap_mem_header *h = sample();
                h->extents[3].build = bad[i];
                expect_rejected(h, "unknown build", NULL);
        }
}

static void test_extent_storage_unaligned(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[2].storage_offset = BS + 8;
        expect_rejected(h, "not block-aligned", NULL);
}

static void test_extent_storage_beyond_file(void **state)
{
        (void)state;
        struct vmsnap_mem_header *h = sample();
        h->extents[4].storage_offset = 5 * BS; /* 5 + 6 blocks > 10 */
        expect_rejected(h, "beyond", NULL);
        h = sample();
        h->extents[3].storage_offset = 6 * BS; /* starts exactly at the end */
        expect_rejected(h, "beyond", NULL);
        h = sample();
        h->extents[0].storage_offset = UINT64_MAX - BS + 1; /* aligned; + length wraps */
        expect_rejected(h, "beyond", NULL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_sample_is_valid),
            cmocka_unit_test(test_roundtrip),
            cmocka_unit_test(test_serialize_layout),
            cmocka_unit_test(test_roundtrip_2mib),
            cmocka_unit_test(test_accepts_non_normalized),
            cmocka_unit_test(test_own_build_may_be_unreferenced),
            cmocka_unit_test(test_size_cap_boundary),
            cmocka_unit_test(test_build_cap),
            cmocka_unit_test(test_find),
            cmocka_unit_test(test_bad_arguments),
            cmocka_unit_test(test_checksum_mismatch),
            cmocka_unit_test(test_every_bit_flip_rejected),
            cmocka_unit_test(test_bad_magic),
            cmocka_unit_test(test_unsupported_version),
            cmocka_unit_test(test_unknown_flags),
            cmocka_unit_test(test_reserved_fields),
            cmocka_unit_test(test_length_must_match_counts),
            cmocka_unit_test(test_truncated_every_length),
            cmocka_unit_test(test_zero_extent_storage_offset),
            cmocka_unit_test(test_block_size),
            cmocka_unit_test(test_size_rules),
            cmocka_unit_test(test_build_count_zero),
            cmocka_unit_test(test_extent_count_zero),
            cmocka_unit_test(test_build_id_nil),
            cmocka_unit_test(test_build_entry_nil),
            cmocka_unit_test(test_build_id_not_in_table),
            cmocka_unit_test(test_build_listed_twice),
            cmocka_unit_test(test_build_file_size_unaligned),
            cmocka_unit_test(test_build_file_size_all_ones),
            cmocka_unit_test(test_build_unreferenced),
            cmocka_unit_test(test_extent_first_not_at_zero),
            cmocka_unit_test(test_extent_gap),
            cmocka_unit_test(test_extent_overlap),
            cmocka_unit_test(test_extent_unsorted),
            cmocka_unit_test(test_extent_length_zero),
            cmocka_unit_test(test_extent_length_unaligned),
            cmocka_unit_test(test_extents_do_not_cover),
            cmocka_unit_test(test_extent_past_end),
            cmocka_unit_test(test_extent_unknown_build),
            cmocka_unit_test(test_extent_storage_unaligned),
            cmocka_unit_test(test_extent_storage_beyond_file),
            /* Last: with serialize's checks gone, this one reads past the array. */
            cmocka_unit_test(test_count_caps),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
