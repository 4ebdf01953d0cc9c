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

static int read_region(int fd, const char *path, uint64_t start, uint64_t end, uint8_t *buf,
                       const struct scan_visitor *v, struct vmsnap_diag *d)
{
        while (start < end) {
                size_t n = (size_t)MIN((uint64_t)IO_CHUNK, end - start);
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

int scan_memfile(int fd, const char *path, uint64_t size, uint64_t block_size,
                 bool exact_holes, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        _cleanup_free_ uint8_t *buf = aligned_alloc(4096, IO_CHUNK);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "%s: out of memory", path);
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
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
                if ((r = read_region(fd, path, start, end, buf, v, d)) < 0)
                        return r;
                off = end;
        }
        return 0;
}
