/* Page server, serving: real userfaultfd, real snapshots (vmsnap_mem_process/diff), and the
 * VMM peer (tests/peer/uffd-peer.c) standing in for Firecracker, which cannot run here. The
 * peer checks every byte it touches against the materialized snapshot; these tests check
 * what the server did. No timing assertions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "test-uffd-util.h"
#include "util/sys.h"

#define MiB (1ull << 20)

static void serve_ok(const struct ufx *fx, const struct vmsnap_uffd_opts *o,
                     const char *const *args, struct restore *rs)
{
        assert_int_equal(restore_run(fx, o, args, rs, NULL), 0);
        assert_int_equal(rs->rc, 0);
        assert_true(peer_ok(rs->peer_status));
        assert_true(rs->st.connected);
}

/* Every field-name generation of FC's handshake, several regions, read and write faults. */
static void test_generations(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-gen");
        assert_int_equal(ufx_snapshot(&fx, 8 * MiB, 0.4, 4096, 11), 0);
        static const char *const gens[] = {"1.1", "1.7", "1.12", "2.0"};
        for (size_t i = 0; i < 4; i++) {
                const char *args[] = {"--gen", gens[i], "--regions", "3", "--write", NULL};
                struct restore rs;
                serve_ok(&fx, NULL, args, &rs);
                assert_int_equal(rs.st.regions, 3);
                assert_true(rs.st.faults > 0);
                assert_int_equal(rs.st.fault_pages + rs.st.prefetched_pages, 8 * MiB / 4096);
                assert_int_equal(rs.st.bytes, 8 * MiB);
        }
        ufx_free(&fx);
}

/* Zero extents come in as zero pages (UFFDIO_ZEROPAGE), including a whole zero region. */
static void test_zero_extents(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-zero");
        uint64_t size = 8 * MiB, seed = 5;
        uint8_t *buf = calloc(1, size);
        ufx_fill(buf, size / 2, 0.3, &seed); /* second half: all zeros */
        assert_int_equal(ufx_process(&fx, buf, size, 4096), 0);
        free(buf);
        const char *args[] = {"--regions", "2", "--threads", "3", NULL};
        struct restore rs;
        serve_ok(&fx, NULL, args, &rs);
        assert_true(rs.st.zero_pages >= size / 2 / 4096);
        assert_true(rs.st.zero_pages < size / 4096);
        ufx_free(&fx);
}

/* Changes some blocks, zeroes some data blocks, and records a new generation in place. */
static void next_generation(struct ufx *fx, uint8_t *buf, uint64_t *seed)
{
        for (uint64_t off = 0; off < fx->size; off += 4096) {
                uint64_t r = test_rand(seed) % 10;
                if (r == 0)
                        test_fill_random(seed, buf + off, 4096);
                else if (r == 1)
                        memset(buf + off, 0, 4096); /* written to zeros: must read as zeros */
        }
        test_write_file(fx->raw, buf, fx->size);
        struct vmsnap_mem_result res;
        struct vmsnap_diag d = {0};
        int r = vmsnap_mem_diff(fx->raw, fx->snap, fx->snap, NULL, &res, &d);
        if (r < 0)
                fprintf(stderr, "diff: %s\n", d.msg);
        assert_int_equal(r, 0);
}

/* A chain of three generations (three diff files) is served byte-exact. */
static void test_multi_generation(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-chain");
        uint64_t size = 8 * MiB, seed = 77;
        uint8_t *buf = malloc(size);
        ufx_fill(buf, size, 0.5, &seed);
        assert_int_equal(ufx_process(&fx, buf, size, 4096), 0);
        next_generation(&fx, buf, &seed);
        next_generation(&fx, buf, &seed);
        struct vmsnap_mem_result res;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_mem_materialize(fx.snap, fx.expect, &res, &d), 0);
        size_t n;
        uint8_t *img = test_read_file(fx.expect, &n);
        assert_int_equal(n, size);
        assert_memory_equal(img, buf, size); /* the peer compares against the real bytes */
        free(img);
        free(buf);
        const char *args[] = {"--gen", "1.12", "--threads", "4", "--write", NULL};
        struct restore rs;
        serve_ok(&fx, NULL, args, &rs);
        ufx_free(&fx);
}

/* MADV_DONTNEED (balloon) then re-touch: REMOVE events make those pages come back as zeros,
 * even where the snapshot has data and the guest had written something else. */
static void test_dontneed(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-remove");
        assert_int_equal(ufx_snapshot(&fx, 8 * MiB, 0.9, 4096, 3), 0);
        const char *args[] = {"--case", "dontneed", "--threads", "4", "--write", NULL};
        struct restore rs;
        serve_ok(&fx, NULL, args, &rs);
        assert_true(rs.st.removed_pages > 0);
        ufx_free(&fx);
}

/* All threads fault on the same page at once: one install, every thread woken. */
static void test_same_page(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-same");
        assert_int_equal(ufx_snapshot(&fx, 4 * MiB, 0.5, 4096, 8), 0);
        struct vmsnap_uffd_opts o = {.fault_around = 4096, .workers = 4};
        const char *args[] = {"--case", "same-page", "--threads", "8", NULL};
        struct restore rs;
        serve_ok(&fx, &o, args, &rs);
        /* 256 pages touched by 8 threads at once: each page claimed and installed once;
         * the other threads' faults were deduplicated or found the page present. */
        assert_int_equal(rs.st.faults, 256);
        assert_int_equal(rs.st.fault_pages, 256);
        ufx_free(&fx);
}

/* One corrupt byte in a diff file: the VMM is killed, never given the page. */
static void test_corrupt_block_kills_vmm(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-corrupt");
        assert_int_equal(ufx_snapshot(&fx, 4 * MiB, 1.0, 4096, 21), 0);
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *snap;
        assert_int_equal(vmsnap_mem_open(fx.snap, &snap, &d), 0);
        struct vmsnap_mem_location loc;
        assert_int_equal(vmsnap_mem_locate(snap, 2 * MiB, &loc), 0);
        assert_false(loc.zero);
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", loc.fd);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t b = 0x5a;
        assert_int_equal(pwrite(fd, &b, 1, (off_t)loc.storage_offset + 100), 1);
        close(fd);
        vmsnap_mem_close(snap);
        const char *args[] = {"--threads", "2", NULL};
        struct restore rs;
        assert_int_equal(restore_run(&fx, NULL, args, &rs, NULL), 0);
        assert_int_equal(rs.rc, -EBADMSG);
        assert_non_null(strstr(rs.d.msg, "does not match its hash"));
        assert_non_null(strstr(rs.d.msg, "killed VMM pid"));
        assert_true(peer_killed(rs.peer_status));
        ufx_free(&fx);
}

/* 2 MiB hugetlbfs regions, over 4 KiB-block and 2 MiB-block snapshots. */
static void test_hugetlb(void **state)
{
        (void)state;
        if (free_hugepages() < 4) {
                fprintf(stderr, "skipping hugetlb: %llu free 2 MiB hugepages, need 4 "
                                "(sysctl vm.nr_hugepages)\n",
                        (unsigned long long)free_hugepages());
                skip();
        }
        static const uint64_t block[] = {4096, 2 * MiB};
        for (size_t i = 0; i < 2; i++) {
                struct ufx fx;
                ufx_init(&fx, "uffd-huge");
                assert_int_equal(ufx_snapshot(&fx, 8 * MiB, 0.4, block[i], 31 + i), 0);
                const char *args[] = {"--hugetlb", "--gen", i ? "2.0" : "1.7", "--case",
                                      i ? "dontneed" : "touch", "--threads", "4", NULL};
                struct restore rs;
                serve_ok(&fx, NULL, args, &rs);
                assert_int_equal(rs.st.bytes % (2 * MiB), 0);
                ufx_free(&fx);
        }
}

static int (*real_ioctl)(int, unsigned long, void *);
static atomic_int ioctl_calls;

/* Every third UFFDIO_COPY fails with EAGAIN, as while a REMOVE is pending. */
static int eagain_ioctl(int fd, unsigned long req, void *arg)
{
        if (req == UFFDIO_COPY && atomic_fetch_add(&ioctl_calls, 1) % 3 == 1) {
                ((struct uffdio_copy *)arg)->copy = -EAGAIN;
                errno = EAGAIN;
                return -1;
        }
        return real_ioctl(fd, req, arg);
}

/* Every other multi-page UFFDIO_COPY finds its first page already installed (EEXIST), as
 * when another installer got there first. */
static int eexist_ioctl(int fd, unsigned long req, void *arg)
{
        struct uffdio_copy *c = arg;
        if (req == UFFDIO_COPY && c->len > 4096 && atomic_fetch_add(&ioctl_calls, 1) % 2 == 0) {
                struct uffdio_copy first = *c;
                first.len = 4096;
                real_ioctl(fd, UFFDIO_COPY, &first);
        }
        return real_ioctl(fd, req, arg);
}

static void test_injected_errors(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-inject");
        assert_int_equal(ufx_snapshot(&fx, 4 * MiB, 0.8, 4096, 41), 0);
        const char *args[] = {"--threads", "4", NULL};
        struct restore rs;
        real_ioctl = vmsnap_sys.ioctl;

        vmsnap_sys.ioctl = eagain_ioctl;
        serve_ok(&fx, NULL, args, &rs);
        assert_true(rs.st.eagain_retries > 0);

        vmsnap_sys.ioctl = eexist_ioctl;
        serve_ok(&fx, NULL, args, &rs);
        assert_true(rs.st.eexist > 0);
        vmsnap_sys_reset();
        ufx_free(&fx);
}

/* Background prefetch installs the data blocks nobody faulted on; zero extents stay lazy. */
static void test_prefetch(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-prefetch");
        assert_int_equal(ufx_snapshot(&fx, 8 * MiB, 0.4, 4096, 51), 0);
        struct vmsnap_uffd_opts o = {.prefetch = true};
        const char *args[] = {"--case", "prefetch-wait", NULL};
        struct restore rs;
        serve_ok(&fx, &o, args, &rs);
        /* After the prefetch only zero pages were left to fault in. */
        assert_true(rs.st.prefetched_pages > 0);
        assert_int_equal(rs.st.prefetched_pages + rs.st.zero_pages, 8 * MiB / 4096);
        assert_int_equal(rs.st.fault_pages, rs.st.zero_pages);
        ufx_free(&fx);
}

/* The seed's v1 format has no block hashes: served, and counted as unverified. */
static void test_v1_snapshot_unverified(void **state)
{
        (void)state;
        struct ufx fx;
        ufx_init(&fx, "uffd-v1");
        uint64_t size = 4 * MiB, seed = 61;
        uint8_t *buf = malloc(size);
        ufx_fill(buf, size, 0.5, &seed);
        assert_int_equal(mkdir(fx.snap, 0755), 0);
        char *mem = test_path(fx.snap, "memfile"), *hdr = test_path(fx.snap, "memfile.header");
        test_write_file(mem, buf, size); /* the base build's diff file, seed name */
        test_write_file(fx.expect, buf, size);
        uint8_t meta[64] = {0}; /* version, block size, size, generation, build, base build */
        uint64_t fields[] = {1, 4096, size, 0};
        for (int i = 0; i < 4; i++)
                for (int b = 0; b < 8; b++)
                        meta[i * 8 + b] = (uint8_t)(fields[i] >> (8 * b));
        memset(meta + 32, 0x42, 16);
        memset(meta + 48, 0x42, 16); /* 64 bytes only: one extent over the whole build */
        test_write_file(hdr, meta, sizeof(meta));
        const char *args[] = {"--gen", "1.7", NULL};
        struct restore rs;
        serve_ok(&fx, NULL, args, &rs);
        assert_int_equal(rs.st.unverified_blocks, size / 4096);
        assert_int_equal(rs.st.zero_pages, 0); /* one data extent: zeros are copied too */
        free(mem);
        free(hdr);
        free(buf);
        ufx_free(&fx);
}

int main(void)
{
        uffd_test_require();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_generations),
                cmocka_unit_test(test_zero_extents),
                cmocka_unit_test(test_multi_generation),
                cmocka_unit_test(test_dontneed),
                cmocka_unit_test(test_same_page),
                cmocka_unit_test(test_corrupt_block_kills_vmm),
                cmocka_unit_test(test_hugetlb),
                cmocka_unit_test(test_injected_errors),
                cmocka_unit_test(test_prefetch),
                cmocka_unit_test(test_v1_snapshot_unverified),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
