/* Brute-force memory model for the mem tests (see memmodel.h). */
#include "memmodel.h"
#include "testlib.h"

#include <vmsnap/mem.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/fs.h"

void memmodel_init(struct memmodel *m, uint64_t block_size, uint64_t blocks)
{
        m->block_size = block_size;
        m->blocks = blocks;
        m->bytes = calloc(blocks, block_size);
        m->dirty = calloc(blocks, sizeof(bool));
        if (!m->bytes || !m->dirty)
                abort();
}

void memmodel_free(struct memmodel *m)
{
        free(m->bytes);
        free(m->dirty);
        m->bytes = NULL;
        m->dirty = NULL;
}

void memmodel_copy(struct memmodel *dst, const struct memmodel *src)
{
        memmodel_init(dst, src->block_size, src->blocks);
        memcpy(dst->bytes, src->bytes, src->blocks * src->block_size);
        memcpy(dst->dirty, src->dirty, src->blocks * sizeof(bool));
}

static void write_block(struct memmodel *m, uint64_t b, unsigned kind, uint64_t *rng)
{
        uint8_t *p = m->bytes + b * m->block_size;
        switch (kind) {
        case 0: /* all zeros */
                memset(p, 0, m->block_size);
                break;
        case 1: /* almost zero: one byte set, anywhere (zero detection must see it) */
                memset(p, 0, m->block_size);
                p[test_rand(rng) % m->block_size] = (uint8_t)(1 + test_rand(rng) % 255);
                break;
        case 2: /* one byte changed */
                p[test_rand(rng) % m->block_size] ^= (uint8_t)(1 + test_rand(rng) % 255);
                break;
        case 3: /* rewritten with the same bytes */
                break;
        default:
                test_fill_random(rng, p, m->block_size);
        }
        m->dirty[b] = true;
}

void memmodel_randomize(struct memmodel *m, uint64_t *rng)
{
        for (uint64_t b = 0; b < m->blocks; b++) {
                unsigned r = (unsigned)(test_rand(rng) % 10);
                write_block(m, b, r < 4 ? 0 : r < 5 ? 1 : 4, rng);
        }
}

void memmodel_mutate(struct memmodel *m, uint64_t *rng, unsigned writes)
{
        for (unsigned i = 0; i < writes; i++)
                write_block(m, test_rand(rng) % m->blocks, (unsigned)(test_rand(rng) % 6), rng);
}

static int create_sized(const struct memmodel *m, const char *path)
{
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)(m->blocks * m->block_size)) < 0)
                abort();
        return fd;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
        for (uint64_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

void memmodel_write_full(const struct memmodel *m, const char *path, uint64_t *rng)
{
        int fd = create_sized(m, path);
        for (uint64_t b = 0; b < m->blocks; b++) {
                const uint8_t *p = m->bytes + b * m->block_size;
                if (all_zero(p, m->block_size) && test_rand(rng) % 2)
                        continue; /* a hole */
                if (vmsnap_fs_pwrite_full(fd, p, m->block_size, b * m->block_size) < 0)
                        abort();
        }
        close(fd);
}

void memmodel_write_sparse(const struct memmodel *m, const char *path)
{
        int fd = create_sized(m, path);
        for (uint64_t b = 0; b < m->blocks; b++) {
                if (!m->dirty[b])
                        continue;
                if (vmsnap_fs_pwrite_full(fd, m->bytes + b * m->block_size, m->block_size,
                                          b * m->block_size) < 0)
                        abort();
        }
        close(fd);
}

void memmodel_clean(struct memmodel *m)
{
        memset(m->dirty, 0, m->blocks * sizeof(bool));
}

static bool block_matches(const struct memmodel *m, struct vmsnap_mem_snapshot *s, uint64_t b,
                          uint8_t *buf)
{
        struct vmsnap_mem_location loc;
        const uint8_t *want = m->bytes + b * m->block_size;
        if (vmsnap_mem_locate(s, b * m->block_size, &loc) < 0)
                return false;
        if (loc.zero)
                return all_zero(want, m->block_size);
        if (vmsnap_fs_pread_full(loc.fd, buf, m->block_size, loc.storage_offset) !=
            (ssize_t)m->block_size)
                return false;
        if (memcmp(buf, want, m->block_size) != 0)
                return false;
        return !loc.hashes || vmsnap_mem_block_ok(s, buf, loc.hashes);
}

bool memmodel_matches(const struct memmodel *m, const char *dir)
{
        struct vmsnap_diag d = {0};
        struct vmsnap_mem_snapshot *s;
        if (vmsnap_mem_open(dir, &s, &d) < 0) {
                fprintf(stderr, "memmodel: open %s: %s\n", dir, d.msg);
                return false;
        }
        uint64_t size = m->blocks * m->block_size;
        uint8_t *all = malloc(size), *blk = malloc(m->block_size);
        bool ok = vmsnap_mem_read(s, 0, all, size, &d) == 0;
        for (uint64_t b = 0; ok && b < m->blocks; b++) {
                ok = memcmp(all + b * m->block_size, m->bytes + b * m->block_size,
                            m->block_size) == 0 && block_matches(m, s, b, blk);
                if (!ok)
                        fprintf(stderr, "memmodel: %s: block %llu differs from the model\n", dir,
                                (unsigned long long)b);
        }
        free(all);
        free(blk);
        vmsnap_mem_close(s);
        return ok;
}
