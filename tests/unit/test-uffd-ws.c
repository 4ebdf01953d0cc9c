/* memfile.ws, the working-set file: round trip, every validation rule, the recorder's order
 * and deduplication, and atomic save/load in a snapshot directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "test-uffd-util.h"
#include "uffd/ws.h"
#include "util/ids.h"

static struct ws_run sample_runs[] = {{100, 16}, {0, 4}, {4, 12}, {2047, 1}, {500, 16}};

static struct ws_set sample(void)
{
        struct ws_set ws = {.block_size = 4096, .size = 8 << 20, .n_runs = 5,
                            .runs = sample_runs, .n_blocks = 16 + 4 + 12 + 1 + 16};
        vmsnap_uuid_new(&ws.build_id);
        return ws;
}

static void test_round_trip(void **state)
{
        (void)state;
        struct ws_set ws = sample();
        uint8_t *buf;
        size_t len;
        struct vmsnap_diag d = {0};
        assert_int_equal(ws_serialize(&ws, &buf, &len, &d), 0);
        assert_int_equal(len, WS_FIXED_SIZE + 5 * WS_RUN_SIZE + WS_TRAILER);
        assert_memory_equal(buf, "VMSNAPWS", 8);
        struct ws_set *back;
        assert_int_equal(ws_parse(buf, len, "t", &back, &d), 0);
        assert_int_equal(back->block_size, 4096);
        assert_int_equal(back->size, 8 << 20);
        assert_int_equal(back->n_blocks, ws.n_blocks);
        assert_memory_equal(back->build_id.b, ws.build_id.b, 16);
        assert_int_equal(back->n_runs, 5);
        assert_memory_equal(back->runs, sample_runs, sizeof(sample_runs)); /* order kept */
        ws_free(back);
        free(buf);

        struct ws_set empty = {.block_size = 2 << 20, .size = 64 << 20};
        assert_int_equal(ws_serialize(&empty, &buf, &len, &d), 0);
        assert_int_equal(ws_parse(buf, len, "t", &back, &d), 0);
        assert_int_equal(back->n_runs, 0);
        ws_free(back);
        free(buf);
}

/* Re-seals buf after an edit (so the rule, not the checksum, is what rejects it). */
static void reseal(uint8_t *buf, size_t len)
{
        struct vmsnap_hash h;
        vmsnap_hash128(buf, len - WS_TRAILER, &h);
        memcpy(buf + len - WS_TRAILER, h.b, WS_TRAILER);
}

static void put64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static void expect_bad(const uint8_t *good, size_t len, size_t at, uint64_t value, int width,
                       bool seal, const char *msg_part)
{
        uint8_t *buf = malloc(len);
        memcpy(buf, good, len);
        if (width == 8)
                put64(buf + at, value);
        else
                buf[at] = (uint8_t)value;
        if (seal)
                reseal(buf, len);
        struct ws_set *ws = NULL;
        struct vmsnap_diag d = {0};
        assert_int_equal(ws_parse(buf, len, "memfile.ws", &ws, &d), -EBADMSG);
        assert_null(ws);
        if (!strstr(d.msg, msg_part))
                fprintf(stderr, "'%s' lacks '%s'\n", d.msg, msg_part);
        assert_non_null(strstr(d.msg, msg_part));
        free(buf);
}

static void test_rejects(void **state)
{
        (void)state;
        struct ws_set ws = sample();
        uint8_t *buf;
        size_t len;
        struct vmsnap_diag d = {0};
        assert_int_equal(ws_serialize(&ws, &buf, &len, &d), 0);
        const size_t run0 = WS_FIXED_SIZE, run1 = WS_FIXED_SIZE + WS_RUN_SIZE;
        expect_bad(buf, len, 0, 'X', 1, true, "bad magic");
        expect_bad(buf, len, 8, 2, 1, true, "unsupported version");
        expect_bad(buf, len, 12, 1, 1, true, "unknown flags");
        expect_bad(buf, len, run0 + 3, 0xff, 1, false, "checksum mismatch");
        expect_bad(buf, len, 16, 8192, 8, true, "block size");
        expect_bad(buf, len, 24, 4095, 8, true, "not a multiple");
        expect_bad(buf, len, 48, 6, 8, true, "does not match 6 runs");
        expect_bad(buf, len, 56, 48, 8, true, "count says 48");
        expect_bad(buf, len, run0 + 8, 0, 8, true, "empty or outside");
        expect_bad(buf, len, run0, 2040, 8, true, "empty or outside");
        expect_bad(buf, len, run1, 110, 8, true, "in two runs");
        struct ws_set *out;
        assert_int_equal(ws_parse(buf, 40, "memfile.ws", &out, &d), -EBADMSG);
        assert_int_equal(ws_parse(buf, len - 1, "memfile.ws", &out, &d), -EBADMSG);
        free(buf);

        /* what cannot be read back is never written */
        struct ws_run overlap[] = {{0, 8}, {4, 8}};
        struct ws_set bad = {.block_size = 4096, .size = 1 << 20, .n_runs = 2, .runs = overlap,
                             .n_blocks = 16};
        assert_int_equal(ws_serialize(&bad, &buf, &len, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "refusing to write"));
}

static void test_recorder(void **state)
{
        (void)state;
        struct vmsnap_uuid id;
        vmsnap_uuid_new(&id);
        struct ws_recorder rec;
        assert_int_equal(ws_recorder_init(&rec, 4096, 1 << 20, &id), 0);
        assert_int_equal(ws_recorder_add(&rec, 64 << 10, 64 << 10), 0);  /* blocks 16-31 */
        assert_int_equal(ws_recorder_add(&rec, 128 << 10, 64 << 10), 0); /* 32-47: extends */
        assert_int_equal(ws_recorder_add(&rec, 0, 96 << 10), 0);         /* 0-15, 16-23 seen */
        assert_int_equal(ws_recorder_add(&rec, 1020 << 10, 64 << 10), 0); /* clipped: 255 */
        assert_int_equal(ws_recorder_add(&rec, 100 << 10, 4096), 0);      /* seen: nothing */
        struct ws_set *ws;
        assert_int_equal(ws_recorder_copy(&rec, &ws), 0);
        struct ws_run want[] = {{16, 32}, {0, 16}, {255, 1}};
        assert_int_equal(ws->n_runs, 3);
        assert_memory_equal(ws->runs, want, sizeof(want));
        assert_int_equal(ws->n_blocks, 49);
        uint8_t *buf;
        size_t len;
        struct vmsnap_diag d = {0};
        assert_int_equal(ws_serialize(ws, &buf, &len, &d), 0); /* a valid set */
        free(buf);
        ws_free(ws);
        ws_recorder_free(&rec);
}

static void test_save_load(void **state)
{
        (void)state;
        char *dir = test_mkdtemp("uffd-ws");
        struct ws_set ws = sample(), *back;
        struct vmsnap_diag d = {0};
        assert_int_equal(ws_load(dir, 4096, 8 << 20, &back, &d), -ENOENT);
        assert_int_equal(ws_save(dir, &ws, &d), 0);
        assert_int_equal(ws_load(dir, 4096, 8 << 20, &back, &d), 0);
        assert_int_equal(back->n_runs, 5);
        ws_free(back);
        assert_int_equal(ws_load(dir, 4096, 16 << 20, &back, &d), -EBADMSG);
        assert_non_null(strstr(d.msg, "recorded for"));
        assert_int_equal(ws_load(dir, 2 << 20, 8 << 20, &back, &d), -EBADMSG);
        char *path = test_path(dir, VMSNAP_UFFD_WS_NAME);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal((size_t)st.st_size, WS_FIXED_SIZE + 5 * WS_RUN_SIZE + WS_TRAILER);
        free(path);
        test_rmtree(dir);
        free(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_rejects),
                cmocka_unit_test(test_recorder),
                cmocka_unit_test(test_save_load),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
