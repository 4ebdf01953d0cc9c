/* The migration-stream splitter (src/vmm/qemu-stream.c) on the committed seed streams of its
 * fuzz target (tests/fuzz/corpus/qemu-stream, made like QEMU 7.2's: configuration, the ram
 * section's block list, page records of the guest RAM block "mem" and of a firmware block
 * "bios", zero pages with fill bytes 0 and 0x5a, a device section): the guest RAM pages land
 * in the memory file at their offsets and nowhere else, the snapfile is the stream without
 * them byte for byte, and hostile variants (a page beyond RAM, a block list without "mem",
 * "mem" of another size, unknown flags, a truncated stream) fail with -EPROTO. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"
#include "vmm/qemu-internal.h"

#define MEM (1u << 20)

static uint8_t *seed(const char *name, size_t *len)
{
        const char *src = getenv("VMSNAP_SRC");
        char path[4096];
        snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/qemu-stream/%s", src ? src : ".", name);
        uint8_t *b = test_read_file(path, len);
        if (!b)
                fail_msg("%s: cannot read", path);
        return b;
}

static int fd_with(const void *p, size_t n)
{
        int fd = memfd_create("t", MFD_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, p, n), (ssize_t)n);
        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        return fd;
}

/* Splits buf; returns the result, the snapfile's bytes in *snap (malloc'd) and the memory
 * file's in mem (MEM bytes). */
static int split(const uint8_t *buf, size_t n, uint8_t **snap, size_t *snap_len, uint8_t *mem,
                 struct vmsnap_diag *d)
{
        int in = fd_with(buf, n), s = memfd_create("s", MFD_CLOEXEC), m = memfd_create("m", 0);
        int r = qemu_stream_split(in, s, m, MEM, "mem", 10000, d);
        off_t len = lseek(s, 0, SEEK_END);
        *snap = malloc((size_t)len + 1);
        *snap_len = (size_t)len;
        assert_int_equal(pread(s, *snap, (size_t)len, 0), len);
        assert_int_equal(pread(m, mem, MEM, 0), MEM);
        close(in), close(s), close(m);
        return r;
}

static bool all(const uint8_t *p, uint8_t v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i] != v)
                        return false;
        return true;
}

static void splits_pages_out(void **state)
{
        (void)state;
        size_t n, sn;
        uint8_t *in = seed("pages-and-bios", &n), *snap, *mem = malloc(MEM);
        struct vmsnap_diag d = {0};
        assert_int_equal(split(in, n, &snap, &sn, mem, &d), 0);
        assert_true(all(mem + 0x1000, 0xab, 4096)); /* PAGE */
        assert_true(all(mem + 0x2000, 0x00, 4096)); /* ZERO, fill 0: a hole */
        assert_true(all(mem + 0x3000, 0x5a, 4096)); /* ZERO with a fill byte */
        assert_true(all(mem + 0x5000, 0x11, 4096)); /* in the END section */
        assert_true(all(mem, 0, 4096) && all(mem + 0x6000, 0, MEM - 0x6000));
        /* the snapfile: everything but the three "mem" records (4 + 4096, 9, 9 bytes + the
         * first one's name) and the END section's one */
        assert_int_equal(sn, n - (8 + 4 + 4096) - 9 - 9 - (8 + 4 + 4096));
        assert_non_null(memmem(snap, sn, "bios", 4));
        assert_non_null(memmem(snap, sn, "devstate", 8));
        uint8_t bios[4096];
        memset(bios, 0xcd, sizeof(bios));
        assert_non_null(memmem(snap, sn, bios, sizeof(bios))); /* firmware pages stay */
        uint8_t guest[64];
        memset(guest, 0xab, sizeof(guest));
        assert_null(memmem(snap, sn, guest, sizeof(guest))); /* guest RAM does not */
        assert_memory_equal(snap + sn - 10, in + n - 10, 10); /* the tail as it came */
        free(in), free(snap), free(mem);
}

/* Replaces the first occurrence of `from` in buf by `to` (same length). */
static void patch(uint8_t *buf, size_t n, const void *from, const void *to, size_t len)
{
        uint8_t *p = memmem(buf, n, from, len);
        assert_non_null(p);
        memcpy(p, to, len);
}

static void expect_proto(uint8_t *in, size_t n, const char *why)
{
        size_t sn;
        uint8_t *snap, *mem = malloc(MEM);
        struct vmsnap_diag d = {0};
        assert_int_equal(split(in, n, &snap, &sn, mem, &d), -EPROTO);
        if (!strstr(d.msg, why))
                fail_msg("'%s' does not say '%s'", d.msg, why);
        free(snap), free(mem);
}

static void refuses_hostile_streams(void **state)
{
        (void)state;
        size_t n;
        uint8_t *in = seed("pages-and-bios", &n);
        /* the PAGE record of mem at 0x1000 -> at 16 MiB, beyond the 1 MiB of RAM */
        patch(in, n, "\x00\x00\x00\x00\x00\x00\x10\x08", "\x00\x00\x00\x00\x01\x00\x00\x08", 8);
        expect_proto(in, n, "beyond the guest's RAM");
        free(in);

        in = seed("pages-and-bios", &n);
        patch(in, n, "\x03mem\x00\x00\x00\x00\x00\x10", "\x03mex\x00\x00\x00\x00\x00\x10", 10);
        expect_proto(in, n, "lacks the guest RAM block");
        free(in);

        in = seed("pages-and-bios", &n);
        patch(in, n, "\x03mem\x00\x00\x00\x00\x00\x10", "\x03mem\x00\x00\x00\x00\x00\x20", 10);
        expect_proto(in, n, "wrong size");
        free(in);

        in = seed("pages-and-bios", &n); /* XBZRLE (0x40) is never enabled: refused */
        patch(in, n, "\x00\x00\x00\x00\x00\x00\x10\x08", "\x00\x00\x00\x00\x00\x00\x10\x48", 8);
        expect_proto(in, n, "unexpected RAM record flags");
        free(in);

        in = seed("truncated", &n);
        expect_proto(in, n, "ends early");
        free(in);

        in = seed("not-a-stream", &n);
        expect_proto(in, n, "ends early");
        free(in);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(splits_pages_out),
                cmocka_unit_test(refuses_hostile_streams),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
