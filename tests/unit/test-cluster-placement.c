/* Placement (src/cluster/placement.c), a pure function: capacity on each resource, lost
 * hosts, template locality, the --host pin (never a fallback), deterministic ties, and a
 * brute-force check over random host sets that the choice fits and no fitting host is
 * strictly better. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmsnap/cluster.h>

static struct vmsnap_cluster_host host(const char *id, uint32_t vcpus, uint64_t mem, uint64_t disk)
{
        struct vmsnap_cluster_host h = { .alive = true, .vcpus = vcpus, .memory_mib = mem,
                                         .disk_mib = disk };
        snprintf(h.id, sizeof(h.id), "%s", id);
        return h;
}

static const struct vmsnap_cluster_request small = { .vcpus = 1, .memory_mib = 256, .disk_mib = 1024 };

static size_t place_ok(const struct vmsnap_cluster_host *hosts, size_t n,
                       const struct vmsnap_cluster_request *r)
{
        struct vmsnap_diag d = { 0 };
        size_t i = 99;
        int err = vmsnap_cluster_place(hosts, n, r, &i, &d);
        if (err != 0)
                fail_msg("place: %d %s", err, d.msg);
        return i;
}

static int place_err(const struct vmsnap_cluster_host *hosts, size_t n,
                     const struct vmsnap_cluster_request *r, struct vmsnap_diag *d)
{
        size_t i = 99;
        int err = vmsnap_cluster_place(hosts, n, r, &i, d);
        assert_int_equal(i, 99); /* ret_ untouched on failure */
        return err;
}

static void test_most_free_share_wins(void **state)
{
        (void)state;
        struct vmsnap_cluster_host h[3] = { host("a", 8, 4096, 100000), host("b", 8, 8192, 100000),
                                            host("c", 8, 4096, 100000) };
        assert_int_equal(place_ok(h, 3, &small), 0); /* all empty: the smallest id */
        h[0].used_memory_mib = 1024;                  /* a: 75% free; b, c: 100% */
        assert_int_equal(place_ok(h, 3, &small), 1);
        h[1].used_memory_mib = 6144; /* b: 25% free: the share decides, not MiB */
        assert_int_equal(place_ok(h, 3, &small), 2);
        h[2].used_memory_mib = 1024; /* a, c equal memory share; vCPUs decide */
        h[0].used_vcpus = 2;
        assert_int_equal(place_ok(h, 3, &small), 2);
}

static void test_each_resource_limits(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster_host h = host("a", 2, 1024, 2048);
        h.used_vcpus = 2;
        assert_int_equal(place_err(&h, 1, &small, &d), -ENOSPC);
        assert_non_null(strstr(d.msg, "no alive host has room"));
        h.used_vcpus = 1;
        h.used_memory_mib = 900;
        assert_int_equal(place_err(&h, 1, &small, NULL), -ENOSPC);
        h.used_memory_mib = 768;
        h.used_disk_mib = 1025;
        assert_int_equal(place_err(&h, 1, &small, NULL), -ENOSPC);
        h.used_disk_mib = 1024; /* exactly the rest of every resource: fits */
        assert_int_equal(place_ok(&h, 1, &small), 0);
        h.used_memory_mib = 5000; /* over-committed counts as nothing free, no wrap-around */
        assert_int_equal(place_err(&h, 1, &small, NULL), -ENOSPC);
}

static void test_lost_hosts_never_chosen(void **state)
{
        (void)state;
        struct vmsnap_cluster_host h[2] = { host("a", 64, 65536, 1 << 20), host("b", 1, 512, 2048) };
        h[0].alive = false;
        assert_int_equal(place_ok(h, 2, &small), 1);
        h[1].alive = false;
        assert_int_equal(place_err(h, 2, &small, NULL), -ENOSPC);
        assert_int_equal(place_err(NULL, 0, &small, NULL), -ENOSPC);
}

static void test_template_locality_wins(void **state)
{
        (void)state;
        struct vmsnap_cluster_host h[3] = { host("a", 8, 8192, 100000), host("b", 8, 8192, 100000),
                                            host("c", 8, 8192, 100000) };
        h[2].has_template = true;
        h[2].used_memory_mib = 7000; /* fuller, but caches the template */
        assert_int_equal(place_ok(h, 3, &small), 2);
        h[2].used_memory_mib = 8000; /* no longer fits: locality does not override capacity */
        assert_int_equal(place_ok(h, 3, &small), 0);
}

static void test_pin(void **state)
{
        (void)state;
        struct vmsnap_diag d = { 0 };
        struct vmsnap_cluster_host h[2] = { host("a", 8, 8192, 100000), host("b", 1, 512, 2048) };
        struct vmsnap_cluster_request r = small;
        r.pin_host = "b";
        assert_int_equal(place_ok(h, 2, &r), 1);
        h[1].used_vcpus = 1; /* full: the pin fails, never falls back to a */
        assert_int_equal(place_err(h, 2, &r, &d), -ENOSPC);
        assert_non_null(strstr(d.msg, "host b has no room"));
        h[1].used_vcpus = 0;
        h[1].alive = false;
        assert_int_equal(place_err(h, 2, &r, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "lost"));
        r.pin_host = "nope";
        assert_int_equal(place_err(h, 2, &r, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "not registered"));
}

static void test_bad_requests(void **state)
{
        (void)state;
        struct vmsnap_cluster_host h = host("a", 8, 8192, 100000);
        struct vmsnap_cluster_request r = small;
        size_t i;
        r.vcpus = 0;
        assert_int_equal(place_err(&h, 1, &r, NULL), -EINVAL);
        r = small;
        r.memory_mib = 0;
        assert_int_equal(place_err(&h, 1, &r, NULL), -EINVAL);
        assert_int_equal(vmsnap_cluster_place(&h, 1, NULL, &i, NULL), -EINVAL);
        assert_int_equal(vmsnap_cluster_place(&h, 1, &small, NULL, NULL), -EINVAL);
        assert_int_equal(vmsnap_cluster_place(NULL, 3, &small, &i, NULL), -EINVAL);
}

static bool fits(const struct vmsnap_cluster_host *h, const struct vmsnap_cluster_request *r)
{
        return h->alive && h->used_vcpus + r->vcpus <= h->vcpus &&
               h->used_memory_mib + r->memory_mib <= h->memory_mib &&
               h->used_disk_mib + r->disk_mib <= h->disk_mib;
}

/* Random host sets against a brute-force model of the rule (fits; locality first; then the
 * memory share). */
static void test_random_against_model(void **state)
{
        (void)state;
        srand(0x9ace);
        for (int round = 0; round < 5000; round++) {
                struct vmsnap_cluster_host h[6];
                size_t n = (size_t)(rand() % 6) + 1;
                for (size_t i = 0; i < n; i++) {
                        char id[24];
                        snprintf(id, sizeof(id), "h%zu", i);
                        h[i] = host(id, (uint32_t)(rand() % 8) + 1, (uint64_t)(rand() % 8 + 1) * 512,
                                    (uint64_t)(rand() % 8) * 1024);
                        h[i].used_vcpus = (uint64_t)(rand() % 9);
                        h[i].used_memory_mib = (uint64_t)(rand() % 9) * 512;
                        h[i].used_disk_mib = (uint64_t)(rand() % 9) * 1024;
                        h[i].alive = rand() % 5 != 0;
                        h[i].has_template = rand() % 3 == 0;
                }
                bool any = false, any_local = false;
                for (size_t i = 0; i < n; i++) {
                        any |= fits(&h[i], &small);
                        any_local |= fits(&h[i], &small) && h[i].has_template;
                }
                size_t got = 99;
                int err = vmsnap_cluster_place(h, n, &small, &got, NULL);
                if (!any) {
                        assert_int_equal(err, -ENOSPC);
                        continue;
                }
                assert_int_equal(err, 0);
                assert_true(fits(&h[got], &small));
                assert_true(h[got].has_template == any_local);
                double share = 1.0 - (double)h[got].used_memory_mib / (double)h[got].memory_mib;
                for (size_t i = 0; i < n; i++) {
                        if (!fits(&h[i], &small) || h[i].has_template != any_local)
                                continue;
                        double s = 1.0 - (double)h[i].used_memory_mib / (double)h[i].memory_mib;
                        assert_true(s <= share);
                }
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_most_free_share_wins),
                cmocka_unit_test(test_each_resource_limits),
                cmocka_unit_test(test_lost_hosts_never_chosen),
                cmocka_unit_test(test_template_locality_wins),
                cmocka_unit_test(test_pin),
                cmocka_unit_test(test_bad_requests),
                cmocka_unit_test(test_random_against_model),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
