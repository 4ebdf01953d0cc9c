/* Page-server stats: latency percentiles from the log-linear histogram stay within the
 * bucket error, and the JSON carries every counter. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "uffd/stats.h"

static void assert_near(uint64_t got, uint64_t want)
{
        double err = ((double)got - (double)want) / (double)want;
        if (err < -0.07 || err > 0.07)
                fprintf(stderr, "got %llu, want %llu (%.1f %%)\n", (unsigned long long)got,
                        (unsigned long long)want, err * 100);
        assert_true(err >= -0.07 && err <= 0.07);
}

static void test_percentiles(void **state)
{
        (void)state;
        static struct uffd_stats st; /* zeroed */
        struct vmsnap_uffd_stats out;
        stats_read(&st, &out);
        assert_int_equal(out.fault_p50_ns, 0);
        assert_int_equal(out.fault_p99_ns, 0);
        for (uint64_t i = 1; i <= 10000; i++) /* 1 us .. 10 ms, uniform */
                stats_latency(&st, i * 1000);
        stats_read(&st, &out);
        assert_near(out.fault_p50_ns, 5000 * 1000);
        assert_near(out.fault_p99_ns, 9900 * 1000);
        assert_int_equal(out.fault_max_ns, 10000 * 1000);

        static struct uffd_stats small;
        for (uint64_t v = 0; v < 16; v++) /* exact below 16 ns */
                stats_latency(&small, 7);
        stats_read(&small, &out);
        assert_int_equal(out.fault_p50_ns, 7);
        stats_latency(&small, UINT64_MAX / 2); /* no overflow at the top */
        stats_read(&small, &out);
        assert_int_equal(out.fault_max_ns, UINT64_MAX / 2);
}

static void test_json(void **state)
{
        (void)state;
        struct vmsnap_uffd_stats st = {.connected = true, .peer_pid = 42, .regions = 2,
                                       .faults = 1ull << 40, .zero_pages = 3,
                                       .fault_p99_ns = 123456, .ws_blocks = 7, .ws_done = true};
        char *s;
        assert_int_equal(vmsnap_uffd_stats_json(&st, &s), 0);
        assert_null(strchr(s, '\n'));
        json_t *j = json_loads(s, 0, NULL);
        assert_non_null(j);
        assert_int_equal(json_integer_value(json_object_get(j, "faults")), 1ll << 40);
        assert_int_equal(json_integer_value(json_object_get(j, "peer_pid")), 42);
        assert_int_equal(json_integer_value(json_object_get(j, "zero_pages")), 3);
        json_t *lat = json_object_get(j, "fault_latency_ns");
        assert_int_equal(json_integer_value(json_object_get(lat, "p99")), 123456);
        json_t *ws = json_object_get(j, "working_set");
        assert_int_equal(json_integer_value(json_object_get(ws, "blocks")), 7);
        assert_true(json_is_true(json_object_get(ws, "done")));
        assert_true(json_is_false(json_object_get(j, "prefetch_done")));
        static const char *const keys[] = {"fault_dups", "fault_present", "fault_pages",
                                           "prefetched_pages", "ws_pages", "bytes",
                                           "removed_pages", "eagain_retries", "eexist",
                                           "unverified_blocks", "regions", "connected"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                assert_non_null(json_object_get(j, keys[i]));
        json_decref(j);
        free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_percentiles),
                cmocka_unit_test(test_json),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
