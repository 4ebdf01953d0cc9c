/* Installing pages (see install.h). A job's range is cut into runs of pages this installer
 * owns, each run into pieces that fit the buffer, and each piece into segments of zero pages
 * and data pages. Data is read with pread into our own buffer and checked block by block
 * before any of it reaches the kernel, so what is verified is exactly what is installed. */
#include "uffd/install.h"
#include "uffd/read.h"
#include "uffd/server.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sys.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

enum seg_kind { SEG_ZERO, SEG_DATA };

/* Outcome of installing one segment. */
enum fill_result { FILL_DONE, FILL_DEFER, FILL_STOP };

int installer_init(struct installer *in, struct vmsnap_uffd_server *srv, size_t piece)
{
        memset(in, 0, sizeof(*in));
        in->srv = srv;
        /* When blocks are larger than pages, a piece may start and end inside a block and
         * the whole block must be read to check it: one block of slack on each side. */
        size_t slack = srv->block_size > UFFD_PAGE_4K ? 2 * srv->block_size : 0;
        piece = MAX(piece, (size_t)MAX(srv->fault_around, srv->block_size));
        piece = MAX(piece, (size_t)srv->max_page); /* a page is installed whole */
        in->max_piece = piece;
        in->buf_size = piece + slack;
        void *p = mmap(NULL, in->buf_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED) {
                in->buf = NULL;
                return -ENOMEM;
        }
        in->buf = p;
        return 0;
}

void installer_free(struct installer *in)
{
        if (in->buf)
                munmap(in->buf, in->buf_size);
        in->buf = NULL;
}

/* Address-space offset of page idx of sr. */
static uint64_t page_offset(const struct served_region *sr, uint64_t idx)
{
        return sr->r.offset + (idx << sr->page_shift);
}

/* SEG_ZERO when page idx must read as zeros (dropped by the VMM, or only ZERO extents). */
static int page_kind(struct installer *in, struct served_region *sr, uint64_t idx,
                     enum seg_kind *ret)
{
        if (page_get(sr, idx) & PAGE_REMOVED) {
                *ret = SEG_ZERO;
                return 0;
        }
        uint64_t off = page_offset(sr, idx), end = off + sr->r.page_size;
        while (off < end) {
                struct vmsnap_mem_location loc;
                int r = vmsnap_mem_locate(in->srv->snap, off, &loc);
                if (r < 0)
                        return r;
                if (!loc.zero) {
                        *ret = SEG_DATA;
                        return 0;
                }
                off += MAX(loc.run, 1);
        }
        *ret = SEG_ZERO;
        return 0;
}

/* Reads [a, b) of the address space (block-aligned) into dst and checks every data block
 * against its hash (read.c). Returns 0, or -errno after server_fail. */
static int read_blocks(struct installer *in, uint64_t a, uint64_t b, uint8_t *dst)
{
        struct vmsnap_uffd_server *s = in->srv;
        struct vmsnap_diag d = {0};
        uint64_t unverified = 0;
        int r = uffd_read_verified(s->snap, s->lazy, s->snapdir, a, b, dst, &unverified, &d);
        if (unverified)
                stat_add(&s->stats.unverified, unverified);
        if (r < 0)
                server_fail(s, r, "%s", d.msg);
        return r;
}

/* One resolving ioctl over [dst, dst + len): UFFDIO_COPY from src, or UFFDIO_ZEROPAGE when
 * src is NULL. Sets *ret_done to the bytes now in place (pages found already present count:
 * they are woken, since a failed ioctl wakes nobody). */
static enum fill_result fill(struct installer *in, uint64_t dst, const uint8_t *src,
                             uint64_t len, uint64_t ps, uint64_t *ret_done)
{
        struct vmsnap_uffd_server *s = in->srv;
        uint64_t pos = 0;
        while (pos < len) {
                int64_t res;
                int r;
                if (src) {
                        struct uffdio_copy c = {.dst = dst + pos, .src = (uintptr_t)(src + pos),
                                                .len = len - pos};
                        r = vmsnap_sys.ioctl(s->uffd, UFFDIO_COPY, &c);
                        res = c.copy;
                } else {
                        struct uffdio_zeropage z = {.range = {dst + pos, len - pos}};
                        r = vmsnap_sys.ioctl(s->uffd, UFFDIO_ZEROPAGE, &z);
                        res = z.zeropage;
                }
                if (r == 0)
                        break;
                int e = errno;
                if (res > 0) { /* partial: continue after what landed */
                        pos += (uint64_t)res;
                        continue;
                }
                *ret_done = pos;
                if (e == EEXIST) {
                        stat_add(&s->stats.eexist, 1);
                        if (server_wake_range(s, dst + pos, ps) == -ESRCH) {
                                server_peer_gone(s);
                                return FILL_STOP;
                        }
                        pos += ps;
                        continue;
                }
                if (e == EAGAIN) /* the VMM's address space is changing (a REMOVE pending) */
                        return FILL_DEFER;
                if (e == ESRCH || e == ENOSPC) {
                        server_peer_gone(s);
                        return FILL_STOP;
                }
                server_fail(s, -e, "%s at 0x%llx (+%llu) failed: %s",
                            src ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE",
                            (unsigned long long)(dst + pos), (unsigned long long)(len - pos),
                            strerror(e));
                return FILL_STOP;
        }
        *ret_done = len;
        return FILL_DONE;
}

/* Bookkeeping after pages [first, first + n) of a segment landed. */
static void account(struct installer *in, struct served_region *sr, struct job *job,
                    uint64_t first, uint64_t n, enum seg_kind kind)
{
        struct uffd_stats *st = &in->srv->stats;
        for (uint64_t i = first; i < first + n; i++)
                page_installed(sr, i);
        stat_add(&st->bytes, n << sr->page_shift);
        if (kind == SEG_ZERO)
                stat_add(&st->zero_pages, n);
        if (job->origin == ORIGIN_FAULT)
                stat_add(&st->fault_pages, n);
        else
                stat_add(&st->prefetched_pages, n);
        if (job->origin == ORIGIN_WS)
                stat_add(&st->ws_pages, n);
        if (job->fault_page >= first && job->fault_page < first + n) {
                stats_latency(st, stats_now_ns() - job->t0_ns);
                job->fault_page = UINT64_MAX;
        }
}

/* Installs one segment [first, first + n) of kind; the data (SEG_DATA) is in the buffer,
 * which holds the address space from buf_off on. */
static enum fill_result install_segment(struct installer *in, struct served_region *sr,
                                        struct job *job, uint64_t first, uint64_t n,
                                        enum seg_kind kind, uint64_t buf_off,
                                        uint64_t *ret_done_pages)
{
        uint64_t ps = sr->r.page_size, dst = sr->r.base + (first << sr->page_shift);
        uint64_t len = n << sr->page_shift, done = 0;
        enum fill_result fr = FILL_DONE;
        if (kind == SEG_DATA)
                fr = fill(in, dst, in->buf + (page_offset(sr, first) - buf_off), len, ps, &done);
        else if (ps == UFFD_PAGE_4K)
                fr = fill(in, dst, NULL, len, ps, &done);
        else /* hugetlbfs has no UFFDIO_ZEROPAGE: copy from read-only zeros */
                for (uint64_t pos = 0; pos < len && fr == FILL_DONE;) {
                        uint64_t step = MIN(len - pos, (uint64_t)UFFD_BULK), d = 0;
                        fr = fill(in, dst + pos, in->srv->zeros, step, ps, &d);
                        pos += d;
                        done = pos;
                }
        *ret_done_pages = done >> sr->page_shift;
        account(in, sr, job, first, *ret_done_pages, kind);
        return fr;
}

/* Length of the segment starting at page i (pages of one kind, up to end). */
static int segment_at(struct installer *in, struct served_region *sr, uint64_t i,
                      uint64_t end, enum seg_kind *ret_kind, uint64_t *ret_n)
{
        enum seg_kind k0, k = SEG_ZERO;
        int r = page_kind(in, sr, i, &k0);
        uint64_t j = i + 1;
        for (; r == 0 && j < end; j++) {
                r = page_kind(in, sr, j, &k);
                if (r == 0 && k != k0)
                        break;
        }
        if (r < 0) {
                server_fail(in->srv, r, "cannot locate page %llu of region 0x%llx",
                            (unsigned long long)j, (unsigned long long)sr->r.base);
                return r;
        }
        *ret_kind = k0;
        *ret_n = j - i;
        return 0;
}

/* Installs owned pages [first, first + n) that fit in one buffer. Returns the pages done
 * and whether to go on, defer the rest, or stop. */
static enum fill_result install_piece(struct installer *in, struct served_region *sr,
                                      struct job *job, uint64_t first, uint64_t n,
                                      uint64_t *ret_done)
{
        uint64_t bs = in->srv->block_size;
        uint64_t buf_off = page_offset(sr, first) / bs * bs, end = first + n;
        *ret_done = 0;
        for (uint64_t i = first; i < end;) {
                enum seg_kind kind;
                uint64_t len, done;
                if (segment_at(in, sr, i, end, &kind, &len) < 0)
                        return FILL_STOP;
                if (kind == SEG_DATA) {
                        uint64_t a = page_offset(sr, i) / bs * bs;
                        uint64_t b = (page_offset(sr, i + len) + bs - 1) / bs * bs;
                        if (read_blocks(in, a, b, in->buf + (a - buf_off)) < 0)
                                return FILL_STOP;
                }
                enum fill_result fr = install_segment(in, sr, job, i, len, kind, buf_off, &done);
                *ret_done += done;
                if (fr != FILL_DONE)
                        return fr;
                i += len;
        }
        return FILL_DONE;
}

/* Parks the owned pages [first, end) of job for a retry. */
static void defer(struct installer *in, const struct job *job, uint64_t first, uint64_t end)
{
        struct job j = *job;
        j.owned = true;
        j.first = first;
        j.count = end - first;
        if (j.fault_page < first || j.fault_page >= end)
                j.fault_page = UINT64_MAX;
        stat_add(&in->srv->stats.eagain, 1);
        if (pool_defer(&in->srv->pool, &j) < 0) {
                server_fail(in->srv, -ENOMEM, "out of memory queueing a retry");
                return;
        }
        server_wake(in->srv);
}

/* Installs the owned pages [first, first + n), piece by piece. */
static void install_run(struct installer *in, struct served_region *sr, struct job *job,
                        uint64_t first, uint64_t n)
{
        uint64_t per_piece = MAX(in->max_piece >> sr->page_shift, 1), end = first + n;
        for (uint64_t i = first; i < end && !server_stopping(in->srv);) {
                uint64_t len = MIN(per_piece, end - i), done;
                enum fill_result fr = install_piece(in, sr, job, i, len, &done);
                if (fr == FILL_DEFER)
                        defer(in, job, i + done, end);
                if (fr != FILL_DONE)
                        return;
                i += len;
        }
}

/* Claims free pages upward from i; returns one past the last page claimed (i when none). */
static uint64_t claim_up(struct served_region *sr, uint64_t i, uint64_t hi)
{
        uint8_t c;
        while (i < hi && page_claim(sr, i, &c))
                i++;
        return i;
}

/* Claims free pages downward from f - 1; returns the lowest page claimed (f when none). */
static uint64_t claim_down(struct served_region *sr, uint64_t f, uint64_t lo)
{
        uint8_t c;
        while (f > lo && page_claim(sr, f - 1, &c))
                f--;
        return f;
}

/* Claims and installs the free pages of [lo, hi) in order, one run at a time. */
static void install_free_pages(struct installer *in, struct served_region *sr,
                               struct job *job, uint64_t lo, uint64_t hi)
{
        for (uint64_t i = lo; i < hi && !server_stopping(in->srv);) {
                uint64_t e = claim_up(sr, i, hi);
                if (e > i)
                        install_run(in, sr, job, i, e - i);
                i = e + 1; /* page e (when < hi) was not free */
        }
}

void install_job(struct installer *in, const struct job *job_in)
{
        struct job job = *job_in;
        struct served_region *sr = &in->srv->regions[job.region];
        uint64_t lo = job.first, hi = job.first + job.count;
        if (job.owned) {
                install_run(in, sr, &job, lo, job.count);
                return;
        }
        if (job.fault_page == UINT64_MAX) {
                install_free_pages(in, sr, &job, lo, hi);
                return;
        }
        /* The run around the faulting page (claimed by the loop) goes first: a vCPU waits
         * for it. Then the rest of the chunk, skipping pages others own. */
        uint64_t l = claim_down(sr, job.fault_page, lo);
        uint64_t r = claim_up(sr, job.fault_page + 1, hi);
        install_run(in, sr, &job, l, r - l);
        if (l > lo)
                install_free_pages(in, sr, &job, lo, l - 1);
        if (r < hi)
                install_free_pages(in, sr, &job, r + 1, hi);
}
