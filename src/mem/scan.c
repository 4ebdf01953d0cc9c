/* Reading a memory file front to back in large chunks, skipping the holes (never-touched
 * guest pages in a sparse file cost no I/O). */
#include "mem/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* A hole at most this long between two data regions is read through in the same pread
 * (and still reported as a hole): a syscall costs more than copying a few zero pages. */
#define JOIN_GAP ((uint64_t)8 << 10)

/* Data regions looked up ahead of the reads, at most this many at a time. */
#define MAP_BATCH 1024
#define FIEMAP_BATCH 512 /* extents per FIEMAP call */

struct region {
        uint64_t start, end;
};

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

/* Appends [s, e) (rounded out to whole blocks, never below lo) to map, joined to the last
 * region when they touch; *off moves to its end. */
static void add_region(struct region *map, size_t *n, uint64_t lo, uint64_t s, uint64_t e,
                       uint64_t size, uint64_t bs, uint64_t *off)
{
        s = MAX(s / bs * bs, lo);
        e = MIN((e + bs - 1) / bs * bs, size);
        if (s >= e)
                return;
        if (*n && s <= map[*n - 1].end)
                map[*n - 1].end = MAX(map[*n - 1].end, e);
        else
                map[(*n)++] = (struct region){s, e};
        *off = MAX(*off, e);
}

/* The data regions of [*off, lim) by SEEK_DATA/SEEK_HOLE (one pair per region), while map
 * has room. */
static int seek_regions(int fd, uint64_t lo, uint64_t *off, uint64_t lim, uint64_t size,
                        uint64_t bs, struct region *map, size_t *n)
{
        while (*n < MAP_BATCH && *off < lim) {
                uint64_t s = lim, e = lim;
                int r = next_data(fd, *off, lim, bs, &s, &e);
                if (r < 0)
                        return r;
                if (s >= lim) {
                        *off = lim;
                        break;
                }
                add_region(map, n, lo, s, e, size, bs, off);
        }
        return 0;
}

/* The data regions from *off on by FIEMAP: one ioctl maps up to FIEMAP_BATCH extents, where
 * SEEK_DATA costs two lseeks per region. Delayed (not yet allocated) extents count as data;
 * an unwritten (preallocated) extent is looked at with SEEK_DATA, which sees data in the
 * page cache over it, so the map equals the lseek walk's. -EOPNOTSUPP: no FIEMAP here. */
static int fiemap_regions(int fd, uint64_t *off, uint64_t size, uint64_t bs,
                          struct region *map, size_t *n)
{
        _Alignas(8) uint8_t buf[sizeof(struct fiemap) + FIEMAP_BATCH * sizeof(struct fiemap_extent)];
        struct fiemap *q = (struct fiemap *)buf;
        uint64_t lo = *off;
        memset(q, 0, sizeof(*q));
        q->fm_start = *off;
        q->fm_length = size - *off;
        q->fm_extent_count = FIEMAP_BATCH;
        if (ioctl(fd, FS_IOC_FIEMAP, q) < 0)
                return errno == ENOTTY || errno == EOPNOTSUPP || errno == EINVAL ||
                               errno == EBADR
                           ? -EOPNOTSUPP : -errno;
        bool last = q->fm_mapped_extents == 0;
        for (uint32_t i = 0; i < q->fm_mapped_extents && *n < MAP_BATCH; i++) {
                const struct fiemap_extent *x = &q->fm_extents[i];
                uint64_t s = MAX(x->fe_logical, *off), e = MIN(x->fe_logical + x->fe_length, size);
                last = (x->fe_flags & FIEMAP_EXTENT_LAST) || e >= size;
                if (s >= e)
                        continue;
                if (!(x->fe_flags & FIEMAP_EXTENT_UNWRITTEN)) {
                        add_region(map, n, lo, s, e, size, bs, off);
                        continue;
                }
                uint64_t at = s;
                int r = seek_regions(fd, lo, &at, e, size, bs, map, n);
                if (r < 0)
                        return r;
                *off = MAX(*off, at);
                if (at < e) /* map full: the rest of this extent next time */
                        return 0;
        }
        if (last && *n < MAP_BATCH)
                *off = size;
        return *off > lo ? 0 : -EOPNOTSUPP; /* no progress: not a map we understand */
}

/* Looks up data regions from *off on (FIEMAP where the file system has it, else
 * SEEK_DATA/SEEK_HOLE), at least one unless only holes are left; *off moves past the last
 * (to size when none is left). */
static int map_regions(int fd, const char *path, uint64_t *off, uint64_t size, uint64_t bs,
                       bool *use_fiemap, struct region *map, size_t *ret_n,
                       struct vmsnap_diag *d)
{
        size_t n = 0;
        int r = 0;
        while (r >= 0 && n == 0 && *off < size) {
                if (*use_fiemap && (r = fiemap_regions(fd, off, size, bs, map, &n)) == -EOPNOTSUPP) {
                        *use_fiemap = false;
                        r = 0;
                }
                if (r >= 0 && !*use_fiemap)
                        r = seek_regions(fd, *off, off, size, size, bs, map, &n);
        }
        if (r < 0)
                return vmsnap_diag(d, r, "%s: cannot find data regions: %s", path, strerror(-r));
        *ret_n = n;
        return 0;
}

/* Reads n bytes at off into buf; a short read means the file shrank under us. */
static int read_exact(int fd, const char *path, uint8_t *buf, size_t n, uint64_t off,
                      struct vmsnap_diag *d)
{
        ssize_t got = vmsnap_fs_pread_full(fd, buf, n, off);
        if (got < 0)
                return vmsnap_diag(d, (int)got, "%s: read failed at %llu: %s", path,
                                   (unsigned long long)off, strerror((int)-got));
        if ((size_t)got != n)
                return vmsnap_diag(d, -EIO, "%s: file shrank while being read", path);
        return 0;
}

/* Reads [start, end) through buf (len bytes, reused: the visitor must copy what it keeps);
 * each piece goes to v->data. */
static int read_through(int fd, const char *path, uint64_t start, uint64_t end, uint8_t *buf,
                        size_t len, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        while (start < end) {
                size_t n = (size_t)MIN((uint64_t)len, end - start);
                int r = read_exact(fd, path, buf, n, start, d);
                if (r >= 0)
                        r = v->data(v->ctx, start, buf, n, d);
                if (r < 0)
                        return r;
                start += n;
        }
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

/* Reads one region longer than a buffer, a buffer at a time. */
static int read_long(int fd, const char *path, const struct region *g, struct scan_bufs *sb,
                     const struct scan_visitor *v, struct vmsnap_diag *d)
{
        for (uint64_t off = g->start; off < g->end;) {
                int r = sb->used ? next_buffer(sb, v, d) : 0;
                size_t n = (size_t)MIN((uint64_t)IO_CHUNK, g->end - off);
                if (r >= 0)
                        r = read_through(fd, path, off, off + n, sb->b[sb->cur], n, v, d);
                if (r < 0)
                        return r;
                sb->used = n;
                off += n;
        }
        return 0;
}

/* Reads regions map[0..n) -- close enough to be joined, at most IO_CHUNK from the first
 * start to the last end -- with one pread into the current buffer, then hands each region
 * to v->data and each gap between them to v->hole. */
static int read_joined(int fd, const char *path, const struct region *map, size_t n,
                       struct scan_bufs *sb, const struct scan_visitor *v, struct vmsnap_diag *d)
{
        uint64_t start = map[0].start, len = map[n - 1].end - start;
        if (len > IO_CHUNK)
                return read_long(fd, path, &map[0], sb, v, d); /* n == 1 */
        int r = sb->used + len > IO_CHUNK ? next_buffer(sb, v, d) : 0;
        uint8_t *buf = sb->b[sb->cur] + sb->used;
        if (r >= 0)
                r = read_exact(fd, path, buf, (size_t)len, start, d);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (i > 0 && map[i].start > map[i - 1].end)
                        r = v->hole(v->ctx, map[i - 1].end, map[i].start - map[i - 1].end, d);
                if (r >= 0)
                        r = v->data(v->ctx, map[i].start, buf + (map[i].start - start),
                                    (size_t)(map[i].end - map[i].start), d);
        }
        sb->used += (size_t)len;
        return r;
}

/* Walks the data regions in batches: holes between groups go to v->hole, each group of
 * nearby regions is read with one pread (read_joined). */
static int scan_regions(int fd, const char *path, uint64_t size, uint64_t block_size,
                        struct scan_bufs *sb, const struct scan_visitor *v,
                        struct vmsnap_diag *d)
{
        struct region map[MAP_BATCH];
        uint64_t off = 0, next = 0; /* off: reported up to here; next: mapped up to here */
        bool use_fiemap = true;
        while (off < size) {
                size_t n = 0;
                int r = map_regions(fd, path, &next, size, block_size, &use_fiemap, map, &n, d);
                if (r < 0)
                        return r;
                if (n == 0) /* only a hole is left */
                        return v->hole(v->ctx, off, size - off, d);
                for (size_t i = 0; i < n;) {
                        size_t j = i + 1;
                        while (j < n && map[j].start - map[j - 1].end <= JOIN_GAP &&
                               map[j].end - map[i].start <= IO_CHUNK)
                                j++;
                        if (map[i].start > off &&
                            (r = v->hole(v->ctx, off, map[i].start - off, d)) < 0)
                                return r;
                        if ((r = read_joined(fd, path, map + i, j - i, sb, v, d)) < 0)
                                return r;
                        off = map[j - 1].end;
                        i = j;
                }
        }
        return 0;
}

/* True when block b (pages_per_block pages) has a page set in `pages`. */
static bool block_listed(const uint8_t *pages, uint64_t b, uint64_t pages_per_block)
{
        for (uint64_t p = b * pages_per_block; p < (b + 1) * pages_per_block; p++)
                if (pages[p / 8] & (1u << (p % 8)))
                        return true;
        return false;
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
                int r = listed ? read_through(fd, path, b * block_size, e * block_size, buf,
                                              len, v, d)
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

/* A read buffer populated in one call: page faults one by one cost more than the reads. */
static uint8_t *alloc_buffer(void)
{
        void *p = mmap(NULL, IO_CHUNK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        return p == MAP_FAILED ? NULL : p;
}

int scan_memfile(int fd, const char *path, uint64_t size, uint64_t block_size,
                 const struct scan_visitor *v, struct vmsnap_diag *d)
{
        struct scan_bufs sb = {.b = {alloc_buffer(), alloc_buffer()}};
        int r = 0;
        if (!sb.b[0] || !sb.b[1])
                r = vmsnap_diag(d, -ENOMEM, "%s: out of memory", path);
        if (r >= 0)
                r = scan_regions(fd, path, size, block_size, &sb, v, d);
        /* Twice: the second returns once the last buffer's blocks are written, so the
         * buffers can be unmapped. */
        if (r >= 0 && v->done && (r = v->done(v->ctx, d)) >= 0)
                r = v->done(v->ctx, d);
        for (int i = 0; i < 2; i++)
                if (sb.b[i])
                        munmap(sb.b[i], IO_CHUNK);
        return r;
}
