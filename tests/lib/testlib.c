/* Test helpers (see testlib.h). */
#include "testlib.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/fs.h"

char *test_mkdtemp(const char *tag)
{
        const char *base = getenv("TMPDIR");
        char *path;
        if (asprintf(&path, "%s/vmsnap-%s-XXXXXX", base ? base : "/tmp", tag) < 0)
                abort();
        if (!mkdtemp(path)) {
                perror("mkdtemp");
                abort();
        }
        return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

void test_rmtree(const char *path)
{
        nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

uint64_t test_rand(uint64_t *state)
{
        uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        return x * 0x2545f4914f6cdd1dull;
}

void test_fill_random(uint64_t *state, void *buf, size_t len)
{
        uint8_t *p = buf;
        while (len >= 8) {
                uint64_t v = test_rand(state);
                memcpy(p, &v, 8);
                p += 8;
                len -= 8;
        }
        while (len--)
                *p++ = (uint8_t)test_rand(state);
}

void test_write_file(const char *path, const void *buf, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || vmsnap_fs_write_full(fd, buf, len) < 0) {
                perror(path);
                abort();
        }
        close(fd);
}

uint8_t *test_read_file(const char *path, size_t *ret_len)
{
        uint8_t *buf;
        if (vmsnap_fs_read_file(AT_FDCWD, path, (size_t)1 << 34, &buf, ret_len) < 0)
                return NULL;
        return buf;
}

char *test_path(const char *dir, const char *name)
{
        char *p;
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                abort();
        return p;
}
