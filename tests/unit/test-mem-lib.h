/* Helpers shared by the mem tests (test-mem-files.c, test-mem-v1.c). Include after
 * <cmocka.h>. */
#ifndef VMSNAP_TEST_MEM_LIB_H
#define VMSNAP_TEST_MEM_LIB_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmsnap/mem.h>

#include "testlib.h"

/* Fails the test when a library call failed, with its diagnostic. */
static inline void must(int r, const struct vmsnap_diag *d, const char *what)
{
        if (r < 0)
                fail_msg("%s failed (%d): %s", what, r, d->msg);
}

/* Fails the test unless the diagnostic mentions `what`. */
static inline void assert_msg_has(const struct vmsnap_diag *d, const char *what)
{
        if (!strstr(d->msg, what))
                fail_msg("diagnostic \"%s\" does not contain \"%s\"", d->msg, what);
}

/* The diff file name of a build, malloc'd. */
static inline char *diff_name(const struct vmsnap_uuid *id)
{
        char name[64];
        vmsnap_mem_diff_name(id, name);
        return strdup(name);
}

/* True when files in dir keep holes visible to SEEK_DATA (every Linux filesystem vmsnap
 * targets does; a test that needs it skips rather than fails where it does not). */
static inline bool keeps_holes(const char *dir)
{
        char *p = test_path(dir, "hole-probe");
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 1 << 20), 0);
        assert_int_equal(pwrite(fd, "x", 1, (1 << 20) - 1), 1);
        off_t data = lseek(fd, 0, SEEK_DATA);
        close(fd);
        unlink(p);
        free(p);
        return data > 0;
}

#endif
