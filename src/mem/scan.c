/* Reading a memory file front to back in large chunks, skipping the holes (never-touched
 * guest pages in a sparse file cost no I/O). */
#include "mem/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Holes shorter than this are read through (the kernel returns zeros cheaply): skipping
 * every small hole would cost two lseeks and a short read per run of pages. */
#define HOLE_SKIP_MIN ((uint64_t)2 << 20)

/* The next data region at or after off, rounded out to whole blocks (a partly written
 * block counts as data); *ret_start = *ret_end = size when there is none. */
static int next_data(int fd, uint64_t off, uint64_t size, uint64_t bs, uint64_t *ret_start,
                     uint64_t *ret_end)
{
        off_t s = lseek(fd, (off_t)off, SEEK_DATA);
        if (s < 0) {
                if (errno == ENXIO) { /* only holes (or nothing) from here on */
                        *ret_start = *ret_end = size;
                        return 0;
                }
                if (errno != EINVAL && errno != EOPNOTSUPP)
                        return -errno;
                s = (off_t)off; /* no hole support: all data */
        }
        off_t e = lseek(fd, s, SEEK_HOLE);
        if (e < 0)
                e = (off_t)size;
        *ret_start = MIN(MAX((uint64_t)s / bs * bs, off), size);
        *ret_end = MIN(((uint64_t)e + bs - 1) / bs * bs, size);
        return 0;
}

/* Two read buffers used in turn: the visitor may hand blocks of one to the writer by
 * reference, and `done` (called when a buffer is full, and at the end) must return only
 * once the blocks of the *other* buffer are written; so a buffer is reused only after its
 * blocks are on their way to the disk. Short data regions are packed into one buffer. */
struct scan_bufs {
        uint8_t *b[2];
        int cur;
        size_t used; /* bytes of b[cur] holding data handed to the visitor */
};

static int next_buffer(struct scan_bufs *sb, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        int r = v->done ? v->done(v->ctx, d) : 0;
        sb->cur ^= 1;
        sb->used = 0;
        return r;
}

static int read_region(int fd, const char *path, uint64_t start, uint64_t end,
                       struct scan_bufs *sb, const struct scan_visitor *v,
                       struct vmsnap_diag *d)
{
        while (start < end) {
                if (sb->used == IO_CHUNK) {
                        int r = next_buffer(sb, v, d);
                        if (r < 0)
                                return r;
                }
                uint8_t *buf = sb->b[sb->cur] + sb->used;
                size_t n = (size_t)MIN((uint64_t)(IO_CHUNK - sb->used), end - start);
                ssize_t got = vmsnap_fs_pread_full(fd, buf, n, start);
                if (got < 0)
                        return vmsnap_diag(d, (int)got, "%s: read failed at %llu: %s", path,
                                           (unsigned long long)start, strerror((int)-got));
                if ((size_t)got != n)
                        return vmsnap_diag(d, -EIO, "%s: file shrank while being read", path);
                sb->used += n;
                int r = v->data(v->ctx, start, buf, n, d);
                if (r < 0)
                        return r;
                start += n;
        }
        return 0;
}

static int scan_regions(int fd, const char *path, uint64_t size, uint64_t block_size,
                        bool exact_holes, struct scan_bufs *sb, const struct scan_visitor *v,
                        struct vmsnap_diag *d)
{
        uint64_t off = 0;
        while (off < size) {
                uint64_t start = off, end = off;
                int r = next_data(fd, off, size, block_size, &start, &end);
                if (r < 0)
                        return vmsnap_diag(d, r, "%s: cannot find data regions: %s", path,
                                           strerror(-r));
                if (!exact_holes && start - off < HOLE_SKIP_MIN && start < size)
                        start = off; /* a short hole: cheaper to read through */
                if (!exact_holes)
                        end = MIN(size, start + IO_CHUNK);
                if (start > off && (r = v->hole(v->ctx, off, start - off, d)) < 0)
                        return r;
                if ((r = read_region(fd, path, start, end, sb, v, d)) < 0)
                        return r;
                off = end;
        }
        /* Twice: the second returns once the last buffer's blocks are written, so the
         * buffers can be freed. */
        int r = v->done ? v->done(v->ctx, d) : 0;
        return r < 0 || !v->done ? r : v->done(v->ctx, d);
}

/* True when block b (pages_per_block pages) has a page set in `pages`. */
static bool block_listed(const uint8_t *pages, uint64_t b, uint64_t pages_per_block)
{
        for (uint64_t p = b * pages_per_block; p < (b + 1) * pages_per_block; p++)
                if (pages[p / 8] & (1u << (p % 8)))
                        return true;
        return false;
}

/* Reads [start, end) through buf (len bytes, reused: the visitor must copy what it keeps). */
static int read_listed(int fd, const char *path, uint64_t start, uint64_t end, uint8_t *buf,
                       size_t len, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        while (start < end) {
                size_t n = (size_t)MIN((uint64_t)len, end - start);
                ssize_t got = vmsnap_fs_pread_full(fd, buf, n, start);
                if (got < 0)
                        return vmsnap_diag(d, (int)got, "%s: read failed at %llu: %s", path,
                                           (unsigned long long)start, strerror((int)-got));
                if ((size_t)got != n)
                        return vmsnap_diag(d, -EIO, "%s: file shrank while being read", path);
                int r = v->data(v->ctx, start, buf, n, d);
                if (r < 0)
                        return r;
                start += n;
        }
        return 0;
}

/* One small buffer, reused while it is warm: the listed blocks are a few percent of the
 * file, most of them unchanged, and fresh pages cost a fault each. */
static int scan_listed(int fd, const char *path, uint64_t size, uint64_t block_size,
                       const uint8_t *pages, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        size_t len = (size_t)MAX((uint64_t)LISTED_CHUNK, block_size);
        _cleanup_free_ uint8_t *buf = aligned_alloc(4096, len);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", path);
        uint64_t nblocks = size / block_size, ppb = block_size / SCAN_PAGE;
        for (uint64_t b = 0; b < nblocks;) {
                bool listed = block_listed(pages, b, ppb);
                uint64_t e = b + 1;
                while (e < nblocks && block_listed(pages, e, ppb) == listed)
                        e++;
                int r = listed ? read_listed(fd, path, b * block_size, e * block_size, buf, len,
                                             v, d)
                               : v->hole(v->ctx, b * block_size, (e - b) * block_size, d);
                if (r < 0)
                        return r;
                b = e;
        }
        int r = v->done ? v->done(v->ctx, d) : 0;
        return r < 0 || !v->done ? r : v->done(v->ctx, d);
}

int scan_listed_pages(int fd, const char *path, uint64_t size, uint64_t block_size,
                      const uint8_t *pages, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        if (block_size % SCAN_PAGE)
                return vmsnap_diag(d, -EINVAL, "%s: block size %llu is not whole pages", path,
                                   (unsigned long long)block_size);
        return scan_listed(fd, path, size, block_size, pages, v, d);
}

int scan_memfile(int fd, const char *path, uint64_t size, uint64_t block_size,
                 bool exact_holes, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        struct scan_bufs sb = {.b = {aligned_alloc(4096, IO_CHUNK), aligned_alloc(4096, IO_CHUNK)}};
        int r = 0;
        if (!sb.b[0] || !sb.b[1])
                r = vmsnap_diag(d, -ENOMEM, "%s: out of memory", path);
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        if (r >= 0)
                r = scan_regions(fd, path, size, block_size, exact_holes, &sb, v, d);
        free(sb.b[0]);
        free(sb.b[1]);
        return r;
}
